//! `agros-sync serve`: the background flusher. It looks for due outbox
//! entries every interval and calls the plugin's `flush` when there are any.
//! The plugin itself keeps each database's backoff and pause.

use std::time::Duration;

use agros_sync_host::error::ErrorReport;
use agros_sync_host::host_state::now_millis;
use agros_sync_host::tenant::Tenant;
use clap::ArgMatches;

use super::output::Output;
use super::Failure;

/// Entries one flush call may send per database.
const FLUSH_BUDGET: u32 = 500;

pub async fn run(tenant: &Tenant, args: &ArgMatches, out: &Output) -> Result<(), Failure> {
    let interval = Duration::from_millis(*args.get_one::<u64>("interval").expect("has a default"));
    let name = tenant.context.name.clone();
    tracing::info!(tenant = %name, interval_ms = interval.as_millis() as u64, "background flusher started");
    eprintln!("{}", out.lang.pick("agros-sync serve: flushing in the background; Ctrl-C stops", "agros-sync serve: enviando en segundo plano; Ctrl-C para parar"));

    let mut failures_in_a_row = 0u32;
    loop {
        tokio::select! {
            _ = shutdown_signal() => break,
            _ = tokio::time::sleep(interval) => {}
        }
        if !has_due_entries(tenant) {
            continue;
        }
        match tenant.flush(None, FLUSH_BUDGET, false).await {
            Ok(report) => {
                failures_in_a_row = 0;
                if report.delivered + report.dead_lettered + report.retried > 0 {
                    tracing::info!(tenant = %name, delivered = report.delivered, retried = report.retried, dead_lettered = report.dead_lettered, pending = report.pending, "flushed");
                }
            }
            Err(error) => {
                // Logged once per run of failures, then every 60th, so a
                // broken plugin does not flood the log.
                failures_in_a_row += 1;
                if failures_in_a_row == 1 || failures_in_a_row % 60 == 0 {
                    let report = ErrorReport::from_call(out.lang, &error);
                    tracing::error!(tenant = %name, failures_in_a_row, code = %report.code, "flush failed: {}", report.detail);
                }
            }
        }
    }
    tracing::info!(tenant = %name, "background flusher stopped");
    Ok(())
}

fn has_due_entries(tenant: &Tenant) -> bool {
    let now = now_millis();
    let store = &tenant.context.store;
    tenant.context.databases.iter().filter(|d| d.sync).any(|d| {
        store
            .outbox_stats(&tenant.context.name, &d.key)
            .map(|stats| stats.next_attempt_at.is_some_and(|at| at <= now))
            .unwrap_or(true)
    })
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(_) => return interrupt.await.unwrap_or_default(),
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    interrupt.await.unwrap_or_default();
}

//! `agros-sync serve`: the long-running host. It serves the HTTP API for the
//! loader, runs a background flusher over every tenant, and reloads the
//! plugin when its file changes, on SIGHUP or on `agros-sync reload`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use agros_sync_host::config::Config;
use agros_sync_host::engine::{PluginRuntime, ReloadOutcome};
use agros_sync_host::error::ErrorReport;
use agros_sync_host::host_state::now_millis;
use agros_sync_host::messages::Lang;
use agros_sync_host::tenant::{Tenant, Tenants};
use clap::ArgMatches;

use super::api::{self, ApiState};
use super::output::Output;
use super::Failure;

/// Entries one flush call may send per database.
const FLUSH_BUDGET: u32 = 500;
/// How often the plugin file's size and modification time are read.
const WATCH_INTERVAL: Duration = Duration::from_millis(500);
/// The environment variable holding the API's bearer token.
pub const TOKEN_VARIABLE: &str = "AGROS_SYNC_API_TOKEN";

pub async fn run(config: &Config, tenants: Tenants, args: &ArgMatches, out: &Output) -> Result<(), Failure> {
    let lang = out.lang;
    let interval = Duration::from_millis(*args.get_one::<u64>("interval").expect("has a default"));
    let listen = *args.get_one::<SocketAddr>("listen").expect("has a default");
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        Failure::usage(lang, "io-error", Some(listen.to_string()), format!("cannot listen on {listen}: {e}; pick another address with --listen"))
    })?;
    let address = listener.local_addr().map_err(|e| Failure::operation(ErrorReport::new(lang, "io-error", None, e.to_string())))?;
    let token = std::env::var(TOKEN_VARIABLE).ok().filter(|t| !t.is_empty());

    let tenants = Arc::new(tenants);
    let runtime = tenants.runtime.clone();
    tracing::info!(%address, tenants = tenants.names().len(), interval_ms = interval.as_millis() as u64, "agros-sync serve started");
    // Tests and scripts read the address from this line.
    eprintln!(
        "{} http://{address} ({} {}; {})",
        lang.pick("agros-sync serve: listening on", "agros-sync serve: escuchando en"),
        tenants.names().len(),
        lang.pick("tenants", "tenants"),
        if token.is_some() {
            lang.pick("bearer token required", "se exige token bearer")
        } else {
            lang.pick("no token", "sin token")
        },
    );

    let flusher = tokio::spawn(flush_forever(tenants.clone(), interval));
    let watcher = config.watch_plugin.then(|| tokio::spawn(watch_plugin(runtime.clone())));
    let hangup = tokio::spawn(reload_on_hangup(runtime.clone()));

    let max_body_bytes = config.limits.max_object_bytes as usize + api::BODY_OVERHEAD_BYTES;
    let state = Arc::new(ApiState { tenants: tenants.clone(), lang, token, max_body_bytes });
    let served = api::serve(listener, state, shutdown_signal()).await;

    flusher.abort();
    hangup.abort();
    if let Some(watcher) = watcher {
        watcher.abort();
    }
    tracing::info!("agros-sync serve stopped");
    served.map_err(|e| Failure::operation(ErrorReport::new(lang, "io-error", None, format!("{e:#}"))))
}

/// Calls `flush` on every tenant that has due entries, every `interval`.
async fn flush_forever(tenants: Arc<Tenants>, interval: Duration) {
    let mut failures_in_a_row = vec![0u32; tenants.names().len()];
    loop {
        tokio::time::sleep(interval).await;
        for (index, tenant) in tenants.iter().enumerate() {
            if !has_due_entries(tenant) {
                continue;
            }
            let name = tenant.name();
            match tenant.flush(None, FLUSH_BUDGET, false).await {
                Ok(report) => {
                    failures_in_a_row[index] = 0;
                    if report.delivered + report.dead_lettered + report.retried > 0 {
                        tracing::info!(tenant = %name, delivered = report.delivered, retried = report.retried, dead_lettered = report.dead_lettered, pending = report.pending, "flushed");
                    }
                }
                Err(error) => {
                    // Logged once per run of failures, then every 60th, so a
                    // broken plugin does not flood the log.
                    failures_in_a_row[index] += 1;
                    let count = failures_in_a_row[index];
                    if count == 1 || count % 60 == 0 {
                        let report = ErrorReport::from_call(Lang::En, &error);
                        tracing::error!(tenant = %name, failures_in_a_row = count, code = %report.code, "flush failed: {}", report.detail);
                    }
                }
            }
        }
    }
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

/// Reloads the plugin when its file changes. A file counts as changed when
/// its size or modification time differ from the last ones seen and stayed
/// the same for one more interval, so a file still being copied is not read
/// half-written. Polling works on every filesystem, network mounts included,
/// and costs one `stat` per interval.
async fn watch_plugin(runtime: Arc<PluginRuntime>) {
    let path = runtime.plugin_path().to_owned();
    // Nothing counts as loaded at first, so the first look calls `reload`,
    // which compares content hashes: the file may have changed between the
    // runtime reading it and this task starting.
    let mut loaded = None;
    let mut candidate = file_stamp(&path);
    loop {
        tokio::time::sleep(WATCH_INTERVAL).await;
        let stamp = file_stamp(&path);
        if stamp == loaded {
            candidate = stamp;
            continue;
        }
        if stamp != candidate {
            // Changed since the last look: wait until it holds still.
            candidate = stamp;
            continue;
        }
        loaded = stamp;
        if stamp.is_none() {
            tracing::warn!(plugin = %path.display(), "plugin file is gone; the running version keeps serving");
            continue;
        }
        match runtime.reload().await {
            Ok(ReloadOutcome::Swapped { to_hash, version, .. }) => {
                eprintln!("agros-sync serve: plugin {version} ({}) loaded from {}", &to_hash[..12], path.display());
            }
            Ok(ReloadOutcome::Unchanged { .. }) => {}
            // `reload` logged it and keeps it for status.
            Err(_) => {}
        }
    }
}

fn file_stamp(path: &Path) -> Option<(u64, SystemTime)> {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.len(), metadata.modified().ok()?))
}

async fn reload_on_hangup(runtime: Arc<PluginRuntime>) {
    #[cfg(unix)]
    {
        let Ok(mut hangup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
            return;
        };
        while hangup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the plugin");
            let _ = runtime.reload().await;
        }
    }
    #[cfg(not(unix))]
    std::future::pending::<()>().await;
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

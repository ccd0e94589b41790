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
use agros_sync_host::messages::{blank_api_token_message, Lang};
use agros_sync_host::tenant::{Tenant, Tenants};
use clap::ArgMatches;

use super::api::{self, ApiState};
use super::output::Output;
use super::Failure;

/// Entries one flush call may send per database.
const FLUSH_BUDGET: u32 = 500;
/// How often the plugin file's metadata is read.
const WATCH_INTERVAL: Duration = Duration::from_millis(500);
/// The environment variable holding the API's bearer token.
pub const TOKEN_VARIABLE: &str = "AGROS_SYNC_API_TOKEN";

pub async fn run(config: &Config, tenants: Tenants, args: &ArgMatches, out: &Output) -> Result<(), Failure> {
    let lang = out.lang;
    let token = api_token(lang)?;
    let interval = Duration::from_millis(*args.get_one::<u64>("interval").expect("has a default"));
    let listen = *args.get_one::<SocketAddr>("listen").expect("has a default");
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        Failure::usage(lang, "io-error", Some(listen.to_string()), format!("cannot listen on {listen}: {e}; pick another address with --listen"))
    })?;
    let address = listener.local_addr().map_err(|e| Failure::operation(ErrorReport::new(lang, "io-error", None, e.to_string())))?;

    let tenants = Arc::new(tenants);
    let runtime = tenants.runtime.clone();
    let flushers: Vec<_> = tenants.iter().map(|tenant| tokio::spawn(flush_forever(tenant.clone(), interval))).collect();
    let watcher = config.watch_plugin.then(|| tokio::spawn(watch_plugin(runtime.clone(), lang)));
    let hangup = tokio::spawn(reload_on_hangup(runtime.clone(), lang));

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

    let max_body_bytes = config.limits.max_object_bytes as usize + api::BODY_OVERHEAD_BYTES;
    let state = Arc::new(ApiState::new(tenants.clone(), lang, token, max_body_bytes, address));
    let served = api::serve(listener, state, shutdown_signal).await;

    for flusher in &flushers {
        flusher.abort();
    }
    hangup.abort();
    if let Some(watcher) = watcher {
        watcher.abort();
    }
    tracing::info!("agros-sync serve stopped");
    served.map_err(|e| Failure::operation(ErrorReport::new(lang, "io-error", None, format!("{e:#}"))))
}

/// Reads the API token from `AGROS_SYNC_API_TOKEN`, or `None` when it is
/// unset. A value that is empty or only whitespace is rejected, because an
/// empty token would turn authentication off and no request can match a
/// blank one, since the presented token is trimmed. Both usually come from a
/// broken secret template.
fn api_token(lang: Lang) -> Result<Option<String>, Failure> {
    let Some(value) = std::env::var_os(TOKEN_VARIABLE) else {
        return Ok(None);
    };
    let value = value.into_string().map_err(|_| {
        let detail = format!("{TOKEN_VARIABLE} is not valid UTF-8; give it a token of printable characters");
        Failure::usage(lang, "invalid-argument", Some(TOKEN_VARIABLE.to_owned()), detail)
    })?;
    if value.trim().is_empty() {
        let mut failure = Failure::usage(lang, "invalid-argument", Some(TOKEN_VARIABLE.to_owned()), blank_api_token_message(Lang::En, TOKEN_VARIABLE));
        failure.report.message = blank_api_token_message(lang, TOKEN_VARIABLE);
        return Err(failure);
    }
    Ok(Some(value))
}

/// Calls `flush` on `tenant` whenever it has due entries, checking every
/// `interval`. Each tenant has its own flusher task, so a slow Parse server of
/// one tenant does not delay the others' deliveries.
async fn flush_forever(tenant: Arc<Tenant>, interval: Duration) {
    let name = tenant.name().to_owned();
    let mut failures_in_a_row = 0u32;
    loop {
        tokio::time::sleep(interval).await;
        if !has_due_entries(&tenant) {
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
                    let report = ErrorReport::from_call(Lang::En, &error);
                    tracing::error!(tenant = %name, failures_in_a_row, code = %report.code, "flush failed: {}", report.detail);
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
/// its [`FileStamp`] differs from the last one seen and stayed the same for
/// one more interval, so a file still being copied is not read half-written.
/// Polling works on every filesystem, network mounts included, and costs one
/// `stat` per interval.
async fn watch_plugin(runtime: Arc<PluginRuntime>, lang: Lang) {
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
            // Changed since the last look: wait until it stays unchanged.
            candidate = stamp;
            continue;
        }
        loaded = stamp;
        if stamp.is_none() {
            tracing::warn!(plugin = %path.display(), "plugin file is gone; the running version keeps serving");
            continue;
        }
        print_reload_result(&runtime, &runtime.reload().await, lang);
    }
}

/// Prints the line an operator reads when a reload, from the watcher, SIGHUP
/// or `POST /v1/reload`, swapped the plugin. A rejected file prints nothing
/// here, because [`PluginRuntime::reload`] already logs it at error level,
/// which the default `warn` filter shows.
pub fn print_reload_result(runtime: &PluginRuntime, result: &anyhow::Result<ReloadOutcome>, lang: Lang) {
    if let Ok(ReloadOutcome::Swapped { to_hash, version, .. }) = result {
        let hash = &to_hash[..to_hash.len().min(12)];
        let path = runtime.plugin_path().display();
        match lang {
            Lang::En => eprintln!("agros-sync serve: plugin {version} ({hash}) loaded from {path}"),
            Lang::Es => eprintln!("agros-sync serve: plugin {version} ({hash}) cargado desde {path}"),
        }
    }
}

/// The metadata the watcher compares to notice a new plugin file. Size and
/// modification time alone miss a same-size file that keeps the old
/// modification time, as `cp -p`, `rsync -t`, `install -p` and tar produce.
/// On Unix the inode catches such a file when it was renamed into place,
/// and the change time (ctime), which no user call can set back, catches it
/// when it was written in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    size: u64,
    modified: Option<SystemTime>,
    #[cfg(unix)]
    device: u64,
    #[cfg(unix)]
    inode: u64,
    /// Change time, as seconds and nanoseconds since the Unix epoch.
    #[cfg(unix)]
    changed: (i64, i64),
}

fn file_stamp(path: &Path) -> Option<FileStamp> {
    let metadata = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    use std::os::unix::fs::MetadataExt;
    Some(FileStamp {
        size: metadata.len(),
        modified: metadata.modified().ok(),
        #[cfg(unix)]
        device: metadata.dev(),
        #[cfg(unix)]
        inode: metadata.ino(),
        #[cfg(unix)]
        changed: (metadata.ctime(), metadata.ctime_nsec()),
    })
}

/// Reloads the plugin on every SIGHUP. The handler is installed when this
/// function is called, not when the returned future first runs, so a SIGHUP
/// sent right after the listening line cannot hit the default action, which
/// stops the process.
fn reload_on_hangup(runtime: Arc<PluginRuntime>, lang: Lang) -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    async move {
        #[cfg(unix)]
        {
            let mut hangups = match hangups {
                Ok(hangups) => hangups,
                Err(error) => {
                    tracing::warn!(%error, "failed to install the SIGHUP handler; reload with `agros-sync reload` instead");
                    return;
                }
            };
            while hangups.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading the plugin");
                print_reload_result(&runtime, &runtime.reload().await, lang);
            }
        }
        #[cfg(not(unix))]
        {
            let _ = (runtime, lang);
            std::future::pending::<()>().await;
        }
    }
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

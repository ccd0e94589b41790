//! The `agros-sync` command line: `sync`, `delete`, `import`, `query`,
//! `status`, `app-config`, `flush`, `outbox`, `serve` and `reload`.
//!
//! Every command but `serve` and `reload` works on one tenant: `--tenant`, or
//! the only one `config.yaml` defines.
//!
//! Exit codes: 0 on success, 1 when an operation failed, 2 for bad usage or an
//! invalid configuration. With `--json`, results and errors are JSON on
//! stdout; otherwise errors go to stderr as one line per cause.

mod api;
mod args;
mod import;
mod outbox;
mod output;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use agros_sync_host::bindings::{ErrorKind, ObjectRef, QueryOptions};
use agros_sync_host::config::Config;
use agros_sync_host::engine::{PluginRuntime, RuntimeOptions};
use agros_sync_host::error::{CallError, ErrorReport};
use agros_sync_host::messages::Lang;
use agros_sync_host::plugin_cache::PluginCache;
use agros_sync_host::state::SqliteStore;
use agros_sync_host::tenant::{self, Tenant, Tenants};
use clap::ArgMatches;

use output::Output;

/// A failed command: what to print and the exit code.
pub struct Failure {
    report: ErrorReport,
    exit_code: u8,
    /// Whether the command already printed its JSON result, which shows what
    /// failed. With `--json`, nothing more is printed to stdout then.
    summary_printed: bool,
}

impl Failure {
    fn usage(lang: Lang, code: &str, subject: Option<String>, detail: String) -> Self {
        Self { report: ErrorReport::new(lang, code, subject, detail), exit_code: 2, summary_printed: false }
    }

    fn operation(report: ErrorReport) -> Self {
        Self { report, exit_code: 1, summary_printed: false }
    }

    /// Builds the failure of a call: exit code 2 when the caller's input was invalid, 1
    /// otherwise.
    fn call(lang: Lang, error: &CallError) -> Self {
        let input_error = matches!(
            error,
            CallError::Plugin(e) if matches!(
                e.kind,
                ErrorKind::UnknownDatabase
                    | ErrorKind::SyncDisabled
                    | ErrorKind::InvalidClassName
                    | ErrorKind::InvalidFieldName
                    | ErrorKind::InvalidJson
                    | ErrorKind::InvalidValue
                    | ErrorKind::ObjectTooLarge
            )
        );
        Self { report: ErrorReport::from_call(lang, error), exit_code: if input_error { 2 } else { 1 }, summary_printed: false }
    }

    /// Builds a failure that a JSON summary the command already printed
    /// reports.
    fn after_summary(report: ErrorReport) -> Self {
        Self { report, exit_code: 1, summary_printed: true }
    }
}

pub fn run() -> ExitCode {
    let lang = Lang::from_env();
    let matches = args::command(lang).get_matches();
    let out = Output { lang, json: matches.get_flag("json") };
    init_tracing();

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            out.failure(&Failure::usage(lang, "io-error", None, format!("failed to start the async runtime: {e}")));
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(dispatch(&matches, &out)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            out.failure(&failure);
            ExitCode::from(failure.exit_code)
        }
    }
}

/// Logs go to stderr; `AGROS_SYNC_LOG` sets the filter (default `warn`). The
/// code generator's own logs stay at `warn` unless named in the filter: at
/// `debug` it writes tens of thousands of lines per plugin compile.
fn init_tracing() {
    let requested = std::env::var("AGROS_SYNC_LOG").unwrap_or_default();
    let mut filter = tracing_subscriber::EnvFilter::try_new(&requested).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    if requested.is_empty() {
        filter = tracing_subscriber::EnvFilter::new("warn");
    }
    for noisy in ["cranelift_codegen", "cranelift_frontend", "wasmtime_cranelift", "wasmtime_internal_cranelift", "regalloc2"] {
        if !requested.contains(noisy) {
            filter = filter.add_directive(format!("{noisy}=warn").parse().expect("a valid directive"));
        }
    }
    // wasi-http warns on every refused connection, which the plugin reports
    // itself as a typed error; its warnings show only when asked for.
    if !requested.contains("wasmtime_wasi_http") {
        filter = filter.add_directive("wasmtime_wasi_http=error".parse().expect("a valid directive"));
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

async fn dispatch(matches: &ArgMatches, out: &Output) -> Result<(), Failure> {
    let lang = out.lang;
    let config_path: PathBuf = matches.get_one::<PathBuf>("config").cloned().expect("has a default");
    let config = Config::load(&config_path)
        .map_err(|e| Failure::usage(lang, "invalid-config", Some(config_path.display().to_string()), e.to_string()))?;
    let store = SqliteStore::open(&config.state).map_err(|e| Failure::operation(ErrorReport::new(lang, "state-store", None, e.to_string())))?;

    // `serve` runs every tenant; the other commands work on one.
    if let Some(("serve", args)) = matches.subcommand() {
        let tenants = open_tenants(&config, store, lang)?;
        return serve::run(&config, tenants, args, out).await;
    }
    if let Some(("reload", args)) = matches.subcommand() {
        return api::reload_remote(args, out).await;
    }
    let name = tenant_name(matches, &config, lang)?;
    tenant::warn_about_orphaned_records(&config, &store);

    // These read and change the state store only; they need no plugin.
    match matches.subcommand() {
        Some(("app-config", _)) => return app_config(&store, &name, out),
        Some(("outbox", args)) => return outbox::run(&store, &name, args, out),
        _ => {}
    }

    // One command runs one instance, so it skips the pool and its up-front
    // address-space reservation.
    let options = RuntimeOptions { pooling: false, ..RuntimeOptions::from_config(&config) };
    let runtime = open_runtime(&config, options, lang)?;
    let tenant = Tenant::new(&name, &config, store, runtime)
        .map_err(|e| Failure::operation(ErrorReport::new(lang, "state-store", None, format!("{e:#}"))))?;

    match matches.subcommand() {
        Some(("sync", args)) => sync(&tenant, args, out).await,
        Some(("delete", args)) => delete(&tenant, args, out).await,
        Some(("import", args)) => import::run(&tenant, args, out).await,
        Some(("query", args)) => query(&tenant, args, out).await,
        Some(("status", _)) => status(&tenant, out).await,
        Some(("flush", args)) => outbox::flush(&tenant, args, out).await,
        _ => unreachable!("clap requires a subcommand"),
    }
}

/// Loads the plugin with the engine `options`, using the compiled-plugin
/// cache.
fn open_runtime(config: &Config, options: RuntimeOptions, lang: Lang) -> Result<Arc<PluginRuntime>, Failure> {
    let cache = PluginCache::new(config.plugin_cache_dir.clone().unwrap_or_else(PluginCache::default_dir));
    PluginRuntime::new(&config.plugin_path, options, Some(cache))
        .map_err(|e| Failure::operation(ErrorReport::new(lang, "plugin-unavailable", None, format!("{e:#}"))))
}

fn open_tenants(config: &Config, store: SqliteStore, lang: Lang) -> Result<Tenants, Failure> {
    let runtime = open_runtime(config, RuntimeOptions::from_config(config), lang)?;
    Tenants::new(config, store, runtime).map_err(|e| Failure::operation(ErrorReport::new(lang, "state-store", None, format!("{e:#}"))))
}

/// Returns the tenant a command works on: `--tenant` (or `AGROS_SYNC_TENANT`), or the
/// only tenant the file defines.
fn tenant_name(matches: &ArgMatches, config: &Config, lang: Lang) -> Result<String, Failure> {
    let known = config.tenant_names().join(", ");
    let file = config.path.display();
    let (code, subject, detail, spanish) = match matches.get_one::<String>("tenant") {
        Some(name) if config.tenant(name).is_some() => return Ok(name.clone()),
        None if config.tenants.len() == 1 => return Ok(config.tenants[0].name.clone()),
        Some(name) => (
            "unknown-tenant",
            Some(name.clone()),
            format!("tenant {name:?} is not in {file}; known tenants: {known}"),
            format!("el tenant «{name}» no está en {file}; tenants configurados: {known}"),
        ),
        None => (
            "tenant-required",
            None,
            format!("{file} defines several tenants ({known}); pick one with --tenant or AGROS_SYNC_TENANT"),
            format!("{file} define varios tenants ({known}); elija uno con --tenant o AGROS_SYNC_TENANT"),
        ),
    };
    let mut failure = Failure::usage(lang, code, subject, detail);
    // The generic Spanish text cannot name the file or the tenants.
    if lang == Lang::Es {
        failure.report.message = spanish;
    }
    Err(failure)
}

fn text<'a>(args: &'a ArgMatches, name: &str) -> &'a str {
    args.get_one::<String>(name).map(String::as_str).unwrap_or_default()
}

async fn sync(tenant: &Tenant, args: &ArgMatches, out: &Output) -> Result<(), Failure> {
    let data = import::read_argument_or_stdin(text(args, "data"), out.lang)?;
    let local_id = args.get_one::<String>("local-id").map(String::as_str);
    let outcome = tenant
        .sync_object(text(args, "database"), text(args, "class"), &data, local_id)
        .await
        .map_err(|e| Failure::call(out.lang, &e))?;
    out.sync_outcome(text(args, "class"), &outcome);
    Ok(())
}

async fn delete(tenant: &Tenant, args: &ArgMatches, out: &Output) -> Result<(), Failure> {
    let target = match args.get_one::<String>("local-id") {
        Some(local_id) => ObjectRef::LocalId(local_id.clone()),
        None => ObjectRef::ObjectId(text(args, "object-id").to_owned()),
    };
    let outcome = tenant
        .delete_object(text(args, "database"), text(args, "class"), &target)
        .await
        .map_err(|e| Failure::call(out.lang, &e))?;
    out.deleted(text(args, "class"), &target, &outcome);
    Ok(())
}

async fn query(tenant: &Tenant, args: &ArgMatches, out: &Output) -> Result<(), Failure> {
    let options = QueryOptions {
        limit: args.get_one::<u32>("limit").copied(),
        skip: args.get_one::<u32>("skip").copied(),
        order: args.get_one::<String>("order").cloned(),
        keys: args.get_one::<String>("keys").cloned(),
    };
    let filters = args.get_one::<String>("where").map(String::as_str).unwrap_or("{}");
    let objects = tenant
        .query_objects(text(args, "database"), text(args, "class"), filters, &options)
        .await
        .map_err(|e| Failure::call(out.lang, &e))?;
    out.objects(&objects);
    Ok(())
}

fn app_config(store: &SqliteStore, tenant: &str, out: &Output) -> Result<(), Failure> {
    let rows = store
        .app_config_list(tenant)
        .map_err(|e| Failure::operation(ErrorReport::new(out.lang, "state-store", None, e.to_string())))?;
    out.app_config(&rows);
    Ok(())
}

async fn status(tenant: &Tenant, out: &Output) -> Result<(), Failure> {
    let (statuses, plugin) = tenant.status().await.map_err(|e| Failure::call(out.lang, &e))?;
    out.statuses(tenant.name(), &plugin, &statuses);
    Ok(())
}

//! The wasmtime embedding: one `Engine` and one `Linker` per process, one
//! `InstancePre` per plugin version, and the swap from one version to the next.
//!
//! - Instances come from the pooling allocator: memory, tables and instance
//!   slots are reserved once for `limits.max_instances` tenants, and a new
//!   instance reuses a slot (copy-on-write memory images) instead of asking
//!   the kernel for fresh mappings.
//! - Guest code is interrupted by epochs: a background thread advances the
//!   engine's epoch every [`EPOCH_TICK`]. At each tick a running guest yields
//!   to the async executor, so one tenant's busy loop does not starve the
//!   others, and a call that has run past its deadline traps.
//! - [`PluginRuntime::reload`] compiles a new plugin file off the call path,
//!   checks its WIT world and runs a self-check call on it before the swap.
//!   Calls hold the version they started on, so a swap never changes the code
//!   under a running call.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config as WasmtimeConfig, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, UpdateDeadline};

use crate::bindings::{Plugin, PluginPre};
use crate::config::Config;
use crate::host_state::{now_millis, HostState, TenantContext};
use crate::plugin_cache::PluginCache;

/// How often the epoch advances, and so how long a guest runs between two
/// yields to the executor.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The interface the plugin must export, and the version of it this host was
/// built against.
const EXPORT_NAME: &str = "agros:sync/sync-manager";
const WIT_VERSION: (u64, u64) = (0, 3);

/// Instances beyond `max_instances` the pool keeps for self-checks and for
/// the old version's last calls during a swap.
const SPARE_INSTANCES: u32 = 8;
/// Core instances, memories and tables one plugin component may use. A
/// `wasm32-wasip2` Rust plugin has one main module with one memory plus two
/// small shim modules that hold indirect-call tables. A plugin that needs
/// more fails its self-check, and the running version keeps serving.
const CORE_INSTANCES_PER_PLUGIN: u32 = 8;
const MEMORIES_PER_PLUGIN: u32 = 1;
const TABLES_PER_PLUGIN: u32 = 4;

/// Time the self-check calls of a new plugin may take.
const SELF_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Instance allocation settings of the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuntimeOptions {
    /// Pre-allocate instance slots (the pooling allocator) instead of mapping
    /// memory for each new instance.
    pub pooling: bool,
    /// Live instances the pool holds; one per tenant in use.
    pub max_instances: u32,
    /// Linear memory one instance may use, in bytes.
    pub memory_bytes: usize,
}

impl RuntimeOptions {
    pub fn from_config(config: &Config) -> Self {
        Self { pooling: config.pooling, max_instances: config.limits.max_instances, memory_bytes: config.limits.plugin_memory_bytes }
    }
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        Self {
            pooling: true,
            max_instances: crate::config::DEFAULT_MAX_INSTANCES,
            memory_bytes: crate::config::DEFAULT_PLUGIN_MEMORY_BYTES as usize,
        }
    }
}

/// One loaded plugin file, compiled, linked and checked.
pub struct PluginVersion {
    pub pre: PluginPre<HostState>,
    /// SHA-256 of the component file, in hex.
    pub hash: String,
    /// The version string the plugin's `plugin-version` export returned.
    pub version: String,
    pub path: PathBuf,
    /// When this version started serving, in Unix milliseconds.
    pub loaded_at: u64,
}

/// The outcome of a reload that failed, kept for status.
#[derive(Debug, Clone)]
pub struct ReloadFailure {
    /// SHA-256 of the file that was refused (empty when it could not be read).
    pub hash: String,
    pub error: String,
    pub at: u64,
}

/// The result of [`PluginRuntime::reload`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The new file is serving now.
    Swapped { from_hash: String, to_hash: String, version: String },
    /// The file has the hash of the version already serving.
    Unchanged { hash: String },
}

/// The engine, its linker and the plugin version that serves new calls.
pub struct PluginRuntime {
    pub engine: Engine,
    linker: Linker<HostState>,
    cache: Option<PluginCache>,
    plugin_path: PathBuf,
    options: RuntimeOptions,
    current: RwLock<Arc<PluginVersion>>,
    /// One reload at a time: two would compile the same file twice.
    reloading: tokio::sync::Mutex<()>,
    last_failure: Mutex<Option<ReloadFailure>>,
}

impl PluginRuntime {
    /// Creates a pooling engine with the default limits and loads the plugin
    /// at `plugin_path`.
    pub fn load(plugin_path: &Path) -> anyhow::Result<Arc<Self>> {
        Self::new(plugin_path, RuntimeOptions::default(), None)
    }

    /// Like [`PluginRuntime::load`], taking compiled code from `cache` when it
    /// has this exact component and engine, and storing it there otherwise.
    pub fn load_with_cache(plugin_path: &Path, cache: Option<PluginCache>) -> anyhow::Result<Arc<Self>> {
        Self::new(plugin_path, RuntimeOptions::default(), cache)
    }

    /// Creates the engine with `options` and loads the plugin. This blocks
    /// for the compile when the cache does not have the file.
    pub fn new(plugin_path: &Path, options: RuntimeOptions, cache: Option<PluginCache>) -> anyhow::Result<Arc<Self>> {
        let engine = new_engine(options)?;
        start_epoch_ticker(&engine);
        let linker = new_linker(&engine)?;
        let bytes = read_plugin(plugin_path)?;
        let (pre, hash) = prepare(&engine, &linker, cache.as_ref(), plugin_path, &bytes)?;
        // The first version is checked like any later one, on a small
        // runtime of its own because this function is not async.
        let version = tokio_block_on(self_check(&engine, &pre))
            .with_context(|| format!("plugin {} failed its self-check", plugin_path.display()))?;
        let first = Arc::new(PluginVersion { pre, hash, version, path: plugin_path.to_owned(), loaded_at: now_millis() });
        tracing::info!(plugin = %plugin_path.display(), hash = %first.hash, version = %first.version, pooling = options.pooling, "plugin loaded");
        Ok(Arc::new(Self {
            engine,
            linker,
            cache,
            plugin_path: plugin_path.to_owned(),
            options,
            current: RwLock::new(first),
            reloading: tokio::sync::Mutex::new(()),
            last_failure: Mutex::new(None),
        }))
    }

    /// The version new calls run on.
    pub fn current(&self) -> Arc<PluginVersion> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn plugin_path(&self) -> &Path {
        &self.plugin_path
    }

    pub fn options(&self) -> RuntimeOptions {
        self.options
    }

    /// Returns the last reload that failed, unless a later one succeeded.
    pub fn last_failure(&self) -> Option<ReloadFailure> {
        self.last_failure.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Reads the plugin file again and, if it changed, compiles it, checks
    /// its WIT world, runs the self-check and swaps it in. On any failure the
    /// running version keeps serving and the error is returned and kept for
    /// status.
    pub async fn reload(self: &Arc<Self>) -> anyhow::Result<ReloadOutcome> {
        let _one_at_a_time = self.reloading.lock().await;
        let result = self.try_reload().await;
        let mut last_failure = self.last_failure.lock().unwrap_or_else(|e| e.into_inner());
        match &result {
            Ok(outcome) => {
                *last_failure = None;
                if let ReloadOutcome::Swapped { from_hash, to_hash, version } = outcome {
                    tracing::info!(from = %from_hash, to = %to_hash, version = %version, "plugin reloaded");
                }
            }
            Err(error) => {
                let hash = std::fs::read(&self.plugin_path).map(|bytes| sha256_hex(&bytes)).unwrap_or_default();
                tracing::error!(plugin = %self.plugin_path.display(), hash = %hash, "plugin reload rejected; the running version keeps serving: {error:#}");
                *last_failure = Some(ReloadFailure { hash, error: format!("{error:#}"), at: now_millis() });
            }
        }
        result
    }

    async fn try_reload(self: &Arc<Self>) -> anyhow::Result<ReloadOutcome> {
        let path = self.plugin_path.clone();
        let bytes = tokio::fs::read(&path)
            .await
            .with_context(|| format!("failed to read plugin {}", path.display()))?;
        let running = self.current();
        let hash = sha256_hex(&bytes);
        if hash == running.hash {
            return Ok(ReloadOutcome::Unchanged { hash });
        }
        // Compiling takes a core for a few hundred milliseconds: keep it off
        // the threads that serve calls.
        let this = self.clone();
        let (pre, hash) = tokio::task::spawn_blocking(move || prepare(&this.engine, &this.linker, this.cache.as_ref(), &path, &bytes))
            .await
            .map_err(|e| anyhow!("the compile task failed: {e}"))??;
        let version = self_check(&self.engine, &pre)
            .await
            .with_context(|| format!("plugin {} failed its self-check", self.plugin_path.display()))?;
        let next = Arc::new(PluginVersion { pre, hash: hash.clone(), version: version.clone(), path: self.plugin_path.clone(), loaded_at: now_millis() });
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = next;
        Ok(ReloadOutcome::Swapped { from_hash: running.hash.clone(), to_hash: hash, version })
    }

    /// Creates a store for one instance of `context`'s tenant, with its
    /// memory limit and the epoch callback that enforces call deadlines.
    pub fn new_store(&self, context: Arc<TenantContext>) -> Store<HostState> {
        new_store(&self.engine, context)
    }
}

fn new_store(engine: &Engine, context: Arc<TenantContext>) -> Store<HostState> {
    let mut store = Store::new(engine, HostState::new(context));
    store.limiter(|state| state.limiter());
    store.epoch_deadline_callback(|store| match store.data().call_deadline {
        Some((deadline, budget)) if Instant::now() >= deadline => Err(wasmtime::Error::new(CallTimedOut(budget))),
        _ => Ok(UpdateDeadline::Yield(1)),
    });
    // Both start at 0, which would trap the first instruction; each call
    // sets its own deadline.
    store.set_epoch_deadline(1);
    store
}

/// The error the epoch callback raises when a call runs past its deadline.
#[derive(Debug, thiserror::Error)]
#[error("the call ran longer than {}s (limits.call_timeout_secs) and was stopped", .0.as_secs_f64())]
pub struct CallTimedOut(pub Duration);

fn new_engine(options: RuntimeOptions) -> anyhow::Result<Engine> {
    let mut config = WasmtimeConfig::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    // A memory never grows past the instance limit, so that is all the
    // address space each one needs to reserve.
    let memory_bytes = round_up_to_page(options.memory_bytes);
    config.memory_reservation(memory_bytes as u64);
    if options.pooling {
        let slots = options.max_instances.saturating_add(SPARE_INSTANCES);
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(slots)
            .total_core_instances(slots.saturating_mul(CORE_INSTANCES_PER_PLUGIN))
            .total_memories(slots.saturating_mul(MEMORIES_PER_PLUGIN))
            .total_tables(slots.saturating_mul(TABLES_PER_PLUGIN))
            .max_memory_size(memory_bytes)
            .max_core_instances_per_component(CORE_INSTANCES_PER_PLUGIN)
            .max_memories_per_component(MEMORIES_PER_PLUGIN)
            .max_tables_per_component(TABLES_PER_PLUGIN)
            .total_stacks(slots);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    Engine::new(&config).map_err(|e| {
        let text = format!("{e:#}").split_whitespace().collect::<Vec<_>>().join(" ");
        if options.pooling {
            anyhow!(
                "failed to create the wasmtime engine: {text}; the instance pool reserves address space for limits.max_instances ({}) instances of limits.plugin_memory_bytes ({}) each, so lower them or set plugin.pooling: false",
                options.max_instances,
                options.memory_bytes
            )
        } else {
            anyhow!("failed to create the wasmtime engine: {text}")
        }
    })
}

fn round_up_to_page(bytes: usize) -> usize {
    const PAGE: usize = 64 * 1024;
    bytes.div_ceil(PAGE) * PAGE
}

fn new_linker(engine: &Engine) -> anyhow::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)
        .map_err(|e| anyhow!("{e:?}"))
        .context("failed to link WASI")?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
        .map_err(|e| anyhow!("{e:?}"))
        .context("failed to link wasi:http")?;
    Plugin::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |state| state)
        .map_err(|e| anyhow!("{e:?}"))
        .context("failed to link the agros:sync imports")?;
    Ok(linker)
}

fn read_plugin(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| {
        format!(
            "failed to read plugin {}; build it with `cargo build -p agros-sync-guest --target wasm32-wasip2 --release` or set plugin.path in config.yaml",
            path.display()
        )
    })
}

/// Compiles (or takes from the cache), checks the exported interface's
/// version and links one plugin file. Returns it with its content hash.
fn prepare(engine: &Engine, linker: &Linker<HostState>, cache: Option<&PluginCache>, path: &Path, bytes: &[u8]) -> anyhow::Result<(PluginPre<HostState>, String)> {
    let compiled = match cache {
        Some(cache) => cache.load(engine, bytes).map(|(component, _)| component),
        None => Component::new(engine, bytes).map_err(|e| anyhow!("{e:#}")),
    };
    let component = compiled.map_err(|e| anyhow!("failed to compile plugin {}: {}", path.display(), compile_error_text(&e)))?;
    check_world(engine, &component).with_context(|| format!("plugin {} does not fit this host", path.display()))?;
    let instance_pre = linker
        .instantiate_pre(&component)
        .map_err(|e| anyhow!("{e:#}"))
        .with_context(|| format!("plugin {} imports something this host does not provide", path.display()))?;
    let pre = PluginPre::new(instance_pre)
        .map_err(|e| anyhow!("{e:#}"))
        .with_context(|| format!("plugin {} does not export {EXPORT_NAME} with the expected functions", path.display()))?;
    Ok((pre, sha256_hex(bytes)))
}

/// Returns a compile error as one line, with a hint for the common mistake
/// of building a core module instead of a component. wasmparser's messages
/// span several lines (a byte array printed one value per line).
fn compile_error_text(error: &anyhow::Error) -> String {
    let text = format!("{error:#}").split_whitespace().collect::<Vec<_>>().join(" ");
    if text.contains("with a component parser") {
        format!("{text}; the file is a core WebAssembly module, not a component: build the plugin with `--target wasm32-wasip2`")
    } else {
        text
    }
}

/// Checks that the component exports `agros:sync/sync-manager` at a version
/// compatible with [`WIT_VERSION`].
fn check_world(engine: &Engine, component: &Component) -> anyhow::Result<()> {
    let component_type = component.component_type();
    let exported: Vec<&str> = component_type.exports(engine).map(|(name, _)| name).collect();
    let Some(name) = exported.iter().find(|name| name.split('@').next() == Some(EXPORT_NAME)) else {
        bail!("it exports {exported:?}, not {EXPORT_NAME}; build it against wit/sync.wit");
    };
    compatible_export(name, WIT_VERSION).map_err(|message| anyhow!(message))
}

/// Checks the version of the export `name` (`agros:sync/sync-manager@x.y.z`)
/// against the host's `(major, minor)`: the same major version, or before 1.0
/// the same minor version.
fn compatible_export(name: &str, host: (u64, u64)) -> Result<(), String> {
    let version = name.split_once('@').map(|(_, v)| v).unwrap_or("");
    let mut parts = version.split('.').map(|p| p.parse::<u64>().ok());
    let (major, minor) = match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor),
        _ => return Err(format!("it exports {name} without a valid version; build it against wit/sync.wit")),
    };
    let compatible = major == host.0 && (major > 0 || minor == host.1);
    if !compatible {
        return Err(format!(
            "it exports {name}, but this host needs {EXPORT_NAME}@{}.{}.x; build the plugin from the same release as the host",
            host.0, host.1
        ));
    }
    Ok(())
}

/// Instantiates the plugin in a throwaway sandbox with no database and no
/// network, and calls `plugin-version` and `get-all-clients-status`. Returns
/// the version the plugin reports.
async fn self_check(engine: &Engine, pre: &PluginPre<HostState>) -> anyhow::Result<String> {
    let mut store = new_store(engine, Arc::new(TenantContext::self_check()));
    store.data_mut().call_deadline = Some((Instant::now() + SELF_CHECK_TIMEOUT, SELF_CHECK_TIMEOUT));

    let plugin = pre.instantiate_async(&mut store).await.map_err(|e| anyhow!("failed to instantiate: {e:#}"))?;
    let exports = plugin.agros_sync_sync_manager();
    let version = exports
        .call_plugin_version(&mut store)
        .await
        .map_err(|e| anyhow!("plugin-version trapped: {e:#}"))?;
    if version.trim().is_empty() {
        bail!("plugin-version returned an empty string");
    }
    let statuses = exports
        .call_get_all_clients_status(&mut store)
        .await
        .map_err(|e| anyhow!("get-all-clients-status trapped: {e:#}"))?;
    if !statuses.is_empty() {
        bail!("get-all-clients-status returned {} clients for a sandbox with no database", statuses.len());
    }
    Ok(version)
}

/// Runs `future` to completion on the current Tokio runtime when there is
/// one (on a helper thread, since this thread may be one of its workers),
/// or on a small runtime of its own.
fn tokio_block_on<F: std::future::Future + Send>(future: F) -> F::Output
where
    F::Output: Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a current-thread runtime starts")
                    .block_on(future)
            })
            .join()
            .expect("the self-check thread does not panic")
    })
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Advances the engine's epoch until the engine is dropped.
fn start_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("agros-sync-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawning a thread succeeds at start-up");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(bytes: &[u8]) -> String {
        let engine = new_engine(RuntimeOptions { pooling: false, max_instances: 1, memory_bytes: 1 << 20 }).unwrap();
        let error = Component::new(&engine, bytes).map_err(|e| anyhow!("{e:#}")).unwrap_err();
        compile_error_text(&error)
    }

    #[test]
    fn garbage_file_error_is_one_line() {
        let text = compile(b"not a plugin at all");
        assert!(!text.contains('\n'), "{text}");
        assert!(text.contains("magic header not detected"), "{text}");
    }

    #[test]
    fn core_module_error_names_the_target() {
        let text = compile(b"\0asm\x01\0\0\0");
        assert!(text.contains("with a component parser"), "{text}");
        assert!(text.ends_with("build the plugin with `--target wasm32-wasip2`"), "{text}");
    }

    #[test]
    fn same_minor_before_one_is_compatible() {
        assert_eq!(compatible_export("agros:sync/sync-manager@0.3.0", (0, 3)), Ok(()));
        assert_eq!(compatible_export("agros:sync/sync-manager@0.3.7", (0, 3)), Ok(()));
    }

    #[test]
    fn other_minor_before_one_is_rejected() {
        for name in ["agros:sync/sync-manager@0.2.0", "agros:sync/sync-manager@0.4.0"] {
            let error = compatible_export(name, (0, 3)).unwrap_err();
            assert_eq!(
                error,
                format!("it exports {name}, but this host needs agros:sync/sync-manager@0.3.x; build the plugin from the same release as the host")
            );
        }
    }

    #[test]
    fn other_major_is_rejected() {
        assert!(compatible_export("agros:sync/sync-manager@1.3.0", (0, 3)).is_err());
        assert!(compatible_export("agros:sync/sync-manager@1.0.0", (2, 0)).is_err());
    }

    #[test]
    fn any_minor_from_one_on_is_compatible() {
        assert_eq!(compatible_export("agros:sync/sync-manager@1.0.0", (1, 2)), Ok(()));
        assert_eq!(compatible_export("agros:sync/sync-manager@1.5.1", (1, 2)), Ok(()));
    }

    #[test]
    fn missing_or_malformed_version_is_rejected() {
        for name in ["agros:sync/sync-manager", "agros:sync/sync-manager@", "agros:sync/sync-manager@x.y.z", "agros:sync/sync-manager@1"] {
            let error = compatible_export(name, (0, 3)).unwrap_err();
            assert_eq!(error, format!("it exports {name} without a valid version; build it against wit/sync.wit"));
        }
    }
}

//! The wasmtime embedding: one `Engine` and `Linker`, one `InstancePre` per
//! loaded plugin file.
//!
//! Guest code is interrupted by epochs: a background thread advances the
//! engine's epoch every [`EPOCH_TICK`], and each call sets a deadline of
//! `limits.call_timeout_secs` worth of ticks, so a guest stuck in a loop traps
//! instead of holding its caller forever.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config as WasmtimeConfig, Engine};

use crate::bindings::{Plugin, PluginPre};
use crate::host_state::HostState;
use crate::plugin_cache::PluginCache;

/// How often the epoch advances.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// A compiled, linked plugin, ready to instantiate for any tenant.
pub struct PluginRuntime {
    pub engine: Engine,
    pub pre: PluginPre<HostState>,
    pub plugin_path: PathBuf,
    /// SHA-256 of the component file, in hex.
    pub plugin_hash: String,
}

impl PluginRuntime {
    /// Creates the engine and compiles and links the plugin at `plugin_path`.
    pub fn load(plugin_path: &Path) -> anyhow::Result<Arc<Self>> {
        Self::load_with_cache(plugin_path, None)
    }

    /// Like [`PluginRuntime::load`], taking compiled code from `cache` when it
    /// has this exact component and engine, and storing it there otherwise.
    pub fn load_with_cache(plugin_path: &Path, cache: Option<&PluginCache>) -> anyhow::Result<Arc<Self>> {
        let engine = new_engine()?;
        let bytes = std::fs::read(plugin_path).with_context(|| {
            format!(
                "failed to read plugin {}; build it with `cargo build -p agros-sync-guest --target wasm32-wasip2 --release` or set plugin.path in config.yaml",
                plugin_path.display()
            )
        })?;
        let compiled = match cache {
            Some(cache) => cache.load(&engine, &bytes).map(|(component, _)| component),
            None => Component::new(&engine, &bytes).map_err(|e| anyhow!("{e:?}")),
        };
        let component = compiled.with_context(|| format!("failed to compile plugin {}", plugin_path.display()))?;
        let plugin_hash = crate::plugin_cache::cache_key(&engine, &bytes).split('-').next().unwrap_or_default().to_owned();

        let linker = new_linker(&engine)?;
        let instance_pre = linker
            .instantiate_pre(&component)
            .map_err(|e| anyhow!("{e:?}"))
            .with_context(|| format!("plugin {} does not fit the agros:sync/plugin world", plugin_path.display()))?;
        let pre = PluginPre::new(instance_pre)
            .map_err(|e| anyhow!("{e:?}"))
            .with_context(|| format!("plugin {} does not export agros:sync/sync-manager", plugin_path.display()))?;

        start_epoch_ticker(&engine);
        Ok(Arc::new(Self { engine, pre, plugin_path: plugin_path.to_owned(), plugin_hash }))
    }
}

fn new_engine() -> anyhow::Result<Engine> {
    let mut config = WasmtimeConfig::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    Engine::new(&config).map_err(|e| anyhow!("{e:?}")).context("failed to create the wasmtime engine")
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

//! One tenant's plugin instance and the calls into it.
//!
//! Calls to one tenant are serialized: the instance keeps per-tenant state
//! (its Parse clients) and a component instance runs one call at a time. A
//! trap (panic, timeout, memory limit) ends that instance only; the next call
//! gets a fresh one. State the instance had written through the host's
//! imports (the id map, `app_config`) is durable and survives the trap.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use wasmtime::Store;

use crate::bindings::{ClientStatus, FlushReport, ObjectRef, Plugin, QueryOptions, SyncError, SyncOutcome};
use crate::config::Config;
use crate::engine::{PluginRuntime, EPOCH_TICK};
use crate::error::CallError;
use crate::host_state::{HostState, TenantContext};
use crate::state::SqliteStore;

struct Instance {
    store: Store<HostState>,
    plugin: Plugin,
}

/// A tenant: its context and, once used, its live instance.
pub struct Tenant {
    pub context: Arc<TenantContext>,
    runtime: Arc<PluginRuntime>,
    call_timeout: Duration,
    instance: Mutex<Option<Instance>>,
}

impl Tenant {
    /// Prepares the tenant and records each synced database's server URL and
    /// application id in `app_config` (`parser-<db>-host`, `parser-<db>-app-id`).
    pub fn new(name: &str, config: &Config, store: SqliteStore, runtime: Arc<PluginRuntime>) -> anyhow::Result<Self> {
        for (database, parse) in config.synced_databases() {
            store.app_config_set(name, &format!("parser-{}-host", database.key), &parse.url_text())?;
            store.app_config_set(name, &format!("parser-{}-app-id", database.key), &parse.app_id)?;
        }
        let context = Arc::new(TenantContext::new(name, config, store));
        Ok(Self::with_context(context, runtime, Duration::from_secs(config.limits.call_timeout_secs)))
    }

    /// Creates a tenant from a ready context. Tests use it to give the plugin a
    /// database its capability does not allow.
    pub fn with_context(context: Arc<TenantContext>, runtime: Arc<PluginRuntime>, call_timeout: Duration) -> Self {
        Self { context, runtime, call_timeout, instance: Mutex::new(None) }
    }

    pub async fn sync_object(&self, database_key: &str, class_name: &str, object_data: &str, local_id: Option<&str>) -> Result<SyncOutcome, CallError> {
        let mut slot = self.instance.lock().await;
        let instance = self.ready(&mut slot).await?;
        let call = instance
            .plugin
            .agros_sync_sync_manager()
            .call_sync_object(&mut instance.store, database_key, class_name, object_data, local_id)
            .await;
        self.finish(&mut slot, call)?.map_err(CallError::Plugin)
    }

    pub async fn delete_object(&self, database_key: &str, class_name: &str, target: &ObjectRef) -> Result<SyncOutcome, CallError> {
        let mut slot = self.instance.lock().await;
        let instance = self.ready(&mut slot).await?;
        let call = instance
            .plugin
            .agros_sync_sync_manager()
            .call_delete_object(&mut instance.store, database_key, class_name, target)
            .await;
        self.finish(&mut slot, call)?.map_err(CallError::Plugin)
    }

    pub async fn query_objects(&self, database_key: &str, class_name: &str, filters: &str, options: &QueryOptions) -> Result<Vec<String>, CallError> {
        let mut slot = self.instance.lock().await;
        let instance = self.ready(&mut slot).await?;
        let call = instance
            .plugin
            .agros_sync_sync_manager()
            .call_query_objects(&mut instance.store, database_key, class_name, filters, options)
            .await;
        self.finish(&mut slot, call)?.map_err(CallError::Plugin)
    }

    pub async fn get_all_clients_status(&self) -> Result<Vec<ClientStatus>, CallError> {
        let mut slot = self.instance.lock().await;
        let instance = self.ready(&mut slot).await?;
        let call = instance.plugin.agros_sync_sync_manager().call_get_all_clients_status(&mut instance.store).await;
        self.finish(&mut slot, call)
    }

    /// Sends due outbox entries; see `flush` in the WIT file.
    pub async fn flush(&self, database_key: Option<&str>, max_entries: u32, force: bool) -> Result<FlushReport, CallError> {
        let mut slot = self.instance.lock().await;
        let instance = self.ready(&mut slot).await?;
        let call = instance
            .plugin
            .agros_sync_sync_manager()
            .call_flush(&mut instance.store, database_key, max_entries, force)
            .await;
        self.finish(&mut slot, call)?.map_err(CallError::Plugin)
    }

    /// Returns the live instance, instantiating one if there is none, with a
    /// fresh call deadline.
    async fn ready<'a>(&self, slot: &'a mut Option<Instance>) -> Result<&'a mut Instance, CallError> {
        if slot.is_none() {
            *slot = Some(self.instantiate().await?);
        }
        let instance = slot.as_mut().expect("set above");
        let ticks = (self.call_timeout.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64;
        instance.store.set_epoch_deadline(ticks);
        Ok(instance)
    }

    async fn instantiate(&self) -> Result<Instance, CallError> {
        let mut store = Store::new(&self.runtime.engine, HostState::new(self.context.clone()));
        store.limiter(|state| state.limiter());
        store.epoch_deadline_trap();
        store.set_epoch_deadline(u64::MAX / 2);
        let plugin = self
            .runtime
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| CallError::Instantiate(format!("{e:?}")))?;
        tracing::info!(tenant = %self.context.name, plugin = %self.runtime.plugin_path.display(), "instantiated plugin");
        Ok(Instance { store, plugin })
    }

    /// Drops the instance after a trap, so the next call starts fresh.
    fn finish<T>(&self, slot: &mut Option<Instance>, call: wasmtime::Result<T>) -> Result<T, CallError> {
        match call {
            Ok(value) => Ok(value),
            Err(trap) => {
                let stderr = slot.take().map(|i| i.store.data().stderr.contents()).unwrap_or_default();
                let guest_output = String::from_utf8_lossy(&stderr).trim().to_owned();
                tracing::error!(tenant = %self.context.name, error = %format!("{trap:?}"), guest_stderr = %guest_output, "plugin trapped; its instance is discarded");
                // The first line of the root cause ("wasm trap: ...") and the
                // guest's panic line; the wasm backtrace goes to the log only.
                let root = trap.root_cause().to_string();
                let message = root.lines().next().unwrap_or("trap").to_owned();
                let guest_message = guest_output
                    .lines()
                    .find(|line| line.contains("panicked") || line.contains("memory allocation"))
                    .or_else(|| guest_output.lines().next())
                    .unwrap_or_default()
                    .to_owned();
                Err(CallError::Trap { tenant: self.context.name.clone(), message, guest_message })
            }
        }
    }
}

/// The tenant built from the top-level `databases:`.
pub const DEFAULT_TENANT: &str = "default";

/// Opens the state store and the plugin, and prepares the `default` tenant
/// from the top-level `databases:`.
pub fn open_default(config: &Config) -> anyhow::Result<Tenant> {
    let store = SqliteStore::open(&config.state)?;
    let runtime = PluginRuntime::load(&config.plugin_path)?;
    Tenant::new(DEFAULT_TENANT, config, store, runtime)
}

/// Returns the error a typed plugin call returned, for callers that match on it.
pub fn plugin_error(error: &CallError) -> Option<&SyncError> {
    match error {
        CallError::Plugin(e) => Some(e),
        _ => None,
    }
}

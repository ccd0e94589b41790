//! One tenant's plugin instance and the calls into it, and [`Tenants`], the
//! set of tenants one configuration defines.
//!
//! Calls to one tenant are serialized: the instance keeps per-tenant state
//! (its Parse clients) and a component instance runs one call at a time.
//! Calls to different tenants run concurrently. A trap (panic, timeout,
//! memory limit) ends that tenant's instance only; the next call gets a fresh
//! one. State the instance had written through the host's imports (the
//! outbox, the id map, `app_config`) is durable and survives the trap.
//!
//! Each instance remembers the plugin version it was created from. A call
//! that finds a newer version serving drops the old instance and starts one
//! of the new version. A call already running finishes on the old one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use tokio::sync::Mutex;
use wasmtime::Store;

use crate::bindings::{ClientStatus, FlushReport, ObjectRef, Plugin, QueryOptions, SyncError, SyncOutcome};
use crate::config::Config;
use crate::engine::{CallTimedOut, PluginRuntime, PluginVersion};
use crate::error::CallError;
use crate::host_state::{HostState, TenantContext};
use crate::state::SqliteStore;

pub use crate::config::DEFAULT_TENANT;

/// Extra wall-clock time past `limits.call_timeout_secs` before a call stuck
/// in host code (not in guest code, where the epoch stops it) is abandoned.
const TIMEOUT_GRACE: Duration = Duration::from_secs(5);

struct Instance {
    store: Store<HostState>,
    plugin: Plugin,
    version: Arc<PluginVersion>,
}

/// The plugin version a tenant runs, as status shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    pub version: String,
    pub hash: String,
    pub loaded_at: u64,
}

impl PluginInfo {
    pub fn of(version: &PluginVersion) -> Self {
        Self { version: version.version.clone(), hash: version.hash.clone(), loaded_at: version.loaded_at }
    }
}

/// A tenant: its context and, once used, its live instance.
pub struct Tenant {
    pub context: Arc<TenantContext>,
    runtime: Arc<PluginRuntime>,
    call_timeout: Duration,
    instance: Mutex<Option<Instance>>,
    /// The version of the live instance, readable while a call has
    /// `instance` locked.
    running: std::sync::Mutex<Option<PluginInfo>>,
}

/// Runs one exported call on the tenant's instance: instantiates when
/// needed, enforces the timeout and turns a trap into a typed error.
macro_rules! call {
    ($self:ident, |$plugin:ident, $store:ident| $call:expr) => {{
        let mut slot = $self.instance.lock().await;
        let instance = $self.ready(&mut slot).await?;
        let $plugin = &instance.plugin;
        let $store = &mut instance.store;
        let outcome = tokio::time::timeout($self.call_timeout + TIMEOUT_GRACE, $call).await;
        $self.finish(&mut slot, outcome)
    }};
}

impl Tenant {
    /// Prepares the tenant `name` of `config` and records each synced
    /// database's server URL and application id in its `app_config`
    /// (`parser-<db>-host`, `parser-<db>-app-id`).
    pub fn new(name: &str, config: &Config, store: SqliteStore, runtime: Arc<PluginRuntime>) -> anyhow::Result<Self> {
        let tenant = config
            .tenant(name)
            .ok_or_else(|| anyhow::anyhow!("tenant {name:?} is not in {}; known tenants: {}", config.path.display(), config.tenant_names().join(", ")))?;
        for (database, parse) in tenant.synced_databases() {
            store.app_config_set(name, &format!("parser-{}-host", database.key), &parse.url_text())?;
            store.app_config_set(name, &format!("parser-{}-app-id", database.key), &parse.app_id)?;
        }
        let context = Arc::new(TenantContext::new(name, config, store));
        Ok(Self::with_context(context, runtime, Duration::from_secs(config.limits.call_timeout_secs)))
    }

    /// Creates a tenant from a ready context. Tests use it to give the plugin a
    /// database its capability does not allow.
    pub fn with_context(context: Arc<TenantContext>, runtime: Arc<PluginRuntime>, call_timeout: Duration) -> Self {
        Self { context, runtime, call_timeout, instance: Mutex::new(None), running: std::sync::Mutex::new(None) }
    }

    pub fn name(&self) -> &str {
        &self.context.name
    }

    pub async fn sync_object(&self, database_key: &str, class_name: &str, object_data: &str, local_id: Option<&str>) -> Result<SyncOutcome, CallError> {
        call!(self, |plugin, store| plugin.agros_sync_sync_manager().call_sync_object(store, database_key, class_name, object_data, local_id))?
            .map_err(CallError::Plugin)
    }

    pub async fn delete_object(&self, database_key: &str, class_name: &str, target: &ObjectRef) -> Result<SyncOutcome, CallError> {
        call!(self, |plugin, store| plugin.agros_sync_sync_manager().call_delete_object(store, database_key, class_name, target))?
            .map_err(CallError::Plugin)
    }

    pub async fn query_objects(&self, database_key: &str, class_name: &str, filters: &str, options: &QueryOptions) -> Result<Vec<String>, CallError> {
        call!(self, |plugin, store| plugin.agros_sync_sync_manager().call_query_objects(store, database_key, class_name, filters, options))?
            .map_err(CallError::Plugin)
    }

    pub async fn get_all_clients_status(&self) -> Result<Vec<ClientStatus>, CallError> {
        call!(self, |plugin, store| plugin.agros_sync_sync_manager().call_get_all_clients_status(store))
    }

    /// Returns the clients' status and the plugin version of the instance
    /// that ran the call.
    pub async fn status(&self) -> Result<(Vec<ClientStatus>, PluginInfo), CallError> {
        let mut slot = self.instance.lock().await;
        let instance = self.ready(&mut slot).await?;
        let info = PluginInfo::of(&instance.version);
        let call = instance.plugin.agros_sync_sync_manager().call_get_all_clients_status(&mut instance.store);
        let outcome = tokio::time::timeout(self.call_timeout + TIMEOUT_GRACE, call).await;
        Ok((self.finish(&mut slot, outcome)?, info))
    }

    /// Sends due outbox entries; see `flush` in the WIT file.
    pub async fn flush(&self, database_key: Option<&str>, max_entries: u32, force: bool) -> Result<FlushReport, CallError> {
        call!(self, |plugin, store| plugin.agros_sync_sync_manager().call_flush(store, database_key, max_entries, force))?
            .map_err(CallError::Plugin)
    }

    /// The plugin's own version string, from the instance new calls use.
    pub async fn plugin_version(&self) -> Result<String, CallError> {
        call!(self, |plugin, store| plugin.agros_sync_sync_manager().call_plugin_version(store))
    }

    /// The version this tenant's live instance runs, or the one its next call
    /// will start when it has none. Does not wait for a call in progress.
    pub fn plugin_info(&self) -> PluginInfo {
        self.running_plugin().unwrap_or_else(|| PluginInfo::of(&self.runtime.current()))
    }

    /// The version of the live instance, or `None` when the tenant has none
    /// (its next call starts the serving version). Does not wait for a call
    /// in progress.
    pub fn running_plugin(&self) -> Option<PluginInfo> {
        self.running.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Drops the live instance, if any. Its next call starts a fresh one.
    pub async fn evict(&self) {
        let mut slot = self.instance.lock().await;
        self.discard(&mut slot);
    }

    /// Drops the live instance and clears its recorded version.
    fn discard(&self, slot: &mut Option<Instance>) -> Option<Instance> {
        *self.running.lock().unwrap_or_else(|e| e.into_inner()) = None;
        slot.take()
    }

    /// Returns the live instance, instantiating one if there is none or if a
    /// newer plugin version is serving, with a fresh call deadline.
    async fn ready<'a>(&self, slot: &'a mut Option<Instance>) -> Result<&'a mut Instance, CallError> {
        let current = self.runtime.current();
        let stale = slot.as_ref().is_some_and(|instance| !Arc::ptr_eq(&instance.version, &current));
        if stale {
            if let Some(old) = self.discard(slot) {
                tracing::info!(tenant = %self.context.name, from = %old.version.hash, to = %current.hash, "moving tenant to the new plugin version");
            }
        }
        if slot.is_none() {
            let instance = self.instantiate(current).await?;
            *self.running.lock().unwrap_or_else(|e| e.into_inner()) = Some(PluginInfo::of(&instance.version));
            *slot = Some(instance);
        }
        let instance = slot.as_mut().expect("set above");
        instance.store.data_mut().call_deadline = Some((Instant::now() + self.call_timeout, self.call_timeout));
        instance.store.set_epoch_deadline(1);
        Ok(instance)
    }

    async fn instantiate(&self, version: Arc<PluginVersion>) -> Result<Instance, CallError> {
        let mut store = self.runtime.new_store(self.context.clone());
        store.data_mut().call_deadline = Some((Instant::now() + self.call_timeout, self.call_timeout));
        let plugin = version
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| CallError::Instantiate(format!("{e:#}")))?;
        tracing::debug!(tenant = %self.context.name, hash = %version.hash, "instantiated plugin");
        Ok(Instance { store, plugin, version })
    }

    /// Drops the instance after a trap or a timeout, so the next call starts
    /// fresh.
    fn finish<T>(&self, slot: &mut Option<Instance>, outcome: Result<wasmtime::Result<T>, tokio::time::error::Elapsed>) -> Result<T, CallError> {
        let call = match outcome {
            Ok(call) => call,
            Err(_) => {
                self.discard(slot);
                tracing::error!(tenant = %self.context.name, "plugin call stuck past its deadline in host code; its instance is discarded");
                return Err(CallError::Timeout { tenant: self.context.name.clone(), seconds: self.call_timeout.as_secs() });
            }
        };
        match call {
            Ok(value) => Ok(value),
            Err(trap) if trap.is::<CallTimedOut>() => {
                self.discard(slot);
                tracing::error!(tenant = %self.context.name, "plugin call ran past its deadline; its instance is discarded");
                Err(CallError::Timeout { tenant: self.context.name.clone(), seconds: self.call_timeout.as_secs() })
            }
            Err(trap) => {
                let stderr = self.discard(slot).map(|i| i.store.data().stderr.contents()).unwrap_or_default();
                let guest_output = String::from_utf8_lossy(&stderr).trim().to_owned();
                tracing::error!(tenant = %self.context.name, error = %format!("{trap:?}"), guest_stderr = %guest_output, "plugin trapped; its instance is discarded");
                // The first line of the root cause ("wasm trap: ...") and the
                // guest's panic line; the wasm backtrace goes to the log only.
                let root = trap.root_cause().to_string();
                let message = root.lines().next().unwrap_or("trap").to_owned();
                let guest_message = guest_message(&guest_output);
                Err(CallError::Trap { tenant: self.context.name.clone(), message, guest_message })
            }
        }
    }
}

/// Returns the guest's own reason for a trap, taken from its stderr: Rust's
/// panic report or its allocation failure, else the first line. Since Rust
/// 1.73 a panic prints `thread '...' panicked at FILE:LINE:COL:` and the
/// message on the next line, so the two lines are joined.
fn guest_message(output: &str) -> String {
    let lines: Vec<&str> = output.lines().collect();
    if let Some(at) = lines.iter().position(|line| line.contains("panicked")) {
        return match lines.get(at + 1) {
            Some(message) => format!("{} {}", lines[at], message.trim()),
            None => lines[at].to_owned(),
        };
    }
    let reason = lines.iter().find(|line| line.contains("memory allocation")).or(lines.first());
    reason.map(|line| (*line).to_owned()).unwrap_or_default()
}

/// A tenant name the configuration does not define.
#[derive(Debug, thiserror::Error)]
#[error("tenant {name:?} is not configured; known tenants: {}", .known.join(", "))]
pub struct UnknownTenant {
    pub name: String,
    pub known: Vec<String>,
}

/// Every tenant of one configuration, over one plugin runtime and one state
/// store. Tenants are created up front (cheap: no instance yet); each one
/// instantiates the plugin on its first call.
pub struct Tenants {
    pub runtime: Arc<PluginRuntime>,
    pub store: SqliteStore,
    tenants: IndexMap<String, Arc<Tenant>>,
}

impl Tenants {
    pub fn new(config: &Config, store: SqliteStore, runtime: Arc<PluginRuntime>) -> anyhow::Result<Self> {
        warn_about_orphaned_records(config, &store);
        let mut tenants = IndexMap::new();
        for tenant in &config.tenants {
            let created = Tenant::new(&tenant.name, config, store.clone(), runtime.clone())?;
            tenants.insert(tenant.name.clone(), Arc::new(created));
        }
        Ok(Self { runtime, store, tenants })
    }

    pub fn get(&self, name: &str) -> Result<&Arc<Tenant>, UnknownTenant> {
        self.tenants.get(name).ok_or_else(|| UnknownTenant { name: name.to_owned(), known: self.names() })
    }

    pub fn names(&self) -> Vec<String> {
        self.tenants.keys().cloned().collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Tenant>> {
        self.tenants.values()
    }
}

/// Logs a warning for each tenant that has local ids or outbox entries in
/// `store` but is not in `config`. Renaming a tenant, or moving a file from
/// `databases:` to `tenants:`, leaves the old name's records behind: its
/// local ids no longer match, so syncing them again creates new objects.
pub fn warn_about_orphaned_records(config: &Config, store: &SqliteStore) {
    let orphaned = match store.tenants_with_records() {
        Ok(tenants) => tenants,
        Err(error) => {
            tracing::warn!("failed to look for records of unconfigured tenants: {error}");
            return;
        }
    };
    for (name, local_ids, entries) in orphaned {
        if config.tenant(&name).is_none() {
            tracing::warn!(
                tenant = %name,
                local_ids,
                outbox_entries = entries,
                "the state store holds records of tenant {name:?}, which {} does not define; name a tenant {name:?} to keep using them, or new syncs of the same local ids create new objects",
                config.path.display()
            );
        }
    }
}

/// Opens the state store and the plugin, and prepares the tenant `default`
/// from the top-level `databases:`.
pub fn open_default(config: &Config) -> anyhow::Result<Tenant> {
    let store = SqliteStore::open(&config.state)?;
    let runtime = PluginRuntime::new(&config.plugin_path, crate::engine::RuntimeOptions::from_config(config), None)?;
    Tenant::new(DEFAULT_TENANT, config, store, runtime)
}

/// Returns the error a typed plugin call returned, for callers that match on it.
pub fn plugin_error(error: &CallError) -> Option<&SyncError> {
    match error {
        CallError::Plugin(e) => Some(e),
        _ => None,
    }
}

//! The data of one tenant's `Store`, and the host side of the plugin's
//! imports: configuration, `app_config`, the id map and logging.
//!
//! Trust boundary: everything the guest reads through these imports is scoped
//! to its own tenant, and none of it carries a secret.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::bindings::agros::sync::{app_config, config, id_map, log, types};
use crate::config::Config;
use crate::http_capability::{CapabilityHooks, HttpCapability};
use crate::state::{IdBinding, SqliteStore};

/// Bytes of guest stderr kept for error reports (a panic message fits).
const STDERR_CAPACITY: usize = 64 * 1024;

/// What every instance of one tenant shares.
pub struct TenantContext {
    pub name: String,
    pub databases: Vec<config::Database>,
    pub limits: config::PluginLimits,
    pub memory_limit_bytes: usize,
    pub store: SqliteStore,
    pub capability: Arc<HttpCapability>,
}

impl TenantContext {
    pub fn new(name: &str, config: &Config, store: SqliteStore) -> Self {
        let databases = config
            .databases
            .iter()
            .map(|database| config::Database {
                key: database.key.clone(),
                sync: database.sync,
                server_url: database.parse.as_ref().map(|p| p.url_text()).unwrap_or_default(),
                app_id: database.parse.as_ref().map(|p| p.app_id.clone()).unwrap_or_default(),
            })
            .collect();
        Self {
            name: name.to_owned(),
            databases,
            limits: config::PluginLimits {
                max_object_bytes: config.limits.max_object_bytes,
                query_page_size: config.limits.query_page_size,
            },
            memory_limit_bytes: config.limits.plugin_memory_bytes,
            store,
            capability: Arc::new(HttpCapability::for_tenant(name, config)),
        }
    }
}

/// The `T` of a tenant instance's `Store<T>`.
pub struct HostState {
    pub tenant: Arc<TenantContext>,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: CapabilityHooks,
    table: ResourceTable,
    limits: StoreLimits,
    /// The guest's stderr, where a Rust panic prints its message.
    pub stderr: MemoryOutputPipe,
}

impl HostState {
    /// A sandbox with no filesystem, environment, arguments or sockets; its
    /// only way out is the tenant's HTTP capability.
    pub fn new(tenant: Arc<TenantContext>) -> Self {
        let stderr = MemoryOutputPipe::new(STDERR_CAPACITY);
        let wasi = WasiCtxBuilder::new()
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let limits = StoreLimitsBuilder::new().memory_size(tenant.memory_limit_bytes).instances(4).build();
        Self {
            hooks: CapabilityHooks { capability: tenant.capability.clone() },
            tenant,
            wasi,
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            limits,
            stderr,
        }
    }

    pub fn limiter(&mut self) -> &mut dyn ResourceLimiter {
        &mut self.limits
    }

    fn database_known(&self, database_key: &str) -> wasmtime::Result<()> {
        if self.tenant.databases.iter().any(|d| d.key == database_key) {
            Ok(())
        } else {
            Err(wasmtime::format_err!("plugin used unknown database {database_key:?} in the id map"))
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.hooks }
    }
}

impl types::Host for HostState {}

impl config::Host for HostState {
    fn tenant(&mut self) -> wasmtime::Result<String> {
        Ok(self.tenant.name.clone())
    }

    fn databases(&mut self) -> wasmtime::Result<Vec<config::Database>> {
        Ok(self.tenant.databases.clone())
    }

    fn limits(&mut self) -> wasmtime::Result<config::PluginLimits> {
        Ok(self.tenant.limits)
    }
}

impl app_config::Host for HostState {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.tenant.store.app_config_get(&self.tenant.name, &key)?)
    }

    fn set(&mut self, key: String, value: String) -> wasmtime::Result<()> {
        Ok(self.tenant.store.app_config_set(&self.tenant.name, &key, &value)?)
    }
}

impl id_map::Host for HostState {
    fn get(&mut self, database_key: String, class_name: String, local_id: String) -> wasmtime::Result<Option<id_map::Binding>> {
        self.database_known(&database_key)?;
        let binding = self.tenant.store.id_get(&self.tenant.name, &database_key, &class_name, &local_id)?;
        Ok(binding.map(|b| id_map::Binding { object_id: b.object_id, confirmed: b.confirmed }))
    }

    fn put(&mut self, database_key: String, class_name: String, local_id: String, value: id_map::Binding) -> wasmtime::Result<()> {
        self.database_known(&database_key)?;
        let binding = IdBinding { object_id: value.object_id, confirmed: value.confirmed };
        Ok(self.tenant.store.id_put(&self.tenant.name, &database_key, &class_name, &local_id, &binding)?)
    }
}

impl log::Host for HostState {
    fn log(&mut self, level: log::Level, message: String, fields: Vec<(String, String)>) -> wasmtime::Result<()> {
        let fields: String = fields.iter().map(|(k, v)| format!(" {k}={v}")).collect();
        let tenant = &self.tenant.name;
        match level {
            log::Level::Trace => tracing::trace!(target: "agros_sync::plugin", tenant, "{message}{fields}"),
            log::Level::Debug => tracing::debug!(target: "agros_sync::plugin", tenant, "{message}{fields}"),
            log::Level::Info => tracing::info!(target: "agros_sync::plugin", tenant, "{message}{fields}"),
            log::Level::Warn => tracing::warn!(target: "agros_sync::plugin", tenant, "{message}{fields}"),
            log::Level::Error => tracing::error!(target: "agros_sync::plugin", tenant, "{message}{fields}"),
        }
        Ok(())
    }
}

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

use crate::bindings::agros::sync::{app_config, config, id_map, log, outbox, types};
use crate::config::Config;
use crate::http_capability::{CapabilityHooks, HttpCapability};
use crate::state::{self as state, IdBinding, SqliteStore};

/// Bytes of guest stderr kept for error reports (a panic message fits).
const STDERR_CAPACITY: usize = 64 * 1024;

/// The data every instance of one tenant shares.
pub struct TenantContext {
    pub name: String,
    pub databases: Vec<config::Database>,
    pub limits: config::PluginLimits,
    pub memory_limit_bytes: usize,
    pub store: SqliteStore,
    pub capability: Arc<HttpCapability>,
}

impl TenantContext {
    /// Builds the context of the tenant `name` in `config`. A tenant the file
    /// does not name gets no database, so every call it makes fails as
    /// `unknown-database`.
    pub fn new(name: &str, config: &Config, store: SqliteStore) -> Self {
        let databases = config
            .tenant(name)
            .into_iter()
            .flat_map(|t| t.databases.iter())
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
                batch_size: config.limits.batch_size,
                retry_initial_ms: config.limits.retry_initial_ms,
                retry_max_ms: config.limits.retry_max_ms,
            },
            memory_limit_bytes: config.limits.plugin_memory_bytes,
            store,
            capability: Arc::new(HttpCapability::for_tenant(name, config)),
        }
    }

    /// Builds the sandbox a new plugin version's self-check runs in: no database, an
    /// in-memory state store and a capability that allows no request.
    pub fn self_check() -> Self {
        Self {
            name: "self-check".to_owned(),
            databases: Vec::new(),
            limits: config::PluginLimits {
                max_object_bytes: crate::config::DEFAULT_MAX_OBJECT_BYTES,
                query_page_size: crate::config::DEFAULT_QUERY_PAGE_SIZE,
                batch_size: crate::config::DEFAULT_BATCH_SIZE,
                retry_initial_ms: crate::config::DEFAULT_RETRY_INITIAL_MS,
                retry_max_ms: crate::config::DEFAULT_RETRY_MAX_MS,
            },
            memory_limit_bytes: crate::config::DEFAULT_PLUGIN_MEMORY_BYTES as usize,
            store: SqliteStore::open(&state::StateLocation::SqliteMemory).expect("an in-memory SQLite database opens"),
            capability: Arc::new(HttpCapability::deny_all("self-check")),
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
    /// When the running call must stop, and the budget that set it.
    pub call_deadline: Option<(std::time::Instant, std::time::Duration)>,
}

impl HostState {
    /// Creates a sandbox with no filesystem, environment, arguments or
    /// sockets. Its only way out is the tenant's HTTP capability.
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
            call_deadline: None,
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

impl outbox::Host for HostState {
    fn enqueue(&mut self, entry: outbox::NewEntry) -> wasmtime::Result<outbox::Enqueued> {
        self.database_known(&entry.database_key)?;
        let entry = state::NewEntry {
            database_key: entry.database_key,
            class_name: entry.class_name,
            operation: operation_from_wit(entry.operation),
            object_id: entry.object_id,
            local_id: entry.local_id,
            payload: entry.payload,
        };
        let (id, operation, object_id) = self.tenant.store.outbox_enqueue(&self.tenant.name, &entry, now_millis())?;
        Ok(outbox::Enqueued { id, operation: operation_to_wit(operation), object_id })
    }

    fn coalesce(&mut self, database_key: String, class_name: String, object_id: String, payload: String) -> wasmtime::Result<Option<u64>> {
        self.database_known(&database_key)?;
        Ok(self.tenant.store.outbox_coalesce(&self.tenant.name, &database_key, &class_name, &object_id, &payload)?)
    }

    fn due(&mut self, database_key: String, now: u64, max: u32) -> wasmtime::Result<Vec<outbox::Entry>> {
        let entries = self.tenant.store.outbox_due(&self.tenant.name, &database_key, now, max)?;
        Ok(entries.into_iter().map(entry_to_wit).collect())
    }

    fn for_object(&mut self, database_key: String, class_name: String, object_id: String) -> wasmtime::Result<Vec<outbox::Entry>> {
        let entries = self.tenant.store.outbox_for_object(&self.tenant.name, &database_key, &class_name, &object_id)?;
        Ok(entries.into_iter().map(entry_to_wit).collect())
    }

    fn get(&mut self, id: u64) -> wasmtime::Result<Option<outbox::Entry>> {
        Ok(self.tenant.store.outbox_get(&self.tenant.name, id)?.map(entry_to_wit))
    }

    fn complete(&mut self, deliveries: Vec<outbox::Delivery>) -> wasmtime::Result<()> {
        let deliveries: Vec<state::Delivery> = deliveries
            .into_iter()
            .map(|d| state::Delivery { id: d.id, object_id: d.object_id, sent_payload: d.sent_payload })
            .collect();
        Ok(self.tenant.store.outbox_complete(&self.tenant.name, &deliveries)?)
    }

    fn retry_at(&mut self, id: u64, next_attempt_at: u64, code: Option<i32>, message: String) -> wasmtime::Result<()> {
        Ok(self.tenant.store.outbox_retry_at(&self.tenant.name, id, next_attempt_at, code, &message)?)
    }

    fn dead_letter(&mut self, id: u64, code: Option<i32>, message: String) -> wasmtime::Result<()> {
        tracing::warn!(tenant = %self.tenant.name, outbox_id = id, code, "outbox entry dead-lettered: {message}");
        Ok(self.tenant.store.outbox_dead_letter(&self.tenant.name, id, code, &message)?)
    }

    fn stats(&mut self, database_key: String) -> wasmtime::Result<outbox::OutboxStats> {
        let stats = self.tenant.store.outbox_stats(&self.tenant.name, &database_key)?;
        Ok(outbox::OutboxStats {
            pending: stats.pending,
            dead: stats.dead,
            oldest_pending_at: stats.oldest_pending_at,
            next_attempt_at: stats.next_attempt_at,
        })
    }
}

/// Unix time in milliseconds.
pub fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

fn operation_from_wit(operation: outbox::Operation) -> state::Operation {
    match operation {
        outbox::Operation::Create => state::Operation::Create,
        outbox::Operation::Update => state::Operation::Update,
        outbox::Operation::Delete => state::Operation::Delete,
    }
}

fn operation_to_wit(operation: state::Operation) -> outbox::Operation {
    match operation {
        state::Operation::Create => outbox::Operation::Create,
        state::Operation::Update => outbox::Operation::Update,
        state::Operation::Delete => outbox::Operation::Delete,
    }
}

fn entry_to_wit(entry: state::OutboxEntry) -> outbox::Entry {
    outbox::Entry {
        id: entry.id,
        database_key: entry.database_key,
        class_name: entry.class_name,
        operation: operation_to_wit(entry.operation),
        object_id: entry.object_id,
        local_id: entry.local_id,
        payload: entry.payload,
        attempts: entry.attempts,
        created_at: entry.created_at,
        next_attempt_at: entry.next_attempt_at,
        state: match entry.state {
            state::EntryState::Pending => outbox::EntryState::Pending,
            state::EntryState::Dead => outbox::EntryState::Dead,
        },
        last_error_code: entry.last_error_code,
        last_error: entry.last_error,
    }
}

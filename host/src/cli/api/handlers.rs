//! One handler per endpoint. Each reads its input, calls the same tenant or
//! store operation as the matching CLI command and returns the same JSON as
//! that command's `--json` output.

use std::net::SocketAddr;
use std::sync::Arc;

use agros_sync_host::bindings::{ObjectRef, QueryOptions, SyncStatus};
use agros_sync_host::engine::ReloadOutcome;
use agros_sync_host::error::ErrorReport;
use agros_sync_host::json::{flush_report_json, outbox_entry_json, plugin_json, sync_outcome_json, tenant_status_json};
use agros_sync_host::messages::{blank_id_field_message, Lang};
use agros_sync_host::state::EntryState;
use agros_sync_host::tenant::{PluginInfo, Tenant};
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::request::{query_pairs, read_json};
use super::response::{ApiError, Reply};
use super::routes::{Endpoint, Found};
use super::ApiState;
use crate::cli::outbox::{discard_entries, entry_not_found, flush_until_idle, retry_dead_letters, state_error, DeadLetters};
use crate::cli::serve::print_reload_result;

/// The OpenAPI description of every route. `GET /openapi.json` serves it
/// with `servers` changed by [`openapi_for`].
pub const OPENAPI: &str = include_str!("../openapi.json");

/// Entries `GET /outbox` lists when the request sets no `limit`, as
/// `agros-sync outbox list` does.
const DEFAULT_LIST_LIMIT: u32 = 100;

type Handled = Result<Reply, ApiError>;

/// Runs the endpoint of `found`. The tenant is looked up before the body is
/// read, so an unknown tenant is reported whatever the body contains.
pub async fn dispatch(state: &ApiState, request: Request<Incoming>, found: &Found<'_>, lang: Lang) -> Handled {
    let tenant = || tenant(state, found.tenant.unwrap_or_default(), lang);
    match found.route.endpoint {
        Endpoint::Health => Ok(Reply::ok(json!({ "status": "ok" }))),
        Endpoint::OpenApi => Ok(Reply::json_bytes(state.openapi.clone())),
        Endpoint::Tenants => Ok(Reply::ok(tenants(state))),
        Endpoint::Status => status(state, tenant()?, lang).await,
        Endpoint::Sync => sync(tenant()?, read_json(request, state.max_body_bytes, lang).await?, lang).await,
        Endpoint::Delete => delete(tenant()?, read_json(request, state.max_body_bytes, lang).await?, lang).await,
        Endpoint::Query => query(tenant()?, read_json(request, state.max_body_bytes, lang).await?, lang).await,
        Endpoint::Flush => flush(tenant()?, read_json(request, state.max_body_bytes, lang).await?, lang).await,
        Endpoint::OutboxList => outbox_list(tenant()?, request.uri().query(), lang).await,
        Endpoint::OutboxEntry => outbox_entry(tenant()?, found.id.unwrap_or_default(), lang).await,
        Endpoint::OutboxRetry => outbox_retry(tenant()?, read_json(request, state.max_body_bytes, lang).await?, lang).await,
        Endpoint::OutboxDiscard => outbox_discard(tenant()?, read_json(request, state.max_body_bytes, lang).await?, lang).await,
        Endpoint::Reload => {
            read_json::<NoFields>(request, state.max_body_bytes, lang).await?;
            reload(state, lang).await
        }
    }
}

/// Returns [`OPENAPI`] with its one server set to `address`, where `serve`
/// listens. A wildcard address (`0.0.0.0`, `::`) is no URL a client can use,
/// so the server is then `/`, which OpenAPI resolves against the URL the
/// document was fetched from.
pub fn openapi_for(address: SocketAddr) -> String {
    let mut document: Value = serde_json::from_str(OPENAPI).expect("openapi.json is valid JSON; a unit test checks it");
    let url = if address.ip().is_unspecified() { "/".to_owned() } else { format!("http://{address}") };
    document["servers"] = json!([{ "url": url }]);
    document.to_string()
}

fn tenant(state: &ApiState, name: &str, lang: Lang) -> Result<Arc<Tenant>, ApiError> {
    state
        .tenants
        .get(name)
        .cloned()
        .map_err(|e| ApiError::new(lang, "unknown-tenant", Some(name.to_owned()), e.to_string()))
}

/// A request body that must be empty or `{}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoFields {}

/// The tenant names, the plugin version serving new instances, and the
/// version each tenant's live instance runs (`null` before its first call).
fn tenants(state: &ApiState) -> Value {
    let running: serde_json::Map<String, Value> = state
        .tenants
        .iter()
        .map(|tenant| (tenant.name().to_owned(), tenant.running_plugin().as_ref().map(plugin_json).unwrap_or(Value::Null)))
        .collect();
    let serving = state.tenants.runtime.current();
    json!({
        "tenants": state.tenants.names(),
        "plugin": plugin_json(&PluginInfo::of(&serving)),
        "running": running,
    })
}

async fn status(state: &ApiState, tenant: Arc<Tenant>, lang: Lang) -> Handled {
    let (statuses, plugin) = tenant.status().await.map_err(|e| ApiError::from_call(lang, &e))?;
    let mut body = tenant_status_json(tenant.name(), &plugin, &statuses, lang);
    body["plugin"]["last_reload_failure"] = match state.tenants.runtime.last_failure() {
        Some(failure) => json!({ "hash": failure.hash, "error": failure.error, "at": failure.at }),
        None => Value::Null,
    };
    Ok(Reply::ok(body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SyncRequest {
    database: String,
    class: String,
    /// Passed to the plugin as sent, so numbers keep their exact text.
    data: Box<RawValue>,
    local_id: Option<String>,
}

async fn sync(tenant: Arc<Tenant>, request: SyncRequest, lang: Lang) -> Handled {
    if let Some(local_id) = &request.local_id {
        reject_blank_id("local_id", local_id, lang)?;
    }
    let outcome = tenant
        .sync_object(&request.database, &request.class, request.data.get(), request.local_id.as_deref())
        .await
        .map_err(|e| ApiError::from_call(lang, &e))?;
    Ok(Reply::with_status(write_status(outcome.status), sync_outcome_json(&outcome)))
}

/// 200 when the server confirmed the write, 202 when it waits in the outbox.
fn write_status(status: SyncStatus) -> StatusCode {
    match status {
        SyncStatus::Synced => StatusCode::OK,
        SyncStatus::Queued => StatusCode::ACCEPTED,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteRequest {
    database: String,
    class: String,
    object_id: Option<String>,
    local_id: Option<String>,
}

async fn delete(tenant: Arc<Tenant>, request: DeleteRequest, lang: Lang) -> Handled {
    let target = match (request.object_id, request.local_id) {
        (Some(object_id), None) => {
            reject_blank_id("object_id", &object_id, lang)?;
            ObjectRef::ObjectId(object_id)
        }
        (None, Some(local_id)) => {
            reject_blank_id("local_id", &local_id, lang)?;
            ObjectRef::LocalId(local_id)
        }
        _ => {
            let detail = "a delete names its object with exactly one of object_id and local_id".to_owned();
            return Err(ApiError::new(lang, "invalid-argument", None, detail));
        }
    };
    let outcome = tenant
        .delete_object(&request.database, &request.class, &target)
        .await
        .map_err(|e| ApiError::from_call(lang, &e))?;
    Ok(Reply::with_status(write_status(outcome.status), sync_outcome_json(&outcome)))
}

/// Rejects an id that is empty or only whitespace. An empty `object_id`
/// would make the delete URL `/classes/{class}/`, for which Parse Server
/// returns an HTML 404 page.
fn reject_blank_id(field: &str, value: &str, lang: Lang) -> Result<(), ApiError> {
    if !value.trim().is_empty() {
        return Ok(());
    }
    let mut report = ErrorReport::new(lang, "invalid-argument", Some(field.to_owned()), blank_id_field_message(Lang::En, field));
    report.message = blank_id_field_message(lang, field);
    Err(ApiError::from_report(report))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryRequest {
    database: String,
    class: String,
    #[serde(rename = "where")]
    filters: Option<Box<RawValue>>,
    limit: Option<u32>,
    skip: Option<u32>,
    order: Option<String>,
    keys: Option<String>,
}

async fn query(tenant: Arc<Tenant>, request: QueryRequest, lang: Lang) -> Handled {
    let options = QueryOptions { limit: request.limit, skip: request.skip, order: request.order, keys: request.keys };
    let filters = request.filters.as_deref().map(RawValue::get).unwrap_or("{}");
    let objects = tenant
        .query_objects(&request.database, &request.class, filters, &options)
        .await
        .map_err(|e| ApiError::from_call(lang, &e))?;
    let results: Vec<Value> = objects.iter().map(|o| serde_json::from_str(o).unwrap_or_else(|_| Value::String(o.clone()))).collect();
    Ok(Reply::ok(json!({ "results": results })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FlushRequest {
    database: Option<String>,
    /// Send entries waiting for their next retry now too, as `agros-sync
    /// flush` does.
    #[serde(default)]
    force: bool,
}

async fn flush(tenant: Arc<Tenant>, request: FlushRequest, lang: Lang) -> Handled {
    let totals = flush_until_idle(&tenant, request.database.as_deref(), request.force, |_| {})
        .await
        .map_err(|e| ApiError::from_call(lang, &e))?;
    Ok(Reply::ok(flush_report_json(&totals)))
}

async fn outbox_list(tenant: Arc<Tenant>, query: Option<&str>, lang: Lang) -> Handled {
    let (mut state, mut database, mut limit) = (None, None, DEFAULT_LIST_LIMIT);
    for (name, value) in query_pairs(query) {
        match name.as_str() {
            "state" => state = Some(entry_state(&value, lang)?),
            "database" => database = Some(known_database(&tenant, value, lang)?),
            "limit" => match value.parse::<u32>() {
                Ok(n) if n > 0 => limit = n,
                _ => return Err(invalid_parameter(lang, &name, &value, "a positive integer")),
            },
            _ => return Err(invalid_parameter(lang, &name, &value, "one of state, database and limit as the parameter name")),
        }
    }
    let entries = blocking(lang, move || {
        let store = &tenant.context.store;
        store.outbox_list(&tenant.context.name, database.as_deref(), state, limit).map_err(|e| state_error(lang, e))
    })
    .await?;
    let values: Vec<Value> = entries.iter().map(|e| outbox_entry_json(e, false)).collect();
    Ok(Reply::ok(json!({ "entries": values })))
}

fn entry_state(value: &str, lang: Lang) -> Result<EntryState, ApiError> {
    match value {
        "pending" => Ok(EntryState::Pending),
        "dead" => Ok(EntryState::Dead),
        _ => Err(invalid_parameter(lang, "state", value, "pending or dead")),
    }
}

/// Checks that `key` is one of the tenant's databases.
fn known_database(tenant: &Tenant, key: String, lang: Lang) -> Result<String, ApiError> {
    let databases = &tenant.context.databases;
    if databases.iter().any(|d| d.key == key) {
        return Ok(key);
    }
    let known: Vec<&str> = databases.iter().map(|d| d.key.as_str()).collect();
    let detail = format!("database {key:?} is not configured for tenant {:?}; known databases: {}", tenant.name(), known.join(", "));
    Err(ApiError::new(lang, "unknown-database", Some(key), detail))
}

fn invalid_parameter(lang: Lang, name: &str, value: &str, expected: &str) -> ApiError {
    ApiError::new(lang, "invalid-argument", Some(name.to_owned()), format!("invalid query parameter {name}={value:?}; expected {expected}"))
}

async fn outbox_entry(tenant: Arc<Tenant>, id: &str, lang: Lang) -> Handled {
    let Ok(id) = id.parse::<u64>() else {
        let detail = format!("outbox entry id must be a non-negative integer, not {id:?}");
        return Err(ApiError::new(lang, "invalid-argument", Some(id.to_owned()), detail));
    };
    let entry = blocking(lang, move || tenant.context.store.outbox_get(&tenant.context.name, id).map_err(|e| state_error(lang, e))).await?;
    match entry {
        Some(entry) => Ok(Reply::ok(outbox_entry_json(&entry, true))),
        None => Err(ApiError::from_report(entry_not_found(lang, id, false))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RetryRequest {
    ids: Option<Vec<u64>>,
    #[serde(default)]
    all: bool,
}

async fn outbox_retry(tenant: Arc<Tenant>, request: RetryRequest, lang: Lang) -> Handled {
    let selection = match (request.ids, request.all) {
        (Some(ids), false) if !ids.is_empty() => DeadLetters::Ids(ids),
        (None, true) => DeadLetters::All,
        _ => {
            let detail = "a retry names the dead letters with a non-empty \"ids\" list or with \"all\": true, not both".to_owned();
            return Err(ApiError::new(lang, "invalid-argument", None, detail));
        }
    };
    let ids = blocking(lang, move || retry_dead_letters(&tenant.context.store, &tenant.context.name, selection, lang)).await?;
    Ok(Reply::ok(json!({ "retried": ids })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DiscardRequest {
    ids: Vec<u64>,
}

async fn outbox_discard(tenant: Arc<Tenant>, request: DiscardRequest, lang: Lang) -> Handled {
    if request.ids.is_empty() {
        return Err(ApiError::new(lang, "invalid-argument", None, "\"ids\" must list at least one outbox entry id".to_owned()));
    }
    let ids = request.ids;
    let discarded = ids.clone();
    blocking(lang, move || discard_entries(&tenant.context.store, &tenant.context.name, &ids, lang)).await?;
    Ok(Reply::ok(json!({ "discarded": discarded })))
}

async fn reload(state: &ApiState, lang: Lang) -> Handled {
    let runtime = &state.tenants.runtime;
    let result = runtime.reload().await;
    print_reload_result(runtime, &result, state.lang);
    match result {
        Ok(ReloadOutcome::Swapped { from_hash, to_hash, version }) => {
            Ok(Reply::ok(json!({ "outcome": "swapped", "hash": to_hash, "version": version, "previous_hash": from_hash })))
        }
        Ok(ReloadOutcome::Unchanged { hash }) => Ok(Reply::ok(json!({ "outcome": "unchanged", "hash": hash, "version": runtime.current().version }))),
        Err(error) => {
            let running = runtime.current();
            let path = runtime.plugin_path().display().to_string();
            let mut report = ErrorReport::new(lang, "reload-failed", Some(path), format!("{error:#}"));
            if lang == Lang::En {
                report.message = format!("plugin not reloaded; version {} ({}) keeps serving: {error:#}", running.version, short_hash(&running.hash));
            }
            Err(ApiError::from_report(report))
        }
    }
}

pub fn short_hash(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

/// Runs a state store operation off the async worker threads: SQLite calls
/// block, and the flusher may hold the connection.
async fn blocking<T: Send + 'static>(lang: Lang, operation: impl FnOnce() -> Result<T, ErrorReport> + Send + 'static) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(operation).await {
        Ok(result) => result.map_err(ApiError::from_report),
        Err(error) => Err(ApiError::new(lang, "internal", None, format!("the state store task failed: {error}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers(address: &str) -> Value {
        let document: Value = serde_json::from_str(&openapi_for(address.parse().unwrap())).unwrap();
        document["servers"].clone()
    }

    #[test]
    fn openapi_servers_name_listening_address() {
        assert_eq!(servers("127.0.0.1:40123"), json!([{ "url": "http://127.0.0.1:40123" }]));
        assert_eq!(servers("[::1]:8970"), json!([{ "url": "http://[::1]:8970" }]));
        assert_eq!(servers("0.0.0.0:8970"), json!([{ "url": "/" }]));
        assert_eq!(servers("[::]:8970"), json!([{ "url": "/" }]));
    }
}

//! `SyncManager`: the facade behind the `sync-manager` export.
//!
//! A plugin instance serves one tenant and lives across calls, so the client
//! factory is kept in instance state.

use std::cell::RefCell;

use serde_json::{Map, Value};

use crate::bindings::agros::sync::{app_config, config};
use crate::bindings::agros::sync::id_map::{self, Binding};
use crate::bindings::agros::sync::outbox::{self, NewEntry, Operation};
use crate::bindings::exports::agros::sync::sync_manager::{
    ClientStatus, FlushReport, Guest, ObjectRef, QueryOptions, SyncOutcome, SyncStatus,
};
use crate::client_factory::{ManagedClient, ParseClientFactory};
use crate::db_state::DatabaseState;
use crate::encode::{self, FieldTypes, LocalIdResolver, RESERVED_FIELDS};
use crate::errors::{error, ErrorKind, SyncError, SyncResult};
use crate::flusher::{self, Scope};
use crate::parser_service::ParserService;
use crate::query::{self, QueryRequest};
use crate::{ids, log, validate};

/// Entries one `sync-object` call may send for its object: its own and the
/// ones queued before it.
const IMMEDIATE_BUDGET: u32 = 20;

thread_local! {
    static FACTORY: RefCell<ParseClientFactory> = RefCell::new(ParseClientFactory::default());
}

impl Guest for crate::Component {
    fn sync_object(
        database_key: String,
        class_name: String,
        object_data: String,
        local_id: Option<String>,
    ) -> Result<SyncOutcome, SyncError> {
        FACTORY.with_borrow_mut(|factory| sync_object(factory, &database_key, &class_name, &object_data, local_id.as_deref()))
    }

    fn delete_object(database_key: String, class_name: String, target: ObjectRef) -> Result<SyncOutcome, SyncError> {
        FACTORY.with_borrow_mut(|factory| delete_object(factory, &database_key, &class_name, target))
    }

    fn query_objects(
        database_key: String,
        class_name: String,
        filters: String,
        options: QueryOptions,
    ) -> Result<Vec<String>, SyncError> {
        FACTORY.with_borrow_mut(|factory| query_objects(factory, &database_key, &class_name, &filters, options))
    }

    fn get_all_clients_status() -> Vec<ClientStatus> {
        FACTORY.with_borrow_mut(all_clients_status)
    }

    fn flush(database_key: Option<String>, max_entries: u32, force: bool) -> Result<FlushReport, SyncError> {
        FACTORY.with_borrow_mut(|factory| flush(factory, database_key.as_deref(), max_entries, force))
    }

    fn plugin_version() -> String {
        env!("CARGO_PKG_VERSION").to_owned()
    }
}

/// Resolves Pointers by local id when a write is recorded. A confirmed
/// binding is written in. A binding whose create is still queued keeps its
/// `localId` until the send.
struct IdMapResolver<'a> {
    database_key: &'a str,
}

impl LocalIdResolver for IdMapResolver<'_> {
    fn resolve(&self, class_name: &str, local_id: &str) -> SyncResult<Option<String>> {
        match id_map::get(self.database_key, class_name, local_id) {
            Some(binding) if binding.confirmed => Ok(Some(binding.object_id)),
            Some(_) => Ok(None),
            None => Err(encode::unknown_local_id(class_name, local_id)),
        }
    }
}

fn sync_object(
    factory: &mut ParseClientFactory,
    database_key: &str,
    class_name: &str,
    object_data: &str,
    local_id: Option<&str>,
) -> SyncResult<SyncOutcome> {
    let managed = factory.client(database_key)?;
    validate::class_name(class_name)?;
    let mut object = parse_object(object_data)?;

    let explicit_id = take_object_id(&mut object)?;
    for field in RESERVED_FIELDS {
        object.remove(field);
    }
    // Schema-driven conversions wait for the send, when the server is known
    // to be reachable; everything that can fail on the data fails here.
    let resolver = IdMapResolver { database_key };
    let body = encode::encode_object(object, &FieldTypes::new(), &resolver)?;
    check_size(&body, class_name)?;
    let payload = Value::Object(body).to_string();

    let (operation, object_id) = plan_write(database_key, class_name, explicit_id, local_id);
    let coalesced = match operation {
        Operation::Update => outbox::coalesce(database_key, class_name, &object_id, &payload),
        _ => None,
    };
    let (entry_id, object_id) = match coalesced {
        Some(entry_id) => (entry_id, object_id),
        None => {
            let enqueued = outbox::enqueue(&NewEntry {
                database_key: database_key.to_owned(),
                class_name: class_name.to_owned(),
                operation,
                object_id,
                local_id: local_id.map(str::to_owned),
                payload,
            });
            (enqueued.id, enqueued.object_id)
        }
    };
    // An update merged into a queued create still creates the object.
    let created = outbox::get(entry_id).is_some_and(|entry| entry.operation == Operation::Create);
    deliver(managed, class_name, &object_id, entry_id, created)
}

/// Decides between an update of a known object and a create, and the
/// objectId: the caller's, the local id's binding, or a new one.
fn plan_write(database_key: &str, class_name: &str, explicit_id: Option<String>, local_id: Option<&str>) -> (Operation, String) {
    if let Some(object_id) = explicit_id {
        if let Some(local_id) = local_id {
            let binding = Binding { object_id: object_id.clone(), confirmed: true };
            id_map::put(database_key, class_name, local_id, &binding);
        }
        return (Operation::Update, object_id);
    }
    match local_id.and_then(|id| id_map::get(database_key, class_name, id)) {
        Some(binding) => (Operation::Update, binding.object_id),
        None => (Operation::Create, ids::new_object_id()),
    }
}

/// Tries to send the object's queued writes now and reports what became of
/// entry `entry_id`.
fn deliver(managed: &mut ManagedClient, class_name: &str, object_id: &str, entry_id: u64, created: bool) -> SyncResult<SyncOutcome> {
    let scope = Scope::Object { class_name, object_id };
    let result = flusher::flush_database(managed, scope, IMMEDIATE_BUDGET, false);

    if let Some(final_id) = result.delivered.get(&entry_id) {
        return Ok(SyncOutcome { status: SyncStatus::Synced, object_id: Some(final_id.clone()), outbox_id: entry_id, created });
    }
    if let Some(error) = result.dead_lettered.get(&entry_id) {
        let mut error = error.clone();
        error.detail = format!("{} (kept as dead letter {entry_id})", error.detail);
        return Err(error);
    }

    // Queued. A create's objectId is final only on a server known to accept
    // client-chosen ids, from a check in this process or an earlier one.
    let custom_ids = managed.check.as_ref().and_then(|c| c.custom_object_ids).or_else(|| {
        app_config::get(&format!("parser-{}-custom-object-ids", managed.client.database_key)).and_then(|v| v.parse().ok())
    });
    let id_is_final = !created || custom_ids == Some(true);
    log::debug("write queued", &[("database", &managed.client.database_key), ("class", class_name), ("outbox_id", &entry_id.to_string())]);
    Ok(SyncOutcome {
        status: SyncStatus::Queued,
        object_id: id_is_final.then(|| object_id.to_owned()),
        outbox_id: entry_id,
        created,
    })
}

fn delete_object(factory: &mut ParseClientFactory, database_key: &str, class_name: &str, target: ObjectRef) -> SyncResult<SyncOutcome> {
    let managed = factory.client(database_key)?;
    validate::class_name(class_name)?;
    let (object_id, local_id) = match target {
        ObjectRef::ObjectId(id) => (id, None),
        ObjectRef::LocalId(local_id) => match id_map::get(database_key, class_name, &local_id) {
            Some(binding) => (binding.object_id, Some(local_id)),
            None => {
                let detail = format!("local id {local_id:?} of class {class_name} was never synced, so there is nothing to delete");
                return Err(error(ErrorKind::ObjectNotFound, format!("{class_name}/{local_id}"), detail));
            }
        },
    };

    // Enqueueing a delete by local id unbinds it: syncing that local id
    // again creates a new object.
    let enqueued = outbox::enqueue(&NewEntry {
        database_key: database_key.to_owned(),
        class_name: class_name.to_owned(),
        operation: Operation::Delete,
        object_id: object_id.clone(),
        local_id,
        payload: "{}".to_owned(),
    });
    deliver(managed, class_name, &object_id, enqueued.id, false)
}

fn flush(factory: &mut ParseClientFactory, database_key: Option<&str>, max_entries: u32, force: bool) -> SyncResult<FlushReport> {
    let keys: Vec<String> = match database_key {
        Some(key) => {
            factory.client(key)?;
            vec![key.to_owned()]
        }
        None => factory.databases().iter().filter(|d| d.sync).map(|d| d.key.clone()).collect(),
    };

    let mut report = FlushReport { delivered: 0, retried: 0, dead_lettered: 0, pending: 0 };
    for key in keys {
        let managed = factory.client(&key)?;
        let result = flusher::flush_database(managed, Scope::All, max_entries, force);
        report.delivered += result.delivered.len() as u32;
        report.retried += result.retried;
        report.dead_lettered += result.dead_lettered.len() as u32;
        report.pending += outbox::stats(&key).pending;
    }
    Ok(report)
}

fn query_objects(
    factory: &mut ParseClientFactory,
    database_key: &str,
    class_name: &str,
    filters: &str,
    options: QueryOptions,
) -> SyncResult<Vec<String>> {
    let page_size = config::limits().query_page_size;
    let managed = factory.client(database_key)?;
    validate::class_name(class_name)?;

    let filters = if filters.trim().is_empty() { "{}" } else { filters };
    let where_: Value = serde_json::from_str(filters)
        .map_err(|e| error(ErrorKind::InvalidJson, filters, format!("filters are not valid JSON: {e}")))?;
    if !where_.is_object() {
        return Err(error(ErrorKind::InvalidJson, filters, "filters must be a JSON object such as {\"site\":\"Waseca\"}"));
    }
    let resolver = IdMapResolver { database_key };
    let where_ = encode::encode_value("where", where_, &resolver)?;
    for (list, descending) in [(&options.order, true), (&options.keys, false)] {
        for path in list.iter().flat_map(|l| l.split(',')) {
            validate::field_path(path.trim(), descending)?;
        }
    }

    ParserService::ensure_ready(managed)?;
    let request = QueryRequest {
        where_,
        limit: options.limit,
        skip: options.skip,
        order: options.order,
        keys: options.keys,
    };
    let client = &managed.client;
    let objects = query::collect(&request, page_size, |page| client.query_page(class_name, page))?;
    Ok(objects.iter().map(Value::to_string).collect())
}

fn all_clients_status(factory: &mut ParseClientFactory) -> Vec<ClientStatus> {
    let databases = factory.databases().to_vec();
    let mut statuses = Vec::with_capacity(databases.len());
    for database in databases {
        let mut status = ClientStatus {
            database_key: database.key.clone(),
            sync_enabled: database.sync,
            server_url: database.server_url.clone(),
            app_id: database.app_id.clone(),
            reachable: false,
            server_version: None,
            custom_object_ids: None,
            last_error: None,
            pending: 0,
            oldest_pending_at: None,
            dead_letters: 0,
            last_success_at: None,
            next_retry_at: None,
            paused: None,
        };
        if database.sync {
            let managed = factory.client(&database.key).expect("a configured, synced database has a client");
            let check = ParserService::check(managed);
            status.reachable = check.reachable;
            status.server_version = check.version.clone();
            status.custom_object_ids = check.custom_object_ids;

            let stats = outbox::stats(&database.key);
            let state = DatabaseState::load(&database.key);
            status.pending = stats.pending;
            status.oldest_pending_at = stats.oldest_pending_at;
            status.dead_letters = stats.dead;
            status.last_success_at = state.last_success_at;
            status.next_retry_at = state.retry_at.filter(|_| stats.pending > 0);
            status.paused = state.paused;
            status.last_error = check.error.clone().or(state.last_error);
        }
        statuses.push(status);
    }
    statuses
}

fn parse_object(object_data: &str) -> SyncResult<Map<String, Value>> {
    match serde_json::from_str::<Value>(object_data) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(error(
            ErrorKind::InvalidJson,
            excerpt(object_data),
            format!("object data must be a JSON object, not {}", json_kind(&other)),
        )),
        Err(e) => Err(error(ErrorKind::InvalidJson, excerpt(object_data), format!("object data is not valid JSON: {e}"))),
    }
}

fn take_object_id(object: &mut Map<String, Value>) -> SyncResult<Option<String>> {
    match object.remove("objectId") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(id)) if !id.is_empty() => Ok(Some(id)),
        Some(other) => Err(error(
            ErrorKind::InvalidValue,
            "objectId",
            format!("objectId must be a non-empty string, not {other}"),
        )),
    }
}

fn check_size(body: &Map<String, Value>, class_name: &str) -> SyncResult<()> {
    let max = config::limits().max_object_bytes;
    let size = serde_json::to_vec(body).map(|b| b.len() as u64).unwrap_or(u64::MAX);
    if size > max {
        return Err(error(
            ErrorKind::ObjectTooLarge,
            class_name,
            format!("object of {size} bytes exceeds the maximum of {max} bytes (limits.max_object_bytes in config.yaml)"),
        ));
    }
    Ok(())
}

/// Returns the first 80 characters of a caller's input, for an error's subject.
fn excerpt(text: &str) -> String {
    let mut out: String = text.chars().take(80).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

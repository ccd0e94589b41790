//! `SyncManager`: the facade behind the `sync-manager` export.
//!
//! A plugin instance serves one tenant and lives across calls, so the client
//! factory is kept in instance state.

use std::cell::RefCell;

use serde_json::{Map, Value};

use crate::bindings::agros::sync::config;
use crate::bindings::agros::sync::id_map::{self, Binding};
use crate::bindings::exports::agros::sync::sync_manager::{
    ClientStatus, Guest, ObjectRef, QueryOptions, SyncOutcome, SyncStatus,
};
use crate::client_factory::{ManagedClient, ParseClientFactory};
use crate::encode::{self, LocalIdResolver, RESERVED_FIELDS};
use crate::errors::{error, ErrorKind, SyncError, SyncResult};
use crate::parser_service::ParserService;
use crate::query::{self, QueryRequest};
use crate::{ids, log, validate};

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

    fn delete_object(database_key: String, class_name: String, target: ObjectRef) -> Result<(), SyncError> {
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
}

/// Resolves Pointers by local id through the host's id map.
struct IdMapResolver<'a> {
    database_key: &'a str,
}

impl LocalIdResolver for IdMapResolver<'_> {
    fn resolve(&self, class_name: &str, local_id: &str) -> SyncResult<Option<String>> {
        Ok(id_map::get(self.database_key, class_name, local_id).map(|b| b.object_id))
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

    ParserService::ensure_ready(managed)?;
    let field_names: Vec<&str> = object.keys().map(String::as_str).collect();
    let field_types = ParserService::class_fields(managed, class_name, &field_names)?.clone();
    let resolver = IdMapResolver { database_key };
    let body = encode::encode_object(object, &field_types, &resolver)?;
    check_size(&body, class_name)?;

    let (object_id, created) = write(managed, class_name, body, explicit_id, local_id)?;
    log::debug("synced object", &[("database", database_key), ("class", class_name), ("object_id", &object_id)]);
    Ok(SyncOutcome { status: SyncStatus::Synced, object_id, created })
}

/// Sends the write: an update when the object is known, a create otherwise.
/// Returns the objectId and whether this call created the object.
fn write(
    managed: &mut ManagedClient,
    class_name: &str,
    mut body: Map<String, Value>,
    explicit_id: Option<String>,
    local_id: Option<&str>,
) -> SyncResult<(String, bool)> {
    let database_key = managed.client.database_key.clone();
    let bind = |object_id: &str, confirmed: bool| {
        if let Some(local_id) = local_id {
            let binding = Binding { object_id: object_id.to_owned(), confirmed };
            id_map::put(&database_key, class_name, local_id, &binding);
        }
    };

    if let Some(object_id) = explicit_id {
        managed.client.update(class_name, &object_id, &body)?;
        bind(&object_id, true);
        return Ok((object_id, false));
    }

    let binding = local_id.and_then(|id| id_map::get(&database_key, class_name, id));
    if let Some(Binding { object_id, confirmed: true }) = binding {
        managed.client.update(class_name, &object_id, &body)?;
        return Ok((object_id, false));
    }

    let custom_ids = managed.check.as_ref().and_then(|c| c.custom_object_ids) == Some(true);
    if !custom_ids {
        let object_id = managed.client.create(class_name, &body)?;
        bind(&object_id, true);
        return Ok((object_id, true));
    }

    // The objectId is chosen here and bound before the request, so a repeat
    // after a lost answer sends the same id. Parse answers 137 (duplicate
    // value) when that object already exists; then this write is an update.
    let object_id = binding.map(|b| b.object_id).unwrap_or_else(ids::new_object_id);
    bind(&object_id, false);
    body.insert("objectId".to_owned(), Value::String(object_id.clone()));
    match managed.client.create(class_name, &body) {
        Ok(_) => {
            bind(&object_id, true);
            Ok((object_id, true))
        }
        Err(e) if e.parse_code == Some(137) && local_id.is_some() => {
            body.remove("objectId");
            managed.client.update(class_name, &object_id, &body)?;
            bind(&object_id, true);
            Ok((object_id, false))
        }
        Err(e) => Err(e),
    }
}

fn delete_object(factory: &mut ParseClientFactory, database_key: &str, class_name: &str, target: ObjectRef) -> SyncResult<()> {
    let managed = factory.client(database_key)?;
    validate::class_name(class_name)?;
    let object_id = match target {
        ObjectRef::ObjectId(id) => id,
        ObjectRef::LocalId(local_id) => match id_map::get(database_key, class_name, &local_id) {
            Some(binding) => binding.object_id,
            None => {
                let detail = format!("local id {local_id:?} of class {class_name} was never synced, so there is nothing to delete");
                return Err(error(ErrorKind::ObjectNotFound, format!("{class_name}/{local_id}"), detail));
            }
        },
    };

    ParserService::ensure_ready(managed)?;
    match managed.client.delete(class_name, &object_id) {
        // Deleting what is already gone is the outcome the caller wanted.
        Err(e) if e.kind == ErrorKind::ObjectNotFound => Ok(()),
        other => other,
    }
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
        };
        if database.sync {
            let managed = factory.client(&database.key).expect("a configured, synced database has a client");
            let check = ParserService::check(managed);
            status.reachable = check.reachable;
            status.server_version = check.version.clone();
            status.custom_object_ids = check.custom_object_ids;
            status.last_error = check.error.clone();
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

/// The first 80 characters of a caller's input, for an error's subject.
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

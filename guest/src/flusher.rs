//! Sends outbox entries to a database's Parse Server.
//!
//! Rules kept here:
//! - Per-object order: the host hands out only the oldest pending entry of
//!   each object, and an entry's successor is sent only after it completed.
//!   So one `/batch` never contains two operations on one objectId.
//! - Replay safety: a create on a server that accepts client-chosen objectIds
//!   carries the id chosen at enqueue time, and a repeat rejected with 137 is
//!   verified by GET and counts as delivered. On a server that picks its own
//!   ids, creates go one at a time with a stable `X-Parse-Request-Id` and the
//!   field `agrosSyncKey`. Before any repeat, and after a 159, the plugin looks
//!   the key up instead of creating again.
//! - Failures are data: transient ones back off (per database, exponential
//!   with jitter, honouring `Retry-After`), rejected keys pause the database,
//!   and permanent ones dead-letter that entry only.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::bindings::agros::sync::config;
use crate::bindings::agros::sync::id_map;
use crate::bindings::agros::sync::outbox::{self, Delivery, Entry, EntryState, Operation};
use crate::client_factory::ManagedClient;
use crate::db_state::{now_millis, DatabaseState};
use crate::encode::{self, LocalIdResolver};
use crate::errors::{self, disposition, Disposition, ErrorKind, SyncError, SyncResult};
use crate::parse_client::BatchOperation;
use crate::parser_service::ParserService;

/// The field that identifies a create on servers that pick their own ids.
pub const SYNC_KEY_FIELD: &str = "agrosSyncKey";

/// Entries read from the host per round.
const ROUND_SIZE: u32 = 200;

/// Shortest time between two `/health` probes of a database in backoff.
const PROBE_INTERVAL_MS: u64 = 5_000;

/// The entries a flush may send.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// Every due entry of the database.
    All,
    /// The due entries of one object, in order.
    Object { class_name: &'a str, object_id: &'a str },
}

/// The result of one flush, entry by entry.
#[derive(Debug, Default)]
pub struct FlushResult {
    /// Entry id to the objectId the server stored.
    pub delivered: HashMap<u64, String>,
    pub retried: u32,
    /// Entry id to the error that dead-lettered it.
    pub dead_lettered: HashMap<u64, SyncError>,
}

/// The result of sending one entry.
enum Outcome {
    Delivered(String),
    Failed(SyncError),
    /// A Pointer names a record whose create has not been delivered yet.
    Waiting(String),
}

/// Sends due entries of one database, at most `budget`. With `force`, a
/// database and entries waiting for their next retry are tried now.
pub fn flush_database(managed: &mut ManagedClient, scope: Scope<'_>, budget: u32, force: bool) -> FlushResult {
    let key = managed.client.database_key.clone();
    let before = DatabaseState::load(&key);
    let mut state = before.clone();
    let mut result = FlushResult::default();

    let now = now_millis();
    let waiting = state.retry_at.is_some_and(|at| at > now) && !force;
    if waiting && (rate_limited(&state) || !server_is_back(managed, now)) {
        return result;
    }
    if !server_usable(managed, &mut state, now) {
        state.save(&key, &before);
        return result;
    }

    let limits = config::limits();
    let mut sent = 0;
    while sent < budget {
        let entries = next_entries(&key, scope, (budget - sent).min(ROUND_SIZE), force);
        if entries.is_empty() {
            break;
        }
        sent += entries.len() as u32;
        let outcomes = send_entries(managed, &entries, limits.batch_size.max(1) as usize);

        let mut failing: Vec<(&Entry, SyncError)> = Vec::new();
        let mut deliveries: Vec<Delivery> = Vec::new();
        for (entry, outcome) in entries.iter().zip(outcomes) {
            if let Some(failure) = record_outcome(entry, outcome, &mut state, &mut result, &mut deliveries, &limits) {
                failing.push((entry, failure));
            }
        }
        // One transaction for the round's deliveries: one fsync, not one each.
        if !deliveries.is_empty() {
            outbox::complete(&deliveries);
        }
        if !failing.is_empty() {
            schedule_retries(&failing, &mut state, &mut result, &limits);
            break;
        }
    }
    state.save(&key, &before);
    result
}

/// Probes `/health` while a database waits for its next retry, at most once
/// per [`PROBE_INTERVAL_MS`], so that writes go out soon after the server is
/// back instead of at the end of a long backoff. Returns true when it is back.
///
/// NOTE: entries that already failed keep their own retry time; only new
/// writes and forced flushes go out at once after a successful probe.
fn server_is_back(managed: &mut ManagedClient, now: u64) -> bool {
    if managed.last_probe_at.is_some_and(|at| now < at + PROBE_INTERVAL_MS) {
        return false;
    }
    managed.last_probe_at = Some(now);
    matches!(managed.client.health(), Ok(true))
}

/// Returns true when the server asked to slow down (429 or Parse 155): its
/// `Retry-After` is honoured for every write, without probing.
fn rate_limited(state: &DatabaseState) -> bool {
    state.last_error.as_ref().is_some_and(|e| e.http_status == Some(429) || e.parse_code == Some(155))
}

/// Checks the server when it has been failing or paused, or was never
/// checked. Returns false when nothing should be sent now.
fn server_usable(managed: &mut ManagedClient, state: &mut DatabaseState, now: u64) -> bool {
    let must_check = state.paused.is_some() || state.failures > 0 || managed.check.as_ref().is_none_or(|c| c.error.is_some());
    if !must_check {
        return true;
    }
    let check = ParserService::check(managed);
    match check.error.clone() {
        None => {
            if state.paused.take().is_some() {
                crate::log::info("sending resumed: the server accepts the keys again", &[("database", &managed.client.database_key)]);
            }
            true
        }
        Some(error) => {
            // A paused database is probed on the same backoff as a down one.
            let limits = config::limits();
            if disposition(&error) == Disposition::Pause {
                state.pause(&error);
            }
            state.failed(&error, now, limits.retry_initial_ms, limits.retry_max_ms);
            false
        }
    }
}

/// Reads the next entries to send. With `force`, entries waiting for a retry
/// time are due now.
fn next_entries(database_key: &str, scope: Scope<'_>, max: u32, force: bool) -> Vec<Entry> {
    let now = if force { u64::MAX } else { now_millis() };
    match scope {
        Scope::All => outbox::due(database_key, now, max),
        // Only the oldest entry may go, so a dead letter there blocks the rest.
        Scope::Object { class_name, object_id } => outbox::for_object(database_key, class_name, object_id)
            .into_iter()
            .take(1)
            .filter(|entry| entry.state == EntryState::Pending && entry.next_attempt_at <= now)
            .collect(),
    }
}

/// Applies one outcome to the outbox and the database state; deliveries are
/// collected in `deliveries` for one `complete` call. Returns the
/// error when the entry must be sent again later: the server is failing, or
/// refuses the keys.
fn record_outcome(
    entry: &Entry,
    outcome: Outcome,
    state: &mut DatabaseState,
    result: &mut FlushResult,
    deliveries: &mut Vec<Delivery>,
    limits: &config::PluginLimits,
) -> Option<SyncError> {
    let now = now_millis();
    match outcome {
        Outcome::Delivered(object_id) => {
            deliveries.push(Delivery { id: entry.id, object_id: object_id.clone(), sent_payload: entry.payload.clone() });
            state.succeeded(now);
            result.delivered.insert(entry.id, object_id);
            None
        }
        Outcome::Waiting(reason) => {
            outbox::retry_at(entry.id, now + limits.retry_initial_ms, None, &reason);
            None
        }
        Outcome::Failed(error) if disposition(&error) == Disposition::Permanent => {
            outbox::dead_letter(entry.id, error_code(&error), &error.detail);
            state.last_error = Some(error.clone());
            result.dead_lettered.insert(entry.id, error);
            None
        }
        Outcome::Failed(error) => Some(error),
    }
}

/// Reschedules the entries of a round that hit a failing or paused server:
/// one backoff step for the database, whatever the number of entries.
fn schedule_retries(failing: &[(&Entry, SyncError)], state: &mut DatabaseState, result: &mut FlushResult, limits: &config::PluginLimits) {
    let now = now_millis();

    let (_, first) = &failing[0];
    if disposition(first) == Disposition::Pause {
        state.pause(first);
    }
    let at = state.failed(first, now, limits.retry_initial_ms, limits.retry_max_ms);
    for (entry, error) in failing {
        outbox::retry_at(entry.id, at, error_code(error), &error.detail);
        result.retried += 1;
    }
    crate::log::warn(
        "send failed; entries kept for retry",
        &[("database", &failing[0].0.database_key), ("entries", &failing.len().to_string()), ("error", &first.detail)],
    );
}

/// Returns the code stored with an entry: Parse's, or the HTTP status when
/// there is none.
fn error_code(error: &SyncError) -> Option<i32> {
    error.parse_code.or(error.http_status.map(i32::from))
}

/// Sends entries: those that can go in `/batch` in chunks, creates on
/// servers that pick their own ids one by one. Returns one outcome per entry.
fn send_entries(managed: &mut ManagedClient, entries: &[Entry], batch_size: usize) -> Vec<Outcome> {
    let custom_ids = managed.check.as_ref().and_then(|c| c.custom_object_ids) == Some(true);
    let mut outcomes: Vec<Option<Outcome>> = entries.iter().map(|_| None).collect();

    // Prepare bodies first. Entries that cannot be sent yet get their outcome now.
    let mut batchable: Vec<(usize, BatchOperation)> = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        match prepare(managed, entry, custom_ids) {
            Err(outcome) => outcomes[index] = Some(outcome),
            Ok(body) if entry.operation == Operation::Create && !custom_ids => {
                outcomes[index] = Some(create_with_sync_key(managed, entry, body));
            }
            Ok(body) => batchable.push((index, operation_for(entry, body, custom_ids))),
        }
    }

    for chunk in batchable.chunks(batch_size) {
        let results = send_chunk(managed, chunk);
        for ((index, _), result) in chunk.iter().zip(results) {
            outcomes[*index] = Some(settle(managed, &entries[*index], result));
        }
    }
    outcomes.into_iter().map(|o| o.expect("every entry has an outcome")).collect()
}

/// Builds the body to send: the payload with schema Dates applied and
/// Pointers by local id resolved.
fn prepare(managed: &mut ManagedClient, entry: &Entry, custom_ids: bool) -> Result<Map<String, Value>, Outcome> {
    if entry.operation == Operation::Delete {
        return Ok(Map::new());
    }
    let payload: Map<String, Value> = serde_json::from_str(&entry.payload)
        .map_err(|e| Outcome::Failed(errors::internal(format!("outbox entry {} holds invalid JSON: {e}", entry.id))))?;
    let fields: Vec<&str> = payload.keys().map(String::as_str).collect();
    let field_types = ParserService::class_fields(managed, &entry.class_name, &fields).map_err(Outcome::Failed)?.clone();
    let resolver = SendResolver { database_key: &entry.database_key, custom_ids };
    let body = encode::encode_object(payload, &field_types, &resolver).map_err(Outcome::Failed)?;

    if encode::has_unresolved_pointer(&Value::Object(body.clone())) {
        return Err(Outcome::Waiting("a Pointer names a record whose create has not been delivered yet".to_owned()));
    }
    Ok(body)
}

fn operation_for(entry: &Entry, mut body: Map<String, Value>, custom_ids: bool) -> BatchOperation {
    match entry.operation {
        Operation::Create => {
            if custom_ids {
                body.insert("objectId".to_owned(), Value::String(entry.object_id.clone()));
            }
            BatchOperation::create(&entry.class_name, body)
        }
        Operation::Update => BatchOperation::update(&entry.class_name, &entry.object_id, body),
        Operation::Delete => BatchOperation::delete(&entry.class_name, &entry.object_id),
    }
}

/// Sends one chunk: alone as a plain request, or as a `/batch`.
fn send_chunk(managed: &ManagedClient, chunk: &[(usize, BatchOperation)]) -> Vec<SyncResult<Value>> {
    let client = &managed.client;
    if let [(_, operation)] = chunk {
        let method = match operation.method {
            "POST" => waki::Method::Post,
            "PUT" => waki::Method::Put,
            _ => waki::Method::Delete,
        };
        return vec![client.call(method, &operation.path, operation.body.as_ref(), &operation.path)];
    }

    let operations: Vec<BatchOperation> = chunk.iter().map(|(_, op)| op.clone()).collect();
    match client.batch(&operations) {
        Ok(items) => items
            .into_iter()
            .zip(&operations)
            .map(|(item, op)| item.map_err(|error| errors::from_batch_item(&error, &op.path)))
            .collect(),
        // The request failed as a whole; the server may or may not have
        // applied it, which the replay rules make safe to repeat.
        Err(error) => operations.iter().map(|_| Err(error.clone())).collect(),
    }
}

/// Turns a server response into an outcome, applying the "done" rules.
fn settle(managed: &ManagedClient, entry: &Entry, result: SyncResult<Value>) -> Outcome {
    let error = match result {
        Ok(_) => return Outcome::Delivered(entry.object_id.clone()),
        Err(error) => error,
    };
    match (entry.operation, error.parse_code) {
        (Operation::Delete, Some(101)) => Outcome::Delivered(entry.object_id.clone()),
        (Operation::Create, Some(137)) => verify_own_create(managed, entry, error),
        (Operation::Update, Some(101)) => Outcome::Failed(SyncError {
            kind: ErrorKind::ObjectNotFound,
            detail: format!(
                "conflict: {}/{} does not exist on the server (deleted after this update was queued, or never created); it is not re-created",
                entry.class_name, entry.object_id
            ),
            ..error
        }),
        _ => Outcome::Failed(error),
    }
}

/// Checks whether a 137 on a create with our own objectId means an earlier
/// attempt succeeded, which it did when the object exists.
fn verify_own_create(managed: &ManagedClient, entry: &Entry, error: SyncError) -> Outcome {
    match managed.client.get(&entry.class_name, &entry.object_id) {
        Ok(_) => Outcome::Delivered(entry.object_id.clone()),
        Err(e) if e.kind == ErrorKind::ObjectNotFound => Outcome::Failed(error),
        Err(e) => Outcome::Failed(e),
    }
}

/// Creates an object on a server that picks its own ids: looks the sync key
/// up before a repeat, then creates with a stable request id.
fn create_with_sync_key(managed: &ManagedClient, entry: &Entry, mut body: Map<String, Value>) -> Outcome {
    let client = &managed.client;
    let sync_key = entry.object_id.as_str();
    if entry.attempts > 0 {
        match client.find_id_by_field(&entry.class_name, SYNC_KEY_FIELD, sync_key) {
            Ok(Some(object_id)) => return Outcome::Delivered(object_id),
            Ok(None) => {}
            Err(e) => return Outcome::Failed(e),
        }
    }

    body.insert(SYNC_KEY_FIELD.to_owned(), Value::String(sync_key.to_owned()));
    let request_id = format!("agros-sync-{sync_key}");
    match client.create_idempotent(&entry.class_name, &body, &request_id) {
        Ok(object_id) => Outcome::Delivered(object_id),
        // 159: the server saw this request id before. Delivered if the object
        // is there; otherwise the first request may still be running.
        Err(e) if e.parse_code == Some(159) => match client.find_id_by_field(&entry.class_name, SYNC_KEY_FIELD, sync_key) {
            Ok(Some(object_id)) => Outcome::Delivered(object_id),
            Ok(None) => Outcome::Failed(SyncError {
                kind: ErrorKind::ServerUnavailable,
                detail: format!("the server reported request {request_id} as a duplicate but has no object with {SYNC_KEY_FIELD} {sync_key} yet"),
                ..e
            }),
            Err(lookup) => Outcome::Failed(lookup),
        },
        Err(e) => Outcome::Failed(e),
    }
}

/// Resolves Pointers by local id at send time.
struct SendResolver<'a> {
    database_key: &'a str,
    custom_ids: bool,
}

impl LocalIdResolver for SendResolver<'_> {
    fn resolve(&self, class_name: &str, local_id: &str) -> SyncResult<Option<String>> {
        match id_map::get(self.database_key, class_name, local_id) {
            Some(binding) if binding.confirmed || self.custom_ids => Ok(Some(binding.object_id)),
            Some(_) => Ok(None),
            None => Err(encode::unknown_local_id(class_name, local_id)),
        }
    }
}

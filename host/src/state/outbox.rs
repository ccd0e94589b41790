//! The outbox table: writes recorded before they are sent.
//!
//! Guarantees kept here:
//! - An entry is committed (WAL, `synchronous = FULL`) before `enqueue`
//!   returns.
//! - Entries of one object (tenant, database, class, objectId) are handed out
//!   oldest first, one at a time, so per-object order is kept.
//! - An entry leaves the table only when it was delivered (`complete`) or an
//!   operator discarded it.

use rusqlite::{params, OptionalExtension, Row, Transaction, TransactionBehavior};
use serde_json::{Map, Value};

use super::sqlite::{failed, SqliteStore};
use super::StateError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Delete,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "create",
            Operation::Update => "update",
            Operation::Delete => "delete",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "create" => Operation::Create,
            "update" => Operation::Update,
            _ => Operation::Delete,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryState {
    Pending,
    Dead,
}

impl EntryState {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryState::Pending => "pending",
            EntryState::Dead => "dead",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEntry {
    pub id: u64,
    pub database_key: String,
    pub class_name: String,
    pub operation: Operation,
    pub object_id: String,
    pub local_id: Option<String>,
    pub payload: String,
    pub attempts: u32,
    pub created_at: u64,
    pub next_attempt_at: u64,
    pub state: EntryState,
    pub last_error_code: Option<i32>,
    pub last_error: Option<String>,
    /// The dead letter of the same object that this pending entry waits
    /// behind, if any.
    pub blocked_by: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct NewEntry {
    pub database_key: String,
    pub class_name: String,
    pub operation: Operation,
    pub object_id: String,
    pub local_id: Option<String>,
    pub payload: String,
}

/// One entry the server confirmed; see `complete` in the WIT file.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: u64,
    pub object_id: String,
    pub sent_payload: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct OutboxStats {
    pub pending: u32,
    pub dead: u32,
    pub oldest_pending_at: Option<u64>,
    pub next_attempt_at: Option<u64>,
}

/// The columns of an entry, selected from `outbox AS o`. The last one is the
/// dead letter, if any, that keeps the entry waiting.
const COLUMNS: &str = "id, database_key, class_name, operation, object_id, local_id, payload, attempts,
     created_at, next_attempt_at, state, last_error_code, last_error,
     (SELECT MIN(d.id) FROM outbox AS d
      WHERE d.tenant = o.tenant AND d.database_key = o.database_key AND d.class_name = o.class_name
        AND d.object_id = o.object_id AND d.state = 'dead' AND d.id < o.id) AS blocked_by";

fn entry_from_row(row: &Row<'_>) -> rusqlite::Result<OutboxEntry> {
    let operation: String = row.get(3)?;
    let state: String = row.get(10)?;
    Ok(OutboxEntry {
        id: row.get::<_, i64>(0)? as u64,
        database_key: row.get(1)?,
        class_name: row.get(2)?,
        operation: Operation::parse(&operation),
        object_id: row.get(4)?,
        local_id: row.get(5)?,
        payload: row.get(6)?,
        attempts: row.get(7)?,
        created_at: row.get::<_, i64>(8)? as u64,
        next_attempt_at: row.get::<_, i64>(9)? as u64,
        state: if state == "dead" { EntryState::Dead } else { EntryState::Pending },
        last_error_code: row.get(11)?,
        last_error: row.get(12)?,
        blocked_by: row.get::<_, Option<i64>>(13)?.map(|id| id as u64),
    })
}

impl SqliteStore {
    /// Records a write; see `enqueue` in the WIT file. Returns the entry id,
    /// operation and objectId that were recorded.
    pub fn outbox_enqueue(&self, tenant: &str, entry: &NewEntry, now: u64) -> Result<(u64, Operation, String), StateError> {
        let mut connection = self.lock();
        // IMMEDIATE takes the write lock before the binding is read, so two
        // processes creating the same local id cannot both see it unbound.
        let transaction = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(failed("begin an outbox transaction"))?;

        let mut operation = entry.operation;
        let mut object_id = entry.object_id.clone();
        if let (Operation::Create, Some(local_id)) = (entry.operation, &entry.local_id) {
            let bound: Option<String> = transaction
                .query_row(
                    "SELECT object_id FROM id_map WHERE tenant = ?1 AND database_key = ?2 AND class_name = ?3 AND local_id = ?4",
                    params![tenant, entry.database_key, entry.class_name, local_id],
                    |row| row.get(0),
                )
                .optional()
                .map_err(failed("read the binding of a local id"))?;
            match bound {
                Some(existing) => {
                    operation = Operation::Update;
                    object_id = existing;
                }
                None => {
                    transaction
                        .execute(
                            "INSERT INTO id_map (tenant, database_key, class_name, local_id, object_id, confirmed)
                             VALUES (?1, ?2, ?3, ?4, ?5, 0)",
                            params![tenant, entry.database_key, entry.class_name, local_id, object_id],
                        )
                        .map_err(failed("bind the local id of an outbox entry"))?;
                }
            }
        }
        if let (Operation::Delete, Some(local_id)) = (entry.operation, &entry.local_id) {
            transaction
                .execute(
                    "DELETE FROM id_map WHERE tenant = ?1 AND database_key = ?2 AND class_name = ?3 AND local_id = ?4",
                    params![tenant, entry.database_key, entry.class_name, local_id],
                )
                .map_err(failed("unbind the local id of a deleted object"))?;
        }

        transaction
            .execute(
                "INSERT INTO outbox (tenant, database_key, class_name, operation, object_id, local_id, payload,
                                     created_at, next_attempt_at, state)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, 'pending')",
                params![
                    tenant,
                    entry.database_key,
                    entry.class_name,
                    operation.as_str(),
                    object_id,
                    entry.local_id,
                    entry.payload,
                    now as i64
                ],
            )
            .map_err(failed("record an outbox entry"))?;
        let id = transaction.last_insert_rowid() as u64;
        transaction.commit().map_err(failed("commit an outbox entry"))?;
        Ok((id, operation, object_id))
    }

    /// Merges `payload` into the newest entry of the object when it is a
    /// pending create or update that was never attempted.
    pub fn outbox_coalesce(&self, tenant: &str, database_key: &str, class_name: &str, object_id: &str, payload: &str) -> Result<Option<u64>, StateError> {
        let mut connection = self.lock();
        let transaction = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(failed("begin an outbox transaction"))?;
        let newest = transaction
            .query_row(
                &format!("SELECT {COLUMNS} FROM outbox AS o WHERE tenant = ?1 AND database_key = ?2 AND class_name = ?3 AND object_id = ?4
                          ORDER BY id DESC LIMIT 1"),
                params![tenant, database_key, class_name, object_id],
                entry_from_row,
            )
            .optional()
            .map_err(failed("read the newest outbox entry of an object"))?;
        let Some(newest) = newest else { return Ok(None) };
        let mergeable = newest.state == EntryState::Pending
            && newest.attempts == 0
            && matches!(newest.operation, Operation::Create | Operation::Update);
        if !mergeable {
            return Ok(None);
        }

        let merged = merge_payloads(&newest.payload, payload);
        transaction
            .execute("UPDATE outbox SET payload = ?1 WHERE id = ?2", params![merged, newest.id as i64])
            .map_err(failed("merge an update into an outbox entry"))?;
        transaction.commit().map_err(failed("commit a merged outbox entry"))?;
        Ok(Some(newest.id))
    }

    /// Pending entries due at `now`, each the oldest pending entry of its object.
    pub fn outbox_due(&self, tenant: &str, database_key: &str, now: u64, max: u32) -> Result<Vec<OutboxEntry>, StateError> {
        let connection = self.lock();
        let mut statement = connection
            .prepare(&format!(
                "SELECT {COLUMNS} FROM outbox AS o
                 WHERE tenant = ?1 AND database_key = ?2 AND state = 'pending' AND next_attempt_at <= ?3
                   AND NOT EXISTS (
                       SELECT 1 FROM outbox AS earlier
                       WHERE earlier.tenant = o.tenant AND earlier.database_key = o.database_key
                         AND earlier.class_name = o.class_name AND earlier.object_id = o.object_id
                         AND earlier.id < o.id)
                 ORDER BY id LIMIT ?4"
            ))
            .map_err(failed("select due outbox entries"))?;
        let rows = statement
            .query_map(params![tenant, database_key, to_sql_time(now), max], entry_from_row)
            .map_err(failed("select due outbox entries"))?;
        rows.collect::<Result<_, _>>().map_err(failed("select due outbox entries"))
    }

    /// Lists the entries of one object, pending or dead, oldest first.
    pub fn outbox_for_object(&self, tenant: &str, database_key: &str, class_name: &str, object_id: &str) -> Result<Vec<OutboxEntry>, StateError> {
        let connection = self.lock();
        let mut statement = connection
            .prepare(&format!(
                "SELECT {COLUMNS} FROM outbox AS o
                 WHERE tenant = ?1 AND database_key = ?2 AND class_name = ?3 AND object_id = ?4
                 ORDER BY id"
            ))
            .map_err(failed("select the outbox entries of an object"))?;
        let rows = statement
            .query_map(params![tenant, database_key, class_name, object_id], entry_from_row)
            .map_err(failed("select the outbox entries of an object"))?;
        rows.collect::<Result<_, _>>().map_err(failed("select the outbox entries of an object"))
    }

    /// Lists a tenant's entries in one state (every state when `state` is
    /// `None`), oldest first, optionally of one database only.
    pub fn outbox_list(&self, tenant: &str, database_key: Option<&str>, state: Option<EntryState>, max: u32) -> Result<Vec<OutboxEntry>, StateError> {
        let connection = self.lock();
        let mut statement = connection
            .prepare(&format!(
                "SELECT {COLUMNS} FROM outbox AS o
                 WHERE tenant = ?1 AND (?2 IS NULL OR database_key = ?2) AND (?3 IS NULL OR state = ?3)
                 ORDER BY id LIMIT ?4"
            ))
            .map_err(failed("list outbox entries"))?;
        let rows = statement
            .query_map(params![tenant, database_key, state.map(EntryState::as_str), max], entry_from_row)
            .map_err(failed("list outbox entries"))?;
        rows.collect::<Result<_, _>>().map_err(failed("list outbox entries"))
    }

    pub fn outbox_get(&self, tenant: &str, id: u64) -> Result<Option<OutboxEntry>, StateError> {
        self.lock()
            .query_row(
                &format!("SELECT {COLUMNS} FROM outbox AS o WHERE tenant = ?1 AND id = ?2"),
                params![tenant, id as i64],
                entry_from_row,
            )
            .optional()
            .map_err(failed(&format!("read outbox entry {id}")))
    }

    /// Removes delivered entries in one transaction; see `complete` in the
    /// WIT file.
    pub fn outbox_complete(&self, tenant: &str, deliveries: &[Delivery]) -> Result<(), StateError> {
        let mut connection = self.lock();
        let transaction = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(failed("begin an outbox transaction"))?;
        for delivery in deliveries {
            complete_one(&transaction, tenant, delivery)?;
        }
        transaction.commit().map_err(failed("commit delivered outbox entries"))
    }

    pub fn outbox_retry_at(&self, tenant: &str, id: u64, next_attempt_at: u64, code: Option<i32>, message: &str) -> Result<(), StateError> {
        self.lock()
            .execute(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?1, last_error_code = ?2, last_error = ?3
                 WHERE tenant = ?4 AND id = ?5",
                params![next_attempt_at as i64, code, message, tenant, id as i64],
            )
            .map(drop)
            .map_err(failed(&format!("reschedule outbox entry {id}")))
    }

    pub fn outbox_dead_letter(&self, tenant: &str, id: u64, code: Option<i32>, message: &str) -> Result<(), StateError> {
        self.lock()
            .execute(
                "UPDATE outbox SET attempts = attempts + 1, state = 'dead', last_error_code = ?1, last_error = ?2
                 WHERE tenant = ?3 AND id = ?4",
                params![code, message, tenant, id as i64],
            )
            .map(drop)
            .map_err(failed(&format!("dead-letter outbox entry {id}")))
    }

    /// Moves a dead letter back to pending, due at `now`. Returns false when
    /// there is no dead letter with that id.
    pub fn outbox_retry_dead(&self, tenant: &str, id: u64, now: u64) -> Result<bool, StateError> {
        self.lock()
            .execute(
                "UPDATE outbox SET state = 'pending', next_attempt_at = ?1 WHERE tenant = ?2 AND id = ?3 AND state = 'dead'",
                params![now as i64, tenant, id as i64],
            )
            .map(|changed| changed == 1)
            .map_err(failed(&format!("retry outbox entry {id}")))
    }

    /// Deletes an entry without delivering it. A discarded create also
    /// releases its local id when the binding was never confirmed, so a later
    /// sync of that local id creates the object. Returns the entry, or none
    /// when there is no entry with that id.
    pub fn outbox_discard(&self, tenant: &str, id: u64) -> Result<Option<OutboxEntry>, StateError> {
        let Some(entry) = self.outbox_get(tenant, id)? else {
            return Ok(None);
        };
        let mut connection = self.lock();
        let transaction = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(failed("begin an outbox transaction"))?;
        transaction
            .execute("DELETE FROM outbox WHERE tenant = ?1 AND id = ?2", params![tenant, id as i64])
            .map_err(failed(&format!("discard outbox entry {id}")))?;
        if let (Operation::Create, Some(local_id)) = (entry.operation, &entry.local_id) {
            transaction
                .execute(
                    "DELETE FROM id_map
                     WHERE tenant = ?1 AND database_key = ?2 AND class_name = ?3 AND local_id = ?4 AND object_id = ?5 AND confirmed = 0",
                    params![tenant, entry.database_key, entry.class_name, local_id, entry.object_id],
                )
                .map_err(failed("release the local id of a discarded create"))?;
        }
        transaction.commit().map_err(failed("commit a discarded outbox entry"))?;
        Ok(Some(entry))
    }

    pub fn outbox_stats(&self, tenant: &str, database_key: &str) -> Result<OutboxStats, StateError> {
        self.lock()
            .query_row(
                "SELECT COALESCE(SUM(state = 'pending'), 0), COALESCE(SUM(state = 'dead'), 0),
                        MIN(CASE WHEN state = 'pending' THEN created_at END),
                        MIN(CASE WHEN state = 'pending' THEN next_attempt_at END)
                 FROM outbox WHERE tenant = ?1 AND database_key = ?2",
                params![tenant, database_key],
                |row| {
                    Ok(OutboxStats {
                        pending: row.get(0)?,
                        dead: row.get(1)?,
                        oldest_pending_at: row.get::<_, Option<i64>>(2)?.map(|v| v as u64),
                        next_attempt_at: row.get::<_, Option<i64>>(3)?.map(|v| v as u64),
                    })
                },
            )
            .map_err(failed("count outbox entries"))
    }
}

/// Removes one delivered entry inside `transaction`.
fn complete_one(transaction: &Transaction<'_>, tenant: &str, delivery: &Delivery) -> Result<(), StateError> {
    let (id, object_id, sent_payload) = (delivery.id, delivery.object_id.as_str(), delivery.sent_payload.as_str());
    let entry = transaction
        .query_row(
            &format!("SELECT {COLUMNS} FROM outbox AS o WHERE tenant = ?1 AND id = ?2"),
            params![tenant, id as i64],
            entry_from_row,
        )
        .optional()
        .map_err(failed(&format!("read outbox entry {id}")))?;
    let Some(entry) = entry else { return Ok(()) };

    if entry.object_id != object_id {
        for table in ["outbox", "id_map"] {
            transaction
                .execute(
                    &format!(
                        "UPDATE {table} SET object_id = ?1
                         WHERE tenant = ?2 AND database_key = ?3 AND class_name = ?4 AND object_id = ?5"
                    ),
                    params![object_id, tenant, entry.database_key, entry.class_name, entry.object_id],
                )
                .map_err(failed(&format!("rename an object in table {table}")))?;
        }
    }
    // A delivered create or update proves the object exists.
    if let (Operation::Create | Operation::Update, Some(local_id)) = (entry.operation, &entry.local_id) {
        transaction
            .execute(
                "UPDATE id_map SET confirmed = 1
                 WHERE tenant = ?1 AND database_key = ?2 AND class_name = ?3 AND local_id = ?4 AND object_id = ?5",
                params![tenant, entry.database_key, entry.class_name, local_id, object_id],
            )
            .map_err(failed("confirm a local id"))?;
    }
    if entry.payload == sent_payload || entry.operation == Operation::Delete {
        transaction
            .execute("DELETE FROM outbox WHERE tenant = ?1 AND id = ?2", params![tenant, id as i64])
            .map_err(failed(&format!("remove delivered outbox entry {id}")))?;
    } else {
        // Another process merged an update into the entry while it was
        // being sent; what was sent is done, the merged fields are not.
        transaction
            .execute(
                "UPDATE outbox SET operation = 'update', attempts = 0 WHERE tenant = ?1 AND id = ?2",
                params![tenant, id as i64],
            )
            .map_err(failed(&format!("keep merged outbox entry {id}")))?;
    }
    Ok(())
}


/// Unix milliseconds as SQLite's signed integer; `u64::MAX` ("any time")
/// becomes `i64::MAX` instead of wrapping to -1.
fn to_sql_time(millis: u64) -> i64 {
    millis.min(i64::MAX as u64) as i64
}

/// Writes the fields of `newer` over those of `older`. Both are JSON objects.
fn merge_payloads(older: &str, newer: &str) -> String {
    let mut merged: Map<String, Value> = serde_json::from_str(older).unwrap_or_default();
    let newer: Map<String, Value> = serde_json::from_str(newer).unwrap_or_default();
    merged.extend(newer);
    Value::Object(merged).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{IdBinding, StateLocation};

    fn store() -> SqliteStore {
        SqliteStore::open(&StateLocation::SqliteMemory).unwrap()
    }

    fn delivery(id: u64, object_id: &str, sent_payload: &str) -> Delivery {
        Delivery { id, object_id: object_id.into(), sent_payload: sent_payload.into() }
    }

    fn entry(operation: Operation, object_id: &str, payload: &str) -> NewEntry {
        NewEntry {
            database_key: "farm".into(),
            class_name: "Plot".into(),
            operation,
            object_id: object_id.into(),
            local_id: Some(format!("local-{object_id}")),
            payload: payload.into(),
        }
    }

    /// Two connections to one file stand for the CLI and `serve` sharing a
    /// state file. Each write transaction must wait for the other's lock
    /// (`busy_timeout`) instead of failing with "database is locked".
    #[test]
    fn two_connections_write_without_lock_errors() {
        let path = std::env::temp_dir().join(format!("agros-sync-lock-{}.db", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let location = StateLocation::SqliteFile(path.clone());
        let writers: Vec<_> = ["cli", "serve"]
            .into_iter()
            .map(|tenant| {
                let store = SqliteStore::open(&location).unwrap();
                std::thread::spawn(move || {
                    for n in 0..300 {
                        let object_id = format!("{tenant}-{n}");
                        let (id, _, _) = store.outbox_enqueue(tenant, &entry(Operation::Create, &object_id, "{}"), n).unwrap();
                        store.outbox_coalesce(tenant, "farm", "Plot", &object_id, r#"{"n":1}"#).unwrap();
                        store.outbox_complete(tenant, &[delivery(id, &object_id, r#"{"n":1}"#)]).unwrap();
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.join().expect("no write failed");
        }
        let store = SqliteStore::open(&location).unwrap();
        assert_eq!(store.outbox_list("cli", None, None, 10).unwrap().len(), 0);
        assert_eq!(store.outbox_list("serve", None, None, 10).unwrap().len(), 0);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }

    #[test]
    fn due_returns_one_entry_per_object_in_order() {
        let store = store();
        let a1 = store.outbox_enqueue("t", &entry(Operation::Create, "A", "{}"), 10).unwrap().0;
        let _a2 = store.outbox_enqueue("t", &entry(Operation::Update, "A", "{}"), 11).unwrap().0;
        let b1 = store.outbox_enqueue("t", &entry(Operation::Create, "B", "{}"), 12).unwrap().0;

        let due: Vec<u64> = store.outbox_due("t", "farm", 100, 10).unwrap().iter().map(|e| e.id).collect();
        assert_eq!(due, vec![a1, b1]);

        store.outbox_complete("t", &[delivery(a1, "A", "{}")]).unwrap();
        let due: Vec<u64> = store.outbox_due("t", "farm", 100, 10).unwrap().iter().map(|e| e.id).collect();
        assert_eq!(due, vec![a1 + 1, b1]);
    }

    #[test]
    fn due_at_any_time_includes_future_retries() {
        let store = store();
        let id = store.outbox_enqueue("t", &entry(Operation::Create, "A", "{}"), 10).unwrap().0;
        store.outbox_retry_at("t", id, 1_000_000, None, "later").unwrap();
        assert_eq!(store.outbox_due("t", "farm", u64::MAX, 10).unwrap().len(), 1);
    }

    #[test]
    fn entry_waiting_for_retry_blocks_its_object() {
        let store = store();
        let a1 = store.outbox_enqueue("t", &entry(Operation::Create, "A", "{}"), 10).unwrap().0;
        store.outbox_enqueue("t", &entry(Operation::Update, "A", "{}"), 11).unwrap();
        store.outbox_retry_at("t", a1, 500, Some(502), "bad gateway").unwrap();

        assert!(store.outbox_due("t", "farm", 100, 10).unwrap().is_empty());
        let due = store.outbox_due("t", "farm", 500, 10).unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].attempts, 1);
        assert_eq!(due[0].last_error_code, Some(502));
    }

    #[test]
    fn dead_letter_blocks_later_entries_of_object() {
        let store = store();
        let a1 = store.outbox_enqueue("t", &entry(Operation::Update, "A", "{}"), 10).unwrap().0;
        store.outbox_enqueue("t", &entry(Operation::Update, "A", "{}"), 11).unwrap();
        store.outbox_dead_letter("t", a1, Some(111), "type mismatch").unwrap();

        assert!(store.outbox_due("t", "farm", 100, 10).unwrap().is_empty());
        let stats = store.outbox_stats("t", "farm").unwrap();
        assert_eq!((stats.pending, stats.dead), (1, 1));
    }

    #[test]
    fn complete_confirms_and_renames() {
        let store = store();
        let id = store.outbox_enqueue("t", &entry(Operation::Create, "planned", "{}"), 10).unwrap().0;
        let later = store.outbox_enqueue("t", &entry(Operation::Update, "planned", "{}"), 11).unwrap().0;
        assert_eq!(
            store.id_get("t", "farm", "Plot", "local-planned").unwrap(),
            Some(IdBinding { object_id: "planned".into(), confirmed: false })
        );

        store.outbox_complete("t", &[delivery(id, "server1234", "{}")]).unwrap();

        assert_eq!(
            store.id_get("t", "farm", "Plot", "local-planned").unwrap(),
            Some(IdBinding { object_id: "server1234".into(), confirmed: true })
        );
        assert_eq!(store.outbox_get("t", later).unwrap().unwrap().object_id, "server1234");
        assert_eq!(store.outbox_get("t", id).unwrap(), None);
    }

    #[test]
    fn coalesce_merges_only_unattempted_entries() {
        let store = store();
        let id = store.outbox_enqueue("t", &entry(Operation::Create, "A", r#"{"a":1,"b":1}"#), 10).unwrap().0;
        assert_eq!(store.outbox_coalesce("t", "farm", "Plot", "A", r#"{"b":2}"#).unwrap(), Some(id));
        assert_eq!(store.outbox_get("t", id).unwrap().unwrap().payload, r#"{"a":1,"b":2}"#);

        store.outbox_retry_at("t", id, 20, None, "timeout").unwrap();
        assert_eq!(store.outbox_coalesce("t", "farm", "Plot", "A", r#"{"b":3}"#).unwrap(), None);
    }

    #[test]
    fn update_merged_during_send_is_kept() {
        let store = store();
        let id = store.outbox_enqueue("t", &entry(Operation::Create, "A", r#"{"a":1}"#), 10).unwrap().0;
        // Another process merges an update while this one sends {"a":1}.
        store.outbox_coalesce("t", "farm", "Plot", "A", r#"{"a":2}"#).unwrap();
        store.outbox_complete("t", &[delivery(id, "A", r#"{"a":1}"#)]).unwrap();

        let kept = store.outbox_get("t", id).unwrap().unwrap();
        assert_eq!(kept.operation, Operation::Update);
        assert_eq!(kept.payload, r#"{"a":2}"#);
        assert_eq!(kept.state, EntryState::Pending);
    }

    #[test]
    fn racing_create_becomes_update() {
        let store = store();
        let (_, first_op, first_id) = store.outbox_enqueue("t", &entry(Operation::Create, "A", "{}"), 10).unwrap();
        let mut racing = entry(Operation::Create, "B", "{}");
        racing.local_id = Some("local-A".into());
        let (_, op, object_id) = store.outbox_enqueue("t", &racing, 11).unwrap();

        assert_eq!((first_op, first_id.as_str()), (Operation::Create, "A"));
        assert_eq!((op, object_id.as_str()), (Operation::Update, "A"));
    }

    #[test]
    fn delete_by_local_id_unbinds_it() {
        let store = store();
        store.outbox_enqueue("t", &entry(Operation::Create, "A", "{}"), 10).unwrap();
        store.outbox_enqueue("t", &entry(Operation::Delete, "A", "{}"), 11).unwrap();
        assert_eq!(store.id_get("t", "farm", "Plot", "local-A").unwrap(), None);
    }

    #[test]
    fn discarded_create_releases_local_id() {
        let store = store();
        let id = store.outbox_enqueue("t", &entry(Operation::Create, "A", "{}"), 10).unwrap().0;
        store.outbox_dead_letter("t", id, Some(111), "type mismatch").unwrap();
        store.outbox_discard("t", id).unwrap();
        assert_eq!(store.id_get("t", "farm", "Plot", "local-A").unwrap(), None);
    }

    #[test]
    fn entry_behind_dead_letter_names_it() {
        let store = store();
        let dead = store.outbox_enqueue("t", &entry(Operation::Update, "A", "{}"), 10).unwrap().0;
        let waiting = store.outbox_enqueue("t", &entry(Operation::Update, "A", "{}"), 11).unwrap().0;
        let other = store.outbox_enqueue("t", &entry(Operation::Update, "B", "{}"), 12).unwrap().0;
        store.outbox_dead_letter("t", dead, Some(111), "type mismatch").unwrap();

        assert_eq!(store.outbox_get("t", waiting).unwrap().unwrap().blocked_by, Some(dead));
        assert_eq!(store.outbox_get("t", other).unwrap().unwrap().blocked_by, None);
        assert_eq!(store.outbox_get("t", dead).unwrap().unwrap().blocked_by, None);
    }

    #[test]
    fn retry_dead_makes_entry_due() {
        let store = store();
        let id = store.outbox_enqueue("t", &entry(Operation::Update, "A", "{}"), 10).unwrap().0;
        store.outbox_dead_letter("t", id, Some(101), "not found").unwrap();
        assert!(store.outbox_retry_dead("t", id, 50).unwrap());
        assert_eq!(store.outbox_due("t", "farm", 50, 10).unwrap().len(), 1);
        assert!(!store.outbox_retry_dead("t", id, 50).unwrap());
    }

    #[test]
    fn tenants_have_separate_outboxes() {
        let store = store();
        store.outbox_enqueue("north", &entry(Operation::Create, "A", "{}"), 10).unwrap();
        assert!(store.outbox_due("south", "farm", 100, 10).unwrap().is_empty());
        assert_eq!(store.outbox_stats("south", "farm").unwrap().pending, 0);
    }
}

//! SQLite implementation of the state store.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension};

use super::{IdBinding, StateError, StateLocation};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS app_config (
    tenant TEXT NOT NULL,
    key    TEXT NOT NULL,
    value  TEXT NOT NULL,
    PRIMARY KEY (tenant, key)
);
CREATE TABLE IF NOT EXISTS id_map (
    tenant       TEXT NOT NULL,
    database_key TEXT NOT NULL,
    class_name   TEXT NOT NULL,
    local_id     TEXT NOT NULL,
    object_id    TEXT NOT NULL,
    confirmed    INTEGER NOT NULL,
    PRIMARY KEY (tenant, database_key, class_name, local_id)
);
CREATE TABLE IF NOT EXISTS outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant          TEXT NOT NULL,
    database_key    TEXT NOT NULL,
    class_name      TEXT NOT NULL,
    operation       TEXT NOT NULL CHECK (operation IN ('create', 'update', 'delete')),
    object_id       TEXT NOT NULL,
    local_id        TEXT,
    payload         TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('pending', 'dead')),
    last_error_code INTEGER,
    last_error      TEXT
);
CREATE INDEX IF NOT EXISTS outbox_object
    ON outbox (tenant, database_key, class_name, object_id, id);
CREATE INDEX IF NOT EXISTS outbox_due
    ON outbox (tenant, database_key, state, next_attempt_at);
";

/// A shared handle to one SQLite database; clones share the connection.
#[derive(Clone)]
pub struct SqliteStore {
    connection: Arc<Mutex<Connection>>,
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `location`.
    pub fn open(location: &StateLocation) -> Result<Self, StateError> {
        let connection = match location {
            StateLocation::SqliteFile(path) => open_file(path)?,
            StateLocation::SqliteMemory => Connection::open_in_memory().map_err(failed("open an in-memory database"))?,
        };
        connection.execute_batch(SCHEMA).map_err(failed("create the tables"))?;
        Ok(Self { connection: Arc::new(Mutex::new(connection)) })
    }

    pub fn app_config_get(&self, tenant: &str, key: &str) -> Result<Option<String>, StateError> {
        self.lock()
            .query_row(
                "SELECT value FROM app_config WHERE tenant = ?1 AND key = ?2",
                params![tenant, key],
                |row| row.get(0),
            )
            .optional()
            .map_err(failed(&format!("read app_config key {key}")))
    }

    pub fn app_config_set(&self, tenant: &str, key: &str, value: &str) -> Result<(), StateError> {
        self.lock()
            .execute(
                "INSERT INTO app_config (tenant, key, value) VALUES (?1, ?2, ?3)
                 ON CONFLICT (tenant, key) DO UPDATE SET value = excluded.value",
                params![tenant, key, value],
            )
            .map(drop)
            .map_err(failed(&format!("write app_config key {key}")))
    }

    /// Lists every `app_config` row of a tenant, sorted by key.
    pub fn app_config_list(&self, tenant: &str) -> Result<Vec<(String, String)>, StateError> {
        let connection = self.lock();
        let mut statement = connection
            .prepare("SELECT key, value FROM app_config WHERE tenant = ?1 ORDER BY key")
            .map_err(failed("list app_config"))?;
        let rows = statement
            .query_map(params![tenant], |row| Ok((row.get(0)?, row.get(1)?)))
            .map_err(failed("list app_config"))?;
        rows.collect::<Result<_, _>>().map_err(failed("list app_config"))
    }

    /// Lists every tenant that has local ids or outbox entries in the store,
    /// with the number of each, by tenant name.
    pub fn tenants_with_records(&self) -> Result<Vec<(String, u64, u64)>, StateError> {
        let connection = self.lock();
        let mut statement = connection
            .prepare(
                "SELECT tenant, SUM(ids), SUM(entries) FROM (
                     SELECT tenant, COUNT(*) AS ids, 0 AS entries FROM id_map GROUP BY tenant
                     UNION ALL
                     SELECT tenant, 0, COUNT(*) FROM outbox GROUP BY tenant
                 ) GROUP BY tenant ORDER BY tenant",
            )
            .map_err(failed("list the tenants in the store"))?;
        let rows = statement
            .query_map([], |row| Ok((row.get(0)?, row.get::<_, i64>(1)? as u64, row.get::<_, i64>(2)? as u64)))
            .map_err(failed("list the tenants in the store"))?;
        rows.collect::<Result<_, _>>().map_err(failed("list the tenants in the store"))
    }

    pub fn id_get(&self, tenant: &str, database_key: &str, class_name: &str, local_id: &str) -> Result<Option<IdBinding>, StateError> {
        self.lock()
            .query_row(
                "SELECT object_id, confirmed FROM id_map
                 WHERE tenant = ?1 AND database_key = ?2 AND class_name = ?3 AND local_id = ?4",
                params![tenant, database_key, class_name, local_id],
                |row| Ok(IdBinding { object_id: row.get(0)?, confirmed: row.get(1)? }),
            )
            .optional()
            .map_err(failed(&format!("read the objectId of local id {local_id}")))
    }

    pub fn id_put(&self, tenant: &str, database_key: &str, class_name: &str, local_id: &str, binding: &IdBinding) -> Result<(), StateError> {
        self.lock()
            .execute(
                "INSERT INTO id_map (tenant, database_key, class_name, local_id, object_id, confirmed)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (tenant, database_key, class_name, local_id)
                 DO UPDATE SET object_id = excluded.object_id, confirmed = excluded.confirmed",
                params![tenant, database_key, class_name, local_id, binding.object_id, binding.confirmed],
            )
            .map(drop)
            .map_err(failed(&format!("store the objectId of local id {local_id}")))
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent (each
        // statement is atomic), so a poisoned lock is still usable.
        self.connection.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn open_file(path: &Path) -> Result<Connection, StateError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.exists() {
            std::fs::create_dir_all(parent).map_err(|e| StateError {
                action: format!("create directory {}", parent.display()),
                source: Box::new(e),
            })?;
        }
    }
    let connection = Connection::open(path).map_err(failed(&format!("open {}", path.display())))?;

    // WAL with FULL sync: a commit is on disk when it returns.
    connection
        .execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000;")
        .map_err(failed(&format!("configure {}", path.display())))?;
    Ok(connection)
}

pub(super) fn failed(action: &str) -> impl FnOnce(rusqlite::Error) -> StateError + '_ {
    move |source| StateError { action: action.to_owned(), source: Box::new(source) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> SqliteStore {
        SqliteStore::open(&StateLocation::SqliteMemory).unwrap()
    }

    #[test]
    fn app_config_round_trip() {
        let store = store();
        store.app_config_set("default", "parser-farm-host", "http://127.0.0.1:1337/parse").unwrap();
        store.app_config_set("default", "parser-farm-host", "http://127.0.0.1:1338/parse").unwrap();
        assert_eq!(
            store.app_config_get("default", "parser-farm-host").unwrap().as_deref(),
            Some("http://127.0.0.1:1338/parse")
        );
    }

    #[test]
    fn tenants_do_not_share_rows() {
        let store = store();
        store.app_config_set("north", "k", "1").unwrap();
        assert_eq!(store.app_config_get("south", "k").unwrap(), None);
        let binding = IdBinding { object_id: "Abc".into(), confirmed: true };
        store.id_put("north", "farm", "Plot", "p1", &binding).unwrap();
        assert_eq!(store.id_get("south", "farm", "Plot", "p1").unwrap(), None);
        assert_eq!(store.id_get("north", "farm", "Plot", "p1").unwrap(), Some(binding));
    }

    #[test]
    fn file_store_survives_reopen() {
        let dir = std::env::temp_dir().join(format!("agros-sync-state-{}", std::process::id()));
        let location = StateLocation::SqliteFile(dir.join("state.db"));
        SqliteStore::open(&location).unwrap().app_config_set("t", "k", "v").unwrap();
        let reopened = SqliteStore::open(&location).unwrap();
        assert_eq!(reopened.app_config_get("t", "k").unwrap().as_deref(), Some("v"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}

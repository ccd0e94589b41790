//! `ParseClientFactory`: one Parse client per database key, created on first
//! use and kept for the life of the plugin instance.

use std::collections::HashMap;

use crate::bindings::agros::sync::config::{self, Database};
use crate::encode::FieldTypes;
use crate::errors::{error, ErrorKind, SyncResult};
use crate::parse_client::ParseClient;
use crate::parser_service::ServerCheck;

/// A client and what the plugin has learnt about its server.
pub struct ManagedClient {
    pub client: ParseClient,
    /// The last server check; `None` until the first call that needs it.
    pub check: Option<ServerCheck>,
    /// Field types per class, read from `/schemas` on first write.
    pub schemas: HashMap<String, FieldTypes>,
    /// When `/health` was last probed during a backoff (Unix milliseconds).
    pub last_probe_at: Option<u64>,
}

#[derive(Default)]
pub struct ParseClientFactory {
    databases: Option<Vec<Database>>,
    clients: HashMap<String, ManagedClient>,
}

impl ParseClientFactory {
    /// Returns the tenant's databases, read from the host once.
    pub fn databases(&mut self) -> &[Database] {
        self.databases.get_or_insert_with(config::databases)
    }

    /// Returns the client for `database_key`, creating it on first use.
    pub fn client(&mut self, database_key: &str) -> SyncResult<&mut ManagedClient> {
        if !self.clients.contains_key(database_key) {
            let database = self.find(database_key)?.clone();
            if !database.sync {
                let detail = format!(
                    "database {database_key:?} has `sync: false` in config.yaml, so it has no Parse client; set `sync: true` to sync it"
                );
                return Err(error(ErrorKind::SyncDisabled, database_key, detail));
            }
            crate::log::info("created Parse client", &[("database", database_key), ("server_url", &database.server_url)]);
            let managed = ManagedClient {
                client: ParseClient::new(&database.key, &database.server_url, &database.app_id),
                check: None,
                schemas: HashMap::new(),
                last_probe_at: None,
            };
            self.clients.insert(database_key.to_owned(), managed);
        }
        Ok(self.clients.get_mut(database_key).expect("inserted above"))
    }

    fn find(&mut self, database_key: &str) -> SyncResult<&Database> {
        let known: Vec<String> = self.databases().iter().map(|d| d.key.clone()).collect();
        match self.databases().iter().find(|d| d.key == database_key) {
            Some(database) => Ok(database),
            None => Err(error(
                ErrorKind::UnknownDatabase,
                database_key,
                format!(
                    "unknown database {database_key:?}; configured databases: {}",
                    if known.is_empty() { "none".to_owned() } else { known.join(", ") }
                ),
            )),
        }
    }
}

//! The host's durable state store: the `app_config` table, the map from
//! local record ids to Parse objectIds, and the outbox of writes to send.
//!
//! Every write is durable when the call returns: SQLite runs in WAL mode with
//! `synchronous = FULL`, so a committed row survives a process kill and a
//! power loss. Rows are scoped by tenant.

mod outbox;
mod sqlite;

pub use outbox::{Delivery, EntryState, NewEntry, Operation, OutboxEntry, OutboxStats};
pub use sqlite::SqliteStore;

use thiserror::Error;

/// A failure of the state store, with the operation that failed.
#[derive(Debug, Error)]
#[error("state store: failed to {action}: {source}")]
pub struct StateError {
    pub action: String,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// A local record's binding to its Parse objectId.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdBinding {
    pub object_id: String,
    /// False until the server confirmed the object exists.
    pub confirmed: bool,
}

/// The store's location, from `state.url` in `config.yaml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateLocation {
    /// `sqlite://PATH`: a file, created on first use.
    SqliteFile(std::path::PathBuf),
    /// `sqlite::memory:`: nothing survives the process; for tests.
    SqliteMemory,
}

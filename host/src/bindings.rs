//! Host bindings generated from the `agros:sync/plugin` world in `wit/`.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "plugin",
    imports: { default: trappable },
    exports: { default: async },
});

pub use agros::sync::types::{ErrorKind, SyncError};
pub use exports::agros::sync::sync_manager::{ClientStatus, FlushReport, ObjectRef, QueryOptions, SyncOutcome, SyncStatus};

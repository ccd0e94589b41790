//! The plugin's HTTP capability: requests outside the tenant's Parse servers
//! are denied before any connection is made.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use agros_sync_host::bindings::agros::sync::config::Database;
use agros_sync_host::bindings::{ErrorKind, SyncStatus};
use agros_sync_host::host_state::TenantContext;
use agros_sync_host::state::{SqliteStore, StateLocation};
use agros_sync_host::tenant::Tenant;
use agros_sync_tests::*;

/// Creates a tenant whose plugin is configured with a database at `rogue_url` that its
/// capability (built from app A only) does not allow.
fn tenant_with_rogue_database(rogue_url: &str) -> Tenant {
    let config = parse_config(&format!("databases:\n{}", database_yaml("farm", &server_a())));
    let store = SqliteStore::open(&StateLocation::SqliteMemory).unwrap();
    let mut context = TenantContext::new("default", &config, store);
    context.databases.push(Database {
        key: "rogue".to_owned(),
        sync: true,
        server_url: rogue_url.to_owned(),
        app_id: server_a().app_id,
    });
    Tenant::with_context(Arc::new(context), runtime(), Duration::from_secs(60))
}

#[tokio::test]
async fn other_loopback_port_is_denied_before_connecting() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let tenant = tenant_with_rogue_database(&format!("http://127.0.0.1:{port}/parse"));

    let outcome = tenant.sync_object("rogue", "Plot", r#"{"a":1}"#, None).await.unwrap();

    // A denied request pauses the database: the write stays queued until the
    // configuration is fixed, and the status shows why.
    assert_eq!(outcome.status, SyncStatus::Queued);
    let statuses = tenant.get_all_clients_status().await.unwrap();
    let rogue = statuses.iter().find(|s| s.database_key == "rogue").unwrap();
    let error = rogue.last_error.as_ref().expect("the denial is reported");
    assert_eq!(error.kind, ErrorKind::RequestDenied);
    assert!(error.detail.contains(&port.to_string()), "{}", error.detail);
    assert!(rogue.paused.as_deref().unwrap_or_default().starts_with("request-denied"), "{:?}", rogue.paused);
    assert_eq!(rogue.pending, 1);
    let accepted = listener.accept();
    assert!(accepted.is_err(), "the denied request reached the listener");
}

#[tokio::test]
async fn other_path_on_parse_origin_is_denied() {
    let url_a = server_a().url;
    let origin = url_a.trim_end_matches("/parse");
    let tenant = tenant_with_rogue_database(&format!("{origin}/other"));

    let statuses = tenant.get_all_clients_status().await.unwrap();

    let rogue = statuses.iter().find(|s| s.database_key == "rogue").unwrap();
    assert_eq!(rogue.last_error.as_ref().unwrap().kind, ErrorKind::RequestDenied);
    let farm = statuses.iter().find(|s| s.database_key == "farm").unwrap();
    assert!(farm.reachable, "the allowed database keeps working");
}

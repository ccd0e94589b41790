//! Writes through the plugin to a reachable Parse Server, checked by reading
//! the server directly.

use agros_sync_host::bindings::{ErrorKind, ObjectRef, SyncStatus};
use agros_sync_host::error::CallError;
use agros_sync_host::state::IdBinding;
use agros_sync_tests::*;
use serde_json::json;

#[tokio::test]
async fn create_then_read_back() {
    let (tenant, _) = tenant(&standard_config(""));
    let class = unique_class("Plot");

    let outcome = tenant.sync_object("farm", &class, r#"{"name":"North field","area":2.5,"organic":true}"#, None).await.unwrap();

    assert_eq!(outcome.status, SyncStatus::Synced);
    assert!(outcome.created);
    assert_eq!(synced_id(&outcome).len(), 10);
    let stored = rest(&server_a(), "GET", &format!("/classes/{class}/{}", synced_id(&outcome)), None);
    assert_eq!(stored["name"], json!("North field"));
    assert_eq!(stored["area"], json!(2.5));
    assert_eq!(stored["organic"], json!(true));
}

#[tokio::test]
async fn local_id_update_keeps_one_object() {
    let (tenant, _) = tenant(&standard_config(""));
    let class = unique_class("Farmer");

    let first = tenant.sync_object("farm", &class, r#"{"name":"Ana","plots":1}"#, Some("farmer-1")).await.unwrap();
    let second = tenant.sync_object("farm", &class, r#"{"name":"Ana","plots":2}"#, Some("farmer-1")).await.unwrap();

    assert!(first.created);
    assert!(!second.created);
    assert_eq!(synced_id(&first), synced_id(&second));
    let objects = server_objects(&server_a(), &class);
    assert_eq!(objects.len(), 1);
    assert_eq!(objects[0]["plots"], json!(2));
}

#[tokio::test]
async fn object_id_in_data_updates() {
    let (tenant, _) = tenant(&standard_config(""));
    let class = unique_class("Harvest");

    let created = tenant.sync_object("farm", &class, r#"{"crop":"barley","kg":100}"#, None).await.unwrap();
    let data = json!({"objectId": synced_id(&created), "kg": 120, "createdAt": "2000-01-01T00:00:00.000Z"}).to_string();
    let updated = tenant.sync_object("farm", &class, &data, None).await.unwrap();

    assert!(!updated.created);
    assert_eq!(synced_id(&updated), synced_id(&created));
    let objects = server_objects(&server_a(), &class);
    assert_eq!(objects.len(), 1);
    assert_eq!(objects[0]["kg"], json!(120));
    assert_eq!(objects[0]["crop"], json!("barley"));
    assert_ne!(objects[0]["createdAt"], json!("2000-01-01T00:00:00.000Z"));
}

#[tokio::test]
async fn server_generated_ids_update_by_local_id() {
    let (tenant, _) = tenant(&standard_config(""));
    let class = unique_class("Visit");

    let first = tenant.sync_object("market", &class, r#"{"note":"first"}"#, Some("visit-9")).await.unwrap();
    let second = tenant.sync_object("market", &class, r#"{"note":"second"}"#, Some("visit-9")).await.unwrap();

    assert_eq!(synced_id(&first), synced_id(&second));
    let objects = server_objects(&server_b(), &class);
    assert_eq!(objects.len(), 1);
    assert_eq!(objects[0]["note"], json!("second"));
}

/// A create whose response was lost leaves an unconfirmed binding; the repeat
/// must reuse its objectId, not create a second object.
#[tokio::test]
async fn repeated_create_after_lost_answer_is_one_object() {
    let (tenant, store) = tenant(&standard_config(""));
    let class = unique_class("Plot");
    let object_id = "LostAnswr1";
    rest(&server_a(), "POST", &format!("/classes/{class}"), Some(json!({"objectId": object_id, "name": "v1"})));
    let binding = IdBinding { object_id: object_id.to_owned(), confirmed: false };
    store.id_put("default", "farm", &class, "plot-7", &binding).unwrap();

    let outcome = tenant.sync_object("farm", &class, r#"{"name":"v2"}"#, Some("plot-7")).await.unwrap();

    assert_eq!(synced_id(&outcome), object_id);
    assert!(!outcome.created);
    let objects = server_objects(&server_a(), &class);
    assert_eq!(objects.len(), 1);
    assert_eq!(objects[0]["name"], json!("v2"));
    assert_eq!(store.id_get("default", "farm", &class, "plot-7").unwrap().unwrap().confirmed, true);
}

#[tokio::test]
async fn date_field_stored_as_parse_date() {
    let (tenant, _) = tenant(&standard_config(""));
    let class = unique_class("Weather");

    let data = r#"{"date":{"__type":"Date","iso":"2012-01-01"},"temp_max":12.8}"#;
    let outcome = tenant.sync_object("farm", &class, data, None).await.unwrap();
    // Once the schema types `date` as Date, a plain string is converted too.
    let outcome2 = tenant.sync_object("farm", &class, r#"{"date":"2012-01-02T06:30:00-08:00"}"#, None).await.unwrap();

    let schema = rest(&server_a(), "GET", &format!("/schemas/{class}"), None);
    assert_eq!(schema["fields"]["date"]["type"], json!("Date"));
    let stored = rest(&server_a(), "GET", &format!("/classes/{class}/{}", synced_id(&outcome)), None);
    assert_eq!(stored["date"], json!({"__type": "Date", "iso": "2012-01-01T00:00:00.000Z"}));
    let stored2 = rest(&server_a(), "GET", &format!("/classes/{class}/{}", synced_id(&outcome2)), None);
    assert_eq!(stored2["date"], json!({"__type": "Date", "iso": "2012-01-02T14:30:00.000Z"}));
}

#[tokio::test]
async fn one_mebibyte_object_syncs() {
    let (tenant, _) = tenant(&standard_config(""));
    let class = unique_class("Photo");
    let payload: String = (0..1024 * 1024).map(|i| (b'a' + (i % 26) as u8) as char).collect();

    let data = json!({"caption": "field", "payload": payload}).to_string();
    let outcome = tenant.sync_object("farm", &class, &data, None).await.unwrap();

    let stored = rest(&server_a(), "GET", &format!("/classes/{class}/{}", synced_id(&outcome)), None);
    assert_eq!(stored["payload"].as_str().unwrap().len(), 1024 * 1024);
    assert_eq!(stored["payload"], json!(payload));
}

#[tokio::test]
async fn pointer_by_local_id_resolves() {
    let (tenant, _) = tenant(&standard_config(""));
    let farmers = unique_class("Farmer");
    let plots = unique_class("Plot");

    let farmer = tenant.sync_object("farm", &farmers, r#"{"name":"Luis"}"#, Some("f-1")).await.unwrap();
    let data = json!({"name": "South", "owner": {"__type": "Pointer", "className": farmers, "localId": "f-1"}}).to_string();
    let plot = tenant.sync_object("farm", &plots, &data, Some("p-1")).await.unwrap();

    let stored = rest(&server_a(), "GET", &format!("/classes/{plots}/{}", synced_id(&plot)), None);
    assert_eq!(stored["owner"], json!({"__type": "Pointer", "className": farmers, "objectId": synced_id(&farmer)}));
}

#[tokio::test]
async fn geo_point_is_stored() {
    let (tenant, _) = tenant(&standard_config(""));
    let class = unique_class("Plot");

    let data = r#"{"center":{"__type":"GeoPoint","latitude":-34.6,"longitude":-58.4}}"#;
    let outcome = tenant.sync_object("farm", &class, data, None).await.unwrap();

    let stored = rest(&server_a(), "GET", &format!("/classes/{class}/{}", synced_id(&outcome)), None);
    assert_eq!(stored["center"], json!({"__type": "GeoPoint", "latitude": -34.6, "longitude": -58.4}));
}

#[tokio::test]
async fn delete_by_local_id_and_again() {
    let (tenant, _) = tenant(&standard_config(""));
    let class = unique_class("Plot");
    tenant.sync_object("farm", &class, r#"{"name":"gone soon"}"#, Some("p-del")).await.unwrap();

    let deleted = tenant.delete_object("farm", &class, &ObjectRef::LocalId("p-del".into())).await.unwrap();
    // Deleting an objectId that is already gone succeeds; the local id is
    // unbound, so naming it again is an unknown local id.
    let object_id = deleted.object_id.clone().unwrap();
    tenant.delete_object("farm", &class, &ObjectRef::ObjectId(object_id)).await.unwrap();
    match tenant.delete_object("farm", &class, &ObjectRef::LocalId("p-del".into())).await {
        Err(CallError::Plugin(error)) => assert_eq!(error.kind, ErrorKind::ObjectNotFound),
        other => panic!("expected object-not-found, got {other:?}"),
    }

    assert_eq!(server_count(&server_a(), &class), 0);
}

#[tokio::test]
async fn sync_after_delete_by_local_id_creates_anew() {
    let (tenant, store) = tenant(&standard_config(""));
    let class = unique_class("Plot");
    let first = tenant.sync_object("farm", &class, r#"{"name":"v1"}"#, Some("p-17")).await.unwrap();
    tenant.delete_object("farm", &class, &ObjectRef::LocalId("p-17".into())).await.unwrap();
    assert_eq!(store.id_get("default", "farm", &class, "p-17").unwrap(), None);

    let again = tenant.sync_object("farm", &class, r#"{"name":"v2"}"#, Some("p-17")).await.unwrap();

    assert!(again.created);
    assert_ne!(synced_id(&again), synced_id(&first));
    let objects = server_objects(&server_a(), &class);
    assert_eq!(objects.len(), 1);
    assert_eq!(objects[0]["name"], json!("v2"));
}

/// Two hosts on one state file (two connections, as two processes would
/// have) syncing the same local ids at the same time create each object
/// once, on a server that picks its own objectIds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_create_each_local_id_once() {
    use agros_sync_host::state::{SqliteStore, StateLocation};
    use agros_sync_host::tenant::Tenant;

    let path = std::env::temp_dir().join(format!("agros-sync-concurrent-{}.db", std::process::id()));
    let config = parse_config(&standard_config(""));
    let open = || SqliteStore::open(&StateLocation::SqliteFile(path.clone())).unwrap();
    let first = Tenant::new("default", &config, open(), runtime()).unwrap();
    let second = Tenant::new("default", &config, open(), runtime()).unwrap();
    let class = unique_class("Visit");

    for n in 0..30 {
        let local_id = format!("v-{n}");
        let data = json!({ "n": n }).to_string();
        let (a, b) = tokio::join!(
            first.sync_object("market", &class, &data, Some(&local_id)),
            second.sync_object("market", &class, &data, Some(&local_id)),
        );
        a.unwrap();
        b.unwrap();
    }
    // Both hosts may send one entry at once; the loser of that race gets 159
    // for the shared request id and backs off, so finish with a flush.
    flush_all(&first).await;

    let objects = server_objects(&server_b(), &class);
    assert_eq!(objects.len(), 30);
    let _ = std::fs::remove_file(&path);
}

//! Offline behaviour through a fault-injecting proxy in front of the real
//! Parse Server: every accepted write arrives exactly once, whatever fails.
//! Each test checks the server's exact contents and the outbox afterwards.

use std::time::Duration;

use agros_sync_host::bindings::{ErrorKind, SyncStatus};
use agros_sync_host::host_state::now_millis;
use agros_sync_host::state::EntryState;
use agros_sync_tests::proxy::Action;
use agros_sync_tests::*;
use serde_json::{json, Value};

fn numbers(objects: &[Value], field: &str) -> Vec<i64> {
    let mut values: Vec<i64> = objects.iter().map(|o| o[field].as_i64().unwrap()).collect();
    values.sort();
    values
}

#[tokio::test]
async fn server_down_for_500_writes_then_up() {
    let (proxy, through) = proxied(&server_a());
    let (tenant, store) = tenant(&offline_config(&through, &server_b()));
    let class = unique_class("Reading");

    proxy.set_down(true);
    for n in 0..500 {
        let outcome = tenant.sync_object("farm", &class, &json!({ "n": n }).to_string(), Some(&format!("r-{n}"))).await.unwrap();
        assert_eq!(outcome.status, SyncStatus::Queued, "write {n}");
    }
    assert_eq!(store.outbox_stats("default", "farm").unwrap().pending, 500);

    proxy.set_down(false);
    let report = flush_all(&tenant).await;

    assert_eq!(report.pending, 0);
    assert_eq!(server_count(&server_a(), &class), 500);
    assert_eq!(numbers(&server_objects(&server_a(), &class), "n"), (0..500).collect::<Vec<i64>>());
    let stats = store.outbox_stats("default", "farm").unwrap();
    assert_eq!((stats.pending, stats.dead), (0, 0));
}

#[tokio::test]
async fn lost_create_response_is_not_duplicated() {
    let (proxy, through) = proxied(&server_a());
    let (tenant, store) = tenant(&offline_config(&through, &server_b()));
    let class = unique_class("Plot");
    // The status check runs first, so the create is the first POST to the class.
    tenant.get_all_clients_status().await.unwrap();
    proxy.add_fault("POST", &format!("/classes/{class}"), Action::DropResponse, 1);

    let outcome = tenant.sync_object("farm", &class, r#"{"name":"North"}"#, Some("plot-1")).await.unwrap();

    assert_eq!(outcome.status, SyncStatus::Queued);
    assert_eq!(proxy.dropped(), 1);
    assert_eq!(server_count(&server_a(), &class), 1, "the server applied the create");
    flush_all(&tenant).await;
    let objects = server_objects(&server_a(), &class);
    assert_eq!(objects.len(), 1);
    assert_eq!(objects[0]["objectId"], json!(outcome.object_id.unwrap()));
    assert_eq!(objects[0]["name"], json!("North"));
    assert_eq!(store.outbox_stats("default", "farm").unwrap().pending, 0);
    assert!(store.id_get("default", "farm", &class, "plot-1").unwrap().unwrap().confirmed);
}

#[tokio::test]
async fn batch_reset_after_apply_is_not_duplicated() {
    let (proxy, through) = proxied(&server_a());
    let (tenant, store) = tenant(&offline_config(&through, &server_b()));
    let class = unique_class("Reading");
    tenant.get_all_clients_status().await.unwrap();

    proxy.set_down(true);
    for n in 0..120 {
        tenant.sync_object("farm", &class, &json!({ "n": n }).to_string(), None).await.unwrap();
    }
    proxy.set_down(false);
    proxy.add_fault("POST", "/batch", Action::DropResponse, 1);
    flush_all(&tenant).await;

    assert_eq!(proxy.dropped(), 1);
    assert_eq!(server_count(&server_a(), &class), 120);
    assert_eq!(numbers(&server_objects(&server_a(), &class), "n"), (0..120).collect::<Vec<i64>>());
    let stats = store.outbox_stats("default", "farm").unwrap();
    assert_eq!((stats.pending, stats.dead), (0, 0));
}

#[tokio::test]
async fn bad_gateway_is_retried() {
    let (proxy, through) = proxied(&server_a());
    let (tenant, store) = tenant(&offline_config(&through, &server_b()));
    let class = unique_class("Plot");
    tenant.get_all_clients_status().await.unwrap();
    let page = "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>";
    proxy.add_fault("POST", &format!("/classes/{class}"), Action::Respond { status: 502, headers: vec![], body: page.into() }, 1);

    let outcome = tenant.sync_object("farm", &class, r#"{"name":"West"}"#, None).await.unwrap();

    assert_eq!(outcome.status, SyncStatus::Queued);
    let entry = store.outbox_get("default", outcome.outbox_id).unwrap().unwrap();
    assert_eq!(entry.last_error_code, Some(502));
    assert_eq!(entry.attempts, 1);
    flush_all(&tenant).await;
    assert_eq!(server_count(&server_a(), &class), 1);
    assert_eq!(store.outbox_stats("default", "farm").unwrap().pending, 0);
    let statuses = tenant.get_all_clients_status().await.unwrap();
    assert!(statuses[0].last_error.is_none(), "a delivery clears the last error: {:?}", statuses[0].last_error);
}

#[tokio::test]
async fn too_many_requests_honours_retry_after() {
    let (proxy, through) = proxied(&server_a());
    let (tenant, store) = tenant(&offline_config(&through, &server_b()));
    let class = unique_class("Plot");
    tenant.get_all_clients_status().await.unwrap();
    let headers = vec![("Retry-After".to_owned(), "2".to_owned())];
    let body = r#"{"code":155,"error":"Too many requests"}"#;
    proxy.add_fault("POST", &format!("/classes/{class}"), Action::Respond { status: 429, headers, body: body.into() }, 1);

    let before = now_millis();
    let outcome = tenant.sync_object("farm", &class, r#"{"name":"East"}"#, None).await.unwrap();

    assert_eq!(outcome.status, SyncStatus::Queued);
    let entry = store.outbox_get("default", outcome.outbox_id).unwrap().unwrap();
    // At least the server's 2 s; the upper bound leaves room for the call's
    // own requests on a loaded machine.
    let wait = entry.next_attempt_at - before;
    assert!((2000..=3500).contains(&wait), "next attempt after {wait} ms, not the 2 s of Retry-After");
    // Without force, nothing is sent before the server's time, not even a
    // new write.
    let early = tenant.flush(None, 100, false).await.unwrap();
    assert_eq!((early.delivered, early.pending), (0, 1));
    let during = tenant.sync_object("farm", &class, r#"{"name":"During"}"#, None).await.unwrap();
    assert_eq!(during.status, SyncStatus::Queued);
    assert_eq!(server_count(&server_a(), &class), 0);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let late = tenant.flush(None, 100, false).await.unwrap();
    assert_eq!((late.delivered, late.pending), (2, 0));
    assert_eq!(server_count(&server_a(), &class), 2);
}

#[tokio::test]
async fn type_conflict_dead_letters_only_that_entry() {
    let (proxy, through) = proxied(&server_a());
    let (tenant, store) = tenant(&offline_config(&through, &server_b()));
    let class = unique_class("Plot");
    tenant.sync_object("farm", &class, r#"{"area":1.5}"#, None).await.unwrap();

    proxy.set_down(true);
    let mut bad_entry = 0;
    for n in 0..6 {
        let area = if n == 3 { json!("large") } else { json!(n) };
        let outcome = tenant.sync_object("farm", &class, &json!({ "area": area, "n": n }).to_string(), None).await.unwrap();
        if n == 3 {
            bad_entry = outcome.outbox_id;
        }
    }
    proxy.set_down(false);
    let report = flush_all(&tenant).await;

    assert_eq!(report.pending, 0);
    assert_eq!(server_count(&server_a(), &class), 6);
    let stats = store.outbox_stats("default", "farm").unwrap();
    assert_eq!((stats.pending, stats.dead), (0, 1));
    let dead = store.outbox_get("default", bad_entry).unwrap().unwrap();
    assert_eq!(dead.state, EntryState::Dead);
    assert_eq!(dead.last_error_code, Some(111));
    assert_eq!(dead.attempts, 1);
    let statuses = tenant.get_all_clients_status().await.unwrap();
    assert_eq!(statuses[0].dead_letters, 1);
}

#[tokio::test]
async fn rotated_master_key_pauses_then_delivers() {
    let mut old_key = server_a();
    old_key.master_key = "rotated-away-key".to_owned();
    let (tenant, store) = tenant(&offline_config(&old_key, &server_b()));
    let class = unique_class("Plot");

    let outcome = tenant.sync_object("farm", &class, r#"{"name":"Kept"}"#, Some("p-9")).await.unwrap();

    assert_eq!(outcome.status, SyncStatus::Queued);
    let statuses = tenant.get_all_clients_status().await.unwrap();
    assert!(statuses[0].paused.is_some(), "{:?}", statuses[0]);
    assert_eq!(statuses[0].last_error.as_ref().unwrap().kind, ErrorKind::Unauthorized);
    assert_eq!(statuses[0].pending, 1);
    assert!(!format!("{statuses:?}").contains("rotated-away-key"));

    // The operator fixes config.yaml; the same state store is used again.
    let config = parse_config(&offline_config(&server_a(), &server_b()));
    let fixed = agros_sync_host::tenant::Tenant::new("default", &config, store.clone(), runtime()).unwrap();
    let report = flush_all(&fixed).await;

    assert_eq!((report.delivered, report.pending), (1, 0));
    assert_eq!(server_count(&server_a(), &class), 1);
    let statuses = fixed.get_all_clients_status().await.unwrap();
    assert_eq!(statuses[0].paused, None);
}

#[tokio::test]
async fn update_of_object_deleted_meanwhile_is_a_conflict() {
    let (proxy, through) = proxied(&server_a());
    let (tenant, store) = tenant(&offline_config(&through, &server_b()));
    let class = unique_class("Plot");
    let created = tenant.sync_object("farm", &class, r#"{"name":"Old"}"#, Some("p-1")).await.unwrap();
    let object_id = synced_id(&created);

    proxy.set_down(true);
    let queued = tenant.sync_object("farm", &class, r#"{"name":"New"}"#, Some("p-1")).await.unwrap();
    assert_eq!(queued.status, SyncStatus::Queued);
    rest(&server_a(), "DELETE", &format!("/classes/{class}/{object_id}"), None);
    proxy.set_down(false);
    flush_all(&tenant).await;
    let attempts = store.outbox_get("default", queued.outbox_id).unwrap().unwrap().attempts;
    flush_all(&tenant).await;

    assert_eq!(server_count(&server_a(), &class), 0, "the object must not be re-created");
    let dead = store.outbox_get("default", queued.outbox_id).unwrap().unwrap();
    assert_eq!(dead.state, EntryState::Dead);
    assert_eq!(dead.last_error_code, Some(101));
    assert!(dead.last_error.unwrap().contains("conflict"));
    // One failed attempt while the server was down, then the 101.
    assert_eq!(attempts, 2);
    assert_eq!(dead.attempts, attempts, "a conflict is not retried");
}

/// The create fails three times; the updates made meanwhile wait behind it
/// (merged into one entry) and reach the server only after it.
#[tokio::test]
async fn updates_wait_for_their_create() {
    let (proxy, through) = proxied(&server_a());
    // A long backoff: only the forced flushes try the create again.
    let (tenant, store) = tenant(&offline_config_with(&through, &server_b(), 60_000));
    let class = unique_class("Plot");
    tenant.get_all_clients_status().await.unwrap();
    let unavailable = Action::Respond { status: 503, headers: vec![], body: "<html>503 Service Unavailable</html>".into() };
    proxy.add_fault("POST", &format!("/classes/{class}"), unavailable, 100);

    for version in 1..=4 {
        let mut data = json!({ "version": version });
        data[format!("field{version}")] = json!(true);
        tenant.sync_object("farm", &class, &data.to_string(), Some("p-1")).await.unwrap();
        tenant.flush(None, 100, true).await.unwrap();
    }
    let entries = store.outbox_list("default", Some("farm"), Some(EntryState::Pending), 10).unwrap();
    let operations: Vec<&str> = entries.iter().map(|e| e.operation.as_str()).collect();
    assert_eq!(operations, ["create", "update"]);
    // The first write's own attempt, then one per forced flush.
    assert_eq!(entries[0].attempts, 5);
    assert_eq!(entries[1].attempts, 0);
    proxy.clear_faults();
    flush_all(&tenant).await;

    let objects = server_objects(&server_a(), &class);
    assert_eq!(objects.len(), 1);
    assert_eq!(objects[0]["version"], json!(4));
    for version in 1..=4 {
        assert_eq!(objects[0][format!("field{version}")], json!(true));
    }
    assert_eq!(store.outbox_stats("default", "farm").unwrap().pending, 0);
}

#[tokio::test]
async fn queued_updates_are_coalesced() {
    let (proxy, through) = proxied(&server_a());
    let (tenant, store) = tenant(&offline_config(&through, &server_b()));
    let class = unique_class("Plot");
    let created = tenant.sync_object("farm", &class, r#"{"visits":0}"#, Some("p-1")).await.unwrap();

    proxy.set_down(true);
    let first = tenant.sync_object("farm", &class, r#"{"visits":1}"#, Some("p-1")).await.unwrap();
    let forwarded = proxy.forwarded();
    let second = tenant.sync_object("farm", &class, r#"{"visits":2,"note":"dry"}"#, Some("p-1")).await.unwrap();

    // The first update's attempt failed, so the second is its own entry.
    assert_ne!(first.outbox_id, second.outbox_id);
    let third = tenant.sync_object("farm", &class, r#"{"visits":3}"#, Some("p-1")).await.unwrap();
    assert_eq!(third.outbox_id, second.outbox_id, "an untried update absorbs the next one");
    assert_eq!(proxy.forwarded(), forwarded, "nothing is sent while the server is down");
    proxy.set_down(false);
    flush_all(&tenant).await;

    let stored = rest(&server_a(), "GET", &format!("/classes/{class}/{}", synced_id(&created)), None);
    assert_eq!(stored["visits"], json!(3));
    assert_eq!(stored["note"], json!("dry"));
    assert_eq!(store.outbox_stats("default", "farm").unwrap().pending, 0);
}

#[tokio::test]
async fn server_ids_lost_create_found_by_sync_key() {
    let (proxy, through) = proxied(&server_b());
    let (tenant, store) = tenant(&offline_config(&server_a(), &through));
    let class = unique_class("Visit");
    tenant.get_all_clients_status().await.unwrap();
    proxy.add_fault("POST", &format!("/classes/{class}"), Action::DropResponse, 1);

    let outcome = tenant.sync_object("market", &class, r#"{"note":"first"}"#, Some("v-1")).await.unwrap();
    assert_eq!(outcome.status, SyncStatus::Queued);
    assert_eq!(outcome.object_id, None, "the server picks the id");
    flush_all(&tenant).await;

    let objects = server_objects(&server_b(), &class);
    assert_eq!(objects.len(), 1);
    let binding = store.id_get("default", "market", &class, "v-1").unwrap().unwrap();
    assert!(binding.confirmed);
    assert_eq!(objects[0]["objectId"], json!(binding.object_id));

    let updated = tenant.sync_object("market", &class, r#"{"note":"second"}"#, Some("v-1")).await.unwrap();
    assert_eq!(synced_id(&updated), binding.object_id);
    let objects = server_objects(&server_b(), &class);
    assert_eq!(objects.len(), 1);
    assert_eq!(objects[0]["note"], json!("second"));
}

#[tokio::test]
async fn pointer_to_record_created_offline() {
    let (proxy, through) = proxied(&server_b());
    let (tenant, _) = tenant(&offline_config(&server_a(), &through));
    let farmers = unique_class("Farmer");
    let plots = unique_class("Plot");
    tenant.get_all_clients_status().await.unwrap();

    proxy.set_down(true);
    tenant.sync_object("market", &farmers, r#"{"name":"Rosa"}"#, Some("f-1")).await.unwrap();
    let data = json!({"name": "Ridge", "owner": {"__type": "Pointer", "className": farmers, "localId": "f-1"}}).to_string();
    tenant.sync_object("market", &plots, &data, Some("p-1")).await.unwrap();
    proxy.set_down(false);
    for _ in 0..20 {
        if flush_all(&tenant).await.pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let farmer = &server_objects(&server_b(), &farmers)[0];
    let plot = &server_objects(&server_b(), &plots)[0];
    assert_eq!(plot["owner"], json!({"__type": "Pointer", "className": farmers, "objectId": farmer["objectId"]}));
}

/// A long backoff does not hold writes once the server is back: the next
/// write probes `/health` and sends.
#[tokio::test]
async fn server_back_during_backoff_is_used() {
    let (proxy, through) = proxied(&server_a());
    let (tenant, store) = tenant(&offline_config_with(&through, &server_b(), 60_000));
    let class = unique_class("Plot");
    tenant.get_all_clients_status().await.unwrap();

    proxy.set_down(true);
    let queued = tenant.sync_object("farm", &class, r#"{"n":1}"#, None).await.unwrap();
    assert_eq!(queued.status, SyncStatus::Queued);
    let statuses = tenant.get_all_clients_status().await.unwrap();
    assert!(statuses[0].next_retry_at.unwrap() > now_millis() + 20_000, "{:?}", statuses[0]);
    proxy.set_down(false);

    let second = tenant.sync_object("farm", &class, r#"{"n":2}"#, None).await.unwrap();

    assert_eq!(second.status, SyncStatus::Synced);
    assert_eq!(server_count(&server_a(), &class), 1, "the second write went out at once");
    assert_eq!(store.outbox_stats("default", "farm").unwrap().pending, 1, "the first waits for its own retry");
    flush_all(&tenant).await;
    assert_eq!(numbers(&server_objects(&server_a(), &class), "n"), vec![1, 2]);
}

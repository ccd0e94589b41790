//! `get-all-clients-status` and the `app_config` rows.

use agros_sync_host::bindings::ErrorKind;
use agros_sync_tests::*;

#[tokio::test]
async fn status_lists_every_database() {
    let config = format!("{}  archive:\n    sync: false\n", standard_config(""));
    let (tenant, _) = tenant(&config);

    let statuses = tenant.get_all_clients_status().await.unwrap();

    let keys: Vec<&str> = statuses.iter().map(|s| s.database_key.as_str()).collect();
    assert_eq!(keys, ["farm", "market", "archive"]);
    let (farm, market, archive) = (&statuses[0], &statuses[1], &statuses[2]);
    assert_eq!(farm.server_url, server_a().url);
    assert_eq!(farm.app_id, server_a().app_id);
    assert!(farm.reachable);
    assert_eq!(farm.server_version.as_deref(), Some("9.10.0"));
    assert_eq!(farm.custom_object_ids, Some(true));
    assert!(farm.last_error.is_none());
    assert_eq!(market.custom_object_ids, Some(false));
    assert!(market.reachable);
    assert!(!archive.sync_enabled);
    assert!(!archive.reachable);
}

#[tokio::test]
async fn status_never_shows_keys() {
    let (tenant, _) = tenant(&standard_config(""));
    let statuses = tenant.get_all_clients_status().await.unwrap();
    let text = format!("{statuses:?}");
    for secret in [server_a().master_key, server_a().rest_key, server_b().master_key, server_b().rest_key] {
        assert!(!text.contains(&secret), "status shows a key");
    }
}

#[tokio::test]
async fn unreachable_server_is_reported() {
    // Nothing listens on the discard port of loopback.
    let mut down = server_a();
    down.url = "http://127.0.0.1:9/parse".to_owned();
    let (tenant, _) = tenant(&format!("databases:\n{}", database_yaml("offline", &down)));

    let statuses = tenant.get_all_clients_status().await.unwrap();

    assert!(!statuses[0].reachable);
    let error = statuses[0].last_error.as_ref().expect("an error is reported");
    assert_eq!(error.kind, ErrorKind::ServerUnavailable);
}

#[tokio::test]
async fn wrong_master_key_is_unauthorized_without_the_key() {
    let mut wrong = server_a();
    wrong.master_key = "wrong-master-key-123".to_owned();
    let (tenant, _) = tenant(&format!("databases:\n{}", database_yaml("farm", &wrong)));

    let statuses = tenant.get_all_clients_status().await.unwrap();

    let error = statuses[0].last_error.as_ref().expect("an error is reported");
    assert_eq!(error.kind, ErrorKind::Unauthorized);
    assert!(!format!("{statuses:?}").contains("wrong-master-key-123"));
}

#[tokio::test]
async fn app_config_rows_written_at_start() {
    let config = format!("{}  archive:\n    sync: false\n", standard_config(""));
    let (tenant, store) = tenant(&config);
    tenant.get_all_clients_status().await.unwrap();

    let rows = store.app_config_list("default").unwrap();
    let get = |key: &str| rows.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    assert_eq!(get("parser-farm-host"), Some(server_a().url));
    assert_eq!(get("parser-farm-app-id"), Some(server_a().app_id));
    assert_eq!(get("parser-market-host"), Some(server_b().url));
    assert_eq!(get("parser-market-app-id"), Some(server_b().app_id));
    assert_eq!(get("parser-farm-server-version").as_deref(), Some("9.10.0"));
    assert_eq!(get("parser-farm-custom-object-ids").as_deref(), Some("true"));
    assert_eq!(get("parser-market-custom-object-ids").as_deref(), Some("false"));
    assert_eq!(get("parser-archive-host"), None);
}

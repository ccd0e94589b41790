//! Several tenants in one configuration: each reaches only its own Parse
//! servers, keeps its own state, and the CLI picks one with `--tenant`.

use agros_sync_host::bindings::{ErrorKind, SyncStatus};
use agros_sync_host::state::{SqliteStore, StateLocation};
use agros_sync_host::tenant::Tenants;
use agros_sync_tests::*;
use serde_json::json;

/// Indents a `databases:` entry from `database_yaml` to sit under
/// `tenants.<name>.databases`.
fn under_tenant(entry: &str) -> String {
    entry.lines().map(|line| format!("    {line}\n")).collect()
}

/// Tenant `north` syncs `farm` to app A; tenant `south` syncs its own `farm`
/// to app B and has a `ledger` database with sync off.
fn two_tenants_yaml() -> String {
    format!(
        "tenants:\n  north:\n    databases:\n{}  south:\n    databases:\n{}      ledger:\n        sync: false\n",
        under_tenant(&database_yaml("farm", &server_a())),
        under_tenant(&database_yaml("farm", &server_b())),
    )
}

fn open_tenants() -> (Tenants, SqliteStore) {
    let config = parse_config(&two_tenants_yaml());
    let store = SqliteStore::open(&StateLocation::SqliteMemory).unwrap();
    let tenants = Tenants::new(&config, store.clone(), runtime()).unwrap();
    (tenants, store)
}

#[tokio::test]
async fn same_database_key_reaches_each_tenants_server() {
    let (tenants, _store) = open_tenants();
    let class = unique_class("TenantPlot");

    let north = tenants.get("north").unwrap();
    let south = tenants.get("south").unwrap();
    let from_north = north.sync_object("farm", &class, r#"{"owner":"north"}"#, Some("plot-1")).await.unwrap();
    let from_south = south.sync_object("farm", &class, r#"{"owner":"south"}"#, Some("plot-1")).await.unwrap();

    assert_eq!(from_north.status, SyncStatus::Synced);
    assert_eq!(from_south.status, SyncStatus::Synced);
    let on_a = server_objects(&server_a(), &class);
    let on_b = server_objects(&server_b(), &class);
    assert_eq!(on_a.len(), 1);
    assert_eq!(on_b.len(), 1);
    assert_eq!(on_a[0]["owner"], json!("north"));
    assert_eq!(on_b[0]["owner"], json!("south"));
}

#[tokio::test]
async fn tenant_state_is_kept_apart() {
    let (tenants, store) = open_tenants();
    let class = unique_class("TenantState");
    let north = tenants.get("north").unwrap();
    north.sync_object("farm", &class, r#"{"n":1}"#, Some("shared-local-id")).await.unwrap();

    // The same local id in the other tenant is a different record.
    assert!(store.id_get("north", "farm", &class, "shared-local-id").unwrap().is_some());
    assert!(store.id_get("south", "farm", &class, "shared-local-id").unwrap().is_none());

    let north_config = store.app_config_list("north").unwrap();
    let south_config = store.app_config_list("south").unwrap();
    assert!(north_config.contains(&("parser-farm-host".to_owned(), server_a().url.clone())), "{north_config:?}");
    assert!(south_config.contains(&("parser-farm-host".to_owned(), server_b().url.clone())), "{south_config:?}");
    assert!(north_config.iter().all(|(_, value)| !value.contains(&server_b().url)));
    assert!(south_config.iter().all(|(key, _)| !key.starts_with("parser-ledger-")), "sync: false gets no client keys");

    assert_eq!(store.outbox_list("north", None, None, 100).unwrap().len(), 0, "the delivered write left the outbox");
    assert_eq!(store.outbox_list("south", None, None, 100).unwrap().len(), 0);
}

#[tokio::test]
async fn status_lists_only_the_tenants_databases() {
    let (tenants, _store) = open_tenants();

    let (north, north_plugin) = tenants.get("north").unwrap().status().await.unwrap();
    let (south, _) = tenants.get("south").unwrap().status().await.unwrap();

    let keys = |statuses: &[agros_sync_host::bindings::ClientStatus]| statuses.iter().map(|s| s.database_key.clone()).collect::<Vec<_>>();
    assert_eq!(keys(&north), ["farm"]);
    assert_eq!(keys(&south), ["farm", "ledger"]);
    assert_eq!(north[0].server_url, server_a().url);
    assert_eq!(south[0].server_url, server_b().url);
    assert_eq!(north_plugin.hash, tenants.runtime.current().hash);
    assert_eq!(north_plugin.version, "0.1.0");
}

#[tokio::test]
async fn unknown_database_in_other_tenant_is_rejected() {
    let (tenants, _store) = open_tenants();
    let north = tenants.get("north").unwrap();

    let error = north.sync_object("ledger", "Entry", "{}", None).await.unwrap_err();

    let plugin_error = agros_sync_host::tenant::plugin_error(&error).expect("a typed plugin error");
    assert_eq!(plugin_error.kind, ErrorKind::UnknownDatabase);
    assert!(tenants.get("west").is_err());
}

#[test]
fn cli_picks_tenant_with_flag() {
    let dir = cli_config_dir("tenants", &two_tenants_yaml());
    let class = unique_class("CliTenant");

    let synced = run_cli(&dir, "C", &["--json", "--tenant", "south", "sync", "farm", &class, r#"{"n":2}"#]);
    assert!(synced.status.success(), "{}", String::from_utf8_lossy(&synced.stderr));
    assert_eq!(stdout_json(&synced)["status"], json!("synced"));
    assert_eq!(server_count(&server_b(), &class), 1);
    assert_eq!(server_count(&server_a(), &class), 0);

    let status = stdout_json(&run_cli(&dir, "C", &["--json", "--tenant", "north", "status"]));
    assert_eq!(status["tenant"], json!("north"));
    assert_eq!(status["clients"].as_array().unwrap().len(), 1);
    assert_eq!(status["clients"][0]["server_url"], json!(server_a().url));
    let text = status.to_string();
    assert!(!text.contains(&server_b().url), "north's status shows south's server: {text}");
    assert!(!text.contains(&server_a().master_key));

    let app_config = stdout_json(&run_cli(&dir, "C", &["--json", "--tenant", "south", "app-config"]));
    assert_eq!(app_config["parser-farm-host"], json!(server_b().url));
    assert_eq!(app_config["parser-farm-app-id"], json!(server_b().app_id));
}

#[test]
fn cli_needs_tenant_when_several() {
    let dir = cli_config_dir("tenant-required", &two_tenants_yaml());

    let missing = run_cli(&dir, "C", &["--json", "status"]);
    assert_eq!(missing.status.code(), Some(2));
    assert_eq!(stdout_json(&missing)["error"]["code"], json!("tenant-required"));
    let spanish = run_cli(&dir, "es_ES.UTF-8", &["--json", "status"]);
    let message = stdout_json(&spanish)["error"]["message"].as_str().unwrap().to_owned();
    assert!(message.ends_with("define varios tenants (north, south); elija uno con --tenant o AGROS_SYNC_TENANT"), "{message}");

    let unknown = run_cli(&dir, "es_ES.UTF-8", &["--tenant", "west", "status"]);
    assert_eq!(unknown.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(stderr.contains("el tenant «west» no está en"), "{stderr}");
    assert!(stderr.contains("tenants configurados: north, south"), "{stderr}");
}

#[test]
fn cli_logs_name_only_the_own_tenant() {
    let dir = cli_config_dir("tenant-logs", &two_tenants_yaml());
    let class = unique_class("LogTenant");

    let output = std::process::Command::new(target_dir().join("release/agros-sync"))
        .arg("--config")
        .arg(dir.join("config.yaml"))
        .args(["--tenant", "north", "sync", "farm", &class, r#"{"n":3}"#])
        .env("AGROS_SYNC_LOG", "debug")
        .env("LANG", "C")
        .output()
        .unwrap();

    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let logs = String::from_utf8_lossy(&output.stderr);
    assert!(logs.contains("north"), "the debug log names the tenant: {logs}");
    assert!(!logs.contains("south"), "{logs}");
    assert!(!logs.contains(&server_b().url), "{logs}");
    for secret in [server_a().master_key, server_a().rest_key, server_b().master_key, server_b().rest_key] {
        assert!(!logs.contains(&secret), "a key is in the log");
    }
}

#[test]
fn renamed_tenant_records_are_reported() {
    let dir = cli_config_dir("tenant-rename", &format!("databases:\n{}", database_yaml("farm", &server_a())));
    let class = unique_class("RenamedTenant");
    let synced = run_cli(&dir, "C", &["sync", "farm", &class, r#"{"n":1}"#, "--local-id", "m1"]);
    assert!(synced.status.success(), "{}", String::from_utf8_lossy(&synced.stderr));

    // The same state file, now with the database under a tenant `north`.
    let renamed = std::fs::read_to_string(dir.join("config.yaml"))
        .unwrap()
        .replace("databases:\n", "tenants:\n  north:\n    databases:\n")
        .replace("\n  farm:", "\n      farm:")
        .replace("\n    sync:", "\n        sync:")
        .replace("\n    parse:", "\n        parse:")
        .replace("\n      server_url", "\n          server_url")
        .replace("\n      app_id", "\n          app_id")
        .replace("\n      master_key", "\n          master_key")
        .replace("\n      rest_api_key", "\n          rest_api_key");
    std::fs::write(dir.join("config.yaml"), renamed).unwrap();
    let status = run_cli(&dir, "C", &["status"]);

    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let stderr = String::from_utf8_lossy(&status.stderr);
    assert!(stderr.contains("holds records of tenant \"default\""), "{stderr}");
    assert!(stderr.contains("local_ids=1"), "{stderr}");
    assert!(!stderr.contains("tenant \"north\", which"), "{stderr}");
}

#[test]
fn serve_flushes_every_tenant() {
    let (proxy_a, through_a) = proxied(&server_a());
    let (proxy_b, through_b) = proxied(&server_b());
    let yaml = format!(
        "tenants:\n  north:\n    databases:\n{}  south:\n    databases:\n{}",
        under_tenant(&database_yaml("farm", &through_a)),
        under_tenant(&database_yaml("farm", &through_b)),
    );
    let dir = cli_config_dir("tenant-serve", &yaml);
    let class = unique_class("ServeTenants");

    proxy_a.set_down(true);
    proxy_b.set_down(true);
    for tenant in ["north", "south"] {
        let queued = stdout_json(&run_cli(&dir, "C", &["--json", "--tenant", tenant, "sync", "farm", &class, r#"{"n":1}"#]));
        assert_eq!(queued["status"], json!("queued"), "{tenant}");
    }
    proxy_a.set_down(false);
    proxy_b.set_down(false);
    let mut serve = std::process::Command::new(target_dir().join("release/agros-sync"))
        .arg("--config")
        .arg(dir.join("config.yaml"))
        .args(["serve", "--listen", "127.0.0.1:0", "--interval", "100"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();

    let started = std::time::Instant::now();
    let delivered = || server_count(&server_a(), &class) + server_count(&server_b(), &class);
    while delivered() < 2 && started.elapsed() < std::time::Duration::from_secs(60) {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    serve.kill().unwrap();
    serve.wait().unwrap();

    assert_eq!(server_count(&server_a(), &class), 1, "north's write reached app A");
    assert_eq!(server_count(&server_b(), &class), 1, "south's write reached app B");
}

//! The `agros-sync` binary: output formats, exit codes and language.

use std::path::PathBuf;
use std::process::Output;

use agros_sync_tests::*;
use serde_json::json;

/// Creates a CLI directory for apps A and B plus a database with `sync: false`.
fn config_dir(name: &str) -> PathBuf {
    cli_config_dir(name, &standard_config("  archive:\n    sync: false\n"))
}

fn run(dir: &PathBuf, lang: &str, args: &[&str]) -> Output {
    run_cli(dir, lang, args)
}

#[test]
fn json_status_has_every_database_and_no_key() {
    let dir = config_dir("status");
    let output = run(&dir, "C", &["--json", "status"]);

    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    for secret in [server_a().master_key, server_a().rest_key, server_b().master_key, server_b().rest_key] {
        assert!(!text.contains(&secret));
    }
    let whole = stdout_json(&output);
    assert_eq!(whole["tenant"], json!("default"));
    assert_eq!(whole["plugin"]["version"], json!("0.1.0"));
    assert_eq!(whole["plugin"]["hash"].as_str().map(str::len), Some(64));
    let status = whole["clients"].clone();
    let databases: Vec<&str> = status.as_array().unwrap().iter().map(|s| s["database"].as_str().unwrap()).collect();
    assert_eq!(databases, ["farm", "market", "archive"]);
    assert_eq!(status[0]["server_url"], json!(server_a().url));
    assert_eq!(status[0]["app_id"], json!(server_a().app_id));
    assert_eq!(status[0]["reachable"], json!(true));
    assert_eq!(status[0]["server_version"], json!("9.10.0"));
    assert_eq!(status[2]["sync_enabled"], json!(false));
}

#[test]
fn sync_then_query_json() {
    let dir = config_dir("query");
    let class = unique_class("CliPlot");

    let synced = run(&dir, "C", &["--json", "sync", "farm", &class, r#"{"name":"Loma"}"#, "--local-id", "l-1"]);
    assert!(synced.status.success(), "{}", String::from_utf8_lossy(&synced.stderr));
    let outcome = stdout_json(&synced);
    assert_eq!(outcome["status"], json!("synced"));
    assert_eq!(outcome["created"], json!(true));

    // The id map is in the state file, so a second process updates.
    let again = run(&dir, "C", &["--json", "sync", "farm", &class, r#"{"name":"Loma Alta"}"#, "--local-id", "l-1"]);
    assert_eq!(stdout_json(&again)["object_id"], outcome["object_id"]);

    let queried = run(&dir, "C", &["--json", "query", "farm", &class]);
    let objects = stdout_json(&queried);
    assert_eq!(objects.as_array().unwrap().len(), 1);
    assert_eq!(objects[0]["name"], json!("Loma Alta"));
}

#[test]
fn input_error_exits_2_with_code() {
    let dir = config_dir("errors");
    let output = run(&dir, "C", &["--json", "sync", "nowhere", "Plot", "{}"]);

    assert_eq!(output.status.code(), Some(2));
    let error = stdout_json(&output);
    assert_eq!(error["error"]["code"], json!("unknown-database"));
    assert_eq!(error["error"]["subject"], json!("nowhere"));
}

#[test]
fn spanish_locale_spanish_message_same_code() {
    let dir = config_dir("spanish");
    let human = run(&dir, "es_ES.UTF-8", &["sync", "nowhere", "Plot", "{}"]);
    let stderr = String::from_utf8_lossy(&human.stderr);
    assert_eq!(stderr.trim(), "error: base de datos desconocida «nowhere»; use una clave de `databases:` en config.yaml");

    let json_output = run(&dir, "es_ES.UTF-8", &["--json", "sync", "nowhere", "Plot", "{}"]);
    assert_eq!(stdout_json(&json_output)["error"]["code"], json!("unknown-database"));
}

#[test]
fn broken_config_names_the_key() {
    let dir = config_dir("broken");
    let text = std::fs::read_to_string(dir.join("config.yaml")).unwrap().replacen("app_id:", "app_idd:", 1);
    std::fs::write(dir.join("config.yaml"), text).unwrap();

    let output = run(&dir, "C", &["status"]);

    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("databases.farm.parse"), "{stderr}");
    assert!(stderr.contains("app_idd"), "{stderr}");
}

#[test]
fn import_csv_twice_updates() {
    let dir = config_dir("import");
    let class = unique_class("CliWeather");
    let csv = dir.join("weather.csv");
    std::fs::write(&csv, "location,date,temp_max,weather\nSeattle,2012-01-01,12.8,drizzle\nNew York,2012-01-01,5.6,\n").unwrap();
    let args = ["--json", "import", "farm", &class, csv.to_str().unwrap(), "--local-id-fields", "location,date", "--date-fields", "date"];

    let first = stdout_json(&run(&dir, "C", &args));
    let second = stdout_json(&run(&dir, "C", &args));

    assert_eq!((first["created"].clone(), first["updated"].clone()), (json!(2), json!(0)));
    assert_eq!((second["created"].clone(), second["updated"].clone()), (json!(0), json!(2)));
    let objects = server_objects(&server_a(), &class);
    assert_eq!(objects.len(), 2);
    let seattle = objects.iter().find(|o| o["location"] == json!("Seattle")).unwrap();
    assert_eq!(seattle["date"], json!({"__type": "Date", "iso": "2012-01-01T00:00:00.000Z"}));
    assert_eq!(seattle["temp_max"], json!(12.8));
    let new_york = objects.iter().find(|o| o["location"] == json!("New York")).unwrap();
    assert!(new_york.get("weather").is_none());
}

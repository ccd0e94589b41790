//! The operator surface of the outbox: `status`, `flush`, `outbox list |
//! show | retry | discard` and `serve`, through the binary.

use std::process::Command;
use std::time::{Duration, Instant};

use agros_sync_tests::*;
use serde_json::json;

#[test]
fn dead_letter_listed_shown_retried_discarded() {
    let (proxy, through) = proxied(&server_a());
    let dir = cli_config_dir("outbox", &format!("databases:\n{}", database_yaml("farm", &through)));
    let class = unique_class("CliPlot");
    let synced = run_cli(&dir, "C", &["--json", "sync", "farm", &class, r#"{"area":1.5}"#]);
    assert_eq!(stdout_json(&synced)["status"], json!("synced"));

    proxy.set_down(true);
    let good = stdout_json(&run_cli(&dir, "C", &["--json", "sync", "farm", &class, r#"{"area":2}"#]));
    let bad = stdout_json(&run_cli(&dir, "C", &["--json", "sync", "farm", &class, r#"{"area":"large"}"#]));
    assert_eq!((good["status"].clone(), bad["status"].clone()), (json!("queued"), json!("queued")));
    let status = stdout_json(&run_cli(&dir, "C", &["--json", "status"]))["clients"].clone();
    assert_eq!(status[0]["pending"], json!(2));
    assert_eq!(status[0]["reachable"], json!(false));
    assert_eq!(status[0]["last_error"]["code"], json!("server-unavailable"));
    assert!(status[0]["next_retry_at"].is_u64(), "{status}");
    assert!(status[0]["oldest_pending_at"].is_u64(), "{status}");

    proxy.set_down(false);
    let flushed = run_cli(&dir, "C", &["--json", "flush"]);
    assert_eq!(flushed.status.code(), Some(1), "a dead letter makes flush fail");
    let report: serde_json::Value = serde_json::from_str(String::from_utf8_lossy(&flushed.stdout).lines().next().unwrap()).unwrap();
    assert_eq!(report, json!({"delivered": 1, "retried": 0, "dead_lettered": 1, "pending": 0}));

    let dead = stdout_json(&run_cli(&dir, "C", &["--json", "outbox", "list", "--dead"]));
    assert_eq!(dead.as_array().unwrap().len(), 1);
    assert_eq!(dead[0]["id"], bad["outbox_id"]);
    assert_eq!(dead[0]["last_error_code"], json!(111));
    let id = dead[0]["id"].to_string();
    let shown = stdout_json(&run_cli(&dir, "C", &["--json", "outbox", "show", &id]));
    assert_eq!(shown["payload"], json!({"area": "large"}));
    assert_eq!(shown["state"], json!("dead"));

    let retried = run_cli(&dir, "C", &["--json", "outbox", "retry", &id]);
    assert!(retried.status.success());
    let pending = stdout_json(&run_cli(&dir, "C", &["--json", "outbox", "list", "--pending"]));
    assert_eq!(pending[0]["id"].to_string(), id);
    assert_eq!(run_cli(&dir, "C", &["--json", "flush"]).status.code(), Some(1));

    let discarded = run_cli(&dir, "C", &["--json", "outbox", "discard", &id]);
    assert!(discarded.status.success());
    assert_eq!(stdout_json(&run_cli(&dir, "C", &["--json", "outbox", "list"])), json!([]));
    let status = stdout_json(&run_cli(&dir, "C", &["--json", "status"]))["clients"].clone();
    assert_eq!((status[0]["pending"].clone(), status[0]["dead_letters"].clone()), (json!(0), json!(0)));
    assert_eq!(server_count(&server_a(), &class), 2);

    let missing = run_cli(&dir, "C", &["--json", "outbox", "show", "999999"]);
    assert_eq!(stdout_json(&missing)["error"]["code"], json!("entry-not-found"));
}

#[test]
fn serve_delivers_queued_writes_and_stops_on_sigterm() {
    let (proxy, through) = proxied(&server_a());
    let dir = cli_config_dir("serve", &format!("databases:\n{}", database_yaml("farm", &through)));
    let class = unique_class("CliServe");

    proxy.set_down(true);
    for n in 0..3 {
        let queued = stdout_json(&run_cli(&dir, "C", &["--json", "sync", "farm", &class, &json!({ "n": n }).to_string()]));
        assert_eq!(queued["status"], json!("queued"));
    }
    proxy.set_down(false);
    let mut serve = Command::new(target_dir().join("release/agros-sync"))
        .arg("--config")
        .arg(dir.join("config.yaml"))
        .args(["serve", "--listen", "127.0.0.1:0", "--interval", "100"])
        .spawn()
        .unwrap();

    let started = Instant::now();
    while server_count(&server_a(), &class) < 3 && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let terminated = Command::new("kill").args(["-TERM", &serve.id().to_string()]).status().unwrap();
    assert!(terminated.success());
    let exit = serve.wait().unwrap();

    assert_eq!(server_count(&server_a(), &class), 3);
    assert!(exit.success(), "serve exits cleanly on SIGTERM: {exit:?}");
    let status = stdout_json(&run_cli(&dir, "C", &["--json", "status"]))["clients"].clone();
    assert_eq!(status[0]["pending"], json!(0));
    assert!(status[0]["last_success_at"].is_u64());
}

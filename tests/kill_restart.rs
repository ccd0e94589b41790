//! The host process is killed with SIGKILL in the middle of a flush of 2,000
//! queued writes and started again: every object must arrive exactly once.
//! Ten repetitions, each with its own class and kill time.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use agros_sync_host::config::Config;
use agros_sync_host::state::{SqliteStore, StateLocation};
use agros_sync_host::tenant::Tenant;
use agros_sync_tests::*;
use serde_json::json;

const WRITES: i64 = 2000;
const REPETITIONS: u64 = 10;

fn write_config(dir: &Path, farm: &TestServer) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let text = format!(
        "databases:\n{}state:\n  url: sqlite://./state.db\nplugin:\n  path: {}\n",
        database_yaml("farm", farm),
        plugin_path().display()
    );
    let path = dir.join("config.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn flush_command(config: &Path) -> Command {
    let mut command = Command::new(target_dir().join("release/agros-sync"));
    command.arg("--config").arg(config).arg("--json").arg("flush").stdout(Stdio::null()).stderr(Stdio::null());
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_flush_loses_and_duplicates_nothing() {
    let (proxy, through) = proxied(&server_a());

    for repetition in 0..REPETITIONS {
        let dir = std::env::temp_dir().join(format!("agros-sync-kill-{}-{repetition}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let config_path = write_config(&dir, &through);
        let class = unique_class("Killed");

        // Queue the writes while the server is unreachable.
        proxy.set_down(true);
        {
            let config = Config::load(&config_path).unwrap();
            let store = SqliteStore::open(&StateLocation::SqliteFile(dir.join("state.db"))).unwrap();
            let tenant = Tenant::new("default", &config, store.clone(), runtime()).unwrap();
            for n in 0..WRITES {
                tenant.sync_object("farm", &class, &json!({ "n": n }).to_string(), Some(&format!("k-{n}"))).await.unwrap();
            }
            assert_eq!(store.outbox_stats("default", "farm").unwrap().pending, WRITES as u32);
        }
        proxy.set_down(false);

        // Kill the flush once the server has a repetition-specific share of
        // the objects (100, 280, … 1720), so every kill lands mid-flush.
        let kill_at = 100 + repetition as u64 * 180;
        let mut child = flush_command(&config_path).spawn().unwrap();
        for _ in 0..1500 {
            if server_count(&server_a(), &class) >= kill_at || child.try_wait().unwrap().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let arrived_before_restart = server_count(&server_a(), &class);

        let status = flush_command(&config_path).status().unwrap();
        assert!(status.success(), "repetition {repetition}: the restarted flush failed");

        let mut numbers: Vec<i64> = server_objects(&server_a(), &class).iter().map(|o| o["n"].as_i64().unwrap()).collect();
        numbers.sort();
        assert_eq!(numbers.len() as i64, WRITES, "repetition {repetition}: {arrived_before_restart} had arrived at the kill");
        assert_eq!(numbers, (0..WRITES).collect::<Vec<i64>>(), "repetition {repetition}");
        let store = SqliteStore::open(&StateLocation::SqliteFile(dir.join("state.db"))).unwrap();
        let stats = store.outbox_stats("default", "farm").unwrap();
        assert_eq!((stats.pending, stats.dead), (0, 0), "repetition {repetition}");
        eprintln!("repetition {repetition}: killed with {arrived_before_restart} of {WRITES} delivered; {WRITES} arrived once each after restart");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! Replacing the plugin file while tenants write through it: each reload
//! swaps the version atomically, a broken file leaves the running version
//! serving, and no write is lost or stored twice.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agros_sync_host::bindings::SyncStatus;
use agros_sync_host::engine::{sha256_hex, PluginRuntime, ReloadOutcome, RuntimeOptions};
use agros_sync_host::state::{SqliteStore, StateLocation};
use agros_sync_host::tenant::{Tenant, Tenants};
use agros_sync_tests::*;
use serde_json::json;

/// Valid plugin files swapped in, one after another.
const SWAPS: u32 = 20;
/// Tasks writing at the same time, spread over the tenants.
const WORKERS: usize = 6;
const TENANTS: [&str; 3] = ["t0", "t1", "t2"];
/// Name of the custom section that makes each variant's hash differ.
const VARIANT_SECTION: &str = "agros-sync-test-variant";

/// The local ids one worker wrote, by outcome.
#[derive(Debug, Default)]
struct Written {
    synced: Vec<String>,
    queued: Vec<String>,
    failures: Vec<String>,
}

/// Writes `bytes` to a temporary file next to `path` and renames it into
/// place, so a reload never reads a half-written file.
fn replace_file(path: &Path, bytes: &[u8]) {
    let partial = path.with_extension("partial");
    std::fs::write(&partial, bytes).expect("the temporary plugin file is written");
    std::fs::rename(&partial, path).expect("the plugin file is replaced");
}

/// Syncs objects with unique local ids on `tenant` until `stop` is set, and
/// counts every finished call in `calls`.
async fn write_until(tenant: Arc<Tenant>, worker: usize, class: String, stop: Arc<AtomicBool>, calls: Arc<AtomicU64>) -> Written {
    let mut written = Written::default();
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let local_id = format!("w{worker}-{n}");
        let data = json!({ "key": local_id, "worker": worker }).to_string();
        match tenant.sync_object("farm", &class, &data, Some(&local_id)).await {
            Ok(outcome) if outcome.status == SyncStatus::Synced => written.synced.push(local_id),
            Ok(_) => written.queued.push(local_id),
            Err(error) => written.failures.push(format!("{local_id}: {error}")),
        }
        calls.fetch_add(1, Ordering::SeqCst);
    }
    written
}

/// Waits until `count` more calls have finished, so that calls run on every
/// version that serves.
async fn wait_for_calls(calls: &AtomicU64, count: u64) {
    let target = calls.load(Ordering::SeqCst) + count;
    while calls.load(Ordering::SeqCst) < target {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Reads the `key` field of every object of `class_name` on app A.
fn stored_keys(class_name: &str) -> Vec<String> {
    let answer = rest(&server_a(), "GET", &format!("/classes/{class_name}?keys=key&limit=1000000"), None);
    let objects = answer["results"].as_array().expect("Parse returns results");
    objects.iter().map(|object| object["key"].as_str().expect("every object has a key").to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn swaps_under_load_lose_no_write() {
    let class = unique_class("HotReload");
    let original = std::fs::read(plugin_path()).expect("the guest is built; run `cargo build -p agros-sync-guest --target wasm32-wasip2 --release`");
    let dir = std::env::temp_dir().join(format!("agros-sync-hot-reload-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let plugin = dir.join("plugin.wasm");
    std::fs::write(&plugin, &original).unwrap();

    let options = RuntimeOptions { pooling: true, max_instances: 8, ..RuntimeOptions::default() };
    let runtime = PluginRuntime::new(&plugin, options, None).expect("the plugin loads");
    let mut config_yaml = String::from("tenants:\n");
    for name in TENANTS {
        config_yaml.push_str(&format!("  {name}:\n    databases:\n"));
        for line in database_yaml("farm", &server_a()).lines() {
            config_yaml.push_str(&format!("    {line}\n"));
        }
    }
    let config = parse_config(&config_yaml);
    let store = SqliteStore::open(&StateLocation::SqliteMemory).unwrap();
    let tenants = Tenants::new(&config, store, runtime.clone()).expect("the tenants start");
    let version = runtime.current().version.clone();
    let mut serving = runtime.current().hash.clone();
    assert_eq!(serving, sha256_hex(&original));

    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..WORKERS)
        .map(|worker| {
            let tenant = tenants.get(TENANTS[worker % TENANTS.len()]).unwrap().clone();
            tokio::spawn(write_until(tenant, worker, class.clone(), stop.clone(), calls.clone()))
        })
        .collect();

    for swap in 1..=SWAPS {
        wait_for_calls(&calls, WORKERS as u64).await;

        if swap == SWAPS / 2 {
            let garbage = b"this is not a wasm component".repeat(100);
            replace_file(&plugin, &garbage);
            let error = runtime.reload().await.expect_err("a broken plugin file is rejected");
            assert!(format!("{error:#}").contains("failed to compile plugin"), "{error:#}");
            assert_eq!(runtime.current().hash, serving, "the running version keeps serving");
            let failure = runtime.last_failure().expect("the rejected reload is kept for status");
            assert_eq!(failure.hash, sha256_hex(&garbage));
            wait_for_calls(&calls, WORKERS as u64).await;
        }

        let bytes = with_custom_section(&original, VARIANT_SECTION, swap.to_string().as_bytes());
        let hash = sha256_hex(&bytes);
        replace_file(&plugin, &bytes);
        let outcome = runtime.reload().await.unwrap_or_else(|e| panic!("swap {swap} failed: {e:#}"));
        assert_eq!(outcome, ReloadOutcome::Swapped { from_hash: serving.clone(), to_hash: hash.clone(), version: version.clone() });
        assert_eq!(runtime.current().hash, hash);
        assert!(runtime.last_failure().is_none(), "a successful reload clears the failure");
        serving = hash;
    }
    wait_for_calls(&calls, WORKERS as u64).await;
    stop.store(true, Ordering::SeqCst);

    let mut expected = Vec::new();
    for worker in workers {
        let written = worker.await.expect("the worker does not panic");
        assert_eq!(written.failures, Vec::<String>::new(), "calls failed during the swaps");
        expected.extend(written.synced);
        expected.extend(written.queued);
    }
    for name in TENANTS {
        let tenant = tenants.get(name).unwrap();
        let local_id = format!("{name}-last");
        let data = json!({ "key": local_id }).to_string();
        tenant.sync_object("farm", &class, &data, Some(&local_id)).await.expect("a call after the last swap succeeds");
        expected.push(local_id);
        assert_eq!(tenant.plugin_info().hash, serving, "tenant {name} runs the last version");
        // Sends any write that was queued instead of synced, before counting.
        let report = flush_all(tenant).await;
        assert_eq!(report.pending, 0, "tenant {name} left writes pending: {report:?}");
    }

    expected.sort();
    let mut stored = stored_keys(&class);
    stored.sort();
    let mut copies: BTreeMap<&str, usize> = BTreeMap::new();
    for key in &stored {
        *copies.entry(key.as_str()).or_default() += 1;
    }
    let doubled: Vec<_> = copies.iter().filter(|(_, n)| **n > 1).collect();
    assert_eq!(doubled, Vec::<(&&str, &usize)>::new(), "objects stored more than once");
    assert_eq!(stored, expected, "every successful write is stored exactly once");
    assert_eq!(server_count(&server_a(), &class), expected.len() as u64);
    let _ = std::fs::remove_dir_all(&dir);
}

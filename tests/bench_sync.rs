//! Throughput of agros-sync against a direct `/batch` client, side by side on
//! the same local Parse Server. Run with the test servers started:
//!
//! ```sh
//! scripts/parse-server/start.sh && . scripts/parse-server/env.sh
//! cargo run --release -p agros-sync-tests --bin bench-sync -- 2000
//! ```
//!
//! It prints the wall time of each way of writing N new objects and its ratio
//! to the direct client. The numbers go into docs/benchmarks.md.

use std::time::{Duration, Instant};

use agros_sync_host::state::{SqliteStore, StateLocation};
use agros_sync_host::tenant::Tenant;
use agros_sync_tests::*;
use serde_json::{json, Value};

#[tokio::main]
async fn main() {
    let count: usize = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(2000);
    let server = server_a();
    println!("writing {count} new objects per run to {}", server.url);

    let direct = direct_batch(&server, count);
    let online = agros_online(&server, count).await;
    let (enqueue, flush) = agros_offline_then_flush(&server, count).await;

    let ratio = |d: Duration| d.as_secs_f64() / direct.as_secs_f64();
    println!("{:<44} {:>9} {:>10} {:>8}", "method", "seconds", "objects/s", "ratio");
    for (name, duration) in [
        ("direct client, /batch of 50 (baseline)", direct),
        ("agros-sync sync-object, sent one by one", online),
        ("agros-sync queued offline: enqueue", enqueue),
        ("agros-sync queued offline: flush", flush),
        ("agros-sync queued offline: enqueue + flush", enqueue + flush),
    ] {
        println!("{name:<44} {:>9.2} {:>10.0} {:>7.2}x", duration.as_secs_f64(), count as f64 / duration.as_secs_f64(), ratio(duration));
    }
}

/// Measures the baseline: the same objects in `/batch` requests of 50, over one
/// keep-alive connection, with no durability or checks.
fn direct_batch(server: &TestServer, count: usize) -> Duration {
    let class = unique_class("BenchDirect");
    let mount = server.url.split_once("://").map(|(_, rest)| rest).and_then(|rest| rest.find('/').map(|i| rest[i..].to_owned())).unwrap_or_default();
    let agent = ureq::agent();
    let started = Instant::now();
    for start in (0..count).step_by(50) {
        let requests: Vec<Value> = (start..count.min(start + 50))
            .map(|n| json!({"method": "POST", "path": format!("{mount}/classes/{class}"), "body": {"n": n}}))
            .collect();
        agent
            .post(&format!("{}/batch", server.url))
            .set("X-Parse-Application-Id", &server.app_id)
            .set("X-Parse-Master-Key", &server.master_key)
            .send_json(json!({ "requests": requests }))
            .expect("the batch succeeds");
    }
    let elapsed = started.elapsed();
    assert_eq!(server_count(server, &class) as usize, count);
    elapsed
}

/// Measures each write through `sync-object` while the server is up: recorded in the
/// outbox, sent, confirmed.
async fn agros_online(server: &TestServer, count: usize) -> Duration {
    let class = unique_class("BenchOnline");
    let (tenant, _store, _dir) = file_tenant(server, "online");
    tenant.get_all_clients_status().await.unwrap();
    let started = Instant::now();
    for n in 0..count {
        tenant.sync_object("farm", &class, &json!({ "n": n }).to_string(), Some(&format!("b-{n}"))).await.unwrap();
    }
    let elapsed = started.elapsed();
    assert_eq!(server_count(server, &class) as usize, count);
    elapsed
}

/// Writes queued while the server is unreachable, then one flush in batches.
async fn agros_offline_then_flush(server: &TestServer, count: usize) -> (Duration, Duration) {
    let class = unique_class("BenchQueued");
    let (proxy, through) = proxied(server);
    let (tenant, store, _dir) = file_tenant(&through, "offline");
    tenant.get_all_clients_status().await.unwrap();

    proxy.set_down(true);
    let started = Instant::now();
    for n in 0..count {
        tenant.sync_object("farm", &class, &json!({ "n": n }).to_string(), Some(&format!("q-{n}"))).await.unwrap();
    }
    let enqueue = started.elapsed();
    assert_eq!(store.outbox_stats("default", "farm").unwrap().pending as usize, count);

    proxy.set_down(false);
    let started = Instant::now();
    flush_all(&tenant).await;
    let flush = started.elapsed();
    assert_eq!(server_count(server, &class) as usize, count);
    (enqueue, flush)
}

/// Creates a tenant on a SQLite file, as in production (WAL, synchronous FULL).
fn file_tenant(server: &TestServer, name: &str) -> (Tenant, SqliteStore, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("agros-sync-bench-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = parse_config(&format!("databases:\n{}", database_yaml("farm", server)));
    let store = SqliteStore::open(&StateLocation::SqliteFile(dir.join("state.db"))).unwrap();
    let tenant = Tenant::new("default", &config, store.clone(), runtime()).unwrap();
    (tenant, store, dir)
}

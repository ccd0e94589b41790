//! The sandbox around each tenant's plugin instance, exercised with a plugin
//! that misbehaves on request (`tests/fixtures/rogue-plugin`, built by the
//! harness). A panic, a busy loop or a memory bomb ends only the instance
//! that caused it, writes it had recorded stay in the outbox, and a request
//! outside the tenant's own Parse servers is denied before any connection.

use std::io::ErrorKind as IoErrorKind;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agros_sync_host::bindings::{ErrorKind, SyncError, SyncStatus};
use agros_sync_host::engine::{PluginRuntime, RuntimeOptions};
use agros_sync_host::error::CallError;
use agros_sync_host::state::{IdBinding, SqliteStore, StateLocation};
use agros_sync_host::tenant::{Tenant, Tenants};
use agros_sync_tests::*;
use serde_json::json;

/// Linear memory of one instance, in bytes: the pool's slot size and the
/// store's limit (`limits.plugin_memory_bytes`).
const MEMORY_BYTES: usize = 64 * 1024 * 1024;
/// `limits.call_timeout_secs` of every tenant here.
const CALL_TIMEOUT_SECS: u64 = 2;
/// Live instances the pool holds. The engine adds a few spare slots.
const MAX_INSTANCES: u32 = 4;

/// Tenants `a`, `b` and `c` on one pooling runtime of the rogue plugin, over
/// one in-memory state store. Each tenant has a database `farm`: app A for
/// `a` and `c`, app B for `b`.
struct Sandbox {
    tenants: Tenants,
    store: SqliteStore,
}

/// Writes of one tenant made while another tenant misbehaved.
#[derive(Debug)]
struct Tally {
    /// Writes that returned `queued` while the other tenant's call was still
    /// running.
    during: u64,
    /// Every write that returned `queued`.
    total: u64,
    failures: Vec<String>,
}

fn sandbox() -> Sandbox {
    let config = parse_config(&format!(
        "tenants:\n  a:\n    databases:\n{}  b:\n    databases:\n{}  c:\n    databases:\n{}limits:\n  call_timeout_secs: {CALL_TIMEOUT_SECS}\n  plugin_memory_bytes: {MEMORY_BYTES}\n",
        indent(&database_yaml("farm", &server_a())),
        indent(&database_yaml("farm", &server_b())),
        indent(&database_yaml("farm", &server_a())),
    ));
    let options = RuntimeOptions { pooling: true, max_instances: MAX_INSTANCES, memory_bytes: MEMORY_BYTES };
    let runtime = PluginRuntime::new(&rogue_plugin_path(), options, None).expect("the rogue plugin loads");
    let store = SqliteStore::open(&StateLocation::SqliteMemory).expect("in-memory SQLite opens");
    let tenants = Tenants::new(&config, store.clone(), runtime).expect("the tenants start");
    Sandbox { tenants, store }
}

/// Indents `databases:` entries from [`database_yaml`] to sit under a tenant.
fn indent(yaml: &str) -> String {
    yaml.lines().map(|line| format!("    {line}\n")).collect()
}

impl Sandbox {
    fn tenant(&self, name: &str) -> Arc<Tenant> {
        self.tenants.get(name).expect("the tenant is configured").clone()
    }

    fn app_config(&self, tenant: &str, key: &str) -> Option<String> {
        self.store.app_config_get(tenant, key).expect("app_config reads")
    }

    /// Returns the number of writes the tenant's live instance recorded, as
    /// the fixture counts them.
    fn instance_writes(&self, tenant: &str) -> Option<String> {
        self.app_config(tenant, "rogue-instance-writes")
    }

    /// Lists the local ids of the tenant's outbox entries, oldest first.
    fn outbox_local_ids(&self, tenant: &str) -> Vec<String> {
        let entries = self.store.outbox_list(tenant, Some("farm"), None, 10_000).expect("the outbox lists");
        entries.into_iter().map(|entry| entry.local_id.expect("every fixture write has a local id")).collect()
    }

    /// Records a write of `Plot` `local_id` through the fixture, which
    /// queues it.
    async fn write(&self, tenant: &str, local_id: &str) {
        let data = json!({ "key": local_id }).to_string();
        let outcome = self.tenant(tenant).sync_object("farm", "Plot", &data, Some(local_id)).await.expect("the write is recorded");
        assert_eq!(outcome.status, SyncStatus::Queued);
    }

    /// Makes the fixture of `tenant` send a GET to `url` and returns the error
    /// it reports: `request-denied`, or `internal` with the HTTP status when
    /// the request reached a server.
    async fn escape(&self, tenant: &str, url: &str, app_id: Option<&str>) -> SyncError {
        let data = json!({ "url": url, "app_id": app_id }).to_string();
        match self.tenant(tenant).sync_object("farm", "Escape", &data, None).await {
            Err(CallError::Plugin(error)) => error,
            other => panic!("expected a typed error from the escape attempt to {url}, got {other:?}"),
        }
    }

    /// Waits until the fixture of `tenant` has entered its `class` behaviour,
    /// or until `running` is cleared because the call already returned.
    async fn wait_for_entered(&self, tenant: &str, class: &str, running: &AtomicBool) {
        while running.load(Ordering::SeqCst) && self.app_config(tenant, "rogue-entered").as_deref() != Some(class) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(self.app_config(tenant, "rogue-entered").as_deref(), Some(class), "tenant {tenant} never entered {class}");
    }
}

/// Spawns a `sync-object` call of `class` on `tenant`. The returned flag is
/// cleared as soon as the call returns.
fn spawn_misbehaving(tenant: Arc<Tenant>, class: &'static str) -> (Arc<AtomicBool>, tokio::task::JoinHandle<Result<agros_sync_host::bindings::SyncOutcome, CallError>>) {
    let running = Arc::new(AtomicBool::new(true));
    let flag = running.clone();
    let call = tokio::spawn(async move {
        let result = tenant.sync_object("farm", class, "{}", None).await;
        flag.store(false, Ordering::SeqCst);
        result
    });
    (running, call)
}

/// Records writes on `tenant`, one after another, until `running` is
/// cleared.
async fn write_while(tenant: Arc<Tenant>, running: Arc<AtomicBool>) -> Tally {
    let mut tally = Tally { during: 0, total: 0, failures: Vec::new() };
    let mut n = 0;
    while running.load(Ordering::SeqCst) {
        n += 1;
        let local_id = format!("{}-busy-{n}", tenant.name());
        let data = json!({ "key": local_id }).to_string();
        match tenant.sync_object("farm", "Plot", &data, Some(&local_id)).await {
            Ok(outcome) if outcome.status == SyncStatus::Queued => {
                tally.total += 1;
                if running.load(Ordering::SeqCst) {
                    tally.during += 1;
                }
            }
            other => tally.failures.push(format!("{local_id}: {other:?}")),
        }
    }
    tally
}

#[tokio::test]
async fn panic_ends_only_that_instance() {
    let sandbox = sandbox();
    sandbox.write("a", "a-1").await;
    sandbox.write("a", "a-2").await;
    sandbox.write("b", "b-1").await;
    assert_eq!(sandbox.instance_writes("a").as_deref(), Some("2"));

    let error = sandbox.tenant("a").sync_object("farm", "Trap", "{}", None).await.unwrap_err();

    let CallError::Trap { tenant, message, guest_message } = &error else {
        panic!("expected a trap, got {error:?}");
    };
    assert_eq!(tenant, "a");
    assert_eq!(message, "wasm trap: wasm `unreachable` instruction executed");
    assert!(guest_message.contains("panicked"), "{guest_message}");
    assert!(guest_message.contains("rogue fixture: deliberate panic in tenant a"), "{guest_message}");
    assert_eq!(sandbox.outbox_local_ids("a"), ["a-1", "a-2"], "writes accepted before the panic are kept");

    sandbox.write("a", "a-3").await;
    assert_eq!(sandbox.instance_writes("a").as_deref(), Some("1"), "a's next call runs on a fresh instance");
    assert_eq!(sandbox.outbox_local_ids("a"), ["a-1", "a-2", "a-3"]);
    sandbox.write("b", "b-2").await;
    assert_eq!(sandbox.instance_writes("b").as_deref(), Some("2"), "b's instance survives a's panic");
    assert_eq!(sandbox.outbox_local_ids("b"), ["b-1", "b-2"]);
}

// A current-thread runtime: tenants b and c can make progress while a spins
// only if the epoch makes a's loop yield to the executor.
#[tokio::test(flavor = "current_thread")]
async fn busy_loop_times_out_while_others_write() {
    let sandbox = sandbox();
    sandbox.write("a", "a-1").await;
    sandbox.write("b", "b-1").await;
    sandbox.write("c", "c-1").await;
    let started = Instant::now();

    let (running, spinning) = spawn_misbehaving(sandbox.tenant("a"), "Loop");
    sandbox.wait_for_entered("a", "Loop", &running).await;
    let workers = ["b", "c"].map(|name| tokio::spawn(write_while(sandbox.tenant(name), running.clone())));
    let result = spinning.await.expect("the call task does not panic");
    let elapsed = started.elapsed();

    match &result {
        Err(CallError::Timeout { tenant, seconds }) => {
            assert_eq!(tenant, "a");
            assert_eq!(*seconds, CALL_TIMEOUT_SECS);
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(elapsed >= Duration::from_secs(CALL_TIMEOUT_SECS), "stopped after {elapsed:?}, before its deadline");
    for (name, worker) in ["b", "c"].into_iter().zip(workers) {
        let tally = worker.await.expect("the worker does not panic");
        assert_eq!(tally.failures, Vec::<String>::new(), "tenant {name} failed while a spun");
        assert!(tally.during > 0, "tenant {name} wrote nothing while a spun: {tally:?}");
        assert_eq!(sandbox.outbox_local_ids(name).len() as u64, 1 + tally.total, "every write of {name} is in its outbox");
        assert_eq!(sandbox.instance_writes(name), Some((1 + tally.total).to_string()), "{name}'s instance survives");
    }

    sandbox.write("a", "a-2").await;
    assert_eq!(sandbox.instance_writes("a").as_deref(), Some("1"), "a's next call runs on a fresh instance");
    assert_eq!(sandbox.outbox_local_ids("a"), ["a-1", "a-2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_bomb_traps_on_failed_allocation() {
    let sandbox = sandbox();
    sandbox.write("a", "a-1").await;
    sandbox.write("b", "b-1").await;
    sandbox.write("c", "c-1").await;

    let (running, bombing) = spawn_misbehaving(sandbox.tenant("a"), "Bomb");
    let workers = ["b", "c"].map(|name| tokio::spawn(write_while(sandbox.tenant(name), running.clone())));
    let result = bombing.await.expect("the call task does not panic");

    let Err(CallError::Trap { tenant, message, guest_message }) = &result else {
        panic!("expected a trap, got {result:?}");
    };
    assert_eq!(tenant, "a");
    assert_eq!(message, "wasm trap: wasm `unreachable` instruction executed");
    assert!(guest_message.starts_with("memory allocation of "), "{guest_message}");
    assert!(guest_message.ends_with(" bytes failed"), "{guest_message}");
    assert_eq!(sandbox.app_config("a", "rogue-entered").as_deref(), Some("Bomb"));
    for (name, worker) in ["b", "c"].into_iter().zip(workers) {
        let tally = worker.await.expect("the worker does not panic");
        assert_eq!(tally.failures, Vec::<String>::new(), "tenant {name} failed beside the bomb");
        assert_eq!(sandbox.outbox_local_ids(name).len() as u64, 1 + tally.total, "every write of {name} is in its outbox");
        assert_eq!(sandbox.instance_writes(name), Some((1 + tally.total).to_string()), "{name}'s instance survives");
    }

    sandbox.write("a", "a-2").await;
    assert_eq!(sandbox.instance_writes("a").as_deref(), Some("1"), "a's next call runs on a fresh instance");
    assert_eq!(sandbox.outbox_local_ids("a"), ["a-1", "a-2"]);
}

#[tokio::test]
async fn traps_return_their_pool_slots() {
    let sandbox = sandbox();
    sandbox.write("b", "b-1").await;
    sandbox.write("c", "c-1").await;
    let a = sandbox.tenant("a");

    // Far more trapped instances than the pool has slots (MAX_INSTANCES plus
    // the engine's spares), while b and c keep theirs.
    for round in 0..20 {
        for class in ["Trap", "Bomb"] {
            let error = a.sync_object("farm", class, "{}", None).await.unwrap_err();
            assert!(matches!(error, CallError::Trap { .. }), "round {round}, {class}: {error:?}");
        }
    }

    sandbox.write("a", "a-1").await;
    sandbox.write("b", "b-2").await;
    sandbox.write("c", "c-2").await;
    assert_eq!(sandbox.instance_writes("a").as_deref(), Some("1"));
    assert_eq!(sandbox.instance_writes("b").as_deref(), Some("2"));
    assert_eq!(sandbox.instance_writes("c").as_deref(), Some("2"));
}

#[tokio::test]
async fn escape_to_other_loopback_listeners_is_denied() {
    let sandbox = sandbox();
    let other_port = TcpListener::bind("127.0.0.1:0").unwrap();
    let other_address = TcpListener::bind("127.0.0.2:0").unwrap();

    for listener in [&other_port, &other_address] {
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}/parse/classes/Plot", listener.local_addr().unwrap());

        let error = sandbox.escape("a", &url, None).await;

        assert_eq!(error.kind, ErrorKind::RequestDenied, "{error:?}");
        assert_eq!(error.subject.as_deref(), Some(url.as_str()));
        let accepted = listener.accept().map(|(_, peer)| peer);
        assert_eq!(accepted.map_err(|e| e.kind()), Err(IoErrorKind::WouldBlock), "the denied request to {url} reached the listener");
    }
}

#[tokio::test]
async fn same_port_other_address_is_denied() {
    let sandbox = sandbox();
    // App A's port and mount path on 127.0.0.2, where nothing listens: a
    // connection attempt would fail as connection refused (server-unavailable),
    // so request-denied shows that none was made.
    let url_a = server_a().url;
    let url = url_a.replacen("127.0.0.1", "127.0.0.2", 1);
    assert_ne!(url, url_a, "app A is expected on 127.0.0.1");

    let error = sandbox.escape("a", &format!("{url}/health"), None).await;

    assert_eq!(error.kind, ErrorKind::RequestDenied, "{error:?}");
}

#[tokio::test]
async fn capability_stops_at_tenant_boundary() {
    let sandbox = sandbox();
    let a_health = format!("{}/health", server_a().url);
    let b_health = format!("{}/health", server_b().url);

    // Each tenant reaches its own Parse server, so the denials below come from
    // the capability and not from a broken request.
    let own_a = sandbox.escape("a", &a_health, None).await;
    assert_eq!((own_a.kind, own_a.http_status), (ErrorKind::Internal, Some(200)), "{own_a:?}");
    let own_b = sandbox.escape("b", &b_health, Some(&server_b().app_id)).await;
    assert_eq!((own_b.kind, own_b.http_status), (ErrorKind::Internal, Some(200)), "{own_b:?}");

    for app_id in [None, Some(server_b().app_id)] {
        let error = sandbox.escape("a", &b_health, app_id.as_deref()).await;
        assert_eq!(error.kind, ErrorKind::RequestDenied, "tenant a reached app B with application id {app_id:?}: {error:?}");
        assert_eq!(error.http_status, None);
    }
    let error = sandbox.escape("b", &a_health, None).await;
    assert_eq!(error.kind, ErrorKind::RequestDenied, "tenant b reached app A: {error:?}");
}

#[tokio::test]
async fn same_database_key_is_separate_per_tenant() {
    let sandbox = sandbox();

    for tenant in ["a", "b"] {
        let data = json!({ "key": "plot-1", "owner": tenant }).to_string();
        let outcome = sandbox.tenant(tenant).sync_object("farm", "Plot", &data, Some("plot-1")).await.unwrap();
        assert!(outcome.created, "tenant {tenant}'s write is a create of its own object: {outcome:?}");
    }

    for (tenant, server) in [("a", server_a()), ("b", server_b())] {
        let entries = sandbox.store.outbox_list(tenant, None, None, 100).unwrap();
        assert_eq!(entries.len(), 1, "tenant {tenant}: {entries:?}");
        assert_eq!(entries[0].payload, json!({ "key": "plot-1", "owner": tenant }).to_string());
        let binding = sandbox.store.id_get(tenant, "farm", "Plot", "plot-1").unwrap();
        assert_eq!(binding, Some(IdBinding { object_id: "plot-1".to_owned(), confirmed: false }));
        assert_eq!(sandbox.app_config(tenant, "parser-farm-host"), Some(server.url.clone()));
        assert_eq!(sandbox.app_config(tenant, "parser-farm-app-id"), Some(server.app_id.clone()));
        assert_eq!(sandbox.app_config(tenant, "rogue-last-write").as_deref(), Some("Plot/plot-1"));

        let statuses = sandbox.tenant(tenant).get_all_clients_status().await.unwrap();
        assert_eq!(statuses.len(), 1);
        assert_eq!(statuses[0].server_url, server.url);
        assert_eq!(statuses[0].pending, 1);
    }
    assert_eq!(sandbox.store.outbox_list("c", None, None, 100).unwrap().len(), 0);
    assert_eq!(sandbox.store.id_get("c", "farm", "Plot", "plot-1").unwrap(), None);
    assert_eq!(sandbox.app_config("c", "rogue-last-write"), None);
}

#[tokio::test]
async fn guest_sees_no_env_files_or_sockets() {
    let sandbox = sandbox();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let data = json!({ "address": listener.local_addr().unwrap().to_string() }).to_string();

    let found = match sandbox.tenant("a").sync_object("farm", "Snoop", &data, None).await {
        Err(CallError::Plugin(error)) => serde_json::from_str::<serde_json::Value>(&error.detail).expect("the fixture reports JSON"),
        other => panic!("expected the fixture's report, got {other:?}"),
    };

    assert_eq!(found["env"], json!(0), "{found}");
    assert_eq!(found["args"], json!(0), "{found}");
    assert!(found["read_root"].as_str().unwrap().starts_with("error"), "{found}");
    assert!(found["read_cwd"].as_str().unwrap().starts_with("error"), "{found}");
    assert!(found["tcp"].as_str().unwrap().starts_with("error"), "{found}");
    let accepted = listener.accept().map(|(_, peer)| peer);
    assert_eq!(accepted.map_err(|e| e.kind()), Err(IoErrorKind::WouldBlock), "the guest opened a TCP connection");
}

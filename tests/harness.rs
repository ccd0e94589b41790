//! Shared set-up for the integration tests: the plugin runtime, tenants
//! configured against the local Parse Servers, and direct REST reads that
//! check what really reached the server.
//!
//! The servers come from `scripts/parse-server/start.sh`; `scripts/test.sh`
//! starts them and exports their settings (`scripts/parse-server/env.sh`).
//! App A accepts client-chosen objectIds, app B does not. Every test writes
//! to classes of its own, so tests can run in parallel against one server.

pub mod proxy;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

use agros_sync_host::bindings::{SyncOutcome, SyncStatus};
use agros_sync_host::config::Config;
use agros_sync_host::engine::PluginRuntime;
use agros_sync_host::state::{SqliteStore, StateLocation};
use agros_sync_host::tenant::Tenant;
use serde_json::Value;

/// One Parse Server application of the test set-up.
#[derive(Debug, Clone)]
pub struct TestServer {
    pub url: String,
    pub app_id: String,
    pub master_key: String,
    pub rest_key: String,
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_owned())
}

/// App A: custom objectIds allowed.
pub fn server_a() -> TestServer {
    TestServer {
        url: env_or("AGROS_PARSE_URL_A", "http://127.0.0.1:1337/parse"),
        app_id: env_or("AGROS_PARSE_APP_ID_A", "agros-a"),
        master_key: env_or("AGROS_PARSE_MASTER_KEY_A", "test-master-key-a"),
        rest_key: env_or("AGROS_PARSE_REST_KEY_A", "test-rest-key-a"),
    }
}

/// App B: the server generates objectIds.
pub fn server_b() -> TestServer {
    TestServer {
        url: env_or("AGROS_PARSE_URL_B", "http://127.0.0.1:1338/parse"),
        app_id: env_or("AGROS_PARSE_APP_ID_B", "agros-b"),
        master_key: env_or("AGROS_PARSE_MASTER_KEY_B", "test-master-key-b"),
        rest_key: env_or("AGROS_PARSE_REST_KEY_B", "test-rest-key-b"),
    }
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_owned()
}

/// Cargo's target directory: `CARGO_TARGET_DIR`, or `target/` in the repository.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => repo_root().join(dir),
        _ => repo_root().join("target"),
    }
}

/// Returns the guest's release build, which `scripts/test.sh` builds first.
pub fn plugin_path() -> PathBuf {
    target_dir().join("wasm32-wasip2/release/agros_sync_guest.wasm")
}

/// Builds the misbehaving test plugin in `tests/fixtures/rogue-plugin` once
/// per process and returns its component file.
///
/// It builds into `target/fixtures`, a target directory of its own, so that it
/// does not wait on the build lock of the `cargo test` that runs this process.
/// Test binaries running at the same time share cargo's lock on that directory.
pub fn rogue_plugin_path() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let target_dir = repo_root().join("target/fixtures");
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let output = Command::new(cargo)
                .current_dir(repo_root())
                .args(["build", "-p", "agros-sync-rogue-plugin", "--target", "wasm32-wasip2", "--release", "--target-dir"])
                .arg(&target_dir)
                // Without debug info the component is a tenth of the size, and
                // each test compiles it.
                .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
                .env("CARGO_PROFILE_RELEASE_STRIP", "true")
                .output()
                .expect("cargo runs");
            assert!(
                output.status.success(),
                "building the rogue fixture plugin failed ({}):\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
            target_dir.join("wasm32-wasip2/release/agros_sync_rogue_plugin.wasm")
        })
        .clone()
}

/// Returns `component` with a custom section appended: id 0, the section
/// size, then the name (length and bytes) and the payload, sizes in unsigned
/// LEB128. A component may end with custom sections, so the result loads and
/// behaves the same, but its hash differs.
pub fn with_custom_section(component: &[u8], name: &str, payload: &[u8]) -> Vec<u8> {
    let mut content = leb128(name.len());
    content.extend_from_slice(name.as_bytes());
    content.extend_from_slice(payload);

    let mut bytes = component.to_vec();
    bytes.push(0x00);
    bytes.extend(leb128(content.len()));
    bytes.extend(content);
    bytes
}

/// Encodes `value` as unsigned LEB128, the integer encoding of the wasm
/// binary format.
fn leb128(mut value: usize) -> Vec<u8> {
    let mut bytes = Vec::new();
    loop {
        let low = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            bytes.push(low);
            return bytes;
        }
        bytes.push(low | 0x80);
    }
}

/// Returns the compiled plugin, shared by every test in a binary.
pub fn runtime() -> Arc<PluginRuntime> {
    static RUNTIME: OnceLock<Arc<PluginRuntime>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| PluginRuntime::load(&plugin_path()).expect("the plugin loads; run scripts/test.sh to build it"))
        .clone()
}

/// Returns a class name no other test uses: `<prefix>_<pid>_<n>`.
pub fn unique_class(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Builds the YAML of a `databases:` entry for `server`.
pub fn database_yaml(key: &str, server: &TestServer) -> String {
    format!(
        "  {key}:\n    sync: true\n    parse:\n      server_url: {}\n      app_id: {}\n      master_key: {}\n      rest_api_key: {}\n",
        server.url, server.app_id, server.master_key, server.rest_key
    )
}

/// Config text with databases `farm` (app A) and `market` (app B), plus `extra`
/// lines appended at the top level.
pub fn standard_config(extra: &str) -> String {
    format!("databases:\n{}{}{extra}", database_yaml("farm", &server_a()), database_yaml("market", &server_b()))
}

/// Creates a tenant with an in-memory state store.
pub fn tenant(config_yaml: &str) -> (Tenant, SqliteStore) {
    let config = parse_config(config_yaml);
    let store = SqliteStore::open(&StateLocation::SqliteMemory).expect("in-memory SQLite opens");
    let tenant = Tenant::new("default", &config, store.clone(), runtime()).expect("tenant starts");
    (tenant, store)
}

pub fn parse_config(config_yaml: &str) -> Config {
    let path = repo_root().join("config.yaml");
    Config::parse(config_yaml, &path, &|_| None).expect("test configuration is valid")
}

/// Sends a REST request with the master key directly, bypassing the plugin.
pub fn rest(server: &TestServer, method: &str, path: &str, body: Option<Value>) -> Value {
    let request = ureq::request(method, &format!("{}{path}", server.url))
        .set("X-Parse-Application-Id", &server.app_id)
        .set("X-Parse-Master-Key", &server.master_key);
    let response = match body {
        Some(body) => request.send_json(body),
        None => request.call(),
    };
    match response {
        Ok(response) => response.into_json().expect("Parse answers JSON"),
        Err(ureq::Error::Status(status, response)) => {
            panic!("{method} {path} answered {status}: {}", response.into_string().unwrap_or_default())
        }
        Err(e) => panic!("{method} {path} failed: {e}"),
    }
}

/// Reads every object of `class_name` from the server directly.
pub fn server_objects(server: &TestServer, class_name: &str) -> Vec<Value> {
    let answer = rest(server, "GET", &format!("/classes/{class_name}?limit=10000&order=objectId"), None);
    answer["results"].as_array().cloned().unwrap_or_default()
}

/// Counts the objects of `class_name` on the server exactly. A real
/// constraint is needed: with an empty `where`, Parse on PostgreSQL returns
/// the planner's estimate.
pub fn server_count(server: &TestServer, class_name: &str) -> u64 {
    let where_ = "%7B%22objectId%22%3A%7B%22%24exists%22%3Atrue%7D%7D";
    let answer = rest(server, "GET", &format!("/classes/{class_name}?count=1&limit=0&where={where_}"), None);
    answer["count"].as_u64().expect("count is a number")
}

/// Parses each JSON text the plugin returned.
pub fn values(objects: &[String]) -> Vec<Value> {
    objects.iter().map(|o| serde_json::from_str(o).expect("the plugin returns JSON objects")).collect()
}

/// Returns the objectId of a write the server confirmed. The test fails when
/// the write was only queued.
pub fn synced_id(outcome: &SyncOutcome) -> String {
    assert_eq!(outcome.status, SyncStatus::Synced, "expected a synced write, got {outcome:?}");
    outcome.object_id.clone().expect("a synced write has an objectId")
}

/// Starts a proxy in front of `server` and returns it with the server as
/// reached through it.
pub fn proxied(server: &TestServer) -> (proxy::FaultProxy, TestServer) {
    let after_scheme = server.url.split_once("://").map(|(_, rest)| rest).unwrap_or(&server.url);
    let upstream = after_scheme.split('/').next().unwrap_or_default();
    let proxy = proxy::FaultProxy::start(upstream);
    let through = TestServer { url: proxy.url_for(&server.url), ..server.clone() };
    (proxy, through)
}

/// Config text for `farm` (app A) and `market` (app B) reached at the given
/// servers, with fast retries so tests need not wait for backoff.
pub fn offline_config(farm: &TestServer, market: &TestServer) -> String {
    offline_config_with(farm, market, 50)
}

/// Like [`offline_config`], with the first retry after `retry_initial_ms`.
pub fn offline_config_with(farm: &TestServer, market: &TestServer, retry_initial_ms: u64) -> String {
    format!(
        "databases:\n{}{}limits:\n  retry_initial_ms: {retry_initial_ms}\n  retry_max_ms: {}\n",
        database_yaml("farm", farm),
        database_yaml("market", market),
        retry_initial_ms * 4
    )
}

/// Flushes until nothing is pending or nothing moves; returns the last report.
pub async fn flush_all(tenant: &Tenant) -> agros_sync_host::bindings::FlushReport {
    loop {
        let report = tenant.flush(None, 10_000, true).await.expect("flush runs");
        if report.pending == 0 || report.delivered + report.dead_lettered == 0 {
            return report;
        }
    }
}

/// Creates a directory with a `config.yaml` (`databases_yaml` plus a SQLite state
/// file in the directory and this build's plugin) for the CLI tests.
pub fn cli_config_dir(name: &str, databases_yaml: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("agros-sync-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = format!("{databases_yaml}state:\n  url: sqlite://./state.db\nplugin:\n  path: {}\n", plugin_path().display());
    std::fs::write(dir.join("config.yaml"), config).unwrap();
    dir
}

/// Runs the `agros-sync` binary (built by `scripts/build.sh`) with the
/// directory's configuration and `LANG=lang`.
pub fn run_cli(dir: &Path, lang: &str, args: &[&str]) -> Output {
    Command::new(target_dir().join("release/agros-sync"))
        .arg("--config")
        .arg(dir.join("config.yaml"))
        .args(args)
        .env("LANG", lang)
        .env_remove("LC_ALL")
        .env_remove("LC_MESSAGES")
        .output()
        .expect("agros-sync runs; scripts/build.sh builds it")
}

/// Parses the command's standard output as JSON.
pub fn stdout_json(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", String::from_utf8_lossy(&output.stdout)))
}

//! Costs of the wasmtime runtime itself, with no Parse Server involved:
//!
//! 1. creating a plugin instance from the `InstancePre`, with the pooling
//!    allocator against without it;
//! 2. one exported call on a live instance against the same work done in
//!    native Rust;
//! 3. resident memory of 1,000 tenants, each with a live idle instance, with
//!    and without the pooling allocator;
//! 4. status-call latency while the plugin is hot-reloaded 10 times, against
//!    a steady run of the same length.
//!
//! ```sh
//! cargo build -p agros-sync-guest --target wasm32-wasip2 --release
//! cargo run --release -p agros-sync-tests --bin bench-runtime
//! ```
//!
//! Every tenant's databases have `sync: false`, so no call opens a
//! connection. Each measurement prints next to its baseline, measured in the
//! same run, with the ratio. Scratch files (state databases, compiled-plugin
//! cache, plugin copies) go to `target/bench-runtime-<pid>/` and are removed
//! at the end. The numbers go into docs/benchmarks.md.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agros_sync_host::bindings::agros::sync::config::Database;
use agros_sync_host::bindings::ClientStatus;
use agros_sync_host::engine::{PluginRuntime, ReloadOutcome, RuntimeOptions};
use agros_sync_host::host_state::TenantContext;
use agros_sync_host::plugin_cache::PluginCache;
use agros_sync_host::state::{SqliteStore, StateLocation};
use agros_sync_host::tenant::{Tenant, Tenants};
use agros_sync_tests::*;

/// Instances created and dropped per allocator, after [`WARM_UP`] more.
const INSTANTIATIONS: usize = 2000;
const WARM_UP: usize = 100;
/// Calls per row of the call-overhead table.
const CALLS: usize = 20_000;
/// Untimed batches the [`CALLS`] are split into for the mean.
const BATCHES: usize = 5;
/// Tenants of the memory measurement; the default `limits.max_instances`.
const IDLE_TENANTS: usize = 1000;
const RELOADS: usize = 10;
/// Tasks that call `status` in a loop during the reload measurement, each on
/// its own tenant.
const CALLER_TASKS: usize = 4;
/// Deadline each tenant's calls get; none of these calls comes near it.
const CALL_TIMEOUT: Duration = Duration::from_secs(300);
/// The first argument that makes this binary a memory-measurement child.
const MEMORY_CHILD: &str = "--memory-child";

/// The databases of every tenant here: parse settings, but `sync: false`, so
/// the plugin opens no connection and status only copies configuration.
const DATABASES: [&str; 3] = ["archive", "catalog", "reports"];

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, allocator, scratch] = args.as_slice() {
        if flag == MEMORY_CHILD {
            memory_child(allocator == "pooled", Path::new(scratch)).await;
            return;
        }
    }

    let scratch = ScratchDir::create();
    println!("plugin: {}", plugin_path().display());
    println!("load average at start: {}", load_average());
    let pooled = load_runtime(true, &scratch.0);
    let unpooled = load_runtime(false, &scratch.0);

    instantiation(&pooled, &unpooled).await;
    call_overhead(&pooled).await;
    memory(&scratch.0);
    reload_latency(&scratch.0).await;
    println!("\nload average at the end: {}", load_average());
}

/// Reads the 1, 5 and 15 minute load averages from /proc/loadavg.
fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// The per-run directory under `target/`, removed when dropped (also when a
/// measurement panics).
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn create() -> Self {
        let dir = target_dir().join(format!("bench-runtime-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("the scratch directory under target/ can be created");
        Self(dir)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Loads the plugin with the default limits (`max_instances` 1000, 256 MiB
/// per instance), sharing one compiled-plugin cache so that later runtimes
/// and the memory children do not compile again.
fn load_runtime(pooling: bool, scratch: &Path) -> Arc<PluginRuntime> {
    let options = RuntimeOptions { pooling, ..RuntimeOptions::default() };
    let cache = PluginCache::new(scratch.join("cache"));
    PluginRuntime::new(&plugin_path(), options, Some(cache)).expect("the plugin loads; build it with `cargo build -p agros-sync-guest --target wasm32-wasip2 --release`")
}

/// YAML of one tenant's `databases:` entries, indented by `indent` spaces.
fn databases_yaml(indent: usize) -> String {
    let pad = " ".repeat(indent);
    DATABASES
        .iter()
        .map(|key| format!("{pad}{key}:\n{pad}  sync: false\n{pad}  parse:\n{pad}    server_url: http://127.0.0.1:1337/parse\n{pad}    app_id: agros-{key}\n"))
        .collect()
}

/// Config text with tenants `t0000` to `t<count - 1>`, each with [`DATABASES`].
fn tenants_yaml(count: usize) -> String {
    let databases = databases_yaml(6);
    let tenants: String = (0..count).map(|n| format!("  t{n:04}:\n    databases:\n{databases}")).collect();
    format!("tenants:\n{tenants}")
}

fn state_store(path: PathBuf) -> SqliteStore {
    SqliteStore::open(&StateLocation::SqliteFile(path)).expect("the state file under target/ opens")
}

// ---------------------------------------------------------------------------
// Measurement summaries

/// Mean and percentiles of a set of durations.
#[derive(Debug, Clone, Copy)]
struct Summary {
    count: usize,
    mean: Duration,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

impl Summary {
    fn of(mut samples: Vec<Duration>) -> Self {
        assert!(!samples.is_empty(), "a measurement has at least one sample");
        samples.sort_unstable();
        let total: Duration = samples.iter().sum();
        Self {
            count: samples.len(),
            mean: total / samples.len() as u32,
            p50: percentile(&samples, 50.0),
            p99: percentile(&samples, 99.0),
            max: *samples.last().expect("not empty"),
        }
    }
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], percent: f64) -> Duration {
    let rank = ((percent / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

fn ratio(value: Duration, baseline: Duration) -> f64 {
    value.as_secs_f64() / baseline.as_secs_f64()
}

// ---------------------------------------------------------------------------
// 1. Instance creation

/// Times `new_store` + `instantiate_async` on the serving version's
/// `InstancePre`, which is what a tenant's first call does, then the drop of
/// the instance and its store. The last rows time what a caller waits for:
/// the first `plugin-version` call after `Tenant::evict`.
async fn instantiation(pooled: &Arc<PluginRuntime>, unpooled: &Arc<PluginRuntime>) {
    println!("\n## 1. instance creation from the InstancePre, {INSTANTIATIONS} per allocator after {WARM_UP} warm-up");
    let config = parse_config(&tenants_yaml(1));
    let store = SqliteStore::open(&StateLocation::SqliteMemory).expect("in-memory SQLite opens");
    let context = Arc::new(TenantContext::new("t0000", &config, store));

    let (pooled_create, pooled_drop) = create_and_drop(pooled, &context).await;
    let (unpooled_create, unpooled_drop) = create_and_drop(unpooled, &context).await;
    let pooled_first_call = first_call_after_evict(pooled, &context).await;
    let unpooled_first_call = first_call_after_evict(unpooled, &context).await;

    println!("{:<46} {:>9} {:>9} {:>9}   {}", "step", "mean µs", "p50 µs", "p99 µs", "pooled/unpooled (mean, p50, p99)");
    for (step, pooled, unpooled) in [
        ("create (new_store + instantiate_async)", pooled_create, unpooled_create),
        ("drop the instance and its store", pooled_drop, unpooled_drop),
        ("first call after evict (plugin-version)", pooled_first_call, unpooled_first_call),
    ] {
        println!("{:<46} {:>9.1} {:>9.1} {:>9.1}", format!("{step}, unpooled"), micros(unpooled.mean), micros(unpooled.p50), micros(unpooled.p99));
        println!(
            "{:<46} {:>9.1} {:>9.1} {:>9.1}   {:.2} / {:.2} / {:.2}",
            format!("{step}, pooled"),
            micros(pooled.mean),
            micros(pooled.p50),
            micros(pooled.p99),
            ratio(pooled.mean, unpooled.mean),
            ratio(pooled.p50, unpooled.p50),
            ratio(pooled.p99, unpooled.p99)
        );
    }
}

async fn create_and_drop(runtime: &PluginRuntime, context: &Arc<TenantContext>) -> (Summary, Summary) {
    let version = runtime.current();
    let mut create = Vec::with_capacity(INSTANTIATIONS);
    let mut drop_times = Vec::with_capacity(INSTANTIATIONS);
    for round in 0..WARM_UP + INSTANTIATIONS {
        let started = Instant::now();
        let mut store = runtime.new_store(context.clone());
        let plugin = version.pre.instantiate_async(&mut store).await.expect("the plugin instantiates");
        let created = Instant::now();
        drop(plugin);
        drop(store);
        let dropped = Instant::now();
        if round >= WARM_UP {
            create.push(created - started);
            drop_times.push(dropped - created);
        }
    }
    (Summary::of(create), Summary::of(drop_times))
}

async fn first_call_after_evict(runtime: &Arc<PluginRuntime>, context: &Arc<TenantContext>) -> Summary {
    let tenant = Tenant::with_context(context.clone(), runtime.clone(), CALL_TIMEOUT);
    let mut samples = Vec::with_capacity(INSTANTIATIONS);
    for round in 0..WARM_UP + INSTANTIATIONS {
        tenant.evict().await;
        let started = Instant::now();
        let version = tenant.plugin_version().await.expect("plugin-version succeeds");
        let elapsed = started.elapsed();
        black_box(version);
        if round >= WARM_UP {
            samples.push(elapsed);
        }
    }
    Summary::of(samples)
}

// ---------------------------------------------------------------------------
// 2. Call overhead

/// Times exported calls on a live pooled instance against the baseline: the
/// same `Vec<ClientStatus>` built in native Rust from the same configuration.
/// The mean comes from untimed loops (see [`time_calls`]), so the clock's own
/// cost does not inflate the fast rows.
async fn call_overhead(runtime: &Arc<PluginRuntime>) {
    println!("\n## 2. one call on a live instance (pooled), {CALLS} calls per row after {WARM_UP} warm-up, databases with sync: false");
    let config = parse_config(&tenants_yaml(1));
    let context = Arc::new(TenantContext::new("t0000", &config, SqliteStore::open(&StateLocation::SqliteMemory).expect("in-memory SQLite opens")));
    let databases = context.databases.clone();
    assert_eq!(native_status(&databases).len(), DATABASES.len());

    let native = time_calls(async || {
        black_box(native_status(black_box(&databases)));
    })
    .await;

    // The bare wasmtime call on an instance this function owns: no tenant
    // lock, no deadline, no timeout wrapper.
    let version = runtime.current();
    let mut store = runtime.new_store(context.clone());
    let plugin = version.pre.instantiate_async(&mut store).await.expect("the plugin instantiates");
    let exports = plugin.agros_sync_sync_manager();
    let statuses = exports.call_get_all_clients_status(&mut store).await.expect("get-all-clients-status succeeds");
    // `ClientStatus` has no `PartialEq`; its `Debug` text shows every field.
    assert_eq!(format!("{statuses:?}"), format!("{:?}", native_status(&databases)), "the plugin returns what the native baseline builds");
    let raw_status = time_calls(async || {
        black_box(exports.call_get_all_clients_status(&mut store).await.expect("get-all-clients-status succeeds"));
    })
    .await;
    let raw_version = time_calls(async || {
        black_box(exports.call_plugin_version(&mut store).await.expect("plugin-version succeeds"));
    })
    .await;
    drop(plugin);
    drop(store);

    // The host API a caller uses: the tenant's lock, a fresh deadline and the
    // timeout wrapper around the same call.
    let tenant = Tenant::with_context(context.clone(), runtime.clone(), CALL_TIMEOUT);
    let tenant_status = time_calls(async || {
        black_box(tenant.get_all_clients_status().await.expect("get-all-clients-status succeeds"));
    })
    .await;
    let tenant_version = time_calls(async || {
        black_box(tenant.plugin_version().await.expect("plugin-version succeeds"));
    })
    .await;

    println!("{:<48} {:>9} {:>9} {:>9} {:>14} {:>10}", "call", "mean µs", "p50 µs", "p99 µs", "µs over native", "× native");
    // Only the status rows do the baseline's work; plugin-version shows the
    // fixed cost of a call, so it gets no comparison with native.
    for (name, summary, same_work) in [
        ("native Rust, same records (baseline)", native, true),
        ("wasmtime call: get-all-clients-status", raw_status, true),
        ("wasmtime call: plugin-version", raw_version, false),
        ("Tenant::get_all_clients_status", tenant_status, true),
        ("Tenant::plugin_version", tenant_version, false),
    ] {
        let (over, times) = if same_work {
            (format!("{:.2}", micros(summary.mean) - micros(native.mean)), format!("{:.1}x", ratio(summary.mean, native.mean)))
        } else {
            ("-".to_owned(), "-".to_owned())
        };
        println!("{name:<48} {:>9.2} {:>9.2} {:>9.2} {over:>14} {times:>10}", micros(summary.mean), micros(summary.p50), micros(summary.p99));
    }
    println!(
        "get-all-clients-status / plugin-version (mean): wasmtime call {:.2}, Tenant {:.2}",
        ratio(raw_status.mean, raw_version.mean),
        ratio(tenant_status.mean, tenant_version.mean)
    );
}

/// The records `get-all-clients-status` returns for databases with
/// `sync: false`, built natively: the plugin does the same, with no import
/// call and no request.
fn native_status(databases: &[Database]) -> Vec<ClientStatus> {
    databases
        .iter()
        .map(|database| ClientStatus {
            database_key: database.key.clone(),
            sync_enabled: database.sync,
            server_url: database.server_url.clone(),
            app_id: database.app_id.clone(),
            reachable: false,
            server_version: None,
            custom_object_ids: None,
            last_error: None,
            pending: 0,
            oldest_pending_at: None,
            dead_letters: 0,
            last_success_at: None,
            next_retry_at: None,
            paused: None,
        })
        .collect()
}

/// Runs `call` [`WARM_UP`] times, then [`CALLS`] times untimed in
/// [`BATCHES`] batches, then [`CALLS`] times timed one by one. The mean is
/// the median of the batch means, so a burst of load from other processes
/// during one batch does not move it. The percentiles come from the timed
/// calls.
async fn time_calls(mut call: impl AsyncFnMut()) -> Summary {
    for _ in 0..WARM_UP {
        call().await;
    }
    let per_batch = CALLS / BATCHES;
    let mut batch_means = Vec::with_capacity(BATCHES);
    for _ in 0..BATCHES {
        let started = Instant::now();
        for _ in 0..per_batch {
            call().await;
        }
        batch_means.push(started.elapsed() / per_batch as u32);
    }

    let mut samples = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        let started = Instant::now();
        call().await;
        samples.push(started.elapsed());
    }
    Summary { mean: Summary::of(batch_means).p50, ..Summary::of(samples) }
}

// ---------------------------------------------------------------------------
// 3. Memory of idle tenants

/// Memory of this process, in KiB: VmRSS and RssAnon from /proc/self/status,
/// and Pss from /proc/self/smaps_rollup.
#[derive(Debug, Clone, Copy)]
struct Resident {
    rss: u64,
    anonymous: u64,
    /// Proportional set size: a page mapped N times counts 1/N per mapping,
    /// so a memory-image page shared by many instances counts once. VmRSS
    /// counts it once per mapping.
    pss: u64,
}

impl Resident {
    fn read() -> Self {
        let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status is readable (Linux)");
        let rollup = std::fs::read_to_string("/proc/self/smaps_rollup").expect("/proc/self/smaps_rollup is readable (Linux 4.14 or later)");
        Self { rss: kib_field(&status, "VmRSS:"), anonymous: kib_field(&status, "RssAnon:"), pss: kib_field(&rollup, "Pss:") }
    }

    fn from_numbers(numbers: &[u64]) -> Self {
        Self { rss: numbers[0], anonymous: numbers[1], pss: numbers[2] }
    }

    fn numbers(self) -> String {
        format!("{} {} {}", self.rss, self.anonymous, self.pss)
    }
}

/// Parses a `Name:   1234 kB` line of a /proc file.
fn kib_field(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} line in the /proc file"))
}

/// Runs each allocator's measurement in a child process of this binary, so
/// that heap memory freed by the earlier measurements, which the allocator
/// keeps, cannot absorb the growth.
fn memory(scratch: &Path) {
    println!("\n## 3. memory of {IDLE_TENANTS} tenants, each with a live idle instance (one get-all-clients-status call each), one child process per allocator");
    let unpooled = run_memory_child("unpooled", scratch);
    let pooled = run_memory_child("pooled", scratch);

    println!("{:<10} {:>18} {:>16} {:>14} {:>14} {:>14}", "allocator", "VmRSS at start MiB", "VmRSS growth MiB", "VmRSS KiB/ten.", "Pss KiB/ten.", "RssAnon KiB/ten.");
    for (name, [start, live]) in [("unpooled", unpooled.0), ("pooled", pooled.0)] {
        let per_tenant = |kib: u64| kib as f64 / IDLE_TENANTS as f64;
        println!(
            "{name:<10} {:>18.1} {:>16.1} {:>14.1} {:>14.1} {:>14.1}",
            start.rss as f64 / 1024.0,
            live.rss.saturating_sub(start.rss) as f64 / 1024.0,
            per_tenant(live.rss.saturating_sub(start.rss)),
            per_tenant(live.pss.saturating_sub(start.pss)),
            per_tenant(live.anonymous.saturating_sub(start.anonymous))
        );
    }
    let growth = |[start, live]: [Resident; 2], field: fn(Resident) -> u64| field(live).saturating_sub(field(start)) as f64;
    println!(
        "pooled/unpooled, growth per tenant: VmRSS {:.2}, Pss {:.2}",
        growth(pooled.0, |r| r.rss) / growth(unpooled.0, |r| r.rss),
        growth(pooled.0, |r| r.pss) / growth(unpooled.0, |r| r.pss)
    );
    let (spare, error) = pooled.1.expect("the pooled child probes the pool");
    println!("pool capacity: with {IDLE_TENANTS} tenant instances live, {spare} more could be created; the next one failed: {error}");
}

/// Starts `bench-runtime --memory-child <allocator> <scratch>` and parses its
/// `memory` line: the readings before the tenants are created and after one
/// call each. The pooled child also prints a `spare` line, the instances the
/// pool still had beyond the tenants'.
fn run_memory_child(allocator: &str, scratch: &Path) -> ([Resident; 2], Option<(usize, String)>) {
    let exe = std::env::current_exe().expect("the path of this binary is known");
    let output = Command::new(exe).arg(MEMORY_CHILD).arg(allocator).arg(scratch).output().expect("the memory child starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "the {allocator} memory child failed: {}\n{stdout}{}", output.status, String::from_utf8_lossy(&output.stderr));
    let numbers: Vec<u64> = stdout
        .lines()
        .find_map(|line| line.strip_prefix("memory "))
        .unwrap_or_else(|| panic!("the {allocator} memory child printed no memory line: {stdout}"))
        .split_whitespace()
        .map(|n| n.parse().expect("the memory line has numbers"))
        .collect();
    assert_eq!(numbers.len(), 6, "the memory line has two readings of three numbers: {stdout}");
    let spare = stdout.lines().find_map(|line| line.strip_prefix("spare ")).map(|rest| {
        let (count, error) = rest.split_once(' ').unwrap_or((rest, ""));
        (count.parse().expect("the spare line starts with a number"), error.to_owned())
    });
    ([0, 3].map(|i| Resident::from_numbers(&numbers[i..i + 3])), spare)
}

async fn memory_child(pooling: bool, scratch: &Path) {
    let allocator = if pooling { "pooled" } else { "unpooled" };
    let runtime = load_runtime(pooling, scratch);
    // The pool has `max_instances` slots for tenants plus 8 spares for
    // self-checks and reloads, so 1,000 live instances fill exactly the
    // slots meant for tenants.
    assert_eq!(runtime.options().max_instances as usize, IDLE_TENANTS);
    let config = parse_config(&tenants_yaml(IDLE_TENANTS));
    let store = state_store(scratch.join(format!("memory-{allocator}.db")));

    let start = Resident::read();
    let tenants = Tenants::new(&config, store, runtime).expect("the tenants start");
    for tenant in tenants.iter() {
        let statuses = tenant.get_all_clients_status().await.expect("get-all-clients-status succeeds");
        assert_eq!(statuses.len(), DATABASES.len());
    }
    let live = Resident::read();
    assert_eq!(tenants.iter().count(), IDLE_TENANTS);
    println!("memory {} {}", start.numbers(), live.numbers());

    if pooling {
        let (spare, error) = count_spare_instances(&tenants).await;
        println!("spare {spare} {error}");
    }
}

/// Creates instances beyond the live tenants' until instantiation fails (at
/// most 100). Returns how many it created and the error message.
async fn count_spare_instances(tenants: &Tenants) -> (usize, String) {
    let runtime = &tenants.runtime;
    let version = runtime.current();
    let context = tenants.iter().next().expect("there is a tenant").context.clone();
    let mut extra = Vec::new();
    while extra.len() < 100 {
        let mut store = runtime.new_store(context.clone());
        match version.pre.instantiate_async(&mut store).await {
            Ok(plugin) => extra.push((store, plugin)),
            Err(error) => return (extra.len(), format!("{error:#}")),
        }
    }
    (extra.len(), "none failed".to_owned())
}

// ---------------------------------------------------------------------------
// 4. Latency during hot reload

/// Which bucket the callers' latencies go to.
const PHASE_RELOADING: u8 = 0;
const PHASE_STEADY: u8 = 1;
const PHASE_STOP: u8 = 2;

/// What the caller tasks share with the task that reloads.
struct CallerControl {
    phase: AtomicU8,
    /// Calls that found a new plugin version serving, so started a new
    /// instance, over all callers.
    moves: AtomicUsize,
}

/// Latencies one caller task measured, by phase.
#[derive(Default)]
struct CallerLatencies {
    reloading: Vec<Duration>,
    steady: Vec<Duration>,
    /// Calls that started an instance of a new version (also in `reloading`).
    moved: Vec<Duration>,
}

/// Reloads a changed copy of the plugin [`RELOADS`] times while
/// [`CALLER_TASKS`] tasks call `status` in a loop. After each reload, and
/// after every caller has moved to the new version, the same callers run for
/// as long again with no reload (the steady baseline). Alternating the two
/// phases exposes both to the same background load.
async fn reload_latency(scratch: &Path) {
    println!("\n## 4. status latency, {CALLER_TASKS} tasks calling in a loop (one tenant each, pooled), during {RELOADS} hot reloads vs steady windows of the same length");
    let dir = scratch.join("reload");
    std::fs::create_dir_all(&dir).expect("the reload directory can be created");
    let live = dir.join("plugin.wasm");
    let original = std::fs::read(plugin_path()).expect("the plugin file is readable");
    std::fs::write(&live, &original).expect("the plugin copy can be written");

    // A cache, as `agros-sync serve` uses: each reload compiles its new file
    // and also writes it there.
    let runtime = PluginRuntime::new(&live, RuntimeOptions::default(), Some(PluginCache::new(dir.join("cache")))).expect("the plugin copy loads");
    let config = parse_config(&tenants_yaml(CALLER_TASKS));
    let tenants = Tenants::new(&config, state_store(dir.join("state.db")), runtime.clone()).expect("the tenants start");
    for tenant in tenants.iter() {
        tenant.status().await.expect("status succeeds");
    }

    let control = Arc::new(CallerControl { phase: AtomicU8::new(PHASE_STEADY), moves: AtomicUsize::new(0) });
    let callers: Vec<_> = tenants.iter().map(|tenant| tokio::spawn(call_status_until_stopped(tenant.clone(), control.clone()))).collect();
    // Warm-up: the callers run steady for a while before anything counts.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut reload_times = Vec::with_capacity(RELOADS);
    let mut reloading_wall = Duration::ZERO;
    let mut steady_wall = Duration::ZERO;
    for variant in 1..=RELOADS {
        write_variant(&live, &original, variant);
        control.phase.store(PHASE_RELOADING, Ordering::Relaxed);
        let started = Instant::now();
        let outcome = runtime.reload().await.expect("the changed plugin reloads");
        reload_times.push(started.elapsed());
        assert!(matches!(outcome, ReloadOutcome::Swapped { .. }), "variant {variant} has a new hash, got {outcome:?}");
        // Each caller's first call after the swap starts an instance of the
        // new version; that call belongs to the reload window.
        let deadline = Instant::now() + Duration::from_secs(10);
        while control.moves.load(Ordering::Relaxed) < CALLER_TASKS * variant {
            assert!(Instant::now() < deadline, "only {} moves to a new version after reload {variant}", control.moves.load(Ordering::Relaxed));
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let window = started.elapsed();
        reloading_wall += window;

        control.phase.store(PHASE_STEADY, Ordering::Relaxed);
        let started = Instant::now();
        tokio::time::sleep(window).await;
        steady_wall += started.elapsed();
    }
    control.phase.store(PHASE_STOP, Ordering::Relaxed);

    let mut all = CallerLatencies::default();
    for caller in callers {
        let latencies = caller.await.expect("a caller task does not panic");
        all.reloading.extend(latencies.reloading);
        all.steady.extend(latencies.steady);
        all.moved.extend(latencies.moved);
    }
    assert_eq!(control.moves.load(Ordering::Relaxed), CALLER_TASKS * RELOADS, "each caller moves once per reload");
    let reloads = Summary::of(reload_times);
    let during = Summary::of(all.reloading);
    let steady = Summary::of(all.steady);
    let moved = Summary::of(all.moved);

    println!(
        "reload (read, compile, write to cache, self-check, swap): mean {:.0} ms, max {:.0} ms; reload windows {:.1} s in all, steady windows {:.1} s",
        reloads.mean.as_secs_f64() * 1e3,
        reloads.max.as_secs_f64() * 1e3,
        reloading_wall.as_secs_f64(),
        steady_wall.as_secs_f64()
    );
    println!("{:<40} {:>9} {:>9} {:>9} {:>9} {:>9}", "window", "calls", "calls/s", "p50 µs", "p99 µs", "max ms");
    for (name, summary, wall) in [("steady (baseline)", steady, Some(steady_wall)), ("during reloads", during, Some(reloading_wall)), ("  of which first call on a new version", moved, None)] {
        let rate = wall.map(|wall| format!("{:.0}", summary.count as f64 / wall.as_secs_f64())).unwrap_or_default();
        println!(
            "{name:<40} {:>9} {rate:>9} {:>9.1} {:>9.1} {:>9.2}",
            summary.count,
            micros(summary.p50),
            micros(summary.p99),
            summary.max.as_secs_f64() * 1e3
        );
    }
    println!(
        "during/steady: p50 {:.2}, p99 {:.2}, max {:.2}, calls/s {:.2}",
        ratio(during.p50, steady.p50),
        ratio(during.p99, steady.p99),
        ratio(during.max, steady.max),
        (during.count as f64 / reloading_wall.as_secs_f64()) / (steady.count as f64 / steady_wall.as_secs_f64())
    );
}

/// Calls `status` until the phase is [`PHASE_STOP`], filing each call's
/// latency under the phase it started in.
async fn call_status_until_stopped(tenant: Arc<Tenant>, control: Arc<CallerControl>) -> CallerLatencies {
    let mut latencies = CallerLatencies::default();
    let mut hash = tenant.plugin_info().hash;
    loop {
        let phase = control.phase.load(Ordering::Relaxed);
        if phase == PHASE_STOP {
            return latencies;
        }
        let started = Instant::now();
        let (statuses, info) = tenant.status().await.expect("status succeeds");
        let elapsed = started.elapsed();
        assert_eq!(statuses.len(), DATABASES.len());
        if info.hash != hash {
            latencies.moved.push(elapsed);
            control.moves.fetch_add(1, Ordering::Relaxed);
            hash = info.hash;
        }
        match phase {
            PHASE_RELOADING => latencies.reloading.push(elapsed),
            _ => latencies.steady.push(elapsed),
        }
        // Lets the other tasks on this worker run between two calls.
        tokio::task::yield_now().await;
    }
}

/// Writes the plugin with a custom section appended (harness
/// `with_custom_section`), which changes its hash but not its code, under a
/// temporary name, then renames it over `live`.
fn write_variant(live: &Path, original: &[u8], variant: usize) {
    let bytes = with_custom_section(original, "agros-bench-reload", format!("variant {variant}").as_bytes());
    let temporary = live.with_extension("wasm.tmp");
    std::fs::write(&temporary, bytes).expect("the plugin variant can be written");
    std::fs::rename(&temporary, live).expect("the plugin variant can be renamed into place");
}

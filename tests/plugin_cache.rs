//! The on-disk cache of compiled plugins.

use std::sync::Arc;
use std::time::Duration;

use agros_sync_host::engine::PluginRuntime;
use agros_sync_host::host_state::TenantContext;
use agros_sync_host::plugin_cache::PluginCache;
use agros_sync_host::state::{SqliteStore, StateLocation};
use agros_sync_host::tenant::Tenant;
use agros_sync_tests::*;

fn cache_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("agros-sync-cache-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn cached_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect()
}

/// Runs `status` on a runtime, proving the loaded component works.
async fn works(runtime: Arc<PluginRuntime>) {
    let config = parse_config(&format!("databases:\n{}", database_yaml("farm", &server_a())));
    let store = SqliteStore::open(&StateLocation::SqliteMemory).unwrap();
    let context = Arc::new(TenantContext::new("default", &config, store));
    let tenant = Tenant::with_context(context, runtime, Duration::from_secs(60));
    assert_eq!(tenant.get_all_clients_status().await.unwrap().len(), 1);
}

#[tokio::test]
async fn second_load_reuses_compiled_file() {
    let dir = cache_dir("reuse");
    let cache = PluginCache::new(dir.clone());

    let first = PluginRuntime::load_with_cache(&plugin_path(), Some(cache.clone())).unwrap();
    let files = cached_files(&dir);
    assert_eq!(files.len(), 1);
    let written = std::fs::metadata(&files[0]).unwrap().modified().unwrap();
    let second = PluginRuntime::load_with_cache(&plugin_path(), Some(cache.clone())).unwrap();

    assert_eq!(cached_files(&dir), files);
    assert_eq!(std::fs::metadata(&files[0]).unwrap().modified().unwrap(), written, "the cached file is not rewritten");
    let name = files[0].file_name().unwrap().to_string_lossy().to_string();
    assert!(name.starts_with(&first.current().hash), "{name}");
    assert_eq!(first.current().hash, second.current().hash);
    assert_eq!(first.current().hash.len(), 64);
    works(second).await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn corrupt_cache_file_is_compiled_again() {
    let dir = cache_dir("corrupt");
    let cache = PluginCache::new(dir.clone());
    PluginRuntime::load_with_cache(&plugin_path(), Some(cache.clone())).unwrap();
    let file = cached_files(&dir).remove(0);
    std::fs::write(&file, b"not a compiled component").unwrap();

    let runtime = PluginRuntime::load_with_cache(&plugin_path(), Some(cache.clone())).unwrap();

    assert!(std::fs::metadata(&file).unwrap().len() > 1000, "the broken file is replaced");
    works(runtime).await;
    std::fs::remove_dir_all(dir).unwrap();
}

//! The on-disk cache of compiled plugins, so that a restart does not compile
//! the component again (about 0.3 s on 2 cores, more under load).
//!
//! Files are keyed by content: the SHA-256 of the component bytes and
//! wasmtime's compatibility hash of the engine settings and version. A file is
//! written under a temporary name and renamed into place, so it is never
//! overwritten in place and a reader never sees half of one.
//!
//! Trust boundary: loading a compiled file runs its machine code without the
//! checks a compile does. The cache directory is created readable and
//! writable by the host's user only, and must stay so.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use wasmtime::component::Component;
use wasmtime::Engine;

#[derive(Debug, Clone)]
pub struct PluginCache {
    dir: PathBuf,
}

impl PluginCache {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// `$XDG_CACHE_HOME/agros-sync`, `$HOME/.cache/agros-sync`, or a folder in
    /// the system's temporary directory.
    pub fn default_dir() -> PathBuf {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|home| PathBuf::from(home).join(".cache")))
            .unwrap_or_else(std::env::temp_dir);
        base.join("agros-sync")
    }

    /// Returns the compiled component for `bytes`, from the cache when it has
    /// it, compiling and storing it otherwise. Returns the content key too.
    pub fn load(&self, engine: &Engine, bytes: &[u8]) -> anyhow::Result<(Component, String)> {
        let key = cache_key(engine, bytes);
        let path = self.dir.join(format!("{key}.cwasm"));

        if path.exists() {
            // SAFETY: the file was written by `store` below from
            // `Engine::precompile_component`, in a directory only this user can
            // write, and its name includes the engine's compatibility hash.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(component) => return Ok((component, key)),
                Err(e) => tracing::warn!(path = %path.display(), error = %format!("{e:?}"), "cached plugin is unusable; compiling again"),
            }
        }

        let compiled = engine.precompile_component(bytes).map_err(|e| anyhow!("{e:#}"))?;
        if let Err(e) = self.store(&path, &compiled) {
            tracing::warn!(path = %path.display(), error = %format!("{e:#}"), "failed to cache the compiled plugin; it will be compiled again next time");
        }
        // SAFETY: `compiled` was produced by `precompile_component` on this engine just now.
        let component = unsafe { Component::deserialize(engine, &compiled) }.map_err(|e| anyhow!("{e:#}"))?;
        Ok((component, key))
    }

    fn store(&self, path: &Path, compiled: &[u8]) -> anyhow::Result<()> {
        create_private_dir(&self.dir)?;
        let temporary = self.dir.join(format!(".{}.{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("plugin"), std::process::id()));
        std::fs::write(&temporary, compiled).with_context(|| format!("failed to write {}", temporary.display()))?;
        std::fs::rename(&temporary, path).with_context(|| format!("failed to rename {} to {}", temporary.display(), path.display()))?;
        Ok(())
    }
}

/// `<sha256 of the component>-<engine compatibility hash>`, in hex.
pub fn cache_key(engine: &Engine, bytes: &[u8]) -> String {
    let content = crate::engine::sha256_hex(bytes);
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("{content}-{:016x}", hasher.finish())
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("failed to create cache directory {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("failed to restrict cache directory {}", dir.display()))?;
    }
    Ok(())
}

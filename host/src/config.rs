//! `config.yaml`: loading, `${ENV_VAR}` interpolation and validation.
//!
//! The file has the shape the Agros platform already uses:
//!
//! ```yaml
//! databases:
//!   farm:
//!     baseUri: postgres://agros@localhost/farm
//!     sync: true
//!     parse:
//!       server_url: https://parse.example.org/parse
//!       app_id: agros-farm
//!       master_key: ${FARM_MASTER_KEY}
//!       rest_api_key: ${FARM_REST_KEY}
//! ```
//!
//! Several farm organisations can share one host: `tenants: <name>: {databases:
//! ...}` gives each its own databases. A file with a top-level `databases:`
//! and no `tenants:` has one tenant, named `default`.
//!
//! Every error names the path of the bad key (`databases.farm.parse.app_id`).
//! Unknown keys are errors too, so a misspelt option is not silently ignored.
//! Relative paths (`state.url`, `plugin.path`) are relative to the directory of
//! the configuration file.

use std::fmt;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::Deserialize;
use thiserror::Error;
use url::Url;

use crate::state::StateLocation;

/// Default `limits.max_object_bytes`: 16 MiB, below Parse Server's default
/// request body limit of 20 MB (`maxUploadSize`).
pub const DEFAULT_MAX_OBJECT_BYTES: u64 = 16 * 1024 * 1024;
/// Default `limits.query_page_size`.
pub const DEFAULT_QUERY_PAGE_SIZE: u32 = 1000;
/// Default `limits.request_timeout_secs`.
pub const DEFAULT_REQUEST_TIMEOUT_SECS: u64 = 30;
/// Default `limits.plugin_memory_bytes`: 256 MiB of linear memory per instance.
pub const DEFAULT_PLUGIN_MEMORY_BYTES: u64 = 256 * 1024 * 1024;
/// Default `limits.call_timeout_secs`: time one exported call may take.
pub const DEFAULT_CALL_TIMEOUT_SECS: u64 = 300;
/// Default `limits.batch_size`: Parse Server's `/batch` takes up to 50
/// operations per request in common deployments.
pub const DEFAULT_BATCH_SIZE: u32 = 50;
/// Default `limits.retry_initial_ms`.
pub const DEFAULT_RETRY_INITIAL_MS: u64 = 1000;
/// Default `limits.retry_max_ms`: 5 minutes.
pub const DEFAULT_RETRY_MAX_MS: u64 = 300_000;
/// Default `plugin.path`, the guest's release build inside this repository.
pub const DEFAULT_PLUGIN_PATH: &str = "target/wasm32-wasip2/release/agros_sync_guest.wasm";
/// Default `state.url`.
pub const DEFAULT_STATE_URL: &str = "sqlite://./agros-sync.db";
/// Default `limits.max_instances`: plugin instances the pool holds, one per
/// tenant in use.
pub const DEFAULT_MAX_INSTANCES: u32 = 1000;
/// The tenant a file without `tenants:` defines.
pub const DEFAULT_TENANT: &str = "default";

/// A configuration error: which key (or file) and what is wrong with it.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: invalid YAML{location}: {message}")]
    Yaml { path: PathBuf, location: String, message: String },
    #[error("{path}: key `{key}`: {message}")]
    Invalid { path: PathBuf, key: String, message: String },
}

/// A secret from the configuration. Its `Debug` and `Display` never show it.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    pub state: StateLocation,
    pub plugin_path: PathBuf,
    /// The directory of cached compiled plugins. `None` means the user's cache
    /// directory (`PluginCache::default_dir`).
    pub plugin_cache_dir: Option<PathBuf>,
    /// Whether instances come from a pre-allocated pool (`plugin.pooling`).
    pub pooling: bool,
    /// Whether `serve` reloads the plugin when its file changes
    /// (`plugin.watch`).
    pub watch_plugin: bool,
    pub limits: Limits,
    /// Tenants in file order; at least one.
    pub tenants: Vec<TenantConfig>,
}

/// One tenant: a farm organisation with its own databases.
#[derive(Debug, Clone)]
pub struct TenantConfig {
    pub name: String,
    /// Databases in file order.
    pub databases: Vec<Database>,
}

impl TenantConfig {
    /// Lists the databases with `sync: true`.
    pub fn synced_databases(&self) -> impl Iterator<Item = (&Database, &ParseServer)> {
        self.databases.iter().filter(|d| d.sync).filter_map(|d| Some((d, d.parse.as_ref()?)))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub max_object_bytes: u64,
    pub query_page_size: u32,
    pub request_timeout_secs: u64,
    pub plugin_memory_bytes: usize,
    pub call_timeout_secs: u64,
    pub batch_size: u32,
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
    pub max_instances: u32,
}

/// One entry of `databases:`.
#[derive(Debug, Clone)]
pub struct Database {
    pub key: String,
    /// The platform's own database URI; informative, never used for sync.
    pub base_uri: Option<String>,
    pub sync: bool,
    pub parse: Option<ParseServer>,
}

/// A database's Parse Server application.
#[derive(Debug, Clone)]
pub struct ParseServer {
    /// The server URL with its mount path and no trailing slash.
    pub server_url: Url,
    pub app_id: String,
    pub master_key: Option<Secret>,
    pub rest_api_key: Option<Secret>,
}

impl ParseServer {
    /// `server_url` as a string without a trailing slash.
    pub fn url_text(&self) -> String {
        self.server_url.as_str().trim_end_matches('/').to_owned()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    state: RawState,
    #[serde(default)]
    plugin: RawPlugin,
    #[serde(default)]
    limits: RawLimits,
    databases: Option<IndexMap<String, RawDatabase>>,
    tenants: Option<IndexMap<String, RawTenant>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTenant {
    databases: IndexMap<String, RawDatabase>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawState {
    url: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPlugin {
    path: Option<PathBuf>,
    cache_dir: Option<PathBuf>,
    pooling: Option<bool>,
    watch: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_object_bytes: Option<u64>,
    query_page_size: Option<u32>,
    request_timeout_secs: Option<u64>,
    plugin_memory_bytes: Option<u64>,
    call_timeout_secs: Option<u64>,
    batch_size: Option<u32>,
    retry_initial_ms: Option<u64>,
    retry_max_ms: Option<u64>,
    max_instances: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatabase {
    #[serde(rename = "baseUri")]
    base_uri: Option<String>,
    #[serde(default = "default_sync")]
    sync: bool,
    parse: Option<RawParse>,
}

fn default_sync() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawParse {
    server_url: String,
    app_id: String,
    master_key: Option<Secret>,
    rest_api_key: Option<Secret>,
}

impl Config {
    /// Reads, interpolates and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::parse(&text, path, &|name| std::env::var(name).ok())
    }

    /// Parses configuration text; `env` looks up variables for `${NAME}`.
    pub fn parse(text: &str, path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut value: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| ConfigError::Yaml {
            path: path.to_owned(),
            location: e.location().map(|l| format!(" at line {}, column {}", l.line(), l.column())).unwrap_or_default(),
            message: e.to_string(),
        })?;
        interpolate(&mut value, "", env).map_err(|(key, message)| ConfigError::Invalid { path: path.to_owned(), key, message })?;

        let raw: RawConfig = serde_path_to_error::deserialize(value).map_err(|e| ConfigError::Invalid {
            path: path.to_owned(),
            key: e.path().to_string(),
            message: e.inner().to_string(),
        })?;
        let base_dir = path.parent().map(Path::to_owned).unwrap_or_default();
        let mut config = validate(raw, &base_dir).map_err(|(key, message)| ConfigError::Invalid { path: path.to_owned(), key, message })?;
        config.path = path.to_owned();
        Ok(config)
    }

    /// Returns the tenant called `name`.
    pub fn tenant(&self, name: &str) -> Option<&TenantConfig> {
        self.tenants.iter().find(|t| t.name == name)
    }

    /// Returns the tenants' names, in file order.
    pub fn tenant_names(&self) -> Vec<&str> {
        self.tenants.iter().map(|t| t.name.as_str()).collect()
    }
}

type KeyError = (String, String);

/// Replaces `${NAME}` and `${NAME:-default}` in every string scalar.
fn interpolate(value: &mut serde_yaml::Value, key: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<(), KeyError> {
    match value {
        serde_yaml::Value::String(text) => {
            *text = expand(text, env).map_err(|message| (key.to_owned(), message))?;
        }
        serde_yaml::Value::Mapping(map) => {
            for (name, inner) in map.iter_mut() {
                let name = name.as_str().map(str::to_owned).unwrap_or_else(|| format!("{name:?}"));
                let child = if key.is_empty() { name } else { format!("{key}.{name}") };
                interpolate(inner, &child, env)?;
            }
        }
        serde_yaml::Value::Sequence(items) => {
            for (index, inner) in items.iter_mut().enumerate() {
                interpolate(inner, &format!("{key}[{index}]"), env)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn expand(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or_else(|| format!("unclosed `${{` in {text:?}"))?;
        let expression = &after[..end];
        let (name, default) = match expression.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (expression, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("invalid environment variable name {name:?} in `${{{expression}}}`"));
        }
        match (env(name), default) {
            (Some(value), _) if !value.is_empty() => out.push_str(&value),
            (_, Some(default)) => out.push_str(default),
            (Some(value), None) => out.push_str(&value),
            (None, None) => {
                return Err(format!("environment variable {name} is not set; export it or write `${{{name}:-default}}`"));
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn validate(raw: RawConfig, base_dir: &Path) -> Result<Config, KeyError> {
    let limits = Limits {
        max_object_bytes: positive(raw.limits.max_object_bytes, DEFAULT_MAX_OBJECT_BYTES, "limits.max_object_bytes")?,
        query_page_size: positive(raw.limits.query_page_size.map(u64::from), DEFAULT_QUERY_PAGE_SIZE.into(), "limits.query_page_size")? as u32,
        request_timeout_secs: positive(raw.limits.request_timeout_secs, DEFAULT_REQUEST_TIMEOUT_SECS, "limits.request_timeout_secs")?,
        plugin_memory_bytes: positive(raw.limits.plugin_memory_bytes, DEFAULT_PLUGIN_MEMORY_BYTES, "limits.plugin_memory_bytes")? as usize,
        call_timeout_secs: positive(raw.limits.call_timeout_secs, DEFAULT_CALL_TIMEOUT_SECS, "limits.call_timeout_secs")?,
        batch_size: positive(raw.limits.batch_size.map(u64::from), DEFAULT_BATCH_SIZE.into(), "limits.batch_size")? as u32,
        retry_initial_ms: positive(raw.limits.retry_initial_ms, DEFAULT_RETRY_INITIAL_MS, "limits.retry_initial_ms")?,
        retry_max_ms: positive(raw.limits.retry_max_ms, DEFAULT_RETRY_MAX_MS, "limits.retry_max_ms")?,
        max_instances: positive(raw.limits.max_instances.map(u64::from), DEFAULT_MAX_INSTANCES.into(), "limits.max_instances")? as u32,
    };
    if limits.plugin_memory_bytes < 1024 * 1024 {
        return Err(("limits.plugin_memory_bytes".into(), format!("{} is below 1 MiB, too little for the plugin to start", limits.plugin_memory_bytes)));
    }
    if limits.batch_size > 50 {
        return Err(("limits.batch_size".into(), format!("{} is above 50, the most operations one Parse /batch request should carry", limits.batch_size)));
    }
    if limits.retry_max_ms < limits.retry_initial_ms {
        return Err(("limits.retry_max_ms".into(), "must not be less than limits.retry_initial_ms".into()));
    }
    let state = state_location(raw.state.url.as_deref().unwrap_or(DEFAULT_STATE_URL), base_dir)?;
    let plugin_path = base_dir.join(raw.plugin.path.unwrap_or_else(|| PathBuf::from(DEFAULT_PLUGIN_PATH)));
    let plugin_cache_dir = raw.plugin.cache_dir.map(|dir| base_dir.join(dir));

    let tenants = match (raw.databases, raw.tenants) {
        (Some(_), Some(_)) => {
            return Err(("databases".into(), "a file with `tenants:` keeps every database under its tenant; move these under `tenants.default.databases`".into()));
        }
        (None, None) => return Err(("databases".into(), "missing; add `databases:` or `tenants:`".into())),
        (Some(databases), None) => vec![validate_tenant(DEFAULT_TENANT, databases, "databases")?],
        (None, Some(raw_tenants)) => {
            if raw_tenants.is_empty() {
                return Err(("tenants".into(), "no tenant is configured; add at least one entry".into()));
            }
            let mut tenants = Vec::with_capacity(raw_tenants.len());
            for (name, tenant) in raw_tenants {
                if !valid_tenant_name(&name) {
                    return Err((format!("tenants.{name}"), "a tenant name is 1 to 64 lowercase letters, digits, '_' and '-'".into()));
                }
                let at = format!("tenants.{name}.databases");
                tenants.push(validate_tenant(&name, tenant.databases, &at)?);
            }
            tenants
        }
    };
    // Instances are not evicted, so each tenant keeps its pool slot once used.
    let pooling = raw.plugin.pooling.unwrap_or(true);
    if pooling && tenants.len() > limits.max_instances as usize {
        return Err((
            "limits.max_instances".into(),
            format!(
                "{} is less than the {} configured tenants, and each tenant keeps one pooled plugin instance; set it to at least {}",
                limits.max_instances,
                tenants.len(),
                tenants.len()
            ),
        ));
    }
    Ok(Config {
        path: PathBuf::new(),
        state,
        plugin_path,
        plugin_cache_dir,
        pooling,
        watch_plugin: raw.plugin.watch.unwrap_or(true),
        limits,
        tenants,
    })
}

/// Checks whether `name` can name a tenant. Tenant names appear in logs,
/// URLs and state keys.
pub fn valid_tenant_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn validate_tenant(name: &str, raw: IndexMap<String, RawDatabase>, at: &str) -> Result<TenantConfig, KeyError> {
    if raw.is_empty() {
        return Err((at.into(), "no database is configured; add at least one entry".into()));
    }
    let mut databases = Vec::with_capacity(raw.len());
    for (key, database) in raw {
        databases.push(validate_database(key, database, at)?);
    }
    Ok(TenantConfig { name: name.to_owned(), databases })
}

fn validate_database(key: String, raw: RawDatabase, prefix: &str) -> Result<Database, KeyError> {
    let at = |suffix: &str| format!("{prefix}.{key}{suffix}");
    if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err((at(""), "a database key may contain only letters, digits, '_' and '-'".into()));
    }
    let parse = match raw.parse {
        None if raw.sync => {
            return Err((at(".parse"), "missing; a database with `sync: true` needs `parse: {server_url, app_id, master_key}`".into()));
        }
        None => None,
        Some(parse) => Some(validate_parse(parse, raw.sync, &at)?),
    };
    Ok(Database { key, base_uri: raw.base_uri, sync: raw.sync, parse })
}

fn validate_parse(raw: RawParse, sync: bool, at: &dyn Fn(&str) -> String) -> Result<ParseServer, KeyError> {
    // Errors show the URL without any user name or password in it.
    let shown = redact_userinfo(&raw.server_url);
    let server_url = Url::parse(raw.server_url.trim())
        .map_err(|e| (at(".parse.server_url"), format!("{shown:?} is not a URL ({e}); write it like http://127.0.0.1:1337/parse")))?;
    if !matches!(server_url.scheme(), "http" | "https") || server_url.host().is_none() {
        return Err((at(".parse.server_url"), format!("{shown:?} must be an http:// or https:// URL with a host")));
    }
    if server_url.query().is_some() || server_url.fragment().is_some() || !server_url.username().is_empty() || server_url.password().is_some() {
        return Err((at(".parse.server_url"), format!("{shown:?} must not have a query, fragment, user name or password")));
    }
    if raw.app_id.trim().is_empty() {
        return Err((at(".parse.app_id"), "must not be empty".into()));
    }
    let master_key = raw.master_key.filter(|k| !k.0.is_empty());
    if sync && master_key.is_none() {
        return Err((at(".parse.master_key"), "missing; the sync client needs the master key (write `${ENV_VAR}` to keep it out of the file)".into()));
    }
    Ok(ParseServer {
        server_url,
        app_id: raw.app_id.trim().to_owned(),
        master_key,
        rest_api_key: raw.rest_api_key.filter(|k| !k.0.is_empty()),
    })
}

/// Replaces the user name and password of a URL-like text with `***`.
fn redact_userinfo(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let authority_end = url[scheme_end..].find(['/', '?', '#']).map_or(url.len(), |i| scheme_end + i);
    match url[scheme_end..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..scheme_end], &url[scheme_end + at..]),
        None => url.to_owned(),
    }
}

fn positive(value: Option<u64>, default: u64, key: &str) -> Result<u64, KeyError> {
    match value {
        None => Ok(default),
        Some(0) => Err((key.into(), "must be greater than 0".into())),
        Some(value) => Ok(value),
    }
}

fn state_location(url: &str, base_dir: &Path) -> Result<StateLocation, KeyError> {
    if url == "sqlite::memory:" {
        return Ok(StateLocation::SqliteMemory);
    }
    if let Some(path) = url.strip_prefix("sqlite://") {
        if path.is_empty() {
            return Err(("state.url".into(), "the sqlite:// URL has no path; write sqlite://./agros-sync.db".into()));
        }
        return Ok(StateLocation::SqliteFile(base_dir.join(path)));
    }
    // TODO: PostgreSQL as the state store (shared outbox across hosts) is not
    // implemented; only SQLite is.
    Err(("state.url".into(), format!("{:?} is not supported; use sqlite://PATH or sqlite::memory:", redact_userinfo(url))))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "
databases:
  farm:
    baseUri: postgres://agros@localhost/farm
    parse:
      server_url: http://127.0.0.1:1337/parse/
      app_id: agros-a
      master_key: ${MASTER}
  archive:
    sync: false
";

    fn parse_with(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::parse(text, Path::new("/etc/agros/config.yaml"), &move |name| {
            vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
    }

    fn invalid_key(err: ConfigError) -> String {
        match err {
            ConfigError::Invalid { key, .. } => key,
            other => panic!("expected an invalid key, got {other}"),
        }
    }

    #[test]
    fn minimal_file_loads_with_defaults() {
        let config = parse_with(MINIMAL, &[("MASTER", "m-key")]).unwrap();
        assert_eq!(config.tenant_names(), ["default"]);
        let tenant = &config.tenants[0];
        assert_eq!(tenant.databases.len(), 2);
        let farm = &tenant.databases[0];
        assert!(farm.sync);
        let parse = farm.parse.as_ref().unwrap();
        assert_eq!(parse.url_text(), "http://127.0.0.1:1337/parse");
        assert_eq!(parse.master_key.as_ref().unwrap().expose(), "m-key");
        assert!(!tenant.databases[1].sync);
        assert_eq!(config.state, StateLocation::SqliteFile(PathBuf::from("/etc/agros/./agros-sync.db")));
        assert_eq!(config.plugin_path, PathBuf::from("/etc/agros").join(DEFAULT_PLUGIN_PATH));
        assert_eq!(config.limits.max_object_bytes, DEFAULT_MAX_OBJECT_BYTES);
        assert_eq!(tenant.synced_databases().count(), 1);
        assert!(config.pooling);
        assert_eq!(config.limits.max_instances, DEFAULT_MAX_INSTANCES);
    }

    #[test]
    fn missing_env_var_names_key_and_variable() {
        let err = parse_with(MINIMAL, &[]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("databases.farm.parse.master_key"), "{text}");
        assert!(text.contains("MASTER"), "{text}");
    }

    #[test]
    fn env_default_is_used() {
        let text = MINIMAL.replace("${MASTER}", "${MASTER:-fallback}");
        let config = parse_with(&text, &[]).unwrap();
        assert_eq!(config.tenants[0].databases[0].parse.as_ref().unwrap().master_key.as_ref().unwrap().expose(), "fallback");
    }

    #[test]
    fn unknown_key_is_rejected_with_path() {
        let text = MINIMAL.replace("app_id: agros-a", "app_id: agros-a\n      masterKey: x");
        assert_eq!(invalid_key(parse_with(&text, &[("MASTER", "m")]).unwrap_err()), "databases.farm.parse.masterKey");
    }

    #[test]
    fn bad_url_is_rejected_with_path() {
        let text = MINIMAL.replace("http://127.0.0.1:1337/parse/", "ftp://host/parse");
        assert_eq!(invalid_key(parse_with(&text, &[("MASTER", "m")]).unwrap_err()), "databases.farm.parse.server_url");
    }

    #[test]
    fn wrong_type_names_path() {
        let text = MINIMAL.replace("sync: false", "sync: maybe");
        assert_eq!(invalid_key(parse_with(&text, &[("MASTER", "m")]).unwrap_err()), "databases.archive.sync");
    }

    #[test]
    fn synced_database_needs_parse_section() {
        let text = MINIMAL.replace("sync: false", "sync: true");
        assert_eq!(invalid_key(parse_with(&text, &[("MASTER", "m")]).unwrap_err()), "databases.archive.parse");
    }

    #[test]
    fn broken_yaml_reports_line() {
        let err = parse_with("databases:\n  farm: [\n", &[]).unwrap_err();
        assert!(matches!(err, ConfigError::Yaml { ref location, .. } if location.contains("line")), "{err}");
    }

    #[test]
    fn secret_debug_is_masked() {
        let config = parse_with(MINIMAL, &[("MASTER", "top-secret-value")]).unwrap();
        assert!(!format!("{config:?}").contains("top-secret-value"));
    }

    #[test]
    fn postgres_state_is_not_supported_yet() {
        let text = format!("state:\n  url: postgres://localhost/agros\n{MINIMAL}");
        assert_eq!(invalid_key(parse_with(&text, &[("MASTER", "m")]).unwrap_err()), "state.url");
    }

    const TWO_TENANTS: &str = "
tenants:
  north-coop:
    databases:
      farm:
        parse: {server_url: http://127.0.0.1:1337/parse, app_id: agros-a, master_key: a}
  south_estate:
    databases:
      farm:
        parse: {server_url: http://127.0.0.1:1338/parse, app_id: agros-b, master_key: b}
      archive: {sync: false}
";

    #[test]
    fn tenants_keep_their_own_databases() {
        let config = parse_with(TWO_TENANTS, &[]).unwrap();
        assert_eq!(config.tenant_names(), ["north-coop", "south_estate"]);
        let north = config.tenant("north-coop").unwrap();
        assert_eq!(north.databases.len(), 1);
        assert_eq!(north.databases[0].parse.as_ref().unwrap().app_id, "agros-a");
        let south = config.tenant("south_estate").unwrap();
        assert_eq!(south.databases.iter().map(|d| d.key.as_str()).collect::<Vec<_>>(), ["farm", "archive"]);
        assert!(config.tenant("default").is_none());
    }

    #[test]
    fn tenant_errors_name_the_tenant_path() {
        let text = TWO_TENANTS.replace("master_key: b", "master_key: ''");
        assert_eq!(invalid_key(parse_with(&text, &[]).unwrap_err()), "tenants.south_estate.databases.farm.parse.master_key");
        let text = TWO_TENANTS.replace("north-coop", "North Coop");
        assert_eq!(invalid_key(parse_with(&text, &[]).unwrap_err()), "tenants.North Coop");
    }

    #[test]
    fn databases_and_tenants_together_are_rejected() {
        let text = format!("{TWO_TENANTS}{}", MINIMAL.replace("${MASTER}", "m"));
        let err = parse_with(&text, &[]).unwrap_err();
        assert_eq!(invalid_key(err), "databases");
    }

    #[test]
    fn example_file_loads() {
        let text = include_str!("../../config.example.yaml");
        let config = parse_with(text, &[("AGROS_PARSE_MASTER_KEY_A", "a"), ("AGROS_PARSE_MASTER_KEY_B", "b")]).unwrap();
        assert_eq!(config.tenant_names(), ["default"]);
        assert_eq!(config.tenants[0].databases.len(), 3);
        assert!(config.pooling);
        assert!(config.watch_plugin);
        assert_eq!(config.limits.max_instances, 1000);
    }

    #[test]
    fn more_tenants_than_instances_is_rejected() {
        let text = format!("limits:\n  max_instances: 1\n{TWO_TENANTS}");
        let err = parse_with(&text, &[]).unwrap_err();
        assert!(err.to_string().contains("1 is less than the 2 configured tenants"), "{err}");
        assert!(err.to_string().ends_with("set it to at least 2"), "{err}");
        assert_eq!(invalid_key(err), "limits.max_instances");
        // Without the pool there are no slots to run out of.
        let text = format!("plugin:\n  pooling: false\nlimits:\n  max_instances: 1\n{TWO_TENANTS}");
        assert_eq!(parse_with(&text, &[]).unwrap().tenants.len(), 2);
    }

    #[test]
    fn url_password_is_not_shown_in_errors() {
        let text = MINIMAL.replace("http://127.0.0.1:1337/parse/", "http://agros:pa55word@127.0.0.1:1337/parse");
        let err = parse_with(&text, &[("MASTER", "m")]).unwrap_err().to_string();
        assert!(!err.contains("pa55word"), "{err}");
        assert!(err.contains("http://***@127.0.0.1:1337/parse"), "{err}");
        let text = MINIMAL.replace("http://127.0.0.1:1337/parse/", "http://agros:pa55word@[bad/parse");
        let err = parse_with(&text, &[("MASTER", "m")]).unwrap_err().to_string();
        assert!(!err.contains("pa55word"), "{err}");
    }
}

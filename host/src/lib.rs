//! The loader side of agros-sync: it runs the sync plugin, a WebAssembly
//! component, in a sandbox per tenant and gives it exactly what it needs.
//!
//! - [`config`] reads `config.yaml`.
//! - [`engine`] compiles and links the plugin once; [`tenant`] runs one
//!   instance per tenant and turns traps into typed errors.
//! - [`http_capability`] lets the plugin reach only its tenant's Parse
//!   servers and adds the Parse keys, which never enter the sandbox.
//! - [`state`] is the durable store behind `app_config` and the id map.
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! let config = agros_sync_host::config::Config::load("config.yaml".as_ref())?;
//! let tenant = agros_sync_host::tenant::open_default(&config)?;
//! let outcome = tenant.sync_object("farm", "Plot", r#"{"name":"North field"}"#, Some("plot-1")).await?;
//! // `synced` once the server confirmed it, `queued` while it waits in the outbox.
//! println!("{:?} {:?}", outcome.status, outcome.object_id);
//! # Ok(())
//! # }
//! ```

pub mod bindings;
pub mod config;
pub mod engine;
pub mod error;
pub mod host_state;
pub mod http_capability;
pub mod json;
pub mod messages;
pub mod plugin_cache;
pub mod state;
pub mod tenant;

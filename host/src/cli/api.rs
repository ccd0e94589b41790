//! The HTTP API `agros-sync serve` offers the loader. Not written yet: this
//! stub holds the interface `serve.rs` calls.

use std::future::Future;
use std::sync::Arc;

use agros_sync_host::messages::Lang;
use agros_sync_host::tenant::Tenants;
use clap::ArgMatches;

use super::output::Output;
use super::Failure;

/// Bytes a request body may hold beyond `limits.max_object_bytes`: the JSON
/// envelope around the object.
pub const BODY_OVERHEAD_BYTES: usize = 64 * 1024;

/// What every request handler shares.
pub struct ApiState {
    pub tenants: Arc<Tenants>,
    pub lang: Lang,
    /// The bearer token requests must carry, when one is set.
    pub token: Option<String>,
    pub max_body_bytes: usize,
}

/// Serves the API on `listener` until `shutdown` completes.
pub async fn serve(listener: tokio::net::TcpListener, state: Arc<ApiState>, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let _ = (listener, state);
    shutdown.await;
    Ok(())
}

/// `agros-sync reload`: asks a running `serve` to reload its plugin.
pub async fn reload_remote(args: &ArgMatches, out: &Output) -> Result<(), Failure> {
    let _ = (args, out);
    Ok(())
}

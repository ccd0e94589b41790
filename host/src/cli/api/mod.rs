//! The HTTP API that `agros-sync serve` offers the loader: the operations of
//! the CLI (sync, delete, query, status, flush, outbox, reload) as JSON over
//! HTTP/1.1. `openapi.json` next to this module describes every route and is
//! served at `GET /openapi.json`.
//!
//! Trust boundary: when `AGROS_SYNC_API_TOKEN` is set, every route except
//! `GET` and `HEAD /v1/health` and `GET /openapi.json` needs `Authorization:
//! Bearer <token>`. `serve` refuses to start when the variable is set but
//! blank. The token is compared in constant time and is never logged or
//! returned. A request body may hold at most `ApiState::max_body_bytes`: a
//! larger `Content-Length` is rejected before the body is read, and a body
//! without one is cut off once it passes the limit.
//!
//! Errors are `{"error": ErrorReport}` with an HTTP status that fits the error
//! code (see [`response::status_for_code`]). Messages are in the server's
//! language unless the request's `Accept-Language` names `es` or `en`.

mod handlers;
mod reload;
mod request;
mod response;
mod routes;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agros_sync_host::messages::Lang;
use agros_sync_host::tenant::Tenants;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;

pub use reload::reload_remote;

use request::{authorize, request_lang};
use response::ApiError;
use routes::RouteMatch;

/// Bytes a request body may hold beyond `limits.max_object_bytes`: the JSON
/// envelope around the object.
pub const BODY_OVERHEAD_BYTES: usize = 64 * 1024;

/// Time a client has to send a request's headers once it opened a connection
/// or finished the previous request.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Pause after a failed `accept`, so that running out of file descriptors
/// does not turn the accept loop into a busy loop.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The state every request handler shares.
pub struct ApiState {
    pub tenants: Arc<Tenants>,
    pub lang: Lang,
    /// The bearer token requests must carry, when one is set.
    pub token: Option<String>,
    pub max_body_bytes: usize,
    /// `openapi.json` with `servers` set to the address the listener is
    /// bound to, served at `GET /openapi.json`.
    openapi: Bytes,
}

impl ApiState {
    pub fn new(tenants: Arc<Tenants>, lang: Lang, token: Option<String>, max_body_bytes: usize, address: SocketAddr) -> Self {
        let openapi = Bytes::from(handlers::openapi_for(address));
        Self { tenants, lang, token, max_body_bytes, openapi }
    }
}

/// Serves the API on `listener` until the future `shutdown()` returns
/// completes. Then it stops accepting connections, closes idle ones and
/// waits for the requests in flight to finish, unless a second `shutdown()`
/// completes first.
pub async fn serve<F: Future<Output = ()>>(listener: tokio::net::TcpListener, state: Arc<ApiState>, shutdown: impl Fn() -> F) -> anyhow::Result<()> {
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    let first_signal = shutdown();
    tokio::pin!(first_signal);

    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut first_signal => break,
        };
        let (stream, peer) = match accepted {
            Ok(connection) => connection,
            Err(error) => {
                tracing::warn!(%error, "failed to accept an HTTP connection");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let state = state.clone();
        let service = service_fn(move |request| handle(state.clone(), request));
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "HTTP connection ended with an error");
            }
        });
    }

    drop(listener);
    let open = graceful.count();
    tracing::info!(connections = open, "HTTP API stopped accepting; waiting for requests in flight (signal again to stop now)");
    // Header and body reads have their timeouts and plugin calls their call
    // timeout, but a client that stops reading its response would hold the
    // wait, so a second signal ends it.
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("HTTP API stopped"),
        () = shutdown() => tracing::warn!(connections = open, "second stop signal: HTTP API stopped without waiting for requests in flight"),
    }
    Ok(())
}

/// Authorizes, routes and responds to one request, and logs it.
async fn handle(state: Arc<ApiState>, request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let started = Instant::now();
    let lang = request_lang(request.headers(), state.lang);
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let matched = routes::match_route(&method, &path);
    let authorized = authorize(request.headers(), state.token.as_deref());
    let outcome = match matched {
        RouteMatch::Found(found) if found.route.public || authorized => handlers::dispatch(&state, request, &found, lang).await,
        RouteMatch::MethodNotAllowed { allow, public } if public || authorized => Err(ApiError::method_not_allowed(lang, &method, &path, &allow)),
        RouteMatch::NotFound if authorized => Err(ApiError::not_found(lang, &path)),
        // Unauthorized callers learn nothing about which paths exist.
        _ => Err(ApiError::unauthorized(lang)),
    };

    let duration = started.elapsed();
    let tenant = tenant_of(&path);
    let response = match outcome {
        Ok(reply) => {
            tracing::debug!(%method, %path, status = reply.status.as_u16(), tenant, ?duration, "request");
            reply.into_response()
        }
        Err(error) => {
            let (status, code) = (error.status().as_u16(), error.report.code.as_str());
            if error.status().is_server_error() {
                tracing::error!(%method, %path, status, tenant, ?duration, code, "request failed: {}", error.report.detail);
            } else {
                tracing::debug!(%method, %path, status, tenant, ?duration, code, "request rejected: {}", error.report.detail);
            }
            error.into_response()
        }
    };
    Ok(response)
}

/// Returns the `{tenant}` segment of a `/v1/tenants/{tenant}/...` path, or
/// `""` for other paths.
fn tenant_of(path: &str) -> &str {
    path.strip_prefix("/v1/tenants/").and_then(|rest| rest.split('/').next()).unwrap_or_default()
}

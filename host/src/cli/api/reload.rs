//! `agros-sync reload`: makes a running `agros-sync serve` load its plugin
//! file again, through `POST /v1/reload`.

use std::time::Duration;

use agros_sync_host::error::ErrorReport;
use agros_sync_host::messages::Lang;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::{ACCEPT_LANGUAGE, AUTHORIZATION, HOST};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use url::Url;

use super::handlers::short_hash;
use crate::cli::output::Output;
use crate::cli::serve::TOKEN_VARIABLE;
use crate::cli::Failure;

/// Time to open the connection to the server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time the server has to respond. A reload compiles the plugin and runs its
/// self-check, which the engine stops after 10 s.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(120);
/// Largest response body read.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

pub async fn reload_remote(args: &clap::ArgMatches, out: &Output) -> Result<(), Failure> {
    let lang = out.lang;
    let base = args.get_one::<String>("url").expect("has a default");
    let url = reload_url(base, lang)?;
    let token = std::env::var(TOKEN_VARIABLE).ok().filter(|t| !t.is_empty());

    let (status, body) = post(&url, token.as_deref(), lang).await.map_err(|detail| {
        Failure::operation(ErrorReport::new(lang, "server-unreachable", Some(base.clone()), detail))
    })?;
    let result: Value = serde_json::from_slice(&body).map_err(|_| unexpected(lang, &url, status, &body))?;

    if status != StatusCode::OK {
        let report = serde_json::from_value::<ErrorReport>(result["error"].clone()).map_err(|_| unexpected(lang, &url, status, &body))?;
        return Err(Failure::operation(report));
    }
    if out.json {
        println!("{result}");
        return Ok(());
    }
    let version = result["version"].as_str().unwrap_or("?");
    let hash = short_hash(result["hash"].as_str().unwrap_or("?"));
    let line = match (result["outcome"].as_str(), lang) {
        (Some("swapped"), Lang::En) => format!("plugin {version} ({hash}) loaded; new calls run on it"),
        (Some("swapped"), Lang::Es) => format!("plugin {version} ({hash}) cargado; las llamadas nuevas lo usan"),
        (_, Lang::En) => format!("plugin file unchanged; {version} ({hash}) keeps serving"),
        (_, Lang::Es) => format!("el fichero del plugin no cambió; sigue sirviendo {version} ({hash})"),
    };
    println!("{line}");
    Ok(())
}

/// Builds `{base}/v1/reload`. Only `http` is supported: the API listens on
/// plain HTTP, normally on loopback.
fn reload_url(base: &str, lang: Lang) -> Result<Url, Failure> {
    let invalid = |detail: String| Failure::usage(lang, "invalid-argument", Some(base.to_owned()), detail);
    let parsed = Url::parse(base).map_err(|e| invalid(format!("--url {base:?} is not a valid URL: {e}")))?;
    if parsed.scheme() != "http" || parsed.host_str().is_none() {
        return Err(invalid(format!("--url {base:?} must be an http:// URL of agros-sync serve, such as http://127.0.0.1:8970")));
    }
    let path = format!("{}/v1/reload", parsed.path().trim_end_matches('/'));
    let mut url = parsed;
    url.set_path(&path);
    Ok(url)
}

/// Sends the request and returns the status and body, or the reason no
/// response arrived.
async fn post(url: &Url, token: Option<&str>, lang: Lang) -> Result<(StatusCode, Bytes), String> {
    let host = url.host_str().expect("checked in reload_url");
    let port = url.port_or_known_default().expect("http has a default port");
    let connect = tokio::net::TcpStream::connect((host.trim_start_matches('[').trim_end_matches(']'), port));
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(format!("failed to connect to {host}:{port}: {e}; is `agros-sync serve` running there?")),
        Err(_) => return Err(format!("no connection to {host}:{port} within {}s", CONNECT_TIMEOUT.as_secs())),
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake with {host}:{port} failed: {e}"))?;
    tokio::spawn(connection);

    let authority = url[url::Position::BeforeHost..url::Position::AfterPort].to_owned();
    let mut request = Request::post(url.path()).header(HOST, authority).header(ACCEPT_LANGUAGE, lang.pick("en", "es"));
    if let Some(token) = token {
        request = request.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request.body(Empty::<Bytes>::new()).map_err(|e| format!("failed to build the request: {e}"))?;

    let exchange = async {
        let response = sender.send_request(request).await.map_err(|e| format!("the request to {url} failed: {e}"))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| format!("failed to read the response from {url}: {e}"))?;
        Ok((status, body.to_bytes()))
    };
    tokio::time::timeout(RESPONSE_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("{url} did not respond within {}s", RESPONSE_TIMEOUT.as_secs())))
}

fn unexpected(lang: Lang, url: &Url, status: StatusCode, body: &[u8]) -> Failure {
    let excerpt: String = String::from_utf8_lossy(body).chars().take(200).collect();
    let detail = format!("{url} responded HTTP {status} with a body that is not from agros-sync serve: {excerpt:?}; check that --url is the address of `agros-sync serve`");
    Failure::operation(ErrorReport::new(lang, "unexpected-response", Some(url.to_string()), detail))
}

//! The plugin's HTTP transport: `wasi:http` through the `waki` client.
//!
//! waki writes request bodies in the chunks the output stream permits, so
//! objects larger than one stream write (4096 bytes in wasmtime) are sent
//! whole.

use std::time::Duration;

use waki::{Client, ErrorCode, Method};

use crate::errors::{error, ErrorKind, SyncError};

/// How long a connection attempt may take before the server counts as down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A response read to its end.
pub struct HttpResponse {
    pub status: u16,
    pub body: Vec<u8>,
    /// `Retry-After` in seconds, when the server sent it as a number.
    pub retry_after: Option<u32>,
}

/// Sends one request and reads the whole response.
///
/// A request the host's capability denies, and any transport failure, comes
/// back as a typed error naming `url`.
pub fn send(method: Method, url: &str, headers: &[(&'static str, &str)], body: Option<Vec<u8>>) -> Result<HttpResponse, SyncError> {
    let mut request = Client::new()
        .request(method, url)
        .connect_timeout(CONNECT_TIMEOUT);
    for (name, value) in headers {
        request = request.header(*name, value.to_string());
    }
    if let Some(body) = body {
        request = request.body(body);
    }

    let response = request.send().map_err(|e| transport_error(url, e))?;
    let status = response.status_code();
    let retry_after = response
        .header("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    let body = response.body().map_err(|e| transport_error(url, e))?;
    Ok(HttpResponse { status, body, retry_after })
}

fn transport_error(url: &str, err: anyhow::Error) -> SyncError {
    let (kind, detail) = match err.downcast_ref::<ErrorCode>() {
        Some(ErrorCode::HttpRequestDenied) => (
            ErrorKind::RequestDenied,
            format!("request to {url} denied by the host: the URL is not one of this tenant's Parse servers"),
        ),
        Some(code) => (ErrorKind::ServerUnavailable, format!("request to {url} failed: {}", describe(code))),
        None => (ErrorKind::ServerUnavailable, format!("request to {url} failed: {err:#}")),
    };
    error(kind, url, detail)
}

/// Describes a `wasi:http` error code in a few English words.
fn describe(code: &ErrorCode) -> String {
    match code {
        ErrorCode::ConnectionRefused => "connection refused".to_owned(),
        ErrorCode::ConnectionTerminated => "the connection was closed before a response arrived".to_owned(),
        ErrorCode::ConnectionTimeout => "the connection timed out".to_owned(),
        ErrorCode::ConnectionReadTimeout => "timed out waiting for the response".to_owned(),
        ErrorCode::ConnectionWriteTimeout => "timed out sending the request".to_owned(),
        ErrorCode::ConnectionLimitReached => "too many connections".to_owned(),
        ErrorCode::DnsTimeout => "the DNS lookup timed out".to_owned(),
        ErrorCode::DnsError(_) => "the DNS lookup failed".to_owned(),
        ErrorCode::DestinationNotFound => "the server's host name was not found".to_owned(),
        ErrorCode::DestinationUnavailable => "the server is unreachable".to_owned(),
        ErrorCode::TlsProtocolError | ErrorCode::TlsCertificateError | ErrorCode::TlsAlertReceived(_) => "the TLS handshake failed".to_owned(),
        ErrorCode::HttpResponseIncomplete => "the response was cut off".to_owned(),
        ErrorCode::HttpResponseTimeout => "timed out waiting for the response".to_owned(),
        other => format!("{other:?}"),
    }
}

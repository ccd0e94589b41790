//! Builders for the typed `sync-error` the plugin returns, and the decoding of
//! every error shape Parse Server and the proxies in front of it answer with.

pub use crate::bindings::agros::sync::types::{ErrorKind, SyncError};

/// Shorthand for results crossing the WIT boundary.
pub type SyncResult<T> = Result<T, SyncError>;

/// Builds an error about `subject` with an English `detail`.
pub fn error(kind: ErrorKind, subject: impl Into<String>, detail: impl Into<String>) -> SyncError {
    SyncError {
        kind,
        subject: Some(subject.into()),
        detail: detail.into(),
        parse_code: None,
        http_status: None,
    }
}

/// Builds an error that is not about one particular value.
pub fn internal(detail: impl Into<String>) -> SyncError {
    SyncError {
        kind: ErrorKind::Internal,
        subject: None,
        detail: detail.into(),
        parse_code: None,
        http_status: None,
    }
}

/// Decodes a non-2xx answer from Parse Server into a typed error.
///
/// Parse answers `{"code":N,"error":"..."}`; some versions and adapters use
/// `message` instead of `error`; a 403 from the key check is
/// `{"error":"unauthorized"}` without a code; proxies answer HTML pages.
pub fn from_response(status: u16, body: &[u8], subject: &str) -> SyncError {
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let code = json
        .as_ref()
        .and_then(|v| v.get("code"))
        .and_then(|c| c.as_i64())
        .map(|c| c as i32);
    let message = json
        .as_ref()
        .and_then(|v| v.get("error").or_else(|| v.get("message")))
        .and_then(|m| m.as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| summarize_body(body));

    SyncError {
        kind: classify(status, code),
        subject: Some(subject.to_owned()),
        detail: message,
        parse_code: code,
        http_status: Some(status),
    }
}

/// Maps an HTTP status and Parse error code to the error kind.
///
/// Parse codes: 1 internal server error, 100 connection failed, 101 object not
/// found, 103 invalid class name, 105 invalid key name, 119 operation
/// forbidden, 124 timeout, 155 request limit exceeded, 209 invalid session
/// token (Parse JS SDK `ParseError` constants).
pub fn classify(status: u16, code: Option<i32>) -> ErrorKind {
    match code {
        Some(101) => ErrorKind::ObjectNotFound,
        Some(103) => ErrorKind::InvalidClassName,
        Some(105) => ErrorKind::InvalidFieldName,
        Some(119 | 209) => ErrorKind::Unauthorized,
        Some(1 | 100 | 124 | 155) => ErrorKind::ServerUnavailable,
        Some(_) => ErrorKind::ServerRejected,
        None => match status {
            401 | 403 => ErrorKind::Unauthorized,
            404 => ErrorKind::ObjectNotFound,
            413 => ErrorKind::ObjectTooLarge,
            408 | 429 | 500..=599 => ErrorKind::ServerUnavailable,
            _ => ErrorKind::ServerRejected,
        },
    }
}

/// A short, single-line excerpt of a non-JSON body (an HTML error page, say).
fn summarize_body(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.is_empty() {
        return "empty response body".to_owned();
    }
    let mut excerpt: String = line.chars().take(160).collect();
    if excerpt.len() < line.len() {
        excerpt.push('…');
    }
    excerpt
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_code_and_error() {
        let e = from_response(400, br#"{"code":111,"error":"schema mismatch"}"#, "Plot");
        assert_eq!(e.kind, ErrorKind::ServerRejected);
        assert_eq!(e.parse_code, Some(111));
        assert_eq!(e.detail, "schema mismatch");
        assert_eq!(e.http_status, Some(400));
    }

    #[test]
    fn decodes_code_and_message() {
        let e = from_response(404, br#"{"code":101,"message":"Object not found."}"#, "x");
        assert_eq!(e.kind, ErrorKind::ObjectNotFound);
        assert_eq!(e.detail, "Object not found.");
    }

    #[test]
    fn unauthorized_without_code() {
        let e = from_response(403, br#"{"error":"unauthorized"}"#, "x");
        assert_eq!(e.kind, ErrorKind::Unauthorized);
        assert_eq!(e.parse_code, None);
    }

    #[test]
    fn html_gateway_page_is_unavailable() {
        let body = b"<html>\n<head><title>502 Bad Gateway</title></head></html>";
        let e = from_response(502, body, "x");
        assert_eq!(e.kind, ErrorKind::ServerUnavailable);
        assert_eq!(e.detail, "<html> <head><title>502 Bad Gateway</title></head></html>");
    }

    #[test]
    fn html_413_is_too_large() {
        let e = from_response(413, b"<html>Request Entity Too Large</html>", "x");
        assert_eq!(e.kind, ErrorKind::ObjectTooLarge);
    }

    #[test]
    fn transient_codes_are_unavailable() {
        for code in [1, 100, 124, 155] {
            assert_eq!(classify(400, Some(code)), ErrorKind::ServerUnavailable, "code {code}");
        }
        assert_eq!(classify(429, None), ErrorKind::ServerUnavailable);
    }
}

//! Builders for the typed `sync-error` the plugin returns, and the decoding of
//! every error shape Parse Server and the proxies in front of it return.

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
        retry_after: None,
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
        retry_after: None,
    }
}

/// Decodes a non-2xx response from Parse Server into a typed error.
///
/// Parse returns `{"code":N,"error":"..."}`. Some versions and adapters use
/// `message` instead of `error`. A 403 from the key check is
/// `{"error":"unauthorized"}` without a code, and proxies return HTML pages.
pub fn from_response(status: u16, body: &[u8], retry_after: Option<u32>, subject: &str) -> SyncError {
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
        kind: classify_message(status, code, &message),
        subject: Some(subject.to_owned()),
        detail: message,
        parse_code: code,
        http_status: Some(status),
        retry_after,
    }
}

/// Decodes one item's error of a `/batch` response: `{"code":N,"error":"..."}`.
pub fn from_batch_item(error: &serde_json::Value, subject: &str) -> SyncError {
    let code = error.get("code").and_then(|c| c.as_i64()).map(|c| c as i32);
    let message = error.get("error").or_else(|| error.get("message")).and_then(|m| m.as_str()).unwrap_or("batch item failed");
    SyncError {
        kind: classify_message(400, code, message),
        subject: Some(subject.to_owned()),
        detail: message.to_owned(),
        parse_code: code,
        http_status: None,
        retry_after: None,
    }
}

/// The outbox's treatment of a write that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Send it again later: the network, the server or its load failed.
    Transient,
    /// Keep it, and stop sending to this database until its keys work again.
    Pause,
    /// Move it to the dead-letter list: sending it again cannot succeed.
    Permanent,
}

/// Classifies a failed send. Transient: network errors, timeouts, 5xx, 408,
/// 429 and Parse codes 1, 100, 124, 155. Pause: rejected keys (401 and 403
/// without a code, 119 with 401 or 403, 209) and requests the host's
/// capability denies. Permanent: everything else, such as 103, 105, 107, 111,
/// 116, 119 with 400, 121, 142, 413 and HTML 4xx pages.
pub fn disposition(error: &SyncError) -> Disposition {
    match error.kind {
        ErrorKind::ServerUnavailable | ErrorKind::StateStore => Disposition::Transient,
        ErrorKind::Unauthorized | ErrorKind::RequestDenied => Disposition::Pause,
        _ => Disposition::Permanent,
    }
}

/// Returns the error's kind as spelt in the WIT enum, for `app_config`.
pub fn kind_name(kind: ErrorKind) -> &'static str {
    KINDS.iter().find(|(k, _)| *k == kind).map(|(_, name)| *name).unwrap_or("internal")
}

pub fn kind_from_name(name: &str) -> ErrorKind {
    KINDS.iter().find(|(_, n)| *n == name).map(|(kind, _)| *kind).unwrap_or(ErrorKind::Internal)
}

const KINDS: [(ErrorKind, &str); 14] = [
    (ErrorKind::UnknownDatabase, "unknown-database"),
    (ErrorKind::SyncDisabled, "sync-disabled"),
    (ErrorKind::InvalidClassName, "invalid-class-name"),
    (ErrorKind::InvalidFieldName, "invalid-field-name"),
    (ErrorKind::InvalidJson, "invalid-json"),
    (ErrorKind::InvalidValue, "invalid-value"),
    (ErrorKind::ObjectTooLarge, "object-too-large"),
    (ErrorKind::ObjectNotFound, "object-not-found"),
    (ErrorKind::ServerRejected, "server-rejected"),
    (ErrorKind::ServerUnavailable, "server-unavailable"),
    (ErrorKind::Unauthorized, "unauthorized"),
    (ErrorKind::RequestDenied, "request-denied"),
    (ErrorKind::StateStore, "state-store"),
    (ErrorKind::Internal, "internal"),
];

/// Stores an error as JSON text.
pub fn to_json(error: &SyncError) -> String {
    serde_json::json!({
        "kind": kind_name(error.kind),
        "subject": error.subject,
        "detail": error.detail,
        "parse_code": error.parse_code,
        "http_status": error.http_status,
    })
    .to_string()
}

/// Reads an error stored by [`to_json`].
pub fn from_json(text: &str) -> Option<SyncError> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    Some(SyncError {
        kind: kind_from_name(value.get("kind")?.as_str()?),
        subject: value.get("subject").and_then(|s| s.as_str()).map(str::to_owned),
        detail: value.get("detail")?.as_str()?.to_owned(),
        parse_code: value.get("parse_code").and_then(|c| c.as_i64()).map(|c| c as i32),
        http_status: value.get("http_status").and_then(|c| c.as_u64()).map(|c| c as u16),
        retry_after: None,
    })
}

/// Maps an HTTP status and Parse error code to the error kind.
///
/// Parse codes: 1 internal server error, 100 connection failed, 101 object not
/// found, 103 invalid class name, 105 invalid key name, 119 operation
/// forbidden, 124 timeout, 155 request limit exceeded, 209 invalid session
/// token (Parse JS SDK `ParseError` constants).
///
/// 119 means rejected keys only with HTTP 401 or 403. Parse Server 9 sends
/// every other 119 with HTTP 400, for requests no key would make work, such
/// as a query operator the database adapter lacks ("Postgres doesn't support
/// this query type yet").
/// A read-only master key configured as `master_key` also gets 119 with
/// HTTP 400 on writes; [`classify_message`] separates that case by its
/// message.
pub fn classify(status: u16, code: Option<i32>) -> ErrorKind {
    match code {
        Some(101) => ErrorKind::ObjectNotFound,
        Some(103) => ErrorKind::InvalidClassName,
        Some(105) => ErrorKind::InvalidFieldName,
        Some(119) if matches!(status, 401 | 403) => ErrorKind::Unauthorized,
        Some(209) => ErrorKind::Unauthorized,
        Some(1 | 100 | 124 | 155) => ErrorKind::ServerUnavailable,
        Some(_) => ErrorKind::ServerRejected,
        None => match status {
            401 | 403 => ErrorKind::Unauthorized,
            413 => ErrorKind::ObjectTooLarge,
            408 | 429 | 500..=599 => ErrorKind::ServerUnavailable,
            _ => ErrorKind::ServerRejected,
        },
    }
}

/// Like [`classify`], and also counts a 119 whose message names the master
/// key as rejected keys. Parse Server 9 rejects a write made with the
/// read-only master key with "read-only masterKey isn't allowed to perform
/// the create operation." (HTTP 400), which the operator fixes in the
/// configuration, so the database pauses instead of dead-lettering writes.
pub fn classify_message(status: u16, code: Option<i32>, message: &str) -> ErrorKind {
    let names_master_key = message.to_ascii_lowercase().replace(' ', "").contains("masterkey");
    if code == Some(119) && names_master_key {
        ErrorKind::Unauthorized
    } else {
        classify(status, code)
    }
}

/// Cuts a non-JSON body (an HTML error page, say) to a short single line.
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
        let e = from_response(400, br#"{"code":111,"error":"schema mismatch"}"#, None, "Plot");
        assert_eq!(e.kind, ErrorKind::ServerRejected);
        assert_eq!(e.parse_code, Some(111));
        assert_eq!(e.detail, "schema mismatch");
        assert_eq!(e.http_status, Some(400));
    }

    #[test]
    fn decodes_code_and_message() {
        let e = from_response(404, br#"{"code":101,"message":"Object not found."}"#, None, "x");
        assert_eq!(e.kind, ErrorKind::ObjectNotFound);
        assert_eq!(e.detail, "Object not found.");
    }

    #[test]
    fn unauthorized_without_code() {
        let e = from_response(403, br#"{"error":"unauthorized"}"#, None, "x");
        assert_eq!(e.kind, ErrorKind::Unauthorized);
        assert_eq!(e.parse_code, None);
    }

    #[test]
    fn html_gateway_page_is_unavailable() {
        let body = b"<html>\n<head><title>502 Bad Gateway</title></head></html>";
        let e = from_response(502, body, None, "x");
        assert_eq!(e.kind, ErrorKind::ServerUnavailable);
        assert_eq!(e.detail, "<html> <head><title>502 Bad Gateway</title></head></html>");
    }

    #[test]
    fn html_413_is_too_large() {
        let e = from_response(413, b"<html>Request Entity Too Large</html>", None, "x");
        assert_eq!(e.kind, ErrorKind::ObjectTooLarge);
    }

    #[test]
    fn html_404_is_not_object_not_found() {
        let e = from_response(404, b"<html>Cannot GET /parsex/classes/Plot</html>", None, "x");
        assert_eq!(e.kind, ErrorKind::ServerRejected);
        assert_eq!(disposition(&e), Disposition::Permanent);
    }

    #[test]
    fn dispositions_follow_the_table() {
        let of = |status: u16, code: Option<i32>| {
            let body = match code {
                Some(code) => format!(r#"{{"code":{code},"error":"e"}}"#),
                None => "<html>error</html>".to_owned(),
            };
            disposition(&from_response(status, body.as_bytes(), None, "x"))
        };
        for code in [1, 100, 124, 155] {
            assert_eq!(of(400, Some(code)), Disposition::Transient, "code {code}");
        }
        for status in [500, 502, 503, 504, 429, 408] {
            assert_eq!(of(status, None), Disposition::Transient, "status {status}");
        }
        assert_eq!(of(400, Some(209)), Disposition::Pause);
        assert_eq!(of(401, Some(119)), Disposition::Pause);
        assert_eq!(of(403, Some(119)), Disposition::Pause);
        assert_eq!(of(403, None), Disposition::Pause);
        for code in [103, 105, 107, 111, 116, 119, 121, 137, 142] {
            assert_eq!(of(400, Some(code)), Disposition::Permanent, "code {code}");
        }
        assert_eq!(of(413, None), Disposition::Permanent);
        assert_eq!(of(400, None), Disposition::Permanent);
    }

    #[test]
    fn error_json_round_trip() {
        let e = from_response(400, br#"{"code":111,"error":"schema mismatch"}"#, None, "Plot");
        let back = from_json(&to_json(&e)).unwrap();
        assert_eq!(back.kind, ErrorKind::ServerRejected);
        assert_eq!(back.parse_code, Some(111));
        assert_eq!(back.detail, "schema mismatch");
    }

    #[test]
    fn read_only_master_key_is_unauthorized() {
        let body = br#"{"code":119,"error":"read-only masterKey isn't allowed to perform the create operation."}"#;
        assert_eq!(from_response(400, body, None, "Plot").kind, ErrorKind::Unauthorized);
        let item = serde_json::json!({ "code": 119, "error": "read-only masterKey isn't allowed to perform the update operation." });
        assert_eq!(from_batch_item(&item, "Plot").kind, ErrorKind::Unauthorized);
        let other = serde_json::json!({ "code": 119, "error": "Permission denied for action create on class Plot." });
        assert_eq!(from_batch_item(&other, "Plot").kind, ErrorKind::ServerRejected);
    }

    #[test]
    fn classify_119_by_http_status() {
        let body = br#"{"code":119,"error":"Postgres doesn't support this query type yet {\"$bogus\":1}"}"#;
        let unsupported = from_response(400, body, None, "Plot");
        assert_eq!(unsupported.kind, ErrorKind::ServerRejected);
        assert_eq!(unsupported.parse_code, Some(119));
        assert_eq!(disposition(&unsupported), Disposition::Permanent);

        assert_eq!(classify(401, Some(119)), ErrorKind::Unauthorized);
        assert_eq!(classify(403, Some(119)), ErrorKind::Unauthorized);
        let in_batch = from_batch_item(&serde_json::json!({ "code": 119, "error": "Permission denied" }), "Plot");
        assert_eq!(in_batch.kind, ErrorKind::ServerRejected);
    }

    #[test]
    fn transient_codes_are_unavailable() {
        for code in [1, 100, 124, 155] {
            assert_eq!(classify(400, Some(code)), ErrorKind::ServerUnavailable, "code {code}");
        }
        assert_eq!(classify(429, None), ErrorKind::ServerUnavailable);
    }
}

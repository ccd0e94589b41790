//! Building responses: JSON results, and errors as `{"error": ErrorReport}`
//! with the HTTP status their code maps to.

use agros_sync_host::error::{CallError, ErrorReport};
use agros_sync_host::messages::Lang;
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use hyper::{Method, Response, StatusCode};
use serde_json::{json, Value};

/// A successful result: a status and a JSON body.
pub struct Reply {
    pub status: StatusCode,
    body: Bytes,
}

impl Reply {
    pub fn ok(body: Value) -> Self {
        Self::with_status(StatusCode::OK, body)
    }

    pub fn with_status(status: StatusCode, body: Value) -> Self {
        Self { status, body: Bytes::from(body.to_string()) }
    }

    /// Builds a 200 reply from JSON text that is already serialized.
    pub fn json_bytes(body: Bytes) -> Self {
        Self { status: StatusCode::OK, body }
    }

    pub fn into_response(self) -> Response<Full<Bytes>> {
        json_response(self.status, self.body)
    }
}

/// A failed request: the report sent as the body and the headers some
/// statuses need.
#[derive(Debug)]
pub struct ApiError {
    pub report: ErrorReport,
    /// Seconds the Parse server asked to wait, sent as `Retry-After`.
    retry_after: Option<u32>,
    /// The methods a path accepts, sent as `Allow` with a 405.
    allow: Option<String>,
}

impl ApiError {
    pub fn new(lang: Lang, code: &str, subject: Option<String>, detail: String) -> Self {
        Self::from_report(ErrorReport::new(lang, code, subject, detail))
    }

    pub fn from_report(report: ErrorReport) -> Self {
        Self { report, retry_after: None, allow: None }
    }

    pub fn from_call(lang: Lang, error: &CallError) -> Self {
        let retry_after = match error {
            CallError::Plugin(e) => e.retry_after,
            _ => None,
        };
        Self { report: ErrorReport::from_call(lang, error), retry_after, allow: None }
    }

    pub fn unauthorized(lang: Lang) -> Self {
        let detail = "missing or invalid API token; send `Authorization: Bearer <token>` with the value of AGROS_SYNC_API_TOKEN".to_owned();
        Self::new(lang, "unauthorized-api", None, detail)
    }

    pub fn not_found(lang: Lang, path: &str) -> Self {
        Self::new(lang, "not-found", Some(path.to_owned()), format!("there is no route {path}; see /openapi.json"))
    }

    pub fn method_not_allowed(lang: Lang, method: &Method, path: &str, allow: &[&str]) -> Self {
        let allowed = allow.join(", ");
        let detail = format!("{method} is not allowed on {path}; use {allowed}");
        Self { allow: Some(allowed), ..Self::new(lang, "method-not-allowed", Some(path.to_owned()), detail) }
    }

    /// Builds the error for a body over `max_bytes`; `declared` is the
    /// `Content-Length` when that alone exceeded the limit.
    pub fn payload_too_large(lang: Lang, max_bytes: usize, declared: Option<u64>) -> Self {
        let detail = match declared {
            Some(length) => format!("Content-Length {length} exceeds the limit of {max_bytes} bytes (limits.max_object_bytes plus 64 KiB)"),
            None => format!("the body exceeds the limit of {max_bytes} bytes (limits.max_object_bytes plus 64 KiB)"),
        };
        Self::new(lang, "payload-too-large", None, detail)
    }

    pub fn status(&self) -> StatusCode {
        status_for_code(&self.report.code)
    }

    pub fn into_response(self) -> Response<Full<Bytes>> {
        let status = self.status();
        let body = json!({ "error": self.report });
        let mut response = json_response(status, Bytes::from(body.to_string()));
        let headers = response.headers_mut();
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"agros-sync\""));
        }
        if let Some(allow) = self.allow.and_then(|a| HeaderValue::from_str(&a).ok()) {
            headers.insert(ALLOW, allow);
        }
        if let Some(seconds) = self.retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// Maps an error code to its HTTP status.
///
/// - 400: the request is malformed (JSON, names, values, arguments).
/// - 404: the tenant, database, route, outbox entry or object does not exist.
/// - 409: the database has `sync: false`.
/// - 413: the body or the encoded object is too large.
/// - 422: the Parse server rejected the data, or a plugin reload failed.
/// - 502: the Parse server rejected the host's keys.
/// - 503: the Parse server or the plugin is unavailable, or the call timed out.
/// - 500: everything else (a trap, the state store, a bug).
pub fn status_for_code(code: &str) -> StatusCode {
    match code {
        "invalid-json" | "invalid-class-name" | "invalid-field-name" | "invalid-value" | "invalid-argument" => StatusCode::BAD_REQUEST,
        "unauthorized-api" => StatusCode::UNAUTHORIZED,
        "not-found" | "unknown-tenant" | "unknown-database" | "entry-not-found" | "dead-letter-not-found" | "object-not-found" => StatusCode::NOT_FOUND,
        "method-not-allowed" => StatusCode::METHOD_NOT_ALLOWED,
        "request-timeout" => StatusCode::REQUEST_TIMEOUT,
        "sync-disabled" => StatusCode::CONFLICT,
        "payload-too-large" | "object-too-large" => StatusCode::PAYLOAD_TOO_LARGE,
        "unsupported-media-type" => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "server-rejected" | "reload-failed" => StatusCode::UNPROCESSABLE_ENTITY,
        "unauthorized" => StatusCode::BAD_GATEWAY,
        "server-unavailable" | "plugin-timeout" | "plugin-unavailable" => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn json_response(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use agros_sync_host::bindings::{ErrorKind, SyncError};

    fn plugin_error(kind: ErrorKind) -> CallError {
        CallError::Plugin(SyncError { kind, subject: Some("farm".into()), detail: "detail".into(), parse_code: None, http_status: None, retry_after: None })
    }

    #[test]
    fn plugin_errors_map_to_statuses() {
        let cases = [
            (ErrorKind::UnknownDatabase, 404),
            (ErrorKind::SyncDisabled, 409),
            (ErrorKind::InvalidClassName, 400),
            (ErrorKind::InvalidFieldName, 400),
            (ErrorKind::InvalidJson, 400),
            (ErrorKind::InvalidValue, 400),
            (ErrorKind::ObjectTooLarge, 413),
            (ErrorKind::ObjectNotFound, 404),
            (ErrorKind::ServerRejected, 422),
            (ErrorKind::ServerUnavailable, 503),
            (ErrorKind::Unauthorized, 502),
            (ErrorKind::RequestDenied, 500),
            (ErrorKind::StateStore, 500),
            (ErrorKind::Internal, 500),
        ];
        for (kind, status) in cases {
            assert_eq!(ApiError::from_call(Lang::En, &plugin_error(kind)).status().as_u16(), status, "{kind:?}");
        }
    }

    #[test]
    fn trap_and_timeout_map_to_500_and_503() {
        let trap = CallError::Trap { tenant: "a".into(), message: "wasm trap: unreachable".into(), guest_message: String::new() };
        let timeout = CallError::Timeout { tenant: "a".into(), seconds: 300 };
        let trapped = ApiError::from_call(Lang::En, &trap);
        let timed_out = ApiError::from_call(Lang::En, &timeout);
        assert_eq!((trapped.report.code.as_str(), trapped.status().as_u16()), ("plugin-trap", 500));
        assert_eq!((timed_out.report.code.as_str(), timed_out.status().as_u16()), ("plugin-timeout", 503));
    }

    #[test]
    fn retry_after_and_allow_become_headers() {
        let subject = Some("http://127.0.0.1:1337/parse".to_owned());
        let busy = SyncError { kind: ErrorKind::ServerUnavailable, subject, detail: "busy".into(), parse_code: None, http_status: Some(503), retry_after: Some(7) };
        let response = ApiError::from_call(Lang::En, &CallError::Plugin(busy)).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[RETRY_AFTER], "7");

        let response = ApiError::method_not_allowed(Lang::En, &Method::GET, "/v1/reload", &["POST"]).into_response();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()[ALLOW], "POST");

        let response = ApiError::unauthorized(Lang::Es).into_response();
        assert_eq!(response.headers()[WWW_AUTHENTICATE], "Bearer realm=\"agros-sync\"");
    }
}

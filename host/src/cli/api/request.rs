//! Reading a request: the bearer token, the language, a size-limited JSON
//! body and query parameters.

use std::time::Duration;

use agros_sync_host::engine::sha256_hex;
use agros_sync_host::messages::Lang;
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, ACCEPT_LANGUAGE, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::Request;
use serde::de::DeserializeOwned;

use super::response::ApiError;

/// Time a client has to send a whole request body.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Returns whether the request may use a protected route: no token is set,
/// or `Authorization` carries it as a bearer token.
pub fn authorize(headers: &HeaderMap, token: Option<&str>) -> bool {
    let Some(expected) = token else {
        return true;
    };
    let Some(presented) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(bearer_token) else {
        return false;
    };
    constant_time_eq(presented.as_bytes(), expected.as_bytes())
}

/// Returns the token of an `Authorization: Bearer <token>` value. The scheme
/// name is case-insensitive (RFC 7235, section 2.1).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// Compares two secrets in time that depends on neither their contents nor
/// their lengths: both are hashed first, and the digests are compared
/// without an early exit.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let (a, b) = (sha256_hex(a), sha256_hex(b));
    let difference = a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

/// Picks the language of the response's messages: the `Accept-Language`
/// entry with the highest q-value among `es` and `en` (with any region), or
/// `server` when the header names neither.
pub fn request_lang(headers: &HeaderMap, server: Lang) -> Lang {
    let Some(value) = headers.get(ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok()) else {
        return server;
    };
    let mut best: Option<(f32, Lang)> = None;
    for item in value.split(',') {
        let mut parts = item.split(';');
        let tag = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let quality = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        let lang = match tag.split(['-', '_']).next() {
            Some("es") => Lang::Es,
            Some("en") => Lang::En,
            _ => continue,
        };
        if quality > 0.0 && best.is_none_or(|(q, _)| quality > q) {
            best = Some((quality, lang));
        }
    }
    best.map(|(_, lang)| lang).unwrap_or(server)
}

/// Reads the body, at most `max_bytes` of it. A `Content-Length` above the
/// limit is rejected before anything is read.
pub async fn read_body(request: Request<Incoming>, max_bytes: usize, lang: Lang) -> Result<(HeaderMap, Bytes), ApiError> {
    let declared = request.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if let Some(length) = declared.filter(|length| *length > max_bytes as u64) {
        return Err(ApiError::payload_too_large(lang, max_bytes, Some(length)));
    }

    let (parts, body) = request.into_parts();
    let collected = tokio::time::timeout(BODY_READ_TIMEOUT, Limited::new(body, max_bytes).collect()).await;
    match collected {
        Ok(Ok(body)) => Ok((parts.headers, body.to_bytes())),
        Ok(Err(error)) if error.is::<LengthLimitError>() => Err(ApiError::payload_too_large(lang, max_bytes, None)),
        Ok(Err(error)) => Err(ApiError::new(lang, "invalid-argument", None, format!("failed to read the request body: {error}"))),
        Err(_) => Err(ApiError::new(
            lang,
            "request-timeout",
            None,
            format!("the request body did not arrive within {}s", BODY_READ_TIMEOUT.as_secs()),
        )),
    }
}

/// Reads the body as JSON of type `T`. An empty body reads as `{}`, so a
/// request whose fields are all optional needs none. A non-empty body must
/// be sent as `application/json`: a browser sends that type to another
/// origin only after a CORS preflight, which this API never approves.
pub async fn read_json<T: DeserializeOwned>(request: Request<Incoming>, max_bytes: usize, lang: Lang) -> Result<T, ApiError> {
    let (headers, body) = read_body(request, max_bytes, lang).await?;
    if body.is_empty() {
        return parse_json(b"{}", lang);
    }
    let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let media_type = content_type.split(';').next().unwrap_or_default().trim();
    if !media_type.eq_ignore_ascii_case("application/json") {
        let received_type = if content_type.is_empty() { "none" } else { content_type };
        return Err(ApiError::new(
            lang,
            "unsupported-media-type",
            Some(received_type.to_owned()),
            format!("the request body must be sent with Content-Type: application/json, not {received_type}"),
        ));
    }
    parse_json(&body, lang)
}

fn parse_json<T: DeserializeOwned>(body: &[u8], lang: Lang) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::new(lang, "invalid-json", None, format!("invalid request body: {e}")))
}

/// Splits a query string into decoded name/value pairs.
pub fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()).into_owned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn headers(name: hyper::header::HeaderName, value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn bearer_token_accepted_only_when_equal() {
        let token = Some("s3cret-token");
        assert!(authorize(&headers(AUTHORIZATION, "Bearer s3cret-token"), token));
        assert!(authorize(&headers(AUTHORIZATION, "bearer s3cret-token"), token));
        assert!(!authorize(&headers(AUTHORIZATION, "Bearer s3cret-tokeN"), token));
        assert!(!authorize(&headers(AUTHORIZATION, "Bearer s3cret"), token));
        assert!(!authorize(&headers(AUTHORIZATION, "Basic s3cret-token"), token));
        assert!(!authorize(&headers(AUTHORIZATION, "Bearer"), token));
        assert!(!authorize(&HeaderMap::new(), token));
    }

    #[test]
    fn no_token_set_authorizes_everything() {
        assert!(authorize(&HeaderMap::new(), None));
        assert!(authorize(&headers(AUTHORIZATION, "Bearer anything"), None));
    }

    #[test]
    fn accept_language_picks_highest_quality() {
        assert_eq!(request_lang(&HeaderMap::new(), Lang::Es), Lang::Es);
        assert_eq!(request_lang(&headers(ACCEPT_LANGUAGE, "es"), Lang::En), Lang::Es);
        assert_eq!(request_lang(&headers(ACCEPT_LANGUAGE, "es-AR,es;q=0.9"), Lang::En), Lang::Es);
        assert_eq!(request_lang(&headers(ACCEPT_LANGUAGE, "fr, en;q=0.5, es;q=0.8"), Lang::En), Lang::Es);
        assert_eq!(request_lang(&headers(ACCEPT_LANGUAGE, "en-GB"), Lang::Es), Lang::En);
        assert_eq!(request_lang(&headers(ACCEPT_LANGUAGE, "de, fr"), Lang::Es), Lang::Es);
        assert_eq!(request_lang(&headers(ACCEPT_LANGUAGE, "es;q=0"), Lang::En), Lang::En);
    }

    #[test]
    fn query_pairs_are_decoded() {
        assert_eq!(
            query_pairs(Some("state=dead&database=farm%20one&limit=5")),
            vec![("state".into(), "dead".into()), ("database".into(), "farm one".into()), ("limit".into(), "5".into())]
        );
        assert!(query_pairs(None).is_empty());
    }
}

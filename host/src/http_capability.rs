//! The plugin's outgoing HTTP capability.
//!
//! Trust boundary: the guest is untrusted. It may reach only the Parse Server
//! applications configured for its own tenant, matched on scheme, host, port
//! and mount path exactly. Every other request is denied before a connection
//! is made, and the guest gets `HttpRequestDenied`. The host adds the Parse
//! keys to each allowed request, and the guest may not set key headers itself,
//! so keys never enter the sandbox. Redirects are not followed: the response
//! goes back to the guest as it is.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use http::uri::Scheme;
use http::Uri;
use wasmtime_wasi_http::{RequestOptions, WasiBody, WasiHttpHooks};

use crate::config::{Config, Secret};

/// Maximum connection attempt the host allows, whatever the guest requests.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

const APP_ID_HEADER: &str = "x-parse-application-id";
const MASTER_KEY_HEADER: &str = "x-parse-master-key";
const REST_KEY_HEADER: &str = "x-parse-rest-api-key";

/// Headers the guest may not set: the keys, which only the host adds.
const KEY_HEADERS: [&str; 5] = [
    MASTER_KEY_HEADER,
    REST_KEY_HEADER,
    "x-parse-javascript-key",
    "x-parse-client-key",
    "x-parse-maintenance-key",
];

/// One Parse application the tenant may reach.
#[derive(Debug, Clone)]
pub struct ParseRoute {
    pub database_key: String,
    scheme: String,
    host: String,
    port: u16,
    /// Mount path without a trailing slash, such as `/parse`; empty for `/`.
    path_prefix: String,
    app_id: String,
    master_key: Option<Secret>,
    rest_api_key: Option<Secret>,
}

/// The reason a request was denied. The message is safe to show and log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial(pub String);

/// The allow-list of one tenant.
#[derive(Debug, Clone)]
pub struct HttpCapability {
    tenant: String,
    routes: Vec<ParseRoute>,
    request_timeout: Duration,
}

impl HttpCapability {
    /// Builds the routes of every synced database of the tenant `tenant` in
    /// `config`. A tenant the file does not name gets no route at all.
    pub fn for_tenant(tenant: &str, config: &Config) -> Self {
        let routes = config
            .tenant(tenant)
            .into_iter()
            .flat_map(|t| t.synced_databases())
            .map(|(database, parse)| {
                let url = &parse.server_url;
                ParseRoute {
                    database_key: database.key.clone(),
                    scheme: url.scheme().to_owned(),
                    host: url.host_str().unwrap_or_default().to_ascii_lowercase(),
                    port: url.port_or_known_default().unwrap_or(80),
                    path_prefix: url.path().trim_end_matches('/').to_owned(),
                    app_id: parse.app_id.clone(),
                    master_key: parse.master_key.clone(),
                    rest_api_key: parse.rest_api_key.clone(),
                }
            })
            .collect();
        Self {
            tenant: tenant.to_owned(),
            routes,
            request_timeout: Duration::from_secs(config.limits.request_timeout_secs),
        }
    }

    /// Creates a capability with no route, which denies every request.
    pub fn deny_all(tenant: &str) -> Self {
        Self { tenant: tenant.to_owned(), routes: Vec::new(), request_timeout: Duration::from_secs(1) }
    }

    /// Finds the route a request may take. `app_id` is the guest's
    /// `X-Parse-Application-Id`, which picks between two applications behind
    /// one URL.
    pub fn authorize(&self, uri: &Uri, app_id: Option<&str>) -> Result<&ParseRoute, Denial> {
        let scheme = uri.scheme_str().unwrap_or("https").to_ascii_lowercase();
        let host = uri.host().unwrap_or_default().to_ascii_lowercase();
        let default_port = if scheme == "https" { 443 } else { 80 };
        let port = uri.port_u16().unwrap_or(default_port);
        let path = uri.path();

        let mut matches = self.routes.iter().filter(|route| {
            route.scheme == scheme && route.host == host && route.port == port && under_prefix(path, &route.path_prefix)
        });
        let route = match app_id {
            Some(app_id) => matches.find(|route| route.app_id == app_id),
            None => matches.next(),
        };
        route.ok_or_else(|| {
            Denial(format!(
                "outgoing request to {scheme}://{host}:{port}{path} denied: not a Parse server of tenant {:?}{}",
                self.tenant,
                app_id.map(|id| format!(" with application id {id:?}")).unwrap_or_default()
            ))
        })
    }

    fn timeouts(&self, requested: Option<RequestOptions>) -> RequestOptions {
        let requested = requested.unwrap_or_default();
        let cap = |asked: Option<Duration>, max: Duration| Some(asked.map_or(max, |a| a.min(max)));
        RequestOptions {
            connect_timeout: cap(requested.connect_timeout, MAX_CONNECT_TIMEOUT),
            first_byte_timeout: cap(requested.first_byte_timeout, self.request_timeout),
            between_bytes_timeout: cap(requested.between_bytes_timeout, self.request_timeout),
        }
    }
}

/// True when `path` is `prefix` or below it (`/parse`, `/parse/...`, not
/// `/parsex`). A path with a `.` or `..` segment, also percent-encoded
/// (`%2e%2e`), is never below the prefix: a proxy or server that resolves dot
/// segments would send it outside the prefix, with the keys attached.
fn under_prefix(path: &str, prefix: &str) -> bool {
    let Some(rest) = path.strip_prefix(prefix) else {
        return false;
    };
    if !(rest.is_empty() || rest.starts_with('/')) {
        return false;
    }
    !path.split('/').any(is_dot_segment)
}

fn is_dot_segment(segment: &str) -> bool {
    let decoded = segment.replace("%2e", ".").replace("%2E", ".");
    decoded == "." || decoded == ".."
}

/// The `wasi:http` hooks that enforce a tenant's capability.
pub struct CapabilityHooks {
    pub capability: Arc<HttpCapability>,
}

impl WasiHttpHooks for CapabilityHooks {
    fn is_forbidden_header(&mut self, name: &HeaderName) -> bool {
        KEY_HEADERS.contains(&name.as_str()) || wasmtime_wasi_http::DEFAULT_FORBIDDEN_HEADERS.contains(name)
    }

    fn forbidden_header_filter(&mut self) -> wasmtime_wasi_http::ForbiddenHeaderFilter {
        Arc::new(|name| KEY_HEADERS.contains(&name.as_str()) || wasmtime_wasi_http::DEFAULT_FORBIDDEN_HEADERS.contains(name))
    }

    fn is_supported_scheme(&mut self, scheme: &Scheme) -> bool {
        *scheme == Scheme::HTTP || *scheme == Scheme::HTTPS
    }

    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _response_io: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = wasmtime_wasi_http::Result<(
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                )>,
            > + Send,
    > {
        let app_id = request.headers().get(APP_ID_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let route = match self.capability.authorize(request.uri(), app_id.as_deref()) {
            Ok(route) => route.clone(),
            Err(Denial(reason)) => {
                tracing::warn!(tenant = %self.capability.tenant, method = %request.method(), "{reason}");
                return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
            }
        };

        add_keys(request.headers_mut(), &route);
        let options = self.capability.timeouts(options);
        tracing::debug!(tenant = %self.capability.tenant, database = %route.database_key, method = %request.method(), path = %request.uri().path(), "sending Parse request");

        Box::new(async move {
            use http_body_util::BodyExt;
            let (response, io) = wasmtime_wasi_http::default_send_request(request, Some(options)).await?;
            Ok((response.map(BodyExt::boxed_unsync), Box::new(io) as Box<dyn Future<Output = _> + Send>))
        })
    }
}

/// Sets the route's application id and keys, replacing whatever was there.
fn add_keys(headers: &mut http::HeaderMap, route: &ParseRoute) {
    for name in KEY_HEADERS {
        headers.remove(name);
    }
    let mut set = |name: &'static str, value: &str| {
        if let Ok(mut value) = HeaderValue::from_str(value) {
            value.set_sensitive(true);
            headers.insert(name, value);
        }
    };
    set(APP_ID_HEADER, &route.app_id);
    if let Some(key) = &route.master_key {
        set(MASTER_KEY_HEADER, key.expose());
    }
    if let Some(key) = &route.rest_api_key {
        set(REST_KEY_HEADER, key.expose());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn capability() -> HttpCapability {
        let text = "
databases:
  farm:
    parse: {server_url: 'http://127.0.0.1:1337/parse', app_id: agros-a, master_key: mk-a, rest_api_key: rk-a}
  market:
    parse: {server_url: 'http://127.0.0.1:1337/parse', app_id: agros-m, master_key: mk-m}
  remote:
    parse: {server_url: 'https://Parse.Example.org/', app_id: agros-r, master_key: mk-r}
  archive:
    sync: false
    parse: {server_url: 'http://127.0.0.1:1339/parse', app_id: agros-x}
";
        let config = Config::parse(text, Path::new("config.yaml"), &|_| None).unwrap();
        HttpCapability::for_tenant("default", &config)
    }

    fn authorize(uri: &str, app_id: Option<&str>) -> Result<String, Denial> {
        let uri: Uri = uri.parse().unwrap();
        capability().authorize(&uri, app_id).map(|route| route.database_key.clone())
    }

    #[test]
    fn exact_origin_and_prefix_is_allowed() {
        assert_eq!(authorize("http://127.0.0.1:1337/parse/classes/Plot", Some("agros-a")).unwrap(), "farm");
        assert_eq!(authorize("http://127.0.0.1:1337/parse", Some("agros-a")).unwrap(), "farm");
    }

    #[test]
    fn app_id_picks_between_apps_on_one_url() {
        assert_eq!(authorize("http://127.0.0.1:1337/parse/health", Some("agros-m")).unwrap(), "market");
    }

    #[test]
    fn unknown_app_id_is_denied() {
        assert!(authorize("http://127.0.0.1:1337/parse/health", Some("other")).is_err());
    }

    #[test]
    fn other_port_is_denied() {
        let denial = authorize("http://127.0.0.1:1338/parse/health", None).unwrap_err();
        assert!(denial.0.contains("127.0.0.1:1338"), "{}", denial.0);
    }

    #[test]
    fn other_loopback_address_is_denied() {
        assert!(authorize("http://127.0.0.2:1337/parse/health", None).is_err());
        assert!(authorize("http://localhost:1337/parse/health", None).is_err());
    }

    #[test]
    fn other_scheme_is_denied() {
        assert!(authorize("https://127.0.0.1:1337/parse/health", None).is_err());
    }

    #[test]
    fn sibling_path_is_denied() {
        assert!(authorize("http://127.0.0.1:1337/parsex/health", None).is_err());
        assert!(authorize("http://127.0.0.1:1337/other", None).is_err());
    }

    #[test]
    fn dot_segments_are_denied() {
        for path in ["/parse/../admin", "/parse/%2e%2e/admin", "/parse/%2E%2e/x", "/parse/./classes/Plot", "/parse/classes/.."] {
            assert!(authorize(&format!("http://127.0.0.1:1337{path}"), Some("agros-a")).is_err(), "{path}");
        }
        // Dots inside a segment and encoded slashes are not dot segments.
        assert_eq!(authorize("http://127.0.0.1:1337/parse/classes/Plot/a..b", Some("agros-a")).unwrap(), "farm");
        assert_eq!(authorize("http://127.0.0.1:1337/parse/classes/Plot/..%2F..%2Fx", Some("agros-a")).unwrap(), "farm");
    }

    #[test]
    fn default_port_and_case_match() {
        assert_eq!(authorize("https://parse.example.org/classes/Plot", None).unwrap(), "remote");
        assert_eq!(authorize("https://parse.example.org:443/health", None).unwrap(), "remote");
        assert!(authorize("https://parse.example.org:8443/health", None).is_err());
    }

    #[test]
    fn unsynced_database_is_denied() {
        assert!(authorize("http://127.0.0.1:1339/parse/health", None).is_err());
    }

    #[test]
    fn keys_replace_guest_headers() {
        let capability = capability();
        let route = capability.routes[0].clone();
        let mut headers = http::HeaderMap::new();
        headers.insert(MASTER_KEY_HEADER, HeaderValue::from_static("guest-forged"));
        add_keys(&mut headers, &route);
        assert_eq!(headers[MASTER_KEY_HEADER], "mk-a");
        assert_eq!(headers[REST_KEY_HEADER], "rk-a");
        assert_eq!(headers[APP_ID_HEADER], "agros-a");
    }

    #[test]
    fn denial_never_contains_keys() {
        let denial = authorize("http://127.0.0.1:9/x", Some("agros-a")).unwrap_err();
        for key in ["mk-a", "rk-a", "mk-m", "mk-r"] {
            assert!(!denial.0.contains(key));
        }
    }
}

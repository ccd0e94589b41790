//! The route table: which method and path template reach which endpoint.
//! `openapi.json` describes exactly these routes; a unit test checks both
//! lists match.

use hyper::Method;

/// One operation of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Health,
    OpenApi,
    Tenants,
    Status,
    Sync,
    Delete,
    Query,
    Flush,
    OutboxList,
    OutboxEntry,
    OutboxRetry,
    OutboxDiscard,
    Reload,
}

/// A method and a path template. `{tenant}` and `{id}` match one path
/// segment each.
#[derive(Debug)]
pub struct Route {
    pub method: &'static str,
    pub template: &'static str,
    pub endpoint: Endpoint,
    /// Whether the route serves requests without the bearer token.
    pub public: bool,
}

const fn route(method: &'static str, template: &'static str, endpoint: Endpoint) -> Route {
    Route { method, template, endpoint, public: false }
}

pub const ROUTES: &[Route] = &[
    Route { method: "GET", template: "/v1/health", endpoint: Endpoint::Health, public: true },
    // Load balancers often probe with HEAD. hyper sends the GET response's
    // headers and drops its body.
    Route { method: "HEAD", template: "/v1/health", endpoint: Endpoint::Health, public: true },
    Route { method: "GET", template: "/openapi.json", endpoint: Endpoint::OpenApi, public: true },
    route("GET", "/v1/tenants", Endpoint::Tenants),
    route("GET", "/v1/tenants/{tenant}/status", Endpoint::Status),
    route("POST", "/v1/tenants/{tenant}/sync", Endpoint::Sync),
    route("POST", "/v1/tenants/{tenant}/delete", Endpoint::Delete),
    route("POST", "/v1/tenants/{tenant}/query", Endpoint::Query),
    route("POST", "/v1/tenants/{tenant}/flush", Endpoint::Flush),
    route("GET", "/v1/tenants/{tenant}/outbox", Endpoint::OutboxList),
    route("GET", "/v1/tenants/{tenant}/outbox/{id}", Endpoint::OutboxEntry),
    route("POST", "/v1/tenants/{tenant}/outbox/retry", Endpoint::OutboxRetry),
    route("POST", "/v1/tenants/{tenant}/outbox/discard", Endpoint::OutboxDiscard),
    route("POST", "/v1/reload", Endpoint::Reload),
];

/// A route that matched, with the path segments its template captured.
#[derive(Debug)]
pub struct Found<'a> {
    pub route: &'static Route,
    pub tenant: Option<&'a str>,
    pub id: Option<&'a str>,
}

#[derive(Debug)]
pub enum RouteMatch<'a> {
    Found(Found<'a>),
    /// The path exists but not with this method. `allow` lists the methods
    /// it has; `public` is true when every one of them is public.
    MethodNotAllowed { allow: Vec<&'static str>, public: bool },
    NotFound,
}

/// Finds the route for `method` and `path`. When several templates match the
/// path, the one with the most literal segments wins, so
/// `/outbox/retry` is the retry route and not the entry `retry`.
pub fn match_route<'a>(method: &Method, path: &'a str) -> RouteMatch<'a> {
    let mut best: Option<(usize, &'static str)> = None;
    for route in ROUTES {
        if let Some(literals) = literal_segments_if_matching(route.template, path) {
            if best.is_none_or(|(most, _)| literals > most) {
                best = Some((literals, route.template));
            }
        }
    }
    let Some((_, template)) = best else {
        return RouteMatch::NotFound;
    };

    let candidates: Vec<&'static Route> = ROUTES.iter().filter(|r| r.template == template).collect();
    match candidates.iter().find(|r| r.method == method.as_str()) {
        Some(route) => {
            let (tenant, id) = captures(template, path);
            RouteMatch::Found(Found { route, tenant, id })
        }
        None => RouteMatch::MethodNotAllowed {
            allow: candidates.iter().map(|r| r.method).collect(),
            public: candidates.iter().all(|r| r.public),
        },
    }
}

/// Returns how many literal segments `template` has when it matches `path`.
fn literal_segments_if_matching(template: &str, path: &str) -> Option<usize> {
    let mut literals = 0;
    let mut path_segments = path.split('/');
    for expected in template.split('/') {
        let actual = path_segments.next()?;
        if is_parameter(expected) {
            if actual.is_empty() {
                return None;
            }
        } else if expected == actual {
            literals += 1;
        } else {
            return None;
        }
    }
    path_segments.next().is_none().then_some(literals)
}

fn captures<'a>(template: &str, path: &'a str) -> (Option<&'a str>, Option<&'a str>) {
    let (mut tenant, mut id) = (None, None);
    for (expected, actual) in template.split('/').zip(path.split('/')) {
        match expected {
            "{tenant}" => tenant = Some(actual),
            "{id}" => id = Some(actual),
            _ => {}
        }
    }
    (tenant, id)
}

fn is_parameter(segment: &str) -> bool {
    segment.starts_with('{') && segment.ends_with('}')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(method: Method, path: &str) -> (Endpoint, Option<&str>, Option<&str>) {
        match match_route(&method, path) {
            RouteMatch::Found(found) => (found.route.endpoint, found.tenant, found.id),
            other => panic!("{method} {path} matched {other:?}"),
        }
    }

    #[test]
    fn routes_capture_tenant_and_id() {
        assert_eq!(found(Method::GET, "/v1/tenants"), (Endpoint::Tenants, None, None));
        assert_eq!(found(Method::GET, "/v1/tenants/farm-1/status"), (Endpoint::Status, Some("farm-1"), None));
        assert_eq!(found(Method::GET, "/v1/tenants/a/outbox/42"), (Endpoint::OutboxEntry, Some("a"), Some("42")));
        assert_eq!(found(Method::POST, "/v1/reload"), (Endpoint::Reload, None, None));
    }

    #[test]
    fn literal_segment_beats_parameter() {
        assert_eq!(found(Method::POST, "/v1/tenants/a/outbox/retry"), (Endpoint::OutboxRetry, Some("a"), None));
        assert_eq!(found(Method::POST, "/v1/tenants/a/outbox/discard"), (Endpoint::OutboxDiscard, Some("a"), None));
        match match_route(&Method::GET, "/v1/tenants/a/outbox/retry") {
            RouteMatch::MethodNotAllowed { allow, public } => assert_eq!((allow, public), (vec!["POST"], false)),
            other => panic!("GET on the retry route matched {other:?}"),
        }
    }

    #[test]
    fn wrong_method_lists_allowed_ones() {
        match match_route(&Method::DELETE, "/v1/health") {
            RouteMatch::MethodNotAllowed { allow, public } => assert_eq!((allow, public), (vec!["GET", "HEAD"], true)),
            other => panic!("DELETE /v1/health matched {other:?}"),
        }
    }

    #[test]
    fn head_reaches_health_only() {
        assert_eq!(found(Method::HEAD, "/v1/health"), (Endpoint::Health, None, None));
        match match_route(&Method::HEAD, "/v1/tenants") {
            RouteMatch::MethodNotAllowed { allow, .. } => assert_eq!(allow, vec!["GET"]),
            other => panic!("HEAD /v1/tenants matched {other:?}"),
        }
    }

    #[test]
    fn unknown_paths_are_not_found() {
        for path in ["/", "/v1", "/v1/tenants/", "/v1/tenants//status", "/v1/tenants/a/status/", "/v1/tenants/a/outbox/1/x", "/v2/health"] {
            assert!(matches!(match_route(&Method::GET, path), RouteMatch::NotFound), "{path}");
        }
    }

    /// Every route of the table is in `openapi.json` with its method, and
    /// `openapi.json` describes no route the table lacks.
    #[test]
    fn openapi_lists_every_route() {
        let document: serde_json::Value = serde_json::from_str(super::super::handlers::OPENAPI).expect("openapi.json parses");
        assert_eq!(document["openapi"].as_str().map(|v| &v[..4]), Some("3.1."));

        let mut described = Vec::new();
        for (template, operations) in document["paths"].as_object().expect("openapi.json has paths") {
            for method in operations.as_object().expect("a path item is an object").keys() {
                if ["get", "post", "put", "patch", "delete", "head", "options"].contains(&method.as_str()) {
                    described.push(format!("{} {template}", method.to_uppercase()));
                }
            }
        }
        let mut routed: Vec<String> = ROUTES.iter().map(|r| format!("{} {}", r.method, r.template)).collect();
        described.sort();
        routed.sort();
        assert_eq!(described, routed);
    }

    /// Public routes declare no security in `openapi.json`; every other
    /// route inherits the document's bearer requirement.
    #[test]
    fn openapi_marks_public_routes() {
        let document: serde_json::Value = serde_json::from_str(super::super::handlers::OPENAPI).unwrap();
        assert_eq!(document["security"], serde_json::json!([{ "bearer": [] }]));
        for route in ROUTES {
            let operation = &document["paths"][route.template][route.method.to_lowercase()];
            let public = operation["security"] == serde_json::json!([]);
            assert_eq!(public, route.public, "{} {}", route.method, route.template);
        }
    }
}

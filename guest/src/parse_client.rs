//! `ParseClient`: the REST calls to one Parse Server application.

use serde_json::{json, Map, Value};
use waki::Method;

use crate::errors::{self, error, ErrorKind, SyncResult};
use crate::http;
use crate::query::{self, QueryPage};

/// One Parse Server application, addressed by its URL and application id.
///
/// The client has no keys: the host adds them to each request it allows.
#[derive(Debug, Clone)]
pub struct ParseClient {
    pub database_key: String,
    pub server_url: String,
    pub app_id: String,
}

/// The parts of `/serverInfo` the plugin uses.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerInfo {
    pub version: Option<String>,
}

impl ParseClient {
    pub fn new(database_key: &str, server_url: &str, app_id: &str) -> Self {
        Self {
            database_key: database_key.to_owned(),
            server_url: server_url.trim_end_matches('/').to_owned(),
            app_id: app_id.to_owned(),
        }
    }

    /// Creates an object; `body` may carry a client-chosen `objectId`.
    /// Returns the objectId the server stored.
    pub fn create(&self, class_name: &str, body: &Map<String, Value>) -> SyncResult<String> {
        let answer = self.call(Method::Post, &class_path(class_name, None), Some(body), class_name)?;
        match answer.get("objectId").and_then(Value::as_str) {
            Some(id) => Ok(id.to_owned()),
            None => Err(errors::internal(format!("create in {class_name} answered without an objectId: {answer}"))),
        }
    }

    /// Updates the given fields of an existing object.
    pub fn update(&self, class_name: &str, object_id: &str, body: &Map<String, Value>) -> SyncResult<()> {
        let subject = format!("{class_name}/{object_id}");
        self.call(Method::Put, &class_path(class_name, Some(object_id)), Some(body), &subject)?;
        Ok(())
    }

    /// Fetches one object.
    pub fn get(&self, class_name: &str, object_id: &str) -> SyncResult<Value> {
        let subject = format!("{class_name}/{object_id}");
        self.call(Method::Get, &class_path(class_name, Some(object_id)), None, &subject)
    }

    /// Deletes one object.
    pub fn delete(&self, class_name: &str, object_id: &str) -> SyncResult<()> {
        let subject = format!("{class_name}/{object_id}");
        self.call(Method::Delete, &class_path(class_name, Some(object_id)), None, &subject)?;
        Ok(())
    }

    /// Runs one page of a query. Long queries go as a POST with
    /// `_method: GET`, because a long URL is cut by proxies and servers.
    pub fn query_page(&self, class_name: &str, page: &QueryPage) -> SyncResult<Vec<Value>> {
        let path = class_path(class_name, None);
        let query_string = query::to_query_string(page);
        let answer = if path.len() + query_string.len() + 1 <= query::MAX_GET_URL_BYTES {
            self.call(Method::Get, &format!("{path}?{query_string}"), None, class_name)?
        } else {
            let mut body = query::to_post_body(page);
            body.insert("_method".to_owned(), json!("GET"));
            self.call(Method::Post, &path, Some(&body), class_name)?
        };
        match answer.get("results") {
            Some(Value::Array(results)) => Ok(results.clone()),
            _ => Err(errors::internal(format!("query on {class_name} answered without results: {answer}"))),
        }
    }

    /// Returns true when `/health` returns `{"status":"ok"}`.
    pub fn health(&self) -> SyncResult<bool> {
        let answer = self.call(Method::Get, "/health", None, &self.server_url)?;
        Ok(answer.get("status").and_then(Value::as_str) == Some("ok"))
    }

    /// Reads `/serverInfo` (needs the master key, which the host adds).
    pub fn server_info(&self) -> SyncResult<ServerInfo> {
        let answer = self.call(Method::Get, "/serverInfo", None, &self.server_url)?;
        let version = answer.get("parseServerVersion").and_then(Value::as_str).map(str::to_owned);
        Ok(ServerInfo { version })
    }

    /// Reads the schema of one class: field name to Parse type. A class that
    /// does not exist yet has no fields.
    pub fn class_fields(&self, class_name: &str) -> SyncResult<crate::encode::FieldTypes> {
        let path = format!("/schemas/{class_name}");
        let answer = match self.call(Method::Get, &path, None, class_name) {
            Ok(answer) => answer,
            Err(e) if e.parse_code == Some(103) => return Ok(Default::default()),
            Err(e) => return Err(e),
        };
        let fields = answer.get("fields").and_then(Value::as_object);
        Ok(fields
            .into_iter()
            .flatten()
            .filter_map(|(name, spec)| Some((name.clone(), spec.get("type")?.as_str()?.to_owned())))
            .collect())
    }

    /// Creates an object with a stable `X-Parse-Request-Id`: Parse Server's
    /// idempotency check returns 159 to a repeat of the same id instead of
    /// creating the object twice. Returns the objectId the server chose.
    pub fn create_idempotent(&self, class_name: &str, body: &Map<String, Value>, request_id: &str) -> SyncResult<String> {
        let path = class_path(class_name, None);
        let answer = self.call_with_headers(Method::Post, &path, Some(body), class_name, &[("X-Parse-Request-Id", request_id)])?;
        match answer.get("objectId").and_then(Value::as_str) {
            Some(id) => Ok(id.to_owned()),
            None => Err(errors::internal(format!("create in {class_name} answered without an objectId: {answer}"))),
        }
    }

    /// Finds the objectId of the object whose `field` equals `value`, if any.
    pub fn find_id_by_field(&self, class_name: &str, field: &str, value: &str) -> SyncResult<Option<String>> {
        let page = QueryPage {
            where_: json!({ field: value }),
            limit: 1,
            skip: 0,
            order: None,
            keys: Some("objectId".to_owned()),
        };
        match self.query_page(class_name, &page) {
            Ok(results) => Ok(results.first().and_then(|o| o.get("objectId")).and_then(Value::as_str).map(str::to_owned)),
            // The class does not exist yet, so neither does the object.
            Err(e) if e.parse_code == Some(103) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sends up to 50 operations in one `/batch` request. Parse runs them
    /// concurrently and answers one result per operation, in order: the
    /// `success` object or the `error`. A failure of the request itself is
    /// the `Err`.
    pub fn batch(&self, operations: &[BatchOperation]) -> SyncResult<Vec<Result<Value, Value>>> {
        let mount = self.mount_path();
        let requests: Vec<Value> = operations
            .iter()
            .map(|op| {
                let mut request = json!({ "method": op.method, "path": format!("{mount}{}", op.path) });
                if let Some(body) = &op.body {
                    request["body"] = Value::Object(body.clone());
                }
                request
            })
            .collect();
        let body = json!({ "requests": requests });
        let answer = self.call(Method::Post, "/batch", body.as_object(), "/batch")?;
        let Some(items) = answer.as_array().filter(|items| items.len() == operations.len()) else {
            return Err(errors::internal(format!("/batch answered {} results for {} operations", answer.as_array().map_or(0, Vec::len), operations.len())));
        };
        Ok(items
            .iter()
            .map(|item| match (item.get("success"), item.get("error")) {
                (Some(success), _) => Ok(success.clone()),
                (None, Some(error)) => Err(error.clone()),
                (None, None) => Err(json!({ "code": 1, "error": format!("unexpected batch item {item}") })),
            })
            .collect())
    }

    /// Returns the server URL's path, such as `/parse`, which `/batch`
    /// operations put in front of their paths.
    fn mount_path(&self) -> String {
        let after_scheme = self.server_url.split_once("://").map_or(self.server_url.as_str(), |(_, rest)| rest);
        after_scheme.find('/').map(|i| after_scheme[i..].to_owned()).unwrap_or_default()
    }

    /// Sends a raw request; used by the server check, which needs to read
    /// error answers itself.
    pub fn call(&self, method: Method, path: &str, body: Option<&Map<String, Value>>, subject: &str) -> SyncResult<Value> {
        self.call_with_headers(method, path, body, subject, &[])
    }

    fn call_with_headers(
        &self,
        method: Method,
        path: &str,
        body: Option<&Map<String, Value>>,
        subject: &str,
        extra_headers: &[(&'static str, &str)],
    ) -> SyncResult<Value> {
        let url = format!("{}{}", self.server_url, path);
        let body = body.map(|b| serde_json::to_vec(b).expect("a JSON map always serializes"));
        let mut headers = vec![("X-Parse-Application-Id", self.app_id.as_str()), ("Content-Type", "application/json")];
        headers.extend_from_slice(extra_headers);

        let response = http::send(method, &url, &headers, body)?;
        if !(200..300).contains(&response.status) {
            return Err(errors::from_response(response.status, &response.body, response.retry_after, subject));
        }
        if response.body.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&response.body).map_err(|e| {
            error(ErrorKind::Internal, url.clone(), format!("{url} returned HTTP {} with invalid JSON: {e}", response.status))
        })
    }
}

/// One operation of a `/batch` request.
#[derive(Debug, Clone)]
pub struct BatchOperation {
    pub method: &'static str,
    /// The path below the server URL, such as `/classes/Plot/abc`.
    pub path: String,
    pub body: Option<Map<String, Value>>,
}

impl BatchOperation {
    pub fn create(class_name: &str, body: Map<String, Value>) -> Self {
        Self { method: "POST", path: class_path(class_name, None), body: Some(body) }
    }

    pub fn update(class_name: &str, object_id: &str, body: Map<String, Value>) -> Self {
        Self { method: "PUT", path: class_path(class_name, Some(object_id)), body: Some(body) }
    }

    pub fn delete(class_name: &str, object_id: &str) -> Self {
        Self { method: "DELETE", path: class_path(class_name, Some(object_id)), body: None }
    }
}

/// `/classes/<class>[/<objectId>]`. Class names are validated before they get
/// here; objectIds come from callers, so they are percent-encoded.
fn class_path(class_name: &str, object_id: Option<&str>) -> String {
    match object_id {
        Some(id) => format!("/classes/{class_name}/{}", query::percent_encode(id)),
        None => format!("/classes/{class_name}"),
    }
}

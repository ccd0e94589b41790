//! `ParseClient`: the REST calls to one Parse Server application.

use serde_json::{json, Map, Value};
use waki::Method;

use crate::errors::{self, error, ErrorKind, SyncResult};
use crate::http;
use crate::query::{self, QueryPage};

/// One Parse Server application, addressed by its URL and application id.
///
/// The client holds no keys: the host adds them to each request it allows.
#[derive(Debug, Clone)]
pub struct ParseClient {
    pub database_key: String,
    pub server_url: String,
    pub app_id: String,
}

/// An answer from `/serverInfo`.
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

    /// Returns true when `/health` answers `{"status":"ok"}`.
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

    /// Sends a raw request; used by the server check, which needs to read
    /// error answers itself.
    pub fn call(&self, method: Method, path: &str, body: Option<&Map<String, Value>>, subject: &str) -> SyncResult<Value> {
        let url = format!("{}{}", self.server_url, path);
        let body = body.map(|b| serde_json::to_vec(b).expect("a JSON map always serializes"));
        let headers = [("X-Parse-Application-Id", self.app_id.as_str()), ("Content-Type", "application/json")];

        let response = http::send(method, &url, &headers, body)?;
        if !(200..300).contains(&response.status) {
            return Err(errors::from_response(response.status, &response.body, subject));
        }
        if response.body.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&response.body).map_err(|e| {
            error(ErrorKind::Internal, url.clone(), format!("{url} answered {} with invalid JSON: {e}", response.status))
        })
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

//! `ParserClient` and `ParserService`: check a Parse Server before its client
//! is used, and keep the findings in `app_config` and the status.
//!
//! The check reads `/health` (reachability), `/serverInfo` (version; it also
//! proves the host's master key works) and whether the server accepts
//! client-chosen objectIds (`allowCustomObjectId`).

use serde_json::json;
use waki::Method;

use crate::bindings::agros::sync::app_config;
use crate::client_factory::ManagedClient;
use crate::encode::FieldTypes;
use crate::errors::{ErrorKind, SyncError, SyncResult};
use crate::parse_client::ParseClient;

/// The findings of one server check.
#[derive(Debug, Clone)]
pub struct ServerCheck {
    pub reachable: bool,
    pub version: Option<String>,
    pub custom_object_ids: Option<bool>,
    pub error: Option<SyncError>,
}

/// Stateless calls to a server's administrative endpoints.
pub struct ParserClient<'a> {
    client: &'a ParseClient,
}

impl<'a> ParserClient<'a> {
    pub fn new(client: &'a ParseClient) -> Self {
        Self { client }
    }

    /// Finds out whether the server accepts client-chosen objectIds, without
    /// writing anything.
    ///
    /// It creates an object with an objectId in the class `_AgrosSyncProbe`,
    /// a name Parse rejects. A server without `allowCustomObjectId` rejects the
    /// objectId first: 105, "objectId is an invalid field name". A server with
    /// it gets as far as the class name, which Parse Server 9.10 rejects with
    /// 107 ("schema class name does not revalidate"); older versions return 103.
    pub fn accepts_custom_object_ids(&self) -> SyncResult<bool> {
        let body = json!({ "objectId": "agrosProbe" });
        let body = body.as_object().expect("literal object");
        match self.client.call(Method::Post, "/classes/_AgrosSyncProbe", Some(body), "_AgrosSyncProbe") {
            Err(e) if matches!(e.parse_code, Some(103 | 107)) => Ok(true),
            Err(e) if e.parse_code == Some(105) => Ok(false),
            Err(e) => Err(e),
            Ok(answer) => Err(crate::errors::internal(format!(
                "the objectId probe created an object in an invalid class; answer: {answer}"
            ))),
        }
    }
}

/// Checks servers and records the findings.
pub struct ParserService;

impl ParserService {
    /// Checks the server now and stores the result on the client and in
    /// `app_config` (`parser-<db>-server-version`, `parser-<db>-custom-object-ids`).
    pub fn check(managed: &mut ManagedClient) -> &ServerCheck {
        let client = &managed.client;
        let result = Self::run_check(client, managed.check.as_ref());
        let check = match result {
            Ok(check) => check,
            Err(e) => {
                crate::log::warn("Parse server check failed", &[("database", &client.database_key), ("error", &e.detail)]);
                // Keep what an earlier check found, in this process or a
                // previous one, since the server itself cannot tell now.
                let key = &client.database_key;
                ServerCheck {
                    reachable: !matches!(e.kind, ErrorKind::ServerUnavailable | ErrorKind::RequestDenied),
                    version: managed
                        .check
                        .as_ref()
                        .and_then(|c| c.version.clone())
                        .or_else(|| app_config::get(&format!("parser-{key}-server-version"))),
                    custom_object_ids: managed
                        .check
                        .as_ref()
                        .and_then(|c| c.custom_object_ids)
                        .or_else(|| app_config::get(&format!("parser-{key}-custom-object-ids")).and_then(|v| v.parse().ok())),
                    error: Some(e),
                }
            }
        };
        managed.check.insert(check)
    }

    /// Checks the server once per client; later calls reuse the result.
    /// Fails when the server cannot be used.
    pub fn ensure_ready(managed: &mut ManagedClient) -> SyncResult<&ServerCheck> {
        let needs_check = managed.check.as_ref().is_none_or(|c| c.error.is_some());
        if needs_check {
            Self::check(managed);
        }
        let check = managed.check.as_ref().expect("checked above");
        match &check.error {
            Some(e) => Err(e.clone()),
            None => Ok(check),
        }
    }

    /// Returns the field types of `class_name`, read again when `fields` names one the
    /// cached schema does not have (another writer may have added it).
    pub fn class_fields<'m>(managed: &'m mut ManagedClient, class_name: &str, fields: &[&str]) -> SyncResult<&'m FieldTypes> {
        let stale = match managed.schemas.get(class_name) {
            None => true,
            Some(known) => fields.iter().any(|f| !known.contains_key(*f)),
        };
        if stale {
            let types = managed.client.class_fields(class_name)?;
            managed.schemas.insert(class_name.to_owned(), types);
        }
        Ok(&managed.schemas[class_name])
    }

    fn run_check(client: &ParseClient, previous: Option<&ServerCheck>) -> SyncResult<ServerCheck> {
        if !client.health()? {
            return Err(crate::errors::error(
                ErrorKind::ServerUnavailable,
                client.server_url.clone(),
                format!("{}/health does not answer status ok; the server is starting or unhealthy", client.server_url),
            ));
        }
        let info = client.server_info()?;
        let key = &client.database_key;

        // The probe is cached per server version: `allowCustomObjectId` is
        // start-up configuration, so it only changes with a restart, which an
        // upgrade also is.
        let version_key = format!("parser-{key}-server-version");
        let custom_key = format!("parser-{key}-custom-object-ids");
        let known_version = app_config::get(&version_key);
        let cached = previous
            .and_then(|c| c.custom_object_ids)
            .or_else(|| app_config::get(&custom_key).and_then(|v| v.parse().ok()))
            .filter(|_| known_version.is_some() && known_version == info.version);
        let custom_object_ids = match cached {
            Some(value) => value,
            None => ParserClient::new(client).accepts_custom_object_ids()?,
        };

        if let Some(version) = &info.version {
            app_config::set(&version_key, version);
        }
        app_config::set(&custom_key, &custom_object_ids.to_string());
        Ok(ServerCheck {
            reachable: true,
            version: info.version,
            custom_object_ids: Some(custom_object_ids),
            error: None,
        })
    }
}

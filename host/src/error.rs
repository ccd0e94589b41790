//! Errors of calls into the plugin, and the report shown to a user or a script.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::bindings::{ErrorKind, SyncError};
use crate::messages::{error_message, server_error_message, Lang};

/// The failure of a call into the plugin.
#[derive(Debug, Error)]
pub enum CallError {
    /// The plugin returned a typed error.
    #[error("{}", .0.detail)]
    Plugin(SyncError),
    /// The plugin trapped; its instance was discarded.
    #[error("plugin instance of tenant {tenant:?} trapped: {message}{}", guest_suffix(.guest_message))]
    Trap { tenant: String, message: String, guest_message: String },
    /// The call ran past `limits.call_timeout_secs`; its instance was
    /// discarded.
    #[error("plugin call of tenant {tenant:?} ran longer than {seconds}s (limits.call_timeout_secs) and was stopped")]
    Timeout { tenant: String, seconds: u64 },
    /// A new instance could not be created.
    #[error("failed to instantiate the plugin: {0}")]
    Instantiate(String),
}

fn guest_suffix(guest_message: &str) -> String {
    if guest_message.is_empty() {
        String::new()
    } else {
        format!(" (plugin output: {guest_message})")
    }
}

/// An error as printed by the CLI and returned by the API: a stable code, a
/// message in the user's language, and the details scripts need.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorReport {
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parse_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
}

impl ErrorReport {
    /// Builds a report for an error that did not come from the plugin.
    pub fn new(lang: Lang, code: &str, subject: Option<String>, detail: String) -> Self {
        let message = error_message(lang, code, subject.as_deref().unwrap_or_default(), &detail);
        Self { code: code.to_owned(), message, subject, detail, parse_code: None, http_status: None }
    }

    pub fn from_call(lang: Lang, error: &CallError) -> Self {
        match error {
            CallError::Plugin(e) => Self::from_sync_error(lang, e),
            CallError::Trap { guest_message, .. } => {
                let hint = if guest_message.contains("memory allocation") { memory_hint(lang) } else { trap_hint(lang) };
                Self::new(lang, "plugin-trap", None, format!("{error}; {hint}"))
            }
            CallError::Timeout { .. } => Self::new(lang, "plugin-timeout", None, format!("{error}; {}", timeout_hint(lang))),
            CallError::Instantiate(_) => Self::new(lang, "plugin-unavailable", None, error.to_string()),
        }
    }

    pub fn from_sync_error(lang: Lang, error: &SyncError) -> Self {
        let mut report = Self::new(lang, error_code(error.kind), error.subject.clone(), error.detail.clone());
        report.parse_code = error.parse_code;
        report.http_status = error.http_status;
        let from_server = error.parse_code.is_some() || error.http_status.is_some() || error.kind == ErrorKind::ServerUnavailable;
        if from_server {
            let subject = error.subject.as_deref().unwrap_or_default();
            report.message = server_error_message(lang, &report.code, subject, &error.detail, error.parse_code, error.http_status);
        }
        report
    }
}

fn trap_hint(lang: Lang) -> &'static str {
    lang.pick(
        "writes it had already recorded stay in the outbox; the next call starts a fresh instance",
        "las escrituras que ya había guardado siguen en la cola; la siguiente llamada usa una instancia nueva",
    )
}

fn memory_hint(lang: Lang) -> &'static str {
    lang.pick(
        "the plugin ran out of memory and the next call starts a fresh instance; query with --limit or --keys, lower limits.query_page_size or raise limits.plugin_memory_bytes",
        "el plugin se quedó sin memoria y la siguiente llamada usa una instancia nueva; consulte con --limit o --keys, baje limits.query_page_size o suba limits.plugin_memory_bytes",
    )
}

fn timeout_hint(lang: Lang) -> &'static str {
    lang.pick(
        "writes it had accepted stay in the outbox; the next call starts a fresh instance; raise limits.call_timeout_secs if the work is legitimately long",
        "las escrituras que ya había aceptado siguen en la cola; la siguiente llamada usa una instancia nueva; suba limits.call_timeout_secs si el trabajo es largo de verdad",
    )
}

/// Returns the stable code of an error kind, as spelt in the WIT enum.
pub fn error_code(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::UnknownDatabase => "unknown-database",
        ErrorKind::SyncDisabled => "sync-disabled",
        ErrorKind::InvalidClassName => "invalid-class-name",
        ErrorKind::InvalidFieldName => "invalid-field-name",
        ErrorKind::InvalidJson => "invalid-json",
        ErrorKind::InvalidValue => "invalid-value",
        ErrorKind::ObjectTooLarge => "object-too-large",
        ErrorKind::ObjectNotFound => "object-not-found",
        ErrorKind::ServerRejected => "server-rejected",
        ErrorKind::ServerUnavailable => "server-unavailable",
        ErrorKind::Unauthorized => "unauthorized",
        ErrorKind::RequestDenied => "request-denied",
        ErrorKind::StateStore => "state-store",
        ErrorKind::Internal => "internal",
    }
}

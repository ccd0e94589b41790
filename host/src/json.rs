//! The JSON forms of call results, shared by the CLI's `--json` output and
//! the HTTP API, so a script gets the same fields from both.

use serde_json::{json, Value};

use crate::bindings::{ClientStatus, FlushReport, SyncOutcome, SyncStatus};
use crate::error::ErrorReport;
use crate::messages::Lang;
use crate::state::OutboxEntry;
use crate::tenant::PluginInfo;

/// A `sync` or `delete` result.
pub fn sync_outcome_json(outcome: &SyncOutcome) -> Value {
    let status = match outcome.status {
        SyncStatus::Synced => "synced",
        SyncStatus::Queued => "queued",
    };
    json!({ "status": status, "object_id": outcome.object_id, "created": outcome.created, "outbox_id": outcome.outbox_id })
}

/// A tenant's status: the plugin version it runs and one entry per database.
pub fn tenant_status_json(tenant: &str, plugin: &PluginInfo, statuses: &[ClientStatus], lang: Lang) -> Value {
    json!({
        "tenant": tenant,
        "plugin": plugin_json(plugin),
        "clients": statuses.iter().map(|s| client_status_json(s, lang)).collect::<Vec<_>>(),
    })
}

pub fn plugin_json(plugin: &PluginInfo) -> Value {
    json!({ "version": plugin.version, "hash": plugin.hash, "loaded_at": plugin.loaded_at })
}

pub fn flush_report_json(report: &FlushReport) -> Value {
    json!({ "delivered": report.delivered, "retried": report.retried, "dead_lettered": report.dead_lettered, "pending": report.pending })
}

/// An outbox entry; with `with_payload`, the JSON payload too.
pub fn outbox_entry_json(entry: &OutboxEntry, with_payload: bool) -> Value {
    let mut value = json!({
        "id": entry.id,
        "state": entry.state.as_str(),
        "database": entry.database_key,
        "class": entry.class_name,
        "operation": entry.operation.as_str(),
        "object_id": entry.object_id,
        "local_id": entry.local_id,
        "attempts": entry.attempts,
        "created_at": entry.created_at,
        "next_attempt_at": entry.next_attempt_at,
        "last_error_code": entry.last_error_code,
        "last_error": entry.last_error,
        "blocked_by": entry.blocked_by,
    });
    if with_payload {
        value["payload"] = serde_json::from_str(&entry.payload).unwrap_or(Value::String(entry.payload.clone()));
    }
    value
}

/// One database's client.
pub fn client_status_json(status: &ClientStatus, lang: Lang) -> Value {
    json!({
        "database": status.database_key,
        "sync_enabled": status.sync_enabled,
        "server_url": status.server_url,
        "app_id": status.app_id,
        "reachable": status.reachable,
        "server_version": status.server_version,
        "custom_object_ids": status.custom_object_ids,
        "last_error": status.last_error.as_ref().map(|e| ErrorReport::from_sync_error(lang, e)),
        "pending": status.pending,
        "oldest_pending_at": status.oldest_pending_at,
        "dead_letters": status.dead_letters,
        "last_success_at": status.last_success_at,
        "next_retry_at": status.next_retry_at,
        "paused": status.paused,
    })
}

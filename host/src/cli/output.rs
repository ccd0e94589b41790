//! Printing of results and errors: human lines in the user's language,
//! or JSON with `--json`.

use agros_sync_host::bindings::{ClientStatus, ObjectRef, SyncOutcome, SyncStatus};
use agros_sync_host::json::{sync_outcome_json, tenant_status_json};
use agros_sync_host::tenant::PluginInfo;
use agros_sync_host::error::ErrorReport;
use agros_sync_host::host_state::now_millis;
use agros_sync_host::messages::Lang;
use serde_json::{json, Value};

use super::Failure;

pub struct Output {
    pub lang: Lang,
    pub json: bool,
}

impl Output {
    fn t<'a>(&self, en: &'a str, es: &'a str) -> &'a str {
        self.lang.pick(en, es)
    }

    pub fn failure(&self, failure: &Failure) {
        let report = &failure.report;
        if self.json && failure.summary_printed {
            return;
        }
        if self.json {
            println!("{}", json!({ "error": report }));
        } else {
            eprintln!("{}: {}", self.t("error", "error"), report.message);
        }
    }

    pub fn sync_outcome(&self, class_name: &str, outcome: &SyncOutcome) {
        if self.json {
            println!("{}", sync_outcome_json(outcome));
            return;
        }
        let object = outcome.object_id.as_deref().unwrap_or("?");
        let line = match (outcome.status, outcome.created) {
            (SyncStatus::Synced, true) => format!("{class_name}/{object} {}", self.t("created", "creado")),
            (SyncStatus::Synced, false) => format!("{class_name}/{object} {}", self.t("updated", "actualizado")),
            (SyncStatus::Queued, _) => format!(
                "{class_name}/{object} {} {}",
                self.t("queued as outbox entry", "en cola como entrada"),
                outcome.outbox_id
            ),
        };
        println!("{line}");
    }

    pub fn deleted(&self, class_name: &str, target: &ObjectRef, outcome: &SyncOutcome) {
        let object_id = outcome.object_id.as_deref().unwrap_or("?");
        let id = match target {
            ObjectRef::ObjectId(_) => object_id.to_owned(),
            ObjectRef::LocalId(local_id) => format!("{object_id} ({} {local_id})", self.t("local id", "id local")),
        };
        if self.json {
            println!("{}", sync_outcome_json(outcome));
            return;
        }
        match outcome.status {
            SyncStatus::Synced => println!("{class_name}/{id} {}", self.t("deleted", "borrado")),
            SyncStatus::Queued => println!(
                "{class_name}/{id} {} {}",
                self.t("delete queued as outbox entry", "borrado puesto en cola como entrada"),
                outcome.outbox_id
            ),
        }
    }

    pub fn objects(&self, objects: &[String]) {
        let values: Vec<Value> = objects.iter().map(|o| serde_json::from_str(o).unwrap_or(Value::String(o.clone()))).collect();
        if self.json {
            println!("{}", Value::Array(values));
            return;
        }
        for value in &values {
            println!("{value}");
        }
        let noun = match (values.len(), self.lang) {
            (1, Lang::En) => "object",
            (_, Lang::En) => "objects",
            (1, Lang::Es) => "objeto",
            (_, Lang::Es) => "objetos",
        };
        eprintln!("{} {noun}", values.len());
    }

    pub fn statuses(&self, tenant: &str, plugin: &PluginInfo, statuses: &[ClientStatus]) {
        if self.json {
            println!("{}", tenant_status_json(tenant, plugin, statuses, self.lang));
            return;
        }
        let short_hash = &plugin.hash[..plugin.hash.len().min(12)];
        println!("{} {tenant}: {} {} ({} {short_hash})", self.t("tenant", "tenant"), self.t("plugin", "plugin"), plugin.version, self.t("hash", "hash"));
        for status in statuses {
            println!("{}", self.status_line(status));
        }
    }

    pub fn app_config(&self, rows: &[(String, String)]) {
        if self.json {
            let map: serde_json::Map<String, Value> = rows.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
            println!("{}", Value::Object(map));
            return;
        }
        for (key, value) in rows {
            println!("{key} = {value}");
        }
    }

    fn status_line(&self, status: &ClientStatus) -> String {
        if !status.sync_enabled {
            return format!("{}: {}", status.database_key, self.t("sync disabled", "sincronización desactivada"));
        }
        let reachable = if status.reachable { self.t("reachable", "accesible") } else { self.t("unreachable", "inaccesible") };
        let version = status.server_version.as_deref().unwrap_or("?");
        let custom_ids = match status.custom_object_ids {
            Some(true) => self.t("yes", "sí"),
            Some(false) => self.t("no", "no"),
            None => "?",
        };
        let mut line = format!(
            "{}: {} (app {}) {reachable}, Parse Server {version}, {} {custom_ids}; {} {}, {} {}",
            status.database_key,
            status.server_url,
            status.app_id,
            self.t("custom objectIds:", "objectIds propios:"),
            self.t("pending", "pendientes"),
            status.pending,
            self.t("dead letters", "fallidas"),
            status.dead_letters,
        );

        let now = now_millis();
        if let Some(at) = status.oldest_pending_at {
            line.push_str(&format!(", {} {}", self.t("oldest pending", "pendiente más antigua"), age(now.saturating_sub(at))));
        }
        if let Some(at) = status.last_success_at {
            let ago = age(now.saturating_sub(at));
            let text = match self.lang {
                Lang::En => format!(", last success {ago} ago"),
                Lang::Es => format!(", último envío hace {ago}"),
            };
            line.push_str(&text);
        }
        if let Some(at) = status.next_retry_at.filter(|at| *at > now) {
            line.push_str(&format!(", {} {}", self.t("next retry in", "próximo intento en"), age(at.saturating_sub(now))));
        }

        if let Some(reason) = &status.paused {
            line.push_str(&format!("; {}: {reason}", self.t("PAUSED", "EN PAUSA")));
        }
        if let Some(error) = &status.last_error {
            let report = ErrorReport::from_sync_error(self.lang, error);
            line.push_str(&format!("; {}: {}", self.t("last error", "último error"), report.message));
        }
        line
    }
}

/// Formats a duration in milliseconds as `850ms`, `12s`, `4m`, `3h` or `2d`.
pub fn age(millis: u64) -> String {
    let seconds = millis / 1000;
    match seconds {
        0 => format!("{millis}ms"),
        1..=119 => format!("{seconds}s"),
        120..=7199 => format!("{}m", seconds / 60),
        7200..=172_799 => format!("{}h", seconds / 3600),
        _ => format!("{}d", seconds / 86_400),
    }
}

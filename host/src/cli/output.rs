//! How results and errors are printed: human lines in the user's language,
//! or JSON with `--json`.

use agros_sync_host::bindings::{ClientStatus, ObjectRef, SyncOutcome, SyncStatus};
use agros_sync_host::error::ErrorReport;
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
        let action = match (outcome.status, outcome.created) {
            (SyncStatus::Synced, true) => self.t("created", "creado"),
            (SyncStatus::Synced, false) => self.t("updated", "actualizado"),
            (SyncStatus::Queued, _) => self.t("queued", "en cola"),
        };
        println!("{class_name}/{} {action}", outcome.object_id);
    }

    pub fn deleted(&self, class_name: &str, target: &ObjectRef) {
        let id = match target {
            ObjectRef::ObjectId(id) | ObjectRef::LocalId(id) => id,
        };
        if self.json {
            println!("{}", json!({ "deleted": true, "class": class_name, "id": id }));
        } else {
            println!("{class_name}/{id} {}", self.t("deleted", "borrado"));
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
        eprintln!("{} {}", values.len(), self.t("objects", "objetos"));
    }

    pub fn statuses(&self, statuses: &[ClientStatus]) {
        if self.json {
            let entries: Vec<Value> = statuses.iter().map(|s| status_json(s, self.lang)).collect();
            println!("{}", Value::Array(entries));
            return;
        }
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
            "{}: {} (app {}) {reachable}, Parse Server {version}, {} {custom_ids}",
            status.database_key,
            status.server_url,
            status.app_id,
            self.t("custom objectIds:", "objectIds propios:"),
        );
        if let Some(error) = &status.last_error {
            let report = ErrorReport::from_sync_error(self.lang, error);
            line.push_str(&format!("; {}: {}", self.t("last error", "último error"), report.message));
        }
        line
    }
}

pub fn sync_outcome_json(outcome: &SyncOutcome) -> Value {
    let status = match outcome.status {
        SyncStatus::Synced => "synced",
        SyncStatus::Queued => "queued",
    };
    json!({ "status": status, "object_id": outcome.object_id, "created": outcome.created })
}

fn status_json(status: &ClientStatus, lang: Lang) -> Value {
    json!({
        "database": status.database_key,
        "sync_enabled": status.sync_enabled,
        "server_url": status.server_url,
        "app_id": status.app_id,
        "reachable": status.reachable,
        "server_version": status.server_version,
        "custom_object_ids": status.custom_object_ids,
        "last_error": status.last_error.as_ref().map(|e| ErrorReport::from_sync_error(lang, e)),
    })
}

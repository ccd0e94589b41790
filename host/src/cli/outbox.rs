//! `agros-sync flush` and `agros-sync outbox list|show|retry|discard`.
//!
//! `flush` goes through the plugin, which sends. The `outbox` commands read
//! and change the state store directly: they send nothing.

use agros_sync_host::bindings::FlushReport;
use agros_sync_host::error::{CallError, ErrorReport};
use agros_sync_host::host_state::now_millis;
use agros_sync_host::json::outbox_entry_json;
use agros_sync_host::messages::Lang;
use agros_sync_host::state::{EntryState, OutboxEntry, SqliteStore};
use agros_sync_host::tenant::Tenant;
use clap::ArgMatches;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use super::output::{age, Output};
use super::Failure;

/// Entries sent per call into the plugin, between progress updates.
const FLUSH_STEP: u32 = 200;

pub async fn flush(tenant: &Tenant, args: &ArgMatches, out: &Output) -> Result<(), Failure> {
    let lang = out.lang;
    let database = args.get_one::<String>("database").map(String::as_str);
    let store = &tenant.context.store;
    let name = &tenant.context.name;
    let databases: Vec<String> = match database {
        Some(key) => vec![key.to_owned()],
        None => tenant.context.databases.iter().filter(|d| d.sync).map(|d| d.key.clone()).collect(),
    };
    let mut pending_before = 0;
    for key in &databases {
        pending_before += store.outbox_stats(name, key).map_err(|e| state_failure(lang, e))?.pending;
    }

    let progress = if out.json { ProgressBar::hidden() } else { ProgressBar::new(u64::from(pending_before)) };
    progress.set_style(ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}").expect("valid template"));
    let totals = flush_until_idle(tenant, database, true, |round| progress.inc(u64::from(round.delivered + round.dead_lettered)))
        .await
        .map_err(|e| Failure::call(lang, &e))?;
    let FlushReport { delivered, retried, dead_lettered, pending } = totals;
    progress.finish_and_clear();

    if out.json {
        println!("{}", json!({ "delivered": delivered, "retried": retried, "dead_lettered": dead_lettered, "pending": pending }));
    } else {
        let line = match lang {
            Lang::En => format!("{delivered} delivered, {retried} to retry, {dead_lettered} dead-lettered, {pending} still pending"),
            Lang::Es => format!("{delivered} enviadas, {retried} por reintentar, {dead_lettered} fallidas, {pending} aún pendientes"),
        };
        println!("{line}");
    }
    if pending > 0 || dead_lettered > 0 {
        let mut detail = match lang {
            Lang::En => format!("{pending} entries still pending and {dead_lettered} dead-lettered; see `agros-sync status` and `agros-sync outbox list`"),
            Lang::Es => format!("{pending} entradas aún pendientes y {dead_lettered} fallidas; vea `agros-sync status` y `agros-sync outbox list`"),
        };
        if pending > 0 {
            for key in &databases {
                if let Ok(Some(error)) = store.app_config_get(name, &format!("parser-{key}-last-error")) {
                    if let Some(text) = serde_json::from_str::<Value>(&error).ok().and_then(|v| v["detail"].as_str().map(str::to_owned)) {
                        detail.push_str(&format!("; {key}: {text}"));
                    }
                }
            }
        }
        return Err(Failure::after_summary(ErrorReport::new(lang, "flush-incomplete", None, detail)));
    }
    Ok(())
}

/// Calls `flush` until nothing is pending or a round moves nothing, and
/// returns the summed counts with the pending entries left at the end.
/// `on_round` receives each round's report.
pub async fn flush_until_idle(tenant: &Tenant, database: Option<&str>, force: bool, mut on_round: impl FnMut(&FlushReport)) -> Result<FlushReport, CallError> {
    let mut totals = FlushReport { delivered: 0, retried: 0, dead_lettered: 0, pending: 0 };
    loop {
        let round = tenant.flush(database, FLUSH_STEP, force).await?;
        on_round(&round);
        totals.delivered += round.delivered;
        totals.retried += round.retried;
        totals.dead_lettered += round.dead_lettered;
        totals.pending = round.pending;
        if round.pending == 0 || round.delivered + round.dead_lettered == 0 {
            return Ok(totals);
        }
    }
}

pub fn run(store: &SqliteStore, tenant: &str, args: &ArgMatches, out: &Output) -> Result<(), Failure> {
    match args.subcommand() {
        Some(("list", args)) => list(store, tenant, args, out),
        Some(("show", args)) => show(store, tenant, args, out),
        Some(("retry", args)) => retry(store, tenant, args, out),
        Some(("discard", args)) => discard(store, tenant, args, out),
        _ => unreachable!("clap requires an outbox subcommand"),
    }
}

fn list(store: &SqliteStore, name: &str, args: &ArgMatches, out: &Output) -> Result<(), Failure> {
    let state = if args.get_flag("dead") {
        Some(EntryState::Dead)
    } else if args.get_flag("pending") {
        Some(EntryState::Pending)
    } else {
        None
    };
    let database = args.get_one::<String>("database").map(String::as_str);
    let limit = *args.get_one::<u32>("limit").expect("has a default");
    let entries = store.outbox_list(name, database, state, limit).map_err(|e| state_failure(out.lang, e))?;

    if out.json {
        let values: Vec<Value> = entries.iter().map(|e| outbox_entry_json(e, false)).collect();
        println!("{}", Value::Array(values));
        return Ok(());
    }
    let now = now_millis();
    for entry in &entries {
        println!("{}", entry_line(entry, now, out.lang));
    }
    let noun = match entries.len() {
        1 => out.lang.pick("entry", "entrada"),
        _ => out.lang.pick("entries", "entradas"),
    };
    eprintln!("{} {noun}", entries.len());
    Ok(())
}

fn show(store: &SqliteStore, name: &str, args: &ArgMatches, out: &Output) -> Result<(), Failure> {
    let id = *args.get_one::<u64>("id").expect("required");
    let entry = store.outbox_get(name, id).map_err(|e| state_failure(out.lang, e))?;
    let Some(entry) = entry else {
        return Err(Failure::operation(entry_not_found(out.lang, id, false)));
    };
    let value = outbox_entry_json(&entry, true);
    if out.json {
        println!("{value}");
    } else {
        println!("{}", serde_json::to_string_pretty(&value).expect("JSON values serialize"));
    }
    Ok(())
}

fn retry(store: &SqliteStore, name: &str, args: &ArgMatches, out: &Output) -> Result<(), Failure> {
    let selection = if args.get_flag("all") {
        DeadLetters::All
    } else {
        DeadLetters::Ids(args.get_many::<u64>("ids").into_iter().flatten().copied().collect())
    };
    let ids = retry_dead_letters(store, name, selection, out.lang).map_err(Failure::operation)?;
    report_ids(out, "retried", &ids, out.lang.pick("moved back to pending; run `agros-sync flush` to send", "vuelven a estar pendientes; ejecute `agros-sync flush` para enviarlas"));
    Ok(())
}

fn discard(store: &SqliteStore, name: &str, args: &ArgMatches, out: &Output) -> Result<(), Failure> {
    let ids: Vec<u64> = args.get_many::<u64>("ids").into_iter().flatten().copied().collect();
    discard_entries(store, name, &ids, out.lang).map_err(Failure::operation)?;
    report_ids(out, "discarded", &ids, out.lang.pick("discarded", "descartadas"));
    Ok(())
}

/// The dead letters `retry_dead_letters` moves back to pending: all of
/// them, or the listed ids.
pub enum DeadLetters {
    All,
    Ids(Vec<u64>),
}

/// Moves dead letters back to pending, due now, and returns their ids.
/// Every id is checked first, so that a bad one changes nothing.
pub fn retry_dead_letters(store: &SqliteStore, name: &str, selection: DeadLetters, lang: Lang) -> Result<Vec<u64>, ErrorReport> {
    let ids = match selection {
        DeadLetters::All => {
            let dead = store.outbox_list(name, None, Some(EntryState::Dead), u32::MAX).map_err(|e| state_error(lang, e))?;
            dead.iter().map(|e| e.id).collect()
        }
        DeadLetters::Ids(ids) => ids,
    };

    for id in &ids {
        let entry = store.outbox_get(name, *id).map_err(|e| state_error(lang, e))?;
        if entry.is_none_or(|e| e.state != EntryState::Dead) {
            return Err(entry_not_found(lang, *id, true));
        }
    }
    let now = now_millis();
    for id in &ids {
        store.outbox_retry_dead(name, *id, now).map_err(|e| state_error(lang, e))?;
        tracing::info!(tenant = %name, outbox_id = id, "dead letter moved back to pending by an operator");
    }
    Ok(ids)
}

/// Deletes outbox entries without sending them. Every id is checked first,
/// so that a bad one changes nothing.
pub fn discard_entries(store: &SqliteStore, name: &str, ids: &[u64], lang: Lang) -> Result<(), ErrorReport> {
    for id in ids {
        if store.outbox_get(name, *id).map_err(|e| state_error(lang, e))?.is_none() {
            return Err(entry_not_found(lang, *id, false));
        }
    }
    for id in ids {
        let Some(entry) = store.outbox_discard(name, *id).map_err(|e| state_error(lang, e))? else {
            return Err(entry_not_found(lang, *id, false));
        };
        tracing::warn!(
            tenant = %name, outbox_id = id, database = %entry.database_key, class = %entry.class_name,
            object_id = %entry.object_id, operation = entry.operation.as_str(), "outbox entry discarded by an operator"
        );
    }
    Ok(())
}

fn report_ids(out: &Output, key: &str, ids: &[u64], text: &str) {
    if out.json {
        println!("{}", json!({ key: ids }));
    } else {
        let list: Vec<String> = ids.iter().map(u64::to_string).collect();
        println!("{}: {text}", list.join(", "));
    }
}

fn entry_line(entry: &OutboxEntry, now: u64, lang: Lang) -> String {
    let mut line = format!(
        "{:>6} {:<7} {} {} {}/{} {}={}",
        entry.id,
        entry.state.as_str(),
        entry.database_key,
        entry.operation.as_str(),
        entry.class_name,
        entry.object_id,
        lang.pick("attempts", "intentos"),
        entry.attempts,
    );
    if entry.state == EntryState::Pending && entry.next_attempt_at > now {
        line.push_str(&format!(" {} {}", lang.pick("next in", "próximo en"), age(entry.next_attempt_at - now)));
    }
    if let Some(dead) = entry.blocked_by {
        line.push_str(&format!(" — {} {dead}", lang.pick("waiting behind dead letter", "espera detrás de la fallida")));
    }
    if let Some(error) = &entry.last_error {
        let code = entry.last_error_code.map(|c| format!("[{c}] ")).unwrap_or_default();
        line.push_str(&format!(" — {code}{error}"));
    }
    line
}

/// Builds the error for an id that is not an outbox entry, or with `dead`,
/// not a dead letter.
pub fn entry_not_found(lang: Lang, id: u64, dead: bool) -> ErrorReport {
    let detail = if dead {
        format!("outbox entry {id} is not a dead letter; list them with `agros-sync outbox list --dead`")
    } else {
        format!("there is no outbox entry {id}; list them with `agros-sync outbox list`")
    };
    let code = if dead { "dead-letter-not-found" } else { "entry-not-found" };
    ErrorReport::new(lang, code, Some(id.to_string()), detail)
}

pub fn state_error(lang: Lang, error: agros_sync_host::state::StateError) -> ErrorReport {
    ErrorReport::new(lang, "state-store", None, error.to_string())
}

fn state_failure(lang: Lang, error: agros_sync_host::state::StateError) -> Failure {
    Failure::operation(state_error(lang, error))
}

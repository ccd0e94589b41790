//! `agros-sync import`: every record of a JSON array or a CSV file through
//! `sync-object`, with a progress bar on a terminal and a summary at the end.
//!
//! CSV cells become JSON values: integers and decimals become numbers,
//! `true`/`false` booleans, empty cells are left out, anything else is a
//! string. Records with bad data are counted and reported and the import goes
//! on. A record the server cannot take now is queued in the outbox like any
//! other write and counted as queued. An error that would fail every record
//! (unknown database, invalid class name, state store) stops the import.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use agros_sync_host::bindings::{ErrorKind, SyncStatus};
use agros_sync_host::error::{CallError, ErrorReport};
use agros_sync_host::messages::Lang;
use agros_sync_host::tenant::Tenant;
use clap::ArgMatches;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Map, Number, Value};

use super::output::Output;
use super::{text, Failure};

/// How many failed records the summary lists.
const REPORTED_FAILURES: usize = 10;

#[derive(Default)]
struct Summary {
    created: usize,
    updated: usize,
    /// Accepted into the outbox; sent later.
    queued: usize,
    failed: Vec<(usize, ErrorReport)>,
}

pub async fn run(tenant: &Tenant, args: &ArgMatches, out: &Output) -> Result<(), Failure> {
    let lang = out.lang;
    let path = args.get_one::<PathBuf>("file").expect("required");
    let database = text(args, "database");
    let class_name = text(args, "class");
    let local_id_fields = field_list(args.get_one::<String>("local-id-fields"));
    let date_fields = field_list(args.get_one::<String>("date-fields"));

    let records = read_records(path, lang)?;
    let progress = if out.json { ProgressBar::hidden() } else { ProgressBar::new(records.len() as u64) };
    progress.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} {msg} ({eta})").expect("valid template"),
    );
    progress.set_message(class_name.to_owned());

    let mut summary = Summary::default();
    for (index, mut record) in records.into_iter().enumerate() {
        let local_id = local_id_of(&record, &local_id_fields);
        mark_dates(&mut record, &date_fields);
        let data = Value::Object(record).to_string();

        match tenant.sync_object(database, class_name, &data, local_id.as_deref()).await {
            Ok(outcome) if outcome.status == SyncStatus::Queued => summary.queued += 1,
            Ok(outcome) if outcome.created => summary.created += 1,
            Ok(_) => summary.updated += 1,
            Err(error) if stops_import(&error) => {
                progress.abandon();
                return Err(Failure::call(lang, &error));
            }
            Err(error) => summary.failed.push((index + 1, ErrorReport::from_call(lang, &error))),
        }
        progress.inc(1);
    }
    progress.finish_and_clear();

    print_summary(out, class_name, &summary);
    if summary.failed.is_empty() {
        Ok(())
    } else {
        let detail = format!("{} of the records failed", summary.failed.len());
        Err(Failure::after_summary(ErrorReport::new(lang, "import-incomplete", Some(path.display().to_string()), detail)))
    }
}

/// Errors that every further record would hit too.
fn stops_import(error: &CallError) -> bool {
    match error {
        CallError::Plugin(e) => matches!(
            e.kind,
            ErrorKind::UnknownDatabase
                | ErrorKind::SyncDisabled
                | ErrorKind::InvalidClassName
                | ErrorKind::ServerUnavailable
                | ErrorKind::Unauthorized
                | ErrorKind::RequestDenied
                | ErrorKind::StateStore
        ),
        CallError::Trap { .. } | CallError::Timeout { .. } | CallError::Instantiate(_) => false,
    }
}

fn print_summary(out: &Output, class_name: &str, summary: &Summary) {
    let total = summary.created + summary.updated + summary.queued + summary.failed.len();
    if out.json {
        let failures: Vec<Value> = summary.failed.iter().map(|(row, report)| json!({ "record": row, "error": report })).collect();
        println!(
            "{}",
            json!({
                "class": class_name, "total": total, "created": summary.created, "updated": summary.updated,
                "queued": summary.queued, "failed": summary.failed.len(), "failures": failures
            })
        );
        return;
    }
    let line = match out.lang {
        Lang::En => format!(
            "{class_name}: {total} records, {} created, {} updated, {} queued, {} failed",
            summary.created, summary.updated, summary.queued, summary.failed.len()
        ),
        Lang::Es => format!(
            "{class_name}: {total} registros, {} creados, {} actualizados, {} en cola, {} fallidos",
            summary.created, summary.updated, summary.queued, summary.failed.len()
        ),
    };
    println!("{line}");
    for (row, report) in summary.failed.iter().take(REPORTED_FAILURES) {
        eprintln!("  {} {row}: {}", out.lang.pick("record", "registro"), report.message);
    }
}

fn field_list(value: Option<&String>) -> Vec<String> {
    value
        .map(|v| v.split(',').map(|f| f.trim().to_owned()).filter(|f| !f.is_empty()).collect())
        .unwrap_or_default()
}

/// Builds the record's local id: the named fields' values joined by `|`.
fn local_id_of(record: &Map<String, Value>, fields: &[String]) -> Option<String> {
    if fields.is_empty() {
        return None;
    }
    let parts: Vec<String> = fields
        .iter()
        .map(|field| match record.get(field) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        })
        .collect();
    Some(parts.join("|"))
}

/// Wraps the named fields' string values as Parse Dates; the plugin checks
/// and normalizes them.
fn mark_dates(record: &mut Map<String, Value>, fields: &[String]) {
    for field in fields {
        if let Some(value) = record.get_mut(field) {
            if let Value::String(text) = value {
                *value = json!({ "__type": "Date", "iso": text });
            }
        }
    }
}

fn read_records(path: &Path, lang: Lang) -> Result<Vec<Map<String, Value>>, Failure> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Failure::usage(lang, "io-error", Some(path.display().to_string()), format!("cannot read {}: {e}", path.display()))
    })?;
    let is_json = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json")) || text.trim_start().starts_with('[');
    if is_json {
        json_records(&text, path, lang)
    } else {
        csv_records(&text, path, lang)
    }
}

fn json_records(text: &str, path: &Path, lang: Lang) -> Result<Vec<Map<String, Value>>, Failure> {
    let invalid = |detail: String| Failure::usage(lang, "invalid-json", Some(path.display().to_string()), detail);
    let value: Value = serde_json::from_str(text).map_err(|e| invalid(format!("{} is not valid JSON: {e}", path.display())))?;
    let Value::Array(items) = value else {
        return Err(invalid(format!("{} must hold a JSON array of objects", path.display())));
    };
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| match item {
            Value::Object(map) => Ok(map),
            _ => Err(invalid(format!("element {} of {} is not a JSON object", index + 1, path.display()))),
        })
        .collect()
}

fn csv_records(text: &str, path: &Path, lang: Lang) -> Result<Vec<Map<String, Value>>, Failure> {
    let invalid = |detail: String| Failure::usage(lang, "invalid-csv", Some(path.display().to_string()), detail);
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| invalid(format!("cannot read the header row of {}: {e}", path.display())))?
        .iter()
        .map(str::to_owned)
        .collect();

    let mut records = Vec::new();
    for (index, row) in reader.records().enumerate() {
        let row = row.map_err(|e| invalid(format!("row {} of {}: {e}", index + 2, path.display())))?;
        let record: BTreeMap<&str, &str> = headers.iter().map(String::as_str).zip(row.iter()).collect();
        let map = record
            .into_iter()
            .filter(|(_, cell)| !cell.is_empty())
            .map(|(name, cell)| (name.to_owned(), csv_value(cell)))
            .collect();
        records.push(map);
    }
    Ok(records)
}

fn csv_value(cell: &str) -> Value {
    if let Ok(integer) = cell.parse::<i64>() {
        return Value::Number(integer.into());
    }
    if let Some(number) = cell.parse::<f64>().ok().filter(|f| f.is_finite()).and_then(Number::from_f64) {
        return Value::Number(number);
    }
    match cell {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => Value::String(cell.to_owned()),
    }
}

/// Returns the argument itself, or standard input when it is `-`.
pub fn read_argument_or_stdin(argument: &str, lang: Lang) -> Result<String, Failure> {
    if argument != "-" {
        return Ok(argument.to_owned());
    }
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|e| Failure::usage(lang, "io-error", None, format!("cannot read standard input: {e}")))?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_are_typed() {
        assert_eq!(csv_value("27"), json!(27));
        assert_eq!(csv_value("0.5"), json!(0.5));
        assert_eq!(csv_value("true"), json!(true));
        assert_eq!(csv_value("2012-01-01"), json!("2012-01-01"));
        assert_eq!(csv_value("NaN"), json!("NaN"));
    }

    #[test]
    fn csv_records_skip_empty_cells() {
        let records = csv_records("a,b\n1,\nx,2.5\n", Path::new("t.csv"), Lang::En).ok().unwrap();
        assert_eq!(Value::Object(records[0].clone()), json!({"a": 1}));
        assert_eq!(Value::Object(records[1].clone()), json!({"a": "x", "b": 2.5}));
    }

    #[test]
    fn local_id_joins_fields() {
        let record = json!({"variety": "Manchuria", "year": 1931, "site": "University Farm"});
        let fields = vec!["variety".to_owned(), "year".to_owned(), "site".to_owned()];
        assert_eq!(local_id_of(record.as_object().unwrap(), &fields).as_deref(), Some("Manchuria|1931|University Farm"));
    }

    #[test]
    fn json_non_array_is_rejected() {
        let failure = json_records("{}", Path::new("x.json"), Lang::En).err().unwrap();
        assert_eq!(failure.report.code, "invalid-json");
    }
}

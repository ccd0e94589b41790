//! Turns the caller's JSON object into the body Parse expects.
//!
//! - Parse types are checked and put in canonical form: Date (`iso` in UTC with
//!   milliseconds), Pointer, GeoPoint; File, Bytes, Polygon and Relation pass
//!   through after a shape check.
//! - A Pointer may name its target by `localId` instead of `objectId`; the
//!   binding from the id map replaces it.
//! - A string in a field that the server's schema types as Date becomes a Date.
//! - Operations other than `{"__op":"Delete"}` are rejected: a sync client
//!   sends absolute values, because an `Increment` sent twice counts twice.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::errors::{error, ErrorKind, SyncError, SyncResult};
use crate::{iso_date, validate};

/// Fields Parse manages itself; the caller's values for them are never sent.
pub const RESERVED_FIELDS: [&str; 3] = ["objectId", "createdAt", "updatedAt"];

/// Field name to Parse type name (`"Date"`, `"String"`...) from `/schemas`.
pub type FieldTypes = HashMap<String, String>;

/// Looks up the objectId bound to `(class, local id)`.
pub trait LocalIdResolver {
    /// Returns the objectId to write, `None` to keep the `localId` for a later
    /// attempt, or an error when the local id can never be resolved.
    fn resolve(&self, class_name: &str, local_id: &str) -> SyncResult<Option<String>>;
}

/// Returns true when `value` still contains a Pointer by `localId`.
pub fn has_unresolved_pointer(value: &Value) -> bool {
    match value {
        Value::Object(map) => {
            let is_pointer = map.get("__type").and_then(Value::as_str) == Some("Pointer");
            (is_pointer && map.contains_key("localId")) || map.values().any(has_unresolved_pointer)
        }
        Value::Array(items) => items.iter().any(has_unresolved_pointer),
        _ => false,
    }
}

/// Encodes the top-level fields of one object. Reserved fields must already be
/// removed.
pub fn encode_object(
    object: Map<String, Value>,
    field_types: &FieldTypes,
    resolver: &dyn LocalIdResolver,
) -> SyncResult<Map<String, Value>> {
    let mut encoded = Map::with_capacity(object.len());
    for (field, value) in object {
        validate::field_name(&field)?;
        let value = match (field_types.get(&field).map(String::as_str), value) {
            (Some("Date"), Value::String(text)) => date_from_text(&field, &text)?,
            (_, value) => encode_value(&field, value, resolver)?,
        };
        encoded.insert(field, value);
    }
    Ok(encoded)
}

/// Puts every Parse-typed value inside `value` in canonical form. `field` names
/// the top-level field in errors.
pub fn encode_value(field: &str, value: Value, resolver: &dyn LocalIdResolver) -> SyncResult<Value> {
    match value {
        Value::Object(map) if map.contains_key("__type") => encode_typed(field, map, resolver),
        Value::Object(map) if map.contains_key("__op") => encode_operation(field, map),
        Value::Object(map) => {
            let mut out = Map::with_capacity(map.len());
            for (key, inner) in map {
                out.insert(key, encode_value(field, inner, resolver)?);
            }
            Ok(Value::Object(out))
        }
        Value::Array(items) => items
            .into_iter()
            .map(|item| encode_value(field, item, resolver))
            .collect::<SyncResult<Vec<_>>>()
            .map(Value::Array),
        // PostgreSQL text cannot store U+0000. Parse would return a 500 that
        // looks transient, and the write would be retried forever.
        Value::String(text) if text.contains('\0') => Err(invalid(
            field,
            "the text contains a NUL character (\\u0000), which Parse Server on PostgreSQL cannot store; remove it".to_owned(),
        )),
        scalar => Ok(scalar),
    }
}

fn encode_typed(field: &str, mut map: Map<String, Value>, resolver: &dyn LocalIdResolver) -> SyncResult<Value> {
    let type_name = map.get("__type").and_then(Value::as_str).unwrap_or_default().to_owned();
    match type_name.as_str() {
        "Date" => {
            let iso = map.get("iso").and_then(Value::as_str).unwrap_or_default().to_owned();
            date_from_text(field, &iso)
        }
        "Pointer" => {
            encode_pointer(field, &mut map, resolver)?;
            Ok(Value::Object(map))
        }
        "GeoPoint" => {
            check_geo_point(field, &map)?;
            Ok(Value::Object(map))
        }
        "Bytes" if map.get("base64").is_some_and(Value::is_string) => Ok(Value::Object(map)),
        "File" if map.get("name").is_some_and(Value::is_string) => Ok(Value::Object(map)),
        "Polygon" if map.get("coordinates").is_some_and(Value::is_array) => Ok(Value::Object(map)),
        "Relation" if map.get("className").is_some_and(Value::is_string) => Ok(Value::Object(map)),
        other => Err(invalid(field, format!("unsupported or malformed Parse type {other:?}"))),
    }
}

fn date_from_text(field: &str, text: &str) -> SyncResult<Value> {
    let iso = iso_date::normalize(text).ok_or_else(|| {
        invalid(field, format!("{text:?} is not an ISO 8601 date such as 2012-01-31 or 2012-01-31T08:00:00Z"))
    })?;
    Ok(serde_json::json!({ "__type": "Date", "iso": iso }))
}

fn encode_pointer(field: &str, map: &mut Map<String, Value>, resolver: &dyn LocalIdResolver) -> SyncResult<()> {
    let class_name = match map.get("className").and_then(Value::as_str) {
        Some(name) => name.to_owned(),
        None => return Err(invalid(field, "a Pointer needs \"className\"".to_owned())),
    };
    validate::class_name(&class_name)?;

    if map.get("objectId").is_some_and(Value::is_string) {
        map.remove("localId");
        return Ok(());
    }
    let Some(local_id) = map.remove("localId") else {
        return Err(invalid(field, "a Pointer needs \"objectId\" or \"localId\"".to_owned()));
    };
    let local_id = local_id.as_str().map(str::to_owned).unwrap_or_else(|| local_id.to_string());
    match resolver.resolve(&class_name, &local_id)? {
        Some(object_id) => {
            map.insert("objectId".to_owned(), Value::String(object_id));
        }
        None => {
            map.insert("localId".to_owned(), Value::String(local_id));
        }
    }
    Ok(())
}

fn check_geo_point(field: &str, map: &Map<String, Value>) -> SyncResult<()> {
    let latitude = map.get("latitude").and_then(Value::as_f64);
    let longitude = map.get("longitude").and_then(Value::as_f64);
    match (latitude, longitude) {
        (Some(lat), Some(lon)) if (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon) => Ok(()),
        _ => Err(invalid(
            field,
            "a GeoPoint needs numeric \"latitude\" in [-90, 90] and \"longitude\" in [-180, 180]".to_owned(),
        )),
    }
}

fn encode_operation(field: &str, map: Map<String, Value>) -> SyncResult<Value> {
    match map.get("__op").and_then(Value::as_str) {
        Some("Delete") => Ok(Value::Object(map)),
        Some(op) => Err(invalid(
            field,
            format!("operation {op:?} is not accepted; send the field's new absolute value instead"),
        )),
        None => Err(invalid(field, "\"__op\" must be a string".to_owned())),
    }
}

/// Builds the error for a Pointer to a local id that was never synced.
pub fn unknown_local_id(class_name: &str, local_id: &str) -> SyncError {
    error(
        ErrorKind::ObjectNotFound,
        format!("{class_name}/{local_id}"),
        format!("a Pointer names local id {local_id:?} of class {class_name}, which was never synced; sync that record first"),
    )
}

fn invalid(field: &str, detail: String) -> SyncError {
    error(ErrorKind::InvalidValue, field, format!("field {field:?}: {detail}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Bindings;

    impl LocalIdResolver for Bindings {
        fn resolve(&self, class_name: &str, local_id: &str) -> SyncResult<Option<String>> {
            match (class_name, local_id) {
                ("Farmer", "f-7") => Ok(Some("Abc123XYZ0".to_owned())),
                ("Farmer", "f-9") => Ok(None),
                _ => Err(unknown_local_id(class_name, local_id)),
            }
        }
    }

    fn encode(value: Value, types: &[(&str, &str)]) -> SyncResult<Value> {
        let types = types.iter().map(|(f, t)| (f.to_string(), t.to_string())).collect();
        let Value::Object(map) = value else { panic!("not an object") };
        encode_object(map, &types, &Bindings).map(Value::Object)
    }

    #[test]
    fn date_is_normalized_to_utc_millis() {
        let out = encode(json!({"visited": {"__type": "Date", "iso": "2024-03-01T10:00:00+01:00"}}), &[]).unwrap();
        assert_eq!(out, json!({"visited": {"__type": "Date", "iso": "2024-03-01T09:00:00.000Z"}}));
    }

    #[test]
    fn schema_date_field_converts_string() {
        let out = encode(json!({"date": "2012-01-01", "note": "2012-01-01"}), &[("date", "Date")]).unwrap();
        assert_eq!(out["date"], json!({"__type": "Date", "iso": "2012-01-01T00:00:00.000Z"}));
        assert_eq!(out["note"], json!("2012-01-01"));
    }

    #[test]
    fn bad_date_names_field_and_value() {
        let err = encode(json!({"date": {"__type": "Date", "iso": "31/01/2012"}}), &[]).unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidValue);
        assert_eq!(err.subject.as_deref(), Some("date"));
        assert!(err.detail.contains("\"31/01/2012\""), "{}", err.detail);
    }

    #[test]
    fn pointer_by_local_id_is_resolved() {
        let out = encode(json!({"owner": {"__type": "Pointer", "className": "Farmer", "localId": "f-7"}}), &[]).unwrap();
        assert_eq!(out["owner"], json!({"__type": "Pointer", "className": "Farmer", "objectId": "Abc123XYZ0"}));
    }

    #[test]
    fn pointer_to_unsynced_local_id_fails() {
        let err = encode(json!({"owner": {"__type": "Pointer", "className": "Farmer", "localId": "f-8"}}), &[]).unwrap_err();
        assert_eq!(err.kind, ErrorKind::ObjectNotFound);
        assert_eq!(err.subject.as_deref(), Some("Farmer/f-8"));
    }

    #[test]
    fn pending_local_id_is_kept_for_later() {
        let out = encode(json!({"owner": {"__type": "Pointer", "className": "Farmer", "localId": "f-9"}}), &[]).unwrap();
        assert_eq!(out["owner"], json!({"__type": "Pointer", "className": "Farmer", "localId": "f-9"}));
        assert!(has_unresolved_pointer(&out));
    }

    #[test]
    fn geo_point_out_of_range_fails() {
        let err = encode(json!({"at": {"__type": "GeoPoint", "latitude": 91, "longitude": 0}}), &[]).unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidValue);
    }

    #[test]
    fn increment_is_rejected_delete_is_kept() {
        let err = encode(json!({"count": {"__op": "Increment", "amount": 1}}), &[]).unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidValue);
        let out = encode(json!({"note": {"__op": "Delete"}}), &[]).unwrap();
        assert_eq!(out, json!({"note": {"__op": "Delete"}}));
    }

    #[test]
    fn nested_dates_are_normalized() {
        let out = encode(json!({"visits": [{"__type": "Date", "iso": "2020-01-02"}]}), &[]).unwrap();
        assert_eq!(out["visits"][0]["iso"], json!("2020-01-02T00:00:00.000Z"));
    }

    #[test]
    fn nul_character_is_rejected() {
        let err = encode(json!({"note": "a\u{0}b"}), &[]).unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidValue);
        assert_eq!(err.subject.as_deref(), Some("note"));
        let err = encode(json!({"tags": ["ok", "x\u{0}"]}), &[]).unwrap_err();
        assert_eq!(err.subject.as_deref(), Some("tags"));
    }

    #[test]
    fn invalid_field_name_is_rejected() {
        let err = encode(json!({"bad-name": 1}), &[]).unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidFieldName);
        assert_eq!(err.subject.as_deref(), Some("bad-name"));
    }
}

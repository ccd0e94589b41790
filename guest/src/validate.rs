//! Parse's naming rules, checked before any request so that a bad name fails
//! with the name in the error instead of a server round trip.
//!
//! The rules follow Parse Server 9.10's `SchemaController`: class and field
//! names match `^[A-Za-z][A-Za-z0-9_]*$`, `length` is not a field name and
//! `className` is not a field name outside `_Hooks`. Two rules are ours.
//! Names are at most 63 bytes, because PostgreSQL silently truncates longer
//! identifiers and two long names could then share one column. Among the
//! underscore names, only the system classes a sync client writes (`_User`,
//! `_Role`, `_Installation`) are accepted.

use crate::errors::{error, ErrorKind, SyncResult};

/// PostgreSQL's identifier limit (NAMEDATALEN - 1).
pub const MAX_NAME_BYTES: usize = 63;

const SYSTEM_CLASSES: [&str; 3] = ["_User", "_Role", "_Installation"];

/// Checks a class name against Parse's rules.
pub fn class_name(name: &str) -> SyncResult<()> {
    if SYSTEM_CLASSES.contains(&name) {
        return Ok(());
    }
    if name.starts_with('_') {
        let detail = format!(
            "class {name:?} is a Parse system class or an invalid name; of the system classes only _User, _Role and _Installation can be synced"
        );
        return Err(error(ErrorKind::InvalidClassName, name, detail));
    }
    if let Some(reason) = name_problem(name) {
        let detail = format!(
            "invalid class name {name:?}: {reason}; use a letter followed by letters, digits or '_'"
        );
        return Err(error(ErrorKind::InvalidClassName, name, detail));
    }
    Ok(())
}

/// Checks a top-level field name against Parse's rules.
pub fn field_name(name: &str) -> SyncResult<()> {
    let reason = match name {
        "length" | "className" => Some("it is reserved by Parse Server"),
        _ => name_problem(name),
    };
    if let Some(reason) = reason {
        let detail = format!(
            "invalid field name {name:?}: {reason}; use a letter followed by letters, digits or '_'"
        );
        return Err(error(ErrorKind::InvalidFieldName, name, detail));
    }
    Ok(())
}

/// Checks one entry of `order` or `keys`: a field name, a dotted path into an
/// object field, with an optional leading `-` for descending order.
pub fn field_path(path: &str, allow_descending: bool) -> SyncResult<()> {
    let path = match path.strip_prefix('-') {
        Some(rest) if allow_descending => rest,
        _ => path,
    };
    let mut segments = path.split('.');
    let head = segments.next().unwrap_or_default();
    if matches!(head, "objectId" | "createdAt" | "updatedAt") {
        return Ok(());
    }
    field_name(head)?;
    for segment in segments {
        if segment.is_empty() {
            let detail = format!("invalid field path {path:?}: empty segment");
            return Err(error(ErrorKind::InvalidFieldName, path, detail));
        }
    }
    Ok(())
}

fn name_problem(name: &str) -> Option<&'static str> {
    let mut chars = name.chars();
    match chars.next() {
        None => return Some("it is empty"),
        Some(c) if !c.is_ascii_alphabetic() => return Some("it must start with a letter"),
        Some(_) => {}
    }
    if !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Some("it contains a character other than a letter, digit or '_'");
    }
    if name.len() > MAX_NAME_BYTES {
        return Some("it is longer than 63 characters");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_names_accepted() {
        for name in ["Plot", "BarleyTrial", "field_visit_2024", "_User", "_Role", "a"] {
            assert!(class_name(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn class_names_rejected() {
        for name in ["", "1Plot", "_Session", "_Secret", "Plot-Visit", "Plot Visit", "Parcela_ñ", &"x".repeat(64)] {
            let err = class_name(name).unwrap_err();
            assert_eq!(err.kind, ErrorKind::InvalidClassName, "{name}");
            assert_eq!(err.subject.as_deref(), Some(name));
        }
    }

    #[test]
    fn field_names_rejected() {
        for name in ["", "_private", "length", "className", "a.b", "$where", "yield%"] {
            let err = field_name(name).unwrap_err();
            assert_eq!(err.kind, ErrorKind::InvalidFieldName, "{name}");
        }
    }

    #[test]
    fn field_paths() {
        assert!(field_path("-yield", true).is_ok());
        assert!(field_path("createdAt", true).is_ok());
        assert!(field_path("address.city", false).is_ok());
        assert!(field_path("-yield", false).is_err());
        assert!(field_path("address.", false).is_err());
    }
}

//! Bad input gets a typed error naming the value, and sends nothing.

use agros_sync_host::bindings::{ErrorKind, QueryOptions, SyncError};
use agros_sync_host::error::CallError;
use agros_sync_host::tenant::Tenant;
use agros_sync_tests::*;

async fn sync_error(tenant: &Tenant, database: &str, class: &str, data: &str) -> SyncError {
    match tenant.sync_object(database, class, data, None).await {
        Err(CallError::Plugin(error)) => error,
        other => panic!("expected a typed plugin error, got {other:?}"),
    }
}

#[tokio::test]
async fn unknown_database() {
    let (tenant, _) = tenant(&standard_config(""));
    let error = sync_error(&tenant, "farmx", "Plot", "{}").await;
    assert_eq!(error.kind, ErrorKind::UnknownDatabase);
    assert_eq!(error.subject.as_deref(), Some("farmx"));
    assert!(error.detail.contains("farm, market"), "{}", error.detail);
}

#[tokio::test]
async fn sync_disabled_database() {
    let config = standard_config("").replace("databases:\n", "databases:\n  archive:\n    sync: false\n");
    let (tenant, _) = tenant(&config);
    let error = sync_error(&tenant, "archive", "Plot", "{}").await;
    assert_eq!(error.kind, ErrorKind::SyncDisabled);
    assert_eq!(error.subject.as_deref(), Some("archive"));
}

#[tokio::test]
async fn invalid_class_name() {
    let (tenant, _) = tenant(&standard_config(""));
    for class in ["Plot-Visit", "1Plot", "_Secret", ""] {
        let error = sync_error(&tenant, "farm", class, "{}").await;
        assert_eq!(error.kind, ErrorKind::InvalidClassName, "{class}");
        assert_eq!(error.subject.as_deref(), Some(class));
    }
}

#[tokio::test]
async fn invalid_field_name() {
    let (tenant, _) = tenant(&standard_config(""));
    let class = unique_class("Plot");
    let error = sync_error(&tenant, "farm", &class, r#"{"ok":1,"bad field":2}"#).await;
    assert_eq!(error.kind, ErrorKind::InvalidFieldName);
    assert_eq!(error.subject.as_deref(), Some("bad field"));
    assert_eq!(server_count(&server_a(), &class), 0);
}

#[tokio::test]
async fn invalid_json() {
    let (tenant, _) = tenant(&standard_config(""));
    let error = sync_error(&tenant, "farm", "Plot", r#"{"name": "unterminated"#).await;
    assert_eq!(error.kind, ErrorKind::InvalidJson);
    assert!(error.detail.contains("not valid JSON"), "{}", error.detail);

    let error = sync_error(&tenant, "farm", "Plot", "[1,2]").await;
    assert_eq!(error.kind, ErrorKind::InvalidJson);
    assert!(error.detail.contains("an array"), "{}", error.detail);
}

#[tokio::test]
async fn invalid_filter_json() {
    let (tenant, _) = tenant(&standard_config(""));
    let options = QueryOptions { limit: None, skip: None, order: None, keys: None };
    match tenant.query_objects("farm", "Plot", "{name:", &options).await {
        Err(CallError::Plugin(error)) => assert_eq!(error.kind, ErrorKind::InvalidJson),
        other => panic!("expected invalid-json, got {other:?}"),
    }
}

#[tokio::test]
async fn oversized_object() {
    let (tenant, _) = tenant(&standard_config("limits:\n  max_object_bytes: 1000\n"));
    let class = unique_class("Plot");
    let data = serde_json::json!({ "note": "x".repeat(2000) }).to_string();
    let error = sync_error(&tenant, "farm", &class, &data).await;
    assert_eq!(error.kind, ErrorKind::ObjectTooLarge);
    assert!(error.detail.contains("maximum of 1000 bytes"), "{}", error.detail);
    assert_eq!(server_count(&server_a(), &class), 0);
}

#[tokio::test]
async fn increment_operation_rejected() {
    let (tenant, _) = tenant(&standard_config(""));
    let error = sync_error(&tenant, "farm", "Plot", r#"{"visits":{"__op":"Increment","amount":1}}"#).await;
    assert_eq!(error.kind, ErrorKind::InvalidValue);
    assert_eq!(error.subject.as_deref(), Some("visits"));
}

#[tokio::test]
async fn type_conflict_with_schema() {
    let (tenant, _) = tenant(&standard_config(""));
    let class = unique_class("Plot");
    tenant.sync_object("farm", &class, r#"{"area":2.5}"#, None).await.unwrap();

    let error = sync_error(&tenant, "farm", &class, r#"{"area":"large"}"#).await;

    assert_eq!(error.kind, ErrorKind::ServerRejected);
    assert_eq!(error.parse_code, Some(111));
    assert_eq!(error.http_status, Some(400));
}

//! Queries through the plugin against objects written directly to the server.

use agros_sync_host::bindings::QueryOptions;
use agros_sync_tests::*;
use serde_json::{json, Value};

fn options(limit: Option<u32>, order: Option<&str>) -> QueryOptions {
    QueryOptions { limit, skip: None, order: order.map(str::to_owned), keys: None }
}

/// Creates `count` objects with `/batch`, 50 per request.
fn seed(class: &str, count: usize, make: impl Fn(usize) -> Value) {
    let server = server_a();
    let prefix = url_path(&server.url);
    for start in (0..count).step_by(50) {
        let requests: Vec<Value> = (start..count.min(start + 50))
            .map(|i| json!({"method": "POST", "path": format!("{prefix}/classes/{class}"), "body": make(i)}))
            .collect();
        let answer = rest(&server, "POST", "/batch", Some(json!({ "requests": requests })));
        assert!(answer.as_array().unwrap().iter().all(|item| item.get("success").is_some()), "{answer}");
    }
}

fn url_path(url: &str) -> String {
    let after_scheme = url.split_once("://").map(|(_, rest)| rest).unwrap_or(url);
    after_scheme.find('/').map(|i| after_scheme[i..].to_owned()).unwrap_or_default()
}

#[tokio::test]
async fn query_without_limit_returns_all_250() {
    let (tenant, _) = tenant(&standard_config(""));
    let class = unique_class("Reading");
    seed(&class, 250, |i| json!({"n": i}));

    let objects = tenant.query_objects("farm", &class, "{}", &options(None, None)).await.unwrap();

    let mut numbers: Vec<i64> = values(&objects).iter().map(|o| o["n"].as_i64().unwrap()).collect();
    numbers.sort();
    assert_eq!(numbers, (0..250).collect::<Vec<i64>>());
}

#[tokio::test]
async fn small_pages_still_return_all() {
    let (tenant, _) = tenant(&standard_config("limits:\n  query_page_size: 7\n"));
    let class = unique_class("Reading");
    seed(&class, 60, |i| json!({"n": i}));

    let all = tenant.query_objects("farm", &class, "{}", &options(None, None)).await.unwrap();
    let ordered = tenant.query_objects("farm", &class, "{}", &options(None, Some("-n"))).await.unwrap();

    assert_eq!(all.len(), 60);
    let numbers: Vec<i64> = values(&ordered).iter().map(|o| o["n"].as_i64().unwrap()).collect();
    assert_eq!(numbers, (0..60).rev().collect::<Vec<i64>>());
}

#[tokio::test]
async fn operators_order_and_limit() {
    let (tenant, _) = tenant(&standard_config(""));
    let class = unique_class("Trial");
    let varieties = ["Manchuria", "Glabron", "Svansota", "Velvet", "Trebi"];
    seed(&class, 5, |i| json!({"variety": varieties[i], "yield": 20 + i * 5}));

    let gt = tenant.query_objects("farm", &class, r#"{"yield":{"$gt":30}}"#, &options(None, Some("yield"))).await.unwrap();
    let names: Vec<Value> = values(&gt).iter().map(|o| o["variety"].clone()).collect();
    assert_eq!(names, vec![json!("Velvet"), json!("Trebi")]);

    let in_list = tenant
        .query_objects("farm", &class, r#"{"variety":{"$in":["Glabron","Trebi","Nope"]}}"#, &options(None, Some("variety")))
        .await
        .unwrap();
    let names: Vec<Value> = values(&in_list).iter().map(|o| o["variety"].clone()).collect();
    assert_eq!(names, vec![json!("Glabron"), json!("Trebi")]);

    let regex = tenant.query_objects("farm", &class, r#"{"variety":{"$regex":"^S"}}"#, &options(None, None)).await.unwrap();
    assert_eq!(values(&regex)[0]["variety"], json!("Svansota"));
    assert_eq!(regex.len(), 1);

    let top_two = tenant.query_objects("farm", &class, "{}", &options(Some(2), Some("-yield"))).await.unwrap();
    let yields: Vec<Value> = values(&top_two).iter().map(|o| o["yield"].clone()).collect();
    assert_eq!(yields, vec![json!(40), json!(35)]);
}

#[tokio::test]
async fn unicode_and_reserved_characters_in_where() {
    let (tenant, _) = tenant(&standard_config(""));
    let class = unique_class("Site");
    let names = ["Ñandú & Co", "a+b=c", "#1 field", "100% maíz?", "東京 farm", "plain"];
    seed(&class, names.len(), |i| json!({"name": names[i]}));

    for name in &names[..5] {
        let filters = json!({ "name": name }).to_string();
        let objects = tenant.query_objects("farm", &class, &filters, &options(None, None)).await.unwrap();
        assert_eq!(objects.len(), 1, "{name}");
        assert_eq!(values(&objects)[0]["name"], json!(name));
    }
}

#[tokio::test]
async fn long_where_goes_as_post() {
    let (tenant, _) = tenant(&standard_config(""));
    let class = unique_class("Site");
    seed(&class, 3, |i| json!({"code": format!("code-{i}")}));
    // About 12 KB of `$in` values: too long for a GET URL.
    let mut codes: Vec<String> = (0..1000).map(|i| format!("missing-{i}")).collect();
    codes.push("code-1".to_owned());

    let filters = json!({ "code": { "$in": codes } }).to_string();
    let objects = tenant.query_objects("farm", &class, &filters, &options(None, None)).await.unwrap();

    assert_eq!(objects.len(), 1);
    assert_eq!(values(&objects)[0]["code"], json!("code-1"));
}

#[tokio::test]
async fn date_constraint_in_where() {
    let (tenant, _) = tenant(&standard_config(""));
    let class = unique_class("Weather");
    for day in ["2012-01-01", "2012-06-01", "2013-01-01"] {
        let data = json!({"date": {"__type": "Date", "iso": day}}).to_string();
        tenant.sync_object("farm", &class, &data, None).await.unwrap();
    }

    let filters = r#"{"date":{"$gte":{"__type":"Date","iso":"2012-03-01"},"$lt":{"__type":"Date","iso":"2013-01-01"}}}"#;
    let objects = tenant.query_objects("farm", &class, filters, &options(None, None)).await.unwrap();

    assert_eq!(objects.len(), 1);
    assert_eq!(values(&objects)[0]["date"]["iso"], json!("2012-06-01T00:00:00.000Z"));
}

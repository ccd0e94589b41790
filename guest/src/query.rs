//! Query encoding and paging.
//!
//! Parse Server returns 100 objects when no `limit` is sent, and a server's
//! `maxLimit` cuts larger pages without saying so. A query for every match
//! therefore reads page after page until the server returns an empty page,
//! whatever size the pages come back in.

use serde_json::{json, Map, Value};

use crate::errors::SyncResult;

/// Longest GET URL the client sends; longer queries go as POST with
/// `_method: GET`. Node's default header limit is 16 KiB, and proxies often
/// cut URLs at 4 or 8 KiB.
pub const MAX_GET_URL_BYTES: usize = 4000;

/// One request's worth of a query.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryPage {
    pub where_: Value,
    pub limit: u32,
    pub skip: u32,
    pub order: Option<String>,
    pub keys: Option<String>,
}

/// The query the caller requested.
#[derive(Debug, Clone, Default)]
pub struct QueryRequest {
    pub where_: Value,
    pub limit: Option<u32>,
    pub skip: Option<u32>,
    pub order: Option<String>,
    pub keys: Option<String>,
}

/// Reads every object the request matches, one page at a time.
///
/// Without an `order` or `skip`, pages follow objectId (`objectId > last`), so
/// objects created meanwhile cannot shift a page boundary. With either, pages
/// follow `skip`, which keeps the caller's order.
pub fn collect(
    request: &QueryRequest,
    page_size: u32,
    mut fetch_page: impl FnMut(&QueryPage) -> SyncResult<Vec<Value>>,
) -> SyncResult<Vec<Value>> {
    let page_size = page_size.max(1);
    let by_object_id = request.order.is_none() && request.skip.unwrap_or(0) == 0;
    let mut results: Vec<Value> = Vec::new();
    let mut skip = request.skip.unwrap_or(0);
    let mut last_object_id: Option<String> = None;

    loop {
        let wanted = match request.limit {
            Some(limit) => (limit as usize).saturating_sub(results.len()),
            None => page_size as usize,
        };
        if wanted == 0 {
            break;
        }

        let after = if by_object_id { last_object_id.as_deref() } else { None };
        let page = QueryPage {
            where_: page_where(&request.where_, after),
            limit: wanted.min(page_size as usize) as u32,
            skip: if by_object_id { 0 } else { skip },
            order: if by_object_id { Some("objectId".to_owned()) } else { request.order.clone() },
            keys: request.keys.clone(),
        };
        let objects = fetch_page(&page)?;
        if objects.is_empty() {
            break;
        }

        skip += objects.len() as u32;
        last_object_id = objects
            .last()
            .and_then(|o| o.get("objectId"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        results.extend(objects);
        if by_object_id && last_object_id.is_none() {
            // Without objectIds the next page cannot be addressed; this only
            // happens if the server ignores `keys` semantics.
            break;
        }
    }
    Ok(results)
}

/// Restricts the caller's `where` to objectIds after `after`.
fn page_where(where_: &Value, after: Option<&str>) -> Value {
    let Some(after) = after else {
        return where_.clone();
    };
    let after_clause = json!({ "objectId": { "$gt": after } });
    match where_ {
        Value::Object(map) if map.is_empty() => after_clause,
        _ => json!({ "$and": [where_, after_clause] }),
    }
}

/// Builds the URL query string of one page: `where`, `limit`, `skip`, `order`, `keys`.
pub fn to_query_string(page: &QueryPage) -> String {
    let mut pairs = vec![("where", page.where_.to_string()), ("limit", page.limit.to_string())];
    if page.skip > 0 {
        pairs.push(("skip", page.skip.to_string()));
    }
    if let Some(order) = &page.order {
        pairs.push(("order", order.clone()));
    }
    if let Some(keys) = &page.keys {
        pairs.push(("keys", keys.clone()));
    }
    pairs
        .iter()
        .map(|(name, value)| format!("{name}={}", percent_encode(value)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Builds the JSON body of one page for a POST with `_method: GET`.
pub fn to_post_body(page: &QueryPage) -> Map<String, Value> {
    let mut body = Map::new();
    body.insert("where".to_owned(), page.where_.clone());
    body.insert("limit".to_owned(), json!(page.limit));
    if page.skip > 0 {
        body.insert("skip".to_owned(), json!(page.skip));
    }
    if let Some(order) = &page.order {
        body.insert("order".to_owned(), json!(order));
    }
    if let Some(keys) = &page.keys {
        body.insert("keys".to_owned(), json!(keys));
    }
    body
}

/// Percent-encodes every byte of the UTF-8 text except RFC 3986's unreserved
/// characters, so `&`, `+`, `#`, `=` and non-ASCII letters survive the trip.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server with objects `o000`, `o001`… that returns at most
    /// `max_limit` per page, like Parse's `maxLimit`.
    fn server(count: usize, max_limit: usize) -> impl FnMut(&QueryPage) -> SyncResult<Vec<Value>> {
        let objects: Vec<Value> = (0..count).map(|i| json!({"objectId": format!("o{i:03}")})).collect();
        move |page: &QueryPage| {
            let after = page.where_.pointer("/objectId/$gt").and_then(Value::as_str).map(str::to_owned);
            let matching = objects
                .iter()
                .filter(|o| after.as_deref().is_none_or(|a| o["objectId"].as_str().unwrap() > a))
                .skip(page.skip as usize)
                .take((page.limit as usize).min(max_limit))
                .cloned()
                .collect();
            Ok(matching)
        }
    }

    #[test]
    fn reads_every_match_without_limit() {
        let request = QueryRequest { where_: json!({}), ..Default::default() };
        let results = collect(&request, 100, server(250, 1000)).unwrap();
        assert_eq!(results.len(), 250);
        assert_eq!(results[249]["objectId"], json!("o249"));
    }

    #[test]
    fn survives_silent_max_limit() {
        let request = QueryRequest { where_: json!({}), ..Default::default() };
        let results = collect(&request, 1000, server(250, 30)).unwrap();
        assert_eq!(results.len(), 250);
    }

    #[test]
    fn limit_stops_early() {
        let request = QueryRequest { where_: json!({}), limit: Some(120), ..Default::default() };
        let results = collect(&request, 50, server(250, 1000)).unwrap();
        assert_eq!(results.len(), 120);
    }

    #[test]
    fn ordered_query_pages_by_skip() {
        let request = QueryRequest { where_: json!({}), order: Some("-yield".into()), ..Default::default() };
        let mut seen = Vec::new();
        let mut inner = server(25, 1000);
        let results = collect(&request, 10, |page| {
            seen.push((page.skip, page.order.clone()));
            inner(page)
        })
        .unwrap();
        assert_eq!(results.len(), 25);
        assert_eq!(seen[1], (10, Some("-yield".to_owned())));
    }

    #[test]
    fn later_pages_keep_caller_where() {
        assert_eq!(
            page_where(&json!({"site": "Waseca"}), Some("abc")),
            json!({"$and": [{"site": "Waseca"}, {"objectId": {"$gt": "abc"}}]})
        );
    }

    #[test]
    fn percent_encoding_keeps_reserved_characters() {
        assert_eq!(percent_encode("a&b+c#d é"), "a%26b%2Bc%23d%20%C3%A9");
    }
}

//! The HTTP API of `agros-sync serve`, through the real binary, against the
//! real Parse servers: every endpoint, the token, the body limit, error
//! statuses, tenant isolation, plugin reload and graceful shutdown.
//!
//! Requests are written by hand over a TCP socket, so a test controls every
//! header and byte, `Content-Length` included.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use agros_sync_host::engine::sha256_hex;
use agros_sync_tests::*;
use serde_json::{json, Value};

/// How long a test waits for something the server does in the background
/// (start-up, a file watcher reload, shutdown) before it fails. Only a bound
/// for a broken build; nothing is timed.
const PATIENCE: Duration = Duration::from_secs(120);

/// One response, as read from the socket.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: HashMap<String, String>,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("the body is not JSON ({e}): {}", self.text))
    }

    /// Returns the `code` of an error body.
    fn code(&self) -> String {
        self.json()["error"]["code"].as_str().unwrap_or_else(|| panic!("not an error body: {}", self.text)).to_owned()
    }
}

/// A running `agros-sync serve`.
struct Server {
    child: Child,
    addr: SocketAddr,
    token: Option<String>,
    stderr: Arc<Mutex<String>>,
    stderr_reader: Option<JoinHandle<()>>,
    /// Every response read, kept to check that none contains a secret.
    seen: Mutex<Vec<String>>,
}

impl Server {
    /// Starts `serve` on a free loopback port with the configuration in
    /// `dir`, the locale `lang` and, when given, a bearer token. It logs at
    /// debug level, so a failure shows what the server did.
    fn start(dir: &Path, token: Option<&str>, lang: &str) -> Self {
        Self::start_with_log(dir, token, lang, Some("info,agros_sync=debug,agros_sync_host=debug"))
    }

    /// Like [`Server::start`], with `log` as `AGROS_SYNC_LOG`, or without the
    /// variable (the default `warn` filter) when `log` is `None`.
    fn start_with_log(dir: &Path, token: Option<&str>, lang: &str, log: Option<&str>) -> Self {
        let mut command = Command::new(target_dir().join("release/agros-sync"));
        command
            .arg("--config")
            .arg(dir.join("config.yaml"))
            // The background flusher waits one interval before its first
            // round; an hour keeps it out of every test.
            .args(["serve", "--listen", "127.0.0.1:0", "--interval", "3600000"])
            .env("LANG", lang)
            .env_remove("LC_ALL")
            .env_remove("LC_MESSAGES")
            .env_remove("AGROS_SYNC_TENANT")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        match token {
            Some(token) => command.env("AGROS_SYNC_API_TOKEN", token),
            None => command.env_remove("AGROS_SYNC_API_TOKEN"),
        };
        match log {
            Some(filter) => command.env("AGROS_SYNC_LOG", filter),
            None => command.env_remove("AGROS_SYNC_LOG"),
        };
        let mut child = command.spawn().expect("agros-sync runs; build it with cargo build --release -p agros-sync-host");

        let stderr = Arc::new(Mutex::new(String::new()));
        let (sender, receiver) = std::sync::mpsc::channel();
        let pipe = child.stderr.take().unwrap();
        let collected = stderr.clone();
        let stderr_reader = std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                // "agros-sync serve: listening on http://ADDR (...)", or
                // "escuchando en" in Spanish.
                let listening = line.strip_prefix("agros-sync serve: ").and_then(|rest| rest.split_once(" http://"));
                if let Some((_, rest)) = listening {
                    let address = rest.split_whitespace().next().unwrap_or_default();
                    let _ = sender.send(address.parse::<SocketAddr>().expect("the listening line names an address"));
                }
                let mut text = collected.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
            }
        });
        let addr = receiver
            .recv_timeout(PATIENCE)
            .unwrap_or_else(|_| panic!("serve did not start; stderr:\n{}", stderr.lock().unwrap()));
        Self { child, addr, token: token.map(str::to_owned), stderr, stderr_reader: Some(stderr_reader), seen: Mutex::new(Vec::new()) }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits until the server's stderr contains `needle`, and returns all of
    /// it.
    fn wait_for_stderr(&self, needle: &str) -> String {
        let started = Instant::now();
        loop {
            let stderr = self.stderr.lock().unwrap().clone();
            if stderr.contains(needle) {
                return stderr;
            }
            assert!(started.elapsed() < PATIENCE, "stderr never showed {needle:?}:\n{stderr}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the tenant's status shows the plugin with `hash`.
    fn wait_for_plugin_hash(&self, hash: &str) {
        let started = Instant::now();
        let mut serving = Value::Null;
        while serving != json!(hash) && started.elapsed() < PATIENCE {
            std::thread::sleep(Duration::from_millis(200));
            serving = self.get("/v1/tenants/default/status").json()["plugin"]["hash"].clone();
        }
        assert_eq!(serving, json!(hash), "the server did not load the new plugin file");
    }

    /// Sends a request with the server's token and, for a body, JSON content type.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Reply {
        let mut headers = vec![];
        let authorization = self.token.as_ref().map(|t| format!("Bearer {t}"));
        if let Some(value) = &authorization {
            headers.push(("Authorization", value.as_str()));
        }
        let text = body.map(Value::to_string);
        if text.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        self.send(method, path, &headers, text.as_deref().map(str::as_bytes))
    }

    fn get(&self, path: &str) -> Reply {
        self.call("GET", path, None)
    }

    fn post(&self, path: &str, body: Value) -> Reply {
        self.call("POST", path, Some(&body))
    }

    /// Sends a request with exactly these headers (plus `Host`,
    /// `Connection: close` and, with a body, `Content-Length`).
    fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Reply {
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n", self.addr);
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if let Some(body) = body {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body.unwrap_or_default());
        self.exchange(&bytes)
    }

    /// Writes raw request bytes and reads the response until the server
    /// closes the connection.
    fn exchange(&self, request: &[u8]) -> Reply {
        let mut stream = self.connect();
        stream.write_all(request).expect("the request is written");
        self.read_reply(stream)
    }

    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(self.addr).expect("the server accepts connections");
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        stream
    }

    fn read_reply(&self, mut stream: TcpStream) -> Reply {
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).expect("the response is read");
        let text = String::from_utf8(raw).expect("the response is UTF-8");
        self.seen.lock().unwrap().push(text.clone());
        parse_reply(&text)
    }

    /// Sends SIGTERM and waits for the process to exit.
    fn stop(&mut self) -> ExitStatus {
        terminate(&self.child);
        let status = self.child.wait().unwrap();
        if let Some(reader) = self.stderr_reader.take() {
            reader.join().unwrap();
        }
        status
    }

    /// Stops the server and checks that no response and no log line
    /// contains a Parse key, the API token or one of `extra`.
    fn stop_and_check_secrets(mut self, extra: &[&str]) {
        let status = self.stop();
        assert!(status.success(), "serve exits cleanly on SIGTERM: {status:?}");
        let mut secrets: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        for server in [server_a(), server_b()] {
            secrets.push(server.master_key);
            secrets.push(server.rest_key);
        }
        secrets.extend(self.token.clone());
        let stderr = self.stderr.lock().unwrap().clone();
        for secret in &secrets {
            assert!(!stderr.contains(secret.as_str()), "stderr holds a secret:\n{stderr}");
            for response in self.seen.lock().unwrap().iter() {
                assert!(!response.contains(secret.as_str()), "a response holds a secret:\n{response}");
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // A test that failed before `stop` leaves the process running.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn terminate(child: &Child) {
    let sent = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(sent.success());
}

fn parse_reply(text: &str) -> Reply {
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no end of headers in {text:?}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    Reply { status, headers, text: body.to_owned() }
}

fn fresh_token() -> String {
    format!("api-token-{}-{}", std::process::id(), unique_class("T"))
}

/// Writes `plugin.wasm` (a copy of this build's plugin) and a `config.yaml`
/// that loads it, with `watch` for `plugin.watch`.
fn plugin_copy_dir(name: &str, watch: bool) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("agros-sync-api-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(plugin_path(), dir.join("plugin.wasm")).unwrap();
    let config = format!(
        "databases:\n{}state:\n  url: sqlite://./state.db\nplugin:\n  path: plugin.wasm\n  cache_dir: cache\n  watch: {watch}\n",
        database_yaml("farm", &server_a())
    );
    std::fs::write(dir.join("config.yaml"), config).unwrap();
    dir
}

/// Replaces `path` with `bytes` in one rename, so a watcher never reads the
/// file half-written.
fn replace_file(path: &Path, bytes: &[u8]) {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, bytes).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

fn farm_dir(name: &str, extra: &str) -> PathBuf {
    cli_config_dir(name, &format!("databases:\n{}{extra}", database_yaml("farm", &server_a())))
}

#[test]
fn health_and_openapi_need_no_token() {
    let token = fresh_token();
    let server = Server::start(&farm_dir("api-public", ""), Some(&token), "C");

    let health = server.send("GET", "/v1/health", &[], None);
    assert_eq!((health.status, health.json()), (200, json!({ "status": "ok" })));
    assert_eq!(health.headers["content-type"], "application/json");
    let head = server.send("HEAD", "/v1/health", &[], None);
    assert_eq!(head.status, 200);
    assert_eq!(head.text, "", "a HEAD response has no body");
    assert_eq!(head.headers["content-type"], "application/json");
    assert_eq!(head.headers["content-length"], health.text.len().to_string());

    let openapi = server.send("GET", "/openapi.json", &[], None);
    assert_eq!(openapi.status, 200);
    let document = openapi.json();
    assert_eq!(document["openapi"], json!("3.1.0"));
    assert_eq!(document["servers"], json!([{ "url": server.url() }]), "the document names the address serve listens on");
    let mut paths: Vec<&String> = document["paths"].as_object().unwrap().keys().collect();
    paths.sort();
    let expected = [
        "/openapi.json",
        "/v1/health",
        "/v1/reload",
        "/v1/tenants",
        "/v1/tenants/{tenant}/delete",
        "/v1/tenants/{tenant}/flush",
        "/v1/tenants/{tenant}/outbox",
        "/v1/tenants/{tenant}/outbox/discard",
        "/v1/tenants/{tenant}/outbox/retry",
        "/v1/tenants/{tenant}/outbox/{id}",
        "/v1/tenants/{tenant}/query",
        "/v1/tenants/{tenant}/status",
        "/v1/tenants/{tenant}/sync",
    ];
    assert_eq!(paths, expected);
    server.stop_and_check_secrets(&[]);
}

#[test]
fn token_missing_or_wrong_is_401() {
    let token = fresh_token();
    let server = Server::start(&farm_dir("api-token", ""), Some(&token), "C");
    let wrong = format!("Bearer {token}x");
    let basic = format!("Basic {token}");
    let right = format!("Bearer {token}");

    for headers in [vec![], vec![("Authorization", wrong.as_str())], vec![("Authorization", basic.as_str())], vec![("Authorization", "Bearer")]] {
        let rejected = server.send("GET", "/v1/tenants", &headers, None);
        assert_eq!(rejected.status, 401, "{headers:?}");
        assert_eq!(rejected.code(), "unauthorized-api");
        assert_eq!(rejected.headers["www-authenticate"], "Bearer realm=\"agros-sync\"");
    }
    // An unknown path or a wrong method gets 401 too, so an unauthorized
    // caller learns nothing about the routes.
    assert_eq!(server.send("GET", "/v1/nothing", &[], None).status, 401);
    assert_eq!(server.send("DELETE", "/v1/reload", &[], None).status, 401);
    // A write without the token changes nothing.
    let class = unique_class("ApiNoToken");
    let body = json!({ "database": "farm", "class": class, "data": { "n": 1 } }).to_string();
    let rejected = server.send("POST", "/v1/tenants/default/sync", &[("Content-Type", "application/json")], Some(body.as_bytes()));
    assert_eq!(rejected.status, 401);

    let allowed = server.send("GET", "/v1/tenants", &[("Authorization", right.as_str())], None);
    assert_eq!(allowed.status, 200);
    let listed = allowed.json();
    assert_eq!(listed["tenants"], json!(["default"]));
    assert_eq!(listed["plugin"]["version"], json!("0.1.0"));
    assert_eq!(listed["running"], json!({ "default": null }), "no call has started an instance yet");
    let lowercase_scheme = format!("bearer {token}");
    assert_eq!(server.send("GET", "/v1/tenants", &[("Authorization", lowercase_scheme.as_str())], None).status, 200);
    let status = server.get("/v1/tenants/default/status");
    assert_eq!(status.status, 200);
    assert_eq!(status.json()["clients"][0]["database"], json!("farm"));
    assert_eq!(server_count(&server_a(), &class), 0);
    let listed = server.get("/v1/tenants").json();
    assert_eq!(listed["running"]["default"]["hash"], listed["plugin"]["hash"], "the status call runs on the serving version");
    assert_eq!(listed["running"]["default"]["hash"], status.json()["plugin"]["hash"]);
    server.stop_and_check_secrets(&[]);
}

#[test]
fn sync_creates_then_updates_object_on_parse() {
    let server = Server::start(&farm_dir("api-sync", ""), Some(&fresh_token()), "C");
    let class = unique_class("ApiPlot");
    let data = json!({ "name": "North", "area": 1.5, "planted": { "__type": "Date", "iso": "2024-03-01T00:00:00.000Z" } });

    let created = server.post("/v1/tenants/default/sync", json!({ "database": "farm", "class": class, "data": data, "local_id": "plot-1" }));
    assert_eq!(created.status, 200, "{}", created.text);
    let outcome = created.json();
    assert_eq!((outcome["status"].clone(), outcome["created"].clone()), (json!("synced"), json!(true)));
    assert!(outcome["outbox_id"].is_u64(), "{outcome}");
    let object_id = outcome["object_id"].as_str().unwrap().to_owned();
    let stored = rest(&server_a(), "GET", &format!("/classes/{class}/{object_id}"), None);
    assert_eq!(stored["name"], json!("North"));
    assert_eq!(stored["area"], json!(1.5));
    assert_eq!(stored["planted"], json!({ "__type": "Date", "iso": "2024-03-01T00:00:00.000Z" }));

    let updated = server.post("/v1/tenants/default/sync", json!({ "database": "farm", "class": class, "data": { "area": 2.5 }, "local_id": "plot-1" }));
    assert_eq!(updated.status, 200, "{}", updated.text);
    assert_eq!(updated.json()["object_id"], json!(object_id));
    assert_eq!(updated.json()["created"], json!(false));
    let stored = rest(&server_a(), "GET", &format!("/classes/{class}/{object_id}"), None);
    assert_eq!((stored["name"].clone(), stored["area"].clone()), (json!("North"), json!(2.5)));
    assert_eq!(server_count(&server_a(), &class), 1);
    server.stop_and_check_secrets(&[]);
}

#[test]
fn query_applies_where_order_limit_keys() {
    let server = Server::start(&farm_dir("api-query", ""), None, "C");
    let class = unique_class("ApiQuery");
    for n in 1..=4 {
        let synced = server.post("/v1/tenants/default/sync", json!({ "database": "farm", "class": class, "data": { "n": n, "site": "Waseca" } }));
        assert_eq!(synced.status, 200, "{}", synced.text);
    }

    let request = json!({ "database": "farm", "class": class, "where": { "n": { "$gte": 2 } }, "order": "-n", "limit": 2, "skip": 0, "keys": "n" });
    let queried = server.post("/v1/tenants/default/query", request);
    assert_eq!(queried.status, 200, "{}", queried.text);
    let results = queried.json()["results"].as_array().unwrap().clone();
    let numbers: Vec<Value> = results.iter().map(|r| r["n"].clone()).collect();
    assert_eq!(numbers, vec![json!(4), json!(3)]);
    assert!(results.iter().all(|r| r.get("site").is_none()), "keys limits the fields: {results:?}");

    let everything = server.post("/v1/tenants/default/query", json!({ "database": "farm", "class": class, "order": "n" }));
    let numbers: Vec<Value> = everything.json()["results"].as_array().unwrap().iter().map(|r| r["n"].clone()).collect();
    assert_eq!(numbers, vec![json!(1), json!(2), json!(3), json!(4)]);
    server.stop_and_check_secrets(&[]);
}

#[test]
fn delete_by_object_id_and_local_id() {
    let server = Server::start(&farm_dir("api-delete", ""), None, "C");
    let class = unique_class("ApiDelete");
    let first = server.post("/v1/tenants/default/sync", json!({ "database": "farm", "class": class, "data": { "n": 1 } })).json();
    let second = server.post("/v1/tenants/default/sync", json!({ "database": "farm", "class": class, "data": { "n": 2 }, "local_id": "row-2" })).json();
    assert_eq!(server_count(&server_a(), &class), 2);

    let by_id = server.post("/v1/tenants/default/delete", json!({ "database": "farm", "class": class, "object_id": first["object_id"] }));
    assert_eq!(by_id.status, 200, "{}", by_id.text);
    assert_eq!(by_id.json()["status"], json!("synced"));
    assert_eq!(by_id.json()["object_id"], first["object_id"]);
    assert_eq!(server_count(&server_a(), &class), 1);

    let by_local_id = server.post("/v1/tenants/default/delete", json!({ "database": "farm", "class": class, "local_id": "row-2" }));
    assert_eq!(by_local_id.status, 200, "{}", by_local_id.text);
    assert_eq!(by_local_id.json()["object_id"], second["object_id"]);
    assert_eq!(server_count(&server_a(), &class), 0);

    let unbound = server.post("/v1/tenants/default/delete", json!({ "database": "farm", "class": class, "local_id": "row-2" }));
    assert_eq!((unbound.status, unbound.code()), (404, "object-not-found".to_owned()));
    let both = server.post("/v1/tenants/default/delete", json!({ "database": "farm", "class": class, "local_id": "a", "object_id": "b" }));
    assert_eq!((both.status, both.code()), (400, "invalid-argument".to_owned()));
    let neither = server.post("/v1/tenants/default/delete", json!({ "database": "farm", "class": class }));
    assert_eq!((neither.status, neither.code()), (400, "invalid-argument".to_owned()));
    server.stop_and_check_secrets(&[]);
}

#[test]
fn blank_ids_are_400_naming_the_field() {
    let server = Server::start(&farm_dir("api-blank-ids", ""), None, "C");
    let class = unique_class("ApiBlankId");
    let existing = server.post("/v1/tenants/default/sync", json!({ "database": "farm", "class": class, "data": { "n": 1 } }));
    assert_eq!(existing.status, 200, "{}", existing.text);

    let cases = [("delete", "object_id", ""), ("delete", "object_id", "  "), ("delete", "local_id", ""), ("delete", "local_id", "\t"), ("sync", "local_id", ""), ("sync", "local_id", " \n")];
    for (operation, field, value) in cases {
        let mut body = json!({ "database": "farm", "class": class });
        if operation == "sync" {
            body["data"] = json!({ "n": 2 });
        }
        body[field] = json!(value);
        let rejected = server.post(&format!("/v1/tenants/default/{operation}"), body.clone());
        assert_eq!((rejected.status, rejected.code()), (400, "invalid-argument".to_owned()), "{operation} {body}");
        let error = rejected.json()["error"].clone();
        assert_eq!(error["subject"], json!(field), "{operation} {body}");
        assert_eq!(error["detail"], json!(format!("\"{field}\" is empty or only whitespace; send a non-blank id")), "{operation} {body}");
    }

    let body = json!({ "database": "farm", "class": class, "object_id": "" }).to_string();
    let spanish = server.send("POST", "/v1/tenants/default/delete", &[("Content-Type", "application/json"), ("Accept-Language", "es")], Some(body.as_bytes()));
    assert_eq!(spanish.json()["error"]["message"], json!("«object_id» está vacío o solo tiene espacios; envíe un id que no esté en blanco"));

    // Nothing reached Parse or the outbox.
    assert_eq!(server_count(&server_a(), &class), 1);
    assert_eq!(server.get("/v1/tenants/default/outbox?state=dead").json(), json!({ "entries": [] }));
    server.stop_and_check_secrets(&[]);
}

#[test]
fn queued_write_is_202_and_flush_delivers() {
    let (proxy, through) = proxied(&server_a());
    let dir = cli_config_dir("api-queued", &format!("databases:\n{}", database_yaml("farm", &through)));
    let server = Server::start(&dir, None, "C");
    let class = unique_class("ApiQueued");

    proxy.set_down(true);
    let queued = server.post("/v1/tenants/default/sync", json!({ "database": "farm", "class": class, "data": { "n": 7 } }));
    assert_eq!(queued.status, 202, "{}", queued.text);
    assert_eq!(queued.json()["status"], json!("queued"));
    let outbox_id = queued.json()["outbox_id"].as_u64().unwrap();

    let read = server.post("/v1/tenants/default/query", json!({ "database": "farm", "class": class }));
    assert_eq!((read.status, read.code()), (503, "server-unavailable".to_owned()));

    let pending = server.get("/v1/tenants/default/outbox?state=pending&database=farm");
    assert_eq!(pending.status, 200, "{}", pending.text);
    let entries = pending.json()["entries"].as_array().unwrap().clone();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["id"], json!(outbox_id));
    assert_eq!(entries[0]["operation"], json!("create"));
    assert!(entries[0].get("payload").is_none(), "the list leaves payloads out: {}", entries[0]);
    let entry = server.get(&format!("/v1/tenants/default/outbox/{outbox_id}"));
    assert_eq!(entry.status, 200);
    assert_eq!(entry.json()["payload"], json!({ "n": 7 }));
    assert_eq!(entry.json()["state"], json!("pending"));

    proxy.set_down(false);
    let flushed = server.post("/v1/tenants/default/flush", json!({ "database": "farm", "force": true }));
    assert_eq!((flushed.status, flushed.json()), (200, json!({ "delivered": 1, "retried": 0, "dead_lettered": 0, "pending": 0 })));
    assert_eq!(server_count(&server_a(), &class), 1);
    assert_eq!(server.get("/v1/tenants/default/outbox").json(), json!({ "entries": [] }));
    let discarded_entry = server.get(&format!("/v1/tenants/default/outbox/{outbox_id}"));
    assert_eq!((discarded_entry.status, discarded_entry.code()), (404, "entry-not-found".to_owned()));
    server.stop_and_check_secrets(&[]);
}

#[test]
fn flush_reports_delivered_entries() {
    let (proxy, through) = proxied(&server_a());
    let dir = cli_config_dir("api-flush", &format!("databases:\n{}", database_yaml("farm", &through)));
    let class = unique_class("ApiFlush");

    // Queued by the CLI before the server starts, so only the flush below sends them.
    proxy.set_down(true);
    for n in 0..3 {
        let queued = stdout_json(&run_cli(&dir, "C", &["--json", "sync", "farm", &class, &json!({ "n": n }).to_string()]));
        assert_eq!(queued["status"], json!("queued"));
    }
    proxy.set_down(false);
    let server = Server::start(&dir, None, "C");
    // No body: every field of a flush request is optional.
    let flushed = server.send("POST", "/v1/tenants/default/flush", &[], None);
    assert_eq!((flushed.status, flushed.json()), (200, json!({ "delivered": 3, "retried": 0, "dead_lettered": 0, "pending": 0 })));
    assert_eq!(server_count(&server_a(), &class), 3);
    server.stop_and_check_secrets(&[]);
}

#[test]
fn dead_letters_retried_and_discarded() {
    let server = Server::start(&farm_dir("api-dead", ""), None, "C");
    let class = unique_class("ApiDead");
    let synced = server.post("/v1/tenants/default/sync", json!({ "database": "farm", "class": class, "data": { "area": 1.5 } }));
    assert_eq!(synced.status, 200, "{}", synced.text);

    let invalid_area = server.post("/v1/tenants/default/sync", json!({ "database": "farm", "class": class, "data": { "area": "large" } }));
    assert_eq!((invalid_area.status, invalid_area.code()), (422, "server-rejected".to_owned()));
    assert_eq!(invalid_area.json()["error"]["parse_code"], json!(111));
    let dead = server.get("/v1/tenants/default/outbox?state=dead").json()["entries"].clone();
    assert_eq!(dead.as_array().unwrap().len(), 1);
    let id = dead[0]["id"].as_u64().unwrap();
    assert_eq!(dead[0]["last_error_code"], json!(111));

    // One bad id changes nothing.
    let partly_bad = server.post("/v1/tenants/default/outbox/retry", json!({ "ids": [id, 999_999] }));
    assert_eq!((partly_bad.status, partly_bad.code()), (404, "dead-letter-not-found".to_owned()));
    assert_eq!(partly_bad.json()["error"]["subject"], json!("999999"));
    assert_eq!(server.get(&format!("/v1/tenants/default/outbox/{id}")).json()["state"], json!("dead"));

    let retried = server.post("/v1/tenants/default/outbox/retry", json!({ "ids": [id] }));
    assert_eq!((retried.status, retried.json()), (200, json!({ "retried": [id] })));
    assert_eq!(server.get(&format!("/v1/tenants/default/outbox/{id}")).json()["state"], json!("pending"));
    let flushed = server.post("/v1/tenants/default/flush", json!({ "force": true })).json();
    assert_eq!(flushed, json!({ "delivered": 0, "retried": 0, "dead_lettered": 1, "pending": 0 }));
    assert_eq!(server.get(&format!("/v1/tenants/default/outbox/{id}")).json()["state"], json!("dead"));
    let all = server.post("/v1/tenants/default/outbox/retry", json!({ "all": true }));
    assert_eq!((all.status, all.json()), (200, json!({ "retried": [id] })));

    for invalid in [json!({}), json!({ "ids": [] }), json!({ "ids": [id], "all": true }), json!({ "all": false })] {
        let rejected = server.post("/v1/tenants/default/outbox/retry", invalid.clone());
        assert_eq!((rejected.status, rejected.code()), (400, "invalid-argument".to_owned()), "{invalid}");
    }

    let partly_bad = server.post("/v1/tenants/default/outbox/discard", json!({ "ids": [id, 999_999] }));
    assert_eq!((partly_bad.status, partly_bad.code()), (404, "entry-not-found".to_owned()));
    assert_eq!(server.get(&format!("/v1/tenants/default/outbox/{id}")).status, 200);
    let empty = server.post("/v1/tenants/default/outbox/discard", json!({ "ids": [] }));
    assert_eq!((empty.status, empty.code()), (400, "invalid-argument".to_owned()));
    let discarded = server.post("/v1/tenants/default/outbox/discard", json!({ "ids": [id] }));
    assert_eq!((discarded.status, discarded.json()), (200, json!({ "discarded": [id] })));
    assert_eq!(server.get("/v1/tenants/default/outbox").json(), json!({ "entries": [] }));
    assert_eq!(server_count(&server_a(), &class), 1);
    server.stop_and_check_secrets(&[]);
}

#[test]
fn invalid_requests_are_400_naming_the_problem() {
    let server = Server::start(&farm_dir("api-invalid", ""), None, "C");
    let json_type = [("Content-Type", "application/json")];
    let post_raw = |body: &str| server.send("POST", "/v1/tenants/default/sync", &json_type, Some(body.as_bytes()));

    let syntax = post_raw("{\n  \"database\": \"farm\",\n  \"class\" \"Plot\"\n}");
    assert_eq!(syntax.status, 400);
    assert_eq!(syntax.json()["error"]["code"], json!("invalid-json"));
    assert_eq!(syntax.json()["error"]["detail"], json!("invalid request body: expected `:` at line 3 column 11"));

    let missing = post_raw(r#"{"database":"farm","data":{}}"#);
    assert_eq!(missing.json()["error"]["detail"], json!("invalid request body: missing field `class` at line 1 column 29"));
    let unknown = post_raw(r#"{"database":"farm","class":"Plot","data":{},"localId":"a"}"#);
    assert_eq!(unknown.status, 400);
    assert_eq!(
        unknown.json()["error"]["detail"],
        json!("invalid request body: unknown field `localId`, expected one of `database`, `class`, `data`, `local_id` at line 1 column 53")
    );

    let cases = [
        (json!({ "database": "farm", "class": "1Plot", "data": {} }), "invalid-class-name", Some("1Plot")),
        (json!({ "database": "farm", "class": "Plot", "data": { "bad-name": 1 } }), "invalid-field-name", Some("bad-name")),
        (json!({ "database": "farm", "class": "Plot", "data": { "objectId": 5 } }), "invalid-value", Some("objectId")),
        (json!({ "database": "farm", "class": "Plot", "data": [1, 2] }), "invalid-json", None),
    ];
    for (body, code, subject) in cases {
        let rejected = server.post("/v1/tenants/default/sync", body.clone());
        assert_eq!((rejected.status, rejected.code()), (400, code.to_owned()), "{body}");
        if let Some(subject) = subject {
            assert_eq!(rejected.json()["error"]["subject"], json!(subject), "{body}");
        }
    }
    let bad_where = server.post("/v1/tenants/default/query", json!({ "database": "farm", "class": "Plot", "where": [1] }));
    assert_eq!((bad_where.status, bad_where.code()), (400, "invalid-json".to_owned()));

    let plain = server.send("POST", "/v1/tenants/default/sync", &[("Content-Type", "text/plain")], Some(br#"{"database":"farm"}"#));
    assert_eq!((plain.status, plain.code()), (415, "unsupported-media-type".to_owned()));
    let untyped = server.send("POST", "/v1/tenants/default/sync", &[], Some(br#"{"database":"farm"}"#));
    assert_eq!((untyped.status, untyped.code()), (415, "unsupported-media-type".to_owned()));
    let reload_body = server.post("/v1/reload", json!({ "force": true }));
    assert_eq!((reload_body.status, reload_body.code()), (400, "invalid-json".to_owned()));

    for query in ["state=zombie", "limit=0", "limit=x", "color=red"] {
        let rejected = server.get(&format!("/v1/tenants/default/outbox?{query}"));
        assert_eq!((rejected.status, rejected.code()), (400, "invalid-argument".to_owned()), "{query}");
    }
    let bad_id = server.get("/v1/tenants/default/outbox/abc");
    assert_eq!((bad_id.status, bad_id.code()), (400, "invalid-argument".to_owned()));

    let spanish = server.send("POST", "/v1/tenants/default/sync", &[("Content-Type", "application/json"), ("Accept-Language", "es-ES,es;q=0.9")], Some(b"{"));
    assert_eq!(spanish.json()["error"]["message"], json!("JSON no válido: invalid request body: EOF while parsing an object at line 1 column 1"));
    server.stop_and_check_secrets(&[]);
}

#[test]
fn oversize_bodies_are_413() {
    // The body limit is limits.max_object_bytes plus 64 KiB.
    let server = Server::start(&farm_dir("api-oversize", "limits:\n  max_object_bytes: 1000\n"), None, "C");
    let limit = 1000 + 64 * 1024;
    let class = unique_class("ApiLarge");

    // Only the headers are sent: the server must respond without waiting for the body.
    let head = format!(
        "POST /v1/tenants/default/sync HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        server.addr,
        limit + 1
    );
    let announced = server.exchange(head.as_bytes());
    assert_eq!((announced.status, announced.code()), (413, "payload-too-large".to_owned()));
    assert_eq!(
        announced.json()["error"]["detail"],
        json!(format!("Content-Length {} exceeds the limit of {limit} bytes (limits.max_object_bytes plus 64 KiB)", limit + 1))
    );

    // A chunked body carries no length: it is cut off once past the limit.
    let chunk = vec![b' '; limit + 1];
    let mut request = format!(
        "POST /v1/tenants/default/sync HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
        server.addr,
        chunk.len()
    )
    .into_bytes();
    request.extend_from_slice(&chunk);
    request.extend_from_slice(b"\r\n0\r\n\r\n");
    let streamed = server.exchange(&request);
    assert_eq!((streamed.status, streamed.code()), (413, "payload-too-large".to_owned()));
    assert_eq!(streamed.json()["error"]["detail"], json!(format!("the body exceeds the limit of {limit} bytes (limits.max_object_bytes plus 64 KiB)")));

    // A body of exactly the limit is read.
    let mut exact = json!({ "database": "farm", "class": class, "data": { "n": 1 } }).to_string();
    exact.push_str(&" ".repeat(limit - exact.len()));
    let accepted = server.send("POST", "/v1/tenants/default/sync", &[("Content-Type", "application/json")], Some(exact.as_bytes()));
    assert_eq!(accepted.status, 200, "{}", accepted.text);

    // A body within the limit whose object is over limits.max_object_bytes.
    let large = server.post("/v1/tenants/default/sync", json!({ "database": "farm", "class": class, "data": { "text": "x".repeat(2000) } }));
    assert_eq!((large.status, large.code()), (413, "object-too-large".to_owned()));
    assert_eq!(server_count(&server_a(), &class), 1);
    server.stop_and_check_secrets(&[]);
}

#[test]
fn unknown_tenant_database_route_and_method() {
    let extra = "  archive:\n    sync: false\n";
    let server = Server::start(&farm_dir("api-unknown", extra), None, "es_ES.UTF-8");

    let tenant = server.get("/v1/tenants/nope/status");
    assert_eq!((tenant.status, tenant.code()), (404, "unknown-tenant".to_owned()));
    assert_eq!(tenant.json()["error"]["subject"], json!("nope"));
    assert!(tenant.json()["error"]["message"].as_str().unwrap().starts_with("tenant desconocido «nope»"), "{}", tenant.text);
    let english = server.send("GET", "/v1/tenants/nope/status", &[("Accept-Language", "en")], None);
    assert_eq!(english.json()["error"]["message"], json!("tenant \"nope\" is not configured; known tenants: default"));

    let database = server.post("/v1/tenants/default/sync", json!({ "database": "nowhere", "class": "Plot", "data": {} }));
    assert_eq!((database.status, database.code()), (404, "unknown-database".to_owned()));
    assert_eq!(database.json()["error"]["subject"], json!("nowhere"));
    let listed = server.get("/v1/tenants/default/outbox?database=nowhere");
    assert_eq!((listed.status, listed.code()), (404, "unknown-database".to_owned()));
    let disabled = server.post("/v1/tenants/default/sync", json!({ "database": "archive", "class": "Plot", "data": {} }));
    assert_eq!((disabled.status, disabled.code()), (409, "sync-disabled".to_owned()));

    for (method, path, allow) in [("GET", "/v1/tenants/default/sync", "POST"), ("DELETE", "/v1/health", "GET, HEAD"), ("POST", "/v1/tenants", "GET"), ("GET", "/v1/reload", "POST")] {
        let rejected = server.send(method, path, &[], None);
        assert_eq!((rejected.status, rejected.code()), (405, "method-not-allowed".to_owned()), "{method} {path}");
        assert_eq!(rejected.headers["allow"], allow);
    }
    let route = server.get("/v1/nothing");
    assert_eq!((route.status, route.code()), (404, "not-found".to_owned()));
    assert_eq!(route.json()["error"]["message"], json!("no existe la ruta /v1/nothing; vea /openapi.json"));
    server.stop_and_check_secrets(&[]);
}

#[test]
fn parse_rejecting_keys_is_502() {
    let wrong = TestServer { master_key: format!("wrong-master-key-{}", std::process::id()), ..server_a() };
    let server = Server::start(&cli_config_dir("api-keys", &format!("databases:\n{}", database_yaml("farm", &wrong))), None, "C");
    let rejected = server.post("/v1/tenants/default/query", json!({ "database": "farm", "class": unique_class("ApiKeys") }));
    assert_eq!((rejected.status, rejected.code()), (502, "unauthorized".to_owned()));
    server.stop_and_check_secrets(&[&wrong.master_key]);
}

/// Parse Server rejects a query operator its Postgres adapter lacks with
/// code 119 and HTTP 400. The keys are valid, so the error is
/// `server-rejected`, not `unauthorized`.
#[test]
fn unsupported_query_operator_is_422() {
    let server = Server::start(&farm_dir("api-bogus-operator", ""), None, "C");
    let class = unique_class("ApiBogus");
    let synced = server.post("/v1/tenants/default/sync", json!({ "database": "farm", "class": class, "data": { "area": 1.5 } }));
    assert_eq!(synced.status, 200, "{}", synced.text);

    let rejected = server.post("/v1/tenants/default/query", json!({ "database": "farm", "class": class, "where": { "area": { "$bogus": 1 } } }));
    assert_eq!((rejected.status, rejected.code()), (422, "server-rejected".to_owned()), "{}", rejected.text);
    let error = rejected.json()["error"].clone();
    assert_eq!(error["parse_code"], json!(119));
    assert_eq!(error["http_status"], json!(400));
    assert_eq!(error["detail"], json!("Postgres doesn't support this query type yet {\"$bogus\":1}"));

    let status = server.get("/v1/tenants/default/status").json();
    assert_eq!(status["clients"][0]["paused"], json!(null), "{status}");
    server.stop_and_check_secrets(&[]);
}

#[test]
fn two_tenants_see_only_their_own_databases() {
    let indent = |yaml: String| yaml.lines().map(|line| format!("    {line}\n")).collect::<String>();
    let tenants = format!(
        "tenants:\n  alpha:\n    databases:\n{}  beta:\n    databases:\n{}",
        indent(database_yaml("farm", &server_a())),
        indent(database_yaml("market", &server_b()))
    );
    let server = Server::start(&cli_config_dir("api-tenants", &tenants), Some(&fresh_token()), "C");

    assert_eq!(server.get("/v1/tenants").json()["tenants"], json!(["alpha", "beta"]));
    for (tenant, database, url) in [("alpha", "farm", server_a().url), ("beta", "market", server_b().url)] {
        let status = server.get(&format!("/v1/tenants/{tenant}/status"));
        assert_eq!(status.status, 200, "{}", status.text);
        let status = status.json();
        assert_eq!(status["tenant"], json!(tenant));
        let clients = status["clients"].as_array().unwrap();
        let databases: Vec<&Value> = clients.iter().map(|c| &c["database"]).collect();
        assert_eq!(databases, vec![&json!(database)], "{status}");
        assert_eq!(clients[0]["server_url"], json!(url));
        assert_eq!(clients[0]["reachable"], json!(true));
    }
    let listed = server.get("/v1/tenants").json();
    for tenant in ["alpha", "beta"] {
        assert_eq!(listed["running"][tenant]["hash"], listed["plugin"]["hash"], "{listed}");
    }

    let class = unique_class("ApiTenant");
    let foreign = server.post("/v1/tenants/alpha/sync", json!({ "database": "market", "class": class, "data": { "n": 1 } }));
    assert_eq!((foreign.status, foreign.code()), (404, "unknown-database".to_owned()));
    let own = server.post("/v1/tenants/alpha/sync", json!({ "database": "farm", "class": class, "data": { "n": 1 } }));
    assert_eq!(own.status, 200, "{}", own.text);
    let outbox_id = own.json()["outbox_id"].as_u64().unwrap();
    let other_tenant = server.get(&format!("/v1/tenants/beta/outbox/{outbox_id}"));
    assert_eq!((other_tenant.status, other_tenant.code()), (404, "entry-not-found".to_owned()));
    assert_eq!(server_count(&server_a(), &class), 1);
    assert_eq!(server_count(&server_b(), &class), 0);
    server.stop_and_check_secrets(&[]);
}

#[test]
fn reload_swaps_plugin_and_keeps_old_on_failure() {
    let dir = plugin_copy_dir("reload", false);
    let token = fresh_token();
    let server = Server::start(&dir, Some(&token), "C");
    let plugin = dir.join("plugin.wasm");
    let original = std::fs::read(&plugin).unwrap();
    let old_hash = sha256_hex(&original);
    let url = server.url();
    let reload = |lang: &str, token: Option<&str>, json: bool| {
        let mut command = Command::new(target_dir().join("release/agros-sync"));
        command.arg("--config").arg(dir.join("config.yaml")).env("LANG", lang).env_remove("LC_ALL").env_remove("LC_MESSAGES");
        if json {
            command.arg("--json");
        }
        command.args(["reload", "--url", &url]);
        match token {
            Some(token) => command.env("AGROS_SYNC_API_TOKEN", token),
            None => command.env_remove("AGROS_SYNC_API_TOKEN"),
        };
        command.output().unwrap()
    };

    let unchanged = reload("C", Some(&token), false);
    assert_eq!(unchanged.status.code(), Some(0), "{}", String::from_utf8_lossy(&unchanged.stderr));
    assert_eq!(String::from_utf8_lossy(&unchanged.stdout), format!("plugin file unchanged; 0.1.0 ({}) keeps serving\n", &old_hash[..12]));
    let spanish = reload("es_ES.UTF-8", Some(&token), false);
    assert_eq!(String::from_utf8_lossy(&spanish.stdout), format!("el fichero del plugin no cambió; sigue sirviendo 0.1.0 ({})\n", &old_hash[..12]));
    let without_token = reload("C", None, true);
    assert_eq!(without_token.status.code(), Some(1));
    assert_eq!(stdout_json(&without_token)["error"]["code"], json!("unauthorized-api"));

    // A call starts the tenant's instance on the first version.
    assert_eq!(server.get("/v1/tenants/default/status").status, 200);

    let changed = with_custom_section(&original, "agros-sync-test", b"reload");
    let new_hash = sha256_hex(&changed);
    replace_file(&plugin, &changed);
    let swapped = reload("C", Some(&token), true);
    assert_eq!(swapped.status.code(), Some(0), "{}", String::from_utf8_lossy(&swapped.stdout));
    assert_eq!(stdout_json(&swapped), json!({ "outcome": "swapped", "hash": new_hash, "version": "0.1.0", "previous_hash": old_hash }));
    let listed = server.get("/v1/tenants").json();
    assert_eq!(listed["plugin"]["hash"], json!(new_hash), "new instances start the new version");
    assert_eq!(listed["running"]["default"]["hash"], json!(old_hash), "the live instance moves on its next call");
    let status = server.get("/v1/tenants/default/status").json();
    assert_eq!(status["plugin"]["hash"], json!(new_hash));
    assert_eq!(server.get("/v1/tenants").json()["running"]["default"]["hash"], json!(new_hash));
    assert_eq!(status["plugin"]["last_reload_failure"], Value::Null);

    let broken = b"\0asm this is no component".to_vec();
    replace_file(&plugin, &broken);
    let rejected = server.post("/v1/reload", json!({}));
    assert_eq!((rejected.status, rejected.code()), (422, "reload-failed".to_owned()));
    assert_eq!(rejected.json()["error"]["subject"], json!(plugin.display().to_string()));
    let message = rejected.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(message.starts_with(&format!("plugin not reloaded; version 0.1.0 ({}) keeps serving: failed to compile plugin", &new_hash[..12])), "{message}");
    let rejected_by_cli = reload("C", Some(&token), true);
    assert_eq!(rejected_by_cli.status.code(), Some(1));
    assert_eq!(stdout_json(&rejected_by_cli)["error"]["code"], json!("reload-failed"));

    let status = server.get("/v1/tenants/default/status").json();
    assert_eq!(status["plugin"]["hash"], json!(new_hash), "the old version keeps serving");
    assert_eq!(status["plugin"]["last_reload_failure"]["hash"], json!(sha256_hex(&broken)));
    let class = unique_class("ApiReload");
    let synced = server.post("/v1/tenants/default/sync", json!({ "database": "farm", "class": class, "data": { "n": 1 } }));
    assert_eq!(synced.status, 200, "{}", synced.text);
    assert_eq!(server_count(&server_a(), &class), 1);

    replace_file(&plugin, &original);
    let restored = server.post("/v1/reload", json!({}));
    assert_eq!(restored.json(), json!({ "outcome": "swapped", "hash": old_hash, "version": "0.1.0", "previous_hash": new_hash }));
    assert_eq!(server.get("/v1/tenants/default/status").json()["plugin"]["last_reload_failure"], Value::Null);
    server.stop_and_check_secrets(&[]);
}

#[test]
fn reload_without_server_is_unreachable() {
    let dir = farm_dir("api-unreachable", "");
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    let output = run_cli(&dir, "C", &["--json", "reload", "--url", &url]);
    assert_eq!(output.status.code(), Some(1));
    let error = stdout_json(&output)["error"].clone();
    assert_eq!(error["code"], json!("server-unreachable"));
    assert_eq!(error["subject"], json!(url));

    let spanish = run_cli(&dir, "es_ES.UTF-8", &["reload", "--url", &url]);
    assert_eq!(spanish.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&spanish.stderr);
    assert!(stderr.starts_with(&format!("error: no se pudo contactar con agros-sync serve en {url}: failed to connect")), "{stderr}");
}

#[test]
fn watcher_loads_changed_plugin_file() {
    let dir = plugin_copy_dir("watch", true);
    let server = Server::start(&dir, None, "C");
    let plugin = dir.join("plugin.wasm");
    let changed = with_custom_section(&std::fs::read(&plugin).unwrap(), "agros-sync-test", b"watch");
    let new_hash = sha256_hex(&changed);
    replace_file(&plugin, &changed);

    server.wait_for_plugin_hash(&new_hash);
    server.wait_for_stderr(&format!("agros-sync serve: plugin 0.1.0 ({}) loaded from {}", &new_hash[..12], plugin.display()));

    // A deploy that keeps modification times (`cp -p`, `rsync -t`, tar)
    // renames in a file of the same size with the old one's mtime.
    let same_size = with_custom_section(&std::fs::read(plugin_path()).unwrap(), "agros-sync-test", b"WATCH");
    assert_eq!(same_size.len(), changed.len());
    let same_size_hash = sha256_hex(&same_size);
    let old_mtime = std::fs::metadata(&plugin).unwrap().modified().unwrap();
    let temporary = plugin.with_extension("tmp");
    std::fs::write(&temporary, &same_size).unwrap();
    std::fs::File::options().write(true).open(&temporary).unwrap().set_modified(old_mtime).unwrap();
    std::fs::rename(&temporary, &plugin).unwrap();
    let replaced = std::fs::metadata(&plugin).unwrap();
    assert_eq!((replaced.len(), replaced.modified().unwrap()), (changed.len() as u64, old_mtime));

    server.wait_for_plugin_hash(&same_size_hash);
    server.wait_for_stderr(&format!("agros-sync serve: plugin 0.1.0 ({}) loaded from", &same_size_hash[..12]));
    server.stop_and_check_secrets(&[]);
}

/// Every reload trigger prints one line at the default log level. A swap
/// prints the version it loaded, and a rejected file the runtime's error.
#[test]
fn reload_triggers_print_one_line_each() {
    let dir = plugin_copy_dir("reload-lines", false);
    let server = Server::start_with_log(&dir, None, "C", None);
    let plugin = dir.join("plugin.wasm");
    let original = std::fs::read(&plugin).unwrap();

    let by_api = with_custom_section(&original, "agros-sync-test", b"api");
    replace_file(&plugin, &by_api);
    let swapped = server.post("/v1/reload", json!({}));
    assert_eq!(swapped.json()["outcome"], json!("swapped"), "{}", swapped.text);
    let api_line = format!("agros-sync serve: plugin 0.1.0 ({}) loaded from {}\n", &sha256_hex(&by_api)[..12], plugin.display());
    server.wait_for_stderr(&api_line);

    let by_hangup = with_custom_section(&original, "agros-sync-test", b"sighup");
    replace_file(&plugin, &by_hangup);
    let sent = Command::new("kill").args(["-HUP", &server.child.id().to_string()]).status().unwrap();
    assert!(sent.success());
    server.wait_for_plugin_hash(&sha256_hex(&by_hangup));
    let hangup_line = format!("agros-sync serve: plugin 0.1.0 ({}) loaded from {}\n", &sha256_hex(&by_hangup)[..12], plugin.display());
    server.wait_for_stderr(&hangup_line);

    replace_file(&plugin, b"\0asm this is no component");
    let refused = server.post("/v1/reload", json!({}));
    assert_eq!((refused.status, refused.code()), (422, "reload-failed".to_owned()));
    let stderr = server.wait_for_stderr("plugin reload rejected; the running version keeps serving");
    assert_eq!(stderr.matches("plugin reload rejected").count(), 1, "{stderr}");
    assert_eq!(stderr.matches(" ERROR ").count(), 1, "only the refusal is an error:\n{stderr}");
    let loaded: Vec<&str> = stderr.lines().filter(|line| line.contains(" loaded from ")).collect();
    assert_eq!(loaded, vec![api_line.trim_end(), hangup_line.trim_end()], "{stderr}");
    server.stop_and_check_secrets(&[]);
}

#[test]
fn blank_token_stops_serve_at_start() {
    let dir = farm_dir("api-blank-token", "");
    let start = |token: &str, lang: &str, json: bool| {
        let mut command = Command::new(target_dir().join("release/agros-sync"));
        command.arg("--config").arg(dir.join("config.yaml"));
        if json {
            command.arg("--json");
        }
        command
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("AGROS_SYNC_API_TOKEN", token)
            .env("LANG", lang)
            .env_remove("LC_ALL")
            .env_remove("LC_MESSAGES")
            .env_remove("AGROS_SYNC_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        // A serve that started would run until killed.
        let started = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if started.elapsed() > PATIENCE {
                let _ = child.kill();
                panic!("serve started with AGROS_SYNC_API_TOKEN={token:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child.wait_with_output().unwrap()
    };

    let detail = "AGROS_SYNC_API_TOKEN is set but empty or only whitespace; unset it to run the API without a token, or set it to the token that requests must send";
    for token in ["", " ", "\t \n"] {
        let output = start(token, "C", true);
        assert_eq!(output.status.code(), Some(2), "token {token:?}");
        let error = stdout_json(&output)["error"].clone();
        assert_eq!(error["code"], json!("invalid-argument"), "token {token:?}");
        assert_eq!(error["subject"], json!("AGROS_SYNC_API_TOKEN"), "token {token:?}");
        assert_eq!(error["detail"], json!(detail), "token {token:?}");
        assert_eq!(error["message"], json!(detail), "token {token:?}");
        assert!(!String::from_utf8_lossy(&output.stderr).contains("listening on"), "token {token:?}");
    }

    let spanish = start("", "es_ES.UTF-8", false);
    assert_eq!(spanish.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&spanish.stderr),
        "error: AGROS_SYNC_API_TOKEN está definida pero vacía o solo tiene espacios; quítela para servir la API sin token, o póngale el token que deben enviar las peticiones\n"
    );
}

#[test]
fn second_sigterm_stops_without_waiting() {
    let mut server = Server::start(&farm_dir("api-second-signal", ""), None, "C");
    let mut stream = server.connect();
    let head = format!(
        "POST /v1/tenants/default/sync HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\nExpect: 100-continue\r\n\r\n",
        server.addr
    );
    stream.write_all(head.as_bytes()).unwrap();
    // The handler waits for a body that never comes, for up to 60 s.
    let mut interim = vec![0; b"HTTP/1.1 100 Continue\r\n\r\n".len()];
    stream.read_exact(&mut interim).unwrap();
    terminate(&server.child);
    let started = Instant::now();
    while TcpStream::connect(server.addr).is_ok() && started.elapsed() < PATIENCE {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(server.child.try_wait().unwrap(), None, "the first SIGTERM waits for the open request");

    terminate(&server.child);
    let started = Instant::now();
    let exit = loop {
        if let Some(exit) = server.child.try_wait().unwrap() {
            break Some(exit);
        }
        // Well inside the 60 s the open request may wait for its body, so
        // only the second signal can have ended the process by then.
        if started.elapsed() > Duration::from_secs(30) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let exit = exit.expect("the second SIGTERM stops serve before the open request's body timeout");
    assert!(exit.success(), "{exit:?}");
    drop(stream);
}

#[test]
fn sigterm_lets_request_in_flight_finish() {
    let mut server = Server::start(&farm_dir("api-shutdown", ""), None, "C");
    let class = unique_class("ApiShutdown");
    let body = json!({ "database": "farm", "class": class, "data": { "n": 1 } }).to_string();
    let (first, rest) = body.as_bytes().split_at(body.len() / 2);

    let mut stream = server.connect();
    let head = format!(
        "POST /v1/tenants/default/sync HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        server.addr,
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    // The server sends 100 Continue once its handler reads the body, so the
    // request is in flight from here on.
    let interim = b"HTTP/1.1 100 Continue\r\n\r\n";
    let mut received = vec![0; interim.len()];
    stream.read_exact(&mut received).unwrap();
    assert_eq!(String::from_utf8_lossy(&received), String::from_utf8_lossy(interim));
    stream.write_all(first).unwrap();
    terminate(&server.child);

    // Once the listener is closed, shutdown has begun with the request open.
    let started = Instant::now();
    while TcpStream::connect(server.addr).is_ok() && started.elapsed() < PATIENCE {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(TcpStream::connect(server.addr).is_err(), "serve stops accepting after SIGTERM");
    stream.write_all(rest).unwrap();
    let reply = server.read_reply(stream);
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json()["status"], json!("synced"));

    let exit = server.child.wait().unwrap();
    assert!(exit.success(), "serve exits cleanly after the request: {exit:?}");
    assert_eq!(server_count(&server_a(), &class), 1);
}

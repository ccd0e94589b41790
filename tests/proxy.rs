//! A fault-injecting HTTP proxy between the host and the real Parse Server,
//! on loopback. It forwards each request to the server unless a fault is set
//! instead: the server is "down" (connections are closed at once), a
//! response is dropped after the server applied the request, or a canned
//! answer (502, 429…) is sent without forwarding.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

/// What to do with the next requests that match.
#[derive(Debug, Clone)]
pub enum Action {
    /// Forward to the server, then close the connection without a response.
    DropResponse,
    /// Respond without forwarding.
    Respond { status: u16, headers: Vec<(String, String)>, body: String },
}

#[derive(Debug, Clone)]
struct Rule {
    method: String,
    path_contains: String,
    action: Action,
    remaining: u32,
}

#[derive(Default)]
struct Shared {
    down: AtomicBool,
    rules: Mutex<Vec<Rule>>,
    forwarded: AtomicU32,
    dropped: AtomicU32,
}

/// A running proxy. It stops when the test process ends.
pub struct FaultProxy {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (`host:port`) on 127.0.0.1 and a free port.
    pub fn start(upstream: &str) -> Self {
        let shared = Arc::new(Shared::default());
        let (sender, receiver) = std::sync::mpsc::channel();
        let upstream = upstream.to_owned();
        let state = shared.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            runtime.block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                sender.send(listener.local_addr().unwrap()).unwrap();
                loop {
                    let (stream, _) = listener.accept().await.unwrap();
                    if state.down.load(Ordering::SeqCst) {
                        drop(stream);
                        continue;
                    }
                    tokio::spawn(serve_connection(stream, upstream.clone(), state.clone()));
                }
            });
        });
        let addr = receiver.recv().expect("the proxy starts");
        Self { addr, shared }
    }

    /// Builds the proxy's URL for a Parse server at `server_url`: the same
    /// path, with the proxy's host and port.
    pub fn url_for(&self, server_url: &str) -> String {
        let after_scheme = server_url.split_once("://").map(|(_, rest)| rest).unwrap_or(server_url);
        let path = after_scheme.find('/').map(|i| &after_scheme[i..]).unwrap_or("");
        format!("http://{}{path}", self.addr)
    }

    /// While down, every connection is closed before a request is read.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }

    /// Applies `action` to the next `times` requests with `method` whose path
    /// contains `path_contains`.
    pub fn add_fault(&self, method: &str, path_contains: &str, action: Action, times: u32) {
        self.shared.rules.lock().unwrap().push(Rule {
            method: method.to_owned(),
            path_contains: path_contains.to_owned(),
            action,
            remaining: times,
        });
    }

    /// Removes every fault that has not run out yet.
    pub fn clear_faults(&self) {
        self.shared.rules.lock().unwrap().clear();
    }

    /// Requests forwarded to the server so far, dropped ones included.
    pub fn forwarded(&self) -> u32 {
        self.shared.forwarded.load(Ordering::SeqCst)
    }

    /// Responses dropped so far.
    pub fn dropped(&self) -> u32 {
        self.shared.dropped.load(Ordering::SeqCst)
    }
}

async fn serve_connection(stream: TcpStream, upstream: String, shared: Arc<Shared>) {
    let service = hyper::service::service_fn(move |request| handle(request, upstream.clone(), shared.clone()));
    // A dropped response ends the connection with an error; that is the point.
    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
}

async fn handle(request: Request<Incoming>, upstream: String, shared: Arc<Shared>) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let action = take_action(&shared, request.method().as_str(), request.uri().path());
    if let Some(Action::Respond { status, headers, body }) = &action {
        let mut response = Response::builder().status(*status);
        for (name, value) in headers {
            response = response.header(name, value);
        }
        return Ok(response.body(Full::new(Bytes::from(body.clone()))).unwrap());
    }

    let response = forward(request, &upstream).await.map_err(std::io::Error::other)?;
    shared.forwarded.fetch_add(1, Ordering::SeqCst);
    if let Some(Action::DropResponse) = action {
        shared.dropped.fetch_add(1, Ordering::SeqCst);
        return Err(std::io::Error::other("response dropped by the fault proxy"));
    }
    Ok(response)
}

fn take_action(shared: &Shared, method: &str, path: &str) -> Option<Action> {
    let mut rules = shared.rules.lock().unwrap();
    let rule = rules.iter_mut().find(|r| r.remaining > 0 && r.method == method && path.contains(&r.path_contains))?;
    rule.remaining -= 1;
    Some(rule.action.clone())
}

/// Sends the request to the server on a new connection and reads the whole
/// response.
async fn forward(request: Request<Incoming>, upstream: &str) -> Result<Response<Full<Bytes>>, Box<dyn std::error::Error + Send + Sync>> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await?.to_bytes();
    let stream = TcpStream::connect(upstream).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);

    let mut outgoing = Request::from_parts(parts, Full::new(body));
    outgoing.headers_mut().insert(hyper::header::HOST, upstream.parse()?);
    outgoing.headers_mut().remove(hyper::header::TRANSFER_ENCODING);
    let response = sender.send_request(outgoing).await?;
    let (mut parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    parts.headers.remove(hyper::header::TRANSFER_ENCODING);
    Ok(Response::from_parts(parts, Full::new(body)))
}


//! A recording HTTP reverse proxy on 127.0.0.1.
//!
//! Tests put it in front of moto_server to count the STS calls the agent
//! makes and to collect the credentials STS returned, which a test then
//! looks for in the logs. Each exchange is forwarded as it came and
//! recorded with its request and response bodies.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};

use crate::http::{self, form_decode};

/// Worker threads, so one slow upstream response does not delay the others.
const WORKERS: usize = 4;

/// Headers that describe one hop's connection and are not forwarded.
const HOP_HEADERS: &[&str] = &[
    "host",
    "connection",
    "content-length",
    "transfer-encoding",
    "keep-alive",
    "expect",
    "upgrade",
];

/// One forwarded request and its response.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub method: String,
    pub path: String,
    pub request_body: String,
    pub status: u16,
    pub response_body: String,
}

impl Exchange {
    /// Returns a field of the form-encoded request body (AWS query
    /// protocol requests carry `Action` there).
    pub fn form_field(&self, name: &str) -> Option<String> {
        form_decode(&self.request_body)
            .into_iter()
            .find(|(field, _)| field == name)
            .map(|(_, value)| value)
    }
}

/// A running proxy; it stops when dropped.
pub struct CountingProxy {
    url: String,
    server: Arc<tiny_http::Server>,
    stopping: Arc<AtomicBool>,
    exchanges: Arc<Mutex<Vec<Exchange>>>,
    workers: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for CountingProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CountingProxy")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl CountingProxy {
    /// Starts a proxy on a free port of 127.0.0.1 that forwards to
    /// `upstream` (`http://127.0.0.1:<port>`).
    pub fn start(upstream: &str) -> Result<Self> {
        let server = tiny_http::Server::http("127.0.0.1:0")
            .map_err(|error| anyhow!("failed to start the proxy on 127.0.0.1:0: {error}"))?;
        let port = server
            .server_addr()
            .to_ip()
            .context("the proxy is not listening on an IP address")?
            .port();
        let server = Arc::new(server);
        let stopping = Arc::new(AtomicBool::new(false));
        let exchanges = Arc::new(Mutex::new(Vec::new()));

        let workers = (0..WORKERS)
            .map(|_| {
                let server = Arc::clone(&server);
                let stopping = Arc::clone(&stopping);
                let exchanges = Arc::clone(&exchanges);
                let upstream = upstream.trim_end_matches('/').to_owned();
                thread::spawn(move || serve(&server, &stopping, &exchanges, &upstream))
            })
            .collect();

        Ok(Self {
            url: format!("http://127.0.0.1:{port}"),
            server,
            stopping,
            exchanges,
            workers,
        })
    }

    /// Returns the proxy's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Returns every exchange so far, oldest first.
    pub fn exchanges(&self) -> Vec<Exchange> {
        self.exchanges
            .lock()
            .expect("no worker panics while holding the lock")
            .clone()
    }

    /// Returns how many requests carried this AWS query `Action`.
    pub fn count_action(&self, action: &str) -> usize {
        self.exchanges()
            .iter()
            .filter(|exchange| exchange.form_field("Action").as_deref() == Some(action))
            .count()
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        for _ in 0..self.workers.len() {
            self.server.unblock();
        }
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

fn serve(
    server: &tiny_http::Server,
    stopping: &AtomicBool,
    exchanges: &Mutex<Vec<Exchange>>,
    upstream: &str,
) {
    while !stopping.load(Ordering::SeqCst) {
        let request = match server.recv_timeout(Duration::from_millis(200)) {
            Ok(Some(request)) => request,
            Ok(None) => continue,
            Err(_) => break,
        };
        forward(request, exchanges, upstream);
    }
}

fn forward(mut request: tiny_http::Request, exchanges: &Mutex<Vec<Exchange>>, upstream: &str) {
    let method = request.method().as_str().to_owned();
    let path = request.url().to_owned();
    let mut body = Vec::new();
    if let Err(error) = request.as_reader().read_to_end(&mut body) {
        let _ = request.respond(
            tiny_http::Response::from_string(format!("proxy: failed to read the request: {error}"))
                .with_status_code(400),
        );
        return;
    }

    let mut builder = ureq::http::Request::builder()
        .method(method.as_str())
        .uri(format!("{upstream}{path}"));
    for header in request.headers() {
        let name = header.field.as_str().as_str();
        if !HOP_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            builder = builder.header(name, header.value.as_str());
        }
    }
    let upstream_reply = builder
        .body(body.clone())
        .map_err(anyhow::Error::from)
        .and_then(|outgoing| http::client().run(outgoing).map_err(anyhow::Error::from));

    let (status, headers, response_body) = match upstream_reply {
        Ok(mut reply) => {
            let status = reply.status().as_u16();
            let headers: Vec<(String, Vec<u8>)> = reply
                .headers()
                .iter()
                .filter(|(name, _)| !HOP_HEADERS.contains(&name.as_str()))
                .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
                .collect();
            let bytes = reply.body_mut().read_to_vec().unwrap_or_default();
            (status, headers, bytes)
        }
        Err(error) => (
            502,
            Vec::new(),
            format!("proxy: upstream {upstream} failed: {error}").into_bytes(),
        ),
    };

    exchanges
        .lock()
        .expect("no worker panics while holding the lock")
        .push(Exchange {
            method,
            path,
            request_body: String::from_utf8_lossy(&body).into_owned(),
            status,
            response_body: String::from_utf8_lossy(&response_body).into_owned(),
        });

    let mut response = tiny_http::Response::from_data(response_body).with_status_code(status);
    for (name, value) in headers {
        if let Ok(header) = tiny_http::Header::from_bytes(name.as_bytes(), value) {
            response.add_header(header);
        }
    }
    let _ = request.respond(response);
}

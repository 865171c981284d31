//! Ingest throughput of `tollgate serve` on SQLite: data points counted
//! exactly once per second, over HTTP with bearer tokens, for Claude
//! Code-sized requests (4 points) and for large batches, and for the
//! store's batch write alone. Opt-in, because it needs a release build
//! and the machine to itself:
//!
//! ```sh
//! cargo test --release -p tollgate-backend --test ingest_throughput -- --ignored --nocapture
//! ```
//!
//! The load generator runs in the same process as the issuer and shares
//! the machine's cores with the server. Next to points per second, each
//! run prints the CPU time per point of the server process and of the
//! load generator, read from `/proc/PID/stat`, which depend less on other
//! load on the machine than the rate does.

// The measurement is printed for `--nocapture`.
#![allow(clippy::print_stdout)]

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    metric::Data, number_data_point,
};
use prost::Message;
use tollgate_backend::ingest::batch::{PointValue, UsageBatch, UsageGroup, UsagePoint};
use tollgate_backend::store::Store;
use tollgate_backend::store::sqlite::SqliteStore;

use support::{AUDIENCE, SigningKey, TestIssuer, claims};

const TYPES: [&str; 4] = ["input", "output", "cacheRead", "cacheCreation"];

fn attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..Default::default()
    }
}

/// Builds one export request of `points` Claude Code-shaped points, all
/// distinct: each group of four types has its own end time.
fn export_body(request_index: usize, points: usize, json: bool) -> Vec<u8> {
    let base = u64::try_from(Utc::now().timestamp_nanos_opt().expect("now fits in i64"))
        .expect("now is after 1970")
        - 3_600_000_000_000;
    let session = format!("session-{request_index}");
    let data_points = (0..points)
        .map(|index| {
            let end = base + (index / 4) as u64 * 1_000 + request_index as u64;
            NumberDataPoint {
                attributes: vec![
                    attribute("user.id", "0000000000000000000000000000000000000000"),
                    attribute("session.id", &session),
                    attribute("anthropic.provider", "bedrock"),
                    attribute("terminal.type", "dumb"),
                    attribute("model", "us.anthropic.claude-sonnet-4-5-20250929-v1:0"),
                    attribute("query_source", "main"),
                    attribute("type", TYPES[index % 4]),
                ],
                start_time_unix_nano: end - 1_000_000,
                time_unix_nano: end,
                value: Some(number_data_point::Value::AsDouble(
                    ((index * 37) % 5000) as f64,
                )),
                ..Default::default()
            }
        })
        .collect();
    let request = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(opentelemetry_proto::tonic::resource::v1::Resource {
                attributes: vec![
                    attribute("service.name", "claude-code"),
                    attribute("service.version", "2.1.328"),
                ],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "claude_code.token.usage".to_owned(),
                    unit: "tokens".to_owned(),
                    data: Some(Data::Sum(Sum {
                        data_points,
                        aggregation_temporality: AggregationTemporality::Delta as i32,
                        is_monotonic: true,
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    if json {
        serde_json::to_vec(&request).expect("the request encodes as JSON")
    } else {
        request.encode_to_vec()
    }
}

/// Returns the user and system CPU time of process `pid` (`self` for this
/// process) in seconds, from `/proc/PID/stat`.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat reads");
    // The fields after the command name, which is in parentheses and may
    // contain spaces: state is the first, utime the 12th and stime the 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("the stat line has a command name")
        .1
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().expect("utime is a number")
        + fields[12].parse::<f64>().expect("stime is a number");
    ticks / clock_ticks_per_second()
}

fn clock_ticks_per_second() -> f64 {
    let output = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .expect("getconf runs");
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .expect("CLK_TCK is a number")
}

/// Reads the one-minute load average from `/proc/loadavg`.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| text.split_whitespace().next().unwrap_or("?").to_owned())
        .unwrap_or_else(|_| "?".to_owned())
}

struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(folder: &Path, issuer: &str) -> Self {
        let port_file = folder.join("port");
        let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["serve", "--listen", "127.0.0.1:0", "--port-file"])
            .arg(&port_file)
            .env("TOLLGATE_DB", folder.join("tollgate.db"))
            .env("TOLLGATE_ISSUER", issuer)
            .env("TOLLGATE_AUDIENCE", AUDIENCE)
            .env("TOLLGATE_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("tollgate serve starts");
        let deadline = Instant::now() + Duration::from_secs(30);
        let address = loop {
            if let Ok(address) = std::fs::read_to_string(&port_file) {
                break address;
            }
            assert!(child.try_wait().expect("status").is_none(), "serve exited");
            assert!(Instant::now() < deadline, "no port file after 30 s");
            std::thread::sleep(Duration::from_millis(20));
        };
        Self {
            child,
            url: format!("http://{}/v1/metrics", address.trim()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// Sends every body once over `connections` concurrent clients and
/// returns the elapsed time.
async fn send_all(
    url: &str,
    token: &str,
    bodies: Vec<Vec<u8>>,
    json: bool,
    connections: usize,
) -> Duration {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .build()
        .expect("the client builds");
    let content_type = if json {
        "application/json"
    } else {
        "application/x-protobuf"
    };
    let queue = Arc::new(std::sync::Mutex::new(bodies));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..connections {
        let client = client.clone();
        let queue = Arc::clone(&queue);
        let url = url.to_owned();
        let token = token.to_owned();
        workers.push(tokio::spawn(async move {
            loop {
                let Some(body) = queue.lock().expect("the lock is free").pop() else {
                    return;
                };
                let response = client
                    .post(&url)
                    .bearer_auth(&token)
                    .header("Content-Type", content_type)
                    .body(body)
                    .send()
                    .await
                    .expect("the export is answered");
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                assert!(status.is_success(), "{status}: {text}");
                assert!(!text.contains("rejected"), "{text}");
            }
        }));
    }
    for worker in workers {
        worker.await.expect("a worker finishes");
    }
    started.elapsed()
}

async fn run_http(name: &str, requests: usize, points: usize, json: bool, connections: usize) {
    // INGEST_BENCH=TEXT runs only the measurements whose name contains
    // TEXT, such as `4-point` for a profile of small requests.
    if std::env::var("INGEST_BENCH").is_ok_and(|only| !name.contains(only.as_str())) {
        return;
    }
    let key = SigningKey::rsa("rsa-1");
    let issuer = TestIssuer::start(&[&key]).await;
    let folder = tempfile::tempdir().expect("a temporary folder");
    let server = Server::start(folder.path(), &issuer.url);
    let user = format!("bench-{requests}-{points}@example.com");
    let token = key.sign(&claims(&issuer.url, &user));
    let bodies: Vec<Vec<u8>> = (0..requests)
        .map(|index| export_body(index, points, json))
        .collect();
    let bytes: usize = bodies.iter().map(Vec::len).sum();
    let server_pid = server.child.id().to_string();
    let load_before = load_average();
    let server_cpu = cpu_seconds(&server_pid);
    let client_cpu = cpu_seconds("self");
    let elapsed = send_all(&server.url, &token, bodies.clone(), json, connections).await;
    let server_cpu = cpu_seconds(&server_pid) - server_cpu;
    let client_cpu = cpu_seconds("self") - client_cpu;
    let total = (requests * points) as f64;
    println!(
        "{name}: {requests} requests × {points} points ({:.1} MB) over {connections} connections \
         in {:.2} s: {:.0} points/s, {:.0} requests/s; server CPU {:.2} µs/point \
         ({:.0} points per CPU second), load generator and issuer CPU {:.2} µs/point; \
         load average {load_before} before, {} after",
        bytes as f64 / 1e6,
        elapsed.as_secs_f64(),
        total / elapsed.as_secs_f64(),
        requests as f64 / elapsed.as_secs_f64(),
        server_cpu * 1e6 / total,
        total / server_cpu.max(1e-9),
        client_cpu * 1e6 / total,
        load_average()
    );
    // Everything again: all duplicates, nothing more counted.
    let again = send_all(&server.url, &token, bodies, json, connections).await;
    println!(
        "{name}, re-delivered: {:.0} points/s",
        total / again.as_secs_f64()
    );
    let store = SqliteStore::open(&folder.path().join("tollgate.db")).expect("the store opens");
    let models = store
        .model_usage(&user, Utc::now() - chrono::Duration::hours(1))
        .await
        .expect("model usage reads");
    let counted: u64 = models.iter().map(|row| row.tokens).sum();
    let mut expected = 0u64;
    for _ in 0..requests {
        for index in 0..points {
            expected += ((index * 37) % 5000) as u64;
        }
    }
    // Points near midnight may fall on the next day; the check is then
    // skipped rather than wrong.
    if (Utc::now() - chrono::Duration::hours(1)).date_naive() == Utc::now().date_naive() {
        assert_eq!(counted, expected, "{name}: exactly once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run with --release -- --ignored --nocapture"]
async fn ingest_throughput() {
    run_http("protobuf, 5,000-point batches", 60, 5_000, false, 2).await;
    run_http("JSON, 5,000-point batches", 20, 5_000, true, 2).await;
    run_http("protobuf, 4-point requests", 10_000, 4, false, 8).await;
    run_http("protobuf, 4-point requests", 20_000, 4, false, 32).await;
    run_http("JSON, 4-point requests", 10_000, 4, true, 32).await;
    run_http("protobuf, 4-point requests", 60_000, 4, false, 128).await;
    store_throughput().await;
    group_throughput("store alone, 4-point batches in groups of 32", 2_000, 32, 4).await;
}

/// Builds a Claude Code-shaped delta point. Its identity is unique for
/// each `serial`.
fn store_point(serial: u64, index: usize, end: chrono::DateTime<Utc>) -> UsagePoint {
    let mut digest = [0u8; 32];
    // Identities start with the end time, as ingest builds them.
    digest[..8].copy_from_slice(&serial.to_be_bytes());
    digest[8..16].copy_from_slice(&serial.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes());
    UsagePoint {
        id: digest,
        end,
        type_name: TYPES[index % 4].to_owned(),
        counted_as: TYPES[index % 4].parse().ok(),
        model: "us.anthropic.claude-sonnet-4-5-20250929-v1:0".to_owned(),
        value: PointValue::Delta(7),
    }
}

/// Measures the group write of the ingest writer alone: `groups` groups
/// of `per_group` batches of `per_batch` points, each batch from one of 16
/// users, as the ingest writer groups them when many requests wait. Prints
/// the rate and the CPU time per point of this process, which does nothing
/// else meanwhile.
async fn group_throughput(name: &str, groups: usize, per_group: usize, per_batch: usize) {
    if std::env::var("INGEST_BENCH").is_ok_and(|only| !name.contains(only.as_str())) {
        return;
    }
    let folder = tempfile::tempdir().expect("a temporary folder");
    let store = SqliteStore::open(&folder.path().join("store.db")).expect("the store opens");
    let now = Utc::now();
    let mut serial = 0u64;
    let all_groups: Vec<UsageGroup> = (0..groups)
        .map(|_| UsageGroup {
            batches: (0..per_group)
                .map(|batch| UsageBatch {
                    user: format!("store-{}@example.com", batch % 16),
                    points: (0..per_batch)
                        .map(|index| {
                            serial += 1;
                            store_point(serial, index, now)
                        })
                        .collect(),
                    alerting: None,
                })
                .collect(),
            prune: None,
        })
        .collect();

    let cpu_before = cpu_seconds("self");
    let started = Instant::now();
    for group in all_groups {
        let outcome = store
            .record_usage_group(group)
            .await
            .expect("the group is recorded");
        for batch in outcome.batches {
            assert_eq!(batch.expect("the batch is recorded").recorded, per_batch);
        }
    }
    let elapsed = started.elapsed();
    let cpu = cpu_seconds("self") - cpu_before;

    let points = groups * per_group * per_batch;
    println!(
        "{name}: {groups} groups in {:.2} s: {:.0} points/s, CPU {:.2} µs/point; \
         load average {}",
        elapsed.as_secs_f64(),
        points as f64 / elapsed.as_secs_f64(),
        cpu * 1e6 / points as f64,
        load_average()
    );
}

/// Measures the store's batch write alone, without HTTP, tokens or decoding.
async fn store_throughput() {
    let folder = tempfile::tempdir().expect("a temporary folder");
    let store = SqliteStore::open(&folder.path().join("store.db")).expect("the store opens");
    let now = Utc::now();
    let batches = 100;
    let per_batch = 5_000;
    let mut id = 0u64;
    let started = Instant::now();
    for _ in 0..batches {
        let points = (0..per_batch)
            .map(|index| {
                id += 1;
                let mut digest = [0u8; 32];
                // Identities start with the end time, as ingest builds them.
                digest[..8].copy_from_slice(&id.to_be_bytes());
                digest[8..16]
                    .copy_from_slice(&id.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes());
                UsagePoint {
                    id: digest,
                    end: now,
                    type_name: TYPES[index % 4].to_owned(),
                    counted_as: TYPES[index % 4].parse().ok(),
                    model: "m".to_owned(),
                    value: PointValue::Delta(7),
                }
            })
            .collect();
        store
            .record_usage_points(&UsageBatch {
                user: "store@example.com".to_owned(),
                points,
                alerting: None,
            })
            .await
            .expect("the batch is recorded");
    }
    let elapsed = started.elapsed();
    println!(
        "store alone: {batches} batches × {per_batch} points in {:.2} s: {:.0} points/s",
        elapsed.as_secs_f64(),
        (batches * per_batch) as f64 / elapsed.as_secs_f64()
    );
}

//! Logs at every level carry the route and the rejection reason but never
//! the bearer token.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::json;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use support::{Backend, SigningKey, TestIssuer, claims};

/// A log sink shared between the subscriber and the test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log lock").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn logs_never_contain_tokens() {
    let captured = Captured::default();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new("trace"))
        .with_writer(captured.clone())
        .with_ansi(false)
        .init();

    let key = SigningKey::rsa("rsa-1");
    let issuer = TestIssuer::start(&[&key]).await;
    let backend = Backend::start(&issuer.url).await;

    let valid = key.sign(&claims(&issuer.url, "logged@example.com"));
    let mut expired_claims = claims(&issuer.url, "logged@example.com");
    expired_claims["exp"] = json!(chrono::Utc::now().timestamp() - 3600);
    let expired = key.sign(&expired_claims);
    let impostor = SigningKey::rsa("rsa-1").sign(&claims(&issuer.url, "logged@example.com"));

    assert_eq!(backend.check(&valid).await.0, 200);
    assert_eq!(backend.check(&expired).await.0, 401);
    assert_eq!(backend.check(&impostor).await.0, 401);

    let logs = String::from_utf8(captured.0.lock().expect("log lock").clone()).expect("UTF-8 logs");
    assert!(
        logs.contains("/v1/check"),
        "the request span names the route"
    );
    assert!(logs.contains("expired"), "the rejection reason is logged");
    assert!(
        logs.contains("bad_signature"),
        "the rejection reason is logged"
    );
    for token in [&valid, &expired, &impostor] {
        for (index, part) in token.split('.').enumerate() {
            assert!(
                !logs.contains(part),
                "part {index} of a token is in the logs"
            );
        }
    }
}

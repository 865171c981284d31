//! ID tokens that a test controls: an RSA signing key, a minimal issuer
//! that publishes its discovery document and JWKS on 127.0.0.1, and
//! helpers to build, alter and inspect compact JWTs.
//!
//! The backend's token checks are tested against tokens from here that are
//! wrong in exactly one way (issuer, audience, expiry, signature, `alg`),
//! next to a control token that is right in every way.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

/// An RS256 signing key with a key id.
pub struct SigningKey {
    key_pair: KeyPair,
    kid: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Generates a 2048-bit RSA key.
    pub fn generate(kid: &str) -> Result<Self> {
        let key_pair = KeyPair::generate(KeySize::Rsa2048)
            .map_err(|_| anyhow!("failed to generate an RSA key"))?;
        Ok(Self {
            key_pair,
            kid: kid.to_owned(),
        })
    }

    /// Returns the key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Returns the public key as a JWK.
    pub fn public_jwk(&self) -> Value {
        let public = self.key_pair.public_key();
        json!({
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": self.kid,
            "n": URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero()),
            "e": URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero()),
        })
    }

    /// Signs `claims` with RS256 under a header carrying this key's id.
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_with_header(
            &json!({ "alg": "RS256", "typ": "JWT", "kid": self.kid }),
            claims,
        )
    }

    /// Signs `claims` with RS256 under `header` as given, whatever its `alg`
    /// field names.
    pub fn sign_with_header(&self, header: &Value, claims: &Value) -> String {
        let signing_input = format!("{}.{}", encode_part(header), encode_part(claims));
        let mut signature = vec![0; self.key_pair.public_modulus_len()];
        self.key_pair
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                signing_input.as_bytes(),
                &mut signature,
            )
            .expect("signing with a freshly generated RSA key succeeds");
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }
}

/// Returns the standard claims of an ID token for `email`, valid from now
/// for `lifetime_seconds` (negative for an expired token).
pub fn id_token_claims(issuer: &str, audience: &str, email: &str, lifetime_seconds: i64) -> Value {
    let now = chrono::Utc::now().timestamp();
    let (issued_at, expires_at) = if lifetime_seconds >= 0 {
        (now, now + lifetime_seconds)
    } else {
        // An expired token was issued before it expired.
        (now + lifetime_seconds - 600, now + lifetime_seconds)
    };
    json!({
        "iss": issuer,
        "aud": audience,
        "sub": email,
        "email": email,
        "email_verified": true,
        "iat": issued_at,
        "exp": expires_at,
    })
}

/// Returns an unsigned token (`alg: none`, empty signature part).
pub fn unsigned_token(claims: &Value) -> String {
    format!(
        "{}.{}.",
        encode_part(&json!({ "alg": "none", "typ": "JWT" })),
        encode_part(claims)
    )
}

/// Returns the token's decoded header.
pub fn header_of(token: &str) -> Result<Value> {
    decode_part(token, 0)
}

/// Returns the token's decoded claims.
pub fn claims_of(token: &str) -> Result<Value> {
    decode_part(token, 1)
}

/// Returns `token` with its claims replaced and its header and signature
/// kept, so the signature no longer matches.
pub fn replace_claims(token: &str, claims: &Value) -> Result<String> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(signature)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(anyhow!("not a compact JWT with three parts"));
    };
    Ok(format!("{header}.{}.{signature}", encode_part(claims)))
}

fn encode_part(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).expect("a JSON value always serializes"))
}

fn decode_part(token: &str, index: usize) -> Result<Value> {
    let part = token
        .split('.')
        .nth(index)
        .with_context(|| format!("the token has no part {index}"))?;
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .with_context(|| format!("part {index} of the token is not base64url"))?;
    serde_json::from_slice(&bytes).with_context(|| format!("part {index} of the token is not JSON"))
}

/// A minimal OIDC issuer on 127.0.0.1 that publishes a discovery document
/// and a JWKS with the test's public keys, and nothing else.
pub struct TestIssuer {
    url: String,
    server: Arc<tiny_http::Server>,
    stopping: Arc<AtomicBool>,
    worker: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for TestIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestIssuer")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl TestIssuer {
    /// Starts the issuer on a free port, publishing `keys` (public JWKs).
    pub fn start(keys: Vec<Value>) -> Result<Self> {
        let server = tiny_http::Server::http("127.0.0.1:0")
            .map_err(|error| anyhow!("failed to start the test issuer: {error}"))?;
        let port = server
            .server_addr()
            .to_ip()
            .context("the test issuer is not listening on an IP address")?
            .port();
        let url = format!("http://127.0.0.1:{port}");
        let discovery = json!({
            "issuer": url,
            "authorization_endpoint": format!("{url}/auth"),
            "token_endpoint": format!("{url}/token"),
            "jwks_uri": format!("{url}/jwks"),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        })
        .to_string();
        let jwks = json!({ "keys": keys }).to_string();

        let server = Arc::new(server);
        let stopping = Arc::new(AtomicBool::new(false));
        let worker = {
            let server = Arc::clone(&server);
            let stopping = Arc::clone(&stopping);
            thread::spawn(move || {
                while !stopping.load(Ordering::SeqCst) {
                    let request = match server.recv_timeout(Duration::from_millis(200)) {
                        Ok(Some(request)) => request,
                        Ok(None) => continue,
                        Err(_) => break,
                    };
                    let body = match request.url() {
                        "/.well-known/openid-configuration" => Some(discovery.clone()),
                        "/jwks" => Some(jwks.clone()),
                        _ => None,
                    };
                    let response = match body {
                        Some(body) => tiny_http::Response::from_string(body).with_header(
                            tiny_http::Header::from_bytes("Content-Type", "application/json")
                                .expect("a static header is valid"),
                        ),
                        None => tiny_http::Response::from_string("not found").with_status_code(404),
                    };
                    let _ = request.respond(response);
                }
            })
        };
        Ok(Self {
            url,
            server,
            stopping,
            worker: Some(worker),
        })
    }

    /// Returns the issuer URL.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for TestIssuer {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.server.unblock();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

//! AWS STS `AssumeRoleWithWebIdentity`: exchanging the ID token for role
//! credentials, and the RoleSessionName derived from the identity.
//!
//! The SDK client is built with no credentials provider at all: the call is
//! unsigned, and the agent must never resolve AWS credentials of its own
//! (which could run the Tollgate shim and call the agent again).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

use aws_config::{BehaviorVersion, Region};
use chrono::{DateTime, Utc};
use tollgate_protocol::Secret;

use crate::cache::session::StsCredentials;

/// A boxed future, so the STS client can be swapped for a fake in tests.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One `AssumeRoleWithWebIdentity` call.
#[derive(Debug, Clone)]
pub struct AssumeRoleRequest {
    pub role_arn: String,
    pub session_name: String,
    pub web_identity_token: Secret,
    pub duration_seconds: i32,
    pub region: String,
    pub endpoint: Option<String>,
}

/// A failed STS call, with the role and region in the message.
#[derive(Debug, thiserror::Error)]
#[error("STS AssumeRoleWithWebIdentity for `{role_arn}` in {region} failed: {cause}")]
pub struct StsError {
    pub role_arn: String,
    pub region: String,
    pub cause: String,
}

/// Exchanges an ID token for role credentials.
pub trait StsApi: Send + Sync {
    fn assume_role(
        &self,
        request: AssumeRoleRequest,
    ) -> BoxFuture<'_, Result<StsCredentials, StsError>>;
}

/// The real STS client, one SDK client per region and endpoint.
#[derive(Default)]
pub struct AwsSts {
    clients: Mutex<HashMap<(String, Option<String>), aws_sdk_sts::Client>>,
}

impl AwsSts {
    async fn client(&self, region: &str, endpoint: Option<&str>) -> aws_sdk_sts::Client {
        let key = (region.to_string(), endpoint.map(str::to_string));
        if let Some(client) = self
            .clients
            .lock()
            .expect("STS client cache lock")
            .get(&key)
        {
            return client.clone();
        }
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .no_credentials()
            .region(Region::new(region.to_string()));
        if let Some(endpoint) = endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        let client = aws_sdk_sts::Client::new(&loader.load().await);
        self.clients
            .lock()
            .expect("STS client cache lock")
            .insert(key, client.clone());
        client
    }
}

impl StsApi for AwsSts {
    fn assume_role(
        &self,
        request: AssumeRoleRequest,
    ) -> BoxFuture<'_, Result<StsCredentials, StsError>> {
        Box::pin(async move {
            let error = |cause: String| StsError {
                role_arn: request.role_arn.clone(),
                region: request.region.clone(),
                cause,
            };
            let client = self
                .client(&request.region, request.endpoint.as_deref())
                .await;
            tracing::debug!(role_arn = %request.role_arn, session_name = %request.session_name, duration_seconds = request.duration_seconds, "calling STS AssumeRoleWithWebIdentity");
            let output = client
                .assume_role_with_web_identity()
                .role_arn(&request.role_arn)
                .role_session_name(&request.session_name)
                .web_identity_token(request.web_identity_token.expose())
                .duration_seconds(request.duration_seconds)
                .send()
                .await
                .map_err(|sdk_error| {
                    error(aws_sdk_sts::error::DisplayErrorContext(&sdk_error).to_string())
                })?;
            let credentials = output
                .credentials()
                .ok_or_else(|| error("the response has no Credentials".to_string()))?;
            let expiration = DateTime::<Utc>::from_timestamp(
                credentials.expiration().secs(),
                credentials.expiration().subsec_nanos(),
            )
            .ok_or_else(|| error("the response's Expiration is out of range".to_string()))?;
            Ok(StsCredentials {
                access_key_id: credentials.access_key_id().to_string(),
                secret_access_key: Secret::new(credentials.secret_access_key()),
                session_token: Secret::new(credentials.session_token()),
                expiration,
                assumed_role_arn: output
                    .assumed_role_user()
                    .map(|user| user.arn().to_string()),
            })
        })
    }
}

/// Derives the RoleSessionName from the identity claim's value.
///
/// STS accepts 2 to 64 characters from `[A-Za-z0-9_+=,.@-]`. Each other
/// character (including every non-ASCII one) becomes `-`, the result is cut
/// to 64 characters, and a result shorter than 2 characters is prefixed with
/// `user-`. An email such as `Ana.Diaz@example.com` is kept as is. Two
/// identities that differ only in replaced characters, or beyond the 64th
/// character, map to the same session name.
pub fn session_name(identity: &str) -> String {
    let mut name: String = identity
        .chars()
        .map(|character| {
            if character.is_ascii_alphanumeric() || "_+=,.@-".contains(character) {
                character
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if name.len() < 2 {
        name.insert_str(0, "user-");
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(name: &str) -> bool {
        (2..=64).contains(&name.len())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c))
    }

    #[test]
    fn email_kept() {
        assert_eq!(
            session_name("Ana.Diaz+bedrock@example.com"),
            "Ana.Diaz+bedrock@example.com"
        );
    }

    #[test]
    fn disallowed_characters_replaced() {
        assert_eq!(session_name("ana diaz/ops:1"), "ana-diaz-ops-1");
        assert_eq!(session_name("josé@example.com"), "jos-@example.com");
        assert_eq!(session_name("a=b,c_d"), "a=b,c_d");
    }

    #[test]
    fn long_identity_cut_to_64() {
        let name = session_name(&"x".repeat(100));
        assert_eq!(name.len(), 64);
    }

    #[test]
    fn short_identity_prefixed() {
        assert_eq!(session_name("a"), "user-a");
        assert_eq!(session_name(""), "user-");
    }

    #[test]
    fn results_always_allowed() {
        for identity in [
            "",
            "a",
            "€€€",
            "名前@例え.jp",
            "a b",
            &"é".repeat(80),
            "ok@example.com",
        ] {
            let name = session_name(identity);
            assert!(allowed(&name), "{identity:?} -> {name:?}");
        }
    }
}

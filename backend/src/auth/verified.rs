//! A cache of tokens that passed validation, so that a client sending the
//! same ID token again skips the signature check and claim parsing.
//!
//! Entries are keyed by the SHA-256 of the whole token, so only the exact
//! token that was verified hits. An entry is used only until the token's
//! `exp` plus the leeway, and only while the JWKS it was verified against
//! is the current one: a new download of the key set (at most hourly, or
//! on an unknown key id) makes every entry miss, so a key the issuer
//! withdrew stops being trusted at the next download. The cache holds at
//! most [`MAX_ENTRIES`] tokens and is emptied when full.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use aws_lc_rs::digest::{SHA256, digest};

use super::Caller;

/// The maximum number of cached tokens. Each entry takes a few hundred
/// bytes, so a full cache stays in the tens of megabytes.
pub const MAX_ENTRIES: usize = 100_000;

/// The SHA-256 of a token.
pub type TokenDigest = [u8; 32];

/// Hashes a token for the cache.
pub fn token_digest(token: &str) -> TokenDigest {
    let hash = digest(&SHA256, token.as_bytes());
    let mut bytes = [0u8; 32];
    bytes.copy_from_slice(hash.as_ref());
    bytes
}

struct Entry {
    caller: Caller,
    /// The Unix time after which the token is expired, leeway included.
    valid_until: i64,
    /// The download time of the key set the token was verified with.
    key_set: Option<Instant>,
}

/// Tokens that passed validation.
#[derive(Default)]
pub struct VerifiedTokens {
    entries: Mutex<HashMap<TokenDigest, Entry>>,
}

impl std::fmt::Debug for VerifiedTokens {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("VerifiedTokens")
            .finish_non_exhaustive()
    }
}

impl VerifiedTokens {
    /// Returns the caller of a verified token that is still valid at `now`
    /// (Unix seconds) and was verified against the key set `key_set`.
    pub fn get(&self, token: &TokenDigest, now: i64, key_set: Option<Instant>) -> Option<Caller> {
        let entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        entries
            .get(token)
            .filter(|entry| now <= entry.valid_until && entry.key_set == key_set)
            .map(|entry| entry.caller.clone())
    }

    /// Records a token verified against `key_set` as valid until
    /// `valid_until` (Unix seconds).
    pub fn insert(
        &self,
        token: TokenDigest,
        caller: Caller,
        valid_until: i64,
        key_set: Option<Instant>,
    ) {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(
            token,
            Entry {
                caller,
                valid_until,
                key_set,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use tollgate_quota::Identity;

    use super::*;

    fn caller() -> Caller {
        Caller {
            identity: Identity::parse("a@example.com").expect("valid"),
            groups: vec!["eng".to_owned()],
        }
    }

    #[test]
    fn entry_expires_and_follows_key_set() {
        let cache = VerifiedTokens::default();
        let token = token_digest("header.claims.signature");
        let key_set = Some(Instant::now());
        cache.insert(token, caller(), 1_000, key_set);

        assert_eq!(cache.get(&token, 1_000, key_set), Some(caller()));
        assert_eq!(cache.get(&token, 1_001, key_set), None, "expired");
        assert_eq!(cache.get(&token, 999, None), None, "another key set");
        let other = token_digest("header.claims.signaturf");
        assert_eq!(cache.get(&other, 999, key_set), None, "another token");
    }

    #[test]
    fn full_cache_starts_over() {
        let cache = VerifiedTokens::default();
        for index in 0..MAX_ENTRIES {
            cache.insert(token_digest(&index.to_string()), caller(), 10, None);
        }
        let first = token_digest("0");
        assert!(cache.get(&first, 0, None).is_some());
        cache.insert(token_digest("one more"), caller(), 10, None);
        assert!(cache.get(&first, 0, None).is_none(), "emptied when full");
        assert!(cache.get(&token_digest("one more"), 0, None).is_some());
    }
}

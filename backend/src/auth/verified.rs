//! A cache of tokens that passed validation, so that a client sending the
//! same ID token again skips the signature check and claim parsing.
//!
//! Entries are keyed by the SHA-256 of the whole token, so only the exact
//! token that was verified hits. An entry is used only until the token's
//! `exp` plus the leeway, and only while the JWKS key it was verified with
//! is still published. The caller passes a check of the key's serial, and
//! a JWKS download that no longer lists a key removes that key's entries
//! ([`VerifiedTokens::remove_keys`]). The cache contains at most
//! [`MAX_ENTRIES`] tokens and is emptied when full.

use std::collections::HashMap;
use std::sync::Mutex;

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
    /// The serial of the JWKS key the token was verified with.
    key: u64,
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
    /// (Unix seconds) and whose key serial passes `key_is_current`.
    pub fn get(
        &self,
        token: &TokenDigest,
        now: i64,
        key_is_current: impl FnOnce(u64) -> bool,
    ) -> Option<Caller> {
        let entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        entries
            .get(token)
            .filter(|entry| now <= entry.valid_until && key_is_current(entry.key))
            .map(|entry| entry.caller.clone())
    }

    /// Records a token verified with the key `key` as valid until
    /// `valid_until` (Unix seconds).
    pub fn insert(&self, token: TokenDigest, caller: Caller, valid_until: i64, key: u64) {
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
                key,
            },
        );
    }

    /// Removes every entry verified with one of `keys` and returns how many
    /// were removed.
    pub fn remove_keys(&self, keys: &[u64]) -> usize {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = entries.len();
        entries.retain(|_, entry| !keys.contains(&entry.key));
        before - entries.len()
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
    fn entry_expires_and_follows_key() {
        let cache = VerifiedTokens::default();
        let token = token_digest("header.claims.signature");
        cache.insert(token, caller(), 1_000, 7);

        assert_eq!(cache.get(&token, 1_000, |key| key == 7), Some(caller()));
        assert_eq!(cache.get(&token, 1_001, |key| key == 7), None, "expired");
        assert_eq!(
            cache.get(&token, 999, |key| key == 8),
            None,
            "key no longer current"
        );
        let other = token_digest("header.claims.signaturf");
        assert_eq!(cache.get(&other, 999, |_| true), None, "another token");
    }

    #[test]
    fn removed_key_drops_its_entries() {
        let cache = VerifiedTokens::default();
        let (first, second, third) = (token_digest("a"), token_digest("b"), token_digest("c"));
        cache.insert(first, caller(), 10, 1);
        cache.insert(second, caller(), 10, 2);
        cache.insert(third, caller(), 10, 1);

        assert_eq!(cache.remove_keys(&[1]), 2, "both entries of key 1");
        assert!(cache.get(&first, 0, |_| true).is_none(), "first dropped");
        assert!(cache.get(&third, 0, |_| true).is_none(), "third dropped");
        assert!(cache.get(&second, 0, |_| true).is_some(), "key 2 kept");
    }

    #[test]
    fn full_cache_starts_over() {
        let cache = VerifiedTokens::default();
        for index in 0..MAX_ENTRIES {
            cache.insert(token_digest(&index.to_string()), caller(), 10, 1);
        }
        let first = token_digest("0");
        assert!(cache.get(&first, 0, |_| true).is_some());
        cache.insert(token_digest("one more"), caller(), 10, 1);
        assert!(
            cache.get(&first, 0, |_| true).is_none(),
            "emptied when full"
        );
        assert!(cache.get(&token_digest("one more"), 0, |_| true).is_some());
    }
}

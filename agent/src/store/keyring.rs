//! The OS keyring through `keyring-core` and one store crate per backend.
//!
//! Each profile's session is one JSON value under service `tollgate`. A
//! backend with a size limit per entry gets the value split into numbered
//! parts: the main entry then contains `chunked:N` and the parts are under
//! `KEY#0` to `KEY#N-1`. Session JSON always starts with `{`, so the marker
//! cannot be mistaken for a value.

use std::sync::Arc;

use keyring_core::{CredentialStore, Entry, Error as KeyringError};
use tollgate_protocol::Secret;

use super::{SecretStore, StoreError};

/// The keyring service name of every Tollgate entry.
pub const SERVICE: &str = "tollgate";

const CHUNK_MARKER: &str = "chunked:";

/// A `keyring-core` store behind [`SecretStore`].
pub struct KeyringStore {
    name: &'static str,
    store: Arc<CredentialStore>,
    /// The largest value, in UTF-8 bytes, that one entry takes.
    max_value_bytes: Option<usize>,
}

impl KeyringStore {
    pub fn new(
        name: &'static str,
        store: Arc<CredentialStore>,
        max_value_bytes: Option<usize>,
    ) -> Self {
        Self {
            name,
            store,
            max_value_bytes,
        }
    }

    fn entry(&self, key: &str) -> Result<Entry, StoreError> {
        Entry::new_in_store(&self.store, SERVICE, key)
            .map_err(|error| self.error("open", key, &error))
    }

    fn error(&self, operation: &'static str, key: &str, error: &KeyringError) -> StoreError {
        StoreError {
            store: self.name,
            operation,
            key: key.to_string(),
            cause: error.to_string(),
        }
    }

    fn get(&self, key: &str) -> Result<Option<String>, StoreError> {
        match self.entry(key)?.get_password() {
            Ok(value) => Ok(Some(value)),
            Err(KeyringError::NoEntry) => Ok(None),
            Err(error) => Err(self.error("read", key, &error)),
        }
    }

    fn set(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.entry(key)?
            .set_password(value)
            .map_err(|error| self.error("write", key, &error))
    }

    fn remove(&self, key: &str) -> Result<(), StoreError> {
        match self.entry(key)?.delete_credential() {
            Ok(()) | Err(KeyringError::NoEntry) => Ok(()),
            Err(error) => Err(self.error("delete", key, &error)),
        }
    }

    fn chunk_count(value: &str) -> Option<usize> {
        value.strip_prefix(CHUNK_MARKER)?.parse().ok()
    }
}

fn part_key(key: &str, index: usize) -> String {
    format!("{key}#{index}")
}

/// Splits `value` into parts of at most `max_bytes` bytes, on character
/// boundaries.
fn split(value: &str, max_bytes: usize) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut rest = value;
    while !rest.is_empty() {
        let mut end = rest.len().min(max_bytes);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let (part, tail) = rest.split_at(end);
        parts.push(part);
        rest = tail;
    }
    parts
}

impl SecretStore for KeyringStore {
    fn name(&self) -> &'static str {
        self.name
    }

    fn load(&self, key: &str) -> Result<Option<Secret>, StoreError> {
        let Some(value) = self.get(key)? else {
            return Ok(None);
        };
        let Some(count) = Self::chunk_count(&value) else {
            return Ok(Some(Secret::new(value)));
        };
        let mut joined = String::new();
        for index in 0..count {
            let part_key = part_key(key, index);
            let part = self.get(&part_key)?.ok_or_else(|| StoreError {
                store: self.name,
                operation: "read",
                key: part_key.clone(),
                cause: format!("part {index} of {count} is missing; run `tollgate-agent logout` to clear the entry"),
            })?;
            joined.push_str(&part);
        }
        Ok(Some(Secret::new(joined)))
    }

    fn save(&self, key: &str, value: &Secret) -> Result<(), StoreError> {
        let old_count = self.get(key)?.as_deref().and_then(Self::chunk_count);
        let value = value.expose();
        let new_count = match self.max_value_bytes {
            Some(max) if value.len() > max => {
                let parts = split(value, max);
                for (index, part) in parts.iter().enumerate() {
                    self.set(&part_key(key, index), part)?;
                }
                self.set(key, &format!("{CHUNK_MARKER}{}", parts.len()))?;
                parts.len()
            }
            _ => {
                self.set(key, value)?;
                0
            }
        };
        for index in new_count..old_count.unwrap_or(0) {
            self.remove(&part_key(key, index))?;
        }
        Ok(())
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        if let Some(count) = self.get(key)?.as_deref().and_then(Self::chunk_count) {
            for index in 0..count {
                self.remove(&part_key(key, index))?;
            }
        }
        self.remove(key)
    }
}

/// Writes, reads back and deletes a probe entry, so a store that connects
/// but cannot store (a locked keyring, a missing session keyring) is skipped.
pub fn probe(store: &dyn SecretStore) -> Result<(), StoreError> {
    let key = format!("probe-{}", std::process::id());
    let value = Secret::new(format!(
        "probe value {}",
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
    ));
    store.save(&key, &value)?;
    let read = store.load(&key);
    store.delete(&key)?;
    match read? {
        Some(read) if read == value => Ok(()),
        _ => Err(StoreError {
            store: store.name(),
            operation: "read back",
            key,
            cause: "the value read back differs from the one written".to_string(),
        }),
    }
}

/// A store that may be tried: its name and the store, or why it is not
/// available at all on this machine.
pub type Candidate = (&'static str, Result<Arc<dyn SecretStore>, String>);

/// The stores to try, best first.
#[cfg(target_os = "linux")]
pub fn candidates() -> Vec<Candidate> {
    let secret_service = zbus_secret_service_keyring_store::Store::new()
        .map(|store| {
            Arc::new(KeyringStore::new("secret-service", store, None)) as Arc<dyn SecretStore>
        })
        .map_err(|error| format!("no Secret Service on the session bus: {error}"));
    let keyutils = linux_keyutils_keyring_store::Store::new()
        .map(|store| Arc::new(KeyringStore::new("keyutils", store, None)) as Arc<dyn SecretStore>)
        .map_err(|error| format!("the kernel keyring is not available: {error}"));
    vec![("secret-service", secret_service), ("keyutils", keyutils)]
}

/// The stores to try, best first.
///
/// NOTE: built for macOS but not compiled or tested from this repository.
#[cfg(target_os = "macos")]
pub fn candidates() -> Vec<Candidate> {
    vec![(
        "macos-keychain",
        apple_native_keyring_store::keychain::Store::new()
            .map(|store| {
                Arc::new(KeyringStore::new("macos-keychain", store, None)) as Arc<dyn SecretStore>
            })
            .map_err(|error| format!("the login keychain is not available: {error}")),
    )]
}

/// The stores to try, best first. Credential Manager entries contain at most
/// 2,560 bytes of UTF-16, so values are split into parts of 1,200 UTF-8
/// bytes (at most 1,200 UTF-16 units, 2,400 bytes).
///
/// NOTE: built for Windows but not compiled or tested from this repository.
#[cfg(target_os = "windows")]
pub fn candidates() -> Vec<Candidate> {
    vec![(
        "windows-credential-manager",
        windows_native_keyring_store::Store::new()
            .map(|store| {
                Arc::new(KeyringStore::new(
                    "windows-credential-manager",
                    store,
                    Some(1200),
                )) as Arc<dyn SecretStore>
            })
            .map_err(|error| format!("the Windows Credential Manager is not available: {error}")),
    )]
}

#[cfg(not(any(target_os = "linux", target_os = "macos", target_os = "windows")))]
pub fn candidates() -> Vec<Candidate> {
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mock_store(max: Option<usize>) -> KeyringStore {
        KeyringStore::new("mock", keyring_core::mock::Store::new().unwrap(), max)
    }

    #[test]
    fn split_respects_char_boundaries() {
        assert_eq!(split("abcdef", 4), ["abcd", "ef"]);
        assert_eq!(split("ééé", 3), ["é", "é", "é"]);
        assert!(split("", 4).is_empty());
    }

    #[test]
    fn round_trip_unsplit() {
        let store = mock_store(None);
        store.save("profile:a", &Secret::new("{\"x\":1}")).unwrap();
        assert_eq!(
            store.load("profile:a").unwrap().unwrap().expose(),
            "{\"x\":1}"
        );
        store.delete("profile:a").unwrap();
        assert!(store.load("profile:a").unwrap().is_none());
    }

    #[test]
    fn long_value_split_and_joined() {
        let store = mock_store(Some(10));
        let value = format!("{{{}}}", "y".repeat(35));
        store
            .save("profile:a", &Secret::new(value.clone()))
            .unwrap();
        assert_eq!(
            store.get("profile:a").unwrap().as_deref(),
            Some("chunked:4")
        );
        assert_eq!(
            store.get("profile:a#3").unwrap().as_deref(),
            Some("yyyyyy}")
        );
        assert_eq!(store.load("profile:a").unwrap().unwrap().expose(), value);

        // A shorter value removes the parts it no longer needs.
        store.save("profile:a", &Secret::new("{short}")).unwrap();
        assert!(store.get("profile:a#0").unwrap().is_none());
        assert_eq!(
            store.load("profile:a").unwrap().unwrap().expose(),
            "{short}"
        );

        store.save("profile:a", &Secret::new(value)).unwrap();
        store.delete("profile:a").unwrap();
        assert!(store.get("profile:a").unwrap().is_none());
        assert!(store.get("profile:a#1").unwrap().is_none());
    }

    #[test]
    fn probe_passes_on_working_store() {
        probe(&mock_store(None)).unwrap();
    }
}

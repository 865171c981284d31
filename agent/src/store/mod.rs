//! Where the agent keeps tokens and credentials between runs.
//!
//! [`SecretStore`] is a small blocking key-value interface over the OS
//! keyring. [`select`] picks the first store that works on this machine:
//! on Linux the Secret Service, then the kernel keyring (keyutils), then
//! memory only. [`MemoryStore`] is both the memory-only fallback and the
//! test double (a test can make it fail).

pub mod keyring;

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tollgate_protocol::Secret;

/// A failed store operation.
#[derive(Debug, thiserror::Error)]
#[error("the {store} secret store failed to {operation} `{key}`: {cause}")]
pub struct StoreError {
    pub store: &'static str,
    pub operation: &'static str,
    pub key: String,
    pub cause: String,
}

/// A blocking key-value store for secrets. Call it from a blocking thread.
pub trait SecretStore: Send + Sync {
    /// The store's name as `status` shows it: `secret-service`, `keyutils`,
    /// `memory`, `macos-keychain` or `windows-credential-manager`.
    fn name(&self) -> &'static str;
    /// Returns the value under `key`, or `None` when there is none.
    fn load(&self, key: &str) -> Result<Option<Secret>, StoreError>;
    fn save(&self, key: &str, value: &Secret) -> Result<(), StoreError>;
    /// Removes `key`; removing a missing key succeeds.
    fn delete(&self, key: &str) -> Result<(), StoreError>;
}

/// A store in process memory. Tests can make every operation fail.
#[derive(Default)]
pub struct MemoryStore {
    values: Mutex<HashMap<String, Secret>>,
    failing: AtomicBool,
    saves: AtomicUsize,
}

impl MemoryStore {
    /// Makes every later operation fail (`true`) or work again (`false`).
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// Returns the number of successful saves so far.
    pub fn save_count(&self) -> usize {
        self.saves.load(Ordering::SeqCst)
    }

    fn fail_if_told(&self, operation: &'static str, key: &str) -> Result<(), StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError {
                store: self.name(),
                operation,
                key: key.to_string(),
                cause: "the test told the store to fail".to_string(),
            });
        }
        Ok(())
    }
}

impl SecretStore for MemoryStore {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn load(&self, key: &str) -> Result<Option<Secret>, StoreError> {
        self.fail_if_told("read", key)?;
        Ok(self
            .values
            .lock()
            .expect("memory store lock")
            .get(key)
            .cloned())
    }

    fn save(&self, key: &str, value: &Secret) -> Result<(), StoreError> {
        self.fail_if_told("write", key)?;
        self.values
            .lock()
            .expect("memory store lock")
            .insert(key.to_string(), value.clone());
        self.saves.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.fail_if_told("delete", key)?;
        self.values.lock().expect("memory store lock").remove(key);
        Ok(())
    }
}

/// The environment variable that picks the store: `auto` (the default),
/// `memory`, or a store name such as `secret-service` or `keyutils`.
pub const STORE_ENV: &str = "TOLLGATE_SECRET_STORE";

/// The chosen store and the reason, for the one log line that reports it.
pub struct Selection {
    pub store: std::sync::Arc<dyn SecretStore>,
    pub reason: String,
}

/// Picks the store. With `preference` `None` or `auto`, the first store
/// that passes a probe (a write, a read and a delete) wins, else memory.
/// A named store must pass its probe, or the error states why it did not.
/// Blocking: D-Bus calls to the Secret Service may take a moment.
pub fn select(preference: Option<&str>) -> Result<Selection, String> {
    let preference = preference
        .map(str::trim)
        .filter(|name| !name.is_empty() && *name != "auto");
    if preference == Some("memory") {
        return Ok(Selection {
            store: std::sync::Arc::new(MemoryStore::default()),
            reason: format!("{STORE_ENV}=memory; caching secrets in memory only"),
        });
    }
    let candidates = keyring::candidates();
    if let Some(wanted) = preference {
        let names: Vec<&str> = candidates.iter().map(|(name, _)| *name).collect();
        let Some((_, candidate)) = candidates.into_iter().find(|(name, _)| *name == wanted) else {
            return Err(format!(
                "{STORE_ENV}={wanted} is not a store of this build; use auto, memory or one of: {}",
                names.join(", ")
            ));
        };
        let store = candidate.map_err(|cause| {
            format!("{STORE_ENV}={wanted}, but {cause}; unset it to pick a store automatically")
        })?;
        keyring::probe(store.as_ref()).map_err(|error| {
            format!("{STORE_ENV}={wanted}, but {error}; unset it to pick a store automatically")
        })?;
        return Ok(Selection {
            store,
            reason: format!("using the {wanted} secret store ({STORE_ENV}={wanted})"),
        });
    }
    let mut skipped = Vec::new();
    for (_, candidate) in candidates {
        match candidate {
            Ok(store) => match keyring::probe(store.as_ref()) {
                Ok(()) => {
                    let reason = if skipped.is_empty() {
                        format!("using the {} secret store", store.name())
                    } else {
                        format!(
                            "using the {} secret store ({})",
                            store.name(),
                            skipped.join("; ")
                        )
                    };
                    return Ok(Selection { store, reason });
                }
                Err(error) => skipped.push(error.to_string()),
            },
            Err(unavailable) => skipped.push(unavailable),
        }
    }
    let reason = if skipped.is_empty() {
        "no OS keyring store is built for this platform; caching secrets in memory only".to_string()
    } else {
        format!("{}; caching secrets in memory only", skipped.join("; "))
    };
    Ok(Selection {
        store: std::sync::Arc::new(MemoryStore::default()),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_store_round_trip_and_failure() {
        let store = MemoryStore::default();
        assert!(store.load("a").unwrap().is_none());
        store.save("a", &Secret::new("value")).unwrap();
        assert_eq!(store.load("a").unwrap().unwrap().expose(), "value");
        store.set_failing(true);
        let error = store.load("a").unwrap_err().to_string();
        assert!(error.contains("failed to read `a`"), "{error}");
        store.set_failing(false);
        store.delete("a").unwrap();
        assert!(store.load("a").unwrap().is_none());
    }

    #[test]
    fn memory_preference_honoured() {
        let selection = select(Some("memory")).unwrap();
        assert_eq!(selection.store.name(), "memory");
        assert!(selection.reason.contains("TOLLGATE_SECRET_STORE=memory"));
    }

    #[test]
    fn unknown_store_named() {
        let message = select(Some("floppy")).err().unwrap();
        assert!(
            message.contains("TOLLGATE_SECRET_STORE=floppy is not a store of this build"),
            "{message}"
        );
    }
}

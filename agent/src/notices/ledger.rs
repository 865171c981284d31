//! The record of notices already shown, kept in a JSON file so that each
//! threshold of each limit and period is announced once, across agent
//! restarts.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One notice's identity: user, period, the period's reset time (which
/// names the period instance) and the threshold percent (100 for the limit).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NoticeKey {
    pub user: String,
    pub period: String,
    pub resets_at: DateTime<Utc>,
    pub threshold: u8,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct LedgerFile {
    sent: BTreeSet<NoticeKey>,
}

/// The set of sent notices and the file it is saved in.
#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    sent: BTreeSet<NoticeKey>,
}

impl Ledger {
    /// Reads the ledger at `path`. A missing file is an empty ledger; an
    /// unreadable one is logged and replaced on the next save.
    pub fn load(path: PathBuf) -> Self {
        let sent = match std::fs::read_to_string(&path) {
            Ok(text) => match serde_json::from_str::<LedgerFile>(&text) {
                Ok(file) => file.sent,
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "the notice record is not valid JSON; starting a new one");
                    BTreeSet::new()
                }
            },
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "could not read the notice record; starting a new one");
                BTreeSet::new()
            }
        };
        Self { path, sent }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether a notice for `key`'s period at the same or a higher
    /// threshold was sent.
    pub fn covers(&self, key: &NoticeKey) -> bool {
        self.sent.iter().any(|sent| {
            sent.user == key.user
                && sent.period == key.period
                && sent.resets_at == key.resets_at
                && sent.threshold >= key.threshold
        })
    }

    /// Adds keys, drops those of periods that have ended, and saves the
    /// file. A failed save is logged: the notice may then repeat after a
    /// restart, which is better than losing it.
    pub fn record(&mut self, keys: impl IntoIterator<Item = NoticeKey>, now: DateTime<Utc>) {
        self.sent.extend(keys);
        self.sent.retain(|key| key.resets_at > now);
        let file = LedgerFile {
            sent: self.sent.clone(),
        };
        let text = serde_json::to_string_pretty(&file).expect("the notice record serializes");
        let result = self
            .path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&self.path, text));
        if let Err(error) = result {
            tracing::warn!(path = %self.path.display(), %error, "could not save the notice record");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(threshold: u8, resets_at: &str) -> NoticeKey {
        NoticeKey {
            user: "ana@example.com".into(),
            period: "monthly".into(),
            resets_at: resets_at.parse().unwrap(),
            threshold,
        }
    }

    #[test]
    fn survives_reload_and_prunes_ended_periods() {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("state/notices.json");
        let now: DateTime<Utc> = "2026-12-04T12:00:00Z".parse().unwrap();
        let mut ledger = Ledger::load(path.clone());
        ledger.record(
            [
                key(80, "2027-01-01T00:00:00Z"),
                key(90, "2026-12-01T00:00:00Z"),
            ],
            now,
        );
        let reloaded = Ledger::load(path);
        assert!(reloaded.covers(&key(80, "2027-01-01T00:00:00Z")));
        assert!(!reloaded.covers(&key(90, "2026-12-01T00:00:00Z")));
        assert!(!reloaded.covers(&key(90, "2027-01-01T00:00:00Z")));
        assert!(!reloaded.covers(&key(80, "2027-02-01T00:00:00Z")));
    }

    #[test]
    fn higher_threshold_covers_lower() {
        let folder = tempfile::tempdir().unwrap();
        let now: DateTime<Utc> = "2026-12-04T12:00:00Z".parse().unwrap();
        let mut ledger = Ledger::load(folder.path().join("notices.json"));
        ledger.record([key(90, "2027-01-01T00:00:00Z")], now);
        assert!(ledger.covers(&key(80, "2027-01-01T00:00:00Z")));
        assert!(!ledger.covers(&key(100, "2027-01-01T00:00:00Z")));
    }

    #[test]
    fn invalid_file_starts_empty() {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("notices.json");
        std::fs::write(&path, "{not json").unwrap();
        let ledger = Ledger::load(path);
        assert!(!ledger.covers(&key(80, "2027-01-01T00:00:00Z")));
    }
}

//! Telling the user about their quota without being asked: desktop
//! notifications when usage crosses 80 % and 90 % of a limit and when a
//! limit is reached, and the local status page, opened in the browser for
//! the first notice of each threshold and period.
//!
//! Everything here runs off the credential request's path: [`Notices::observe`]
//! only updates memory and spawns the work, so a slow notification server
//! or browser never delays the credentials.

pub mod desktop;
pub mod ledger;
pub mod page;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tollgate_protocol::check::{CheckAnswer, Enforcement, PeriodUsage};

use crate::config::Profile;
use crate::login::method::Session;
use crate::quota::{self, format_tokens};
use crate::quota_view::{self, percent_used};
use ledger::{Ledger, NoticeKey};
use page::{PageEntry, StatusPage};

/// The threshold value of a notice about a reached limit.
pub const LIMIT_THRESHOLD: u8 = 100;

/// One notice to show.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub key: NoticeKey,
    pub summary: String,
    pub body: String,
    /// Whether access is refused (a block), for the notification urgency.
    pub blocked: bool,
}

/// Returns the notice for the highest threshold a period has reached:
/// the limit, else the policy's highest warning threshold reached (the
/// backend's `warning_threshold`, 80 and 90 unless the policy sets others).
fn period_notice(
    profile: &Profile,
    answer: &CheckAnswer,
    period: &str,
    usage: &PeriodUsage,
    now: DateTime<Utc>,
) -> Option<Notice> {
    let percent = percent_used(usage)?;
    let limit = usage.limit?;
    let highest = if percent >= f64::from(LIMIT_THRESHOLD) {
        LIMIT_THRESHOLD
    } else {
        usage.warning_threshold?
    };
    let key = NoticeKey {
        user: answer.user.clone(),
        period: period.to_string(),
        resets_at: usage.resets_at,
        threshold: highest,
    };
    let used = format!(
        "{} of {} tokens ({percent:.0}%) used {}; the limit resets {}.",
        format_tokens(usage.tokens),
        format_tokens(limit),
        if period == "daily" {
            "today"
        } else {
            "this month"
        },
        quota_view::time_with_distance(usage.resets_at, now)
    );
    let blocks = usage.enforcement == Some(Enforcement::Block);
    let (summary, advice, blocked) = if highest == 100 && !answer.allowed && blocks {
        (
            format!("Claude Code is blocked: the {period} Tollgate limit is reached"),
            quota::blocked_message(&profile.name, profile.support_contact.as_deref(), answer),
            true,
        )
    } else if highest == 100 && answer.unblock.is_some() {
        let until = answer
            .unblock
            .as_ref()
            .map(|unblock| unblock.expires_at.format("%Y-%m-%d %H:%M UTC").to_string())
            .unwrap_or_default();
        (
            format!("The {period} Tollgate limit is reached; you are unblocked until {until}"),
            "Access continues until the unblock ends.".to_string(),
            false,
        )
    } else if highest == 100 {
        (
            format!("The {period} Tollgate limit is reached"),
            "This limit only alerts, so access continues; your administrator is told too."
                .to_string(),
            false,
        )
    } else {
        let then = if blocks {
            "Claude Code is blocked at the limit"
        } else {
            "the limit only alerts"
        };
        (
            format!("{highest}% of your {period} Tollgate limit is used"),
            format!("{then}; `tollgate-agent status` shows the details."),
            false,
        )
    };
    // The block explanation already names the usage, the limit and the
    // reset.
    let body = if blocked {
        advice
    } else {
        format!("{used} {advice}")
    };
    Some(Notice {
        key,
        summary,
        body,
        blocked,
    })
}

/// Returns the notices an answer calls for that `ledger` does not cover.
/// A notice covers lower thresholds of the same period, so a jump from
/// 70 % to 95 % shows one notice, and falling back below a threshold
/// after an unblock shows none.
pub fn due_notices(
    profile: &Profile,
    answer: &CheckAnswer,
    ledger: &Ledger,
    now: DateTime<Utc>,
) -> Vec<Notice> {
    [
        ("daily", &answer.usage.daily),
        ("monthly", &answer.usage.monthly),
    ]
    .into_iter()
    .filter_map(|(period, usage)| period_notice(profile, answer, period, usage, now))
    .filter(|notice| !ledger.covers(&notice.key))
    .collect()
}

/// Sends desktop notifications and opens the status page.
pub struct Notices {
    ledger: Mutex<Ledger>,
    page: StatusPage,
    session: Session,
    desktop: desktop::Desktop,
}

impl Notices {
    /// Creates the notifier with its record at `ledger_path`. The status
    /// page's server starts on first use.
    pub fn new(ledger_path: PathBuf) -> Self {
        let session = Session::current();
        tracing::debug!(session = session.describe(), ledger = %ledger_path.display(), "notices set up");
        Self {
            ledger: Mutex::new(Ledger::load(ledger_path)),
            page: StatusPage::default(),
            session,
            desktop: desktop::Desktop::default(),
        }
    }

    /// The default record path: `$XDG_STATE_HOME/tollgate/notices.json`.
    pub fn default_ledger_path() -> PathBuf {
        crate::logging::log_path().with_file_name("notices.json")
    }

    /// Returns the status page's URL, starting its server if needed.
    pub fn page_url(&self) -> std::io::Result<String> {
        self.page.url()
    }

    /// Records a quota answer for the status page and shows what is due.
    /// Returns at once; the notifications and the browser run on blocking
    /// threads.
    pub fn observe(&self, profile: &Profile, answer: &CheckAnswer) {
        let blocked_message = (!answer.allowed).then(|| {
            quota::blocked_message(&profile.name, profile.support_contact.as_deref(), answer)
        });
        self.page.update(
            &profile.name,
            PageEntry {
                answer: answer.clone(),
                blocked_message,
            },
        );
        let now = Utc::now();
        let notices = {
            let mut ledger = self.ledger.lock().expect("ledger lock is never poisoned");
            let notices = due_notices(profile, answer, &ledger, now);
            if !notices.is_empty() {
                ledger.record(notices.iter().map(|notice| notice.key.clone()), now);
            }
            notices
        };
        if notices.is_empty() {
            return;
        }
        for notice in &notices {
            tracing::info!(profile = %profile.name, user = %answer.user, period = %notice.key.period, threshold = notice.key.threshold, "showing a quota notice");
            self.desktop
                .show(notice.summary.clone(), notice.body.clone(), notice.blocked);
        }
        if self.session.is_desktop() {
            match self.page.url() {
                Ok(url) => open_page(url),
                Err(error) => {
                    tracing::warn!(%error, "could not start the status page server")
                }
            }
        } else {
            tracing::debug!(
                session = self.session.describe(),
                "not opening the status page outside a desktop session"
            );
        }
    }
}

impl Notices {
    /// Shows the device code login's instructions (the verification URL
    /// and the user code) as a notification, for users who do not watch
    /// the terminal that started the request.
    pub fn show_login_prompt(&self, profile: &str, message: &str) {
        self.desktop.show(
            format!("Tollgate login for profile {profile}"),
            message.to_string(),
            false,
        );
    }
}

fn open_page(url: String) {
    std::thread::spawn(move || match crate::login::browser::open_url(&url) {
        Ok(()) => tracing::debug!("opened the status page"),
        Err(error) => tracing::warn!(%error, "could not open the status page in a browser"),
    });
}

/// Shared handle used by the agent.
pub type SharedNotices = Arc<Notices>;

#[cfg(test)]
mod tests;

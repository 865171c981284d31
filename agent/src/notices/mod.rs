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
///
/// Both need a graphical display ([`Session::has_display`]). In a headless
/// session (no `DISPLAY` or `WAYLAND_DISPLAY`, or over SSH) the agent neither
/// opens the page nor tries a notification, and the user sees the quota
/// state in the shim's messages and `tollgate-agent status`.
pub struct Notices {
    ledger: Mutex<Ledger>,
    page: StatusPage,
    session: Session,
    has_display: bool,
    desktop: desktop::Desktop,
}

impl Notices {
    /// Creates the notifier with its record at `ledger_path`. The status
    /// page's server starts on first use.
    pub fn new(ledger_path: PathBuf) -> Self {
        let session = Session::current();
        let has_display = Session::has_display(|name| std::env::var_os(name));
        tracing::debug!(session = session.describe(), has_display, ledger = %ledger_path.display(), "notices set up");
        Self {
            ledger: Mutex::new(Ledger::load(ledger_path)),
            page: StatusPage::default(),
            session,
            has_display,
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
        if !self.has_display {
            // Not recorded as shown, so the notices come once the agent
            // runs with a display.
            tracing::debug!(
                session = self.session.describe(),
                "no graphical display, so no quota notification and no status page"
            );
            return;
        }
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
        match self.page.url() {
            Ok(url) => open_page(url),
            Err(error) => {
                tracing::warn!(%error, "could not start the status page server")
            }
        }
    }
}

impl Notices {
    /// Shows the device code login's instructions (the verification URL
    /// and the user code) as a notification, for users who do not watch
    /// the terminal that started the request.
    pub fn show_login_prompt(&self, profile: &str, message: &str) {
        if !self.has_display {
            tracing::debug!(
                profile,
                session = self.session.describe(),
                "no graphical display, so no login notification"
            );
            return;
        }
        self.desktop.show(
            format!("Tollgate login for profile {profile}"),
            message.to_string(),
            false,
        );
    }
}

fn open_page(url: String) {
    std::thread::spawn(move || {
        let page = redact_page_url(&url);
        match crate::login::browser::open_url(&url) {
            Ok(()) => tracing::debug!(%page, "opened the status page"),
            Err(error) => {
                // The opener's error quotes the command line, URL included.
                let error = error.to_string().replace(&url, &page);
                tracing::warn!(%page, %error, "could not open the status page in a browser");
            }
        }
    });
}

/// Returns the status page URL with its secret last path segment replaced,
/// so that it can be logged.
pub fn redact_page_url(url: &str) -> String {
    match url.rsplit_once('/') {
        Some((base, _)) => format!("{base}/[redacted]"),
        None => "[redacted]".to_string(),
    }
}

/// Shared handle used by the agent.
pub type SharedNotices = Arc<Notices>;

#[cfg(test)]
mod tests;

//! Opening the login URL in the user's browser.
//!
//! `$BROWSER` (the first entry of a colon-separated list) is run with the
//! URL as its only argument when set; otherwise the `open` crate picks the
//! desktop's opener (`xdg-open` first on Linux).

use std::ffi::OsString;

use crate::progress::Progress;

/// Opens `url`, blocking until the opener exits.
pub fn open_url(url: &str) -> std::io::Result<()> {
    match browser_command(std::env::var_os("BROWSER")) {
        Some(browser) => open::with(url, browser),
        None => open::that(url),
    }
}

fn browser_command(value: Option<OsString>) -> Option<String> {
    let value = value?.into_string().ok()?;
    value
        .split(':')
        .map(str::trim)
        .find(|entry| !entry.is_empty())
        .map(str::to_string)
}

/// Opens `url` on a blocking thread and sends the client a progress note
/// when that failed.
/// The login goes on either way, because the user can open the URL from the
/// progress note.
pub fn open_in_background(url: String, profile: String, progress: Progress) {
    tokio::task::spawn_blocking(move || match open_url(&url) {
        Ok(()) => tracing::debug!(profile = %profile, "the browser opener finished"),
        Err(error) => {
            // The opener's error quotes the URL, whose query carries the
            // login's state and PKCE challenge.
            let endpoint = url
                .split_once('?')
                .map_or(url.as_str(), |(endpoint, _)| endpoint);
            let logged = error.to_string().replace(&url, endpoint);
            tracing::warn!(profile = %profile, error = %logged, "could not open a browser for the login");
            progress.send(
                format!("Could not open a browser ({error}); open the login URL above yourself."),
                None,
            );
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browser_variable_first_entry() {
        assert_eq!(
            browser_command(Some("/usr/bin/firefox:chromium".into())).as_deref(),
            Some("/usr/bin/firefox")
        );
        assert_eq!(browser_command(Some(":w3m".into())).as_deref(), Some("w3m"));
        assert_eq!(browser_command(Some("".into())), None);
        assert_eq!(browser_command(None), None);
    }
}

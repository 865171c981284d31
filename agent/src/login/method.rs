//! The choice between the browser login and the device code login.
//!
//! A browser login needs a browser on the machine the agent runs on. Over
//! SSH the browser would open on the remote machine (or not at all), and a
//! Linux session without `DISPLAY` or `WAYLAND_DISPLAY` has no graphical
//! browser, so `login = "auto"` picks the device code login there.

use std::ffi::OsString;

use crate::config::LoginMethod;

/// Why a login method was picked, for the log and `tollgate-agent doctor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Session {
    /// `SSH_CONNECTION`, `SSH_CLIENT` or `SSH_TTY` is set.
    Ssh,
    /// WSL (`WSL_DISTRO_NAME` is set) without `$BROWSER`.
    WslWithoutBrowser,
    /// Linux without `DISPLAY`, `WAYLAND_DISPLAY` or `$BROWSER`.
    NoDisplay,
    /// A desktop session, or `$BROWSER` names a browser.
    Desktop,
}

impl Session {
    /// Classifies the session from environment variables.
    pub fn detect(env: impl Fn(&str) -> Option<OsString>) -> Self {
        let set = |name: &str| env(name).is_some_and(|value| !value.is_empty());
        if set("SSH_CONNECTION") || set("SSH_CLIENT") || set("SSH_TTY") {
            return Session::Ssh;
        }
        if set("BROWSER") {
            return Session::Desktop;
        }
        if set("WSL_DISTRO_NAME") || set("WSL_INTEROP") {
            return Session::WslWithoutBrowser;
        }
        if cfg!(target_os = "linux") && !set("DISPLAY") && !set("WAYLAND_DISPLAY") {
            return Session::NoDisplay;
        }
        Session::Desktop
    }

    /// Returns whether the session has a graphical display for desktop
    /// notifications and the status page. That needs no SSH variables and,
    /// on Linux, `DISPLAY` or `WAYLAND_DISPLAY`. `$BROWSER` alone does not
    /// count, because on a headless machine it is often a text browser.
    pub fn has_display(env: impl Fn(&str) -> Option<OsString>) -> bool {
        let set = |name: &str| env(name).is_some_and(|value| !value.is_empty());
        if set("SSH_CONNECTION") || set("SSH_CLIENT") || set("SSH_TTY") {
            return false;
        }
        !cfg!(target_os = "linux") || set("DISPLAY") || set("WAYLAND_DISPLAY")
    }

    /// Classifies the agent's own environment.
    pub fn current() -> Self {
        Self::detect(|name| std::env::var_os(name))
    }

    /// Whether a browser can reach the user for a login. `$BROWSER` counts,
    /// because a text browser can finish a login on a headless machine.
    pub fn is_desktop(self) -> bool {
        self == Session::Desktop
    }

    pub fn describe(self) -> &'static str {
        match self {
            Session::Ssh => "an SSH session",
            Session::WslWithoutBrowser => "WSL without $BROWSER",
            Session::NoDisplay => "a session without DISPLAY or WAYLAND_DISPLAY",
            Session::Desktop => "a desktop session",
        }
    }
}

/// Whether a login for a profile with `method` uses the device code grant.
/// `requested` is true when the user asked for it (`login --device-code`).
pub fn use_device_code(method: LoginMethod, requested: bool, session: Session) -> bool {
    requested
        || match method {
            LoginMethod::DeviceCode => true,
            LoginMethod::Browser => false,
            LoginMethod::Auto => !session.is_desktop(),
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(vars: &[(&str, &str)]) -> Session {
        Session::detect(|name| {
            vars.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| OsString::from(value))
        })
    }

    #[test]
    fn ssh_wins_over_display() {
        let detected = session(&[
            ("SSH_CONNECTION", "10.0.0.1 5000 10.0.0.2 22"),
            ("DISPLAY", ":0"),
            ("BROWSER", "firefox"),
        ]);
        assert_eq!(detected, Session::Ssh);
    }

    #[test]
    fn browser_variable_is_desktop() {
        assert_eq!(session(&[("BROWSER", "w3m")]), Session::Desktop);
    }

    #[test]
    fn wsl_without_browser() {
        assert_eq!(
            session(&[("WSL_DISTRO_NAME", "Debian"), ("DISPLAY", ":0")]),
            Session::WslWithoutBrowser
        );
    }

    #[test]
    fn display_variables() {
        if cfg!(target_os = "linux") {
            assert_eq!(session(&[]), Session::NoDisplay);
            assert_eq!(session(&[("DISPLAY", "")]), Session::NoDisplay);
        }
        assert_eq!(session(&[("DISPLAY", ":0")]), Session::Desktop);
        assert_eq!(
            session(&[("WAYLAND_DISPLAY", "wayland-0")]),
            Session::Desktop
        );
    }

    fn display(vars: &[(&str, &str)]) -> bool {
        Session::has_display(|name| {
            vars.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| OsString::from(value))
        })
    }

    #[test]
    fn display_needs_no_ssh() {
        assert!(display(&[("DISPLAY", ":0")]));
        assert!(display(&[("WAYLAND_DISPLAY", "wayland-0")]));
        assert!(!display(&[("DISPLAY", ":0"), ("SSH_TTY", "/dev/pts/1")]));
        if cfg!(target_os = "linux") {
            assert!(!display(&[("BROWSER", "/usr/bin/w3m")]));
            assert!(!display(&[]));
        }
    }

    #[test]
    fn method_choice() {
        assert!(use_device_code(LoginMethod::Auto, false, Session::Ssh));
        assert!(!use_device_code(LoginMethod::Auto, false, Session::Desktop));
        assert!(use_device_code(LoginMethod::Auto, true, Session::Desktop));
        assert!(use_device_code(
            LoginMethod::DeviceCode,
            false,
            Session::Desktop
        ));
        assert!(!use_device_code(LoginMethod::Browser, false, Session::Ssh));
        assert!(use_device_code(LoginMethod::Browser, true, Session::Ssh));
    }
}

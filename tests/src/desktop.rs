//! [`Desktop`]: a private desktop session for notification and browser
//! tests: a D-Bus session bus on a socket in the test's folder, an Xvfb
//! display, and dunst as the notification server, printing each
//! notification it receives to its log and keeping it on screen until it
//! is closed, so a test can take a screenshot.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::process::{Service, wait_for};

/// How long each of the three programs may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// dunst's settings (dunst 1.9): a readable font and width for
/// screenshots, and no timeout, so every notification stays on screen
/// until it is closed.
const DUNSTRC: &str = r##"[global]
    width = 520
    height = 300
    origin = top-right
    offset = 24x24
    notification_limit = 0
    font = DejaVu Sans 12
    line_height = 2
    padding = 14
    horizontal_padding = 16
    frame_width = 2
    frame_color = "#8ea4c0"
    gap_size = 10
    separator_height = 0
    markup = full
    format = "<b>%s</b>\n%b"
    alignment = left
    ellipsize = end
    icon_position = off
    show_age_threshold = -1
    stack_duplicates = false
    sticky_history = yes

[urgency_low]
    background = "#2e3440"
    foreground = "#eceff4"
    timeout = 0

[urgency_normal]
    background = "#2e3440"
    foreground = "#eceff4"
    timeout = 0

[urgency_critical]
    background = "#5c1f1f"
    foreground = "#ffffff"
    frame_color = "#e06c6c"
    timeout = 0
"##;

/// One notification as `dunst -print` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrintedNotification {
    pub appname: String,
    pub summary: String,
    pub body: String,
}

/// The running bus, display and notification server. Dropping it stops
/// them by their PIDs (dunst first).
#[derive(Debug)]
pub struct Desktop {
    dunst: Service,
    _xvfb: Service,
    _bus: Service,
    bus_address: String,
    display: String,
}

impl Desktop {
    /// Starts the session with its logs and sockets in `dir`.
    pub fn start(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("failed to create {}", dir.display()))?;
        let socket = dir.join("bus");
        let mut bus = Command::new("dbus-daemon");
        bus.args(["--session", "--nofork", "--nopidfile", "--print-address=1"])
            .arg(format!("--address=unix:path={}", socket.display()));
        let (bus, rest) =
            Service::spawn_until_line("dbus-daemon", bus, dir, "unix:", START_TIMEOUT)
                .context("failed to start a private D-Bus session bus (apt package dbus)")?;
        let bus_address = format!("unix:{rest}");

        // -displayfd makes Xvfb pick a free display and print its number.
        let mut xvfb = Command::new("Xvfb");
        // -br gives a black root window, which screenshots trim away.
        xvfb.args([
            "-br",
            "-nolisten",
            "tcp",
            "-screen",
            "0",
            "1024x768x24",
            "-displayfd",
            "1",
        ]);
        let (xvfb, number) = Service::spawn_until_line("xvfb", xvfb, dir, "", START_TIMEOUT)
            .context("failed to start Xvfb (apt package xvfb)")?;
        let display = format!(":{}", number.trim());

        let home = dir.join("home");
        std::fs::create_dir_all(&home)
            .with_context(|| format!("failed to create {}", home.display()))?;
        let dunstrc = dir.join("dunstrc");
        std::fs::write(&dunstrc, DUNSTRC)
            .with_context(|| format!("failed to write {}", dunstrc.display()))?;
        let mut dunst = Command::new("dunst");
        dunst
            .arg("-config")
            .arg(&dunstrc)
            .arg("-print")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", &home)
            .env("DISPLAY", &display)
            .env("DBUS_SESSION_BUS_ADDRESS", &bus_address);
        let dunst = Service::spawn("dunst", dunst, dir)
            .context("failed to start dunst (apt package dunst)")?;
        let desktop = Self {
            dunst,
            _xvfb: xvfb,
            _bus: bus,
            bus_address,
            display,
        };
        wait_for(
            "dunst to own org.freedesktop.Notifications",
            START_TIMEOUT,
            || desktop.notification_server_ready(),
        )?;
        Ok(desktop)
    }

    fn notification_server_ready(&self) -> Result<Option<()>> {
        let output = Command::new("dbus-send")
            .env("DBUS_SESSION_BUS_ADDRESS", &self.bus_address)
            .args([
                "--session",
                "--print-reply",
                "--dest=org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus.NameHasOwner",
                "string:org.freedesktop.Notifications",
            ])
            .output()
            .context("failed to run dbus-send")?;
        let reply = String::from_utf8_lossy(&output.stdout);
        Ok(reply.contains("boolean true").then_some(()))
    }

    /// The session bus address, for `DBUS_SESSION_BUS_ADDRESS`.
    pub fn bus_address(&self) -> &str {
        &self.bus_address
    }

    /// The X display, for `DISPLAY`.
    pub fn display(&self) -> &str {
        &self.display
    }

    /// Returns dunst's log file.
    pub fn dunst_log_path(&self) -> PathBuf {
        self.dunst.log_path().to_path_buf()
    }

    /// Returns the notifications dunst printed so far, oldest first.
    pub fn notifications(&self) -> Vec<PrintedNotification> {
        parse_dunst_print(&self.dunst.log())
    }

    /// Closes every notification on screen (`dunstctl close-all`).
    pub fn close_notifications(&self) -> Result<()> {
        let output = Command::new("dunstctl")
            .env("DBUS_SESSION_BUS_ADDRESS", &self.bus_address)
            .arg("close-all")
            .output()
            .context("failed to run dunstctl (apt package dunst)")?;
        if !output.status.success() {
            anyhow::bail!(
                "dunstctl close-all failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    /// Saves the part of the screen that is not black root window (the
    /// notifications) as a PNG at `path`, using ImageMagick's `import`,
    /// which `scripts/notification-screenshot.sh` installs.
    pub fn screenshot(&self, path: &Path) -> Result<()> {
        // Gives dunst time to draw the notification it has just printed.
        std::thread::sleep(Duration::from_millis(500));
        let output = Command::new("import")
            .arg("-display")
            .arg(&self.display)
            .args(["-window", "root", "-trim", "+repage"])
            .arg(path)
            .output()
            .context("failed to run import (apt package imagemagick)")?;
        if !output.status.success() {
            anyhow::bail!(
                "import failed to save {}: {}",
                path.display(),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }
}

/// Reads the `appname`, `summary` and `body` fields of each block that
/// `dunst -print` writes: one `{ ... }` block per notification, values in
/// single quotes, and nested `{ ... }` lists (such as `urls`) inside.
fn parse_dunst_print(log: &str) -> Vec<PrintedNotification> {
    let mut found = Vec::new();
    let mut current: Option<PrintedNotification> = None;
    let mut depth = 0usize;
    for line in log.lines() {
        let line = line.trim();
        if line.ends_with('{') {
            depth += 1;
            if depth == 1 {
                current = Some(PrintedNotification {
                    appname: String::new(),
                    summary: String::new(),
                    body: String::new(),
                });
            }
            continue;
        }
        if line == "}" {
            depth = depth.saturating_sub(1);
            if depth == 0 {
                found.extend(current.take());
            }
            continue;
        }
        if depth != 1 {
            continue;
        }
        let Some(notification) = current.as_mut() else {
            continue;
        };
        let Some((key, value)) = line.split_once(": ") else {
            continue;
        };
        let value = value.trim_matches('\'').to_owned();
        match key {
            "appname" => notification.appname = value,
            "summary" => notification.summary = value,
            "body" => notification.body = value,
            _ => {}
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dunst_blocks_parsed() {
        let log = "{\n    appname: 'Tollgate'\n    summary: '80% used'\n    body: 'resets soon'\n    urgency: NORMAL\n    urls:\n    {\n        http://127.0.0.1:5/device\n    }\n    actions: {}\n}\n{\n    appname: 'other'\n";
        let found = parse_dunst_print(log);
        assert_eq!(
            found,
            vec![PrintedNotification {
                appname: "Tollgate".into(),
                summary: "80% used".into(),
                body: "resets soon".into(),
            }]
        );
    }
}

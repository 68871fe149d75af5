//! The operating system's clock-synchronisation status (AUD-3), read at start-up and recorded in
//! the audit trail, so an auditor can tell whether the trail's times came from a synchronised
//! clock. Backward clock steps while running are detected by the store itself.

use std::fmt;
use std::path::Path;
use std::process::Command;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NtpStatus {
    Synchronized,
    Unsynchronized,
    /// The OS offers no way to tell (no systemd, e.g. in a container); the reason is given.
    Unknown(String),
}

impl fmt::Display for NtpStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NtpStatus::Synchronized => f.write_str("synchronized"),
            NtpStatus::Unsynchronized => f.write_str("unsynchronized"),
            NtpStatus::Unknown(why) => write!(f, "unknown ({why})"),
        }
    }
}

/// What `timedatectl show --property=NTPSynchronized --value` printed.
pub fn parse_timedatectl(stdout: &str) -> NtpStatus {
    match stdout.trim() {
        "yes" => NtpStatus::Synchronized,
        "no" => NtpStatus::Unsynchronized,
        other => NtpStatus::Unknown(format!("timedatectl said {:?}", other.chars().take(20).collect::<String>())),
    }
}

pub fn ntp_status() -> NtpStatus {
    match Command::new("timedatectl").args(["show", "--property=NTPSynchronized", "--value"]).output() {
        Ok(out) if out.status.success() => parse_timedatectl(&String::from_utf8_lossy(&out.stdout)),
        _ if Path::new("/run/systemd/timesync/synchronized").exists() => NtpStatus::Synchronized,
        _ => NtpStatus::Unknown("timedatectl is not available".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aud3_timedatectl_answers_map_to_a_status() {
        assert_eq!(parse_timedatectl("yes\n"), NtpStatus::Synchronized);
        assert_eq!(parse_timedatectl("no\n"), NtpStatus::Unsynchronized);
        assert!(matches!(parse_timedatectl(""), NtpStatus::Unknown(_)));
    }
}

//! A cursor file: one number — how far a forwarder has delivered the audit trail — replaced
//! atomically (temporary file, fsync, rename, fsync of the directory), so a crash leaves either
//! the old or the new value, never a torn one.

use std::io::Write;
use std::path::{Path, PathBuf};

/// A cursor file whose single line is `<prefix> <n>`.
#[derive(Clone, Debug)]
pub struct CursorFile {
    pub path: PathBuf,
    pub prefix: &'static str,
}

/// A cursor file that exists but cannot be read or is not a cursor.
#[derive(Debug, thiserror::Error)]
#[error("cursor file {}: {reason}", path.display())]
pub struct CursorError {
    pub path: PathBuf,
    pub reason: String,
}

impl CursorFile {
    /// The value; `0` when the file does not exist yet.
    pub fn read(&self) -> Result<u64, CursorError> {
        let bad = |reason: String| CursorError { path: self.path.clone(), reason };
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(bad(e.to_string())),
        };
        text.trim()
            .strip_prefix(self.prefix)
            .and_then(|n| n.trim().parse().ok())
            .ok_or_else(|| bad(format!("not a cursor (expected \"{} <number>\")", self.prefix)))
    }

    /// Replaces the value atomically and durably; creates the directory if needed.
    pub fn write(&self, n: u64) -> std::io::Result<()> {
        let dir = self.path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let tmp = self.path.with_extension("tmp");
        {
            let mut f = std::fs::File::create(&tmp)?;
            writeln!(f, "{} {n}", self.prefix)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        std::fs::File::open(dir)?.sync_all()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_and_garbage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let c = CursorFile { path: dir.path().join("sub/x.cursor"), prefix: "test-cursor/1" };
        assert_eq!(c.read().unwrap(), 0, "no file: from the start");
        c.write(4711).unwrap();
        assert_eq!(c.read().unwrap(), 4711);
        c.write(4712).unwrap();
        assert_eq!(c.read().unwrap(), 4712);
        assert!(!c.path.with_extension("tmp").exists());
        std::fs::write(&c.path, "12").unwrap();
        assert!(c.read().is_err());
        let other = CursorFile { path: c.path.clone(), prefix: "other/1" };
        c.write(5).unwrap();
        assert!(other.read().is_err(), "a cursor of another kind is not taken");
    }
}

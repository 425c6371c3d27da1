//! Writing output files so that every failure names the file. "No space left on device" alone
//! sends a user hunting through a run directory; "cannot write reports/x/events.jsonl: No space
//! left on device" says which disk filled up.

use std::io;
use std::path::Path;

/// An I/O error with the path it happened on, keeping its kind.
pub fn at(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("cannot write {}: {e}", path.display()))
}

/// `std::fs::write` whose error names the file.
pub fn write(path: &Path, bytes: impl AsRef<[u8]>) -> io::Result<()> {
    std::fs::write(path, bytes).map_err(|e| at(path, e))
}

/// [`write`] for secrets (a private key, a users file): created readable by the owner only,
/// never world-readable even for a moment.
pub fn write_private(path: &Path, bytes: impl AsRef<[u8]>) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| at(path, e))?;
    f.write_all(bytes.as_ref()).map_err(|e| at(path, e))
}

#[cfg(test)]
mod tests {
    #[test]
    fn secrets_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("users");
        super::write_private(&p, "a:b\n").unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "a:b\n");
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("missing-dir").join("summary.json");
        let e = super::write(&p, "x").unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
        assert!(e.to_string().contains(&p.display().to_string()), "{e}");
    }

    /// A full disk, when the machine has /dev/full: the error names the file and says why.
    #[test]
    fn a_full_disk_is_named() {
        let full = std::path::Path::new("/dev/full");
        if !full.exists() {
            eprintln!("skipped: no /dev/full on this machine");
            return;
        }
        let e = super::write(full, vec![0u8; 1 << 16]).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("/dev/full") && text.contains("No space left"), "{text}");
    }
}

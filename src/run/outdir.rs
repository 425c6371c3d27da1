//! The run directory a user names with `--out`: a previous run is never overwritten by
//! accident, and `--force` replaces only what is recognisably a previous run.

use std::path::{Path, PathBuf};

/// Why `--out DIR` cannot be used (`run` exits 2 with it, before anything starts).
#[derive(Debug, thiserror::Error)]
pub enum OutDirError {
    #[error("--out {0}: exists and is not a directory")]
    NotADirectory(PathBuf),
    #[error("--out {0}: {1}")]
    Unreadable(PathBuf, std::io::Error),
    #[error("--out {0} is not empty (a previous run?); choose a new directory, or pass --force to replace that run")]
    NotEmpty(PathBuf),
    #[error("--out {0}: --force replaces only a previous mailsurge run (a directory with its scenario.yaml); this one holds other files")]
    NotARun(PathBuf),
}

/// Checks `--out DIR`: fine when new or empty (`Ok(None)`). A non-empty one is refused unless
/// `force` and it holds a previous mailsurge run (its `scenario.yaml`); then it is returned,
/// for the caller to remove once the new run is known to start.
pub fn claim_out_dir(dir: &Path, force: bool) -> Result<Option<PathBuf>, OutDirError> {
    let empty = match std::fs::read_dir(dir) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            return Err(OutDirError::NotADirectory(dir.to_path_buf()))
        }
        Err(e) => return Err(OutDirError::Unreadable(dir.to_path_buf(), e)),
    };
    if empty {
        return Ok(None);
    }
    if !force {
        return Err(OutDirError::NotEmpty(dir.to_path_buf()));
    }
    if !dir.join("scenario.yaml").is_file() {
        return Err(OutDirError::NotARun(dir.to_path_buf()));
    }
    Ok(Some(dir.to_path_buf()))
}

//! What the unit tests share.

use std::path::PathBuf;

/// A directory removed on drop, even when the test fails.
pub(crate) struct Rm(PathBuf);

impl Drop for Rm {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `<tmp>/<prefix>-<tag>-<pid>`, emptied, with its guard.
pub(crate) fn tmp(prefix: &str, tag: &str) -> (PathBuf, Rm) {
    let d = std::env::temp_dir().join(format!("{prefix}-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    (d.clone(), Rm(d))
}

//! The two file-system idioms every satellite component needs, in one place:
//!
//! - **Atomic replacement** ([`write_atomic`], or [`stage`] + [`Staged::commit`] to replace
//!   several files only after all of them could be written): the new contents go to a
//!   temporary file in the target's directory (created `O_EXCL` by `tempfile`), get their
//!   mode and an `fsync`, then `rename(2)` over the target, so a reader sees the old file or
//!   the new one, never a torn one, and a crash leaves at most a `.satellite-*` temporary.
//! - **Exclusive advisory locks** ([`lock`], [`try_lock`]): `flock(2)` through std's
//!   [`File::lock`], on a lock file created 0600 without following a symlink. The lock is
//!   released when the returned [`File`] is dropped (or the process dies).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// New contents for a file, written and synced next to it but not yet in place.
#[derive(Debug)]
pub struct Staged {
    tmp: tempfile::NamedTempFile,
    target: PathBuf,
}

/// Writes `contents` with permission bits `mode` (e.g. `0o600` for secrets) to a temporary
/// file in `target`'s directory, which must exist. Dropping the [`Staged`] removes it.
///
/// # Errors
///
/// The I/O error of creating, writing, `chmod` or `fsync`; `target` has no parent.
pub fn stage(target: &Path, contents: &[u8], mode: u32) -> io::Result<Staged> {
    let dir = target
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".satellite-")
        .permissions(fs::Permissions::from_mode(mode))
        .tempfile_in(dir)?;
    tmp.write_all(contents)?;
    // The umask may have cleared bits the builder asked for.
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))?;
    tmp.as_file().sync_all()?;
    Ok(Staged {
        tmp,
        target: target.to_owned(),
    })
}

impl Staged {
    /// Renames the staged file over its target.
    ///
    /// # Errors
    ///
    /// The I/O error of `rename(2)`; the temporary file is removed then.
    pub fn commit(self) -> io::Result<()> {
        self.tmp
            .persist(&self.target)
            .map(drop)
            .map_err(|e| e.error)
    }

    /// The file this replaces.
    pub fn target(&self) -> &Path {
        &self.target
    }
}

/// Replaces `target` with `contents` (mode `mode`) atomically: [`stage`], then
/// [`Staged::commit`].
///
/// # Errors
///
/// As [`stage`] and [`Staged::commit`]; `target` is unchanged on error.
pub fn write_atomic(target: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    stage(target, contents, mode)?.commit()
}

fn open_lock_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// Takes the exclusive lock on `path` (created 0600 if missing; a symlink is refused),
/// waiting for other holders; held until the returned file is dropped.
///
/// # Errors
///
/// The I/O error of opening or locking `path`.
pub fn lock(path: &Path) -> io::Result<File> {
    let file = open_lock_file(path)?;
    file.lock()?;
    Ok(file)
}

/// Like [`lock`] without waiting: `Ok(None)` when another holder has it.
///
/// # Errors
///
/// The I/O error of opening or locking `path`.
pub fn try_lock(path: &Path) -> io::Result<Option<File>> {
    let file = open_lock_file(path)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(fs::TryLockError::WouldBlock) => Ok(None),
        Err(fs::TryLockError::Error(e)) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt as _;

    #[test]
    fn write_atomic_replaces_with_the_mode_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        fs::write(&path, "old").unwrap();
        let reader = File::open(&path).unwrap();
        write_atomic(&path, b"new", 0o600).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        // Replaced by rename: an open reader still has the old inode.
        assert_eq!(io::read_to_string(reader).unwrap(), "old");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn a_dropped_stage_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        drop(stage(&path, b"x", 0o644).unwrap());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        assert!(stage(&dir.path().join("missing/f"), b"x", 0o644).is_err());
    }

    #[test]
    fn locks_exclude_each_other_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let held = lock(&path).unwrap();
        assert!(try_lock(&path).unwrap().is_none());
        drop(held);
        assert!(try_lock(&path).unwrap().is_some());
        std::os::unix::fs::symlink(&path, dir.path().join("link")).unwrap();
        assert!(
            lock(&dir.path().join("link")).is_err(),
            "followed a symlink"
        );
    }
}

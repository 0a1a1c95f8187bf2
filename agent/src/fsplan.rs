//! A set of files to write, shown as a diff (`--dry-run`) or applied atomically.
//!
//! Apply writes every changed file to a temporary file beside its target first (right mode,
//! fsynced), and only then renames them all into place, so a failure while staging leaves the
//! host untouched and a re-run converges. Unchanged files are not touched, so a second `join`
//! reports no change.

use std::fs;
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use similar::TextDiff;

use crate::render::under;

/// One file: absolute path (before the root prefix), contents, mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    /// Absolute path on the host.
    pub path: PathBuf,
    /// Full contents.
    pub contents: String,
    /// Permission bits (e.g. `0o600` for the kubeconfig).
    pub mode: u32,
}

impl FileSpec {
    /// A file at `path` with `contents` and `mode`.
    pub fn new(path: &Path, contents: String, mode: u32) -> FileSpec {
        FileSpec {
            path: path.to_owned(),
            contents,
            mode,
        }
    }
}

/// The files of one `join`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    files: Vec<FileSpec>,
}

/// How a file differs from what is on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The file does not exist yet.
    Create,
    /// The contents differ (the unified diff).
    Update(String),
    /// Only the mode differs (`from`, `to`).
    Mode(u32, u32),
}

impl Plan {
    /// Adds a file.
    pub fn add(&mut self, file: FileSpec) {
        self.files.push(file);
    }

    /// The files, in order.
    pub fn files(&self) -> &[FileSpec] {
        &self.files
    }

    /// The changes applying would make under `root`, per file (unchanged files omitted).
    ///
    /// Errors: a file exists but cannot be read ([`ApplyError`] naming it).
    pub fn changes(&self, root: &Path) -> Result<Vec<(&FileSpec, Change)>, ApplyError> {
        let mut out = Vec::new();
        for file in &self.files {
            let target = under(root, &file.path);
            let reading = |source| ApplyError {
                op: "reading",
                path: target.clone(),
                source,
            };
            let change = match fs::read_to_string(&target) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(Change::Create),
                Err(e) => return Err(reading(e)),
                Ok(old) if old != file.contents => Some(Change::Update(
                    TextDiff::from_lines(&old, &file.contents)
                        .unified_diff()
                        .header(
                            &file.path.display().to_string(),
                            &file.path.display().to_string(),
                        )
                        .to_string(),
                )),
                Ok(_) => {
                    let mode = current_mode(&target).map_err(reading)?;
                    (mode != file.mode).then_some(Change::Mode(mode, file.mode))
                }
            };
            if let Some(change) = change {
                out.push((file, change));
            }
        }
        Ok(out)
    }

    /// A human-readable rendering of [`Plan::changes`] (`+++`/`---` diffs; new files in full;
    /// a mode change also when the contents change).
    ///
    /// Errors: as [`Plan::changes`].
    pub fn diff(&self, root: &Path) -> Result<String, ApplyError> {
        let mut out = String::new();
        for (file, change) in self.changes(root)? {
            match change {
                Change::Create => {
                    out.push_str(&format!(
                        "--- /dev/null\n+++ {} (new, mode {:o})\n",
                        file.path.display(),
                        file.mode
                    ));
                    for line in file.contents.lines() {
                        out.push_str(&format!("+{line}\n"));
                    }
                }
                Change::Update(diff) => {
                    out.push_str(&diff);
                    let target = under(root, &file.path);
                    match current_mode(&target) {
                        Ok(mode) if mode != file.mode => out.push_str(&format!(
                            "mode {}: {mode:o} -> {:o}\n",
                            file.path.display(),
                            file.mode
                        )),
                        Ok(_) => {}
                        Err(source) => {
                            return Err(ApplyError {
                                op: "reading",
                                path: target,
                                source,
                            });
                        }
                    }
                }
                Change::Mode(from, to) => out.push_str(&format!(
                    "mode {}: {from:o} -> {to:o}\n",
                    file.path.display()
                )),
            }
        }
        Ok(out)
    }

    /// Writes every changed file under `root`; returns the paths it changed.
    ///
    /// Errors: an I/O error naming the file; files staged before it are removed again.
    pub fn apply(&self, root: &Path) -> Result<Vec<PathBuf>, ApplyError> {
        let changes = self.changes(root)?;
        let mut staged = Vec::new();
        for (file, _) in &changes {
            let target = under(root, &file.path);
            match stage(&target, file) {
                Ok(tmp) => staged.push((tmp, target)),
                Err(source) => {
                    // Nothing has been renamed yet: dropping the temp files undoes everything.
                    return Err(ApplyError {
                        op: "writing",
                        path: target,
                        source,
                    });
                }
            }
        }
        let mut changed = Vec::new();
        for (tmp, target) in staged {
            tmp.commit().map_err(|source| ApplyError {
                op: "writing",
                path: target.clone(),
                source,
            })?;
            changed.push(target);
        }
        Ok(changed)
    }
}

fn stage(target: &Path, file: &FileSpec) -> std::io::Result<satellite_fsutil::Staged> {
    let dir = target
        .parent()
        .ok_or_else(|| std::io::Error::other("path has no parent directory"))?;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)?;
    satellite_fsutil::stage(target, file.contents.as_bytes(), file.mode)
}

/// Reading the current version of a planned file, or writing it, failed.
#[derive(Debug, thiserror::Error)]
#[error("{op} {path}")]
pub struct ApplyError {
    /// `reading` or `writing`.
    pub op: &'static str,
    /// The file.
    pub path: PathBuf,
    /// The I/O error.
    pub source: std::io::Error,
}

/// The permission bits of `path`.
fn current_mode(path: &Path) -> std::io::Result<u32> {
    Ok(fs::metadata(path)?.permissions().mode() & 0o7777)
}

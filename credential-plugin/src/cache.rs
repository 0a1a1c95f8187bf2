//! On-disk cache of assumed-role credentials, shared by every invocation on the host.
//!
//! Layout: one directory (mode 0700) holding, per cache key, `<sha256>.json` (mode 0600, replaced
//! atomically by rename) and `<sha256>.lock` (an advisory `flock` taken while one process calls
//! sts:AssumeRole, so N concurrent invocations with a cold cache make one call).
//!
//! A cache file is used only if it parses, names the same key, is a regular file owned by the
//! current user with no group/other permission bits, and its credentials are valid for more than
//! [`REFRESH_BEFORE_EXPIRY`]. Anything else is ignored (and overwritten by the next store): a
//! broken cache never fails a token request.

use std::fs::{self, File, OpenOptions};
use std::io::Read as _;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::Error;

/// Cached credentials are refreshed when they have less than this left, so a token minted from
/// them (valid up to 14 min, capped at credential expiry − 1 min) is never short-lived.
pub const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(5 * 60);

/// Version of the cache file format; a file with another version is ignored.
const FORMAT_VERSION: u32 = 1;

/// Identifies one cache entry: the SHA-256 of every input that changes the assumed credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKey(String);

impl CacheKey {
    /// Hashes `parts` (name/value pairs, order significant) into a key. Values are
    /// length-prefixed so that no two different inputs hash the same text.
    pub fn new(parts: &[(&str, Option<&str>)]) -> Self {
        let mut hash = Sha256::new();
        hash.update(format!("satellite-credential-cache/v{FORMAT_VERSION}\n"));
        for (name, value) in parts {
            match value {
                Some(v) => hash.update(format!("{name}={}:{v}\n", v.len())),
                None => hash.update(format!("{name}-\n")),
            }
        }
        CacheKey(hex::encode(hash.finalize()))
    }
}

/// The cache file's contents. Secrets are only ever written to a 0600 file.
#[derive(Serialize, Deserialize)]
struct Entry {
    version: u32,
    key: String,
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
    /// Seconds since the Unix epoch.
    expires_at: u64,
}

/// A cache directory.
#[derive(Debug, Clone)]
pub struct CredentialCache {
    dir: PathBuf,
}

/// An exclusive lock on one cache key; released on drop (the file descriptor closes).
#[derive(Debug)]
pub struct CacheLock {
    _file: File,
}

impl CredentialCache {
    /// A cache in `dir` (created on first store, mode 0700).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        CredentialCache { dir: dir.into() }
    }

    /// The default directory: `$XDG_CACHE_HOME/satellite/credentials`, else
    /// `$HOME/.cache/satellite/credentials`; `None` when neither variable is set.
    pub fn default_dir() -> Option<PathBuf> {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .filter(|v| !v.is_empty())
                    .map(|home| Path::new(&home).join(".cache"))
            })?;
        Some(base.join("satellite").join("credentials"))
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of the entry for `key`.
    pub fn entry_path(&self, key: &CacheKey) -> PathBuf {
        self.dir.join(format!("{}.json", key.0))
    }

    /// Credentials cached under `key` that are still valid for more than
    /// [`REFRESH_BEFORE_EXPIRY`] at `now`; `None` for a missing, stale, corrupt or foreign file.
    pub fn load(&self, key: &CacheKey, now: SystemTime) -> Option<Credentials> {
        let path = self.entry_path(key);
        let mut file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .ok()?;
        let meta = file.metadata().ok()?;
        if !meta.is_file() || meta.uid() != effective_uid() || meta.mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "ignoring cache file that is not a private file of ours");
            return None;
        }
        let mut text = String::new();
        file.read_to_string(&mut text).ok()?;
        let entry: Entry = match serde_json::from_str(&text) {
            Ok(entry) => entry,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring corrupt cache file");
                return None;
            }
        };
        if entry.version != FORMAT_VERSION || entry.key != key.0 {
            tracing::warn!(path = %path.display(), "ignoring cache file written for another key");
            return None;
        }
        let expires_at = SystemTime::UNIX_EPOCH + Duration::from_secs(entry.expires_at);
        if expires_at.duration_since(now).unwrap_or_default() <= REFRESH_BEFORE_EXPIRY {
            return None;
        }
        Some(Credentials::new(
            entry.access_key_id,
            entry.secret_access_key,
            entry.session_token,
            Some(expires_at),
            "satellite-credential-cache",
        ))
    }

    /// Takes the exclusive lock for `key`, blocking until other holders release it.
    ///
    /// Errors: [`Error::Cache`] when the directory or lock file cannot be created.
    pub fn lock(&self, key: &CacheKey) -> Result<CacheLock, Error> {
        self.create_dir()?;
        let path = self.dir.join(format!("{}.lock", key.0));
        let file = satellite_fsutil::lock(&path).map_err(|e| cache_error(&path, e))?;
        Ok(CacheLock { _file: file })
    }

    /// Writes `credentials` under `key`: a 0600 temporary file in the cache directory, fsynced,
    /// then renamed over the entry, so readers see the old or the new file, never a torn one.
    ///
    /// Errors: [`Error::Cache`] on I/O failure, or when the credentials have no expiry.
    pub fn store(&self, key: &CacheKey, credentials: &Credentials) -> Result<(), Error> {
        let path = self.entry_path(key);
        let expires_at = credentials
            .expiry()
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .ok_or_else(|| Error::Cache {
                path: path.clone(),
                message: "refusing to cache credentials without an expiry".into(),
            })?
            .as_secs();
        let entry = Entry {
            version: FORMAT_VERSION,
            key: key.0.clone(),
            access_key_id: credentials.access_key_id().to_owned(),
            secret_access_key: credentials.secret_access_key().to_owned(),
            session_token: credentials.session_token().map(str::to_owned),
            expires_at,
        };
        let json = serde_json::to_vec(&entry).expect("cache entry always serializes");
        self.create_dir()?;
        satellite_fsutil::write_atomic(&path, &json, 0o600).map_err(|e| cache_error(&path, e))
    }

    fn create_dir(&self) -> Result<(), Error> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|e| cache_error(&self.dir, e))
    }
}

fn cache_error(path: &Path, e: std::io::Error) -> Error {
    Error::Cache {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

fn effective_uid() -> u32 {
    // SAFETY: geteuid takes no arguments, cannot fail and touches no memory of ours.
    unsafe { libc::geteuid() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn creds(expires_in: Duration) -> Credentials {
        Credentials::new(
            "ASIATEST",
            "secret",
            Some("session".into()),
            Some(SystemTime::now() + expires_in),
            "test",
        )
    }

    #[test]
    fn round_trip_with_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CredentialCache::new(dir.path().join("nested/cache"));
        let key = CacheKey::new(&[("role", Some("arn:aws:iam::123456789012:role/r"))]);
        cache
            .store(&key, &creds(Duration::from_secs(3600)))
            .unwrap();

        let mode = fs::metadata(cache.entry_path(&key))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = fs::metadata(cache.dir()).unwrap().permissions().mode();
        assert_eq!(dir_mode & 0o777, 0o700);

        let loaded = cache.load(&key, SystemTime::now()).unwrap();
        assert_eq!(loaded.access_key_id(), "ASIATEST");
        assert_eq!(loaded.secret_access_key(), "secret");
        assert_eq!(loaded.session_token(), Some("session"));
    }

    #[test]
    fn stale_foreign_and_corrupt_entries_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CredentialCache::new(dir.path());
        let key = CacheKey::new(&[("role", Some("a"))]);
        let other = CacheKey::new(&[("role", Some("b"))]);

        cache.store(&key, &creds(Duration::from_secs(200))).unwrap();
        assert!(
            cache.load(&key, SystemTime::now()).is_none(),
            "within refresh margin"
        );

        cache
            .store(&other, &creds(Duration::from_secs(3600)))
            .unwrap();
        fs::copy(cache.entry_path(&other), cache.entry_path(&key)).unwrap();
        assert!(
            cache.load(&key, SystemTime::now()).is_none(),
            "entry of another key"
        );

        fs::write(cache.entry_path(&key), b"{garbage").unwrap();
        fs::set_permissions(cache.entry_path(&key), fs::Permissions::from_mode(0o600)).unwrap();
        assert!(cache.load(&key, SystemTime::now()).is_none(), "corrupt");

        cache
            .store(&key, &creds(Duration::from_secs(3600)))
            .unwrap();
        fs::set_permissions(cache.entry_path(&key), fs::Permissions::from_mode(0o644)).unwrap();
        assert!(
            cache.load(&key, SystemTime::now()).is_none(),
            "world-readable"
        );
    }

    #[test]
    fn keys_separate_every_input() {
        let a = CacheKey::new(&[("x", Some("ab")), ("y", Some("c"))]);
        let b = CacheKey::new(&[("x", Some("a")), ("y", Some("bc"))]);
        let c = CacheKey::new(&[("x", Some("ab")), ("y", None)]);
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_eq!(a, CacheKey::new(&[("x", Some("ab")), ("y", Some("c"))]));
    }
}

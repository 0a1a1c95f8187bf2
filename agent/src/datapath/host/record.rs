//! The [`Record`] of what `up` installed and owns (`<stateDir>/datapath/<uplink>.json`,
//! written atomically before the first change), and the exclusive [`StateLock`] of the state
//! directory that `up`, `down` and the reconcile loop take. Separate because it is the file
//! format and the locking protocol every other step depends on.

use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::HostError;
use crate::datapath::AttachMode;
use crate::datapath::spec::DatapathSpec;

/// Format version of [`Record`].
pub(super) const RECORD_VERSION: u32 = 1;

/// A peer route `up` added.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerRoute {
    /// The peer (`<peer>/32`).
    pub peer: Ipv4Addr,
    /// The next hop, `None` when the peer is on-link.
    pub gateway: Option<Ipv4Addr>,
}

/// What `up` installed on one uplink, and what it owns (removes on `down`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// Format version (1).
    pub version: u32,
    /// N.
    pub node_ip: Ipv4Addr,
    /// The settings as given.
    pub spec: DatapathSpec,
    /// The uplink's name.
    pub uplink: String,
    /// S in use.
    pub host_address: Ipv4Addr,
    /// Where the pins are.
    pub pin_dir: PathBuf,
    /// The attach mode in use (never `auto`).
    pub mode: AttachMode,
    /// Whether `up` added N to the address device (else it was there before and stays).
    pub address_added: bool,
    /// The peer routes `up` added (others existed before and stay).
    pub routes: Vec<PeerRoute>,
    /// Whether `up` added the uplink's `clsact` qdisc (netlink mode; removed on `down` when
    /// no other filter uses it).
    #[serde(default)]
    pub clsact_added: bool,
    /// Whether `up` created `bpffsDir` (removed on `down` when empty).
    #[serde(default)]
    pub bpffs_dir_created: bool,
}

impl Record {
    /// The tc programs' configuration.
    pub(super) fn nat_config(&self) -> crate::datapath::Config {
        self.spec.nat_config(self.node_ip, self.host_address)
    }
}

/// Where records of `state_dir` live.
fn records_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("datapath")
}

/// `<stateDir>/datapath/<uplink>.json`.
#[must_use]
pub fn record_path(state_dir: &Path, uplink: &str) -> PathBuf {
    records_dir(state_dir).join(format!("{uplink}.json"))
}

/// The exclusive lock of a state directory; released when dropped.
pub struct StateLock {
    _file: File,
}

/// Takes the exclusive lock of `state_dir` (creating the directory, 0755), waiting for it.
///
/// # Errors
///
/// [`HostError::State`].
pub fn lock(state_dir: &Path) -> Result<StateLock, HostError> {
    let dir = records_dir(state_dir);
    let state = |what, path: &Path| {
        let path = path.to_owned();
        move |source| HostError::State { what, path, source }
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&dir)
        .map_err(state("creating", &dir))?;
    let path = dir.join("lock");
    let file = satellite_fsutil::lock(&path).map_err(state("locking", &path))?;
    Ok(StateLock { _file: file })
}

/// Reads the record of `uplink`, or — without `uplink` — the only record in `state_dir`.
/// `None` when there is none.
///
/// # Errors
///
/// [`HostError::State`] for unreadable or corrupt files; [`HostError::Invalid`] when
/// `uplink` is not given and several uplinks have records.
pub fn read_record(state_dir: &Path, uplink: Option<&str>) -> Result<Option<Record>, HostError> {
    let path = match uplink {
        Some(uplink) => record_path(state_dir, uplink),
        None => {
            let dir = records_dir(state_dir);
            let mut found: Vec<PathBuf> = match std::fs::read_dir(&dir) {
                Ok(entries) => entries
                    .filter_map(|e| Some(e.ok()?.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "json"))
                    .collect(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
                Err(source) => {
                    return Err(HostError::State {
                        what: "reading",
                        path: dir,
                        source,
                    });
                }
            };
            match found.len() {
                0 => return Ok(None),
                1 => found.remove(0),
                _ => {
                    found.sort();
                    return Err(HostError::Invalid(vec![format!(
                        "several uplinks have a datapath ({}); name one with --uplink",
                        found
                            .iter()
                            .filter_map(|p| p.file_stem()?.to_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )]));
                }
            }
        }
    };
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(HostError::State {
                what: "reading",
                path,
                source,
            });
        }
    };
    let record: Record = serde_json::from_slice(&bytes).map_err(|e| HostError::State {
        what: "parsing",
        path: path.clone(),
        source: io::Error::new(io::ErrorKind::InvalidData, e),
    })?;
    if record.version != RECORD_VERSION {
        return Err(HostError::State {
            what: "reading",
            path,
            source: io::Error::new(
                io::ErrorKind::InvalidData,
                format!("format version {} is not {RECORD_VERSION}", record.version),
            ),
        });
    }
    Ok(Some(record))
}

/// Writes `record` atomically (temporary file, rename; 0644).
pub(super) fn write_record(record: &Record) -> Result<(), HostError> {
    let path = record_path(&record.spec.state_dir, &record.uplink);
    let mut bytes = serde_json::to_vec_pretty(record).expect("the record is plain data");
    bytes.push(b'\n');
    satellite_fsutil::write_atomic(&path, &bytes, 0o644).map_err(|source| HostError::State {
        what: "writing",
        path,
        source,
    })
}

pub(super) fn remove_record(record: &Record) -> Result<(), HostError> {
    let path = record_path(&record.spec.state_dir, &record.uplink);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(HostError::State {
            what: "removing",
            path,
            source,
        }),
    }
}

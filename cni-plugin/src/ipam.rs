//! Built-in IPAM: one state file per network and boot, `<dataDir>/<name>/boot-<boot id>.json`,
//! changed only under an exclusive `flock` on `<dataDir>/<name>/lock` and replaced atomically
//! (write a temporary file, rename it over the old one), so a reader never sees a torn file and
//! concurrent plugin invocations never hand out one address twice.
//!
//! Allocations live as long as the network namespaces they serve, which do not survive a
//! reboot: the file is named after the kernel's boot ID (`/proc/sys/kernel/random/boot_id`),
//! so after a reboot every allocation of the previous boot is released at once (and its file
//! removed by the next write), even under runtimes that never call GC (containerd 1.6). This
//! is also why no fsync is needed: only a power loss or kernel crash can lose page-cache
//! writes, and either starts a new boot whose file is a fresh one. A killed plugin loses
//! nothing (the rename is atomic and the data is in the page cache).
//!
//! Each allocation records everything ADD is about to create for it (host veth name, host
//! ports), and is written *before* ADD creates anything. Whatever a crash (even `kill -9`)
//! leaves behind is therefore named by an allocation, which DEL or GC reclaims. The kernel
//! drops the lock when its holder dies, so a crash never leaves the lock held.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io;
use std::net::Ipv4Addr;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::config::{PortMapping, usable};
use crate::error::{Error, Result};

/// Format version of the state file.
const STATE_VERSION: u32 = 1;

/// How long an invocation waits for the lock before answering "try again later" (code 11).
const LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// One attachment's address and what ADD creates for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Allocation {
    /// The pod's address.
    pub ip: Ipv4Addr,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// Name of the host end of the veth pair.
    pub host_veth: String,
    /// Host ports mapped to this pod.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_mappings: Vec<PortMapping>,
}

impl Allocation {
    /// Whether this allocation belongs to (`container_id`, `ifname`).
    pub fn is(&self, container_id: &str, ifname: &str) -> bool {
        self.container_id == container_id && self.ifname == ifname
    }
}

/// The content of the state file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    /// Format version (1).
    pub version: u32,
    /// The address handed out last; the next search starts after it, so a released address
    /// is reused as late as possible (stale ARP or conntrack entries age out meanwhile).
    #[serde(default)]
    pub last_reserved: Option<Ipv4Addr>,
    /// Current allocations.
    #[serde(default)]
    pub allocations: Vec<Allocation>,
}

impl State {
    /// The allocation of (`container_id`, `ifname`), if any.
    pub fn find(&self, container_id: &str, ifname: &str) -> Option<&Allocation> {
        self.allocations.iter().find(|a| a.is(container_id, ifname))
    }

    /// Picks the next free address of `subnet` after `last_reserved` (wrapping), skipping
    /// `gateway`, network and broadcast addresses.
    ///
    /// Errors: [`Error::RangeExhausted`].
    pub fn next_free(&self, subnet: Ipv4Net, gateway: Ipv4Addr) -> Result<Ipv4Addr> {
        let taken: HashSet<Ipv4Addr> = self.allocations.iter().map(|a| a.ip).collect();
        let candidates: Vec<Ipv4Addr> = usable(subnet, gateway).collect();
        let start = self
            .last_reserved
            .and_then(|last| candidates.iter().position(|ip| *ip == last))
            .map_or(0, |i| i + 1);
        candidates[start..]
            .iter()
            .chain(&candidates[..start])
            .find(|ip| !taken.contains(ip))
            .copied()
            .ok_or_else(|| Error::RangeExhausted {
                subnet: subnet.to_string(),
                allocated: self.allocations.len(),
            })
    }

    /// Removes the allocation of (`container_id`, `ifname`); returns it if it existed.
    pub fn remove(&mut self, container_id: &str, ifname: &str) -> Option<Allocation> {
        let i = self
            .allocations
            .iter()
            .position(|a| a.is(container_id, ifname))?;
        Some(self.allocations.remove(i))
    }
}

/// The state directory of one network.
pub struct Store {
    dir: PathBuf,
    boot_id: String,
}

/// The store, locked: the state may be read and changed until this is dropped.
pub struct Locked<'a> {
    store: &'a Store,
    _lock: File,
    /// The state as read under the lock.
    pub state: State,
}

impl Store {
    /// The store of network `name` under `data_dir` (created on first use, mode 0700), for
    /// the running boot.
    ///
    /// Errors: [`Error::Io`] when the boot ID cannot be read.
    pub fn new(data_dir: &Path, name: &str) -> Result<Self> {
        const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";
        let boot_id = fs::read_to_string(BOOT_ID)
            .map_err(|e| Error::io(format!("reading {BOOT_ID}"), e))?
            .trim()
            .to_owned();
        Ok(Self::for_boot(data_dir, name, &boot_id))
    }

    /// The store of network `name` under `data_dir` for boot `boot_id`.
    pub fn for_boot(data_dir: &Path, name: &str, boot_id: &str) -> Self {
        Self {
            dir: data_dir.join(name),
            boot_id: boot_id.to_owned(),
        }
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `<dir>/boot-<boot id>.json`.
    pub fn state_path(&self) -> PathBuf {
        self.dir.join(format!("boot-{}.json", self.boot_id))
    }

    /// Reads the state without locking (the file is only ever replaced whole, so this sees a
    /// consistent version); an absent file is the empty state.
    pub fn read(&self) -> Result<State> {
        let path = self.state_path();
        match fs::read(&path) {
            Ok(bytes) => {
                let state: State = serde_json::from_slice(&bytes).map_err(|e| {
                    Error::io(
                        format!(
                            "{} is corrupt ({e}); it is only ever replaced whole, so something \
                             else wrote it: move it away (the addresses it lists may then be \
                             handed out again while their pods still use them)",
                            path.display()
                        ),
                        io::Error::from(io::ErrorKind::InvalidData),
                    )
                })?;
                if state.version != STATE_VERSION {
                    return Err(Error::io(
                        format!(
                            "{} has format version {}, this plugin writes {STATE_VERSION}",
                            path.display(),
                            state.version
                        ),
                        io::Error::from(io::ErrorKind::InvalidData),
                    ));
                }
                Ok(state)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(State {
                version: STATE_VERSION,
                ..State::default()
            }),
            Err(e) => Err(Error::io(format!("reading {}", path.display()), e)),
        }
    }

    /// Takes the exclusive lock (waiting up to 10 s) and reads the state.
    ///
    /// Errors: [`Error::Io`] when the directory or lock file cannot be created;
    /// [`Error::TryAgain`] when another invocation holds the lock for too long.
    pub fn lock(&self) -> Result<Locked<'_>> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|e| Error::io(format!("creating {}", self.dir.display()), e))?;
        let path = self.dir.join("lock");
        let deadline = Instant::now() + LOCK_TIMEOUT;
        let mut pause = Duration::from_micros(200);
        // Bounded polling rather than a blocking flock: a plugin must answer TryAgain (CNI
        // error 11) instead of hanging kubelet when another invocation is stuck.
        let file = loop {
            if let Some(file) = satellite_fsutil::try_lock(&path)
                .map_err(|e| Error::io(format!("locking {}", path.display()), e))?
            {
                break file;
            }
            if Instant::now() >= deadline {
                return Err(Error::TryAgain(format!(
                    "{} has been locked by another invocation for {} s",
                    path.display(),
                    LOCK_TIMEOUT.as_secs()
                )));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(5));
        };
        let state = self.read()?;
        Ok(Locked {
            store: self,
            _lock: file,
            state,
        })
    }
}

impl Locked<'_> {
    /// Writes the state atomically (temporary file, rename) and removes the files of earlier
    /// boots.
    pub fn commit(&self) -> Result<()> {
        let path = self.store.state_path();
        let mut bytes = serde_json::to_vec_pretty(&self.state).expect("the state is plain data");
        bytes.push(b'\n');
        satellite_fsutil::write_atomic(&path, &bytes, 0o600)
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        self.remove_earlier_boots();
        Ok(())
    }

    /// Removes state files of earlier boots (their pods, veths and nf_tables entries died
    /// with that boot). Best effort: a leftover file is ignored by everything.
    fn remove_earlier_boots(&self) {
        let current = self.store.state_path();
        let Ok(entries) = fs::read_dir(&self.store.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("boot-")
                && name.ends_with(".json")
                && path != current
                && fs::remove_file(&path).is_ok()
            {
                tracing::info!(file = %path.display(), "released the allocations of an earlier boot");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alloc(ip: [u8; 4], id: &str) -> Allocation {
        Allocation {
            ip: ip.into(),
            container_id: id.into(),
            ifname: "eth0".into(),
            host_veth: format!("v{id}"),
            port_mappings: Vec::new(),
        }
    }

    #[test]
    fn round_robin_and_exhaustion() {
        let subnet: Ipv4Net = "10.0.0.0/29".parse().unwrap();
        let gw = Ipv4Addr::new(10, 0, 0, 1);
        let mut s = State::default();
        assert_eq!(s.next_free(subnet, gw).unwrap(), Ipv4Addr::new(10, 0, 0, 2));
        s.allocations.push(alloc([10, 0, 0, 2], "a"));
        s.last_reserved = Some(Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(s.next_free(subnet, gw).unwrap(), Ipv4Addr::new(10, 0, 0, 3));
        s.remove("a", "eth0").unwrap();
        // .2 was released but is not reused before the rest of the range.
        assert_eq!(s.next_free(subnet, gw).unwrap(), Ipv4Addr::new(10, 0, 0, 3));
        for (i, last) in (3..=6).enumerate() {
            s.allocations
                .push(alloc([10, 0, 0, last], &format!("c{i}")));
        }
        s.allocations.push(alloc([10, 0, 0, 2], "z"));
        assert_eq!(s.next_free(subnet, gw).unwrap_err().code(), 100);
    }

    #[test]
    fn store_commit_and_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::for_boot(dir.path(), "net", "boot-a");
        assert!(store.read().unwrap().allocations.is_empty());
        {
            let mut locked = store.lock().unwrap();
            locked.state.allocations.push(alloc([10, 0, 0, 2], "a"));
            locked.commit().unwrap();
        }
        let state = store.read().unwrap();
        assert_eq!(
            state.find("a", "eth0").unwrap().ip,
            Ipv4Addr::new(10, 0, 0, 2)
        );
        // After a reboot the old allocations are gone, and the next write removes the file.
        let rebooted = Store::for_boot(dir.path(), "net", "boot-b");
        assert!(rebooted.read().unwrap().allocations.is_empty());
        rebooted.lock().unwrap().commit().unwrap();
        assert!(!store.state_path().exists());
        fs::write(rebooted.state_path(), b"{").unwrap();
        assert_eq!(rebooted.read().unwrap_err().code(), 5);
    }
}

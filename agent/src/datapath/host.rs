//! The host side of the datapath: what `satellite-agent datapath up|down|status`, `run` and
//! `leave` install, check and remove.
//!
//! [`up`] installs, in this order, on the calling thread's network namespace:
//! 1. N as a /32 on the address device (`lo`), so kubelet accepts `--node-ip=N` and
//!    host-network pods can bind it (skipped, and not owned, when N is already there);
//! 2. a /32 route to each peer out of the uplink (`proto 211`, via the gateway the kernel
//!    would use), so replies from N to the proxy always leave where the egress program runs,
//!    whatever other routes (a VPN, a second NIC) say (skipped, and not owned, when a /32 route
//!    to the peer exists);
//! 3. the tc programs on the uplink ([`super::Datapath`]), pinned under `<bpffsDir>/<uplink>`.
//!
//! Everything is validated, and everything on the host it depends on is looked up, before
//! the first change. A [`Record`] of what is owned is written before the first change
//! (`<stateDir>/datapath/<uplink>.json`, atomically), so [`down`] removes exactly that, even
//! after a crash halfway; a failed `up` removes what it had added. Changes happen under an
//! exclusive lock (`<stateDir>/datapath/lock`), which the reconcile loop ([`super::watch`])
//! takes too.

use std::fs::{File, OpenOptions};
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use aya::programs::{ProgramInfo, TcAttachType};
use satellite_agent_common as common;
use serde::{Deserialize, Serialize};

use super::net::{Netlink, Route};
use super::spec::DatapathSpec;
use super::{AttachMode, Counters, Datapath};

/// `rtm_protocol` of the peer routes `up` adds (`ip route show proto 211`): how `down` and
/// the reconcile loop tell them from everyone else's.
pub const ROUTE_PROTOCOL: u8 = 211;
/// Format version of [`Record`].
const RECORD_VERSION: u32 = 1;

/// A failure of the host datapath.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The settings are invalid (exit code 3); every problem is listed.
    #[error("invalid datapath settings:\n{}", .0.join("\n"))]
    Invalid(Vec<String>),
    /// The host is not as the settings need it (a missing interface, no address, an
    /// unreachable peer); nothing was changed (exit code 3).
    #[error("{0}")]
    Host(String),
    /// A netlink request failed (exit code 6).
    #[error("{what}: {source}")]
    Netlink {
        /// The request.
        what: String,
        /// The kernel's error.
        source: io::Error,
    },
    /// Loading, attaching or pinning the tc programs failed (exit code 6).
    #[error("the tc programs: {}", chain(.0))]
    Datapath(#[from] super::Error),
    /// Reading or writing the record or its lock failed (exit code 1).
    #[error("{what} {}: {source}", path.display())]
    State {
        /// The operation.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// `down` could not remove everything; every failed step is listed (exit code 6).
    #[error("removing the datapath: {} step(s) failed:\n{}", .0.len(), .0.join("\n"))]
    Teardown(Vec<String>),
}

impl HostError {
    /// The exit code: `3` invalid settings or host, `6` netlink/eBPF, `1` state files.
    #[must_use]
    pub const fn exit_code(&self) -> u8 {
        match self {
            Self::Invalid(_) | Self::Host(_) => 3,
            Self::Netlink { .. } | Self::Datapath(_) | Self::Teardown(_) => 6,
            Self::State { .. } => 1,
        }
    }
}

fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn netlink(what: impl Into<String>) -> impl FnOnce(io::Error) -> HostError {
    let what = what.into();
    move |source| HostError::Netlink { what, source }
}

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
    fn nat_config(&self) -> Result<super::Config, HostError> {
        self.spec
            .nat_config(self.node_ip, self.host_address)
            .map_err(|e| HostError::Invalid(vec![format!("allowPorts: {e}")]))
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
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(state("opening", &path))?;
    // SAFETY: flock on a descriptor we own; no memory is passed.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(state("locking", &path)(io::Error::last_os_error()));
    }
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
fn write_record(record: &Record) -> Result<(), HostError> {
    let path = record_path(&record.spec.state_dir, &record.uplink);
    let tmp = path.with_extension("json.tmp");
    let write = || -> io::Result<()> {
        let mut bytes = serde_json::to_vec_pretty(record).map_err(io::Error::other)?;
        bytes.push(b'\n');
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o644)
            .open(&tmp)?;
        io::Write::write_all(&mut file, &bytes)?;
        std::fs::rename(&tmp, &path)
    };
    write().map_err(|source| HostError::State {
        what: "writing",
        path,
        source,
    })
}

fn remove_record(record: &Record) -> Result<(), HostError> {
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

/// Checks `spec` for node IP `node_ip` and everything on the host it depends on, changing
/// nothing; the record `up` would write.
///
/// # Errors
///
/// [`HostError::Invalid`] (every problem), [`HostError::Host`], [`HostError::Netlink`].
pub async fn plan(
    net: &Netlink,
    node_ip: Ipv4Addr,
    spec: &DatapathSpec,
) -> Result<Record, HostError> {
    let problems = spec.validate(Some(node_ip));
    if !problems.is_empty() {
        return Err(HostError::Invalid(
            problems
                .into_iter()
                .map(|p| format!("  - {}: {}", p.field, p.message))
                .collect(),
        ));
    }
    if !super::object_embedded() {
        return Err(super::Error::NoObject.into());
    }
    let uplink = match &spec.uplink {
        Some(name) => name.clone(),
        None => default_route_link(net).await?,
    };
    let uplink_index = net
        .link_index(&uplink)
        .await
        .map_err(netlink(format!("looking up uplink {uplink}")))?
        .ok_or_else(|| {
            HostError::Host(format!(
                "uplink {uplink} does not exist; name the interface the proxy's traffic \
                 arrives on"
            ))
        })?;
    let device = &spec.address_device;
    let device_index = net
        .link_index(device)
        .await
        .map_err(netlink(format!("looking up {device}")))?
        .ok_or_else(|| HostError::Host(format!("address device {device} does not exist")))?;
    let uplink_addresses = net
        .addresses(uplink_index)
        .await
        .map_err(netlink(format!("listing the addresses of {uplink}")))?;
    if uplink_addresses.iter().any(|a| a.ip == node_ip) {
        return Err(HostError::Host(format!(
            "the node IP {node_ip} is an address of the uplink {uplink}: the node IP is the \
             VPC address (on the proxy), not the host's own"
        )));
    }
    let host_address = match spec.host_address {
        Some(host) if uplink_addresses.iter().any(|a| a.ip == host) => host,
        Some(host) => {
            return Err(HostError::Host(format!(
                "hostAddress {host} is not an address of {uplink}; omit it to use {uplink}'s \
                 primary address"
            )));
        }
        None => {
            uplink_addresses
                .first()
                .ok_or_else(|| {
                    HostError::Host(format!(
                        "{uplink} has no IPv4 address; the proxy's traffic must arrive there"
                    ))
                })?
                .ip
        }
    };
    let mut routes = Vec::new();
    for peer in &spec.peers {
        let route = net
            .route_get(*peer, uplink_index)
            .await
            .map_err(netlink(format!("looking up the route to {peer}")))?
            .ok_or_else(|| {
                HostError::Host(format!("peer {peer} is not reachable through {uplink}"))
            })?;
        routes.push(PeerRoute {
            peer: *peer,
            gateway: route.gateway,
        });
    }
    let present = net
        .addresses(device_index)
        .await
        .map_err(netlink(format!("listing the addresses of {device}")))?;
    let main = net
        .routes()
        .await
        .map_err(netlink("listing the main routing table"))?;
    // Owned: only what is not there yet (or is ours from an earlier `up`).
    let routes = routes
        .into_iter()
        .filter(|r| {
            host_route(&main, r.peer).is_none_or(|existing| existing.protocol == ROUTE_PROTOCOL)
        })
        .collect();
    let mode = spec.attach_mode.resolve();
    let clsact_added = mode == AttachMode::Netlink
        && net
            .clsact(uplink_index)
            .await
            .map_err(netlink(format!("listing the qdiscs of {uplink}")))?
            .is_none();
    let record = Record {
        version: RECORD_VERSION,
        node_ip,
        spec: spec.clone(),
        uplink: uplink.clone(),
        host_address,
        pin_dir: spec.bpffs_dir.join(&uplink),
        mode,
        clsact_added,
        bpffs_dir_created: false,
        address_added: !present.iter().any(|a| a.ip == node_ip && a.prefix == 32),
        routes,
    };
    record.nat_config()?.validate()?;
    Ok(record)
}

/// The uplink by default: the interface of the IPv4 default route.
async fn default_route_link(net: &Netlink) -> Result<String, HostError> {
    let routes = net
        .routes()
        .await
        .map_err(netlink("listing the main routing table"))?;
    let oif = routes
        .iter()
        .find(|r| r.prefix == 0 && r.oif != 0)
        .map(|r| r.oif)
        .ok_or_else(|| {
            HostError::Host(
                "no IPv4 default route to find the uplink by; name it (--uplink, \
                 spec.datapath.uplink)"
                    .into(),
            )
        })?;
    net.link_name(oif)
        .await
        .map_err(netlink("looking up the default route's interface"))?
        .ok_or_else(|| HostError::Host("the default route's interface vanished".into()))
}

fn host_route(routes: &[Route], peer: Ipv4Addr) -> Option<&Route> {
    routes.iter().find(|r| r.dst == peer && r.prefix == 32)
}

/// Installs the datapath for node IP `node_ip` (see the module doc); a second `up` with the
/// same settings changes nothing and adopts the pinned programs. Takes the state lock.
///
/// # Errors
///
/// As [`plan`] (nothing changed), then [`HostError::Netlink`] / [`HostError::Datapath`] /
/// [`HostError::State`], after removing what this call had added.
pub async fn up(node_ip: Ipv4Addr, spec: &DatapathSpec) -> Result<Record, HostError> {
    let net = Netlink::open().map_err(netlink("opening an rtnetlink socket"))?;
    let _lock = lock(&spec.state_dir)?;
    let mut record = plan(&net, node_ip, spec).await?;
    let bpffs = record.spec.bpffs_dir.clone();
    record.bpffs_dir_created = !bpffs.exists();
    std::fs::create_dir_all(&bpffs).map_err(|source| HostError::State {
        what: "creating",
        path: bpffs.clone(),
        source,
    })?;
    if let Err(e) = super::check_bpffs(&bpffs) {
        if record.bpffs_dir_created {
            let _ = std::fs::remove_dir(&bpffs);
        }
        return Err(match e {
            super::Error::NotBpffs(_) => HostError::Host(format!(
                "{e}; or point bpffsDir (--bpffs-dir) at a directory on one"
            )),
            e => e.into(),
        });
    }
    // What an earlier `up` of this uplink owns stays owned.
    if let Some(earlier) = read_record(&spec.state_dir, Some(&record.uplink))? {
        record.address_added |= earlier.address_added && earlier.node_ip == node_ip;
        record.clsact_added |= earlier.clsact_added;
        record.bpffs_dir_created |= earlier.bpffs_dir_created;
        for route in earlier.routes {
            if !record.routes.contains(&route) && spec.peers.contains(&route.peer) {
                record.routes.push(route);
            }
        }
    }
    write_record(&record)?;
    match apply(&net, &record).await {
        Ok(_) => Ok(record),
        Err(e) => {
            tracing::warn!(error = %e, "datapath up failed; removing what it added");
            if let Err(undo) = teardown(&net, &record).await {
                tracing::warn!(error = %undo, "removing it failed too; run `satellite-agent datapath down`");
            } else {
                let _ = remove_record(&record);
            }
            Err(e)
        }
    }
}

/// Makes the host match `record`: adds what is missing, (re)attaches the programs when they
/// are not running, rewrites the maps. Returns what had to be restored (empty when nothing
/// was missing).
async fn apply(net: &Netlink, record: &Record) -> Result<Vec<String>, HostError> {
    let mut restored = Vec::new();
    let device = &record.spec.address_device;
    let device_index = net
        .link_index(device)
        .await
        .map_err(netlink(format!("looking up {device}")))?
        .ok_or_else(|| HostError::Host(format!("address device {device} does not exist")))?;
    let present = net
        .addresses(device_index)
        .await
        .map_err(netlink(format!("listing the addresses of {device}")))?;
    if !present.iter().any(|a| a.ip == record.node_ip) {
        match net.add_address(device_index, record.node_ip, 32).await {
            Ok(()) => restored.push(format!("{}/32 on {device}", record.node_ip)),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(netlink(format!("adding {}/32 to {device}", record.node_ip))(e)),
        }
    }
    let uplink_index = net
        .link_index(&record.uplink)
        .await
        .map_err(netlink(format!("looking up {}", record.uplink)))?
        .ok_or_else(|| HostError::Host(format!("uplink {} does not exist", record.uplink)))?;
    let main = net
        .routes()
        .await
        .map_err(netlink("listing the main routing table"))?;
    for route in &record.routes {
        if host_route(&main, route.peer).is_some() {
            continue;
        }
        match net
            .add_host_route(route.peer, route.gateway, uplink_index, ROUTE_PROTOCOL)
            .await
        {
            Ok(()) => restored.push(format!("route {}/32 dev {}", route.peer, record.uplink)),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => {
                return Err(netlink(format!(
                    "adding route {}/32 dev {}",
                    route.peer, record.uplink
                ))(e));
            }
        }
    }
    let config = record.nat_config()?;
    if attached(net, record, uplink_index).await? {
        if let Some(mut datapath) = Datapath::open(&record.uplink, &record.pin_dir)? {
            datapath.set_config(&config)?;
        }
    } else {
        // Netlink filters are re-attached from the pinned programs (install adopts them). A
        // TCX link pinned but detached (its interface was deleted) cannot be re-attached:
        // start afresh, the counters from zero.
        if record.mode == AttachMode::Tcx && record.pin_dir.exists() {
            let _ = super::remove(&record.uplink, &record.pin_dir);
        }
        Datapath::install(&record.uplink, &record.pin_dir, record.mode, &config)?;
        restored.push(format!(
            "tc programs on {} ({:?})",
            record.uplink, record.mode
        ));
    }
    Ok(restored)
}

/// Whether both pinned programs are attached to the uplink (index `uplink_index`) in the
/// record's mode.
async fn attached(net: &Netlink, record: &Record, uplink_index: u32) -> Result<bool, HostError> {
    let Some((ingress, egress)) = super::pinned_program_ids(&record.pin_dir) else {
        return Ok(false);
    };
    let [on_ingress, on_egress] = attached_ids(net, record, uplink_index).await?;
    Ok(on_ingress.contains(&ingress) && on_egress.contains(&egress))
}

/// The ids of the programs attached to the uplink's `[ingress, egress]` hooks in the record's
/// mode.
async fn attached_ids(
    net: &Netlink,
    record: &Record,
    uplink_index: u32,
) -> Result<[Vec<u32>; 2], HostError> {
    if record.mode == AttachMode::Tcx {
        Ok([
            super::tcx_program_ids(&record.uplink, TcAttachType::Ingress)?,
            super::tcx_program_ids(&record.uplink, TcAttachType::Egress)?,
        ])
    } else {
        let what = format!("listing the tc filters of {}", record.uplink);
        Ok([
            net.bpf_filter_ids(uplink_index, true)
                .await
                .map_err(netlink(what.clone()))?,
            net.bpf_filter_ids(uplink_index, false)
                .await
                .map_err(netlink(what))?,
        ])
    }
}

/// Keeps the host as `record` says (the reconcile loop's step): S followed when it was not
/// given and the uplink's primary address changed, then [`apply`]. Returns what was
/// restored or changed.
///
/// # Errors
///
/// As [`up`]'s apply step; the caller retries on the next event.
pub async fn reconcile(net: &Netlink, record: &mut Record) -> Result<Vec<String>, HostError> {
    let mut changed = Vec::new();
    if record.spec.host_address.is_none()
        && let Some(index) = net
            .link_index(&record.uplink)
            .await
            .map_err(netlink(format!("looking up {}", record.uplink)))?
        && let Some(primary) = net
            .addresses(index)
            .await
            .map_err(netlink(format!(
                "listing the addresses of {}",
                record.uplink
            )))?
            .first()
        && primary.ip != record.host_address
        && primary.ip != record.node_ip
    {
        changed.push(format!(
            "host address {} → {} (the uplink was renumbered)",
            record.host_address, primary.ip
        ));
        record.host_address = primary.ip;
        write_record(record)?;
    }
    changed.extend(apply(net, record).await?);
    Ok(changed)
}

/// What [`down`] removed.
#[derive(Debug, Default, Serialize)]
pub struct Removed {
    /// The uplink, `None` when nothing was installed.
    pub uplink: Option<String>,
    /// Each thing removed.
    pub items: Vec<String>,
}

/// Removes what `up` installed on `uplink` (or the only uplink with a record) and only that;
/// nothing installed is not an error. Takes the state lock; the record is removed last, after
/// which a running reconcile loop stops restoring.
///
/// # Errors
///
/// [`HostError::Teardown`] with every failed step (each is attempted), [`HostError::State`].
pub async fn down(state_dir: &Path, uplink: Option<&str>) -> Result<Removed, HostError> {
    let net = Netlink::open().map_err(netlink("opening an rtnetlink socket"))?;
    let _lock = lock(state_dir)?;
    let Some(record) = read_record(state_dir, uplink)? else {
        return Ok(Removed::default());
    };
    // Under the lock no reconcile loop runs; the record goes only once everything is removed,
    // so a failed `down` can be run again (and a running loop then stops restoring).
    let items = teardown(&net, &record).await?;
    remove_record(&record)?;
    Ok(Removed {
        uplink: Some(record.uplink),
        items,
    })
}

/// Removes the programs, the owned routes and the owned address of `record`.
async fn teardown(net: &Netlink, record: &Record) -> Result<Vec<String>, HostError> {
    let mut removed = Vec::new();
    let mut errors = Vec::new();
    if record.pin_dir.exists() {
        match super::remove(&record.uplink, &record.pin_dir) {
            Ok(()) => removed.push(format!("tc programs on {}", record.uplink)),
            Err(e) => errors.push(e.to_string()),
        }
    }
    // The bpffs directory `up` created, when nothing else is pinned there.
    if record.bpffs_dir_created {
        let _ = std::fs::remove_dir(&record.spec.bpffs_dir);
    }
    if record.clsact_added {
        match remove_unused_clsact(net, &record.uplink).await {
            Ok(true) => removed.push(format!("clsact qdisc on {}", record.uplink)),
            Ok(false) => {}
            Err(e) => errors.push(format!(
                "removing the clsact qdisc of {}: {e}",
                record.uplink
            )),
        }
    }
    match net.routes().await {
        Ok(main) => {
            for owned in &record.routes {
                let Some(route) = host_route(&main, owned.peer) else {
                    continue;
                };
                if route.protocol != ROUTE_PROTOCOL {
                    continue;
                }
                match net.delete_route(route).await {
                    Ok(()) => removed.push(format!("route {}/32", owned.peer)),
                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                    Err(e) => errors.push(format!("deleting route {}/32: {e}", owned.peer)),
                }
            }
        }
        Err(e) => errors.push(format!("listing the main routing table: {e}")),
    }
    if record.address_added {
        let device = &record.spec.address_device;
        match net.link_index(device).await {
            Ok(Some(index)) => match net.addresses(index).await {
                Ok(addresses) => {
                    for address in addresses
                        .iter()
                        .filter(|a| a.ip == record.node_ip && a.prefix == 32)
                    {
                        match net.delete_address(address).await {
                            Ok(()) => removed.push(format!("{}/32 on {device}", record.node_ip)),
                            Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => {}
                            Err(e) => errors
                                .push(format!("deleting {}/32 from {device}: {e}", record.node_ip)),
                        }
                    }
                }
                Err(e) => errors.push(format!("listing the addresses of {device}: {e}")),
            },
            Ok(None) => {}
            Err(e) => errors.push(format!("looking up {device}: {e}")),
        }
    }
    if errors.is_empty() {
        Ok(removed)
    } else {
        Err(HostError::Teardown(errors))
    }
}

/// Deletes `uplink`'s clsact qdisc when it holds no filter; whether it did.
async fn remove_unused_clsact(net: &Netlink, uplink: &str) -> io::Result<bool> {
    let Some(index) = net.link_index(uplink).await? else {
        return Ok(false);
    };
    let Some(qdisc) = net.clsact(index).await? else {
        return Ok(false);
    };
    if !net.filters(index, true).await?.is_empty() || !net.filters(index, false).await?.is_empty() {
        return Ok(false);
    }
    net.delete_qdisc(&qdisc).await?;
    Ok(true)
}

/// One tc program's state.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProgramStatus {
    /// `ingress` or `egress`.
    pub hook: &'static str,
    /// The pinned program's id, `None` when not pinned.
    pub id: Option<u32>,
    /// Whether that program is attached to the uplink.
    pub attached: bool,
    /// Times it ran (counted while `kernel.bpf_stats_enabled` is 1).
    pub run_count: u64,
    /// Nanoseconds it ran in all (counted while `kernel.bpf_stats_enabled` is 1).
    pub run_time_ns: u64,
    /// Instructions the verifier processed.
    pub verified_instructions: Option<u32>,
    /// Size of its JIT-compiled code in bytes.
    pub jited_bytes: u32,
}

/// One peer route's state.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteStatus {
    /// The peer.
    pub peer: Ipv4Addr,
    /// The next hop.
    pub gateway: Option<Ipv4Addr>,
    /// Whether satellite added it (and removes it on `down`).
    pub owned: bool,
    /// Whether a /32 route to the peer is in the main table.
    pub present: bool,
}

/// The datapath's state (`satellite-agent datapath status [--json]`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// What `up` recorded.
    pub record: Record,
    /// Whether the uplink exists.
    pub uplink_present: bool,
    /// Whether N is on the address device.
    pub node_ip_present: bool,
    /// The peer routes.
    pub routes: Vec<RouteStatus>,
    /// The tc programs.
    pub programs: Vec<ProgramStatus>,
    /// The packet counters, `None` when the maps are not pinned.
    pub counters: Option<Counters>,
}

impl Status {
    /// Whether everything `up` installed is in place.
    #[must_use]
    pub fn intact(&self) -> bool {
        self.uplink_present
            && self.node_ip_present
            && self.routes.iter().all(|r| r.present)
            && self.programs.iter().all(|p| p.attached)
    }
}

/// The state of the datapath on `uplink` (or the only uplink with a record); `None` when
/// nothing is installed. Reads only.
///
/// # Errors
///
/// [`HostError::State`], [`HostError::Netlink`], [`HostError::Datapath`].
pub async fn status(state_dir: &Path, uplink: Option<&str>) -> Result<Option<Status>, HostError> {
    let Some(record) = read_record(state_dir, uplink)? else {
        return Ok(None);
    };
    let net = Netlink::open().map_err(netlink("opening an rtnetlink socket"))?;
    let uplink_index = net
        .link_index(&record.uplink)
        .await
        .map_err(netlink(format!("looking up {}", record.uplink)))?;
    let device = &record.spec.address_device;
    let node_ip_present = match net
        .link_index(device)
        .await
        .map_err(netlink(format!("looking up {device}")))?
    {
        Some(index) => net
            .addresses(index)
            .await
            .map_err(netlink(format!("listing the addresses of {device}")))?
            .iter()
            .any(|a| a.ip == record.node_ip),
        None => false,
    };
    let main = net
        .routes()
        .await
        .map_err(netlink("listing the main routing table"))?;
    let routes = record
        .spec
        .peers
        .iter()
        .map(|peer| {
            let owned = record.routes.iter().find(|r| r.peer == *peer);
            let found = host_route(&main, *peer);
            RouteStatus {
                peer: *peer,
                gateway: owned.map_or_else(|| found.and_then(|r| r.gateway), |r| r.gateway),
                owned: owned.is_some(),
                // Routes not owned were never needed from us: the kernel's own choice stands.
                present: owned.is_none() || found.is_some(),
            }
        })
        .collect();
    let attached = match uplink_index {
        Some(index) => attached_ids(&net, &record, index).await?,
        None => [Vec::new(), Vec::new()],
    };
    let programs = [
        ("ingress", common::PROG_INGRESS),
        ("egress", common::PROG_EGRESS),
    ]
    .into_iter()
    .zip(attached)
    .map(|((hook, name), ids)| {
        let info = ProgramInfo::from_pin(record.pin_dir.join(name)).ok();
        ProgramStatus {
            hook,
            id: info.as_ref().map(ProgramInfo::id),
            attached: info.as_ref().is_some_and(|i| ids.contains(&i.id())),
            run_count: info.as_ref().map_or(0, ProgramInfo::run_count),
            run_time_ns: info.as_ref().map_or(0, |i| {
                u64::try_from(i.run_time().as_nanos()).unwrap_or(u64::MAX)
            }),
            verified_instructions: info
                .as_ref()
                .and_then(ProgramInfo::verified_instruction_count),
            jited_bytes: info.as_ref().map_or(0, ProgramInfo::size_jitted),
        }
    })
    .collect();
    let counters = Datapath::open(&record.uplink, &record.pin_dir)?
        .map(|d| d.counters())
        .transpose()?;
    Ok(Some(Status {
        uplink_present: uplink_index.is_some(),
        node_ip_present,
        routes,
        programs,
        counters,
        record,
    }))
}

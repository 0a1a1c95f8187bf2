//! `satellite-cni`: a CNI plugin (containernetworking/cni `SPEC.md` 1.1.0) that gives pods on
//! satellite hosts point-to-point networking with built-in IPAM.
//!
//! Each pod gets a veth pair: the pod end (`CNI_IFNAME`) holds a /32 from the node-local
//! `subnet` with a link route to the gateway and routes (default: `0.0.0.0/0`) via it; the host
//! end (`sat` + 12 hex digits) holds the gateway /32 and the route to the pod. Pod egress that
//! leaves the subnet is masqueraded to the outgoing interface's address, and host ports
//! (`portMappings`) are DNAT-ed to the pod, both with nf_tables over netlink. No external
//! program is run.
//!
//! # Commands and versions
//! ADD, DEL, CHECK, STATUS, GC, VERSION; `cniVersion` 0.4.0, 1.0.0 and 1.1.0 (STATUS and GC need
//! 1.1.0). When a configuration has `cniVersions` but no `cniVersion`, the newest supported
//! entry is used. Results carry `interfaces` (host end, pod end), `ips`, `routes` and `dns`;
//! with a `prevResult` (chaining) this plugin's entries are appended to it.
//!
//! # Configuration keys
//! | key | default | meaning |
//! |---|---|---|
//! | `cniVersion` | required (or `cniVersions`) | spec version of the configuration and result |
//! | `name` | required | network name; letters, digits, `_ . -` |
//! | `type` | | `satellite-cni` (the binary's name in `CNI_PATH`) |
//! | `subnet` | required | node-local IPv4 range for pods, `/8`–`/30`, no host bits, e.g. `10.88.0.0/24` |
//! | `gateway` | first address of `subnet` | the host end's address, the pods' next hop |
//! | `routes` | `[{"dst": "0.0.0.0/0"}]` | IPv4 destinations routed via the gateway in the pod |
//! | `mtu` | the uplink's MTU, else 1500 | veth MTU (576–65535) |
//! | `uplink` | interface of the IPv4 default route | interface whose MTU pods inherit; STATUS reports 51 when it is missing |
//! | `masquerade` | `true` | SNAT pod traffic leaving `subnet` to the outgoing interface's address |
//! | `dns` | `{}` | copied into the result (`nameservers`, `domain`, `search`, `options`) |
//! | `dataDir` | `/var/lib/cni/satellite` | allocations: `<dataDir>/<name>/boot-<boot id>.json` (+ `lock`); a reboot releases them all |
//! | `logFile` | `/var/log/satellite-cni.log` | appended to, one line per event; `""` for stderr only |
//! | `logLevel` | `info` | `error`, `warn`, `info` or `debug` |
//! | `capabilities` | | `{"portMappings": true}` to receive host ports from the runtime |
//! | `runtimeConfig.portMappings` | | `[{"hostPort", "containerPort", "protocol" (tcp/udp/sctp), "hostIP"}]`, set by the runtime |
//! | `cni.dev/valid-attachments` | | GC: the attachments to keep (`containerID`, `ifname`) |
//!
//! An `ipam` section is rejected (code 2): addresses come from `subnet`. Unknown keys are
//! logged and ignored.
//!
//! # Output, logs, exit codes
//! stdout carries only the result (or the VERSION answer, or an error result). Log lines go to
//! stderr and `logFile`, each with the command, container ID and interface. The exit status is
//! 0 on success; otherwise it equals the error result's `code`:
//!
//! | code | meaning |
//! |---|---|
//! | 1 | incompatible CNI version (`cniVersion`, `prevResult`, or STATUS/GC below 1.1.0) |
//! | 2 | unsupported field (`ipam`) |
//! | 3 | container unknown: `CNI_NETNS` does not exist (ADD, CHECK) |
//! | 4 | invalid or missing `CNI_*` environment variable |
//! | 5 | I/O failure on the allocation store (`dataDir`) or `/proc/sys` |
//! | 6 | stdin is not a JSON object |
//! | 7 | invalid network configuration (the message names the key and the fix) |
//! | 11 | try again later: the allocation lock was held for more than 10 s |
//! | 50 | STATUS: cannot service ADD (store unusable, subnet full) |
//! | 51 | STATUS: as 50, and existing pods have limited connectivity (uplink missing) |
//! | 100 | no free address in `subnet` |
//! | 101 | a netlink request failed (the message names the interface or rule, `details` the errno) |
//! | 102 | CHECK: the attachment differs from what ADD configured |
//! | 103 | a requested host port is already mapped to another pod |
//! | 104 | `CNI_IFNAME` already exists in the container's namespace |
//!
//! # State and crash safety
//! An allocation (keyed by container ID + ifname, naming the host veth and host ports) is
//! written under an exclusive lock, atomically, *before* ADD creates anything (see [`ipam`]
//! for why the file is per boot); DEL removes the
//! veth and host ports before releasing it; GC releases allocations not in
//! `cni.dev/valid-attachments` together with what they name. So whatever a crash at any point
//! leaves behind, DEL or GC reclaims.

pub mod cmd;
pub mod config;
pub mod env;
pub mod error;
pub mod ipam;
mod log;
pub mod nat;
pub mod netlink;
pub mod result;
pub mod version;

use std::io::{IsTerminal as _, Read as _, Write as _};
use std::process::ExitCode;

use serde::Serialize;
use tracing::{error, info_span, warn};

use crate::config::NetConf;
use crate::env::{Command, Invocation};
use crate::error::{Error, ErrorCode, ErrorResult};
use crate::version::{Version, VersionResult};

/// Runs one invocation from the process environment and stdin, prints the result or error
/// result on stdout, and returns the exit status (success, or the CNI error code).
pub fn main() -> ExitCode {
    let inv = Invocation::from_env(|k| std::env::var(k).ok());
    let reads_stdin = !std::io::stdin().is_terminal();
    let mut stdin = Vec::new();
    if reads_stdin
        && let Err(e) = std::io::stdin()
            .take(config::MAX_STDIN as u64 + 1)
            .read_to_end(&mut stdin)
    {
        return fail(&stdin, &Error::io("reading stdin", e));
    }
    let inv = match inv {
        Ok(inv) => inv,
        Err(e) => {
            log::init(tracing::Level::INFO, None);
            return fail(&stdin, &e);
        }
    };
    if inv.command == Command::Version {
        return print(&VersionResult::default())
            .map_or_else(|e| fail(&stdin, &e), |()| ExitCode::SUCCESS);
    }
    let conf = NetConf::parse(&stdin);
    match &conf {
        Ok(conf) => log::init(conf.log_level, conf.log_file.as_deref()),
        Err(_) => log::init(
            tracing::Level::INFO,
            config::log_file_hint(&stdin).as_deref(),
        ),
    }
    // Created after the subscriber exists: a span created before would be disabled for good.
    let span = info_span!(
        "cni",
        cmd = %inv.command.as_str(),
        container = %inv.container_id,
        ifname = %inv.ifname,
        pod = %pod_name(&inv),
    );
    let _entered = span.enter();
    let conf = match conf {
        Ok(conf) => conf,
        Err(e) => return fail(&stdin, &e),
    };
    if !conf.unknown_keys.is_empty() {
        warn!(keys = ?conf.unknown_keys, "ignoring unknown configuration keys");
    }
    match dispatch(&inv, &conf) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&stdin, &e),
    }
}

fn dispatch(inv: &Invocation, conf: &NetConf) -> Result<(), Error> {
    let needs_1_1 = |what: &str| {
        if conf.version < Version::V1_1_0 {
            Err(Error::IncompatibleVersion(format!(
                "{what} needs cniVersion 1.1.0; the configuration is {}",
                conf.version.as_str()
            )))
        } else {
            Ok(())
        }
    };
    match inv.command {
        Command::Add => print(&cmd::add::run(inv, conf)?),
        Command::Del => cmd::del::run(inv, conf),
        Command::Check => cmd::check::run(inv, conf),
        Command::Status => {
            needs_1_1("STATUS")?;
            cmd::status::run(conf)
        }
        Command::Gc => {
            needs_1_1("GC")?;
            cmd::gc::run(conf)
        }
        Command::Version => print(&VersionResult::default()),
    }
}

/// Logs `e`, prints its error result on stdout and returns its code as the exit status.
fn fail(stdin: &[u8], e: &Error) -> ExitCode {
    error!(code = e.code(), "{e}");
    let version = config::error_version(stdin);
    let _ = print(&ErrorResult::new(version, e));
    ErrorCode::from(e).into()
}

fn print<T: Serialize>(value: &T) -> Result<(), Error> {
    let mut out =
        serde_json::to_vec(value).map_err(|e| Error::io("encoding the result", e.into()))?;
    out.push(b'\n');
    std::io::stdout()
        .lock()
        .write_all(&out)
        .map_err(|e| Error::io("writing the result to stdout", e))
}

fn pod_name(inv: &Invocation) -> String {
    match (inv.arg("K8S_POD_NAMESPACE"), inv.arg("K8S_POD_NAME")) {
        (Some(ns), Some(name)) => format!("{ns}/{name}"),
        _ => "-".into(),
    }
}

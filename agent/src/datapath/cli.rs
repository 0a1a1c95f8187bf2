//! `satellite-agent datapath up|down|status` and `leave`: the command-line side of the host
//! datapath — flags merged over a NodeConfig's `spec.datapath`, and what each command prints.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use super::AttachMode;
use super::host;
use super::host::HostError;
use super::spec::{DatapathSpec, RawDatapathSpec};
use crate::config::NodeConfig;
use crate::error::AgentError;
use crate::parse::ifname::IfName;

/// `satellite-agent datapath …`.
#[derive(Debug, clap::Subcommand)]
pub enum DatapathCommand {
    /// Install (or adopt and update) the datapath; a second run changes nothing
    Up(Box<DatapathUpArgs>),
    /// Remove what `up` installed, and only that
    Down(DatapathSelect),
    /// Show addresses, routes, attached programs and counters
    Status {
        /// Which datapath.
        #[command(flatten)]
        select: DatapathSelect,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
}

/// Flags of `datapath up`; each overrides the NodeConfig's `spec.datapath` field.
#[derive(Debug, clap::Args)]
pub struct DatapathUpArgs {
    /// Take the settings from this NodeConfig's spec.datapath (flags below override them)
    #[arg(short, long)]
    pub config: Option<PathBuf>,
    /// N, the node IP (the VPC address on the proxy) [default: the NodeConfig's spec.node.ip]
    #[arg(long)]
    pub node_ip: Option<Ipv4Addr>,
    /// A proxy's address as this host sees it (repeat for several)
    #[arg(long = "peer")]
    pub peers: Vec<Ipv4Addr>,
    /// The interface the proxy's traffic arrives on [default: the IPv4 default route's]
    #[arg(long)]
    pub uplink: Option<String>,
    /// S, the host's address on the uplink [default: the uplink's primary IPv4 address]
    #[arg(long)]
    pub host_ip: Option<Ipv4Addr>,
    /// Protected ports: PORT[/tcp|/udp] and one FIRST-LAST NodePort range, comma-separated
    /// [default: 10250/tcp,30000-32767]
    #[arg(long, value_delimiter = ',')]
    pub allow_ports: Option<Vec<String>>,
    /// The device N goes on as a /32 [default: lo]
    #[arg(long)]
    pub address_dev: Option<String>,
    /// auto (TCX on kernels >= 6.6, else netlink), tcx or netlink [default: auto]
    #[arg(long, value_parser = parse_attach_mode)]
    pub attach: Option<AttachMode>,
    /// bpffs directory for the pins [default: /sys/fs/bpf/satellite]
    #[arg(long)]
    pub bpffs_dir: Option<PathBuf>,
    /// Where the record of what was installed is kept [default: /run/satellite]
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Stay in the foreground and restore what is deleted until SIGTERM/SIGINT (the datapath
    /// stays installed when it exits)
    #[arg(long)]
    pub watch: bool,
}

/// Selects an installed datapath (`down`, `status`).
#[derive(Debug, clap::Args)]
pub struct DatapathSelect {
    /// The uplink [default: the only one with a datapath]
    #[arg(long)]
    pub uplink: Option<String>,
    /// Where `up` kept its record
    #[arg(long, default_value = "/run/satellite")]
    pub state_dir: PathBuf,
}

fn parse_attach_mode(text: &str) -> Result<AttachMode, String> {
    match text {
        "auto" => Ok(AttachMode::Auto),
        "tcx" => Ok(AttachMode::Tcx),
        "netlink" => Ok(AttachMode::Netlink),
        other => Err(format!("{other:?} is not auto, tcx or netlink")),
    }
}

impl DatapathUpArgs {
    /// The node IP and settings of `datapath up`: the NodeConfig's, overridden by flags.
    ///
    /// Errors: [`AgentError::Config`] for an unusable NodeConfig, [`AgentError::Invalid`] when
    /// no node IP is given, [`AgentError::Datapath`] with every problem of the merged
    /// settings.
    pub fn settings(self) -> Result<(Ipv4Addr, DatapathSpec), AgentError> {
        let (mut spec, config_ip) = match &self.config {
            Some(path) => {
                let config = NodeConfig::load(path)?;
                let ip = config.spec.node.ip();
                (config.spec.datapath.map(Into::into).unwrap_or_default(), ip)
            }
            None => (RawDatapathSpec::default(), None),
        };
        let node_ip = self.node_ip.or(config_ip).ok_or_else(|| {
            AgentError::Invalid(
                "give --node-ip (or -c with a NodeConfig whose spec.node.ip is set)".into(),
            )
        })?;
        if !self.peers.is_empty() {
            spec.peers = self.peers;
        }
        spec.uplink = self.uplink.or(spec.uplink);
        spec.host_address = self.host_ip.or(spec.host_address);
        if let Some(ports) = self.allow_ports {
            spec.allow_ports = ports;
        }
        if let Some(device) = self.address_dev {
            spec.address_device = device;
        }
        if let Some(mode) = self.attach {
            spec.attach_mode = mode;
        }
        if let Some(dir) = self.bpffs_dir {
            spec.bpffs_dir = dir;
        }
        if let Some(dir) = self.state_dir {
            spec.state_dir = dir;
        }
        let spec = DatapathSpec::parse(spec, Some(node_ip)).map_err(|problems| {
            HostError::Invalid(
                problems
                    .into_iter()
                    .map(|p| format!("  - {}: {}", p.field, p.message))
                    .collect(),
            )
        })?;
        Ok((node_ip, spec))
    }
}

/// Runs a `datapath` subcommand.
///
/// Errors: [`AgentError::Datapath`] from the host, [`AgentError::Degraded`] when `status`
/// finds nothing installed or something missing.
pub async fn command(command: DatapathCommand) -> Result<(), AgentError> {
    match command {
        DatapathCommand::Up(args) => {
            let watch = args.watch;
            let (node_ip, spec) = args.settings()?;
            let record = host::up(node_ip, &spec).await?;
            eprintln!(
                "datapath up on {} ({}): {} ↔ {} for peers {}",
                record.uplink,
                record.mode,
                record.host_address,
                record.node_ip,
                comma_list(&record.spec.peers)
            );
            if watch {
                let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
                crate::run::spawn_signal_handler(stop_tx).map_err(|source| {
                    AgentError::Runtime {
                        what: "installing signal handlers",
                        source,
                    }
                })?;
                super::watch::watch(spec.state_dir.clone(), record.uplink.clone(), stop_rx).await?;
            }
            Ok(())
        }
        DatapathCommand::Down(select) => down(&select.state_dir, select.uplink.as_deref()).await,
        DatapathCommand::Status { select, json } => {
            let status = host::status(&select.state_dir, select.uplink.as_deref()).await?;
            let Some(status) = status else {
                if json {
                    println!("null");
                }
                return Err(AgentError::Degraded(format!(
                    "no datapath is installed (no record in {})",
                    select.state_dir.join("datapath").display()
                )));
            };
            if json {
                let text = serde_json::to_string_pretty(&status)
                    .expect("the status is plain data and serializes");
                println!("{text}");
            } else {
                print!("{status}");
            }
            if status.intact() {
                Ok(())
            } else {
                Err(AgentError::Degraded(
                    "the datapath is incomplete (see above)".into(),
                ))
            }
        }
    }
}

/// `satellite-agent leave -c node.yaml`: removes the datapath of the NodeConfig, if it has
/// one.
///
/// Errors: [`AgentError::Config`], [`AgentError::Datapath`].
pub async fn leave(config: &Path) -> Result<(), AgentError> {
    let config = NodeConfig::load(config)?;
    let Some(spec) = config.spec.datapath else {
        eprintln!("the NodeConfig has no spec.datapath: nothing installed on the host");
        return Ok(());
    };
    down(&spec.state_dir, spec.uplink.as_ref().map(IfName::as_str)).await
}

/// Removes the datapath on `uplink` (or the only one) recorded in `state_dir`; prints each
/// removed item.
async fn down(state_dir: &Path, uplink: Option<&str>) -> Result<(), AgentError> {
    let removed = host::down(state_dir, uplink).await?;
    match removed.uplink {
        None => eprintln!("no datapath installed: nothing to remove"),
        Some(uplink) => {
            for item in &removed.items {
                println!("removed {item}");
            }
            eprintln!("datapath on {uplink} removed");
        }
    }
    Ok(())
}

fn comma_list<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

//! `satellite-agent`: the host agent that makes a GPU host outside AWS an Amazon EKS node.
//!
//! # Commands
//! ```text
//! satellite-agent join  -c node.yaml [--root DIR] [--dry-run]   # render kubelet's files
//! satellite-agent run   -c node.yaml [--root DIR]               # supervise kubelet (systemd Type=notify)
//! satellite-agent admin authorize|revoke --role-arn ARN (--node-name NAME | -c node.yaml)
//!                       [--kubeconfig FILE] [--dry-run]         # kube-system/aws-auth mapping
//! satellite-agent datapath up (-c node.yaml | --node-ip N --peer ADDR…) [--uplink IF]
//!                       [--allow-ports LIST] [--watch] …        # N on lo, peer routes, tc NAT
//! satellite-agent datapath down [--uplink IF] | status [--uplink IF] [--json]
//! satellite-agent leave -c node.yaml                            # remove what the agent installed
//! satellite-agent proxy --map N=PUBLIC_ADDR:PORTS… | -c proxy.yaml  # VPC side: TCP pass-through
//! ```
//! Logs go to stderr; verbosity from `SATELLITE_LOG` (`info` default; `kubelet=warn` style
//! per-target directives accepted).
//!
//! # Exit codes
//! | code | meaning |
//! |------|---------|
//! | 0 | success (`join --dry-run`: also when changes are pending) |
//! | 1 | other failure (`proxy`: a port could not be bound) |
//! | 2 | bad command line |
//! | 3 | invalid NodeConfig, ProxyConfig or input |
//! | 4 | AWS failure (credentials, STS, EKS, EC2) |
//! | 5 | Kubernetes API failure (unreachable, unauthorized, aws-auth refused) |
//! | 6 | host networking failure (netlink, eBPF load/attach, teardown) |
//!
//! `datapath status` exits 0 when everything `up` installed is in place, 1 when something is
//! missing or nothing is installed.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use satellite_agent::admin::{self, Action, NodeMapping};
use satellite_agent::config::{NodeConfig, node_name};
use satellite_agent::datapath::AttachMode;
use satellite_agent::datapath::host::{self, HostError};
use satellite_agent::datapath::spec::DatapathSpec;
use satellite_agent::join::{self, JoinOptions};
use satellite_agent::run::{self, RunOptions};

/// Host agent for satellite EKS nodes.
#[derive(Debug, Parser)]
#[command(name = "satellite-agent", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Resolve the cluster and node IP, check the node identity, write kubelet's files
    Join {
        /// The NodeConfig file
        #[arg(short, long)]
        config: PathBuf,
        /// Write everything under this directory instead of /
        #[arg(long, default_value = "/")]
        root: PathBuf,
        /// Print the diff of what would change; write nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Run the node: supervise kubelet, keep labels, notify systemd
    Run {
        /// The NodeConfig file
        #[arg(short, long)]
        config: PathBuf,
        /// The directory `join` wrote under
        #[arg(long, default_value = "/")]
        root: PathBuf,
    },
    /// VPC side: pass TCP through from each node IP N to the GPU host's public address
    Proxy(satellite_agent::proxy::ProxyArgs),
    /// Cluster-side administration (run with cluster-admin credentials)
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// The host datapath on its own (root): N on lo, peer routes, tc NAT with the proxy
    Datapath {
        #[command(subcommand)]
        command: DatapathCommand,
    },
    /// Remove what the agent installed on this host (the datapath of the NodeConfig)
    Leave {
        /// The NodeConfig file
        #[arg(short, long)]
        config: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum DatapathCommand {
    /// Install (or adopt and update) the datapath; a second run changes nothing
    Up(Box<DatapathUpArgs>),
    /// Remove what `up` installed, and only that
    Down(DatapathSelect),
    /// Show addresses, routes, attached programs and counters
    Status {
        #[command(flatten)]
        select: DatapathSelect,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
struct DatapathUpArgs {
    /// Take the settings from this NodeConfig's spec.datapath (flags below override them)
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// N, the node IP (the VPC address on the proxy) [default: the NodeConfig's spec.node.ip]
    #[arg(long)]
    node_ip: Option<Ipv4Addr>,
    /// A proxy's address as this host sees it (repeat for several)
    #[arg(long = "peer")]
    peers: Vec<Ipv4Addr>,
    /// The interface the proxy's traffic arrives on [default: the IPv4 default route's]
    #[arg(long)]
    uplink: Option<String>,
    /// S, the host's address on the uplink [default: the uplink's primary IPv4 address]
    #[arg(long)]
    host_ip: Option<Ipv4Addr>,
    /// Protected ports: PORT[/tcp|/udp] and one FIRST-LAST NodePort range, comma-separated
    /// [default: 10250/tcp,30000-32767]
    #[arg(long, value_delimiter = ',')]
    allow_ports: Option<Vec<String>>,
    /// The device N goes on as a /32 [default: lo]
    #[arg(long)]
    address_dev: Option<String>,
    /// auto (TCX on kernels >= 6.6, else netlink), tcx or netlink [default: auto]
    #[arg(long, value_parser = parse_attach_mode)]
    attach: Option<AttachMode>,
    /// bpffs directory for the pins [default: /sys/fs/bpf/satellite]
    #[arg(long)]
    bpffs_dir: Option<PathBuf>,
    /// Where the record of what was installed is kept [default: /run/satellite]
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Stay in the foreground and restore what is deleted until SIGTERM/SIGINT (the datapath
    /// stays installed when it exits)
    #[arg(long)]
    watch: bool,
}

#[derive(Debug, clap::Args)]
struct DatapathSelect {
    /// The uplink [default: the only one with a datapath]
    #[arg(long)]
    uplink: Option<String>,
    /// Where `up` kept its record
    #[arg(long, default_value = "/run/satellite")]
    state_dir: PathBuf,
}

fn parse_attach_mode(text: &str) -> Result<AttachMode, String> {
    match text {
        "auto" => Ok(AttachMode::Auto),
        "tcx" => Ok(AttachMode::Tcx),
        "netlink" => Ok(AttachMode::Netlink),
        other => Err(format!("{other:?} is not auto, tcx or netlink")),
    }
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Map the node's IAM role (or user) to system:node:<name> in kube-system/aws-auth
    Authorize(AdminArgs),
    /// Remove that mapping (and nothing else)
    Revoke(AdminArgs),
}

#[derive(Debug, clap::Args)]
struct AdminArgs {
    /// The node's IAM role ARN (or IAM user ARN, mapped under mapUsers) [default: the NodeConfig's roleArn]
    #[arg(long)]
    role_arn: Option<String>,
    /// The node name (fargate-ip-…); or give the NodeConfig with -c and --node-ip
    #[arg(long, conflicts_with = "node_ip")]
    node_name: Option<String>,
    /// The node IP; the name is derived with the NodeConfig's region
    #[arg(long, requires = "config")]
    node_ip: Option<Ipv4Addr>,
    /// The NodeConfig file
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// kubeconfig with cluster-admin rights [default: KUBECONFIG or ~/.kube/config]
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Print the diff; change nothing
    #[arg(long)]
    dry_run: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    // The proxy is a data plane: one worker per CPU. Everything else: two.
    let workers = match cli.command {
        Command::Proxy(_) => std::thread::available_parallelism().map_or(2, |n| n.get()),
        _ => 2,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("satellite-agent: error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, message)) => {
            eprintln!("satellite-agent: error: {message}");
            ExitCode::from(code)
        }
    }
}

async fn dispatch(command: Command) -> Result<(), (u8, String)> {
    match command {
        Command::Join {
            config,
            root,
            dry_run,
        } => {
            let agent_binary = std::env::current_exe()
                .unwrap_or_else(|_| PathBuf::from("/usr/local/bin/satellite-agent"));
            let report = join::join(&JoinOptions {
                config_path: config,
                root,
                dry_run,
                agent_binary,
            })
            .await
            .map_err(|e| (e.exit_code(), e.to_string()))?;
            print!("{}", report.diff);
            if dry_run {
                eprintln!(
                    "node {} ({}): {}",
                    report.node_name,
                    report.node_ip,
                    if report.diff.is_empty() {
                        "up to date"
                    } else {
                        "changes pending (dry run)"
                    }
                );
            } else {
                eprintln!(
                    "node {} ({}): {} file(s) written",
                    report.node_name,
                    report.node_ip,
                    report.changed.len()
                );
            }
            Ok(())
        }
        Command::Run { config, root } => run::run(&RunOptions {
            config_path: config,
            root,
        })
        .await
        .map_err(|e| (e.exit_code(), e.to_string())),
        Command::Proxy(args) => satellite_agent::proxy::run(&args)
            .await
            .map_err(|e| (e.exit_code(), e.to_string())),
        Command::Admin { command } => {
            let (action, args) = match command {
                AdminCommand::Authorize(args) => (Action::Authorize, args),
                AdminCommand::Revoke(args) => (Action::Revoke, args),
            };
            admin_command(action, args).await
        }
        Command::Datapath { command } => datapath_command(command).await,
        Command::Leave { config } => {
            let config = NodeConfig::load(&config).map_err(|e| (3, e.to_string()))?;
            let Some(spec) = config.spec.datapath else {
                eprintln!("the NodeConfig has no spec.datapath: nothing installed on the host");
                return Ok(());
            };
            datapath_down(&spec.state_dir, spec.uplink.as_deref()).await
        }
    }
}

fn host_error(e: HostError) -> (u8, String) {
    (e.exit_code(), e.to_string())
}

async fn datapath_command(command: DatapathCommand) -> Result<(), (u8, String)> {
    match command {
        DatapathCommand::Up(args) => {
            let watch = args.watch;
            let (node_ip, spec) = datapath_settings(*args)?;
            let record = host::up(node_ip, &spec).await.map_err(host_error)?;
            eprintln!(
                "datapath up on {} ({}): {} ↔ {} for peers {}",
                record.uplink,
                record.mode,
                record.host_address,
                record.node_ip,
                join(&record.spec.peers)
            );
            if watch {
                let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
                run::spawn_signal_handler(stop_tx).map_err(|e| (1, e.to_string()))?;
                satellite_agent::datapath::watch::watch(
                    spec.state_dir.clone(),
                    record.uplink.clone(),
                    stop_rx,
                )
                .await
                .map_err(host_error)?;
            }
            Ok(())
        }
        DatapathCommand::Down(select) => {
            datapath_down(&select.state_dir, select.uplink.as_deref()).await
        }
        DatapathCommand::Status { select, json } => {
            let status = host::status(&select.state_dir, select.uplink.as_deref())
                .await
                .map_err(host_error)?;
            let Some(status) = status else {
                if json {
                    println!("null");
                }
                return Err((
                    1,
                    format!(
                        "no datapath is installed (no record in {})",
                        select.state_dir.join("datapath").display()
                    ),
                ));
            };
            if json {
                let text = serde_json::to_string_pretty(&status).map_err(|e| (1, e.to_string()))?;
                println!("{text}");
            } else {
                print!("{}", format_status(&status));
            }
            if status.intact() {
                Ok(())
            } else {
                Err((1, "the datapath is incomplete (see above)".into()))
            }
        }
    }
}

async fn datapath_down(
    state_dir: &std::path::Path,
    uplink: Option<&str>,
) -> Result<(), (u8, String)> {
    let removed = host::down(state_dir, uplink).await.map_err(host_error)?;
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

/// The node IP and settings of `datapath up`: the NodeConfig's, overridden by flags.
fn datapath_settings(args: DatapathUpArgs) -> Result<(Ipv4Addr, DatapathSpec), (u8, String)> {
    let invalid = |message: String| (3, message);
    let (mut spec, config_ip) = match &args.config {
        Some(path) => {
            let config = NodeConfig::load(path).map_err(|e| invalid(e.to_string()))?;
            let ip = config.spec.node.ip;
            (config.spec.datapath.unwrap_or_default(), ip)
        }
        None => (DatapathSpec::default(), None),
    };
    let node_ip = args.node_ip.or(config_ip).ok_or_else(|| {
        invalid("give --node-ip (or -c with a NodeConfig whose spec.node.ip is set)".into())
    })?;
    if !args.peers.is_empty() {
        spec.peers = args.peers;
    }
    spec.uplink = args.uplink.or(spec.uplink);
    spec.host_address = args.host_ip.or(spec.host_address);
    if let Some(ports) = args.allow_ports {
        spec.allow_ports = ports;
    }
    if let Some(device) = args.address_dev {
        spec.address_device = device;
    }
    if let Some(mode) = args.attach {
        spec.attach_mode = mode;
    }
    if let Some(dir) = args.bpffs_dir {
        spec.bpffs_dir = dir;
    }
    if let Some(dir) = args.state_dir {
        spec.state_dir = dir;
    }
    Ok((node_ip, spec))
}

fn join<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn format_status(status: &host::Status) -> String {
    use std::fmt::Write as _;
    let r = &status.record;
    let yes = |b: bool| if b { "present" } else { "MISSING" };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "uplink        {} ({}), host address {}",
        r.uplink,
        if status.uplink_present {
            "up"
        } else {
            "MISSING"
        },
        r.host_address
    );
    let _ = writeln!(
        out,
        "node IP       {}/32 on {}: {}{}",
        r.node_ip,
        r.spec.address_device,
        yes(status.node_ip_present),
        if r.address_added {
            ""
        } else {
            " (not ours: it was there before)"
        }
    );
    for route in &status.routes {
        let _ = writeln!(
            out,
            "peer          {}{}: {}",
            route.peer,
            match (route.owned, route.gateway) {
                (true, Some(gw)) => format!(", route /32 via {gw} dev {}", r.uplink),
                (true, None) => format!(", route /32 dev {}", r.uplink),
                (false, _) => ", existing route".to_owned(),
            },
            yes(route.present)
        );
    }
    for program in &status.programs {
        let _ = writeln!(
            out,
            "program       {:<7} {} id {}: {}",
            program.hook,
            r.mode,
            program.id.map_or("-".to_owned(), |id| id.to_string()),
            if program.attached {
                "attached"
            } else {
                "NOT ATTACHED"
            }
        );
    }
    if let Ok(ports) = r.spec.allow_ports() {
        let mut list: Vec<String> = ports
            .ports
            .iter()
            .map(|(p, n)| format!("{n}/{p}"))
            .collect();
        if let Some(range) = ports.nodeports {
            list.push(format!("{}-{} (tcp, udp)", range.start(), range.end()));
        }
        let _ = writeln!(out, "protected     {} (peers only)", list.join(", "));
    }
    if let Some(c) = &status.counters {
        let _ = writeln!(
            out,
            "counters      ingress rewritten {}, egress rewritten {}, ICMP errors rewritten {}, \
             dropped {}, errors {}",
            c.ingress_rewritten,
            c.egress_rewritten,
            c.icmp_error_rewritten,
            c.dropped_not_allowed,
            c.errors
        );
    }
    out
}

async fn admin_command(action: Action, args: AdminArgs) -> Result<(), (u8, String)> {
    let invalid = |message: String| (3, message);
    let config = args
        .config
        .as_deref()
        .map(NodeConfig::load)
        .transpose()
        .map_err(|e| invalid(e.to_string()))?;
    let arn = args
        .role_arn
        .or_else(|| config.as_ref().map(|c| c.spec.identity.role_arn.clone()))
        .ok_or_else(|| invalid("give --role-arn, or -c with the node's NodeConfig".into()))?;
    if !arn.starts_with("arn:") || !(arn.contains(":role/") || arn.contains(":user/")) {
        return Err(invalid(format!("{arn:?} is not an IAM role or user ARN")));
    }
    let node_name = match (args.node_name, args.node_ip, &config) {
        (Some(name), _, _) => name,
        (None, Some(ip), Some(config)) => node_name(ip, &config.spec.cluster.region),
        (None, _, Some(config)) => match config.spec.node.ip {
            Some(ip) => node_name(ip, &config.spec.cluster.region),
            None => {
                return Err(invalid(
                    "the NodeConfig does not fix the node IP: give --node-ip or --node-name".into(),
                ));
            }
        },
        (None, _, None) => return Err(invalid("give --node-name (or -c with --node-ip)".into())),
    };
    let kube_config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| invalid(format!("{}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await
        }
        None => kube::Config::from_kubeconfig(&Default::default()).await,
    }
    .map_err(|e| invalid(format!("kubeconfig: {e}")))?;
    let client = kube::Client::try_from(kube_config).map_err(|e| (5, e.to_string()))?;
    let mapping = NodeMapping { arn, node_name };
    let outcome = admin::apply(client, action, &mapping, args.dry_run)
        .await
        .map_err(|e| match e {
            admin::AdminError::Kube(_) | admin::AdminError::Contended => (5, e.to_string()),
            _ => (3, e.to_string()),
        })?;
    print!("{}", outcome.diff);
    let verb = match action {
        Action::Authorize => "authorized",
        Action::Revoke => "revoked",
    };
    eprintln!(
        "{} {} as system:node:{}: {}",
        verb,
        mapping.arn,
        mapping.node_name,
        match (outcome.changed, args.dry_run) {
            (false, _) => "already so, nothing changed",
            (true, true) => "dry run, nothing written",
            (true, false) => "aws-auth updated",
        }
    );
    Ok(())
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SATELLITE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colour only for a terminal: journald and log files get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(filter)
        .init();
}

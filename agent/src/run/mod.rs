//! `satellite-agent run`: the daemon. Starts and supervises kubelet (and, with
//! `spec.kubeProxy`, kube-proxy) with the flags `join` rendered, watches their health, keeps
//! the Node's labels, tells systemd when the node is up (`Type=notify`), and stops them on
//! SIGTERM/SIGINT.

pub mod labels;
pub mod supervisor;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::watch as channel;

use crate::aws::{self, AwsError};
use crate::config::{ConfigError, NodeConfig};
use crate::datapath::host::{self, HostError};
use crate::datapath::watch;
use crate::error::{ExitCode, Report};
use crate::render::{AGENT_VERSION_LABEL, COMPUTE_TYPE_LABEL, Layout, under};
use supervisor::{ChildCommand, Component};

/// kubelet's health endpoint (KubeletConfiguration `healthzBindAddress`:`healthzPort`
/// defaults).
pub const KUBELET_HEALTHZ: &str = "http://127.0.0.1:10248/healthz";
/// kube-proxy's health endpoint (the rendered `healthzBindAddress`).
pub const KUBE_PROXY_HEALTHZ: &str = "http://127.0.0.1:10256/healthz";

/// Inputs of `run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The NodeConfig file.
    pub config_path: PathBuf,
    /// The prefix `join` wrote under.
    pub root: PathBuf,
}

/// Why `run` could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The NodeConfig is unreadable or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A file `join` writes is missing or malformed.
    #[error("{path}: {message}; run `satellite-agent join` first")]
    NotJoined {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Setting up the node identity failed.
    #[error(transparent)]
    Aws(#[from] AwsError),
    /// Installing the signal handlers failed.
    #[error("installing signal handlers")]
    Signals(#[source] std::io::Error),
    /// Installing the datapath (`spec.datapath`) failed.
    #[error("the datapath")]
    Datapath(#[from] HostError),
}

impl From<&RunError> for ExitCode {
    /// `Invalid` config, `Aws`, the datapath's, `Other` otherwise.
    fn from(error: &RunError) -> Self {
        match error {
            RunError::Config(_) => ExitCode::Invalid,
            RunError::Aws(_) => ExitCode::Aws,
            RunError::Datapath(e) => e.into(),
            RunError::NotJoined { .. } | RunError::Signals(_) => ExitCode::Other,
        }
    }
}

/// Runs until SIGTERM or SIGINT; kubelet is stopped before it returns.
///
/// Errors: see [`RunError`] (all detected before kubelet starts).
pub async fn run(options: &RunOptions) -> Result<(), RunError> {
    let config = NodeConfig::load(&options.config_path)?;
    let root = &options.root;
    let layout = Layout::new(&config);
    let args: Vec<String> = read_json(&under(root, &layout.kubelet_flags))?;
    let node_name =
        flag_value(&args, "--hostname-override").ok_or_else(|| RunError::NotJoined {
            path: layout.kubelet_flags.clone(),
            message: "no --hostname-override".into(),
        })?;
    let node_ip = flag_value(&args, "--node-ip").and_then(|ip| ip.parse().ok());
    let endpoint = api_server(&under(root, &layout.kubeconfig))?;
    let ca_path = under(root, &layout.ca);
    let ca_pem = std::fs::read_to_string(&ca_path).map_err(|e| RunError::NotJoined {
        path: ca_path.clone(),
        message: e.to_string(),
    })?;
    let minter = aws::minter(&config, root).await?;
    let command = ChildCommand {
        component: Component::Kubelet,
        binary: config.spec.kubelet.binary.clone(),
        args,
    };
    // Read before anything starts: a missing file is a `join` to run, not a restart loop.
    let kube_proxy = match &config.spec.kube_proxy {
        Some(spec) => Some(ChildCommand {
            component: Component::KubeProxy,
            binary: spec.binary.clone(),
            args: read_json(&under(root, &layout.kube_proxy_flags))?,
        }),
        None => None,
    };
    let mut wanted = config.spec.kubelet.labels.clone();
    wanted.insert(COMPUTE_TYPE_LABEL.0.into(), COMPUTE_TYPE_LABEL.1.into());
    wanted.insert(
        AGENT_VERSION_LABEL.into(),
        env!("CARGO_PKG_VERSION").to_owned(),
    );

    let (stop_tx, stop_rx) = channel::channel(false);
    let (started_tx, started_rx) = channel::channel(0u64);
    spawn_signal_handler(stop_tx).map_err(RunError::Signals)?;
    if let Some(spec) = &config.spec.datapath {
        // kubelet refuses a --node-ip that is on no interface: N goes on first.
        let node_ip = node_ip.ok_or_else(|| RunError::NotJoined {
            path: layout.kubelet_flags.clone(),
            message: "no --node-ip".into(),
        })?;
        let record = host::up(node_ip, spec).await?;
        tracing::info!(
            uplink = %record.uplink,
            mode = %record.mode,
            host_address = %record.host_address,
            node_ip = %record.node_ip,
            "datapath up"
        );
        let (state_dir, uplink, stop) = (spec.state_dir.clone(), record.uplink, stop_rx.clone());
        tokio::spawn(async move {
            if let Err(e) = watch::watch(state_dir, uplink, stop).await {
                tracing::error!(error = %Report(&e), "datapath reconciliation stopped");
            }
        });
    }
    let supervisor = tokio::spawn(supervisor::supervise(command, stop_rx.clone(), started_tx));
    let mut health = vec![(Component::Kubelet, KUBELET_HEALTHZ)];
    let proxy_supervisor = kube_proxy.map(|command| {
        health.push((Component::KubeProxy, KUBE_PROXY_HEALTHZ));
        let (proxy_started, _) = channel::channel(0u64);
        tokio::spawn(supervisor::supervise(
            command,
            stop_rx.clone(),
            proxy_started,
        ))
    });
    tokio::spawn(watch_health(health, stop_rx.clone()));
    tokio::spawn(keep_labels(
        labels::NodeClient::new(endpoint, ca_pem, minter),
        node_name,
        wanted,
        started_rx,
        stop_rx,
    ));
    if let Err(e) = supervisor.await {
        tracing::error!(error = %Report(&e), "kubelet supervisor failed");
    }
    if let Some(handle) = proxy_supervisor
        && let Err(e) = handle.await
    {
        tracing::error!(error = %Report(&e), "kube-proxy supervisor failed");
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    Ok(())
}

/// Turns `stop` true on the first SIGTERM or SIGINT.
///
/// # Errors
///
/// When the signal handlers cannot be installed.
pub fn spawn_signal_handler(stop: channel::Sender<bool>) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = int.recv() => tracing::info!("SIGINT: stopping"),
        }
        stop.send_replace(true);
    });
    Ok(())
}

/// Polls each component's healthz every 2 s; the first time all are healthy tells systemd
/// we are ready, and every change of a component's health is logged.
async fn watch_health(
    endpoints: Vec<(Component, &'static str)>,
    mut stop: channel::Receiver<bool>,
) {
    let mut healthy = vec![false; endpoints.len()];
    let mut notified = false;
    loop {
        for ((component, url), was) in endpoints.iter().zip(healthy.iter_mut()) {
            let url = *url;
            let now = tokio::task::spawn_blocking(move || {
                ureq::get(url)
                    .config()
                    .timeout_global(Some(Duration::from_secs(2)))
                    .build()
                    .call()
                    .is_ok()
            })
            .await
            .unwrap_or(false);
            if now != *was {
                *was = now;
                tracing::info!(healthy = now, "{} health changed", component.name());
            }
        }
        if healthy.iter().all(|h| *h) && !notified {
            notified = true;
            let _ = sd_notify::notify(&[
                sd_notify::NotifyState::Ready,
                sd_notify::NotifyState::Status("node components healthy"),
            ]);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Reconciles the Node's labels every [`labels::RESYNC`] and whenever kubelet restarts.
async fn keep_labels(
    mut client: labels::NodeClient,
    node_name: String,
    wanted: BTreeMap<String, String>,
    mut started: channel::Receiver<u64>,
    mut stop: channel::Receiver<bool>,
) {
    loop {
        let result = match client.get().await {
            Ok(kube) => labels::reconcile(kube, &node_name, &wanted).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(true) => tracing::info!(node = %node_name, "node labels updated"),
            Ok(false) => {}
            Err(e) => tracing::warn!(node = %node_name, error = %e, "label reconciliation failed"),
        }
        // Short period until the Node exists (kubelet registers it a few seconds in).
        tokio::select! {
            _ = tokio::time::sleep(labels::RESYNC.min(Duration::from_secs(5))) => {}
            _ = started.changed() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, RunError> {
    let text = std::fs::read_to_string(path).map_err(|e| RunError::NotJoined {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    serde_json::from_str(&text).map_err(|e| RunError::NotJoined {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

fn api_server(kubeconfig: &Path) -> Result<String, RunError> {
    let config =
        kube::config::Kubeconfig::read_from(kubeconfig).map_err(|e| RunError::NotJoined {
            path: kubeconfig.to_owned(),
            message: e.to_string(),
        })?;
    config
        .clusters
        .first()
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.server.clone())
        .ok_or_else(|| RunError::NotJoined {
            path: kubeconfig.to_owned(),
            message: "no cluster server".into(),
        })
}

fn flag_value(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .find_map(|a| a.strip_prefix(name).and_then(|rest| rest.strip_prefix('=')))
        .map(str::to_owned)
}

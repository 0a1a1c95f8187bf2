//! `satellite-agent proxy`: the VPC-side TCP pass-through.
//!
//! The proxy runs on a small machine in the cluster's VPC that holds each node's VPC address N
//! (for example as secondary private IPs of its ENI). For every node it listens on N:port and
//! passes each TCP connection through, byte for byte, to the GPU host's public address on the
//! same port; the host's datapath makes it arrive as traffic for N. One proxy serves many
//! nodes.
//!
//! ```text
//! satellite-agent proxy --map N=PUBLIC_ADDR:PORTS [--map …] [--health ADDR:PORT]
//!                       [--max-connections N] [--idle-timeout 1h] [--connect-timeout 5s]
//!                       [--drain-timeout 30s] [--no-splice] [--check]
//! satellite-agent proxy -c proxy.yaml [--check]
//! ```
//!
//! e.g. `--map 10.0.12.34=203.0.113.7:10250,443,80,8080,30000-32767`. The file form and every
//! key are described in [`config`]; the counters in [`health`].
//!
//! # Behaviour
//!
//! - **All or nothing.** The whole configuration is checked first (every problem is reported,
//!   with its field and the fix; exit code 3); then every listener and the health endpoint are
//!   bound, and if one fails nothing stays bound (exit code 1).
//! - **`IP_FREEBIND`.** Listeners bind with `IP_FREEBIND`, so the proxy can start before N is
//!   configured on an interface (an ENI's secondary addresses may appear after boot); traffic
//!   arrives once it is. A node address not yet local is logged as a warning at start-up, so a
//!   typo does not go unnoticed.
//! - **Zero copy.** Bytes move with `splice(2)` through pooled pipes ([`splice`]); if the
//!   kernel refuses, the proxy copies through user space (counted in
//!   `satellite_proxy_copy_fallbacks_total`). `--no-splice` copies from the start.
//! - **Half-close.** End of stream from one side becomes `shutdown(SHUT_WR)` on the other; the
//!   other direction keeps flowing until it ends as well. A reset or other error on either side
//!   resets both (`SO_LINGER` 0).
//! - **Limits.** Past the global (or a node's) connection limit, a new connection is reset at
//!   once and counted as rejected. A connection with no byte either way for the idle timeout is
//!   closed. Both sockets use `TCP_NODELAY` and TCP keepalive (60 s, then every 10 s, 6 probes).
//! - **Drain.** On SIGTERM or SIGINT the proxy closes its listeners (`/healthz` turns 503), lets
//!   open connections finish for up to the drain timeout, resets those still open, and exits 0.
//!   A second signal ends the drain at once. With `NOTIFY_SOCKET` set it tells systemd
//!   `READY=1` once listening and `STOPPING=1` when draining.
//! - **File descriptors.** The soft `RLIMIT_NOFILE` is raised to the hard limit; each open
//!   connection needs two descriptors, plus four while data is in flight (a pipe per direction).
//!
//! # Exit codes
//! | code | meaning |
//! |------|---------|
//! | 0 | drained and stopped after SIGTERM/SIGINT (or `--check` passed) |
//! | 1 | a listener or the health endpoint could not be bound; signal handlers failed |
//! | 2 | bad command line (clap) |
//! | 3 | invalid configuration (nothing was bound) |
//!
//! One file (over 500 lines): the accept loop, the admission limits, the connection state
//! machine and the drain are one data path; splitting them would scatter its invariants
//! (what each permit and counter means). The copy engine and the metrics are separate.

pub mod config;
pub mod health;
pub mod splice;

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use socket2::{Domain, SockRef, Socket, TcpKeepalive, Type};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::ExitCode;
pub use config::{ConfigError, Plan, ProxyArgs};
use health::{Metrics, NodeMetrics};
use splice::{Moved, Outcome, PipePool, PumpOptions, Side};

/// `listen(2)` backlog of every listener (the kernel caps it at `net.core.somaxconn`).
const BACKLOG: i32 = 4096;
/// Idle time before the first TCP keepalive probe, on both sockets of a connection.
const KEEPALIVE_TIME: Duration = Duration::from_secs(60);
/// Time between keepalive probes.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Unanswered probes before the kernel resets the connection.
const KEEPALIVE_PROBES: u32 = 6;
/// Pause after an accept error such as `EMFILE`, so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Why the proxy could not run.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The configuration is unreadable or invalid (nothing was bound).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listening socket could not be set up; everything bound before it was closed again.
    ///
    /// The OS error is part of the message (the hint after it depends on it), so it is not
    /// also a `source()`.
    #[error("cannot listen on {addr} ({what}): {error}{}; nothing is left bound", bind_hint(.error, *.addr))]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// `--map …` / `spec.nodes[i]`, or `health`.
        what: String,
        /// The system's error.
        error: io::Error,
    },
    /// Installing the signal handlers failed.
    #[error("installing signal handlers")]
    Signals(#[source] io::Error),
}

impl From<&ProxyError> for ExitCode {
    /// `Invalid` configuration, `Other` otherwise.
    fn from(error: &ProxyError) -> Self {
        match error {
            ProxyError::Config(_) => ExitCode::Invalid,
            ProxyError::Bind { .. } | ProxyError::Signals(_) => ExitCode::Other,
        }
    }
}

fn bind_hint(error: &io::Error, addr: SocketAddr) -> String {
    match error.raw_os_error() {
        Some(libc::EADDRINUSE) => format!(
            " (another socket holds it: `ss -ltnp 'sport = :{}'` shows which)",
            addr.port()
        ),
        Some(libc::EACCES) => {
            " (ports below 1024 need root or CAP_NET_BIND_SERVICE, e.g. AmbientCapabilities= in \
             the unit)"
                .into()
        }
        Some(libc::EMFILE | libc::ENFILE) => {
            " (too many open files: raise LimitNOFILE= or serve fewer ports)".into()
        }
        Some(libc::EADDRNOTAVAIL) => " (the address is not on this host)".into(),
        _ => String::new(),
    }
}

/// Runs `satellite-agent proxy` with `args` until SIGTERM/SIGINT (or only checks the
/// configuration with `--check`, printing one `listen -> target` line per port).
///
/// Errors: see [`ProxyError`]; configuration errors come before anything is bound.
pub async fn run(args: &ProxyArgs) -> Result<(), ProxyError> {
    let plan = Plan::from_args(args)?;
    if args.check {
        for (_, listen, target) in plan.listeners() {
            println!("{listen} -> {target}");
        }
        return Ok(());
    }
    raise_nofile_limit(&plan);
    let mut term = signal(SignalKind::terminate()).map_err(ProxyError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(ProxyError::Signals)?;
    let proxy = Proxy::bind(plan)?;
    // Counts signals: the first starts the drain, the second ends it.
    let (signals_tx, signals) = watch::channel(0u32);
    tokio::spawn(async move {
        for n in 1.. {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            tracing::info!("{name} received{}", if n == 1 { "" } else { " again" });
            if signals_tx.send(n).is_err() {
                break;
            }
        }
    });
    let received = |count: u32| {
        let mut signals = signals.clone();
        async move {
            let _ = signals.wait_for(|&n| n >= count).await;
        }
    };
    proxy.serve(received(1), received(2)).await;
    Ok(())
}

/// A bound listener of one node mapping.
#[derive(Debug)]
struct Listener {
    socket: TcpListener,
    mapping: usize,
    target: SocketAddr,
}

/// What every connection of one node mapping shares.
#[derive(Debug)]
struct Node {
    node: IpAddr,
    limit: Option<Arc<Semaphore>>,
    metrics: NodeMetrics,
}

/// What every connection shares.
#[derive(Debug)]
struct Shared {
    limit: Arc<Semaphore>,
    pool: PipePool,
    splice: bool,
    idle_timeout: Duration,
    connect_timeout: Duration,
    cut: CancellationToken,
    fallbacks: Counter,
}

/// A proxy with every socket bound, ready to [`serve`](Proxy::serve).
#[derive(Debug)]
pub struct Proxy {
    plan: Plan,
    listeners: Vec<Listener>,
    health: Option<TcpListener>,
    metrics: Arc<Metrics>,
}

impl Proxy {
    /// Binds every listener of `plan` (with `IP_FREEBIND`) and the health endpoint, or none:
    /// on the first failure the sockets bound so far are closed. Must run inside a tokio
    /// runtime.
    ///
    /// Errors: [`ProxyError::Bind`].
    pub fn bind(plan: Plan) -> Result<Proxy, ProxyError> {
        let mut listeners = Vec::new();
        let health = plan
            .health
            .map(|addr| listen(addr, false).map_err(|source| bind_error(addr, "health", source)))
            .transpose()?;
        for (mapping, addr, target) in plan.listeners() {
            let socket = listen(addr, true).map_err(|source| {
                let m = &plan.mappings[mapping];
                bind_error(addr, &format!("node {} -> {}", m.node, m.target), source)
            })?;
            listeners.push(Listener {
                socket,
                mapping,
                target,
            });
        }
        for m in &plan.mappings {
            if !is_local(m.node) {
                tracing::warn!(
                    "node address {} is not configured on this host yet: listening anyway \
                     (IP_FREEBIND); connections arrive once it is (e.g. the ENI's secondary \
                     private IP)",
                    m.node
                );
            }
        }
        let metrics = Arc::new(Metrics::new());
        metrics.listeners.set(listeners.len() as i64);
        Ok(Proxy {
            plan,
            listeners,
            health,
            metrics,
        })
    }

    /// The addresses listened on (proxied ports first, then the health endpoint).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .map(|l| &l.socket)
            .chain(&self.health)
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// The counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Accepts and passes connections through until `stop` completes; then closes the
    /// listeners and waits for open connections for up to the drain timeout (or until `force`
    /// completes), resets those still open, and returns.
    pub async fn serve(self, stop: impl Future<Output = ()>, force: impl Future<Output = ()>) {
        let Proxy {
            plan,
            listeners,
            health,
            metrics,
        } = self;
        let shared = Arc::new(Shared {
            limit: Arc::new(Semaphore::new(
                plan.max_connections.min(Semaphore::MAX_PERMITS),
            )),
            pool: PipePool::new(),
            splice: plan.splice,
            idle_timeout: plan.idle_timeout,
            connect_timeout: plan.connect_timeout,
            cut: CancellationToken::new(),
            fallbacks: metrics.copy_fallbacks.clone(),
        });
        let nodes: Vec<Arc<Node>> = plan
            .mappings
            .iter()
            .map(|m| {
                Arc::new(Node {
                    node: m.node,
                    limit: m
                        .max_connections
                        .map(|n| Arc::new(Semaphore::new(n.min(Semaphore::MAX_PERMITS)))),
                    metrics: metrics.node(m.node, m.target),
                })
            })
            .collect();

        let health_stop = CancellationToken::new();
        let health_task = health.map(|listener| {
            tokio::spawn(health::serve(
                listener,
                Arc::clone(&metrics),
                health_stop.clone(),
            ))
        });

        let accepting = CancellationToken::new();
        let connections = TaskTracker::new();
        let mut accept_loops = JoinSet::new();
        let count = listeners.len();
        for listener in listeners {
            let node = Arc::clone(&nodes[listener.mapping]);
            accept_loops.spawn(accept_loop(
                listener,
                node,
                Arc::clone(&shared),
                accepting.clone(),
                connections.clone(),
            ));
        }
        metrics.listening.store(true, Ordering::Relaxed);
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        tracing::info!(
            "proxy listening on {count} port(s) for {} node(s){}",
            plan.mappings.len(),
            plan.health
                .map(|h| format!("; health and metrics on http://{h}"))
                .unwrap_or_default()
        );

        stop.await;
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        metrics.listening.store(false, Ordering::Relaxed);
        metrics.draining.set(1);
        accepting.cancel();
        // Every listener is closed once its loop has returned.
        while accept_loops.join_next().await.is_some() {}
        metrics.listeners.set(0);
        connections.close();
        let open = connections.len();
        tracing::info!(
            "listeners closed; waiting up to {:?} for {open} open connection(s)",
            plan.drain_timeout
        );
        let drain_started = Instant::now();
        tokio::select! {
            () = connections.wait() => {}
            () = tokio::time::sleep(plan.drain_timeout) => {
                tracing::warn!(
                    "drain timeout ({:?}) passed: resetting {} open connection(s)",
                    plan.drain_timeout,
                    connections.len()
                );
            }
            () = force => {
                tracing::warn!(
                    "second signal: resetting {} open connection(s)",
                    connections.len()
                );
            }
        }
        shared.cut.cancel();
        connections.wait().await;
        health_stop.cancel();
        if let Some(task) = health_task {
            let _ = task.await;
        }
        tracing::info!(
            "proxy stopped after draining for {:.1}s",
            drain_started.elapsed().as_secs_f64()
        );
    }
}

fn bind_error(addr: SocketAddr, what: &str, source: io::Error) -> ProxyError {
    ProxyError::Bind {
        addr,
        what: what.to_owned(),
        error: source,
    }
}

/// A non-blocking listening socket on `addr` with `SO_REUSEADDR`; for `proxied` ports also
/// `IP_FREEBIND`, and [`tune`]d so that accepted connections inherit the options.
fn listen(addr: SocketAddr, proxied: bool) -> io::Result<TcpListener> {
    TcpListener::from_std(listen_socket(addr, proxied)?.into())
}

fn listen_socket(addr: SocketAddr, proxied: bool) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM.cloexec(), None)?;
    socket.set_reuse_address(true)?;
    if proxied {
        match addr {
            SocketAddr::V4(_) => socket.set_freebind_v4(true)?,
            SocketAddr::V6(_) => socket.set_freebind_v6(true)?,
        }
        // Accepted connections inherit these from the listener (Linux copies the socket).
        tune(SockRef::from(&socket))?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket)
}

/// Whether `addr` is configured on an interface here (a plain bind to it works).
fn is_local(addr: IpAddr) -> bool {
    let probe = Socket::new(
        Domain::for_address(SocketAddr::new(addr, 0)),
        Type::STREAM.cloexec(),
        None,
    );
    probe.is_ok_and(|s| s.bind(&SocketAddr::new(addr, 0).into()).is_ok())
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, and warns when even that is short of what
/// the listeners and the connection limit need.
fn raise_nofile_limit(plan: &Plan) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the valid `rlimit` it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the valid `rlimit` it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    let listeners = plan.listeners().count() as u64;
    let needed =
        listeners + 2 * plan.max_connections as u64 + 2 * splice::POOL_MAX_IDLE as u64 + 64;
    if limit.rlim_cur < needed {
        tracing::warn!(
            "the open files limit ({}) is below what {listeners} listener(s) and {} connections \
             need (about {needed}); raise LimitNOFILE= or lower maxConnections",
            limit.rlim_cur,
            plan.max_connections
        );
    }
}

async fn accept_loop(
    listener: Listener,
    node: Arc<Node>,
    shared: Arc<Shared>,
    stop: CancellationToken,
    connections: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            accepted = listener.socket.accept() => accepted,
        };
        let (client, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                ) =>
            {
                tracing::warn!(
                    "accepting on {}: {e}; pausing {ACCEPT_ERROR_PAUSE:?} (raise LimitNOFILE= or \
                     lower maxConnections)",
                    node.node
                );
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
            Err(e) => {
                tracing::debug!("accepting on {}: {e}", node.node);
                continue;
            }
        };
        let permits = admit(&shared, &node);
        let Some(permits) = permits else {
            node.metrics.rejected.inc();
            tracing::debug!(%peer, node = %node.node, "connection limit reached: reset");
            let _ = client.set_zero_linger();
            drop(client);
            continue;
        };
        node.metrics.accepted.inc();
        let (shared, node) = (Arc::clone(&shared), Arc::clone(&node));
        let target = listener.target;
        connections.spawn(async move {
            let _permits = permits;
            node.metrics.active.inc();
            connection(client, peer, target, &node, &shared).await;
            node.metrics.active.dec();
        });
    }
}

/// Takes a permit from the global limit and the node's own, or `None` if either is exhausted.
fn admit(
    shared: &Shared,
    node: &Node,
) -> Option<(OwnedSemaphorePermit, Option<OwnedSemaphorePermit>)> {
    let global = Arc::clone(&shared.limit).try_acquire_owned().ok()?;
    let local = match &node.limit {
        Some(limit) => Some(Arc::clone(limit).try_acquire_owned().ok()?),
        None => None,
    };
    Some((global, local))
}

/// `TCP_NODELAY` and TCP keepalive ([`KEEPALIVE_TIME`], then every [`KEEPALIVE_INTERVAL`],
/// [`KEEPALIVE_PROBES`] probes).
fn tune(socket: SockRef<'_>) -> io::Result<()> {
    socket.set_tcp_nodelay(true)?;
    socket.set_tcp_keepalive(
        &TcpKeepalive::new()
            .with_time(KEEPALIVE_TIME)
            .with_interval(KEEPALIVE_INTERVAL)
            .with_retries(KEEPALIVE_PROBES),
    )
}

/// Connects to `target` and pumps until the connection ends; logs the outcome.
async fn connection(
    client: TcpStream,
    peer: SocketAddr,
    target: SocketAddr,
    node: &Node,
    shared: &Shared,
) {
    let started = Instant::now();
    let upstream = tokio::select! {
        connected = tokio::time::timeout(shared.connect_timeout, connect(target)) => connected,
        () = shared.cut.cancelled() => {
            let _ = client.set_zero_linger();
            return;
        }
    };
    let upstream = match upstream {
        Ok(Ok(upstream)) => upstream,
        Ok(Err(e)) => {
            node.metrics.failed.inc();
            tracing::warn!(%peer, %target, "connecting to the target failed: {e}");
            let _ = client.set_zero_linger();
            return;
        }
        Err(_) => {
            node.metrics.failed.inc();
            tracing::warn!(
                %peer, %target,
                "connecting to the target timed out after {:?}",
                shared.connect_timeout
            );
            let _ = client.set_zero_linger();
            return;
        }
    };
    let options = PumpOptions {
        splice: shared.splice,
        pool: &shared.pool,
        idle_timeout: shared.idle_timeout,
        cut: &shared.cut,
        to_target: &node.metrics.to_target,
        to_client: &node.metrics.to_client,
        fallbacks: &shared.fallbacks,
    };
    let moved = Moved::default();
    let outcome = splice::pump(&client, &upstream, &options, &moved).await;
    let (up, down) = (
        moved.to_target.load(Ordering::Relaxed),
        moved.to_client.load(Ordering::Relaxed),
    );
    let elapsed = started.elapsed();
    match &outcome {
        Outcome::Closed => {
            tracing::debug!(%peer, %target, up, down, ?elapsed, "connection closed");
        }
        Outcome::Idle => {
            node.metrics.idle_closed.inc();
            tracing::debug!(%peer, %target, up, down, ?elapsed, "idle timeout: closed");
        }
        Outcome::Broken { side, error } => {
            node.metrics.reset.inc();
            let side = match side {
                Side::Client => "client",
                Side::Target => "target",
            };
            tracing::debug!(%peer, %target, up, down, ?elapsed, "{side} side failed ({error}): reset");
        }
        Outcome::Cut => {
            tracing::debug!(%peer, %target, up, down, ?elapsed, "drain timeout: reset");
        }
    }
    if matches!(outcome, Outcome::Broken { .. } | Outcome::Cut) {
        let _ = client.set_zero_linger();
        let _ = upstream.set_zero_linger();
    }
}

async fn connect(target: SocketAddr) -> io::Result<TcpStream> {
    let socket = match target {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    tune(SockRef::from(&socket))?;
    socket.connect(target).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The proxy sets `TCP_NODELAY` and keepalive once on each listener and relies on accepted
    /// sockets inheriting them.
    #[test]
    fn accepted_sockets_inherit_nodelay_and_keepalive() {
        let listener = listen_socket("127.0.0.1:0".parse().unwrap(), true).unwrap();
        listener.set_nonblocking(false).unwrap();
        let addr = listener.local_addr().unwrap().as_socket().unwrap();
        let _client = std::net::TcpStream::connect(addr).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        assert!(accepted.tcp_nodelay().unwrap());
        assert!(accepted.keepalive().unwrap());
        assert_eq!(accepted.tcp_keepalive_time().unwrap(), KEEPALIVE_TIME);
        assert_eq!(
            accepted.tcp_keepalive_interval().unwrap(),
            KEEPALIVE_INTERVAL
        );
        assert_eq!(accepted.tcp_keepalive_retries().unwrap(), KEEPALIVE_PROBES);
    }
}

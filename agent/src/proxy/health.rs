//! The proxy's counters ([`Metrics`]) and its HTTP endpoint ([`serve`]): `GET /healthz` (200
//! `ok` while listening, 503 `draining` after SIGTERM) and `GET /metrics` (Prometheus text
//! format 0.0.4).
//!
//! Metrics (labels `node` = N and `target` = the public address, per node mapping):
//!
//! | name | type | meaning |
//! |------|------|---------|
//! | `satellite_proxy_connections_accepted_total` | counter | connections accepted and admitted |
//! | `satellite_proxy_connections_active` | gauge | connections open now |
//! | `satellite_proxy_connections_rejected_total` | counter | reset at once: a connection limit was reached |
//! | `satellite_proxy_connections_failed_total` | counter | the target could not be reached (refused, unreachable, connect timeout) |
//! | `satellite_proxy_connections_reset_total` | counter | ended by an error on one side (reset, broken pipe) |
//! | `satellite_proxy_connections_idle_closed_total` | counter | closed by the idle timeout |
//! | `satellite_proxy_bytes_total` | counter | bytes passed through, label `direction` = `to_target` or `to_client` |
//! | `satellite_proxy_listeners` | gauge | listening sockets |
//! | `satellite_proxy_draining` | gauge | 1 after SIGTERM/SIGINT |
//! | `satellite_proxy_copy_fallbacks_total` | counter | directions that copied because splice(2) was not possible |

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    node: String,
    target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
enum Direction {
    to_target,
    to_client,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BytesLabels {
    node: String,
    target: String,
    direction: Direction,
}

/// Every counter of the proxy, registered for `/metrics`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    accepted: Family<NodeLabels, Counter>,
    active: Family<NodeLabels, Gauge>,
    rejected: Family<NodeLabels, Counter>,
    failed: Family<NodeLabels, Counter>,
    reset: Family<NodeLabels, Counter>,
    idle_closed: Family<NodeLabels, Counter>,
    bytes: Family<BytesLabels, Counter>,
    /// Listening sockets.
    pub listeners: Gauge,
    /// 1 while draining.
    pub draining: Gauge,
    /// Directions that fell back to copying.
    pub copy_fallbacks: Counter,
    /// Whether the proxy is accepting connections (`/healthz` answers 200).
    pub listening: AtomicBool,
}

/// The counters of one node mapping (cheap handles onto [`Metrics`]).
#[derive(Debug, Clone, Default)]
pub struct NodeMetrics {
    /// Connections admitted.
    pub accepted: Counter,
    /// Connections open.
    pub active: Gauge,
    /// Connections reset at once because a limit was reached.
    pub rejected: Counter,
    /// Connections whose target could not be reached.
    pub failed: Counter,
    /// Connections ended by an error on one side.
    pub reset: Counter,
    /// Connections closed by the idle timeout.
    pub idle_closed: Counter,
    /// Bytes client → target.
    pub to_target: Counter,
    /// Bytes target → client.
    pub to_client: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// All counters at zero, registered under the prefix `satellite_proxy`.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("satellite_proxy");
        let m = Metrics {
            registry: Registry::default(),
            accepted: Family::default(),
            active: Family::default(),
            rejected: Family::default(),
            failed: Family::default(),
            reset: Family::default(),
            idle_closed: Family::default(),
            bytes: Family::default(),
            listeners: Gauge::default(),
            draining: Gauge::default(),
            copy_fallbacks: Counter::default(),
            listening: AtomicBool::new(false),
        };
        registry.register(
            "connections_accepted",
            "Connections accepted and admitted",
            m.accepted.clone(),
        );
        registry.register(
            "connections_active",
            "Connections open now",
            m.active.clone(),
        );
        registry.register(
            "connections_rejected",
            "Connections reset at once because a connection limit was reached",
            m.rejected.clone(),
        );
        registry.register(
            "connections_failed",
            "Connections whose target could not be reached (refused, unreachable, timeout)",
            m.failed.clone(),
        );
        registry.register(
            "connections_reset",
            "Connections ended by an error on one side (reset, broken pipe)",
            m.reset.clone(),
        );
        registry.register(
            "connections_idle_closed",
            "Connections closed by the idle timeout",
            m.idle_closed.clone(),
        );
        registry.register("bytes", "Bytes passed through", m.bytes.clone());
        registry.register("listeners", "Listening sockets", m.listeners.clone());
        registry.register(
            "draining",
            "1 after SIGTERM/SIGINT, while open connections finish",
            m.draining.clone(),
        );
        registry.register(
            "copy_fallbacks",
            "Directions that copied through user space because splice(2) was not possible",
            m.copy_fallbacks.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The counters of the mapping `node` → `target` (created at zero, so they show before the
    /// first connection).
    pub fn node(&self, node: IpAddr, target: IpAddr) -> NodeMetrics {
        let labels = NodeLabels {
            node: node.to_string(),
            target: target.to_string(),
        };
        let bytes = |direction| BytesLabels {
            node: labels.node.clone(),
            target: labels.target.clone(),
            direction,
        };
        // One statement per family: `get_or_create` returns a read guard that lives until the
        // end of the statement, and a second insert into the same family would deadlock on it.
        let counter = |family: &Family<NodeLabels, Counter>| family.get_or_create(&labels).clone();
        let accepted = counter(&self.accepted);
        let rejected = counter(&self.rejected);
        let failed = counter(&self.failed);
        let reset = counter(&self.reset);
        let idle_closed = counter(&self.idle_closed);
        let active = self.active.get_or_create(&labels).clone();
        let to_target = self
            .bytes
            .get_or_create(&bytes(Direction::to_target))
            .clone();
        let to_client = self
            .bytes
            .get_or_create(&bytes(Direction::to_client))
            .clone();
        NodeMetrics {
            accepted,
            active,
            rejected,
            failed,
            reset,
            idle_closed,
            to_target,
            to_client,
        }
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry);
        text
    }
}

/// Serves `/healthz` and `/metrics` on `listener` until `stop` is cancelled.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .with_state(metrics);
    axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
}

async fn healthz(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    if metrics.listening.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    }
}

async fn metrics_text(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        )],
        metrics.encode(),
    )
}

//! The reconcile loop: keeps what [`super::host::up`] installed in place.
//!
//! It listens to rtnetlink notifications (links, IPv4 addresses, IPv4 routes, tc) and, after
//! each burst, re-applies the record under the state lock, so a deleted address, route or
//! filter, a re-created uplink or a renumbered host address is restored within milliseconds.
//! A timer re-checks every [`RESYNC`] as well, for what sends no notification (pins removed
//! from bpffs, a lost notification when the socket overflows). When the record disappears
//! (`datapath down`, `leave`), the loop stops restoring and returns.

use std::path::PathBuf;
use std::time::Duration;

use futures_util::StreamExt as _;
use futures_util::future::FutureExt as _;
use rtnetlink::MulticastGroup;
use tokio::sync::watch;

use super::host::{self, HostError};
use super::net::Netlink;

/// Period of the timer-driven check.
pub const RESYNC: Duration = Duration::from_secs(5);
/// How long a burst of notifications is collected before one check.
const SETTLE: Duration = Duration::from_millis(20);

/// Reconciles the datapath of `uplink` recorded in `state_dir` until `stop` turns true or
/// the record is removed. Failures are logged and retried on the next event or tick.
///
/// # Errors
///
/// [`HostError::Netlink`] when the notification socket cannot be opened.
pub async fn watch(
    state_dir: PathBuf,
    uplink: String,
    mut stop: watch::Receiver<bool>,
) -> Result<(), HostError> {
    let groups = [
        MulticastGroup::Link,
        MulticastGroup::Ipv4Ifaddr,
        MulticastGroup::Ipv4Route,
        MulticastGroup::Tc,
    ];
    let (connection, handle, mut events) =
        rtnetlink::new_multicast_connection(&groups).map_err(|source| HostError::Netlink {
            what: "subscribing to rtnetlink notifications".into(),
            source,
        })?;
    let connection = tokio::spawn(connection);
    let net = Netlink::from_handle(handle);
    let mut tick = tokio::time::interval(RESYNC);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(uplink, "reconciling the datapath");
    let mut listening = true;
    let mut last_error = None;
    loop {
        // The select only says why it woke: the `wait_for` guard must not live across an await.
        let event = tokio::select! {
            event = events.next(), if listening => Some(event.is_some()),
            _ = tick.tick() => None,
            _ = stop.wait_for(|s| *s) => break,
        };
        match event {
            Some(false) => {
                tracing::warn!(
                    "the rtnetlink notification stream ended; checking every {RESYNC:?} only"
                );
                listening = false;
                continue;
            }
            Some(true) => {
                tokio::time::sleep(SETTLE).await;
                while let Some(Some(_)) = events.next().now_or_never() {}
            }
            None => {}
        }
        if !reconcile_once(&net, &state_dir, &uplink, &mut last_error).await {
            break;
        }
    }
    connection.abort();
    Ok(())
}

/// One check under the lock; `false` when the record is gone (stop reconciling). A failure is
/// logged as a warning when it differs from the previous one (a lasting problem, such as a
/// deleted uplink, is not repeated every few seconds), and its end is logged too.
async fn reconcile_once(
    net: &Netlink,
    state_dir: &std::path::Path,
    uplink: &str,
    last_error: &mut Option<String>,
) -> bool {
    let _lock = match host::lock(state_dir) {
        Ok(lock) => lock,
        Err(e) => {
            tracing::warn!(error = %crate::error::Report(&e), "datapath check skipped");
            return true;
        }
    };
    let mut record = match host::read_record(state_dir, Some(uplink)) {
        Ok(Some(record)) => record,
        Ok(None) => {
            tracing::info!(
                uplink,
                "the datapath was removed (datapath down / leave); no longer reconciling it"
            );
            return false;
        }
        Err(e) => {
            tracing::warn!(error = %crate::error::Report(&e), "datapath check skipped");
            return true;
        }
    };
    match host::reconcile(net, &mut record).await {
        Ok(restored) => {
            for item in restored {
                tracing::warn!(uplink, restored = %item, "datapath drift repaired");
            }
            if last_error.take().is_some() {
                tracing::info!(uplink, "datapath complete again");
            }
        }
        Err(e) => {
            let e = e.to_string();
            if last_error.as_deref() == Some(e.as_str()) {
                tracing::debug!(uplink, error = %e, "datapath repair still failing");
            } else {
                tracing::warn!(uplink, error = %e, "datapath repair failed; retrying on the next change");
                *last_error = Some(e);
            }
        }
    }
    true
}

//! Side by side with the reference plugins (Debian's `ptp` + `host-local` + `portmap`, driven
//! by the same `cnitool`) where the semantics overlap: the same subnet gives the same first
//! address and gateway, the same routes on both sides, the same reachability (host, outside
//! through SNAT, host port from outside with the client address kept), and nothing left
//! after DEL. The one intended difference: ptp gives the pod the subnet's prefix length, this
//! plugin a /32. Needs root: `#[ignore = "needs root"]`; run anyway without root, it fails
//! saying so.

mod common;

use std::net::{Ipv4Addr, SocketAddr};

use common::{Fixture, GATEWAY, NET, SUBNET, connect_seen_as, listen, result_ip};
use satellite_tests::cni::{OUTSIDE_ADDR, UPLINK_ADDR};
use serde_json::{Value, json};

const REF: &str = "reference";

/// What one plugin setup did, as seen from the outside.
#[derive(Debug, PartialEq)]
struct Observed {
    ip: Ipv4Addr,
    gateway: String,
    interfaces: usize,
    pod_routes: Vec<String>,
    host_route_to_pod: bool,
    gateway_on_host_end: bool,
    seen_by_host: Ipv4Addr,
    seen_outside: Ipv4Addr,
    seen_through_host_port: Ipv4Addr,
}

fn observe(f: &Fixture, net: &str, port: u16) -> (Observed, u8) {
    let pod = f.pod();
    let caps =
        json!({"portMappings": [{"hostPort": port, "containerPort": 8080, "protocol": "tcp"}]})
            .to_string();
    let result: Value = f
        .cnitool("add", net, &pod.path(), Some(&caps))
        .expect("ADD");
    let ip = result_ip(&result);
    let prefix: u8 = result["ips"][0]["address"]
        .as_str()
        .and_then(|a| a.split('/').nth(1))
        .and_then(|p| p.parse().ok())
        .unwrap();
    let mut pod_routes: Vec<String> = pod
        .ip(&["-4", "route"])
        .unwrap()
        .lines()
        // This plugin also sets the preferred source on the default route; ptp only on the
        // gateway's.
        .map(|l| l.trim().replace(&format!(" src {ip}"), ""))
        // ptp keeps a route for the subnet via the gateway (its /24 needs it); not comparable.
        .filter(|l| !l.starts_with(SUBNET))
        .collect();
    pod_routes.sort();
    let host_routes = f
        .node
        .host
        .ip(&["-4", "route", "show", "to", "match", &ip.to_string()])
        .unwrap();
    let host_veth = host_routes
        .lines()
        .find(|l| l.starts_with(&format!("{ip} ")))
        .and_then(|l| l.split(" dev ").nth(1))
        .and_then(|l| l.split_whitespace().next())
        .expect("a host route to the pod")
        .to_owned();
    let gateway_on_host_end = f
        .node
        .host
        .ip(&["-4", "-o", "addr", "show", "dev", &host_veth])
        .unwrap()
        .contains(&format!("inet {GATEWAY}/32"));

    let host = listen(&f.node.host, Ipv4Addr::UNSPECIFIED, 7101);
    let seen_by_host = connect_seen_as(&pod, SocketAddr::from((UPLINK_ADDR, 7101)), &host).unwrap();
    let outside = listen(&f.node.outside, OUTSIDE_ADDR, 7102);
    let seen_outside =
        connect_seen_as(&pod, SocketAddr::from((OUTSIDE_ADDR, 7102)), &outside).unwrap();
    let server = listen(&pod, Ipv4Addr::UNSPECIFIED, 8080);
    let seen_through_host_port = connect_seen_as(
        &f.node.outside,
        SocketAddr::from((UPLINK_ADDR, port)),
        &server,
    )
    .unwrap();

    let observed = Observed {
        ip,
        gateway: result["ips"][0]["gateway"]
            .as_str()
            .unwrap_or("")
            .to_owned(),
        interfaces: result["interfaces"].as_array().map_or(0, Vec::len),
        pod_routes,
        // ptp installs it with scope host, this plugin with scope link (the pod is on the link).
        host_route_to_pod: host_routes.contains(&format!("{ip} dev {host_veth} scope ")),
        gateway_on_host_end,
        seen_by_host,
        seen_outside,
        seen_through_host_port,
    };
    f.cnitool("del", net, &pod.path(), Some(&caps))
        .expect("DEL");
    (observed, prefix)
}

#[test]
#[ignore = "needs root"]
fn same_behaviour_as_ptp_host_local_portmap() {
    let ours = Fixture::new(json!({}));
    let reference = Fixture::bare().unwrap();
    reference.write_conflist(
        REF,
        "1.0.0",
        vec![
            json!({
                "type": "ptp",
                "ipMasq": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": SUBNET}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": reference.dir.path().join("ipam"),
                },
            }),
            json!({"type": "portmap", "capabilities": {"portMappings": true}}),
        ],
    );

    let (theirs, their_prefix) = observe(&reference, REF, 30090);
    let (mine, my_prefix) = observe(&ours, NET, 30090);
    assert_eq!(mine, theirs);
    assert_eq!(mine.seen_outside, UPLINK_ADDR);
    assert_eq!(mine.seen_through_host_port, OUTSIDE_ADDR);
    assert_eq!(their_prefix, 24);
    assert_eq!(my_prefix, 32);

    // Nothing left behind by either (ptp names its host ends veth…, ours sat…).
    for f in [&ours, &reference] {
        let links = f.node.host.links().unwrap();
        assert!(
            links
                .iter()
                .all(|l| l == "lo" || l == satellite_tests::cni::UPLINK),
            "{links:?}"
        );
        assert!(f.pod_routes().is_empty());
    }
}

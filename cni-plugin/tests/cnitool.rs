//! The plugin driven by `cnitool` (libcni 1.1.2, as containerd 1.6 uses it) on a simulated node
//! (needs root: `#[ignore = "needs root"]`; run anyway without root, they fail saying so).

mod common;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use common::{Fixture, GATEWAY, NET, connect_seen_as, listen, result_ip};
use satellite_tests::cni::{OUTSIDE_ADDR, UPLINK_ADDR};
use serde_json::json;

#[test]
#[ignore = "needs root"]
fn pod_gets_an_address_reaches_host_and_outside_and_del_removes_everything() {
    let f = Fixture::new(json!({"dns": {"nameservers": ["198.19.255.10"]}}));
    let pod = f.pod();
    let result = f.add(&pod);

    // The result: host end, pod end (with its sandbox), a /32 with the gateway, DNS.
    let ip = result_ip(&result);
    assert_eq!(result["cniVersion"], "1.0.0");
    assert_eq!(result["ips"][0]["address"], format!("{ip}/32"));
    assert_eq!(result["ips"][0]["gateway"], GATEWAY.to_string());
    assert_eq!(result["ips"][0]["interface"], 1);
    assert_eq!(result["interfaces"][1]["name"], "eth0");
    assert_eq!(
        result["interfaces"][1]["sandbox"],
        pod.path().display().to_string()
    );
    assert!(result["interfaces"][0].get("sandbox").is_none());
    assert_eq!(
        result["routes"],
        json!([{"dst": "0.0.0.0/0", "gw": GATEWAY.to_string()}])
    );
    assert_eq!(result["dns"]["nameservers"][0], "198.19.255.10");
    assert_eq!(
        ip,
        Ipv4Addr::new(198, 19, 0, 2),
        "the first pod gets the first free address"
    );

    // Inside the pod: the /32, a link route to the gateway, the default route via it; MTU of
    // the uplink (1500 on a veth).
    let addrs = pod
        .ip(&["-4", "-o", "addr", "show", "dev", "eth0"])
        .unwrap();
    assert!(addrs.contains(&format!("inet {ip}/32")), "{addrs}");
    let routes = pod.ip(&["-4", "route"]).unwrap();
    assert!(
        routes.contains(&format!("default via {GATEWAY} dev eth0")),
        "{routes}"
    );
    assert!(
        routes.contains(&format!("{GATEWAY} dev eth0 scope link")),
        "{routes}"
    );
    assert!(
        pod.ip(&["link", "show", "eth0"])
            .unwrap()
            .contains("mtu 1500")
    );
    // On the host: the gateway on the host end and the /32 route to the pod.
    let veths = f.host_veths();
    assert_eq!(veths.len(), 1);
    assert_eq!(
        f.pod_routes(),
        vec![format!("{ip} dev {} scope link", veths[0])]
    );

    // The pod reaches the host (unchanged source) and the outside (masqueraded to the uplink).
    let host = listen(&f.node.host, Ipv4Addr::UNSPECIFIED, 7001);
    let seen = connect_seen_as(&pod, SocketAddr::from((UPLINK_ADDR, 7001)), &host).unwrap();
    assert_eq!(seen, ip, "traffic to the host keeps the pod's address");
    let seen = connect_seen_as(&pod, SocketAddr::from((GATEWAY, 7001)), &host).unwrap();
    assert_eq!(seen, ip);
    let outside = listen(&f.node.outside, OUTSIDE_ADDR, 7002);
    let seen = connect_seen_as(&pod, SocketAddr::from((OUTSIDE_ADDR, 7002)), &outside).unwrap();
    assert_eq!(seen, UPLINK_ADDR, "egress leaves with the uplink's address");

    f.cnitool("check", NET, &pod.path(), None)
        .expect("CHECK after ADD");
    assert_eq!(f.allocations(), 1);

    f.del(&pod.path());
    assert!(f.host_veths().is_empty());
    assert!(f.pod_routes().is_empty());
    assert_eq!(f.allocations(), 0);
    assert!(!pod.links().unwrap().contains(&"eth0".to_owned()));
    // CHECK now fails: the attachment is gone.
    assert!(f.cnitool("check", NET, &pod.path(), None).is_err());
    // DEL again, and after the namespace is gone: still success.
    f.del(&pod.path());
    let path = pod.path();
    drop(pod);
    f.del(&path);

    let log = std::fs::read_to_string(f.log_path()).unwrap();
    assert!(log.lines().count() >= 4);
    for line in log.lines() {
        assert!(
            line.contains("container=cnitool-"),
            "no container ID on: {line}"
        );
    }
}

#[test]
#[ignore = "needs root"]
fn del_after_the_namespace_is_gone_releases_the_address() {
    let f = Fixture::new(json!({}));
    let pod = f.pod();
    f.add(&pod);
    let path = pod.path();
    drop(pod); // the runtime deleted the namespace first (kubelet does after a node crash)
    f.del(&path);
    assert_eq!(f.allocations(), 0);
    assert!(f.host_veths().is_empty());
    assert!(f.pod_routes().is_empty());
}

#[test]
#[ignore = "needs root"]
fn host_ports_reach_the_pod_from_outside_the_host_and_the_pod_itself() {
    let f = Fixture::new(json!({}));
    let pod = f.pod();
    let caps = json!({"portMappings": [
        {"hostPort": 30080, "containerPort": 8080, "protocol": "tcp"},
        {"hostPort": 30053, "containerPort": 5353, "protocol": "udp"},
    ]})
    .to_string();
    f.cnitool("add", NET, &pod.path(), Some(&caps))
        .expect("ADD");
    let server = listen(&pod, Ipv4Addr::UNSPECIFIED, 8080);
    let to = SocketAddr::from((UPLINK_ADDR, 30080));

    // From outside (as through the proxy): DNAT to the pod, the client's address preserved.
    let seen = connect_seen_as(&f.node.outside, to, &server).unwrap();
    assert_eq!(seen, OUTSIDE_ADDR);
    // From the host itself (chain output).
    let seen = connect_seen_as(&f.node.host, to, &server).unwrap();
    assert_eq!(seen, UPLINK_ADDR);
    // From the pod to its own host port (hairpin): masqueraded to the gateway.
    let seen = connect_seen_as(&pod, to, &server).unwrap();
    assert_eq!(seen, GATEWAY);

    // UDP: a datagram to the host port arrives at the pod's port.
    let udp = pod
        .run(|| UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 5353)))
        .unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    f.node
        .outside
        .run(|| -> std::io::Result<()> {
            let s = UdpSocket::bind((OUTSIDE_ADDR, 0))?;
            s.send_to(b"ping", (UPLINK_ADDR, 30053))?;
            Ok(())
        })
        .unwrap();
    let mut buf = [0; 16];
    let (n, from) = udp
        .recv_from(&mut buf)
        .expect("datagram through the host port");
    assert_eq!(&buf[..n], b"ping");
    assert_eq!(from.ip(), OUTSIDE_ADDR);

    assert_eq!(f.map_elements("hostports").len(), 2);
    f.cnitool("check", NET, &pod.path(), Some(&caps))
        .expect("CHECK");
    // The mappings are recorded with the allocation, so DEL removes exactly them.
    assert_eq!(
        f.state()["allocations"][0]["portMappings"][0]["hostPort"],
        30080
    );
    f.cnitool("del", NET, &pod.path(), Some(&caps))
        .expect("DEL");
    assert!(f.map_elements("hostports").is_empty());
}

#[test]
#[ignore = "needs root"]
fn a_host_port_taken_by_another_pod_is_refused_with_code_103() {
    let f = Fixture::new(json!({}));
    let caps = json!({"portMappings": [{"hostPort": 30081, "containerPort": 80}]}).to_string();
    let first = f.pod();
    f.cnitool("add", NET, &first.path(), Some(&caps))
        .expect("first ADD");
    let second = f.pod();
    let err = f
        .cnitool("add", NET, &second.path(), Some(&caps))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("\"code\": 103") || err.contains("already mapped"),
        "{err}"
    );
    // Nothing half-applied for the refused pod, and the first pod keeps its port.
    assert_eq!(f.allocations(), 1);
    assert_eq!(f.host_veths().len(), 1);
    f.cnitool("del", NET, &second.path(), Some(&caps))
        .expect("DEL of the refused pod");
    assert_eq!(f.map_elements("hostports").len(), 1);

    // A port the kernel already maps elsewhere (not known to this plugin's state, e.g. put
    // there by hand): refused by nf_tables, and the undo leaves the foreign mapping alone.
    let table = format!("satellite-cni-{NET}");
    let nft = f
        .node
        .host
        .command("nft")
        .args(["add", "element", "ip", &table, "hostports"])
        .arg("{ tcp . 30082 : 198.19.0.250 . 80 }")
        .status()
        .unwrap();
    assert!(nft.success());
    let caps2 = json!({"portMappings": [{"hostPort": 30082, "containerPort": 80}]}).to_string();
    let third = f.pod();
    let err = f
        .cnitool("add", NET, &third.path(), Some(&caps2))
        .unwrap_err()
        .to_string();
    assert!(err.contains("already mapped"), "{err}");
    assert_eq!(f.allocations(), 1);
    assert_eq!(
        f.map_elements("hostports").len(),
        2,
        "the foreign mapping survives the undo"
    );

    f.cnitool("del", NET, &first.path(), Some(&caps))
        .expect("DEL");
    assert_eq!(f.map_elements("hostports").len(), 1);
}

#[test]
#[ignore = "needs root"]
fn the_example_conflist_works_with_cnitool() {
    let f = Fixture::new(json!({}));
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/10-satellite.conflist");
    let mut list: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&example).unwrap()).expect("the example is JSON");
    let name = list["name"].as_str().unwrap().to_owned();
    // Only the host-specific keys change: test addresses, and state and log under the test's
    // directory instead of /var.
    let plugin = &mut list["plugins"][0];
    plugin["subnet"] = json!(common::SUBNET);
    plugin["dataDir"] = json!(f.dir.path().join("data"));
    plugin["logFile"] = json!(f.log_path());
    std::fs::write(
        f.dir.path().join("conf/10-satellite.conflist"),
        serde_json::to_vec(&list).unwrap(),
    )
    .unwrap();
    let pod = f.pod();
    let result = f
        .cnitool("add", &name, &pod.path(), None)
        .expect("ADD with the example");
    assert_eq!(result_ip(&result), Ipv4Addr::new(198, 19, 0, 2));
    f.cnitool("check", &name, &pod.path(), None).expect("CHECK");
    f.cnitool("del", &name, &pod.path(), None).expect("DEL");
    assert!(f.host_veths().is_empty());
}

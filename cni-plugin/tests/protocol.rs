//! The CNI protocol as a runtime speaks it, invoking the plugin directly: every bad-input class
//! and its error code, version negotiation and result shapes, chaining, CHECK, STATUS and GC
//! (cnitool 1.1.2 predates STATUS and GC). Tests that touch the network need root; the
//! bad-input tests do not (they fail before the host is touched).

mod common;

use std::process::Output;

use common::{Fixture, GATEWAY, NET, plugin, result_ip};
use serde_json::{Value, json};

fn parse_error(out: &Output) -> Value {
    let stdout: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON document ({e}): {:?} / stderr {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let code = stdout["code"].as_i64().expect("an error result has a code");
    assert_eq!(
        out.status.code(),
        Some(code as i32),
        "the exit status is the error code"
    );
    assert!(stdout["msg"].as_str().is_some_and(|m| !m.is_empty()));
    stdout
}

/// Runs the plugin without root or namespaces (for input that must be refused before the
/// host is touched).
fn run_plain(env: &[(&str, &str)], stdin: &[u8]) -> Output {
    use std::io::Write as _;
    let mut child = std::process::Command::new(plugin())
        .env_clear()
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn add_env<'a>(netns: &'a str, id: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", id),
        ("CNI_NETNS", netns),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin"),
    ]
}

fn conf(extra: Value) -> Value {
    let mut c = json!({
        "cniVersion": "1.1.0", "name": NET, "type": "satellite-cni",
        "subnet": common::SUBNET, "logFile": "", "dataDir": "/nonexistent/never-created",
    });
    common::merge(&mut c, extra);
    c
}

#[test]
fn version_lists_supported_versions() {
    let out = run_plain(&[("CNI_COMMAND", "VERSION")], br#"{"cniVersion":"1.0.0"}"#);
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["cniVersion"], "1.1.0");
    assert_eq!(v["supportedVersions"], json!(["0.4.0", "1.0.0", "1.1.0"]));
}

/// (what, environment, stdin, expected code).
type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Vec<u8>, i64);

#[test]
fn bad_input_classes_have_their_codes_and_touch_nothing() {
    let good = serde_json::to_vec(&conf(json!({}))).unwrap();
    let netns = "/run/netns/satellite-cni-test-does-not-exist";
    let cases: Vec<Case> = vec![
        ("no CNI_COMMAND", vec![], good.clone(), 4),
        (
            "unknown CNI_COMMAND",
            vec![("CNI_COMMAND", "ATTACH")],
            good.clone(),
            4,
        ),
        (
            "missing CNI_CONTAINERID and CNI_IFNAME",
            vec![("CNI_COMMAND", "ADD"), ("CNI_NETNS", netns), ("CNI_PATH", "/x")],
            good.clone(),
            4,
        ),
        (
            "missing CNI_NETNS on ADD",
            add_env(netns, "c1")
                .into_iter()
                .filter(|(k, _)| *k != "CNI_NETNS")
                .collect(),
            good.clone(),
            4,
        ),
        (
            "invalid container ID",
            add_env(netns, "../../etc"),
            good.clone(),
            4,
        ),
        ("malformed JSON", add_env(netns, "c1"), b"{\"cniVersion\":".to_vec(), 6),
        ("not an object", add_env(netns, "c1"), b"[]".to_vec(), 6),
        (
            "unknown cniVersion",
            add_env(netns, "c1"),
            serde_json::to_vec(&conf(json!({"cniVersion": "0.3.1"}))).unwrap(),
            1,
        ),
        (
            "bad subnet",
            add_env(netns, "c1"),
            serde_json::to_vec(&conf(json!({"subnet": "198.19.0.7/24"}))).unwrap(),
            7,
        ),
        (
            "subnet not a CIDR",
            add_env(netns, "c1"),
            serde_json::to_vec(&conf(json!({"subnet": "198.19.0.0"}))).unwrap(),
            7,
        ),
        (
            "prevResult of the wrong version",
            add_env(netns, "c1"),
            serde_json::to_vec(&conf(json!({
                "cniVersion": "1.0.0",
                "prevResult": {"cniVersion": "0.4.0", "ips": [{"version": "4", "address": "198.19.1.2/24"}]},
            })))
            .unwrap(),
            1,
        ),
        (
            "an ipam section",
            add_env(netns, "c1"),
            serde_json::to_vec(&conf(json!({"ipam": {"type": "host-local"}}))).unwrap(),
            2,
        ),
        (
            "GC under 1.0.0",
            vec![("CNI_COMMAND", "GC"), ("CNI_PATH", "/x")],
            serde_json::to_vec(&conf(json!({"cniVersion": "1.0.0"}))).unwrap(),
            1,
        ),
        (
            "GC without valid-attachments",
            vec![("CNI_COMMAND", "GC"), ("CNI_PATH", "/x")],
            good.clone(),
            7,
        ),
    ];
    for (what, env, stdin, code) in cases {
        let out = run_plain(&env, &stdin);
        let err = parse_error(&out);
        assert_eq!(err["code"], code, "{what}: {err}");
        assert!(
            !std::path::Path::new("/nonexistent/never-created").exists(),
            "{what} touched the data dir"
        );
    }
    // The error result speaks the configuration's version when it is a supported one.
    let out = run_plain(
        &add_env(netns, "c1"),
        &serde_json::to_vec(&conf(json!({"cniVersion": "0.4.0", "subnet": "x"}))).unwrap(),
    );
    assert_eq!(parse_error(&out)["cniVersion"], "0.4.0");
}

#[test]
#[ignore = "needs root"]
fn a_missing_namespace_is_code_3_and_releases_the_address() {
    let f = Fixture::new(json!({}));
    let out = f.invoke(
        &add_env("/run/netns/satellite-cni-test-missing", "c1"),
        &f.net_conf("1.1.0", json!({})),
    );
    assert_eq!(parse_error(&out)["code"], 3);
    assert_eq!(f.allocations(), 0);
}

#[test]
#[ignore = "needs root"]
fn results_follow_the_negotiated_version() {
    let f = Fixture::new(json!({}));
    for (conf_version, versions, want) in [
        (Some("0.4.0"), None, "0.4.0"),
        (Some("1.0.0"), None, "1.0.0"),
        (
            None,
            Some(json!(["0.3.1", "1.0.0", "1.1.0", "9.9.9"])),
            "1.1.0",
        ),
    ] {
        let pod = f.pod();
        let path = pod.path().display().to_string();
        let mut c = f.net_conf("1.1.0", json!({}));
        match conf_version {
            Some(v) => c["cniVersion"] = json!(v),
            None => {
                c.as_object_mut().unwrap().remove("cniVersion");
                c["cniVersions"] = versions.unwrap();
            }
        }
        let id = format!("v{}", want.replace('.', ""));
        let out = f.invoke(&add_env(&path, &id), &c);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let r: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(r["cniVersion"], want);
        match want {
            "0.4.0" => assert_eq!(r["ips"][0]["version"], "4"),
            _ => assert!(r["ips"][0].get("version").is_none()),
        }
        assert_eq!(r["interfaces"][1].get("mtu").is_some(), want == "1.1.0");
        let mut del: Vec<(&str, &str)> = add_env(&path, &id);
        del[0] = ("CNI_COMMAND", "DEL");
        assert!(f.invoke(&del, &c).status.success());
    }
    assert_eq!(f.allocations(), 0);
}

#[test]
#[ignore = "needs root"]
fn chained_after_another_plugin_the_result_is_appended() {
    let f = Fixture::new(json!({}));
    let pod = f.pod();
    let path = pod.path().display().to_string();
    let prev = json!({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "lo", "sandbox": path}],
        "ips": [{"address": "127.0.0.1/8", "interface": 0}],
        "dns": {"search": ["example.internal"]},
    });
    let c = f.net_conf("1.0.0", json!({"prevResult": prev}));
    let out = f.invoke(&add_env(&path, "chain"), &c);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["interfaces"][0]["name"], "lo");
    assert_eq!(r["interfaces"][2]["name"], "eth0");
    assert_eq!(r["ips"][0]["address"], "127.0.0.1/8");
    assert_eq!(
        r["ips"][1]["interface"], 2,
        "our ips index past the previous interfaces"
    );
    assert_eq!(r["ips"][1]["gateway"], GATEWAY.to_string());
    assert_eq!(r["dns"]["search"][0], "example.internal");

    // CHECK with that result as prevResult passes; after breaking the pod's routes it fails
    // with 102.
    let mut check_env = add_env(&path, "chain");
    check_env[0] = ("CNI_COMMAND", "CHECK");
    let checked = f.net_conf("1.0.0", json!({"prevResult": r}));
    let out = f.invoke(&check_env, &checked);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(out.stdout.is_empty(), "CHECK prints nothing on success");
    pod.ip(&["route", "del", "default"]).unwrap();
    assert_eq!(parse_error(&f.invoke(&check_env, &checked))["code"], 102);
    // CHECK without prevResult is a configuration error.
    assert_eq!(
        parse_error(&f.invoke(&check_env, &f.net_conf("1.0.0", json!({}))))["code"],
        7
    );
}

#[test]
#[ignore = "needs root"]
fn status_reports_capacity() {
    let f = Fixture::new(json!({}));
    let status = [("CNI_COMMAND", "STATUS"), ("CNI_PATH", "/x")];
    // A /30 holds one pod (network, gateway, pod, broadcast).
    let small = f.net_conf("1.1.0", json!({"subnet": "198.19.0.0/30"}));
    let out = f.invoke(&status, &small);
    assert!(out.status.success() && out.stdout.is_empty());
    let pod = f.pod();
    let path = pod.path().display().to_string();
    assert!(f.invoke(&add_env(&path, "only"), &small).status.success());
    assert_eq!(parse_error(&f.invoke(&status, &small))["code"], 50);
    let second = f.pod();
    let second_path = second.path().display().to_string();
    assert_eq!(
        parse_error(&f.invoke(&add_env(&second_path, "second"), &small))["code"],
        100
    );
    // A configured uplink that does not exist: limited connectivity.
    let missing = f.net_conf("1.1.0", json!({"uplink": "nosuchif0"}));
    assert_eq!(parse_error(&f.invoke(&status, &missing))["code"], 51);
}

#[test]
#[ignore = "needs root"]
fn gc_releases_everything_not_listed() {
    let f = Fixture::new(json!({}));
    let pods: Vec<_> = (0..3).map(|_| f.pod()).collect();
    let paths: Vec<String> = pods
        .iter()
        .map(|p| p.path().display().to_string())
        .collect();
    let c = f.net_conf("1.1.0", json!({}));
    let caps = f.net_conf(
        "1.1.0",
        json!({"runtimeConfig": {"portMappings": [{"hostPort": 31000, "containerPort": 80}]}}),
    );
    let mut ips = Vec::new();
    for (i, path) in paths.iter().enumerate() {
        let id = format!("gc{i}");
        let out = f.invoke(&add_env(path, &id), if i == 2 { &caps } else { &c });
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        ips.push(result_ip(&serde_json::from_slice(&out.stdout).unwrap()));
    }
    assert_eq!(f.map_elements("hostports").len(), 1);
    let gc = f.net_conf(
        "1.1.0",
        json!({"cni.dev/valid-attachments": [{"containerID": "gc0", "ifname": "eth0"}]}),
    );
    let out = f.invoke(&[("CNI_COMMAND", "GC"), ("CNI_PATH", "/x")], &gc);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(f.allocations(), 1);
    assert_eq!(f.state()["allocations"][0]["containerId"], "gc0");
    assert_eq!(f.host_veths().len(), 1);
    assert_eq!(f.pod_routes().len(), 1);
    assert!(f.map_elements("hostports").is_empty());
    for pod in &pods[1..] {
        assert!(!pod.links().unwrap().contains(&"eth0".to_owned()));
    }
    assert!(pods[0].links().unwrap().contains(&"eth0".to_owned()));
    // GC with an empty list releases the rest.
    let gc = f.net_conf("1.1.0", json!({"cni.dev/valid-attachments": []}));
    assert!(
        f.invoke(&[("CNI_COMMAND", "GC"), ("CNI_PATH", "/x")], &gc)
            .status
            .success()
    );
    assert_eq!(f.allocations(), 0);
    assert!(f.host_veths().is_empty());
}

#[test]
#[ignore = "needs root"]
fn a_configuration_change_rewrites_the_rules_at_the_next_add() {
    let f = Fixture::new(json!({}));
    let postrouting = || {
        let out = f
            .node
            .host
            .command("nft")
            .args([
                "list",
                "chain",
                "ip",
                &format!("satellite-cni-{NET}"),
                "postrouting",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let first = f.pod();
    let path = first.path().display().to_string();
    assert!(
        f.invoke(&add_env(&path, "m1"), &f.net_conf("1.1.0", json!({})))
            .status
            .success()
    );
    let rules = postrouting();
    assert!(rules.contains("satellite-cni/1 masquerade"), "{rules}");
    assert!(rules.contains("satellite-cni/1 hairpin"), "{rules}");

    let second = f.pod();
    let path = second.path().display().to_string();
    let off = f.net_conf("1.1.0", json!({"masquerade": false}));
    assert!(f.invoke(&add_env(&path, "m2"), &off).status.success());
    let rules = postrouting();
    assert!(!rules.contains("satellite-cni/1 masquerade"), "{rules}");
    assert!(rules.contains("satellite-cni/1 hairpin"), "{rules}");
}

//! Concurrency and crash safety (needs root: `#[ignore = "needs root"]`, failing without it): many `cnitool` invocations at
//! once, and `kill -9` at every netlink request of an ADD followed by GC or DEL.

mod common;

use std::collections::HashSet;
use std::os::unix::process::CommandExt as _;
use std::process::Stdio;
use std::time::Duration;

use common::{Fixture, NET, plugin, result_ip};
use serde_json::json;

const PODS: usize = 50;

#[test]
#[ignore = "needs root"]
fn fifty_concurrent_adds_then_dels_leave_nothing_behind() {
    let f = Fixture::new(json!({}));
    let pods: Vec<_> = (0..PODS).map(|_| f.pod()).collect();
    // Each pod also maps its own host port, so nf_tables transactions race too.
    let caps: Vec<String> = (0..PODS)
        .map(|i| {
            json!({"portMappings": [{"hostPort": 32000 + i, "containerPort": 80}]}).to_string()
        })
        .collect();

    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .zip(&caps)
            .map(|(pod, caps)| s.spawn(|| f.cnitool("add", NET, &pod.path(), Some(caps))))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ips: Vec<_> = results
        .into_iter()
        .map(|r| result_ip(&r.expect("concurrent ADD")))
        .collect();
    let distinct: HashSet<_> = ips.iter().collect();
    assert_eq!(distinct.len(), PODS, "duplicate addresses: {ips:?}");
    for (pod, ip) in pods.iter().zip(&ips) {
        let addrs = pod
            .ip(&["-4", "-o", "addr", "show", "dev", "eth0"])
            .unwrap();
        assert!(addrs.contains(&format!("inet {ip}/32")), "{addrs}");
    }
    assert_eq!(f.allocations(), PODS);
    assert_eq!(f.host_veths().len(), PODS);
    assert_eq!(f.pod_routes().len(), PODS);
    assert_eq!(f.map_elements("hostports").len(), PODS);

    std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .zip(&caps)
            .map(|(pod, caps)| s.spawn(|| f.cnitool("del", NET, &pod.path(), Some(caps))))
            .collect();
        for h in handles {
            h.join().unwrap().expect("concurrent DEL");
        }
    });
    assert_eq!(f.allocations(), 0);
    assert!(f.host_veths().is_empty());
    assert!(f.pod_routes().is_empty());
    assert!(f.map_elements("hostports").is_empty());
    for pod in &pods {
        assert_eq!(pod.links().unwrap(), vec!["lo".to_owned()]);
    }
    // No temporary files left in the state directory.
    let names: Vec<_> = std::fs::read_dir(f.dir.path().join("data").join(NET))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        names
            .iter()
            .filter(|n| *n != "lock" && !(n.starts_with("boot-") && n.ends_with(".json")))
            .count(),
        0,
        "{names:?}"
    );
}

/// Runs ADD under strace with the `nth` netlink send (or the state file's rename, for
/// `nth == 0`) delayed by 10 s, and kills the whole process group with SIGKILL while it
/// waits (if the plugin finishes first, the attachment is simply complete).
fn add_killed_at(f: &Fixture, pod: &satellite_tests::netns::Netns, id: &str, nth: usize) {
    let conf = f.net_conf(
        "1.1.0",
        json!({"runtimeConfig": {"portMappings": [{"hostPort": 31500, "containerPort": 80}]}}),
    );
    let inject = if nth == 0 {
        "inject=rename:delay_enter=10000000".to_owned()
    } else {
        format!("inject=sendto:delay_enter=10000000:when={nth}")
    };
    let mut cmd = f.node.host.command("strace");
    cmd.args([
        "-f",
        "-qq",
        "-o",
        "/dev/null",
        "-e",
        "trace=sendto,rename",
        "-e",
        &inject,
    ])
    .arg(plugin())
    .env_clear()
    .env("CNI_COMMAND", "ADD")
    .env("CNI_CONTAINERID", id)
    .env("CNI_NETNS", pod.path())
    .env("CNI_IFNAME", "eth0")
    .env("CNI_PATH", "/x")
    .stdin(Stdio::piped())
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .process_group(0);
    let mut child = cmd.spawn().expect("strace (cargo xtask setup installs it)");
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(&serde_json::to_vec(&conf).unwrap())
            .unwrap();
    }
    // Everything before the delayed call takes milliseconds; then the plugin sits in it.
    std::thread::sleep(Duration::from_millis(400));
    let pgid = i32::try_from(child.id()).unwrap();
    // SAFETY: kill on the process group we just created; no memory is passed.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    child.wait().unwrap();
}

#[test]
#[ignore = "needs root"]
fn kill_9_at_every_step_of_add_then_gc_leaves_the_node_clean() {
    let f = Fixture::new(json!({}));
    // An ADD sends about 15 netlink messages; 0 is the rename that commits the allocation.
    for nth in 0..=16 {
        let pod = f.pod();
        let id = format!("crash{nth}");
        add_killed_at(&f, &pod, &id, nth);
        let gc = f.net_conf("1.1.0", json!({"cni.dev/valid-attachments": []}));
        let out = f.invoke(&[("CNI_COMMAND", "GC"), ("CNI_PATH", "/x")], &gc);
        assert!(
            out.status.success(),
            "GC after kill at step {nth}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert_eq!(f.allocations(), 0, "step {nth}");
        assert!(
            f.host_veths().is_empty(),
            "step {nth}: {:?}",
            f.host_veths()
        );
        assert!(f.pod_routes().is_empty(), "step {nth}");
        assert!(f.map_elements("hostports").is_empty(), "step {nth}");
        assert_eq!(pod.links().unwrap(), vec!["lo".to_owned()], "step {nth}");
    }
}

#[test]
#[ignore = "needs root"]
fn kill_9_during_add_then_del_also_cleans_up() {
    let f = Fixture::new(json!({}));
    for nth in [3, 6, 9] {
        let pod = f.pod();
        let id = format!("crashdel{nth}");
        add_killed_at(&f, &pod, &id, nth);
        let path = pod.path().display().to_string();
        let env = [
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", id.as_str()),
            ("CNI_NETNS", path.as_str()),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/x"),
        ];
        let conf = f.net_conf("1.1.0", json!({}));
        let out = f.invoke(&env, &conf);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert_eq!(f.allocations(), 0);
        assert!(f.host_veths().is_empty());
        assert!(f.map_elements("hostports").is_empty());
    }
}

//! The plugin driven by containerd 1.6's CRI plugin (RunPodSandbox / StopPodSandbox /
//! RemovePodSandbox), as kubelet drives it: containerd runs in the simulated node's host
//! namespace with our conflist and binary, the pause image built by
//! `cargo xtask sandbox install`, and a minimal CRI client built from `tests/cri-client`.
//! Needs root and the sandbox's components: `#[ignore]`d; run without them, it fails naming
//! what to install (`cargo xtask sandbox install`).

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Fixture, connect_seen_as, listen};
use satellite_tests::cni::{OUTSIDE_ADDR, UPLINK_ADDR};
use satellite_tests::netns;
use satellite_tests::sandbox::{PAUSE_IMAGE, processes};
use satellite_tests::tools;
use serde_json::{Value, json};

/// containerd in the fixture's host namespace, stopped (with whatever it left) on drop.
struct Containerd {
    work: PathBuf,
    host_ns: String,
    socket: PathBuf,
}

impl Containerd {
    fn start(f: &Fixture) -> Self {
        let work = f.dir.path().join("ctd");
        let bin = f.dir.path().join("bin");
        // containerd's CRI plugin sets up the pod's loopback with the reference plugin.
        std::os::unix::fs::symlink(
            Path::new(satellite_tests::cni::REFERENCE_PLUGIN_DIR).join("loopback"),
            bin.join("loopback"),
        )
        .unwrap();
        std::fs::create_dir_all(&work).unwrap();
        let config = work.join("config.toml");
        std::fs::write(
            &config,
            satellite_tests::sandbox::config::containerd(
                &work,
                PAUSE_IMAGE,
                &bin,
                &f.dir.path().join("conf"),
            ),
        )
        .unwrap();
        let mut cmd = netns::daemon_command(f.node.host.name(), "containerd");
        cmd.arg("--config").arg(&config);
        processes::spawn(&work, "containerd", cmd).expect("starting containerd");
        let me = Self {
            socket: work.join("containerd.sock"),
            work,
            host_ns: f.node.host.name().to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::os::unix::net::UnixStream::connect(&me.socket).is_err() {
            assert!(
                Instant::now() < deadline,
                "containerd did not listen within 30 s; see {}",
                processes::log_file(&me.work, "containerd").display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = Command::new("ctr")
            .arg("--address")
            .arg(&me.socket)
            .args(["-n", "k8s.io", "images", "import"])
            .arg(tools::pause_image_tar())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        me
    }

    fn cri(&self, client: &Path, args: &[&str], stdin: Option<&Value>) -> Value {
        let mut child = Command::new(client)
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Write as _;
            let mut pipe = child.stdin.take().unwrap();
            if let Some(v) = stdin {
                pipe.write_all(&serde_json::to_vec(v).unwrap()).unwrap();
            }
        }
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "cri-client {args:?}: {}\ncontainerd log: {}",
            String::from_utf8_lossy(&out.stderr),
            processes::log_file(&self.work, "containerd").display()
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        processes::stop(&self.work, "containerd");
        // Shims started by containerd live in the host namespace, in their own sessions.
        for pid in netns::pids_inside(&self.host_ns) {
            processes::signal_group(pid, libc::SIGKILL);
        }
        if let Err(e) = netns::unmount_under(&self.work) {
            eprintln!("cleanup: {e:#}");
        }
    }
}

#[test]
#[ignore = "needs root and the sandbox install (cargo xtask sandbox install)"]
fn containerd_cri_runs_and_stops_a_pod_sandbox_through_the_plugin() {
    let f = Fixture::new(json!({}));
    let missing: Vec<&str> = ["containerd", "ctr", "runc", "go"]
        .into_iter()
        .filter(|p| {
            Command::new("sh")
                .args(["-c", &format!("command -v {p}")])
                .output()
                .map_or(true, |o| !o.status.success())
        })
        .collect();
    assert!(
        missing.is_empty() && tools::pause_image_tar().exists(),
        "needs {missing:?} on PATH and the pause image {}: run `cargo xtask sandbox install`",
        tools::pause_image_tar().display()
    );
    let main_go = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cri-client/main.go");
    let client = satellite_tests::cni::cri_client(&main_go)
        .expect("building cri-client")
        .expect("no Kubernetes source tree: run `cargo xtask sandbox install`");
    let containerd = Containerd::start(&f);

    let config = json!({
        "metadata": {"name": "cri-pod", "uid": "3f2c-cri-pod", "namespace": "default", "attempt": 0},
        "hostname": "cri-pod",
        "log_directory": f.dir.path().join("pod-logs"),
        "port_mappings": [{"protocol": 0, "container_port": 8080, "host_port": 30095}],
        "linux": {},
    });
    let id = containerd.cri(&client, &["run"], Some(&config))["pod_sandbox_id"]
        .as_str()
        .expect("a sandbox id")
        .to_owned();
    let status = containerd.cri(&client, &["status", &id], None);
    let ip: Ipv4Addr = status["status"]["network"]["ip"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("the pod's IP in the sandbox status");
    assert_eq!(ip, Ipv4Addr::new(198, 19, 0, 2));
    assert_eq!(f.allocations(), 1);
    assert_eq!(f.state()["allocations"][0]["containerId"], id);
    assert_eq!(f.host_veths().len(), 1);
    assert_eq!(
        f.map_elements("hostports").len(),
        1,
        "CRI port mappings arrive as host ports"
    );
    let log = std::fs::read_to_string(f.log_path()).unwrap();
    assert!(log.contains("pod=default/cri-pod"), "{log}");
    assert!(log.contains(&format!("container={id}")), "{log}");

    // The pod's namespace, from the runtime spec containerd reports.
    let info: Value = serde_json::from_str(status["info"]["info"].as_str().unwrap()).unwrap();
    let netns_path = info["runtimeSpec"]["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["type"] == "network")
        .and_then(|n| n["path"].as_str())
        .expect("the sandbox's network namespace path")
        .to_owned();
    let pod_ns = Path::new(&netns_path)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let server = netns::run_in(&pod_ns, || std::net::TcpListener::bind(("0.0.0.0", 8080)))
        .and_then(|bound| Ok(bound?))
        .expect("listening in the pod");
    let seen = connect_seen_as(
        &f.node.outside,
        SocketAddr::from((UPLINK_ADDR, 30095)),
        &server,
    )
    .unwrap();
    assert_eq!(seen, OUTSIDE_ADDR, "the host port reaches the CRI pod");
    let host = listen(&f.node.host, Ipv4Addr::UNSPECIFIED, 7201);
    let seen = netns::run_in(&pod_ns, || {
        std::net::TcpStream::connect((UPLINK_ADDR, 7201))
    })
    .and_then(|stream| {
        let _stream = stream?;
        Ok(host.accept()?.1)
    })
    .unwrap();
    assert_eq!(seen.ip(), std::net::IpAddr::V4(ip));
    drop(server);

    // StopPodSandbox runs DEL; RemovePodSandbox runs it again (idempotent).
    containerd.cri(&client, &["stop", &id], None);
    assert_eq!(f.allocations(), 0);
    assert!(f.host_veths().is_empty());
    assert!(f.map_elements("hostports").is_empty());
    containerd.cri(&client, &["remove", &id], None);
    assert_eq!(f.allocations(), 0);
    let log = std::fs::read_to_string(f.log_path()).unwrap();
    assert!(log.matches("cmd=DEL").count() >= 2, "{log}");
}

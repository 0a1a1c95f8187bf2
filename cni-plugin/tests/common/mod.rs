//! Shared fixture for the plugin's tests: a simulated node ([`Node`]), a work directory with
//! the conflist, the plugin directory (our binary + Debian's reference plugins), the plugin's
//! state and log, and helpers to drive it with `cnitool` or directly.

#![allow(dead_code)] // each test binary uses a different subset

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use satellite_tests::cni::{Cnitool, Invocation, Node, REFERENCE_PLUGIN_DIR};
use satellite_tests::netns::Netns;
use serde_json::{Value, json};

/// Our plugin, built by cargo for this test run.
pub fn plugin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_satellite-cni"))
}

/// The pod subnet every test node uses (namespaces isolate the nodes from each other).
pub const SUBNET: &str = "198.19.0.0/24";
/// Its first address: the gateway.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
/// The network name in the conflists.
pub const NET: &str = "satnet";

/// A node, a work directory, and `cnitool` set up for a conflist of our plugin.
pub struct Fixture {
    /// The simulated node.
    pub node: Node,
    /// Work directory: `conf/`, `bin/`, `data/`, `plugin.log`.
    pub dir: tempfile::TempDir,
    /// `cnitool` with `NETCONFPATH=conf/`, `CNI_PATH=bin/:/usr/lib/cni`.
    pub cnitool: Cnitool,
}

impl Fixture {
    /// A node with the conflist of [`Fixture::plugin_conf`] merged with `extra` keys. Panics
    /// saying what to do unless running as root (the tests using it are
    /// `#[ignore = "needs root"]`).
    pub fn new(extra: Value) -> Self {
        let fixture = Self::bare().unwrap_or_else(|e| panic!("fixture: {e:#}"));
        let mut conf = fixture.plugin_conf();
        merge(&mut conf, extra);
        fixture.write_conflist(NET, "1.0.0", vec![conf]);
        fixture
    }

    /// A node and directories, no conflist yet.
    pub fn bare() -> Result<Self> {
        let node = Node::new()?;
        let dir = tempfile::Builder::new()
            .prefix("satellite-cni-test")
            .tempdir()?;
        for sub in ["conf", "bin"] {
            std::fs::create_dir(dir.path().join(sub))?;
        }
        std::os::unix::fs::symlink(plugin(), dir.path().join("bin/satellite-cni"))?;
        let cnitool = Cnitool {
            conf_dir: dir.path().join("conf"),
            plugin_path: vec![dir.path().join("bin"), PathBuf::from(REFERENCE_PLUGIN_DIR)],
        };
        Ok(Self { node, dir, cnitool })
    }

    /// Our plugin's configuration for this fixture: test subnet, private data dir and log.
    pub fn plugin_conf(&self) -> Value {
        json!({
            "type": "satellite-cni",
            "subnet": SUBNET,
            "dataDir": self.dir.path().join("data"),
            "logFile": self.log_path(),
            "logLevel": "debug",
            "capabilities": {"portMappings": true},
        })
    }

    /// Writes `conf/<name>.conflist`.
    pub fn write_conflist(&self, name: &str, version: &str, plugins: Vec<Value>) {
        let list = json!({"cniVersion": version, "name": name, "plugins": plugins});
        std::fs::write(
            self.dir.path().join(format!("conf/{name}.conflist")),
            serde_json::to_vec_pretty(&list).expect("json"),
        )
        .expect("writing the conflist");
    }

    /// The plugin's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("plugin.log")
    }

    /// A fresh pod namespace.
    pub fn pod(&self) -> Netns {
        self.node.pod().expect("pod netns")
    }

    /// `cnitool <action> <net> <pod>`; the parsed stdout on success, an error with stderr
    /// otherwise.
    pub fn cnitool(
        &self,
        action: &str,
        net: &str,
        pod: &Path,
        caps: Option<&str>,
    ) -> Result<Value> {
        let out = self.cnitool.run(&self.node.host, action, net, pod, caps)?;
        if !out.status.success() {
            bail!(
                "cnitool {action} failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if out.stdout.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&out.stdout).context("cnitool printed non-JSON")
    }

    /// `cnitool add` on our network; the result.
    pub fn add(&self, pod: &Netns) -> Value {
        self.cnitool("add", NET, &pod.path(), None).expect("ADD")
    }

    /// `cnitool del` on our network.
    pub fn del(&self, pod: &Path) {
        self.cnitool("del", NET, pod, None).expect("DEL");
    }

    /// Our plugin invoked directly in the node's host namespace with `env` and `conf` (the
    /// network configuration as a runtime passes it: the plugin entry plus `name` and
    /// `cniVersion`).
    pub fn invoke(&self, env: &[(&str, &str)], conf: &Value) -> Output {
        let plugin = plugin();
        Invocation {
            plugin: &plugin,
            env: env.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
            stdin: serde_json::to_vec(conf).expect("json"),
        }
        .run(&self.node.host)
        .expect("running the plugin")
    }

    /// The network configuration for a direct invocation at `version`, with `extra` merged.
    pub fn net_conf(&self, version: &str, extra: Value) -> Value {
        let mut conf = self.plugin_conf();
        merge(&mut conf, json!({"cniVersion": version, "name": NET}));
        merge(&mut conf, extra);
        conf
    }

    /// The state file of this boot, parsed (`null` before the first ADD).
    pub fn state(&self) -> Value {
        let path = satellite_cni::ipam::Store::new(&self.dir.path().join("data"), NET)
            .expect("boot id")
            .state_path();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).expect("the state file is JSON"),
            Err(_) => Value::Null,
        }
    }

    /// Number of recorded allocations.
    pub fn allocations(&self) -> usize {
        self.state()["allocations"].as_array().map_or(0, Vec::len)
    }

    /// Host-side veths this plugin created (`sat…`).
    pub fn host_veths(&self) -> Vec<String> {
        self.node
            .host
            .links()
            .expect("links")
            .into_iter()
            .filter(|l| l.starts_with("sat"))
            .collect()
    }

    /// Host routes into the pod subnet.
    pub fn pod_routes(&self) -> Vec<String> {
        self.node
            .host
            .ip(&["-4", "route", "show", "root", SUBNET])
            .expect("routes")
            .lines()
            .map(|l| l.trim().to_owned())
            .collect()
    }

    /// `nft -j list map ip <table> <map>` elements (empty when the table does not exist).
    pub fn map_elements(&self, map: &str) -> Vec<Value> {
        let out = self
            .node
            .host
            .command("nft")
            .args([
                "-j",
                "list",
                "map",
                "ip",
                &format!("satellite-cni-{NET}"),
                map,
            ])
            .output()
            .expect("running nft (cargo xtask setup installs it)");
        if !out.status.success() {
            return Vec::new();
        }
        let v: Value = serde_json::from_slice(&out.stdout).expect("nft -j prints JSON");
        v["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|o| o["map"]["elem"].as_array().cloned())
            .flatten()
            .collect()
    }
}

/// Merges the keys of `extra` (an object) into `base`.
pub fn merge(base: &mut Value, extra: Value) {
    if let (Some(base), Value::Object(extra)) = (base.as_object_mut(), extra) {
        base.extend(extra);
    }
}

/// The first IPv4 address of a CNI result, without prefix.
pub fn result_ip(result: &Value) -> Ipv4Addr {
    let address = result["ips"][0]["address"]
        .as_str()
        .expect("ips[0].address");
    address
        .split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .expect("an IPv4 address")
}

/// Listens on `addr:port` inside `ns` and returns the listener.
pub fn listen(ns: &Netns, addr: Ipv4Addr, port: u16) -> TcpListener {
    ns.run(move || TcpListener::bind((addr, port)))
        .expect("listen")
}

/// Connects from inside `ns` to `to` and returns the address `listener` saw the connection
/// come from.
pub fn connect_seen_as(ns: &Netns, to: SocketAddr, listener: &TcpListener) -> Result<Ipv4Addr> {
    let stream = ns.run(move || TcpStream::connect_timeout(&to, Duration::from_secs(5)))?;
    listener.set_nonblocking(false)?;
    let (_conn, peer) = listener.accept()?;
    drop(stream);
    match peer {
        SocketAddr::V4(v4) => Ok(*v4.ip()),
        SocketAddr::V6(_) => bail!("IPv6 peer"),
    }
}

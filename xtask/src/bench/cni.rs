//! `cargo xtask bench cni`: ADD+DEL latency and peak RSS of our CNI plugin against the
//! reference plugins Debian ships (`ptp` + `host-local`, and `portmap` for host ports), in the
//! same run, on the same simulated node (network namespaces; needs root).
//!
//! Both are invoked the way a runtime (libcni) does: `CNI_*` environment, the configuration
//! on stdin, one process per plugin per command; for the chained `portmap` the runtime's
//! sequence (ptp ADD, portmap ADD with ptp's result as `prevResult`; DEL in reverse). Wall
//! time is spawn to reap; peak RSS is `wait4`'s `ru_maxrss`, which covers the plugin and the
//! children it waited for (`ptp` runs `host-local`). Iterations alternate between the two so
//! background load affects both alike. The kernel's own work (creating and destroying a veth
//! pair, RCU grace periods) is in both figures.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use satellite_tests::cni::{Node, REFERENCE_PLUGIN_DIR};
use satellite_tests::netns::Netns;
use serde_json::{Value, json};

use super::{ms, ratio, reap, target_dir};
use crate::cargo;

const SUBNET: &str = "198.19.0.0/24";

/// One plugin invocation: binary, `CNI_COMMAND`, configuration.
struct Call<'a> {
    plugin: PathBuf,
    command: &'a str,
    conf: Value,
}

/// ADD, DEL and ADD+DEL times of one setup, and its peak RSS.
#[derive(Default)]
struct Samples {
    add: Vec<Duration>,
    del: Vec<Duration>,
    pair: Vec<Duration>,
    peak_rss_kib: u64,
}

/// A way of attaching a pod: the plugin chain for ADD (DEL runs it in reverse).
struct Setup {
    name: &'static str,
    chain: Vec<(PathBuf, Value)>,
}

/// Runs the benchmark: `runs` ADD+DEL pairs per setup and scenario.
pub fn run(runs: usize) -> Result<()> {
    satellite_tests::netns::require_root("bench cni")?;
    cargo(&["build", "--release", "--package", "satellite-cni"])?;
    let ours = target_dir().join("release/satellite-cni");
    let reference = Path::new(REFERENCE_PLUGIN_DIR);
    let work = tempfile::tempdir()?;
    let node = Node::new()?;
    let pod = node.pod()?;

    let our_conf = |extra: Value| {
        let mut c = json!({
            "cniVersion": "1.0.0", "name": "bench", "type": "satellite-cni",
            "subnet": SUBNET, "mtu": 1500,
            "dataDir": work.path().join("ours"), "logFile": work.path().join("ours.log"),
        });
        merge(&mut c, extra);
        c
    };
    let ptp_conf = |ip_masq: bool| {
        json!({
            "cniVersion": "1.0.0", "name": "bench-ref", "type": "ptp", "ipMasq": ip_masq,
            "mtu": 1500,
            "ipam": {
                "type": "host-local", "ranges": [[{"subnet": SUBNET}]],
                "routes": [{"dst": "0.0.0.0/0"}], "dataDir": work.path().join("host-local"),
            },
        })
    };
    let ports =
        json!({"portMappings": [{"hostPort": 30080, "containerPort": 80, "protocol": "tcp"}]});
    let portmap = json!({
        "cniVersion": "1.0.0", "name": "bench-ref", "type": "portmap",
        "runtimeConfig": ports.clone(),
    });

    let scenarios: Vec<(&str, Setup, Setup)> = vec![
        (
            "plain (no SNAT)",
            Setup {
                name: "satellite-cni",
                chain: vec![(ours.clone(), our_conf(json!({"masquerade": false})))],
            },
            Setup {
                name: "ptp+host-local",
                chain: vec![(reference.join("ptp"), ptp_conf(false))],
            },
        ),
        (
            "SNAT to the uplink",
            Setup {
                name: "satellite-cni",
                chain: vec![(ours.clone(), our_conf(json!({"masquerade": true})))],
            },
            Setup {
                name: "ptp+host-local (ipMasq)",
                chain: vec![(reference.join("ptp"), ptp_conf(true))],
            },
        ),
        (
            "SNAT + one host port",
            Setup {
                name: "satellite-cni",
                chain: vec![(
                    ours.clone(),
                    our_conf(json!({"masquerade": true, "runtimeConfig": ports})),
                )],
            },
            Setup {
                name: "ptp+host-local+portmap",
                chain: vec![
                    (reference.join("ptp"), ptp_conf(true)),
                    (reference.join("portmap"), portmap),
                ],
            },
        ),
    ];

    println!();
    println!(
        "{:<22} {:<26} {:>5} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8}",
        "scenario",
        "plugins",
        "runs",
        "ADD med",
        "ADD p95",
        "DEL med",
        "DEL p95",
        "pair med",
        "pair p95",
        "RSS MB"
    );
    let mut summary = Vec::new();
    for (scenario, mine, theirs) in &scenarios {
        let (mut a, mut b) = (Samples::default(), Samples::default());
        // One warm-up pair each: page cache, nf_tables table creation, iptables chains.
        attach_detach(&node.host, &pod, mine, &mut Samples::default())?;
        attach_detach(&node.host, &pod, theirs, &mut Samples::default())?;
        for _ in 0..runs {
            attach_detach(&node.host, &pod, mine, &mut a)?;
            attach_detach(&node.host, &pod, theirs, &mut b)?;
        }
        for (setup, s) in [(mine, &mut a), (theirs, &mut b)] {
            println!(
                "{:<22} {:<26} {:>5} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>8.1}",
                scenario,
                setup.name,
                runs,
                ms(quantile(&mut s.add, 0.5)),
                ms(quantile(&mut s.add, 0.95)),
                ms(quantile(&mut s.del, 0.5)),
                ms(quantile(&mut s.del, 0.95)),
                ms(quantile(&mut s.pair, 0.5)),
                ms(quantile(&mut s.pair, 0.95)),
                s.peak_rss_kib as f64 / 1024.0,
            );
        }
        summary.push((
            *scenario,
            ratio(quantile(&mut a.pair, 0.5), quantile(&mut b.pair, 0.5)),
            ratio(quantile(&mut a.pair, 0.95), quantile(&mut b.pair, 0.95)),
            ratio(quantile(&mut a.add, 0.5), quantile(&mut b.add, 0.5)),
            ratio(quantile(&mut a.del, 0.5), quantile(&mut b.del, 0.5)),
            a.peak_rss_kib as f64 / 1024.0,
        ));
    }
    // What no plugin can go below on this machine right now: two process spawns, and the
    // kernel creating and destroying a veth pair into the pod (iproute2, also two spawns).
    let mut spawn = Samples::default();
    let mut veth = Samples::default();
    for _ in 0..runs {
        floor(&node.host, &pod, false, &mut spawn)?;
        floor(&node.host, &pod, true, &mut veth)?;
    }
    for (what, s) in [
        ("floor: 2 spawns of /bin/true", &mut spawn),
        ("floor: ip link add+del veth", &mut veth),
    ] {
        println!(
            "{:<49} {:>5} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            what,
            runs,
            ms(quantile(&mut s.add, 0.5)),
            ms(quantile(&mut s.add, 0.95)),
            ms(quantile(&mut s.del, 0.5)),
            ms(quantile(&mut s.del, 0.95)),
            ms(quantile(&mut s.pair, 0.5)),
            ms(quantile(&mut s.pair, 0.95)),
        );
    }
    println!();
    for (scenario, pair_med, pair_p95, add, del, rss) in summary {
        println!(
            "{scenario}: ours/reference ADD+DEL median {pair_med:.2} (target <= 0.33), p95 \
             {pair_p95:.2}; ADD {add:.2}, DEL {del:.2}; our peak RSS {rss:.1} MB (target <= 5 MB)"
        );
    }
    let size = std::fs::metadata(&ours)?.len();
    println!("our binary: {:.2} MB", size as f64 / 1e6);
    Ok(())
}

/// ADD then DEL through `setup`'s chain (DEL in reverse, as libcni does), recording times.
fn attach_detach(host: &Netns, pod: &Netns, setup: &Setup, samples: &mut Samples) -> Result<()> {
    let netns = pod.path();
    let mut add_time = Duration::ZERO;
    let mut prev: Option<Value> = None;
    let mut confs = Vec::new();
    for (plugin, conf) in &setup.chain {
        let mut conf = conf.clone();
        if let Some(prev) = &prev {
            conf["prevResult"] = prev.clone();
        }
        let call = Call {
            plugin: plugin.clone(),
            command: "ADD",
            conf: conf.clone(),
        };
        let (elapsed, rss, stdout) = invoke(host, &netns, &call)?;
        add_time += elapsed;
        samples.peak_rss_kib = samples.peak_rss_kib.max(rss);
        prev = Some(serde_json::from_slice(&stdout).context("ADD printed a result")?);
        confs.push(conf);
    }
    let mut del_time = Duration::ZERO;
    for ((plugin, _), conf) in setup.chain.iter().zip(confs).rev() {
        let call = Call {
            plugin: plugin.clone(),
            command: "DEL",
            conf,
        };
        let (elapsed, rss, _) = invoke(host, &netns, &call)?;
        del_time += elapsed;
        samples.peak_rss_kib = samples.peak_rss_kib.max(rss);
    }
    samples.add.push(add_time);
    samples.del.push(del_time);
    samples.pair.push(add_time + del_time);
    Ok(())
}

/// One "ADD" and one "DEL" that do the least possible: `/bin/true` twice, or (`veth`)
/// `ip link add … type veth peer … netns <pod>` and `ip link del`.
fn floor(host: &Netns, pod: &Netns, veth: bool, samples: &mut Samples) -> Result<()> {
    let time = |args: &[&str]| -> Result<Duration> {
        let mut cmd = host.command(if veth { "ip" } else { "true" });
        cmd.args(args).stdout(Stdio::null()).stderr(Stdio::null());
        let start = Instant::now();
        let status = cmd.status().context("spawning the floor command")?;
        if !status.success() {
            bail!("floor command {args:?} failed: {status}");
        }
        Ok(start.elapsed())
    };
    let (add, del) = if veth {
        (
            time(&[
                "link",
                "add",
                "satfloor0",
                "mtu",
                "1500",
                "up",
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                pod.name(),
            ])?,
            time(&["link", "del", "satfloor0"])?,
        )
    } else {
        (time(&[])?, time(&[])?)
    };
    samples.add.push(add);
    samples.del.push(del);
    samples.pair.push(add + del);
    Ok(())
}

/// Runs one plugin invocation in `host` and returns (wall time, peak RSS in KiB, stdout).
fn invoke(host: &Netns, netns: &Path, call: &Call<'_>) -> Result<(Duration, u64, Vec<u8>)> {
    let mut cmd: Command = host.command(&call.plugin);
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", call.command)
        .env("CNI_CONTAINERID", "bench0123456789")
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", REFERENCE_PLUGIN_DIR)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let stdin = serde_json::to_vec(&call.conf)?;
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("spawning {}", call.plugin.display()))?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(&stdin)
        .context("writing the configuration")?;
    let mut stdout = Vec::new();
    {
        use std::io::Read as _;
        child
            .stdout
            .take()
            .context("stdout")?
            .read_to_end(&mut stdout)?;
    }
    let (status, peak_rss_kib) = reap(&child)?;
    let elapsed = start.elapsed();
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!(
            "{} {} failed (wait status {status}): {}",
            call.plugin.display(),
            call.command,
            String::from_utf8_lossy(&stdout)
        );
    }
    Ok((elapsed, peak_rss_kib, stdout))
}

fn quantile(samples: &mut [Duration], q: f64) -> Duration {
    samples.sort();
    samples[((samples.len() - 1) as f64 * q).round() as usize]
}

fn merge(base: &mut Value, extra: Value) {
    if let (Some(base), Value::Object(extra)) = (base.as_object_mut(), extra) {
        base.extend(extra);
    }
}

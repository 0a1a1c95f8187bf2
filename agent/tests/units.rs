//! The systemd units shipped in `agent/units/`: their command lines are ones the agent
//! accepts, they carry no secret, and they keep the hardening the docs promise.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::Parser as _;
use satellite_agent::cli::{AdminCommand, Cli, Command};

/// The systemd credentials directory (`%d`) as the test expands it.
const CREDENTIALS_DIR: &str = "/run/credentials/satellite-csr-approver.service";

/// `[Service]` keys → every value given (in order), and the whole text.
fn service_section(relative: &str) -> (BTreeMap<String, Vec<String>>, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut section = "";
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('[') {
            section = line;
            continue;
        }
        assert!(
            !line.ends_with('\\'),
            "{relative}: continued lines are not used: {line}"
        );
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("{relative}: not key=value: {line}"));
        if section == "[Service]" {
            keys.entry(key.to_owned())
                .or_default()
                .push(value.to_owned());
        }
    }
    (keys, text)
}

#[test]
fn approver_unit_runs_the_watching_approver_with_its_kubeconfig_as_a_credential() {
    let (service, text) = service_section("units/satellite-csr-approver.service");
    let exec = service.get("ExecStart").expect("ExecStart");
    assert_eq!(exec.len(), 1, "one ExecStart: {exec:?}");
    let argv: Vec<String> = exec[0]
        .split_whitespace()
        .map(|a| a.replace("%d", CREDENTIALS_DIR))
        .collect();
    assert_eq!(argv[0], "/usr/local/bin/satellite-agent");
    // The agent's own parser accepts the unit's command line, and it is the watching,
    // writing approver with its kubeconfig from the credentials directory.
    let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    let Command::Admin {
        command: AdminCommand::ApproveCsrs(args),
    } = cli.command
    else {
        panic!("not admin approve-csrs: {argv:?}");
    };
    assert!(args.watch && !args.dry_run, "{args:?}");
    let kubeconfig = args.kubeconfig.expect("--kubeconfig");
    assert_eq!(
        kubeconfig,
        PathBuf::from(CREDENTIALS_DIR).join("kubeconfig")
    );
    // … which LoadCredential fills from a root-only file.
    assert_eq!(
        service.get("LoadCredential").map(Vec::as_slice),
        Some(&["kubeconfig:/etc/satellite/csr-approver.kubeconfig".to_owned()][..])
    );

    // No secret in argv or the environment: only these variables, none a credential.
    let environment: Vec<&str> = service
        .get("Environment")
        .into_iter()
        .flatten()
        .map(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k))
        .collect();
    assert_eq!(
        environment,
        ["SATELLITE_CREDENTIAL_CACHE_DIR", "SATELLITE_LOG"],
        "{environment:?}"
    );
    assert!(!service.contains_key("EnvironmentFile"));
    let lower = text.to_ascii_lowercase();
    for secret in [
        "aws_secret",
        "aws_access_key",
        "aws_session_token",
        "--token",
        "password",
    ] {
        assert!(!lower.contains(secret), "{secret} in the unit");
    }

    // Restarts with backoff, forever.
    for (key, value) in [
        ("Restart", "always"),
        ("RestartSec", "5s"),
        ("RestartSteps", "6"),
        ("RestartMaxDelaySec", "2min"),
    ] {
        assert_eq!(
            service.get(key).map(Vec::as_slice),
            Some(&[value.to_owned()][..]),
            "{key}"
        );
    }
    assert!(
        text.contains("\nStartLimitIntervalSec=0\n"),
        "never gives up"
    );

    // The hardening: no privilege, nothing writable but its cache.
    for (key, value) in [
        ("DynamicUser", "yes"),
        ("NoNewPrivileges", "yes"),
        ("CapabilityBoundingSet", ""),
        ("AmbientCapabilities", ""),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("PrivateUsers", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("RestrictNamespaces", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("LockPersonality", "yes"),
        ("SystemCallArchitectures", "native"),
        ("UMask", "0077"),
    ] {
        assert_eq!(
            service.get(key).map(Vec::as_slice),
            Some(&[value.to_owned()][..]),
            "{key}"
        );
    }
    assert_eq!(
        service.get("SystemCallFilter").map(Vec::as_slice),
        Some(&["@system-service".to_owned(), "~@privileged".to_owned()][..])
    );
    for writable in ["ReadWritePaths", "StateDirectory", "User", "Group"] {
        assert!(!service.contains_key(writable), "{writable} set");
    }
    assert_eq!(
        service.get("CacheDirectory").map(Vec::as_slice),
        Some(&["satellite-csr-approver".to_owned()][..])
    );
}

//! The credential plugin binary against real peers: the AWS CLI (`aws eks get-token`) for
//! byte-for-byte token equality, and `moto_server` with signature checking on for AssumeRole.
//!
//! Needs `cargo xtask setup` (moto + awscli venv, Debian faketime).
//!
//! One file (over 500 lines): every test compares the same binary with the same peer (the AWS
//! CLI) through shared fixtures.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use satellite_tests::eks_token;
use satellite_tests::moto::{AccessKey, MotoServer, free_port};
use satellite_tests::tools;
use serde_json::Value;

const FROZEN: &str = "2026-01-02 03:04:05";
const V1: &str = r#"{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1","spec":{"interactive":false}}"#;

/// A sealed environment: no shared config, no instance metadata, a private HOME.
struct Env {
    home: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            home: tempfile::tempdir().unwrap(),
        }
    }

    fn cache_dir(&self) -> PathBuf {
        self.home.path().join("cache")
    }

    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stdin(Stdio::null());
        cmd
    }

    fn plugin(&self) -> Command {
        let mut cmd = self.command(env!("CARGO_BIN_EXE_satellite-credential-plugin"));
        cmd.env("SATELLITE_CREDENTIAL_CACHE_DIR", self.cache_dir());
        cmd
    }

    fn with_key(cmd: &mut Command, key: &AccessKey) {
        cmd.env("AWS_ACCESS_KEY_ID", &key.access_key_id)
            .env("AWS_SECRET_ACCESS_KEY", &key.secret_access_key);
    }
}

/// Runs `cmd` with the clock frozen at [`FROZEN`] by libfaketime.
fn frozen(mut cmd: Command) -> Output {
    cmd.env("LD_PRELOAD", tools::libfaketime())
        .env("FAKETIME", FROZEN)
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .output()
        .unwrap()
}

fn ok_json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "exit {:?}, stderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn token_of(out: &Output) -> String {
    ok_json(out)["status"]["token"].as_str().unwrap().to_owned()
}

fn assert_failed(out: &Output, code: i32, needle: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    assert!(out.stdout.is_empty(), "stdout must stay empty on failure");
    assert!(stderr.contains(needle), "stderr lacks {needle:?}: {stderr}");
    stderr
}

#[test]
fn token_is_byte_identical_to_aws_cli() {
    let env = Env::new();
    let key = AccessKey {
        access_key_id: "AKIDEXAMPLE".into(),
        secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
    };
    let session_tokens = [None, Some("FQoGZXIvYXdzE/session+token==")];
    let regions = ["us-east-1", "eu-west-3", "cn-north-1", "us-gov-west-1"];
    // An endpoint override is never contacted: presigning with static keys is local.
    let endpoints = [None, Some("http://127.0.0.1:1")];
    for session_token in session_tokens {
        for region in regions {
            for endpoint in endpoints {
                let setup = |mut cmd: Command| {
                    Env::with_key(&mut cmd, &key);
                    if let Some(token) = session_token {
                        cmd.env("AWS_SESSION_TOKEN", token);
                    }
                    if let Some(url) = endpoint {
                        cmd.env("AWS_ENDPOINT_URL_STS", url);
                    }
                    cmd.env("KUBERNETES_EXEC_INFO", V1).args([
                        "--region",
                        region,
                        "eks",
                        "get-token",
                        "--cluster-name",
                        "gpu-cluster",
                    ]);
                    cmd
                };
                let ours = ok_json(&frozen(setup(env.plugin())));
                let aws = ok_json(&frozen(setup(env.command(tools::venv_bin("aws")))));
                let case = format!("{region} endpoint={endpoint:?} session={session_token:?}");
                assert_eq!(ours["status"]["token"], aws["status"]["token"], "{case}");
                assert_eq!(
                    ours["status"]["expirationTimestamp"], aws["status"]["expirationTimestamp"],
                    "{case}"
                );
                assert_eq!(
                    ours["status"]["expirationTimestamp"],
                    "2026-01-02T03:18:05Z"
                );
                assert_eq!(ours["apiVersion"], aws["apiVersion"], "{case}");
                assert_eq!(ours["kind"], "ExecCredential");
            }
        }
    }
}

#[test]
fn authenticator_style_command_line_is_equivalent() {
    let env = Env::new();
    let key = AccessKey {
        access_key_id: "AKIDEXAMPLE".into(),
        secret_access_key: "secret".into(),
    };
    let run = |args: &[&str]| {
        let mut cmd = env.plugin();
        Env::with_key(&mut cmd, &key);
        cmd.env("AWS_REGION", "eu-central-1").args(args);
        token_of(&frozen(cmd))
    };
    let eks = run(&["eks", "get-token", "--cluster-name", "c1"]);
    assert_eq!(run(&["token", "-i", "c1"]), eks);
    assert_eq!(
        run(&["get-token", "--cluster-name", "c1", "--output", "json"]),
        eks
    );
    assert_ne!(run(&["token", "-i", "c2"]), eks);
}

#[test]
fn exec_info_version_negotiation() {
    let env = Env::new();
    let run = |exec_info: Option<&str>| {
        let mut cmd = env.plugin();
        cmd.env("AWS_ACCESS_KEY_ID", "AKID")
            .env("AWS_SECRET_ACCESS_KEY", "secret")
            .args(["token", "-i", "c", "--region", "us-east-1"]);
        if let Some(info) = exec_info {
            cmd.env("KUBERNETES_EXEC_INFO", info);
        }
        cmd.output().unwrap()
    };
    assert_eq!(
        ok_json(&run(None))["apiVersion"],
        "client.authentication.k8s.io/v1beta1"
    );
    assert_eq!(
        ok_json(&run(Some(V1)))["apiVersion"],
        "client.authentication.k8s.io/v1"
    );
    let beta = V1.replace("/v1\"", "/v1beta1\"");
    assert_eq!(
        ok_json(&run(Some(&beta)))["apiVersion"],
        "client.authentication.k8s.io/v1beta1"
    );
    let alpha = V1.replace("/v1\"", "/v1alpha1\"");
    assert_failed(
        &run(Some(&alpha)),
        3,
        "client.authentication.k8s.io/v1alpha1\" is not supported",
    );
    assert_failed(&run(Some("{oops")), 3, "KUBERNETES_EXEC_INFO: not a JSON");
}

/// moto with signature checking on, an IAM user allowed to assume `node-role`.
struct Sts {
    moto: MotoServer,
    key: AccessKey,
    role_arn: String,
    denied_role_arn: String,
}

fn sts() -> Sts {
    let moto = MotoServer::start();
    let key = moto.create_user("gpu-host");
    let role_arn = moto.create_role("node-role", "gpu-host");
    let denied_role_arn = moto.create_role("admin-role", "somebody-else");
    moto.enable_auth();
    Sts {
        moto,
        key,
        role_arn,
        denied_role_arn,
    }
}

impl Sts {
    fn plugin(&self, env: &Env, role_arn: &str) -> Command {
        let mut cmd = env.plugin();
        Env::with_key(&mut cmd, &self.key);
        cmd.env("AWS_ENDPOINT_URL_STS", self.moto.url()).args([
            "--region",
            "us-east-1",
            "eks",
            "get-token",
            "--cluster-name",
            "gpu-cluster",
            "--role-arn",
            role_arn,
        ]);
        cmd
    }

    /// Checks `token` was signed by credentials moto issued through AssumeRole of the role.
    fn assert_signed_by_assumed_role(&self, token: &str) {
        let decoded = eks_token::decode(token).unwrap();
        assert!(decoded.access_key_id.starts_with("ASIA"), "{decoded:?}");
        assert_eq!(
            decoded.url.as_str().split('?').next(),
            Some(format!("{}/", self.moto.url()).as_str())
        );
        let roles = self.moto.assumed_roles();
        let issued = roles
            .iter()
            .find(|r| r["access_key_id"] == decoded.access_key_id.as_str())
            .expect("token signed with keys moto issued");
        assert_eq!(issued["role_arn"], self.role_arn.as_str());
        assert_eq!(
            decoded.params["X-Amz-Security-Token"],
            issued["session_token"].as_str().unwrap()
        );
        let secret = issued["secret_access_key"].as_str().unwrap();
        decoded.verify_signature(secret, "gpu-cluster").unwrap();
        assert!(decoded.verify_signature(secret, "other-cluster").is_err());
        assert!(
            decoded
                .verify_signature(&self.key.secret_access_key, "gpu-cluster")
                .is_err()
        );
    }
}

fn cache_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "json"));
    files
}

#[test]
fn assumed_role_credentials_sign_the_token_and_are_cached() {
    let sts = sts();
    let env = Env::new();
    let first = token_of(&sts.plugin(&env, &sts.role_arn).output().unwrap());
    sts.assert_signed_by_assumed_role(&first);
    let roles = sts.moto.assumed_roles();
    assert_eq!(roles.len(), 1);
    assert!(
        roles[0]["session_name"]
            .as_str()
            .unwrap()
            .starts_with("satellite-"),
        "default session name: {}",
        roles[0]["session_name"]
    );

    let files = cache_files(&env.cache_dir());
    assert_eq!(files.len(), 1, "{files:?}");
    let mode = std::fs::metadata(&files[0]).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "cache file mode {mode:o}");
    let dir_mode = std::fs::metadata(env.cache_dir())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(dir_mode & 0o777, 0o700, "cache dir mode {dir_mode:o}");

    let second = token_of(&sts.plugin(&env, &sts.role_arn).output().unwrap());
    sts.assert_signed_by_assumed_role(&second);
    assert_eq!(
        sts.moto.assumed_roles().len(),
        1,
        "second call must use the cache"
    );

    // A different session name is a different cache key: a new AssumeRole.
    let mut renamed = sts.plugin(&env, &sts.role_arn);
    renamed.args(["--session-name", "gpu-host-7"]);
    token_of(&renamed.output().unwrap());
    let roles = sts.moto.assumed_roles();
    assert_eq!(roles.len(), 2);
    assert_eq!(roles[1]["session_name"], "gpu-host-7");
}

#[test]
fn concurrent_cold_invocations_assume_the_role_once() {
    let sts = sts();
    let env = Env::new();
    let children: Vec<_> = (0..50)
        .map(|_| {
            sts.plugin(&env, &sts.role_arn)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let token = token_of(&child.wait_with_output().unwrap());
        sts.assert_signed_by_assumed_role(&token);
    }
    assert_eq!(sts.moto.assumed_roles().len(), 1);
    let files = cache_files(&env.cache_dir());
    assert_eq!(files.len(), 1);
    let mode = std::fs::metadata(&files[0]).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn garbage_cache_file_is_ignored_and_rewritten() {
    let sts = sts();
    let env = Env::new();
    token_of(&sts.plugin(&env, &sts.role_arn).output().unwrap());
    let file = cache_files(&env.cache_dir()).pop().unwrap();

    std::fs::write(&file, b"\x00not json at all{{{").unwrap();
    let token = token_of(&sts.plugin(&env, &sts.role_arn).output().unwrap());
    sts.assert_signed_by_assumed_role(&token);
    assert_eq!(
        sts.moto.assumed_roles().len(),
        2,
        "a corrupt entry forces a refresh"
    );
    let rewritten: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(rewritten["version"], 1);

    // A file left world-readable (not written by us) is not trusted either.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    token_of(&sts.plugin(&env, &sts.role_arn).output().unwrap());
    assert_eq!(sts.moto.assumed_roles().len(), 3);
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn denied_role_reports_access_denied_with_role_and_caller() {
    let sts = sts();
    let env = Env::new();
    let out = sts.plugin(&env, &sts.denied_role_arn).output().unwrap();
    let stderr = assert_failed(
        &out,
        5,
        "sts:AssumeRole of arn:aws:iam::123456789012:role/admin-role was denied",
    );
    assert!(stderr.contains("user/gpu-host"), "caller missing: {stderr}");
    assert!(stderr.contains("trust policy"), "no fix given: {stderr}");
    assert!(!stderr.contains(&sts.key.secret_access_key));
    assert!(cache_files(&env.cache_dir()).is_empty());
}

#[test]
fn rejected_base_credentials_are_reported() {
    let sts = sts();
    let env = Env::new();
    let mut cmd = sts.plugin(&env, &sts.role_arn);
    cmd.env("AWS_SECRET_ACCESS_KEY", "not-the-secret");
    let stderr = assert_failed(&cmd.output().unwrap(), 5, "SignatureDoesNotMatch");
    assert!(!stderr.contains("not-the-secret"));
}

#[test]
fn unreachable_sts_fails_within_the_retry_budget() {
    let env = Env::new();
    let mut cmd = env.plugin();
    cmd.env("AWS_ACCESS_KEY_ID", "AKID")
        .env("AWS_SECRET_ACCESS_KEY", "secret")
        .args(["--region", "us-east-1", "--sts-endpoint"])
        .arg(format!("http://127.0.0.1:{}", free_port()))
        .args(["token", "-i", "c", "-r", "arn:aws:iam::123456789012:role/r"]);
    let start = Instant::now();
    let out = cmd.output().unwrap();
    let elapsed = start.elapsed();
    assert_failed(&out, 6, "unreachable after retries");
    // The promise is a bounded retry of at most 10 s of STS time; allow process overhead.
    assert!(elapsed < Duration::from_secs(12), "took {elapsed:?}");
}

#[test]
fn missing_credentials_are_reported() {
    let env = Env::new();
    let out = env
        .plugin()
        .args([
            "--region",
            "us-east-1",
            "eks",
            "get-token",
            "--cluster-name",
            "c",
        ])
        .output()
        .unwrap();
    assert_failed(&out, 4, "no AWS credentials found");
}

#[test]
fn bad_input_is_rejected_before_any_network_call() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let env = Env::new();
    let run = |args: &[&str]| {
        env.plugin()
            .env("AWS_ACCESS_KEY_ID", "AKID")
            .env("AWS_SECRET_ACCESS_KEY", "secret")
            .env("AWS_ENDPOINT_URL_STS", &endpoint)
            .args(args)
            .output()
            .unwrap()
    };
    let get_token = [
        "--region",
        "us-east-1",
        "eks",
        "get-token",
        "--cluster-name",
        "c",
    ];
    let cases: &[(&[&str], i32, &str)] = &[
        (
            &["--role-arn", "arn:aws:iam::12345:role/r"],
            3,
            "account \"12345\" is not 12 digits",
        ),
        (&["--role-arn", "my-role"], 3, "invalid role ARN"),
        (
            &["--role-arn", "arn:aws-cn:iam::123456789012:role/r"],
            3,
            "partition aws-cn",
        ),
        (
            &[
                "--role-arn",
                "arn:aws:iam::123456789012:role/r",
                "--duration-seconds",
                "60",
            ],
            3,
            "session duration",
        ),
        (
            &[
                "--role-arn",
                "arn:aws:iam::123456789012:role/r",
                "--session-name",
                "x y",
            ],
            3,
            "invalid session name",
        ),
        (&["--session-name", "abc"], 3, "only apply with --role-arn"),
    ];
    for (extra, code, needle) in cases {
        assert_failed(&run(&[&get_token[..], extra].concat()), *code, needle);
    }
    assert_failed(
        &run(&["eks", "get-token", "--cluster-name", ""]),
        3,
        "invalid cluster name",
    );
    assert_failed(
        &run(&["--region", "us-east-1", "eks", "get-token"]),
        2,
        "--cluster-name",
    );
    assert_failed(
        &run(&["--region", "Mars", "token", "-i", "c"]),
        3,
        "invalid region",
    );
    assert!(
        listener.accept().is_err(),
        "a rejected invocation must not contact STS"
    );
}

#[test]
fn region_falls_back_to_the_profile() {
    let env = Env::new();
    let config = env.home.path().join("config");
    std::fs::write(&config, "[profile gpu]\nregion = ap-south-1\n").unwrap();
    let out = env
        .plugin()
        .env("AWS_CONFIG_FILE", &config)
        .env("AWS_ACCESS_KEY_ID", "AKID")
        .env("AWS_SECRET_ACCESS_KEY", "secret")
        .args(["--profile", "gpu", "token", "-i", "c"])
        .output()
        .unwrap();
    let token = eks_token::decode(&token_of(&out)).unwrap();
    assert_eq!(token.region, "ap-south-1");
    assert_eq!(token.url.host_str(), Some("sts.ap-south-1.amazonaws.com"));

    let out = env.plugin().args(["token", "-i", "c"]).output().unwrap();
    assert_failed(&out, 3, "pass --region");
}

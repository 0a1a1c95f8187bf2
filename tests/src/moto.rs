//! A throwaway `moto_server` on 127.0.0.1 (a free port), killed when dropped, plus the IAM
//! fixtures the credential tests need, created through the real AWS CLI.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::tools;

/// The account id moto uses.
pub const ACCOUNT_ID: &str = "123456789012";

/// A running `moto_server`; killed (and reaped) on drop, also when a test panics.
pub struct MotoServer {
    child: Child,
    port: u16,
    _log_dir: tempfile::TempDir,
}

/// Long-lived access keys of an IAM user created in moto.
#[derive(Debug, Clone)]
pub struct AccessKey {
    /// `AKIA…`
    pub access_key_id: String,
    /// The secret; only ever passed to children through the environment.
    pub secret_access_key: String,
}

impl MotoServer {
    /// Starts moto on a free loopback port and waits (up to 30 s) until it answers.
    ///
    /// Panics with the server's log when it does not come up.
    pub fn start() -> MotoServer {
        let port = free_port();
        let log_dir = tempfile::tempdir().expect("temp dir for the moto log");
        let log_path = log_dir.path().join("moto.log");
        let log = std::fs::File::create(&log_path).expect("moto log file");
        let child = Command::new(tools::venv_bin("moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log fd"))
            .stderr(log)
            .spawn()
            .expect("spawn moto_server");
        let server = MotoServer {
            child,
            port,
            _log_dir: log_dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while ureq::get(&format!("{}/moto-api/data.json", server.url()))
            .call()
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "moto_server did not come up on port {port}: {}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// `http://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Turns request authentication on from now: SigV4 signatures, access keys, IAM policies
    /// and role trust policies are then enforced by moto.
    pub fn enable_auth(&self) {
        ureq::post(&format!("{}/moto-api/reset-auth", self.url()))
            .header("Content-Type", "text/plain")
            .send("0")
            .expect("moto reset-auth");
    }

    /// moto's whole state (`/moto-api/data.json`).
    pub fn state(&self) -> Value {
        ureq::get(&format!("{}/moto-api/data.json", self.url()))
            .call()
            .expect("moto data.json")
            .body_mut()
            .read_to_string()
            .map(|text| serde_json::from_str(&text).expect("moto data.json is JSON"))
            .expect("read moto data.json")
    }

    /// Every sts:AssumeRole moto has answered (`sts.AssumedRole[]`: `access_key_id`,
    /// `secret_access_key`, `session_token`, `arn`, `role_arn`, `session_name`, …).
    pub fn assumed_roles(&self) -> Vec<Value> {
        self.state()["sts"]["AssumedRole"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The real AWS CLI pointed at this server, with throwaway admin credentials (valid while
    /// auth is off) and no shared config; add `.env(…)` to override.
    pub fn aws(&self) -> Command {
        let mut cmd = Command::new(tools::venv_bin("aws"));
        tools::aws_cli_setup_env(&mut cmd, &self.url(), "us-east-1");
        cmd
    }

    /// Runs `aws ARGS…` (auth must still be off) and returns its JSON output (`Null` if none).
    pub fn aws_json(&self, args: &[&str]) -> Value {
        let out = self.aws().args(args).output().expect("run aws");
        assert!(
            out.status.success(),
            "aws {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if out.stdout.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            serde_json::from_slice(&out.stdout).expect("aws printed JSON")
        }
    }

    /// Creates IAM user `name` allowed to call sts:AssumeRole on any role, and returns an
    /// access key for it.
    pub fn create_user(&self, name: &str) -> AccessKey {
        self.aws_json(&["iam", "create-user", "--user-name", name]);
        self.aws_json(&[
            "iam",
            "put-user-policy",
            "--user-name",
            name,
            "--policy-name",
            "assume-any-role",
            "--policy-document",
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"sts:AssumeRole","Resource":"*"}]}"#,
        ]);
        let key = self.aws_json(&["iam", "create-access-key", "--user-name", name]);
        let field = |f: &str| {
            key["AccessKey"][f]
                .as_str()
                .expect("create-access-key output")
                .to_owned()
        };
        AccessKey {
            access_key_id: field("AccessKeyId"),
            secret_access_key: field("SecretAccessKey"),
        }
    }

    /// Creates role `name` whose trust policy lets IAM user `trusted_user` assume it; returns
    /// the role ARN.
    pub fn create_role(&self, name: &str, trusted_user: &str) -> String {
        let trust = format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{ACCOUNT_ID}:user/{trusted_user}"}},"Action":"sts:AssumeRole"}}]}}"#
        );
        let role = self.aws_json(&[
            "iam",
            "create-role",
            "--role-name",
            name,
            "--assume-role-policy-document",
            &trust,
        ]);
        role["Role"]["Arn"].as_str().expect("role ARN").to_owned()
    }

    /// The secret moto issued for `access_key_id` (assumed-role keys), if any.
    pub fn secret_for(&self, access_key_id: &str) -> Option<String> {
        self.assumed_roles()
            .iter()
            .find(|r| r["access_key_id"] == access_key_id)
            .and_then(|r| r["secret_access_key"].as_str().map(str::to_owned))
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port that was free a moment ago (the kernel picks it; the listener is closed
/// before returning, so a server can bind it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral loopback port")
}

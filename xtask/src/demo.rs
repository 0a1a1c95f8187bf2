//! `cargo xtask demo`: mint a real EKS token against a local STS (moto, signature checking on)
//! through sts:AssumeRole, verify it, and show the cache at work. No AWS account needed.

use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context as _, Result, bail, ensure};
use satellite_tests::eks_token;
use satellite_tests::moto::MotoServer;

use crate::cargo;

/// Runs the demo, printing each step.
pub fn run() -> Result<()> {
    cargo(&[
        "build",
        "--quiet",
        "--package",
        "satellite-credential-plugin",
    ])?;
    let plugin = crate::bench::target_dir().join("debug/satellite-credential-plugin");

    println!("==> starting moto (local STS/IAM) on 127.0.0.1");
    let moto = MotoServer::start();
    let key = moto.create_user("gpu-host");
    let role = moto.create_role("satellite-node", "gpu-host");
    moto.enable_auth();
    println!("    IAM user gpu-host may assume {role}; SigV4 checking is on");

    let home = tempfile::tempdir()?;
    let invoke = || -> Result<(String, f64)> {
        let start = Instant::now();
        let out = Command::new(&plugin)
            .env_clear()
            .env("HOME", home.path())
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_ACCESS_KEY_ID", &key.access_key_id)
            .env("AWS_SECRET_ACCESS_KEY", &key.secret_access_key)
            .env("AWS_ENDPOINT_URL_STS", moto.url())
            .env(
                "KUBERNETES_EXEC_INFO",
                r#"{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1","spec":{"interactive":false}}"#,
            )
            .args(["--region", "us-east-1", "eks", "get-token", "--cluster-name", "sandbox"])
            .args(["--role-arn", &role])
            .stdin(Stdio::null())
            .output()
            .context("running the credential plugin")?;
        let ms = start.elapsed().as_secs_f64() * 1e3;
        if !out.status.success() {
            bail!("plugin failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok((String::from_utf8(out.stdout)?, ms))
    };

    println!(
        "==> satellite-credential-plugin eks get-token --cluster-name sandbox --role-arn {role}"
    );
    let (credential, cold_ms) = invoke()?;
    print!("{credential}");
    let json: serde_json::Value = serde_json::from_str(&credential)?;
    let token = json["status"]["token"]
        .as_str()
        .context("no status.token")?;
    let decoded = eks_token::decode(token).map_err(anyhow::Error::msg)?;
    let secret = moto
        .secret_for(&decoded.access_key_id)
        .context("token not signed with credentials moto issued")?;
    decoded
        .verify_signature(&secret, "sandbox")
        .map_err(anyhow::Error::msg)?;
    println!(
        "==> verified: SigV4 signature matches the assumed-role key {} issued by STS; x-k8s-aws-id=sandbox",
        decoded.access_key_id
    );

    let (_, warm_ms) = invoke()?;
    ensure!(
        moto.assumed_roles().len() == 1,
        "the second call should have used the cache"
    );
    println!(
        "==> first call (AssumeRole) {cold_ms:.1} ms; second call (cached credentials) {warm_ms:.1} ms"
    );
    Ok(())
}

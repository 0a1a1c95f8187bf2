//! `sandbox-authenticator`: the sandbox's EKS-style token webhook for kube-apiserver
//! (`--authentication-token-webhook-config-file`, version v1). See
//! [`satellite_tests::authenticator`] for what it checks.
//!
//! Routes: `POST /authenticate` (TokenReview in, TokenReview out), `GET /healthz`.
//! Reads `kube-system/aws-auth` from the apiserver (with `--kubeconfig`) on every review, so
//! mapping changes apply at once. moto's state (`--moto-url`, `/moto-api/data.json`, several
//! MB and seconds once IAM is used) is cached and fetched again only when a token's access key
//! or session is not in the cached copy (issued credentials never change). Logs one line per review
//! (username or reason; never a token). Exit codes: 0 on SIGTERM, 1 on a start-up error.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use axum::Json;
use axum::extract::State;
use axum::routing::{get, post};
use clap::Parser;
use k8s_openapi::api::authentication::v1::TokenReview;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use satellite_tests::authenticator::mapping::AwsAuth;
use satellite_tests::authenticator::{Settings, authenticate, review_response};

#[derive(Debug, Parser)]
struct Args {
    /// Address to listen on (`127.0.0.1:21362` inside the sandbox namespace)
    #[arg(long)]
    listen: SocketAddr,
    /// Cluster name tokens must be signed for (`x-k8s-aws-id`)
    #[arg(long)]
    cluster_name: String,
    /// Kubeconfig to read kube-system/aws-auth with
    #[arg(long)]
    kubeconfig: PathBuf,
    /// moto (STS stand-in) base URL; its host:port is also an allowed STS host
    #[arg(long)]
    moto_url: url::Url,
}

struct App {
    settings: Settings,
    configmaps: Api<ConfigMap>,
    moto_state_url: String,
    moto_state: tokio::sync::Mutex<Option<Arc<serde_json::Value>>>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    match run(Args::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sandbox-authenticator: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<()> {
    let kubeconfig = kube::config::Kubeconfig::read_from(&args.kubeconfig)
        .with_context(|| format!("reading {}", args.kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .context("loading the kubeconfig")?;
    let client = kube::Client::try_from(config).context("building the Kubernetes client")?;
    let moto_host = match (
        args.moto_url.host_str(),
        args.moto_url.port_or_known_default(),
    ) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        _ => anyhow::bail!("--moto-url {} has no host", args.moto_url),
    };
    let app = Arc::new(App {
        settings: Settings {
            cluster_name: args.cluster_name,
            local_sts_hosts: vec![moto_host],
        },
        configmaps: Api::namespaced(client, "kube-system"),
        moto_state_url: args.moto_url.join("moto-api/data.json")?.to_string(),
        moto_state: tokio::sync::Mutex::new(None),
    });
    let router = axum::Router::new()
        .route("/authenticate", post(review))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(app);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    eprintln!("sandbox-authenticator: listening on {}", args.listen);
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("installing a SIGTERM handler");
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        })
        .await
        .context("serving")
}

async fn review(
    State(app): State<Arc<App>>,
    Json(request): Json<TokenReview>,
) -> Json<TokenReview> {
    let token = request.spec.token.unwrap_or_default();
    let result = check(&app, &token).await;
    match &result {
        Ok(m) => eprintln!(
            "sandbox-authenticator: authenticated {} groups {:?}",
            m.username, m.groups
        ),
        Err(reason) => eprintln!("sandbox-authenticator: rejected: {reason}"),
    }
    Json(review_response(result))
}

async fn check(
    app: &App,
    token: &str,
) -> Result<satellite_tests::authenticator::mapping::Mapped, String> {
    if !token.starts_with("k8s-aws-v1.") {
        return Err("not an EKS token (no k8s-aws-v1. prefix)".into());
    }
    let cached = app.moto_state.lock().await.clone();
    let state = match cached {
        Some(state) if known_to(&state, token) => state,
        _ => {
            let fresh = Arc::new(fetch_moto_state(app.moto_state_url.clone()).await?);
            *app.moto_state.lock().await = Some(fresh.clone());
            fresh
        }
    };
    let cm = app
        .configmaps
        .get_opt("aws-auth")
        .await
        .map_err(|e| format!("reading kube-system/aws-auth: {e}"))?;
    let data = cm.and_then(|c| c.data).unwrap_or_default();
    let aws_auth = AwsAuth::parse(
        data.get("mapRoles").map(String::as_str),
        data.get("mapUsers").map(String::as_str),
    )?;
    authenticate(
        &app.settings,
        token,
        &state,
        &aws_auth,
        time::OffsetDateTime::now_utc(),
    )
}

/// Whether the credentials that signed `token` are in `state` (else fetch a newer copy).
fn known_to(state: &serde_json::Value, token: &str) -> bool {
    satellite_tests::eks_token::decode(token)
        .is_ok_and(|t| satellite_tests::authenticator::verify::caller_from_moto(state, &t).is_ok())
}

/// GETs moto's `/moto-api/data.json` (up to 256 MiB).
async fn fetch_moto_state(url: String) -> Result<serde_json::Value, String> {
    tokio::task::spawn_blocking(move || -> Result<serde_json::Value, String> {
        let text = ureq::get(&url)
            .call()
            .map_err(|e| format!("reading STS state from moto: {e}"))?
            .body_mut()
            .with_config()
            .limit(256 * 1024 * 1024)
            .read_to_string()
            .map_err(|e| format!("reading STS state from moto: {e}"))?;
        serde_json::from_str(&text).map_err(|e| format!("moto state is not JSON: {e}"))
    })
    .await
    .map_err(|e| format!("moto lookup task: {e}"))?
}

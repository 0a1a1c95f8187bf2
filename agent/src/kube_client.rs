//! kube-rs clients authenticated with an EKS token minted in-process (no exec subprocess).

use base64::Engine as _;
use kube::config::{
    AuthInfo, Cluster, Context, KubeConfigOptions, Kubeconfig, NamedAuthInfo, NamedCluster,
    NamedContext,
};
use satellite_credential_plugin::EksToken;

/// A client for `endpoint` trusting `ca_pem`, sending `token` as the bearer token.
///
/// kube-rs builds the TLS configuration from an in-memory kubeconfig, the same path
/// `kubectl`-style configs take. The client is good until the token's expiry; callers
/// build a new one with a fresh token after that (see `run`).
///
/// Errors: kube's configuration error (malformed endpoint or CA).
pub async fn client(
    endpoint: &str,
    ca_pem: &str,
    token: &EksToken,
) -> Result<kube::Client, kube::Error> {
    let kubeconfig = Kubeconfig {
        clusters: vec![NamedCluster {
            name: "cluster".into(),
            cluster: Some(Cluster {
                server: Some(endpoint.to_owned()),
                certificate_authority_data: Some(
                    base64::engine::general_purpose::STANDARD.encode(ca_pem),
                ),
                ..Cluster::default()
            }),
            other: Default::default(),
        }],
        auth_infos: vec![NamedAuthInfo {
            name: "node".into(),
            auth_info: Some(AuthInfo {
                token: Some(token.token().to_owned().into()),
                ..AuthInfo::default()
            }),
            other: Default::default(),
        }],
        contexts: vec![NamedContext {
            name: "node".into(),
            context: Some(Context {
                cluster: "cluster".into(),
                user: Some("node".into()),
                ..Context::default()
            }),
            other: Default::default(),
        }],
        current_context: Some("node".into()),
        ..Kubeconfig::default()
    };
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(kube::Error::InferKubeconfig)?;
    kube::Client::try_from(config)
}

//! The library API the agent calls in-process, against moto with signature checking on.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use satellite_credential_plugin::input::{ClusterId, Region, RoleArn, SessionName, parse_endpoint};
use satellite_credential_plugin::{AssumeRole, Error, TokenConfig, TokenMinter};
use satellite_tests::eks_token;
use satellite_tests::moto::MotoServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minter_assumes_the_role_once_and_signs_in_process() {
    let moto = MotoServer::start();
    let key = moto.create_user("agent");
    let role = moto.create_role("agent-node", "agent");
    moto.enable_auth();
    let cache = tempfile::tempdir().unwrap();

    let config = |secret: &str| TokenConfig {
        cluster: ClusterId::new("lib-cluster").unwrap(),
        region: Region::new("us-east-1").unwrap(),
        sts_endpoint: Some(parse_endpoint(&moto.url()).unwrap()),
        profile: None,
        credentials_provider: Some(SharedCredentialsProvider::new(Credentials::new(
            &key.access_key_id,
            secret,
            None,
            None,
            "test",
        ))),
        assume_role: Some(AssumeRole {
            role_arn: RoleArn::parse(&role).unwrap(),
            session_name: SessionName::new("agent-session").unwrap(),
            external_id: None,
            duration: Duration::from_secs(3600),
        }),
        cache_dir: Some(cache.path().to_owned()),
    };

    let minter = TokenMinter::new(config(&key.secret_access_key)).unwrap();
    assert!(minter.token_from_cache().is_none(), "cold cache");
    let first = minter.token().await.unwrap();
    let second = minter.token().await.unwrap();
    assert_eq!(moto.assumed_roles().len(), 1);

    for token in [&first, &second] {
        let decoded = eks_token::decode(token.token()).unwrap();
        let secret = moto.secret_for(&decoded.access_key_id).unwrap();
        decoded.verify_signature(&secret, "lib-cluster").unwrap();
        let left = token
            .expiration()
            .duration_since(SystemTime::now())
            .unwrap();
        assert!(left > Duration::from_secs(13 * 60) && left <= Duration::from_secs(14 * 60));
    }
    assert!(
        !format!("{first:?}").contains("k8s-aws-v1."),
        "Debug must not leak the token"
    );

    // A second minter (another process, in effect) finds the credentials on disk.
    let other = TokenMinter::new(config("wrong-secret-never-used")).unwrap();
    assert!(other.token_from_cache().is_some());
    assert_eq!(moto.assumed_roles().len(), 1);

    // Without the cache, bad base credentials surface as a rejection, not a panic.
    let mut uncached = config("wrong-secret");
    uncached.cache_dir = None;
    let err = TokenMinter::new(uncached)
        .unwrap()
        .token()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::CredentialsRejected { .. }), "{err}");
    assert_eq!(
        satellite_credential_plugin::ExitCode::from(&err),
        satellite_credential_plugin::ExitCode::Denied
    );
}

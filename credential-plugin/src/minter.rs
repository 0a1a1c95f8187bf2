//! [`TokenMinter`]: resolves credentials (standard chain, optional sts:AssumeRole, cache) and
//! presigns tokens. The agent uses it in-process; the binary wraps it.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use aws_config::meta::region::ProvideRegion as _;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials as _, SharedCredentialsProvider};
use aws_sdk_sts::error::{ProvideErrorMetadata as _, SdkError};
use aws_sdk_sts::operation::assume_role::AssumeRoleError;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_types::error::display::DisplayErrorContext;
use url::Url;

use crate::Error;
use crate::cache::{CacheKey, CredentialCache, REFRESH_BEFORE_EXPIRY};
use crate::input::{ClusterId, Region, RoleArn, SessionName};
use crate::token::{EksToken, presign};

/// Total time budget for one STS call, retries included.
pub const STS_OPERATION_TIMEOUT: Duration = Duration::from_secs(10);

/// Attempts per STS call (standard retry mode, exponential backoff with jitter).
pub const STS_MAX_ATTEMPTS: u32 = 3;

/// What to mint a token for, and with which identity.
#[derive(Debug, Clone)]
pub struct TokenConfig {
    /// Signed as `x-k8s-aws-id`: the EKS cluster name (or local-cluster id).
    pub cluster: ClusterId,
    /// The SigV4 region; also picks the regional STS endpoint.
    pub region: Region,
    /// Overrides the STS endpoint for both the presigned URL and sts:AssumeRole
    /// (`--sts-endpoint` / `AWS_ENDPOINT_URL_STS`); `None`: [`Region::sts_endpoint`].
    pub sts_endpoint: Option<Url>,
    /// The shared-config profile for the base credentials (`None`: `AWS_PROFILE` or `default`).
    pub profile: Option<String>,
    /// The base credentials; `None`: the standard chain (for the profile above). The agent
    /// passes a provider built from its NodeConfig here.
    pub credentials_provider: Option<SharedCredentialsProvider>,
    /// Assume this role with the base credentials and sign with the role's credentials.
    pub assume_role: Option<AssumeRole>,
    /// Where assumed-role credentials are cached across processes; `None` disables the disk cache.
    pub cache_dir: Option<PathBuf>,
}

/// Parameters of sts:AssumeRole.
#[derive(Debug, Clone)]
pub struct AssumeRole {
    /// The role to assume.
    pub role_arn: RoleArn,
    /// `RoleSessionName` (see [`SessionName::default_for_host`]).
    pub session_name: SessionName,
    /// `ExternalId`, when the role's trust policy requires one.
    pub external_id: Option<String>,
    /// `DurationSeconds`, 900 s to 43 200 s.
    pub duration: Duration,
}

/// Mints EKS tokens; cheap to call repeatedly (credentials are cached in memory and, for
/// assumed roles, on disk).
#[derive(Debug)]
pub struct TokenMinter {
    config: TokenConfig,
    endpoint: Url,
    cache: Option<(CredentialCache, CacheKey)>,
    memory: Mutex<Option<Credentials>>,
    sdk: tokio::sync::OnceCell<SdkConfig>,
}

impl TokenMinter {
    /// Checks `config` for consistency (no I/O).
    ///
    /// Errors: [`Error::InvalidInput`] when the role's partition differs from the region's, or
    /// the external id is malformed.
    pub fn new(config: TokenConfig) -> Result<Self, Error> {
        if let Some(role) = &config.assume_role {
            if role.role_arn.partition() != config.region.partition() {
                return Err(Error::invalid(
                    "role ARN",
                    format!(
                        "{} is in partition {} but region {} is in {}; use a region of the role's partition",
                        role.role_arn,
                        role.role_arn.partition().as_str(),
                        config.region,
                        config.region.partition().as_str()
                    ),
                ));
            }
            if let Some(id) = &role.external_id {
                let ok = (2..=1224).contains(&id.len())
                    && id
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"+=,.@:/_-".contains(&b));
                if !ok {
                    return Err(Error::invalid(
                        "external id",
                        "must be 2-1224 characters of letters, digits and +=,.@:/_-",
                    ));
                }
            }
        }
        let endpoint = config
            .sts_endpoint
            .clone()
            .unwrap_or_else(|| config.region.sts_endpoint());
        let cache = match (&config.assume_role, &config.cache_dir) {
            (Some(role), Some(dir)) => {
                let env_key_id = std::env::var("AWS_ACCESS_KEY_ID").ok();
                let env_profile = std::env::var("AWS_PROFILE").ok();
                let duration = role.duration.as_secs().to_string();
                let key = CacheKey::new(&[
                    ("role_arn", Some(role.role_arn.as_str())),
                    ("session_name", Some(role.session_name.as_str())),
                    ("external_id", role.external_id.as_deref()),
                    ("duration", Some(&duration)),
                    ("region", Some(config.region.as_str())),
                    ("endpoint", Some(endpoint.as_str())),
                    (
                        "profile",
                        config.profile.as_deref().or(env_profile.as_deref()),
                    ),
                    ("access_key_id", env_key_id.as_deref()),
                ]);
                Some((CredentialCache::new(dir), key))
            }
            _ => None,
        };
        Ok(TokenMinter {
            config,
            endpoint,
            cache,
            memory: Mutex::new(None),
            sdk: tokio::sync::OnceCell::new(),
        })
    }

    /// The STS endpoint tokens are presigned for.
    pub fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    /// A token from credentials already in memory or in the disk cache, without any network
    /// call or async runtime; `None` when those have to be fetched ([`TokenMinter::token`]).
    ///
    /// Errors: [`Error::Signing`].
    pub fn token_from_cache(&self) -> Option<Result<EksToken, Error>> {
        let now = SystemTime::now();
        let credentials = self.cached_credentials(now)?;
        Some(self.sign(&credentials, now))
    }

    /// A token, fetching credentials as needed (credential chain, then sts:AssumeRole when
    /// configured, at most once per host at a time thanks to the cache lock).
    ///
    /// Errors: [`Error::NoCredentials`], [`Error::AccessDenied`],
    /// [`Error::CredentialsRejected`], [`Error::StsUnreachable`], [`Error::Sts`],
    /// [`Error::Signing`].
    pub async fn token(&self) -> Result<EksToken, Error> {
        let credentials = self.credentials().await?;
        self.sign(&credentials, SystemTime::now())
    }

    /// The credentials tokens are signed with (the assumed role's when configured), from the
    /// same caches as [`TokenMinter::token`]; for the agent's own AWS API calls.
    ///
    /// Errors: as [`TokenMinter::token`].
    pub async fn credentials(&self) -> Result<Credentials, Error> {
        if let Some(credentials) = self.cached_credentials(SystemTime::now()) {
            return Ok(credentials);
        }
        let credentials = self.fetch_credentials().await?;
        *self.memory.lock().unwrap_or_else(|e| e.into_inner()) = Some(credentials.clone());
        Ok(credentials)
    }

    fn sign(&self, credentials: &Credentials, now: SystemTime) -> Result<EksToken, Error> {
        presign(
            credentials,
            &self.config.cluster,
            &self.config.region,
            &self.endpoint,
            now,
        )
    }

    fn cached_credentials(&self, now: SystemTime) -> Option<Credentials> {
        let memory = self
            .memory
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(credentials) = memory.filter(|c| still_fresh(c, now)) {
            return Some(credentials);
        }
        let (cache, key) = self.cache.as_ref()?;
        let credentials = cache.load(key, now)?;
        tracing::debug!(cache = %cache.dir().display(), "using cached assumed-role credentials");
        Some(credentials)
    }

    async fn fetch_credentials(&self) -> Result<Credentials, Error> {
        let Some(role) = &self.config.assume_role else {
            return self.base_credentials().await;
        };
        let Some((cache, key)) = &self.cache else {
            return self.assume_role(role).await;
        };
        let lock = {
            let (cache, key) = (cache.clone(), key.clone());
            tokio::task::spawn_blocking(move || cache.lock(&key))
                .await
                .map_err(|e| Error::Cache {
                    path: self.config.cache_dir.clone().unwrap_or_default(),
                    message: e.to_string(),
                })?
        };
        let _lock = match lock {
            Ok(lock) => Some(lock),
            Err(e) => {
                tracing::warn!(error = %e, "credential cache unusable; continuing without it");
                None
            }
        };
        // Another process may have refreshed the entry while we waited for the lock.
        if let Some(credentials) = cache.load(key, SystemTime::now()) {
            return Ok(credentials);
        }
        let credentials = self.assume_role(role).await?;
        if let Err(e) = cache.store(key, &credentials) {
            tracing::warn!(error = %e, "could not write the credential cache");
        }
        Ok(credentials)
    }

    async fn sdk_config(&self) -> &SdkConfig {
        self.sdk
            .get_or_init(|| async {
                let mut loader = aws_config::defaults(BehaviorVersion::latest())
                    .region(aws_types::region::Region::new(
                        self.config.region.as_str().to_owned(),
                    ))
                    .retry_config(RetryConfig::standard().with_max_attempts(STS_MAX_ATTEMPTS))
                    .timeout_config(
                        TimeoutConfig::builder()
                            .connect_timeout(Duration::from_secs(2))
                            .operation_attempt_timeout(Duration::from_secs(4))
                            .operation_timeout(STS_OPERATION_TIMEOUT)
                            .build(),
                    );
                if let Some(profile) = &self.config.profile {
                    loader = loader.profile_name(profile);
                }
                loader.load().await
            })
            .await
    }

    async fn base_credentials(&self) -> Result<Credentials, Error> {
        let provider = match &self.config.credentials_provider {
            Some(provider) => provider.clone(),
            None => self
                .sdk_config()
                .await
                .credentials_provider()
                .ok_or_else(|| Error::NoCredentials("no credential provider configured".into()))?,
        };
        provider.provide_credentials().await.map_err(|e| match e {
            CredentialsError::CredentialsNotLoaded(_) => {
                Error::NoCredentials("the default credential chain found none".into())
            }
            other => Error::NoCredentials(DisplayErrorContext(&other).to_string()),
        })
    }

    async fn assume_role(&self, role: &AssumeRole) -> Result<Credentials, Error> {
        let base = self.base_credentials().await?;
        let caller_key_id = base.access_key_id().to_owned();
        let sts_config = aws_sdk_sts::config::Builder::from(self.sdk_config().await)
            .credentials_provider(base)
            .endpoint_url(self.endpoint.as_str().trim_end_matches('/'))
            .build();
        let client = aws_sdk_sts::Client::from_conf(sts_config);
        let output = client
            .assume_role()
            .role_arn(role.role_arn.as_str())
            .role_session_name(role.session_name.as_str())
            .set_external_id(role.external_id.clone())
            .duration_seconds(i32::try_from(role.duration.as_secs()).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(|e| self.assume_role_error(e, role, caller_key_id))?;
        let credentials = output.credentials().ok_or_else(|| Error::Sts {
            operation: "AssumeRole",
            message: "the response carried no credentials".into(),
        })?;
        let expiry = SystemTime::try_from(*credentials.expiration()).map_err(|e| Error::Sts {
            operation: "AssumeRole",
            message: format!("unusable expiration in the response: {e}"),
        })?;
        tracing::debug!(role = %role.role_arn, "assumed role");
        Ok(Credentials::new(
            credentials.access_key_id(),
            credentials.secret_access_key(),
            Some(credentials.session_token().to_owned()),
            Some(expiry),
            "AssumeRole",
        ))
    }

    fn assume_role_error(
        &self,
        error: SdkError<AssumeRoleError, HttpResponse>,
        role: &AssumeRole,
        caller_key_id: String,
    ) -> Error {
        match &error {
            SdkError::ServiceError(service) => {
                let err = service.err();
                let (code, message) = match (err.code(), err.message()) {
                    (Some(code), message) => {
                        (code.to_owned(), message.unwrap_or("no message").to_owned())
                    }
                    _ => error_from_body(service.raw()),
                };
                match code.as_str() {
                    "AccessDenied" => Error::AccessDenied {
                        role_arn: role.role_arn.to_string(),
                        caller_key_id,
                        message,
                    },
                    "InvalidClientTokenId"
                    | "SignatureDoesNotMatch"
                    | "ExpiredToken"
                    | "UnrecognizedClientException" => Error::CredentialsRejected {
                        caller_key_id,
                        message: format!("{code}: {message}"),
                    },
                    _ => Error::Sts {
                        operation: "AssumeRole",
                        message: format!("{code}: {message}"),
                    },
                }
            }
            SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => Error::StsUnreachable {
                endpoint: self.endpoint.to_string(),
                message: DisplayErrorContext(&error).to_string(),
            },
            _ => Error::Sts {
                operation: "AssumeRole",
                message: DisplayErrorContext(&error).to_string(),
            },
        }
    }
}

/// Code and message of an error response the SDK's awsQuery parser did not understand.
///
/// STS answers `<ErrorResponse><Error><Code>…`; some STS-compatible services (moto, some
/// proxies) nest it as `<ErrorResponse><Errors><Error><Code>…`. Both carry one `<Code>` and one
/// `<Message>`, which is all we need to tell AccessDenied from the rest.
fn error_from_body(response: &HttpResponse) -> (String, String) {
    let body = response
        .body()
        .bytes()
        .map(String::from_utf8_lossy)
        .unwrap_or_default();
    let element = |name: &str| {
        let open = format!("<{name}>");
        let start = body.find(&open)? + open.len();
        let end = start + body[start..].find(&format!("</{name}>"))?;
        Some(body[start..end].to_owned())
    };
    let status = response.status().as_u16();
    (
        element("Code").unwrap_or_else(|| format!("HTTP {status}")),
        element("Message").unwrap_or_else(|| "no message".to_owned()),
    )
}

fn still_fresh(credentials: &Credentials, now: SystemTime) -> bool {
    credentials
        .expiry()
        .is_none_or(|expiry| expiry.duration_since(now).unwrap_or_default() > REFRESH_BEFORE_EXPIRY)
}

/// The `region` of `profile` (else `AWS_PROFILE`, else `default`) in the shared config files;
/// `None` when unset. Reads files only; no network.
pub async fn profile_region(profile: Option<&str>) -> Option<String> {
    let mut provider = aws_config::profile::ProfileFileRegionProvider::builder();
    if let Some(profile) = profile {
        provider = provider.profile_name(profile);
    }
    provider
        .build()
        .region()
        .await
        .map(|region| region.as_ref().to_owned())
}

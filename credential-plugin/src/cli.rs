//! Command line: `aws eks get-token`-style and aws-iam-authenticator-style invocations.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use satellite_credential_plugin::cache::CredentialCache;
use satellite_credential_plugin::input::{
    self, ClusterId, Region, RoleArn, SessionName, validate_duration,
};
use satellite_credential_plugin::{AssumeRole, Error, TokenConfig};

/// Print a Kubernetes ExecCredential with an Amazon EKS bearer token.
#[derive(Debug, Parser)]
#[command(name = "satellite-credential-plugin", version)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,

    /// AWS region for signing and the regional STS endpoint [env: AWS_REGION, AWS_DEFAULT_REGION]
    #[arg(long, global = true)]
    region: Option<String>,

    /// Shared-config profile for the base credentials [env: AWS_PROFILE]
    #[arg(long, global = true)]
    profile: Option<String>,

    /// RoleSessionName for sts:AssumeRole [default: satellite-<hostname>]
    #[arg(long, global = true)]
    session_name: Option<String>,

    /// ExternalId for sts:AssumeRole, when the role's trust policy requires one
    #[arg(long, global = true)]
    external_id: Option<String>,

    /// DurationSeconds for sts:AssumeRole (900-43200)
    #[arg(long, global = true, default_value_t = 3600)]
    duration_seconds: u64,

    /// STS endpoint URL for the presigned URL and AssumeRole [env: AWS_ENDPOINT_URL_STS]
    #[arg(long, global = true)]
    sts_endpoint: Option<String>,

    /// Directory for cached assumed-role credentials
    /// [env: SATELLITE_CREDENTIAL_CACHE_DIR; default: $XDG_CACHE_HOME/satellite/credentials]
    #[arg(long, global = true)]
    cache_dir: Option<PathBuf>,

    /// Do not read or write the credential cache
    #[arg(long, global = true)]
    no_cache: bool,

    /// Output format; only `json` (accepted for compatibility with `aws … --output json`)
    #[arg(long, global = true, value_enum, default_value_t = Output::Json)]
    output: Output,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Output {
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// `aws eks …` compatibility: only `get-token`
    Eks {
        #[command(subcommand)]
        command: EksCommand,
    },
    /// Same as `eks get-token`
    GetToken(GetToken),
    /// aws-iam-authenticator compatibility: `token -i CLUSTER [-r ROLE_ARN]`
    Token(AuthenticatorToken),
}

#[derive(Debug, Subcommand)]
enum EksCommand {
    /// Print a token for a cluster
    GetToken(GetToken),
}

#[derive(Debug, Args)]
struct GetToken {
    /// Name of the EKS cluster (signed as x-k8s-aws-id)
    #[arg(
        long,
        required_unless_present = "cluster_id",
        conflicts_with = "cluster_id"
    )]
    cluster_name: Option<String>,

    /// Id of an EKS local cluster on Outposts, used instead of the name
    #[arg(long)]
    cluster_id: Option<String>,

    /// IAM role to assume before signing
    #[arg(long)]
    role_arn: Option<String>,
}

#[derive(Debug, Args)]
struct AuthenticatorToken {
    /// Cluster name or id (signed as x-k8s-aws-id)
    #[arg(short = 'i', long = "cluster-id")]
    cluster_id: String,

    /// IAM role to assume before signing
    #[arg(short = 'r', long = "role")]
    role: Option<String>,
}

impl Cli {
    /// Validates every input (no network) and builds the minter's configuration.
    ///
    /// The region comes from `--region`, `AWS_REGION` or `AWS_DEFAULT_REGION`, in that order,
    /// else from `profile_region(profile)`, which is called only then and after the other
    /// inputs were checked.
    pub fn into_config(
        self,
        profile_region: impl FnOnce(Option<&str>) -> Result<Option<String>, Error>,
    ) -> Result<TokenConfig, Error> {
        let (cluster, role_arn) = match self.command {
            Command::Eks {
                command: EksCommand::GetToken(args),
            }
            | Command::GetToken(args) => (
                args.cluster_name.or(args.cluster_id).unwrap_or_default(),
                args.role_arn,
            ),
            Command::Token(args) => (args.cluster_id, args.role),
        };
        let cluster = ClusterId::new(&cluster)?;
        let sts_endpoint = self
            .sts_endpoint
            .or_else(|| non_empty_env("AWS_ENDPOINT_URL_STS"))
            .map(|e| input::parse_endpoint(&e))
            .transpose()?;
        let assume_role = role_arn
            .map(|arn| -> Result<AssumeRole, Error> {
                Ok(AssumeRole {
                    role_arn: RoleArn::parse(&arn)?,
                    session_name: match &self.session_name {
                        Some(name) => SessionName::new(name)?,
                        None => SessionName::default_for_host(),
                    },
                    external_id: self.external_id.clone(),
                    duration: validate_duration(Duration::from_secs(self.duration_seconds))?,
                })
            })
            .transpose()?;
        if assume_role.is_none() && (self.session_name.is_some() || self.external_id.is_some()) {
            return Err(Error::invalid(
                "options",
                "--session-name and --external-id only apply with --role-arn (or -r)",
            ));
        }
        let region = match self
            .region
            .or_else(|| non_empty_env("AWS_REGION"))
            .or_else(|| non_empty_env("AWS_DEFAULT_REGION"))
        {
            Some(region) => region,
            None => profile_region(self.profile.as_deref())?.ok_or_else(|| {
                Error::invalid(
                    "region",
                    "none configured; pass --region, set AWS_REGION, or set `region` in the profile",
                )
            })?,
        };
        let region = Region::new(&region)?;
        let cache_dir = if self.no_cache {
            None
        } else {
            self.cache_dir
                .or_else(|| non_empty_env("SATELLITE_CREDENTIAL_CACHE_DIR").map(PathBuf::from))
                .or_else(CredentialCache::default_dir)
        };
        let Output::Json = self.output;
        Ok(TokenConfig {
            cluster,
            region,
            sts_endpoint,
            profile: self.profile,
            credentials_provider: None,
            assume_role,
            cache_dir,
        })
    }
}

fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

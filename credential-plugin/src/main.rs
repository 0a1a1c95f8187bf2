//! `satellite-credential-plugin`: a Kubernetes exec credential plugin that prints an
//! `ExecCredential` holding an Amazon EKS bearer token.
//!
//! # Interface
//! Drop-in command lines (global options may come before or after the subcommand):
//! ```text
//! satellite-credential-plugin [--region R] eks get-token --cluster-name C [--role-arn ARN]   # like `aws eks get-token`
//! satellite-credential-plugin get-token --cluster-name C [--role-arn ARN]
//! satellite-credential-plugin token -i C [-r ARN]                                          # like aws-iam-authenticator
//! ```
//! Options: `--region` (else `AWS_REGION`, `AWS_DEFAULT_REGION`, the profile's region),
//! `--profile`, `--session-name` (default `satellite-<hostname>`), `--external-id`,
//! `--duration-seconds` (default 3600), `--sts-endpoint` (else `AWS_ENDPOINT_URL_STS`, else the
//! regional endpoint of the region's partition), `--cache-dir` (else
//! `SATELLITE_CREDENTIAL_CACHE_DIR`, else `$XDG_CACHE_HOME/satellite/credentials` or
//! `~/.cache/satellite/credentials`), `--no-cache`. Credentials come only from the standard AWS
//! chain: no option takes a secret.
//!
//! Input: `KUBERNETES_EXEC_INFO` (client-go); the answer uses its `apiVersion`
//! (`client.authentication.k8s.io/v1` or `v1beta1`; v1beta1 when unset).
//! Output: on success, one `ExecCredential` JSON object on stdout. On failure stdout stays
//! empty and stderr says what failed and how to fix it. Log verbosity: `SATELLITE_LOG`
//! (`error`, `warn` (default), `info`, `debug`, `trace`), on stderr.
//!
//! # Exit codes
//! | code | meaning |
//! |------|---------|
//! | 0 | token printed |
//! | 1 | other failure (unexpected STS error, signing, runtime) |
//! | 2 | bad command line |
//! | 3 | invalid input: cluster name, region, role ARN, session name, duration, endpoint, `KUBERNETES_EXEC_INFO` |
//! | 4 | no AWS credentials found |
//! | 5 | STS denied the AssumeRole, or rejected the caller's credentials |
//! | 6 | STS unreachable within the retry budget (10 s) |

mod cli;

use std::io::Write as _;

use clap::Parser as _;
use satellite_credential_plugin::exec_credential::{self, ApiVersion, EXEC_INFO_ENV};
use satellite_credential_plugin::{Error, ExitCode, TokenMinter, profile_region};

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    init_logging();
    let output = run(cli).and_then(|credential| {
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(credential.as_bytes())
            .and_then(|()| stdout.flush())
            .map_err(Error::Output)
    });
    match output {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("satellite-credential-plugin: error: {e}");
            ExitCode::from(&e).into()
        }
    }
}

fn run(cli: cli::Cli) -> Result<String, Error> {
    let version = ApiVersion::from_exec_info(std::env::var(EXEC_INFO_ENV).ok().as_deref())?;
    let mut runtime = None;
    // Only file I/O: the shared config's `region` for the selected profile.
    let config = cli.into_config(|profile| {
        Ok(runtime
            .insert(start_runtime()?)
            .block_on(profile_region(profile)))
    })?;
    let minter = TokenMinter::new(config)?;
    let token = match minter.token_from_cache() {
        Some(token) => token?,
        None => match runtime {
            Some(rt) => rt.block_on(minter.token())?,
            None => start_runtime()?.block_on(minter.token())?,
        },
    };
    Ok(exec_credential::render(version, &token))
}

fn start_runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)
}

fn init_logging() {
    let level = std::env::var("SATELLITE_LOG")
        .ok()
        .and_then(|v| v.parse::<tracing::Level>().ok())
        .unwrap_or(tracing::Level::WARN);
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_target(false)
        .without_time()
        .init();
}

//! Validated inputs: cluster id, region and partition, role ARN, session name, STS endpoint.
//!
//! Everything here is checked before any network call so that a typo fails fast with a
//! precise message (exit code 3) instead of an opaque STS error.

use std::fmt;
use std::time::Duration;

use url::Url;

use crate::Error;

/// An AWS partition, derived from a region name.
///
/// Source: the partitions in the AWS SDKs' `partitions.json` (endpoint ruleset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partition {
    /// `aws`: the commercial regions (`us-east-1`, `eu-west-1`, …).
    Aws,
    /// `aws-cn`: the China regions (`cn-north-1`, `cn-northwest-1`).
    AwsCn,
    /// `aws-us-gov`: AWS GovCloud (US) (`us-gov-west-1`, `us-gov-east-1`).
    AwsUsGov,
}

impl Partition {
    /// The partition of `region`: `cn-*` is aws-cn, `us-gov-*` is aws-us-gov, anything else aws.
    pub fn of_region(region: &str) -> Self {
        if region.starts_with("cn-") {
            Partition::AwsCn
        } else if region.starts_with("us-gov-") {
            Partition::AwsUsGov
        } else {
            Partition::Aws
        }
    }

    /// The partition's name as it appears in ARNs.
    pub fn as_str(self) -> &'static str {
        match self {
            Partition::Aws => "aws",
            Partition::AwsCn => "aws-cn",
            Partition::AwsUsGov => "aws-us-gov",
        }
    }

    /// The partition's DNS suffix (`amazonaws.com`, or `amazonaws.com.cn` for aws-cn).
    pub fn dns_suffix(self) -> &'static str {
        match self {
            Partition::AwsCn => "amazonaws.com.cn",
            Partition::Aws | Partition::AwsUsGov => "amazonaws.com",
        }
    }
}

/// A region name such as `us-east-1`: lowercase letters, digits and dashes, at least one dash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region(String);

impl Region {
    /// Validates `name`. Errors: [`Error::InvalidInput`] for an empty or malformed name.
    pub fn new(name: &str) -> Result<Self, Error> {
        let ok = !name.is_empty()
            && name.len() <= 32
            && name.contains('-')
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(Region(name.to_owned()))
        } else {
            Err(Error::invalid(
                "region",
                format!(
                    "{name:?} is not an AWS region name; expected something like \"us-east-1\""
                ),
            ))
        }
    }

    /// The region's partition.
    pub fn partition(&self) -> Partition {
        Partition::of_region(&self.0)
    }

    /// The region name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The regional STS endpoint, `https://sts.<region>.<partition dns suffix>`.
    ///
    /// Always regional (never the global `sts.amazonaws.com`): EKS accepts tokens presigned for
    /// any regional endpoint, and a regional one keeps working when the global one is disabled.
    pub fn sts_endpoint(&self) -> Url {
        let url = format!("https://sts.{}.{}", self.0, self.partition().dns_suffix());
        Url::parse(&url).expect("a validated region always forms a valid host name")
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The value of the signed `x-k8s-aws-id` header: the EKS cluster name (or, for EKS local
/// clusters on Outposts, the cluster id). 1–100 printable ASCII characters without spaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterId(String);

impl ClusterId {
    /// Validates `id`. Errors: [`Error::InvalidInput`] when empty, too long or not printable.
    pub fn new(id: &str) -> Result<Self, Error> {
        if id.is_empty() {
            return Err(Error::invalid(
                "cluster name",
                "it is empty; pass --cluster-name NAME (or `token -i NAME`)",
            ));
        }
        if id.len() > 100 || !id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::invalid(
                "cluster name",
                format!("{id:?} must be 1-100 printable ASCII characters without spaces"),
            ));
        }
        Ok(ClusterId(id.to_owned()))
    }

    /// The id as sent in `x-k8s-aws-id`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An IAM role ARN, `arn:<partition>:iam::<12-digit account>:role/<optional path/><name>`.
///
/// Source: IAM User Guide, "IAM identifiers" (role names are 1–64 characters of
/// `[A-Za-z0-9+=,.@_-]`; paths start and end with `/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleArn {
    arn: String,
    partition: Partition,
}

impl RoleArn {
    /// Parses and validates `arn`. Errors: [`Error::InvalidInput`] naming the part that is wrong.
    pub fn parse(arn: &str) -> Result<Self, Error> {
        let bad = |reason: String| {
            Error::invalid(
                "role ARN",
                format!(
                    "{arn:?}: {reason}; expected arn:aws:iam::123456789012:role/NAME \
                     (or arn:aws-cn:… / arn:aws-us-gov:…)"
                ),
            )
        };
        let parts: Vec<&str> = arn.splitn(6, ':').collect();
        let [prefix, partition, service, region, account, resource] = parts[..] else {
            return Err(bad(
                "it does not have the six colon-separated ARN fields".into()
            ));
        };
        if prefix != "arn" {
            return Err(bad("it does not start with \"arn:\"".into()));
        }
        let partition = match partition {
            "aws" => Partition::Aws,
            "aws-cn" => Partition::AwsCn,
            "aws-us-gov" => Partition::AwsUsGov,
            other => return Err(bad(format!("unknown partition {other:?}"))),
        };
        if service != "iam" {
            return Err(bad(format!("service is {service:?}, not \"iam\"")));
        }
        if !region.is_empty() {
            return Err(bad("IAM ARNs have an empty region field".into()));
        }
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad(format!("account {account:?} is not 12 digits")));
        }
        let Some(path_and_name) = resource.strip_prefix("role/") else {
            return Err(bad(format!("resource {resource:?} is not \"role/NAME\"")));
        };
        let name = path_and_name.rsplit('/').next().unwrap_or_default();
        if name.is_empty() || name.len() > 64 || !name.bytes().all(is_iam_name_byte) {
            return Err(bad(format!(
                "role name {name:?} must be 1-64 characters of letters, digits and +=,.@_-"
            )));
        }
        Ok(RoleArn {
            arn: arn.to_owned(),
            partition,
        })
    }

    /// The ARN's partition.
    pub fn partition(&self) -> Partition {
        self.partition
    }

    /// The ARN text.
    pub fn as_str(&self) -> &str {
        &self.arn
    }
}

impl fmt::Display for RoleArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.arn)
    }
}

/// `RoleSessionName` of sts:AssumeRole: 2–64 characters of `[A-Za-z0-9+=,.@_-]`.
///
/// Source: STS API Reference, AssumeRole, `RoleSessionName`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionName(String);

impl SessionName {
    /// Validates `name`. Errors: [`Error::InvalidInput`].
    pub fn new(name: &str) -> Result<Self, Error> {
        if (2..=64).contains(&name.len()) && name.bytes().all(is_iam_name_byte) {
            Ok(SessionName(name.to_owned()))
        } else {
            Err(Error::invalid(
                "session name",
                format!("{name:?} must be 2-64 characters of letters, digits and +=,.@_-"),
            ))
        }
    }

    /// The default session name: `satellite-<hostname>`, with characters STS does not accept
    /// replaced by `-` and cut to 64 characters (`satellite-node` when the host name is
    /// unavailable). Stable per host, so CloudTrail and aws-auth `{{SessionName}}` templates
    /// identify the machine.
    pub fn default_for_host() -> Self {
        let host = hostname().unwrap_or_else(|| "node".to_owned());
        let mut name: String = format!("satellite-{host}")
            .chars()
            .map(|c| {
                if c.is_ascii() && is_iam_name_byte(c as u8) {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        name.truncate(64);
        SessionName(name)
    }

    /// The session name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks an AssumeRole `DurationSeconds`: 900 s to 43 200 s (12 h).
///
/// Errors: [`Error::InvalidInput`]. The role's own `MaxSessionDuration` is enforced by STS.
pub fn validate_duration(duration: Duration) -> Result<Duration, Error> {
    if (900..=43_200).contains(&duration.as_secs()) {
        Ok(duration)
    } else {
        Err(Error::invalid(
            "session duration",
            format!(
                "{} s is outside 900-43200 s (15 min to 12 h)",
                duration.as_secs()
            ),
        ))
    }
}

/// Validates an STS endpoint override: an absolute `http` or `https` URL with a host and no
/// path, query or fragment (tokens are presigned for `<endpoint>/?Action=…`).
pub fn parse_endpoint(endpoint: &str) -> Result<Url, Error> {
    let bad = |reason: &str| {
        Error::invalid(
            "STS endpoint",
            format!("{endpoint:?} {reason}; expected e.g. https://sts.us-east-1.amazonaws.com"),
        )
    };
    let url = Url::parse(endpoint).map_err(|e| bad(&format!("is not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("is not http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("has no host"));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(bad("must not have a path, query or fragment"));
    }
    Ok(url)
}

fn is_iam_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b)
}

fn hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sts_endpoint_is_regional_and_partition_aware() {
        let cases = [
            ("us-east-1", "https://sts.us-east-1.amazonaws.com/"),
            ("eu-central-2", "https://sts.eu-central-2.amazonaws.com/"),
            ("cn-north-1", "https://sts.cn-north-1.amazonaws.com.cn/"),
            ("us-gov-west-1", "https://sts.us-gov-west-1.amazonaws.com/"),
        ];
        for (region, want) in cases {
            assert_eq!(Region::new(region).unwrap().sts_endpoint().as_str(), want);
        }
        assert_eq!(
            Region::new("us-gov-east-1").unwrap().partition(),
            Partition::AwsUsGov
        );
    }

    #[test]
    fn malformed_regions_are_rejected() {
        for bad in ["", "useast1", "US-EAST-1", "us east 1", "us-east-1/"] {
            assert!(Region::new(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn role_arns_are_parsed_strictly() {
        let ok = RoleArn::parse("arn:aws:iam::123456789012:role/path/to/Node-Role_1").unwrap();
        assert_eq!(ok.partition(), Partition::Aws);
        let cn = RoleArn::parse("arn:aws-cn:iam::123456789012:role/r").unwrap();
        assert_eq!(cn.partition(), Partition::AwsCn);

        let cases = [
            ("role/foo", "six colon-separated"),
            ("arm:aws:iam::123456789012:role/r", "does not start"),
            ("arn:aws-xx:iam::123456789012:role/r", "unknown partition"),
            ("arn:aws:sts::123456789012:role/r", "not \"iam\""),
            ("arn:aws:iam:us-east-1:123456789012:role/r", "empty region"),
            ("arn:aws:iam::1234:role/r", "not 12 digits"),
            ("arn:aws:iam::123456789012:user/r", "not \"role/NAME\""),
            ("arn:aws:iam::123456789012:role/", "role name"),
            ("arn:aws:iam::123456789012:role/a b", "role name"),
        ];
        for (arn, why) in cases {
            let err = RoleArn::parse(arn).unwrap_err().to_string();
            assert!(err.contains(why), "{arn}: {err}");
            assert_eq!(
                crate::ExitCode::from(&RoleArn::parse(arn).unwrap_err()),
                crate::ExitCode::Invalid
            );
        }
    }

    #[test]
    fn session_names_follow_sts_rules() {
        assert!(SessionName::new("ab").is_ok());
        assert!(SessionName::new("a").is_err());
        assert!(SessionName::new(&"a".repeat(65)).is_err());
        assert!(SessionName::new("has space").is_err());
        let default = SessionName::default_for_host();
        assert!(default.as_str().starts_with("satellite-"));
        assert!(SessionName::new(default.as_str()).is_ok());
    }

    #[test]
    fn durations_are_bounded() {
        assert!(validate_duration(Duration::from_secs(899)).is_err());
        assert!(validate_duration(Duration::from_secs(900)).is_ok());
        assert!(validate_duration(Duration::from_secs(43_200)).is_ok());
        assert!(validate_duration(Duration::from_secs(43_201)).is_err());
    }

    #[test]
    fn endpoints_must_be_bare_http_urls() {
        assert!(parse_endpoint("http://127.0.0.1:5055").is_ok());
        assert!(parse_endpoint("https://sts.us-east-1.amazonaws.com/").is_ok());
        for bad in [
            "127.0.0.1:5055",
            "ftp://x",
            "http://h/path",
            "http://h/?a=b",
        ] {
            assert!(parse_endpoint(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn cluster_ids_are_checked() {
        assert!(ClusterId::new("prod-gpu").is_ok());
        assert!(ClusterId::new("").is_err());
        assert!(ClusterId::new("a b").is_err());
        assert!(ClusterId::new(&"a".repeat(101)).is_err());
    }
}

//! Token checks beyond [`crate::eks_token::decode`], as aws-iam-authenticator's
//! `pkg/token/token.go` `Verify` does them: the STS host allow-list, the `X-Amz-Date` window,
//! the security token; then the caller's identity from the credentials moto issued (the
//! stand-in for STS answering the presigned GetCallerIdentity).

use serde_json::Value;
use time::{
    OffsetDateTime, PrimitiveDateTime, format_description::FormatItem, macros::format_description,
};

use super::mapping::{Caller, canonical_role_arn};
use crate::eks_token::PresignedToken;

/// How far `X-Amz-Date` may be from now (EKS tokens are valid 15 minutes).
pub const MAX_SKEW: time::Duration = time::Duration::minutes(15);

const AMZ_DATE: &[FormatItem<'static>] =
    format_description!("[year][month][day]T[hour][minute][second]Z");

/// Checks the URL's scheme and host and the signing time.
///
/// `local_hosts` (`host:port`) are STS endpoints of the sandbox, accepted over `http`; any
/// other host must be `https` on the default port and be `sts.amazonaws.com` or a regional
/// `sts.<region>.amazonaws.com[.cn]`.
pub fn check_url(
    token: &PresignedToken,
    local_hosts: &[String],
    now: OffsetDateTime,
) -> Result<(), String> {
    let host = token.url.host_str().unwrap_or_default();
    let host_port = match token.url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    };
    let local = local_hosts.contains(&host_port);
    if !local {
        if token.url.scheme() != "https" || token.url.port().is_some() {
            return Err(format!(
                "STS endpoint {} is not https on port 443",
                token.url.origin().ascii_serialization()
            ));
        }
        if !is_sts_host(host) {
            return Err(format!("{host} is not an allowed STS host"));
        }
    }
    let signed = PrimitiveDateTime::parse(&token.amz_date, AMZ_DATE)
        .map_err(|e| format!("X-Amz-Date {:?}: {e}", token.amz_date))?
        .assume_utc();
    if (now - signed).abs() > MAX_SKEW {
        return Err(format!(
            "token signed at {} is outside the {} minute window (expired or clock skew)",
            token.amz_date,
            MAX_SKEW.whole_minutes()
        ));
    }
    Ok(())
}

/// `sts.amazonaws.com` or `sts.<region>.amazonaws.com` / `sts.<region>.amazonaws.com.cn`.
pub fn is_sts_host(host: &str) -> bool {
    if host == "sts.amazonaws.com" {
        return true;
    }
    let Some(rest) = host.strip_prefix("sts.") else {
        return false;
    };
    let region = rest
        .strip_suffix(".amazonaws.com")
        .or_else(|| rest.strip_suffix(".amazonaws.com.cn"));
    region.is_some_and(|r| {
        !r.is_empty()
            && r.split('-').count() >= 3
            && r.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    })
}

/// Finds the credentials that signed `token` in moto's state (`/moto-api/data.json`): an
/// assumed-role session (`sts.AssumedRole[]`, whose session token must match
/// `X-Amz-Security-Token`) or an IAM user's access key (`iam.AccessKey[]`). Returns the
/// caller and the secret to verify the signature with.
pub fn caller_from_moto(state: &Value, token: &PresignedToken) -> Result<(Caller, String), String> {
    let key_id = token.access_key_id.as_str();
    let str_of = |v: &Value, k: &str| v[k].as_str().map(str::to_owned);
    if let Some(session) = state["sts"]["AssumedRole"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["access_key_id"] == key_id))
    {
        if token.params.get("X-Amz-Security-Token").map(String::as_str)
            != session["session_token"].as_str()
        {
            return Err(format!(
                "session token does not belong to access key {key_id}"
            ));
        }
        let field = |k: &str| {
            str_of(session, k).ok_or_else(|| format!("moto's session for {key_id} has no {k}"))
        };
        let role_arn = field("role_arn")?;
        let caller = Caller {
            arn: field("arn")?,
            canonical_arn: canonical_role_arn(&role_arn),
            account_id: field("account_id")?,
            user_id: field("user_id")?,
            session_name: Some(field("session_name")?),
            access_key_id: key_id.to_owned(),
        };
        return Ok((caller, field("secret_access_key")?));
    }
    let key = state["iam"]["AccessKey"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|k| k["access_key_id"] == key_id && k["status"] == "Active")
        })
        .ok_or_else(|| format!("access key {key_id} is unknown to STS (moto)"))?;
    let user_name = str_of(key, "user_name")
        .ok_or_else(|| format!("access key {key_id} belongs to no IAM user"))?;
    let user = state["iam"]["User"].as_array().and_then(|a| {
        a.iter()
            .find(|u| u["name"] == user_name.as_str() || u["user_name"] == user_name.as_str())
    });
    let account_id = crate::moto::ACCOUNT_ID.to_owned();
    let arn = user
        .and_then(|u| str_of(u, "arn"))
        .unwrap_or_else(|| format!("arn:aws:iam::{account_id}:user/{user_name}"));
    let caller = Caller {
        canonical_arn: arn.clone(),
        arn,
        user_id: user
            .and_then(|u| str_of(u, "id"))
            .unwrap_or_else(|| key_id.to_owned()),
        account_id,
        session_name: None,
        access_key_id: key_id.to_owned(),
    };
    let secret = str_of(key, "secret_access_key")
        .ok_or_else(|| format!("moto has no secret for {key_id}"))?;
    Ok((caller, secret))
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use time::macros::datetime;

    use super::*;
    use crate::eks_token::decode;

    fn token(origin: &str, date: &str) -> PresignedToken {
        let url = format!(
            "{origin}/?Action=GetCallerIdentity&Version=2011-06-15&X-Amz-Algorithm=AWS4-HMAC-SHA256\
             &X-Amz-Credential=ASIAEXAMPLE%2F{}%2Fus-east-1%2Fsts%2Faws4_request&X-Amz-Date={date}\
             &X-Amz-Expires=60&X-Amz-SignedHeaders=host%3Bx-k8s-aws-id&X-Amz-Security-Token=tok&X-Amz-Signature=00",
            &date[..8]
        );
        decode(&format!("k8s-aws-v1.{}", URL_SAFE_NO_PAD.encode(url))).unwrap()
    }

    const NOW: OffsetDateTime = datetime!(2025-05-20 12:00:00 UTC);

    #[test]
    fn allows_regional_sts_and_configured_local_hosts() {
        let local = vec!["127.0.0.1:5055".to_owned()];
        for origin in [
            "https://sts.us-east-1.amazonaws.com",
            "https://sts.amazonaws.com",
            "https://sts.cn-north-1.amazonaws.com.cn",
            "http://127.0.0.1:5055",
        ] {
            check_url(&token(origin, "20250520T115500Z"), &local, NOW)
                .unwrap_or_else(|e| panic!("{origin}: {e}"));
        }
    }

    #[test]
    fn rejects_other_hosts_schemes_and_ports() {
        let local = vec!["127.0.0.1:5055".to_owned()];
        for origin in [
            "https://sts.evil.com",
            "https://sts.us-east-1.amazonaws.com.evil.com",
            "http://sts.us-east-1.amazonaws.com",
            "https://sts.us-east-1.amazonaws.com:8443",
            "http://127.0.0.1:5056",
            "https://s3.us-east-1.amazonaws.com",
        ] {
            assert!(
                check_url(&token(origin, "20250520T115500Z"), &local, NOW).is_err(),
                "{origin}"
            );
        }
    }

    #[test]
    fn rejects_dates_outside_15_minutes() {
        let o = "https://sts.us-east-1.amazonaws.com";
        assert!(
            check_url(&token(o, "20250520T114459Z"), &[], NOW)
                .unwrap_err()
                .contains("window")
        );
        assert!(check_url(&token(o, "20250520T121501Z"), &[], NOW).is_err());
        check_url(&token(o, "20250520T114500Z"), &[], NOW).unwrap();
    }

    #[test]
    fn finds_assumed_role_sessions_and_checks_their_session_token() {
        let state = serde_json::json!({"sts": {"AssumedRole": [{
            "access_key_id": "ASIAEXAMPLE", "account_id": "123456789012",
            "arn": "arn:aws:sts::123456789012:assumed-role/satellite-node/n1",
            "role_arn": "arn:aws:iam::123456789012:role/satellite-node",
            "secret_access_key": "s3cr3t", "session_name": "n1", "session_token": "tok",
            "user_id": "AROAEXAMPLE:n1"}]}});
        let t = token("https://sts.amazonaws.com", "20250520T115500Z");
        let (caller, secret) = caller_from_moto(&state, &t).unwrap();
        assert_eq!(secret, "s3cr3t");
        assert_eq!(
            caller.canonical_arn,
            "arn:aws:iam::123456789012:role/satellite-node"
        );
        assert_eq!(caller.session_name.as_deref(), Some("n1"));

        let mut other = state.clone();
        other["sts"]["AssumedRole"][0]["session_token"] = "else".into();
        assert!(
            caller_from_moto(&other, &t)
                .unwrap_err()
                .contains("session token")
        );
        assert!(
            caller_from_moto(&serde_json::json!({}), &t)
                .unwrap_err()
                .contains("unknown")
        );
    }
}

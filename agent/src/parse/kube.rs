//! Kubernetes labels and taints, with the API server's syntax rules
//! (`k8s.io/apimachinery/pkg/util/validation`: `IsQualifiedName`, `IsValidLabelValue`;
//! taints as kubelet's `--register-with-taints` reads them).

use std::fmt;

/// Checks a label against Kubernetes' syntax: key `[prefix/]name` (prefix a DNS subdomain
/// ≤ 253, name ≤ 63 alphanumerics with `-_.` inside), value ≤ 63 of the same (or empty).
///
/// Errors: a message naming the part that is wrong.
pub fn label(key: &str, value: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        let ok = !prefix.is_empty()
            && prefix.len() <= 253
            && prefix.split('.').all(|part| {
                !part.is_empty()
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !part.starts_with('-')
                    && !part.ends_with('-')
            });
        if !ok {
            return Err(format!("label prefix {prefix:?} is not a DNS subdomain"));
        }
    }
    if name.is_empty() || !label_value_ok(name) {
        return Err(format!(
            "label name {name:?} must be 1-63 alphanumerics with -_. inside"
        ));
    }
    if !value.is_empty() && !label_value_ok(value) {
        return Err(format!(
            "label value {value:?} must be 0-63 alphanumerics with -_. inside"
        ));
    }
    Ok(())
}

fn label_value_ok(s: &str) -> bool {
    s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// A node taint, `key[=value]:Effect` (Effect: `NoSchedule`, `PreferNoSchedule`,
/// `NoExecute`). Displays as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taint {
    text: String,
}

impl Taint {
    /// Parses `text`.
    ///
    /// Errors: a message naming the bad part (form, effect, key or value).
    pub fn new(text: &str) -> Result<Self, String> {
        let (kv, effect) = text
            .rsplit_once(':')
            .ok_or_else(|| format!("taint {text:?} must be key[=value]:Effect"))?;
        if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
            return Err(format!(
                "taint effect {effect:?} must be NoSchedule, PreferNoSchedule or NoExecute"
            ));
        }
        let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
        label(key, value).map_err(|e| format!("taint {text:?}: {e}"))?;
        Ok(Taint {
            text: text.to_owned(),
        })
    }

    /// The taint as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Taint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

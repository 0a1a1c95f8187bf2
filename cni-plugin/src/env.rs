//! The `CNI_*` environment variables (SPEC.md "Parameters"), validated per command before
//! anything touches the host.

use std::path::PathBuf;

use crate::error::{Error, Result};

/// The operation requested in `CNI_COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Attach the container to the network.
    Add,
    /// Detach; idempotent.
    Del,
    /// Verify an attachment.
    Check,
    /// Report whether ADD can be serviced (1.1.0).
    Status,
    /// Release everything not in `cni.dev/valid-attachments` (1.1.0).
    Gc,
    /// Report supported versions.
    Version,
}

impl Command {
    /// The `CNI_COMMAND` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Add => "ADD",
            Self::Del => "DEL",
            Self::Check => "CHECK",
            Self::Status => "STATUS",
            Self::Gc => "GC",
            Self::Version => "VERSION",
        }
    }
}

/// The validated parameters of one invocation.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// `CNI_COMMAND`.
    pub command: Command,
    /// `CNI_CONTAINERID` (ADD, DEL, CHECK): non-empty, starts with an alphanumeric character,
    /// then alphanumerics, `_`, `.` or `-`.
    pub container_id: String,
    /// `CNI_NETNS` (required for ADD and CHECK; optional for DEL, which must succeed without it).
    pub netns: Option<PathBuf>,
    /// `CNI_IFNAME` (ADD, DEL, CHECK): a valid Linux interface name.
    pub ifname: String,
    /// `CNI_ARGS`, split into `KEY=VALUE` pairs.
    pub args: Vec<(String, String)>,
}

impl Invocation {
    /// Reads and validates the environment through `var` (a lookup such as
    /// `|k| std::env::var(k).ok()`).
    ///
    /// Errors: [`Error::InvalidEnvironment`] naming the variable, what is wrong and how to fix it.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let get = |k: &str| var(k).filter(|v| !v.is_empty());
        let command = match get("CNI_COMMAND").as_deref() {
            Some("ADD") => Command::Add,
            Some("DEL") => Command::Del,
            Some("CHECK") => Command::Check,
            Some("STATUS") => Command::Status,
            Some("GC") => Command::Gc,
            Some("VERSION") => Command::Version,
            Some(other) => {
                return Err(Error::InvalidEnvironment(format!(
                    "CNI_COMMAND={other:?} is not one of ADD, DEL, CHECK, STATUS, GC, VERSION"
                )));
            }
            None => {
                return Err(Error::InvalidEnvironment(
                    "CNI_COMMAND is not set; this is a CNI plugin, run by a container runtime \
                     (or cnitool) with CNI_COMMAND=ADD|DEL|CHECK|STATUS|GC|VERSION"
                        .into(),
                ));
            }
        };
        let mut inv = Self {
            command,
            container_id: String::new(),
            netns: None,
            ifname: String::new(),
            args: Vec::new(),
        };
        if command == Command::Version {
            return Ok(inv);
        }
        // The plugin delegates to no other plugin, but the spec makes CNI_PATH mandatory and
        // a runtime that omits it is misconfigured.
        let mut missing: Vec<&str> = Vec::new();
        if get("CNI_PATH").is_none() {
            missing.push("CNI_PATH");
        }
        let per_attachment = matches!(command, Command::Add | Command::Del | Command::Check);
        if per_attachment {
            inv.container_id = get("CNI_CONTAINERID").unwrap_or_default();
            inv.ifname = get("CNI_IFNAME").unwrap_or_default();
            inv.netns = get("CNI_NETNS").map(PathBuf::from);
            if inv.container_id.is_empty() {
                missing.push("CNI_CONTAINERID");
            }
            if inv.ifname.is_empty() {
                missing.push("CNI_IFNAME");
            }
            if inv.netns.is_none() && command != Command::Del {
                missing.push("CNI_NETNS");
            }
        }
        if !missing.is_empty() {
            return Err(Error::InvalidEnvironment(format!(
                "required variables {} are not set (CNI_COMMAND={})",
                missing.join(", "),
                command.as_str()
            )));
        }
        if per_attachment {
            validate_container_id(&inv.container_id)?;
            validate_ifname(&inv.ifname)?;
            if let Some(netns) = &inv.netns
                && !netns.is_absolute()
            {
                return Err(Error::InvalidEnvironment(format!(
                    "CNI_NETNS={} is not an absolute path such as /var/run/netns/NAME",
                    netns.display()
                )));
            }
        }
        inv.args = parse_args(get("CNI_ARGS").as_deref().unwrap_or(""))?;
        Ok(inv)
    }

    /// The value of `key` in `CNI_ARGS` (e.g. `K8S_POD_NAME`).
    pub fn arg(&self, key: &str) -> Option<&str> {
        self.args
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// SPEC.md: "must be unique across all containers on the host … alphanumeric characters,
/// underscore (_), dot (.) and hyphen (-), and must start with an alphanumeric character".
fn validate_container_id(id: &str) -> Result<()> {
    let ok = id.starts_with(|c: char| c.is_ascii_alphanumeric())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidEnvironment(format!(
            "CNI_CONTAINERID={id:?} must start with a letter or digit and contain only letters, \
             digits, '_', '.' and '-'"
        )))
    }
}

/// The kernel's `dev_valid_name`: 1–15 bytes, not `.`/`..`, no `/`, `:` or whitespace.
pub fn validate_ifname(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() < libc::IFNAMSIZ
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace());
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidEnvironment(format!(
            "CNI_IFNAME={name:?} is not a valid interface name (1-15 characters, none of '/', ':' \
             or whitespace, not '.' or '..')"
        )))
    }
}

/// `CNI_ARGS`: `KEY=VALUE` pairs separated by `;` (an empty string is no pairs).
fn parse_args(raw: &str) -> Result<Vec<(String, String)>> {
    raw.split(';')
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
            _ => Err(Error::InvalidEnvironment(format!(
                "CNI_ARGS pair {pair:?} is not KEY=VALUE (pairs are separated by ';')"
            ))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn add_needs_everything() {
        let err = Invocation::from_env(env(&[("CNI_COMMAND", "ADD")])).unwrap_err();
        assert_eq!(err.code(), 4);
        let msg = err.to_string();
        for var in ["CNI_PATH", "CNI_CONTAINERID", "CNI_IFNAME", "CNI_NETNS"] {
            assert!(msg.contains(var), "{msg}");
        }
    }

    #[test]
    fn del_without_netns_is_fine() {
        let inv = Invocation::from_env(env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_PATH", "/opt/cni/bin"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", "K8S_POD_NAME=p;K8S_POD_NAMESPACE=ns;"),
        ]))
        .unwrap();
        assert_eq!(inv.netns, None);
        assert_eq!(inv.arg("K8S_POD_NAME"), Some("p"));
    }

    #[test]
    fn rejects_malformed_values() {
        let base = |k: &'static str, v: &'static str| {
            let mut pairs = vec![
                ("CNI_COMMAND", "ADD"),
                ("CNI_PATH", "/opt/cni/bin"),
                ("CNI_CONTAINERID", "abc"),
                ("CNI_IFNAME", "eth0"),
                ("CNI_NETNS", "/var/run/netns/x"),
            ];
            pairs.retain(|(n, _)| *n != k);
            pairs.push((k, v));
            Invocation::from_env(env(&pairs)).map(drop)
        };
        assert!(base("CNI_IFNAME", "eth0").is_ok());
        for (k, v) in [
            ("CNI_COMMAND", "ATTACH"),
            ("CNI_CONTAINERID", "-abc"),
            ("CNI_CONTAINERID", "a/b"),
            ("CNI_IFNAME", "a-name-that-is-too-long"),
            ("CNI_IFNAME", "eth 0"),
            ("CNI_NETNS", "relative/path"),
            ("CNI_ARGS", "novalue"),
        ] {
            assert_eq!(base(k, v).unwrap_err().code(), 4, "{k}={v}");
        }
    }
}

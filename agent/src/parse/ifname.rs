//! Linux interface names (`IFNAMSIZ`, `dev_valid_name()` in net/core/dev.c).

use std::fmt;

/// Longest Linux interface name (`IFNAMSIZ` − 1).
pub const IFNAME_MAX: usize = 15;

/// A valid Linux interface name: 1 to 15 bytes, no `/`, `:` or whitespace, not `.` or `..`
/// (the kernel's `dev_valid_name`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IfName(String);

impl IfName {
    /// Parses `name`.
    ///
    /// Errors: a message naming the rule it breaks.
    pub fn new(name: &str) -> Result<Self, String> {
        if name.is_empty()
            || name.len() > IFNAME_MAX
            || name.contains(['/', ':'])
            || name.contains(char::is_whitespace)
            || name == "."
            || name == ".."
        {
            Err(format!(
                "{name:?} is not an interface name (1 to {IFNAME_MAX} characters, no '/', ':' \
                 or space)"
            ))
        } else {
            Ok(IfName(name.to_owned()))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_rules() {
        for ok in ["lo", "eth0", "enp0s31f6", "a-name-15-chars"] {
            assert!(IfName::new(ok).is_ok(), "{ok} refused");
        }
        for bad in ["", ".", "..", "a/b", "a:b", "a b", "a-name-far-too-long"] {
            assert!(IfName::new(bad).is_err(), "{bad:?} accepted");
        }
    }
}

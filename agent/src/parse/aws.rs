//! EC2 resource ids: `eni-…`, `subnet-…`, `sg-…` (8 or 17 hex digits after the prefix).

use std::fmt;

macro_rules! ec2_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// The id's prefix.
            pub const PREFIX: &'static str = $prefix;

            /// Parses `id`.
            ///
            /// Errors: a message showing the expected form.
            pub fn new(id: &str) -> Result<Self, String> {
                parse_id(id, $prefix).map(|()| $name(id.to_owned()))
            }

            /// The id.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

ec2_id!(
    /// An elastic network interface id, `eni-0123456789abcdef0`.
    EniId,
    "eni-"
);
ec2_id!(
    /// A subnet id, `subnet-0123456789abcdef0`.
    SubnetId,
    "subnet-"
);
ec2_id!(
    /// A security group id, `sg-0123456789abcdef0`.
    SecurityGroupId,
    "sg-"
);

fn parse_id(id: &str, prefix: &str) -> Result<(), String> {
    let rest = id.strip_prefix(prefix).unwrap_or_default();
    if !rest.is_empty() && rest.len() <= 17 && rest.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(format!(
            "{id:?} is not an id of the form {prefix}0123456789abcdef0"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_need_their_prefix_and_hex() {
        assert!(EniId::new("eni-0123456789abcdef0").is_ok());
        assert!(SubnetId::new("subnet-0abc1234").is_ok());
        for bad in ["eni-", "sg-0123", "eni-xyz", "eni-0123456789abcdef01"] {
            assert!(EniId::new(bad).is_err(), "{bad}");
        }
        assert!(SecurityGroupId::new("sg-0123").is_ok());
    }
}

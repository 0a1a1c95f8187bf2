//! Typed values parsed from configuration text ("parse, don't validate"): each type can only
//! hold a valid value, and its parser's error says what is wrong and what a valid value looks
//! like. NodeConfig, `spec.datapath`, ProxyConfig and the flags all go through these, so each
//! rule exists once.
//!
//! - [`ports`]: port numbers, port lists and ranges, protected-port sets.
//! - [`ifname`]: Linux interface names.
//! - [`addr`]: unicast addresses (node IP, peers, host address).
//! - [`aws`]: EC2 resource ids (`eni-…`, `subnet-…`, `sg-…`).
//! - [`kube`]: Kubernetes labels and taints.
//! - [`text`]: URLs, base64 PEM, absolute paths, CIDRs.

pub mod addr;
pub mod aws;
pub mod ifname;
pub mod kube;
pub mod ports;
pub mod text;

//! `satellite-cni`: the CNI plugin for pods on satellite hosts (CNI spec 1.1.0).
//!
//! Not implemented yet: every invocation fails with exit code 1 and says so on stderr, so a
//! conflist that names it fails loudly instead of half-configuring a pod.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("satellite-cni: not implemented yet; use the reference ptp + host-local plugins");
    ExitCode::FAILURE
}

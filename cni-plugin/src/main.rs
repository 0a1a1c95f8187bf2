//! The `satellite-cni` binary: see the library crate [`satellite_cni`] for the configuration
//! keys and exit codes.

use std::process::ExitCode;

fn main() -> ExitCode {
    ExitCode::from(satellite_cni::main())
}

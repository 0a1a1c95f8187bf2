//! The `satellite-cni` binary: see the library crate [`satellite_cni`] for the configuration
//! keys and exit codes.

fn main() -> std::process::ExitCode {
    satellite_cni::main()
}

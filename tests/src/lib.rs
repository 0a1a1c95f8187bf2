//! Fixtures for tests against real peers: where `cargo xtask setup` installed them
//! ([`tools`]), a throwaway `moto_server` ([`moto`]), an independent SigV4 verifier for
//! EKS tokens ([`eks_token`]), the local sandbox cluster ([`sandbox`]) and its EKS-style
//! token webhook ([`authenticator`], binary `sandbox-authenticator`), and CNI fixtures
//! (`cnitool`, simulated nodes and pod namespaces: [`cni`]).

pub mod authenticator;
pub mod cni;
pub mod eks_token;
pub mod moto;
pub mod sandbox;
pub mod tools;

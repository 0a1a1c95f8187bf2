//! Fixtures for tests against real peers: where `cargo xtask setup` installed them
//! ([`tools`]), a throwaway `moto_server` ([`moto`]), an independent SigV4 verifier for
//! EKS tokens ([`eks_token`]), the local sandbox cluster ([`sandbox`]) and its EKS-style
//! token webhook ([`authenticator`], binary `sandbox-authenticator`), CNI fixtures
//! (`cnitool`, simulated nodes and pod namespaces: [`cni`]), and the one set of network
//! namespace, command and root helpers everything above and every test uses ([`netns`]).

pub mod authenticator;
pub mod cni;
pub mod eks_token;
pub mod moto;
pub mod netns;
pub mod sandbox;
pub mod tools;

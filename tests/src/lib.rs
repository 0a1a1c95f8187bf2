//! Fixtures for tests against real peers: where `cargo xtask setup` installed them
//! ([`tools`]), a throwaway `moto_server` ([`moto`]), and an independent SigV4 verifier for
//! EKS tokens ([`eks_token`]), the stand-in for EKS's authenticator, which cannot run here.

pub mod eks_token;
pub mod moto;
pub mod tools;

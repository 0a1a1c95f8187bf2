//! The satellite host agent as a library: everything `satellite-agent` does, callable (and
//! tested) without the command line.

pub mod admin;
pub mod aws;
pub mod cli;
pub mod config;
pub mod csr;
pub mod datapath;
pub mod error;
pub mod fsplan;
pub mod join;
pub mod kube_client;
pub mod parse;
pub mod proxy;
pub mod render;
pub mod run;

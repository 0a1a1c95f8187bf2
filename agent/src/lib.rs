//! The satellite host agent as a library: everything `satellite-agent` does, callable (and
//! tested) without the command line.

pub mod datapath;

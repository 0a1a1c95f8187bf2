//! tc eBPF programs of the satellite agent, built for `bpfel-unknown-none`.
//!
//! Empty until the datapath lands: the programs, their `no_std` shared types and the toolchain
//! that builds them (Debian's rustc + bpf-linker) come with that issue.

#![no_std]

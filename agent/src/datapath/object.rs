//! The tc eBPF object, embedded at build time by `agent/build.rs` (empty when built with
//! `SATELLITE_EBPF=skip` or under clippy).

/// The ELF object of `agent-ebpf` that [`Datapath::install`](super::Datapath::install) loads
/// (8-byte aligned, as aya's parser wants), or an empty slice when this agent was built without
/// it ([`object_embedded`](super::object_embedded) is then false). Public so that tests can load
/// the very programs the agent ships, e.g. to run them with `BPF_PROG_TEST_RUN`.
#[must_use]
pub fn bytes() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/satellite-agent-ebpf.o"))
}

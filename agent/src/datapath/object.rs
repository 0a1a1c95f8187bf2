//! The tc eBPF object, embedded at build time by `agent/build.rs` (empty when built with
//! `SATELLITE_EBPF=skip` or under clippy).

/// The ELF object of `agent-ebpf` (8-byte aligned, as aya's parser wants), or an empty slice.
pub(super) fn bytes() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/satellite-agent-ebpf.o"))
}

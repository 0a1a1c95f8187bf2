//! Netlink attachment (kernel ≥ 4.5): a program is attached as a `cls_bpf` filter in
//! direct-action mode on the interface's `clsact` qdisc. Filters are no file descriptors and
//! cannot be pinned: they stay until deleted, and are found again by program name. Separate
//! from TCX attachment: a different kernel interface with a different lifetime rule.

use std::io;

use aya::programs::tc::{self, NlOptions, SchedClassifier, TcAttachOptions, TcAttachType};

use crate::datapath::Error;

/// Adds the `clsact` qdisc to `interface` unless it has one.
pub(in crate::datapath) fn add_clsact(interface: &str) -> Result<(), Error> {
    match tc::qdisc_add_clsact(interface) {
        Ok(()) => Ok(()),
        Err(tc::TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        Err(e) => Err(Error::Tc {
            what: format!("adding the clsact qdisc to {interface}"),
            source: Box::new(e),
        }),
    }
}

/// Attaches `program` as a netlink `cls_bpf` filter and leaves it attached for good.
pub(in crate::datapath) fn attach_netlink(
    program: &mut SchedClassifier,
    interface: &str,
    attach_type: TcAttachType,
    name: &str,
) -> Result<(), Error> {
    let link = super::attach(
        program,
        interface,
        attach_type,
        name,
        TcAttachOptions::Netlink(NlOptions::default()),
    )?;
    // A netlink filter is no fd: dropping aya's handle would delete the filter. It stays until
    // teardown, which finds it by program name; the handle owns no resource, nothing leaks.
    std::mem::forget(link);
    Ok(())
}

/// Deletes the netlink filters named `name` from `interface`'s `attach_type` hook; none, no
/// clsact qdisc or no interface are not errors.
pub(in crate::datapath) fn detach_filters(
    interface: &str,
    attach_type: TcAttachType,
    name: &str,
) -> Result<(), Error> {
    match tc::qdisc_detach_program(interface, attach_type, name) {
        Ok(()) => Ok(()),
        Err(tc::TcError::IoError(e))
            if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENODEV) =>
        {
            Ok(())
        }
        Err(tc::TcError::NetlinkError(e))
            if matches!(
                e.raw_os_error(),
                Some(libc::EINVAL | libc::ENOENT | libc::ENODEV)
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(Error::Tc {
            what: format!("detaching {name} filters from {interface}"),
            source: Box::new(e),
        }),
    }
}

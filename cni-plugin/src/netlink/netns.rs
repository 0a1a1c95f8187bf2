//! Opening the container's network namespace from `CNI_NETNS`.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd as _;
use std::path::Path;

use crate::error::{Error, Result};

/// `NS_GET_NSTYPE` from `linux/nsfs.h`: `_IO(0xb7, 0x3)`.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// Opens `path` and checks that it is a network namespace (nsfs file of type `CLONE_NEWNET`).
///
/// Errors: [`Error::UnknownContainer`] when the path does not exist (the container is gone);
/// [`Error::InvalidEnvironment`] when it exists but is no network namespace.
pub fn open(path: &Path) -> Result<File> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Error::UnknownContainer(format!(
                "network namespace {} does not exist",
                path.display()
            )));
        }
        Err(e) => return Err(Error::io(format!("opening {}", path.display()), e)),
    };
    // SAFETY: NS_GET_NSTYPE takes no argument and only reads the descriptor's namespace type.
    let kind = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE) };
    if kind != libc::CLONE_NEWNET {
        return Err(Error::InvalidEnvironment(format!(
            "CNI_NETNS={} is not a network namespace (expected a path such as \
             /var/run/netns/NAME or /proc/PID/ns/net)",
            path.display()
        )));
    }
    Ok(file)
}

//! Logging: every line goes to stderr and, when configured, is appended to `logFile`, with the
//! invocation's command, container ID and interface on it (a `tracing` span). stdout carries
//! only the CNI result.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::sync::Arc;

use tracing_subscriber::fmt::MakeWriter;

/// Where log lines go: stderr, plus the log file if it could be opened.
#[derive(Clone)]
struct Sinks {
    file: Option<Arc<File>>,
}

/// Writes one formatted event to every sink. `tracing-subscriber` formats an event into one
/// buffer and writes it with one `write_all`, and the file is opened `O_APPEND`, so lines of
/// concurrent invocations never interleave.
struct Tee<'a>(&'a Sinks);

impl Write for Tee<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // A failing sink must not fail the plugin: logging is best effort.
        let _ = io::stderr().write_all(buf);
        if let Some(mut file) = self.0.file.as_deref() {
            let _ = file.write_all(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Sinks {
    type Writer = Tee<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        Tee(self)
    }
}

/// Installs the global subscriber at `level`, appending to `file` when given (created 0640,
/// with its directory). A log file that cannot be opened is reported on stderr and skipped.
pub fn init(level: tracing::Level, file: Option<&Path>) {
    let file = file.and_then(|path| {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(path)
            .map_err(|e| {
                eprintln!(
                    "satellite-cni: cannot open log file {}: {e}; logging to stderr only",
                    path.display()
                );
            })
            .ok()
            .map(Arc::new)
    });
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(false)
        .with_target(false)
        .with_writer(Sinks { file })
        .try_init();
}

//! Moving bytes between the two sockets of a proxied connection.
//!
//! [`pump`] runs both directions of one connection in the calling task. Each direction waits
//! for readiness with tokio (`readable()`/`writable()`, then `try_io`, so readiness is cleared
//! only on `EAGAIN`) and moves bytes with `splice(2)`: socket → pipe → socket, without copying
//! them through user space. Pipes come from a [`PipePool`] and go back to it as soon as they
//! are empty and the source has nothing more to read, so an idle connection holds none.
//!
//! Where the kernel refuses `splice` for these sockets (`EINVAL`, `ENOSYS`, `EOPNOTSUPP`), or no
//! pipe can be had (`EMFILE`, `ENFILE`), the direction falls back to copying through a buffer;
//! the first refusal turns splicing off for the whole process ([`splice_refused`]).
//!
//! Half-close: end of stream from one side is passed on as `shutdown(SHUT_WR)` to the other,
//! and the other direction keeps flowing until it ends too. An error on either side (a reset,
//! `EPIPE`) ends the connection; the caller then resets both sockets.

use std::io::{self, ErrorKind};
use std::net::Shutdown;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd};
use std::pin::pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Pipe capacity asked for with `F_SETPIPE_SZ` (the kernel default is 64 KiB). Larger chunks
/// mean fewer system calls per byte; a pipe only pins pages while data is in flight.
pub const PIPE_SIZE: usize = 256 * 1024;
/// Empty pipes the pool keeps (each is two file descriptors).
pub const POOL_MAX_IDLE: usize = 256;
/// Buffer size of the copy fallback, per direction.
const COPY_BUFFER: usize = 64 * 1024;

/// Set when the kernel refused `splice(2)` once: every later direction copies.
static SPLICE_REFUSED: AtomicBool = AtomicBool::new(false);

/// Whether the kernel refused `splice(2)` in this process (the proxy then copies).
pub fn splice_refused() -> bool {
    SPLICE_REFUSED.load(Ordering::Relaxed)
}

/// A pipe: the kernel buffer `splice(2)` moves pages through.
#[derive(Debug)]
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let mut fds = [-1 as RawFd; 2];
        // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // Best effort: past /proc/sys/fs/pipe-max-size or the user's pipe quota the kernel
        // refuses, and the default size still works.
        // SAFETY: F_SETPIPE_SZ on a pipe descriptor we own; no pointers involved.
        unsafe {
            libc::fcntl(
                write.as_raw_fd(),
                libc::F_SETPIPE_SZ,
                PIPE_SIZE as libc::c_int,
            )
        };
        Ok(Pipe { read, write })
    }
}

/// Empty pipes for reuse, so a connection does not create (and close) two per chunk of data.
#[derive(Debug, Default)]
pub struct PipePool {
    idle: Mutex<Vec<Pipe>>,
}

impl PipePool {
    /// An empty pool.
    pub fn new() -> PipePool {
        PipePool::default()
    }

    fn get(&self) -> io::Result<Pipe> {
        let pooled = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match pooled {
            Some(pipe) => Ok(pipe),
            None => Pipe::new(),
        }
    }

    /// Returns an empty pipe (one with data in it must be dropped instead).
    fn put(&self, pipe: Pipe) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < POOL_MAX_IDLE {
            idle.push(pipe);
        }
    }

    /// Pipes waiting in the pool.
    pub fn idle(&self) -> usize {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// `splice(2)` `len` bytes from `from` to `to`, never blocking.
fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: both descriptors are open for the duration of the call (borrowed from live
    // sockets and pipes); null offsets are allowed for pipes and sockets.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// Which socket of the connection failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The accepted connection (from the VPC).
    Client,
    /// The connection to the host's public address.
    Target,
}

/// How [`pump`] ended.
#[derive(Debug)]
pub enum Outcome {
    /// Both directions reached end of stream and were passed on.
    Closed,
    /// A socket failed (reset, broken pipe, …); the caller should reset both.
    Broken {
        /// The socket that failed.
        side: Side,
        /// The error.
        error: io::Error,
    },
    /// No byte moved either way for the idle timeout.
    Idle,
    /// `cut` was cancelled (the drain timeout ran out).
    Cut,
}

/// What [`pump`] needs besides the two sockets.
#[derive(Debug)]
pub struct PumpOptions<'a> {
    /// Use `splice(2)` (unless the kernel refused it before).
    pub splice: bool,
    /// Pipes for `splice`.
    pub pool: &'a PipePool,
    /// Close after this long without a byte either way.
    pub idle_timeout: Duration,
    /// Cancelled when open connections must end now.
    pub cut: &'a CancellationToken,
    /// Bytes moved from the client to the target.
    pub to_target: &'a Counter,
    /// Bytes moved from the target to the client.
    pub to_client: &'a Counter,
    /// Incremented when a direction falls back to copying.
    pub fallbacks: &'a Counter,
}

/// Bytes moved, per direction, for the connection's log line.
#[derive(Debug, Default)]
pub struct Moved {
    /// Client → target.
    pub to_target: AtomicU64,
    /// Target → client.
    pub to_client: AtomicU64,
    /// Milliseconds since the pump started, at the last byte moved.
    last_active_ms: AtomicU64,
}

impl Moved {
    fn touch(&self, start: Instant) {
        let ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_active_ms.store(ms, Ordering::Relaxed);
    }
}

/// Passes bytes both ways between `client` and `target` until both directions have ended, one
/// fails, the idle timeout passes or `options.cut` is cancelled. Bytes moved are added to
/// `moved` as they go.
pub async fn pump(
    client: &TcpStream,
    target: &TcpStream,
    options: &PumpOptions<'_>,
    moved: &Moved,
) -> Outcome {
    let start = Instant::now();
    let mut up = pin!(forward(
        (client, Side::Client),
        (target, Side::Target),
        options,
        options.to_target,
        &moved.to_target,
        moved,
        start
    ));
    let mut down = pin!(forward(
        (target, Side::Target),
        (client, Side::Client),
        options,
        options.to_client,
        &moved.to_client,
        moved,
        start
    ));
    let (mut up_done, mut down_done) = (false, false);
    let mut idle = pin!(tokio::time::sleep(options.idle_timeout));
    loop {
        tokio::select! {
            result = &mut up, if !up_done => match result {
                Ok(()) => up_done = true,
                Err((side, error)) => return Outcome::Broken { side, error },
            },
            result = &mut down, if !down_done => match result {
                Ok(()) => down_done = true,
                Err((side, error)) => return Outcome::Broken { side, error },
            },
            () = &mut idle => {
                let last = start
                    + Duration::from_millis(moved.last_active_ms.load(Ordering::Relaxed));
                if last.elapsed() >= options.idle_timeout {
                    return Outcome::Idle;
                }
                idle.as_mut().reset(last + options.idle_timeout);
            }
            () = options.cut.cancelled() => return Outcome::Cut,
        }
        if up_done && down_done {
            return Outcome::Closed;
        }
    }
}

/// A socket of the connection and which one it is.
type End<'a> = (&'a TcpStream, Side);

/// One direction, `src` → `dst`, then `shutdown(SHUT_WR)` of `dst` at end of stream. Errors
/// name the socket that failed.
async fn forward(
    src: End<'_>,
    dst: End<'_>,
    options: &PumpOptions<'_>,
    counter: &Counter,
    total: &AtomicU64,
    moved: &Moved,
    start: Instant,
) -> Result<(), (Side, io::Error)> {
    let on_bytes = |n: usize| {
        let n = n as u64;
        counter.inc_by(n);
        total.fetch_add(n, Ordering::Relaxed);
        moved.touch(start);
    };
    if options.splice && !splice_refused() {
        match forward_splice(src, dst, options.pool, &on_bytes).await {
            Ok(true) => {}
            Ok(false) => {
                options.fallbacks.inc();
                forward_copy(src, dst, &on_bytes).await?;
            }
            Err(e) => return Err(e),
        }
    } else {
        forward_copy(src, dst, &on_bytes).await?;
    }
    match SockRef::from(dst.0).shutdown(Shutdown::Write) {
        // The peer may be gone already; the other direction will tell.
        Ok(()) | Err(_) => Ok(()),
    }
}

fn refused(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)
    )
}

/// The splice path. `Ok(true)`: end of stream reached; `Ok(false)`: splice is not possible
/// here (nothing was lost; copy from now on).
async fn forward_splice(
    (src, src_side): End<'_>,
    (dst, dst_side): End<'_>,
    pool: &PipePool,
    on_bytes: &impl Fn(usize),
) -> Result<bool, (Side, io::Error)> {
    let (from, to) = (src.as_raw_fd(), dst.as_raw_fd());
    // Held only while data flows; back to the pool when the source runs dry.
    let mut pipe: Option<Pipe> = None;
    loop {
        src.readable().await.map_err(|e| (src_side, e))?;
        let p = match pipe.take() {
            Some(p) => p,
            None => match pool.get() {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!("no pipe for splice ({e}); copying instead for this connection");
                    return Ok(false);
                }
            },
        };
        let n = match src.try_io(Interest::READABLE, || {
            splice(from, p.write.as_raw_fd(), PIPE_SIZE)
        }) {
            Ok(0) => {
                pool.put(p);
                return Ok(true);
            }
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                pool.put(p);
                continue;
            }
            Err(e) if refused(&e) => {
                SPLICE_REFUSED.store(true, Ordering::Relaxed);
                tracing::warn!("the kernel refused splice(2) ({e}); copying through user space");
                pool.put(p);
                return Ok(false);
            }
            // `p` may hold data: dropped, not pooled.
            Err(e) => return Err((src_side, e)),
        };
        let mut left = n;
        while left > 0 {
            dst.writable().await.map_err(|e| (dst_side, e))?;
            match dst.try_io(Interest::WRITABLE, || splice(p.read.as_raw_fd(), to, left)) {
                Ok(0) => {
                    return Err((
                        dst_side,
                        io::Error::new(ErrorKind::WriteZero, "splice to the socket moved nothing"),
                    ));
                }
                Ok(m) => left -= m,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => return Err((dst_side, e)),
            }
        }
        on_bytes(n);
        pipe = Some(p);
    }
}

/// The copy path: read into a buffer, write it all, until end of stream.
async fn forward_copy(
    (src, src_side): End<'_>,
    (dst, dst_side): End<'_>,
    on_bytes: &impl Fn(usize),
) -> Result<(), (Side, io::Error)> {
    let mut buf = vec![0u8; COPY_BUFFER];
    loop {
        src.readable().await.map_err(|e| (src_side, e))?;
        let n = match src.try_read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
            Err(e) => return Err((src_side, e)),
        };
        let mut sent = 0;
        while sent < n {
            dst.writable().await.map_err(|e| (dst_side, e))?;
            match dst.try_write(&buf[sent..n]) {
                Ok(m) => sent += m,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => return Err((dst_side, e)),
            }
        }
        on_bytes(n);
    }
}

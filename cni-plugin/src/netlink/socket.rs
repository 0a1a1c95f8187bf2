//! A synchronous netlink request/response socket over `netlink-sys`, generic over the message
//! family (rtnetlink, nfnetlink).
//!
//! The plugin is a short-lived process doing a dozen requests; a blocking socket with one
//! outstanding request at a time is all it needs (no async runtime, no background task).

use std::fmt::Debug;
use std::io;
use std::os::fd::{AsRawFd as _, BorrowedFd};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_MULTIPART, NLM_F_REQUEST, NetlinkDeserializable, NetlinkHeader,
    NetlinkMessage, NetlinkPayload, NetlinkSerializable,
};
use netlink_sys::{Socket, SocketAddr};

/// One netlink socket of protocol `NETLINK_*`, bound to the network namespace of the thread
/// that created it.
pub struct NetlinkSocket {
    socket: Socket,
    seq: u32,
    send_buf: Vec<u8>,
    recv_buf: Vec<u8>,
}

/// Receive buffer size: the kernel caps a dump datagram at about 32 KiB on 4 KiB pages.
const RECV_BUF: usize = 64 * 1024;

impl NetlinkSocket {
    /// Opens and connects a socket of `protocol` (e.g. `netlink_sys::protocols::NETLINK_ROUTE`)
    /// in the calling thread's network namespace.
    pub fn open(protocol: isize) -> io::Result<Self> {
        let mut socket = Socket::new(protocol)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        // Extended ACKs give the kernel's own error text (e.g. "Invalid prefix for given
        // prefix length"); older kernels reject the option, which costs nothing but the text.
        let _ = socket.set_ext_ack(true);
        Ok(Self {
            socket,
            seq: 0,
            send_buf: Vec::new(),
            recv_buf: Vec::with_capacity(RECV_BUF),
        })
    }

    /// Opens a socket of `protocol` inside the network namespace `netns` (an open nsfs file).
    ///
    /// A socket stays in the namespace it was created in, so a short-lived thread enters the
    /// namespace (`setns` is per thread), creates the socket and exits; the calling thread
    /// never changes namespace.
    pub fn open_in(protocol: isize, netns: BorrowedFd<'_>) -> io::Result<Self> {
        let fd = netns.as_raw_fd();
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    // SAFETY: setns on this (throwaway) thread only; `fd` is an open nsfs
                    // file descriptor borrowed for the duration of the scope.
                    if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Self::open(protocol)
                })
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("netns thread panicked")))
        })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn send<T: NetlinkSerializable + Debug>(
        &mut self,
        payloads: Vec<(T, u16)>,
    ) -> io::Result<Vec<u32>> {
        self.send_buf.clear();
        let mut seqs = Vec::with_capacity(payloads.len());
        for (payload, flags) in payloads {
            let mut header = NetlinkHeader::default();
            header.flags = flags;
            header.sequence_number = self.next_seq();
            seqs.push(header.sequence_number);
            let mut msg = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(payload));
            msg.finalize();
            let start = self.send_buf.len();
            self.send_buf.resize(start + msg.buffer_len(), 0);
            msg.serialize(&mut self.send_buf[start..]);
        }
        let sent = self.socket.send(&self.send_buf, 0)?;
        if sent != self.send_buf.len() {
            return Err(io::Error::other("short netlink send"));
        }
        Ok(seqs)
    }

    /// Receives one datagram and calls `each` with every message in it (with its header).
    fn recv_each<T: NetlinkDeserializable + Debug>(
        &mut self,
        mut each: impl FnMut(&NetlinkHeader, NetlinkPayload<T>) -> io::Result<()>,
    ) -> io::Result<()> {
        self.recv_buf.clear();
        self.socket.recv(&mut self.recv_buf, 0)?;
        let mut offset = 0;
        while offset < self.recv_buf.len() {
            let msg = NetlinkMessage::<T>::deserialize(&self.recv_buf[offset..])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            let len = msg.header.length as usize;
            if len == 0 {
                break;
            }
            offset += (len + 3) & !3;
            let (header, payload) = msg.into_parts();
            each(&header, payload)?;
        }
        Ok(())
    }

    /// Sends `payload` with `NLM_F_REQUEST | NLM_F_ACK | flags` and waits for the ACK.
    ///
    /// Errors: the kernel's errno (e.g. `EEXIST`, `ENODEV`) as an [`io::Error`].
    pub fn request<T>(&mut self, payload: T, flags: u16) -> io::Result<()>
    where
        T: NetlinkSerializable + NetlinkDeserializable + Debug,
    {
        let seq = self.send(vec![(payload, NLM_F_REQUEST | NLM_F_ACK | flags)])?[0];
        let mut done = None;
        while done.is_none() {
            self.recv_each::<T>(|header, payload| {
                if header.sequence_number == seq
                    && let NetlinkPayload::Error(e) = payload
                {
                    done = Some(match e.code {
                        None => Ok(()),
                        Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
                    });
                }
                Ok(())
            })?;
        }
        done.unwrap_or(Ok(()))
    }

    /// Sends a `GET` for one object and returns the kernel's answer.
    pub fn get<T>(&mut self, payload: T) -> io::Result<T>
    where
        T: NetlinkSerializable + NetlinkDeserializable + Debug,
    {
        let seq = self.send(vec![(payload, NLM_F_REQUEST)])?[0];
        let mut answer = None;
        while answer.is_none() {
            self.recv_each::<T>(|header, payload| {
                if header.sequence_number != seq {
                    return Ok(());
                }
                answer = Some(match payload {
                    NetlinkPayload::InnerMessage(m) => Ok(m),
                    NetlinkPayload::Error(e) => Err(match e.code {
                        Some(code) => io::Error::from_raw_os_error(-code.get()),
                        None => io::Error::other("netlink ACK where an object was expected"),
                    }),
                    other => Err(io::Error::other(format!(
                        "unexpected netlink answer {other:?}"
                    ))),
                });
                Ok(())
            })?;
        }
        answer.unwrap_or_else(|| Err(io::Error::other("no netlink answer")))
    }

    /// Sends a dump request (`NLM_F_DUMP`) and collects every object until `NLMSG_DONE`.
    pub fn dump<T>(&mut self, payload: T) -> io::Result<Vec<T>>
    where
        T: NetlinkSerializable + NetlinkDeserializable + Debug,
    {
        let seq = self.send(vec![(payload, NLM_F_REQUEST | NLM_F_DUMP)])?[0];
        let mut out = Vec::new();
        let mut done: Option<io::Result<()>> = None;
        while done.is_none() {
            self.recv_each::<T>(|header, payload| {
                if header.sequence_number != seq {
                    return Ok(());
                }
                match payload {
                    NetlinkPayload::InnerMessage(m) => out.push(m),
                    NetlinkPayload::Done(_) => done = Some(Ok(())),
                    NetlinkPayload::Error(e) => {
                        done = Some(match e.code {
                            Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
                            None => Ok(()),
                        });
                    }
                    _ => {}
                }
                if header.flags & NLM_F_MULTIPART == 0 && done.is_none() {
                    done = Some(Ok(()));
                }
                Ok(())
            })?;
        }
        done.unwrap_or(Ok(())).map(|()| out)
    }

    /// Sends `messages` in one datagram (an nfnetlink batch: begin, commands, end), each with
    /// its own flags, then `fence` in a second datagram (the kernel ignores anything after a
    /// batch's end in the same datagram): a request whose answer comes only after everything
    /// before it was answered. Returns the errno of every message that failed, with its index
    /// in `messages`.
    pub fn batch<T>(&mut self, messages: Vec<(T, u16)>, fence: T) -> io::Result<Vec<(usize, i32)>>
    where
        T: NetlinkSerializable + NetlinkDeserializable + Debug,
    {
        let seqs = self.send(messages)?;
        let fence_seq = self.send(vec![(fence, NLM_F_REQUEST)])?[0];
        let mut failures = Vec::new();
        let mut fenced = false;
        while !fenced {
            self.recv_each::<T>(|header, payload| {
                let seq = header.sequence_number;
                if seq == fence_seq {
                    if let NetlinkPayload::Error(e) = &payload
                        && let Some(code) = e.code
                    {
                        return Err(io::Error::from_raw_os_error(-code.get()));
                    }
                    fenced = true;
                } else if let NetlinkPayload::Error(e) = payload
                    && let Some(code) = e.code
                    && let Some(index) = seqs.iter().position(|s| *s == seq)
                {
                    failures.push((index, -code.get()));
                }
                Ok(())
            })?;
        }
        Ok(failures)
    }
}

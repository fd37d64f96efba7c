//! One socket with a persistent receive and a send queue, polled by its owner's event loop.

use std::{
    io, mem,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::{Buf, BytesMut};
use compio::{
    BufResult,
    buf::IntoInner,
    driver::{
        SharedFd,
        op::{Recv, RecvFlags, Send, SendFlags},
    },
    runtime::Submit,
};
use socket2::Socket;

type RecvOp = Recv<BytesMut, SharedFd<Socket>>;
type SendOp = Send<BytesMut, SharedFd<Socket>>;

enum RecvSlot {
    /// No receive in flight; the landing buffer is empty.
    Idle(BytesMut),
    Busy(Submit<RecvOp>),
}

enum SendSlot {
    /// No send in flight; the spare buffer is empty.
    Idle(BytesMut),
    Busy(Submit<SendOp>, usize),
}

/// A connected socket owned by one task on one worker thread.
pub struct Conn {
    fd: SharedFd<Socket>,
    recv: RecvSlot,
    send: SendSlot,
    /// Bytes received and not yet consumed by the protocol code.
    pub rbuf: BytesMut,
    /// Bytes queued to be sent after whatever is in flight.
    pub wbuf: BytesMut,
    read_size: usize,
    eof: bool,
}

impl Conn {
    /// Wraps a socket for use on the current worker's runtime. `read_size` is how much
    /// one receive may bring in.
    pub fn new(socket: Socket, read_size: usize) -> Conn {
        Conn {
            fd: SharedFd::new(socket),
            recv: RecvSlot::Idle(BytesMut::new()),
            send: SendSlot::Idle(BytesMut::new()),
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            read_size,
            eof: false,
        }
    }

    pub fn socket(&self) -> &Socket {
        &self.fd
    }

    /// The peer closed its side (a receive returned 0).
    pub fn is_eof(&self) -> bool {
        self.eof
    }

    pub fn recv_in_flight(&self) -> bool {
        matches!(self.recv, RecvSlot::Busy(..))
    }

    /// Nothing queued and nothing in flight.
    pub fn send_idle(&self) -> bool {
        self.wbuf.is_empty() && matches!(self.send, SendSlot::Idle(_))
    }

    /// Bytes waiting to reach the peer (queued plus in flight), for backpressure.
    pub fn send_backlog(&self) -> usize {
        self.wbuf.len()
            + match &self.send {
                SendSlot::Busy(_, n) => *n,
                SendSlot::Idle(_) => 0,
            }
    }

    /// Starts a receive if none is in flight and polls it. On completion the bytes are
    /// appended to `rbuf` and their count returned (0 = end of stream).
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        loop {
            match &mut self.recv {
                RecvSlot::Idle(buf) => {
                    if self.eof {
                        return Poll::Ready(Ok(0));
                    }
                    let mut buf = mem::take(buf);
                    buf.clear();
                    buf.reserve(self.read_size);
                    let op = Recv::new(self.fd.clone(), buf, RecvFlags::empty());
                    self.recv = RecvSlot::Busy(compio::runtime::submit(op));
                }
                RecvSlot::Busy(fut) => {
                    let BufResult(res, op) = match Pin::new(fut).poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(r) => r,
                    };
                    let mut landed = op.into_inner();
                    return Poll::Ready(match res {
                        Ok(n) => {
                            let n = n.min(landed.capacity());
                            // SAFETY: the kernel initialised the first `n` bytes of the
                            // buffer, which had length 0 when submitted.
                            unsafe { landed.set_len(n) };
                            if n == 0 {
                                self.eof = true;
                            }
                            if self.rbuf.is_empty() {
                                mem::swap(&mut self.rbuf, &mut landed);
                            } else {
                                self.rbuf.extend_from_slice(&landed);
                            }
                            landed.clear();
                            self.recv = RecvSlot::Idle(landed);
                            Ok(n)
                        }
                        Err(e) => {
                            landed.clear();
                            self.recv = RecvSlot::Idle(landed);
                            Err(e)
                        }
                    });
                }
            }
        }
    }

    /// Moves queued bytes into a send and polls the one in flight. Ready when everything
    /// queued so far has been handed to the kernel.
    pub fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            match &mut self.send {
                SendSlot::Idle(spare) => {
                    if self.wbuf.is_empty() {
                        return Poll::Ready(Ok(()));
                    }
                    let mut out = mem::take(spare);
                    mem::swap(&mut out, &mut self.wbuf);
                    let n = out.len();
                    let op = Send::new(self.fd.clone(), out, SendFlags::NOSIGNAL);
                    self.send = SendSlot::Busy(compio::runtime::submit(op), n);
                }
                SendSlot::Busy(fut, _) => {
                    let BufResult(res, op) = match Pin::new(fut).poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(r) => r,
                    };
                    let mut sent = op.into_inner();
                    match res {
                        Ok(0) if !sent.is_empty() => {
                            self.send = SendSlot::Idle(BytesMut::new());
                            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                        }
                        Ok(n) => {
                            sent.advance(n.min(sent.len()));
                            if sent.is_empty() {
                                sent.clear();
                                self.send = SendSlot::Idle(sent);
                            } else {
                                // Short send: the rest goes first, then anything queued since.
                                sent.extend_from_slice(&self.wbuf);
                                self.wbuf.clear();
                                let n = sent.len();
                                let op = Send::new(self.fd.clone(), sent, SendFlags::NOSIGNAL);
                                self.send = SendSlot::Busy(compio::runtime::submit(op), n);
                            }
                        }
                        Err(e) => {
                            self.send = SendSlot::Idle(BytesMut::new());
                            return Poll::Ready(Err(e));
                        }
                    }
                }
            }
        }
    }

    /// Sends everything queued (await-style, for sequential phases such as login).
    pub async fn flush(&mut self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_flush(cx)).await
    }

    /// Receives once (await-style, for sequential phases such as login).
    pub async fn recv(&mut self) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Gives the socket back when no operation is in flight, so it can move to another
    /// thread. None (and the connection closed) if an operation is still in flight.
    pub fn into_socket(self) -> Option<Socket> {
        if self.recv_in_flight() || !self.send_idle() {
            return None;
        }
        let Conn { fd, recv, send, .. } = self;
        drop(recv);
        drop(send);
        fd.try_unwrap().ok()
    }
}

/// Whether an idle connection is still open and silent: a server that was terminated
/// while idle has sent an error and closed, which shows up here without blocking.
pub fn is_alive(socket: &Socket) -> bool {
    use std::os::fd::AsRawFd;
    let mut b = [0u8; 1];
    // SAFETY: recv into a valid one-byte buffer on a descriptor we own.
    let r = unsafe {
        libc::recv(
            socket.as_raw_fd(),
            b.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    if r < 0 {
        return io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock;
    }
    // 0 = closed; data = something unsolicited (a FATAL before closing).
    false
}

/// The kernel's socket cookie (SO_COOKIE): the key eBPF programs see for this socket.
/// 0 if the kernel does not tell.
pub fn socket_cookie(socket: &Socket) -> u64 {
    use std::os::fd::AsRawFd;
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: getsockopt into a u64 with its size, on a descriptor we own.
    let r = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    if r == 0 { cookie } else { 0 }
}

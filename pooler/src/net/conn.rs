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
        ResultTakeBuffer, SharedFd,
        op::{Recv, RecvFlags, RecvManaged, Send, SendFlags},
    },
    runtime::Submit,
};
use socket2::Socket;

type RecvOp = Recv<BytesMut, SharedFd<Socket>>;
type RingRecvOp = RecvManaged<SharedFd<Socket>>;
type SendOp = Send<BytesMut, SharedFd<Socket>>;

enum RecvSlot {
    /// No receive in flight; the landing buffer is empty.
    Idle(BytesMut),
    Busy(Submit<RecvOp>),
    /// Into a buffer the kernel picks from the worker's ring when data arrives
    /// (net/ring.rs): the connection holds no receive buffer while it waits.
    Ring(Submit<RingRecvOp>),
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
    /// How much the next receive may bring in.
    read_size: usize,
    /// Bounds within which `read_size` adapts to the traffic (equal: fixed).
    read_min: usize,
    read_max: usize,
    eof: bool,
    /// A client connection: quiet, it receives from the worker's ring and keeps no
    /// buffer once everything received is consumed and everything queued is sent.
    lean: bool,
    /// The ring was empty for the last receive: use a buffer of our own once.
    ring_starved: bool,
    /// The receive/send in flight already answered Pending during this poll of the
    /// owning task: polling it again before the task is woken cannot change that (only
    /// the runtime, between polls, completes operations), and each poll clones a waker.
    recv_parked: bool,
    send_parked: bool,
}

/// The buffers of a server connection, kept by its worker when the connection goes back
/// to the pool, so the next server linked there does not allocate its own.
struct Buffers {
    landing: BytesMut,
    spare: BytesMut,
    rbuf: BytesMut,
    wbuf: BytesMut,
}

thread_local! {
    static SPARE: std::cell::RefCell<Vec<Buffers>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Buffer sets a worker keeps at most, and the largest buffer worth keeping.
const SPARE_SETS: usize = 256;
const SPARE_CAPACITY: usize = 256 * 1024;
/// The largest send whose completion `poll_flush_lazy` may leave unwatched.
const LAZY_SEND_MAX: usize = 8 * 1024;

/// MSG_WAITALL: with io_uring a stream send then completes whole (the kernel retries a
/// short one itself) or fails.
fn send_flags() -> SendFlags {
    SendFlags::NOSIGNAL | SendFlags::from_bits_retain(libc::MSG_WAITALL as u32)
}

/// A send buffer larger than this is freed once sent rather than kept for the next one.
const KEEP_SEND_CAPACITY: usize = 16 * 1024;

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
            read_min: read_size,
            read_max: read_size,
            eof: false,
            lean: false,
            ring_starved: false,
            recv_parked: false,
            send_parked: false,
        }
    }

    /// Called by the owning task each time it is polled anew.
    #[inline]
    pub fn unpark(&mut self) {
        self.recv_parked = false;
        self.send_parked = false;
    }

    /// A client connection: its receive size adapts between `min` and `max` (a busy one,
    /// with COPY or large Binds, reads in large chunks), and while it is quiet it pins no
    /// buffer: receives come from the worker's ring (io_uring) and buffers emptied are
    /// freed rather than kept.
    pub fn lean(socket: Socket, min: usize, max: usize) -> Conn {
        let mut c = Conn::new(socket, min);
        c.read_max = max.max(min);
        c.lean = true;
        c
    }

    /// Like `new`, reusing buffers a server connection released on this worker left.
    pub fn recycled(socket: Socket, read_size: usize) -> Conn {
        let mut c = Conn::new(socket, read_size);
        if let Some(b) = SPARE.with(|s| s.borrow_mut().pop()) {
            c.recv = RecvSlot::Idle(b.landing);
            c.send = SendSlot::Idle(b.spare);
            c.rbuf = b.rbuf;
            c.wbuf = b.wbuf;
        }
        c
    }

    pub fn socket(&self) -> &Socket {
        &self.fd
    }

    /// The peer closed its side (a receive returned 0).
    pub fn is_eof(&self) -> bool {
        self.eof
    }

    pub fn recv_in_flight(&self) -> bool {
        !matches!(self.recv, RecvSlot::Idle(..))
    }

    /// Whether the next receive should come from the worker's ring.
    fn wants_ring(&self) -> bool {
        self.lean
            && !self.ring_starved
            && !self.eof
            && self.rbuf.is_empty()
            && self.read_size <= super::ring::RING_BUFFER_LEN
            && matches!(self.recv, RecvSlot::Idle(_))
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
            if self.wants_ring()
                && let Some(op) = super::ring::recv(&self.fd)
            {
                // Nothing waits in either buffer: both go back to the allocator.
                self.rbuf = BytesMut::new();
                self.recv = RecvSlot::Ring(compio::runtime::submit(op));
            }
            match &mut self.recv {
                RecvSlot::Idle(buf) => {
                    if self.eof {
                        return Poll::Ready(Ok(0));
                    }
                    self.ring_starved = false;
                    let mut buf = mem::take(buf);
                    if self.rbuf.is_empty() {
                        // Everything received was consumed: land the next bytes in the
                        // larger of the two allocations and free the other, so a quiet
                        // connection keeps one buffer and a busy one allocates none.
                        let r = mem::take(&mut self.rbuf);
                        if r.capacity() > buf.capacity() {
                            buf = r;
                        }
                    }
                    buf.clear();
                    buf.reserve(self.read_size);
                    let op = Recv::new(self.fd.clone(), buf, RecvFlags::empty());
                    self.recv = RecvSlot::Busy(compio::runtime::submit(op));
                }
                RecvSlot::Ring(fut) => {
                    let BufResult(res, op) =
                        std::task::ready!(poll_op(fut, &mut self.recv_parked, cx));
                    self.recv = RecvSlot::Idle(BytesMut::new());
                    if matches!(&res, Err(e) if ring_empty(e)) {
                        // More receives completed at once than the ring has buffers.
                        self.ring_starved = true;
                        super::ring::count_fallback();
                        continue;
                    }
                    // SAFETY: on success the result is the length the kernel wrote into
                    // the buffer it selected.
                    let got = unsafe { BufResult(res, op).take_buffer() };
                    return Poll::Ready(match got {
                        Ok(Some(b)) => {
                            let n = b.len();
                            self.rbuf.extend_from_slice(&b);
                            if n == super::ring::RING_BUFFER_LEN {
                                // A full buffer: more is coming; read in larger chunks.
                                self.read_size = (n * 2).min(self.read_max).max(self.read_size);
                            }
                            Ok(n)
                        }
                        Ok(None) => {
                            self.eof = true;
                            Ok(0)
                        }
                        Err(e) => Err(e),
                    });
                }
                RecvSlot::Busy(fut) => {
                    let BufResult(res, op) =
                        std::task::ready!(poll_op(fut, &mut self.recv_parked, cx));
                    let mut landed = op.into_inner();
                    return Poll::Ready(match res {
                        Ok(n) => {
                            let cap = landed.capacity();
                            let n = n.min(cap);
                            // SAFETY: the kernel initialised the first `n` bytes of the
                            // buffer, which had length 0 when submitted.
                            unsafe { landed.set_len(n) };
                            if n == cap && self.read_size < self.read_max {
                                self.read_size = (self.read_size * 2).min(self.read_max);
                            } else if n < self.read_size / 8 && self.read_size > self.read_min {
                                self.read_size = (self.read_size / 2).max(self.read_min);
                            }
                            if n == 0 {
                                self.eof = true;
                            }
                            if self.rbuf.is_empty() {
                                mem::swap(&mut self.rbuf, &mut landed);
                            } else {
                                self.rbuf.extend_from_slice(&landed);
                            }
                            landed.clear();
                            if landed.capacity() > self.read_max * 2 {
                                // Grown for a burst: let it go rather than pin it.
                                landed = BytesMut::new();
                            }
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
        self.poll_flush_lazy(cx, false)
    }

    /// `poll_flush`; with `lazy`, a small send in flight with nothing queued behind it is
    /// polled without registering the task's waker, so its completion does not wake the
    /// task only for it to find nothing to do: the owner polls it again when it wakes for
    /// the reply. io_uring only, where sends carry MSG_WAITALL and so complete whole or
    /// fail (a short send would otherwise go unnoticed until the next wake-up).
    pub fn poll_flush_lazy(&mut self, cx: &mut Context<'_>, lazy: bool) -> Poll<io::Result<()>> {
        loop {
            match &mut self.send {
                SendSlot::Idle(spare) => {
                    if self.wbuf.is_empty() {
                        return Poll::Ready(Ok(()));
                    }
                    let mut out = mem::take(spare);
                    mem::swap(&mut out, &mut self.wbuf);
                    let n = out.len();
                    let op = Send::new(self.fd.clone(), out, send_flags());
                    self.send = SendSlot::Busy(compio::runtime::submit(op), n);
                }
                SendSlot::Busy(fut, n) => {
                    let BufResult(res, op) = if lazy && self.wbuf.is_empty() && *n <= LAZY_SEND_MAX
                    {
                        // Not parked, and no longer parked: the no-op waker replaces any
                        // the task registered earlier in this poll, so a later poll that
                        // needs the completion (more queued, the server released, the
                        // client closing) must register the task's waker again.
                        self.send_parked = false;
                        let mut quiet = Context::from_waker(std::task::Waker::noop());
                        std::task::ready!(Pin::new(fut).poll(&mut quiet))
                    } else {
                        std::task::ready!(poll_op(fut, &mut self.send_parked, cx))
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
                                if self.lean || sent.capacity() > KEEP_SEND_CAPACITY {
                                    // A quiet client keeps no buffer; nor does anyone
                                    // keep the buffer a large result went out in.
                                    sent = BytesMut::new();
                                }
                                self.send = SendSlot::Idle(sent);
                            } else {
                                // Short send: the rest goes first, then anything queued since.
                                sent.extend_from_slice(&self.wbuf);
                                self.wbuf.clear();
                                let n = sent.len();
                                let op = Send::new(self.fd.clone(), sent, send_flags());
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
        std::future::poll_fn(|cx| {
            self.unpark();
            self.poll_flush(cx)
        })
        .await
    }

    /// Receives once (await-style, for sequential phases such as login).
    pub async fn recv(&mut self) -> io::Result<usize> {
        std::future::poll_fn(|cx| {
            self.unpark();
            self.poll_recv(cx)
        })
        .await
    }

    /// Gives the socket back when no operation is in flight, so it can move to another
    /// thread. None (and the connection closed) if an operation is still in flight.
    pub fn into_socket(self) -> Option<Socket> {
        if self.recv_in_flight() || !self.send_idle() {
            return None;
        }
        let Conn {
            fd,
            recv,
            send,
            mut rbuf,
            mut wbuf,
            ..
        } = self;
        if let (RecvSlot::Idle(mut landing), SendSlot::Idle(mut spare)) = (recv, send) {
            for b in [&mut landing, &mut spare, &mut rbuf, &mut wbuf] {
                b.clear();
            }
            let small = [&landing, &spare, &rbuf, &wbuf]
                .iter()
                .all(|b| b.capacity() <= SPARE_CAPACITY);
            if small {
                SPARE.with(|s| {
                    let mut s = s.borrow_mut();
                    if s.len() < SPARE_SETS {
                        s.push(Buffers {
                            landing,
                            spare,
                            rbuf,
                            wbuf,
                        });
                    }
                });
            }
        }
        fd.try_unwrap().ok()
    }
}

/// Polls an operation in flight, unless it already answered Pending during this poll of
/// the owning task (`parked`; see `Conn::recv_parked`).
fn poll_op<T: compio::driver::OpCode + 'static>(
    op: &mut Submit<T>,
    parked: &mut bool,
    cx: &mut Context<'_>,
) -> Poll<BufResult<usize, T>> {
    if *parked {
        return Poll::Pending;
    }
    let r = Pin::new(op).poll(cx);
    *parked = r.is_pending();
    r
}

/// A receive from the ring found it empty (ENOBUFS; compio reports it as ResourceBusy).
fn ring_empty(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOBUFS) || e.kind() == io::ErrorKind::ResourceBusy
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

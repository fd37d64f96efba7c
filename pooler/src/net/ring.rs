//! The worker's provided-buffer ring: receives on quiet client connections let the kernel
//! pick a buffer from it when data arrives, so a connection waiting for its next request
//! holds no receive buffer of its own (memory per idle client). io_uring only.

use std::{
    cell::RefCell,
    num::NonZero,
    sync::atomic::{AtomicU64, Ordering},
};

use compio::driver::{
    BufferPool, ProactorBuilder, SharedFd,
    op::{RecvFlags, RecvManaged},
};
use socket2::Socket;

/// The size of each buffer in a worker's ring (their number is `recv_ring_buffers`). A
/// client request that fills a buffer switches its connection to receives into buffers of
/// its own until the traffic is quiet again; a ring momentarily empty (more receives
/// completing at once than it has buffers) makes a receive fall back to a buffer of its
/// own, never fail.
pub const RING_BUFFER_LEN: usize = 1024;

/// Receives that found the ring empty and used a buffer of their own instead, since start
/// (all workers): a count that keeps rising says `recv_ring_buffers` is too small.
static FALLBACKS: AtomicU64 = AtomicU64::new(0);

pub fn fallbacks() -> u64 {
    FALLBACKS.load(Ordering::Relaxed)
}

pub(super) fn count_fallback() {
    FALLBACKS.fetch_add(1, Ordering::Relaxed);
}

thread_local! {
    static RING: RefCell<Option<BufferPool>> = const { RefCell::new(None) };
}

/// Sizes the ring a runtime will create (on first use); `buffers` is rounded up to a
/// power of two. 0: no ring.
pub fn configure(b: &mut ProactorBuilder, buffers: u32) {
    if let Some(n) = NonZero::new(buffers.min(32768) as u16) {
        b.buffer_pool_size(n)
            .buffer_pool_buffer_len(RING_BUFFER_LEN);
    }
}

/// Registers the ring on the current worker's io_uring runtime. Without it (an older
/// kernel refusing the registration) receives use buffers of their own, as on epoll.
pub fn init() -> std::io::Result<()> {
    let pool = compio::runtime::Runtime::with_current(|rt| rt.buffer_pool())?;
    RING.with(|r| *r.borrow_mut() = Some(pool));
    Ok(())
}

/// A receive on `fd` into a buffer of the current worker's ring; None without a ring.
pub(super) fn recv(fd: &SharedFd<Socket>) -> Option<RecvManaged<SharedFd<Socket>>> {
    RING.with(|r| {
        let pool = r.borrow();
        RecvManaged::new(
            fd.clone(),
            pool.as_ref()?,
            RING_BUFFER_LEN,
            RecvFlags::empty(),
        )
        .ok()
    })
}

//! The only code that touches sockets and the io_uring runtime.
//!
//! # io_uring discipline
//!
//! * **Buffer ownership.** A buffer handed to a Recv or Send operation belongs to the kernel
//!   (through compio's driver) until that operation's completion arrives; only then does the
//!   operation give it back. [`Conn`] therefore keeps two buffers per direction: the one in
//!   flight and the one the rest of the pooler reads from or appends to. Received bytes land
//!   in the in-flight buffer and are moved (or swapped, when nothing is pending) into
//!   `Conn::rbuf` at completion; bytes to send accumulate in `Conn::wbuf` and are swapped
//!   into the operation when the previous send has completed.
//! * **Provided buffers.** A quiet client connection on io_uring posts its receive with no
//!   buffer at all: the kernel takes one from the worker's provided-buffer ring (`ring`)
//!   when data arrives, and the completion hands it to the `Conn`, which copies the bytes
//!   into `rbuf` and drops it, giving it back to the ring at once. An idle client thus
//!   holds no receive buffer, and its send buffers are freed once sent.
//! * **Unwatched sends.** A small send with nothing queued behind it may be polled with a
//!   no-op waker (`Conn::poll_flush_lazy`) when a reply that follows it will wake the
//!   owner anyway; the owner then finds it complete on its next poll. Sends carry
//!   MSG_WAITALL, so with io_uring one never completes short unnoticed.
//! * **No read is ever dropped mid-flight.** Dropping a compio operation future cancels the
//!   operation, and a receive that completes after cancellation loses its bytes. So a
//!   connection has at most one receive in flight, owned by the `Conn` itself and polled in
//!   place across iterations of the connection's event loop; nothing selects over a read
//!   future and drops the loser. Timeouts are deadlines checked by the state machine, never
//!   a dropped read. The only time an in-flight operation is dropped is when the connection
//!   itself is being thrown away, where losing bytes is the intent.
//! * **Moving a connection between threads.** compio's socket handles are `!Send`: every
//!   worker thread has its own ring. A server connection released to the pool while idle
//!   has no operation in flight, so its `SharedFd` has a single owner and can be unwrapped
//!   into a plain `socket2::Socket` (which is `Send`); the worker that takes it next wraps
//!   the descriptor again. The fd moves, never the runtime object.
//! * **Blocking mode.** With io_uring, sockets stay in blocking mode (io_uring arms its own
//!   poll); with the epoll fallback they are non-blocking. All workers use the same driver,
//!   so a socket moved between threads is always in the right mode.

mod conn;
mod connect;
mod listen;
pub mod ring;
mod runtime;

pub use conn::{Conn, is_alive, socket_cookie};
pub use connect::{ServerAddr, connect};
pub use listen::{Listener, Listeners, bind_listeners};
pub use runtime::{Backend, build_runtime, probe_backend};

//! A one-way "stop now" flag that any thread can raise and any worker can await.

use std::{
    future::poll_fn,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    task::{Poll, Waker},
};

#[derive(Clone, Default)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    raised: AtomicBool,
    /// One slot per waiter (each call of `wait`), holding the waker of its latest poll.
    wakers: Mutex<Vec<Option<Waker>>>,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn raise(&self) {
        self.inner.raised.store(true, Ordering::SeqCst);
        let wakers =
            std::mem::take(&mut *self.inner.wakers.lock().unwrap_or_else(|e| e.into_inner()));
        for w in wakers.into_iter().flatten() {
            w.wake();
        }
    }

    pub fn is_raised(&self) -> bool {
        self.inner.raised.load(Ordering::SeqCst)
    }

    /// Resolves once `raise` has been called. A waiter polled again (a runtime's main
    /// future is polled on every turn of its loop) updates its own slot rather than adding
    /// one per poll, which would grow with the traffic.
    pub async fn wait(&self) {
        let mut slot: Option<usize> = None;
        poll_fn(|cx| {
            if self.is_raised() {
                return Poll::Ready(());
            }
            {
                let mut wakers = self.inner.wakers.lock().unwrap_or_else(|e| e.into_inner());
                match slot.and_then(|i| wakers.get_mut(i)) {
                    Some(Some(w)) if w.will_wake(cx.waker()) => {}
                    Some(w) => *w = Some(cx.waker().clone()),
                    None => {
                        wakers.push(Some(cx.waker().clone()));
                        slot = Some(wakers.len() - 1);
                    }
                }
            }
            if self.is_raised() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{
        future::Future,
        pin::pin,
        task::{Context, Waker},
    };

    #[test]
    fn a_waiter_polled_again_is_registered_once() {
        let s = Shutdown::new();
        let mut cx = Context::from_waker(Waker::noop());
        let mut wait = pin!(s.wait());
        let mut other = pin!(s.wait());
        for _ in 0..1000 {
            assert!(wait.as_mut().poll(&mut cx).is_pending());
            assert!(other.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(
            s.inner.wakers.lock().unwrap().len(),
            2,
            "one slot per waiter"
        );
        s.raise();
        assert!(wait.as_mut().poll(&mut cx).is_ready());
        assert!(other.as_mut().poll(&mut cx).is_ready());
        assert!(s.inner.wakers.lock().unwrap().is_empty());
    }
}

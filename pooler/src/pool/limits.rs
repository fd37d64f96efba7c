//! Counters shared by every pool of one database or one user, enforcing
//! `max_db_connections` and `max_user_connections` exactly across worker threads.

use std::sync::atomic::{AtomicU32, Ordering};

#[derive(Debug, Default)]
pub struct LimitGroup {
    /// 0 = unlimited.
    limit: AtomicU32,
    count: AtomicU32,
    /// Clients queued in some pool of this group because the group, not their own pool,
    /// is full. A server released while this is non-zero is closed instead of idled, so
    /// a sibling pool can open one.
    starving: AtomicU32,
}

impl LimitGroup {
    pub fn new(limit: u32) -> Self {
        LimitGroup {
            limit: AtomicU32::new(limit),
            ..Default::default()
        }
    }

    pub fn set_limit(&self, limit: u32) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    pub fn limit(&self) -> u32 {
        self.limit.load(Ordering::Relaxed)
    }

    pub fn count(&self) -> u32 {
        self.count.load(Ordering::Relaxed)
    }

    /// Takes one slot if the limit allows.
    pub fn try_acquire(&self) -> bool {
        let limit = self.limit.load(Ordering::Relaxed);
        self.count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                (limit == 0 || c < limit).then_some(c + 1)
            })
            .is_ok()
    }

    pub fn release(&self) {
        let _ = self
            .count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| c.checked_sub(1));
    }

    pub fn add_starving(&self) {
        self.starving.fetch_add(1, Ordering::AcqRel);
    }

    pub fn remove_starving(&self) {
        let _ = self
            .starving
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| c.checked_sub(1));
    }

    pub fn is_starving(&self) -> bool {
        self.starving.load(Ordering::Acquire) > 0
    }
}

/// Takes a slot in both groups, or in neither.
pub fn acquire_both(db: &LimitGroup, user: &LimitGroup) -> bool {
    if !db.try_acquire() {
        return false;
    }
    if !user.try_acquire() {
        db.release();
        return false;
    }
    true
}

pub fn release_both(db: &LimitGroup, user: &LimitGroup) {
    db.release();
    user.release();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_is_exact_across_threads() {
        let g = std::sync::Arc::new(LimitGroup::new(5));
        let got: u32 = (0..8)
            .map(|_| {
                let g = g.clone();
                std::thread::spawn(move || (0..100).filter(|_| g.try_acquire()).count() as u32)
            })
            .map(|h| h.join().unwrap())
            .sum();
        assert_eq!(got, 5);
        assert_eq!(g.count(), 5);
        g.release();
        assert!(g.try_acquire());
        assert!(!g.try_acquire());
    }

    #[test]
    fn unlimited_and_both() {
        let a = LimitGroup::new(0);
        let b = LimitGroup::new(1);
        assert!(acquire_both(&a, &b));
        assert!(!acquire_both(&a, &b));
        assert_eq!(a.count(), 1, "db slot rolled back when user slot fails");
        release_both(&a, &b);
        assert_eq!((a.count(), b.count()), (0, 0));
        b.release();
        assert_eq!(b.count(), 0, "never underflows");
    }
}

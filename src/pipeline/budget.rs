//! The mount-wide memory budget for in-flight chunk data.
//!
//! T5X meant its byte limit to be global but builds one per array; here one
//! budget covers every file of the mount. A writer that cannot reserve
//! blocks (only that writer), and its reservation is returned when the chunk
//! has been stored.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

/// Bytes of chunk data that may be held at once.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: u64,
    used: Mutex<u64>,
    freed: Condvar,
    peak: AtomicU64,
    waits: AtomicU64,
}

/// Bytes held from the budget; returned on drop.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<MemoryBudget>,
    bytes: u64,
}

impl MemoryBudget {
    /// A budget of `limit` bytes, none reserved.
    pub fn new(limit: u64) -> Arc<Self> {
        Arc::new(MemoryBudget {
            limit,
            used: Mutex::new(0),
            freed: Condvar::new(),
            peak: AtomicU64::new(0),
            waits: AtomicU64::new(0),
        })
    }

    /// Reserves `bytes`, waiting while the budget is spent. A request larger
    /// than the whole budget is clamped to it so it can still proceed alone.
    pub fn reserve(self: &Arc<Self>, bytes: u64) -> Reservation {
        let bytes = bytes.min(self.limit);
        let mut used = self.used.lock();
        if *used + bytes > self.limit {
            self.waits.fetch_add(1, Ordering::Relaxed);
        }
        while *used + bytes > self.limit {
            self.freed.wait(&mut used);
        }
        *used += bytes;
        self.peak.fetch_max(*used, Ordering::Relaxed);
        Reservation {
            budget: self.clone(),
            bytes,
        }
    }

    /// [`MemoryBudget::reserve`] without waiting: `None` while the budget
    /// is spent (for async callers, which must not block their thread).
    pub fn try_reserve(self: &Arc<Self>, bytes: u64) -> Option<Reservation> {
        let bytes = bytes.min(self.limit);
        let mut used = self.used.lock();
        if *used + bytes > self.limit {
            return None;
        }
        *used += bytes;
        self.peak.fetch_max(*used, Ordering::Relaxed);
        Some(Reservation {
            budget: self.clone(),
            bytes,
        })
    }

    /// Bytes reserved now.
    pub fn used(&self) -> u64 {
        *self.used.lock()
    }
    /// The most bytes reserved at once since the budget was made.
    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
    /// The budget's size (`io.memory_budget`).
    pub fn limit(&self) -> u64 {
        self.limit
    }
    /// How many reservations had to wait.
    pub fn waits(&self) -> u64 {
        self.waits.load(Ordering::Relaxed)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut used = self.budget.used.lock();
        *used -= self.bytes;
        self.budget.freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_block_until_returned() {
        let b = MemoryBudget::new(100);
        let r1 = b.reserve(60);
        let b2 = b.clone();
        let t = std::thread::spawn(move || {
            let _r = b2.reserve(60);
            b2.used()
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(b.used(), 60);
        drop(r1);
        assert_eq!(t.join().expect("join"), 60);
        assert_eq!(b.used(), 0);
        assert_eq!(b.peak(), 60);
        assert_eq!(b.waits(), 1);
    }

    #[test]
    fn a_try_that_does_not_fit_takes_nothing() {
        let b = MemoryBudget::new(100);
        let r1 = b.try_reserve(70).expect("fits");
        assert!(b.try_reserve(40).is_none());
        assert_eq!(b.used(), 70);
        // Larger than the whole budget: clamped, as `reserve` does.
        drop(r1);
        let all = b.try_reserve(500).expect("clamped");
        assert_eq!(b.used(), 100);
        drop(all);
        assert_eq!(b.used(), 0);
    }
}

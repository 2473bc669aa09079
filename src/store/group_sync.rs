//! Group commit of durability barriers: `syncfs` flushes a whole
//! filesystem, so commits that ask for one while another is running share
//! the next one instead of each running their own (eight ranks closing
//! their shards at once pay for about two flushes, not eight).
//!
//! A caller is served only by a flush that *started* after it asked: one
//! already running may have begun before the caller's writes.

use std::collections::HashMap;
use std::io;
use std::os::fd::RawFd;
use std::sync::{Arc, OnceLock};

use parking_lot::{Condvar, Mutex};

#[derive(Default)]
struct State {
    running: bool,
    /// Epoch the next flush to start gets.
    next: u64,
    /// Epoch of the last flush that finished, and its outcome.
    done: u64,
    last: Option<i32>,
}

#[derive(Default)]
struct Group {
    state: Mutex<State>,
    cv: Condvar,
}

/// One group per filesystem (device number): a flush of one never serves
/// a commit on another.
fn group_of(dev: u64) -> Arc<Group> {
    static GROUPS: OnceLock<Mutex<HashMap<u64, Arc<Group>>>> = OnceLock::new();
    GROUPS
        .get_or_init(Default::default)
        .lock()
        .entry(dev)
        .or_default()
        .clone()
}

/// `syncfs(fd)` for the filesystem `dev`, shared with concurrent callers.
pub fn syncfs_shared(dev: u64, fd: RawFd) -> io::Result<()> {
    shared(&group_of(dev), &|| {
        // `fd` stays open for the call: the caller keeps it.
        nix::unistd::syncfs(fd).err().map(|e| e as i32)
    })
    .1
}

/// Runs `flush` (its errno on failure) for this caller or waits for one
/// that started after it asked; returns the epoch that served it.
fn shared(group: &Group, flush: &dyn Fn() -> Option<i32>) -> (u64, io::Result<()>) {
    let outcome = |errno: Option<i32>| match errno {
        None => Ok(()),
        Some(e) => Err(io::Error::from_raw_os_error(e)),
    };
    let mut st = group.state.lock();
    st.next = st.next.max(1);
    let target = st.next;
    loop {
        if st.done >= target {
            return (st.done, outcome(st.last));
        }
        if !st.running {
            st.running = true;
            let epoch = st.next;
            st.next += 1;
            drop(st);
            let errno = flush();
            let mut st = group.state.lock();
            st.running = false;
            st.done = epoch;
            st.last = errno;
            group.cv.notify_all();
            return (epoch, outcome(errno));
        }
        group.cv.wait(&mut st);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn each_caller_is_served_by_a_flush_that_started_after_its_writes() {
        let group = Group::default();
        let writes = AtomicU64::new(0);
        // What each flush saw when it started, by epoch.
        let seen = Mutex::new(vec![0u64]);
        let flushes = AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..50 {
                        let mine = writes.fetch_add(1, Ordering::SeqCst) + 1;
                        let (epoch, r) = shared(&group, &|| {
                            seen.lock().push(writes.load(Ordering::SeqCst));
                            flushes.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_micros(300));
                            None
                        });
                        r.expect("flush");
                        let at_start = seen.lock()[epoch as usize];
                        assert!(
                            at_start >= mine,
                            "write {mine} served by a flush that began at {at_start}"
                        );
                    }
                });
            }
        });
        let n = flushes.load(Ordering::SeqCst);
        assert!(n < 400, "no flush was shared: {n} for 400 commits");
    }

    #[test]
    fn a_failed_flush_fails_every_caller_it_serves() {
        let group = Group::default();
        let (_, r) = shared(&group, &|| Some(libc::EIO));
        assert_eq!(r.expect_err("EIO").raw_os_error(), Some(libc::EIO));
        let (_, r) = shared(&group, &|| None);
        assert!(r.is_ok());
    }
}

//! Reads that may wait on the network run here, off the FUSE threads: an elastic pool of
//! worker threads (one read never waits for another file's fetch while threads are below the
//! limit) and a deadline thread that answers `EIO` for any read still unanswered when its
//! deadline passes. The worker that eventually finishes such a read finds its reply already
//! taken and drops the result; a later read of the same bytes asks the source again.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use fuser::{Errno, ReplyData};

use crate::stats::Counters;

/// A reply that either the worker or the deadline thread sends, whichever comes first.
pub(crate) type ReplySlot = Mutex<Option<ReplyData>>;

type Job = Box<dyn FnOnce() + Send>;

/// How long an idle worker above the first one waits for work before it exits.
const IDLE_EXIT: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
struct PoolState {
    queue: VecDeque<JobBox>,
    idle: usize,
    threads: usize,
    closed: bool,
}

struct JobBox(Job);

impl std::fmt::Debug for JobBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Job")
    }
}

#[derive(Debug)]
struct PoolShared {
    state: Mutex<PoolState>,
    work: Condvar,
    max_threads: usize,
}

/// An elastic pool of worker threads: a thread is started when a job arrives and none is idle,
/// up to `max_threads`; idle threads beyond the first exit after a while.
#[derive(Debug)]
pub(crate) struct ReadPool {
    shared: Arc<PoolShared>,
}

impl ReadPool {
    pub fn new(max_threads: usize) -> ReadPool {
        ReadPool {
            shared: Arc::new(PoolShared {
                state: Mutex::new(PoolState::default()),
                work: Condvar::new(),
                max_threads: max_threads.max(1),
            }),
        }
    }

    /// Runs `job` on a worker. If no thread can be started, the job is dropped (its reply then
    /// answers `EIO` by itself).
    pub fn submit(&self, job: impl FnOnce() + Send + 'static) {
        let Ok(mut st) = self.shared.state.lock() else {
            return;
        };
        st.queue.push_back(JobBox(Box::new(job)));
        if st.idle > 0 || st.threads >= self.shared.max_threads {
            drop(st);
            self.shared.work.notify_one();
            return;
        }
        st.threads += 1;
        drop(st);
        let shared = Arc::clone(&self.shared);
        let spawned = std::thread::Builder::new()
            .name("estargz-read".into())
            .spawn(move || worker(&shared));
        if spawned.is_err() {
            if let Ok(mut st) = self.shared.state.lock() {
                st.threads -= 1;
                if st.threads == 0 {
                    st.queue.clear();
                }
            }
        }
    }
}

impl Drop for ReadPool {
    fn drop(&mut self) {
        if let Ok(mut st) = self.shared.state.lock() {
            st.closed = true;
        }
        self.shared.work.notify_all();
    }
}

fn worker(shared: &PoolShared) {
    loop {
        let job = {
            let Ok(mut st) = shared.state.lock() else {
                return;
            };
            loop {
                if let Some(job) = st.queue.pop_front() {
                    break job;
                }
                if st.closed {
                    st.threads -= 1;
                    return;
                }
                st.idle += 1;
                let (guard, timeout) = match shared.work.wait_timeout(st, IDLE_EXIT) {
                    Ok(r) => r,
                    Err(_) => return,
                };
                st = guard;
                st.idle -= 1;
                if timeout.timed_out() && st.queue.is_empty() && st.threads > 1 {
                    st.threads -= 1;
                    return;
                }
            }
        };
        // A panicking source must not take the worker down; the job's reply, dropped during
        // unwinding, answers EIO by itself.
        let _ = catch_unwind(AssertUnwindSafe(job.0));
    }
}

#[derive(Debug)]
struct Deadline {
    at: Instant,
    seq: u64,
    slot: Weak<ReplySlot>,
}

impl PartialEq for Deadline {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Deadline {}
impl PartialOrd for Deadline {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Deadline {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

#[derive(Debug, Default)]
struct DeadlineState {
    heap: BinaryHeap<Reverse<Deadline>>,
    seq: u64,
    closed: bool,
}

#[derive(Debug)]
struct DeadlineShared {
    state: Mutex<DeadlineState>,
    changed: Condvar,
    counters: Arc<Counters>,
}

/// Answers `EIO` for reads still pending at their deadline.
#[derive(Debug)]
pub(crate) struct Deadlines {
    shared: Arc<DeadlineShared>,
}

impl Deadlines {
    pub fn new(counters: Arc<Counters>) -> std::io::Result<Deadlines> {
        let shared = Arc::new(DeadlineShared {
            state: Mutex::new(DeadlineState::default()),
            changed: Condvar::new(),
            counters,
        });
        let s = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("estargz-deadline".into())
            .spawn(move || deadline_thread(&s))?;
        Ok(Deadlines { shared })
    }

    /// Answers `EIO` on `slot` at `at` unless someone has answered by then.
    pub fn add(&self, at: Instant, slot: &Arc<ReplySlot>) {
        let Ok(mut st) = self.shared.state.lock() else {
            return;
        };
        st.seq += 1;
        let seq = st.seq;
        let earliest = st.heap.peek().is_none_or(|Reverse(d)| at < d.at);
        st.heap.push(Reverse(Deadline {
            at,
            seq,
            slot: Arc::downgrade(slot),
        }));
        drop(st);
        if earliest {
            self.shared.changed.notify_one();
        }
    }
}

impl Drop for Deadlines {
    fn drop(&mut self) {
        if let Ok(mut st) = self.shared.state.lock() {
            st.closed = true;
        }
        self.shared.changed.notify_all();
    }
}

fn deadline_thread(shared: &DeadlineShared) {
    let Ok(mut st) = shared.state.lock() else {
        return;
    };
    loop {
        if st.closed {
            return;
        }
        let now = Instant::now();
        match st.heap.peek() {
            Some(Reverse(d)) if d.at <= now => {
                let Some(Reverse(d)) = st.heap.pop() else {
                    continue;
                };
                if let Some(slot) = d.slot.upgrade() {
                    let reply = slot.lock().ok().and_then(|mut r| r.take());
                    if let Some(reply) = reply {
                        reply.error(Errno::EIO);
                        Counters::add(&shared.counters.read_timeouts, 1);
                        shared
                            .counters
                            .error("a read did not complete before its deadline".into());
                    }
                }
            }
            Some(Reverse(d)) => {
                let wait = d.at - now;
                st = match shared.changed.wait_timeout(st, wait) {
                    Ok((g, _)) => g,
                    Err(_) => return,
                };
            }
            None => {
                st = match shared.changed.wait(st) {
                    Ok(g) => g,
                    Err(_) => return,
                };
            }
        }
    }
}

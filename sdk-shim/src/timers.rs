//! Deadlines for streams, from one thread for the whole process.
//!
//! Envoy 1.40 gives an HTTP filter of a dynamic module no timer (timers exist only
//! for bootstrap extensions and clusters), but it gives each stream a scheduler whose
//! commit is safe from any thread. So a stream that wants to be called back hands
//! this thread a deadline and a weak reference to something [`Due`]; at the deadline
//! the thread calls it, and it commits an event to the stream's scheduler, which
//! Envoy runs on the stream's worker. The thread holds no Envoy pointer of its own:
//! whatever it calls keeps its scheduler behind a lock and drops it when the stream
//! is destroyed, so a deadline that outlives its stream finds nothing to commit to.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

/// Something to call at a deadline, from the timer thread.
pub trait Due: Send + Sync {
    fn due(&self);
}

struct Entry {
    at: Instant,
    /// Order of arming, so that equal deadlines keep it.
    seq: u64,
    target: Weak<dyn Due>,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    /// Reversed: `BinaryHeap` is a max-heap, the earliest deadline must be on top.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

#[derive(Default)]
struct Heap {
    entries: BinaryHeap<Entry>,
    seq: u64,
}

#[derive(Default)]
struct Timers {
    heap: Mutex<Heap>,
    changed: Condvar,
}

fn lock(m: &Mutex<Heap>) -> MutexGuard<'_, Heap> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The process's timer thread, started at the first use; `None` if it could not be.
fn timers() -> Option<&'static Timers> {
    static TIMERS: OnceLock<Option<&'static Timers>> = OnceLock::new();
    *TIMERS.get_or_init(|| {
        let timers: &'static Timers = Box::leak(Box::default());
        std::thread::Builder::new()
            .name("aigw-timers".into())
            .spawn(move || run(timers))
            .ok()
            .map(|_| timers)
    })
}

/// Calls `target` once, no sooner than `delay` from now, unless it is gone by then.
/// Returns false if no timer thread could be started.
pub fn after(delay: Duration, target: Weak<dyn Due>) -> bool {
    let Some(timers) = timers() else {
        return false;
    };
    let at = Instant::now() + delay;
    let mut heap = lock(&timers.heap);
    let earliest = heap.entries.peek().is_none_or(|e| at < e.at);
    heap.seq += 1;
    let seq = heap.seq;
    heap.entries.push(Entry { at, seq, target });
    drop(heap);
    // Only a new earliest deadline shortens the thread's wait.
    if earliest {
        timers.changed.notify_one();
    }
    true
}

fn run(timers: &Timers) {
    let mut ready: Vec<Weak<dyn Due>> = Vec::new();
    loop {
        let mut heap = lock(&timers.heap);
        loop {
            let now = Instant::now();
            let wait = match heap.entries.peek() {
                None => None,
                Some(e) if e.at <= now => break,
                Some(e) => Some(e.at - now),
            };
            heap = match wait {
                None => timers.changed.wait(heap).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    timers
                        .changed
                        .wait_timeout(heap, d)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
        let now = Instant::now();
        while heap.entries.peek().is_some_and(|e| e.at <= now) {
            if let Some(e) = heap.entries.pop() {
                ready.push(e.target);
            }
        }
        // Called without the lock: a target may arm again.
        drop(heap);
        for target in ready.drain(..) {
            if let Some(t) = target.upgrade() {
                t.due();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
    use std::sync::{mpsc, Arc};

    struct Probe(Mutex<mpsc::Sender<(u32, Instant)>>, u32);

    impl Due for Probe {
        fn due(&self) {
            let _ = self.0.lock().unwrap().send((self.1, Instant::now()));
        }
    }

    #[test]
    fn deadlines_fire_in_order_and_not_early() {
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let start = Instant::now();
        let probes: Vec<Arc<Probe>> = [(1, 120), (2, 40), (3, 80)]
            .into_iter()
            .map(|(id, ms)| {
                let p = Arc::new(Probe(Mutex::new(tx.lock().unwrap().clone()), id));
                let weak: Weak<dyn Due> = Arc::downgrade(&p) as Weak<dyn Due>;
                assert!(after(Duration::from_millis(ms), weak));
                p
            })
            .collect();
        let got: Vec<(u32, Instant)> = (0..3)
            .map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap())
            .collect();
        assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), [2, 3, 1]);
        assert!(got[0].1 - start >= Duration::from_millis(40));
        assert!(got[2].1 - start >= Duration::from_millis(120));
        drop(probes);
    }

    struct Count(AtomicUsize);

    impl Due for Count {
        fn due(&self) {
            self.0.fetch_add(1, AtomicOrdering::SeqCst);
        }
    }

    #[test]
    fn a_target_gone_before_its_deadline_is_not_called() {
        let gone = Arc::new(Count(AtomicUsize::new(0)));
        let kept = Arc::new(Count(AtomicUsize::new(0)));
        assert!(after(
            Duration::from_millis(20),
            Arc::downgrade(&gone) as Weak<dyn Due>
        ));
        assert!(after(
            Duration::from_millis(30),
            Arc::downgrade(&kept) as Weak<dyn Due>
        ));
        let weak = Arc::downgrade(&gone);
        drop(gone);
        assert!(weak.upgrade().is_none());
        let deadline = Instant::now() + Duration::from_secs(5);
        while kept.0.load(AtomicOrdering::SeqCst) == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(kept.0.load(AtomicOrdering::SeqCst), 1);
    }
}

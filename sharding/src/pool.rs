//! A bounded pool of OS threads for CPU-bound entity work, so hashing never
//! runs on the async runtime's threads and probes keep flowing while every
//! core is busy.
//!
//! A region hands its [`Lanes`](crate::Lanes) jobs to the pool in batches
//! (one queue item of up to 16 jobs of one kind, `region.rs`), which the
//! thread that takes it runs two at a time, interleaved. A thread that
//! takes an item that wants a partner (a single job, or a batch of an odd
//! number) takes a second item of the same kind with it when at least as
//! many items as there are threads are still waiting behind the first (so
//! every other thread has one to take too); else it runs the first alone.
//! The decision is made when the item is taken, from what is waiting then,
//! not when it is queued.
//!
//! A thread that takes a batch of more than one pair also queues a ticket
//! for it (`Offer`): a thread that takes the ticket runs the batch's
//! pairs not yet started, beside the first. So long jobs queued together
//! in one batch do not all run on one thread while the others idle: a
//! thread out of other work helps with the batch once it reaches the
//! ticket. Jobs of unequal length can still leave a thread idle at the end
//! while another finishes its last pair, as they can leave one idle while
//! another finishes a single long job (and when the queue is full no
//! ticket is queued: every thread has work then).

use std::any::{Any, TypeId};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;

pub(crate) type Work = Box<dyn FnOnce() + Send + 'static>;

/// A job in the pool's queue.
pub(crate) enum Item {
    /// Runs alone.
    Once(Work),
    /// May run together with another lane job of the same kind.
    Lane(Box<dyn PoolLane>),
}

/// A lane job as the pool sees it: its kind, and how to run it with an
/// optional partner of the same kind.
pub(crate) trait PoolLane: Send + 'static {
    /// Jobs of equal kinds may run together.
    fn kind(&self) -> TypeId;
    /// Whether this item would run faster with a partner (a batch of an
    /// even number of lane jobs pairs them up itself).
    fn wants_partner(&self) -> bool;
    /// Runs this job, and `partner` (of the same kind) with it; `offer`
    /// queues a ticket other threads may take to share the work.
    fn run(self: Box<Self>, partner: Option<Box<dyn PoolLane>>, offer: &Offer);
    /// This job as `Any`, so a partner can take it back as its own type.
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send>;
}

/// A running lane item's way to queue a ticket for the rest of its work
/// (see the module's doc), when the queue has room.
pub(crate) struct Offer {
    tx: Weak<SyncSender<Item>>,
    waiting: Arc<AtomicUsize>,
}

impl Offer {
    /// Queues `ticket` if there is room and the pool still runs; else
    /// drops it (the item's own thread runs the work).
    pub(crate) fn offer(&self, ticket: Box<dyn PoolLane>) {
        if let Some(tx) = self.tx.upgrade() {
            // A ticket refused is dropped: its work stays with its item.
            let _ = send(&tx, &self.waiting, Item::Lane(ticket));
        }
    }
}

/// Queues `item` on `tx`, counted in `waiting`; gives it back when the
/// queue is full (or the pool stopped).
fn send(tx: &SyncSender<Item>, waiting: &AtomicUsize, item: Item) -> Result<(), Item> {
    // Counted before it can be taken, so a taker never counts below 0.
    waiting.fetch_add(1, Ordering::AcqRel);
    match tx.try_send(item) {
        Ok(()) => Ok(()),
        Err(TrySendError::Full(item) | TrySendError::Disconnected(item)) => {
            waiting.fetch_sub(1, Ordering::AcqRel);
            Err(item)
        }
    }
}

/// A fixed set of worker threads fed by a bounded queue.
///
/// Cloning shares the same threads. The threads stop when the last clone is
/// dropped and the queue is empty.
#[derive(Clone)]
pub struct WorkerPool {
    /// Shared with the threads' [`Offer`]s as a `Weak`, so the threads
    /// still stop when the last clone of the pool is dropped.
    tx: Arc<SyncSender<Item>>,
    /// Jobs in the queue, not yet taken by a thread.
    waiting: Arc<AtomicUsize>,
    threads: usize,
    queue: usize,
    _workers: Arc<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for WorkerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerPool")
            .field("threads", &self.threads)
            .field("queue", &self.queue)
            .finish()
    }
}

impl WorkerPool {
    /// Starts `threads` workers (0 means one per available core) with a
    /// queue of `queue` items beyond the running ones (0 means 64 per
    /// thread: a region refills the queue in bursts, see `region.rs`). An
    /// item is one job, or a region's batch of lane jobs; a region keeps
    /// at most `queue + threads` of its jobs queued or running.
    ///
    /// # Panics
    /// When the operating system refuses to start a thread.
    pub fn new(threads: usize, queue: usize) -> WorkerPool {
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            threads
        };
        let queue = if queue == 0 { threads * 64 } else { queue };
        let (tx, rx) = sync_channel::<Item>(queue);
        let rx = Arc::new(Mutex::new(rx));
        let tx = Arc::new(tx);
        let waiting = Arc::new(AtomicUsize::new(0));
        let workers = (0..threads)
            .map(|i| {
                let rx = Arc::clone(&rx);
                let offer = Offer {
                    tx: Arc::downgrade(&tx),
                    waiting: Arc::clone(&waiting),
                };
                std::thread::Builder::new()
                    .name(format!("casty-worker-{i}"))
                    .spawn(move || worker(&rx, &offer, threads))
                    .expect("the OS starts a worker thread")
            })
            .collect();
        WorkerPool {
            tx,
            waiting,
            threads,
            queue,
            _workers: Arc::new(workers),
        }
    }

    /// Worker threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Items (jobs, or batches of lane jobs) that can wait beyond the
    /// running ones.
    pub fn queue_capacity(&self) -> usize {
        self.queue
    }

    /// Queues `job` if there is room; gives it back when the queue is full.
    /// A job that panics is logged (error) and the thread goes on.
    ///
    /// # Errors
    /// The job itself, when the queue is full (or the pool stopped).
    pub fn try_spawn<F: FnOnce() + Send + 'static>(&self, job: F) -> Result<(), Work> {
        self.try_spawn_item(Item::Once(Box::new(job)))
            .map_err(|item| match item {
                Item::Once(job) => job,
                Item::Lane(job) => Box::new(move || {
                    job.run(
                        None,
                        &Offer {
                            tx: Weak::new(),
                            waiting: Arc::new(AtomicUsize::new(0)),
                        },
                    )
                }),
            })
    }

    /// Queues `item` if there is room; gives it back when the queue is full.
    pub(crate) fn try_spawn_item(&self, item: Item) -> Result<(), Item> {
        send(&self.tx, &self.waiting, item)
    }
}

// Never inlined: profiles (scripts/instructions.sh) count the pool's
// threads by this function's inclusive total.
#[inline(never)]
fn worker(rx: &Mutex<Receiver<Item>>, offer: &Offer, threads: usize) {
    let waiting = &*offer.waiting;
    loop {
        let item = {
            let guard = rx.lock().unwrap_or_else(|p| p.into_inner());
            guard.recv()
        };
        let Ok(item) = item else {
            return;
        };
        waiting.fetch_sub(1, Ordering::AcqRel);
        let mut next = Some(item);
        while let Some(item) = next.take() {
            next = run_item(item, rx, offer, threads);
        }
    }
}

/// Runs `item` (a lane job with a partner taken from the queue when at
/// least `threads` jobs wait); gives back a job it took from the queue that
/// could not be the partner, to run next.
fn run_item(item: Item, rx: &Mutex<Receiver<Item>>, offer: &Offer, threads: usize) -> Option<Item> {
    let waiting = &*offer.waiting;
    let lane = match item {
        Item::Once(job) => {
            if catch_unwind(AssertUnwindSafe(job)).is_err() {
                tracing::error!("a worker pool job panicked; the thread goes on");
            }
            return None;
        }
        Item::Lane(lane) => lane,
    };
    let mut held = None;
    let mut partner = None;
    if lane.wants_partner() && waiting.load(Ordering::Acquire) >= threads {
        // A thread waiting for a job holds the lock in `recv`: then the
        // queue is (about to be) empty, and this job goes alone.
        if let Ok(guard) = rx.try_lock() {
            if let Ok(next) = guard.try_recv() {
                waiting.fetch_sub(1, Ordering::AcqRel);
                match next {
                    Item::Lane(next) if next.kind() == lane.kind() => partner = Some(next),
                    other => held = Some(other),
                }
            }
        }
    }
    if catch_unwind(AssertUnwindSafe(move || lane.run(partner, offer))).is_err() {
        tracing::error!("a worker pool lane job panicked; the thread goes on");
    }
    held
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_panicking_job_leaves_every_thread_running() {
        let pool = WorkerPool::new(2, 0);
        for _ in 0..4 {
            pool.try_spawn(|| panic!("a job that panics"))
                .map_err(|_| ())
                .unwrap();
        }
        // Two jobs that finish only if they run at the same time: both
        // threads are still there.
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        for _ in 0..2 {
            let (b, d) = (Arc::clone(&barrier), done_tx.clone());
            pool.try_spawn(move || {
                b.wait();
                d.send(()).unwrap();
            })
            .map_err(|_| ())
            .unwrap();
        }
        for _ in 0..2 {
            done_rx
                .recv_timeout(std::time::Duration::from_secs(30))
                .unwrap();
        }
    }

    #[test]
    fn runs_jobs_and_refuses_past_the_queue() {
        let pool = WorkerPool::new(1, 1);
        let (gate_tx, gate_rx) = std::sync::mpsc::channel::<()>();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<u32>();
        // Occupy the only worker until the gate opens.
        let d = done_tx.clone();
        pool.try_spawn(move || {
            gate_rx.recv().unwrap();
            d.send(1).unwrap();
        })
        .map_err(|_| ())
        .unwrap();
        // Wait until the worker took the first job, so the queue is empty
        // (by a deadline, not a count of tries: a loaded machine may not
        // run the worker for a while).
        let mut queued = false;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            let d = done_tx.clone();
            if pool.try_spawn(move || d.send(2).unwrap()).is_ok() {
                queued = true;
                break;
            }
            std::thread::yield_now();
        }
        assert!(queued);
        let d = done_tx.clone();
        // The queue (capacity 1) is full now unless the worker already took job 2,
        // which it cannot: it is blocked on the gate.
        assert!(pool.try_spawn(move || d.send(3).unwrap()).is_err());
        gate_tx.send(()).unwrap();
        let mut got = vec![done_rx.recv().unwrap(), done_rx.recv().unwrap()];
        got.sort();
        assert_eq!(got, vec![1, 2]);
    }
}

//! A bounded pool of OS threads for CPU-bound entity work, so hashing never
//! runs on the async runtime's threads and probes keep flowing while every
//! core is busy.

use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

pub(crate) type Work = Box<dyn FnOnce() + Send + 'static>;

/// A fixed set of worker threads fed by a bounded queue.
///
/// Cloning shares the same threads. The threads stop when the last clone is
/// dropped and the queue is empty.
#[derive(Clone)]
pub struct WorkerPool {
    tx: SyncSender<Work>,
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
    /// queue of `queue` jobs beyond the running ones (0 means 64 per
    /// thread: a region refills the queue in bursts, see `region.rs`).
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
        let (tx, rx) = sync_channel::<Work>(queue);
        let rx = Arc::new(Mutex::new(rx));
        let workers = (0..threads)
            .map(|i| {
                let rx = Arc::clone(&rx);
                std::thread::Builder::new()
                    .name(format!("casty-worker-{i}"))
                    .spawn(move || worker(&rx))
                    .expect("the OS starts a worker thread")
            })
            .collect();
        WorkerPool {
            tx,
            threads,
            queue,
            _workers: Arc::new(workers),
        }
    }

    /// Worker threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Jobs that can wait beyond the running ones.
    pub fn queue_capacity(&self) -> usize {
        self.queue
    }

    /// Queues `job` if there is room; gives it back when the queue is full.
    ///
    /// # Errors
    /// The job itself, when the queue is full (or the pool stopped).
    pub fn try_spawn<F: FnOnce() + Send + 'static>(&self, job: F) -> Result<(), Work> {
        self.try_spawn_boxed(Box::new(job))
    }

    /// [`WorkerPool::try_spawn`] for a job already boxed (no second box).
    pub(crate) fn try_spawn_boxed(&self, job: Work) -> Result<(), Work> {
        match self.tx.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(w) | TrySendError::Disconnected(w)) => Err(w),
        }
    }
}

fn worker(rx: &Mutex<Receiver<Work>>) {
    loop {
        let job = {
            let guard = rx.lock().unwrap_or_else(|p| p.into_inner());
            guard.recv()
        };
        match job {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

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

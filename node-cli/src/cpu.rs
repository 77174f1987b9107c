//! This process's CPU time by kind of thread, for the run's closing log
//! line: the hashing pool, the async runtime, and the rest (the main
//! thread, blocking helpers). The runtime's and the rest's share per task
//! is what the node adds to the hash (`scripts/bench-cluster.sh` sums it
//! over the nodes).

/// CPU time in ms spent on a CPU by this process's threads that are still
/// running, by kind. Read from `/proc/self/task/<tid>/schedstat` (its first
/// field: ns on a CPU) and each thread's `comm`; `None` where `/proc` is
/// not there (not Linux).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ThreadCpu {
    /// The hashing pool's threads (`casty-worker-<i>`), ms.
    pub pool_ms: f64,
    /// The async runtime's worker threads (`tokio-rt-worker`), ms.
    pub runtime_ms: f64,
    /// Every other thread (the main thread, blocking helpers), ms.
    pub other_ms: f64,
}

impl ThreadCpu {
    /// Reads the figures now; `None` where `/proc/self/task` is not there.
    pub fn now() -> Option<ThreadCpu> {
        let mut cpu = ThreadCpu {
            pool_ms: 0.0,
            runtime_ms: 0.0,
            other_ms: 0.0,
        };
        for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
            let path = task.path();
            let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
            let ms = std::fs::read_to_string(path.join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
                .map_or(0.0, |ns| ns / 1e6);
            if comm.starts_with("casty-worker") {
                cpu.pool_ms += ms;
            } else if comm.starts_with("tokio-rt") {
                cpu.runtime_ms += ms;
            } else {
                cpu.other_ms += ms;
            }
        }
        Some(cpu)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_busy_named_thread_is_counted_under_its_kind() {
        let Some(before) = ThreadCpu::now() else {
            return; // not Linux
        };
        // Spins until the pool's figure grew by 30 ms (at most 10 s of
        // wall time, however loaded the machine): it never does if the
        // thread is filed under another kind.
        let spin = std::thread::Builder::new()
            .name("casty-worker-t".into())
            .spawn(move || {
                let t0 = std::time::Instant::now();
                let mut x = 0u64;
                loop {
                    for _ in 0..100_000 {
                        x = std::hint::black_box(x.wrapping_add(1));
                    }
                    let now = ThreadCpu::now().unwrap();
                    if now.pool_ms >= before.pool_ms + 30.0 {
                        return Ok(now);
                    }
                    if t0.elapsed() > std::time::Duration::from_secs(10) {
                        return Err(now);
                    }
                }
            })
            .unwrap();
        let during = spin.join().unwrap();
        assert!(
            during.is_ok(),
            "pool time never grew: {before:?} then {during:?}"
        );
    }
}

//! The I/O worker pool: a few std threads that run blocking I/O (pread/pwrite straight into
//! and out of the port's buffers, fdatasync, hole punching) so that a port's event loop never
//! waits on storage.
//!
//! Each worker has its own queue (a `VecDeque` behind a mutex and a condition variable);
//! [`Pool::submit`] picks a queue round-robin, so no lock is shared by every command in
//! flight, and a queue's storage is reused, so submitting does not allocate once the queue
//! has grown to its working depth. Why threads rather than io_uring: `docs/sbd.md`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;

/// Work a pool runs.
pub(crate) trait Job: Send + 'static {
    /// Runs the job on a worker thread.
    fn run(self);
}

struct Queue<J> {
    jobs: Mutex<VecDeque<J>>,
    ready: Condvar,
}

struct Shared<J> {
    queues: Box<[Queue<J>]>,
    next: AtomicUsize,
    stop: AtomicBool,
}

/// A fixed set of worker threads.
pub(crate) struct Pool<J: Job> {
    shared: Arc<Shared<J>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

thread_local! {
    static IN_WORKER: core::cell::Cell<bool> = const { core::cell::Cell::new(false) };
}

/// Whether the calling thread is one of the pool's workers (where blocking is allowed).
pub(crate) fn in_worker() -> bool {
    IN_WORKER.with(|w| w.get())
}

impl<J: Job> Pool<J> {
    /// Starts `n` workers (at least one) named `<name>-<i>`.
    pub(crate) fn new(name: &str, n: usize) -> std::io::Result<Pool<J>> {
        let n = n.max(1);
        let queues = (0..n)
            .map(|_| Queue {
                jobs: Mutex::new(VecDeque::with_capacity(64)),
                ready: Condvar::new(),
            })
            .collect();
        let shared = Arc::new(Shared {
            queues,
            next: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let mut threads = Vec::with_capacity(n);
        for i in 0..n {
            let s = Arc::clone(&shared);
            let t = std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || worker(&s, i));
            match t {
                Ok(t) => threads.push(t),
                Err(e) => {
                    let pool = Pool {
                        shared,
                        threads: Mutex::new(threads),
                    };
                    pool.shutdown();
                    return Err(e);
                }
            }
        }
        Ok(Pool {
            shared,
            threads: Mutex::new(threads),
        })
    }

    /// Number of workers.
    pub(crate) fn size(&self) -> usize {
        self.shared.queues.len()
    }

    /// Queues `job`; never blocks beyond the queue's own short critical section. After
    /// [`Pool::shutdown`] the job runs on the caller's thread instead.
    pub(crate) fn submit(&self, job: J) {
        if self.shared.stop.load(Ordering::Acquire) {
            return job.run();
        }
        let n = self.shared.queues.len();
        let i = self.shared.next.fetch_add(1, Ordering::Relaxed) % n;
        let q = &self.shared.queues[i];
        q.jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(job);
        q.ready.notify_one();
    }

    /// Stops the workers after they drain their queues, and joins them. Must not be called
    /// from a worker. Idempotent.
    pub(crate) fn shutdown(&self) {
        self.shared.stop.store(true, Ordering::Release);
        for q in self.shared.queues.iter() {
            // Take the lock so a worker between its check and its wait sees the flag.
            drop(q.jobs.lock().unwrap_or_else(PoisonError::into_inner));
            q.ready.notify_all();
        }
        let threads =
            std::mem::take(&mut *self.threads.lock().unwrap_or_else(PoisonError::into_inner));
        for t in threads {
            let _ = t.join();
        }
    }
}

fn worker<J: Job>(s: &Shared<J>, i: usize) {
    IN_WORKER.with(|w| w.set(true));
    let q = &s.queues[i];
    loop {
        let job = {
            let mut jobs = q.jobs.lock().unwrap_or_else(PoisonError::into_inner);
            loop {
                if let Some(j) = jobs.pop_front() {
                    break Some(j);
                }
                if s.stop.load(Ordering::Acquire) {
                    break None;
                }
                jobs = q.ready.wait(jobs).unwrap_or_else(PoisonError::into_inner);
            }
        };
        match job {
            // A job's panic must not kill the worker: the SDK's guard is not around us here.
            Some(j) => {
                if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| j.run())) {
                    tracing::error!(
                        "sbd worker job panicked: {}",
                        plugins_sdk::panic_message(&*p)
                    );
                }
            }
            None => return,
        }
    }
}

impl<J: Job> Drop for Pool<J> {
    fn drop(&mut self) {
        if !in_worker() {
            self.shutdown();
        } else {
            // Dropped from one of our own workers (the last LU went away inside a job): stop
            // the others without joining ourselves.
            self.shared.stop.store(true, Ordering::Release);
            for q in self.shared.queues.iter() {
                q.ready.notify_all();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    struct Send1(mpsc::Sender<(usize, bool)>, usize);
    impl Job for Send1 {
        fn run(self) {
            let _ = self.0.send((self.1, in_worker()));
        }
    }

    #[test]
    fn runs_every_job_on_workers_and_drains_on_shutdown() {
        let pool = Pool::new("t", 3).expect("pool");
        assert_eq!(pool.size(), 3);
        let (tx, rx) = mpsc::channel();
        for i in 0..1000 {
            pool.submit(Send1(tx.clone(), i));
        }
        pool.shutdown();
        let mut got: Vec<_> = rx.try_iter().collect();
        assert_eq!(got.len(), 1000);
        assert!(got.iter().all(|&(_, w)| w));
        got.sort_unstable();
        assert!(got.iter().enumerate().all(|(i, &(j, _))| i == j));
        // After shutdown, jobs run inline.
        pool.submit(Send1(tx, 7));
        assert_eq!(rx.try_recv(), Ok((7, false)));
    }
}

//! Table publishes off the thread that takes changes (`Controller::defer_publishes`): a change
//! updates the model and the `BACKENDS` words at once; the Maglev build of a service's new
//! table and the grace period before its other bank may be written again run on a thread of
//! their own ([`Builder`]), and the finished table is published by the controller's thread
//! (`Controller::finish`), a store per entry that moved and one for the flip.
//!
//! Coalescing: a service has at most one build in flight; changes that arrive meanwhile only
//! change the model, and the next build (asked for once the first is published) starts from
//! the latest model. So a service publishes at most once per grace period however many
//! changes arrive, and every change is visible after at most two builds and grace periods.

use std::{
    net::IpAddr,
    sync::atomic::{AtomicU64, Ordering},
    thread::JoinHandle,
    time::Instant,
};

use anyhow::{Context as _, Result};
use tokio::sync::mpsc;

use super::reconcile;
use crate::{
    config::ServiceId,
    dataplane::{GraceToken, grace},
};

/// Built tables waiting for the controller's thread; the builder waits when it is full (it has
/// at most one build per service in flight, so this is rarely reached).
const BUILT_QUEUE: usize = 64;

/// Orders publishes: every table built or published takes the next number, so a table built
/// from an older state is never published over a newer one.
static SEQUENCE: AtomicU64 = AtomicU64::new(1);

/// The next publish sequence number.
pub fn next_sequence() -> u64 {
    SEQUENCE.fetch_add(1, Ordering::Relaxed)
}

/// A service's table to build (or only a grace period to wait for).
#[derive(Clone, Debug)]
pub struct Job {
    pub service: ServiceId,
    /// `ServiceState::incarnation` when asked.
    pub incarnation: u64,
    /// Entries of the table.
    pub size: u32,
    /// (address, weight, id) to build the table from; `None`: no table, only the grace
    /// period (to free the ids of removed backends).
    pub inputs: Option<Vec<(IpAddr, u32, u32)>>,
    /// Wait for a grace period that begins after this point of the dataplane's writes.
    pub grace: Option<GraceToken>,
    /// From [`next_sequence`], when asked.
    pub sequence: u64,
}

/// A finished [`Job`]: its table (if it asked for one), its grace period waited for.
#[derive(Debug)]
pub struct Built {
    pub job: Job,
    pub table: Option<Vec<u32>>,
    /// When the build began (for the time a publish takes).
    pub started: Instant,
}

/// Does a job: builds its table, then waits for its grace period (which so begins after the
/// token was taken).
#[must_use]
pub fn run(job: Job) -> Built {
    let started = Instant::now();
    let table = job
        .inputs
        .as_ref()
        .map(|inputs| reconcile::build(inputs, job.size));
    if job.grace.is_some() {
        grace::wait();
    }
    Built {
        job,
        table,
        started,
    }
}

/// The thread that runs [`Job`]s, one at a time, in order.
pub struct Builder {
    jobs: Option<std::sync::mpsc::Sender<Job>>,
    built: mpsc::Receiver<Built>,
    thread: Option<JoinHandle<()>>,
}

impl Builder {
    pub fn spawn() -> Result<Self> {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let (done, built) = mpsc::channel(BUILT_QUEUE);
        let thread = std::thread::Builder::new()
            .name("drlb-tables".to_owned())
            .spawn(move || {
                while let Ok(job) = queue.recv() {
                    if done.blocking_send(run(job)).is_err() {
                        return;
                    }
                }
            })
            .context("starting the table builder thread failed")?;
        Ok(Self {
            jobs: Some(jobs),
            built,
            thread: Some(thread),
        })
    }

    /// Queues a job.
    pub fn submit(&self, job: Job) -> Result<()> {
        self.jobs
            .as_ref()
            .context("the table builder stopped")?
            .send(job)
            .ok()
            .context("the table builder thread is gone")
    }

    /// The next finished job (async; `None` once the thread is gone).
    pub async fn next(&mut self) -> Option<Built> {
        self.built.recv().await
    }

    /// The next finished job if there is one, without waiting.
    pub fn try_next(&mut self) -> Option<Built> {
        self.built.try_recv().ok()
    }

    /// The next finished job, waiting for it (outside an async runtime).
    pub fn wait_next(&mut self) -> Option<Built> {
        self.built.blocking_recv()
    }
}

impl Drop for Builder {
    fn drop(&mut self) {
        // Closing the queue ends the thread after its current job.
        self.jobs = None;
        self.built.close();
        while self.built.try_recv().is_ok() {}
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

//! Background compilation: Cranelift turns translated blocks into machine code on a thread of
//! its own while the dispatcher goes on interpreting, so the thousands of warm blocks of a
//! Linux boot cost the vCPU thread only their translation to IR and the final copy into code
//! memory.
//!
//! Compiled blocks reach the helpers, their links and the indirect-branch cache through
//! absolute addresses held as constants and chain through loaded pointers, so their machine
//! code carries no relocations and is position independent: the bytes the worker returns are
//! placed as they are (`Module::define_function_bytes`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Instant;

use cranelift_codegen::control::ControlPlane;
use cranelift_codegen::ir::Function;
use cranelift_codegen::isa::OwnedTargetIsa;

/// A translated block to compile, numbered by the dispatcher.
pub(crate) struct Job {
    pub seq: u64,
    pub func: Function,
}

/// A finished job: the machine code and its alignment, or why there is none.
pub(crate) struct Done {
    pub seq: u64,
    pub code: Result<(Vec<u8>, u64), String>,
    /// Nanoseconds the worker spent compiling.
    pub ns: u64,
}

/// The compile thread and its two queues.
pub(crate) struct CompileWorker {
    jobs: Option<mpsc::Sender<Job>>,
    done: mpsc::Receiver<Done>,
    /// Jobs the worker has finished (so the dispatcher can look without locking).
    finished: Arc<AtomicU64>,
    /// Results taken by the dispatcher.
    taken: u64,
    /// Jobs submitted and not yet taken back.
    pub in_flight: usize,
    thread: Option<JoinHandle<()>>,
}

impl CompileWorker {
    /// Start the thread, compiling for `isa`.
    pub fn spawn(isa: OwnedTargetIsa) -> std::io::Result<Self> {
        let (jobs, job_rx) = mpsc::channel::<Job>();
        let (done_tx, done) = mpsc::channel::<Done>();
        let finished = Arc::new(AtomicU64::new(0));
        let count = Arc::clone(&finished);
        let thread = std::thread::Builder::new()
            .name("pcvm-jit-compile".into())
            .spawn(move || {
                let mut ctx = cranelift_codegen::Context::new();
                for job in job_rx {
                    let t0 = Instant::now();
                    ctx.clear();
                    ctx.func = job.func;
                    let code = match ctx.compile(&*isa, &mut ControlPlane::default()) {
                        Ok(c) if c.buffer.relocs().is_empty() => {
                            Ok((c.code_buffer().to_vec(), u64::from(c.buffer.alignment)))
                        }
                        Ok(_) => Err("the machine code needs relocations".to_string()),
                        Err(e) => Err(format!("{:?}", e.inner)),
                    };
                    let ns = t0.elapsed().as_nanos() as u64;
                    if done_tx
                        .send(Done {
                            seq: job.seq,
                            code,
                            ns,
                        })
                        .is_err()
                    {
                        break;
                    }
                    count.fetch_add(1, Ordering::Release);
                }
            })?;
        Ok(CompileWorker {
            jobs: Some(jobs),
            done,
            finished,
            taken: 0,
            in_flight: 0,
            thread: Some(thread),
        })
    }

    /// Queue `func` as job `seq`; false if the thread is gone.
    pub fn submit(&mut self, seq: u64, func: Function) -> bool {
        let sent = self
            .jobs
            .as_ref()
            .is_some_and(|j| j.send(Job { seq, func }).is_ok());
        if sent {
            self.in_flight += 1;
        }
        sent
    }

    /// A finished job is waiting (one atomic load: checked at every dispatch).
    #[inline]
    pub fn has_done(&self) -> bool {
        self.finished.load(Ordering::Acquire) != self.taken
    }

    /// The next finished job, if any.
    pub fn take(&mut self) -> Option<Done> {
        let d = self.done.try_recv().ok()?;
        self.taken += 1;
        self.in_flight = self.in_flight.saturating_sub(1);
        Some(d)
    }
}

impl Drop for CompileWorker {
    fn drop(&mut self) {
        // Closing the job queue ends the thread's loop after the job at hand.
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::warn!("JIT: the compile thread panicked");
            }
        }
    }
}

//! Getting a vCPU thread out of `KVM_RUN`: the kick signal and the deadline timer.
//!
//! KVM returns from `KVM_RUN` with `EINTR` when a signal is delivered to the thread, and does
//! not even enter the guest while `kvm_run.immediate_exit` is set (KVM API §5 "kvm_run").
//! The signal handler sets `immediate_exit` through a thread-local pointer, so a signal that
//! lands between the last check and the ioctl is not lost (the pattern firecracker uses).
//! Two things send the signal:
//! - [`KickTarget::kick`], from any thread (the gdb stub, the monitor, Ctrl-C), through the
//!   [`pcvm_core::Kicker`] waker;
//! - a per-thread one-shot POSIX timer ([`DeadlineTimer`]), armed while `run` executes for the
//!   platform's next timer deadline (PIT, RTC, LAPIC …) or the end of the time slice, so the
//!   backend comes back out exactly when there is timer work, without busy polling.

use std::cell::Cell;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::{Error, Result};

thread_local! {
    /// `&kvm_run.immediate_exit` of the vCPU this thread is running, or null.
    static IMMEDIATE_EXIT: Cell<*mut u8> = const { Cell::new(std::ptr::null_mut()) };
}

/// The real-time signal used to kick vCPU threads out of `KVM_RUN`.
pub fn kick_signal() -> libc::c_int {
    libc::SIGRTMIN() + 3
}

extern "C" fn on_kick_signal(_signal: libc::c_int) {
    // Only an async-signal-safe thread-local read (const-initialized, no destructor) and one
    // volatile store happen here.
    let p = IMMEDIATE_EXIT.with(Cell::get);
    if !p.is_null() {
        // SAFETY: a non-null pointer is only published by `RunGuard` for the duration of a
        // `run` call on this thread, while the vCPU's kvm_run mapping is alive; the byte is
        // `immediate_exit`, which KVM reads and userspace may write at any time.
        unsafe { p.write_volatile(1) };
    }
}

/// Install the kick signal's handler once per process (no `SA_RESTART`, so `KVM_RUN` fails
/// with `EINTR`).
pub fn install_handler() -> Result<()> {
    static RESULT: OnceLock<i32> = OnceLock::new();
    let result = *RESULT.get_or_init(|| {
        // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value; the handler is
        // an `extern "C" fn(c_int)` that only does async-signal-safe work; `sigaction` reads
        // the struct we own.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_kick_signal as *const () as usize;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(kick_signal(), &action, std::ptr::null_mut()) == 0 {
                0
            } else {
                std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
            }
        }
    });
    if result == 0 {
        Ok(())
    } else {
        Err(Error::Host {
            operation: "install the vCPU kick signal handler",
            source: std::io::Error::from_raw_os_error(result),
        })
    }
}

/// The thread currently running a vCPU, shared with the kicker.
#[derive(Clone, Default)]
pub struct KickTarget(Arc<Mutex<Option<libc::pthread_t>>>);

impl KickTarget {
    /// Signal the vCPU thread, if one is inside `run`.
    pub fn kick(&self) {
        if let Ok(thread) = self.0.lock() {
            if let Some(t) = *thread {
                // SAFETY: `t` is registered by `RunGuard::enter` and removed under this lock
                // before that thread leaves `run`, so it names a live thread.
                unsafe { libc::pthread_kill(t, kick_signal()) };
            }
        }
    }
}

/// While alive, the current thread is the vCPU thread: kicks and timer signals set the
/// vCPU's `immediate_exit`.
pub struct RunGuard<'a> {
    target: &'a KickTarget,
}

impl<'a> RunGuard<'a> {
    /// Publish `immediate_exit` (inside the vCPU's kvm_run mapping) and this thread.
    pub fn enter(target: &'a KickTarget, immediate_exit: *mut u8) -> Self {
        IMMEDIATE_EXIT.with(|c| c.set(immediate_exit));
        if let Ok(mut t) = target.0.lock() {
            // SAFETY: pthread_self has no preconditions.
            *t = Some(unsafe { libc::pthread_self() });
        }
        RunGuard { target }
    }
}

impl Drop for RunGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut t) = self.target.0.lock() {
            *t = None;
        }
        IMMEDIATE_EXIT.with(|c| c.set(std::ptr::null_mut()));
    }
}

/// A one-shot POSIX timer that sends the kick signal to one thread: armed for the next device
/// timer deadline (or the end of the time slice), so `KVM_RUN` returns exactly when the
/// platform has timer work, without periodic polling.
pub struct DeadlineTimer {
    timer: Option<(libc::pid_t, libc::timer_t)>,
    /// When the armed expiry is due (`None`: disarmed, or known to have fired).
    armed: Option<Instant>,
}

// SAFETY: a timer_t is a kernel timer id; using it from another thread (after the backend was
// moved) is allowed, and `for_current_thread` re-targets it to the thread that runs the vCPU.
unsafe impl Send for DeadlineTimer {}

/// The shortest delay the timer is armed with: a deadline already due still gets the vCPU
/// a few microseconds of progress before the signal.
pub const MIN_DELAY: Duration = Duration::from_micros(10);

impl DeadlineTimer {
    /// No timer yet; one is created by the first [`Self::for_current_thread`].
    pub fn new() -> Self {
        DeadlineTimer {
            timer: None,
            armed: None,
        }
    }

    /// Make sure the timer signals the calling thread.
    pub fn for_current_thread(&mut self) -> Result<()> {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::syscall(libc::SYS_gettid) } as libc::pid_t;
        if matches!(self.timer, Some((t, _)) if t == tid) {
            return Ok(());
        }
        self.delete();
        // SAFETY: an all-zero sigevent is valid (integers and a union of integer/pointer);
        // timer_create reads it and writes the id into `id`, which we own.
        let id = unsafe {
            let mut ev: libc::sigevent = std::mem::zeroed();
            ev.sigev_notify = libc::SIGEV_THREAD_ID;
            ev.sigev_signo = kick_signal();
            ev.sigev_notify_thread_id = tid;
            let mut id: libc::timer_t = std::ptr::null_mut();
            if libc::timer_create(libc::CLOCK_MONOTONIC, &mut ev, &mut id) != 0 {
                return Err(Error::Host {
                    operation: "create the vCPU deadline timer",
                    source: std::io::Error::last_os_error(),
                });
            }
            id
        };
        self.timer = Some((tid, id));
        self.armed = None;
        Ok(())
    }

    /// Make the timer fire no later than `at` (and not sooner than [`MIN_DELAY`] from now).
    /// An expiry already armed at or before `at` and still in the future is kept: an early
    /// kick only costs one extra exit, and this saves a system call per exit. Returns whether
    /// the timer was (re)armed.
    pub fn arm_by(&mut self, at: Instant) -> bool {
        let Some((_, id)) = self.timer else {
            return false;
        };
        let now = Instant::now();
        if self.armed.is_some_and(|a| a <= at && a > now) {
            return false;
        }
        let delay = at.saturating_duration_since(now).max(MIN_DELAY);
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: delay.as_secs().min(i64::MAX as u64) as libc::time_t,
                tv_nsec: delay.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: `id` is a live timer created by `for_current_thread`; `spec` is valid.
        unsafe { libc::timer_settime(id, 0, &spec, std::ptr::null_mut()) };
        self.armed = Some(now + delay);
        true
    }

    /// When the armed expiry is due, if any.
    pub fn armed(&self) -> Option<Instant> {
        self.armed
    }

    /// Cancel a pending expiry.
    pub fn disarm(&mut self) {
        if self.armed.take().is_none() {
            return;
        }
        let Some((_, id)) = self.timer else { return };
        // SAFETY: as in `arm_by`; an all-zero itimerspec disarms.
        unsafe {
            let spec: libc::itimerspec = std::mem::zeroed();
            libc::timer_settime(id, 0, &spec, std::ptr::null_mut());
        }
    }

    fn delete(&mut self) {
        if let Some((_, id)) = self.timer.take() {
            // SAFETY: `id` is a live timer owned by this struct, deleted once.
            unsafe { libc::timer_delete(id) };
        }
    }
}

impl Default for DeadlineTimer {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for DeadlineTimer {
    fn drop(&mut self) {
        self.delete();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_timer_sets_immediate_exit_once_due_and_keeps_earlier_expiries() {
        install_handler().expect("handler");
        let mut timer = DeadlineTimer::new();
        timer.for_current_thread().expect("timer");
        let mut immediate_exit = 0u8;
        let target = KickTarget::default();
        let flag: *mut u8 = &mut immediate_exit;
        let guard = RunGuard::enter(&target, flag);
        let start = Instant::now();
        assert!(timer.arm_by(start + Duration::from_millis(20)));
        assert!(
            !timer.arm_by(start + Duration::from_secs(5)),
            "a later target keeps the earlier expiry"
        );
        assert!(
            timer.arm_by(start + Duration::from_millis(2)),
            "an earlier one re-arms"
        );
        // SAFETY: `flag` points at `immediate_exit`, alive for the whole loop; the signal
        // handler writes it from this thread only.
        while unsafe { flag.read_volatile() } == 0 {
            assert!(
                start.elapsed() < Duration::from_secs(2),
                "the timer never fired"
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        assert!(
            start.elapsed() >= Duration::from_millis(2),
            "not before its deadline"
        );
        assert!(
            start.elapsed() < Duration::from_millis(20),
            "at the earlier deadline"
        );
        drop(guard);
        timer.disarm();
        assert_eq!(timer.armed(), None);
    }
}

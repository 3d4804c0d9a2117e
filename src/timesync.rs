//! Whether the system clock is synchronised, as the kernel's clock discipline reports it
//! (`adjtimex(2)` with `modes = 0`, a read-only call). A TOTP vault with a drifting clock computes
//! every code for the wrong moment, and nobody notices until callers are refused; `doctor` and
//! `status` read this through [`TimeSyncSource`] so tests can fake any state.

use std::time::Duration;

/// Above this estimated error a clock is a finding: a TOTP step is 30 s and codes are checked
/// with at most one step of drift, so a few seconds already move codes across step boundaries.
pub const MAX_ESTIMATED_ERROR: Duration = Duration::from_secs(3);

/// What the kernel says about its clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncState {
    /// False when the kernel marks the clock unsynchronised (`STA_UNSYNC` or `TIME_ERROR`): no
    /// NTP client (chrony, systemd-timesyncd, ntpd) is disciplining it.
    pub synchronised: bool,
    /// The NTP client's estimate of the clock's error (`esterror`).
    pub estimated_error: Duration,
}

impl SyncState {
    /// Why this clock makes codes unreliable, or `None` when it is fine.
    pub fn problem(&self) -> Option<String> {
        if !self.synchronised {
            return Some(
                "the system clock is not synchronised (the kernel reports STA_UNSYNC): TOTP codes are computed for the wrong time once it drifts"
                    .into(),
            );
        }
        if self.estimated_error > MAX_ESTIMATED_ERROR {
            return Some(format!(
                "the system clock's estimated error is {:.1} s (more than {} s): codes near a 30 s step boundary are computed for the wrong step",
                self.estimated_error.as_secs_f64(),
                MAX_ESTIMATED_ERROR.as_secs()
            ));
        }
        None
    }
}

/// How to get the clock's state: the kernel in production, a fixed value in tests.
pub trait TimeSyncSource: Send + Sync {
    /// The current state, or why it cannot be read.
    fn read(&self) -> Result<SyncState, String>;
}

/// The running kernel's clock discipline.
pub struct KernelTimeSync;

impl TimeSyncSource for KernelTimeSync {
    #[cfg(target_os = "linux")]
    fn read(&self) -> Result<SyncState, String> {
        let (state, status, esterror) = kernel_clock_state()
            .map_err(|e| format!("adjtimex failed: {e} (a seccomp filter may deny it)"))?;
        Ok(SyncState {
            synchronised: state != libc::TIME_ERROR && status & libc::STA_UNSYNC == 0,
            estimated_error: Duration::from_micros(u64::try_from(esterror).unwrap_or(0)),
        })
    }

    #[cfg(not(target_os = "linux"))]
    fn read(&self) -> Result<SyncState, String> {
        Err("reading the clock's synchronisation state is implemented for Linux only".into())
    }
}

/// A fixed answer, for tests and for callers that already know.
pub struct FixedTimeSync(pub Result<SyncState, String>);

impl TimeSyncSource for FixedTimeSync {
    fn read(&self) -> Result<SyncState, String> {
        self.0.clone()
    }
}

/// `adjtimex(2)` with `modes = 0`: returns the clock state (`TIME_OK` … `TIME_ERROR`), the
/// status bits and the estimated error in microseconds. Changes nothing and needs no privilege.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn kernel_clock_state() -> std::io::Result<(i32, i32, i64)> {
    // SAFETY: `timex` is a plain C struct of integers for which all-zero bytes is a valid value;
    // zero `modes` asks the kernel only to fill it in (no field is read as an adjustment), and
    // the pointer is to a live, exclusively borrowed local for the duration of the call.
    let (state, buf) = unsafe {
        let mut buf: libc::timex = std::mem::zeroed();
        buf.modes = 0;
        (libc::adjtimex(&mut buf), buf)
    };
    if state < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // `c_long` is i64 here but i32 on 32-bit targets.
    #[allow(clippy::useless_conversion)]
    let esterror = i64::from(buf.esterror);
    Ok((state, buf.status, esterror))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn an_unsynchronised_clock_or_a_large_estimated_error_is_a_problem() {
        let state = |synchronised, ms| SyncState {
            synchronised,
            estimated_error: Duration::from_millis(ms),
        };
        assert_eq!(state(true, 20).problem(), None);
        assert_eq!(state(true, 3_000).problem(), None);
        assert!(state(false, 0)
            .problem()
            .unwrap()
            .contains("not synchronised"));
        assert!(state(true, 3_001).problem().unwrap().contains("3.0 s"));
    }

    /// The one `unsafe` in this module: if the struct layout or the call's contract changed,
    /// the kernel would refuse it or report nonsense here.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_kernel_answers_a_read_only_adjtimex_with_a_valid_clock_state() {
        let (state, _, esterror) = kernel_clock_state().unwrap();
        assert!((0..=libc::TIME_ERROR).contains(&state), "state {state}");
        assert!(esterror >= 0, "esterror {esterror}");
        // Reading twice changes nothing that the first read reported as the state.
        assert!(KernelTimeSync.read().is_ok());
    }
}

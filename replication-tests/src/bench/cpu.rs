//! CPU time of the child processes, read from `/proc/PID/stat`. On a shared two-core
//! machine wall-clock rates swing by a third from run to run, while the CPU a process
//! spends on the same work moves far less: the figure to compare two builds by.

use std::time::Duration;

use anyhow::{Context, Result};

/// Clock ticks per second of `/proc/PID/stat` times: `USER_HZ`, fixed at 100 in the
/// kernel's ABI on the architectures Tether builds for.
const TICKS_PER_SECOND: u64 = 100;

/// User plus system CPU time process `pid` has used so far (all its threads).
pub fn used(pid: u32) -> Result<Duration> {
    let text =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("reading /proc/{pid}/stat"))?;
    let ticks = parse_stat(&text).with_context(|| format!("no CPU times in /proc/{pid}/stat"))?;
    Ok(Duration::from_millis(ticks * 1000 / TICKS_PER_SECOND))
}

/// `utime + stime` of a `stat` line. The command name (field 2) is in parentheses and
/// may itself hold spaces and parentheses, so fields are counted from the last `)`.
fn parse_stat(text: &str) -> Option<u64> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After the name: state (3), ppid .. cmajflt (4..12), then utime (14), stime (15).
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_utime_and_stime_after_an_awkward_name() {
        let line = "4242 (tether (x) y) S 1 2 3 4 5 6 7 8 9 10 250 75 11 12 20 0 3 0 99 1000 50";
        assert_eq!(parse_stat(line), Some(325));
        assert_eq!(parse_stat("4242 (cut) S 1 2"), None);
    }

    /// This thread's CPU time as the scheduler counts it, in nanoseconds (the first field
    /// of `/proc/thread-self/schedstat`): a count independent of the ticks `stat` gives.
    fn thread_runtime() -> Duration {
        let text = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
        Duration::from_nanos(text.split_whitespace().next().unwrap().parse().unwrap())
    }

    /// The CPU figures are microseconds per operation, so ticks taken in the wrong unit
    /// would put every one of them off tenfold or more. While this thread works 300 ms
    /// by the scheduler's count, the process's CPU time grows by at least that (less a
    /// few ticks of rounding), and by no more than all the machine's CPUs could have
    /// given in the time that passed.
    #[test]
    fn cpu_time_is_read_in_seconds_not_ticks() {
        let pid = std::process::id();
        let (before, mine, wall) = (used(pid).unwrap(), thread_runtime(), std::time::Instant::now());
        let mut x = 0u64;
        while thread_runtime() < mine + Duration::from_millis(300) {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        }
        let spent = thread_runtime() - mine;
        let grew = used(pid).unwrap() - before;
        let passed = wall.elapsed();
        let stat = std::fs::read_to_string("/proc/stat").unwrap();
        let cpus = stat.lines().filter(|l| l.starts_with("cpu") && !l.starts_with("cpu ")).count();
        let rounding = Duration::from_millis(50);
        assert!(grew + rounding >= spent, "the process grew {grew:?} while this thread spent {spent:?}");
        assert!(grew <= passed * cpus as u32 + rounding, "the process grew {grew:?} in {passed:?} on {cpus} CPUs");
    }

    #[test]
    fn our_own_cpu_time_grows_as_we_work() {
        let pid = std::process::id();
        let before = used(pid).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut x = 0u64;
        while used(pid).unwrap() <= before {
            assert!(std::time::Instant::now() < deadline, "20 s of spinning never showed in the CPU time");
            for _ in 0..1_000_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        }
    }
}

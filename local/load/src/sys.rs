//! What the operating system tells about this process and others: the open-file limit, CPU time,
//! resident memory.

use std::time::Duration;

/// The open-file limit after [`raise_nofile`].
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Nofile {
    pub soft: u64,
    pub hard: u64,
    /// The soft limit found at start.
    pub initial: u64,
}

/// Raises the soft RLIMIT_NOFILE to the hard limit: every open stream is a socket.
pub fn raise_nofile() -> std::io::Result<Nofile> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let initial = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        // An unlimited hard limit cannot be the soft one: the kernel caps it at fs.nr_open.
        let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|text| text.trim().parse::<libc::rlim_t>().ok());
        let target = match nr_open {
            Some(cap) if limit.rlim_max == libc::RLIM_INFINITY => cap,
            _ => limit.rlim_max,
        };
        let raised = libc::rlimit {
            rlim_cur: target,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    Ok(Nofile {
        soft: limit.rlim_cur,
        hard: limit.rlim_max,
        initial,
    })
}

/// Raises the limit and warns on stderr when it stays below what `streams` sockets need.
pub fn ensure_nofile(streams: usize) -> Option<Nofile> {
    match raise_nofile() {
        Ok(limit) => {
            let needed = streams as u64 + 64;
            if limit.soft < needed {
                eprintln!(
                    "warning: RLIMIT_NOFILE is {} (hard limit {}), below the ~{needed} file \
                     descriptors {streams} streams need; raise the hard limit (ulimit -Hn)",
                    limit.soft, limit.hard
                );
            }
            Some(limit)
        }
        Err(error) => {
            eprintln!("warning: cannot read RLIMIT_NOFILE: {error}");
            None
        }
    }
}

/// This process's CPU time, user + system (getrusage RUSAGE_SELF).
pub fn self_cpu_time() -> Duration {
    // SAFETY: an all-zero rusage is a valid value; getrusage overwrites it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we own.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// What another process has used of the machine so far.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessUsage {
    /// User + system CPU time.
    pub cpu: Duration,
    /// The part of `cpu` spent in the kernel on the process's behalf.
    pub system: Duration,
    /// Voluntary and involuntary, summed over the threads alive now.
    pub context_switches: u64,
}

impl ProcessUsage {
    pub fn since(self, before: ProcessUsage) -> ProcessUsage {
        ProcessUsage {
            cpu: self.cpu.saturating_sub(before.cpu),
            system: self.system.saturating_sub(before.system),
            context_switches: self
                .context_switches
                .saturating_sub(before.context_switches),
        }
    }
}

/// Another process's CPU time, user + system, from /proc/PID/stat.
pub fn process_cpu_time(pid: u32) -> std::io::Result<Duration> {
    process_usage(pid).map(|usage| usage.cpu)
}

/// CPU time from /proc/PID/stat, context switches from each /proc/PID/task/TID/status.
pub fn process_usage(pid: u32) -> std::io::Result<ProcessUsage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let (user, system) = parse_proc_stat_cpu(&stat, clock_ticks_per_second()).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("unexpected /proc/{pid}/stat"),
        )
    })?;
    let mut context_switches = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        // A thread that ended since the listing is skipped.
        if let Ok(status) = std::fs::read_to_string(task?.path().join("status")) {
            context_switches += parse_context_switches(&status);
        }
    }
    Ok(ProcessUsage {
        cpu: user + system,
        system,
        context_switches,
    })
}

fn parse_context_switches(status: &str) -> u64 {
    status
        .lines()
        .filter_map(|line| {
            line.strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
        })
        .filter_map(|count| count.trim().parse::<u64>().ok())
        .sum()
}

fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as u64 } else { 100 }
}

/// utime and stime (fields 14 and 15) of a /proc/PID/stat line; the command name (field 2) may
/// hold spaces and parentheses, so fields are counted from its last `)`.
fn parse_proc_stat_cpu(stat: &str, ticks_per_second: u64) -> Option<(Duration, Duration)> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let time = |ticks: u64| {
        Duration::from_nanos(ticks.saturating_mul(1_000_000_000) / ticks_per_second.max(1))
    };
    Some((time(utime), time(stime)))
}

/// Another process's resident set size in bytes (VmRSS of /proc/PID/status).
pub fn process_rss_bytes(pid: u32) -> std::io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kib| kib * 1024)
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("no VmRSS in /proc/{pid}/status"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_cpu_fields_are_counted_after_the_name() {
        let stat = "4242 (sage (local) x) S 1 4242 4242 0 -1 4194560 1200 0 0 0 250 50 0 0 20 0 \
                    9 0 1000 1000000 500 18446744073709551615";
        assert_eq!(
            parse_proc_stat_cpu(stat, 100),
            Some((Duration::from_millis(2500), Duration::from_millis(500)))
        );
        assert_eq!(parse_proc_stat_cpu("garbage", 100), None);
    }

    #[test]
    fn context_switches_are_both_kinds_summed() {
        let status = "Name:\tsage-local\nvoluntary_ctxt_switches:\t120\n\
                      nonvoluntary_ctxt_switches:\t7\n";
        assert_eq!(parse_context_switches(status), 127);
        assert_eq!(parse_context_switches("Name:\tx\n"), 0);
    }

    #[test]
    fn own_cpu_time_and_limits_are_readable() {
        let before = self_cpu_time();
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(self_cpu_time() >= before);
        let limit = raise_nofile().unwrap();
        assert!(limit.soft >= limit.initial && limit.soft <= limit.hard);
        let usage = process_usage(std::process::id()).unwrap();
        assert!(usage.system <= usage.cpu);
        let rss = process_rss_bytes(std::process::id()).unwrap();
        assert!(rss > 0);
        assert!(process_cpu_time(std::process::id()).is_ok());
    }
}

//! CPU time and resident memory of a contender, read from `/proc`.
//!
//! A contender is a process group (the lab starts every command in its own group):
//! Squid's helpers and workers are counted with it.

use std::fs;

/// The processes whose process group is `pgid`.
pub fn group_pids(pgid: u32) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| stat_fields(*pid).is_some_and(|f| f.get(2) == Some(&pgid.to_string())))
        .collect()
}

/// The fields of `/proc/PID/stat` after the command name: index 0 is the state, 2 the
/// process group, 11 utime and 12 stime (in clock ticks).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = text.rsplit_once(')')?.1;
    Some(after.split_whitespace().map(str::to_owned).collect())
}

/// Clock ticks per second of `/proc/PID/stat` times.
fn ticks_per_second() -> f64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as f64,
        _ => 100.0,
    }
}

/// User plus system CPU seconds used so far by the processes of group `pgid` except
/// `exclude` (ended children that were reaped count through cutime/cstime of their parent).
pub fn group_cpu_seconds(pgid: u32, exclude: Option<u32>) -> f64 {
    let ticks: u64 = group_pids(pgid)
        .into_iter()
        .filter(|p| Some(*p) != exclude)
        .filter_map(stat_fields)
        .map(|f| {
            [11usize, 12, 13, 14]
                .iter()
                .filter_map(|i| f.get(*i)?.parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum();
    ticks as f64 / ticks_per_second()
}

/// Resident memory (VmRSS) of the processes of group `pgid` except `exclude`, in bytes.
pub fn group_rss_bytes(pgid: u32, exclude: Option<u32>) -> u64 {
    group_pids(pgid)
        .into_iter()
        .filter(|p| Some(*p) != exclude)
        .filter_map(|pid| fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .filter_map(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map(|kib| kib * 1024)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_group_is_visible() {
        let pgid = nix::unistd::getpgrp().as_raw() as u32;
        assert!(group_pids(pgid).contains(&std::process::id()));
        assert!(group_rss_bytes(pgid, None) > 0);
        assert!(group_cpu_seconds(pgid, None) >= 0.0);
        assert!(!group_pids(pgid).is_empty());
    }
}

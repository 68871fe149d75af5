//! Where the CPU time goes: per-thread user+system time from `/proc/self/task/*/stat`, grouped
//! by thread name (server runtime, blocking pool, SQLite writer thread, load generator).

use std::collections::BTreeMap;
use std::time::Duration;

/// Linux reports thread times in USER_HZ ticks, which is 100 on every mainstream platform.
const TICKS_PER_SEC: f64 = 100.0;

/// CPU seconds per thread group, and busy CPU seconds of the whole machine, as of one moment.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    groups: BTreeMap<String, f64>,
    machine: f64,
}

/// Busy time of all CPUs since boot (everything but idle and iowait), from `/proc/stat`.
fn machine_busy() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0.0;
    };
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    total.saturating_sub(idle) as f64 / TICKS_PER_SEC
}

/// Reads the CPU time of every live thread of this process; empty where `/proc` is missing.
pub fn snapshot() -> Snapshot {
    let mut groups = BTreeMap::new();
    let machine = machine_busy();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Snapshot { groups, machine };
    };
    for t in tasks.flatten() {
        let path = t.path();
        let Ok(stat) = std::fs::read_to_string(path.join("stat")) else {
            continue;
        };
        // The name is between the first '(' and the last ')'; fields follow the ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = group_of(&stat[open + 1..close]);
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        // After the name: state is field 3 overall, utime 14, stime 15 → indexes 11 and 12.
        let ticks: u64 = [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<u64>().ok()).sum();
        *groups.entry(name).or_insert(0.0) += ticks as f64 / TICKS_PER_SEC;
    }
    Snapshot { groups, machine }
}

fn group_of(thread: &str) -> String {
    let g = thread.trim_end_matches(|c: char| c.is_ascii_digit() || c == '-');
    if g.is_empty() { thread.to_string() } else { g.to_string() }
}

/// CPU used per thread group between two snapshots, with its share of the wall time.
#[derive(Clone, Debug, Default)]
pub struct Usage {
    pub groups: Vec<(String, f64)>,
    /// Busy CPU seconds of the whole machine, this process included.
    pub machine: f64,
    pub wall: Duration,
}

impl Usage {
    pub fn between(before: &Snapshot, after: &Snapshot, wall: Duration) -> Usage {
        let mut groups: Vec<(String, f64)> = after
            .groups
            .iter()
            .map(|(k, v)| (k.clone(), v - before.groups.get(k).copied().unwrap_or(0.0)))
            .filter(|(_, v)| *v > 0.005)
            .collect();
        groups.sort_by(|a, b| b.1.total_cmp(&a.1));
        Usage { groups, machine: after.machine - before.machine, wall }
    }

    /// Average cores busy: this process per thread group, and other processes (a busy
    /// neighbour makes the run unrepresentative).
    pub fn summary(&self) -> String {
        let secs = self.wall.as_secs_f64().max(1e-9);
        let total: f64 = self.groups.iter().map(|(_, v)| v).sum();
        let parts: Vec<String> = self.groups.iter().map(|(k, v)| format!("{k} {:.2}", v / secs)).collect();
        format!(
            "{:.2} cores busy: {}; other processes {:.2}",
            total / secs,
            parts.join(", "),
            ((self.machine - total) / secs).max(0.0)
        )
    }
}

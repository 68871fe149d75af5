//! Where the CPU time goes: per-thread user+system time from `/proc/self/task/*/stat`, grouped
//! by thread name (server runtime, blocking pool, SQLite writer thread, load generator).

use std::collections::BTreeMap;
use std::time::Duration;

/// Linux reports thread times in USER_HZ ticks, which is 100 on every mainstream platform.
const TICKS_PER_SEC: f64 = 100.0;

/// CPU seconds per thread group, as of one moment.
#[derive(Clone, Debug, Default)]
pub struct Snapshot(BTreeMap<String, f64>);

/// Reads the CPU time of every live thread of this process; empty where `/proc` is missing.
pub fn snapshot() -> Snapshot {
    let mut groups = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Snapshot(groups);
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
        let ticks: u64 = [11, 12]
            .iter()
            .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
            .sum();
        *groups.entry(name).or_insert(0.0) += ticks as f64 / TICKS_PER_SEC;
    }
    Snapshot(groups)
}

fn group_of(thread: &str) -> String {
    let g = thread.trim_end_matches(|c: char| c.is_ascii_digit() || c == '-');
    if g.is_empty() {
        thread.to_string()
    } else {
        g.to_string()
    }
}

/// CPU used per thread group between two snapshots, with its share of the wall time.
#[derive(Clone, Debug, Default)]
pub struct Usage {
    pub groups: Vec<(String, f64)>,
    pub wall: Duration,
}

impl Usage {
    pub fn between(before: &Snapshot, after: &Snapshot, wall: Duration) -> Usage {
        let mut groups: Vec<(String, f64)> = after
            .0
            .iter()
            .map(|(k, v)| (k.clone(), v - before.0.get(k).copied().unwrap_or(0.0)))
            .filter(|(_, v)| *v > 0.005)
            .collect();
        groups.sort_by(|a, b| b.1.total_cmp(&a.1));
        Usage { groups, wall }
    }

    /// `srv 1.52 cores, writer 0.40, ...`: average cores busy per group.
    pub fn summary(&self) -> String {
        let secs = self.wall.as_secs_f64().max(1e-9);
        let total: f64 = self.groups.iter().map(|(_, v)| v).sum();
        let parts: Vec<String> = self
            .groups
            .iter()
            .map(|(k, v)| format!("{k} {:.2}", v / secs))
            .collect();
        format!("{:.2} cores busy: {}", total / secs, parts.join(", "))
    }
}

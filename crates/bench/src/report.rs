//! Results: latency percentiles, the machine, the stdout table, the markdown block and
//! BENCHMARKS.md.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use crate::cpu::Usage;
use crate::load::{Ingest, Reads};
use crate::policy_overhead::PolicyOverhead;
use crate::raw::Raw;

/// Latency distribution from per-request samples in microseconds (all kept, sorted once).
#[derive(Clone, Debug, Default)]
pub struct Latency {
    pub count: usize,
    sorted: Vec<u32>,
}

impl Latency {
    pub fn from_samples(per_worker: Vec<Vec<u32>>) -> Latency {
        let mut sorted: Vec<u32> = per_worker.into_iter().flatten().collect();
        sorted.sort_unstable();
        Latency { count: sorted.len(), sorted }
    }

    /// The samples, in microseconds.
    pub fn samples(&self) -> Vec<u32> {
        self.sorted.clone()
    }

    /// The q-quantile (0..=1) in milliseconds; 0 without samples.
    pub fn ms(&self, q: f64) -> f64 {
        if self.sorted.is_empty() {
            return 0.0;
        }
        let rank = ((q * self.sorted.len() as f64).ceil() as usize).clamp(1, self.sorted.len());
        f64::from(self.sorted[rank - 1]) / 1000.0
    }
}

/// The machine the run happened on.
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub memory: String,
    pub kernel: String,
}

impl Machine {
    pub fn detect() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|l| l.trim_start_matches([' ', '\t', ':']).trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .map(|kib| format!("{:.1} GiB", kib / 1024.0 / 1024.0))
            .unwrap_or_else(|| "unknown".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        Machine { cpus: std::thread::available_parallelism().map_or(1, |n| n.get()), cpu_model, memory, kernel }
    }
}

/// One server configuration's results.
pub struct ConfigResult {
    pub name: &'static str,
    pub ingest: Ingest,
    pub ingest_cpu: Usage,
    pub reads: Reads,
    pub reads_cpu: Usage,
    pub disk_bytes: u64,
}

impl ConfigResult {
    pub fn resources_per_sec(&self) -> f64 {
        self.ingest.resources as f64 / self.ingest.elapsed.as_secs_f64()
    }

    pub fn bundles_per_sec(&self) -> f64 {
        self.ingest.bundles as f64 / self.ingest.elapsed.as_secs_f64()
    }

    pub fn reads_per_sec(&self) -> f64 {
        self.reads.requests as f64 / self.reads.elapsed.as_secs_f64()
    }

    fn details(&self) -> String {
        format!(
            "bundle POST latency p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; mean read response {:.0} bytes",
            self.ingest.latency.ms(0.5),
            self.ingest.latency.ms(0.99),
            self.ingest.latency.ms(1.0),
            self.reads.bytes as f64 / self.reads.requests.max(1) as f64
        )
    }
}

impl Raw {
    pub fn rows_per_sec(&self) -> f64 {
        self.rows as f64 / self.insert_elapsed.as_secs_f64()
    }

    pub fn selects_per_sec(&self) -> f64 {
        self.selects as f64 / self.select_elapsed.as_secs_f64()
    }
}

/// Everything a run produced.
pub struct Report {
    pub date: String,
    pub commit: String,
    pub machine: Machine,
    pub options: String,
    pub runtime: String,
    pub input: String,
    pub configs: Vec<ConfigResult>,
    pub raw: Option<Raw>,
    /// The access-policy decision's cost on audited reads (issue 4).
    pub policy: Option<PolicyOverhead>,
}

pub const TARGET_INGEST: f64 = 5_000.0;
pub const TARGET_READS: f64 = 10_000.0;
pub const TARGET_RATIO: f64 = 0.8;
/// The policy decision may cost audited reads at most 5 % (issue 4).
pub const TARGET_POLICY_RATIO: f64 = 0.95;

struct Check {
    what: &'static str,
    value: String,
    target: String,
    met: bool,
    shortfall: String,
}

fn check(what: &'static str, value: f64, target: f64, fmt: fn(f64) -> String) -> Check {
    let met = value >= target;
    Check {
        what,
        value: fmt(value),
        target: format!("≥ {}", fmt(target)),
        met,
        shortfall: if met { String::new() } else { format!("missed by {:.0}%", (1.0 - value / target) * 100.0) },
    }
}

pub fn rate(v: f64) -> String {
    let n = v.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn ratio(v: f64) -> String {
    format!("{v:.2}")
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1024.0 / 1024.0)
}

impl Report {
    fn get(&self, name: &str) -> Option<&ConfigResult> {
        self.configs.iter().find(|c| c.name == name)
    }

    fn checks(&self) -> Vec<Check> {
        let mut out = Vec::new();
        if let Some(p) = &self.policy {
            out.push(check("read ratio with / without the policy decision", p.ratio(), TARGET_POLICY_RATIO, ratio));
        }
        let (Some(m), Some(b)) = (self.get("mamori"), self.get("baseline")) else {
            return out;
        };
        out.push(check("ingest (mamori), resources/s", m.resources_per_sec(), TARGET_INGEST, rate));
        out.push(check("audited reads (mamori), requests/s", m.reads_per_sec(), TARGET_READS, rate));
        out.push(check(
            "ingest ratio mamori / baseline",
            m.resources_per_sec() / b.resources_per_sec(),
            TARGET_RATIO,
            ratio,
        ));
        out.push(check("read ratio mamori / baseline", m.reads_per_sec() / b.reads_per_sec(), TARGET_RATIO, ratio));
        out
    }

    /// The plain-text table for the terminal.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "\nmamori benchmark  {}  commit {}", self.date, self.commit);
        let _ = writeln!(
            s,
            "machine: {} × {}, {}, Linux {}",
            self.machine.cpus, self.machine.cpu_model, self.machine.memory, self.machine.kernel
        );
        let _ = writeln!(s, "input:   {}", self.input);
        let _ = writeln!(s, "options: {}", self.options);
        let _ = writeln!(s, "runtime: {}\n", self.runtime);
        let _ = writeln!(
            s,
            "{:<9} {:>12} {:>10} {:>9} {:>10} {:>8} {:>8} {:>8} {:>8} {:>11}",
            "config",
            "resources/s",
            "bundles/s",
            "ingest s",
            "reads/s",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "max ms",
            "disk"
        );
        for c in &self.configs {
            let _ = writeln!(
                s,
                "{:<9} {:>12} {:>10.1} {:>9.1} {:>10} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>11}",
                c.name,
                rate(c.resources_per_sec()),
                c.bundles_per_sec(),
                c.ingest.elapsed.as_secs_f64(),
                rate(c.reads_per_sec()),
                c.reads.latency.ms(0.5),
                c.reads.latency.ms(0.99),
                c.reads.latency.ms(0.999),
                c.reads.latency.ms(1.0),
                mib(c.disk_bytes)
            );
        }
        if let Some(raw) = &self.raw {
            let _ = writeln!(
                s,
                "{:<9} {:>12} {:>10} {:>9.1} {:>10}   (raw rusqlite: rows/s, point selects/s on 1 connection)",
                "raw",
                rate(raw.rows_per_sec()),
                "",
                raw.insert_elapsed.as_secs_f64(),
                rate(raw.selects_per_sec())
            );
        }
        let _ = writeln!(s);
        for c in &self.configs {
            let _ = writeln!(s, "{}: {}", c.name, c.details());
        }
        let _ = writeln!(s, "\nCPU (average cores busy per thread group):");
        for c in &self.configs {
            let _ = writeln!(s, "  {} ingest: {}", c.name, c.ingest_cpu.summary());
            let _ = writeln!(s, "  {} reads:  {}", c.name, c.reads_cpu.summary());
        }
        let _ = writeln!(s, "\nratios:");
        for (k, v) in self.ratios() {
            let _ = writeln!(s, "  {k:<34} {v}");
        }
        let _ = writeln!(s, "\ntargets:");
        for c in self.checks() {
            let _ = writeln!(
                s,
                "  {:<38} {:>10}  target {:>10}  {} {}",
                c.what,
                c.value,
                c.target,
                if c.met { "MET" } else { "NOT MET" },
                c.shortfall
            );
        }
        s
    }

    fn ratios(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let (Some(m), Some(b)) = (self.get("mamori"), self.get("baseline")) {
            out.push(("ingest mamori / baseline".into(), ratio(m.resources_per_sec() / b.resources_per_sec())));
            out.push(("reads mamori / baseline".into(), ratio(m.reads_per_sec() / b.reads_per_sec())));
        }
        if let Some(raw) = &self.raw {
            for c in &self.configs {
                out.push((
                    format!("ingest {} / raw inserts", c.name),
                    ratio(c.resources_per_sec() / raw.rows_per_sec()),
                ));
                out.push((format!("reads {} / raw selects", c.name), ratio(c.reads_per_sec() / raw.selects_per_sec())));
            }
        }
        out
    }

    /// The markdown section (also what is appended to BENCHMARKS.md).
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "### Run {} (commit `{}`)\n", self.date, self.commit);
        let _ = writeln!(
            s,
            "- Machine: {} × {}, {}, Linux {}",
            self.machine.cpus, self.machine.cpu_model, self.machine.memory, self.machine.kernel
        );
        let _ = writeln!(s, "- Input: {}", self.input);
        let _ = writeln!(s, "- Options: `{}`", self.options);
        let _ = writeln!(s, "- Runtime: {}\n", self.runtime);
        let _ = writeln!(
            s,
            "| config | resources/s | bundles/s | ingest time | reads/s | p50 | p99 | p99.9 | max | disk |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for c in &self.configs {
            let _ = writeln!(
                s,
                "| {} | {} | {:.1} | {:.1} s | {} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {} |",
                c.name,
                rate(c.resources_per_sec()),
                c.bundles_per_sec(),
                c.ingest.elapsed.as_secs_f64(),
                rate(c.reads_per_sec()),
                c.reads.latency.ms(0.5),
                c.reads.latency.ms(0.99),
                c.reads.latency.ms(0.999),
                c.reads.latency.ms(1.0),
                mib(c.disk_bytes)
            );
        }
        if let Some(raw) = &self.raw {
            let _ = writeln!(
                s,
                "| raw rusqlite | {} rows/s | | {:.1} s | {} selects/s (1 conn) | | | | | |",
                rate(raw.rows_per_sec()),
                raw.insert_elapsed.as_secs_f64(),
                rate(raw.selects_per_sec())
            );
        }
        s.push('\n');
        for c in &self.configs {
            let _ = writeln!(s, "- {}: {}", c.name, c.details());
        }
        if let Some(p) = &self.policy {
            let _ = writeln!(s, "\n{}", p.markdown());
        }
        s.push('\n');
        let _ = writeln!(s, "| ratio | value |\n|---|---:|");
        for (k, v) in self.ratios() {
            let _ = writeln!(s, "| {k} | {v} |");
        }
        let _ = writeln!(s, "\n| target | measured | goal | result |\n|---|---:|---:|---|");
        for c in self.checks() {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                c.what,
                c.value,
                c.target,
                if c.met { "met".to_string() } else { format!("**not met** ({})", c.shortfall) }
            );
        }
        let _ = writeln!(
            s,
            "\nCPU, average cores busy per thread group (`srv-worker` = server runtime workers, `srv-blocking` = its blocking pool (SQLite readers), `mamori-writer` = the store's writer thread, `load` = load generator):\n"
        );
        for c in &self.configs {
            let _ = writeln!(s, "- {} ingest: {}", c.name, c.ingest_cpu.summary());
            let _ = writeln!(s, "- {} reads: {}", c.name, c.reads_cpu.summary());
        }
        s
    }
}

const HEADER: &str = r#"# mamori benchmarks

Throughput of the FHIR REST API on the real HTTP server, measured by the harness in
`crates/bench` (package `mamori-bench`).

## How to run

```sh
# full run (≥ 100,000 resources; a few minutes on 2 cores)
cargo run --release -p mamori-bench
# quick run (< 1 minute)
cargo run --release -p mamori-bench -- --resources 5000 --read-seconds 3 --no-record
cargo run --release -p mamori-bench -- --help
```

The harness is excluded from the workspace's default members: it enables the `bench-baseline`
feature, which adds `SqliteStore::open_unprotected_baseline` (encryption and audit off). Build it
only with `-p mamori-bench`; never link that feature into tests or the shipped binary.

What one run does, all in one process:

1. **Input.** Synthea R4 patient transaction Bundles (`--synthea DIR`, default
   `testdata/synthea-r4`, else `../shared/data/synthea-r4`) are replicated until `--resources`
   entries (default 100,000): every `urn:uuid:` id is replaced by a fresh uuid consistently within
   the copy, and the Patient's family names and identifier values get the copy number appended.
   The hospital and practitioner bundles are loaded once, untimed, before the patients. All
   bundles are serialised in memory before timing starts.
2. **Two server configurations**, each on a fresh database in a temporary directory, served by
   the real accept loop (`mamori_server::listener::serve`, plain HTTP on 127.0.0.1):
   - `mamori`: `SqliteStore::open` — AES-256-GCM bodies, audit row for every access,
     `synchronous=FULL`;
   - `baseline`: `SqliteStore::open_unprotected_baseline` — no encryption, no audit; the same
     HTTP stack, FHIR processing, search index and `synchronous=FULL`.
   - **Ingest:** `--ingest-clients` (4) connections POST the transaction bundles to `/fhir`;
     every answer must be `200` with every entry `201`.
   - **Reads:** `--read-clients` (32) keep-alive connections GET random created resources
     (`/fhir/Type/id`, ids taken from the transaction-responses) for `--read-warmup` (1 s,
     unrecorded) plus `--read-seconds` (10 s, recorded); every answer must be `200`.
     Latency percentiles are exact (all samples kept and sorted).
3. **Physical baseline:** plain rusqlite with the same resource JSON: one table
   `(id TEXT PRIMARY KEY, body BLOB)`, WAL, `synchronous=FULL`, one transaction per bundle; then
   random point selects by id on one connection for `--raw-seconds` (3 s).

The load generator is hyper 1 (`client::conn::http1`), one connection per worker, one request at
a time per connection. The server runs on its own multi-thread tokio runtime (worker threads =
number of CPUs), the load generator on a separate runtime (`--client-threads`, default 1), so the
two schedulers do not interfere with each other's fairness; both share the same cores, as a
client and a server on one small machine would. CPU time per thread group is read from
`/proc/self/task/*/stat`.

## Targets (issue: performance on the reference 2-core machine)

| target | goal |
|---|---:|
| ingest (mamori) | ≥ 5,000 resources/s |
| audited reads (mamori) | ≥ 10,000 requests/s |
| security overhead, ingest (mamori / baseline) | ≥ 0.8 |
| security overhead, reads (mamori / baseline) | ≥ 0.8 |

## Results

Each run of the harness appends a dated section below (disable with `--no-record`).
"#;

/// Appends the markdown section to `path`, writing the header first if the file is new.
pub fn record(path: &Path, section: &str) -> Result<()> {
    let mut text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => HEADER.to_string(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    if !text.ends_with("\n\n") {
        text.push('\n');
    }
    text.push_str(section);
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_rates() {
        let l = Latency::from_samples(vec![(1..=1000).rev().collect(), vec![]]);
        assert_eq!(l.count, 1000);
        assert!((l.ms(0.5) - 0.5).abs() < 1e-9);
        assert!((l.ms(0.99) - 0.99).abs() < 1e-9);
        assert!((l.ms(1.0) - 1.0).abs() < 1e-9);
        assert_eq!(rate(1234567.4), "1,234,567");
        assert_eq!(rate(999.0), "999");
    }
}

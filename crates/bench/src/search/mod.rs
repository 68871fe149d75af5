//! `mamori-bench search`: FHIR search latency and throughput at ≥ 100,000 generated patients
//! (issue 3), against the same lookups in plain SQLite. See BENCHMARKS.md, "Search (issue 3)".

mod queries;
mod raw;
mod synth;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;

use self::queries::{KINDS, Kind, Measured, Workload};
use self::raw::RawSearch;
use self::synth::{Generated, Shape};
use crate::report::{Machine, rate};
use crate::server::Mode;
use crate::{ConfigArg, cpu, data, load, server};

/// Options of the `search` subcommand.
#[derive(Args, Debug)]
pub struct SearchOpts {
    /// Directory of Synthea R4 transaction Bundles used as templates.
    #[arg(long)]
    synthea: Option<PathBuf>,
    /// Patients to generate.
    #[arg(long, default_value_t = 100_000)]
    patients: usize,
    /// Patients per transaction Bundle.
    #[arg(long, default_value_t = 50)]
    patients_per_bundle: usize,
    /// Encounters kept per patient (at most).
    #[arg(long, default_value_t = 1)]
    encounters: usize,
    /// Observations kept per patient (at most).
    #[arg(long, default_value_t = 3)]
    observations: usize,
    /// Conditions kept per patient (at most).
    #[arg(long, default_value_t = 1)]
    conditions: usize,
    /// Only every n-th patient gets Encounters, Observations and Conditions (the others are a
    /// Patient only), to keep ingest bounded at large patient counts.
    #[arg(long, default_value_t = 1)]
    clinical_every: usize,
    /// Concurrent connections POSTing bundles.
    #[arg(long, default_value_t = 4)]
    ingest_clients: usize,
    /// Concurrencies to measure each search at (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    clients: Vec<usize>,
    /// Recorded seconds per search and concurrency.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Unrecorded warm-up seconds before each measurement.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Seconds per lookup kind on the raw SQLite baseline.
    #[arg(long, default_value_t = 2.0)]
    raw_seconds: f64,
    /// Random searches of each kind checked against the generated data before timing.
    #[arg(long, default_value_t = 10)]
    checks: usize,
    /// Worker threads of the server's tokio runtime [default: number of CPUs].
    #[arg(long)]
    server_threads: Option<usize>,
    /// Worker threads of the load generator's runtime.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Server configurations to run (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "mamori")]
    configs: Vec<ConfigArg>,
    /// Skip the raw SQLite baseline.
    #[arg(long)]
    no_raw: bool,
    /// Where the temporary databases go.
    #[arg(long)]
    tmp_dir: Option<PathBuf>,
    /// Do not append the results to BENCHMARKS.md.
    #[arg(long)]
    no_record: bool,
    /// Keep the server's database directory (for inspecting the index) instead of removing it.
    #[arg(long)]
    keep_db: bool,
    /// The file the results are appended to [default: BENCHMARKS.md at the repository root].
    #[arg(long)]
    bench_file: Option<PathBuf>,
}

struct ConfigSearch {
    name: &'static str,
    resources: usize,
    ingest_elapsed: Duration,
    ingest_cpu: cpu::Usage,
    bundle_p50_ms: f64,
    disk_bytes: u64,
    results: Vec<(Measured, cpu::Usage)>,
}

pub fn main(o: SearchOpts) -> Result<()> {
    if o.patients == 0 || o.clients.is_empty() || o.clients.contains(&0) || o.ingest_clients == 0 {
        bail!("patients and client counts must be at least 1");
    }
    let repo_root = crate::repo_root();
    let machine = Machine::detect();
    let tmp = o.tmp_dir.clone().unwrap_or_else(std::env::temp_dir);
    let dir = data::locate(o.synthea.clone(), &repo_root)?;
    let shape = Shape {
        encounters: o.encounters,
        observations: o.observations,
        conditions: o.conditions,
        patients_per_bundle: o.patients_per_bundle,
        clinical_every: o.clinical_every,
    };
    eprintln!("generating {} patients from {} ...", o.patients, dir.display());
    let t = Instant::now();
    let generated = Arc::new(synth::generate(&dir, o.patients, shape)?);
    let input = describe_input(&generated, &dir, o.patients);
    eprintln!("  {input} (in {:.1} s)", t.elapsed().as_secs_f64());

    let server_threads = o.server_threads.unwrap_or(machine.cpus).max(1);
    let server_rt = crate::server_runtime(server_threads)?;
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(o.client_threads.max(1))
        .thread_name("load")
        .enable_all()
        .build()?;

    let mut configs = Vec::new();
    let mut workload = None;
    for c in &o.configs {
        let mode = Mode::from(*c);
        if configs.iter().any(|x: &ConfigSearch| x.name == mode.name()) {
            continue;
        }
        let (result, w) = run_config(mode, &o, &tmp, &server_rt, &client_rt, &generated)?;
        configs.push(result);
        workload.get_or_insert(w);
    }
    drop(client_rt);
    server_rt.shutdown_timeout(Duration::from_secs(5));

    let raw = match (&workload, o.no_raw) {
        (Some(w), false) => {
            eprintln!("raw SQLite: inserting and searching ...");
            Some(raw::run(w, &tmp, Duration::from_secs_f64(o.raw_seconds))?)
        }
        _ => None,
    };
    let Some(w) = workload else { bail!("no configuration ran") };
    let md = markdown(&o, &machine, &input, server_threads, &w, &configs, raw.as_ref())?;
    println!("\n----- markdown -----\n{md}----- end -----");
    if !o.no_record {
        let file = o.bench_file.clone().unwrap_or_else(|| repo_root.join("BENCHMARKS.md"));
        crate::report::record(&file, &md)?;
        eprintln!("appended to {}", file.display());
    }
    Ok(())
}

fn describe_input(g: &Generated, dir: &std::path::Path, patients: usize) -> String {
    let mut per_type = [0usize; 4];
    for p in &g.patients {
        per_type[0] += 1;
        per_type[1] += p.encounters.len();
        per_type[2] += p.observations.len();
        per_type[3] += p.conditions;
    }
    format!(
        "{patients} patients from {} Synthea templates in {}: {} resources ({} Patient, {} Encounter, {} Observation, \
         {} Condition) in {} transaction Bundles, {:.0} MiB JSON; setup (untimed): {} Practitioner/Organization",
        g.templates,
        dir.display(),
        g.resources(),
        per_type[0],
        per_type[1],
        per_type[2],
        per_type[3],
        g.bundles.len(),
        g.bytes() as f64 / 1024.0 / 1024.0,
        g.setup.entries,
    )
}

fn run_config(
    mode: Mode,
    o: &SearchOpts,
    tmp: &std::path::Path,
    server_rt: &tokio::runtime::Runtime,
    client_rt: &tokio::runtime::Runtime,
    generated: &Arc<Generated>,
) -> Result<(ConfigSearch, Workload)> {
    let name = mode.name();
    eprintln!("[{name}] starting server ...");
    let running = server_rt.block_on(server::start(mode, tmp))?;
    let target = load::Target::new(running.addr, &running.token)?;

    // Shared Practitioners/Organizations, then bind the Encounters' references to them.
    let created = client_rt.block_on(async {
        let mut conn = load::connect(target.addr).await?;
        let req = target.request(hyper::Method::POST, "/fhir", generated.setup.body.clone())?;
        let (status, body) = load::send(&mut conn, req).await?;
        if status != hyper::StatusCode::OK {
            bail!("setup bundle answered {status}: {}", load::snippet(&body));
        }
        load::parse_response(&body, generated.setup.entries)
    })?;
    let refs = |t: &str| -> Vec<String> {
        created.iter().filter_map(|p| p.strip_prefix("/fhir/")).filter(|p| p.starts_with(t)).map(String::from).collect()
    };
    let mut bundles: Vec<data::Bundle> =
        generated.bundles.iter().map(|b| data::Bundle { body: b.body.clone(), entries: b.entries }).collect();
    synth::bind_shared(&mut bundles, &refs("Practitioner/"), &refs("Organization/"))?;
    let bundles = Arc::new(bundles);

    eprintln!("[{name}] ingest: {} bundles with {} clients ...", bundles.len(), o.ingest_clients);
    let before = cpu::snapshot();
    let t = Instant::now();
    let ingest = ingest_drained(client_rt, &target, &bundles, o, &running.db_path())?;
    let ingest_cpu = cpu::Usage::between(&before, &cpu::snapshot(), t.elapsed());
    let expected: usize = bundles.iter().map(|b| b.entries).sum();
    if ingest.resources != expected {
        bail!("[{name}] {} resources created, {expected} sent", ingest.resources);
    }
    drop(bundles);
    eprintln!(
        "[{name}]   {} resources in {:.1} s ({:.0}/s)",
        ingest.resources,
        ingest.elapsed.as_secs_f64(),
        ingest.resources as f64 / ingest.elapsed.as_secs_f64()
    );
    let disk_bytes = running.disk_bytes();
    let ids = generated
        .patients
        .iter()
        .map(|p| {
            let path = &ingest.paths[p.first_entry];
            path.strip_prefix("/fhir/Patient/").map(String::from).with_context(|| format!("{path} is not a Patient"))
        })
        .collect::<Result<Vec<_>>>()?;
    let w = Arc::new(Workload::new(Arc::clone(generated), ids)?);

    eprintln!("[{name}] checking {} answers per search ...", o.checks);
    client_rt.block_on(queries::sanity(&target, &w, o.checks))?;

    let mut results = Vec::new();
    for kind in KINDS {
        for &clients in &o.clients {
            let before = cpu::snapshot();
            let t = Instant::now();
            let m = client_rt
                .block_on(queries::run(
                    &target,
                    Arc::clone(&w),
                    kind,
                    clients,
                    Duration::from_secs_f64(o.warmup),
                    Duration::from_secs_f64(o.seconds),
                ))
                .with_context(|| format!("[{name}] {kind:?}"))?;
            let usage = cpu::Usage::between(&before, &cpu::snapshot(), t.elapsed());
            eprintln!(
                "[{name}] {:<48} {:>3} clients: {:>7.0}/s p50 {:>6.2} ms p99 {:>6.2} ms, {:.1} matches",
                kind.label(),
                clients,
                m.per_sec(),
                m.latency.ms(0.5),
                m.latency.ms(0.99),
                m.mean_matches
            );
            results.push((m, usage));
        }
    }
    let (store, dir) = server_rt.block_on(running.stop())?;
    store.shutdown();
    if o.keep_db {
        eprintln!("[{name}] database kept in {}", dir.keep().display());
    } else {
        dir.close()?;
    }
    let w = Arc::try_unwrap(w).ok().context("workload still shared")?;
    Ok((
        ConfigSearch {
            name,
            resources: ingest.resources,
            ingest_elapsed: ingest.elapsed,
            ingest_cpu,
            bundle_p50_ms: ingest.latency.ms(0.5),
            disk_bytes,
            results,
        },
        w,
    ))
}

/// The ingest stops (with an error) when less than this is left on the database's disk, which
/// other people share.
const MIN_FREE_BYTES: u64 = 1536 * 1024 * 1024;

/// Free bytes on the file system holding `path` (`df`), if it can be told.
fn free_bytes(path: &std::path::Path) -> Option<u64> {
    let out = std::process::Command::new("df").args(["--output=avail", "-B1"]).arg(path).output().ok()?;
    String::from_utf8_lossy(&out.stdout).lines().nth(1)?.trim().parse().ok()
}

/// Bundles POSTed between two WAL drains.
const DRAIN_EVERY: usize = 20;

/// The timed ingest, in chunks of [`DRAIN_EVERY`] bundles; after each chunk the WAL is
/// checkpointed (PASSIVE, as the store's own checkpointer does) until every frame is copied, so
/// the next write restarts it. The store's checkpointer alone never catches up under sustained
/// ingest (the WAL grew to 6× the database), which would fill the disk at 100,000 patients. The
/// waits are part of the measured ingest time.
fn ingest_drained(
    client_rt: &tokio::runtime::Runtime,
    target: &load::Target,
    bundles: &Arc<Vec<data::Bundle>>,
    o: &SearchOpts,
    db: &std::path::Path,
) -> Result<load::Ingest> {
    let conn = rusqlite::Connection::open(db)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let start = Instant::now();
    let mut all = load::Ingest {
        bundles: 0,
        resources: 0,
        elapsed: Duration::ZERO,
        latency: crate::report::Latency::default(),
        paths: Vec::new(),
    };
    let mut lats = Vec::new();
    for (n, chunk) in bundles.chunks(DRAIN_EVERY).enumerate() {
        let part: Vec<data::Bundle> =
            chunk.iter().map(|b| data::Bundle { body: b.body.clone(), entries: b.entries }).collect();
        let r = client_rt.block_on(load::ingest(target, Arc::new(part), o.ingest_clients))?;
        all.bundles += r.bundles;
        all.resources += r.resources;
        all.paths.extend(r.paths);
        lats.push(r.latency.samples());
        loop {
            let (busy, log, done): (i64, i64, i64) =
                conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            if busy == 0 && done >= log {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(free) = free_bytes(db)
            && free < MIN_FREE_BYTES
        {
            bail!(
                "only {} MiB free on the database's file system after {} resources; stopping before the disk fills",
                free / 1024 / 1024,
                all.resources
            );
        }
        if (n + 1) % 25 == 0 {
            eprintln!(
                "  {} resources, {:.0} s, {:.0}/s",
                all.resources,
                start.elapsed().as_secs_f64(),
                all.resources as f64 / start.elapsed().as_secs_f64()
            );
        }
    }
    all.elapsed = start.elapsed();
    all.latency = crate::report::Latency::from_samples(lats);
    Ok(all)
}

fn markdown(
    o: &SearchOpts,
    m: &Machine,
    input: &str,
    server_threads: usize,
    w: &Workload,
    configs: &[ConfigSearch],
    raw: Option<&RawSearch>,
) -> Result<String> {
    let mut s = String::new();
    let root = crate::repo_root();
    writeln!(s, "### Search run {} (commit `{}`)\n", crate::now_utc()?, crate::git_commit(&root))?;
    writeln!(s, "- Machine: {} × {}, {}, Linux {}", m.cpus, m.cpu_model, m.memory, m.kernel)?;
    writeln!(s, "- Input: {input}")?;
    writeln!(
        s,
        "- Selectivity: {} distinct 3-letter family prefixes; common Observation code LOINC {}",
        w.prefixes(),
        w.code()
    )?;
    let configs_arg: Vec<&str> = o.configs.iter().map(|c| Mode::from(*c).name()).collect();
    writeln!(
        s,
        "- Command: `cargo run --release -p mamori-bench -- search --patients {} --patients-per-bundle {} \
         --encounters {} --observations {} --conditions {} --clinical-every {} --clients {} --seconds {} --warmup {} --raw-seconds {} \
         --configs {}` (server: {server_threads} tokio workers; load generator: {} thread(s), hyper HTTP/1.1 \
         keep-alive over loopback, one request at a time per connection)",
        o.patients,
        o.patients_per_bundle,
        o.encounters,
        o.observations,
        o.conditions,
        o.clinical_every,
        o.clients.iter().map(usize::to_string).collect::<Vec<_>>().join(","),
        o.seconds,
        o.warmup,
        o.raw_seconds,
        configs_arg.join(","),
        o.client_threads,
    )?;
    for c in configs {
        let secs = c.ingest_elapsed.as_secs_f64();
        writeln!(
            s,
            "- {} ingest: {} resources in {:.1} s = **{} resources/s** (bundle p50 {:.0} ms); database {:.0} MiB = \
             {:.0} bytes/resource; {}",
            c.name,
            c.resources,
            secs,
            rate(c.resources as f64 / secs),
            c.bundle_p50_ms,
            c.disk_bytes as f64 / 1024.0 / 1024.0,
            c.disk_bytes as f64 / c.resources.max(1) as f64,
            c.ingest_cpu.summary()
        )?;
    }
    if let Some(r) = raw {
        writeln!(
            s,
            "- raw SQLite: {} rows in {:.1} s ({} rows/s), {:.0} MiB with plain-text B-tree indexes",
            r.rows,
            r.insert_elapsed.as_secs_f64(),
            rate(r.rows as f64 / r.insert_elapsed.as_secs_f64()),
            r.disk_bytes as f64 / 1024.0 / 1024.0
        )?;
    }
    writeln!(s, "- Searches (parameters drawn at random from the generated data on every request):")?;
    for k in KINDS {
        writeln!(s, "  - {}: `GET /fhir/{}`", k.label(), k.example())?;
    }
    writeln!(s)?;
    for c in configs {
        writeln!(
            s,
            "| {} | clients | req/s | p50 | p99 | p99.9 | mean matches | mean bytes | raw SQLite p50 | raw p99 | raw/s (1 conn) | p50 / raw p50 |",
            c.name
        )?;
        writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
        for (r, _) in &c.results {
            let raw_lat = raw.and_then(|x| x.latency(r.kind));
            let raw_rate = raw.and_then(|x| x.per_sec(r.kind));
            let cell = |v: Option<String>| v.unwrap_or_else(|| "—".into());
            writeln!(
                s,
                "| {} | {} | {} | {:.2} ms | {:.2} ms | {:.2} ms | {:.1} | {:.0} | {} | {} | {} | {} |",
                r.kind.label(),
                r.clients,
                rate(r.per_sec()),
                r.latency.ms(0.5),
                r.latency.ms(0.99),
                r.latency.ms(0.999),
                r.mean_matches,
                r.mean_bytes,
                cell(raw_lat.map(|l| format!("{:.3} ms", l.ms(0.5)))),
                cell(raw_lat.map(|l| format!("{:.3} ms", l.ms(0.99)))),
                cell(raw_rate.map(rate)),
                cell(raw_lat.filter(|l| l.ms(0.5) > 0.0).map(|l| format!("{:.0}×", r.latency.ms(0.5) / l.ms(0.5)))),
            )?;
        }
        writeln!(s)?;
        writeln!(s, "| target ({}) | clients | p99 | goal | result |", c.name)?;
        writeln!(s, "|---|---:|---:|---:|---|")?;
        for (r, _) in c.results.iter().filter(|(r, _)| matches!(r.kind, Kind::Name | Kind::Identifier)) {
            let p99 = r.latency.ms(0.99);
            let verdict =
                if p99 <= 5.0 { "met".to_string() } else { format!("**not met** ({:.1}× the goal)", p99 / 5.0) };
            writeln!(s, "| {} | {} | {:.2} ms | ≤ 5 ms | {verdict} |", r.kind.label(), r.clients, p99)?;
        }
        writeln!(s)?;
        writeln!(s, "CPU per search at {} clients ({}):\n", o.clients.iter().max().copied().unwrap_or(1), c.name)?;
        let top = o.clients.iter().max().copied().unwrap_or(1);
        for (r, u) in c.results.iter().filter(|(r, _)| r.clients == top) {
            writeln!(s, "- {}: {}", r.kind.label(), u.summary())?;
        }
        writeln!(s)?;
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_paths_name_every_kind() {
        for k in KINDS {
            assert!(!k.example().is_empty() && !k.label().is_empty());
        }
    }
}

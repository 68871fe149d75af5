//! `mamori-bench`: ingest and read throughput of the FHIR server, with and without its security
//! (encryption + audit), against plain SQLite on the same data. See BENCHMARKS.md.

mod cpu;
mod data;
mod load;
mod policy_overhead;
mod raw;
mod report;
mod search;
mod server;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use mamori_store::clock::Clock as _;

use crate::report::{ConfigResult, Machine, Report};
use crate::server::Mode;

#[derive(Parser, Debug)]
#[command(
    name = "mamori-bench",
    about = "Ingest and read benchmark of the mamori FHIR server (mamori vs. unprotected baseline vs. raw SQLite)",
    args_conflicts_with_subcommands = true
)]
struct Opts {
    #[command(subcommand)]
    command: Option<Command>,
    /// Directory of Synthea R4 transaction Bundles [default: testdata/synthea-r4, else
    /// ../shared/data/synthea-r4].
    #[arg(long)]
    synthea: Option<PathBuf>,
    /// Replicate patient bundles until at least this many resources.
    #[arg(long, default_value_t = 100_000)]
    resources: usize,
    /// Concurrent connections POSTing bundles.
    #[arg(long, default_value_t = 4)]
    ingest_clients: usize,
    /// Concurrent keep-alive connections for the read phase.
    #[arg(long, default_value_t = 32)]
    read_clients: usize,
    /// Recorded duration of the read phase, in seconds.
    #[arg(long, default_value_t = 10.0)]
    read_seconds: f64,
    /// Unrecorded warm-up before the read phase, in seconds.
    #[arg(long, default_value_t = 1.0)]
    read_warmup: f64,
    /// Duration of the raw SQLite point-select phase, in seconds.
    #[arg(long, default_value_t = 3.0)]
    raw_seconds: f64,
    /// Worker threads of the server's tokio runtime [default: number of CPUs].
    #[arg(long)]
    server_threads: Option<usize>,
    /// Worker threads of the load generator's (separate) tokio runtime.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Server configurations to run (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "mamori,baseline")]
    configs: Vec<ConfigArg>,
    /// Skip the raw rusqlite baseline.
    #[arg(long)]
    no_raw: bool,
    /// Rounds of the policy-overhead comparison in the `mamori` configuration (each round: one
    /// read phase with the access-policy decision, one with it switched off); 0 skips it.
    #[arg(long, default_value_t = 2)]
    policy_rounds: usize,
    /// Job type of the policy-overhead subject (`nurse`: two categories hidden; `physician`:
    /// none hidden in the HIS zone).
    #[arg(long, default_value = "nurse")]
    policy_role: mamori_access::Role,
    /// Where the temporary databases go (use a real disk: fsync cost is part of the result).
    #[arg(long)]
    tmp_dir: Option<PathBuf>,
    /// Do not append the results to BENCHMARKS.md.
    #[arg(long)]
    no_record: bool,
    /// The file the results are appended to [default: BENCHMARKS.md at the repository root].
    #[arg(long)]
    bench_file: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// FHIR search latency and throughput at ≥ 100,000 generated patients (issue 3).
    Search(search::SearchOpts),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ConfigArg {
    Mamori,
    /// Encryption and audit on, but the audit trail not sealed (no Merkle tree or checkpoints):
    /// measures what the sealer costs.
    MamoriUnsealed,
    Baseline,
}

impl From<ConfigArg> for Mode {
    fn from(c: ConfigArg) -> Mode {
        match c {
            ConfigArg::Mamori => Mode::Mamori,
            ConfigArg::MamoriUnsealed => Mode::MamoriUnsealed,
            ConfigArg::Baseline => Mode::Baseline,
        }
    }
}

fn main() -> Result<()> {
    let mut opts = Opts::parse();
    if let Some(Command::Search(s)) = opts.command.take() {
        return search::main(s);
    }
    if opts.ingest_clients == 0 || opts.read_clients == 0 || opts.client_threads == 0 {
        bail!("client counts must be at least 1");
    }
    if opts.read_seconds <= 0.0 || opts.read_warmup < 0.0 || opts.raw_seconds <= 0.0 {
        bail!("durations must be positive");
    }
    let repo_root = repo_root();
    let machine = Machine::detect();
    let tmp = opts.tmp_dir.clone().unwrap_or_else(std::env::temp_dir);

    let dir = data::locate(opts.synthea.clone(), &repo_root)?;
    eprintln!("preparing bundles from {} ...", dir.display());
    let t = Instant::now();
    let corpus = data::load(&dir, opts.resources)?;
    let input = format!(
        "{} patient bundles / {} resources / {:.0} MiB JSON, replicated from {} Synthea R4 bundles in {}; \
         setup (untimed): {} org/practitioner bundles / {} resources",
        corpus.bundles.len(),
        corpus.resources(),
        corpus.bytes() as f64 / 1024.0 / 1024.0,
        corpus.templates,
        dir.display(),
        corpus.setup.len(),
        corpus.setup.iter().map(|b| b.entries).sum::<usize>(),
    );
    eprintln!("  {input} (prepared in {:.1} s)", t.elapsed().as_secs_f64());

    let server_threads = opts.server_threads.unwrap_or(machine.cpus).max(1);
    let server_rt = server_runtime(server_threads)?;
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(opts.client_threads)
        .thread_name("load")
        .enable_all()
        .build()
        .context("cannot build the load generator runtime")?;

    let bundles = Arc::new(corpus.bundles);
    let mut configs = Vec::new();
    let mut policy = None;
    let mut seen = Vec::new();
    for c in &opts.configs {
        let mode = Mode::from(*c);
        if seen.contains(&mode) {
            continue;
        }
        seen.push(mode);
        let (result, overhead) = run_config(mode, &opts, &tmp, &server_rt, &client_rt, &corpus.setup, &bundles)?;
        configs.push(result);
        policy = policy.or(overhead);
    }
    drop(client_rt);
    server_rt.shutdown_timeout(Duration::from_secs(5));

    let raw = if opts.no_raw {
        None
    } else {
        eprintln!("raw rusqlite: inserting and selecting ...");
        Some(raw::run(&bundles, &tmp, Duration::from_secs_f64(opts.raw_seconds))?)
    };

    let report = Report {
        date: now_utc()?,
        commit: git_commit(&repo_root),
        machine,
        options: describe(&opts, server_threads),
        runtime: format!(
            "server on its own tokio multi-thread runtime ({server_threads} workers); load generator on a \
             separate tokio runtime ({} thread(s)), hyper 1 HTTP/1.1 client, one connection per worker; plain HTTP on 127.0.0.1",
            opts.client_threads
        ),
        input,
        configs,
        raw,
        policy,
    };
    print!("{}", report.text());
    let md = report.markdown();
    println!("\n----- markdown -----\n{md}----- end -----");
    if !opts.no_record {
        let file = opts.bench_file.clone().unwrap_or_else(|| repo_root.join("BENCHMARKS.md"));
        report::record(&file, &md)?;
        eprintln!("appended to {}", file.display());
    }
    Ok(())
}

/// Server runtime: the first `workers` threads tokio starts are its workers, later ones its
/// blocking pool; naming them apart lets the CPU report tell them apart. Blocking threads are
/// kept alive so their CPU time is still visible at the end of a phase.
fn server_runtime(workers: usize) -> Result<tokio::runtime::Runtime> {
    let started = Arc::new(AtomicUsize::new(0));
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name_fn(move || {
            if started.fetch_add(1, Ordering::Relaxed) < workers { "srv-worker".into() } else { "srv-blocking".into() }
        })
        .thread_keep_alive(Duration::from_secs(600))
        .enable_all()
        .build()
        .context("cannot build the server runtime")
}

fn run_config(
    mode: Mode,
    opts: &Opts,
    tmp: &Path,
    server_rt: &tokio::runtime::Runtime,
    client_rt: &tokio::runtime::Runtime,
    setup: &[data::Bundle],
    bundles: &Arc<Vec<data::Bundle>>,
) -> Result<(ConfigResult, Option<policy_overhead::PolicyOverhead>)> {
    let name = mode.name();
    eprintln!("[{name}] starting server ...");
    let running = server_rt.block_on(server::start(mode, tmp))?;
    let target = load::Target::new(running.addr, &running.token)?;
    client_rt
        .block_on(load::load_setup(&target, setup))
        .with_context(|| format!("[{name}] loading the org/practitioner bundles"))?;

    eprintln!("[{name}] ingest: {} bundles with {} clients ...", bundles.len(), opts.ingest_clients);
    let before = cpu::snapshot();
    let t = Instant::now();
    let mut ingest = client_rt
        .block_on(load::ingest(&target, Arc::clone(bundles), opts.ingest_clients))
        .with_context(|| format!("[{name}] ingest"))?;
    let ingest_cpu = cpu::Usage::between(&before, &cpu::snapshot(), t.elapsed());
    let expected: usize = bundles.iter().map(|b| b.entries).sum();
    if ingest.resources != expected {
        bail!("[{name}] {} resources created, {expected} sent", ingest.resources);
    }
    eprintln!("[{name}]   {} resources in {:.1} s", ingest.resources, ingest.elapsed.as_secs_f64());
    let disk_bytes = running.disk_bytes();

    let paths = Arc::new(std::mem::take(&mut ingest.paths));

    eprintln!(
        "[{name}] reads: {} clients, {:.0} s warm-up + {:.0} s ...",
        opts.read_clients, opts.read_warmup, opts.read_seconds
    );
    let before = cpu::snapshot();
    let t = Instant::now();
    let reads = client_rt
        .block_on(load::reads(
            &target,
            Arc::clone(&paths),
            opts.read_clients,
            Duration::from_secs_f64(opts.read_warmup),
            Duration::from_secs_f64(opts.read_seconds),
        ))
        .with_context(|| format!("[{name}] reads"))?;
    let reads_cpu = cpu::Usage::between(&before, &cpu::snapshot(), t.elapsed());
    eprintln!("[{name}]   {} requests ({:.0}/s)", reads.requests, reads.requests as f64 / reads.elapsed.as_secs_f64());

    let overhead = if mode == Mode::Mamori && opts.policy_rounds > 0 {
        eprintln!("[{name}] policy overhead: {} round(s) with and without the decision ...", opts.policy_rounds);
        Some(
            policy_overhead::run(
                &running,
                server_rt,
                client_rt,
                &paths,
                policy_overhead::Shape {
                    role: opts.policy_role,
                    rounds: opts.policy_rounds,
                    clients: opts.read_clients,
                    warmup: Duration::from_secs_f64(opts.read_warmup),
                    measure: Duration::from_secs_f64(opts.read_seconds),
                },
            )
            .with_context(|| format!("[{name}] policy overhead"))?,
        )
    } else {
        None
    };

    let (store, dir) = server_rt.block_on(running.stop())?;
    store.shutdown();
    dir.close().with_context(|| format!("[{name}] cannot remove the temporary database"))?;
    Ok((ConfigResult { name, ingest, ingest_cpu, reads, reads_cpu, disk_bytes }, overhead))
}

fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = manifest.join("../..");
    root.canonicalize().unwrap_or(root)
}

fn now_utc() -> Result<String> {
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    Ok(mamori_store::clock::SystemClock.now().format(fmt)?)
}

fn git_commit(root: &Path) -> String {
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(root)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let Some(commit) = run(&["rev-parse", "--short", "HEAD"]) else {
        return "unknown".into();
    };
    match run(&["status", "--porcelain", "--untracked-files=no"]) {
        Some(s) if !s.is_empty() => format!("{commit}+uncommitted changes"),
        _ => commit,
    }
}

fn describe(o: &Opts, server_threads: usize) -> String {
    let configs: Vec<&str> = o.configs.iter().map(|c| Mode::from(*c).name()).collect();
    format!(
        "--resources {} --ingest-clients {} --read-clients {} --read-seconds {} --read-warmup {} \
         --raw-seconds {} --server-threads {} --client-threads {} --policy-rounds {} --policy-role {} --configs {}{}",
        o.resources,
        o.ingest_clients,
        o.read_clients,
        o.read_seconds,
        o.read_warmup,
        o.raw_seconds,
        server_threads,
        o.client_threads,
        o.policy_rounds,
        o.policy_role,
        configs.join(","),
        if o.no_raw { " --no-raw" } else { "" }
    )
}

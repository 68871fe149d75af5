//! What the access-policy decision costs audited reads (issue 4: "the policy decision adds ≤ 5 %
//! to the audited read throughput").
//!
//! Like for like: the same server, database, connections and requests, alternating rounds with
//! the decision on and switched off (the bench-only bypass makes every request unrestricted).
//! The subject is by default a nurse in the HIS zone, for whom the default policy hides the
//! `billing` and `genetic` categories, so every read also runs the hidden-category check — the
//! costlier case; a physician (`--policy-role physician`) in the HIS zone hides nothing and only
//! pays for the decision itself. Reads go to resources the subject may see, so both modes answer
//! 200 with the same bodies.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use mamori_access::{Operation, Principal, Purpose, Rights, Role};

use crate::cpu::{self, Usage};
use crate::load::{self, Target};
use crate::report::Latency;
use crate::server::Running;

/// One measured phase.
pub struct Phase {
    pub policy: bool,
    pub requests: usize,
    pub elapsed: Duration,
    pub latency: Latency,
    /// Server CPU (its runtime, blocking pool, writer and checkpointer threads) per read, in µs:
    /// less sensitive than throughput to other processes on a shared machine.
    pub cpu_us_per_read: f64,
}

impl Phase {
    pub fn per_sec(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

/// Server-side CPU seconds in `u` (the load generator's threads excluded).
fn server_cpu(u: &Usage) -> f64 {
    u.groups.iter().filter(|(g, _)| g.starts_with("srv-") || g.starts_with("mamori-")).map(|(_, v)| v).sum()
}

pub struct PolicyOverhead {
    pub subject: String,
    pub readable: usize,
    pub phases: Vec<Phase>,
}

impl PolicyOverhead {
    fn total(&self, policy: bool) -> (usize, f64) {
        self.phases
            .iter()
            .filter(|p| p.policy == policy)
            .fold((0, 0.0), |(n, t), p| (n + p.requests, t + p.elapsed.as_secs_f64()))
    }

    /// Requests/s with the decision over requests/s without it, over all rounds.
    pub fn ratio(&self) -> f64 {
        let (with_n, with_t) = self.total(true);
        let (without_n, without_t) = self.total(false);
        (with_n as f64 / with_t) / (without_n as f64 / without_t)
    }

    pub fn per_sec(&self, policy: bool) -> f64 {
        let (n, t) = self.total(policy);
        n as f64 / t
    }

    /// Mean server CPU per read, with or without the decision.
    pub fn cpu_us(&self, policy: bool) -> f64 {
        let ps: Vec<&Phase> = self.phases.iter().filter(|p| p.policy == policy).collect();
        ps.iter().map(|p| p.cpu_us_per_read).sum::<f64>() / ps.len().max(1) as f64
    }

    /// The phases, in the order they ran, and the totals.
    pub fn markdown(&self) -> String {
        let mut s = format!(
            "Policy overhead ({}; random GETs over the {} ingested resources it may see; same server and \
             data, decision on and off alternating):\n\n| phase | decision | reads/s | p50 | p99 | server CPU per read |\n|---|---|---:|---:|---:|---:|\n",
            self.subject, self.readable
        );
        for (i, p) in self.phases.iter().enumerate() {
            s.push_str(&format!(
                "| {} | {} | {} | {:.2} ms | {:.2} ms | {:.0} µs |\n",
                i + 1,
                if p.policy { "on" } else { "off" },
                crate::report::rate(p.per_sec()),
                p.latency.ms(0.5),
                p.latency.ms(0.99),
                p.cpu_us_per_read
            ));
        }
        s.push_str(&format!(
            "| all | on / off | {} / {} = **{:.3}** | | | {:.0} / {:.0} µs = {:.3} |\n",
            crate::report::rate(self.per_sec(true)),
            crate::report::rate(self.per_sec(false)),
            self.ratio(),
            self.cpu_us(true),
            self.cpu_us(false),
            self.cpu_us(true) / self.cpu_us(false)
        ));
        s
    }
}

/// The paths (`/fhir/Type/id`) whose resource type alone puts them in categories `rights` may view.
fn readable(policy: &mamori_access::Policy, rights: &Rights, paths: &[String]) -> Vec<String> {
    paths
        .iter()
        .filter(|p| {
            let rtype = p.trim_start_matches("/fhir/").split('/').next().unwrap_or("");
            let cats = policy.categorise(rtype, &serde_json::json!({ "resourceType": rtype }));
            rights.permits_names(Operation::View, cats.iter().map(|i| policy.category_name(i)))
        })
        .cloned()
        .collect()
}

/// How the comparison runs: `rounds` pairs of read phases of `clients` connections, each
/// `warmup` + `measure` long.
pub struct Shape {
    pub role: Role,
    pub rounds: usize,
    pub clients: usize,
    pub warmup: Duration,
    pub measure: Duration,
}

/// Runs `rounds` pairs of read phases, ABBA-ordered so slow drift cancels out.
pub fn run(
    running: &Running,
    server_rt: &tokio::runtime::Runtime,
    client_rt: &tokio::runtime::Runtime,
    paths: &[String],
    shape: Shape,
) -> Result<PolicyOverhead> {
    let Shape { role, rounds, clients, warmup, measure } = shape;
    let who = Principal { account: format!("bench.{role}"), role };
    let token = server_rt.block_on(running.token_for(&who.account, who.role))?;
    let policy = running.policy();
    // The bench connects over loopback, which the default policy puts in the HIS zone.
    let zone = policy.zone_of(std::net::IpAddr::from([127, 0, 0, 1]), false);
    let rights = policy.rights(&who, zone, Purpose::Treatment);
    let readable = Arc::new(readable(&policy, &rights, paths));
    if readable.is_empty() {
        bail!("no resource a {role} may read");
    }
    let target = Target::new(running.addr, &token)?;
    let mut phases = Vec::new();
    for round in 0..rounds {
        let order = if round % 2 == 0 { [true, false] } else { [false, true] };
        for policy_on in order {
            running.set_policy_bypass(!policy_on);
            let before = cpu::snapshot();
            let t = Instant::now();
            let r = client_rt.block_on(load::reads(&target, Arc::clone(&readable), clients, warmup, measure))?;
            let used = Usage::between(&before, &cpu::snapshot(), t.elapsed());
            // The CPU window includes the warm-up, run at about the measured rate.
            let reads_in_window = r.requests as f64 * t.elapsed().as_secs_f64() / r.elapsed.as_secs_f64();
            let cpu_us_per_read = server_cpu(&used) * 1e6 / reads_in_window.max(1.0);
            eprintln!(
                "[policy] round {} {}: {:.0} reads/s",
                round + 1,
                if policy_on { "with the decision" } else { "decision off" },
                r.requests as f64 / r.elapsed.as_secs_f64()
            );
            phases.push(Phase {
                policy: policy_on,
                requests: r.requests,
                elapsed: r.elapsed,
                latency: r.latency,
                cpu_us_per_read,
            });
        }
    }
    running.set_policy_bypass(false);
    Ok(PolicyOverhead {
        subject: format!(
            "{role}, {} zone, hidden categories: {}",
            policy.zone_name(zone),
            rights.hidden_names().join(", ")
        ),
        readable: readable.len(),
        phases,
    })
}

//! The six searches of issue 3, their randomised parameters (drawn from the generated data),
//! the expected number of matches, one-off answer checks and the timed load loop.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde_json::Value;
use tokio::task::JoinSet;

use super::synth::{Generated, MRN_SYSTEM, day};
use crate::load::{self, Target, XorShift};
use crate::report::Latency;

/// The measured searches, in report order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Name,
    Identifier,
    ObsCode,
    ObsDate,
    EncounterInclude,
    Everything,
}

pub const KINDS: [Kind; 6] =
    [Kind::Name, Kind::Identifier, Kind::ObsCode, Kind::ObsDate, Kind::EncounterInclude, Kind::Everything];

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Name => "Patient by family-name prefix (3 letters)",
            Kind::Identifier => "Patient by identifier (MRN)",
            Kind::ObsCode => "Observation by patient + code",
            Kind::ObsDate => "Observation by patient + date range, _sort=-date",
            Kind::EncounterInclude => "Encounter by day, _include=Encounter:patient",
            Kind::Everything => "Patient/{id}/$everything",
        }
    }

    pub fn example(self) -> &'static str {
        match self {
            Kind::Name => "Patient?family=Kob",
            Kind::Identifier => "Patient?identifier=http://hospital.smarthealthit.org|MRN00012345",
            Kind::ObsCode => "Observation?patient={id}&code=http://loinc.org|{code}",
            Kind::ObsDate => "Observation?patient={id}&date=ge2014-03-02&date=lt2015-03-02&_sort=-date",
            Kind::EncounterInclude => "Encounter?date=2014-03-02&_include=Encounter:patient",
            Kind::Everything => "Patient/{id}/$everything",
        }
    }
}

/// One drawn set of parameters.
#[derive(Clone, Debug)]
pub enum Params {
    /// Lower-case 3-letter prefix.
    Name(String),
    Identifier(usize),
    ObsCode(usize, u16),
    /// Patient, [lo, hi) in unix seconds (whole UTC days).
    ObsDate(usize, i64, i64),
    /// Start of the UTC day, unix seconds.
    EncounterDay(i64),
    Everything(usize),
}

/// Everything needed to draw parameters and know their answers.
pub struct Workload {
    pub data: Arc<Generated>,
    /// Server id of each generated patient.
    pub ids: Vec<String>,
    pub common_code: u16,
    /// Patients with at least one Observation of `common_code`.
    with_code: Vec<usize>,
    /// Patients with clinical resources.
    clinical: Vec<usize>,
    prefix_counts: HashMap<String, u32>,
    day_counts: HashMap<i64, u32>,
}

const DAY: i64 = 86_400;

impl Workload {
    pub fn new(data: Arc<Generated>, ids: Vec<String>) -> Result<Workload> {
        ensure!(ids.len() == data.patients.len() && !ids.is_empty(), "one server id per patient needed");
        let mut per_code = vec![0usize; data.codes.len()];
        let mut prefix_counts: HashMap<String, u32> = HashMap::new();
        let mut day_counts: HashMap<i64, u32> = HashMap::new();
        for p in &data.patients {
            let mut seen = vec![false; data.codes.len()];
            for (c, _) in &p.observations {
                if !std::mem::replace(&mut seen[*c as usize], true) {
                    per_code[*c as usize] += 1;
                }
            }
            *prefix_counts.entry(prefix3(&p.family)).or_default() += 1;
            for e in &p.encounters {
                *day_counts.entry(e.div_euclid(DAY)).or_default() += 1;
            }
        }
        let common_code = per_code.iter().enumerate().max_by_key(|(_, n)| **n).map(|(i, _)| i as u16).unwrap_or(0);
        let with_code: Vec<usize> = data
            .patients
            .iter()
            .enumerate()
            .filter(|(_, p)| p.observations.iter().any(|(c, _)| *c == common_code))
            .map(|(i, _)| i)
            .collect();
        ensure!(!with_code.is_empty(), "no Observations generated");
        let clinical: Vec<usize> = data
            .patients
            .iter()
            .enumerate()
            .filter(|(_, p)| !p.encounters.is_empty() && !p.observations.is_empty())
            .map(|(i, _)| i)
            .collect();
        ensure!(!clinical.is_empty(), "no patient with Encounters and Observations");
        Ok(Workload { data, ids, common_code, with_code, clinical, prefix_counts, day_counts })
    }

    pub fn code(&self) -> &str {
        &self.data.codes[self.common_code as usize]
    }

    /// Number of distinct family-name prefixes (for the report).
    pub fn prefixes(&self) -> usize {
        self.prefix_counts.len()
    }

    pub fn draw(&self, kind: Kind, rng: &mut XorShift) -> Params {
        let p = match kind {
            Kind::Name | Kind::Identifier => rng.below(self.data.patients.len()),
            _ => self.clinical[rng.below(self.clinical.len())],
        };
        let meta = &self.data.patients[p];
        match kind {
            Kind::Name => Params::Name(prefix3(&meta.family)),
            Kind::Identifier => Params::Identifier(p),
            Kind::ObsCode => Params::ObsCode(self.with_code[rng.below(self.with_code.len())], self.common_code),
            Kind::ObsDate => {
                let (lo, hi) = match meta.observations.len() {
                    0 => (0, DAY),
                    k => {
                        let at = meta.observations[rng.below(k)].1;
                        let lo = at.div_euclid(DAY) * DAY;
                        (lo, lo + 365 * DAY)
                    }
                };
                Params::ObsDate(p, lo, hi)
            }
            Kind::EncounterInclude => {
                let at = meta.encounters[rng.below(meta.encounters.len())];
                Params::EncounterDay(at.div_euclid(DAY) * DAY)
            }
            Kind::Everything => Params::Everything(p),
        }
    }

    pub fn path(&self, q: &Params) -> Result<String> {
        Ok(match q {
            Params::Name(prefix) => format!("/fhir/Patient?family={prefix}"),
            Params::Identifier(p) => format!(
                "/fhir/Patient?identifier={}%7C{}",
                MRN_SYSTEM.replace(':', "%3A").replace('/', "%2F"),
                self.data.patients[*p].mrn
            ),
            Params::ObsCode(p, c) => format!(
                "/fhir/Observation?patient={}&code=http%3A%2F%2Floinc.org%7C{}",
                self.ids[*p], self.data.codes[*c as usize]
            ),
            Params::ObsDate(p, lo, hi) => format!(
                "/fhir/Observation?patient={}&date=ge{}&date=lt{}&_sort=-date",
                self.ids[*p],
                day(*lo)?,
                day(*hi)?
            ),
            Params::EncounterDay(d) => format!("/fhir/Encounter?date={}&_include=Encounter:patient", day(*d)?),
            Params::Everything(p) => format!("/fhir/Patient/{}/$everything", self.ids[*p]),
        })
    }

    /// The number of matching resources (the Bundle `total`; for `$everything`, the entries).
    pub fn expected(&self, q: &Params) -> u32 {
        let pats = &self.data.patients;
        match q {
            Params::Name(prefix) => self.prefix_counts.get(prefix).copied().unwrap_or(0),
            Params::Identifier(_) => 1,
            Params::ObsCode(p, c) => pats[*p].observations.iter().filter(|(k, _)| k == c).count() as u32,
            Params::ObsDate(p, lo, hi) => {
                pats[*p].observations.iter().filter(|(_, at)| (*lo..*hi).contains(at)).count() as u32
            }
            Params::EncounterDay(d) => self.day_counts.get(&d.div_euclid(DAY)).copied().unwrap_or(0),
            Params::Everything(p) => pats[*p].resources() as u32,
        }
    }

    /// Checks one answer against the generated data.
    pub fn check(&self, q: &Params, body: &[u8]) -> Result<()> {
        let v: Value = serde_json::from_slice(body).context("answer is not JSON")?;
        ensure!(v["resourceType"] == "Bundle", "answer is not a Bundle");
        let entries = v["entry"].as_array().cloned().unwrap_or_default();
        let mode = |e: &Value| e.pointer("/search/mode").and_then(Value::as_str).unwrap_or("match").to_string();
        let matches: Vec<&Value> = entries.iter().filter(|e| mode(e) == "match").collect();
        let included = entries.len() - matches.len();
        let expected = self.expected(q);
        let total = v["total"].as_u64();
        let rtype = |e: &Value| e.pointer("/resource/resourceType").and_then(Value::as_str).unwrap_or("").to_string();
        match q {
            Params::Everything(p) => {
                // $everything: the compartment (and possibly resources it refers to).
                let pid = &self.ids[*p];
                let in_compartment = entries
                    .iter()
                    .filter(|e| {
                        let r = &e["resource"];
                        r["id"] == pid.as_str()
                            || r.pointer("/subject/reference").and_then(Value::as_str)
                                == Some(&format!("Patient/{pid}"))
                    })
                    .count();
                ensure!(
                    in_compartment as u32 == expected,
                    "$everything: {in_compartment} resources of the patient, {expected} created"
                );
            }
            _ => {
                ensure!(total == Some(u64::from(expected)), "total {total:?}, expected {expected}");
                ensure!(
                    matches.len() as u32 == expected.min(50),
                    "{} matches on page 1, expected {expected}",
                    matches.len()
                );
            }
        }
        match q {
            Params::Name(prefix) => {
                for e in &matches {
                    let fam = e.pointer("/resource/name/0/family").and_then(Value::as_str).unwrap_or("");
                    ensure!(fam.to_lowercase().starts_with(prefix.as_str()), "'{fam}' does not start with '{prefix}'");
                }
            }
            Params::Identifier(p) => {
                ensure!(matches[0]["resource"]["id"] == self.ids[*p].as_str(), "the MRN found another patient");
            }
            Params::ObsCode(..) | Params::ObsDate(..) => {
                ensure!(matches.iter().all(|e| rtype(e) == "Observation"), "non-Observation match");
                if let Params::ObsDate(..) = q {
                    let dates: Vec<&str> = matches
                        .iter()
                        .map(|e| e.pointer("/resource/effectiveDateTime").and_then(Value::as_str).unwrap_or(""))
                        .collect();
                    ensure!(dates.windows(2).all(|w| w[0] >= w[1]), "not sorted by -date: {dates:?}");
                }
            }
            Params::EncounterDay(_) => {
                ensure!(matches.iter().all(|e| rtype(e) == "Encounter"), "non-Encounter match");
                ensure!(
                    entries.iter().filter(|e| mode(e) == "include").all(|e| rtype(e) == "Patient"),
                    "non-Patient include"
                );
                ensure!(expected == 0 || included > 0, "no Patient included");
            }
            Params::Everything(_) => {}
        }
        Ok(())
    }
}

pub fn prefix3(family: &str) -> String {
    family.chars().take(3).collect::<String>().to_lowercase()
}

/// One timed run of one search at one concurrency.
pub struct Measured {
    pub kind: Kind,
    pub clients: usize,
    pub requests: usize,
    pub elapsed: Duration,
    pub latency: Latency,
    /// Mean expected matches per request (the `total`, or `$everything` entries).
    pub mean_matches: f64,
    pub mean_bytes: f64,
}

impl Measured {
    pub fn per_sec(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

/// Sends `n` random searches of each kind one by one and checks every answer.
pub async fn sanity(target: &Target, w: &Workload, n: usize) -> Result<()> {
    let mut conn = load::connect(target.addr).await?;
    let mut rng = XorShift::new(0x5A17);
    for kind in KINDS {
        for _ in 0..n {
            let q = w.draw(kind, &mut rng);
            let path = w.path(&q)?;
            let (status, body) = load::send(&mut conn, target.request(Method::GET, &path, Bytes::new())?).await?;
            if status != StatusCode::OK {
                bail!("GET {path} answered {status}: {}", load::snippet(&body));
            }
            w.check(&q, &body).with_context(|| format!("GET {path}"))?;
        }
    }
    Ok(())
}

/// Random searches of one kind over `clients` keep-alive connections: `warmup` unrecorded,
/// then `measure` recorded. Every answer must be 200.
pub async fn run(
    target: &Target,
    w: Arc<Workload>,
    kind: Kind,
    clients: usize,
    warmup: Duration,
    measure: Duration,
) -> Result<Measured> {
    let mut conns = Vec::with_capacity(clients);
    for _ in 0..clients {
        conns.push(load::connect(target.addr).await?);
    }
    let begin = Instant::now() + warmup;
    let end = begin + measure;
    let mut set = JoinSet::new();
    for (c, mut conn) in conns.into_iter().enumerate() {
        let (target, w) = (target.clone(), Arc::clone(&w));
        set.spawn(async move {
            let mut rng = XorShift::new(((kind as u64) << 32) ^ (clients as u64) << 16 ^ c as u64);
            let mut lat = Vec::with_capacity(1 << 14);
            let (mut matches, mut bytes) = (0u64, 0u64);
            loop {
                let q = w.draw(kind, &mut rng);
                let path = w.path(&q)?;
                let req = target.request(Method::GET, &path, Bytes::new())?;
                let t0 = Instant::now();
                let (status, body) = load::send(&mut conn, req).await?;
                let t1 = Instant::now();
                if status != StatusCode::OK {
                    bail!("GET {path} answered {status}: {}", load::snippet(&body));
                }
                if t1 >= end {
                    break;
                }
                if t0 >= begin {
                    lat.push(load::micros(t1 - t0));
                    matches += u64::from(w.expected(&q));
                    bytes += body.len() as u64;
                }
            }
            anyhow::Ok((lat, matches, bytes))
        });
    }
    let mut lats = Vec::new();
    let (mut matches, mut bytes) = (0u64, 0u64);
    while let Some(r) = set.join_next().await {
        let (lat, m, b) = r.context("search worker panicked")??;
        lats.push(lat);
        matches += m;
        bytes += b;
    }
    let latency = Latency::from_samples(lats);
    let n = latency.count.max(1) as f64;
    Ok(Measured {
        kind,
        clients,
        requests: latency.count,
        elapsed: measure,
        latency,
        mean_matches: matches as f64 / n,
        mean_bytes: bytes as f64 / n,
    })
}

//! Search-benchmark input: many small, distinct patients made by rewriting Synthea bundles.
//!
//! Every generated patient takes one Synthea patient bundle as template and keeps the Patient,
//! its first `encounters` Encounters, first `observations` Observations and first `conditions`
//! Conditions. Every resource gets a fresh `urn:uuid:` fullUrl (the server assigns ids), the
//! Patient a syllable-mixed family name, a template given name, a unique MRN and SSN and a
//! shifted birth date; clinical dates are regenerated per patient; Encounters point at shared
//! Practitioners and Organizations (created once, untimed). What the queries need to know about
//! the data (names, MRNs, codes, dates) is kept in [`PatientMeta`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use serde_json::{Value, json};

use crate::data::Bundle;

/// Syllables of generated family names: family = A + B + C. The 3-letter prefix is A plus the
/// first letter of B (≈ 480 distinct prefixes, so ≈ 200 patients per prefix at 100,000).
const SYL_A: &[&str] = &[
    "Ka", "Ko", "Ma", "Mi", "Na", "No", "Ta", "To", "Sa", "Su", "Ha", "Ho", "Be", "Bo", "Da", "De", "Fe", "Fi", "Ga",
    "Go", "La", "Lo", "Ra", "Ro", "Va", "Wi", "Ye", "Zu", "Pe", "Ch",
];
const SYL_B: &[&str] = &[
    "ber", "dan", "hara", "kawa", "mura", "lan", "son", "ter", "vic", "gel", "ner", "ford", "wick", "moto", "yama",
    "shi", "ran", "ley", "ton", "zel",
];
const SYL_C: &[&str] = &["", "a", "o", "er", "man", "ski", "ez", "ini", "berg", "sen"];

pub const MRN_SYSTEM: &str = "http://hospital.smarthealthit.org";
const DAY: i64 = 86_400;
/// 2008-01-01T00:00:00Z: first clinical day.
const EPOCH_START: i64 = 1_199_145_600;

/// How many resources of each kind a generated patient keeps (at most; fewer if the template
/// has fewer).
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub encounters: usize,
    pub observations: usize,
    pub conditions: usize,
    pub patients_per_bundle: usize,
    /// Every n-th patient gets the clinical resources; the others are a Patient only.
    pub clinical_every: usize,
}

/// What the queries and checks know about one generated patient.
pub struct PatientMeta {
    pub family: String,
    pub mrn: String,
    /// Index of its Patient entry in the flattened list of all created resources (bundle
    /// order, entry order): Encounters, Observations, Conditions follow in that order.
    pub first_entry: usize,
    /// Encounter start times (unix seconds).
    pub encounters: Vec<i64>,
    /// Observations: (index into [`Generated::codes`], effective time in unix seconds).
    pub observations: Vec<(u16, i64)>,
    pub conditions: usize,
}

impl PatientMeta {
    pub fn resources(&self) -> usize {
        1 + self.encounters.len() + self.observations.len() + self.conditions
    }
}

pub struct Generated {
    /// Practitioners and Organizations, created before timing.
    pub setup: Bundle,
    pub bundles: Vec<Bundle>,
    pub patients: Vec<PatientMeta>,
    /// Distinct LOINC codes of the Observations.
    pub codes: Vec<String>,
    pub templates: usize,
}

impl Generated {
    pub fn resources(&self) -> usize {
        self.bundles.iter().map(|b| b.entries).sum()
    }

    pub fn bytes(&self) -> usize {
        self.bundles.iter().map(|b| b.body.len()).sum()
    }
}

struct Template {
    patient: Value,
    encounters: Vec<Value>,
    observations: Vec<Value>,
    conditions: Vec<Value>,
}

/// splitmix64: a deterministic per-patient hash, so a run is reproducible.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub fn family_name(i: usize) -> String {
    let h = mix(i as u64 ^ 0xFA41);
    let a = SYL_A[(h % SYL_A.len() as u64) as usize];
    let b = SYL_B[((h >> 16) % SYL_B.len() as u64) as usize];
    let c = SYL_C[((h >> 32) % SYL_C.len() as u64) as usize];
    format!("{a}{b}{c}")
}

pub fn mrn(i: usize) -> String {
    format!("MRN{i:08}")
}

fn strip_digits(s: &str) -> String {
    s.chars().filter(|c| !c.is_ascii_digit()).collect()
}

fn urn() -> String {
    format!("urn:uuid:{}", uuid::Uuid::new_v4().hyphenated())
}

pub fn rfc3339(secs: i64) -> Result<String> {
    let t = time::OffsetDateTime::from_unix_timestamp(secs)?;
    Ok(t.format(&time::format_description::well_known::Rfc3339)?)
}

pub fn day(secs: i64) -> Result<String> {
    let t = time::OffsetDateTime::from_unix_timestamp(secs)?;
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    Ok(t.format(fmt)?)
}

fn entry(full_url: &str, resource: Value) -> Value {
    let rtype = resource.get("resourceType").and_then(Value::as_str).unwrap_or_default().to_string();
    json!({"fullUrl": full_url, "resource": resource, "request": {"method": "POST", "url": rtype}})
}

fn bundle(entries: Vec<Value>) -> Result<Bundle> {
    let n = entries.len();
    let b = json!({"resourceType": "Bundle", "type": "transaction", "entry": entries});
    Ok(Bundle { body: Bytes::from(serde_json::to_vec(&b)?), entries: n })
}

/// Reads the Synthea patient bundles in `dir` and generates `patients` patients.
pub fn generate(dir: &Path, patients: usize, shape: Shape) -> Result<Generated> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    files.retain(|p| p.extension().is_some_and(|e| e == "json"));
    files.sort();

    let mut templates = Vec::new();
    let mut givens = Vec::new();
    let mut shared = Vec::new();
    for path in &files {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.starts_with("hospitalInformation") || name.starts_with("practitionerInformation") {
            continue;
        }
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let v: Value = serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
        let mut t = Template { patient: Value::Null, encounters: vec![], observations: vec![], conditions: vec![] };
        for e in v.get("entry").and_then(Value::as_array).into_iter().flatten() {
            let Some(r) = e.get("resource") else { continue };
            match r.get("resourceType").and_then(Value::as_str) {
                Some("Patient") => t.patient = r.clone(),
                Some("Encounter") if t.encounters.len() < shape.encounters => t.encounters.push(r.clone()),
                Some("Observation") if t.observations.len() < shape.observations => t.observations.push(r.clone()),
                Some("Condition") if t.conditions.len() < shape.conditions => t.conditions.push(r.clone()),
                Some("Practitioner" | "Organization") => shared.push(r.clone()),
                _ => {}
            }
        }
        if t.patient.is_null() || t.encounters.is_empty() {
            continue;
        }
        for n in t.patient.get("name").and_then(Value::as_array).into_iter().flatten() {
            for g in n.get("given").and_then(Value::as_array).into_iter().flatten() {
                if let Some(g) = g.as_str() {
                    givens.push(strip_digits(g));
                }
            }
        }
        templates.push(t);
    }
    if templates.is_empty() || givens.is_empty() {
        bail!("no usable patient bundles (with a Patient and an Encounter) in {}", dir.display());
    }

    // Shared Practitioners and Organizations: one setup transaction.
    let mut setup_entries = Vec::new();
    let mut practitioners = 0;
    for mut r in shared {
        if let Some(o) = r.as_object_mut() {
            o.remove("id");
        }
        if r["resourceType"] == "Practitioner" {
            practitioners += 1;
        }
        setup_entries.push(entry(&urn(), r));
    }
    let setup = bundle(setup_entries)?;

    let mut codes: Vec<String> = Vec::new();
    let mut code_ix: HashMap<String, u16> = HashMap::new();
    let mut metas = Vec::with_capacity(patients);
    let mut bundles = Vec::new();
    let mut entries = Vec::new();
    let mut next_entry = 0usize;
    for i in 0..patients {
        let t_full = &templates[i % templates.len()];
        let bare;
        let t = if i % shape.clinical_every.max(1) == 0 {
            t_full
        } else {
            bare = Template {
                patient: t_full.patient.clone(),
                encounters: vec![],
                observations: vec![],
                conditions: vec![],
            };
            &bare
        };
        let h = mix(i as u64);
        let pat_url = urn();
        let family = family_name(i);
        let mrn = mrn(i);
        let given = &givens[(h % givens.len() as u64) as usize];

        let mut p = t.patient.clone();
        if let Some(o) = p.as_object_mut() {
            for k in ["id", "text", "deceasedDateTime", "multipleBirthInteger", "multipleBirthBoolean"] {
                o.remove(k);
            }
            o.insert("name".into(), json!([{"use": "official", "family": family, "given": [given]}]));
            o.insert(
                "identifier".into(),
                json!([
                    {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR",
                                          "display": "Medical Record Number"}], "text": "Medical Record Number"},
                     "system": MRN_SYSTEM, "value": mrn},
                    {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "SS",
                                          "display": "Social Security Number"}], "text": "Social Security Number"},
                     "system": "http://hl7.org/fhir/sid/us-ssn",
                     "value": format!("9{:02}-{:02}-{:04}", i / 1_000_000 % 100, i / 10_000 % 100, i % 10_000)}
                ]),
            );
            let birth = EPOCH_START - (20 * 365 + (h >> 8) as i64 % (60 * 365)) * DAY;
            o.insert("birthDate".into(), json!(day(birth)?));
        }
        let first_entry = next_entry;
        entries.push(entry(&pat_url, p));

        // Clinical timeline: first day in 2008..2018, observations every 30–180 days, 08:00–16:59.
        let start_day = EPOCH_START / DAY + ((h >> 20) % 3_650) as i64;
        let step = 30 + ((h >> 40) % 150) as i64;
        let n_obs = t.observations.len().max(1);
        let n_enc = t.encounters.len();
        let time_of = |k: usize| {
            let d = start_day + k as i64 * step;
            d * DAY + (8 * 3600) + (mix(h ^ k as u64) % (9 * 3600)) as i64
        };
        // Encounter e takes the date of the first observation assigned to it.
        let enc_of = |k: usize| k * n_enc / n_obs;
        let mut enc_times = Vec::with_capacity(n_enc);
        let mut enc_urls = Vec::with_capacity(n_enc);
        for (e, te) in t.encounters.iter().enumerate() {
            let k = (0..n_obs).find(|&k| enc_of(k) == e).unwrap_or(0);
            let start = time_of(k);
            let url = urn();
            let mut r = te.clone();
            if let Some(o) = r.as_object_mut() {
                o.remove("id");
                o.insert("subject".into(), json!({"reference": pat_url}));
                let pr = (i + e) % practitioners.max(1);
                o.insert("participant".into(), json!([{"individual": {"reference": format!("@PRACT{pr}@")}}]));
                o.insert("serviceProvider".into(), json!({"reference": format!("@ORG{}@", i % practitioners.max(1))}));
                o.insert("period".into(), json!({"start": rfc3339(start)?, "end": rfc3339(start + 900)?}));
            }
            entries.push(entry(&url, r));
            enc_times.push(start);
            enc_urls.push(url);
        }
        let mut obs = Vec::with_capacity(t.observations.len());
        for (k, to) in t.observations.iter().enumerate() {
            let at = time_of(k);
            let mut r = to.clone();
            let code = r
                .pointer("/code/coding/0/code")
                .and_then(Value::as_str)
                .context("template Observation without code")?
                .to_string();
            let next = codes.len() as u16;
            let ci = *code_ix.entry(code.clone()).or_insert_with(|| {
                codes.push(code);
                next
            });
            if let Some(o) = r.as_object_mut() {
                for k in ["id", "hasMember", "derivedFrom", "basedOn", "partOf", "focus", "performer", "specimen"] {
                    o.remove(k);
                }
                o.insert("subject".into(), json!({"reference": pat_url}));
                o.insert("encounter".into(), json!({"reference": enc_urls[enc_of(k).min(n_enc - 1)]}));
                o.insert("effectiveDateTime".into(), json!(rfc3339(at)?));
                o.insert("issued".into(), json!(rfc3339(at)?));
            }
            entries.push(entry(&urn(), r));
            obs.push((ci, at));
        }
        for tc in t.conditions.iter().filter(|_| n_enc > 0) {
            let mut r = tc.clone();
            if let Some(o) = r.as_object_mut() {
                o.remove("id");
                o.remove("abatementDateTime");
                o.insert("subject".into(), json!({"reference": pat_url}));
                o.insert("encounter".into(), json!({"reference": enc_urls[0]}));
                o.insert("onsetDateTime".into(), json!(rfc3339(enc_times[0])?));
                o.insert("recordedDate".into(), json!(rfc3339(enc_times[0])?));
            }
            entries.push(entry(&urn(), r));
        }
        let meta = PatientMeta {
            family,
            mrn,
            first_entry,
            encounters: enc_times,
            observations: obs,
            conditions: if n_enc > 0 { t.conditions.len() } else { 0 },
        };
        next_entry += meta.resources();
        metas.push(meta);
        if (i + 1) % shape.patients_per_bundle.max(1) == 0 || i + 1 == patients {
            bundles.push(bundle(std::mem::take(&mut entries))?);
        }
    }
    Ok(Generated { setup, bundles, patients: metas, codes, templates: templates.len() })
}

/// Replaces the `@PRACTn@`/`@ORGn@` placeholders with the server references of the shared
/// resources (`refs` in setup-bundle order: the n-th Practitioner and n-th Organization).
pub fn bind_shared(bundles: &mut [Bundle], practitioners: &[String], organizations: &[String]) -> Result<()> {
    if practitioners.is_empty() || organizations.is_empty() {
        bail!("the setup created no Practitioner or no Organization");
    }
    for b in bundles.iter_mut() {
        let text = std::str::from_utf8(&b.body)?;
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(pos) = rest.find('@') {
            out.push_str(&rest[..pos]);
            let tail = &rest[pos + 1..];
            let (kind, list) = if tail.starts_with("PRACT") {
                ("PRACT", practitioners)
            } else if tail.starts_with("ORG") {
                ("ORG", organizations)
            } else {
                out.push('@');
                rest = tail;
                continue;
            };
            let digits = &tail[kind.len()..];
            let end = digits.find('@').context("unterminated placeholder")?;
            let n: usize = digits[..end].parse().context("bad placeholder")?;
            out.push_str(&list[n % list.len()]);
            rest = &digits[end + 1..];
        }
        out.push_str(rest);
        b.body = Bytes::from(out.into_bytes());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn family_prefixes_have_moderate_selectivity() {
        let n = 100_000;
        let mut by_prefix: HashMap<String, usize> = HashMap::new();
        for i in 0..n {
            *by_prefix.entry(family_name(i)[..3].to_lowercase()).or_default() += 1;
        }
        let max = by_prefix.values().max().copied().unwrap_or(0);
        assert!(by_prefix.len() > 300, "{} prefixes", by_prefix.len());
        assert!(max < 2_000, "largest prefix has {max} patients");
    }

    #[test]
    fn placeholders_are_bound() -> Result<()> {
        let mut b = vec![Bundle {
            body: Bytes::from_static(b"{\"a\":\"@PRACT3@\",\"b\":\"@ORG0@\",\"c\":\"x@y\"}"),
            entries: 1,
        }];
        bind_shared(&mut b, &["Practitioner/p0".into(), "Practitioner/p1".into()], &["Organization/o".into()])?;
        assert_eq!(&b[0].body[..], b"{\"a\":\"Practitioner/p1\",\"b\":\"Organization/o\",\"c\":\"x@y\"}");
        Ok(())
    }
}

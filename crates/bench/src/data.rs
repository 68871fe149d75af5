//! The input: Synthea R4 transaction Bundles, replicated with fresh ids until the requested
//! number of resources is reached. Everything is prepared in memory before any timing starts.
//!
//! Each patient bundle is turned once into a [`Template`]: the compact serialisation split into
//! literal text, `urn:uuid:` ids (every fullUrl uuid, wherever it occurs in the text) and
//! copy-number markers (in the Patient's names and identifiers). A copy is then one pass that
//! concatenates the literals with fresh uuids and the copy number, so references stay consistent
//! within the bundle and no two copies share an id or a patient identifier.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use serde_json::Value;

/// Text put into the template where the copy number goes; never present in Synthea data.
const COPY_MARK: &str = "@@mamori-bench-copy@@";
const UUID_LEN: usize = 36;

/// One transaction Bundle ready to POST.
pub struct Bundle {
    pub body: Bytes,
    /// Number of entries (= resources created).
    pub entries: usize,
}

/// The prepared input of a run.
pub struct Corpus {
    /// Organization and Practitioner bundles, loaded once (untimed) before the patients.
    pub setup: Vec<Bundle>,
    /// Replicated patient bundles, POSTed during the timed ingest.
    pub bundles: Vec<Bundle>,
    /// Patient bundle files the copies were made from.
    pub templates: usize,
}

impl Corpus {
    pub fn resources(&self) -> usize {
        self.bundles.iter().map(|b| b.entries).sum()
    }

    pub fn bytes(&self) -> usize {
        self.bundles.iter().map(|b| b.body.len()).sum()
    }
}

/// The Synthea directory: the explicit one, else `testdata/synthea-r4` in the repository, else
/// `../shared/data/synthea-r4` next to the repository.
pub fn locate(explicit: Option<PathBuf>, repo_root: &Path) -> Result<PathBuf> {
    if let Some(dir) = explicit {
        if !dir.is_dir() {
            bail!("--synthea {}: not a directory", dir.display());
        }
        return Ok(dir);
    }
    let candidates = [repo_root.join("testdata/synthea-r4"), repo_root.join("../shared/data/synthea-r4")];
    for c in &candidates {
        if c.is_dir() {
            return Ok(c.clone());
        }
    }
    bail!(
        "no Synthea data found (looked in {} and {}); pass --synthea DIR",
        candidates[0].display(),
        candidates[1].display()
    )
}

/// Reads the directory and replicates patient bundles until at least `min_resources` entries.
pub fn load(dir: &Path, min_resources: usize) -> Result<Corpus> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("cannot list {}", dir.display()))?;
    files.retain(|p| p.extension().is_some_and(|e| e == "json"));
    files.sort();

    let mut setup = Vec::new();
    let mut templates = Vec::new();
    for path in &files {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let value: Value = serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
        let entries =
            entry_count(&value).with_context(|| format!("{} is not a Bundle with entries", path.display()))?;
        if name.starts_with("hospitalInformation") || name.starts_with("practitionerInformation") {
            let body = serde_json::to_vec(&value)?;
            setup.push(Bundle { body: Bytes::from(body), entries });
        } else {
            templates
                .push(Template::new(value, entries).with_context(|| format!("cannot prepare {}", path.display()))?);
        }
    }
    if templates.is_empty() {
        bail!("no patient bundles in {}", dir.display());
    }

    let mut bundles = Vec::new();
    let mut total = 0;
    let mut copy = 0usize;
    while total < min_resources {
        let t = &templates[copy % templates.len()];
        bundles.push(Bundle { body: Bytes::from(t.instantiate(copy)), entries: t.entries });
        total += t.entries;
        copy += 1;
    }
    Ok(Corpus { setup, bundles, templates: templates.len() })
}

fn entry_count(bundle: &Value) -> Option<usize> {
    if bundle.get("resourceType")?.as_str()? != "Bundle" {
        return None;
    }
    Some(bundle.get("entry")?.as_array()?.len())
}

enum Seg {
    Lit(Range<usize>),
    Uuid(usize),
    Copy,
}

struct Template {
    text: String,
    segs: Vec<Seg>,
    uuids: usize,
    entries: usize,
}

impl Template {
    fn new(mut bundle: Value, entries: usize) -> Result<Template> {
        let mut ids: HashMap<String, usize> = HashMap::new();
        let list = bundle.get_mut("entry").and_then(Value::as_array_mut).context("no entry array")?;
        for e in list.iter_mut() {
            if let Some(u) = e.get("fullUrl").and_then(Value::as_str).and_then(|u| u.strip_prefix("urn:uuid:"))
                && u.len() == UUID_LEN
            {
                let next = ids.len();
                ids.entry(u.to_string()).or_insert(next);
            }
            if let Some(r) = e.get_mut("resource")
                && r.get("resourceType").and_then(Value::as_str) == Some("Patient")
            {
                mark_patient(r);
            }
        }
        let text = serde_json::to_string(&bundle)?;
        let segs = segments(&text, &ids);
        Ok(Template { text, segs, uuids: ids.len(), entries })
    }

    fn instantiate(&self, copy: usize) -> Vec<u8> {
        let fresh: Vec<String> = (0..self.uuids).map(|_| uuid::Uuid::new_v4().hyphenated().to_string()).collect();
        let copy = copy.to_string();
        let mut out = String::with_capacity(self.text.len() + 64);
        for s in &self.segs {
            match s {
                Seg::Lit(r) => out.push_str(&self.text[r.clone()]),
                Seg::Uuid(i) => out.push_str(&fresh[*i]),
                Seg::Copy => out.push_str(&copy),
            }
        }
        out.into_bytes()
    }
}

/// Appends the copy marker to the Patient's family names and identifier values.
fn mark_patient(patient: &mut Value) {
    let append = |v: &mut Value| {
        if let Some(s) = v.as_str() {
            *v = Value::String(format!("{s}-{COPY_MARK}"));
        }
    };
    if let Some(names) = patient.get_mut("name").and_then(Value::as_array_mut) {
        for n in names {
            if let Some(f) = n.get_mut("family") {
                append(f);
            }
        }
    }
    if let Some(idents) = patient.get_mut("identifier").and_then(Value::as_array_mut) {
        for i in idents {
            if let Some(v) = i.get_mut("value") {
                append(v);
            }
        }
    }
}

fn looks_like_uuid(b: &[u8]) -> bool {
    b.len() >= UUID_LEN
        && b[8] == b'-'
        && b[13] == b'-'
        && b[18] == b'-'
        && b[23] == b'-'
        && b[..UUID_LEN].iter().all(|c| c.is_ascii_hexdigit() || *c == b'-')
}

/// Splits `text` at every occurrence of a known uuid and of the copy marker.
fn segments(text: &str, ids: &HashMap<String, usize>) -> Vec<Seg> {
    let b = text.as_bytes();
    let mut segs = Vec::new();
    let mut lit_start = 0;
    let mut i = 0;
    while i < b.len() {
        let hit = if b[i..].starts_with(COPY_MARK.as_bytes()) {
            Some((Seg::Copy, COPY_MARK.len()))
        } else if looks_like_uuid(&b[i..]) {
            // A uuid-shaped run is ASCII, so slicing the str here is on char boundaries.
            ids.get(&text[i..i + UUID_LEN]).map(|&n| (Seg::Uuid(n), UUID_LEN))
        } else {
            None
        };
        match hit {
            Some((seg, len)) => {
                if lit_start < i {
                    segs.push(Seg::Lit(lit_start..i));
                }
                segs.push(seg);
                i += len;
                lit_start = i;
            }
            None => i += 1,
        }
    }
    if lit_start < b.len() {
        segs.push(Seg::Lit(lit_start..b.len()));
    }
    segs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_get_fresh_consistent_ids_and_marked_patients() -> Result<()> {
        let u = "018f428e-34f6-4707-8009-5ad742f901e7";
        let bundle = serde_json::json!({
            "resourceType": "Bundle", "type": "transaction",
            "entry": [
                {"fullUrl": format!("urn:uuid:{u}"),
                 "resource": {"resourceType": "Patient", "id": u,
                              "name": [{"family": "Koepp"}],
                              "identifier": [{"value": "abc"}]},
                 "request": {"method": "POST", "url": "Patient"}},
                {"fullUrl": "urn:uuid:118f428e-34f6-4707-8009-5ad742f901e7",
                 "resource": {"resourceType": "Observation",
                              "subject": {"reference": format!("urn:uuid:{u}")}},
                 "request": {"method": "POST", "url": "Observation"}}
            ]
        });
        let t = Template::new(bundle, 2)?;
        let a: Value = serde_json::from_slice(&t.instantiate(3))?;
        let b: Value = serde_json::from_slice(&t.instantiate(4))?;
        let full = a["entry"][0]["fullUrl"].as_str().context("fullUrl")?;
        assert_ne!(full, format!("urn:uuid:{u}"));
        assert_eq!(a["entry"][1]["resource"]["subject"]["reference"].as_str(), Some(full));
        assert_ne!(a["entry"][0]["fullUrl"], b["entry"][0]["fullUrl"]);
        assert_eq!(a["entry"][0]["resource"]["name"][0]["family"].as_str(), Some("Koepp-3"));
        assert_eq!(b["entry"][0]["resource"]["identifier"][0]["value"].as_str(), Some("abc-4"));
        Ok(())
    }
}

//! `mamori audit …`: the signing key, offline verification and export of the audit trail
//! (AUD-2). Verification needs the database file (or an export) and the public key only.

use std::io::{BufRead, BufWriter, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use mamori_audit::{AuditEntry, LogVerifier, SigningKey, VerifierKey, VerifyReport, merkle, split_notes};
use mamori_store::audit_log::AuditLogReader;
use serde_json::{Value, json};

use crate::commands::write_private;
use crate::config::Config;

pub const EXPORT_FORMAT: &str = "mamori-audit-export/1";

/// Creates the checkpoint signing key (0600) and the public verifier key; returns the latter.
pub fn create_signing_key(secret: &Path, public: &Path) -> anyhow::Result<String> {
    let suffix: u32 = rand::random();
    let key = SigningKey::generate(&format!("mamori-audit-{suffix:08x}"))?;
    write_private(secret, key.to_skey().as_bytes(), 0o600)?;
    let vkey = key.verifier_key().to_vkey();
    write_private(public, format!("{vkey}\n").as_bytes(), 0o644)?;
    Ok(vkey)
}

pub fn load_signing_key(path: &Path) -> anyhow::Result<SigningKey> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).with_context(|| format!("cannot read audit signing key {}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        bail!(
            "audit signing key {} is accessible to group or others; run: chmod 600 {}",
            path.display(),
            path.display()
        );
    }
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(path)?);
    SigningKey::from_skey(text.trim()).with_context(|| format!("{} is not an audit signing key", path.display()))
}

fn load_verifier_key(path: &Path) -> anyhow::Result<VerifierKey> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read verifier key {}", path.display()))?;
    VerifierKey::from_vkey(text.trim()).with_context(|| format!("{} is not a verifier key", path.display()))
}

fn read_witness(path: &Path) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(e).with_context(|| format!("cannot read witness file {}", path.display())),
    }
}

/// `mamori audit verify --data-dir DIR`: the live database, its checkpoints and the witness file.
pub fn verify_data_dir(data_dir: &Path, extra: &[std::path::PathBuf]) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(data_dir)?;
    let key = load_verifier_key(&data_dir.join(&cfg.audit.verifier_key))?;
    let reader = AuditLogReader::open(&data_dir.join(&cfg.storage.audit_database))?;
    let stored = reader.checkpoints()?;
    let witness_text = read_witness(&data_dir.join(&cfg.audit.witness_file))?;
    let mut witnessed: Vec<String> = split_notes(&witness_text).into_iter().map(str::to_string).collect();
    witnessed.extend(read_extra_checkpoints(extra)?);
    let started = std::time::Instant::now();
    let mut v = LogVerifier::new(&stored, &witnessed, &key);
    reader.for_each_entry_ref(|e| v.push_ref(e))?;
    Ok(report(v.finish(), started))
}

fn read_extra_checkpoints(paths: &[std::path::PathBuf]) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for p in paths {
        let text = std::fs::read_to_string(p).with_context(|| format!("cannot read checkpoint {}", p.display()))?;
        out.extend(split_notes(&text).into_iter().map(str::to_string));
    }
    Ok(out)
}

/// `mamori audit verify FILE`: an export, checked without any database.
pub fn verify_export(file: &Path, key: Option<&Path>, extra: &[std::path::PathBuf]) -> anyhow::Result<ExitCode> {
    let f = std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let mut lines = std::io::BufReader::new(f).lines();
    let header: Value = serde_json::from_str(&lines.next().context("empty export")??).context("bad export header")?;
    if header["format"] != EXPORT_FORMAT {
        bail!("{} is not a {EXPORT_FORMAT} file", file.display());
    }
    let key = match key {
        Some(p) => load_verifier_key(p)?,
        None => {
            eprintln!(
                "warning: using the verifier key embedded in the export; pass --key with a key obtained independently"
            );
            VerifierKey::from_vkey(header["verifier_key"].as_str().context("export has no verifier_key")?)?
        }
    };
    // Checkpoints and proofs follow the entries; entries are buffered as leaf inputs only.
    let mut entries = Vec::new();
    let mut stored = Vec::new();
    let mut witnessed = read_extra_checkpoints(extra)?;
    let mut proofs = Vec::new();
    for (n, line) in lines.enumerate() {
        let v: Value = serde_json::from_str(&line?).with_context(|| format!("line {} is not JSON", n + 2))?;
        if let Some(e) = v.get("entry") {
            entries.push(entry_from_json(e).with_context(|| format!("line {}: bad entry", n + 2))?);
        } else if let Some(c) = v.get("checkpoint").and_then(Value::as_str) {
            match v["source"].as_str() {
                Some("witness") => witnessed.push(c.to_string()),
                _ => stored.push(c.to_string()),
            }
        } else if let Some(p) = v.get("consistency") {
            proofs.push(p.clone());
        }
    }
    let started = std::time::Instant::now();
    let mut v = LogVerifier::new(&stored, &witnessed, &key);
    for e in &entries {
        v.push(e);
    }
    let code = report(v.finish(), started);
    let bad_proofs = check_proofs(&proofs, &stored, &key);
    for b in &bad_proofs {
        println!("FINDING: {b}");
    }
    Ok(if bad_proofs.is_empty() { code } else { ExitCode::from(2) })
}

/// Checks the exported consistency proofs between successive stored checkpoints.
fn check_proofs(proofs: &[Value], stored: &[String], key: &VerifierKey) -> Vec<String> {
    let roots: std::collections::HashMap<u64, [u8; 32]> =
        stored.iter().filter_map(|n| mamori_audit::open(n, key).ok()).map(|c| (c.size, c.root)).collect();
    let mut bad = Vec::new();
    for p in proofs {
        let (from, to) = (p["from"].as_u64().unwrap_or(0), p["to"].as_u64().unwrap_or(0));
        let hashes: Option<Vec<[u8; 32]>> =
            p["proof"].as_array().map(|a| a.iter().filter_map(|h| h.as_str().and_then(hex32)).collect());
        let ok = match (roots.get(&from), roots.get(&to), hashes) {
            (Some(a), Some(b), Some(h)) => merkle::verify_consistency(from, to, a, b, &h),
            _ => false,
        };
        if !ok {
            bad.push(format!("consistency proof from size {from} to {to} does not verify"));
        }
    }
    bad
}

fn hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn hex(h: &[u8; 32]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

fn report(r: VerifyReport, started: std::time::Instant) -> ExitCode {
    let secs = started.elapsed().as_secs_f64();
    println!(
        "verified {} entries and {} checkpoints in {:.3} s; checkpoints cover the first {} entries",
        r.entries_checked, r.checkpoints_checked, secs, r.covered_size
    );
    if r.entries_checked > r.covered_size {
        println!("note: the last {} entries are not yet covered by a checkpoint", r.entries_checked - r.covered_size);
    }
    if r.is_ok() {
        println!("audit trail: OK");
        ExitCode::SUCCESS
    } else {
        for f in &r.findings {
            println!("FINDING: {f}");
        }
        println!("audit trail: {} finding(s)", r.findings.len());
        ExitCode::from(2)
    }
}

fn entry_from_json(v: &Value) -> anyhow::Result<AuditEntry> {
    let s = |k: &str| -> anyhow::Result<String> {
        v[k].as_str().map(str::to_string).with_context(|| format!("{k} missing"))
    };
    let o = |k: &str| v[k].as_str().map(str::to_string);
    Ok(AuditEntry {
        seq: v["seq"].as_u64().context("seq")?,
        recorded_us: v["recorded_us"].as_i64().context("recorded_us")?,
        request_id: s("request_id")?,
        actor: o("actor"),
        role: o("role"),
        source: s("source")?,
        action: s("action")?,
        rtype: o("rtype"),
        rid: o("rid"),
        version: v["version"].as_u64(),
        patients: v["patients"]
            .as_array()
            .context("patients")?
            .iter()
            .map(|p| p.as_str().map(str::to_string).context("patient"))
            .collect::<anyhow::Result<_>>()?,
        outcome: u16::try_from(v["outcome"].as_u64().context("outcome")?)?,
        detail: o("detail"),
    })
}

/// `mamori audit export --data-dir DIR --out FILE`: entries, checkpoints (stored and witnessed)
/// and consistency proofs between successive stored checkpoints, as JSON lines.
pub async fn export(data_dir: &Path, out: &Path) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(data_dir)?;
    let vkey = load_verifier_key(&data_dir.join(&cfg.audit.verifier_key))?;
    let reader = AuditLogReader::open(&data_dir.join(&cfg.storage.audit_database))?;
    let stored = reader.checkpoints()?;
    let witness_text = read_witness(&data_dir.join(&cfg.audit.witness_file))?;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(out)
        .with_context(|| format!("cannot create {} (it must not exist yet)", out.display()))?;
    let mut w = BufWriter::new(file);
    writeln!(w, "{}", json!({"format": EXPORT_FORMAT, "verifier_key": vkey.to_vkey()}))?;
    let mut leaves = Vec::new();
    let mut io_err = None;
    let n = reader.for_each_entry(|e| {
        leaves.push(e.leaf_hash());
        if io_err.is_none()
            && let Err(err) = writeln!(w, "{}", json!({"entry": mamori_store::audit_log::entry_json(&e)}))
        {
            io_err = Some(err);
        }
    })?;
    if let Some(e) = io_err {
        return Err(e.into());
    }
    let sizes: Vec<u64> = stored.iter().filter_map(|n| mamori_audit::open(n, &vkey).ok()).map(|c| c.size).collect();
    for note in &stored {
        writeln!(w, "{}", json!({"checkpoint": note, "source": "log"}))?;
    }
    for note in split_notes(&witness_text) {
        writeln!(w, "{}", json!({"checkpoint": note, "source": "witness"}))?;
    }
    for pair in sizes.windows(2) {
        let (from, to) = (pair[0], pair[1]);
        if to as usize <= leaves.len() {
            let proof = merkle::consistency_proof(&leaves[..to as usize], from)?;
            let hexes: Vec<String> = proof.iter().map(hex).collect();
            writeln!(w, "{}", json!({"consistency": {"from": from, "to": to, "proof": hexes}}))?;
        }
    }
    w.flush()?;
    // The export discloses who accessed which patient: it is itself recorded in the trail.
    let store = crate::commands::open_store(data_dir, &cfg)?;
    let ev = mamori_store::AuditEvent::new(mamori_store::Action::AuditExport, 200)
        .with_detail(format!("{n} entries to {}", out.file_name().map(|f| f.to_string_lossy()).unwrap_or_default()));
    let recorded = store.record_operator_action(crate::commands::operator_ctx(), ev).await;
    store.shutdown();
    recorded?;
    println!("exported {n} entries and {} checkpoints to {}", stored.len(), out.display());
    Ok(ExitCode::SUCCESS)
}

/// Which review view the operator asked for (exactly one of the options).
pub struct ReviewView {
    pub account: Option<String>,
    pub patient: Option<String>,
    pub counts: bool,
    pub max_patients_per_hour: Option<u64>,
    pub outside_hours: Option<String>,
    pub utc_offset: String,
    pub flagged: bool,
    pub emergency: bool,
}

/// `mamori audit review`: the review views, run through the store so the review is audited.
pub async fn review(
    data_dir: &Path,
    view: ReviewView,
    from: Option<String>,
    to: Option<String>,
) -> anyhow::Result<ExitCode> {
    use mamori_store::Store;
    use mamori_store::audit_log::{Period, ReviewQuery, WorkingHours};
    use mamori_store::query::{parse_instant, parse_instant_end};
    let mut period = Period::ALL;
    if let Some(f) = &from {
        period.from_us = parse_instant(f)?;
    }
    if let Some(t) = &to {
        period.to_us = parse_instant_end(t)?;
    }
    let ReviewView { account, patient, counts, max_patients_per_hour, outside_hours, utc_offset, flagged, emergency } =
        view;
    let query = match (account, patient, counts, max_patients_per_hour, outside_hours, flagged, emergency) {
        (Some(account), None, false, None, None, false, false) => ReviewQuery::Account { account, period },
        (None, Some(patient), false, None, None, false, false) => ReviewQuery::Patient { patient, period },
        (None, None, true, None, None, false, false) => ReviewQuery::PatientCounts { period },
        (None, None, false, Some(limit), None, false, false) => ReviewQuery::ManyPatients { period, limit },
        (None, None, false, None, Some(hours), false, false) => {
            ReviewQuery::OutsideHours { period, hours: WorkingHours::parse(&hours, &utc_offset)? }
        }
        (None, None, false, None, None, true, false) => ReviewQuery::Flagged { period, flagged: Vec::new() },
        (None, None, false, None, None, false, true) => ReviewQuery::Emergency { period },
        _ => bail!(
            "give exactly one of --account, --patient, --counts, --max-patients-per-hour, --outside-hours, \
             --flagged, --emergency"
        ),
    };
    let cfg = Config::load(data_dir)?;
    let store = crate::commands::open_store(data_dir, &cfg)?;
    let result = store.review(crate::commands::operator_ctx(), query).await;
    store.shutdown();
    println!("{}", serde_json::to_string_pretty(&result?)?);
    Ok(ExitCode::SUCCESS)
}

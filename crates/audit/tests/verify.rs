#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod support;

use mamori_audit::checkpoint::{Checkpoint, SigningKey, sign};
use mamori_audit::merkle::TreeBuilder;
use mamori_audit::verify::{CheckpointSource, FindingKind, split_notes, verify_log, verify_log_witnessed};
use mamori_audit::{AuditEntry, VerifyReport};
use proptest::prelude::*;
use support::entry;

const NAME: &str = "mamori.example/clinic";

fn key() -> SigningKey {
    SigningKey::from_seed(NAME, &[42; 32]).unwrap()
}

fn log(n: u64) -> Vec<AuditEntry> {
    (1..=n).map(entry).collect()
}

/// Signed checkpoints of `entries` at every multiple of `k`.
fn checkpoints(entries: &[AuditEntry], k: usize, key: &SigningKey) -> Vec<String> {
    let mut t = TreeBuilder::new();
    let mut out = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        t.push(e.leaf_hash());
        if (i + 1).is_multiple_of(k) {
            let c = Checkpoint { origin: key.name().into(), size: t.size(), root: t.root(), extensions: vec![] };
            out.push(sign(&c, key).unwrap());
        }
    }
    out
}

fn has(r: &VerifyReport, seq: Option<u64>, pred: impl Fn(&FindingKind) -> bool) -> bool {
    r.findings.iter().any(|f| f.seq == seq && pred(&f.kind))
}

#[test]
fn intact_log_verifies() {
    let l = log(100);
    let c = checkpoints(&l, 10, &key());
    let r = verify_log(&l, &c, &key().verifier_key());
    assert!(r.is_ok(), "{:?}", r.findings);
    assert_eq!((r.entries_checked, r.checkpoints_checked, r.covered_size), (100, 10, 100));
    let r = verify_log(Vec::<AuditEntry>::new(), &[] as &[String], &key().verifier_key());
    assert!(r.is_ok());
}

#[test]
fn swap_is_one_reordering() {
    let mut l = log(20);
    let c = checkpoints(&l, 5, &key());
    l.swap(6, 7); // seq 7 and 8
    let r = verify_log(&l, &c, &key().verifier_key());
    let entry_findings: Vec<_> = r.findings.iter().filter(|f| f.seq.is_some()).collect();
    assert_eq!(entry_findings.len(), 1, "{:?}", r.findings);
    assert_eq!(entry_findings[0].seq, Some(7));
    assert_eq!(entry_findings[0].kind, FindingKind::Reordered { after_seq: 8, count: 1 });
    assert!(has(&r, None, |k| matches!(k, FindingKind::CheckpointMismatch { size: 10, last_good_size: 5, .. })));
}

#[test]
fn block_deletion_and_duplicates() {
    let mut l = log(30);
    let c = checkpoints(&l, 10, &key());
    l.drain(11..14); // seq 12, 13, 14
    let dup = l[3].clone();
    l.insert(4, dup); // seq 4 again after 4
    let r = verify_log(&l, &c, &key().verifier_key());
    assert!(has(&r, Some(12), |k| *k == FindingKind::Deleted { after_seq: 11, count: 3 }), "{:?}", r.findings);
    assert!(has(&r, Some(4), |k| *k == FindingKind::Inserted { after_seq: 4, count: 1 }));
    assert!(has(&r, None, |k| matches!(k, FindingKind::CheckpointMismatch { size: 10, last_good_size: 0, .. })));
    for f in &r.findings {
        println!("{f}");
    }
}

#[test]
fn time_going_backwards() {
    let mut l = log(10);
    let c = checkpoints(&l, 10, &key());
    l[4].recorded_us = 0;
    let r = verify_log(&l, &c, &key().verifier_key());
    assert!(has(&r, Some(5), |k| matches!(k, FindingKind::TimeWentBackwards { recorded_us: 0, .. })));
}

#[test]
fn bad_and_foreign_checkpoints() {
    let l = log(10);
    let other = SigningKey::from_seed(NAME, &[1; 32]).unwrap();
    let mut c = checkpoints(&l, 5, &key());
    c.push(checkpoints(&l, 10, &other).remove(0));
    let foreign = Checkpoint { origin: "elsewhere".into(), size: 10, root: [0; 32], extensions: vec![] };
    c.push(sign(&foreign, &key()).unwrap());
    c.push("garbage".into());
    let r = verify_log(&l, &c, &key().verifier_key());
    assert!(has(&r, None, |k| matches!(k, FindingKind::BadCheckpoint { index: 2, source: CheckpointSource::Log, .. })));
    assert!(has(&r, None, |k| matches!(k, FindingKind::ForeignOrigin { index: 3, .. })));
    assert!(has(&r, None, |k| matches!(k, FindingKind::BadCheckpoint { index: 4, .. })));
    assert_eq!(r.checkpoints_checked, 2);
}

#[test]
fn rewritten_log_is_exposed_by_witnessed_checkpoints() {
    let old = log(40);
    let witnessed = checkpoints(&old, 10, &key());
    let new: Vec<AuditEntry> = old
        .iter()
        .map(|e| if e.seq == 17 { AuditEntry { actor: Some("nobody".into()), ..e.clone() } } else { e.clone() })
        .collect();
    let resigned = checkpoints(&new, 10, &key());
    let v = key().verifier_key();
    assert!(verify_log(&new, &resigned, &v).is_ok());
    let r = verify_log_witnessed(&new, &resigned, &witnessed, &v);
    assert!(!r.is_ok());
    assert!(has(&r, None, |k| matches!(
        k,
        FindingKind::CheckpointMismatch { size: 20, source: CheckpointSource::Witnessed, last_good_size: 10 }
    )));
    assert!(has(&r, None, |k| matches!(k, FindingKind::Fork { size: 20, other_size: 20, .. })));
    // Without the re-signed ones, the witnessed ones still locate the change.
    let r = verify_log_witnessed(&new, &[] as &[&str], &witnessed, &v);
    assert!(has(&r, None, |k| matches!(k, FindingKind::CheckpointMismatch { size: 20, last_good_size: 10, .. })));
    assert_eq!(r.covered_size, 10);
}

#[test]
fn split_concatenated_notes() {
    let l = log(6);
    let c = checkpoints(&l, 2, &key());
    let file: String = c.concat();
    assert_eq!(split_notes(&file), c.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(split_notes("").is_empty());
}

#[derive(Debug, Clone)]
enum Tamper {
    Delete(usize),
    Alter(usize, u8),
    Duplicate(usize),
    InsertNew(usize),
    Swap(usize),
    Truncate(usize),
}

fn alter(e: &mut AuditEntry, field: u8) {
    match field {
        0 => e.seq += 1000,
        1 => e.recorded_us += 1,
        2 => e.request_id.push('x'),
        3 => e.actor = None,
        4 => e.role = Some(String::new()),
        5 => e.source.push('1'),
        6 => e.action = "update".into(),
        7 => e.rtype = None,
        8 => e.rid = Some("other".into()),
        9 => e.version = None,
        10 => e.patients.push("p99".into()),
        11 => e.outcome = 403,
        _ => e.detail = Some("x".into()),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn tampering_is_detected(n in 2u64..60, k in 1usize..8, pos in any::<prop::sample::Index>(), field in 0u8..13, which in 0u8..6) {
        let key = key();
        let v = key.verifier_key();
        let good = log(n);
        let cps = checkpoints(&good, k, &key);
        prop_assume!(!cps.is_empty());
        let covered = (n as usize / k) * k; // entries vouched for by the last checkpoint
        prop_assert!(verify_log(&good, &cps, &v).is_ok());

        let mut l = good.clone();
        let p = pos.index(covered); // 0-based position inside the covered prefix
        let t = match which {
            0 => Tamper::Delete(p),
            1 => Tamper::Alter(p, field),
            2 => Tamper::Duplicate(p),
            3 => Tamper::InsertNew(p),
            4 => Tamper::Swap(p.min(n as usize - 2)),
            _ => Tamper::Truncate(p),
        };
        match t {
            Tamper::Delete(p) => { l.remove(p); }
            Tamper::Alter(p, f) => alter(&mut l[p], f),
            Tamper::Duplicate(p) => { let e = l[p].clone(); l.insert(p + 1, e); }
            Tamper::InsertNew(p) => {
                let mut e = entry(p as u64 + 1);
                e.detail = Some("forged".into());
                l.insert(p, e);
            }
            Tamper::Swap(p) => l.swap(p, p + 1),
            Tamper::Truncate(p) => l.truncate(p),
        }
        let r = verify_log(&l, &cps, &v);
        prop_assert!(!r.is_ok(), "{:?} undetected", t);
        match t {
            Tamper::Delete(p) if p + 1 < n as usize => {
                let s = p as u64 + 1;
                prop_assert!(has(&r, Some(s), |k| *k == FindingKind::Deleted { after_seq: s - 1, count: 1 }), "{:?}", r.findings);
            }
            Tamper::Delete(_) | Tamper::Truncate(_) => {
                let kept = l.len() as u64;
                prop_assert!(has(&r, Some(kept + 1), |k| matches!(k, FindingKind::Truncated { log_size, .. } if *log_size == kept)), "{:?}", r.findings);
            }
            Tamper::Swap(p) => {
                let s = p as u64 + 1;
                prop_assert!(has(&r, Some(s), |k| *k == FindingKind::Reordered { after_seq: s + 1, count: 1 }), "{:?}", r.findings);
            }
            Tamper::Duplicate(p) => {
                let s = p as u64 + 1;
                prop_assert!(has(&r, Some(s), |k| matches!(k, FindingKind::Inserted { .. })), "{:?}", r.findings);
            }
            _ => {}
        }
    }
}

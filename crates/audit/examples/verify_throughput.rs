//! Throughput of the offline verifier's hot path (release):
//! `cargo run --release -p mamori-audit --example verify_throughput [entries]`.

use std::time::Instant;

use mamori_audit::checkpoint::{Checkpoint, SigningKey, sign};
use mamori_audit::merkle::{TreeBuilder, leaf_hash};
use mamori_audit::{AuditEntry, verify_log};

fn entry(seq: u64) -> AuditEntry {
    AuditEntry {
        seq,
        recorded_us: 1_750_000_000_000_000 + seq as i64 * 1000,
        request_id: format!("{:032x}", seq.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        actor: Some(format!("doctor-{}", seq % 17)),
        role: Some("physician".into()),
        source: "192.0.2.10".into(),
        action: "read".into(),
        rtype: Some("Observation".into()),
        rid: Some(format!("{:032x}", seq.wrapping_mul(31))),
        version: Some(seq % 5 + 1),
        patients: vec![format!("{:032x}", seq % 1013)],
        outcome: 200,
        detail: None,
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: u64 = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(1_000_000);
    let entries: Vec<AuditEntry> = (1..=n).map(entry).collect();
    let avg: usize = entries.iter().take(1000).map(|e| e.canonical_bytes().len()).sum::<usize>() / 1000;

    // Tree only, over precomputed leaf hashes.
    let leaves: Vec<_> = (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect();
    let t = Instant::now();
    let mut b = TreeBuilder::new();
    for l in &leaves {
        b.push(*l);
    }
    let root = b.root();
    let tree_rate = n as f64 / t.elapsed().as_secs_f64();

    // Canonical encoding alone, then encoding + leaf hash.
    let mut buf = Vec::with_capacity(512);
    let t = Instant::now();
    let mut sink = 0usize;
    for e in &entries {
        buf.clear();
        e.write_canonical(&mut buf);
        sink = sink.wrapping_add(buf.len());
    }
    let enc_rate = n as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    for e in &entries {
        buf.clear();
        e.write_canonical(&mut buf);
        sink = sink.wrapping_add(usize::from(leaf_hash(&buf)[0]));
    }
    let hash_rate = n as f64 / t.elapsed().as_secs_f64();
    println!("encode: {enc_rate:.0}/s, encode+leaf hash: {hash_rate:.0}/s ({sink})");

    // Full verifier: canonical encoding + leaf hash + tree + a checkpoint every 1000 entries.
    let key = SigningKey::from_seed("bench.example/log", &[3; 32])?;
    let mut cps = Vec::new();
    let mut b = TreeBuilder::new();
    for e in &entries {
        b.push(e.leaf_hash());
        if b.size().is_multiple_of(1000) {
            let c = Checkpoint { origin: key.name().into(), size: b.size(), root: b.root(), extensions: vec![] };
            cps.push(sign(&c, &key)?);
        }
    }
    let t = Instant::now();
    let report = verify_log(&entries, &cps, &key.verifier_key());
    let secs = t.elapsed().as_secs_f64();
    assert!(report.is_ok());
    println!("entries: {n}, canonical size ≈ {avg} bytes, root {:02x?}", &root[..4]);
    println!("TreeBuilder::push (leaf hashes given): {:.0} leaves/s", tree_rate);
    println!(
        "verify_log ({} checkpoints, signatures included): {:.0} entries/s ({secs:.3} s)",
        cps.len(),
        n as f64 / secs
    );
    Ok(())
}

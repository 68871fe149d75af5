//! Fills a data directory's audit trail with N genuine entries, for measuring `mamori audit
//! verify --data-dir` at scale (BENCHMARKS.md). Entries go through the store's real audit path:
//! group-committed, sealed into the Merkle tree, checkpointed and witnessed.
//!
//! Usage: `mamori init --data-dir D && cargo run --release -p mamori-store --example fill_audit_trail -- D 1000000`
//! (assumes the default file names of `mamori init`).
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;

use mamori_audit::SigningKey;
use mamori_store::keys::MasterKey;
use mamori_store::{AccessContext, Action, AuditEvent, SealingConfig, SqliteStore, Store, StoreConfig};

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().expect("data directory"));
    let n: usize = args.next().map(|s| s.parse().expect("entry count")).unwrap_or(1_000_000);
    let master = MasterKey::load_file(&dir.join("keys/master.key")).expect("master key");
    let skey = std::fs::read_to_string(dir.join("keys/audit-signing.key")).expect("signing key");
    let mut cfg = StoreConfig::new(dir.join("mamori.db"));
    cfg.audit_path = dir.join("mamori-audit.db");
    cfg.sealing = Some(SealingConfig {
        key: SigningKey::from_skey(skey.trim()).expect("signing key format"),
        witness: Some(dir.join("audit/checkpoints.log")),
        every_entries: 1000,
        interval: time::Duration::seconds(10),
    });
    cfg.synchronous_full = false;
    let store = Arc::new(SqliteStore::open(cfg, &master).expect("open store"));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let started = std::time::Instant::now();
    rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..64 {
            let store = Arc::clone(&store);
            tasks.spawn(async move {
                for i in (w..n).step_by(64) {
                    let ctx = AccessContext::operator(format!("fill-{i}"), format!("user{}", i % 50));
                    let mut ev = AuditEvent::new(Action::Read, 200).with_target("Observation", Some(format!("o{i}")));
                    ev.patients = vec![format!("p{}", i % 5000)];
                    store.record_event(ctx, ev).await.expect("audit append");
                }
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
    });
    store.shutdown();
    eprintln!("{n} entries in {:.1} s", started.elapsed().as_secs_f64());
}

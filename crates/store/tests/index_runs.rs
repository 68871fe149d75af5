//! The token index as sorted runs (search/runs.rs), with thresholds small enough that a few
//! dozen resources seal runs and merge them: every row is found exactly once whether it sits in
//! the open run, a sealed run, a merge source or a merge target, and updates and deletes remove
//! rows from all of them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::str::FromStr;

use mamori_access::{Principal, Role};
use mamori_fhir::ResourceType;
use mamori_store::keys::MasterKey;
use mamori_store::search::runs::IndexRuns;
use mamori_store::{
    AccessContext, Actor, PageLimits, SearchQuery, SqliteStore, Store, StoreConfig, WriteOp, WriteOutcome,
};
use serde_json::json;

fn ctx() -> AccessContext {
    AccessContext {
        request_id: "test".into(),
        actor: Actor::Person(Principal { account: "dr.runs".into(), role: Role::Physician }),
        source: "127.0.0.1".into(),
        rights: mamori_access::Rights::unrestricted(),
        emergency: None,
        client: None,
    }
}

fn patient_t() -> ResourceType {
    ResourceType::from_str("Patient").unwrap()
}

fn query(q: &str) -> SearchQuery {
    let pairs = mamori_store::query::parse_query_string(q);
    SearchQuery::parse(patient_t(), &pairs, mamori_store::ParseOptions::new(PageLimits::default())).unwrap()
}

/// Runs of about two patients, merged in pairs, a merge step moving few rows per write: merges
/// stay in progress across many writes.
fn tiny() -> IndexRuns {
    IndexRuns { seal_rows: 60, fanout: 2, merge_per_added: 1, min_step: 5 }
}

fn open(dir: &Path, key: &MasterKey) -> SqliteStore {
    let mut cfg = StoreConfig::new(dir.join("db"));
    cfg.index_runs = tiny();
    SqliteStore::open(cfg, key).unwrap()
}

fn patient(i: usize) -> serde_json::Value {
    json!({
        "resourceType": "Patient",
        "identifier": [{"system": "urn:mrn", "value": format!("MRN{i:04}")}],
        "name": [{"family": format!("Runfam{}", i % 7), "given": [format!("G{i}")]}],
    })
}

async fn create(store: &SqliteStore, i: usize) -> String {
    let op = WriteOp::Create { rtype: patient_t(), resource: patient(i), if_none_exist: None };
    match store.write(ctx(), op).await.unwrap() {
        WriteOutcome::Created(r) => r.id,
        other => panic!("{other:?}"),
    }
}

async fn hits(store: &SqliteStore, q: &str) -> Vec<String> {
    let page = store.search(ctx(), patient_t(), query(&format!("{q}&_count=1000"))).await.unwrap();
    assert_eq!(page.total, Some(page.records.len() as u64), "{q}");
    page.records.into_iter().map(|r| r.id).collect()
}

/// Every created patient is found by its identifier, each family by prefix with the right count.
async fn all_found(store: &SqliteStore, ids: &[String]) {
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(
            hits(store, &format!("identifier=urn:mrn|MRN{i:04}")).await,
            std::slice::from_ref(id),
            "patient {i}"
        );
    }
    for f in 0..7 {
        let want = (0..ids.len()).filter(|i| i % 7 == f).count();
        assert_eq!(hits(store, &format!("family=runfam{f}")).await.len(), want, "family {f}");
    }
}

/// (runs per state, total token rows, rows counted by distinct key).
fn census(dir: &Path) -> (Vec<(i64, i64)>, i64, i64) {
    let c = rusqlite::Connection::open(dir.join("db")).unwrap();
    let states = c
        .prepare("SELECT state, count(*) FROM idx_token_run GROUP BY state ORDER BY state")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let rows = c.query_row("SELECT count(*) FROM idx_token", [], |r| r.get(0)).unwrap();
    let distinct =
        c.query_row("SELECT count(*) FROM (SELECT DISTINCT pid, token, rid FROM idx_token)", [], |r| r.get(0)).unwrap();
    (states, rows, distinct)
}

#[tokio::test]
async fn rows_in_open_sealed_and_merging_runs_are_all_found_once() {
    let dir = tempfile::tempdir().unwrap();
    let key = MasterKey::ephemeral();
    let store = open(dir.path(), &key);
    let mut ids = Vec::new();
    let mut saw_merge_in_progress = false;
    for i in 0..40 {
        ids.push(create(&store, i).await);
        // Between writes: whatever state the runs are in, every row is found exactly once.
        if i % 4 == 3 {
            all_found(&store, &ids).await;
            let (states, rows, distinct) = census(dir.path());
            assert_eq!(rows, distinct, "no row in two runs");
            saw_merge_in_progress |= states.iter().any(|(s, _)| *s == 2);
        }
    }
    assert!(saw_merge_in_progress, "the thresholds should have left a merge half done at some check");
    let (states, _, _) = census(dir.path());
    let sealed = states.iter().find(|(s, _)| *s == 1).map_or(0, |(_, n)| *n);
    assert!(sealed >= 1, "runs were sealed and merged: {states:?}");
    store.shutdown();
}

#[tokio::test]
async fn updates_and_deletes_remove_rows_from_every_run() {
    let dir = tempfile::tempdir().unwrap();
    let key = MasterKey::ephemeral();
    let store = open(dir.path(), &key);
    let mut ids = Vec::new();
    for i in 0..30 {
        ids.push(create(&store, i).await);
    }
    // Patient 0's rows are in a sealed or merged run by now, patient 29's in the open one.
    for i in [0usize, 29] {
        let mut changed = patient(i);
        changed["id"] = json!(ids[i]);
        changed["identifier"] = json!([{"system": "urn:mrn", "value": format!("NEW{i}")}]);
        let op = WriteOp::Update { rtype: patient_t(), id: ids[i].clone(), resource: changed, if_match: None };
        store.write(ctx(), op).await.unwrap();
        assert!(hits(&store, &format!("identifier=urn:mrn|MRN{i:04}")).await.is_empty(), "old token of {i} gone");
        assert_eq!(hits(&store, &format!("identifier=urn:mrn|NEW{i}")).await, [ids[i].clone()]);
    }
    let del = WriteOp::Delete { rtype: patient_t(), id: ids[0].clone(), if_match: None };
    store.write(ctx(), del).await.unwrap();
    assert!(hits(&store, "identifier=urn:mrn|NEW0").await.is_empty());
    assert!(!hits(&store, "family=runfam0").await.contains(&ids[0]));
    store.shutdown();
    let c = rusqlite::Connection::open(dir.path().join("db")).unwrap();
    let rid: i64 =
        c.query_row("SELECT first_seq FROM resource_current WHERE id = ?1", [&ids[0]], |r| r.get(0)).unwrap();
    let left: i64 = c.query_row("SELECT count(*) FROM idx_token WHERE rid = ?1", [rid], |r| r.get(0)).unwrap();
    assert_eq!(left, 0, "a deleted resource leaves no token rows in any run");
}

#[tokio::test]
async fn a_merge_interrupted_by_a_restart_loses_nothing_and_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("master.key");
    let key = MasterKey::create_file(&key_path).unwrap();
    let store = open(dir.path(), &key);
    let mut ids = Vec::new();
    // Write until a merge is half done, then stop the store there.
    for i in 0..200 {
        ids.push(create(&store, i).await);
        if census(dir.path()).0.iter().any(|(s, _)| *s == 2) {
            break;
        }
    }
    store.shutdown();
    assert!(census(dir.path()).0.iter().any(|(s, _)| *s == 2), "stopped with a merge in progress");
    let key = MasterKey::load_file(&key_path).unwrap();
    let store = open(dir.path(), &key);
    all_found(&store, &ids).await;
    // Further writes finish the merge; nothing is lost or doubled on the way.
    for _ in 0..20 {
        let i = ids.len();
        ids.push(create(&store, i).await);
    }
    all_found(&store, &ids).await;
    let (_, rows, distinct) = census(dir.path());
    assert_eq!(rows, distinct);
    store.shutdown();
}

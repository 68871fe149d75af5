//! The `Store` conformance suite: behaviour every implementation must show, written against
//! `&dyn Store` so the PostgreSQL store can run the same functions. Every call here goes through
//! the audited API — the suite also checks that it left exactly one audit row per call.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::str::FromStr;
use std::sync::Arc;

use mamori_access::{Principal, Role};
use mamori_fhir::ResourceType;
use mamori_store::clock::ManualClock;
use mamori_store::keys::MasterKey;
use mamori_store::{
    AccessContext, Actor, HistoryQuery, HistoryScope, PageLimits, SearchQuery, SqliteStore, Store, StoreConfig,
    StoreError, WriteOp, WriteOutcome,
};
use serde_json::{Value, json};

fn ctx() -> AccessContext {
    AccessContext {
        request_id: "test".into(),
        actor: Actor::Person(Principal { account: "dr.conf".into(), role: Role::Physician }),
        source: "127.0.0.1".into(),
        rights: mamori_access::Rights::unrestricted(),
        emergency: None,
        client: None,
    }
}

fn patient_t() -> ResourceType {
    ResourceType::from_str("Patient").unwrap()
}

fn body(rec: &mamori_store::VersionRecord) -> Value {
    serde_json::from_slice(rec.body.as_ref().unwrap()).unwrap()
}

fn query(rtype: &str, q: &str) -> SearchQuery {
    let rt = ResourceType::from_str(rtype).unwrap();
    let pairs = mamori_store::query::parse_query_string(q);
    SearchQuery::parse(rt, &pairs, mamori_store::ParseOptions::new(PageLimits::default())).unwrap()
}

async fn create(store: &dyn Store, resource: Value) -> mamori_store::VersionRecord {
    let rtype = ResourceType::from_str(resource["resourceType"].as_str().unwrap()).unwrap();
    match store.write(ctx(), WriteOp::Create { rtype, resource, if_none_exist: None }).await.unwrap() {
        WriteOutcome::Created(r) => r,
        other => panic!("expected Created, got {other:?}"),
    }
}

/// Versions, tombstones and history (REC-1).
async fn versions_and_tombstones(store: &dyn Store) {
    let rec = create(store, json!({"resourceType": "Patient", "gender": "male"})).await;
    assert_eq!((rec.version, rec.patients.clone()), (1, vec![rec.id.clone()]));
    let upd = WriteOp::Update {
        rtype: patient_t(),
        id: rec.id.clone(),
        resource: json!({"resourceType": "Patient", "id": rec.id, "gender": "female"}),
        if_match: Some(1),
    };
    assert!(matches!(store.write(ctx(), upd.clone()).await.unwrap(), WriteOutcome::Updated(_)));
    // The same If-Match again is now stale.
    assert!(matches!(store.write(ctx(), upd).await, Err(StoreError::VersionConflict(_))));
    let del = WriteOp::Delete { rtype: patient_t(), id: rec.id.clone(), if_match: None };
    assert!(matches!(store.write(ctx(), del).await.unwrap(), WriteOutcome::Deleted(Some(_))));
    assert!(matches!(
        store.read(ctx(), patient_t(), rec.id.clone(), None).await,
        Err(StoreError::Gone { version: 3, .. })
    ));
    let v1 = store.read(ctx(), patient_t(), rec.id.clone(), Some(1)).await.unwrap();
    assert_eq!(body(&v1)["gender"], "male");
    let q = HistoryQuery { since_us: None, count: 10, before_seq: None };
    let page = store.history(ctx(), HistoryScope::Instance(patient_t(), rec.id.clone()), q).await.unwrap();
    let seen: Vec<(u64, bool)> = page.records.iter().map(|r| (r.version, r.deleted)).collect();
    assert_eq!(seen, [(3, true), (2, false), (1, false)]);
    assert_eq!(page.total, Some(3));
}

/// Identifier search over keyed tokens, and conditional create.
async fn identifier_search_and_conditionals(store: &dyn Store) {
    let ident = json!([{"system": "urn:mrn", "value": "12345"}, {"value": "no-system"}]);
    let rec = create(store, json!({"resourceType": "Patient", "identifier": ident})).await;
    for (q, hits) in [
        ("identifier=urn:mrn|12345", 1),
        ("identifier=12345", 1),
        ("identifier=urn:mrn|", 1),
        ("identifier=|no-system", 1),
        ("identifier=|12345", 0),
        ("identifier=other|12345", 0),
        ("identifier=99999,12345", 1),
        ("_id=nope", 0),
    ] {
        let page = store.search(ctx(), patient_t(), query("Patient", q)).await.unwrap();
        assert_eq!(page.total, Some(hits), "{q}");
    }
    let page = store.search(ctx(), patient_t(), query("Patient", &format!("_id={}", rec.id))).await.unwrap();
    assert_eq!(page.records[0].id, rec.id);
    let again = WriteOp::Create {
        rtype: patient_t(),
        resource: json!({"resourceType": "Patient"}),
        if_none_exist: Some(query("Patient", "identifier=urn:mrn|12345")),
    };
    match store.write(ctx(), again).await.unwrap() {
        WriteOutcome::Existing(r) => assert_eq!(r.id, rec.id),
        other => panic!("{other:?}"),
    }
}

/// Paging over search results is stable: a cursor continues after the last id seen.
async fn search_paging(store: &dyn Store) {
    for i in 0..5 {
        create(
            store,
            json!({"resourceType": "Device", "identifier": [{"system": "urn:dev", "value": format!("d{i}")}]}),
        )
        .await;
    }
    let device = ResourceType::from_str("Device").unwrap();
    let mut seen = Vec::new();
    let mut q = query("Device", "identifier=urn:dev|&_count=2");
    loop {
        let page = store.search(ctx(), device, q.clone()).await.unwrap();
        assert_eq!(page.total, Some(5));
        seen.extend(page.records.iter().map(|r| r.id.clone()));
        match page.next_cursor {
            Some(c) => q.cursor = Some(mamori_store::search::params::Cursor::decode(&c).unwrap()),
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!((seen.len(), sorted.len()), (5, 5), "every match once");
}

/// A search page shows each match's current version, also after the page was served before
/// (the readers' shared cache of version rows must never answer an old version).
async fn search_pages_follow_updates_and_deletes(store: &dyn Store) {
    let ident = json!([{"system": "urn:cache", "value": "c1"}]);
    let rec = create(store, json!({"resourceType": "Patient", "identifier": ident, "gender": "male"})).await;
    let q = || query("Patient", "identifier=urn:cache|c1");
    for _ in 0..2 {
        let page = store.search(ctx(), patient_t(), q()).await.unwrap();
        assert_eq!(body(&page.records[0])["gender"], "male");
    }
    let upd = WriteOp::Update {
        rtype: patient_t(),
        id: rec.id.clone(),
        resource: json!({"resourceType": "Patient", "id": rec.id, "identifier": ident, "gender": "female"}),
        if_match: None,
    };
    assert!(matches!(store.write(ctx(), upd).await.unwrap(), WriteOutcome::Updated(_)));
    let page = store.search(ctx(), patient_t(), q()).await.unwrap();
    assert_eq!((page.records[0].version, body(&page.records[0])["gender"].clone()), (2, json!("female")));
    let del = WriteOp::Delete { rtype: patient_t(), id: rec.id.clone(), if_match: None };
    assert!(matches!(store.write(ctx(), del).await.unwrap(), WriteOutcome::Deleted(Some(_))));
    let page = store.search(ctx(), patient_t(), q()).await.unwrap();
    assert_eq!((page.records.len(), page.total), (0, Some(0)));
}

/// Totals of one-criterion searches are counted in the index alone (search/sql.rs
/// `index_only_total`): they must follow updates that change the value, deletes and re-creates.
async fn search_totals_follow_updates_and_deletes(store: &dyn Store) {
    let total = |q: &'static str| async move {
        let page = store.search(ctx(), patient_t(), query("Patient", q)).await.unwrap();
        assert_eq!(page.total, Some(page.records.len() as u64), "{q}");
        page.records.len()
    };
    let a = create(store, json!({"resourceType": "Patient", "name": [{"family": "Totalold"}]})).await;
    create(store, json!({"resourceType": "Patient", "name": [{"family": "Totalold", "given": ["Two"]}]})).await;
    assert_eq!((total("family=totalold").await, total("name=totalold").await), (2, 2));
    let upd = WriteOp::Update {
        rtype: patient_t(),
        id: a.id.clone(),
        resource: json!({"resourceType": "Patient", "id": a.id, "name": [{"family": "Totalnew"}]}),
        if_match: None,
    };
    assert!(matches!(store.write(ctx(), upd).await.unwrap(), WriteOutcome::Updated(_)));
    assert_eq!((total("family=totalold").await, total("family=totalnew").await), (1, 1));
    let del = WriteOp::Delete { rtype: patient_t(), id: a.id.clone(), if_match: None };
    assert!(matches!(store.write(ctx(), del).await.unwrap(), WriteOutcome::Deleted(Some(_))));
    assert_eq!((total("family=totalnew").await, total("family=totalold").await), (0, 1));
    assert_eq!(total("family=totalold,totalnew").await, 1);
}

async fn run_suite(store: &dyn Store) {
    versions_and_tombstones(store).await;
    identifier_search_and_conditionals(store).await;
    search_paging(store).await;
    search_pages_follow_updates_and_deletes(store).await;
    search_totals_follow_updates_and_deletes(store).await;
}

#[tokio::test]
async fn sqlite_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(time::macros::datetime!(2026-01-01 09:00 UTC)));
    let mut cfg = StoreConfig::new(dir.path().join("db"));
    cfg.clock = clock.clone();
    let store = SqliteStore::open(cfg, &MasterKey::ephemeral()).unwrap();
    run_suite(&store).await;
    store.shutdown();
    // Every call above left its audit row (AUD-1): 7 + 11 + 8 + 7 + 11 store calls.
    let c = rusqlite::Connection::open(dir.path().join("db-audit.db")).unwrap();
    let rows: i64 = c.query_row("SELECT count(*) FROM audit_event", [], |r| r.get(0)).unwrap();
    assert_eq!(rows, 44);
}

#[tokio::test]
async fn aud3_times_never_go_backwards_and_a_clock_step_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(time::macros::datetime!(2026-01-01 09:00 UTC)));
    let mut cfg = StoreConfig::new(dir.path().join("db"));
    cfg.clock = clock.clone();
    let store = SqliteStore::open(cfg, &MasterKey::ephemeral()).unwrap();
    let a = create(&store, json!({"resourceType": "Patient"})).await;
    clock.advance(time::Duration::hours(-1));
    let b = create(&store, json!({"resourceType": "Patient"})).await;
    assert!(b.last_updated_us > a.last_updated_us);
    clock.advance(time::Duration::milliseconds(-200)); // jitter below a second is not clock trouble
    create(&store, json!({"resourceType": "Patient"})).await;
    store.shutdown();
    let c = rusqlite::Connection::open(dir.path().join("db-audit.db")).unwrap();
    let (n, detail): (i64, String) = c
        .query_row("SELECT count(*), max(detail) FROM audit_event WHERE action = 'clock-step'", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(n, 1, "one step back of an hour, recorded once");
    assert!(detail.contains("stepped back 36"), "{detail}");
    let times_ok: i64 = c
        .query_row(
            "SELECT count(*) FROM audit_event a JOIN audit_event b ON b.seq = a.seq + 1 WHERE b.recorded_us < a.recorded_us",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(times_ok, 0, "audit time never decreases (rows of one transaction share its time)");
}

#[tokio::test]
async fn opening_with_the_wrong_master_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    SqliteStore::open(StoreConfig::new(&path), &MasterKey::ephemeral()).unwrap().shutdown();
    let err = SqliteStore::open(StoreConfig::new(&path), &MasterKey::ephemeral()).err().unwrap();
    assert!(err.to_string().contains("does not match"), "{err}");
}

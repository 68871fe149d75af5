//! Information categories kept beside the current version (ACL-2, ACL-3): a read is decided on
//! the categories stored with the row, and those follow the policy's rules when they change.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::str::FromStr;
use std::sync::Arc;

use mamori_access::{Policy, PolicyConfig, Principal, Purpose, Role};
use mamori_fhir::ResourceType;
use mamori_store::keys::MasterKey;
use mamori_store::{AccessContext, Actor, SqliteStore, Store, StoreConfig, StoreError, WriteOp, WriteOutcome};
use serde_json::json;

const ACT: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";

fn open(dir: &std::path::Path, policy: Policy) -> SqliteStore {
    let mut cfg = StoreConfig::new(dir.join("db"));
    cfg.policy = Arc::new(policy);
    SqliteStore::open(cfg, &MasterKey::load_file(&dir.join("key")).unwrap()).unwrap()
}

fn ctx(policy: &Arc<Policy>, role: Role) -> AccessContext {
    let who = Principal { account: format!("test.{role}"), role };
    let his = policy.zone_named("his").unwrap();
    AccessContext {
        request_id: "test".into(),
        actor: Actor::Person(who.clone()),
        source: "127.0.0.1".into(),
        rights: policy.rights(&who, his, Purpose::Treatment),
        emergency: None,
        client: None,
    }
}

/// The default policy, with the `genetic` category's rules removed (its resources fall back to
/// the default category).
fn without_genetic_rules() -> Policy {
    let mut cfg = PolicyConfig::builtin();
    for c in cfg.category.as_mut().unwrap() {
        if c.name == "genetic" {
            c.security.clear();
            c.codes.clear();
            c.resource_types.clear();
        }
    }
    Policy::from_config(&cfg).unwrap()
}

async fn nurse_reads(
    store: &SqliteStore,
    policy: &Arc<Policy>,
    id: &str,
) -> Result<mamori_store::VersionRecord, StoreError> {
    let obs = ResourceType::from_str("Observation").unwrap();
    store.read(ctx(policy, Role::Nurse), obs, id.to_string(), None).await
}

#[tokio::test]
async fn acl3_reads_follow_the_categories_when_the_rules_change() {
    let dir = tempfile::tempdir().unwrap();
    MasterKey::create_file(&dir.path().join("key")).unwrap();
    let default = Arc::new(Policy::builtin().unwrap());
    let obs = ResourceType::from_str("Observation").unwrap();
    let store = open(dir.path(), (*default).clone());
    let resource = json!({"resourceType": "Observation", "status": "final", "code": {"text": "variant"},
        "meta": {"security": [{"system": ACT, "code": "GDIS"}]}});
    let id = match store
        .write(ctx(&default, Role::Physician), WriteOp::Create { rtype: obs, resource, if_none_exist: None })
        .await
        .unwrap()
    {
        WriteOutcome::Created(r) => r.id,
        other => panic!("{other:?}"),
    };
    // Genetic data is hidden from nurses by the default policy, and does not exist for them.
    assert!(matches!(nurse_reads(&store, &default, &id).await, Err(StoreError::NotFound(_))));
    store.shutdown();

    // Without the rule the record is general data, which nurses read.
    let relaxed = Arc::new(without_genetic_rules());
    let store = open(dir.path(), (*relaxed).clone());
    assert_eq!(nurse_reads(&store, &relaxed, &id).await.unwrap().id, id);
    store.shutdown();

    // And the rule back hides it again.
    let store = open(dir.path(), (*default).clone());
    assert!(matches!(nurse_reads(&store, &default, &id).await, Err(StoreError::NotFound(_))));
    assert_eq!(store.read(ctx(&default, Role::Physician), obs, id.clone(), None).await.unwrap().id, id);
    store.shutdown();
}

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod support;

use mamori_audit::AuditEntry;
use mamori_audit::merkle;
use proptest::prelude::*;
use support::{arb_entry, entry};

#[test]
fn none_and_empty_differ() {
    let a = AuditEntry { actor: None, ..entry(1) };
    let b = AuditEntry { actor: Some(String::new()), ..entry(1) };
    assert_ne!(a.canonical_bytes(), b.canonical_bytes());
    let c = AuditEntry { patients: vec![], ..entry(1) };
    let d = AuditEntry { patients: vec![String::new()], ..entry(1) };
    assert_ne!(c.canonical_bytes(), d.canonical_bytes());
    let e = AuditEntry { patients: vec!["a,b".into()], ..entry(1) };
    let f = AuditEntry { patients: vec!["a".into(), "b".into()], ..entry(1) };
    assert_ne!(e.canonical_bytes(), f.canonical_bytes());
}

#[test]
fn leaf_hash_is_domain_separated() {
    let e = entry(7);
    assert_eq!(e.leaf_hash(), merkle::leaf_hash(&e.canonical_bytes()));
    assert_eq!(mamori_audit::entry::leaf_hash(&e), e.leaf_hash());
    assert_eq!(e.canonical_bytes()[0], mamori_audit::entry::ENCODING_VERSION);
}

#[test]
fn patients_column() {
    assert!(AuditEntry::patients_from_column("").is_empty());
    assert_eq!(AuditEntry::patients_from_column("a,b"), vec!["a", "b"]);
}

#[test]
fn decoder_rejects_garbage() {
    let b = entry(3).canonical_bytes();
    let mut trailing = b.clone();
    trailing.push(0);
    assert!(AuditEntry::decode_canonical(&trailing).is_err());
    assert!(AuditEntry::decode_canonical(&b[..b.len() - 1]).is_err());
    let mut v2 = b.clone();
    v2[0] = 2;
    assert!(AuditEntry::decode_canonical(&v2).is_err());
    assert!(AuditEntry::decode_canonical(&[]).is_err());
}

proptest! {
    /// decode ∘ encode = id, hence the encoding is injective.
    #[test]
    fn encoding_round_trips(e in arb_entry()) {
        let b = e.canonical_bytes();
        prop_assert_eq!(AuditEntry::decode_canonical(&b), Ok(e.clone()));
        let mut buf = vec![9, 9];
        e.write_canonical(&mut buf);
        prop_assert_eq!(&buf[2..], &b[..]);
    }

    #[test]
    fn distinct_entries_distinct_bytes(a in arb_entry(), b in arb_entry()) {
        prop_assert_eq!(a == b, a.canonical_bytes() == b.canonical_bytes());
    }

    /// Any byte string that decodes re-encodes to itself (the encoding is canonical).
    #[test]
    fn decoding_is_canonical(e in arb_entry(), pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut b = e.canonical_bytes();
        let i = pos.index(b.len());
        b[i] = byte;
        if let Ok(d) = AuditEntry::decode_canonical(&b) {
            prop_assert_eq!(d.canonical_bytes(), b);
        }
    }
}

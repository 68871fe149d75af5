#![allow(dead_code)]
use mamori_audit::AuditEntry;
use proptest::prelude::*;

fn text() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), "[a-z0-9,\\-]{0,6}", "\\PC{0,8}"]
}

pub fn arb_entry() -> impl Strategy<Value = AuditEntry> {
    (
        (any::<u64>(), any::<i64>(), text(), prop::option::of(text()), prop::option::of(text())),
        (text(), text(), prop::option::of(text()), prop::option::of(text())),
        (prop::option::of(any::<u64>()), prop::collection::vec(text(), 0..4), any::<u16>()),
        prop::option::of(text()),
    )
        .prop_map(
            |(
                (seq, recorded_us, request_id, actor, role),
                (source, action, rtype, rid),
                (version, patients, outcome),
                detail,
            )| {
                AuditEntry {
                    seq,
                    recorded_us,
                    request_id,
                    actor,
                    role,
                    source,
                    action,
                    rtype,
                    rid,
                    version,
                    patients,
                    outcome,
                    detail,
                }
            },
        )
}

/// A plausible entry `seq` of a log.
pub fn entry(seq: u64) -> AuditEntry {
    AuditEntry {
        seq,
        recorded_us: 1_750_000_000_000_000 + seq as i64 * 1000,
        request_id: format!("{:032x}", seq.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        actor: Some(format!("user{}", seq % 7)),
        role: Some("physician".into()),
        source: "192.0.2.10".into(),
        action: "read".into(),
        rtype: Some("Patient".into()),
        rid: Some(format!("p{}", seq % 13)),
        version: Some(seq % 5 + 1),
        patients: vec![format!("p{}", seq % 13)],
        outcome: 200,
        detail: None,
    }
}

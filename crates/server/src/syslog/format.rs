//! RFC 5424 messages for audit entries, framed for RFC 5425 (octet counting).
//!
//! ```text
//! <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [mamori@PEN …][meta …][timeQuality …] BOM summary
//! ```
//!
//! * PRI: the configured facility (default `authpriv`, 10) and a severity from the outcome:
//!   informational (< 400), warning (401, 403: failed authentication, denial), notice (other
//!   4xx), error (5xx).
//! * TIMESTAMP: the entry's recorded time, UTC, microseconds (`2026-11-21T09:30:00.123456Z`).
//! * MSGID: the action (`read`, `create`, `login`, …), reduced to printable ASCII, ≤ 32 octets.
//! * STRUCTURED-DATA: the private element `mamori@PEN` carries every AUD-1 field of the row
//!   losslessly (values escaped per RFC 5424 §6.3.3: `"`, `\` and `]` get a backslash), with
//!   `seq` — the trail's own sequence number, unique and gap-free, which identifies a resent
//!   entry. The registered `meta sequenceId` is also given for generic collectors, but it only
//!   counts 1‥2147483647 and then wraps, so it is not an identity. `timeQuality` says whether the
//!   clock was NTP-synchronised at start-up (AUD-3).
//! * MSG: a UTF-8 one-line summary (with BOM), for people reading the collector's log.

use std::fmt::Write as _;

use mamori_audit::AuditEntry;

/// Syslog facilities suitable for an audit trail (RFC 5424 §6.2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Facility {
    /// 4: security/authorization messages.
    Auth,
    /// 10: security/authorization messages (private) — the IHE ATNA convention.
    AuthPriv,
    /// 13: log audit.
    Audit,
    /// 16‥23: local use 0‥7.
    Local(u8),
}

impl Facility {
    /// Parses `auth`, `authpriv`, `audit`, `local0` … `local7`.
    pub fn parse(s: &str) -> Option<Facility> {
        match s {
            "auth" => Some(Facility::Auth),
            "authpriv" => Some(Facility::AuthPriv),
            "audit" => Some(Facility::Audit),
            _ => {
                let n: u8 = s.strip_prefix("local")?.parse().ok()?;
                (n <= 7 && s.len() == 6).then_some(Facility::Local(n))
            }
        }
    }

    fn code(self) -> u8 {
        match self {
            Facility::Auth => 4,
            Facility::AuthPriv => 10,
            Facility::Audit => 13,
            Facility::Local(n) => 16 + n,
        }
    }
}

/// RFC 5424 severity of an entry, from its outcome.
pub fn severity(outcome: u16) -> u8 {
    match outcome {
        0..=399 => 6,   // informational
        401 | 403 => 4, // warning: failed authentication or a denial
        400..=499 => 5, // notice
        _ => 3,         // error
    }
}

/// A header field (HOSTNAME, APP-NAME) checked against RFC 5424's grammar: 1‥`max` printable
/// US-ASCII characters (33‥126).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderName(String);

impl HeaderName {
    pub fn new(s: &str, max: usize) -> Option<HeaderName> {
        let ok = !s.is_empty() && s.len() <= max && s.bytes().all(|b| (33..=126).contains(&b));
        ok.then(|| HeaderName(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What is the same in every message of one forwarder.
#[derive(Clone, Debug)]
pub struct MessageSettings {
    pub facility: Facility,
    /// HOSTNAME, ≤ 255 octets.
    pub hostname: HeaderName,
    /// APP-NAME, ≤ 48 octets.
    pub app_name: HeaderName,
    /// PROCID (the process id).
    pub procid: u32,
    /// The IANA private enterprise number in the SD-ID `mamori@PEN`.
    pub enterprise_number: u32,
    /// NTP synchronisation at start-up (AUD-3); `None` when the OS cannot tell.
    pub time_synced: Option<bool>,
}

impl MessageSettings {
    /// The SD-ID of mamori's element, e.g. `mamori@32473`.
    pub fn sd_id(&self) -> String {
        format!("mamori@{}", self.enterprise_number)
    }
}

/// Appends `MSG-LEN SP SYSLOG-MSG` (RFC 5425 §4.3) for `entry` to `out`.
pub fn frame_entry(settings: &MessageSettings, entry: &AuditEntry, out: &mut Vec<u8>) {
    let msg = message(settings, entry);
    out.extend_from_slice(msg.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(msg.as_bytes());
}

/// The RFC 5424 SYSLOG-MSG for one audit entry.
pub fn message(s: &MessageSettings, e: &AuditEntry) -> String {
    let pri = u16::from(s.facility.code()) * 8 + u16::from(severity(e.outcome));
    let mut m = String::with_capacity(256 + 40 * e.patients.len());
    // Writing to a String cannot fail.
    let _ = write!(
        m,
        "<{pri}>1 {} {} {} {} {} ",
        timestamp(e.recorded_us),
        s.hostname.as_str(),
        s.app_name.as_str(),
        s.procid,
        msgid(&e.action)
    );
    let _ = write!(m, "[{}", s.sd_id());
    param(&mut m, "seq", &e.seq.to_string());
    param(&mut m, "requestId", &e.request_id);
    if let Some(a) = &e.actor {
        param(&mut m, "actor", a);
    }
    if let Some(r) = &e.role {
        param(&mut m, "role", r);
    }
    param(&mut m, "source", &e.source);
    param(&mut m, "action", &e.action);
    if let Some(t) = &e.rtype {
        param(&mut m, "type", t);
    }
    if let Some(i) = &e.rid {
        param(&mut m, "id", i);
    }
    if let Some(v) = e.version {
        param(&mut m, "version", &v.to_string());
    }
    for p in &e.patients {
        param(&mut m, "patient", p);
    }
    param(&mut m, "outcome", &e.outcome.to_string());
    if let Some(d) = &e.detail {
        param(&mut m, "detail", d);
    }
    m.push(']');
    // RFC 5424 §7.3.1: sequenceId is 1..2147483647 and wraps; `seq` above is the identity.
    let _ = write!(m, "[meta sequenceId=\"{}\"]", (e.seq.saturating_sub(1) % 2_147_483_647) + 1);
    match s.time_synced {
        Some(synced) => {
            let _ = write!(m, "[timeQuality tzKnown=\"1\" isSynced=\"{}\"]", u8::from(synced));
        }
        None => m.push_str("[timeQuality tzKnown=\"1\"]"),
    }
    m.push_str(" \u{feff}");
    summary(&mut m, e);
    m
}

fn param(m: &mut String, name: &str, value: &str) {
    m.push(' ');
    m.push_str(name);
    m.push_str("=\"");
    for c in value.chars() {
        if matches!(c, '"' | '\\' | ']') {
            m.push('\\');
        }
        m.push(c);
    }
    m.push('"');
}

/// `2026-11-21T09:30:00.123456Z`, or the NILVALUE for a time RFC 5424 cannot express.
fn timestamp(us: i64) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
        .ok()
        .filter(|t| (0..=9999).contains(&t.year()))
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_else(|| "-".to_owned())
}

/// MSGID: printable US-ASCII, 1‥32 octets; the lossless action is in the structured data.
fn msgid(action: &str) -> String {
    let id: String = action.chars().filter(|c| c.is_ascii_graphic()).take(32).collect();
    if id.is_empty() { "-".to_owned() } else { id }
}

/// `dr.sato read Patient/123/_history/2 -> 200`, control characters replaced.
fn summary(m: &mut String, e: &AuditEntry) {
    let who = e.actor.as_deref().filter(|a| !a.is_empty()).unwrap_or("(unauthenticated)");
    let mut text = format!("{who} {}", e.action);
    match (&e.rtype, &e.rid) {
        (Some(t), Some(i)) => {
            let _ = write!(text, " {t}/{i}");
            if let Some(v) = e.version {
                let _ = write!(text, "/_history/{v}");
            }
        }
        (Some(t), None) => {
            let _ = write!(text, " {t}");
        }
        _ => {}
    }
    let _ = write!(text, " -> {}", e.outcome);
    m.extend(text.chars().map(|c| if c.is_control() { '?' } else { c }));
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    fn settings() -> MessageSettings {
        MessageSettings {
            facility: Facility::AuthPriv,
            hostname: HeaderName::new("emr1.clinic.example.jp", 255).unwrap(),
            app_name: HeaderName::new("mamori", 48).unwrap(),
            procid: 4242,
            enterprise_number: 32473,
            time_synced: Some(true),
        }
    }

    /// A small RFC 5424 parser, independent of the formatter: header fields, SD elements
    /// (params in order, escapes undone) and MSG.
    struct Parsed {
        pri: u16,
        header: Vec<String>,
        sd: Vec<(String, Vec<(String, String)>)>,
        msg: String,
    }

    fn parse(m: &str) -> Parsed {
        let rest = m.strip_prefix('<').unwrap();
        let (pri, rest) = rest.split_once('>').unwrap();
        let rest = rest.strip_prefix("1 ").unwrap();
        let mut header = Vec::new();
        let mut rest = rest;
        for _ in 0..5 {
            let (h, r) = rest.split_once(' ').unwrap();
            assert!(!h.is_empty() && h.bytes().all(|b| (33..=126).contains(&b)), "header field {h:?}");
            header.push(h.to_owned());
            rest = r;
        }
        let mut sd = Vec::new();
        let mut chars = rest.chars().peekable();
        while chars.peek() == Some(&'[') {
            chars.next();
            let mut id = String::new();
            while let Some(&c) = chars.peek() {
                if c == ' ' || c == ']' {
                    break;
                }
                id.push(c);
                chars.next();
            }
            let mut params = Vec::new();
            loop {
                match chars.next().unwrap() {
                    ']' => break,
                    ' ' => {
                        let mut name = String::new();
                        loop {
                            let c = chars.next().unwrap();
                            if c == '=' {
                                break;
                            }
                            assert!(c.is_ascii_graphic() && c != '"' && c != ']', "param name char {c:?}");
                            name.push(c);
                        }
                        assert_eq!(chars.next(), Some('"'));
                        let mut value = String::new();
                        loop {
                            match chars.next().unwrap() {
                                '\\' => {
                                    let c = chars.next().unwrap();
                                    assert!(matches!(c, '"' | '\\' | ']'), "only \" \\ ] are escaped, got {c:?}");
                                    value.push(c);
                                }
                                '"' => break,
                                ']' => panic!("unescaped ] in a value"),
                                c => value.push(c),
                            }
                        }
                        params.push((name, value));
                    }
                    c => panic!("unexpected {c:?} in SD element"),
                }
            }
            sd.push((id, params));
        }
        let rest: String = chars.collect();
        let msg = rest.strip_prefix(" \u{feff}").unwrap().to_owned();
        Parsed { pri: pri.parse().unwrap(), header, sd, msg }
    }

    fn recover(p: &Parsed, sd_id: &str) -> AuditEntry {
        let (_, params) = p.sd.iter().find(|(id, _)| id == sd_id).unwrap();
        let mut one: BTreeMap<&str, &str> = BTreeMap::new();
        let mut patients = Vec::new();
        for (k, v) in params {
            if k == "patient" {
                patients.push(v.clone());
            } else {
                assert!(one.insert(k, v).is_none(), "{k} repeated");
            }
        }
        let s = |k: &str| one.get(k).map(|v| v.to_string());
        AuditEntry {
            seq: s("seq").unwrap().parse().unwrap(),
            recorded_us: 0,
            request_id: s("requestId").unwrap(),
            actor: s("actor"),
            role: s("role"),
            source: s("source").unwrap(),
            action: s("action").unwrap(),
            rtype: s("type"),
            rid: s("id"),
            version: s("version").map(|v| v.parse().unwrap()),
            patients,
            outcome: s("outcome").unwrap().parse().unwrap(),
            detail: s("detail"),
        }
    }

    #[test]
    fn aud5_an_example_message_reads_as_documented() {
        let e = AuditEntry {
            seq: 4711,
            recorded_us: 1_795_253_400_123_456,
            request_id: "01J…".into(),
            actor: Some("dr.sato".into()),
            role: Some("physician".into()),
            source: "192.0.2.10".into(),
            action: "read".into(),
            rtype: Some("Patient".into()),
            rid: Some("p-1".into()),
            version: Some(2),
            patients: vec!["p-1".into()],
            outcome: 200,
            detail: None,
        };
        let m = message(&settings(), &e);
        assert_eq!(
            m,
            "<86>1 2026-11-21T09:30:00.123456Z emr1.clinic.example.jp mamori 4242 read \
             [mamori@32473 seq=\"4711\" requestId=\"01J…\" actor=\"dr.sato\" role=\"physician\" \
             source=\"192.0.2.10\" action=\"read\" type=\"Patient\" id=\"p-1\" version=\"2\" patient=\"p-1\" \
             outcome=\"200\"][meta sequenceId=\"4711\"][timeQuality tzKnown=\"1\" isSynced=\"1\"] \
             \u{feff}dr.sato read Patient/p-1/_history/2 -> 200"
        );
        let mut framed = Vec::new();
        frame_entry(&settings(), &e, &mut framed);
        assert_eq!(framed, format!("{} {m}", m.len()).into_bytes());
        // A denial is a warning; a server error an error.
        assert_eq!(severity(403), 4);
        assert_eq!(severity(500), 3);
        assert_eq!(severity(404), 5);
    }

    #[test]
    fn sequence_id_wraps_but_seq_does_not() {
        let e = AuditEntry { seq: 2_147_483_648, action: "read".into(), ..AuditEntry::default() };
        let p = parse(&message(&settings(), &e));
        assert_eq!(p.sd[1], ("meta".into(), vec![("sequenceId".into(), "1".into())]));
        assert_eq!(recover(&p, "mamori@32473").seq, 2_147_483_648);
    }

    #[test]
    fn facilities() {
        assert_eq!(Facility::parse("authpriv"), Some(Facility::AuthPriv));
        assert_eq!(Facility::parse("local7"), Some(Facility::Local(7)));
        for bad in ["local8", "local", "local07", "kern", ""] {
            assert_eq!(Facility::parse(bad), None, "{bad}");
        }
        assert!(HeaderName::new("has space", 255).is_none());
        assert!(HeaderName::new("", 48).is_none());
        assert!(HeaderName::new(&"a".repeat(49), 48).is_none());
    }

    fn opt(s: impl Strategy<Value = String>) -> impl Strategy<Value = Option<String>> {
        proptest::option::of(s)
    }

    prop_compose! {
        fn entries()(
            seq in 1u64..u64::MAX / 2,
            recorded_us in -62_135_596_800_000_000i64..253_402_300_799_999_999,
            request_id in any::<String>(),
            actor in opt(any::<String>()),
            role in opt(any::<String>()),
            source in "[\"\\\\\\] a-z0-9.:]{0,20}|\\PC*",
            action in any::<String>(),
            rtype in opt(any::<String>()),
            rid in opt("[\"\\\\\\]]{0,5}|\\PC*"),
            version in proptest::option::of(any::<u64>()),
            patients in proptest::collection::vec(any::<String>(), 0..5),
            outcome in any::<u16>(),
            detail in opt(any::<String>()),
        ) -> AuditEntry {
            AuditEntry { seq, recorded_us, request_id, actor, role, source, action, rtype, rid, version, patients, outcome, detail }
        }
    }

    proptest! {
        /// AUD-5: whatever the field values (quotes, backslashes, brackets, control characters,
        /// any Unicode), a parser recovers every AUD-1 field from the message exactly, and the
        /// header stays within RFC 5424's grammar.
        #[test]
        fn aud5_every_field_survives_formatting_and_escaping(e in entries()) {
            let m = message(&settings(), &e);
            let p = parse(&m);
            prop_assert_eq!(p.pri, 10 * 8 + u16::from(severity(e.outcome)));
            prop_assert!(p.header[4].len() <= 32);
            prop_assert_eq!(&p.header[1], "emr1.clinic.example.jp");
            let mut back = recover(&p, "mamori@32473");
            back.recorded_us = e.recorded_us;
            prop_assert_eq!(back, e.clone());
            if let Ok(t) = time::OffsetDateTime::parse(&p.header[0], &time::format_description::well_known::Rfc3339) {
                prop_assert_eq!(t.unix_timestamp_nanos() / 1000, i128::from(e.recorded_us));
            } else {
                prop_assert_eq!(&p.header[0], "-");
            }
            prop_assert!(!p.msg.chars().any(char::is_control), "the summary is one line");
        }
    }
}

//! The audit entry as it is hashed into the log, and its canonical encoding.
//!
//! # Canonical encoding, version 1
//!
//! ```text
//! entry    = 0x01                         ; encoding version
//!            field(1,  u64   seq)
//!            field(2,  i64   recorded_us)
//!            field(3,  str   request_id)
//!            field(4,  opt   actor)
//!            field(5,  opt   role)
//!            field(6,  str   source)
//!            field(7,  str   action)
//!            field(8,  opt   rtype)
//!            field(9,  opt   rid)
//!            field(10, optu  version)
//!            field(11, list  patients)
//!            field(12, u16   outcome)
//!            field(13, opt   detail)
//! field(t, v) = t:u8 || len(v):u64be || v  ; every field, always present, in this order
//! u64 / i64   = 8 bytes big-endian (i64 in two's complement); u16 = 2 bytes big-endian
//! str         = the UTF-8 bytes
//! opt         = 0x00 (None) | 0x01 || str  ; so None and Some("") differ
//! optu        = 0x00 (None) | 0x01 || u64
//! list        = count:u64be || (len:u64be || str)*
//! ```
//!
//! Every variable-length item carries its length and fields come in a fixed order with
//! explicit tags, so the encoding is injective: [`AuditEntry::decode_canonical`] recovers the
//! entry exactly (and rejects anything else, including trailing bytes), which the tests use to
//! prove it. The leaf of the Merkle tree is `SHA-256(0x00 || canonical_bytes)`.

use crate::AuditError;
use crate::merkle::{self, Hash};

/// Version byte that starts every canonical encoding.
pub const ENCODING_VERSION: u8 = 1;

/// One row of the `audit_event` table, exactly its columns.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct AuditEntry {
    pub seq: u64,
    pub recorded_us: i64,
    pub request_id: String,
    pub actor: Option<String>,
    pub role: Option<String>,
    pub source: String,
    pub action: String,
    pub rtype: Option<String>,
    pub rid: Option<String>,
    pub version: Option<u64>,
    pub patients: Vec<String>,
    pub outcome: u16,
    pub detail: Option<String>,
}

mod tag {
    pub const SEQ: u8 = 1;
    pub const RECORDED_US: u8 = 2;
    pub const REQUEST_ID: u8 = 3;
    pub const ACTOR: u8 = 4;
    pub const ROLE: u8 = 5;
    pub const SOURCE: u8 = 6;
    pub const ACTION: u8 = 7;
    pub const RTYPE: u8 = 8;
    pub const RID: u8 = 9;
    pub const VERSION: u8 = 10;
    pub const PATIENTS: u8 = 11;
    pub const OUTCOME: u8 = 12;
    pub const DETAIL: u8 = 13;
}

// usize -> u64 is lossless on every platform Rust supports (pointer width <= 64).
fn len64(n: usize) -> [u8; 8] {
    (n as u64).to_be_bytes()
}

fn field(out: &mut Vec<u8>, t: u8, payload_len: usize) {
    out.push(t);
    out.extend_from_slice(&len64(payload_len));
}

fn put_str(out: &mut Vec<u8>, t: u8, s: &str) {
    field(out, t, s.len());
    out.extend_from_slice(s.as_bytes());
}

fn put_opt(out: &mut Vec<u8>, t: u8, s: Option<&str>) {
    match s {
        None => {
            field(out, t, 1);
            out.push(0);
        }
        Some(s) => {
            field(out, t, 1 + s.len());
            out.push(1);
            out.extend_from_slice(s.as_bytes());
        }
    }
}

/// The patient ids of an entry: a list, or the comma-separated column form the database keeps.
#[derive(Clone, Copy, Debug)]
pub enum Patients<'a> {
    List(&'a [String]),
    Column(&'a str),
}

impl<'a> Patients<'a> {
    fn for_each(self, mut f: impl FnMut(&'a str)) {
        match self {
            Patients::List(l) => l.iter().for_each(|p| f(p)),
            Patients::Column("") => {}
            Patients::Column(c) => c.split(',').for_each(f),
        }
    }
}

/// An audit entry whose text fields are borrowed (from an owned [`AuditEntry`], or straight from
/// a database row), so a verifier can encode and hash it without allocating.
#[derive(Clone, Copy, Debug)]
pub struct EntryRef<'a> {
    pub seq: u64,
    pub recorded_us: i64,
    pub request_id: &'a str,
    pub actor: Option<&'a str>,
    pub role: Option<&'a str>,
    pub source: &'a str,
    pub action: &'a str,
    pub rtype: Option<&'a str>,
    pub rid: Option<&'a str>,
    pub version: Option<u64>,
    pub patients: Patients<'a>,
    pub outcome: u16,
    pub detail: Option<&'a str>,
}

impl EntryRef<'_> {
    /// Append the canonical encoding to `out` (see the module documentation).
    pub fn write_canonical(&self, out: &mut Vec<u8>) {
        out.push(ENCODING_VERSION);
        field(out, tag::SEQ, 8);
        out.extend_from_slice(&self.seq.to_be_bytes());
        field(out, tag::RECORDED_US, 8);
        out.extend_from_slice(&self.recorded_us.to_be_bytes());
        put_str(out, tag::REQUEST_ID, self.request_id);
        put_opt(out, tag::ACTOR, self.actor);
        put_opt(out, tag::ROLE, self.role);
        put_str(out, tag::SOURCE, self.source);
        put_str(out, tag::ACTION, self.action);
        put_opt(out, tag::RTYPE, self.rtype);
        put_opt(out, tag::RID, self.rid);
        match self.version {
            None => {
                field(out, tag::VERSION, 1);
                out.push(0);
            }
            Some(v) => {
                field(out, tag::VERSION, 9);
                out.push(1);
                out.extend_from_slice(&v.to_be_bytes());
            }
        }
        let (mut count, mut bytes) = (0usize, 0usize);
        self.patients.for_each(|p| {
            count += 1;
            bytes += 8 + p.len();
        });
        field(out, tag::PATIENTS, 8 + bytes);
        out.extend_from_slice(&len64(count));
        self.patients.for_each(|p| {
            out.extend_from_slice(&len64(p.len()));
            out.extend_from_slice(p.as_bytes());
        });
        field(out, tag::OUTCOME, 2);
        out.extend_from_slice(&self.outcome.to_be_bytes());
        put_opt(out, tag::DETAIL, self.detail);
    }
}

impl AuditEntry {
    /// The canonical encoding (see the module documentation).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        self.write_canonical(&mut out);
        out
    }

    /// Append the canonical encoding to `out` (lets a verifier reuse one buffer).
    pub fn write_canonical(&self, out: &mut Vec<u8>) {
        self.borrowed().write_canonical(out);
    }

    /// The entry as borrowed fields.
    pub fn borrowed(&self) -> EntryRef<'_> {
        EntryRef {
            seq: self.seq,
            recorded_us: self.recorded_us,
            request_id: &self.request_id,
            actor: self.actor.as_deref(),
            role: self.role.as_deref(),
            source: &self.source,
            action: &self.action,
            rtype: self.rtype.as_deref(),
            rid: self.rid.as_deref(),
            version: self.version,
            patients: Patients::List(&self.patients),
            outcome: self.outcome,
            detail: self.detail.as_deref(),
        }
    }

    /// The Merkle leaf hash of this entry: `SHA-256(0x00 || canonical_bytes)`.
    pub fn leaf_hash(&self) -> Hash {
        merkle::leaf_hash(&self.canonical_bytes())
    }

    /// Decode a canonical encoding; the exact inverse of [`AuditEntry::canonical_bytes`].
    pub fn decode_canonical(bytes: &[u8]) -> Result<AuditEntry, AuditError> {
        let mut r = Reader { rest: bytes };
        if r.take(1)? != [ENCODING_VERSION] {
            return Err(AuditError::MalformedEntry("unknown encoding version"));
        }
        let seq = u64::from_be_bytes(r.fixed::<8>(tag::SEQ)?);
        let recorded_us = i64::from_be_bytes(r.fixed::<8>(tag::RECORDED_US)?);
        let request_id = r.string(tag::REQUEST_ID)?;
        let actor = r.opt(tag::ACTOR)?;
        let role = r.opt(tag::ROLE)?;
        let source = r.string(tag::SOURCE)?;
        let action = r.string(tag::ACTION)?;
        let rtype = r.opt(tag::RTYPE)?;
        let rid = r.opt(tag::RID)?;
        let version = {
            let mut f = Reader { rest: r.field(tag::VERSION)? };
            let v = match f.take(1)? {
                [0] => None,
                [1] => Some(u64::from_be_bytes(f.array::<8>()?)),
                _ => return Err(AuditError::MalformedEntry("bad option marker")),
            };
            f.end()?;
            v
        };
        let patients = {
            let mut f = Reader { rest: r.field(tag::PATIENTS)? };
            let count = u64::from_be_bytes(f.array::<8>()?);
            let mut v = Vec::new();
            for _ in 0..count {
                let n = f.len()?;
                v.push(utf8(f.take(n)?)?);
            }
            f.end()?;
            v
        };
        let outcome = u16::from_be_bytes(r.fixed::<2>(tag::OUTCOME)?);
        let detail = r.opt(tag::DETAIL)?;
        r.end()?;
        Ok(AuditEntry {
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
        })
    }

    /// Split the `audit_event.patients` column (comma-joined ids, `""` for none) the way the
    /// store writes it. Hash what the column reads back as, not what was meant to be written.
    pub fn patients_from_column(column: &str) -> Vec<String> {
        if column.is_empty() { Vec::new() } else { column.split(',').map(str::to_string).collect() }
    }
}

/// The Merkle leaf hash of an entry.
pub fn leaf_hash(entry: &AuditEntry) -> Hash {
    entry.leaf_hash()
}

fn utf8(b: &[u8]) -> Result<String, AuditError> {
    String::from_utf8(b.to_vec()).map_err(|_| AuditError::MalformedEntry("invalid UTF-8"))
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], AuditError> {
        if n > self.rest.len() {
            return Err(AuditError::MalformedEntry("truncated"));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], AuditError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn len(&mut self) -> Result<usize, AuditError> {
        usize::try_from(u64::from_be_bytes(self.array::<8>()?))
            .map_err(|_| AuditError::MalformedEntry("length too large"))
    }

    fn field(&mut self, t: u8) -> Result<&'a [u8], AuditError> {
        if self.take(1)? != [t] {
            return Err(AuditError::MalformedEntry("unexpected field tag"));
        }
        let n = self.len()?;
        self.take(n)
    }

    fn fixed<const N: usize>(&mut self, t: u8) -> Result<[u8; N], AuditError> {
        let mut f = Reader { rest: self.field(t)? };
        let a = f.array::<N>()?;
        f.end()?;
        Ok(a)
    }

    fn string(&mut self, t: u8) -> Result<String, AuditError> {
        utf8(self.field(t)?)
    }

    fn opt(&mut self, t: u8) -> Result<Option<String>, AuditError> {
        match self.field(t)? {
            [0] => Ok(None),
            [1, s @ ..] => Ok(Some(utf8(s)?)),
            _ => Err(AuditError::MalformedEntry("bad option marker")),
        }
    }

    fn end(&self) -> Result<(), AuditError> {
        if self.rest.is_empty() { Ok(()) } else { Err(AuditError::MalformedEntry("trailing bytes")) }
    }
}

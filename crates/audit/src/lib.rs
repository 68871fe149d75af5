#![forbid(unsafe_code)]
//! mamori-audit: tamper evidence for the audit trail (厚生労働省「医療情報システムの安全管理に
//! 関するガイドライン」: access logs protected against deletion, alteration and insertion, and
//! verifiable offline). Pure and I/O-free; the store and the CLI feed it rows and notes.
//!
//!
//! # What is hashed
//!
//! Each `audit_event` row is an [`AuditEntry`]. Its [canonical encoding](entry) is a
//! versioned, tagged, length-prefixed binary form (injective: it decodes back exactly), and
//! the Merkle leaf is `SHA-256(0x00 || canonical_bytes)`. Leaves are appended in ascending
//! `seq` order; leaf *i* (0-based) is the entry at position *i + 1*, which in an intact log is
//! `seq = i + 1`. The tree is the RFC 6962 / RFC 9162 Merkle tree over these leaves
//! ([`merkle`]); a tree of size *n* covers exactly the first *n* entries.
//!
//! # Proofs
//!
//! [`merkle::inclusion_proof`] / [`merkle::verify_inclusion`] and
//! [`merkle::consistency_proof`] / [`merkle::verify_consistency`] are RFC 9162 §2.1.3–2.1.4:
//! a proof is a list of 32-byte hashes, inclusion proofs ordered from the leaf up, the
//! verification algorithms implemented as specified. [`TreeBuilder`] computes roots in one
//! streaming pass with O(log n) memory.
//!
//! # Checkpoints
//!
//! A [`Checkpoint`] is a C2SP `tlog-checkpoint` body (origin, decimal size, base64 root,
//! optional extension lines) signed as a C2SP `signed-note` with Ed25519 ([`checkpoint`]).
//! Mamori uses the key name as the origin (the spec's SHOULD); the verifier requires it.
//! Keys use the golang.org/x/mod/sumdb/note text forms (`vkey`, `PRIVATE+KEY+…` skey), so
//! notes can also be checked with Go's `note` package.
//!
//! # What the verifier detects
//!
//! [`verify_log`] / [`verify_log_witnessed`] / [`LogVerifier`] read the entries once, in
//! storage order, and report [`Finding`]s:
//!
//! * Sequence (`seq` must run 1, 2, 3, …). Let *high* be the largest seq seen so far.
//!   - `seq = high + 1`: in order.
//!   - `seq > high + 1`: the seqs in between are provisionally missing; if none of them turns
//!     up later they are reported as [`FindingKind::Deleted`] (finding `seq` = first missing).
//!   - `seq ≤ high` and provisionally missing: the entry came late → [`FindingKind::Reordered`]
//!     (a swap of two adjacent entries is exactly one `Reordered`, count 1). Runs are merged.
//!   - `seq ≤ high` otherwise (already seen, or 0): [`FindingKind::Inserted`] (duplicate or
//!     forged row).
//! * Time: `recorded_us` must not decrease along the entries that advance the sequence
//!   ([`FindingKind::TimeWentBackwards`]).
//! * Checkpoints: each validly signed checkpoint's root must equal the root of the first
//!   `size` entries. A mismatch is [`FindingKind::CheckpointMismatch`] and names the interval
//!   of positions that must contain the change (between the last matching checkpoint and this
//!   one) — this is what catches alterations, and insertions/deletions disguised by
//!   renumbering. A log shorter than a checkpoint is [`FindingKind::Truncated`]. Two valid
//!   checkpoints that cannot both be prefixes of one log (same size, different roots; or the
//!   log matches the larger but not the smaller) are a [`FindingKind::Fork`]: the signing key
//!   signed a rewritten history. Unverifiable checkpoints are [`FindingKind::BadCheckpoint`]
//!   and checkpoints of another origin [`FindingKind::ForeignOrigin`].
//!
//! Limits, by construction: entries after the last checkpoint are vouched for by nothing (a
//! tail deletion or append there is invisible; [`VerifyReport::covered_size`] says how far
//! the checkpoints reach), and whoever holds the signing key can rewrite the table and
//! re-sign — only checkpoints kept *outside* the database ([`verify_log_witnessed`]) expose
//! that.

pub mod checkpoint;
pub mod entry;
pub mod error;
pub mod merkle;
pub mod verify;

pub use checkpoint::{Checkpoint, SigningKey, VerifierKey, open, open_note, sign, sign_note};
pub use entry::{AuditEntry, EntryRef, Patients};
pub use error::AuditError;
pub use merkle::{Hash, TreeBuilder};
pub use verify::{
    CheckpointSource, Finding, FindingKind, LogVerifier, SignedCheckpointText, VerifyReport, split_notes, verify_log,
    verify_log_witnessed,
};

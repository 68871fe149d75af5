//! Errors of the audit core.

/// Why an audit operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// A leaf index or tree size does not fit the tree it refers to.
    #[error("index {index} is out of range for a tree of {size} leaves")]
    OutOfRange { index: u64, size: u64 },
    /// A key name is empty or contains a space or `+` (C2SP signed-note).
    #[error("invalid key name {0:?}")]
    InvalidKeyName(String),
    /// A `vkey`/`skey` text or raw key material could not be parsed.
    #[error("malformed key: {0}")]
    MalformedKey(&'static str),
    /// The note is not a well-formed C2SP signed note.
    #[error("malformed note: {0}")]
    MalformedNote(&'static str),
    /// The checkpoint body is not a well-formed C2SP tlog-checkpoint.
    #[error("malformed checkpoint: {0}")]
    MalformedCheckpoint(&'static str),
    /// A signature by the trusted key (same name and key ID) does not verify.
    #[error("invalid signature by {0}")]
    InvalidSignature(String),
    /// The note carries no signature by the trusted key.
    #[error("no signature by the trusted key {0}")]
    UnknownSigner(String),
    /// The canonical encoding of an audit entry could not be decoded.
    #[error("malformed audit entry encoding: {0}")]
    MalformedEntry(&'static str),
    /// The operating system's random number generator failed.
    #[error("random number generator failed")]
    Random,
}

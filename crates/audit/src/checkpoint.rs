//! C2SP `tlog-checkpoint` bodies signed as C2SP `signed-note`s with Ed25519.
//!
//! Checkpoint body (<https://c2sp.org/tlog-checkpoint>): at least three non-empty lines, each
//! ending in `\n`: the origin, the tree size in decimal (no leading zeros), the standard
//! base64 of the 32-byte RFC 6962 root, then optional non-empty extension lines.
//!
//! Signed note (<https://c2sp.org/signed-note>): the text, a blank line, then one or more
//! lines `— <key name> <base64(key ID (4 bytes, big-endian) || signature)>` (U+2014 EM DASH,
//! space). For Ed25519 the key ID is `SHA-256(name || 0x0A || 0x01 || pubkey)[:4]` and the
//! signature is RFC 8032 Ed25519 over the note text (including its final newline).
//!
//! Key texts follow golang.org/x/mod/sumdb/note: verifier key `<name>+<8 hex key ID>+<base64(0x01
//! || pubkey)>`, signer key `PRIVATE+KEY+<name>+<8 hex key ID>+<base64(0x01 || seed)>`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::Signer as _;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::AuditError;
use crate::merkle::Hash;

/// Signature type byte of Ed25519 in C2SP signed-note.
const ALG_ED25519: u8 = 0x01;
/// Prefix of a signature line.
const SIG_PREFIX: &str = "\u{2014} ";
/// Most signature lines accepted in one note (the spec requires at least 16).
const MAX_SIGNATURES: usize = 100;

/// A tree head: the log `origin`, its `size` (number of entries) and Merkle `root`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    pub extensions: Vec<String>,
}

fn has_forbidden_control(s: &str) -> bool {
    s.chars().any(|c| c.is_control() && c != '\n')
}

impl Checkpoint {
    /// The checkpoint note text.
    pub fn to_body(&self) -> String {
        let mut s = format!("{}\n{}\n{}\n", self.origin, self.size, B64.encode(self.root));
        for e in &self.extensions {
            s.push_str(e);
            s.push('\n');
        }
        s
    }

    /// Parse a checkpoint note text (strict: exactly the form [`Checkpoint::to_body`] writes).
    pub fn parse_body(body: &str) -> Result<Checkpoint, AuditError> {
        let bad = AuditError::MalformedCheckpoint;
        if has_forbidden_control(body) {
            return Err(bad("control character"));
        }
        let Some(inner) = body.strip_suffix('\n') else {
            return Err(bad("missing final newline"));
        };
        let lines: Vec<&str> = inner.split('\n').collect();
        if lines.iter().any(|l| l.is_empty()) {
            return Err(bad("empty line"));
        }
        let [origin, size, root, extensions @ ..] = lines.as_slice() else {
            return Err(bad("fewer than three lines"));
        };
        if !size.bytes().all(|b| b.is_ascii_digit()) || (size.len() > 1 && size.starts_with('0')) {
            return Err(bad("tree size is not a canonical decimal"));
        }
        let size: u64 = size.parse().map_err(|_| bad("tree size out of range"))?;
        let root: Hash = B64
            .decode(root)
            .map_err(|_| bad("root hash is not base64"))?
            .try_into()
            .map_err(|_| bad("root hash is not 32 bytes"))?;
        Ok(Checkpoint {
            origin: (*origin).to_string(),
            size,
            root,
            extensions: extensions.iter().map(|e| (*e).to_string()).collect(),
        })
    }
}

/// Key names: non-empty, no Unicode white space, no `+` (and, being note text, no controls).
fn check_name(name: &str) -> Result<(), AuditError> {
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == '+' || c.is_control()) {
        return Err(AuditError::InvalidKeyName(name.to_string()));
    }
    Ok(())
}

/// `SHA-256(name || 0x0A || 0x01 || pubkey)[:4]` as a big-endian u32.
fn key_id(name: &str, public: &[u8; 32]) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([0x0a, ALG_ED25519]);
    h.update(public);
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// An Ed25519 signing key with its note key name. The secret is zeroised on drop.
pub struct SigningKey {
    name: String,
    key: ed25519_dalek::SigningKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("name", &self.name).finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh key from the operating system's random number generator.
    pub fn generate(name: &str) -> Result<SigningKey, AuditError> {
        use rand::TryRngCore as _;
        let mut seed = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.try_fill_bytes(&mut seed[..]).map_err(|_| AuditError::Random)?;
        SigningKey::from_seed(name, &seed)
    }

    /// The key for a 32-byte RFC 8032 seed (the private key).
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<SigningKey, AuditError> {
        check_name(name)?;
        Ok(SigningKey { name: name.to_string(), key: ed25519_dalek::SigningKey::from_bytes(seed) })
    }

    /// The 32-byte seed; keep it secret.
    pub fn seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.key.to_bytes())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The public half, for verification.
    pub fn verifier_key(&self) -> VerifierKey {
        let public = self.key.verifying_key();
        VerifierKey { name: self.name.clone(), id: key_id(&self.name, public.as_bytes()), public }
    }

    /// `PRIVATE+KEY+<name>+<hex key ID>+<base64(0x01 || seed)>`; keep it secret.
    pub fn to_skey(&self) -> Zeroizing<String> {
        let mut raw = Zeroizing::new(Vec::with_capacity(33));
        raw.push(ALG_ED25519);
        raw.extend_from_slice(&self.key.to_bytes());
        let id = self.verifier_key().id;
        Zeroizing::new(format!("PRIVATE+KEY+{}+{id:08x}+{}", self.name, B64.encode(&raw[..])))
    }

    /// Parse the text of [`SigningKey::to_skey`], checking the key ID.
    pub fn from_skey(skey: &str) -> Result<SigningKey, AuditError> {
        let rest = skey.strip_prefix("PRIVATE+KEY+").ok_or(AuditError::MalformedKey("missing PRIVATE+KEY+ prefix"))?;
        let (name, id, raw) = split_key_text(rest)?;
        let raw = Zeroizing::new(raw);
        let [alg, seed @ ..] = raw.as_slice() else {
            return Err(AuditError::MalformedKey("empty key"));
        };
        if *alg != ALG_ED25519 {
            return Err(AuditError::MalformedKey("not an Ed25519 key"));
        }
        let seed: Zeroizing<[u8; 32]> =
            Zeroizing::new(seed.try_into().map_err(|_| AuditError::MalformedKey("seed is not 32 bytes"))?);
        let key = SigningKey::from_seed(name, &seed)?;
        if key.verifier_key().id != id {
            return Err(AuditError::MalformedKey("key ID does not match the key"));
        }
        Ok(key)
    }
}

/// `<name>+<8 hex digits>+<base64>` → (name, id, decoded bytes).
fn split_key_text(text: &str) -> Result<(&str, u32, Vec<u8>), AuditError> {
    let mut parts = text.splitn(3, '+');
    let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(AuditError::MalformedKey("expected <name>+<key ID>+<key>"));
    };
    check_name(name).map_err(|_| AuditError::MalformedKey("invalid key name"))?;
    if id.len() != 8 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(AuditError::MalformedKey("key ID is not 8 hex digits"));
    }
    let id = u32::from_str_radix(id, 16).map_err(|_| AuditError::MalformedKey("bad key ID"))?;
    let raw = B64.decode(key).map_err(|_| AuditError::MalformedKey("key is not base64"))?;
    Ok((name, id, raw))
}

/// The public key that verifies signed notes: name, key ID and Ed25519 public key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifierKey {
    name: String,
    id: u32,
    public: ed25519_dalek::VerifyingKey,
}

impl VerifierKey {
    /// From a name and a raw 32-byte Ed25519 public key.
    pub fn from_public(name: &str, public: &[u8; 32]) -> Result<VerifierKey, AuditError> {
        check_name(name)?;
        let public = ed25519_dalek::VerifyingKey::from_bytes(public)
            .map_err(|_| AuditError::MalformedKey("not an Ed25519 public key"))?;
        Ok(VerifierKey { name: name.to_string(), id: key_id(name, public.as_bytes()), public })
    }

    /// Parse `<name>+<hex key ID>+<base64(0x01 || pubkey)>`, checking the key ID.
    pub fn from_vkey(vkey: &str) -> Result<VerifierKey, AuditError> {
        let (name, id, raw) = split_key_text(vkey)?;
        let [alg, public @ ..] = raw.as_slice() else {
            return Err(AuditError::MalformedKey("empty key"));
        };
        if *alg != ALG_ED25519 {
            return Err(AuditError::MalformedKey("not an Ed25519 key"));
        }
        let public: &[u8; 32] =
            public.try_into().map_err(|_| AuditError::MalformedKey("public key is not 32 bytes"))?;
        let key = VerifierKey::from_public(name, public)?;
        if key.id != id {
            return Err(AuditError::MalformedKey("key ID does not match the key"));
        }
        Ok(key)
    }

    /// The `vkey` text.
    pub fn to_vkey(&self) -> String {
        let mut raw = Vec::with_capacity(33);
        raw.push(ALG_ED25519);
        raw.extend_from_slice(self.public.as_bytes());
        format!("{}+{:08x}+{}", self.name, self.id, B64.encode(raw))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The 4-byte key ID (big-endian u32).
    pub fn key_id(&self) -> u32 {
        self.id
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.public.to_bytes()
    }
}

/// Sign a note text (non-empty, ending in `\n`, no control characters but `\n`) and return
/// the whole signed note.
pub fn sign_note(text: &str, key: &SigningKey) -> Result<String, AuditError> {
    if !text.ends_with('\n') || has_forbidden_control(text) {
        return Err(AuditError::MalformedNote("text must end in a newline and contain no controls"));
    }
    let sig = key.key.sign(text.as_bytes());
    let mut raw = Vec::with_capacity(4 + 64);
    raw.extend_from_slice(&key.verifier_key().id.to_be_bytes());
    raw.extend_from_slice(&sig.to_bytes());
    Ok(format!("{text}\n{SIG_PREFIX}{} {}\n", key.name, B64.encode(raw)))
}

/// Check a signed note against the trusted key and return its text.
///
/// Signatures by other keys (another name or key ID) are ignored, as the spec requires; a
/// signature that claims the trusted key's name and ID but does not verify rejects the note;
/// a note without a verified signature by the trusted key is rejected; so is anything that is
/// not exactly text, blank line, signature lines.
pub fn open_note<'a>(note: &'a str, verifier: &VerifierKey) -> Result<&'a str, AuditError> {
    let bad = AuditError::MalformedNote;
    if has_forbidden_control(note) {
        return Err(bad("control character"));
    }
    if !note.ends_with('\n') {
        return Err(bad("missing final newline"));
    }
    let split = note.rfind("\n\n").ok_or(bad("no blank line before the signatures"))?;
    let (text, sigs) = (&note[..split + 1], &note[split + 2..]);
    if sigs.is_empty() {
        return Err(bad("no signatures"));
    }
    let mut verified = 0usize;
    for (i, line) in sigs.split_terminator('\n').enumerate() {
        if i >= MAX_SIGNATURES {
            return Err(bad("too many signatures"));
        }
        let rest = line.strip_prefix(SIG_PREFIX).ok_or(bad("not a signature line"))?;
        let (name, b64) = rest.split_once(' ').ok_or(bad("signature line without a signature"))?;
        check_name(name).map_err(|_| bad("invalid key name in signature line"))?;
        let raw = B64.decode(b64).map_err(|_| bad("signature is not base64"))?;
        let [a, b, c, d, sig @ ..] = raw.as_slice() else {
            return Err(bad("signature too short"));
        };
        if sig.is_empty() {
            return Err(bad("signature too short"));
        }
        if name != verifier.name || u32::from_be_bytes([*a, *b, *c, *d]) != verifier.id {
            continue; // not our key: ignore
        }
        let invalid = || AuditError::InvalidSignature(verifier.name.clone());
        let sig = ed25519_dalek::Signature::from_slice(sig).map_err(|_| invalid())?;
        verifier.public.verify_strict(text.as_bytes(), &sig).map_err(|_| invalid())?;
        verified += 1;
    }
    if verified == 0 {
        return Err(AuditError::UnknownSigner(verifier.name.clone()));
    }
    Ok(text)
}

/// Sign a checkpoint: the full signed note text.
pub fn sign(checkpoint: &Checkpoint, key: &SigningKey) -> Result<String, AuditError> {
    let body = checkpoint.to_body();
    // Refuse what would not read back identically (newlines in the origin, empty extensions…).
    if Checkpoint::parse_body(&body).as_ref() != Ok(checkpoint) {
        return Err(AuditError::MalformedCheckpoint("checkpoint does not round-trip"));
    }
    sign_note(&body, key)
}

/// Verify a signed checkpoint note against the trusted key and parse its body.
pub fn open(note: &str, verifier: &VerifierKey) -> Result<Checkpoint, AuditError> {
    Checkpoint::parse_body(open_note(note, verifier)?)
}

//! WebAuthn relying party (AUTH-2): the checks of W3C WebAuthn Level 2 §7.1 (registering a new
//! credential) and §7.2 (verifying an authentication assertion), without I/O. The store keeps
//! challenges and credentials and calls these; the server turns JSON into bytes.
//!
//! What is checked: client data type, challenge and origin (against the configured origins;
//! cross-origin use and token binding refused), the RP ID hash, the user-presence flag (always
//! required) and user verification (when the policy requires it), the credential's COSE key
//! (ES256, EdDSA, RS256), the signature (aws-lc-rs), and the attestation statement of the formats
//! `none` and `packed` (self attestation: signed with the credential key; with a certificate
//! (`x5c`): signed with the certificate's key). What is not: whether an attestation
//! certificate chains to a trusted vendor root (no attestation trust anchors are configured;
//! a credential is trusted because the account holder registered it after proving their
//! password and an enrolment ticket or session, not because of its make).

mod cbor;
pub mod cose;
pub mod data;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};

pub use cose::CosePublicKey;
pub use data::{AttestationObject, AuthenticatorData, ClientData};

/// Random bytes of a challenge (WebAuthn asks for at least 16).
pub const CHALLENGE_BYTES: usize = 32;
/// Random bytes of a user handle (opaque, no personal data, at most 64).
pub const USER_HANDLE_BYTES: usize = 32;

/// Whether the authenticator must verify the user (PIN, biometrics) itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserVerification {
    Required,
    Preferred,
    Discouraged,
}

impl UserVerification {
    pub fn as_str(self) -> &'static str {
        match self {
            UserVerification::Required => "required",
            UserVerification::Preferred => "preferred",
            UserVerification::Discouraged => "discouraged",
        }
    }

    pub fn parse(s: &str) -> Option<UserVerification> {
        match s {
            "required" => Some(UserVerification::Required),
            "preferred" => Some(UserVerification::Preferred),
            "discouraged" => Some(UserVerification::Discouraged),
            _ => None,
        }
    }
}

/// The relying party: who mamori is to authenticators and browsers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelyingParty {
    /// RP ID: the domain credentials are scoped to (e.g. `emr.example.jp`).
    pub id: String,
    /// Name shown by the browser.
    pub name: String,
    /// Origins the browser may report (`https://emr.example.jp`, `https://emr.example.jp:8443`).
    pub origins: Vec<String>,
    pub user_verification: UserVerification,
    /// How long a challenge may be answered.
    pub challenge_ttl: time::Duration,
}

impl RelyingParty {
    /// Checks an RP configuration: the RP ID is a host name, each origin is `https://` (or
    /// `http://localhost`) with a host equal to the RP ID or under it.
    pub fn new(
        id: &str,
        name: &str,
        origins: &[String],
        user_verification: UserVerification,
        challenge_ttl: time::Duration,
    ) -> Result<RelyingParty, String> {
        let host_ok = |h: &str| {
            !h.is_empty()
                && h.len() <= 253
                && h.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                })
        };
        if !host_ok(id) {
            return Err(format!("RP ID {id:?} must be a lower-case host name such as \"emr.example.jp\""));
        }
        if name.trim().is_empty() || name.len() > 64 {
            return Err("the RP name must be 1-64 characters".into());
        }
        if origins.is_empty() {
            return Err("at least one origin is needed (e.g. \"https://emr.example.jp\")".into());
        }
        for o in origins {
            let (scheme, rest) =
                o.split_once("://").ok_or_else(|| format!("origin {o:?} is not scheme://host[:port]"))?;
            let host = match rest.rsplit_once(':') {
                Some((h, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => h,
                _ => rest,
            };
            if !host_ok(host) || rest.contains('/') {
                return Err(format!("origin {o:?} is not scheme://host[:port] (no path, lower case)"));
            }
            let secure = scheme == "https" || (scheme == "http" && host == "localhost");
            if !secure {
                return Err(format!("origin {o:?} must use https (http only for localhost)"));
            }
            if host != id && !host.ends_with(&format!(".{id}")) {
                return Err(format!("origin {o:?} is not within the RP ID {id:?}"));
            }
        }
        if challenge_ttl <= time::Duration::ZERO || challenge_ttl > time::Duration::minutes(10) {
            return Err("the challenge lifetime must be at most 10m".into());
        }
        Ok(RelyingParty {
            id: id.to_string(),
            name: name.to_string(),
            origins: origins.to_vec(),
            user_verification,
            challenge_ttl,
        })
    }

    pub fn rp_id_hash(&self) -> [u8; 32] {
        Sha256::digest(self.id.as_bytes()).into()
    }

    /// Client-data checks shared by both ceremonies (§7.1 steps 7-10, §7.2 steps 11-14).
    fn check_client_data(&self, raw: &[u8], ty: &'static str, challenge: &[u8]) -> Result<(), WebauthnError> {
        let c = ClientData::parse(raw)?;
        if c.ty != ty {
            return Err(WebauthnError::WrongType(ty));
        }
        if c.challenge.len() != challenge.len()
            || !bool::from(subtle::ConstantTimeEq::ct_eq(&c.challenge[..], challenge))
        {
            return Err(WebauthnError::WrongChallenge);
        }
        if !self.origins.contains(&c.origin) {
            return Err(WebauthnError::WrongOrigin);
        }
        if c.cross_origin {
            return Err(WebauthnError::CrossOrigin);
        }
        if c.token_binding.as_deref() == Some("present") {
            return Err(WebauthnError::TokenBinding);
        }
        Ok(())
    }

    /// Authenticator-data checks shared by both ceremonies.
    fn check_auth_data(&self, a: &AuthenticatorData) -> Result<(), WebauthnError> {
        if a.rp_id_hash != self.rp_id_hash() {
            return Err(WebauthnError::WrongRpId);
        }
        if !a.user_present() {
            return Err(WebauthnError::UserNotPresent);
        }
        if self.user_verification == UserVerification::Required && !a.user_verified() {
            return Err(WebauthnError::UserNotVerified);
        }
        Ok(())
    }
}

/// Why a ceremony was refused. The client hears "invalid credentials" (login) or a generic
/// refusal (registration); the audit trail records [`WebauthnError::code`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WebauthnError {
    /// A structure could not be parsed (which one is named).
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// The client data's `type` is not the ceremony's.
    #[error("client data type is not {0}")]
    WrongType(&'static str),
    /// The client data's challenge is not the one issued.
    #[error("the challenge does not match")]
    WrongChallenge,
    /// The origin is not a configured origin.
    #[error("the origin is not allowed")]
    WrongOrigin,
    /// The ceremony ran in a cross-origin frame.
    #[error("cross-origin ceremonies are not allowed")]
    CrossOrigin,
    /// Token binding is in use (not supported).
    #[error("token binding is not supported")]
    TokenBinding,
    /// The authenticator data is for another RP ID.
    #[error("the RP ID hash does not match")]
    WrongRpId,
    /// The user-presence flag is not set.
    #[error("the user was not present")]
    UserNotPresent,
    /// User verification is required and was not done.
    #[error("the user was not verified")]
    UserNotVerified,
    /// A registration without attested credential data.
    #[error("no attested credential data")]
    NoCredentialData,
    /// A key algorithm mamori does not accept.
    #[error("unsupported algorithm")]
    UnsupportedAlgorithm,
    /// An attestation format other than `none` and `packed`.
    #[error("unsupported attestation format")]
    UnsupportedAttestation,
    /// The attestation statement does not verify.
    #[error("the attestation statement does not verify")]
    BadAttestation,
    /// The assertion signature does not verify.
    #[error("the signature does not verify")]
    BadSignature,
    /// The signature counter did not increase: possibly a cloned authenticator (§6.1.1).
    #[error("the signature counter went from {stored} to {presented}: possible cloned authenticator")]
    SignCountRegression { stored: u32, presented: u32 },
}

impl WebauthnError {
    /// A stable code for the audit trail.
    pub fn code(&self) -> &'static str {
        match self {
            WebauthnError::Malformed(_) => "malformed",
            WebauthnError::WrongType(_) => "wrong-type",
            WebauthnError::WrongChallenge => "wrong-challenge",
            WebauthnError::WrongOrigin => "wrong-origin",
            WebauthnError::CrossOrigin => "cross-origin",
            WebauthnError::TokenBinding => "token-binding",
            WebauthnError::WrongRpId => "wrong-rp-id",
            WebauthnError::UserNotPresent => "user-not-present",
            WebauthnError::UserNotVerified => "user-not-verified",
            WebauthnError::NoCredentialData => "no-credential-data",
            WebauthnError::UnsupportedAlgorithm => "unsupported-algorithm",
            WebauthnError::UnsupportedAttestation => "unsupported-attestation",
            WebauthnError::BadAttestation => "bad-attestation",
            WebauthnError::BadSignature => "bad-signature",
            WebauthnError::SignCountRegression { .. } => "sign-count-regression",
        }
    }
}

/// Fresh random bytes for a challenge or a user handle.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::rng().fill_bytes(&mut b);
    b
}

pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Base64url as browsers' `toJSON()` gives it (padding tolerated).
pub fn from_b64url(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok()
}

/// A credential that passed §7.1, ready to store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    pub credential_id: Vec<u8>,
    /// The COSE_Key as the authenticator encoded it.
    pub public_key: Vec<u8>,
    pub alg: i64,
    pub sign_count: u32,
    pub user_verified: bool,
    pub backup_eligible: bool,
    pub aaguid: [u8; 16],
    /// `none`, `packed-self` or `packed-x5c` (certificate chain not assessed).
    pub attestation: &'static str,
}

/// WebAuthn L2 §7.1 steps 5-22 for a `navigator.credentials.create()` response.
pub fn verify_registration(
    rp: &RelyingParty,
    challenge: &[u8],
    client_data_json: &[u8],
    attestation_object: &[u8],
) -> Result<Registration, WebauthnError> {
    rp.check_client_data(client_data_json, "webauthn.create", challenge)?;
    let client_data_hash: [u8; 32] = Sha256::digest(client_data_json).into();
    let att = AttestationObject::parse(attestation_object)?;
    rp.check_auth_data(&att.auth_data)?;
    let cred = att.auth_data.attested.as_ref().ok_or(WebauthnError::NoCredentialData)?;
    if !cose::ALGORITHMS.contains(&cred.public_key.alg()) {
        return Err(WebauthnError::UnsupportedAlgorithm);
    }
    let mut signed = att.auth_data_raw.clone();
    signed.extend_from_slice(&client_data_hash);
    let attestation = verify_statement(&att, cred, &signed)?;
    Ok(Registration {
        credential_id: cred.credential_id.clone(),
        public_key: cred.public_key_cbor.clone(),
        alg: cred.public_key.alg(),
        sign_count: att.auth_data.sign_count,
        user_verified: att.auth_data.user_verified(),
        backup_eligible: att.auth_data.backup_eligible(),
        aaguid: cred.aaguid,
        attestation,
    })
}

/// §8.7 (`none`) and §8.2 (`packed`) verification procedures.
fn verify_statement(
    att: &AttestationObject,
    cred: &data::AttestedCredential,
    signed: &[u8],
) -> Result<&'static str, WebauthnError> {
    match att.fmt.as_str() {
        "none" if att.att_stmt.is_empty() => Ok("none"),
        "none" => Err(WebauthnError::BadAttestation),
        "packed" => {
            let bad = |_| WebauthnError::BadAttestation;
            let m = &att.att_stmt;
            let alg = cbor::int(cbor::get_text_key(m, "alg").ok_or(WebauthnError::BadAttestation)?, "attStmt")
                .map_err(bad)?;
            let sig = cbor::bytes(cbor::get_text_key(m, "sig").ok_or(WebauthnError::BadAttestation)?, "attStmt")
                .map_err(bad)?;
            match cbor::get_text_key(m, "x5c") {
                None => {
                    if m.len() != 2 || alg != cred.public_key.alg() {
                        return Err(WebauthnError::BadAttestation);
                    }
                    cred.public_key.verify(signed, sig).map_err(bad)?;
                    Ok("packed-self")
                }
                Some(x5c) => {
                    let chain = match x5c {
                        ciborium::Value::Array(a) if !a.is_empty() && m.len() == 3 => a,
                        _ => return Err(WebauthnError::BadAttestation),
                    };
                    let leaf = cbor::bytes(&chain[0], "attStmt").map_err(bad)?;
                    let der = rustls_pki_types::CertificateDer::from(leaf);
                    let cert = webpki::EndEntityCert::try_from(&der).map_err(|_| WebauthnError::BadAttestation)?;
                    let alg = CosePublicKey::webpki_alg(alg).ok_or(WebauthnError::UnsupportedAlgorithm)?;
                    cert.verify_signature(alg, signed, sig).map_err(|_| WebauthnError::BadAttestation)?;
                    Ok("packed-x5c")
                }
            }
        }
        _ => Err(WebauthnError::UnsupportedAttestation),
    }
}

/// What an accepted assertion changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Assertion {
    pub sign_count: u32,
    pub user_verified: bool,
}

/// WebAuthn L2 §7.2 steps 11-21 for a `navigator.credentials.get()` response, against the
/// stored key and counter of the credential the response names (the caller has checked that
/// the credential belongs to the account and the user handle, if any, is the account's).
pub fn verify_assertion(
    rp: &RelyingParty,
    challenge: &[u8],
    public_key: &[u8],
    stored_sign_count: u32,
    client_data_json: &[u8],
    authenticator_data: &[u8],
    signature: &[u8],
) -> Result<Assertion, WebauthnError> {
    rp.check_client_data(client_data_json, "webauthn.get", challenge)?;
    let a = AuthenticatorData::parse(authenticator_data)?;
    if a.attested.is_some() {
        return Err(WebauthnError::Malformed("authenticator data"));
    }
    rp.check_auth_data(&a)?;
    let key = CosePublicKey::from_cbor(public_key)?;
    let mut signed = authenticator_data.to_vec();
    signed.extend_from_slice(&Sha256::digest(client_data_json));
    key.verify(&signed, signature)?;
    // §7.2 step 21: a counter that does not grow (when either side is non-zero) signals that
    // two copies of the credential exist.
    if (a.sign_count != 0 || stored_sign_count != 0) && a.sign_count <= stored_sign_count {
        return Err(WebauthnError::SignCountRegression { stored: stored_sign_count, presented: a.sign_count });
    }
    Ok(Assertion { sign_count: a.sign_count, user_verified: a.user_verified() })
}

#[cfg(test)]
mod tests;

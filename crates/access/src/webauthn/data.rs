//! The structures an authenticator and a browser hand over, parsed into types that cannot be
//! invalid: authenticator data (WebAuthn L2 §6.1), the attestation object (§6.5) and the client
//! data (§5.8.1). Any deviation is [`WebauthnError::Malformed`]; nothing here panics.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ciborium::Value;

use super::cose::CosePublicKey;
use super::{WebauthnError, cbor};

/// Flag bits of authenticator data.
pub const FLAG_UP: u8 = 0x01;
pub const FLAG_UV: u8 = 0x04;
pub const FLAG_BE: u8 = 0x08;
pub const FLAG_BS: u8 = 0x10;
pub const FLAG_AT: u8 = 0x40;
pub const FLAG_ED: u8 = 0x80;

/// Longest credential ID accepted (WebAuthn L2 §5.8.3: at most 1023 bytes).
pub const MAX_CREDENTIAL_ID: usize = 1023;

/// Parsed authenticator data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthenticatorData {
    pub rp_id_hash: [u8; 32],
    pub flags: u8,
    pub sign_count: u32,
    pub attested: Option<AttestedCredential>,
}

/// The credential an authenticator created (registration only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttestedCredential {
    pub aaguid: [u8; 16],
    pub credential_id: Vec<u8>,
    pub public_key: CosePublicKey,
    /// The COSE_Key exactly as the authenticator encoded it (what is stored).
    pub public_key_cbor: Vec<u8>,
}

impl AuthenticatorData {
    pub fn parse(raw: &[u8]) -> Result<AuthenticatorData, WebauthnError> {
        const BAD: WebauthnError = WebauthnError::Malformed("authenticator data");
        let head = raw.get(..37).ok_or(BAD)?;
        let mut rp_id_hash = [0u8; 32];
        rp_id_hash.copy_from_slice(&head[..32]);
        let flags = head[32];
        let sign_count = u32::from_be_bytes([head[33], head[34], head[35], head[36]]);
        let mut rest = &raw[37..];
        let attested = if flags & FLAG_AT != 0 {
            let aaguid: [u8; 16] = rest.get(..16).ok_or(BAD)?.try_into().map_err(|_| BAD)?;
            let len = rest.get(16..18).ok_or(BAD)?;
            let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
            if len == 0 || len > MAX_CREDENTIAL_ID {
                return Err(BAD);
            }
            let credential_id = rest.get(18..18 + len).ok_or(BAD)?.to_vec();
            rest = &rest[18 + len..];
            let (key, used) = cbor::decode_prefix(rest, "public key")?;
            let public_key = CosePublicKey::from_value(&key)?;
            let public_key_cbor = rest[..used].to_vec();
            rest = &rest[used..];
            Some(AttestedCredential { aaguid, credential_id, public_key, public_key_cbor })
        } else {
            None
        };
        if flags & FLAG_ED != 0 {
            let (ext, used) = cbor::decode_prefix(rest, "extensions")?;
            cbor::map(&ext, "extensions")?;
            rest = &rest[used..];
        }
        if !rest.is_empty() {
            return Err(BAD);
        }
        // Backup state without backup eligibility is invalid (§6.1.3).
        if flags & FLAG_BS != 0 && flags & FLAG_BE == 0 {
            return Err(BAD);
        }
        Ok(AuthenticatorData { rp_id_hash, flags, sign_count, attested })
    }

    pub fn user_present(&self) -> bool {
        self.flags & FLAG_UP != 0
    }

    pub fn user_verified(&self) -> bool {
        self.flags & FLAG_UV != 0
    }

    pub fn backup_eligible(&self) -> bool {
        self.flags & FLAG_BE != 0
    }
}

/// A parsed attestation object: format, statement and the raw authenticator data (which the
/// attestation signature covers).
#[derive(Clone, Debug, PartialEq)]
pub struct AttestationObject {
    pub fmt: String,
    pub att_stmt: Vec<(Value, Value)>,
    pub auth_data_raw: Vec<u8>,
    pub auth_data: AuthenticatorData,
}

impl AttestationObject {
    pub fn parse(raw: &[u8]) -> Result<AttestationObject, WebauthnError> {
        const BAD: WebauthnError = WebauthnError::Malformed("attestation object");
        let v = cbor::decode_all(raw, "attestation object")?;
        let m = cbor::map(&v, "attestation object")?;
        if m.len() != 3 {
            return Err(BAD);
        }
        let fmt = cbor::text(cbor::get_text_key(m, "fmt").ok_or(BAD)?, "attestation object")?.to_string();
        let att_stmt = cbor::map(cbor::get_text_key(m, "attStmt").ok_or(BAD)?, "attestation object")?.to_vec();
        let auth_data_raw = cbor::bytes(cbor::get_text_key(m, "authData").ok_or(BAD)?, "attestation object")?.to_vec();
        let auth_data = AuthenticatorData::parse(&auth_data_raw)?;
        Ok(AttestationObject { fmt, att_stmt, auth_data_raw, auth_data })
    }
}

/// Parsed `clientDataJSON` (the members mamori checks).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientData {
    pub ty: String,
    pub challenge: Vec<u8>,
    pub origin: String,
    pub cross_origin: bool,
    /// `tokenBinding.status` when present ("present", "supported").
    pub token_binding: Option<String>,
}

impl ClientData {
    pub fn parse(raw: &[u8]) -> Result<ClientData, WebauthnError> {
        const BAD: WebauthnError = WebauthnError::Malformed("client data");
        let v: serde_json::Value = serde_json::from_slice(raw).map_err(|_| BAD)?;
        let o = v.as_object().ok_or(BAD)?;
        let s = |k: &str| o.get(k).and_then(serde_json::Value::as_str).ok_or(BAD);
        let ty = s("type")?.to_string();
        let challenge = URL_SAFE_NO_PAD.decode(s("challenge")?).map_err(|_| BAD)?;
        let origin = s("origin")?.to_string();
        let cross_origin = match o.get("crossOrigin") {
            None | Some(serde_json::Value::Null) => false,
            Some(serde_json::Value::Bool(b)) => *b,
            Some(_) => return Err(BAD),
        };
        let token_binding = match o.get("tokenBinding") {
            None | Some(serde_json::Value::Null) => None,
            Some(tb) => Some(tb.get("status").and_then(serde_json::Value::as_str).ok_or(BAD)?.to_string()),
        };
        Ok(ClientData { ty, challenge, origin, cross_origin, token_binding })
    }
}

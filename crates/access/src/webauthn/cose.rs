//! COSE public keys (RFC 9052/9053, WebAuthn Level 2 §5.8.5) of the algorithms mamori accepts:
//! ES256 (−7, P-256), EdDSA (−8, Ed25519) and RS256 (−257, RSA PKCS#1 v1.5 with SHA-256).
//! Parsing is ours; every signature check is aws-lc-rs's.

use aws_lc_rs::signature::{self, ParsedPublicKey, RsaPublicKeyComponents};
use ciborium::Value;

use super::WebauthnError;
use super::cbor;

/// COSE algorithm identifiers accepted, in the order offered to authenticators.
pub const ES256: i64 = -7;
pub const EDDSA: i64 = -8;
pub const RS256: i64 = -257;
pub const ALGORITHMS: [i64; 3] = [ES256, EDDSA, RS256];

/// RSA moduli accepted: 2048 to 8192 bits (what aws-lc-rs verifies with PKCS#1 v1.5).
const RSA_MIN_BYTES: usize = 256;
const RSA_MAX_BYTES: usize = 1024;

/// A credential public key, checked when parsed (the point is on the curve, the modulus is in
/// range).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CosePublicKey {
    /// Uncompressed P-256 point: 0x04 ‖ x ‖ y.
    Es256 {
        point: Vec<u8>,
    },
    Ed25519 {
        x: [u8; 32],
    },
    Rs256 {
        n: Vec<u8>,
        e: Vec<u8>,
    },
}

impl CosePublicKey {
    /// Parses a COSE_Key that is exactly `bytes` (as stored at registration).
    pub fn from_cbor(bytes: &[u8]) -> Result<CosePublicKey, WebauthnError> {
        let (v, used) = cbor::decode_prefix(bytes, "public key")?;
        if used != bytes.len() {
            return Err(WebauthnError::Malformed("public key"));
        }
        CosePublicKey::from_value(&v)
    }

    pub(super) fn from_value(v: &Value) -> Result<CosePublicKey, WebauthnError> {
        const BAD: WebauthnError = WebauthnError::Malformed("public key");
        let map = cbor::map(v, "public key")?;
        let int = |k: i64| cbor::get_int_key(map, k).ok_or(BAD).and_then(|v| cbor::int(v, "public key"));
        let bytes = |k: i64| cbor::get_int_key(map, k).ok_or(BAD).and_then(|v| cbor::bytes(v, "public key"));
        let kty = int(1)?;
        let alg = int(3).map_err(|_| WebauthnError::UnsupportedAlgorithm)?;
        let key = match (kty, alg) {
            // EC2, ES256, crv P-256
            (2, ES256) => {
                if int(-1)? != 1 {
                    return Err(WebauthnError::UnsupportedAlgorithm);
                }
                let (x, y) = (bytes(-2)?, bytes(-3)?);
                if x.len() != 32 || y.len() != 32 {
                    return Err(BAD);
                }
                let mut point = Vec::with_capacity(65);
                point.push(4);
                point.extend_from_slice(x);
                point.extend_from_slice(y);
                CosePublicKey::Es256 { point }
            }
            // OKP, EdDSA, crv Ed25519
            (1, EDDSA) => {
                if int(-1)? != 6 {
                    return Err(WebauthnError::UnsupportedAlgorithm);
                }
                let x: [u8; 32] = bytes(-2)?.try_into().map_err(|_| BAD)?;
                CosePublicKey::Ed25519 { x }
            }
            // RSA, RS256
            (3, RS256) => {
                let n = strip_zeros(bytes(-1)?);
                let e = strip_zeros(bytes(-2)?);
                if !(RSA_MIN_BYTES..=RSA_MAX_BYTES).contains(&n.len()) || e.is_empty() || e.len() > 4 {
                    return Err(BAD);
                }
                CosePublicKey::Rs256 { n: n.to_vec(), e: e.to_vec() }
            }
            (1..=3, _) => return Err(WebauthnError::UnsupportedAlgorithm),
            _ => return Err(BAD),
        };
        key.check()?;
        Ok(key)
    }

    /// The COSE algorithm of this key.
    pub fn alg(&self) -> i64 {
        match self {
            CosePublicKey::Es256 { .. } => ES256,
            CosePublicKey::Ed25519 { .. } => EDDSA,
            CosePublicKey::Rs256 { .. } => RS256,
        }
    }

    /// Refuses keys aws-lc-rs would not accept (a point off the curve, a bad Ed25519 encoding).
    fn check(&self) -> Result<(), WebauthnError> {
        let bad = |_| WebauthnError::Malformed("public key");
        match self {
            CosePublicKey::Es256 { point } => {
                ParsedPublicKey::new(&signature::ECDSA_P256_SHA256_ASN1, point).map(|_| ()).map_err(bad)
            }
            CosePublicKey::Ed25519 { x } => ParsedPublicKey::new(&signature::ED25519, x).map(|_| ()).map_err(bad),
            CosePublicKey::Rs256 { .. } => Ok(()),
        }
    }

    /// Checks `sig` over `msg` (ES256: an ASN.1 DER ECDSA signature, as WebAuthn specifies).
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> Result<(), WebauthnError> {
        let ok = match self {
            CosePublicKey::Es256 { point } => {
                signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_ASN1, point).verify(msg, sig).is_ok()
            }
            CosePublicKey::Ed25519 { x } => {
                signature::UnparsedPublicKey::new(&signature::ED25519, x).verify(msg, sig).is_ok()
            }
            CosePublicKey::Rs256 { n, e } => RsaPublicKeyComponents { n: n.as_slice(), e: e.as_slice() }
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, msg, sig)
                .is_ok(),
        };
        if ok { Ok(()) } else { Err(WebauthnError::BadSignature) }
    }

    /// The webpki algorithm that checks a signature of this key's kind made with an attestation
    /// certificate's key (packed attestation with `x5c`).
    pub(super) fn webpki_alg(alg: i64) -> Option<&'static dyn rustls_pki_types::SignatureVerificationAlgorithm> {
        match alg {
            ES256 => Some(webpki::aws_lc_rs::ECDSA_P256_SHA256),
            EDDSA => Some(webpki::aws_lc_rs::ED25519),
            RS256 => Some(webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA256),
            _ => None,
        }
    }
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let first = b.iter().position(|x| *x != 0).unwrap_or(b.len());
    &b[first..]
}

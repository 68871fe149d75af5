//! `private_key_jwt` client authentication (RFC 7523 §2.2, SMART Backend Services): a system
//! client proves itself with a JWT signed by a key whose public half it registered in a JWK Set.
//! Signatures are checked by `jsonwebtoken` on aws-lc-rs (no signature code here); this module
//! chooses the key, pins the algorithm to the key's type, and checks the claims against the
//! injected time.
//!
//! Accepted: ES384 (P-384 keys) and RS384 (RSA keys of 2048 bits or more). `iss` = `sub` = the
//! client id, `aud` = the token endpoint URL, `exp` in the future and at most five minutes
//! ahead, a `jti` (the caller keeps a replay cache until `exp`).

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// The algorithms offered (listed in the SMART configuration).
pub const ALGORITHMS: [&str; 2] = ["ES384", "RS384"];

/// The `client_assertion_type` of RFC 7523.
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The longest an assertion may be valid ahead of now (SMART: no more than five minutes).
pub const MAX_LIFETIME_S: i64 = 300;

/// Limits on what is parsed at all.
const MAX_JWKS_BYTES: usize = 64 * 1024;
const MAX_KEYS: usize = 10;
const MAX_JTI_CHARS: usize = 256;

/// Why an assertion or a key set was refused. Messages carry no key material.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AssertionError {
    #[error("the client's JWK Set is not usable: {0}")]
    BadKeySet(String),
    #[error("the client assertion is malformed")]
    Malformed,
    #[error("the client assertion's algorithm is not ES384 or RS384, or does not fit the key")]
    Algorithm,
    #[error("no registered key verifies the client assertion")]
    Signature,
    #[error("the client assertion's {0} is wrong")]
    Claim(&'static str),
    #[error("the client assertion has expired")]
    Expired,
    #[error("the client assertion is valid for longer than five minutes")]
    TooLong,
}

/// A registered key set, checked: every key is a public EC P-384 or RSA key.
#[derive(Clone, Debug)]
pub struct ClientKeys(JwkSet);

impl ClientKeys {
    /// Parses and checks a JWK Set (`{"keys": [...]}`) at registration.
    pub fn parse(json: &str) -> Result<ClientKeys, AssertionError> {
        let bad = |m: &str| AssertionError::BadKeySet(m.to_string());
        if json.len() > MAX_JWKS_BYTES {
            return Err(bad("larger than 64 KiB"));
        }
        let raw: serde_json::Value = serde_json::from_str(json).map_err(|_| bad("not JSON"))?;
        let keys = raw.get("keys").and_then(|k| k.as_array()).ok_or_else(|| bad("no \"keys\" array"))?;
        if keys.is_empty() || keys.len() > MAX_KEYS {
            return Err(bad("it must hold between 1 and 10 keys"));
        }
        // A private key is never registered (it would be a shared secret on the server).
        for k in keys {
            if ["d", "p", "q", "dp", "dq", "qi", "k"].iter().any(|f| k.get(f).is_some()) {
                return Err(bad("it contains private key material; register the public keys only"));
            }
        }
        let set: JwkSet = serde_json::from_value(raw).map_err(|_| bad("a key is not a valid JWK"))?;
        for k in &set.keys {
            let alg = algorithm_of(k).ok_or_else(|| bad("only EC P-384 (ES384) and RSA (RS384) keys are accepted"))?;
            DecodingKey::from_jwk(k).map_err(|_| bad("a key's parameters cannot be decoded"))?;
            if let Some(declared) = k.common.key_algorithm
                && declared != jsonwebtoken::jwk::KeyAlgorithm::from(alg)
            {
                return Err(bad("a key's \"alg\" does not match its type (ES384 for P-384, RS384 for RSA)"));
            }
        }
        Ok(ClientKeys(set))
    }

    pub fn len(&self) -> usize {
        self.0.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.keys.is_empty()
    }
}

/// The one algorithm a key may verify: fixed by its type, never by the token.
fn algorithm_of(k: &Jwk) -> Option<Algorithm> {
    match &k.algorithm {
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P384 => Some(Algorithm::ES384),
        AlgorithmParameters::RSA(p) => {
            // The modulus is base64url: 2048 bits are at least 342 characters.
            (p.n.len() >= 342).then_some(Algorithm::RS384)
        }
        _ => None,
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct Claims {
    iss: Option<String>,
    sub: Option<String>,
    aud: Option<Audience>,
    exp: Option<i64>,
    nbf: Option<i64>,
    jti: Option<String>,
}

/// What a verified assertion leaves for the caller: the replay-cache entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedAssertion {
    pub jti: String,
    /// Unix seconds: keep the jti until then.
    pub exp: i64,
}

/// The client id an assertion claims (`iss`), read before verification only to find the
/// client's keys; nothing else is trusted before [`verify`].
pub fn claimed_client(assertion: &str) -> Option<String> {
    let claims: Claims = jsonwebtoken::dangerous::insecure_decode(assertion).ok()?.claims;
    claims.iss.filter(|s| !s.is_empty() && s.len() <= 128)
}

/// Verifies an assertion from `client_id` against its registered keys, for the token endpoint
/// `audience`, at `now_s` (unix seconds, from the injected clock).
pub fn verify(
    assertion: &str,
    keys: &ClientKeys,
    client_id: &str,
    audience: &str,
    now_s: i64,
) -> Result<VerifiedAssertion, AssertionError> {
    if assertion.len() > 16 * 1024 {
        return Err(AssertionError::Malformed);
    }
    let header = jsonwebtoken::decode_header(assertion).map_err(|_| AssertionError::Malformed)?;
    if !matches!(header.alg, Algorithm::ES384 | Algorithm::RS384) {
        return Err(AssertionError::Algorithm);
    }
    let candidates: Vec<&Jwk> = match &header.kid {
        Some(kid) => keys.0.keys.iter().filter(|k| k.common.key_id.as_deref() == Some(kid.as_str())).collect(),
        None => keys.0.keys.iter().collect(),
    };
    let mut validation = Validation::new(header.alg);
    // Time and audience are checked below against the injected clock and the exact endpoint.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    validation.leeway = 0;
    let mut claims = None;
    for k in candidates {
        if algorithm_of(k) != Some(header.alg) {
            continue;
        }
        let Ok(key) = DecodingKey::from_jwk(k) else { continue };
        if let Ok(data) = jsonwebtoken::decode::<Claims>(assertion, &key, &validation) {
            claims = Some(data.claims);
            break;
        }
    }
    let c = claims.ok_or(AssertionError::Signature)?;
    if c.iss.as_deref() != Some(client_id) {
        return Err(AssertionError::Claim("iss"));
    }
    if c.sub.as_deref() != Some(client_id) {
        return Err(AssertionError::Claim("sub"));
    }
    let aud_ok = match &c.aud {
        Some(Audience::One(a)) => a == audience,
        Some(Audience::Many(v)) => v.iter().any(|a| a == audience),
        None => false,
    };
    if !aud_ok {
        return Err(AssertionError::Claim("aud"));
    }
    let exp = c.exp.ok_or(AssertionError::Claim("exp"))?;
    if exp <= now_s {
        return Err(AssertionError::Expired);
    }
    if exp > now_s + MAX_LIFETIME_S {
        return Err(AssertionError::TooLong);
    }
    if c.nbf.is_some_and(|n| n > now_s) {
        return Err(AssertionError::Claim("nbf"));
    }
    let jti =
        c.jti.filter(|j| !j.is_empty() && j.chars().count() <= MAX_JTI_CHARS).ok_or(AssertionError::Claim("jti"))?;
    Ok(VerifiedAssertion { jti, exp })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth6_key_sets_are_checked_at_registration() {
        assert!(ClientKeys::parse("{}").is_err());
        assert!(ClientKeys::parse(r#"{"keys": []}"#).is_err());
        let oct = r#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#;
        assert!(ClientKeys::parse(oct).is_err(), "symmetric keys are refused");
        let p256 = r#"{"keys": [{"kty": "EC", "crv": "P-256", "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#;
        assert!(ClientKeys::parse(p256).is_err(), "P-256 is not offered");
    }

    #[test]
    fn auth6_garbage_assertions_are_malformed() {
        let keys = ClientKeys(JwkSet { keys: Vec::new() });
        assert_eq!(verify("not a jwt", &keys, "c", "https://x/oauth/token", 0), Err(AssertionError::Malformed));
        assert_eq!(claimed_client("a.b.c"), None);
    }
}

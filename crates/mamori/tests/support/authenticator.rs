//! A software WebAuthn authenticator (and the browser's part of a ceremony) for the tests,
//! written independently of mamori's verifier: its own CBOR encoder (RFC 8949), its own
//! authenticator-data layout (WebAuthn L2 §6.1), and signatures from RustCrypto's `p256`
//! (ES256, DER-encoded here) and `ed25519-dalek` (EdDSA), where the server verifies with
//! aws-lc-rs. Shared by `crates/mamori/tests`, `crates/store/tests` and the unit tests of
//! `mamori_access::webauthn` (through `#[path]`).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub const UP: u8 = 0x01;
pub const UV: u8 = 0x04;
pub const AT: u8 = 0x40;

/// CBOR encoding of the few major types WebAuthn uses.
pub mod cbor {
    pub fn head(major: u8, n: u64, out: &mut Vec<u8>) {
        let m = major << 5;
        if n < 24 {
            out.push(m | n as u8);
        } else if n <= 0xff {
            out.extend([m | 24, n as u8]);
        } else if n <= 0xffff {
            out.push(m | 25);
            out.extend((n as u16).to_be_bytes());
        } else {
            out.push(m | 26);
            out.extend((n as u32).to_be_bytes());
        }
    }
    pub fn int(i: i64, out: &mut Vec<u8>) {
        if i >= 0 { head(0, i as u64, out) } else { head(1, (-1 - i) as u64, out) }
    }
    pub fn bstr(b: &[u8], out: &mut Vec<u8>) {
        head(2, b.len() as u64, out);
        out.extend_from_slice(b);
    }
    pub fn tstr(s: &str, out: &mut Vec<u8>) {
        head(3, s.len() as u64, out);
        out.extend_from_slice(s.as_bytes());
    }
    pub fn map(n: usize, out: &mut Vec<u8>) {
        head(5, n as u64, out);
    }
}

pub fn b64(b: &[u8]) -> String {
    B64.encode(b)
}

pub fn unb64(s: &str) -> Vec<u8> {
    B64.decode(s).unwrap()
}

pub enum Key {
    Es256(p256::ecdsa::SigningKey),
    Ed25519(ed25519_dalek::SigningKey),
}

/// One credential on a software authenticator, and the browser around it.
pub struct Authenticator {
    key: Key,
    pub credential_id: Vec<u8>,
    pub sign_count: u32,
    /// The RP ID the authenticator hashes and the origin the "browser" reports.
    pub rp_id: String,
    pub origin: String,
    /// Flags of the next ceremony (user present and verified by default).
    pub flags: u8,
    /// `"none"` or `"packed"` (self attestation).
    pub fmt: &'static str,
    /// The user handle the RP gave at registration (returned in assertions).
    pub user_handle: Option<Vec<u8>>,
}

/// What `navigator.credentials.create()` resolves to, as bytes.
pub struct Registration {
    pub credential_id: Vec<u8>,
    pub client_data_json: Vec<u8>,
    pub attestation_object: Vec<u8>,
}

/// What `navigator.credentials.get()` resolves to, as bytes.
pub struct Assertion {
    pub credential_id: Vec<u8>,
    pub client_data_json: Vec<u8>,
    pub authenticator_data: Vec<u8>,
    pub signature: Vec<u8>,
    pub user_handle: Option<Vec<u8>>,
}

/// `clientDataJSON` as a browser writes it.
pub fn client_data(ty: &str, challenge: &[u8], origin: &str) -> Vec<u8> {
    format!(r#"{{"type":"{ty}","challenge":"{}","origin":"{origin}","crossOrigin":false}}"#, b64(challenge))
        .into_bytes()
}

pub fn attestation_object(fmt: &str, stmt: &[u8], auth_data: &[u8]) -> Vec<u8> {
    let mut o = Vec::new();
    cbor::map(3, &mut o);
    cbor::tstr("fmt", &mut o);
    cbor::tstr(fmt, &mut o);
    cbor::tstr("attStmt", &mut o);
    o.extend_from_slice(stmt);
    cbor::tstr("authData", &mut o);
    cbor::bstr(auth_data, &mut o);
    o
}

/// ASN.1 DER of an ECDSA signature: SEQUENCE { INTEGER r, INTEGER s }.
fn der_signature(rs: &[u8]) -> Vec<u8> {
    let int = |x: &[u8]| {
        let mut v: Vec<u8> = x.iter().copied().skip_while(|b| *b == 0).collect();
        if v.first().is_none_or(|b| b & 0x80 != 0) {
            v.insert(0, 0);
        }
        let mut out = vec![0x02, v.len() as u8];
        out.extend(v);
        out
    };
    let body = [int(&rs[..32]), int(&rs[32..])].concat();
    let mut out = vec![0x30, body.len() as u8];
    out.extend(body);
    out
}

impl Authenticator {
    fn new(key: Key, tag: u8, seed: u8) -> Authenticator {
        let mut credential_id = vec![seed; 20];
        credential_id[0] = tag;
        Authenticator {
            key,
            credential_id,
            sign_count: 0,
            rp_id: "emr.example.jp".into(),
            origin: "https://emr.example.jp".into(),
            flags: UP | UV,
            fmt: "none",
            user_handle: None,
        }
    }

    pub fn es256(seed: u8) -> Authenticator {
        let key = p256::ecdsa::SigningKey::from_slice(&[seed.max(1); 32]).unwrap();
        Authenticator::new(Key::Es256(key), 0xE5, seed)
    }

    pub fn ed25519(seed: u8) -> Authenticator {
        Authenticator::new(Key::Ed25519(ed25519_dalek::SigningKey::from_bytes(&[seed; 32])), 0xED, seed)
    }

    pub fn alg(&self) -> i64 {
        match self.key {
            Key::Es256(_) => -7,
            Key::Ed25519(_) => -8,
        }
    }

    /// The credential public key as a COSE_Key.
    pub fn cose_key(&self) -> Vec<u8> {
        let mut o = Vec::new();
        match &self.key {
            Key::Es256(k) => {
                let p = k.verifying_key().to_encoded_point(false);
                cbor::map(5, &mut o);
                for (k, v) in [(1, 2), (3, -7), (-1, 1)] {
                    cbor::int(k, &mut o);
                    cbor::int(v, &mut o);
                }
                cbor::int(-2, &mut o);
                cbor::bstr(p.x().unwrap(), &mut o);
                cbor::int(-3, &mut o);
                cbor::bstr(p.y().unwrap(), &mut o);
            }
            Key::Ed25519(k) => {
                cbor::map(4, &mut o);
                for (k, v) in [(1, 1), (3, -8), (-1, 6)] {
                    cbor::int(k, &mut o);
                    cbor::int(v, &mut o);
                }
                cbor::int(-2, &mut o);
                cbor::bstr(k.verifying_key().as_bytes(), &mut o);
            }
        }
        o
    }

    /// Authenticator data for `rp_id` with `flags`, the counter, and (registration) the
    /// attested credential.
    pub fn auth_data(&self, rp_id: &str, flags: u8, count: u32, attested: bool) -> Vec<u8> {
        let mut a = Sha256::digest(rp_id.as_bytes()).to_vec();
        a.push(flags | if attested { AT } else { 0 });
        a.extend(count.to_be_bytes());
        if attested {
            a.extend([0u8; 16]);
            a.extend((self.credential_id.len() as u16).to_be_bytes());
            a.extend_from_slice(&self.credential_id);
            a.extend(self.cose_key());
        }
        a
    }

    /// A signature over `msg` (ES256: DER).
    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        match &self.key {
            Key::Es256(k) => {
                use p256::ecdsa::signature::Signer;
                let s: p256::ecdsa::Signature = k.sign(msg);
                der_signature(&s.to_bytes())
            }
            Key::Ed25519(k) => {
                use ed25519_dalek::Signer;
                k.sign(msg).to_bytes().to_vec()
            }
        }
    }

    /// A packed self-attestation statement over `auth_data ‖ SHA-256(client_data_json)`.
    pub fn packed_statement(&self, auth_data: &[u8], client_data_json: &[u8]) -> Vec<u8> {
        let mut signed = auth_data.to_vec();
        signed.extend(Sha256::digest(client_data_json));
        let mut o = Vec::new();
        cbor::map(2, &mut o);
        cbor::tstr("alg", &mut o);
        cbor::int(self.alg(), &mut o);
        cbor::tstr("sig", &mut o);
        cbor::bstr(&self.sign(&signed), &mut o);
        o
    }

    /// `navigator.credentials.create()` with this challenge.
    pub fn register(&mut self, challenge: &[u8]) -> Registration {
        let cdj = client_data("webauthn.create", challenge, &self.origin);
        let ad = self.auth_data(&self.rp_id.clone(), self.flags, self.sign_count, true);
        let stmt = match self.fmt {
            "packed" => self.packed_statement(&ad, &cdj),
            _ => vec![0xa0],
        };
        Registration {
            credential_id: self.credential_id.clone(),
            client_data_json: cdj,
            attestation_object: attestation_object(self.fmt, &stmt, &ad),
        }
    }

    /// `navigator.credentials.get()` with this challenge (the counter goes up first).
    pub fn assert(&mut self, challenge: &[u8]) -> Assertion {
        self.sign_count += 1;
        let cdj = client_data("webauthn.get", challenge, &self.origin);
        let ad = self.auth_data(&self.rp_id.clone(), self.flags, self.sign_count, false);
        let mut signed = ad.clone();
        signed.extend(Sha256::digest(&cdj));
        Assertion {
            credential_id: self.credential_id.clone(),
            signature: self.sign(&signed),
            client_data_json: cdj,
            authenticator_data: ad,
            user_handle: self.user_handle.clone(),
        }
    }

    /// Plays the browser on `{publicKey: PublicKeyCredentialCreationOptionsJSON}`: checks the
    /// options as a browser would and answers `RegistrationResponseJSON`.
    pub fn create_json(&mut self, options: &Value) -> Value {
        let pk = &options["publicKey"];
        assert!(pk["rp"]["id"].is_string() && pk["challenge"].is_string(), "{options}");
        assert!(
            pk["pubKeyCredParams"].as_array().unwrap().iter().any(|p| p["alg"].as_i64() == Some(self.alg())),
            "the RP offers this algorithm: {options}"
        );
        let excluded = pk["excludeCredentials"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| unb64(c["id"].as_str().unwrap()) == self.credential_id);
        assert!(!excluded, "this credential is already registered (InvalidStateError in a browser)");
        self.user_handle = Some(unb64(pk["user"]["id"].as_str().unwrap()));
        let r = self.register(&unb64(pk["challenge"].as_str().unwrap()));
        json!({
            "id": b64(&r.credential_id), "rawId": b64(&r.credential_id), "type": "public-key",
            "response": {"clientDataJSON": b64(&r.client_data_json), "attestationObject": b64(&r.attestation_object),
                         "transports": ["usb"]},
            "authenticatorAttachment": "cross-platform", "clientExtensionResults": {}
        })
    }

    /// Plays the browser on `{publicKey: PublicKeyCredentialRequestOptionsJSON}`: answers
    /// `AuthenticationResponseJSON` (whether or not the RP listed this credential, so that
    /// tests can present credentials the RP does not know).
    pub fn get_json(&mut self, options: &Value) -> Value {
        let pk = &options["publicKey"];
        let a = self.assert(&unb64(pk["challenge"].as_str().unwrap()));
        assertion_json(&a)
    }
}

pub fn assertion_json(a: &Assertion) -> Value {
    json!({
        "id": b64(&a.credential_id), "rawId": b64(&a.credential_id), "type": "public-key",
        "response": {
            "clientDataJSON": b64(&a.client_data_json),
            "authenticatorData": b64(&a.authenticator_data),
            "signature": b64(&a.signature),
            "userHandle": a.user_handle.as_deref().map(b64),
        },
        "clientExtensionResults": {}
    })
}

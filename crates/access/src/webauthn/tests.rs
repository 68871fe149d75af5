//! Unit and property tests of the relying-party checks. The authenticator side (CBOR encoding,
//! Ed25519 signing with ed25519-dalek) is written here independently of the parsers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ed25519_dalek::{Signer, SigningKey};
use proptest::prelude::*;
use sha2::{Digest, Sha256};

use super::*;

#[test]
fn auth2_es256_registration_and_assertion_from_the_software_authenticator() {
    let mut a = Authenticator::es256(5);
    let ch = [4u8; 32];
    let r = a.register(&ch);
    let reg = verify_registration(&rp(), &ch, &r.client_data_json, &r.attestation_object).unwrap();
    assert_eq!((reg.alg, reg.credential_id.clone()), (-7, a.credential_id.clone()));
    a.fmt = "packed";
    let r = a.register(&ch);
    assert_eq!(
        verify_registration(&rp(), &ch, &r.client_data_json, &r.attestation_object).unwrap().attestation,
        "packed-self"
    );
    let s = a.assert(&ch);
    let got =
        verify_assertion(&rp(), &ch, &reg.public_key, 0, &s.client_data_json, &s.authenticator_data, &s.signature);
    assert_eq!(got, Ok(Assertion { sign_count: 1, user_verified: true }));
}

#[path = "../../../mamori/tests/support/authenticator.rs"]
mod authenticator;

use authenticator::cbor::{bstr, head, int, tstr};
use authenticator::{Authenticator, attestation_object as att_object, client_data};

fn ed_key() -> SigningKey {
    SigningKey::from_bytes(&[7u8; 32])
}

/// The Ed25519 test key (seed 7) as the software authenticator encodes it.
fn cose_ed25519(_k: &SigningKey) -> Vec<u8> {
    Authenticator::ed25519(7).cose_key()
}

fn rp() -> RelyingParty {
    RelyingParty::new(
        "emr.example.jp",
        "mamori",
        &["https://emr.example.jp".to_string()],
        UserVerification::Preferred,
        time::Duration::minutes(2),
    )
    .unwrap()
}

fn auth_data(rp_id: &str, flags: u8, count: u32, cred: Option<(&[u8], &[u8])>) -> Vec<u8> {
    let mut a = Sha256::digest(rp_id.as_bytes()).to_vec();
    a.push(flags | if cred.is_some() { data::FLAG_AT } else { 0 });
    a.extend(count.to_be_bytes());
    if let Some((id, key)) = cred {
        a.extend([0u8; 16]);
        a.extend((id.len() as u16).to_be_bytes());
        a.extend_from_slice(id);
        a.extend_from_slice(key);
    }
    a
}

fn empty_map() -> Vec<u8> {
    vec![0xa0]
}

fn packed_self(k: &SigningKey, ad: &[u8], cdj: &[u8]) -> Vec<u8> {
    let seed = k.to_bytes()[0];
    Authenticator::ed25519(seed).packed_statement(ad, cdj)
}

#[test]
fn auth2_registration_with_none_and_packed_self_attestation() {
    let k = ed_key();
    let ch = [1u8; 32];
    let cdj = client_data("webauthn.create", &ch, "https://emr.example.jp");
    let ad = auth_data("emr.example.jp", data::FLAG_UP | data::FLAG_UV, 0, Some((b"cred-1", &cose_ed25519(&k))));
    let r = verify_registration(&rp(), &ch, &cdj, &att_object("none", &empty_map(), &ad)).unwrap();
    assert_eq!(r.credential_id, b"cred-1");
    assert_eq!((r.alg, r.attestation, r.user_verified), (-8, "none", true));
    assert_eq!(CosePublicKey::from_cbor(&r.public_key).unwrap().alg(), -8);

    let stmt = packed_self(&k, &ad, &cdj);
    let r = verify_registration(&rp(), &ch, &cdj, &att_object("packed", &stmt, &ad)).unwrap();
    assert_eq!(r.attestation, "packed-self");
    // A packed statement signed by another key does not verify.
    let other = SigningKey::from_bytes(&[9u8; 32]);
    let stmt = packed_self(&other, &ad, &cdj);
    assert_eq!(
        verify_registration(&rp(), &ch, &cdj, &att_object("packed", &stmt, &ad)),
        Err(WebauthnError::BadAttestation)
    );
    assert_eq!(
        verify_registration(&rp(), &ch, &cdj, &att_object("fido-u2f", &empty_map(), &ad)),
        Err(WebauthnError::UnsupportedAttestation)
    );
}

#[test]
fn auth2_registration_refusals() {
    let k = ed_key();
    let ch = [1u8; 32];
    let key = cose_ed25519(&k);
    let good_ad = auth_data("emr.example.jp", data::FLAG_UP, 0, Some((b"c", &key)));
    let good_cdj = client_data("webauthn.create", &ch, "https://emr.example.jp");
    let try_ = |cdj: &[u8], ad: &[u8]| verify_registration(&rp(), &ch, cdj, &att_object("none", &empty_map(), ad));
    assert!(try_(&good_cdj, &good_ad).is_ok());
    assert_eq!(
        try_(&client_data("webauthn.get", &ch, "https://emr.example.jp"), &good_ad),
        Err(WebauthnError::WrongType("webauthn.create"))
    );
    assert_eq!(
        try_(&client_data("webauthn.create", &[2u8; 32], "https://emr.example.jp"), &good_ad),
        Err(WebauthnError::WrongChallenge)
    );
    assert_eq!(
        try_(&client_data("webauthn.create", &ch, "https://evil.example"), &good_ad),
        Err(WebauthnError::WrongOrigin)
    );
    assert_eq!(
        try_(&good_cdj, &auth_data("evil.example", data::FLAG_UP, 0, Some((b"c", &key)))),
        Err(WebauthnError::WrongRpId)
    );
    assert_eq!(
        try_(&good_cdj, &auth_data("emr.example.jp", 0, 0, Some((b"c", &key)))),
        Err(WebauthnError::UserNotPresent)
    );
    assert_eq!(
        try_(&good_cdj, &auth_data("emr.example.jp", data::FLAG_UP, 0, None)),
        Err(WebauthnError::NoCredentialData)
    );
    let mut strict = rp();
    strict.user_verification = UserVerification::Required;
    assert_eq!(
        verify_registration(&strict, &ch, &good_cdj, &att_object("none", &empty_map(), &good_ad)),
        Err(WebauthnError::UserNotVerified)
    );
    let cross = br#"{"type":"webauthn.create","challenge":"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE","origin":"https://emr.example.jp","crossOrigin":true}"#;
    assert_eq!(try_(cross, &good_ad), Err(WebauthnError::CrossOrigin));
}

#[test]
fn auth2_assertion_signature_and_counter() {
    let k = ed_key();
    let key = cose_ed25519(&k);
    let ch = [3u8; 32];
    let cdj = client_data("webauthn.get", &ch, "https://emr.example.jp");
    let sign = |ad: &[u8], cdj: &[u8]| {
        let mut m = ad.to_vec();
        m.extend(Sha256::digest(cdj));
        k.sign(&m).to_bytes().to_vec()
    };
    let ad = auth_data("emr.example.jp", data::FLAG_UP, 5, None);
    let a = verify_assertion(&rp(), &ch, &key, 4, &cdj, &ad, &sign(&ad, &cdj)).unwrap();
    assert_eq!(a, Assertion { sign_count: 5, user_verified: false });
    assert_eq!(
        verify_assertion(&rp(), &ch, &key, 5, &cdj, &ad, &sign(&ad, &cdj)),
        Err(WebauthnError::SignCountRegression { stored: 5, presented: 5 })
    );
    // Authenticators without a counter always report 0: accepted while both are 0.
    let ad0 = auth_data("emr.example.jp", data::FLAG_UP, 0, None);
    assert!(verify_assertion(&rp(), &ch, &key, 0, &cdj, &ad0, &sign(&ad0, &cdj)).is_ok());
    let mut bad = sign(&ad, &cdj);
    bad[10] ^= 1;
    assert_eq!(verify_assertion(&rp(), &ch, &key, 0, &cdj, &ad, &bad), Err(WebauthnError::BadSignature));
    let no_up = auth_data("emr.example.jp", 0, 6, None);
    assert_eq!(
        verify_assertion(&rp(), &ch, &key, 0, &cdj, &no_up, &sign(&no_up, &cdj)),
        Err(WebauthnError::UserNotPresent)
    );
}

#[test]
fn auth2_cose_keys_are_checked() {
    // ES256 with a point not on the curve.
    let mut o = Vec::new();
    head(5, 5, &mut o);
    for (k, v) in [(1, 2), (3, -7), (-1, 1)] {
        int(k, &mut o);
        int(v, &mut o);
    }
    int(-2, &mut o);
    bstr(&[1u8; 32], &mut o);
    int(-3, &mut o);
    bstr(&[2u8; 32], &mut o);
    assert_eq!(CosePublicKey::from_cbor(&o), Err(WebauthnError::Malformed("public key")));
    // An algorithm outside the list (ES384).
    let mut o = Vec::new();
    head(5, 2, &mut o);
    for (k, v) in [(1, 2), (3, -35)] {
        int(k, &mut o);
        int(v, &mut o);
    }
    assert_eq!(CosePublicKey::from_cbor(&o), Err(WebauthnError::UnsupportedAlgorithm));
    // Duplicate keys.
    let mut o = Vec::new();
    head(5, 2, &mut o);
    for (k, v) in [(1, 1), (1, 1)] {
        int(k, &mut o);
        int(v, &mut o);
    }
    assert_eq!(CosePublicKey::from_cbor(&o), Err(WebauthnError::Malformed("public key")));
}

#[test]
fn auth2_authenticator_data_with_extensions_after_the_key() {
    let k = ed_key();
    let mut ad = auth_data("emr.example.jp", data::FLAG_UP | data::FLAG_ED, 1, Some((b"id", &cose_ed25519(&k))));
    ad.push(0xa1);
    tstr("credProtect", &mut ad);
    int(1, &mut ad);
    let parsed = AuthenticatorData::parse(&ad).unwrap();
    assert_eq!(parsed.attested.unwrap().public_key_cbor, cose_ed25519(&k));
    ad.push(0);
    assert!(AuthenticatorData::parse(&ad).is_err(), "trailing bytes");
}

#[test]
fn auth2_rp_configuration_is_checked() {
    let ok = |id: &str, o: &str| {
        RelyingParty::new(id, "m", &[o.to_string()], UserVerification::Preferred, time::Duration::minutes(1)).is_ok()
    };
    assert!(ok("emr.example.jp", "https://emr.example.jp:8443"));
    assert!(ok("example.jp", "https://emr.example.jp"));
    assert!(ok("localhost", "http://localhost:8080"));
    assert!(!ok("emr.example.jp", "http://emr.example.jp"));
    assert!(!ok("emr.example.jp", "https://other.example.jp"));
    assert!(!ok("emr.example.jp", "https://evilemr.example.jp"));
    assert!(!ok("EMR.example.jp", "https://EMR.example.jp"));
    assert!(!ok("emr.example.jp", "https://emr.example.jp/path"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn auth2_parsers_never_panic_on_arbitrary_bytes(b in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = AuthenticatorData::parse(&b);
        let _ = AttestationObject::parse(&b);
        let _ = CosePublicKey::from_cbor(&b);
        let _ = ClientData::parse(&b);
    }

    #[test]
    fn auth2_mutated_registrations_are_refused_or_equal(pos in 0usize..400, bit in 0u8..8, cut in 0usize..400) {
        let k = ed_key();
        let ch = [1u8; 32];
        let cdj = client_data("webauthn.create", &ch, "https://emr.example.jp");
        let ad = auth_data("emr.example.jp", data::FLAG_UP, 0, Some((b"cred", &cose_ed25519(&k))));
        let stmt = packed_self(&k, &ad, &cdj);
        let obj = att_object("packed", &stmt, &ad);
        let good = verify_registration(&rp(), &ch, &cdj, &obj).unwrap();
        let mut flipped = obj.clone();
        let i = pos % flipped.len();
        flipped[i] ^= 1 << bit;
        // A flipped bit either breaks parsing or the signature; it never yields another credential.
        if let Ok(r) = verify_registration(&rp(), &ch, &cdj, &flipped) { prop_assert_eq!(r, good.clone()); }
        let truncated = &obj[..cut % obj.len()];
        prop_assert!(verify_registration(&rp(), &ch, &cdj, truncated).is_err());
        let _ = AuthenticatorData::parse(&flipped);
    }

    #[test]
    fn auth2_mutated_assertions_are_refused(pos in 0usize..200, bit in 0u8..8) {
        let k = ed_key();
        let key = cose_ed25519(&k);
        let ch = [3u8; 32];
        let cdj = client_data("webauthn.get", &ch, "https://emr.example.jp");
        let ad = auth_data("emr.example.jp", data::FLAG_UP, 9, None);
        let mut m = ad.clone();
        m.extend(Sha256::digest(&cdj));
        let sig = k.sign(&m).to_bytes().to_vec();
        prop_assert!(verify_assertion(&rp(), &ch, &key, 1, &cdj, &ad, &sig).is_ok());
        let total = ad.len() + sig.len() + cdj.len();
        let i = pos % total;
        let (mut ad2, mut sig2, mut cdj2) = (ad.clone(), sig.clone(), cdj.clone());
        if i < ad.len() { ad2[i] ^= 1 << bit } else if i < ad.len() + sig.len() { sig2[i - ad.len()] ^= 1 << bit } else { cdj2[i - ad.len() - sig.len()] ^= 1 << bit }
        prop_assert!(verify_assertion(&rp(), &ch, &key, 1, &cdj2, &ad2, &sig2).is_err());
    }
}

//! C2SP checkpoint / signed-note tests.
//!
//! Known-answer vectors: golang.org/x/mod, file `sumdb/note/note_test.go` (`TestNewVerifier`,
//! `TestSign`, `TestOpen`): the PeterNeumann and EnochRoot keys, the signed text and its
//! Ed25519 signatures.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mamori_audit::checkpoint::{Checkpoint, SigningKey, VerifierKey, open, open_note, sign, sign_note};
use mamori_audit::{AuditError, merkle};

const PETER_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const PETER_SKEY: &str = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
const ENOCH_VKEY: &str = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop";
const TEXT: &str =
    "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
const PETER_SIG: &str =
    "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
const ENOCH_SIG: &str =
    "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n";

#[test]
fn go_sumdb_note_vectors() {
    let signer = SigningKey::from_skey(PETER_SKEY).unwrap();
    let peter = VerifierKey::from_vkey(PETER_VKEY).unwrap();
    assert_eq!(signer.verifier_key(), peter);
    assert_eq!(peter.key_id(), 0xc74f20a3);
    assert_eq!(peter.to_vkey(), PETER_VKEY);
    assert_eq!(signer.to_skey().as_str(), PETER_SKEY);

    let note = sign_note(TEXT, &signer).unwrap();
    assert_eq!(note, format!("{TEXT}\n{PETER_SIG}"));

    let enoch = VerifierKey::from_vkey(ENOCH_VKEY).unwrap();
    let both = format!("{TEXT}\n{PETER_SIG}{ENOCH_SIG}");
    assert_eq!(open_note(&both, &peter).unwrap(), TEXT);
    assert_eq!(open_note(&both, &enoch).unwrap(), TEXT);

    // Malformed notes from the reference test.
    let bad = [
        TEXT.to_string(),
        format!("{TEXT}\n"),
        format!("{TEXT}\n{}", &PETER_SIG[..PETER_SIG.len() - 1]),
        format!("\x01{TEXT}\n{PETER_SIG}"),
        format!(
            "{TEXT}\n— Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
        ),
        format!("{TEXT}\n{PETER_SIG}Unexpected line.\n"),
        format!("{TEXT}\n{}", PETER_SIG.repeat(101)),
    ];
    for b in &bad {
        assert!(matches!(open_note(b, &peter), Err(AuditError::MalformedNote(_))), "{b:?}");
    }
    // A corrupted signature by the trusted key is refused.
    let corrupt = format!("{TEXT}\n{}ABCD{}", &PETER_SIG[..60], &PETER_SIG[60..]);
    assert!(matches!(open_note(&corrupt, &peter), Err(AuditError::InvalidSignature(_))));
    // Only an unknown signature: refused.
    assert!(matches!(open_note(&format!("{TEXT}\n{ENOCH_SIG}"), &peter), Err(AuditError::UnknownSigner(_))));
}

#[test]
fn key_text_manglings_are_refused() {
    let b = PETER_VKEY.as_bytes().to_vec();
    for i in 0..b.len() {
        let mut m = b.clone();
        m[i] = m[i].wrapping_add(1);
        if let Ok(s) = String::from_utf8(m) {
            assert!(VerifierKey::from_vkey(&s).is_err(), "{s}");
        }
        assert!(VerifierKey::from_vkey(&PETER_VKEY[..i]).is_err());
    }
    assert!(VerifierKey::from_vkey("PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW").is_err());
    assert!(
        SigningKey::from_skey("PRIVATE+KEY+PeterNeumann+c74f20a4+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz")
            .is_err()
    );
    assert!(SigningKey::from_seed("bad name", &[1; 32]).is_err());
    assert!(SigningKey::from_seed("a+b", &[1; 32]).is_err());
    assert!(SigningKey::from_seed("", &[1; 32]).is_err());
}

fn cp(size: u64) -> Checkpoint {
    Checkpoint {
        origin: "mamori.example/clinic".into(),
        size,
        root: merkle::leaf_hash(&size.to_be_bytes()),
        extensions: vec![],
    }
}

#[test]
fn round_trip() {
    let key = SigningKey::generate("mamori.example/clinic").unwrap();
    let v = key.verifier_key();
    let again = SigningKey::from_seed(key.name(), &key.seed()).unwrap();
    assert_eq!(again.verifier_key(), v);
    assert_eq!(VerifierKey::from_vkey(&v.to_vkey()).unwrap(), v);
    assert_eq!(SigningKey::from_skey(&key.to_skey()).unwrap().verifier_key(), v);
    for c in [cp(0), cp(1), cp(u64::MAX), Checkpoint { extensions: vec!["ext one".into(), "x".into()], ..cp(5) }] {
        let note = sign(&c, &key).unwrap();
        assert_eq!(open(&note, &v).unwrap(), c);
        assert!(note.contains("\n\n\u{2014} mamori.example/clinic "));
    }
}

#[test]
fn empty_tree_body_matches_spec_shape() {
    let c = Checkpoint { origin: "example.com/log".into(), size: 0, root: merkle::EMPTY_ROOT, extensions: vec![] };
    assert_eq!(c.to_body(), "example.com/log\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n");
}

#[test]
fn other_key_same_name_is_refused() {
    let key = SigningKey::from_seed("mamori.example/clinic", &[7; 32]).unwrap();
    let evil = SigningKey::from_seed("mamori.example/clinic", &[8; 32]).unwrap();
    let note = sign(&cp(10), &evil).unwrap();
    assert!(matches!(open(&note, &key.verifier_key()), Err(AuditError::UnknownSigner(_))));
    // Even when the forger copies the trusted key ID into the signature line.
    let mut raw = base64_decode(note.trim_end().rsplit(' ').next().unwrap());
    raw[..4].copy_from_slice(&key.verifier_key().key_id().to_be_bytes());
    let forged = format!("{}\n\u{2014} mamori.example/clinic {}\n", cp(10).to_body(), base64_encode(&raw));
    assert!(matches!(open(&forged, &key.verifier_key()), Err(AuditError::InvalidSignature(_))));
}

#[test]
fn edited_checkpoint_is_refused() {
    let key = SigningKey::from_seed("mamori.example/clinic", &[7; 32]).unwrap();
    let v = key.verifier_key();
    let note = sign(&cp(10), &key).unwrap();
    let edited_size = note.replacen("\n10\n", "\n11\n", 1);
    assert!(open(&edited_size, &v).is_err());
    let root_b64 = note.lines().nth(2).unwrap();
    let other = base64_encode(&merkle::EMPTY_ROOT);
    let edited_root = note.replacen(root_b64, &other, 1);
    assert!(matches!(open(&edited_root, &v), Err(AuditError::InvalidSignature(_))));
    // Trailing garbage after the signature.
    assert!(open(&format!("{note}junk\n"), &v).is_err());
    assert!(open(&format!("{note}\n"), &v).is_err());
    assert!(open(note.trim_end(), &v).is_err());
}

#[test]
fn malformed_bodies_are_refused() {
    let r = base64_encode(&[0u8; 32]);
    let bad = [
        String::new(),
        "o\n".to_string(),
        "o\n5\n".to_string(),
        format!("o\n5\n{r}"),
        format!("\n5\n{r}\n"),
        format!("o\n05\n{r}\n"),
        format!("o\n-5\n{r}\n"),
        format!("o\n+5\n{r}\n"),
        format!("o\n 5\n{r}\n"),
        format!("o\n0x5\n{r}\n"),
        format!("o\n18446744073709551616\n{r}\n"),
        "o\n5\n!!!!\n".to_string(),
        format!("o\n5\n{}\n", base64_encode(&[0u8; 31])),
        format!("o\n5\n{}\n", base64_encode(&[0u8; 33])),
        format!("o\n5\n{}\n", r.trim_end_matches('=')),
        format!("o\n5\n{r}\n\n"),
        format!("o\n5\n{r}\n\next\n"),
        format!("o\n\n5\n{r}\n"),
        format!("o\r\n5\n{r}\n"),
    ];
    for b in &bad {
        assert!(Checkpoint::parse_body(b).is_err(), "{b:?}");
    }
    assert_eq!(Checkpoint::parse_body(&format!("o\n0\n{r}\n")).unwrap().size, 0);
    // Signing refuses checkpoints that would not read back.
    let key = SigningKey::from_seed("k", &[1; 32]).unwrap();
    for c in [
        Checkpoint { origin: "a\nb".into(), ..cp(1) },
        Checkpoint { origin: String::new(), ..cp(1) },
        Checkpoint { extensions: vec![String::new()], ..cp(1) },
    ] {
        assert!(sign(&c, &key).is_err());
    }
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

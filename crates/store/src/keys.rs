//! Key hierarchy (ENC-1, ENC-2).
//!
//! One master key lives in a file outside the database (mode 0600). From it, HKDF derives:
//! - the key-encryption key that wraps every data key stored in the database,
//! - the index key that turns identifying search values into keyed tokens (HMAC).
//!
//! Resource bodies are sealed with data keys: one per patient compartment (so disposing of a
//! patient can later be cryptographic erasure: drop the wrapped key) and one shared key for
//! resources outside any patient compartment.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::StoreError;

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// The master key, read once at start-up. Never logged, never stored in the database.
pub struct MasterKey(Zeroizing<[u8; 32]>);

impl MasterKey {
    /// Creates a new random master key file with mode 0600; refuses to overwrite one.
    pub fn create_file(path: &Path) -> Result<MasterKey, StoreError> {
        let mut key = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(key.as_mut());
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| StoreError::Setup(format!("cannot create key file {}: {e}", path.display())))?;
        f.write_all(key.as_ref())
            .and_then(|()| f.sync_all())
            .map_err(|e| StoreError::Setup(format!("cannot write key file {}: {e}", path.display())))?;
        Ok(MasterKey(key))
    }

    /// Loads the key file, refusing one that others could read (secrets must be 0600).
    pub fn load_file(path: &Path) -> Result<MasterKey, StoreError> {
        let meta = fs::metadata(path)
            .map_err(|e| StoreError::Setup(format!("cannot read key file {}: {e}", path.display())))?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(StoreError::Setup(format!(
                "key file {} is accessible to group or others; run: chmod 600 {}",
                path.display(),
                path.display()
            )));
        }
        let bytes = Zeroizing::new(
            fs::read(path).map_err(|e| StoreError::Setup(format!("cannot read key file {}: {e}", path.display())))?,
        );
        let key: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| StoreError::Setup(format!("key file {} is not a 32-byte key", path.display())))?;
        Ok(MasterKey(Zeroizing::new(key)))
    }

    /// A key for tests and benchmarks that never touches the disk.
    pub fn ephemeral() -> MasterKey {
        let mut key = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(key.as_mut());
        MasterKey(key)
    }

    pub(crate) fn derive(&self) -> DerivedKeys {
        let hk = Hkdf::<Sha256>::new(Some(b"mamori/v1"), self.0.as_ref());
        let mut kek = Zeroizing::new([0u8; 32]);
        let mut index = Zeroizing::new([0u8; 32]);
        // Both outputs are 32 bytes, far below HKDF-SHA256's 8160-byte limit, so expand cannot fail.
        let ok = hk.expand(b"key-encryption-key", kek.as_mut()).is_ok()
            && hk.expand(b"search-index-key", index.as_mut()).is_ok();
        debug_assert!(ok);
        DerivedKeys { kek: SealKey::new(&kek), index_key: index }
    }
}

pub(crate) struct DerivedKeys {
    pub kek: SealKey,
    pub index_key: Zeroizing<[u8; 32]>,
}

/// An AES-256-GCM key with the sealing format `nonce || ciphertext || tag`, on aws-lc-rs
/// (formerly RustCrypto's aes-gcm; the format is the same, see the known-answer test).
pub struct SealKey(LessSafeKey);

impl SealKey {
    pub fn new(key: &[u8; 32]) -> Self {
        // A 32-byte key is always a valid AES-256 key; aws-lc-rs refuses only other lengths.
        let unbound = UnboundKey::new(&AES_256_GCM, key).unwrap_or_else(|_| unreachable!("32-byte AES-256 key"));
        SealKey(LessSafeKey::new(unbound))
    }

    pub fn random() -> (Zeroizing<[u8; 32]>, SealKey) {
        let mut raw = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(raw.as_mut());
        let k = SealKey::new(&raw);
        (raw, k)
    }

    /// Encrypts `plain`, binding it to `aad` (the row's identity), with a fresh random nonce.
    pub fn seal(&self, plain: &[u8], aad: &[u8]) -> Result<Vec<u8>, StoreError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let mut out = Vec::with_capacity(NONCE_LEN + plain.len() + TAG_LEN);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plain);
        let mut body = out.split_off(NONCE_LEN);
        self.0
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut body)
            .map_err(|_| StoreError::internal("encryption failed"))?;
        out.append(&mut body);
        Ok(out)
    }

    /// Decrypts and authenticates; any change to the ciphertext or to the row identity in `aad`
    /// fails here (REC-6).
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return None;
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = ct.to_vec();
        let plain_len = self.0.open_in_place(nonce, Aad::from(aad), &mut buf).ok()?.len();
        buf.truncate(plain_len);
        Some(buf)
    }
}

/// Keyed tokens for the search index: equal inputs give equal tokens, but a copied database
/// cannot be searched or reversed without the master key.
///
/// Holds the HMAC already keyed (the inner and outer key blocks hashed once): every token starts
/// from a copy of it, which saves two of the five SHA-256 compressions of a short token.
pub struct IndexKey(Hmac<Sha256>);

impl IndexKey {
    pub(crate) fn new(k: Zeroizing<[u8; 32]>) -> Self {
        // HMAC zero-pads a short key to the hash's block size (RFC 2104), so keying with the padded
        // block is the same function as keying with the 32 bytes, and cannot fail.
        let mut block = Zeroizing::new([0u8; 64]);
        block[..32].copy_from_slice(k.as_ref());
        IndexKey(<Hmac<Sha256> as hmac::digest::KeyInit>::new(&(*block).into()))
    }

    pub fn token(&self, parts: &[&str]) -> [u8; 16] {
        let mut mac = self.0.clone();
        for p in parts {
            // Length-prefix each part so ("ab","c") and ("a","bc") differ.
            mac.update(&(p.len() as u32).to_le_bytes());
            mac.update(p.as_bytes());
        }
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; 16];
        out.copy_from_slice(&full[..16]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows sealed before the move to aws-lc-rs must still open: a vector computed with an
    /// independent AES-256-GCM (OpenSSL, through Python's `cryptography`) in the same
    /// `nonce || ciphertext || tag` layout.
    #[test]
    fn enc1_opens_rows_sealed_by_an_independent_aes_256_gcm() {
        let key: [u8; 32] = std::array::from_fn(|i| i as u8);
        let sealed =
            hex_bytes("000102030405060708090a0b2a63bb74b78ce268e820fbeed5c91a02e7afa30b9ccad062cb30443858bf0e3e77c8");
        let aad = b"mamori/version/Patient\0p1";
        assert_eq!(SealKey::new(&key).open(&sealed, aad).unwrap(), b"mamori sealed body");
        let mut flipped = sealed.clone();
        flipped[20] ^= 1;
        assert!(SealKey::new(&key).open(&flipped, aad).is_none());
    }

    fn hex_bytes(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn seal_binds_ciphertext_to_its_row() {
        let (_, k) = SealKey::random();
        let sealed = k.seal(b"{\"name\":\"Yamada\"}", b"Patient/1/1").unwrap();
        assert_eq!(k.open(&sealed, b"Patient/1/1").unwrap(), b"{\"name\":\"Yamada\"}");
        assert!(k.open(&sealed, b"Patient/1/2").is_none(), "moved to another row");
        let mut flipped = sealed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(k.open(&flipped, b"Patient/1/1").is_none(), "altered byte");
        assert!(k.open(&sealed[..10], b"Patient/1/1").is_none(), "truncated");
    }

    #[test]
    fn key_file_is_private_and_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("master.key");
        MasterKey::create_file(&p).unwrap();
        assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(MasterKey::create_file(&p).is_err());
        MasterKey::load_file(&p).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        let err = MasterKey::load_file(&p).err().unwrap().to_string();
        assert!(err.contains("chmod 600"), "{err}");
    }

    #[test]
    fn index_tokens_are_keyed_and_unambiguous() {
        let a = IndexKey::new(Zeroizing::new([1u8; 32]));
        let b = IndexKey::new(Zeroizing::new([2u8; 32]));
        assert_eq!(a.token(&["x", "y"]), a.token(&["x", "y"]));
        assert_ne!(a.token(&["x", "y"]), b.token(&["x", "y"]));
        assert_ne!(a.token(&["ab", "c"]), a.token(&["a", "bc"]));
    }

    #[test]
    fn index_tokens_are_hmac_sha256_with_the_32_byte_key() {
        // The pre-keyed state must give exactly the HMAC keyed with the 32 bytes, so indexes
        // built before it stay valid.
        let k = [9u8; 32];
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&k).unwrap();
        mac.update(&1u32.to_le_bytes());
        mac.update(b"p");
        let full = mac.finalize().into_bytes();
        assert_eq!(IndexKey::new(Zeroizing::new(k)).token(&["p"])[..], full[..16]);
    }
}

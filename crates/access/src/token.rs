//! Bearer tokens for scripts and tests (`mamori token create`).
//!
//! A token is 32 random bytes; only its SHA-256 is stored, so a copied database yields no usable
//! credential. A slow hash is unnecessary here: the secret has 256 bits of entropy, unlike a
//! password.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

const PREFIX: &str = "mamori_";

/// SHA-256 of the token text: what the database keeps and looks up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TokenHash(pub [u8; 32]);

/// A freshly minted token. The secret is shown once to the operator and then dropped (zeroised).
pub struct ApiToken {
    secret: Zeroizing<String>,
    hash: TokenHash,
}

impl ApiToken {
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(bytes.as_mut());
        let secret = Zeroizing::new(format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes.as_ref())));
        let hash = TokenHash::of(&secret);
        ApiToken { secret, hash }
    }

    pub fn secret(&self) -> &str {
        &self.secret
    }

    pub fn hash(&self) -> TokenHash {
        self.hash
    }
}

impl TokenHash {
    pub fn of(presented: &str) -> Self {
        TokenHash(Sha256::digest(presented.as_bytes()).into())
    }

    /// A short public name of the token for listing and revocation: the first 8 bytes of its
    /// SHA-256 in hex. It reveals nothing usable (the hash of a 256-bit secret is not the secret).
    pub fn public_id(&self) -> String {
        self.0[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Cheap syntactic check before any database work: rejects junk without a lookup.
    pub fn from_presented(presented: &str) -> Option<Self> {
        let body = presented.strip_prefix(PREFIX)?;
        (body.len() == 43 && body.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
            .then(|| TokenHash::of(presented))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_unique_and_recognised() {
        let a = ApiToken::generate();
        let b = ApiToken::generate();
        assert_ne!(a.secret(), b.secret());
        assert_eq!(TokenHash::from_presented(a.secret()), Some(a.hash()));
        assert_eq!(TokenHash::from_presented("mamori_short"), None);
        assert_eq!(TokenHash::from_presented("Bearer x"), None);
        let id = a.hash().public_id();
        assert_eq!(id.len(), 16);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_ne!(id, b.hash().public_id());
    }
}

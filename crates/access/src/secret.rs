//! One-time and session secrets: session tokens, login tickets, recovery codes and temporary
//! credentials. Each is random with at least 80 bits of entropy, shown once, and only its
//! SHA-256 is stored (a slow hash is for human-chosen passwords; these are not guessable).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::{Rng, RngCore};
use zeroize::Zeroizing;

use crate::TokenHash;

/// What kind of secret a presented string is; each has its own prefix or shape, so one can
/// never be used in place of another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretKind {
    /// A login session's bearer token (`mamoris_…`).
    Session,
    /// A short-lived, single-use step of a login (`mamorit_…`): second factor, password change,
    /// enrolment.
    Ticket,
    /// An OAuth 2.0 access token (`mamoria_…`, AUTH-6): short-lived, scoped.
    OAuthAccess,
    /// An OAuth 2.0 refresh token (`mamorir_…`): rotated on every use.
    OAuthRefresh,
    /// An OAuth 2.0 authorisation code (`mamoric_…`): single use, 60 s.
    OAuthCode,
    /// The anti-forgery token of a login page form (`mamorif_…`).
    FormToken,
    /// An EHR launch context (`mamoril_…`, SMART `launch`): single use, short-lived.
    OAuthLaunch,
}

impl SecretKind {
    fn prefix(self) -> &'static str {
        match self {
            SecretKind::Session => "mamoris_",
            SecretKind::Ticket => "mamorit_",
            SecretKind::OAuthAccess => "mamoria_",
            SecretKind::OAuthRefresh => "mamorir_",
            SecretKind::OAuthCode => "mamoric_",
            SecretKind::FormToken => "mamorif_",
            SecretKind::OAuthLaunch => "mamoril_",
        }
    }
}

/// A freshly generated secret: the text is shown once and zeroised on drop.
pub struct IssuedSecret {
    text: Zeroizing<String>,
    hash: TokenHash,
}

impl IssuedSecret {
    pub fn generate(kind: SecretKind) -> IssuedSecret {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(bytes.as_mut());
        let text = Zeroizing::new(format!("{}{}", kind.prefix(), URL_SAFE_NO_PAD.encode(bytes.as_ref())));
        let hash = TokenHash::of(&text);
        IssuedSecret { text, hash }
    }

    /// `groups` groups of four symbols of a 32-letter alphabet without look-alikes (5 bits each):
    /// recovery codes (4 groups, 80 bits) and temporary credentials (6 groups, 120 bits, the
    /// shape of the setup secret of `mamori init`).
    pub fn readable(groups: usize) -> IssuedSecret {
        let mut rng = rand::rng();
        let symbols: Zeroizing<String> =
            Zeroizing::new((0..groups * 4).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect());
        let text = Zeroizing::new(group(&symbols));
        let hash = TokenHash::of(&text);
        IssuedSecret { text, hash }
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn hash(&self) -> TokenHash {
        self.hash
    }
}

const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";

fn group(symbols: &str) -> String {
    let chars: Vec<char> = symbols.chars().collect();
    chars.chunks(4).map(|c| c.iter().collect::<String>()).collect::<Vec<_>>().join("-")
}

/// The hash of a presented session token or ticket; `None` for anything of the wrong shape
/// (rejected without a database lookup).
pub fn presented(kind: SecretKind, text: &str) -> Option<TokenHash> {
    let body = text.strip_prefix(kind.prefix())?;
    (body.len() == 43 && body.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        .then(|| TokenHash::of(text))
}

/// The hash of a typed readable secret (recovery code, temporary credential, setup secret):
/// case, spaces and dashes are forgiven; `None` if it cannot be one.
pub fn presented_readable(text: &str, groups: usize) -> Option<TokenHash> {
    let symbols: String =
        text.chars().filter(|c| !c.is_whitespace() && *c != '-').map(|c| c.to_ascii_uppercase()).collect();
    (symbols.len() == groups * 4 && symbols.bytes().all(|b| ALPHABET.contains(&b)))
        .then(|| TokenHash::of(&group(&symbols)))
}

/// Recovery codes: 4 groups (80 bits).
pub const RECOVERY_CODE_GROUPS: usize = 4;
/// Temporary credentials and the setup secret: 6 groups (120 bits).
pub const TEMPORARY_GROUPS: usize = 6;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_have_their_own_shapes() {
        let s = IssuedSecret::generate(SecretKind::Session);
        assert!(s.text().starts_with("mamoris_"));
        assert_eq!(presented(SecretKind::Session, s.text()), Some(s.hash()));
        assert_eq!(presented(SecretKind::Ticket, s.text()), None, "a session token is not a ticket");
        assert_eq!(TokenHash::from_presented(s.text()), None, "nor an API token");
        let r = IssuedSecret::readable(RECOVERY_CODE_GROUPS);
        assert_eq!(r.text().len(), 19);
        let typed = r.text().to_lowercase().replace('-', " ");
        assert_eq!(presented_readable(&typed, RECOVERY_CODE_GROUPS), Some(r.hash()));
        assert_eq!(presented_readable(r.text(), TEMPORARY_GROUPS), None);
        assert_eq!(
            presented_readable("0000-1111-OOOO-IIII", RECOVERY_CODE_GROUPS),
            None,
            "look-alikes are not in the alphabet"
        );
    }
}

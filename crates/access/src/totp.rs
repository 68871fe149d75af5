//! Time-based one-time passwords (AUTH-2): RFC 6238 with the parameters every authenticator app
//! understands — HMAC-SHA-1, 6 digits, 30-second steps — accepting the step before and after the
//! current one (clock drift), and never a step at or before the last one used (replay).

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use rand::RngCore;
use subtle::ConstantTimeEq;
use totp_rs::{Algorithm, TOTP};
use zeroize::Zeroizing;

pub const DIGITS: usize = 6;
pub const STEP_SECONDS: i64 = 30;
/// Steps accepted either side of the current one.
pub const WINDOW: i64 = 1;
/// 160-bit secrets, as RFC 4226 recommends.
pub const SECRET_BYTES: usize = 20;

/// A TOTP shared secret. Zeroised on drop; never logged (no `Debug`).
pub struct TotpSecret(Zeroizing<Vec<u8>>);

/// Characters escaped in the label and issuer of an `otpauth://` URI.
const URI_ESCAPE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_');

impl TotpSecret {
    pub fn generate() -> TotpSecret {
        let mut b = Zeroizing::new(vec![0u8; SECRET_BYTES]);
        rand::rng().fill_bytes(&mut b);
        TotpSecret(b)
    }

    /// A secret as stored (after decryption); `None` if it is too short for RFC 6238.
    pub fn from_bytes(bytes: Vec<u8>) -> Option<TotpSecret> {
        (bytes.len() >= 16).then(|| TotpSecret(Zeroizing::new(bytes)))
    }

    /// A secret typed or scanned in base32 (as [`Self::base32`] gives it).
    pub fn from_base32(text: &str) -> Option<TotpSecret> {
        let bytes = totp_rs::Secret::Encoded(text.trim().to_ascii_uppercase()).to_bytes().ok()?;
        Self::from_bytes(bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    fn totp(&self) -> Option<TOTP> {
        TOTP::new(Algorithm::SHA1, DIGITS, 0, STEP_SECONDS as u64, self.0.to_vec()).ok()
    }

    /// The secret in base32 (RFC 4648, no padding), for typing into an authenticator.
    pub fn base32(&self) -> String {
        self.totp().map(|t| t.get_secret_base32()).unwrap_or_default()
    }

    /// `otpauth://totp/ISSUER:ACCOUNT?secret=…&issuer=…&algorithm=SHA1&digits=6&period=30`.
    pub fn otpauth_uri(&self, issuer: &str, account: &str) -> String {
        let i = utf8_percent_encode(issuer, URI_ESCAPE);
        let a = utf8_percent_encode(account, URI_ESCAPE);
        format!(
            "otpauth://totp/{i}:{a}?secret={}&issuer={i}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECONDS}",
            self.base32()
        )
    }

    /// The code of the step containing `unix_seconds`.
    pub fn code_at(&self, unix_seconds: i64) -> String {
        match self.totp() {
            Some(t) if unix_seconds >= 0 => t.generate(unix_seconds as u64),
            _ => String::new(),
        }
    }

    /// Checks `code` at `unix_seconds`; returns the time step it belongs to if it is valid and
    /// later than `last_step` (the step of the last code accepted for this account).
    pub fn verify(&self, code: &str, unix_seconds: i64, last_step: Option<i64>) -> Option<i64> {
        let code = code.trim();
        if code.len() != DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let totp = self.totp()?;
        let now = unix_seconds.div_euclid(STEP_SECONDS);
        let mut found = None;
        // Every candidate is computed and compared in constant time, so timing reveals nothing
        // about which step matched.
        for step in now - WINDOW..=now + WINDOW {
            if step < 0 {
                continue;
            }
            let expected = totp.generate((step * STEP_SECONDS) as u64);
            let matches: bool = expected.as_bytes().ct_eq(code.as_bytes()).into();
            if matches && last_step.is_none_or(|last| step > last) && found.is_none() {
                found = Some(step);
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B, SHA-1 secret "12345678901234567890"; the RFC lists 8 digits, the last
    /// 6 of which are the 6-digit codes.
    #[test]
    fn auth2_rfc6238_test_vectors() {
        let s = TotpSecret::from_bytes(b"12345678901234567890".to_vec()).unwrap();
        for (t, eight) in [
            (59, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ] {
            assert_eq!(s.code_at(t), eight[2..], "t={t}");
        }
    }

    #[test]
    fn auth2_totp_window_is_one_step_and_replay_is_refused() {
        let s = TotpSecret::generate();
        let t = 1_800_000_000;
        let now = t / STEP_SECONDS;
        assert_eq!(s.verify(&s.code_at(t), t, None), Some(now));
        assert_eq!(s.verify(&s.code_at(t - 30), t, None), Some(now - 1));
        assert_eq!(s.verify(&s.code_at(t + 30), t, None), Some(now + 1));
        assert_eq!(s.verify(&s.code_at(t - 60), t, None), None, "two steps old");
        assert_eq!(s.verify(&s.code_at(t + 60), t, None), None, "two steps ahead");
        assert_eq!(s.verify(&s.code_at(t), t, Some(now)), None, "the same step twice");
        assert_eq!(s.verify(&s.code_at(t - 30), t, Some(now)), None, "an older step after a newer one");
        assert_eq!(s.verify("12345", t, None), None);
        assert_eq!(s.verify("abcdef", t, None), None);
    }

    #[test]
    fn auth2_otpauth_uri_carries_the_standard_parameters() {
        let s = TotpSecret::from_bytes(b"12345678901234567890".to_vec()).unwrap();
        assert_eq!(TotpSecret::from_base32(&s.base32()).unwrap().as_bytes(), s.as_bytes());
        let uri = s.otpauth_uri("mamori clinic", "dr.sato");
        assert_eq!(
            uri,
            "otpauth://totp/mamori%20clinic:dr.sato?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=mamori%20clinic&algorithm=SHA1&digits=6&period=30"
        );
    }
}

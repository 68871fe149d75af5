//! Passwords (AUTH-3, AUTH-4): argon2id hashes with calibrated parameters, and the password
//! policy of the MHLW guideline's Q&A (13+ characters mixing classes, or 8+ with a second
//! factor), a strength estimate (zxcvbn) and a refusal list of common passwords.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::RngCore;
use zeroize::Zeroizing;

/// The longest password accepted, in characters: argon2 takes any length, but a bound keeps a
/// request from making the server hash megabytes.
pub const MAX_PASSWORD_CHARS: usize = 256;

/// argon2id cost parameters. What `mamori init` calibrates and the configuration stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Argon2Params {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Argon2Params {
    /// The floor: OWASP's minimum for argon2id (19 MiB, 2 passes, 1 lane). Nothing weaker is
    /// accepted from the configuration.
    pub const FLOOR: Argon2Params = Argon2Params { memory_kib: 19 * 1024, iterations: 2, parallelism: 1 };
    /// Memory ceiling of calibration: several logins may hash at once on a small clinic server.
    pub const MAX_MEMORY_KIB: u32 = 64 * 1024;

    pub fn is_at_least_floor(&self) -> bool {
        self.memory_kib >= Self::FLOOR.memory_kib
            && self.iterations >= Self::FLOOR.iterations
            && self.parallelism >= 1
            && self.parallelism <= 16
    }

    fn argon2(&self) -> Result<Argon2<'static>, CredentialError> {
        let p = Params::new(self.memory_kib, self.iterations, self.parallelism, None)
            .map_err(|_| CredentialError::Parameters)?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, p))
    }

    /// Chooses parameters whose hash takes about `target` on this machine: one hash at the floor
    /// is measured and the cost scaled from it (argon2's time is close to linear in memory ×
    /// passes) — memory first, up to [`Self::MAX_MEMORY_KIB`], then passes. Never below the floor.
    pub fn calibrate(target: Duration) -> Result<Argon2Params, CredentialError> {
        let floor = Self::FLOOR;
        let started = Instant::now();
        let salt = salt()?;
        floor.argon2()?.hash_password(b"calibration", &salt).map_err(|_| CredentialError::Hashing)?;
        let took = started.elapsed().as_secs_f64().max(1e-4);
        let factor = (target.as_secs_f64() / took).max(1.0);
        let memory = (f64::from(floor.memory_kib) * factor).min(f64::from(Self::MAX_MEMORY_KIB)) as u32;
        let memory = memory.max(floor.memory_kib);
        let rest = factor * f64::from(floor.memory_kib) / f64::from(memory);
        let iterations = ((f64::from(floor.iterations) * rest).round() as u32).clamp(floor.iterations, 64);
        Ok(Argon2Params { memory_kib: memory, iterations, parallelism: 1 })
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CredentialError {
    /// The argon2 parameters are out of range.
    #[error("invalid argon2 parameters")]
    Parameters,
    /// Hashing failed (out of memory, or a stored hash is malformed).
    #[error("password hashing failed")]
    Hashing,
}

fn salt() -> Result<SaltString, CredentialError> {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    SaltString::encode_b64(&bytes).map_err(|_| CredentialError::Hashing)
}

/// Hashes and verifies passwords with the configured parameters.
pub struct PasswordHasher {
    params: Argon2Params,
    /// A hash of a random password, verified against when the account is unknown, so that the
    /// answer takes as long as for a known account (no enumeration by timing).
    dummy: OnceLock<String>,
}

impl PasswordHasher {
    pub fn new(params: Argon2Params) -> Result<PasswordHasher, CredentialError> {
        params.argon2()?;
        Ok(PasswordHasher { params, dummy: OnceLock::new() })
    }

    /// A hasher with the floor parameters (valid by construction).
    pub fn floor() -> PasswordHasher {
        PasswordHasher { params: Argon2Params::FLOOR, dummy: OnceLock::new() }
    }

    pub fn params(&self) -> Argon2Params {
        self.params
    }

    /// The PHC string (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`) of `password`.
    pub fn hash(&self, password: &str) -> Result<String, CredentialError> {
        let salt = salt()?;
        let hash =
            self.params.argon2()?.hash_password(password.as_bytes(), &salt).map_err(|_| CredentialError::Hashing)?;
        Ok(hash.to_string())
    }

    /// Whether `password` matches the stored PHC string (with the parameters recorded in it).
    pub fn verify(&self, phc: &str, password: &str) -> bool {
        match PasswordHash::new(phc) {
            Ok(parsed) => Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok(),
            Err(_) => false,
        }
    }

    /// Spends the time of one verification and fails: for unknown or unusable accounts.
    pub fn verify_dummy(&self, password: &str) -> bool {
        let dummy = self.dummy.get_or_init(|| {
            let mut random = Zeroizing::new([0u8; 24]);
            rand::rng().fill_bytes(random.as_mut());
            self.hash(&URL_SAFE.encode(random.as_ref())).unwrap_or_default()
        });
        let _ = self.verify(dummy, password);
        false
    }

    /// Computes the dummy hash now (at start-up) rather than at the first unknown login.
    pub fn warm_up(&self) {
        self.verify_dummy("");
    }

    /// Whether a stored hash was made with other parameters than the configured ones, so it is
    /// replaced after the next successful login.
    pub fn needs_rehash(&self, phc: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(phc) else { return true };
        if parsed.algorithm.as_str() != "argon2id" {
            return true;
        }
        match Params::try_from(&parsed) {
            Ok(p) => {
                p.m_cost() != self.params.memory_kib
                    || p.t_cost() != self.params.iterations
                    || p.p_cost() != self.params.parallelism
            }
            Err(_) => true,
        }
    }
}

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as URL_SAFE;

/// The password rules (AUTH-3); defaults are the guideline's.
#[derive(Clone, Debug)]
pub struct PasswordPolicy {
    /// Minimum length without a second factor (13).
    pub min_length: usize,
    /// Minimum length when the account has a second factor enrolled (8).
    pub min_length_with_second_factor: usize,
    /// Character classes (upper, lower, digit, symbol) a password must mix (3).
    pub min_classes: usize,
    /// Minimum zxcvbn score, 0–4 (3: "safely unguessable", about 10^10 guesses).
    pub min_strength: u8,
    /// Minimum zxcvbn score with a second factor (2, about 10^8 guesses: zxcvbn rates any
    /// 8-character password at most 2, and the second factor is what makes 8 enough).
    pub min_strength_with_second_factor: u8,
    /// How many previous passwords may not be reused (5).
    pub history: usize,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        PasswordPolicy {
            min_length: 13,
            min_length_with_second_factor: 8,
            min_classes: 3,
            min_strength: 3,
            min_strength_with_second_factor: 2,
            history: 5,
        }
    }
}

/// Why a new password was refused. Shown to the person choosing it (who has proved who they are).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PasswordProblem {
    #[error("the password must have at least {0} characters")]
    TooShort(usize),
    #[error("the password may have at most {MAX_PASSWORD_CHARS} characters")]
    TooLong,
    #[error("the password must mix at least {0} of: upper-case letters, lower-case letters, digits, symbols")]
    TooFewClasses(usize),
    #[error("the password is on the list of common or well-known passwords")]
    Common,
    #[error("the password is too easy to guess (strength {0} of 4); use more unrelated words or characters")]
    Weak(u8),
    #[error("the password was used recently; choose one not among the last {0}")]
    Reused(usize),
}

/// Product and setting-specific passwords refused in addition to zxcvbn's common-password list
/// (see `common-passwords.txt` for the source and licence).
const EXTRA_REFUSED: &str = include_str!("common-passwords.txt");

fn extra_refused() -> impl Iterator<Item = &'static str> + Clone {
    EXTRA_REFUSED.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#'))
}

impl PasswordPolicy {
    /// Checks a new password for `account`; `second_factor` says whether one is enrolled.
    pub fn check(&self, password: &str, account: &str, second_factor: bool) -> Result<(), PasswordProblem> {
        let chars = password.chars().count();
        let min = if second_factor { self.min_length_with_second_factor } else { self.min_length };
        if chars < min {
            return Err(PasswordProblem::TooShort(min));
        }
        if chars > MAX_PASSWORD_CHARS {
            return Err(PasswordProblem::TooLong);
        }
        let classes = [
            password.chars().any(|c| c.is_ascii_uppercase()),
            password.chars().any(|c| c.is_ascii_lowercase()),
            password.chars().any(|c| c.is_ascii_digit()),
            password.chars().any(|c| !c.is_ascii_alphanumeric()),
        ]
        .into_iter()
        .filter(|x| *x)
        .count();
        if classes < self.min_classes {
            return Err(PasswordProblem::TooFewClasses(self.min_classes));
        }
        let lower = password.to_lowercase();
        if extra_refused().any(|w| w == lower) {
            return Err(PasswordProblem::Common);
        }
        let mut inputs: Vec<&str> = vec![account, "mamori"];
        inputs.extend(account.split(['.', '_', '-']).filter(|p| p.len() >= 3));
        inputs.extend(extra_refused().map(|w| -> &str { w }));
        let entropy = zxcvbn::zxcvbn(password, &inputs);
        // The refusal list derived from zxcvbn: a password that is, as a whole, one entry of its
        // common-passwords dictionary (also reversed or with l33t substitutions) is refused.
        let whole_common = entropy.sequence().iter().any(|m| {
            m.i == 0
                && m.j + 1 == chars
                && matches!(&m.pattern, zxcvbn::matching::patterns::MatchPattern::Dictionary(d)
                    if format!("{:?}", d.dictionary_name) == "Passwords")
        });
        if whole_common {
            return Err(PasswordProblem::Common);
        }
        let score = u8::from(entropy.score());
        let min_score = if second_factor { self.min_strength_with_second_factor } else { self.min_strength };
        if score < min_score {
            return Err(PasswordProblem::Weak(score));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth3_password_policy_refuses_short_single_class() {
        let p = PasswordPolicy::default();
        assert_eq!(p.check("abcdefghijklmnop", "dr.sato", false), Err(PasswordProblem::TooFewClasses(3)));
        assert_eq!(p.check("Ab1!xyz", "dr.sato", false), Err(PasswordProblem::TooShort(13)));
        assert_eq!(p.check("Ab1!xyzQ9", "dr.sato", false), Err(PasswordProblem::TooShort(13)));
        assert_eq!(p.check(&"Aa1!".repeat(70), "dr.sato", false), Err(PasswordProblem::TooLong));
    }

    #[test]
    fn auth3_password_policy_accepts_13_mixed_or_8_with_second_factor() {
        let p = PasswordPolicy::default();
        p.check("Kaede-Blue7-Harbor", "dr.sato", false).unwrap();
        assert_eq!(p.check("Kq7#vLm2", "dr.sato", false), Err(PasswordProblem::TooShort(13)));
        p.check("Kq7#vLm2", "dr.sato", true).unwrap();
    }

    #[test]
    fn auth4_common_and_weak_passwords_are_refused() {
        let p = PasswordPolicy::default();
        // On zxcvbn's common-password list as a whole (l33t-substituted).
        assert_eq!(p.check("P@ssw0rd", "dr.sato", true), Err(PasswordProblem::Common));
        // On the product list shipped with mamori.
        assert_eq!(p.check("Mamori@123456", "dr.sato", false), Err(PasswordProblem::Common));
        // Long enough and mixed, but built from the account name and a sequence.
        assert!(matches!(p.check("Dr.Sato123456", "dr.sato", false), Err(PasswordProblem::Weak(_))));
    }

    #[test]
    fn auth3_hashes_are_argon2id_salted_and_rehash_is_detected() {
        let h = PasswordHasher::new(Argon2Params::FLOOR).unwrap();
        let a = h.hash("Kaede-Blue7-Harbor").unwrap();
        let b = h.hash("Kaede-Blue7-Harbor").unwrap();
        assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{a}");
        assert_ne!(a, b, "salted");
        assert!(h.verify(&a, "Kaede-Blue7-Harbor"));
        assert!(!h.verify(&a, "Kaede-Blue7-Harbo"));
        assert!(!h.verify("not a hash", "x"));
        assert!(!h.verify_dummy("Kaede-Blue7-Harbor"));
        assert!(!h.needs_rehash(&a));
        let stronger = PasswordHasher::new(Argon2Params { iterations: 3, ..Argon2Params::FLOOR }).unwrap();
        assert!(stronger.needs_rehash(&a));
    }

    #[test]
    fn auth3_calibration_never_goes_below_the_floor() {
        let p = Argon2Params::calibrate(Duration::ZERO).unwrap();
        assert_eq!(p, Argon2Params::FLOOR);
        let q = Argon2Params::calibrate(Duration::from_millis(300)).unwrap();
        assert!(q.is_at_least_floor() && q.memory_kib <= Argon2Params::MAX_MEMORY_KIB, "{q:?}");
    }
}

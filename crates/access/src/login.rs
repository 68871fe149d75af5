//! The login policy (AUTH-2, AUTH-5, AUTH-6): which roles need two factors, when accounts and
//! sources are locked out, how long sessions live. Built from the configuration; the store
//! applies it.

use std::sync::Arc;

use time::Duration;

use crate::password::{PasswordHasher, PasswordPolicy};
use crate::role::Role;

/// Failure counting and lockout for one kind of key (account or source address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lockout {
    /// Failures within `period` that lock the key.
    pub threshold: u32,
    /// How long a lock lasts, and the window failures are counted in (fixed, not growing).
    pub period: Duration,
}

/// Session limits (AUTH-6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionPolicy {
    /// A session unused this long ends.
    pub idle_timeout: Duration,
    /// A session ends this long after login whatever its use.
    pub lifetime: Duration,
    /// Sessions one account may hold; a new login evicts the oldest beyond this.
    pub max_per_account: u32,
}

/// Which interface a login, session or token is for (ACL-4): the internal (staff) interface or
/// the patient interface. A session carries the audience it was issued for and is accepted only
/// by the listener of that audience; an account's job type fixes the one audience it may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Audience {
    Staff,
    Patient,
}

impl Audience {
    pub fn as_str(self) -> &'static str {
        match self {
            Audience::Staff => "staff",
            Audience::Patient => "patient",
        }
    }

    /// The one audience an account of `role` may sign in to.
    pub fn of(role: Role) -> Audience {
        if role.is_staff() { Audience::Staff } else { Audience::Patient }
    }
}

/// Everything the store needs to decide a login.
pub struct LoginPolicy {
    pub hasher: PasswordHasher,
    pub passwords: PasswordPolicy,
    pub account_lockout: Lockout,
    pub source_lockout: Lockout,
    pub sessions: SessionPolicy,
    /// Roles that cannot get a session with a password alone (AUTH-2)…
    pub two_factor_roles: Vec<Role>,
    /// …except from these network zones (zone name → roles that may use a password alone
    /// there). A zone not listed, or an unknown zone, grants no exception.
    pub password_only_from: Vec<(String, Vec<Role>)>,
    /// The WebAuthn relying party; `None`: WebAuthn is not offered.
    pub webauthn: Option<crate::webauthn::RelyingParty>,
    /// Lifetime of a login ticket (second-factor step, password change, enrolment).
    pub ticket_ttl: Duration,
    /// Lifetime of an administrator-issued temporary credential (AUTH-8).
    pub temporary_credential_ttl: Duration,
    /// Issuer shown in authenticator apps.
    pub totp_issuer: String,
    /// The interface this policy serves (ACL-4): logins of accounts of the other audience are
    /// refused, and sessions are issued for and accepted from this audience only.
    pub audience: Audience,
}

impl LoginPolicy {
    /// The defaults the configuration documents, with the given hasher.
    pub fn with_hasher(hasher: PasswordHasher) -> LoginPolicy {
        LoginPolicy {
            hasher,
            passwords: PasswordPolicy::default(),
            account_lockout: Lockout { threshold: 5, period: Duration::minutes(15) },
            source_lockout: Lockout { threshold: 20, period: Duration::minutes(15) },
            sessions: SessionPolicy {
                idle_timeout: Duration::minutes(30),
                lifetime: Duration::hours(10),
                max_per_account: 3,
            },
            two_factor_roles: Role::ALL.to_vec(),
            password_only_from: Vec::new(),
            webauthn: None,
            ticket_ttl: Duration::minutes(5),
            temporary_credential_ttl: Duration::hours(24),
            totp_issuer: "mamori".into(),
            audience: Audience::Staff,
        }
    }

    /// Whether an account of `role` may sign in (or hold a session) through this interface.
    pub fn admits(&self, role: Role) -> bool {
        Audience::of(role) == self.audience
    }

    /// Whether `role` needs two factors from every zone (no zone exception considered).
    pub fn requires_two_factors(&self, role: Role) -> bool {
        self.two_factor_roles.contains(&role)
    }

    /// Whether `role` needs two factors when logging in from `zone` (AUTH-2 per role and zone).
    /// `None` (zone not known to the caller) is treated as the strictest zone.
    pub fn requires_two_factors_from(&self, role: Role, zone: Option<&str>) -> bool {
        if !self.requires_two_factors(role) {
            return false;
        }
        let excepted =
            zone.is_some_and(|z| self.password_only_from.iter().any(|(n, roles)| n == z && roles.contains(&role)));
        !excepted
    }

    /// Whether a sign-in with the recorded `factors` is strong enough for `role` in `zone`
    /// (AUTH-2 per zone): a password alone only where `role` needs no second factor there. The
    /// one rule for login sessions and the OAuth tokens bound to them, applied on every request
    /// and every token request. `None` (zone unknown) is the strictest zone.
    pub fn factors_suffice(&self, role: Role, factors: &str, zone: Option<&str>) -> bool {
        has_second_factor(factors) || !self.requires_two_factors_from(role, zone)
    }
}

/// What a login session records when it was opened with a password alone; with a second factor
/// it is `password+<method>` (`password+totp`, `password+webauthn`, `password+recovery-code`).
pub const PASSWORD_ONLY: &str = "password";

/// Whether recorded `factors` include a second factor. Anything else — a password alone, or a
/// value this version does not know — counts as a password alone (fail closed).
pub fn has_second_factor(factors: &str) -> bool {
    factors.strip_prefix("password+").is_some_and(|m| !m.is_empty())
}

/// Shared by the server and the store's calls.
pub type SharedLoginPolicy = Arc<LoginPolicy>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth2_two_factors_per_role_and_zone() {
        let mut p = LoginPolicy::with_hasher(PasswordHasher::floor());
        p.two_factor_roles = vec![Role::Physician, Role::Clerk];
        p.password_only_from = vec![("his".into(), vec![Role::Clerk])];
        assert!(!p.requires_two_factors_from(Role::Clerk, Some("his")));
        assert!(p.requires_two_factors_from(Role::Clerk, Some("vpn")));
        assert!(p.requires_two_factors_from(Role::Clerk, None), "an unknown zone is the strictest");
        assert!(p.requires_two_factors_from(Role::Physician, Some("his")));
        assert!(!p.requires_two_factors_from(Role::Nurse, Some("internet")), "not a two-factor role");
    }

    #[test]
    fn auth2_a_password_alone_suffices_only_where_the_role_is_excepted() {
        let mut p = LoginPolicy::with_hasher(PasswordHasher::floor());
        p.two_factor_roles = vec![Role::Physician, Role::Clerk];
        p.password_only_from = vec![("his".into(), vec![Role::Clerk])];
        assert!(p.factors_suffice(Role::Clerk, PASSWORD_ONLY, Some("his")));
        assert!(!p.factors_suffice(Role::Clerk, PASSWORD_ONLY, Some("vpn")));
        assert!(!p.factors_suffice(Role::Clerk, PASSWORD_ONLY, None));
        assert!(!p.factors_suffice(Role::Physician, PASSWORD_ONLY, Some("his")));
        assert!(p.factors_suffice(Role::Nurse, PASSWORD_ONLY, Some("internet")), "not a two-factor role");
        for two in ["password+totp", "password+webauthn", "password+recovery-code"] {
            assert!(p.factors_suffice(Role::Physician, two, Some("internet")), "{two}");
        }
        for odd in ["", "password+", "totp", "Password+totp"] {
            assert!(!p.factors_suffice(Role::Clerk, odd, Some("vpn")), "{odd:?} counts as a password alone");
        }
    }
}

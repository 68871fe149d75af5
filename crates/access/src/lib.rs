//! Identities, credentials and the policy decision point.
//!
//! This crate has no I/O: the store persists accounts and token hashes, the server asks
//! [`policy::Policy::decide`] before any storage call: job type × information category ×
//! operation × zone × purpose.
#![forbid(unsafe_code)]

pub mod client_assertion;
pub mod login;
pub mod oidc;
pub mod password;
pub mod policy;
pub mod role;
pub mod scope;
pub mod secret;
pub mod token;
pub mod totp;
pub mod webauthn;

pub use login::Audience;
pub use login::{LoginPolicy, SharedLoginPolicy};
pub use policy::{
    CategorySet, ClientCert, Decision, Operation, PatientConfig, Policy, PolicyConfig, PolicyError, Purpose, Rights,
    ZoneId,
};
pub use role::{Role, RoleError};
pub use token::{ApiToken, TokenHash};

/// An authenticated person (or the local operator), as the request path carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The account name: one account per person (AUTH-1).
    pub account: String,
    pub role: Role,
}

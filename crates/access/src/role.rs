//! Job types (ACL-2). The set is fixed (every account names one); what each may do, per
//! information category, zone and purpose, is the configurable policy (`policy.rs`).

use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Clinical read and write.
    Physician,
    Nurse,
    Pharmacist,
    /// Medical clerk (医療事務): registration, scheduling, billing.
    Clerk,
    /// Accounts and settings; no clinical data by virtue of the role (ACL-5).
    Administrator,
    /// Audit data only; no clinical data (ACL-5).
    Auditor,
    /// A maintenance vendor's engineer: no clinical data by default.
    Maintenance,
    /// A patient (ACL-4): signs in only at the patient interface and sees only their own
    /// compartment there, under `[policy.patient]`; never given grants or staff rights.
    Patient,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "unknown role '{0}': expected one of physician, nurse, pharmacist, clerk, administrator, auditor, maintenance, patient"
)]
pub struct RoleError(pub String);

impl Role {
    pub const ALL: [Role; 8] = [
        Role::Physician,
        Role::Nurse,
        Role::Pharmacist,
        Role::Clerk,
        Role::Administrator,
        Role::Auditor,
        Role::Maintenance,
        Role::Patient,
    ];

    /// The job types of staff (everyone but patients).
    pub fn is_staff(self) -> bool {
        self != Role::Patient
    }

    /// Position in [`Role::ALL`] (the policy keeps one grant list per job type).
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Physician => "physician",
            Role::Nurse => "nurse",
            Role::Pharmacist => "pharmacist",
            Role::Clerk => "clerk",
            Role::Maintenance => "maintenance",
            Role::Administrator => "administrator",
            Role::Auditor => "auditor",
            Role::Patient => "patient",
        }
    }
}

impl FromStr for Role {
    type Err = RoleError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // "medical-clerk" is accepted as the long name of the clerk job type.
        let s2 = if s == "medical-clerk" { "clerk" } else { s };
        Role::ALL.into_iter().find(|r| r.as_str() == s2).ok_or_else(|| RoleError(s.chars().take(40).collect()))
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_and_unknown_is_refused() {
        for (i, r) in Role::ALL.into_iter().enumerate() {
            assert_eq!(r.as_str().parse::<Role>(), Ok(r));
            assert_eq!(r.index(), i);
        }
        assert!("root".parse::<Role>().is_err());
        assert!("Physician".parse::<Role>().is_err(), "role names are exact");
    }
}

//! Job types. The foundation ships three; the access-policy issue replaces this with the
//! configurable job-type table (physician, nurse, pharmacist, clerk, …).

use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Clinical read and write.
    Physician,
    /// Accounts and settings; no clinical data by virtue of the role (ACL-5).
    Administrator,
    /// Audit data only; no clinical data (ACL-5).
    Auditor,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown role '{0}': expected one of physician, administrator, auditor")]
pub struct RoleError(pub String);

impl Role {
    pub const ALL: [Role; 3] = [Role::Physician, Role::Administrator, Role::Auditor];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Physician => "physician",
            Role::Administrator => "administrator",
            Role::Auditor => "auditor",
        }
    }
}

impl FromStr for Role {
    type Err = RoleError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| RoleError(s.chars().take(40).collect()))
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
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>(), Ok(r));
        }
        assert!("root".parse::<Role>().is_err());
        assert!("Physician".parse::<Role>().is_err(), "role names are exact");
    }
}

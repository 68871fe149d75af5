//! The policy decision point (ACL-1): deny by default, one function decides every request.
//!
//! Today the decision depends on the job type and the operation; the access-policy issue adds the
//! information category, the network zone and the purpose of use as further inputs of the same
//! function, so the request path does not change shape.

use crate::{Principal, Role};

/// What a request wants to do with clinical records (ACL-2 operations).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    View,
    Create,
    Update,
    Delete,
    /// Reading the server's CapabilityStatement: no record content.
    Capabilities,
    /// Reading the audit trail's review views (AUD-4).
    AuditReview,
    /// Reading the server's operational status (clock, audit coverage): no record content.
    ViewStatus,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Permit,
    Deny,
}

/// Decides one request. Anything not explicitly permitted is denied.
pub fn decide(who: &Principal, op: Operation) -> Decision {
    match (who.role, op) {
        (_, Operation::Capabilities) => Decision::Permit,
        // ACL-5: auditors read audit trails, and only they do.
        (Role::Auditor, Operation::AuditReview) => Decision::Permit,
        (_, Operation::AuditReview) => Decision::Deny,
        (Role::Administrator | Role::Auditor, Operation::ViewStatus) => Decision::Permit,
        (Role::Physician, Operation::ViewStatus) => Decision::Deny,
        (Role::Physician, Operation::View | Operation::Create | Operation::Update | Operation::Delete) => {
            Decision::Permit
        }
        // ACL-5: administrators and auditors get no clinical data by virtue of their role.
        (Role::Administrator | Role::Auditor, _) => Decision::Deny,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(role: Role) -> Principal {
        Principal { account: "x".into(), role }
    }

    #[test]
    fn acl5_administrator_and_auditor_see_no_clinical_data() {
        for role in [Role::Administrator, Role::Auditor] {
            for op in [Operation::View, Operation::Create, Operation::Update, Operation::Delete] {
                assert_eq!(decide(&p(role), op), Decision::Deny, "{role} {op:?}");
            }
        }
    }

    #[test]
    fn acl5_only_auditors_review_the_audit_trail() {
        assert_eq!(decide(&p(Role::Auditor), Operation::AuditReview), Decision::Permit);
        assert_eq!(decide(&p(Role::Physician), Operation::AuditReview), Decision::Deny);
        assert_eq!(decide(&p(Role::Administrator), Operation::AuditReview), Decision::Deny);
    }

    #[test]
    fn physician_reads_and_writes() {
        for op in [Operation::View, Operation::Create, Operation::Update, Operation::Delete] {
            assert_eq!(decide(&p(Role::Physician), op), Decision::Permit);
        }
    }
}

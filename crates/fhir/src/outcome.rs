//! OperationOutcome: how every error (and some successes) is reported to clients.

use serde_json::{Map, Value, json};

use crate::error::FhirError;

/// OperationOutcome.issue.severity.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Severity {
    /// The issue caused the action to fail and no further checking could be performed.
    Fatal,
    /// The issue is sufficiently important to cause the action to fail.
    Error,
    /// The action succeeded, but the issue may matter.
    Warning,
    /// Informational only.
    Information,
}

impl Severity {
    /// The FHIR code ("fatal", "error", "warning", "information").
    pub fn as_str(&self) -> &'static str {
        match self {
            Severity::Fatal => "fatal",
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Information => "information",
        }
    }
}

/// One OperationOutcome.issue.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Issue {
    /// Severity.
    pub severity: Severity,
    /// IssueType code (http://hl7.org/fhir/issue-type), e.g. "invalid", "not-found".
    pub code: &'static str,
    /// Human-readable text; omitted from the JSON when empty. Must not contain patient data.
    pub diagnostics: String,
    /// FHIRPath locations of the problem.
    pub expression: Vec<String>,
}

/// An OperationOutcome resource.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct OperationOutcome {
    /// The issues, in order.
    pub issues: Vec<Issue>,
}

impl OperationOutcome {
    /// One error issue.
    pub fn error(code: &'static str, diagnostics: impl Into<String>) -> Self {
        Self::single(Severity::Error, code, diagnostics.into())
    }

    /// One information issue (e.g. the outcome of a successful delete).
    pub fn information(code: &'static str, diagnostics: impl Into<String>) -> Self {
        Self::single(Severity::Information, code, diagnostics.into())
    }

    fn single(severity: Severity, code: &'static str, diagnostics: String) -> Self {
        OperationOutcome { issues: vec![Issue { severity, code, diagnostics, expression: Vec::new() }] }
    }

    /// Adds an expression to the last issue.
    pub fn with_expression(mut self, expression: impl Into<String>) -> Self {
        if let Some(issue) = self.issues.last_mut() {
            issue.expression.push(expression.into());
        }
        self
    }

    /// Appends an issue.
    pub fn with_issue(mut self, issue: Issue) -> Self {
        self.issues.push(issue);
        self
    }

    /// R4 OperationOutcome JSON. R4 requires at least one issue, so an empty outcome is
    /// rendered with a single "informational" issue.
    pub fn to_json(&self) -> Value {
        let issues: Vec<Value> = if self.issues.is_empty() {
            vec![json!({"severity": "information", "code": "informational"})]
        } else {
            self.issues.iter().map(issue_json).collect()
        };
        json!({"resourceType": "OperationOutcome", "issue": issues})
    }
}

fn issue_json(issue: &Issue) -> Value {
    let mut m = Map::new();
    m.insert("severity".into(), issue.severity.as_str().into());
    m.insert("code".into(), issue.code.into());
    // Empty strings and arrays are not allowed in FHIR JSON: omit them.
    if !issue.diagnostics.is_empty() {
        m.insert("diagnostics".into(), issue.diagnostics.clone().into());
    }
    if !issue.expression.is_empty() {
        m.insert("expression".into(), issue.expression.clone().into());
    }
    Value::Object(m)
}

impl From<&FhirError> for OperationOutcome {
    fn from(e: &FhirError) -> Self {
        let out = OperationOutcome::error(e.issue_code(), e.to_string());
        match e.path() {
            Some(p) => out.with_expression(p),
            None => out,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::check_resource;

    #[test]
    fn error_json_is_a_valid_resource() {
        let oo = OperationOutcome::error("not-found", "Patient/1 not found").with_expression("Patient");
        let v = oo.to_json();
        assert_eq!(
            v,
            json!({"resourceType": "OperationOutcome", "issue": [
                {"severity": "error", "code": "not-found", "diagnostics": "Patient/1 not found", "expression": ["Patient"]}]})
        );
        check_resource(&v).unwrap();
    }

    #[test]
    fn empty_parts_are_omitted() {
        let v = OperationOutcome::information("informational", "").to_json();
        assert_eq!(v["issue"][0], json!({"severity": "information", "code": "informational"}));
        let v = OperationOutcome::default().to_json();
        check_resource(&v).unwrap();
        assert_eq!(v["issue"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn from_error() {
        let e =
            FhirError::Structure { path: "Patient.name[0]".into(), reason: "empty object (omit the element instead)" };
        let oo = OperationOutcome::from(&e);
        assert_eq!(oo.issues[0].severity, Severity::Error);
        assert_eq!(oo.issues[0].code, "structure");
        assert_eq!(oo.issues[0].expression, vec!["Patient.name[0]".to_owned()]);
        let oo = OperationOutcome::from(&FhirError::NotAcceptable);
        assert!(oo.issues[0].expression.is_empty());
        let oo = oo.with_issue(Issue {
            severity: Severity::Warning,
            code: "informational",
            diagnostics: "x".into(),
            expression: vec![],
        });
        assert_eq!(oo.to_json()["issue"][1]["severity"], "warning");
    }
}

//! The CapabilityStatement (`/fhir/metadata`): states exactly what this server implements.

use mamori_fhir::resource_type::ResourceType;
use mamori_fhir::search_params::{self, ParamType};
use serde_json::{Value, json};

pub fn statement(software_version: &str, date: &str) -> Value {
    let interactions = json!([
        {"code": "read"}, {"code": "vread"}, {"code": "update"}, {"code": "patch"}, {"code": "delete"},
        {"code": "history-instance"}, {"code": "history-type"}, {"code": "create"}, {"code": "search-type"}
    ]);
    let resources: Vec<Value> = ResourceType::all()
        .map(|t| {
            if t.as_str() == "AuditEvent" {
                // The audit trail, read-only, for auditors (AUD-5).
                return json!({
                    "type": "AuditEvent",
                    "documentation": "The audit trail in the IHE BALP shape; read-only; auditors only.",
                    "interaction": [{"code": "read"}, {"code": "search-type"}],
                    "searchParam": [
                        {"name": "date", "type": "date"}, {"name": "agent", "type": "token"},
                        {"name": "patient", "type": "reference"}, {"name": "entity", "type": "reference"},
                        {"name": "action", "type": "token"}, {"name": "outcome", "type": "token"}
                    ]
                });
            }
            json!({
                "type": t.as_str(),
                "interaction": interactions,
                "searchParam": search_params(t.as_str()),
                "searchInclude": includes(t.as_str()),
                "searchRevInclude": ["*"],
                "versioning": "versioned-update",
                "readHistory": true,
                "updateCreate": true,
                "conditionalCreate": true,
                "conditionalRead": "not-supported",
                "conditionalUpdate": true,
                "conditionalDelete": "single",
            })
        })
        .collect();
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": date,
        "publisher": "mamori",
        "kind": "instance",
        "software": {"name": "mamori", "version": software_version},
        "implementation": {"description": "mamori FHIR R4 record server"},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [{
            "mode": "server",
            "security": {
                "cors": false,
                "description": "Every request needs a bearer token (Authorization: Bearer …) issued by `mamori token create`; every access is audited."
            },
            "resource": resources,
            "interaction": [{"code": "transaction"}, {"code": "batch"}, {"code": "history-system"}]
        }]
    })
}

/// The search parameters of a type, from the generated R4 table (those with an expression).
fn search_params(rtype: &str) -> Vec<Value> {
    search_params::params_for(rtype)
        .iter()
        .filter(|d| (!d.expression.is_empty() || d.code == "_id") && d.ptype != ParamType::Special)
        .map(|d| json!({"name": d.code, "definition": d.url, "type": type_code(d.ptype)}))
        .collect()
}

fn includes(rtype: &str) -> Vec<String> {
    search_params::params_for(rtype)
        .iter()
        .filter(|d| d.ptype == ParamType::Reference && !d.expression.is_empty())
        .map(|d| format!("{rtype}:{}", d.code))
        .collect()
}

fn type_code(t: ParamType) -> &'static str {
    match t {
        ParamType::Number => "number",
        ParamType::Date => "date",
        ParamType::String => "string",
        ParamType::Token => "token",
        ParamType::Reference => "reference",
        ParamType::Composite => "composite",
        ParamType::Quantity => "quantity",
        ParamType::Uri => "uri",
        ParamType::Special => "special",
    }
}

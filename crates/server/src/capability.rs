//! The CapabilityStatement (`/fhir/metadata`): states exactly what this server implements.

use mamori_fhir::resource_type::ResourceType;
use serde_json::{Value, json};

pub fn statement(software_version: &str, date: &str) -> Value {
    let interactions = json!([
        {"code": "read"}, {"code": "vread"}, {"code": "update"}, {"code": "patch"}, {"code": "delete"},
        {"code": "history-instance"}, {"code": "history-type"}, {"code": "create"}, {"code": "search-type"}
    ]);
    let search_params = json!([
        {"name": "_id", "type": "token", "documentation": "logical id; comma-separated alternatives"},
        {"name": "identifier", "type": "token",
         "documentation": "the resource's top-level identifier element: [system]|[value], system|, |value or value"}
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
                "versioning": "versioned-update",
                "readHistory": true,
                "updateCreate": true,
                "conditionalCreate": true,
                "conditionalRead": "not-supported",
                "conditionalUpdate": true,
                "conditionalDelete": "single",
                "searchParam": search_params,
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

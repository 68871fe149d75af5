//! `_summary` and `_elements`: the reduced forms of a resource a client may ask for.
//!
//! A subsetted resource keeps `resourceType`, `id` and `meta`, and carries the `SUBSETTED`
//! security tag so no one mistakes it for the whole record (and writes it back as one).

use serde_json::{Map, Value, json};

use crate::generated::SUMMARY_ELEMENTS;

/// How much of each resource to return.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subset {
    /// `_summary=true`: the elements the spec marks as summary.
    Summary,
    /// `_summary=text`: text, id, meta.
    Text,
    /// `_summary=data`: everything but the narrative.
    Data,
    /// `_elements=a,b`: these top-level elements.
    Elements(Vec<String>),
}

impl Subset {
    /// Reads `_summary` and `_elements` from a query; `None` when the whole resource is wanted.
    /// `_summary=count` is the store's business (no resources at all) and yields `None` here.
    pub fn from_query(pairs: &[(String, String)]) -> Result<Option<Subset>, String> {
        let mut out = None;
        for (k, v) in pairs {
            match k.as_str() {
                "_summary" => {
                    out = match v.as_str() {
                        "true" => Some(Subset::Summary),
                        "text" => Some(Subset::Text),
                        "data" => Some(Subset::Data),
                        "false" | "count" => None,
                        _ => return Err("_summary takes true, text, data, count or false".into()),
                    }
                }
                "_elements" => {
                    let names: Vec<String> = v
                        .split(',')
                        .map(str::trim)
                        .filter(|n| !n.is_empty())
                        // `Patient.name` is accepted as `name`.
                        .map(|n| n.rsplit('.').next().unwrap_or(n).to_string())
                        .collect();
                    if names.is_empty() || names.iter().any(|n| !n.bytes().all(|b| b.is_ascii_alphanumeric())) {
                        return Err("_elements takes a comma-separated list of element names".into());
                    }
                    out = Some(Subset::Elements(names));
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// Reduces `resource` in place.
    pub fn apply(&self, resource: &mut Value) {
        let Some(obj) = resource.as_object_mut() else { return };
        let rtype = obj.get("resourceType").and_then(Value::as_str).unwrap_or("").to_string();
        let keep = |key: &str| -> bool {
            if matches!(key, "resourceType" | "id" | "meta") {
                return true;
            }
            let base = element_name(key);
            match self {
                Subset::Summary => summary_of(&rtype).is_some_and(|names| names.binary_search(&base).is_ok()),
                Subset::Text => base == "text",
                Subset::Data => base != "text",
                Subset::Elements(names) => names.iter().any(|n| n == base || n == key),
            }
        };
        let kept: Map<String, Value> = std::mem::take(obj).into_iter().filter(|(k, _)| keep(k)).collect();
        *obj = kept;
        mark_subsetted(obj);
    }
}

/// The element a JSON key belongs to: `_birthDate` → `birthDate`, `valueQuantity` → `value`.
fn element_name(key: &str) -> &str {
    let key = key.strip_prefix('_').unwrap_or(key);
    for (i, c) in key.char_indices().skip(1) {
        if c.is_ascii_uppercase() {
            let prefix = &key[..i];
            if crate::generated::CHOICE_ELEMENTS.binary_search(&prefix).is_ok() {
                return prefix;
            }
        }
    }
    key
}

fn summary_of(rtype: &str) -> Option<&'static [&'static str]> {
    SUMMARY_ELEMENTS.binary_search_by(|(t, _)| t.cmp(&rtype)).ok().map(|i| SUMMARY_ELEMENTS[i].1)
}

fn mark_subsetted(obj: &mut Map<String, Value>) {
    let meta = obj.entry("meta").or_insert_with(|| json!({}));
    let Some(meta) = meta.as_object_mut() else { return };
    let tags = meta.entry("tag").or_insert_with(|| json!([]));
    if let Some(tags) = tags.as_array_mut() {
        tags.push(json!({"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Vec<(String, String)> {
        s.split('&').filter_map(|p| p.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn summary_keeps_summary_elements_and_tags_the_result() {
        let mut p = json!({"resourceType": "Patient", "id": "a", "text": {"div": "x"}, "name": [{"family": "F"}],
            "birthDate": "2000-01-01", "_birthDate": {"extension": []}, "contact": [{"name": {"family": "G"}}],
            "deceasedBoolean": false, "photo": []});
        Subset::Summary.apply(&mut p);
        let keys: Vec<&str> = p.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, vec!["resourceType", "id", "name", "birthDate", "_birthDate", "deceasedBoolean", "meta"]);
        assert_eq!(p["meta"]["tag"][0]["code"], "SUBSETTED");
    }

    #[test]
    fn elements_text_and_data() {
        let base = json!({"resourceType": "Observation", "id": "o", "text": {"div": "x"}, "status": "final",
            "valueQuantity": {"value": 1}, "code": {"text": "c"}});
        let mut e = base.clone();
        Subset::from_query(&q("_elements=status,value")).unwrap().unwrap().apply(&mut e);
        assert!(e.get("status").is_some() && e.get("valueQuantity").is_some() && e.get("code").is_none());
        let mut t = base.clone();
        Subset::Text.apply(&mut t);
        assert!(t.get("text").is_some() && t.get("status").is_none());
        let mut d = base.clone();
        Subset::Data.apply(&mut d);
        assert!(d.get("text").is_none() && d.get("status").is_some());
        assert!(Subset::from_query(&q("_summary=maybe")).is_err());
        assert!(Subset::from_query(&q("_elements=a;b")).is_err());
        assert_eq!(Subset::from_query(&q("_summary=count")).unwrap(), None);
    }
}

//! The Synthea sample: the files, and loading them through the real server as transactions.

use std::collections::HashMap;
use std::path::PathBuf;

use serde_json::Value;

use super::{Server, json, repo_root};

pub fn synthea_files() -> Vec<PathBuf> {
    let dir = repo_root().join("testdata/synthea-r4");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    // Organisations and practitioners first: the patient bundles refer to them.
    files.sort_by_key(|p| {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let first = name.starts_with("hospitalInformation") || name.starts_with("practitionerInformation");
        (!first, name)
    });
    assert_eq!(files.len(), 62, "the 60 patient bundles plus hospital and practitioner bundles");
    files
}

/// Replaces `urn:uuid:` references with the ids the server assigned.
pub fn rewrite_refs(v: &mut Value, ids: &HashMap<String, String>) {
    match v {
        Value::Object(o) => {
            for (k, child) in o.iter_mut() {
                if k == "reference"
                    && let Value::String(s) = child
                    && let Some(new) = ids.get(s.as_str())
                {
                    *s = new.clone();
                }
                rewrite_refs(child, ids);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|c| rewrite_refs(c, ids)),
        _ => {}
    }
}

/// Loads every bundle; returns (expected resource, "Type/id") pairs.
pub async fn load_all(s: &Server) -> Vec<(Value, String)> {
    load(s, synthea_files()).await
}

/// Loads the given bundles in order; returns (expected resource, "Type/id") pairs.
pub async fn load(s: &Server, files: Vec<PathBuf>) -> Vec<(Value, String)> {
    let mut expected = Vec::new();
    for file in files {
        let bundle: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        let resp = s.post_json("", &bundle).send().await.unwrap();
        let (status, body) = json(resp).await;
        assert_eq!(status, 200, "{}: {body}", file.display());
        let entries = bundle["entry"].as_array().unwrap();
        let results = body["entry"].as_array().unwrap();
        assert_eq!(entries.len(), results.len());
        let mut ids = HashMap::new();
        let mut locations = Vec::new();
        for (req, res) in entries.iter().zip(results) {
            assert_eq!(res["response"]["status"], "201 Created");
            let loc = res["response"]["location"].as_str().unwrap();
            let local = loc.split("/_history").next().unwrap().to_string();
            ids.insert(req["fullUrl"].as_str().unwrap().to_string(), local.clone());
            locations.push(local);
        }
        for (req, local) in entries.iter().zip(locations) {
            let mut resource = req["resource"].clone();
            rewrite_refs(&mut resource, &ids);
            expected.push((resource, local));
        }
    }
    expected
}

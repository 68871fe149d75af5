//! INT-1: every example resource of the FHIR R4 specification (npm package
//! `hl7.fhir.r4.examples`, fetched by scripts/fetch-fhir-packages.sh) is created through the
//! server and reads back as sent — except AuditEvent, which is the read-only view of the audit
//! trail (AUD-5), and one example whose id breaks the spec's own length limit.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;
use support::*;

/// The one example whose id breaks the spec's own 64-character limit; it must be refused.
const INVALID_EXAMPLE: &str =
    "SearchParameter-questionnaireresponse-extensions-QuestionnaireResponse-item-subject.json";

fn examples_dir() -> PathBuf {
    let dir = repo_root().join(".cache/fhir-packages/hl7.fhir.r4.examples/package");
    if !dir.exists() {
        let status = std::process::Command::new("bash")
            .arg(repo_root().join("scripts/fetch-fhir-packages.sh"))
            .status()
            .expect("run scripts/fetch-fhir-packages.sh");
        assert!(status.success(), "fetching hl7.fhir.r4.examples failed");
    }
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn int1_every_spec_example_creates_and_reads_back_equal() {
    if std::env::var("MAMORI_SKIP_SPEC_EXAMPLES").is_ok() {
        eprintln!("skipped: MAMORI_SKIP_SPEC_EXAMPLES is set");
        return;
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(examples_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.ends_with(".json") && !name.starts_with('.') && name != "package.json"
        })
        .collect();
    files.sort();
    let s = Arc::new(Server::start());
    let sem = Arc::new(tokio::sync::Semaphore::new(8));
    let mut tasks = tokio::task::JoinSet::new();
    for file in files {
        let (s, sem) = (Arc::clone(&s), Arc::clone(&sem));
        tasks.spawn(async move {
            let value: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
            let Some(rtype) = value["resourceType"].as_str().map(str::to_string) else {
                return 0; // ig-r4.json is package metadata, not a resource
            };
            let _permit = sem.acquire().await.unwrap();
            let name = file.file_name().unwrap().to_string_lossy().into_owned();
            let resp = s.post_json(&rtype, &value).send().await.unwrap();
            if name == INVALID_EXAMPLE {
                expect_outcome(resp, 400, "id").await;
                return 0;
            }
            if rtype == "AuditEvent" {
                // AuditEvent is the read-only view of mamori's own audit trail (AUD-5).
                expect_outcome(resp, 405, "read-only").await;
                return 0;
            }
            let (status, created) = json(resp).await;
            assert_eq!(status, 201, "{name}: {created}");
            let id = created["id"].as_str().unwrap();
            let (status, read) = json(s.get(&format!("{rtype}/{id}")).send().await.unwrap()).await;
            assert_eq!(status, 200, "{name}");
            assert_eq!(strip_server_fields(&read), strip_server_fields(&value), "{name} reads back differently");
            1
        });
    }
    let mut created = 0;
    while let Some(r) = tasks.join_next().await {
        created += r.unwrap();
    }
    assert_eq!(created, 5296, "every example but the one with an over-long id and the 9 AuditEvents");
}

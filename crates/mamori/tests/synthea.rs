//! The Synthea sample (62 transaction Bundles, ~18,000 resources) loads through the real server;
//! every resource reads back as sent; and the raw files of the data directory reveal none of the
//! patients' names or identifiers (ENC-1).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;

use aho_corasick::AhoCorasick;
use serde_json::Value;
use support::synthea::{load_all, synthea_files};
use support::*;

/// Reads every resource back (16 at a time) and compares it with what was sent.
async fn assert_reads_back(s: &Arc<Server>, expected: Vec<(Value, String)>) {
    let sem = Arc::new(tokio::sync::Semaphore::new(16));
    let mut tasks = tokio::task::JoinSet::new();
    for (sent, local) in expected {
        let (s, sem) = (Arc::clone(s), Arc::clone(&sem));
        tasks.spawn(async move {
            let _permit = sem.acquire().await.unwrap();
            let (status, got) = json(s.get(&local).send().await.unwrap()).await;
            assert_eq!(status, 200, "{local}");
            assert_eq!(got["id"].as_str(), local.split('/').nth(1), "{local}");
            assert_eq!(strip_server_fields(&got), strip_server_fields(&sent), "{local} reads back differently");
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn int1_all_synthea_bundles_load_as_transactions_and_read_back_equal() {
    let s = Arc::new(Server::start());
    let expected = load_all(&s).await;
    assert!(expected.len() > 18_000, "{}", expected.len());
    assert_reads_back(&s, expected).await;
}

/// What ENC-1 says must not be readable: every patient's family and given names and identifiers.
fn patient_secrets() -> Vec<String> {
    let mut out = Vec::new();
    for file in synthea_files() {
        let bundle: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        for e in bundle["entry"].as_array().unwrap() {
            let r = &e["resource"];
            if r["resourceType"] != "Patient" {
                continue;
            }
            for name in r["name"].as_array().into_iter().flatten() {
                out.extend(name["family"].as_str().map(str::to_string));
                for g in name["given"].as_array().into_iter().flatten() {
                    out.extend(g.as_str().map(str::to_string));
                }
            }
            for ident in r["identifier"].as_array().into_iter().flatten() {
                out.extend(ident["value"].as_str().map(str::to_string));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The byte string to look for. Values of five bytes or more are searched as they are; shorter
/// names ("Tai") would match random ciphertext by chance (~6 times per 100 MB for three letters),
/// so they are searched between JSON quotes, the form a plaintext body or index value shows.
fn needle(value: &str) -> String {
    if value.len() >= 5 { value.to_string() } else { format!("\"{value}\"") }
}

/// Every file under the data directory except the key files, with what it contains of `secrets`.
fn scan(dir: &std::path::Path, matcher: &AhoCorasick, secrets: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                if p.file_name().unwrap() != "keys" {
                    stack.push(p);
                }
                continue;
            }
            let bytes = std::fs::read(&p).unwrap();
            for m in matcher.find_iter(&bytes) {
                found.push(format!("{} contains {:?}", p.display(), secrets[m.pattern().as_usize()]));
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enc1_raw_files_reveal_no_patient_names_or_identifiers() {
    let secrets = patient_secrets();
    assert!(secrets.len() > 300, "names and identifiers of 60 patients: {}", secrets.len());
    let originals: Vec<String> = secrets.iter().map(|s| needle(s)).collect();
    // The scanner is not blind: every needle is found in the plaintext bundles.
    let plain = AhoCorasick::new(&originals).unwrap();
    let mut seen = vec![false; originals.len()];
    for f in synthea_files() {
        for m in plain.find_overlapping_iter(&std::fs::read(f).unwrap()) {
            seen[m.pattern().as_usize()] = true;
        }
    }
    assert!(seen.iter().all(|s| *s), "scanner must see every secret in the plaintext");
    // Also the lower-case forms a search index would normalise names to.
    let mut secrets: Vec<String> = originals.clone();
    secrets.extend(patient_secrets().iter().map(|s| needle(&s.to_lowercase())));
    secrets.sort();
    secrets.dedup();
    let matcher = AhoCorasick::new(&secrets).unwrap();

    let s = Server::start();
    let loaded = load_all(&s).await;
    assert!(loaded.len() > 18_000);
    // While running: main database file, WAL and shared-memory file.
    let live = scan(&s.dir.path, &matcher, &secrets);
    assert!(live.is_empty(), "ENC-1 violated while running:\n{}", live.join("\n"));
    let dir = s.stop();
    let at_rest = scan(&dir.path, &matcher, &secrets);
    assert!(at_rest.is_empty(), "ENC-1 violated at rest:\n{}", at_rest.join("\n"));
}

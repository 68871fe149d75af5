//! ACL-3 zones by client-certificate issuer, over the real binary with TLS: two client CAs
//! generated here (rcgen) in the configured client-CA bundle; a zone names each CA by the
//! SHA-256 fingerprint of its certificate. A physician's certificate from CA A lands in zone A
//! (the HIS), one from CA B in zone B (the VPN), and no certificate leaves the source address
//! to decide (the internet zone) — seen through what the same bearer token may do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::*;

const ACT: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";

fn ca(cn: &str) -> (Vec<u8>, String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let cert = params.self_signed(&key).unwrap();
    (cert.der().to_vec(), cert.pem(), Issuer::new(params, key))
}

/// A leaf certificate and its key, both PEM.
fn leaf(issuer: &Issuer<'_, KeyPair>, sans: &[&str], cn: &str, eku: ExtendedKeyUsagePurpose) -> (String, String) {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::new(sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![eku];
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn client(server_ca: &str, identity: Option<&(String, String)>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(server_ca.as_bytes()).unwrap()])
        .timeout(std::time::Duration::from_secs(60));
    if let Some((cert, key)) = identity {
        b = b.identity(reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).unwrap());
    }
    b.build().unwrap()
}

async fn call(c: &reqwest::Client, m: reqwest::Method, url: String, token: &str, body: Option<&Value>) -> (u16, Value) {
    let mut r = c.request(m, url).bearer_auth(token);
    if let Some(b) = body {
        r = r.header("content-type", "application/fhir+json").body(serde_json::to_vec(b).unwrap());
    }
    json(r.send().await.unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl3_zone_by_client_certificate_issuer() {
    let dir = DataDir::init();
    // The server's own certificate, from a test CA the clients trust.
    let (_, server_ca_pem, server_issuer) = ca("mamori test server CA");
    let (server_cert, server_key) =
        leaf(&server_issuer, &["localhost", "127.0.0.1"], "localhost", ExtendedKeyUsagePurpose::ServerAuth);
    std::fs::write(dir.path.join("tls/cert.pem"), server_cert).unwrap();
    std::fs::remove_file(dir.path.join("tls/key.pem")).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(dir.path.join("tls/key.pem"), server_key).unwrap();
        std::fs::set_permissions(dir.path.join("tls/key.pem"), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    // Two client CAs in one bundle.
    let (a_der, a_pem, a_issuer) = ca("clinic devices CA");
    let (b_der, b_pem, b_issuer) = ca("remote access CA");
    std::fs::write(dir.path.join("tls/client-ca.pem"), format!("{a_pem}{b_pem}")).unwrap();
    let cert_a = leaf(&a_issuer, &[], "ward-pc-1", ExtendedKeyUsagePurpose::ClientAuth);
    let cert_b = leaf(&b_issuer, &[], "laptop-7", ExtendedKeyUsagePurpose::ClientAuth);
    let (fp_a, fp_b) = (hex(&Sha256::digest(&a_der)), hex(&Sha256::digest(&b_der)));
    let cfg = std::fs::read_to_string(dir.path.join("mamori.toml")).unwrap();
    let cfg = cfg.replace("# client_ca = \"tls/client-ca.pem\"", "client_ca = \"tls/client-ca.pem\"");
    let policy = format!(
        "\n[[policy.zone]]\nname = \"his\"\nclient_certificate = true\nclient_issuers = [\"{fp_a}\"]\n\
         [[policy.zone]]\nname = \"vpn\"\nclient_certificate = true\nclient_issuers = [\"{fp_b}\"]\n\
         [[policy.zone]]\nname = \"internet\"\naddresses = [\"127.0.0.0/8\", \"::1/128\"]\n"
    );
    std::fs::write(dir.path.join("mamori.toml"), format!("{cfg}{policy}")).unwrap();
    let token = dir.user_with_token("dr.cert", "physician");
    let (s, _) = Server::start_with(dir, token.clone(), &[], 1);
    assert!(s.base.starts_with("https://"), "{}", s.base);
    let url = |p: &str| format!("{}/{p}", s.base);
    let (in_a, in_b, none) =
        (client(&server_ca_pem, Some(&cert_a)), client(&server_ca_pem, Some(&cert_b)), client(&server_ca_pem, None));
    use reqwest::Method as M;

    // From CA A (the HIS): full clinical rights.
    let (st, p) = call(&in_a, M::POST, url("Patient"), &token, Some(&json!({"resourceType": "Patient"}))).await;
    assert_eq!(st, 201, "{p}");
    let pid = p["id"].as_str().unwrap();
    let psy = json!({"resourceType": "Condition", "meta": {"security": [{"system": ACT, "code": "PSY"}]},
        "code": {"text": "episode"}, "subject": {"reference": format!("Patient/{pid}")}});
    let (st, c) = call(&in_a, M::POST, url("Condition"), &token, Some(&psy)).await;
    assert_eq!(st, 201, "{c}");
    let psy_path = format!("Condition/{}", c["id"].as_str().unwrap());
    let obs = json!({"resourceType": "Observation", "status": "final", "code": {"text": "pulse"},
        "subject": {"reference": format!("Patient/{pid}")}});
    let mut obs_ids = Vec::new();
    for _ in 0..2 {
        let (st, o) = call(&in_a, M::POST, url("Observation"), &token, Some(&obs)).await;
        assert_eq!(st, 201, "{o}");
        obs_ids.push(o["id"].as_str().unwrap().to_string());
    }
    assert_eq!(call(&in_a, M::GET, url(&psy_path), &token, None).await.0, 200);
    assert_eq!(call(&in_a, M::DELETE, url(&format!("Observation/{}", obs_ids[0])), &token, None).await.0, 204);

    // From CA B (the VPN): psychiatric data visible, but no deletion.
    assert_eq!(call(&in_b, M::GET, url(&psy_path), &token, None).await.0, 200);
    assert_eq!(call(&in_b, M::DELETE, url(&format!("Observation/{}", obs_ids[1])), &token, None).await.0, 403);

    // No certificate: the source address decides (loopback is the internet zone here).
    assert_eq!(call(&none, M::GET, url(&psy_path), &token, None).await.0, 404);
    assert_eq!(call(&none, M::GET, url(&format!("Patient/{pid}")), &token, None).await.0, 200);
}

#[test]
fn acl3_issuer_zones_are_validated_at_start_up() {
    let dir = DataDir::init();
    let cfg_path = dir.path.join("mamori.toml");
    let base = std::fs::read_to_string(&cfg_path).unwrap();
    let (_, a_pem, _) = ca("clinic devices CA");
    std::fs::write(dir.path.join("tls/client-ca.pem"), a_pem).unwrap();
    let with_ca = base.replace("# client_ca = \"tls/client-ca.pem\"", "client_ca = \"tls/client-ca.pem\"");
    let unknown = "ab".repeat(32);
    for (cfg, extra, needle) in [
        (&with_ca, format!("[[policy.zone]]\nname = \"his\"\nclient_certificate = true\nclient_issuers = [\"{unknown}\"]\n[[policy.zone]]\nname = \"vpn\"\n[[policy.zone]]\nname = \"internet\"\n"), "no CA certificate in tls.client_ca"),
        (&base, format!("[[policy.zone]]\nname = \"his\"\nclient_certificate = true\nclient_issuers = [\"{unknown}\"]\n[[policy.zone]]\nname = \"vpn\"\n[[policy.zone]]\nname = \"internet\"\n"), "tls.client_ca is not set"),
        (&with_ca, "[[policy.zone]]\nname = \"his\"\nclient_certificate = true\nclient_issuers = [\"12:34\"]\n[[policy.zone]]\nname = \"vpn\"\n[[policy.zone]]\nname = \"internet\"\n".to_string(), "SHA-256 fingerprint"),
        (&with_ca, format!("[[policy.zone]]\nname = \"his\"\nclient_issuers = [\"{unknown}\"]\n[[policy.zone]]\nname = \"vpn\"\n[[policy.zone]]\nname = \"internet\"\n"), "needs client_certificate = true"),
        (&base, "[[policy.zone]]\nname = \"his\"\nlisteners = [\"10.9.9.9:443\"]\n[[policy.zone]]\nname = \"vpn\"\n[[policy.zone]]\nname = \"internet\"\n".to_string(), "not in server.listen"),
    ] {
        std::fs::write(&cfg_path, format!("{cfg}\n{extra}")).unwrap();
        let (code, _, err) = mamori(&["serve", "--data-dir", dir.arg(), "--listen", "127.0.0.1:0"]);
        assert_ne!(code, 0, "{extra}");
        assert!(err.contains(needle), "{extra}: {err}");
    }
}

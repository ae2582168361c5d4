//! CRLs: life events revoke with their reasons, the full CRL and the
//! municipalities' partitions list them, and kihon4 reads them as a stream.

use std::process::Command;

use der::Decode;
use serde_json::{Value, json};

use crate::helpers::{TestSim, openssl, osaka, problem, spawn, taro};

async fn crl_der(sim: &TestSim, path: &str, etag: Option<&str>) -> reqwest::Response {
    let mut req = sim
        .http
        .get(format!("{}{path}", sim.base))
        .bearer_auth("any-key");
    if let Some(tag) = etag {
        req = req.header("if-none-match", tag);
    }
    req.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn life_events_revoke_with_their_reasons_and_crls_list_them() {
    let dir = tempfile::tempdir().unwrap();
    let sim = spawn(dir.path(), None).await;
    let first = crl_der(&sim, "/v1/crl", None).await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["content-type"], "application/pkix-crl");
    let first_etag = first.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(
        crl_der(&sim, "/v1/crl", Some(&first_etag)).await.status(),
        304
    );

    let mover: Value = sim
        .post("/sim/persons", &taro())
        .await
        .json()
        .await
        .unwrap();
    let loser: Value = sim
        .post("/sim/persons", &osaka())
        .await
        .json()
        .await
        .unwrap();
    let (mover_id, loser_id) = (
        mover["person_id"].as_str().unwrap(),
        loser["person_id"].as_str().unwrap(),
    );

    let moved = sim
        .post(
            &format!("/sim/persons/{mover_id}/events"),
            &json!({"kind": "move", "basic4": {"address": "大阪府大阪市中央区大手前1-1"}}),
        )
        .await;
    assert_eq!(moved.status(), 200);
    let moved: Value = moved.json().await.unwrap();
    assert_eq!(moved["revoked_serial"], mover["cert_serial"]);
    assert_eq!(moved["reason"], 3);
    assert_ne!(moved["cert_serial"], mover["cert_serial"]);
    let new_pem = moved["certificate_pem"].as_str().unwrap();
    let new_cert = kihon4_core::jpki::parse_signing_certificate(
        der::Document::from_pem(new_pem).unwrap().1.as_bytes(),
    )
    .unwrap();
    assert_eq!(
        new_cert.basic4.address.as_str(),
        "大阪府大阪市中央区大手前1-1"
    );
    assert_eq!(new_cert.basic4.name.as_str(), "山田 太郎");
    assert_eq!(new_cert.crl_partition.unwrap().city, "大阪市");

    let lost: Value = sim
        .post(
            &format!("/sim/persons/{loser_id}/events"),
            &json!({"kind": "card_lost"}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(lost["reason"], 6);
    assert_eq!(lost["cert_serial"], Value::Null);
    problem(
        sim.post(
            &format!("/sim/persons/{loser_id}/sign"),
            &json!({"content_b64": "aGk="}),
        )
        .await,
        409,
        "no-valid-certificate",
    )
    .await;
    let renewed: Value = sim
        .post(
            &format!("/sim/persons/{mover_id}/events"),
            &json!({"kind": "renew"}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(renewed["reason"], 4);
    let died: Value = sim
        .post(
            &format!("/sim/persons/{mover_id}/events"),
            &json!({"kind": "death"}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(died["reason"], 5);
    assert_eq!(died["revoked_serial"], renewed["cert_serial"]);
    let dead: Value = sim
        .get(&format!("/sim/persons/{mover_id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(dead["status"], "deceased");
    problem(
        sim.post(
            &format!("/sim/persons/{mover_id}/events"),
            &json!({"kind": "renew"}),
        )
        .await,
        409,
        "no-valid-certificate",
    )
    .await;

    // Not listed until the next publication.
    assert_eq!(
        crl_der(&sim, "/v1/crl", Some(&first_etag)).await.status(),
        304
    );
    let published: Value = sim
        .post("/sim/crl/publish", &json!({}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(published["entries"], 4);
    let res = crl_der(&sim, "/v1/crl", Some(&first_etag)).await;
    assert_eq!(res.status(), 200);
    let etag = res.headers()["etag"].to_str().unwrap().to_owned();
    assert_ne!(etag, first_etag);
    std::fs::write(dir.path().join("full.crl"), res.bytes().await.unwrap()).unwrap();
    assert_eq!(crl_der(&sim, "/v1/crl", Some(&etag)).await.status(), 304);

    sim.ca_pem(dir.path()).await;
    let text = openssl(
        dir.path(),
        &[
            "crl", "-inform", "DER", "-in", "full.crl", "-CAfile", "ca.pem", "-noout", "-text",
        ],
    );
    let upper = |v: &Value| v.as_str().unwrap().to_ascii_uppercase();
    for (serial, reason) in [
        (upper(&mover["cert_serial"]), "Affiliation Changed"),
        (upper(&loser["cert_serial"]), "Certificate Hold"),
        (upper(&moved["cert_serial"]), "Superseded"),
        (upper(&renewed["cert_serial"]), "Cessation Of Operation"),
    ] {
        let at = text
            .find(&serial)
            .unwrap_or_else(|| panic!("{serial} not listed:\n{text}"));
        assert!(
            text[at..].lines().take(5).any(|l| l.contains(reason)),
            "{serial} should be {reason}:\n{text}"
        );
    }
    let verify = Command::new("openssl")
        .current_dir(dir.path())
        .args([
            "crl", "-inform", "DER", "-in", "full.crl", "-CAfile", "ca.pem", "-noout",
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&verify.stderr).contains("verify OK"),
        "{verify:?}"
    );

    // Partitions: one per municipality, each with its distribution point.
    let partitions: Value = crl_der(&sim, "/v1/crls", None).await.json().await.unwrap();
    let items = partitions["items"].as_array().unwrap();
    let tokyo = items
        .iter()
        .find(|p| {
            p["distribution_point"]
                .as_str()
                .unwrap()
                .contains("CN=千代田区")
        })
        .expect("Tokyo partition");
    let res = crl_der(
        &sim,
        &format!("/v1/crls/{}", tokyo["id"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(res.headers()["etag"].to_str().unwrap(), tokyo["etag"]);
    std::fs::write(dir.path().join("tokyo.crl"), res.bytes().await.unwrap()).unwrap();
    let text = openssl(
        dir.path(),
        &[
            "crl",
            "-inform",
            "DER",
            "-in",
            "tokyo.crl",
            "-CAfile",
            "ca.pem",
            "-noout",
            "-text",
        ],
    );
    assert!(text.contains(&upper(&mover["cert_serial"])));
    assert!(
        !text.contains(&upper(&loser["cert_serial"])),
        "Osaka's card is not in Tokyo's CRL"
    );
    assert!(
        text.contains("Issuing Distribution Point: critical"),
        "{text}"
    );
    problem(crl_der(&sim, "/v1/crls/0000", None).await, 404, "not-found").await;
    sim.handle.stop(true).await;

    // A restart keeps the revocations and moves the CRL number on.
    let sim = spawn(dir.path(), None).await;
    let res = crl_der(&sim, "/v1/crl", None).await;
    std::fs::write(dir.path().join("again.crl"), res.bytes().await.unwrap()).unwrap();
    let text = openssl(
        dir.path(),
        &[
            "crl",
            "-inform",
            "DER",
            "-in",
            "again.crl",
            "-noout",
            "-text",
        ],
    );
    assert_eq!(text.matches("Serial Number:").count(), 4, "{text}");
    assert!(
        text.contains("X509v3 CRL Number: \n                3"),
        "{text}"
    );
    sim.handle.stop(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kihon4_reads_the_simulators_crl_as_a_stream() {
    use kihon4_core::jpki::crl::{CrlIssuer, SerialSet, check_crl};
    let dir = tempfile::tempdir().unwrap();
    let sim = spawn(dir.path(), None).await;
    let a: Value = sim
        .post("/sim/persons", &taro())
        .await
        .json()
        .await
        .unwrap();
    let b: Value = sim
        .post("/sim/persons", &osaka())
        .await
        .json()
        .await
        .unwrap();
    sim.post("/sim/persons/bulk", &json!({"count": 500, "seed": 3}))
        .await;
    for (p, kind) in [(&a, "death"), (&b, "card_lost")] {
        let id = p["person_id"].as_str().unwrap();
        assert_eq!(
            sim.post(&format!("/sim/persons/{id}/events"), &json!({"kind": kind}))
                .await
                .status(),
            200
        );
    }
    sim.post("/sim/events/bulk", &json!({"seed": 4, "deaths": 100}))
        .await;
    sim.post("/sim/crl/publish", &json!({})).await;
    let crl = crl_der(&sim, "/v1/crl", None).await.bytes().await.unwrap();
    let ca_der = sim.get("/v1/ca").await.bytes().await.unwrap();
    let ca = x509_cert::Certificate::from_der(&ca_der).unwrap();
    let serial = |p: &Value| {
        kihon4_core::domain::CertSerial::parse(p["cert_serial"].as_str().unwrap()).unwrap()
    };
    let wanted: SerialSet = [serial(&a), serial(&b)].iter().collect();
    let (summary, found) = check_crl(
        crl.as_ref(),
        &CrlIssuer::from_certificate(&ca).unwrap(),
        &wanted,
        chrono::Utc::now(),
    )
    .unwrap();
    assert_eq!(summary.entries, 102);
    let mut reasons: Vec<Option<u8>> = found.iter().map(|r| r.reason).collect();
    reasons.sort();
    assert_eq!(reasons, [Some(5), Some(6)]);
    sim.handle.stop(true).await;
}

//! Two worker processes and one API on one PostgreSQL, the workers killed at
//! random moments while they apply J-LIS's answers: every change is applied
//! exactly once, with one history row and one notice each, and the audit
//! chain verifies.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use actix_web::web;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use kihon4_core::auth::Role;
use rand::Rng;
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Value, json};

use crate::database::{Backend, fresh_database};
use crate::process::{Running, SECRET, kihon4, token};

const CUSTOMERS: usize = 120;
const KILLS: usize = 8;

async fn scalar(db: &sea_orm::DatabaseConnection, sql: &str) -> i64 {
    db.query_one_raw(Statement::from_string(
        db.get_database_backend(),
        sql.to_owned(),
    ))
    .await
    .unwrap()
    .unwrap()
    .try_get_by_index(0)
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_killed_while_applying_changes_apply_each_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let url = fresh_database(Backend::Postgres, d).await;

    // The provider: the simulator, in this test's process.
    let sim = web::Data::new(
        kihon4_sim::Simulator::open(kihon4_sim::SimSettings {
            data_dir: d.join("sim"),
            api_key: None,
            sim_routes_public: false,
        })
        .await
        .unwrap(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let sim_base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(kihon4_sim::server(sim.clone(), listener).unwrap());

    let envs = vec![
        ("KIHON4_DATABASE_URL", url.clone()),
        ("KIHON4_JWT_SECRET", SECRET.to_owned()),
        ("KIHON4_PROVIDER_URL", format!("{sim_base}/")),
        ("KIHON4_PROVIDER_API_KEY", "e2e-provider-key".to_owned()),
        (
            "KIHON4_TRUST_ANCHORS",
            d.join("sim/ca.pem").to_str().unwrap().to_owned(),
        ),
        // A killed worker's jobs are taken over after 3 s.
        ("KIHON4_SYNC_LEASE_SECONDS", "3".to_owned()),
    ];
    let out = kihon4(d, &envs).arg("migrate").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let api = Running::start(d, "api", &envs).await;
    let mut workers = vec![
        Running::start(d, "worker", &envs).await,
        Running::start(d, "worker", &envs).await,
    ];
    let db = kihon4_core::db::connect(&url, 2).await.unwrap();

    // Customers who consented with their cards.
    let http = reqwest::Client::new();
    let operator = token(&[Role::Operator]);
    let texts: Value = http
        .get(format!("{}/v1/consent-texts", api.base))
        .bearer_auth(&operator)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let text = texts["items"][0]["text"].as_str().unwrap().to_owned();
    let mut people = Vec::new();
    for i in 0..CUSTOMERS {
        let person: Value = http
            .post(format!("{sim_base}/sim/persons"))
            .json(&json!({"basic4": {"name": "松本十郎", "address": format!("埼玉県さいたま市浦和区高砂{}-1", i + 1), "birth_date": "1970-01-01", "gender": "1"}}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let person_id = person["person_id"].as_str().unwrap().to_owned();
        let signed: Value = http
            .post(format!("{sim_base}/sim/persons/{person_id}/sign"))
            .json(&json!({"content_b64": B64.encode(text.as_bytes())}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let customer: Value = http
            .post(format!("{}/v1/customers", api.base))
            .bearer_auth(&operator)
            .json(&json!({"external_ref": format!("K-{i}"), "email": format!("k{i}@example.jp")}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let res = http
            .post(format!(
                "{}/v1/customers/{}/consents",
                api.base,
                customer["id"].as_str().unwrap()
            ))
            .bearer_auth(&operator)
            .json(&json!({
                "text_version": texts["items"][0]["version"],
                "channel": "online_signature",
                "signed_document_b64": signed["cms_der_b64"],
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        people.push(person_id);
    }
    // The workers register every consent with the provider.
    let deadline = Instant::now() + Duration::from_secs(120);
    while scalar(
        &db,
        "SELECT COUNT(*) FROM provider_registrations WHERE status = 'done'",
    )
    .await
        < CUSTOMERS as i64
    {
        assert!(Instant::now() < deadline, "consents not registered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Everyone moves.
    for (i, person) in people.iter().enumerate() {
        let res = http
            .post(format!("{sim_base}/sim/persons/{person}/events"))
            .json(&json!({"kind": "move", "basic4": {"address": format!("千葉県千葉市中央区市場町{}-1", i + 1)}}))
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success());
    }
    let run: Value = http
        .post(format!("{}/v1/sync/runs", api.base))
        .bearer_auth(&operator)
        .json(&json!({"scope": "all"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let run_id = run["id"].as_str().unwrap().to_owned();

    // Killed at random moments, and started again.
    for kill in 0..KILLS {
        let pause = rand::thread_rng().gen_range(50..400);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let which = kill % workers.len();
        workers[which].signal("KILL");
        workers[which].wait(Duration::from_secs(10)).await;
        workers[which] = Running::start(d, "worker", &envs).await;
    }
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        let now: Value = http
            .get(format!("{}/v1/sync/runs/{run_id}", api.base))
            .bearer_auth(&operator)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if now["status"] == "completed" {
            break now;
        }
        assert!(
            Instant::now() < deadline,
            "the run did not complete: {now}\n{}",
            workers[0].log_text()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(status["counts"]["changed"], CUSTOMERS, "{status}");
    assert_eq!(
        scalar(
            &db,
            "SELECT COUNT(*) FROM basic4_history WHERE source = 'sync'"
        )
        .await,
        CUSTOMERS as i64,
        "one history row per change"
    );
    assert_eq!(
        scalar(
            &db,
            "SELECT COUNT(*) FROM (SELECT customer_id FROM basic4_history WHERE source = 'sync' \
             GROUP BY customer_id HAVING COUNT(*) > 1) twice"
        )
        .await,
        0
    );
    assert_eq!(
        scalar(
            &db,
            "SELECT COUNT(*) FROM outbox WHERE kind = 'basic4_changed'"
        )
        .await,
        CUSTOMERS as i64,
        "one notice per change"
    );
    assert_eq!(
        scalar(&db, "SELECT COUNT(*) FROM audit_events WHERE action = 'customer.updated' AND actor = 'worker'").await,
        CUSTOMERS as i64
    );
    kihon4_core::audit::verify_chain(&db)
        .await
        .unwrap()
        .expect("the audit chain verifies");
    for w in &workers {
        w.signal("TERM");
    }
}

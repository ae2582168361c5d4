//! Two worker processes and one API on one PostgreSQL, 10,000 changes, the
//! workers killed at 20 random moments (or more, until some came while
//! registrations were in flight) while they detect, register consents with
//! the provider, apply J-LIS's answers and send the notices: every change is
//! applied exactly once, with one history row, one audit event and one
//! notice each, no consent is taken for withdrawn, and the audit chain
//! verifies.

use std::collections::HashMap;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use actix_web::web;
use kihon4_core::auth::Role;
use kihon4_test_support::smtp_sink::SmtpSink;
use kihon4_test_support::{Backend, fresh_database};
use rand::Rng;
use serde_json::{Value, json};

use crate::process::{Running, SECRET, kihon4, scalar, token};

const MOVES: usize = 6_000;
const RENAMES: usize = 4_000;
const CHANGES: usize = MOVES + RENAMES;
const KILLS: usize = 20;
/// Of the consenting customers, those whose consent kihon4 has yet to
/// register with the provider when the run starts.
const UNREGISTERED: usize = 1_000;

/// Runs not yet completed, sync jobs not yet done, and notices not yet sent.
async fn work_left(db: &sea_orm::DatabaseConnection) -> i64 {
    scalar(
        db,
        "SELECT COUNT(*) FROM sync_runs WHERE status <> 'completed'",
    )
    .await
        + scalar(
            db,
            "SELECT COUNT(*) FROM sync_jobs WHERE status = 'pending'",
        )
        .await
        + scalar(db, "SELECT COUNT(*) FROM outbox WHERE status <> 'sent'").await
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
    let sink = SmtpSink::start(&d.join("mail"), None);

    let envs = vec![
        ("KIHON4_DATABASE_URL", url.clone()),
        ("KIHON4_JWT_SECRET", SECRET.to_owned()),
        ("KIHON4_PROVIDER_URL", format!("{sim_base}/")),
        ("KIHON4_PROVIDER_API_KEY", "e2e-provider-key".to_owned()),
        (
            "KIHON4_TRUST_ANCHORS",
            d.join("sim/ca.pem").to_str().unwrap().to_owned(),
        ),
        // A killed worker's jobs and runs are taken over after 3 s.
        ("KIHON4_SYNC_LEASE_SECONDS", "3".to_owned()),
        ("KIHON4_SMTP_URL", sink.url()),
        ("KIHON4_SMTP_TIMEOUT_SECONDS", "1".to_owned()),
    ];
    let out = kihon4(d, &envs).arg("migrate").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let db = kihon4_core::db::connect(&url, 2).await.unwrap();

    // 10,000 residents, each a customer whose consent is registered.
    let http = reqwest::Client::new();
    let res = http
        .post(format!("{sim_base}/sim/persons/bulk"))
        .json(&json!({"count": CHANGES, "seed": 61}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let customers = kihon4_test_support::seed::consenting_customers(&db, &sim_base, |_| {}).await;
    assert_eq!(customers as usize, CHANGES);
    // Some consents are not registered yet: their requests wait for the
    // workers, and the provider holds nothing for them.
    let in_flight = not_yet_registered(&db, &http, &sim_base, UNREGISTERED).await;

    // Every one of them moves or changes name; J-LIS publishes the CRL.
    let res = http
        .post(format!("{sim_base}/sim/events/bulk"))
        .json(&json!({"seed": 62, "moves": MOVES, "renames": RENAMES}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = http
        .post(format!("{sim_base}/sim/crl/publish"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());

    let api = Running::start(d, "api", &envs).await;
    let mut workers = vec![
        Running::start(d, "worker", &envs).await,
        Running::start(d, "worker", &envs).await,
    ];
    let operator = token(&[Role::Operator]);
    let run: Value = http
        .post(format!("{}/v1/sync/runs", api.base))
        .bearer_auth(&operator)
        .json(&json!({"scope": "revoked"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(run["status"], "queued", "{run}");
    let run_id = run["id"].as_str().unwrap().to_owned();

    // Each registration takes a while, so that a round of them is in
    // flight for seconds (a worker carries out up to 500 every 10 s).
    sim.set_faults(kihon4_sim::faults::Faults {
        latency_ms: 10,
        ..Default::default()
    });
    // Killed at random moments, each while work remains, and started again;
    // at least KILLS times, and until some kills came while registrations
    // were claimed by a worker.
    let mut during_registrations = 0;
    let mut kill = 0;
    while kill < KILLS || during_registrations < 2 {
        assert!(
            kill < 200,
            "no kill came while registrations were in flight"
        );
        let pause = rand::thread_rng().gen_range(100..700);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        assert!(
            work_left(&db).await > 0,
            "kill {kill} came after all the work was done: it tests nothing"
        );
        let which = rand::thread_rng().gen_range(0..workers.len());
        if registrations_claimed(&db).await > 0 {
            during_registrations += 1;
        }
        workers[which].signal("KILL");
        workers[which].wait(Duration::from_secs(10)).await;
        workers[which] = Running::start(d, "worker", &envs).await;
        kill += 1;
    }
    sim.set_faults(kihon4_sim::faults::Faults::default());
    let deadline = Instant::now() + Duration::from_secs(600);
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
        if now["status"] == "completed" && work_left(&db).await == 0 {
            break now;
        }
        assert!(
            Instant::now() < deadline,
            "not done: {now}\n{}",
            workers[0].log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(status["counts"]["changed"], CHANGES, "{status}");
    assert_eq!(status["jobs"], CHANGES, "{status}");
    assert_eq!(
        scalar(
            &db,
            "SELECT COUNT(*) FROM basic4_history WHERE source = 'sync'"
        )
        .await,
        CHANGES as i64,
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
            "SELECT COUNT(DISTINCT customer_id) FROM outbox WHERE kind = 'basic4_changed'"
        )
        .await,
        CHANGES as i64,
        "one notice per change"
    );
    assert_eq!(
        scalar(&db, "SELECT COUNT(*) FROM outbox").await,
        CHANGES as i64
    );
    assert_eq!(
        scalar(&db, "SELECT COUNT(*) FROM audit_events WHERE action = 'customer.updated' AND actor = 'worker'").await,
        CHANGES as i64
    );
    // The customers hold the certificates J-LIS issued with the change.
    assert_eq!(
        scalar(
            &db,
            "SELECT COUNT(*) FROM customers c JOIN sync_jobs j ON j.customer_id = c.id \
             WHERE c.jpki_cert_serial = j.cert_serial"
        )
        .await,
        0
    );
    // The consents registered during the kills were registered, never
    // taken for withdrawn, and their changes waited for it.
    let ids = in_flight
        .iter()
        .map(|id| format!("'{id}'"))
        .collect::<Vec<_>>()
        .join(", ");
    assert_eq!(
        scalar(
            &db,
            &format!("SELECT COUNT(*) FROM provider_registrations WHERE id IN ({ids}) AND status = 'done'")
        )
        .await,
        UNREGISTERED as i64,
        "every registration in flight was carried out"
    );
    assert_eq!(
        scalar(
            &db,
            "SELECT COUNT(*) FROM consent_events WHERE kind <> 'granted'"
        )
        .await,
        0,
        "no consent withdrawn"
    );
    assert_eq!(
        scalar(
            &db,
            "SELECT COUNT(*) FROM sync_jobs WHERE outcome <> 'changed' OR status <> 'done'"
        )
        .await,
        0
    );
    assert!(
        scalar(
            &db,
            "SELECT COUNT(*) FROM audit_events WHERE action = 'consent.withdrawn'"
        )
        .await
            == 0
    );
    kihon4_core::audit::verify_chain(&db)
        .await
        .unwrap()
        .expect("the audit chain verifies");

    // Every notice reached the mail server; a kill between the server's
    // acceptance and its record can repeat one, at most one per kill, and
    // so can a final dot the server did not answer in time, which the
    // worker's log says.
    let messages = sink.wait_for(CHANGES, Duration::from_secs(30)).await;
    let unanswered_dots: usize = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("worker-") && n.ends_with(".log"))
        })
        .map(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .matches("did not answer the final dot in time")
                .count()
        })
        .sum();
    let mut by_id: HashMap<String, usize> = HashMap::new();
    for m in &messages {
        *by_id
            .entry(m["message_id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(by_id.len(), CHANGES, "every notice arrived");
    assert!(
        messages.len() - CHANGES <= kill + unanswered_dots,
        "{} repeats after {kill} kills and {unanswered_dots} unanswered final dots",
        messages.len() - CHANGES
    );
    for w in &workers {
        w.signal("TERM");
    }
}

/// Registrations a worker holds a lease on now.
async fn registrations_claimed(db: &sea_orm::DatabaseConnection) -> i64 {
    scalar(
        db,
        "SELECT COUNT(*) FROM provider_registrations WHERE status = 'pending' AND lease_owner IS NOT NULL",
    )
    .await
}

/// Takes `n` consents back from the provider and writes their registration
/// requests, as recording them would have: the workers are yet to carry
/// them out. Returns the requests' ids.
async fn not_yet_registered(
    db: &sea_orm::DatabaseConnection,
    http: &reqwest::Client,
    sim_base: &str,
    n: usize,
) -> Vec<uuid::Uuid> {
    use kihon4_core::entities::{consents, provider_registrations as regs};
    use sea_orm::{ActiveValue::Set, EntityTrait, QueryOrder, QuerySelect};
    let picked = consents::Entity::find()
        .order_by_asc(consents::Column::Id)
        .limit(n as u64)
        .all(db)
        .await
        .unwrap();
    assert_eq!(picked.len(), n);
    let at = chrono::Utc::now();
    let mut rows = Vec::with_capacity(n);
    for consent in &picked {
        let res = http
            .delete(format!(
                "{sim_base}/v1/basic4/subscriptions/{}",
                consent.cert_serial
            ))
            .bearer_auth("e2e-provider-key")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204);
        rows.push(regs::ActiveModel {
            id: Set(uuid::Uuid::now_v7()),
            consent_id: Set(consent.id),
            cert_serial: Set(consent.cert_serial.clone()),
            action: Set("subscribe".into()),
            status: Set("pending".into()),
            attempts: Set(0),
            run_at: Set(at),
            lease_owner: Set(None),
            lease_expires_at: Set(None),
            last_error: Set(None),
            created_at: Set(at),
            completed_at: Set(None),
            refusal: Set(None),
        });
    }
    let ids = rows.iter().map(|r| r.id.clone().unwrap()).collect();
    for chunk in rows.chunks(500) {
        regs::Entity::insert_many(chunk.to_vec())
            .exec_without_returning(db)
            .await
            .unwrap();
    }
    ids
}

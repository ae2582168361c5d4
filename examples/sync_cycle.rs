//! The daily sync cycle at scale, and the apply step by itself, on the
//! database at DATABASE_URL with the simulator in this process.
//!
//!   sync_cycle DATABASE_URL CUSTOMERS CHANGES LATENCY_MS TASKS APPLY_CHANGES
//!
//! 1. Set-up (not timed as part of the cycle): CUSTOMERS residents in the
//!    simulator, a consenting customer for each in kihon4 (written directly,
//!    see test-support/src/seed.rs), CHANGES of them moving or changing name,
//!    and a new CRL.
//! 2. The cycle, with LATENCY_MS on every provider call: detection (the CRL
//!    fetched, verified and walked against every consenting customer's
//!    serial; one job per hit), then TASKS workers asking J-LIS and applying
//!    each answer with its history, audit event and notice, until the last
//!    notice is queued.
//! 3. Apply by itself: APPLY_CHANGES more changes, detected and asked about
//!    beforehand with no latency; then only their application is timed, by
//!    TASKS workers, a batch of 100 answers per transaction.
//!
//! Prints one JSON object per line: each phase, and the sizes the pgbench
//! reference in bench/sync/run needs to write rows as large as kihon4's.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::web;
use kihon4_core::audit::{Actor, AuditContext};
use kihon4_core::domain::CertSerial;
use kihon4_core::jpki::verify::TrustAnchors;
use kihon4_core::notices::{Institution, Notices, Sender};
use kihon4_core::provider::{HttpProvider, Provider, ProviderSettings};
use kihon4_core::sync::{self, Scope, SyncSettings};
use kihon4_migrations::{Migrator, MigratorTrait};
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use serde_json::{Value, json};

async fn sim_post(http: &reqwest::Client, url: String, body: Value) -> anyhow::Result<Value> {
    Ok(http
        .post(url)
        .json(&body)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

async fn sim_put(http: &reqwest::Client, url: String, body: Value) -> anyhow::Result<()> {
    http.put(url).json(&body).send().await?.error_for_status()?;
    Ok(())
}

async fn scalar(db: &DatabaseConnection, sql: &str) -> anyhow::Result<f64> {
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            sql.to_owned(),
        ))
        .await?
        .ok_or_else(|| anyhow::anyhow!("no row"))?;
    Ok(row
        .try_get_by_index::<Option<f64>>(0)
        .ok()
        .flatten()
        .or_else(|| {
            row.try_get_by_index::<Option<i64>>(0)
                .ok()
                .flatten()
                .map(|v| v as f64)
        })
        .unwrap_or(0.0))
}

fn report(phase: &str, seconds: f64, detail: Value) {
    let mut line = json!({"phase": phase, "seconds": (seconds * 1000.0).round() / 1000.0});
    if let (Value::Object(line), Value::Object(detail)) = (&mut line, detail) {
        line.extend(detail);
    }
    println!("{line}");
}

/// Life events for `changes` residents (three moves to two renames) and a CRL.
async fn events(http: &reqwest::Client, sim: &str, seed: u64, changes: u64) -> anyhow::Result<()> {
    let moves = changes * 3 / 5;
    sim_post(
        http,
        format!("{sim}/sim/events/bulk"),
        json!({"seed": seed, "moves": moves, "renames": changes - moves}),
    )
    .await?;
    sim_post(http, format!("{sim}/sim/crl/publish"), json!({})).await?;
    Ok(())
}

/// A `revoked` run, detected by the CRL as the worker does it; returns the
/// run and how many jobs it enqueued.
async fn detect(
    db: &DatabaseConnection,
    provider: &dyn Provider,
    anchors: &TrustAnchors,
    lease: Duration,
) -> anyhow::Result<(uuid::Uuid, u64)> {
    let ctx = AuditContext::new(Actor::cli(), None);
    let run = sync::runs::request(db, &ctx, "cli", Scope::Revoked, None).await?;
    anyhow::ensure!(sync::runs::take(db, run.run.id, lease).await?, "run taken");
    let found = sync::detect::by_crl(db, provider, anchors).await?;
    let enqueued = sync::runs::detected(db, run.run.id, &found).await?;
    Ok((run.run.id, enqueued))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [
        database,
        customers,
        changes,
        latency_ms,
        tasks,
        apply_changes,
    ] = args.as_slice()
    else {
        anyhow::bail!(
            "usage: sync_cycle DATABASE_URL CUSTOMERS CHANGES LATENCY_MS TASKS APPLY_CHANGES"
        );
    };
    let (customers, changes): (u64, u64) = (customers.parse()?, changes.parse()?);
    let (latency_ms, tasks): (u64, usize) = (latency_ms.parse()?, tasks.parse()?);
    let apply_changes: u64 = apply_changes.parse()?;
    let db = kihon4_core::db::connect(database, (tasks as u32 + 2).max(4)).await?;
    Migrator::up(&db, None).await?;

    let dir = tempfile::tempdir()?;
    let simulator = web::Data::new(
        kihon4_sim::Simulator::open(kihon4_sim::SimSettings {
            data_dir: dir.path().join("sim"),
            api_key: None,
            sim_routes_public: false,
        })
        .await?,
    );
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let sim = format!("http://{}", listener.local_addr()?);
    tokio::spawn(kihon4_sim::server(simulator.clone(), listener)?);
    let mut settings = ProviderSettings::new(
        format!("{sim}/").parse()?,
        "bench-provider-key".to_owned().into(),
    );
    settings.timeout = Duration::from_secs(60);
    let provider: Arc<dyn Provider> =
        Arc::new(HttpProvider::new(settings).map_err(anyhow::Error::msg)?);
    let anchors =
        TrustAnchors::load(&[dir.path().join("sim/ca.pem")]).map_err(anyhow::Error::msg)?;
    let notices = Arc::new(
        Notices::load(
            Institution {
                name: "かもめ銀行".into(),
                contact: "0120-000-000".into(),
                reply_to: String::new(),
                ..Default::default()
            },
            Sender {
                address: "notices@bank.example.jp",
                reply_to: None,
                timezone: chrono_tz::Asia::Tokyo,
            },
            None,
        )
        .map_err(anyhow::Error::msg)?,
    );
    let sync_settings = SyncSettings {
        lease: Duration::from_secs(3600),
        ..SyncSettings::default()
    };
    let http = reqwest::Client::new();

    // 1. Set-up.
    let t = Instant::now();
    sim_post(
        &http,
        format!("{sim}/sim/persons/bulk"),
        json!({"count": customers, "seed": 2026}),
    )
    .await?;
    report(
        "setup: residents in the simulator",
        t.elapsed().as_secs_f64(),
        json!({"residents": customers}),
    );
    let t = Instant::now();
    let seeded = kihon4_test_support::seed::consenting_customers(&db, &sim, |n| {
        if n % 100_000 == 0 && n < customers {
            eprintln!("sync_cycle: {n} consenting customers");
        }
    })
    .await;
    db.execute_unprepared("ANALYZE").await?;
    report(
        "setup: consenting customers in kihon4",
        t.elapsed().as_secs_f64(),
        json!({"customers": seeded}),
    );
    let t = Instant::now();
    events(&http, &sim, 7, changes).await?;
    report(
        "setup: life events and the CRL",
        t.elapsed().as_secs_f64(),
        json!({"changes": changes}),
    );

    // 2. The cycle.
    sim_put(
        &http,
        format!("{sim}/sim/faults"),
        json!({"latency_ms": latency_ms}),
    )
    .await?;
    let cycle = Instant::now();
    let (run, enqueued) = detect(&db, provider.as_ref(), &anchors, sync_settings.lease).await?;
    let detection = cycle.elapsed().as_secs_f64();
    report(
        "cycle: detection",
        detection,
        json!({"jobs": enqueued, "customers": seeded}),
    );
    let t = Instant::now();
    let mut workers = Vec::new();
    for i in 0..tasks {
        let (db, provider, notices) = (db.clone(), provider.clone(), notices.clone());
        workers.push(tokio::spawn(async move {
            sync::jobs::process_due(
                &db,
                provider.as_ref(),
                &notices,
                sync_settings,
                &format!("bench-{i}"),
                u64::MAX,
            )
            .await
        }));
    }
    let mut applied = 0;
    let mut outcomes = serde_json::Map::new();
    for w in workers {
        let s = w.await??;
        applied += s.applied();
        for (k, v) in s.outcomes {
            let n = outcomes.get(&k).and_then(Value::as_u64).unwrap_or(0) + v;
            outcomes.insert(k, json!(n));
        }
        anyhow::ensure!(s.failed == 0, "jobs failed");
    }
    sync::runs::complete_finished(&db).await?;
    let querying = t.elapsed().as_secs_f64();
    let status = sync::runs::get(&db, run).await?;
    anyhow::ensure!(status.run.status == "completed", "run completed");
    report(
        "cycle: query and apply, to the last notice queued",
        querying,
        json!({"applied": applied, "outcomes": outcomes, "tasks": tasks,
               "provider_calls": enqueued.div_ceil(100), "latency_ms": latency_ms}),
    );
    report(
        "cycle: total",
        cycle.elapsed().as_secs_f64(),
        json!({"customers": seeded, "changes": enqueued}),
    );

    // 3. Apply by itself.
    sim_put(&http, format!("{sim}/sim/faults"), json!({})).await?;
    events(&http, &sim, 8, apply_changes).await?;
    let (_, enqueued) = detect(&db, provider.as_ref(), &anchors, sync_settings.lease).await?;
    let mut batches = Vec::new();
    loop {
        let jobs = sync::jobs::claim(&db, "bench", 100, sync_settings.lease).await?;
        if jobs.is_empty() {
            break;
        }
        let serials = jobs
            .iter()
            .map(|j| CertSerial::parse(&j.cert_serial))
            .collect::<Result<Vec<_>, _>>()?;
        let answers = provider.latest_basic4(&serials).await?;
        batches.push((jobs, answers));
    }
    let queue = Arc::new(std::sync::Mutex::new(batches));
    eprintln!("sync_cycle: applying {enqueued} answers");
    let t = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..tasks {
        let (db, notices, queue) = (db.clone(), notices.clone(), queue.clone());
        workers.push(tokio::spawn(async move {
            let mut changed = 0u64;
            loop {
                let Some((jobs, answers)) = queue.lock().expect("queue").pop() else {
                    return Ok::<_, anyhow::Error>(changed);
                };
                let pairs: Vec<_> = jobs.iter().zip(answers.iter().map(|a| &a.latest)).collect();
                for result in
                    sync::apply::apply_batch(&db, &notices, sync_settings, "bench", &pairs).await
                {
                    if result? == Some("changed") {
                        changed += 1;
                    }
                }
            }
        }));
    }
    let mut changed = 0;
    for w in workers {
        changed += w.await??;
    }
    let applying = t.elapsed().as_secs_f64();
    report(
        "apply",
        applying,
        json!({"jobs": enqueued, "changed": changed, "per_second": (changed as f64 / applying).round(), "tasks": tasks}),
    );

    // What one change writes, for the SQL reference.
    let message = scalar(
        &db,
        "SELECT AVG(LENGTH(message))::float8 FROM outbox WHERE kind = 'basic4_changed'",
    )
    .await?;
    let canonical = scalar(
        &db,
        "SELECT AVG(LENGTH(canonical))::float8 FROM audit_events WHERE action = 'customer.updated'",
    )
    .await?;
    let personal = scalar(
        &db,
        "SELECT (COUNT(*)::float8 / NULLIF(COUNT(DISTINCT v.seq), 0)) FROM audit_personal_values v \
         JOIN audit_events e ON e.seq = v.seq WHERE e.action = 'customer.updated'",
    )
    .await?;
    println!(
        "{}",
        json!({"phase": "sizes", "message_bytes": message.round(), "canonical_bytes": canonical.round(),
               "personal_values": personal.round()})
    );
    Ok(())
}

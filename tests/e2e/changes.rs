//! The change feed end to end: two worker processes delivering 10,000
//! events to a real receiver (which checks every signature with the official
//! `standardwebhooks` library) while events keep coming and the workers are
//! SIGKILLed at 20 random moments; the receiver down for a while; and the
//! daily file written twice to the same bytes.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use kihon4_core::audit::events::{ConsentExpired, Event};
use kihon4_core::audit::{Actor, AuditContext, Batch, append_batch};
use kihon4_core::changes::webhooks::{self, NewEndpoint};
use kihon4_core::entities::{change_events, customers};
use kihon4_test_support::webhook_receiver::{Received, WebhookReceiver};
use kihon4_test_support::{Backend, both, fresh_database};
use rand::Rng;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

use crate::process::{Running, SECRET, kihon4, scalar};

both!(a_days_change_file_is_written_again_to_the_same_bytes);

const CUSTOMERS: usize = 500;
const EVENTS: usize = 10_000;
/// Events per transaction, as a busy sync round or import writes them.
const BATCH: usize = 200;
const KILLS: usize = 20;
/// Deliveries a worker claims per round (`DELIVERY_ROUND` in the worker):
/// the most a kill can leave sent but not recorded.
const ROUND: usize = 64;

/// What a worker needs: no provider, no mail server (notices would go to
/// the data folder, and there are none). A killed worker's deliveries are
/// taken over when their lease (twice the timeout and 5 s) runs out.
fn envs(url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("KIHON4_DATABASE_URL", url.to_owned()),
        ("KIHON4_JWT_SECRET", SECRET.to_owned()),
        ("KIHON4_WEBHOOK_TIMEOUT_SECONDS", "2".to_owned()),
        ("KIHON4_WEBHOOK_RETRY_BASE_MS", "200".to_owned()),
    ]
}

fn migrate(d: &Path, envs: &[(&str, String)]) {
    let out = kihon4(d, envs).arg("migrate").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `n` customers written straight into the database (the feed needs only
/// their ids and external refs).
async fn seed_customers(db: &DatabaseConnection, n: usize) -> Vec<Uuid> {
    let at = Utc::now();
    let rows: Vec<customers::ActiveModel> = (0..n)
        .map(|i| customers::ActiveModel {
            id: Set(Uuid::now_v7()),
            external_ref: Set(format!("CHG-{i}")),
            email: Set(format!("chg-{i}@example.jp")),
            locale: Set("ja".into()),
            name: Set(None),
            name_flags: Set(None),
            address: Set(None),
            address_flags: Set(None),
            birth_date: Set(None),
            gender: Set(None),
            jpki_cert_serial: Set(None),
            cert_not_after: Set(None),
            status: Set("active".into()),
            version: Set(1),
            created_at: Set(at),
            updated_at: Set(at),
            name_kana: Set(None),
            former_surname: Set(None),
            overseas_move_on: Set(None),
        })
        .collect();
    let ids = rows.iter().map(|r| r.id.clone().unwrap()).collect();
    for chunk in rows.chunks(500) {
        customers::Entity::insert_many(chunk.to_vec())
            .exec_without_returning(db)
            .await
            .unwrap();
    }
    ids
}

/// Writes `n` `consent.expired` events of customers picked at random, in
/// one transaction, through the audit append: the real write path numbers
/// their change events.
async fn write_events(db: &DatabaseConnection, customers: &[Uuid], n: usize) {
    let picked: Vec<Uuid> = {
        let mut rng = rand::thread_rng();
        (0..n)
            .map(|_| customers[rng.gen_range(0..customers.len())])
            .collect()
    };
    write_events_of(db, &picked).await;
}

/// One `consent.expired` event of each of `customers`, in that order, in
/// one transaction.
async fn write_events_of(db: &DatabaseConnection, customers: &[Uuid]) {
    let ctx = AuditContext::new(Actor::worker(), None);
    let mut batch = Batch::default();
    for &customer_id in customers {
        batch.push(
            &ctx,
            Event::ConsentExpired(ConsentExpired {
                consent_id: Uuid::now_v7(),
                customer_id,
                expires_at: Utc::now(),
            }),
        );
    }
    let txn = kihon4_core::db::begin_write(db).await.unwrap();
    append_batch(&txn, batch).await.unwrap();
    txn.commit().await.unwrap();
}

/// A receiver and an endpoint registered for it (every event type), the
/// receiver verifying with the endpoint's secret.
async fn receiver_and_endpoint(db: &DatabaseConnection, dir: &Path) -> (WebhookReceiver, Uuid) {
    let receiver = WebhookReceiver::start(dir, &[&webhooks::new_secret()]);
    let (endpoint, secret) = webhooks::create(
        db,
        &AuditContext::new(Actor::cli(), None),
        NewEndpoint {
            url: Some(&receiver.url()),
            event_types: None,
        },
    )
    .await
    .unwrap();
    receiver.set(json!({ "secrets": [secret] })).await;
    (receiver, endpoint.id)
}

async fn delivered(db: &DatabaseConnection) -> i64 {
    scalar(
        db,
        "SELECT COUNT(*) FROM webhook_deliveries WHERE status = 'delivered'",
    )
    .await
}

/// Waits until `n` deliveries are recorded as delivered.
async fn wait_delivered(
    db: &DatabaseConnection,
    n: usize,
    limit: Duration,
    log: &dyn Fn() -> String,
) {
    let deadline = Instant::now() + limit;
    loop {
        let done = delivered(db).await as usize;
        if done >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{done} of {n} delivered after {limit:?}:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every change event, in feed order: (event_id, customer_id, customer_seq).
async fn feed(db: &DatabaseConnection) -> Vec<(Uuid, Uuid, i64)> {
    change_events::Entity::find()
        .select_only()
        .column(change_events::Column::Id)
        .column(change_events::Column::CustomerId)
        .column(change_events::Column::CustomerSeq)
        .order_by_asc(change_events::Column::Position)
        .into_tuple()
        .all(db)
        .await
        .unwrap()
}

/// Checks that the receiver got every event of the feed, its first receipts
/// of each customer's events in that customer's order (1, 2, 3, …, each
/// first received only after the one before it), each sent as
/// `msg_<event id>`; returns how many receipts were repeats.
fn check_received(feed: &[(Uuid, Uuid, i64)], got: &Received) -> usize {
    let of: HashMap<String, (Uuid, i64)> = feed
        .iter()
        .map(|(id, customer, seq)| (id.to_string(), (*customer, *seq)))
        .collect();
    let mut seen: HashSet<&str> = HashSet::new();
    let mut next: HashMap<Uuid, i64> = HashMap::new();
    for r in &got.events {
        let &(customer, seq) = of
            .get(&r.event_id)
            .unwrap_or_else(|| panic!("an event the feed does not hold: {r:?}"));
        assert_eq!(r.customer_id, customer.to_string(), "{r:?}");
        assert_eq!(r.customer_seq, seq, "{r:?}");
        assert_eq!(
            r.webhook_id,
            format!("msg_{}", Uuid::parse_str(&r.event_id).unwrap().simple()),
            "a repeat carries the same webhook-id"
        );
        if !seen.insert(r.event_id.as_str()) {
            continue;
        }
        let expected = next.entry(customer).or_insert(1);
        assert_eq!(
            seq, *expected,
            "customer {customer}: event {seq} first received before event {expected}"
        );
        *expected += 1;
    }
    let missing = feed
        .iter()
        .filter(|(id, _, _)| !seen.contains(id.to_string().as_str()))
        .count();
    assert_eq!(
        missing,
        0,
        "{missing} of {} events never arrived",
        feed.len()
    );
    got.events.len() - feed.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_killed_while_delivering_deliver_every_event_in_order_per_customer() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let url = fresh_database(Backend::Postgres, d).await;
    let envs = envs(&url);
    migrate(d, &envs);
    let db = kihon4_core::db::connect(&url, 4).await.unwrap();
    let customers = seed_customers(&db, CUSTOMERS).await;
    let (receiver, _endpoint) = receiver_and_endpoint(&db, &d.join("receiver")).await;

    let mut workers = vec![
        Running::start(d, "worker", &envs).await,
        Running::start(d, "worker", &envs).await,
    ];
    // The events come in while the workers deliver and are killed: a batch
    // of 200 every so often, each in its own transaction.
    let writer = {
        let (db, customers) = (db.clone(), customers.clone());
        tokio::spawn(async move {
            for _ in 0..EVENTS / BATCH {
                write_events(&db, &customers, BATCH).await;
                let pause = rand::thread_rng().gen_range(50..250);
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
        })
    };
    let mut while_held = 0;
    for kill in 0..KILLS {
        let pause = rand::thread_rng().gen_range(100..700);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let written = scalar(&db, "SELECT last_position FROM change_feed WHERE id = 1").await;
        let done = delivered(&db).await;
        assert!(
            (written as usize) < EVENTS || done < written,
            "kill {kill} came after every event was delivered: it tests nothing"
        );
        if scalar(
            &db,
            "SELECT COUNT(*) FROM webhook_deliveries WHERE status = 'pending' AND lease_owner IS NOT NULL",
        )
        .await
            > 0
        {
            while_held += 1;
        }
        let which = rand::thread_rng().gen_range(0..workers.len());
        workers[which].signal("KILL");
        workers[which].wait(Duration::from_secs(10)).await;
        workers[which] = Running::start(d, "worker", &envs).await;
    }
    writer.await.unwrap();
    wait_delivered(&db, EVENTS, Duration::from_secs(90), &|| {
        workers[0].log_text()
    })
    .await;
    for w in &workers {
        w.signal("TERM");
    }

    let feed = feed(&db).await;
    assert_eq!(feed.len(), EVENTS);
    let got = receiver.received().await;
    assert_eq!(got.rejected, 0, "every request's signature verified");
    let duplicates = check_received(&feed, &got);
    eprintln!(
        "{EVENTS} events, {KILLS} kills ({while_held} while deliveries were claimed): {duplicates} repeated deliveries"
    );
    assert!(
        duplicates <= KILLS * ROUND,
        "{duplicates} repeats after {KILLS} kills: at most a round ({ROUND}) per kill"
    );
    assert_eq!(
        scalar(
            &db,
            "SELECT COUNT(*) FROM webhook_deliveries WHERE status <> 'delivered'"
        )
        .await,
        0
    );
    for mut w in workers {
        assert!(w.wait(Duration::from_secs(30)).await.success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_of_the_receiver_is_retried_and_then_delivered_in_order() {
    const BEFORE: usize = 100;
    const DURING: usize = 400;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let url = fresh_database(Backend::Postgres, d).await;
    let envs = envs(&url);
    migrate(d, &envs);
    let db = kihon4_core::db::connect(&url, 2).await.unwrap();
    let customers = seed_customers(&db, 40).await;
    let (mut receiver, endpoint) = receiver_and_endpoint(&db, &d.join("receiver")).await;
    let worker = Running::start(d, "worker", &envs).await;
    write_events(&db, &customers, BEFORE).await;
    wait_delivered(&db, BEFORE, Duration::from_secs(60), &|| worker.log_text()).await;

    // Down: its port refuses connections while more events are written.
    receiver.stop();
    for _ in 0..DURING / BATCH {
        write_events(&db, &customers, BATCH).await;
    }
    // The worker keeps trying the first undelivered event of each customer,
    // backing off; every attempt is recorded.
    let deadline = Instant::now() + Duration::from_secs(60);
    while scalar(
        &db,
        "SELECT CAST(COALESCE(MAX(attempts), 0) AS BIGINT) FROM webhook_deliveries WHERE status = 'pending'",
    )
    .await
        < 4
    {
        assert!(
            Instant::now() < deadline,
            "no retries:\n{}",
            worker.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        delivered(&db).await as usize,
        BEFORE,
        "nothing delivered while down"
    );
    let refused = scalar(
        &db,
        "SELECT COUNT(*) FROM webhook_attempts WHERE status_code IS NULL AND error = 'could not connect'",
    )
    .await;
    assert!(refused >= 4, "{refused} refused attempts recorded");
    let failing = webhooks::get(&db, endpoint).await.unwrap();
    assert!(failing.failing_since.is_some(), "the endpoint is failing");
    assert_eq!(
        failing.status, "active",
        "and not disabled within its retry period"
    );
    // Only the first pending event of a customer is tried: its next ones wait.
    assert_eq!(
        scalar(
            &db,
            "SELECT COUNT(*) FROM webhook_deliveries d WHERE d.attempts > 0 AND d.status = 'pending' \
             AND EXISTS (SELECT 1 FROM webhook_deliveries b WHERE b.customer_id = d.customer_id \
             AND b.status = 'pending' AND b.position < d.position)"
        )
        .await,
        0
    );

    receiver.resume();
    wait_delivered(&db, BEFORE + DURING, Duration::from_secs(60), &|| {
        worker.log_text()
    })
    .await;
    let feed = feed(&db).await;
    assert_eq!(feed.len(), BEFORE + DURING);
    let got = receiver.received().await;
    assert_eq!(got.rejected, 0);
    let duplicates = check_received(&feed, &got);
    assert_eq!(duplicates, 0, "a refused connection delivered nothing");
    let recovered = webhooks::get(&db, endpoint).await.unwrap();
    assert!(recovered.failing_since.is_none(), "no longer failing");
    worker.signal("TERM");
}

/// A receiver that takes `delay` over each request and answers 204 (it
/// checks no signature): keeps each request's `webhook-id`, in arrival order.
async fn slow_receiver(delay: Duration) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let ids = Arc::new(Mutex::new(Vec::new()));
    let kept = ids.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let ids = kept.clone();
            tokio::spawn(async move {
                let mut stream = tokio::io::BufReader::new(stream);
                loop {
                    let (mut id, mut length) = (String::new(), 0usize);
                    loop {
                        let mut line = String::new();
                        match stream.read_line(&mut line).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                        let line = line.trim_end();
                        if line.is_empty() {
                            break;
                        }
                        if let Some((name, value)) = line.split_once(':') {
                            match name.to_ascii_lowercase().as_str() {
                                "webhook-id" => id = value.trim().to_owned(),
                                "content-length" => length = value.trim().parse().unwrap(),
                                _ => {}
                            }
                        }
                    }
                    let mut body = vec![0u8; length];
                    if stream.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(delay).await;
                    ids.lock().unwrap().push(id);
                    if stream
                        .get_mut()
                        .write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (url, ids)
}

/// A round's deliveries wait for the sends before them (`concurrency` at a
/// time); none is taken over by another worker while it waits, so a
/// receiver that answers slowly, within the timeout, gets each event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_waiting_in_a_slow_round_are_not_sent_again_by_another_worker() {
    const EVENTS: usize = 64;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let url = fresh_database(Backend::Postgres, d).await;
    let mut envs = envs(&url);
    // One request at a time, each answered in 0.2 s of its 1 s timeout: a
    // round of 64 takes 13 s, a request's lease would be 7 s.
    for (name, value) in &mut envs {
        if *name == "KIHON4_WEBHOOK_TIMEOUT_SECONDS" {
            *value = "1".to_owned();
        }
    }
    envs.push(("KIHON4_WEBHOOK_CONCURRENCY", "1".to_owned()));
    migrate(d, &envs);
    let db = kihon4_core::db::connect(&url, 2).await.unwrap();
    let customers = seed_customers(&db, EVENTS).await;
    let (hook, ids) = slow_receiver(Duration::from_millis(200)).await;
    webhooks::create(
        &db,
        &AuditContext::new(Actor::cli(), None),
        NewEndpoint {
            url: Some(&hook),
            event_types: None,
        },
    )
    .await
    .unwrap();
    write_events_of(&db, &customers).await;
    // One worker claims the whole round; a second one starts, idle.
    let first = Running::start(d, "worker", &envs).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while scalar(
        &db,
        "SELECT COUNT(*) FROM webhook_deliveries WHERE lease_owner IS NOT NULL",
    )
    .await
        < EVENTS as i64
    {
        assert!(Instant::now() < deadline, "no round:\n{}", first.log_text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let second = Running::start(d, "worker", &envs).await;
    wait_delivered(&db, EVENTS, Duration::from_secs(60), &|| first.log_text()).await;
    // Time for any repeat to arrive.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let got = ids.lock().unwrap().clone();
    let unique: HashSet<&String> = got.iter().collect();
    assert_eq!(unique.len(), EVENTS);
    assert_eq!(
        got.len(),
        EVENTS,
        "{} sent twice with no worker killed",
        got.len() - EVENTS
    );
    first.signal("TERM");
    second.signal("TERM");
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn at(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339)
        .unwrap()
        .with_timezone(&Utc)
}

/// Runs `kihon4 changes export --date DAY --dir DIR`.
fn export(d: &Path, envs: &[(&str, String)], day: &str, out: &Path) -> std::process::Output {
    kihon4(d, envs)
        .args(["changes", "export", "--date", day, "--dir"])
        .arg(out)
        .output()
        .unwrap()
}

/// The CSV's event ids (its second column), without the BOM and header.
fn event_ids(csv: &[u8]) -> Vec<String> {
    let text = std::str::from_utf8(csv).unwrap();
    let text = text.strip_prefix('\u{feff}').expect("a UTF-8 BOM");
    let mut lines = text.split("\r\n");
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("cursor,event_id,event_type,")
    );
    lines
        .filter(|l| !l.is_empty())
        .map(|l| l.split(',').nth(1).unwrap().to_owned())
        .collect()
}

async fn a_days_change_file_is_written_again_to_the_same_bytes(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let url = fresh_database(backend, d).await;
    let envs = envs(&url);
    migrate(d, &envs);
    let db = kihon4_core::db::connect(&url, 2).await.unwrap();
    let customers = seed_customers(&db, 5).await;
    write_events(&db, &customers, 30).await;
    // Moved onto known JST days: Tuesday 1 December 2026 from its first to
    // its last microsecond, the days either side, and a weekend.
    let days = [
        // Tuesday (JST 00:00 is 15:00 UTC the day before).
        "2026-11-30T15:00:00Z",
        "2026-12-01T14:59:59.999999Z",
        "2026-12-01T03:00:00Z",
        "2026-12-01T03:00:00Z",
        "2026-12-01T09:30:00.5Z",
        // Monday and Wednesday: not in Tuesday's file.
        "2026-11-30T14:59:59.999999Z",
        "2026-12-01T15:00:00Z",
        // Saturday and Sunday: in Monday 7 December's.
        "2026-12-04T15:00:00Z",
        "2026-12-06T14:59:59Z",
        "2026-12-05T20:00:00Z",
    ];
    let rows = feed(&db).await;
    let mut tuesday = Vec::new();
    let mut monday = Vec::new();
    for (i, (id, _, _)) in rows.iter().enumerate() {
        let when = days[i % days.len()];
        change_events::Entity::update_many()
            .col_expr(change_events::Column::OccurredAt, Expr::value(at(when)))
            .filter(change_events::Column::Id.eq(*id))
            .exec(&db)
            .await
            .unwrap();
        match i % days.len() {
            0..5 => tuesday.push(id.to_string()),
            7.. => monday.push(id.to_string()),
            _ => {}
        }
    }

    let out = d.join("changes");
    let csv = out.join("kihon4-changes-2026-12-01.csv");
    let manifest = out.join("kihon4-changes-2026-12-01.manifest.json");
    let mut written = Vec::new();
    for _ in 0..2 {
        let run = export(d, &envs, "2026-12-01", &out);
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        assert_eq!(mode(&csv), 0o600, "the file is the owner's alone");
        assert_eq!(mode(&manifest), 0o600, "so is its manifest");
        written.push((
            std::fs::read(&csv).unwrap(),
            std::fs::read(&manifest).unwrap(),
        ));
    }
    assert!(
        written[0].0 == written[1].0,
        "the same CSV bytes both times"
    );
    assert!(
        written[0].1 == written[1].1,
        "the same manifest bytes both times"
    );
    let (bytes, manifest_bytes) = &written[0];
    let m: Value = serde_json::from_slice(manifest_bytes).unwrap();
    assert_eq!(m["events"], tuesday.len(), "{m}");
    assert_eq!(m["sha256"], hex::encode(Sha256::digest(bytes)), "{m}");
    assert_eq!(m["file"], "kihon4-changes-2026-12-01.csv");
    assert_eq!(
        m["covers"],
        json!({"from": "2026-12-01", "through": "2026-12-01"})
    );
    assert_eq!(event_ids(bytes), tuesday, "Tuesday's events, in feed order");
    // Each run is audited.
    assert_eq!(
        scalar(
            &db,
            "SELECT COUNT(*) FROM audit_events WHERE action = 'changes.exported'"
        )
        .await,
        2
    );

    // Monday's file holds the weekend's events.
    let run = export(d, &envs, "2026-12-07", &out);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let bytes = std::fs::read(out.join("kihon4-changes-2026-12-07.csv")).unwrap();
    assert_eq!(event_ids(&bytes), monday);
    let m: Value = serde_json::from_slice(
        &std::fs::read(out.join("kihon4-changes-2026-12-07.manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(m["events"], monday.len());
    assert_eq!(
        m["covers"],
        json!({"from": "2026-12-05", "through": "2026-12-07"})
    );

    // A Saturday has no file of its own: the error names the day that holds it.
    let run = export(d, &envs, "2026-12-05", &out);
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("2026-12-07"), "{err}");
    assert!(!out.join("kihon4-changes-2026-12-05.csv").exists());

    // The person behind a command is in the trail: `--actor`, else the
    // login, else plain `cli`; a name that could not be a token's subject
    // stops the command before it writes anything.
    let again = |args: &[&str], login: Option<&str>| {
        let mut cmd = kihon4(d, &envs);
        cmd.env_remove("LOGNAME").env_remove("USER");
        if let Some(login) = login {
            cmd.env("LOGNAME", login);
        }
        cmd.args(args)
            .args(["changes", "export", "--date", "2026-12-01", "--dir"])
            .arg(&out)
            .output()
            .unwrap()
    };
    assert!(
        again(&["--actor", "山田 花子"], Some("root"))
            .status
            .success()
    );
    assert!(again(&[], Some("tanaka")).status.success());
    assert!(again(&[], None).status.success());
    let refused = again(&["--actor", "314159265352"], None);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--actor"));
    let db = kihon4_core::db::connect(&url, 1).await.unwrap();
    let actors: Vec<String> = kihon4_core::entities::audit_events::Entity::find()
        .filter(kihon4_core::entities::audit_events::Column::Action.eq("changes.exported"))
        .order_by_asc(kihon4_core::entities::audit_events::Column::Seq)
        .all(&db)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.actor)
        .collect();
    assert_eq!(
        actors[actors.len() - 3..],
        ["cli:山田 花子", "cli:tanaka", "cli"].map(str::to_owned)
    );
}

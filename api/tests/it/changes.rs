//! The change feed end to end, on SQLite and PostgreSQL: the events real
//! flows write (consents through the API, sync through the simulator,
//! reviews), the cursor API (paging, filters, long polls, bad input, roles,
//! retention), many writers at once, the webhook endpoints' routes, and
//! deliveries to a real receiver that checks every signature with the
//! official Standard Webhooks library.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Utc};
use kihon4_core::audit::events::{
    ConsentExpired, ConsentRenewed, Event, ReviewOpened, ReviewResolved,
};
use kihon4_core::audit::{self, Actor, AuditContext};
use kihon4_core::auth::Role;
use kihon4_core::changes::delivery::{DeliverySettings, Sender, deliver_due, fan_out};
use kihon4_core::changes::{Cursor, ValuePolicy, envelope, jst};
use kihon4_core::config::{JpkiRole, Revocation};
use kihon4_core::consent::ConsentVerifier;
use kihon4_core::consent::registrations::run_due;
use kihon4_core::entities::{audit_events, change_events, webhook_endpoints};
use kihon4_test_support::both;
use kihon4_test_support::webhook_receiver::{ReceivedEvent, WebhookReceiver};
use reqwest::Response;
use sea_orm::{
    ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, sea_query::ExprTrait,
};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::consent::{JA, bare_customer, text};
use crate::helpers::{Backend, TestApp, expect_problem, notices, problem_fields};
use crate::sim::{Signer, TestSim, spawn_sim};
use crate::sync::{consenting, customer, process};

both!(
    consents_are_told_in_order_and_a_refusal_tells_nothing,
    sync_and_reviews_are_told_with_their_values_when_full,
    the_cursor_pages_filters_and_long_polls,
    the_cursor_api_refuses_bad_input_old_cursors_and_other_roles,
    endpoints_are_managed_by_admins_and_audited,
    every_event_is_delivered_once_signed_as_the_feed_gives_it,
    a_flaky_receiver_and_an_outage_lose_nothing_and_keep_each_customer_in_order,
    a_rotated_secret_signs_beside_the_old_one_for_the_overlap,
    a_disabled_endpoint_gets_what_it_missed_once_enabled_and_replays_resend,
    an_endpoint_down_past_its_retry_period_is_disabled_and_attempts_are_listed,
);
both!(workers = 4; many_writers_at_once_lose_nothing_and_repeat_nothing);

// ---------------------------------------------------------------------------
// Reading the feed

fn integration(app: &TestApp) -> String {
    app.token(&[Role::Integration])
}

fn admin(app: &TestApp) -> String {
    app.token(&[Role::Admin])
}

/// `GET /v1/changes?{query}` as `integration`, answered 200.
async fn page(app: &TestApp, query: &str) -> Value {
    let res = app
        .get(&format!("/v1/changes?{query}"), &integration(app))
        .await;
    let status = res.status();
    let cache = res.headers().get("cache-control").cloned();
    let text = res.text().await.unwrap();
    assert_eq!(status, 200, "{query}: {text}");
    assert_eq!(cache.unwrap(), "no-store");
    serde_json::from_str(&text).unwrap()
}

fn events(page: &Value) -> Vec<Value> {
    page["events"].as_array().expect("events").clone()
}

fn next(page: &Value) -> String {
    page["next_cursor"]
        .as_str()
        .expect("a next cursor")
        .to_owned()
}

/// Every event kept, from the oldest, 1000 a page.
async fn feed(app: &TestApp) -> Vec<Value> {
    let mut out = Vec::new();
    let mut query = "limit=1000".to_owned();
    loop {
        let p = page(app, &query).await;
        let got = events(&p);
        let full = got.len() == 1000;
        out.extend(got);
        if !full {
            return out;
        }
        query = format!("limit=1000&after={}", next(&p));
    }
}

/// An event's position, read from its cursor.
fn position(event: &Value) -> i64 {
    Cursor::parse(event["data"]["cursor"].as_str().expect("a cursor"))
        .expect("a cursor of this feed")
        .0
}

/// The types of each customer's events, by external reference, in feed order.
fn types_by_customer(events: &[Value]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in events {
        out.entry(e["data"]["external_ref"].as_str().unwrap().to_owned())
            .or_default()
            .push(e["type"].as_str().unwrap().to_owned());
    }
    out
}

/// The events of the customer `external_ref`, in order.
fn of<'a>(events: &'a [Value], external_ref: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["data"]["external_ref"] == external_ref)
        .collect()
}

/// What every event has: a position after the one before, its id once, its
/// customer's next `customer_seq`, the time twice and its date in JST.
fn assert_well_formed(events: &[Value]) {
    let mut last = 0;
    let mut ids = HashSet::new();
    let mut seqs: HashMap<String, (i64, String)> = HashMap::new();
    for e in events {
        let data = &e["data"];
        let p = position(e);
        assert!(p > last, "positions go up: {p} after {last}");
        last = p;
        assert!(ids.insert(data["event_id"].as_str().unwrap().to_owned()));
        let customer = data["customer_id"].as_str().unwrap().to_owned();
        let external_ref = data["external_ref"].as_str().unwrap().to_owned();
        assert!(!external_ref.is_empty(), "{e}");
        let (seq, known_ref) = seqs.entry(customer).or_insert((0, external_ref.clone()));
        *seq += 1;
        assert_eq!(data["customer_seq"], *seq, "{e}");
        assert_eq!(*known_ref, external_ref);
        assert_eq!(data["occurred_at"], e["timestamp"]);
        let at = DateTime::parse_from_rfc3339(e["timestamp"].as_str().unwrap()).unwrap();
        assert_eq!(
            data["occurred_on_jst"],
            at.with_timezone(&jst()).date_naive().to_string()
        );
        assert_eq!(
            e.as_object().unwrap().len(),
            3,
            "type, timestamp, data: {e}"
        );
    }
}

/// Rows of the feed's table.
async fn change_rows(app: &TestApp) -> Vec<change_events::Model> {
    change_events::Entity::find()
        .order_by_asc(change_events::Column::Position)
        .all(&app.db)
        .await
        .unwrap()
}

// ---------------------------------------------------------------------------
// Writing changes

/// Customers `{prefix}-0` … made through the API; their ids.
async fn customers(app: &TestApp, prefix: &str, n: usize) -> Vec<Uuid> {
    let mut out = Vec::new();
    for i in 0..n {
        let made = app.create_customer(&format!("{prefix}-{i}")).await;
        out.push(Uuid::parse_str(made["id"].as_str().unwrap()).unwrap());
    }
    out
}

/// The audit event number `i` of a rotation of three that each report one
/// change: `consent.expired`, `consent.renewed`, `review.resolved`.
fn change_event(customer: Uuid, i: usize) -> Event {
    match i % 3 {
        0 => Event::ConsentExpired(ConsentExpired {
            consent_id: Uuid::now_v7(),
            customer_id: customer,
            expires_at: Utc::now(),
        }),
        1 => Event::ConsentRenewed(ConsentRenewed {
            consent_id: Uuid::now_v7(),
            customer_id: customer,
            renewed_by: Uuid::now_v7(),
        }),
        _ => Event::ReviewResolved(ReviewResolved {
            review_id: Uuid::now_v7(),
            customer_id: customer,
            resolution: "confirmed".into(),
            note: "確認しました".into(),
        }),
    }
}

/// Appends `events` in one transaction of their own, as the worker.
async fn write(db: &DatabaseConnection, events: Vec<Event>) {
    let txn = kihon4_core::db::begin_write(db).await.unwrap();
    let worker = AuditContext::new(Actor::worker(), None);
    for event in events {
        audit::append(&txn, &worker, event).await.unwrap();
    }
    txn.commit().await.unwrap();
}

/// `rounds` changes to each of `customers`, one transaction each, customer by customer in turn.
async fn write_changes(db: &DatabaseConnection, customers: &[Uuid], rounds: usize) {
    for round in 0..rounds {
        for (i, c) in customers.iter().enumerate() {
            write(db, vec![change_event(*c, round + i)]).await;
        }
    }
}

/// A consent signed with `signer`'s card (the Japanese text, attached).
async fn grant(app: &TestApp, customer: &str, signer: &Signer) -> Value {
    let text = text(app, JA).await;
    let res = grant_document(app, customer, &signer.sign(text.as_bytes(), true)).await;
    assert_eq!(res.status(), 201);
    res.json().await.unwrap()
}

async fn grant_document(app: &TestApp, customer: &str, document: &[u8]) -> Response {
    app.post(
        &format!("/v1/customers/{customer}/consents"),
        &app.operator(),
        &json!({
            "text_version": JA,
            "channel": "online_signature",
            "signed_document_b64": B64.encode(document),
        }),
    )
    .await
}

async fn withdraw(app: &TestApp, consent: &str) -> Response {
    app.post(
        &format!("/v1/consents/{consent}/withdraw"),
        &app.operator(),
        &json!({"reason": "お客さまからの申し出"}),
    )
    .await
}

async fn consents_of(app: &TestApp, customer: &str) -> Vec<Value> {
    let body: Value = app
        .get(
            &format!("/v1/customers/{customer}/consents"),
            &app.operator(),
        )
        .await
        .json()
        .await
        .unwrap();
    body["items"].as_array().unwrap().clone()
}

/// What [`consent_flows`] did.
struct ConsentFlows {
    /// `CH-renews`: consented, consented again (a renewal), withdrew.
    renews: String,
    first: Value,
    second: Value,
    /// `CH-expires`: no items until its consent, which then expired.
    expires: String,
    expiring: Value,
}

/// Consents given, renewed, withdrawn and expired, through the API and the
/// housekeeping. Expiring runs at a time past every consent's end: every
/// consent still open expires.
async fn consent_flows(app: &TestApp, sim: &TestSim) -> ConsentFlows {
    let made = app.create_customer("CH-renews").await;
    let renews = made["id"].as_str().unwrap().to_owned();
    let signer = sim.resident().await;
    let first = grant(app, &renews, &signer).await;
    // OpenSSL's signingTime counts seconds: the same second, the same signature.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = grant(app, &renews, &signer).await;
    let res = withdraw(app, second["id"].as_str().unwrap()).await;
    assert_eq!(res.status(), 200);

    let expires = bare_customer(app, "CH-expires").await;
    let expiring = grant(app, &expires, &sim.resident().await).await;
    let end = DateTime::parse_from_rfc3339(expiring["expires_at"].as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc);
    let ran = kihon4_core::consent::housekeeping::run(
        &app.db,
        &notices(),
        chrono_tz::Asia::Tokyo,
        Some(end + chrono::Duration::days(1)),
    )
    .await
    .unwrap();
    assert!(ran.expired >= 1, "{ran:?}");
    ConsentFlows {
        renews,
        first,
        second,
        expires,
        expiring,
    }
}

/// What [`life_flows`] did.
struct LifeFlows {
    /// `CH-moves`: moved to Osaka (a new certificate).
    moves: String,
    moves_consent: String,
    /// `CH-dies`.
    dies: String,
    /// `CH-loses`: lost the card; the review was resolved.
    loses: String,
    loses_serial: String,
    review: String,
}

/// Three consenting customers, registered with the provider; on the
/// register one moves, one dies and one loses the card; a sync run takes it
/// in and the revocation's review is resolved.
async fn life_flows(app: &TestApp, sim: &TestSim) -> LifeFlows {
    let (moves, moving) = consenting(app, sim, "CH-moves", "佐藤花子").await;
    let (dies, dying) = consenting(app, sim, "CH-dies", "高橋次郎").await;
    let (loses, losing) = consenting(app, sim, "CH-loses", "田中三郎").await;
    run_due(
        &app.db,
        sim.provider().as_ref(),
        &notices(),
        chrono_tz::Asia::Tokyo,
        "test-worker",
        100,
    )
    .await
    .unwrap();
    sim.life_event_with(
        &moving,
        json!({"kind": "move", "basic4": {"address": "大阪府大阪市北区梅田1-1"}}),
    )
    .await;
    sim.life_event(&dying, "death").await;
    sim.life_event(&losing, "card_lost").await;
    sync_all(app, sim).await;
    let reviews: Value = app
        .get("/v1/reviews?status=open", &app.operator())
        .await
        .json()
        .await
        .unwrap();
    let review = reviews["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "revoked")
        .expect("the lost card's review")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let res = app
        .post(
            &format!("/v1/reviews/{review}/resolve"),
            &app.operator(),
            &json!({"resolution": "confirmed", "note": "紛失届を確認しました"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let moves_consent = consents_of(app, &moves).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    LifeFlows {
        moves,
        moves_consent,
        dies,
        loses,
        loses_serial: losing.serial.clone(),
        review,
    }
}

/// A sync run of every consenting customer, worked through to its end.
async fn sync_all(app: &TestApp, sim: &TestSim) {
    let res = app
        .post("/v1/sync/runs", &app.operator(), &json!({"scope": "all"}))
        .await;
    assert_eq!(res.status(), 202);
    let summary = process(app, sim, 1000).await;
    assert_eq!((summary.retried, summary.failed), (0, 0));
    kihon4_core::sync::runs::complete_finished(&app.db)
        .await
        .unwrap();
}

/// An app that takes consents signed with the simulator's cards, `tune`d.
async fn consent_app(
    backend: Backend,
    sim: &TestSim,
    tune: impl FnOnce(&mut kihon4_api::AppState),
) -> TestApp {
    TestApp::spawn_tuned(
        backend,
        sim.platform(Revocation::Crl),
        JpkiRole::Platform,
        tune,
    )
    .await
}

// ---------------------------------------------------------------------------
// 1. What the events say

async fn consents_are_told_in_order_and_a_refusal_tells_nothing(backend: Backend) {
    let sim = spawn_sim().await;
    let app = consent_app(backend, &sim, |_| {}).await;
    let f = consent_flows(&app, &sim).await;
    let all = feed(&app).await;
    assert_well_formed(&all);
    assert_eq!(
        types_by_customer(&all),
        BTreeMap::from([
            (
                "CH-renews".to_owned(),
                [
                    "consent.granted",
                    "consent.granted",
                    "consent.renewed",
                    "consent.withdrawn"
                ]
                .map(str::to_owned)
                .to_vec()
            ),
            (
                "CH-expires".to_owned(),
                ["consent.granted", "basic4.changed", "consent.expired"]
                    .map(str::to_owned)
                    .to_vec()
            ),
        ])
    );
    // The renewing customer's consents, field by field.
    let renews = of(&all, "CH-renews");
    let (first, second) = (&f.first["id"], &f.second["id"]);
    for (e, consent, renewed) in [(renews[0], first, &Value::Null), (renews[1], second, first)] {
        let d = &e["data"];
        assert_eq!(d["customer_id"], f.renews.as_str());
        assert_eq!(d["consent_id"], *consent);
        assert_eq!(d["renews"], *renewed);
        assert_eq!(d["channel"], "online_signature");
        assert_eq!(d["cert_serial"], f.first["cert_serial"]);
        assert!(d["granted_at"].is_string() && d["expires_at"].is_string());
    }
    assert_eq!(renews[2]["data"]["consent_id"], *first);
    assert_eq!(renews[2]["data"]["renewed_by"], *second);
    assert_eq!(
        position(renews[2]),
        position(renews[1]) + 1,
        "the renewal follows the new consent's grant"
    );
    assert_eq!(renews[3]["data"]["consent_id"], *second);
    assert_eq!(renews[3]["data"]["by"], "institution");
    assert!(renews[3]["data"]["withdrawn_at"].is_string());

    // The bare customer took the four items of the certificate: all four
    // changed, named without their values under the default policy.
    let expires = of(&all, "CH-expires");
    let changed = &expires[1]["data"];
    assert_eq!(changed["customer_id"], f.expires.as_str());
    assert_eq!(changed["source"], "consent");
    assert_eq!(
        changed["items_changed"],
        json!(["name", "address", "birth_date", "gender"])
    );
    assert_eq!(changed["cert_serial"], f.expiring["cert_serial"]);
    assert_eq!(changed["reported_on"], Value::Null);
    assert_eq!(changed["consent_id"], Value::Null);
    assert_eq!(expires[2]["data"]["consent_id"], f.expiring["id"]);
    assert_eq!(expires[2]["data"]["expires_at"], f.expiring["expires_at"]);
    for e in &all {
        let data = e["data"].as_object().unwrap();
        assert!(
            !data.contains_key("before") && !data.contains_key("after"),
            "no values under `items`: {e}"
        );
        assert!(!e.to_string().contains("山田"), "no name anywhere: {e}");
    }

    // Refused requests write no event.
    let before = app.count(change_events::Entity).await;
    assert_eq!(before, 7);
    let signer = sim.resident().await;
    let document = signer.sign(text(&app, JA).await.as_bytes(), true);
    let res = grant_document(&app, &f.renews, &document).await;
    assert_eq!(res.status(), 201, "a third consent");
    expect_problem(
        grant_document(&app, &f.renews, &document).await,
        409,
        "signed-document-reused",
    )
    .await;
    expect_problem(
        withdraw(&app, f.second["id"].as_str().unwrap()).await,
        409,
        "consent-not-active",
    )
    .await;
    expect_problem(
        app.post(
            &format!("/v1/reviews/{}/resolve", Uuid::now_v7()),
            &app.operator(),
            &json!({"resolution": "confirmed", "note": "x"}),
        )
        .await,
        404,
        "not-found",
    )
    .await;
    let all = feed(&app).await;
    assert_eq!(
        app.count(change_events::Entity).await,
        before + 1,
        "only the third consent's grant"
    );
    assert_eq!(all.last().unwrap()["type"], "consent.granted");
    assert_eq!(all.last().unwrap()["data"]["customer_seq"], 5);

    // Erasing the customer's personal data takes the feed's kept values
    // too; the events stay, naming what changed.
    let expires_id = Uuid::parse_str(&f.expires).unwrap();
    let holds_values = |rows: &[change_events::Model]| {
        rows.iter()
            .filter(|r| r.customer_id == expires_id)
            .filter(|r| r.data.contains("\"after\""))
            .count()
    };
    assert_eq!(
        holds_values(&change_rows(&app).await),
        1,
        "kept with its values"
    );
    kihon4_core::audit_export::erase_customer(
        &app.db,
        &kihon4_core::audit::AuditContext::new(kihon4_core::audit::Actor::cli(), None),
        expires_id,
        &kihon4_core::domain::FreeText::parse("deletion request").unwrap(),
    )
    .await
    .unwrap();
    let rows = change_rows(&app).await;
    assert_eq!(holds_values(&rows), 0, "no values left");
    assert_eq!(
        rows.iter().filter(|r| r.customer_id == expires_id).count(),
        3,
        "the events stay"
    );
    app.assert_chain_verifies().await;
}

async fn sync_and_reviews_are_told_with_their_values_when_full(backend: Backend) {
    let sim = spawn_sim().await;
    let app = consent_app(backend, &sim, |s| s.change_values = ValuePolicy::Full).await;
    let f = life_flows(&app, &sim).await;
    let all = feed(&app).await;
    assert_well_formed(&all);
    let owned = |t: &[&str]| t.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    assert_eq!(
        types_by_customer(&all),
        BTreeMap::from([
            (
                "CH-moves".to_owned(),
                owned(&["consent.granted", "basic4.changed", "basic4.changed"])
            ),
            (
                "CH-dies".to_owned(),
                owned(&[
                    "consent.granted",
                    "basic4.changed",
                    "customer.deceased",
                    "review.opened"
                ])
            ),
            (
                "CH-loses".to_owned(),
                owned(&[
                    "consent.granted",
                    "basic4.changed",
                    "certificate.revoked",
                    "review.opened",
                    "review.resolved"
                ])
            ),
        ])
    );

    // The move: only the address, with its values, the date J-LIS gives,
    // the new certificate and the consent it rests on.
    let moves = of(&all, "CH-moves");
    let from_consent = &moves[1]["data"];
    assert_eq!(from_consent["source"], "consent");
    assert_eq!(from_consent["before"]["name"], Value::Null);
    assert_eq!(from_consent["after"]["name"], "佐藤花子");
    assert_eq!(from_consent["after"]["birth_date"], "1980-02-17");
    assert_eq!(from_consent["after"]["gender"], "1");
    let moved = &moves[2]["data"];
    assert_eq!(moved["customer_id"], f.moves.as_str());
    assert_eq!(moved["source"], "sync");
    assert_eq!(moved["items_changed"], json!(["address"]));
    assert!(
        chrono::NaiveDate::parse_from_str(moved["reported_on"].as_str().unwrap(), "%Y-%m-%d")
            .is_ok(),
        "{moved}"
    );
    let record = customer(&app, &f.moves).await;
    assert_eq!(moved["cert_serial"], record["jpki_cert_serial"]);
    assert_ne!(moved["cert_serial"], moves[0]["data"]["cert_serial"]);
    assert_eq!(moved["consent_id"], f.moves_consent.as_str());
    assert_eq!(moved["before"]["address"], "東京都千代田区千代田1-1");
    assert_eq!(moved["after"]["address"], "大阪府大阪市北区梅田1-1");
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        keys(&moved["before"]),
        ["address", "address_substitute_flags"]
    );
    assert_eq!(keys(&moved["after"]), keys(&moved["before"]));

    // The death, and its review.
    let dies = of(&all, "CH-dies");
    assert_eq!(dies[2]["data"]["customer_id"], f.dies.as_str());
    assert_eq!(dies[2]["data"]["source"], "sync");
    assert!(
        dies[2]["data"]
            .as_object()
            .unwrap()
            .contains_key("reported_on")
    );
    assert_eq!(dies[3]["data"]["kind"], "deceased");
    assert!(dies[3]["data"]["review_id"].is_string());

    // The revocation: certificate.revoked then review.opened, one review,
    // then its resolution (without the note).
    let loses = of(&all, "CH-loses");
    let (revoked, opened, resolved) = (&loses[2]["data"], &loses[3]["data"], &loses[4]["data"]);
    assert_eq!(revoked["customer_id"], f.loses.as_str());
    assert_eq!(revoked["reason"], "lost");
    assert_eq!(
        revoked["cert_serial"].as_str().unwrap().to_lowercase(),
        f.loses_serial.to_lowercase()
    );
    assert_eq!(revoked["review_id"], f.review.as_str());
    assert_eq!(position(loses[3]), position(loses[2]) + 1);
    assert_eq!(opened["review_id"], f.review.as_str());
    assert_eq!(opened["kind"], "revoked");
    assert_eq!(opened["detail"]["reason"], "lost");
    assert_eq!(resolved["review_id"], f.review.as_str());
    assert_eq!(resolved["resolution"], "confirmed");
    assert!(!loses[4].to_string().contains("紛失届"), "the note stays");

    // A second run: the moved and the dead have nothing new to tell; the
    // lost card, its review resolved, is seen again and opens a new one.
    sync_all(&app, &sim).await;
    let again = feed(&app).await.split_off(all.len());
    assert_eq!(
        types_by_customer(&again),
        BTreeMap::from([(
            "CH-loses".to_owned(),
            owned(&["certificate.revoked", "review.opened"])
        )])
    );
    assert_ne!(again[0]["data"]["review_id"], f.review.as_str());
    assert_eq!(again[0]["data"]["review_id"], again[1]["data"]["review_id"]);
    assert_eq!(again[0]["data"]["customer_seq"], 6);
    assert_eq!(
        app.count(change_events::Entity).await as usize,
        all.len() + 2
    );
    app.assert_chain_verifies().await;
}

// ---------------------------------------------------------------------------
// 2. The cursor API

async fn the_cursor_pages_filters_and_long_polls(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ids = customers(&app, "CUR", 3).await;
    write_changes(&app.db, &ids, 4).await;
    let all = feed(&app).await;
    assert_eq!(all.len(), 12);
    assert_well_formed(&all);
    let reads = app.count_events("changes.read").await;
    assert_eq!(reads, 1, "the one page read so far");

    // Pages of 5: every event once, in order; the last page is short and
    // ends at the head.
    let mut paged = Vec::new();
    let mut query = "limit=5".to_owned();
    let mut pages = 0;
    loop {
        let p = page(&app, &query).await;
        let got = events(&p);
        pages += 1;
        let n = got.len();
        paged.extend(got);
        query = format!("limit=5&after={}", next(&p));
        if n < 5 {
            assert_eq!(
                Cursor::parse(&next(&p)).unwrap().0,
                position(all.last().unwrap())
            );
            break;
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(paged, all);
    assert_eq!(app.count_events("changes.read").await, reads + 3);
    // At the head: an empty page, which is not audited.
    let head = page(&app, &query).await;
    assert!(events(&head).is_empty());
    assert_eq!(app.count_events("changes.read").await, reads + 3);
    // Its next cursor is the head: a later page gives only newer events.
    write(&app.db, vec![change_event(ids[1], 0)]).await;
    let later = page(&app, &query).await;
    let got = events(&later);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["data"]["customer_id"], ids[1].to_string());
    assert_eq!(got[0]["data"]["customer_seq"], 5);
    assert_eq!(app.count_events("changes.read").await, reads + 4);
    let read: Value = serde_json::from_str(
        &audit_events::Entity::find()
            .filter(audit_events::Column::Action.eq("changes.read"))
            .order_by_desc(audit_events::Column::Seq)
            .one(&app.db)
            .await
            .unwrap()
            .unwrap()
            .canonical,
    )
    .unwrap();
    assert_eq!(read["data"]["events"], 1, "{read}");
    assert_eq!(read["data"]["next"], next(&later).as_str(), "{read}");

    // Types: only those, in order; the next cursor still moves past the rest.
    let p = page(&app, "types=consent.expired,review.resolved&limit=1000").await;
    let filtered = events(&p);
    let kinds: HashSet<&str> = filtered
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, HashSet::from(["consent.expired", "review.resolved"]));
    let expected: Vec<Value> = feed(&app)
        .await
        .into_iter()
        .filter(|e| e["type"] != "consent.renewed")
        .collect();
    assert_eq!(filtered, expected);
    assert_eq!(next(&p), next(&later));
    let p = page(&app, "types=consent.renewed&limit=2").await;
    assert_eq!(events(&p).len(), 2);
    assert!(events(&p).iter().all(|e| e["type"] == "consent.renewed"));

    // A long poll answers as soon as an event is written.
    let head = next(&later);
    let db = app.db.clone();
    let customer = ids[2];
    let writer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        write(&db, vec![change_event(customer, 2)]).await;
    });
    let started = Instant::now();
    let p = page(&app, &format!("after={head}&wait=2")).await;
    let took = started.elapsed();
    writer.await.unwrap();
    assert_eq!(events(&p).len(), 1, "{p}");
    assert_eq!(events(&p)[0]["type"], "review.resolved");
    assert!(
        took >= Duration::from_millis(600) && took < Duration::from_millis(2000),
        "{took:?}"
    );
    // With nothing to give, it waits out its time and gives nothing.
    let head = next(&p);
    let started = Instant::now();
    let p = page(&app, &format!("after={head}&wait=1")).await;
    assert!(events(&p).is_empty());
    assert!(started.elapsed() >= Duration::from_millis(950));
    assert_eq!(next(&p), head);
    // A page that has events answers at once, wait or not.
    let started = Instant::now();
    let p = page(&app, "limit=1&wait=30").await;
    assert_eq!(events(&p).len(), 1);
    assert!(started.elapsed() < Duration::from_secs(2));
}

async fn the_cursor_api_refuses_bad_input_old_cursors_and_other_roles(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ids = customers(&app, "BAD", 2).await;
    write_changes(&app.db, &ids, 2).await;
    let reads = app.count_events("changes.read").await;
    for (query, field) in [
        ("after=garbage", "after"),
        ("after=c1_AAAA", "after"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=-1", "query"),
        ("wait=31", "wait"),
        ("types=nope", "types"),
        ("types=consent.granted,nope", "types"),
        ("colour=blue", "query"),
    ] {
        let problem = expect_problem(
            app.get(&format!("/v1/changes?{query}"), &integration(&app))
                .await,
            400,
            "invalid-query",
        )
        .await;
        assert_eq!(problem_fields(&problem), [field], "{query}: {problem}");
    }
    let res = app
        .get("/v1/changes?types=nope", &integration(&app))
        .await
        .text()
        .await
        .unwrap();
    assert!(res.contains("`nope`"), "{res}");
    assert_eq!(
        app.count_events("changes.read").await,
        reads,
        "refusals read nothing"
    );

    // Roles: integration and admin by default; never operator or auditor.
    for token in [app.operator(), app.auditor()] {
        expect_problem(app.get("/v1/changes", &token).await, 403, "forbidden").await;
    }
    expect_problem(app.get("/v1/changes", "nope").await, 401, "unauthorized").await;
    for roles in [[Role::Integration], [Role::Admin]] {
        let res = app.get("/v1/changes", &app.token(&roles)).await;
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.unwrap();
        assert_eq!(events(&body).len(), 4);
    }

    // Retention: once purged, a cursor before what is kept is expired.
    let first = feed(&app).await[0]["data"]["cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    let head = next(&page(&app, "limit=1000").await);
    let removed = kihon4_core::changes::purge(&app.db, Utc::now() + chrono::Duration::days(1))
        .await
        .unwrap();
    assert_eq!(removed, 4);
    assert_eq!(app.count(change_events::Entity).await, 0);
    for query in [format!("after={first}"), format!("after={}", Cursor(0))] {
        let problem = expect_problem(
            app.get(&format!("/v1/changes?{query}"), &integration(&app))
                .await,
            410,
            "cursor-expired",
        )
        .await;
        assert!(problem["detail"].as_str().unwrap().contains("after"));
    }
    // From the oldest kept, or from the head: nothing, and the head.
    for query in ["limit=10".to_owned(), format!("after={head}")] {
        let p = page(&app, &query).await;
        assert!(events(&p).is_empty());
        assert_eq!(next(&p), head);
    }
    write(&app.db, vec![change_event(ids[0], 0)]).await;
    let p = page(&app, &format!("after={head}")).await;
    assert_eq!(events(&p).len(), 1);
    assert_eq!(
        position(&events(&p)[0]),
        Cursor::parse(&head).unwrap().0 + 1
    );
    // The customer's sequence goes on from before the purge: a receiver
    // that applied 1 and 2 must not be handed a second 1.
    assert_eq!(events(&p)[0]["data"]["customer_seq"], 3);

    // The roles are as configured.
    let tuned = TestApp::spawn_tuned(
        backend,
        ConsentVerifier::Unconfigured("no provider in this test".into()),
        JpkiRole::Platform,
        |s| s.changes_read_roles = vec![Role::Operator],
    )
    .await;
    let res = tuned.get("/v1/changes", &tuned.operator()).await;
    assert_eq!(res.status(), 200);
    expect_problem(
        tuned.get("/v1/changes", &integration(&tuned)).await,
        403,
        "forbidden",
    )
    .await;
}

// ---------------------------------------------------------------------------
// 3. Many writers

async fn many_writers_at_once_lose_nothing_and_repeat_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ids = customers(&app, "MANY", 8).await;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut writers = Vec::new();
    for w in 0..4 {
        let db = app.db.clone();
        let mine = [ids[w * 2], ids[w * 2 + 1]];
        let done = done.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..30 {
                let customer = mine[i % 2];
                let events = match i % 5 {
                    // Two audit events in one transaction, two changes.
                    0 => vec![change_event(customer, i), change_event(customer, i + 1)],
                    // One audit event, two changes.
                    1 => vec![Event::ReviewOpened(ReviewOpened {
                        review_id: Uuid::now_v7(),
                        customer_id: customer,
                        kind: "revoked".into(),
                        detail: json!({"reason": "lost", "cert_serial": "0A"}),
                    })],
                    _ => vec![change_event(customer, i)],
                };
                write(&db, events).await;
            }
            done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }));
    }
    // A reader pages with small pages until the writers are done, what
    // they queued (racing for the chain's head) is sequenced, and it has
    // reached the head.
    let mut read: Vec<Value> = Vec::new();
    let mut pages_with_events = 0;
    let mut after: Option<String> = None;
    let started = Instant::now();
    loop {
        let finished = done.load(std::sync::atomic::Ordering::SeqCst) == 4
            && kihon4_core::audit::queue::depth(&app.db).await.unwrap() == 0;
        let query = match &after {
            Some(c) => format!("limit=7&after={c}"),
            None => "limit=7".to_owned(),
        };
        let p = page(&app, &query).await;
        let got = events(&p);
        if !got.is_empty() {
            pages_with_events += 1;
        }
        let empty = got.is_empty();
        read.extend(got);
        after = Some(next(&p));
        if finished && empty {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "writers stuck");
    }
    for w in writers {
        w.await.unwrap();
    }
    let rows = change_rows(&app).await;
    // 4 writers × 30 transactions: 6 of two events, 6 of a revocation's two,
    // 18 of one.
    assert_eq!(rows.len(), 4 * (6 * 2 + 6 * 2 + 18));
    assert_eq!(
        rows.iter().map(|r| r.position).collect::<Vec<_>>(),
        (1..=rows.len() as i64).collect::<Vec<_>>(),
        "no gaps"
    );
    assert_eq!(
        read.iter().map(position).collect::<Vec<_>>(),
        rows.iter().map(|r| r.position).collect::<Vec<_>>(),
        "each once, in order"
    );
    assert_eq!(
        read.iter()
            .map(|e| e["data"]["event_id"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>(),
        rows.iter().map(|r| r.id.to_string()).collect::<Vec<_>>()
    );
    assert_well_formed(&read);
    // Each revocation's two events are next to each other.
    for (i, e) in read.iter().enumerate() {
        if e["type"] == "certificate.revoked" {
            assert_eq!(read[i + 1]["type"], "review.opened");
            assert_eq!(read[i + 1]["data"]["review_id"], e["data"]["review_id"]);
        }
    }
    assert_eq!(
        app.count_events("changes.read").await,
        pages_with_events,
        "one audit event per page with events"
    );
    app.assert_chain_verifies().await;
}

// ---------------------------------------------------------------------------
// 4. Endpoints

async fn create_endpoint(app: &TestApp, body: Value) -> Response {
    app.post("/v1/webhook-endpoints", &admin(app), &body).await
}

/// The body of a response that must be 201.
async fn created_body(res: Response) -> Value {
    let status = res.status();
    let text = res.text().await.unwrap();
    assert_eq!(status, 201, "{text}");
    serde_json::from_str(&text).unwrap()
}

/// A new endpoint for `url` and every type: its id and secret.
async fn endpoint(app: &TestApp, url: &str) -> (String, String) {
    let body = created_body(create_endpoint(app, json!({"url": url})).await).await;
    (
        body["id"].as_str().unwrap().to_owned(),
        body["secret"].as_str().unwrap().to_owned(),
    )
}

async fn read_endpoint(app: &TestApp, id: &str) -> Value {
    let res = app
        .get(&format!("/v1/webhook-endpoints/{id}"), &admin(app))
        .await;
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

async fn endpoint_action(app: &TestApp, id: &str, action: &str, body: Value) -> Response {
    app.post(
        &format!("/v1/webhook-endpoints/{id}/{action}"),
        &admin(app),
        &body,
    )
    .await
}

async fn attempts(app: &TestApp, id: &str) -> Vec<Value> {
    let res = app
        .get(
            &format!("/v1/webhook-endpoints/{id}/attempts?limit=500"),
            &admin(app),
        )
        .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    body["items"].as_array().unwrap().clone()
}

async fn endpoints_are_managed_by_admins_and_audited(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ids = customers(&app, "EP", 1).await;
    let url = "https://core.bank.example/kihon4";
    let res = create_endpoint(
        &app,
        json!({"url": url, "event_types": ["basic4.changed", "customer.deceased"]}),
    )
    .await;
    assert_eq!(res.status(), 201);
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(res.headers()["cache-control"], "no-store");
    let created: Value = res.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/v1/webhook-endpoints/{id}"));
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{secret}");
    assert_eq!(
        B64.decode(secret.trim_start_matches("whsec_"))
            .unwrap()
            .len(),
        32
    );
    assert_eq!(created["url"], url);
    assert_eq!(
        created["event_types"],
        json!(["basic4.changed", "customer.deceased"])
    );
    assert_eq!(created["status"], "active");
    assert_eq!(created["disabled_reason"], Value::Null);
    assert_eq!(app.count_events("webhook_endpoint.created").await, 1);
    assert_eq!(
        app.count_where(
            audit_events::Entity,
            audit_events::Column::Canonical.contains(&secret[6..20])
        )
        .await,
        0,
        "the secret is never audited"
    );

    // Every type, by leaving them out or giving none.
    for body in [
        json!({"url": "https://a.example/x"}),
        json!({"url": "https://a.example/y", "event_types": []}),
        json!({"url": "http://127.0.0.1:9/hook"}),
        json!({"url": "http://localhost:9/hook"}),
    ] {
        let made = created_body(create_endpoint(&app, body.clone()).await).await;
        assert_eq!(made["event_types"], json!([]), "{body}");
    }

    // What is refused, naming the field, writing nothing.
    let endpoints = app.count(webhook_endpoints::Entity).await;
    for (body, field) in [
        (json!({"url": "http://example.com/x"}), "url"),
        (json!({"url": "http://10.0.0.1/x"}), "url"),
        (json!({"url": "https://user:pw@core.bank.example/x"}), "url"),
        (json!({"url": "https://core.bank.example/x#frag"}), "url"),
        (json!({"url": "ftp://core.bank.example/x"}), "url"),
        (json!({"url": "not a url"}), "url"),
        (
            json!({"url": format!("https://a.example/{}", "x".repeat(2048))}),
            "url",
        ),
        (json!({}), "url"),
        (json!({"event_types": ["basic4.changed"]}), "url"),
        (
            json!({"url": "https://a.example/x", "event_types": ["nope"]}),
            "event_types[0]",
        ),
        (
            json!({"url": "https://a.example/x", "event_types": ["basic4.changed", "basic4.changed"]}),
            "event_types[1]",
        ),
        (
            json!({"url": "https://a.example/x", "colour": "blue"}),
            "colour",
        ),
        (json!({"url": 7}), "url"),
    ] {
        let problem =
            expect_problem(create_endpoint(&app, body.clone()).await, 422, "validation").await;
        assert_eq!(problem_fields(&problem), [field], "{body}: {problem}");
    }
    let problem = expect_problem(
        create_endpoint(&app, json!({"url": "https://a.example/123456789018"})).await,
        422,
        "my-number-refused",
    )
    .await;
    assert!(!problem.to_string().contains("123456789018"), "{problem}");
    let ten: Vec<&str> = ["basic4.changed"; 10].to_vec();
    let problem = expect_problem(
        create_endpoint(
            &app,
            json!({"url": "https://a.example/x", "event_types": ten}),
        )
        .await,
        422,
        "validation",
    )
    .await;
    assert_eq!(problem_fields(&problem), ["event_types"]);
    assert_eq!(app.count(webhook_endpoints::Entity).await, endpoints);

    // Only admins.
    for token in [app.operator(), integration(&app), app.auditor()] {
        expect_problem(
            app.post(
                "/v1/webhook-endpoints",
                &token,
                &json!({"url": "https://a.example/x"}),
            )
            .await,
            403,
            "forbidden",
        )
        .await;
        for path in [
            "/v1/webhook-endpoints".to_owned(),
            format!("/v1/webhook-endpoints/{id}"),
            format!("/v1/webhook-endpoints/{id}/attempts"),
        ] {
            expect_problem(app.get(&path, &token).await, 403, "forbidden").await;
        }
        for action in ["disable", "enable", "rotate-secret", "replay"] {
            expect_problem(
                app.post(
                    &format!("/v1/webhook-endpoints/{id}/{action}"),
                    &token,
                    &json!({}),
                )
                .await,
                403,
                "forbidden",
            )
            .await;
        }
    }
    assert_eq!(app.count(webhook_endpoints::Entity).await, endpoints);

    // The list and one endpoint: never a secret.
    let res = app.get("/v1/webhook-endpoints", &admin(&app)).await;
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    assert!(
        !text.contains("whsec_") && !text.contains("secret\""),
        "{text}"
    );
    let list: Value = serde_json::from_str(&text).unwrap();
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len() as i64, endpoints);
    assert_eq!(items[0]["id"], id.as_str(), "oldest first");
    // `pending`: what it has still to receive, of its types only.
    write(
        &app.db,
        vec![
            change_event(ids[0], 0),
            Event::ReviewOpened(ReviewOpened {
                review_id: Uuid::now_v7(),
                customer_id: ids[0],
                kind: "deceased".into(),
                detail: json!({}),
            }),
        ],
    )
    .await;
    assert_eq!(read_endpoint(&app, &id).await["pending"], 0);
    fan_out(&app.db).await.unwrap();
    let one = read_endpoint(&app, &id).await;
    assert_eq!(one["pending"], 0, "none of its types: {one}");
    let res = app
        .get("/v1/webhook-endpoints/x/attempts", &admin(&app))
        .await;
    expect_problem(res, 404, "not-found").await;
    let others = list["items"][1]["id"].as_str().unwrap().to_owned();
    assert_eq!(read_endpoint(&app, &others).await["pending"], 2);
    let text = app
        .get(&format!("/v1/webhook-endpoints/{id}"), &admin(&app))
        .await
        .text()
        .await
        .unwrap();
    assert!(!text.contains("whsec_"), "{text}");

    // Disable and enable, each audited once; again changes nothing.
    let res = endpoint_action(&app, &id, "disable", json!({})).await;
    assert_eq!(res.status(), 200);
    let disabled: Value = res.json().await.unwrap();
    assert_eq!(disabled["status"], "disabled");
    assert_eq!(disabled["disabled_reason"], "operator");
    assert_eq!(
        endpoint_action(&app, &id, "disable", json!({}))
            .await
            .status(),
        200
    );
    assert_eq!(app.count_events("webhook_endpoint.disabled").await, 1);
    let res = endpoint_action(&app, &id, "enable", json!({})).await;
    let enabled: Value = res.json().await.unwrap();
    assert_eq!(enabled["status"], "active");
    assert_eq!(enabled["disabled_reason"], Value::Null);
    assert_eq!(app.count_events("webhook_endpoint.enabled").await, 1);

    // Rotation: a new secret, the old one signing for the overlap.
    let res = endpoint_action(&app, &id, "rotate-secret", json!({"overlap_seconds": 600})).await;
    assert_eq!(res.status(), 200);
    let rotated: Value = res.json().await.unwrap();
    let new_secret = rotated["secret"].as_str().unwrap();
    assert!(new_secret.starts_with("whsec_") && new_secret != secret);
    let until = DateTime::parse_from_rfc3339(rotated["previous_secret_until"].as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc);
    let overlap = until - Utc::now();
    assert!(
        overlap > chrono::Duration::seconds(590) && overlap <= chrono::Duration::seconds(600),
        "{overlap}"
    );
    let res = endpoint_action(&app, &id, "rotate-secret", json!({})).await;
    let rotated: Value = res.json().await.unwrap();
    let until = DateTime::parse_from_rfc3339(rotated["previous_secret_until"].as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc);
    assert!(
        until - Utc::now() > chrono::Duration::hours(23),
        "a day by default"
    );
    for (body, field) in [
        (json!({"overlap_seconds": 700000}), "overlap_seconds"),
        (json!({"overlap_seconds": -1}), "overlap_seconds"),
        (json!({"overlap_seconds": "soon"}), "overlap_seconds"),
        (json!({"overlap": 1}), "overlap"),
    ] {
        let problem = expect_problem(
            endpoint_action(&app, &id, "rotate-secret", body.clone()).await,
            422,
            "validation",
        )
        .await;
        assert_eq!(problem_fields(&problem), [field], "{body}");
    }
    assert_eq!(app.count_events("webhook_endpoint.secret_rotated").await, 2);

    // Replay: a cursor of this feed is needed.
    for body in [
        json!({}),
        json!({"after": "garbage"}),
        json!({"after": "c1_AAAA"}),
    ] {
        let problem = expect_problem(
            endpoint_action(&app, &id, "replay", body.clone()).await,
            422,
            "validation",
        )
        .await;
        assert_eq!(problem_fields(&problem), ["after"], "{body}");
    }
    let res = endpoint_action(
        &app,
        &others,
        "replay",
        json!({"after": Cursor(0).to_string()}),
    )
    .await;
    assert_eq!(res.status(), 202);
    assert_eq!(res.json::<Value>().await.unwrap()["deliveries"], 2);
    assert_eq!(read_endpoint(&app, &others).await["pending"], 4);
    assert_eq!(app.count_events("webhook_endpoint.replayed").await, 1);

    // Attempts: a limit from 1 to 500.
    for bad in ["limit=0", "limit=501", "limit=x", "colour=blue"] {
        expect_problem(
            app.get(
                &format!("/v1/webhook-endpoints/{id}/attempts?{bad}"),
                &admin(&app),
            )
            .await,
            400,
            "invalid-query",
        )
        .await;
    }
    assert!(attempts(&app, &id).await.is_empty());

    // Delete: its deliveries go with it; then it is not found.
    let res = app
        .http
        .delete(app.url(&format!("/v1/webhook-endpoints/{others}")))
        .bearer_auth(admin(&app))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(app.count_events("webhook_endpoint.deleted").await, 1);
    let res = app
        .get(&format!("/v1/webhook-endpoints/{others}"), &admin(&app))
        .await;
    expect_problem(res, 404, "not-found").await;
    let res = app
        .http
        .delete(app.url(&format!("/v1/webhook-endpoints/{others}")))
        .bearer_auth(admin(&app))
        .send()
        .await
        .unwrap();
    expect_problem(res, 404, "not-found").await;
    for action in ["disable", "enable"] {
        expect_problem(
            endpoint_action(&app, &others, action, json!({})).await,
            404,
            "not-found",
        )
        .await;
    }
    expect_problem(
        endpoint_action(&app, &others, "rotate-secret", json!({})).await,
        404,
        "not-found",
    )
    .await;
    expect_problem(
        endpoint_action(
            &app,
            &others,
            "replay",
            json!({"after": Cursor(0).to_string()}),
        )
        .await,
        404,
        "not-found",
    )
    .await;
    assert_eq!(app.count_events("webhook_endpoint.deleted").await, 1);
    assert_eq!(
        kihon4_core::changes::webhooks::pending(&app.db, Uuid::parse_str(&others).unwrap())
            .await
            .unwrap(),
        0
    );

    // A replay from before what is kept is expired (once no endpoint has
    // still to receive the events).
    for other in list["items"].as_array().unwrap() {
        let other = other["id"].as_str().unwrap();
        if other != id && other != others {
            let res = app
                .http
                .delete(app.url(&format!("/v1/webhook-endpoints/{other}")))
                .bearer_auth(admin(&app))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 204);
        }
    }
    let removed = kihon4_core::changes::purge(&app.db, Utc::now() + chrono::Duration::days(1))
        .await
        .unwrap();
    assert_eq!(removed, 2);
    expect_problem(
        endpoint_action(&app, &id, "replay", json!({"after": Cursor(0).to_string()})).await,
        410,
        "cursor-expired",
    )
    .await;
    assert_eq!(app.count_events("webhook_endpoint.replayed").await, 1);
    assert_eq!(
        app.count_events("webhook_endpoint.deleted").await,
        endpoints - 1
    );
    app.assert_chain_verifies().await;
}

// ---------------------------------------------------------------------------
// 5. Deliveries

/// A sender that retries quickly: from 100 ms, for `retry_for`.
fn sender(retry_for: Duration) -> Sender {
    Sender::new(DeliverySettings {
        retry_base: Duration::from_millis(100),
        timeout: Duration::from_secs(2),
        retry_for,
        ..Default::default()
    })
    .unwrap()
}

/// Delivers as a worker does until the receiver has `n` events; panics
/// after `within`.
async fn deliver_until(
    app: &TestApp,
    sender: &Sender,
    receiver: &WebhookReceiver,
    n: usize,
    within: Duration,
) -> Vec<ReceivedEvent> {
    let deadline = Instant::now() + within;
    loop {
        deliver_due(&app.db, sender, "test-worker", 64)
            .await
            .unwrap();
        let got = receiver.received().await;
        if got.events.len() >= n {
            return got.events;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} delivered in {within:?}",
            got.events.len()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Delivers for `rounds` rounds, `pause` apart.
async fn deliver_rounds(app: &TestApp, sender: &Sender, rounds: usize, pause: Duration) {
    for _ in 0..rounds {
        deliver_due(&app.db, sender, "test-worker", 64)
            .await
            .unwrap();
        tokio::time::sleep(pause).await;
    }
}

/// Each customer's `customer_seq`s, in the order they arrived.
fn arrivals(events: &[ReceivedEvent]) -> BTreeMap<String, Vec<i64>> {
    let mut out: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for e in events {
        out.entry(e.customer_id.clone())
            .or_default()
            .push(e.customer_seq);
    }
    out
}

/// Every event of the table arrived exactly once, each customer's in order.
async fn assert_all_once_in_order(app: &TestApp, received: &[ReceivedEvent]) {
    let rows = change_rows(app).await;
    let mut expected: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for r in &rows {
        expected
            .entry(r.customer_id.to_string())
            .or_default()
            .push(r.customer_seq);
    }
    assert_eq!(arrivals(received), expected);
    let ids: HashSet<&str> = received.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids.len(), received.len(), "no event twice");
    assert_eq!(
        ids,
        rows.iter()
            .map(|r| r.id.to_string())
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect::<HashSet<_>>()
    );
    for e in received {
        assert_eq!(
            e.webhook_id,
            format!("msg_{}", Uuid::parse_str(&e.event_id).unwrap().simple())
        );
    }
}

async fn endpoint_row(app: &TestApp, id: &str) -> webhook_endpoints::Model {
    webhook_endpoints::Entity::find_by_id(Uuid::parse_str(id).unwrap())
        .one(&app.db)
        .await
        .unwrap()
        .unwrap()
}

async fn every_event_is_delivered_once_signed_as_the_feed_gives_it(backend: Backend) {
    let sim = spawn_sim().await;
    let app = consent_app(backend, &sim, |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let receiver = WebhookReceiver::start(dir.path(), &[]);
    // The endpoints come first: they receive what is written from then on.
    let (_, secret) = endpoint(&app, &receiver.url()).await;
    // A second one, for two types only.
    let res = create_endpoint(
        &app,
        json!({"url": receiver.url(), "event_types": ["consent.withdrawn", "review.resolved"]}),
    )
    .await;
    let filtered_secret = created_body(res).await["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    receiver
        .set(json!({"secrets": [secret, filtered_secret]}))
        .await;

    life_flows(&app, &sim).await;
    consent_flows(&app, &sim).await;
    let all = feed(&app).await;
    let kinds: HashSet<&str> = all.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds.len(), 9, "every type of event was written: {kinds:?}");
    let n = all.len();
    let sender = sender(Duration::from_secs(3600));
    let got = deliver_until(&app, &sender, &receiver, n + 2, Duration::from_secs(20)).await;
    deliver_rounds(&app, &sender, 3, Duration::from_millis(50)).await;
    let received = receiver.received().await;
    assert_eq!(received.rejected, 0);
    assert_eq!(received.failed, 0);
    assert_eq!(received.events.len(), n + 2, "nothing more: {got:?}");
    // The endpoint of every type got every event once, as the feed gives it.
    let (every, filtered): (Vec<ReceivedEvent>, Vec<ReceivedEvent>) = received
        .events
        .into_iter()
        .partition(|e| e.secret_index == 0);
    assert_all_once_in_order(&app, &every).await;
    let by_id: HashMap<&str, &ReceivedEvent> =
        every.iter().map(|e| (e.event_id.as_str(), e)).collect();
    for e in &all {
        let d = &e["data"];
        let got = by_id[d["event_id"].as_str().unwrap()];
        assert_eq!(got.event_type, e["type"].as_str().unwrap());
        assert_eq!(got.timestamp, e["timestamp"].as_str().unwrap());
        assert_eq!(got.cursor, d["cursor"].as_str().unwrap());
        assert_eq!(got.customer_id, d["customer_id"].as_str().unwrap());
        assert_eq!(got.customer_seq, d["customer_seq"].as_i64().unwrap());
        let sent_at = DateTime::from_timestamp(got.webhook_timestamp, 0).unwrap();
        assert!((Utc::now() - sent_at).num_seconds().abs() < 60);
    }
    // The feed gives the very JSON a webhook body carries.
    let rows = change_rows(&app).await;
    assert_eq!(
        rows.iter()
            .map(|r| envelope(r, ValuePolicy::ItemsOnly))
            .collect::<Vec<_>>(),
        all
    );
    // The endpoint of two types got those only.
    let mut want: Vec<&str> = all
        .iter()
        .filter(|e| e["type"] == "consent.withdrawn" || e["type"] == "review.resolved")
        .map(|e| e["data"]["event_id"].as_str().unwrap())
        .collect();
    let mut have: Vec<&str> = filtered.iter().map(|e| e.event_id.as_str()).collect();
    want.sort();
    have.sort();
    assert_eq!(have, want);
    assert_eq!(have.len(), 2);
    // Nothing is left to deliver; each delivery was one attempt.
    for endpoint in webhook_endpoints::Entity::find()
        .all(&app.db)
        .await
        .unwrap()
    {
        let id = endpoint.id.to_string();
        assert_eq!(read_endpoint(&app, &id).await["pending"], 0);
        let tried = attempts(&app, &id).await;
        assert!(
            tried
                .iter()
                .all(|a| a["status_code"] == 204 && a["error"] == Value::Null)
        );
    }
}

async fn a_flaky_receiver_and_an_outage_lose_nothing_and_keep_each_customer_in_order(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let ids = customers(&app, "FLAKY", 6).await;
    let mut receiver = WebhookReceiver::start(dir.path(), &[]);
    let (id, secret) = endpoint(&app, &receiver.url()).await;
    receiver
        .set(json!({"secrets": [secret], "mode": "flaky", "fail_rate": 0.3, "seed": 7}))
        .await;
    write_changes(&app.db, &ids, 6).await;
    let sender = sender(Duration::from_secs(3600));
    let got = deliver_until(&app, &sender, &receiver, 36, Duration::from_secs(25)).await;
    let state = receiver.received().await;
    assert_eq!(state.rejected, 0);
    assert!(state.failed > 0, "the receiver failed some: {state:?}");
    assert_all_once_in_order(&app, &got).await;
    let tried = attempts(&app, &id).await;
    assert!(
        tried
            .iter()
            .any(|a| a["status_code"] == 500 && a["error"] == "answered 500")
    );
    assert_eq!(tried.iter().filter(|a| a["status_code"] == 204).count(), 36);

    // An outage: events written while the port refuses connections arrive
    // once it is back, in order.
    receiver.set(json!({"mode": "up"})).await;
    receiver.stop();
    write_changes(&app.db, &ids, 3).await;
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(3) {
        deliver_rounds(&app, &sender, 1, Duration::from_millis(50)).await;
    }
    assert_eq!(receiver.received().await.events.len(), 36);
    let tried = attempts(&app, &id).await;
    assert!(
        tried
            .iter()
            .any(|a| a["status_code"] == Value::Null && a["error"] == "could not connect"),
        "{tried:?}"
    );
    let waiting = read_endpoint(&app, &id).await;
    assert_eq!(waiting["pending"], 18);
    assert!(waiting["failing_since"].is_string());
    receiver.resume();
    let got = deliver_until(&app, &sender, &receiver, 54, Duration::from_secs(15)).await;
    assert_eq!(receiver.received().await.rejected, 0);
    assert_all_once_in_order(&app, &got).await;
    let after = read_endpoint(&app, &id).await;
    assert_eq!(after["pending"], 0);
    assert_eq!(after["failing_since"], Value::Null);
    assert_eq!(after["status"], "active");
}

async fn a_rotated_secret_signs_beside_the_old_one_for_the_overlap(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let ids = customers(&app, "ROT", 2).await;
    let mut receiver = WebhookReceiver::start(dir.path(), &[]);
    let (id, old) = endpoint(&app, &receiver.url()).await;
    receiver.set(json!({"secrets": [old]})).await;
    let sender = sender(Duration::from_secs(3600));
    write_changes(&app.db, &ids, 2).await;
    deliver_until(&app, &sender, &receiver, 4, Duration::from_secs(10)).await;

    let res = endpoint_action(&app, &id, "rotate-secret", json!({"overlap_seconds": 3600})).await;
    assert_eq!(res.status(), 200);
    let new = res.json::<Value>().await.unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(new, old);
    // Signed with both: a receiver still on the old secret verifies them.
    write_changes(&app.db, &ids, 2).await;
    deliver_until(&app, &sender, &receiver, 8, Duration::from_secs(10)).await;
    assert_eq!(receiver.received().await.rejected, 0);
    // Switched to the new secret only, in the overlap.
    receiver.set(json!({"secrets": [new]})).await;
    write_changes(&app.db, &ids, 2).await;
    let got = deliver_until(&app, &sender, &receiver, 12, Duration::from_secs(10)).await;
    assert_eq!(receiver.received().await.rejected, 0);
    assert_all_once_in_order(&app, &got).await;
    // A restarted receiver keeps its secrets.
    receiver.stop();
    receiver.resume();

    // Without an overlap the old secret stops signing at once: a receiver
    // that kept it refuses, until it takes the new one.
    let res = endpoint_action(&app, &id, "rotate-secret", json!({"overlap_seconds": 0})).await;
    let newest = res.json::<Value>().await.unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    write(&app.db, vec![change_event(ids[0], 0)]).await;
    deliver_rounds(&app, &sender, 5, Duration::from_millis(100)).await;
    let state = receiver.received().await;
    assert!(state.rejected >= 1, "{state:?}");
    assert_eq!(state.events.len(), 12);
    assert!(
        attempts(&app, &id)
            .await
            .iter()
            .any(|a| a["status_code"] == 401)
    );
    receiver.set(json!({"secrets": [newest]})).await;
    let got = deliver_until(&app, &sender, &receiver, 13, Duration::from_secs(10)).await;
    assert_all_once_in_order(&app, &got).await;
    assert_eq!(app.count_events("webhook_endpoint.secret_rotated").await, 2);
}

async fn a_disabled_endpoint_gets_what_it_missed_once_enabled_and_replays_resend(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let ids = customers(&app, "PAUSE", 3).await;
    let receiver = WebhookReceiver::start(dir.path(), &[]);
    let (id, secret) = endpoint(&app, &receiver.url()).await;
    receiver.set(json!({"secrets": [secret]})).await;
    let sender = sender(Duration::from_secs(3600));
    write_changes(&app.db, &ids, 1).await;
    deliver_until(&app, &sender, &receiver, 3, Duration::from_secs(10)).await;

    let res = endpoint_action(&app, &id, "disable", json!({})).await;
    assert_eq!(res.status(), 200);
    write_changes(&app.db, &ids, 3).await;
    deliver_rounds(&app, &sender, 6, Duration::from_millis(100)).await;
    assert_eq!(
        receiver.received().await.events.len(),
        3,
        "nothing while disabled"
    );
    assert_eq!(read_endpoint(&app, &id).await["pending"], 9);
    assert_eq!(attempts(&app, &id).await.len(), 3);

    let res = endpoint_action(&app, &id, "enable", json!({})).await;
    assert_eq!(res.status(), 200);
    let got = deliver_until(&app, &sender, &receiver, 12, Duration::from_secs(10)).await;
    assert_all_once_in_order(&app, &got).await;
    assert_eq!(read_endpoint(&app, &id).await["pending"], 0);

    // A replay sends again, in order, what came after the cursor.
    let all = feed(&app).await;
    let after = all[4]["data"]["cursor"].as_str().unwrap().to_owned();
    let res = endpoint_action(&app, &id, "replay", json!({"after": after})).await;
    assert_eq!(res.status(), 202);
    assert_eq!(res.json::<Value>().await.unwrap()["deliveries"], 7);
    let got = deliver_until(&app, &sender, &receiver, 19, Duration::from_secs(10)).await;
    deliver_rounds(&app, &sender, 2, Duration::from_millis(50)).await;
    assert_eq!(receiver.received().await.events.len(), 19);
    let again = &got[12..];
    let mut resent: Vec<&str> = again.iter().map(|e| e.event_id.as_str()).collect();
    let mut expected: Vec<&str> = all[5..]
        .iter()
        .map(|e| e["data"]["event_id"].as_str().unwrap())
        .collect();
    resent.sort();
    expected.sort();
    assert_eq!(resent, expected);
    // Each customer's replayed events in order too.
    for seqs in arrivals(again).values() {
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    }
    assert_eq!(app.count_events("webhook_endpoint.replayed").await, 1);
}

async fn an_endpoint_down_past_its_retry_period_is_disabled_and_attempts_are_listed(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let ids = customers(&app, "DOWN", 1).await;
    let receiver = WebhookReceiver::start(dir.path(), &[]);
    let (id, secret) = endpoint(&app, &receiver.url()).await;
    receiver
        .set(json!({"secrets": [secret], "mode": "down"}))
        .await;
    write_changes(&app.db, &ids, 2).await;
    let sender = sender(Duration::from_secs(2));
    let started = Instant::now();
    loop {
        deliver_rounds(&app, &sender, 1, Duration::from_millis(50)).await;
        if endpoint_row(&app, &id).await.status == "disabled" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "still active after {:?}",
            started.elapsed()
        );
    }
    assert!(started.elapsed() >= Duration::from_secs(2));
    let disabled = read_endpoint(&app, &id).await;
    assert_eq!(disabled["disabled_reason"], "failing");
    assert_eq!(disabled["pending"], 2);
    assert!(disabled["failing_since"].is_string());
    assert_eq!(
        app.count_where(
            audit_events::Entity,
            audit_events::Column::Action
                .eq("webhook_endpoint.disabled")
                .and(audit_events::Column::Actor.eq(Actor::worker().as_str()))
        )
        .await,
        1
    );
    // Disabled: no more attempts.
    let tried = attempts(&app, &id).await;
    deliver_rounds(&app, &sender, 3, Duration::from_millis(100)).await;
    assert_eq!(attempts(&app, &id).await.len(), tried.len());
    assert!(tried.len() >= 3, "{tried:?}");
    let first = feed(&app).await[0]["data"]["cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    for a in &tried {
        assert_eq!(a["status_code"], 503, "{a}");
        assert_eq!(a["error"], "answered 503");
        assert_eq!(
            a["cursor"],
            first.as_str(),
            "the second waits behind the first"
        );
        assert!(a["duration_ms"].as_i64().unwrap() >= 0);
    }
    assert!(receiver.received().await.failed as usize >= tried.len());

    // Fixed and enabled: everything arrives, and the attempts list both.
    receiver.set(json!({"mode": "up"})).await;
    let res = endpoint_action(&app, &id, "enable", json!({})).await;
    assert_eq!(res.status(), 200);
    let got = deliver_until(&app, &sender, &receiver, 2, Duration::from_secs(10)).await;
    assert_all_once_in_order(&app, &got).await;
    let tried = attempts(&app, &id).await;
    assert_eq!(tried.iter().filter(|a| a["status_code"] == 204).count(), 2);
    assert!(tried.iter().filter(|a| a["status_code"] == 503).count() >= 3);
    assert_eq!(tried[0]["status_code"], 204, "newest first");
    let times: Vec<DateTime<Utc>> = tried
        .iter()
        .map(|a| a["attempted_at"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]));
    let limited = app
        .get(
            &format!("/v1/webhook-endpoints/{id}/attempts?limit=1"),
            &admin(&app),
        )
        .await
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(limited["items"].as_array().unwrap().len(), 1);
    let after = read_endpoint(&app, &id).await;
    assert_eq!(after["status"], "active");
    assert_eq!(after["failing_since"], Value::Null);
    assert_eq!(after["pending"], 0);
}

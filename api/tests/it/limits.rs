//! Rate limits per client address and per token subject, the trusted proxy
//! header, and refusals counted so that a flood adds a bounded number of
//! audit events.

use futures_util::StreamExt;
use kihon4_api::limits::Limits;
use kihon4_core::client_address::{ProxyHeader, TrustedProxies};
use kihon4_core::entities::{audit_events, customers};
use kihon4_core::refusals::{RefusalSettings, seal_closed};
use kihon4_test_support::both;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use serde_json::Value;

use crate::helpers::{Backend, Guard, TestApp, expect_problem, refusal_tallies, token_for};
use crate::sim::spawn_sim;
use kihon4_core::auth::Role;

both!(
    a_flood_of_refusals_adds_a_bounded_number_of_events,
    a_closed_window_is_sealed_once_by_whoever_comes_first,
    callers_with_a_token_are_limited_per_subject,
    a_proxy_header_is_believed_only_from_a_trusted_peer,
    refused_callbacks_are_counted_per_source_and_window,
    the_customer_pages_have_a_stricter_limit_per_client,
);

fn guard(per_address: u32, per_subject: u32, individually: u32, window: i64) -> Guard {
    Guard {
        limits: Limits::new(per_address, per_subject, TrustedProxies::default()),
        refusals: RefusalSettings {
            window_seconds: window,
            individually,
        },
    }
}

/// The events of `action`, oldest first, with their data.
async fn events(app: &TestApp, action: &str) -> Vec<(audit_events::Model, Value)> {
    audit_events::Entity::find()
        .filter(audit_events::Column::Action.eq(action))
        .order_by_asc(audit_events::Column::Seq)
        .all(&app.db)
        .await
        .unwrap()
        .into_iter()
        .map(|e| {
            let canonical: Value = serde_json::from_str(&e.canonical).unwrap();
            (e, canonical["data"].clone())
        })
        .collect()
}

/// How many refusals the events of `action` stand for: one each, or the
/// aggregate's count.
fn refusals_in(events: &[(audit_events::Model, Value)]) -> i64 {
    events
        .iter()
        .map(|(_, data)| data["aggregate"]["count"].as_i64().unwrap_or(1))
        .sum()
}

async fn a_flood_of_refusals_adds_a_bounded_number_of_events(backend: Backend) {
    let app = TestApp::spawn_guarded(backend, guard(1000, 6000, 10, 60)).await;
    let before = app.count(audit_events::Entity).await;
    let statuses: Vec<(u16, Option<String>, Option<Value>)> = futures_util::stream::iter(0..2000)
        .map(|i| {
            let req = app
                .http
                .get(app.url("/v1/customers"))
                .header("x-request-id", format!("flood-{i}"));
            async move {
                let res = req.send().await.unwrap();
                let status = res.status().as_u16();
                let retry = res
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_owned());
                let body = res.json::<Value>().await.ok();
                (status, retry, body)
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let denied = statuses.iter().filter(|(s, _, _)| *s == 401).count() as i64;
    let limited: Vec<_> = statuses.iter().filter(|(s, _, _)| *s == 429).collect();
    assert_eq!(denied + limited.len() as i64, 2000, "only 401 and 429");
    assert!(
        denied >= 1000,
        "the whole minute's allowance first: {denied}"
    );
    assert!(!limited.is_empty(), "then 429");
    for (_, retry, body) in &limited {
        let wait: u32 = retry.as_deref().expect("Retry-After").parse().unwrap();
        assert!((1..=60).contains(&wait));
        let body = body.as_ref().unwrap();
        assert_eq!(body["type"], "https://kihon4.dev/problems/rate-limited");
        assert_eq!(body["status"], 429);
    }
    // Before the windows close: the first ten of each window, one event each.
    // A flood that runs past a window's end seals that window with the
    // next window's first refusal: one aggregate event among them.
    let open = events(&app, "auth.denied").await;
    let (inline, individual): (Vec<_>, Vec<_>) =
        open.iter().partition(|(_, d)| d["aggregate"].is_object());
    assert!(individual.len() <= 20, "{} events", individual.len());
    assert!(inline.len() <= 1, "{} windows sealed inline", inline.len());
    assert!(individual.iter().all(|(e, d)| e.actor == "anonymous"
        && d["source"] == "address:127.0.0.1"
        && d["attempt"]["reason"] == "missing"));
    // Sealed (here as the housekeeping does): a window's rest is one event.
    let later = chrono::Utc::now() + chrono::Duration::seconds(120);
    let sealed = seal_closed(&app.db, later).await.unwrap();
    assert!(
        (1..=2).contains(&(sealed + inline.len() as u64)),
        "{sealed} sealed, {} inline",
        inline.len()
    );
    assert_eq!(seal_closed(&app.db, later).await.unwrap(), 0, "sealed once");
    let all = events(&app, "auth.denied").await;
    assert_eq!(all.len() as u64, open.len() as u64 + sealed);
    assert!(all.len() <= 22);
    assert_eq!(refusals_in(&all), denied, "every refusal counted once");
    assert_eq!(
        app.count(audit_events::Entity).await - before,
        all.len() as i64
    );
    assert_eq!(app.count(refusal_tallies::Entity).await, 0);
    for (event, data) in all.iter().filter(|(_, d)| d["aggregate"].is_object()) {
        let aggregate = &data["aggregate"];
        assert_eq!(event.actor, "anonymous");
        assert_eq!(event.request_id, None);
        assert_eq!(data["source"], "address:127.0.0.1");
        assert_eq!(aggregate["recorded_individually"], 10);
        assert!(aggregate["count"].as_i64().unwrap() > 0);
        for id in ["first_request_id", "last_request_id"] {
            assert!(aggregate[id].as_str().unwrap().starts_with("flood-"));
        }
        let (start, end) = (
            chrono::DateTime::parse_from_rfc3339(aggregate["window_start"].as_str().unwrap())
                .unwrap(),
            chrono::DateTime::parse_from_rfc3339(aggregate["window_end"].as_str().unwrap())
                .unwrap(),
        );
        assert_eq!((end - start).num_seconds(), 60);
    }
    app.assert_chain_verifies().await;
}

async fn a_closed_window_is_sealed_once_by_whoever_comes_first(backend: Backend) {
    // Every refusal counted only, in windows of two seconds; the five sent
    // early in one window.
    let app = TestApp::spawn_guarded(backend, guard(1000, 6000, 0, 2)).await;
    let into_window = chrono::Utc::now().timestamp_millis().rem_euclid(2000);
    tokio::time::sleep(std::time::Duration::from_millis(
        (2050 - into_window) as u64,
    ))
    .await;
    for i in 0..5 {
        let res = app
            .http
            .get(app.url("/v1/customers"))
            .header("x-request-id", format!("r-{i}"))
            .send()
            .await
            .unwrap();
        expect_problem(res, 401, "unauthorized").await;
    }
    assert!(events(&app, "auth.denied").await.is_empty());
    assert_eq!(app.count(refusal_tallies::Entity).await, 1);
    let into_window = chrono::Utc::now().timestamp_millis().rem_euclid(2000);
    tokio::time::sleep(std::time::Duration::from_millis(
        (2050 - into_window) as u64,
    ))
    .await;
    // The next refusal from the same source, and two housekeepers, at once.
    let now = chrono::Utc::now();
    let next = app
        .http
        .get(app.url("/v1/customers"))
        .header("x-request-id", "r-next")
        .send();
    let (res, a, b) = tokio::join!(next, seal_closed(&app.db, now), seal_closed(&app.db, now));
    expect_problem(res.unwrap(), 401, "unauthorized").await;
    let (a, b) = (a.unwrap(), b.unwrap());
    let sealed = events(&app, "auth.denied").await;
    assert!(a + b <= sealed.len() as u64);
    assert_eq!(refusals_in(&sealed), 5, "the five, each once");
    assert!(
        sealed
            .iter()
            .all(|(_, d)| d["aggregate"]["recorded_individually"] == 0)
    );
    let ids: Vec<&str> = sealed
        .iter()
        .flat_map(|(_, d)| {
            [
                d["aggregate"]["first_request_id"].as_str().unwrap(),
                d["aggregate"]["last_request_id"].as_str().unwrap(),
            ]
        })
        .collect();
    assert!(ids.contains(&"r-0") && ids.contains(&"r-4") && !ids.contains(&"r-next"));
    // The last refusal's window is still open; sealed later, once.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(seal_closed(&app.db, chrono::Utc::now()).await.unwrap(), 1);
    assert_eq!(refusals_in(&events(&app, "auth.denied").await), 6);
    assert_eq!(app.count(refusal_tallies::Entity).await, 0);
    app.assert_chain_verifies().await;
}

async fn callers_with_a_token_are_limited_per_subject(backend: Backend) {
    let app = TestApp::spawn_guarded(backend, guard(1000, 5, 10, 60)).await;
    let alice = token_for("alice", &[Role::Operator]);
    let bob = token_for("bob", &[Role::Operator]);
    for _ in 0..5 {
        assert_eq!(app.get("/v1/customers", &alice).await.status(), 200);
    }
    let before = app.count(audit_events::Entity).await;
    let res = app.get("/v1/customers", &alice).await;
    assert_eq!(res.status(), 429);
    let wait: u32 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=12).contains(&wait), "one request per 12 s: {wait}");
    expect_problem(res, 429, "rate-limited").await;
    // Not even a write is let through, and nothing is recorded.
    let res = app
        .post(
            "/v1/customers",
            &alice,
            &crate::helpers::customer_body("LIMIT-1"),
        )
        .await;
    expect_problem(res, 429, "rate-limited").await;
    assert_eq!(app.count(customers::Entity).await, 0);
    assert_eq!(app.count(audit_events::Entity).await, before);
    // Another subject from the same address, and callers without a token,
    // have limits of their own.
    assert_eq!(app.get("/v1/customers", &bob).await.status(), 200);
    let res = app.http.get(app.url("/v1/customers")).send().await.unwrap();
    expect_problem(res, 401, "unauthorized").await;
}

async fn a_proxy_header_is_believed_only_from_a_trusted_peer(backend: Backend) {
    let get = |app: &TestApp, forwarded: &str| {
        app.http
            .get(app.url("/v1/customers"))
            .header("x-forwarded-for", forwarded.to_owned())
            .send()
    };
    // No proxy trusted: the header changes nothing; the peer is the client.
    let app = TestApp::spawn_guarded(backend, guard(3, 6000, 10, 60)).await;
    for client in ["198.51.100.1", "198.51.100.2", "198.51.100.3"] {
        expect_problem(get(&app, client).await.unwrap(), 401, "unauthorized").await;
    }
    expect_problem(
        get(&app, "198.51.100.4").await.unwrap(),
        429,
        "rate-limited",
    )
    .await;
    let sources: Vec<Value> = events(&app, "auth.denied")
        .await
        .into_iter()
        .map(|(_, d)| d["source"].clone())
        .collect();
    assert_eq!(sources, vec![Value::from("address:127.0.0.1"); 3]);

    // The local proxy trusted: its report counts, read from the right.
    let mut trusting = guard(3, 6000, 10, 60);
    trusting.limits = Limits::new(
        3,
        6000,
        TrustedProxies {
            networks: vec![TrustedProxies::parse_network("127.0.0.1").unwrap()],
            header: ProxyHeader::XForwardedFor,
        },
    );
    let app = TestApp::spawn_guarded(backend, trusting).await;
    for _ in 0..3 {
        expect_problem(
            get(&app, "198.51.100.1").await.unwrap(),
            401,
            "unauthorized",
        )
        .await;
    }
    expect_problem(
        get(&app, "198.51.100.1").await.unwrap(),
        429,
        "rate-limited",
    )
    .await;
    // A forged entry on the left does not help the same client.
    expect_problem(
        get(&app, "203.0.113.99, 198.51.100.1").await.unwrap(),
        429,
        "rate-limited",
    )
    .await;
    // Another client behind the proxy has its own allowance.
    expect_problem(
        get(&app, "198.51.100.2").await.unwrap(),
        401,
        "unauthorized",
    )
    .await;
    // The other header is not read.
    let res = app
        .http
        .get(app.url("/v1/customers"))
        .header("forwarded", "for=198.51.100.7")
        .send()
        .await
        .unwrap();
    expect_problem(res, 401, "unauthorized").await;
    let sources: Vec<String> = events(&app, "auth.denied")
        .await
        .into_iter()
        .map(|(_, d)| d["source"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        sources,
        [
            "address:198.51.100.1",
            "address:198.51.100.1",
            "address:198.51.100.1",
            "address:198.51.100.2",
            "address:127.0.0.1",
        ]
    );
}

async fn refused_callbacks_are_counted_per_source_and_window(backend: Backend) {
    let sim = spawn_sim().await;
    let app = TestApp::spawn_mynaportal_guarded(
        backend,
        sim.provider(),
        "kihon4-sim",
        guard(1000, 6000, 2, 60),
    )
    .await;
    for i in 0..7 {
        let res = app
            .http
            .post(app.url("/v1/webhooks/mynaportal"))
            .header("content-type", "application/jwt")
            .header("x-request-id", format!("cb-{i}"))
            .body("not.a.jwt")
            .send()
            .await
            .unwrap();
        expect_problem(res, 400, "callback-malformed").await;
    }
    let open = events(&app, "webhook.refused").await;
    assert_eq!(open.len(), 2);
    assert!(open.iter().all(|(e, d)| e.actor == "provider"
        && d["reason"] == "callback-malformed"
        && d["source"] == "address:127.0.0.1"));
    let later = chrono::Utc::now() + chrono::Duration::seconds(120);
    seal_closed(&app.db, later).await.unwrap();
    let all = events(&app, "webhook.refused").await;
    assert!(all.len() <= 4, "{}", all.len());
    assert_eq!(refusals_in(&all), 7);
    let (event, data) = all
        .iter()
        .find(|(_, d)| d["aggregate"].is_object())
        .unwrap();
    assert_eq!(event.actor, "provider");
    assert_eq!(event.subject_type, "webhook");
    assert_eq!(data["aggregate"]["recorded_individually"], 2);
    app.assert_chain_verifies().await;
}

async fn the_customer_pages_have_a_stricter_limit_per_client(backend: Backend) {
    let mut trusting = guard(1000, 6000, 10, 60);
    trusting.limits = Limits::new(
        1000,
        6000,
        TrustedProxies {
            networks: vec![TrustedProxies::parse_network("127.0.0.0/8").unwrap()],
            header: ProxyHeader::Forwarded,
        },
    );
    let app = TestApp::spawn_guarded(backend, trusting).await;
    let before = app.count(audit_events::Entity).await;
    let page = |client: &str| {
        app.http
            .get(app.url("/consent/no-such-token"))
            .header("forwarded", format!("for={client}"))
            .send()
    };
    for _ in 0..kihon4_api::limits::PAGES_PER_MINUTE {
        assert_eq!(page("198.51.100.1").await.unwrap().status(), 404);
    }
    let res = page("198.51.100.1").await.unwrap();
    assert_eq!(res.status(), 429);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let wait: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait));
    // Another customer behind the same proxy is not held back.
    assert_eq!(page("198.51.100.2").await.unwrap().status(), 404);
    assert_eq!(
        app.count(audit_events::Entity).await,
        before,
        "pages append nothing"
    );
}

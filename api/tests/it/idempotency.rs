use kihon4_test_support::both;
use serde_json::Value;

use crate::helpers::{Backend, TestApp, customer_body, expect_problem, token_for};
use kihon4_core::auth::Role;
use kihon4_core::entities::{customers, idempotency_keys};

both!(
    a_retry_with_the_same_key_gets_the_first_response,
    a_key_reused_for_another_body_is_refused,
    concurrent_requests_with_one_key_run_once,
    keys_belong_to_their_caller,
    keys_are_forgotten_after_retention,
    refusals_are_not_kept_for_replay,
);

async fn post_with_key(app: &TestApp, token: &str, key: &str, body: &Value) -> reqwest::Response {
    app.http
        .post(app.url("/v1/customers"))
        .bearer_auth(token)
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn a_retry_with_the_same_key_gets_the_first_response(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.operator();
    let first = post_with_key(&app, &token, "key-1", &customer_body("IDEM-1")).await;
    assert_eq!(first.status(), 201);
    let location = first.headers()["location"].clone();
    let first_body: Value = first.json().await.unwrap();
    let again = post_with_key(&app, &token, "key-1", &customer_body("IDEM-1")).await;
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.headers()["location"], location);
    assert_eq!(again.json::<Value>().await.unwrap(), first_body);
    assert_eq!(app.count(customers::Entity).await, 1);
    assert_eq!(app.audit_actions().await, ["customer.created"]);

    // A refusal is a response too: replayed, not re-run.
    let mut bad = customer_body("IDEM-2");
    bad["email"] = "nope".into();
    expect_problem(
        post_with_key(&app, &token, "key-2", &bad).await,
        422,
        "validation",
    )
    .await;
    let replay = post_with_key(&app, &token, "key-2", &bad).await;
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    expect_problem(replay, 422, "validation").await;

    for bad_key in ["", "has space", &"k".repeat(256)] {
        let res = post_with_key(&app, &token, bad_key, &customer_body("IDEM-3")).await;
        expect_problem(res, 400, "invalid-idempotency-key").await;
    }
    assert_eq!(app.count(customers::Entity).await, 1);
}

async fn a_key_reused_for_another_body_is_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.operator();
    assert_eq!(
        post_with_key(&app, &token, "key-9", &customer_body("IDEM-9"))
            .await
            .status(),
        201
    );
    let res = post_with_key(&app, &token, "key-9", &customer_body("IDEM-10")).await;
    expect_problem(res, 422, "idempotency-key-reused").await;
    assert_eq!(app.count(customers::Entity).await, 1);
}

async fn concurrent_requests_with_one_key_run_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.operator();
    let body = customer_body("IDEM-RACE");
    let calls = (0..6).map(|_| post_with_key(&app, &token, "race-key", &body));
    let responses = futures_util::future::join_all(calls).await;
    let statuses: Vec<u16> = responses.iter().map(|r| r.status().as_u16()).collect();
    assert!(
        statuses.iter().all(|s| *s == 201 || *s == 409),
        "{statuses:?}"
    );
    assert!(statuses.contains(&201), "{statuses:?}");
    for res in responses {
        if res.status() == 409 {
            assert_eq!(res.headers()["retry-after"], "1");
            expect_problem(res, 409, "idempotency-in-progress").await;
        }
    }
    assert_eq!(app.count(customers::Entity).await, 1);
    assert_eq!(app.audit_actions().await, ["customer.created"]);
}

async fn keys_belong_to_their_caller(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = token_for("alice", &[Role::Operator]);
    let bob = token_for("bob", &[Role::Operator]);
    assert_eq!(
        post_with_key(&app, &alice, "shared", &customer_body("IDEM-A"))
            .await
            .status(),
        201
    );
    // Bob's request with the same key is his own, not a replay of Alice's.
    let res = post_with_key(&app, &bob, "shared", &customer_body("IDEM-B")).await;
    assert_eq!(res.status(), 201);
    assert!(!res.headers().contains_key("idempotent-replayed"));
    assert_eq!(app.count(customers::Entity).await, 2);
}

async fn keys_are_forgotten_after_retention(backend: Backend) {
    use chrono::Duration;
    use kihon4_core::idempotency::{Claim, claim, purge};
    let app = TestApp::spawn(backend).await;
    let token = app.operator();
    assert_eq!(
        post_with_key(&app, &token, "old-key", &customer_body("IDEM-OLD"))
            .await
            .status(),
        201
    );
    let now = chrono::Utc::now();
    assert_eq!(
        purge(&app.db, now, Duration::hours(24)).await.unwrap(),
        0,
        "young keys stay"
    );
    // A claim made long ago and still held at the time of the purge stays.
    let then = now - Duration::hours(30);
    assert_eq!(
        claim(&app.db, "tester", "running", "h", then)
            .await
            .unwrap(),
        Claim::Execute
    );
    assert_eq!(
        purge(&app.db, then + Duration::seconds(30), Duration::zero())
            .await
            .unwrap(),
        0
    );
    assert_eq!(app.count(idempotency_keys::Entity).await, 2);
    // Later both are past retention: the finished one and the abandoned claim go.
    assert_eq!(
        purge(&app.db, now + Duration::hours(25), Duration::hours(24))
            .await
            .unwrap(),
        2
    );
    assert_eq!(app.count(idempotency_keys::Entity).await, 0);
    // The key is free again: the same request runs anew and meets the existing customer.
    let res = post_with_key(&app, &token, "old-key", &customer_body("IDEM-OLD")).await;
    expect_problem(res, 409, "external-ref-taken").await;
}

async fn refusals_are_not_kept_for_replay(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // Without a token the key is not even looked at: the route refuses.
    let res = app
        .http
        .post(app.url("/v1/customers"))
        .header("idempotency-key", "has space")
        .json(&customer_body("IDEM-R"))
        .send()
        .await
        .unwrap();
    expect_problem(res, 401, "unauthorized").await;
    // A wrong role is refused; the same key with the right role then runs.
    let auditor = token_for("carol", &[Role::Auditor]);
    expect_problem(
        post_with_key(&app, &auditor, "k-r", &customer_body("IDEM-R")).await,
        403,
        "forbidden",
    )
    .await;
    expect_problem(
        post_with_key(&app, &auditor, "k-r", &customer_body("IDEM-R")).await,
        403,
        "forbidden",
    )
    .await;
    let carol = token_for("carol", &[Role::Operator]);
    let res = post_with_key(&app, &carol, "k-r", &customer_body("IDEM-R")).await;
    assert_eq!(res.status(), 201);
    assert!(!res.headers().contains_key("idempotent-replayed"));
    // A later token of the same subject without the role gets no replay.
    let res = post_with_key(&app, &auditor, "k-r", &customer_body("IDEM-R")).await;
    expect_problem(res, 403, "forbidden").await;
    // Each refusal was judged, and audited, on its own.
    assert_eq!(
        app.audit_actions().await,
        [
            "auth.denied",
            "auth.denied",
            "auth.denied",
            "customer.created",
            "auth.denied"
        ]
    );
}

use kihon4_core::entities::audit_events;
use kihon4_test_support::both;
use serde_json::Value;

use crate::helpers::{Backend, TestApp, expect_problem};

both!(
    health_readiness_and_metrics,
    readiness_fails_while_migrations_are_pending,
    openapi_and_docs_describe_every_route,
    request_ids_are_echoed_or_made,
    unknown_routes_are_problems,
    every_answer_forbids_caching_and_sniffing,
);

async fn health_readiness_and_metrics(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let res = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let res = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "ready");
    app.create_customer("MET-1").await;
    let text = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(
            "kihon4_http_requests_total{method=\"POST\",route=\"/v1/customers\",status=\"201\"}"
        ),
        "{text}"
    );
    assert!(text.contains("kihon4_http_request_duration_seconds_bucket"));
    assert!(text.contains("kihon4_audit_appends_total"));
}

async fn readiness_fails_while_migrations_are_pending(backend: Backend) {
    let app = TestApp::spawn_with(backend, false).await;
    let res = app.http.get(app.url("/readyz")).send().await.unwrap();
    let problem = expect_problem(res, 503, "not-ready").await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("kihon4 migrate")
    );
    assert_eq!(
        app.http
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

async fn openapi_and_docs_describe_every_route(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let doc: Value = app
        .http
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths = doc["paths"].as_object().unwrap();
    for path in [
        "/v1/customers",
        "/v1/customers/{id}",
        "/v1/customers/{id}/history",
        "/v1/audit/events",
        "/healthz",
        "/readyz",
    ] {
        assert!(paths.contains_key(path), "{path} missing");
    }
    assert_eq!(
        doc["paths"]["/v1/customers"]["post"]["security"][0]["bearer"][0],
        "operator"
    );
    assert_eq!(
        doc["paths"]["/v1/audit/events"]["get"]["security"][0]["bearer"][0],
        "auditor"
    );
    let res = app.http.get(app.url("/docs")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );
    let html = res.text().await.unwrap();
    assert!(html.contains("/v1/customers/{id}/history"));
    assert!(html.contains("operator"));
}

async fn request_ids_are_echoed_or_made(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let res = app
        .http
        .get(app.url("/healthz"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "abc-123");
    let res = app
        .http
        .get(app.url("/healthz"))
        .header("x-request-id", "bad id\u{7f}")
        .send()
        .await;
    if let Ok(res) = res {
        let id = res.headers()["x-request-id"].to_str().unwrap();
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    }
    let res = app
        .http
        .get(app.url("/healthz"))
        .header("x-request-id", "x".repeat(200))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"].len(), 36);
    // The audit event of a request carries its id.
    let res = app
        .http
        .post(app.url("/v1/customers"))
        .bearer_auth(app.operator())
        .header("x-request-id", "trace-42")
        .json(&crate::helpers::customer_body("RID-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "trace-42");
    let events: Value = app
        .get("/v1/audit/events", &app.auditor())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(events["items"][0]["request_id"], "trace-42");
}

async fn unknown_routes_are_problems(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    expect_problem(
        app.http.get(app.url("/v2/nothing")).send().await.unwrap(),
        404,
        "not-found",
    )
    .await;
    // A route's path with another method: 405 naming the methods it takes.
    let res = app
        .http
        .delete(app.url("/v1/customers"))
        .bearer_auth(app.operator())
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["allow"], "GET, POST");
    expect_problem(res, 405, "method-not-allowed").await;
    let res = app
        .http
        .put(app.url(&format!("/v1/customers/{}", uuid::Uuid::new_v4())))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["allow"], "GET, PATCH");
    expect_problem(res, 405, "method-not-allowed").await;
    assert_eq!(
        app.count(audit_events::Entity).await,
        0,
        "nothing was written"
    );
}

async fn every_answer_forbids_caching_and_sniffing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let customer = app.create_customer("CACHE-1").await;
    let id = customer["id"].as_str().unwrap();
    let operator = app.operator();
    let auditor = app.auditor();
    let cases: Vec<(reqwest::RequestBuilder, u16)> = vec![
        (
            app.http
                .get(app.url(&format!("/v1/customers/{id}")))
                .bearer_auth(&operator),
            200,
        ),
        (
            app.http
                .get(app.url(&format!("/v1/customers/{id}/history")))
                .bearer_auth(&operator),
            200,
        ),
        (
            app.http
                .get(app.url("/v1/audit/events"))
                .bearer_auth(&auditor),
            200,
        ),
        (app.http.get(app.url("/healthz")), 200),
        (app.http.get(app.url("/openapi.json")), 200),
        (app.http.get(app.url("/metrics")), 200),
        // Refusals and errors too.
        (app.http.get(app.url(&format!("/v1/customers/{id}"))), 401),
        (
            app.http
                .get(app.url("/v1/customers?limit=0"))
                .bearer_auth(&operator),
            400,
        ),
        (
            app.http
                .post(app.url("/v1/customers"))
                .bearer_auth(&operator)
                .json(&serde_json::json!({"colour": "blue"})),
            422,
        ),
        (app.http.get(app.url("/v2/nothing")), 404),
        (app.http.get(app.url("/consent/no-such-token")), 404),
    ];
    for (request, status) in cases {
        let res = request.send().await.unwrap();
        let url = res.url().path().to_owned();
        assert_eq!(res.status(), status, "{url}");
        assert_eq!(res.headers()["cache-control"], "no-store", "{url}");
        assert_eq!(res.headers()["x-content-type-options"], "nosniff", "{url}");
        assert_eq!(
            res.headers().get_all("cache-control").iter().count(),
            1,
            "{url}"
        );
    }
    // The pages' style sheet holds nothing personal and may be cached.
    let res = app
        .http
        .get(app.url("/consent/assets/style.css"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "public, max-age=3600");
    assert_eq!(res.headers()["x-content-type-options"], "nosniff");
}

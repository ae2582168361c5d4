use jsonwebtoken::{Algorithm, EncodingKey, Header};
use kihon4_core::auth::Role;
use kihon4_core::entities::{audit_events, customers};
use kihon4_test_support::both;
use serde_json::{Value, json};

use crate::helpers::{
    AUDIENCE, Backend, ISSUER, SECRET, TestApp, customer_body, expect_problem, token_for,
};

both!(
    every_route_refuses_bad_tokens_and_audits_it,
    roles_are_enforced_per_route,
    refusals_come_before_any_other_check,
);

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn sign(claims: Value, secret: &str, alg: Algorithm) -> String {
    jsonwebtoken::encode(
        &Header::new(alg),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn claims(exp: u64) -> Value {
    json!({"sub": "mallory", "roles": ["admin"], "exp": exp, "iss": ISSUER, "aud": AUDIENCE})
}

/// Tokens that must never pass, with why.
fn bad_tokens() -> Vec<(&'static str, Option<String>)> {
    let b64 = |v: &Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    };
    let alg_none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&claims(now() + 600))
    );
    let mut no_exp = claims(0);
    no_exp.as_object_mut().unwrap().remove("exp");
    vec![
        ("missing", None),
        (
            "expired",
            Some(sign(claims(now() - 3600), SECRET, Algorithm::HS256)),
        ),
        (
            "wrongly signed",
            Some(sign(
                claims(now() + 600),
                "another-secret-another-secret-another",
                Algorithm::HS256,
            )),
        ),
        ("alg none", Some(alg_none)),
        (
            "other algorithm",
            Some(sign(claims(now() + 600), SECRET, Algorithm::HS512)),
        ),
        ("no exp", Some(sign(no_exp, SECRET, Algorithm::HS256))),
        (
            "wrong issuer",
            Some(sign(
                json!({"sub": "m", "roles": ["admin"], "exp": now() + 600, "iss": "evil", "aud": AUDIENCE}),
                SECRET,
                Algorithm::HS256,
            )),
        ),
        (
            "wrong audience",
            Some(sign(
                json!({"sub": "m", "roles": ["admin"], "exp": now() + 600, "iss": ISSUER, "aud": "other"}),
                SECRET,
                Algorithm::HS256,
            )),
        ),
        (
            "not yet valid",
            Some(sign(
                json!({"sub": "m", "roles": ["admin"], "exp": now() + 7200, "nbf": now() + 3600, "iss": ISSUER, "aud": AUDIENCE}),
                SECRET,
                Algorithm::HS256,
            )),
        ),
        ("garbage", Some("not.a.jwt".into())),
    ]
}

/// Every route with a role: method, path, body, the role it needs.
fn routes(customer_id: &str) -> Vec<(&'static str, String, Option<Value>, Role)> {
    vec![
        (
            "POST",
            "/v1/customers".into(),
            Some(customer_body("AUTH-2")),
            Role::Operator,
        ),
        ("GET", "/v1/customers".into(), None, Role::Operator),
        (
            "GET",
            format!("/v1/customers/{customer_id}"),
            None,
            Role::Operator,
        ),
        (
            "PATCH",
            format!("/v1/customers/{customer_id}"),
            Some(json!({"locale": "en"})),
            Role::Operator,
        ),
        (
            "GET",
            format!("/v1/customers/{customer_id}/history"),
            None,
            Role::Operator,
        ),
        ("GET", "/v1/audit/events".into(), None, Role::Auditor),
        ("GET", "/v1/consent-texts".into(), None, Role::Operator),
    ]
}

async fn call(
    app: &TestApp,
    method: &str,
    path: &str,
    body: &Option<Value>,
    token: Option<&str>,
) -> reqwest::Response {
    let mut req = app
        .http
        .request(method.parse().unwrap(), app.url(path))
        .header("if-match", "\"1\"");
    if let Some(body) = body {
        req = req.json(body);
    }
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    req.send().await.unwrap()
}

async fn every_route_refuses_bad_tokens_and_audits_it(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let customer = app.create_customer("AUTH-1").await;
    let id = customer["id"].as_str().unwrap();
    let mut refusals = 0;
    for (method, path, body, _) in routes(id) {
        for (why, token) in bad_tokens() {
            let res = call(&app, method, &path, &body, token.as_deref()).await;
            assert_eq!(res.status(), 401, "{method} {path} with a {why} token");
            assert_eq!(res.headers()["www-authenticate"], "Bearer");
            expect_problem(res, 401, "unauthorized").await;
            refusals += 1;
        }
    }
    // Nothing changed, and each refusal is one audit event without token contents.
    assert_eq!(app.count(customers::Entity).await, 1);
    let events: Value = app
        .get(
            "/v1/audit/events?action=auth.denied&limit=500",
            &app.auditor(),
        )
        .await
        .json()
        .await
        .unwrap();
    let denied = events["items"].as_array().unwrap();
    assert_eq!(denied.len(), refusals);
    for event in denied {
        assert_eq!(event["actor"], "anonymous");
        let text = event["event"].to_string();
        assert!(!text.contains("eyJ"), "token material in the audit event");
        assert!(!text.contains("mallory"));
    }
    let reasons: Vec<&str> = denied
        .iter()
        .map(|e| e["event"]["data"]["attempt"]["reason"].as_str().unwrap())
        .collect();
    assert!(
        reasons.contains(&"missing")
            && reasons.contains(&"expired")
            && reasons.contains(&"invalid")
    );
    app.assert_chain_verifies().await;
}

async fn roles_are_enforced_per_route(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let customer = app.create_customer("ROLE-1").await;
    let id = customer["id"].as_str().unwrap();
    let before = app.count(audit_events::Entity).await;
    let mut forbidden = 0;
    for (method, path, body, role) in routes(id) {
        let other = if role == Role::Auditor {
            Role::Operator
        } else {
            Role::Auditor
        };
        let token = token_for("eve", &[other]);
        let res = call(&app, method, &path, &body, Some(&token)).await;
        let problem = expect_problem(res, 403, "forbidden").await;
        assert!(problem["detail"].as_str().unwrap().contains(role.as_str()));
        forbidden += 1;
        // An admin may do everything.
        let admin = token_for("root", &[Role::Admin]);
        let res = call(&app, method, &path, &body, Some(&admin)).await;
        assert!(
            res.status().is_success(),
            "admin on {method} {path}: {}",
            res.status()
        );
    }
    let events: Value = app
        .get("/v1/audit/events?action=auth.denied", &app.auditor())
        .await
        .json()
        .await
        .unwrap();
    let denied = events["items"].as_array().unwrap();
    assert_eq!(denied.len(), forbidden);
    assert!(denied.iter().all(
        |e| e["actor"] == "user:eve" && e["event"]["data"]["attempt"]["reason"] == "forbidden"
    ));
    assert!(app.count(audit_events::Entity).await > before);
    // A token with no known role is refused too.
    let nobody = token_for("nobody", &[]);
    expect_problem(app.get("/v1/customers", &nobody).await, 403, "forbidden").await;
}

async fn refusals_come_before_any_other_check(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let operator_only = token_for("eve", &[Role::Auditor]);
    let send = |method: &str,
                path: &str,
                content_type: &str,
                body: &'static str,
                token: Option<String>| {
        let mut req = app
            .http
            .request(method.parse().unwrap(), app.url(path))
            .header("content-type", content_type)
            .body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    let cases = [
        ("POST", "/v1/customers", "application/json", "{not json"),
        ("POST", "/v1/customers", "text/plain", "hello"),
        (
            "POST",
            "/v1/customers",
            "application/json",
            r#"{"colour": "blue"}"#,
        ),
        ("GET", "/v1/customers/not-a-uuid", "application/json", ""),
        ("GET", "/v1/customers?limit=0", "application/json", ""),
        (
            "PATCH",
            "/v1/customers/not-a-uuid",
            "application/json",
            "{}",
        ),
    ];
    for (method, path, ct, body) in cases {
        let res = send(method, path, ct, body, None).await.unwrap();
        expect_problem(res, 401, "unauthorized").await;
        let res = send(method, path, ct, body, Some(operator_only.clone()))
            .await
            .unwrap();
        expect_problem(res, 403, "forbidden").await;
    }
    let events: Value = app
        .get("/v1/audit/events?action=auth.denied", &app.auditor())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(events["items"].as_array().unwrap().len(), 2 * cases.len());
    assert_eq!(app.count(customers::Entity).await, 0);
}

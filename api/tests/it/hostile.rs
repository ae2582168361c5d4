//! What a hostile client tried (issue 13, item 3), on SQLite and
//! PostgreSQL: My Numbers in headers and in every spelling, spoofing
//! characters, forged bearer tokens, error answers that were not problem
//! documents, and consent requests that could never be answered. Each
//! refusal is checked for its status, its problem type and that nothing was
//! written.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use kihon4_core::config::{JpkiRole, Revocation};
use kihon4_core::entities::{
    audit_events, basic4_history, consent_requests, customers, idempotency_keys, outbox,
};
use kihon4_test_support::both;
use sea_orm::{ColumnTrait, sea_query::ExprTrait};
use serde_json::{Value, json};

use crate::helpers::{
    AUDIENCE, Backend, ISSUER, SECRET, TestApp, customer_body, expect_problem, problem_fields,
};
use crate::sim::spawn_sim;

both!(
    my_numbers_in_request_ids_are_replaced_and_never_kept,
    my_number_idempotency_keys_are_refused_and_keys_are_kept_hashed,
    keys_kept_before_the_upgrade_are_hashed_in_place,
    my_numbers_in_every_spelling_are_refused_and_nothing_written,
    spoofing_characters_are_refused_naming_the_field,
    hostile_bearer_tokens_are_refused,
    every_refusal_is_a_problem_document,
    consent_requests_are_refused_while_callbacks_cannot_be_accepted,
);

/// A My Number with a valid check digit.
const MY_NUMBER: &str = "314159265352";

async fn request_ids(app: &TestApp) -> Vec<Option<String>> {
    use kihon4_core::entities::audit_events;
    use sea_orm::{EntityTrait, QueryOrder};
    audit_events::Entity::find()
        .order_by_asc(audit_events::Column::Seq)
        .all(&app.db)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.request_id)
        .collect()
}

async fn my_numbers_in_request_ids_are_replaced_and_never_kept(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let spellings = [
        MY_NUMBER,
        "3141-5926-5352",
        "3141.5926.5352",
        "id:3141_5926_5352",
    ];
    for (i, given) in spellings.iter().enumerate() {
        // Refused (401): the refusal is audited under a generated id.
        let res = app
            .http
            .get(app.url("/v1/customers"))
            .header("x-request-id", *given)
            .send()
            .await
            .unwrap();
        let echoed = res.headers()["x-request-id"].to_str().unwrap().to_owned();
        expect_problem(res, 401, "unauthorized").await;
        assert_ne!(echoed, *given);
        assert!(uuid::Uuid::parse_str(&echoed).is_ok(), "{echoed}");
        // Accepted (201): the customer's events carry a generated id too.
        let res = app
            .http
            .post(app.url("/v1/customers"))
            .bearer_auth(app.operator())
            .header("x-request-id", *given)
            .json(&customer_body(&format!("RID-{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        let echoed_ok = res.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert!(uuid::Uuid::parse_str(&echoed_ok).is_ok(), "{echoed_ok}");
        let ids = request_ids(&app).await;
        assert_eq!(
            ids[ids.len() - 2..],
            [Some(echoed), Some(echoed_ok)],
            "the generated ids are the ones kept"
        );
    }
    // No spelling of the number is kept: a generated id (a UUID) holds
    // "3141" now and then by chance, but never all three groups.
    assert_eq!(
        app.count_where(
            audit_events::Entity,
            audit_events::Column::RequestId
                .contains("3141")
                .and(audit_events::Column::RequestId.contains("5926"))
                .and(audit_events::Column::RequestId.contains("5352"))
        )
        .await,
        0
    );
    // A plain id, even of twelve digits with a wrong check digit, is kept.
    let res = app
        .http
        .get(app.url("/v1/customers"))
        .header("x-request-id", "314159265353")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "314159265353");
    assert_eq!(
        request_ids(&app).await.last().unwrap().as_deref(),
        Some("314159265353")
    );
    app.assert_chain_verifies().await;
}

async fn post_with_key(app: &TestApp, key: &str, body: &Value) -> reqwest::Response {
    app.http
        .post(app.url("/v1/customers"))
        .bearer_auth(app.operator())
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn stored_keys(app: &TestApp) -> Vec<(String, String)> {
    use kihon4_core::entities::idempotency_keys;
    use sea_orm::EntityTrait;
    idempotency_keys::Entity::find()
        .all(&app.db)
        .await
        .unwrap()
        .into_iter()
        .map(|k| (k.principal, k.key_sha256))
        .collect()
}

async fn my_number_idempotency_keys_are_refused_and_keys_are_kept_hashed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for key in [MY_NUMBER, "3141-5926-5352", "order:3141.5926.5352"] {
        let problem = expect_problem(
            post_with_key(&app, key, &customer_body("IK-1")).await,
            422,
            "my-number-refused",
        )
        .await;
        assert_eq!(problem_fields(&problem), ["Idempotency-Key"]);
        assert!(!problem.to_string().contains("3141"), "{problem}");
    }
    assert_eq!(app.count(customers::Entity).await, 0);
    assert_eq!(app.count(idempotency_keys::Entity).await, 0);
    assert_eq!(app.count(audit_events::Entity).await, 0);

    let key = "order-2026-12-02-0001";
    assert_eq!(
        post_with_key(&app, key, &customer_body("IK-1"))
            .await
            .status(),
        201
    );
    let kept = stored_keys(&app).await;
    assert_eq!(kept.len(), 1);
    let (principal, stored) = &kept[0];
    assert_eq!(principal, "tester|operator");
    assert_eq!(
        stored,
        &kihon4_core::idempotency::key_sha256(principal, key)
    );
    assert!(stored.len() == 64 && !stored.contains(key));
    // Still a replay, found by its hash.
    let again = post_with_key(&app, key, &customer_body("IK-1")).await;
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(app.count(customers::Entity).await, 1);
}

async fn keys_kept_before_the_upgrade_are_hashed_in_place(backend: Backend) {
    use kihon4_migrations::{Migrator, MigratorTrait};
    use sea_orm::{ConnectionTrait, Statement};
    let app = TestApp::spawn(backend).await;
    // The schema as it was before m20261202_000010_idempotency_key_hash
    // (and every migration after it), with a key kept in clear.
    let names: Vec<String> = Migrator::migrations()
        .iter()
        .map(|m| m.name().to_owned())
        .collect();
    let at = names
        .iter()
        .position(|n| n == "m20261202_000010_idempotency_key_hash")
        .unwrap();
    Migrator::down(&app.db, Some((names.len() - at) as u32))
        .await
        .unwrap();
    let backend_kind = app.db.get_database_backend();
    app.db
        .execute_raw(Statement::from_string(
            backend_kind,
            "INSERT INTO idempotency_keys (principal, key, request_hash, state, locked_until, created_at) \
             VALUES ('tester|operator', 'old-key-1', 'abc', 'done', '2026-12-01 00:00:00+00:00', '2026-12-01 00:00:00+00:00')",
        ))
        .await
        .unwrap();
    Migrator::up(&app.db, None).await.unwrap();
    assert_eq!(
        stored_keys(&app).await,
        [(
            "tester|operator".to_owned(),
            kihon4_core::idempotency::key_sha256("tester|operator", "old-key-1")
        )]
    );
}

async fn my_numbers_in_every_spelling_are_refused_and_nothing_written(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let digit = |zero: u32| {
        move |s: &str| -> String {
            s.chars()
                .map(|c| match c.to_digit(10) {
                    Some(d) => char::from_u32(zero + d).unwrap(),
                    None => c,
                })
                .collect()
        }
    };
    let kanji = |s: &str| -> String {
        s.chars()
            .map(|c| match c.to_digit(10) {
                Some(d) => "〇一二三四五六七八九".chars().nth(d as usize).unwrap(),
                None => c,
            })
            .collect()
    };
    let spellings = [
        "3141.5926.5352".to_owned(),
        "3141/5926/5352".to_owned(),
        "3141:5926:5352".to_owned(),
        "3141_5926_5352".to_owned(),
        "3141,5926,5352".to_owned(),
        "3141--5926--5352".to_owned(),
        "3141\u{200B}5926\u{200B}5352".to_owned(),
        "3141\u{00A0}5926\u{00A0}5352".to_owned(),
        "3141\u{2013}5926\u{2013}5352".to_owned(),
        digit(0x0660)(MY_NUMBER),
        digit(0x1D7CE)(MY_NUMBER),
        "③①④①⑤⑨②⑥⑤③⑤②".to_owned(),
        kanji(MY_NUMBER),
    ];
    for spelled in &spellings {
        let mut cases = Vec::new();
        let mut body = customer_body("MN-1");
        body["basic4"]["name"] = json!(format!("山田{spelled}"));
        cases.push((body, "basic4.name"));
        let mut body = customer_body("MN-1");
        body["basic4"]["address"] = json!(format!("東京都千代田区{spelled}"));
        cases.push((body, "basic4.address"));
        // ASCII-only fields take the spellings that are ASCII.
        if spelled.is_ascii() {
            let mut body = customer_body("MN-1");
            body["email"] = json!(format!("{spelled}@example.jp"));
            cases.push((body, "email"));
            if !spelled.contains(',') {
                let mut body = customer_body(spelled);
                body["external_ref"] = json!(spelled);
                cases.push((body, "external_ref"));
            }
        }
        for (body, field) in cases {
            let res = app.post("/v1/customers", &app.operator(), &body).await;
            let problem = expect_problem(res, 422, "my-number-refused").await;
            assert!(
                problem_fields(&problem).contains(&field.to_owned()),
                "{spelled:?} in {field}: {problem}"
            );
        }
    }
    assert_eq!(app.count(customers::Entity).await, 0);
    assert_eq!(app.count(basic4_history::Entity).await, 0);
    assert_eq!(app.count(audit_events::Entity).await, 0);
    // Ordinary addresses still pass.
    let mut body = customer_body("MN-OK");
    body["basic4"]["address"] = json!("東京都千代田区千代田1-1 丸の内ビル 12階");
    assert_eq!(
        app.post("/v1/customers", &app.operator(), &body)
            .await
            .status(),
        201
    );
}

async fn spoofing_characters_are_refused_naming_the_field(backend: Backend) {
    let sim = spawn_sim().await;
    let app =
        TestApp::spawn_consent(backend, sim.platform(Revocation::Crl), JpkiRole::Platform).await;
    let bad = [
        "\u{202E}", "\u{202A}", "\u{2066}", "\u{200E}", "\u{061C}", "\u{2028}", "\u{2029}",
        "\u{200B}", "\u{FEFF}", "\u{0007}",
    ];
    for c in bad {
        let mut cases = Vec::new();
        let mut body = customer_body("SP-1");
        body["basic4"]["name"] = json!(format!("山田{c}太郎"));
        cases.push((body, "basic4.name"));
        let mut body = customer_body("SP-1");
        body["basic4"]["address"] = json!(format!("東京都{c}千代田区千代田1-1"));
        cases.push((body, "basic4.address"));
        let mut body = customer_body("SP-1");
        body["email"] = json!(format!("taro{c}@example.jp"));
        cases.push((body, "email"));
        for (body, field) in cases {
            let res = app.post("/v1/customers", &app.operator(), &body).await;
            let problem = expect_problem(res, 422, "validation").await;
            assert_eq!(problem_fields(&problem), [field], "{c:?}");
            assert!(
                problem["errors"][0]["message"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("U+{:04X}", c.chars().next().unwrap() as u32)),
                "{problem}"
            );
        }
    }
    assert_eq!(app.count(customers::Entity).await, 0);
    assert_eq!(app.count(audit_events::Entity).await, 0);

    // A withdrawal's reason.
    let (customer, _) = crate::sync::consenting(&app, &sim, "SP-2", "山田太郎").await;
    let consents: Value = app
        .get(
            &format!("/v1/customers/{customer}/consents"),
            &app.operator(),
        )
        .await
        .json()
        .await
        .unwrap();
    let consent = consents["items"][0]["id"].as_str().unwrap().to_owned();
    let events = app.count(audit_events::Entity).await;
    for c in ["\u{202E}", "\u{2028}", "\u{FEFF}"] {
        let res = app
            .post(
                &format!("/v1/consents/{consent}/withdraw"),
                &app.operator(),
                &json!({"reason": format!("お客さまからの{c}申し出")}),
            )
            .await;
        let problem = expect_problem(res, 422, "validation").await;
        assert_eq!(problem_fields(&problem), ["reason"]);
    }
    assert_eq!(app.count(audit_events::Entity).await, events);
    let now: Value = app
        .get(&format!("/v1/consents/{consent}"), &app.operator())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(now["status"], "active");
}

fn token(header: &Header, claims: &Value) -> String {
    jsonwebtoken::encode(header, claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
}

async fn hostile_bearer_tokens_are_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let now = jsonwebtoken::get_current_timestamp();
    let claims = |sub: &str, exp: u64| json!({"sub": sub, "roles": ["operator"], "exp": exp, "iss": ISSUER, "aud": AUDIENCE});
    let plain = Header::new(Algorithm::HS256);
    let get = |t: String| {
        let app = &app;
        async move { app.get("/v1/customers", &t).await }
    };
    assert_eq!(
        get(token(&plain, &claims("alice", now + 600)))
            .await
            .status(),
        200
    );

    let mut crit = Header::new(Algorithm::HS256);
    crit.crit = Some(vec!["exp".into()]);
    let hostile = [
        token(&crit, &claims("alice", now + 600)),
        // Beyond the maximum lifetime (24 h by default).
        token(&plain, &claims("alice", now + 25 * 3600)),
        token(&plain, &claims("alice", now + 100 * 365 * 86400)),
        token(&plain, &claims("alice\u{202E}", now + 600)),
        token(&plain, &claims("ali\nce", now + 600)),
        token(&plain, &claims("\u{FEFF}alice", now + 600)),
        token(&plain, &claims(MY_NUMBER, now + 600)),
        token(&plain, &claims("3141-5926-5352", now + 600)),
    ];
    let before = app.count(audit_events::Entity).await;
    for t in hostile {
        expect_problem(get(t).await, 401, "unauthorized").await;
    }
    // Each refusal audited, by an anonymous actor, with nothing from the token.
    assert_eq!(
        app.count_where(
            audit_events::Entity,
            audit_events::Column::Action
                .eq("auth.denied")
                .and(audit_events::Column::Actor.eq("anonymous"))
        )
        .await,
        before + 8
    );
    assert_eq!(
        app.count_where(
            audit_events::Entity,
            audit_events::Column::Actor
                .contains("alice")
                .or(audit_events::Column::Actor.contains("3141"))
        )
        .await,
        0
    );
    app.assert_chain_verifies().await;
}

async fn every_refusal_is_a_problem_document(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // Bodies too large for a JSON route and for the raw webhook body.
    let big = json!({"external_ref": "X".repeat(32 * 1024)});
    expect_problem(
        app.post("/v1/customers", &app.operator(), &big).await,
        413,
        "payload-too-large",
    )
    .await;
    let res = app
        .http
        .post(app.url("/v1/webhooks/mynaportal"))
        .header("content-type", "application/jwt")
        .body(vec![b'a'; 10 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    expect_problem(res, 413, "payload-too-large").await;
    // A cursor that no list gives.
    for cursor in ["-1", "0", "+1", "abc", "1.5"] {
        let res = app
            .get(
                &format!("/v1/audit/events?cursor={}", cursor.replace('+', "%2B")),
                &app.auditor(),
            )
            .await;
        let problem = expect_problem(res, 400, "invalid-query").await;
        assert_eq!(problem_fields(&problem), ["cursor"], "{cursor}");
    }
    assert_eq!(
        app.get("/v1/audit/events?cursor=1", &app.auditor())
            .await
            .status(),
        200
    );
    assert_eq!(app.count(customers::Entity).await, 0);
}

async fn consent_requests_are_refused_while_callbacks_cannot_be_accepted(backend: Backend) {
    let sim = spawn_sim().await;
    let app = TestApp::spawn_mynaportal_without_issuer(backend, sim.provider()).await;
    let customer = app.create_customer("NOISS-1").await;
    let id = customer["id"].as_str().unwrap();
    let events = app.count(audit_events::Entity).await;
    let res = app
        .post(
            &format!("/v1/customers/{id}/consent-requests"),
            &app.operator(),
            &json!({}),
        )
        .await;
    let problem = expect_problem(res, 503, "mynaportal-unavailable").await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("KIHON4_PROVIDER_ISSUER"),
        "{problem}"
    );
    assert_eq!(app.count(consent_requests::Entity).await, 0);
    assert_eq!(app.count(outbox::Entity).await, 0, "nobody was emailed");
    assert_eq!(app.count(audit_events::Entity).await, events);
}

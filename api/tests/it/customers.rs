use kihon4_core::domain::my_number::with_check_digit;
use kihon4_core::entities::{audit_events, audit_personal_values, basic4_history, customers};
use kihon4_test_support::both;
use serde_json::{Value, json};

use crate::helpers::{Backend, MAX_BODY, TestApp, customer_body, expect_problem, problem_fields};

both!(
    create_writes_the_customer_its_history_and_its_audit_event,
    create_without_basic4_leaves_the_four_items_for_the_consent,
    create_names_every_invalid_field_and_writes_nothing,
    my_numbers_are_refused_in_every_free_text_field,
    unknown_fields_malformed_and_oversized_bodies_are_refused,
    a_second_customer_with_the_same_external_ref_is_refused,
    read_and_find_by_external_ref,
    list_pages_oldest_first,
    patch_needs_the_current_version,
    patch_validates_and_ignores_unchanged_values,
    history_lists_changes_to_the_four_items,
);

async fn assert_nothing_written(app: &TestApp) {
    assert_eq!(app.count(customers::Entity).await, 0, "no customer row");
    assert_eq!(app.count(audit_events::Entity).await, 0, "no audit event");
    assert_eq!(app.count(basic4_history::Entity).await, 0, "no history row");
}

async fn create_writes_the_customer_its_history_and_its_audit_event(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let res = app
        .post(
            "/v1/customers",
            &app.operator(),
            &customer_body("CUST-0001"),
        )
        .await;
    assert_eq!(res.status(), 201);
    let id = {
        let location = res.headers()["location"].to_str().unwrap().to_owned();
        assert_eq!(res.headers()["etag"], "\"1\"");
        let body: Value = res.json().await.unwrap();
        assert_eq!(
            location,
            format!("/v1/customers/{}", body["id"].as_str().unwrap())
        );
        assert_eq!(body["external_ref"], "CUST-0001");
        assert_eq!(body["email"], "taro.yamada@example.jp");
        assert_eq!(body["locale"], "ja");
        assert_eq!(body["status"], "active");
        assert_eq!(body["version"], 1);
        assert_eq!(body["jpki_cert_serial"], Value::Null);
        assert_eq!(
            body["basic4"],
            json!({
                "name": "山田太郎", "name_substitute_flags": "0000",
                "address": "東京都千代田区千代田1-1", "address_substitute_flags": "0000000000000",
                "birth_date": "1980-02-17", "gender": "1"
            })
        );
        body["id"].as_str().unwrap().to_owned()
    };
    assert_eq!(app.count(customers::Entity).await, 1);
    assert_eq!(app.count(basic4_history::Entity).await, 1);
    assert_eq!(app.audit_actions().await, ["customer.created"]);
    assert_eq!(app.assert_chain_verifies().await, 1);

    // The hashed event holds commitments, never the personal values.
    let events: Value = app
        .get("/v1/audit/events", &app.auditor())
        .await
        .json()
        .await
        .unwrap();
    let event = &events["items"][0];
    assert_eq!(event["customer_id"], id.as_str());
    assert_eq!(event["actor"], "user:tester");
    let hashed = event["event"].to_string();
    for personal in ["山田", "千代田", "1980-02-17", "taro.yamada"] {
        assert!(
            !hashed.contains(personal),
            "{personal} entered the hashed event"
        );
    }
    assert!(event["event"]["data"]["after"]["email"]["commitment"].is_string());
    // 1 email + 6 basic4 values are kept beside the event.
    assert_eq!(app.count(audit_personal_values::Entity).await, 7);
}

async fn create_without_basic4_leaves_the_four_items_for_the_consent(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let res = app
        .post(
            "/v1/customers",
            &app.operator(),
            &json!({"external_ref": "C-2", "email": "hanako@example.jp", "locale": "en"}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["basic4"], Value::Null);
    assert_eq!(body["locale"], "en");
    assert_eq!(app.count(basic4_history::Entity).await, 0);
    assert_eq!(app.audit_actions().await, ["customer.created"]);
}

async fn create_names_every_invalid_field_and_writes_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let res = app
        .post(
            "/v1/customers",
            &app.operator(),
            &json!({
                "external_ref": "has space",
                "email": "not-an-email",
                "locale": "fr",
                "basic4": {"name": "", "address": "東京都", "birth_date": "1980-02-30", "gender": "3", "address_substitute_flags": "01"}
            }),
        )
        .await;
    let problem = expect_problem(res, 422, "validation").await;
    assert_eq!(
        problem_fields(&problem),
        [
            "external_ref",
            "email",
            "locale",
            "basic4.name",
            "basic4.address",
            "basic4.birth_date",
            "basic4.gender"
        ]
    );
    let res = app.post("/v1/customers", &app.operator(), &json!({})).await;
    let problem = expect_problem(res, 422, "validation").await;
    assert_eq!(problem_fields(&problem), ["external_ref", "email"]);
    let res = app
        .post(
            "/v1/customers",
            &app.operator(),
            &json!({"external_ref": 12, "email": "a@example.jp"}),
        )
        .await;
    let problem = expect_problem(res, 422, "validation").await;
    assert_eq!(problem_fields(&problem), ["external_ref"]);
    let future = (chrono::Utc::now() + chrono::Duration::days(3))
        .format("%Y-%m-%d")
        .to_string();
    let mut body = customer_body("C-3");
    body["basic4"]["birth_date"] = json!(future);
    let problem = expect_problem(
        app.post("/v1/customers", &app.operator(), &body).await,
        422,
        "validation",
    )
    .await;
    assert_eq!(problem_fields(&problem), ["basic4.birth_date"]);
    assert_nothing_written(&app).await;
}

async fn my_numbers_are_refused_in_every_free_text_field(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let my_number = with_check_digit("12345678901");
    let spaced = format!(
        "{} {} {}",
        &my_number[..4],
        &my_number[4..8],
        &my_number[8..]
    );
    let cases: Vec<(&str, Value)> = vec![
        ("external_ref", {
            let mut b = customer_body(&my_number);
            b["external_ref"] = json!(my_number);
            b
        }),
        ("basic4.name", {
            let mut b = customer_body("C-4");
            b["basic4"]["name"] = json!(format!("山田{spaced}"));
            b
        }),
        ("basic4.address", {
            let mut b = customer_body("C-5");
            b["basic4"]["address"] = json!(format!("東京都{my_number}"));
            b
        }),
    ];
    for (field, body) in cases {
        let res = app.post("/v1/customers", &app.operator(), &body).await;
        let text = res.text().await.unwrap();
        assert!(!text.contains(&my_number), "the My Number was echoed");
        let problem: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            problem["type"],
            "https://kihon4.dev/problems/my-number-refused"
        );
        assert_eq!(problem["status"], 422);
        assert_eq!(problem_fields(&problem), [field]);
    }
    // As a JSON number, or as a field's name, it is refused all the same and never echoed.
    let as_number = format!(r#"{{"external_ref": {my_number}, "email": "a@example.jp"}}"#);
    let as_name =
        format!(r#"{{"external_ref": "C-6", "email": "a@example.jp", "{my_number}": 1}}"#);
    for raw in [as_number, as_name] {
        let res = app
            .http
            .post(app.url("/v1/customers"))
            .bearer_auth(app.operator())
            .header("content-type", "application/json")
            .body(raw)
            .send()
            .await
            .unwrap();
        let text = res.text().await.unwrap();
        assert!(
            !text.contains(&my_number),
            "the My Number was echoed: {text}"
        );
        let problem: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            problem["type"],
            "https://kihon4.dev/problems/my-number-refused"
        );
    }
    assert_eq!(app.count(customers::Entity).await, 0);
    // A number that fails the check digit is an ordinary value.
    let last = my_number.as_bytes()[11] - b'0';
    let not_one = format!("{}{}", &my_number[..11], (last + 1) % 10);
    let res = app
        .post("/v1/customers", &app.operator(), &customer_body(&not_one))
        .await;
    assert_eq!(res.status(), 201);
    assert_eq!(app.count(customers::Entity).await, 1);
    assert_eq!(app.count(audit_events::Entity).await, 1);
}

async fn unknown_fields_malformed_and_oversized_bodies_are_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut body = customer_body("C-6");
    body["basic4"]["nickname"] = json!("Taro");
    let problem = expect_problem(
        app.post("/v1/customers", &app.operator(), &body).await,
        422,
        "validation",
    )
    .await;
    assert_eq!(problem_fields(&problem), ["basic4.nickname"]);
    let mut body = customer_body("C-6");
    body["my_number"] = json!("x");
    let problem = expect_problem(
        app.post("/v1/customers", &app.operator(), &body).await,
        422,
        "validation",
    )
    .await;
    assert_eq!(problem_fields(&problem), ["my_number"]);

    let send = |body: Vec<u8>, content_type: &'static str| {
        app.http
            .post(app.url("/v1/customers"))
            .bearer_auth(app.operator())
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    expect_problem(
        send(b"{\"external_ref\": ".to_vec(), "application/json")
            .await
            .unwrap(),
        400,
        "malformed-json",
    )
    .await;
    expect_problem(
        send(b"{} {}".to_vec(), "application/json").await.unwrap(),
        400,
        "malformed-json",
    )
    .await;
    expect_problem(
        send(
            b"external_ref=C-7".to_vec(),
            "application/x-www-form-urlencoded",
        )
        .await
        .unwrap(),
        415,
        "unsupported-media-type",
    )
    .await;
    let mut big = customer_body("C-8");
    big["basic4"]["address"] = json!("東".repeat(MAX_BODY));
    let big = serde_json::to_vec(&big).unwrap();
    expect_problem(
        send(big, "application/json").await.unwrap(),
        413,
        "payload-too-large",
    )
    .await;
    assert_nothing_written(&app).await;
}

async fn a_second_customer_with_the_same_external_ref_is_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_customer("DUP-1").await;
    let res = app
        .post("/v1/customers", &app.operator(), &customer_body("DUP-1"))
        .await;
    let problem = expect_problem(res, 409, "external-ref-taken").await;
    assert_eq!(problem_fields(&problem), ["external_ref"]);
    assert_eq!(app.count(customers::Entity).await, 1);
    assert_eq!(app.audit_actions().await, ["customer.created"]);
}

async fn read_and_find_by_external_ref(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let created = app.create_customer("FIND-1").await;
    app.create_customer("FIND-2").await;
    let id = created["id"].as_str().unwrap();
    let res = app
        .get(&format!("/v1/customers/{id}"), &app.operator())
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["etag"], "\"1\"");
    assert_eq!(res.json::<Value>().await.unwrap(), created);

    let found: Value = app
        .get("/v1/customers?external_ref=FIND-1", &app.operator())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(found["items"].as_array().unwrap().len(), 1);
    assert_eq!(found["items"][0]["id"], id);
    assert_eq!(found["next_cursor"], Value::Null);
    let none: Value = app
        .get("/v1/customers?external_ref=NOBODY", &app.operator())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(none["items"], json!([]));

    let unknown = uuid::Uuid::now_v7();
    expect_problem(
        app.get(&format!("/v1/customers/{unknown}"), &app.operator())
            .await,
        404,
        "not-found",
    )
    .await;
    expect_problem(
        app.get("/v1/customers/not-a-uuid", &app.operator()).await,
        404,
        "not-found",
    )
    .await;
    let my_number = with_check_digit("11111111111");
    let res = app
        .get(
            &format!("/v1/customers?external_ref={my_number}"),
            &app.operator(),
        )
        .await;
    let problem = expect_problem(res, 422, "my-number-refused").await;
    assert_eq!(problem_fields(&problem), ["external_ref"]);
    let res = app
        .get(&format!("/v1/customers?{my_number}=1"), &app.operator())
        .await;
    let text = res.text().await.unwrap();
    assert!(
        !text.contains(&my_number),
        "the My Number was echoed: {text}"
    );
    assert!(text.contains("my-number-refused"), "{text}");
    let res = app
        .get("/v1/customers?external_ref=has%20space", &app.operator())
        .await;
    let problem = expect_problem(res, 400, "invalid-query").await;
    assert_eq!(problem_fields(&problem), ["external_ref"]);
}

async fn list_pages_oldest_first(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for i in 0..5 {
        app.create_customer(&format!("PAGE-{i}")).await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/customers?limit=2&cursor={c}"),
            None => "/v1/customers?limit=2".to_owned(),
        };
        let page: Value = app.get(&path, &app.operator()).await.json().await.unwrap();
        for item in page["items"].as_array().unwrap() {
            seen.push(item["external_ref"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, ["PAGE-0", "PAGE-1", "PAGE-2", "PAGE-3", "PAGE-4"]);
    for bad in [
        "/v1/customers?limit=0",
        "/v1/customers?limit=501",
        "/v1/customers?limit=x",
        "/v1/customers?cursor=zzz",
        "/v1/customers?colour=blue",
    ] {
        expect_problem(app.get(bad, &app.operator()).await, 400, "invalid-query").await;
    }
}

async fn patch_needs_the_current_version(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let created = app.create_customer("PATCH-1").await;
    let path = format!("/v1/customers/{}", created["id"].as_str().unwrap());
    let patch = |if_match: Option<&'static str>, body: Value| {
        let mut req = app
            .http
            .patch(app.url(&path))
            .bearer_auth(app.operator())
            .json(&body);
        if let Some(v) = if_match {
            req = req.header("if-match", v);
        }
        req.send()
    };
    expect_problem(
        patch(None, json!({"email": "new@example.jp"}))
            .await
            .unwrap(),
        428,
        "precondition-required",
    )
    .await;
    expect_problem(
        patch(Some("\"7\""), json!({"email": "new@example.jp"}))
            .await
            .unwrap(),
        412,
        "precondition-failed",
    )
    .await;
    expect_problem(
        patch(Some("garbage"), json!({"email": "new@example.jp"}))
            .await
            .unwrap(),
        412,
        "precondition-failed",
    )
    .await;
    assert_eq!(app.audit_actions().await, ["customer.created"]);

    let res = patch(
        Some("\"1\""),
        json!({"email": "new@example.jp", "locale": "en"}),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["etag"], "\"2\"");
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        (
            body["email"].as_str(),
            body["locale"].as_str(),
            body["version"].as_i64()
        ),
        (Some("new@example.jp"), Some("en"), Some(2))
    );
    // The same version again is now stale.
    expect_problem(
        patch(Some("W/\"1\""), json!({"locale": "ja"}))
            .await
            .unwrap(),
        412,
        "precondition-failed",
    )
    .await;
    let res = patch(Some("2"), json!({"locale": "ja"})).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        app.audit_actions().await,
        ["customer.created", "customer.updated", "customer.updated"]
    );
    assert_eq!(app.assert_chain_verifies().await, 3);
    let unknown = format!("/v1/customers/{}", uuid::Uuid::now_v7());
    let res = app
        .http
        .patch(app.url(&unknown))
        .bearer_auth(app.operator())
        .header("if-match", "\"1\"")
        .json(&json!({"locale": "en"}))
        .send()
        .await
        .unwrap();
    expect_problem(res, 404, "not-found").await;
}

async fn patch_validates_and_ignores_unchanged_values(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let created = app.create_customer("PATCH-2").await;
    let path = format!("/v1/customers/{}", created["id"].as_str().unwrap());
    let patch = |body: Value| {
        app.http
            .patch(app.url(&path))
            .bearer_auth(app.operator())
            .header("if-match", "\"1\"")
            .json(&body)
            .send()
    };
    let problem = expect_problem(
        patch(json!({"email": "x", "locale": "de"})).await.unwrap(),
        422,
        "validation",
    )
    .await;
    assert_eq!(problem_fields(&problem), ["email", "locale"]);
    let problem = expect_problem(
        patch(json!({"external_ref": "OTHER"})).await.unwrap(),
        422,
        "validation",
    )
    .await;
    assert_eq!(problem_fields(&problem), ["external_ref"]);
    expect_problem(patch(json!({})).await.unwrap(), 422, "nothing-to-change").await;
    let raw = |content_type: &'static str, body: Vec<u8>| {
        app.http
            .patch(app.url(&path))
            .bearer_auth(app.operator())
            .header("if-match", "\"1\"")
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    expect_problem(
        raw("application/json", b"{\"email\":".to_vec())
            .await
            .unwrap(),
        400,
        "malformed-json",
    )
    .await;
    expect_problem(
        raw("text/plain", b"email=x".to_vec()).await.unwrap(),
        415,
        "unsupported-media-type",
    )
    .await;
    let big = serde_json::to_vec(&json!({"email": format!("{}@example.jp", "a".repeat(MAX_BODY))}))
        .unwrap();
    expect_problem(
        raw("application/json", big).await.unwrap(),
        413,
        "payload-too-large",
    )
    .await;
    let my_number = with_check_digit("22222222222");
    let problem = expect_problem(
        patch(json!({"email": format!("{my_number}@example.jp")}))
            .await
            .unwrap(),
        422,
        "my-number-refused",
    )
    .await;
    assert_eq!(problem_fields(&problem), ["email"]);
    let res = patch(json!({"email": "taro.yamada@example.jp", "locale": "ja"}))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["version"], 1);
    assert_eq!(app.audit_actions().await, ["customer.created"]);
}

async fn history_lists_changes_to_the_four_items(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let created = app.create_customer("HIST-1").await;
    let id = created["id"].as_str().unwrap();
    let history: Value = app
        .get(&format!("/v1/customers/{id}/history"), &app.operator())
        .await
        .json()
        .await
        .unwrap();
    let items = history["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["source"], "api");
    assert_eq!(items[0]["customer_version"], 1);
    assert_eq!(items[0]["before"], Value::Null);
    assert_eq!(items[0]["after"]["name"], "山田太郎");
    assert_eq!(history["next_cursor"], Value::Null);
    let page: Value = app
        .get(
            &format!("/v1/customers/{id}/history?limit=1"),
            &app.operator(),
        )
        .await
        .json()
        .await
        .unwrap();
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let rest: Value = app
        .get(
            &format!("/v1/customers/{id}/history?cursor={cursor}"),
            &app.operator(),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(rest["items"], serde_json::json!([]));
    for bad in ["limit=0", "cursor=x", "colour=blue"] {
        expect_problem(
            app.get(
                &format!("/v1/customers/{id}/history?{bad}"),
                &app.operator(),
            )
            .await,
            400,
            "invalid-query",
        )
        .await;
    }
    let unknown = uuid::Uuid::now_v7();
    expect_problem(
        app.get(&format!("/v1/customers/{unknown}/history"), &app.operator())
            .await,
        404,
        "not-found",
    )
    .await;
}

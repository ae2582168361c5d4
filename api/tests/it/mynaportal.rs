//! Mynaportal-routed consent against the simulator, on SQLite and
//! PostgreSQL: the request and its email, the landing page and its CSRF
//! check, the redirect to the provider, the holder's decision on the
//! simulator's Mynaportal, and the signed callback; and every kind of forged,
//! expired, replayed or malformed callback refused with nothing written.

use std::time::{Duration, Instant};

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use kihon4_core::entities::{audit_events, consent_requests, consents, webhook_receipts};
use kihon4_test_support::both;
use sea_orm::ColumnTrait;
use serde_json::{Value, json};

use crate::helpers::{Backend, MYNAPORTAL_CLIENT, TestApp, expect_problem};
use crate::sim::{TestSim, spawn_sim};

both!(
    a_customer_consents_through_mynaportal,
    a_declined_request_is_closed_and_links_are_single_use,
    forged_and_replayed_callbacks_are_refused_and_write_nothing,
    a_reminder_goes_out_once_and_unanswered_requests_expire,
    signed_callbacks_with_bad_decisions_or_undocumented_forms_are_refused,
);

const ISSUER: &str = "kihon4-sim";

async fn app_with(sim: &TestSim, backend: Backend) -> TestApp {
    TestApp::spawn_mynaportal(backend, sim.provider(), ISSUER).await
}

/// The landing link in the newest consent-request email.
pub async fn emailed_link(app: &TestApp) -> String {
    use kihon4_core::entities::outbox;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
    let row = outbox::Entity::find()
        .filter(outbox::Column::Kind.eq("consent_request"))
        .order_by_desc(outbox::Column::Id)
        .one(&app.db)
        .await
        .unwrap()
        .expect("an email");
    kihon4_test_support::mail::landing_link(&row.message, &app.base).unwrap_or_else(|| {
        panic!(
            "no link in {}",
            kihon4_test_support::mail::decoded_text(&row.message)
        )
    })
}

async fn customer(app: &TestApp, reference: &str, locale: &str) -> String {
    let res = app
        .post(
            "/v1/customers",
            &app.operator(),
            &json!({"external_ref": reference, "email": format!("{reference}@example.jp"), "locale": locale}),
        )
        .await;
    assert_eq!(res.status(), 201);
    res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn ask(app: &TestApp, customer: &str) -> Value {
    let res = app
        .post(
            &format!("/v1/customers/{customer}/consent-requests"),
            &app.operator(),
            &json!({}),
        )
        .await;
    assert_eq!(res.status(), 201);
    res.json().await.unwrap()
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Opens the landing page: its CSRF token and cookie.
async fn landing(link: &str, lang: &str) -> (reqwest::Response, String, String) {
    let res = no_redirects()
        .get(format!("{link}?lang={lang}"))
        .send()
        .await
        .unwrap();
    let cookie = res
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
        .unwrap_or_default();
    let html = res.text().await.unwrap();
    let csrf = html
        .split("name=\"csrf_token\" value=\"")
        .nth(1)
        .map(|rest| rest.split('"').next().unwrap().to_owned())
        .unwrap_or_default();
    let res = no_redirects()
        .get(format!("{link}?lang={lang}"))
        .send()
        .await
        .unwrap();
    (res, cookie, csrf)
}

async fn start(link: &str, cookie: &str, csrf: &str) -> reqwest::Response {
    no_redirects()
        .post(format!("{link}/start"))
        .header("cookie", cookie)
        .form(&[("csrf_token", csrf), ("lang", "ja")])
        .send()
        .await
        .unwrap()
}

async fn wait_for_status(app: &TestApp, request: &str, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now: Value = app
            .get(&format!("/v1/consent-requests/{request}"), &app.operator())
            .await
            .json()
            .await
            .unwrap();
        if now["status"] == status {
            return now;
        }
        assert!(Instant::now() < deadline, "still {now}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn decide(sim: &TestSim, provider_request: &str, person: &str, decision: &str) {
    let res = reqwest::Client::new()
        .post(format!(
            "{}/sim/mynaportal/{provider_request}/decide",
            sim.base
        ))
        .json(&json!({"person_id": person, "decision": decision}))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.text().await.unwrap());
}

async fn a_customer_consents_through_mynaportal(backend: Backend) {
    let sim = spawn_sim().await;
    let app = app_with(&sim, backend).await;
    let id = customer(&app, "MP-1", "ja").await;
    let request = ask(&app, &id).await;
    assert_eq!(request["status"], "sent");
    let request_id = request["id"].as_str().unwrap().to_owned();
    // Asked once at a time.
    let again = app
        .post(
            &format!("/v1/customers/{id}/consent-requests"),
            &app.operator(),
            &json!({}),
        )
        .await;
    expect_problem(again, 409, "consent-request-open").await;

    let link = emailed_link(&app).await;
    let (page, cookie, csrf) = landing(&link, "ja").await;
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(!csp.contains("script-src"), "no script at all: {csp}");
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");
    assert_eq!(page.headers()["referrer-policy"], "no-referrer");
    let html = page.text().await.unwrap();
    assert!(html.contains("マイナポータルで同意する") && html.contains("lang=\"ja\""));
    assert!(
        !html.contains("MP-1@example.jp"),
        "no personal data on the page"
    );
    let (en, _, _) = landing(&link, "en").await;
    assert!(en.text().await.unwrap().contains("Consent on Mynaportal"));

    // Without the cookie, or with another token: refused, the link unused.
    assert_eq!(start(&link, "", &csrf).await.status(), 403);
    assert_eq!(start(&link, &cookie, "forged").await.status(), 403);
    let went = start(&link, &cookie, &csrf).await;
    assert_eq!(went.status(), 303);
    let to = went.headers()["location"].to_str().unwrap().to_owned();
    assert!(to.starts_with(&sim.base), "{to}");
    // Single use.
    assert_eq!(start(&link, &cookie, &csrf).await.status(), 410);
    assert_eq!(landing(&link, "ja").await.0.status(), 410);
    wait_for_status(&app, &request_id, "started").await;

    // The holder consents on Mynaportal; the provider calls back.
    let holder = sim
        .resident_with(json!({"name": "小林花子", "address": "東京都新宿区西新宿2-8-1", "birth_date": "1988-08-08", "gender": "2"}))
        .await;
    let provider_request = request["provider_request_id"].as_str().unwrap();
    decide(
        &sim,
        provider_request,
        holder.person_id.as_deref().unwrap(),
        "granted",
    )
    .await;
    let granted = wait_for_status(&app, &request_id, "granted").await;
    let consents: Value = app
        .get(&format!("/v1/customers/{id}/consents"), &app.operator())
        .await
        .json()
        .await
        .unwrap();
    let consent = &consents["items"][0];
    assert_eq!(consent["id"], granted["consent_id"]);
    assert_eq!(consent["status"], "active");
    assert_eq!(consent["channel"], "mynaportal");
    assert_eq!(consent["cert_serial"], holder.serial.as_str());
    let record: Value = app
        .get(&format!("/v1/customers/{id}"), &app.operator())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(record["jpki_cert_serial"], holder.serial.as_str());
    assert_eq!(app.count_notices("consent_receipt").await, 1);
    assert_eq!(
        app.count_where(
            audit_events::Entity,
            audit_events::Column::Action.is_in([
                "consent_request.sent",
                "consent_request.started",
                "consent.granted",
                "consent_request.granted"
            ])
        )
        .await,
        4
    );
    // The done page thanks the customer, in their language.
    let done = reqwest::get(format!("{link}/done")).await.unwrap();
    assert_eq!(done.status(), 200);
    assert!(
        done.text()
            .await
            .unwrap()
            .contains("ありがとうございました")
    );
    // Consenting now, the customer is not asked again.
    let again = app
        .post(
            &format!("/v1/customers/{id}/consent-requests"),
            &app.operator(),
            &json!({}),
        )
        .await;
    expect_problem(again, 409, "already-consenting").await;
    app.assert_chain_verifies().await;
}

async fn a_declined_request_is_closed_and_links_are_single_use(backend: Backend) {
    let sim = spawn_sim().await;
    let app = app_with(&sim, backend).await;
    let id = customer(&app, "MP-2", "en").await;
    let request = ask(&app, &id).await;
    let request_id = request["id"].as_str().unwrap();
    let holder = sim
        .resident_with(json!({"name": "中村三郎", "address": "愛知県名古屋市中区三の丸3-1-2", "birth_date": "1970-07-07", "gender": "1"}))
        .await;
    decide(
        &sim,
        request["provider_request_id"].as_str().unwrap(),
        holder.person_id.as_deref().unwrap(),
        "declined",
    )
    .await;
    wait_for_status(&app, request_id, "declined").await;
    assert_eq!(app.count(consents::Entity).await, 0);
    let link = emailed_link(&app).await;
    assert_eq!(landing(&link, "en").await.0.status(), 410);
    // Unknown tokens, shaped or not: a friendly 404.
    for token in ["nope", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"] {
        let res = reqwest::get(app.url(&format!("/consent/{token}")))
            .await
            .unwrap();
        assert_eq!(res.status(), 404);
        assert!(res.headers().contains_key("content-security-policy"));
        assert!(res.text().await.unwrap().contains("<html"));
    }
}

/// A callback signed with the simulator's own key.
fn signed(sim: &TestSim, claims: Value) -> String {
    let pem = std::fs::read(sim.dir.path().join("callback-key.pem")).unwrap();
    let jwks = sim.sim.callback_key.jwks();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = jwks["keys"][0]["kid"].as_str().map(str::to_owned);
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_rsa_pem(&pem).unwrap()).unwrap()
}

/// What a callback could have written.
async fn written(app: &TestApp) -> (i64, i64, i64) {
    (
        app.count(consents::Entity).await,
        app.count(webhook_receipts::Entity).await,
        app.count_where(
            consent_requests::Entity,
            consent_requests::Column::Status.eq("sent"),
        )
        .await,
    )
}

async fn callback(app: &TestApp, body: &str) -> reqwest::Response {
    app.http
        .post(app.url("/v1/webhooks/mynaportal"))
        .header("content-type", "application/jwt")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

async fn forged_and_replayed_callbacks_are_refused_and_write_nothing(backend: Backend) {
    let sim = spawn_sim().await;
    let app = app_with(&sim, backend).await;
    let id = customer(&app, "MP-3", "ja").await;
    let request = ask(&app, &id).await;
    let now = chrono::Utc::now().timestamp();
    let claims = |jti: &str| {
        json!({
            "iss": ISSUER, "aud": MYNAPORTAL_CLIENT, "iat": now, "exp": now + 300, "jti": jti,
            "request_id": request["provider_request_id"], "request_ref": request["id"],
            "decision": "declined",
        })
    };
    let with = |jti: &str, key: &str, value: Value| {
        let mut c = claims(jti);
        c[key] = value;
        c
    };
    let before = written(&app).await;

    // Another key under the provider's kid.
    let other = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
    let other_pem = {
        use rsa::pkcs8::EncodePrivateKey;
        other.to_pkcs8_pem(rsa::pkcs8::LineEnding::LF).unwrap()
    };
    let jwks = sim.sim.callback_key.jwks();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = jwks["keys"][0]["kid"].as_str().map(str::to_owned);
    let wrong_key = jsonwebtoken::encode(
        &header,
        &claims("j-1"),
        &EncodingKey::from_rsa_pem(other_pem.as_bytes()).unwrap(),
    )
    .unwrap();
    expect_problem(
        callback(&app, &wrong_key).await,
        401,
        "callback-signature-invalid",
    )
    .await;
    // A kid the provider never had.
    header.kid = Some("no-such-kid".into());
    let unknown_kid = jsonwebtoken::encode(
        &header,
        &claims("j-2"),
        &EncodingKey::from_rsa_pem(other_pem.as_bytes()).unwrap(),
    )
    .unwrap();
    expect_problem(
        callback(&app, &unknown_kid).await,
        401,
        "callback-unknown-key",
    )
    .await;
    // alg: none.
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&claims("j-3"))
    );
    let res = callback(&app, &none).await;
    assert!(
        [400, 401].contains(&res.status().as_u16()),
        "{}",
        res.status()
    );
    // HS256 keyed with the provider's public key.
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = jwks["keys"][0]["kid"].as_str().map(str::to_owned);
    let confused = jsonwebtoken::encode(
        &hs,
        &claims("j-4"),
        &EncodingKey::from_secret(jwks.to_string().as_bytes()),
    )
    .unwrap();
    expect_problem(
        callback(&app, &confused).await,
        401,
        "callback-algorithm-not-allowed",
    )
    .await;
    // The provider's key, but for someone else, or too old, or too long-lived.
    let cases = [
        (
            with("j-5", "aud", json!("another-institution")),
            "callback-claims-invalid",
        ),
        (
            with("j-6", "iss", json!("someone-else")),
            "callback-claims-invalid",
        ),
        (with("j-7", "exp", json!(now - 600)), "callback-expired"),
        (
            with("j-8", "exp", json!(now + 3600)),
            "callback-claims-invalid",
        ),
    ];
    for (c, slug) in cases {
        let mut c = c;
        if slug == "callback-expired" {
            c["iat"] = json!(now - 900);
        }
        let res = callback(&app, &signed(&sim, c)).await;
        expect_problem(res, 401, slug).await;
    }
    // A request kihon4 never made.
    let stranger = with(
        "j-9",
        "request_ref",
        json!(uuid::Uuid::now_v7().to_string()),
    );
    expect_problem(
        callback(&app, &signed(&sim, stranger)).await,
        404,
        "unknown-consent-request",
    )
    .await;
    // Garbage, the wrong media type, too large.
    expect_problem(callback(&app, "not.a.jwt").await, 400, "callback-malformed").await;
    expect_problem(callback(&app, "garbage").await, 400, "callback-malformed").await;
    let res = app
        .http
        .post(app.url("/v1/webhooks/mynaportal"))
        .header("content-type", "application/json")
        .body(signed(&sim, claims("j-10")))
        .send()
        .await
        .unwrap();
    expect_problem(res, 415, "unsupported-media-type").await;
    let res = callback(&app, &"a".repeat(20_000)).await;
    assert_eq!(res.status(), 413);
    assert_eq!(written(&app).await, before, "nothing written by a refusal");
    assert!(app.count_events("webhook.refused").await >= 11);

    // A good one, delivered twice: taken once. The same jti with another body: a replay.
    let good = signed(&sim, claims("j-good"));
    assert_eq!(callback(&app, &good).await.status(), 204);
    assert_eq!(callback(&app, &good).await.status(), 204);
    assert_eq!(app.count(webhook_receipts::Entity).await, 1);
    assert_eq!(
        app.count_where(
            consent_requests::Entity,
            consent_requests::Column::Status.eq("declined")
        )
        .await,
        1
    );
    // Signed anew, as a provider retrying does: the same decision, taken before.
    let mut resigned = claims("j-good");
    resigned["iat"] = json!(now - 1);
    assert_eq!(callback(&app, &signed(&sim, resigned)).await.status(), 204);
    let mut other_body = claims("j-good");
    other_body["request_id"] = json!("another-request");
    expect_problem(
        callback(&app, &signed(&sim, other_body)).await,
        409,
        "callback-replayed",
    )
    .await;
    assert_eq!(app.count(webhook_receipts::Entity).await, 1);
    app.assert_chain_verifies().await;
}

async fn a_reminder_goes_out_once_and_unanswered_requests_expire(backend: Backend) {
    use kihon4_core::audit::{Actor, AuditContext};
    use kihon4_core::consent::requests::{RequestSettings, expire_due, remind_due};
    use kihon4_core::entities::consent_requests as rows;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};
    let sim = spawn_sim().await;
    let app = app_with(&sim, backend).await;
    let id = customer(&app, "MP-4", "ja").await;
    let request = ask(&app, &id).await;
    let request_id = uuid::Uuid::parse_str(request["id"].as_str().unwrap()).unwrap();
    let first_link = emailed_link(&app).await;
    let settings = RequestSettings {
        public_base_url: app.base.parse().unwrap(),
        client_id: MYNAPORTAL_CLIENT.into(),
        timezone: chrono_tz::Asia::Tokyo,
    };
    let ctx = AuditContext::new(Actor::worker(), None);
    let notices = crate::helpers::notices();
    // Not yet due.
    assert_eq!(
        remind_due(&app.db, &notices, &settings, &ctx, &[7])
            .await
            .unwrap(),
        0
    );
    let age = |days: i64| {
        rows::Entity::update_many()
            .col_expr(
                rows::Column::CreatedAt,
                Expr::value(chrono::Utc::now() - chrono::Duration::days(days)),
            )
            .filter(rows::Column::Id.eq(request_id))
    };
    age(8).exec(&app.db).await.unwrap();
    assert_eq!(
        remind_due(&app.db, &notices, &settings, &ctx, &[7])
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        remind_due(&app.db, &notices, &settings, &ctx, &[7])
            .await
            .unwrap(),
        0,
        "once"
    );
    assert_eq!(app.count_notices("consent_request").await, 2);
    // The reminder's link replaces the first one.
    let second_link = emailed_link(&app).await;
    assert_ne!(first_link, second_link);
    assert_eq!(reqwest::get(&first_link).await.unwrap().status(), 404);
    assert_eq!(reqwest::get(&second_link).await.unwrap().status(), 200);

    // Past its expiry: expired, with its audit event; the link says so.
    rows::Entity::update_many()
        .col_expr(
            rows::Column::ExpiresAt,
            Expr::value(chrono::Utc::now() - chrono::Duration::seconds(1)),
        )
        .filter(rows::Column::Id.eq(request_id))
        .exec(&app.db)
        .await
        .unwrap();
    assert_eq!(reqwest::get(&second_link).await.unwrap().status(), 410);
    assert_eq!(expire_due(&app.db, &ctx).await.unwrap(), 1);
    assert_eq!(expire_due(&app.db, &ctx).await.unwrap(), 0);
    let now: Value = app
        .get(
            &format!("/v1/consent-requests/{request_id}"),
            &app.operator(),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(now["status"], "expired");
    // A new request can be made once the old one expired.
    ask(&app, &id).await;
    app.assert_chain_verifies().await;
}

/// Callbacks the provider's key signs, with a decision kihon4 cannot record
/// (a malformed `cert_serial`, an `expires_at` in the past or beyond the
/// consent period), or in a form the docs refuse (`alg: none`, an `aud`
/// array, a `crit` header): each a problem with its `webhook.refused`
/// event, nothing else written; then a good one is taken.
async fn signed_callbacks_with_bad_decisions_or_undocumented_forms_are_refused(backend: Backend) {
    let sim = spawn_sim().await;
    let app = app_with(&sim, backend).await;
    let id = customer(&app, "MP-5", "ja").await;
    let request = ask(&app, &id).await;
    let now = chrono::Utc::now();
    let ts = now.timestamp();
    let ten_years = kihon4_core::consent::records::expires_at(
        now,
        kihon4_core::config::ValidityStart::NextDay,
        chrono_tz::Asia::Tokyo,
    );
    let granted = |jti: &str| {
        json!({
            "iss": ISSUER, "aud": MYNAPORTAL_CLIENT, "iat": ts, "exp": ts + 300, "jti": jti,
            "request_id": request["provider_request_id"], "request_ref": request["id"],
            "decision": "granted", "cert_serial": "1a2b3c", "ppid": "ppid-1",
            "consented_at": now.to_rfc3339(), "expires_at": ten_years.to_rfc3339(),
        })
    };
    let with = |jti: &str, key: &str, value: Value| {
        let mut c = granted(jti);
        c[key] = value;
        c
    };
    let before = written(&app).await;
    let refused = || app.count_events("webhook.refused");
    let mut refusals = refused().await;
    let mut expect_refused = async |body: String, status: u16, slug: &str| {
        expect_problem(callback(&app, &body).await, status, slug).await;
        refusals += 1;
        assert_eq!(refused().await, refusals, "{slug} audited");
    };
    for (i, serial) in [
        json!(""),
        json!("xyz"),
        json!("../zz"),
        json!("f".repeat(1000)),
        json!(0),
    ]
    .into_iter()
    .enumerate()
    {
        let c = with(&format!("s-{i}"), "cert_serial", serial.clone());
        let status = if serial.is_string() { 422 } else { 400 };
        let slug = if serial.is_string() {
            "callback-decision-invalid"
        } else {
            "callback-malformed"
        };
        expect_refused(signed(&sim, c), status, slug).await;
    }
    let past = (now - chrono::Duration::days(1)).to_rfc3339();
    let beyond = (ten_years + chrono::Duration::days(1)).to_rfc3339();
    let future_consent = (now + chrono::Duration::days(2)).to_rfc3339();
    for (i, (key, value)) in [
        ("expires_at", past.as_str()),
        ("expires_at", beyond.as_str()),
        ("consented_at", future_consent.as_str()),
    ]
    .into_iter()
    .enumerate()
    {
        let c = with(&format!("e-{i}"), key, json!(value));
        expect_refused(signed(&sim, c), 422, "callback-decision-invalid").await;
    }
    // alg: none, as the docs say.
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&granted("n-1"))
    );
    expect_refused(none, 401, "callback-algorithm-not-allowed").await;
    // An aud array, even one that holds kihon4's client id.
    let c = with("a-1", "aud", json!([MYNAPORTAL_CLIENT]));
    expect_refused(signed(&sim, c), 401, "callback-claims-invalid").await;
    // A crit header.
    let pem = std::fs::read(sim.dir.path().join("callback-key.pem")).unwrap();
    let jwks = sim.sim.callback_key.jwks();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = jwks["keys"][0]["kid"].as_str().map(str::to_owned);
    header.crit = Some(vec!["exp".into()]);
    let crit = jsonwebtoken::encode(
        &header,
        &granted("c-1"),
        &EncodingKey::from_rsa_pem(&pem).unwrap(),
    )
    .unwrap();
    expect_refused(crit, 400, "callback-malformed").await;
    assert_eq!(written(&app).await, before, "nothing written by a refusal");
    assert_eq!(app.count(consents::Entity).await, 0);

    // The same decision, well formed: taken.
    assert_eq!(
        callback(&app, &signed(&sim, granted("ok-1")))
            .await
            .status(),
        204
    );
    assert_eq!(app.count(consents::Entity).await, 1);
    assert_eq!(
        app.count_where(
            consent_requests::Entity,
            consent_requests::Column::Status.eq("granted")
        )
        .await,
        1
    );
    app.assert_chain_verifies().await;
}

//! The customer's pages for Mynaportal-routed consent, reached from the
//! emailed link: `GET /consent/{token}` (in `ja`, or `en`, with a switch),
//! `POST /consent/{token}/start` (a CSRF token in a hidden field, bound to a
//! cookie; the page needs no JavaScript) → 303 to the provider's consent
//! page, and `GET /consent/{token}/done`.
//!
//! Every page carries a strict Content-Security-Policy (no script at all),
//! `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer` and
//! `frame-ancestors 'none'`. Unknown, used and expired tokens get a plain
//! page with the right status. The pages show no personal data: whoever
//! holds the link sees only what the institution asks. Requests are
//! rate-limited per client address (`crate::limits::PAGES_PER_MINUTE`).

use std::sync::OnceLock;

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, get, post, web};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use kihon4_core::consent::requests::{self, TokenState};
use kihon4_core::domain::Locale;
use kihon4_core::notices::templates::format_date;
use serde::Deserialize;
use serde_json::json;

use crate::AppState;
use crate::extract::request_id;

/// The cookie the form's CSRF token is bound to.
const CSRF_COOKIE: &str = "kihon4_csrf";

const LAYOUT: &str = include_str!("../../../templates/pages/_layout.html");
const LANDING_JA: &str = include_str!("../../../templates/pages/landing.ja.html");
const LANDING_EN: &str = include_str!("../../../templates/pages/landing.en.html");
const MESSAGE: &str = include_str!("../../../templates/pages/message.html");
const STYLE: &str = include_str!("../../../templates/pages/style.css");
const ICON: &str = include_str!("../../../templates/pages/icon.svg");

fn templates() -> &'static minijinja::Environment<'static> {
    static ENV: OnceLock<minijinja::Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = minijinja::Environment::new();
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::Html);
        for (name, source) in [
            ("_layout.html", LAYOUT),
            ("landing.ja.html", LANDING_JA),
            ("landing.en.html", LANDING_EN),
            ("message.html", MESSAGE),
        ] {
            env.add_template(name, source)
                .expect("the built-in pages are valid templates");
        }
        env
    })
}

/// Whether the client may have another page now; the seconds to wait if not.
fn admit(state: &AppState, req: &HttpRequest) -> Result<(), u64> {
    let source = crate::limits::ClientSource::of(&state.limits, req);
    state.limits.pages.check(&source.0).map_err(u64::from)
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct LangQuery {
    /// `en` for English; anything else, Japanese.
    lang: Option<String>,
}

fn locale_of(raw: Option<&str>) -> Locale {
    match raw {
        Some("en") => Locale::En,
        _ => Locale::Ja,
    }
}

/// The headers every page carries. `form_target` is the origin the page's
/// form may end up at (the provider's, after the redirect).
fn page_to(status: StatusCode, form_target: Option<&str>) -> actix_web::HttpResponseBuilder {
    let mut res = HttpResponse::build(status);
    let form_action = match form_target {
        Some(origin) => format!("'self' {origin}"),
        None => "'self'".to_owned(),
    };
    res.insert_header((
        header::CONTENT_SECURITY_POLICY,
        format!(
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action {form_action}; \
             frame-ancestors 'none'; base-uri 'none'"
        ),
    ))
    .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
    .insert_header((header::REFERRER_POLICY, "no-referrer"))
    .insert_header((header::X_FRAME_OPTIONS, "DENY"))
    .insert_header((header::CACHE_CONTROL, "no-store"))
    .content_type("text/html; charset=utf-8");
    res
}

fn page(status: StatusCode) -> actix_web::HttpResponseBuilder {
    page_to(status, None)
}

fn common(state: &AppState, locale: Locale, here: &str) -> serde_json::Value {
    let institution = &state.notices.institution().name;
    json!({
        "lang": locale.as_str(),
        "institution": institution,
        "here": here,
        "switch_label": match locale { Locale::Ja => "表示する言語", Locale::En => "Language" },
        "footer": match locale {
            Locale::Ja => format!("このページは{institution}がお客さまにご同意をお願いするためのものです。"),
            Locale::En => format!("This page is {institution}'s request for your consent."),
        },
    })
}

fn render(name: &str, context: serde_json::Value) -> String {
    templates()
        .get_template(name)
        .and_then(|t| t.render(minijinja::Value::from(minijinja::value::Serde(&context))))
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "a customer page did not render");
            "<!doctype html><title>Error</title><p>Sorry, this page cannot be shown.</p>".into()
        })
}

/// A title and paragraphs, in Japanese and in English.
type Said = (&'static str, &'static [&'static str]);
type Words = (Said, Said);

/// A page that says one thing, in `locale`, with `status`.
fn message(
    state: &AppState,
    locale: Locale,
    here: &str,
    status: StatusCode,
    (ja, en): Words,
) -> HttpResponse {
    let (title, paragraphs) = match locale {
        Locale::Ja => ja,
        Locale::En => en,
    };
    let mut context = common(state, locale, here);
    context["title"] = json!(title);
    context["paragraphs"] = json!(paragraphs);
    page(status).body(render("message.html", context))
}

const UNKNOWN: Words = (
    (
        "このリンクは使えません",
        &[
            "リンクが正しくないか、すでに無効になっています。メールのリンクをもう一度ご確認いただくか、お問い合わせ先までご連絡ください。",
        ],
    ),
    (
        "This link cannot be used",
        &[
            "The link is not right, or no longer valid. Please check the link in the email, or contact us.",
        ],
    ),
);
const EXPIRED: Words = (
    (
        "このリンクの有効期限が過ぎています",
        &["お手数ですが、お問い合わせ先までご連絡ください。あらためてご案内をお送りします。"],
    ),
    (
        "This link has expired",
        &["Please contact us, and we will send you a new one."],
    ),
);
const USED: Words = (
    (
        "このリンクはすでに使われています",
        &[
            "このリンクは1回だけ使えます。マイナポータルでのお手続きがお済みでない場合は、お問い合わせ先までご連絡ください。",
        ],
    ),
    (
        "This link has been used",
        &["The link can be used once. If you have not finished on Mynaportal, please contact us."],
    ),
);
const FORBIDDEN: Words = (
    (
        "もう一度お試しください",
        &[
            "ページの有効な操作として確認できませんでした。メールのリンクからページを開き直してください。",
        ],
    ),
    (
        "Please try again",
        &[
            "We could not confirm this as a step from our page. Please open the page again from the link in the email.",
        ],
    ),
);
const DONE: Words = (
    (
        "ありがとうございました",
        &[
            "マイナポータルでのお手続きをいただき、ありがとうございます。",
            "ご同意の結果はマイナポータルから当機関に届きます。ご同意いただいた場合は、受付のお知らせをメールでお送りします。",
        ],
    ),
    (
        "Thank you",
        &[
            "Thank you for going through the steps on Mynaportal.",
            "Mynaportal tells us your decision. If you consented, we will send you an email when we receive it.",
        ],
    ),
);
const BUSY: Words = (
    (
        "しばらくしてからお試しください",
        &["アクセスが集中しています。1分ほどしてからもう一度お試しください。"],
    ),
    (
        "Please try again shortly",
        &["There are too many requests. Please try again in a minute."],
    ),
);

fn too_many(state: &AppState, locale: Locale, here: &str, wait: u64) -> HttpResponse {
    let mut res = message(state, locale, here, StatusCode::TOO_MANY_REQUESTS, BUSY);
    if let Ok(v) = header::HeaderValue::from_str(&wait.to_string()) {
        res.headers_mut().insert(header::RETRY_AFTER, v);
    }
    res
}

fn internal(
    state: &AppState,
    locale: Locale,
    here: &str,
    e: kihon4_core::CoreError,
) -> HttpResponse {
    tracing::error!(error = %e, "a customer page failed");
    message(
        state,
        locale,
        here,
        StatusCode::SERVICE_UNAVAILABLE,
        (
            (
                "ただいまご利用いただけません",
                &["しばらくしてからもう一度お試しください。"],
            ),
            (
                "This page is not available right now",
                &["Please try again later."],
            ),
        ),
    )
}

fn refused(state: &AppState, locale: Locale, here: &str, token_state: &TokenState) -> HttpResponse {
    match token_state {
        TokenState::Unknown => message(state, locale, here, StatusCode::NOT_FOUND, UNKNOWN),
        TokenState::Expired => message(state, locale, here, StatusCode::GONE, EXPIRED),
        TokenState::Used | TokenState::Usable(_) => {
            message(state, locale, here, StatusCode::GONE, USED)
        }
    }
}

/// The landing page of a consent request's link: what is asked, and the
/// button on to Mynaportal. Sets the form's CSRF cookie.
#[utoipa::path(
    operation_id = "consentLandingPage",
    tag = "pages",
    params(("token" = String, Path, description = "The link's single-use token"), LangQuery),
    responses(
        (status = 200, description = "The page", content_type = "text/html", body = String),
        (status = 404, description = "The link is not known", content_type = "text/html", body = String),
        (status = 410, description = "The link has expired or was used", content_type = "text/html", body = String),
        (status = 429, description = "Too many pages from this address; `Retry-After`", content_type = "text/html", body = String),
        (status = 503, description = "The page cannot be shown now", content_type = "text/html", body = String),
    )
)]
#[get("/consent/{token}")]
pub async fn landing(
    state: web::Data<AppState>,
    req: HttpRequest,
    token: web::Path<String>,
    query: web::Query<LangQuery>,
) -> HttpResponse {
    let locale = locale_of(query.lang.as_deref());
    let here = format!("/consent/{}", token.as_str());
    if let Err(wait) = admit(&state, &req) {
        return too_many(&state, locale, &here, wait);
    }
    let found = match requests::by_token(&state.db, &token).await {
        Ok(found) => found,
        Err(e) => return internal(&state, locale, &here, e),
    };
    let request = match requests::state(found, chrono::Utc::now()) {
        TokenState::Usable(r) => r,
        other => return refused(&state, locale, &here, &other),
    };
    let mut csrf = [0u8; 32];
    rand_bytes(&mut csrf);
    let csrf = URL_SAFE_NO_PAD.encode(csrf);
    let tz = state.consent_settings.timezone;
    let mut context = common(&state, locale, &here);
    context["title"] = json!(match locale {
        Locale::Ja => "ご同意のお願い",
        Locale::En => "Your consent",
    });
    context["csrf_token"] = json!(csrf);
    context["expires_on"] = json!(format_date(
        locale,
        request.expires_at.with_timezone(&tz).date_naive()
    ));
    let name = match locale {
        Locale::Ja => "landing.ja.html",
        Locale::En => "landing.en.html",
    };
    let secure = req.connection_info().scheme() == "https";
    let cookie = Cookie::build(CSRF_COOKIE, csrf)
        .path("/consent/")
        .http_only(true)
        .secure(secure)
        .same_site(SameSite::Strict)
        .finish();
    let provider_origin = url::Url::parse(&request.consent_url)
        .ok()
        .map(|u| u.origin().ascii_serialization());
    page_to(StatusCode::OK, provider_origin.as_deref())
        .cookie(cookie)
        .body(render(name, context))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct StartForm {
    /// The token of the landing page's form (it must match its cookie).
    csrf_token: Option<String>,
    /// `en` for English; anything else, Japanese.
    lang: Option<String>,
}

/// The button: checks the CSRF token against its cookie, uses the link
/// once, and sends the customer to Mynaportal.
#[utoipa::path(
    operation_id = "consentStart",
    tag = "pages",
    params(("token" = String, Path, description = "The link's single-use token")),
    request_body(content = StartForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "On to Mynaportal (`Location`)", headers(("Location" = String))),
        (status = 403, description = "The CSRF token is missing or does not match its cookie", content_type = "text/html", body = String),
        (status = 404, description = "The link is not known", content_type = "text/html", body = String),
        (status = 410, description = "The link has expired or was used", content_type = "text/html", body = String),
        (status = 429, description = "Too many pages from this address; `Retry-After`", content_type = "text/html", body = String),
        (status = 503, description = "The page cannot be shown now", content_type = "text/html", body = String),
    )
)]
#[post("/consent/{token}/start")]
pub async fn start(
    state: web::Data<AppState>,
    req: HttpRequest,
    token: web::Path<String>,
    form: Option<web::Form<StartForm>>,
) -> HttpResponse {
    let form = form.map(|f| f.into_inner());
    let locale = locale_of(form.as_ref().and_then(|f| f.lang.as_deref()));
    let here = format!("/consent/{}", token.as_str());
    if let Err(wait) = admit(&state, &req) {
        return too_many(&state, locale, &here, wait);
    }
    let cookie = req.cookie(CSRF_COOKIE).map(|c| c.value().to_owned());
    let sent = form.as_ref().and_then(|f| f.csrf_token.clone());
    let matches = match (&cookie, &sent) {
        (Some(c), Some(s)) if !c.is_empty() => same(c.as_bytes(), s.as_bytes()),
        _ => false,
    };
    if !matches {
        return message(&state, locale, &here, StatusCode::FORBIDDEN, FORBIDDEN);
    }
    let ctx = kihon4_core::audit::AuditContext::new(
        kihon4_core::audit::Actor::anonymous(),
        request_id(&req),
    );
    match requests::start(&state.db, &ctx, &token).await {
        Ok(Ok(consent_url)) => HttpResponse::SeeOther()
            .insert_header((header::LOCATION, consent_url))
            .insert_header((header::REFERRER_POLICY, "no-referrer"))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .cookie(
                Cookie::build(CSRF_COOKIE, "")
                    .path("/consent/")
                    .max_age(actix_web::cookie::time::Duration::ZERO)
                    .finish(),
            )
            .finish(),
        Ok(Err(token_state)) => refused(&state, locale, &here, &token_state),
        Err(e) => internal(&state, locale, &here, e),
    }
}

/// Where Mynaportal sends the customer back.
#[utoipa::path(
    operation_id = "consentDonePage",
    tag = "pages",
    params(("token" = String, Path, description = "The link's single-use token"), LangQuery),
    responses(
        (status = 200, description = "Thanks", content_type = "text/html", body = String),
        (status = 404, description = "The link is not known", content_type = "text/html", body = String),
        (status = 429, description = "Too many pages from this address; `Retry-After`", content_type = "text/html", body = String),
        (status = 503, description = "The page cannot be shown now", content_type = "text/html", body = String),
    )
)]
#[get("/consent/{token}/done")]
pub async fn done(
    state: web::Data<AppState>,
    req: HttpRequest,
    token: web::Path<String>,
    query: web::Query<LangQuery>,
) -> HttpResponse {
    let here = format!("/consent/{}/done", token.as_str());
    let found = match requests::by_token(&state.db, &token).await {
        Ok(found) => found,
        Err(e) => return internal(&state, locale_of(query.lang.as_deref()), &here, e),
    };
    // The customer's own language when no switch was made.
    let locale = match (&query.lang, &found) {
        (Some(l), _) => locale_of(Some(l)),
        (None, Some(r)) => match kihon4_core::customers::get(&state.db, r.customer_id).await {
            Ok(c) => c.locale,
            Err(_) => Locale::Ja,
        },
        (None, None) => Locale::Ja,
    };
    if let Err(wait) = admit(&state, &req) {
        return too_many(&state, locale, &here, wait);
    }
    match found {
        Some(_) => message(&state, locale, &here, StatusCode::OK, DONE),
        None => message(&state, locale, &here, StatusCode::NOT_FOUND, UNKNOWN),
    }
}

/// The pages' stylesheet.
#[utoipa::path(
    operation_id = "consentStylesheet",
    tag = "pages",
    responses((status = 200, description = "The stylesheet", content_type = "text/css", body = String))
)]
#[get("/consent/assets/style.css")]
pub async fn style() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .body(STYLE)
}

/// Equality that takes as long whatever the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The pages' icon (so that browsers do not ask for a missing favicon).
#[utoipa::path(
    operation_id = "consentIcon",
    tag = "pages",
    responses((status = 200, description = "The icon", content_type = "image/svg+xml", body = String))
)]
#[get("/consent/assets/icon.svg")]
pub async fn icon() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("image/svg+xml")
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::CACHE_CONTROL, "public, max-age=86400"))
        .body(ICON)
}

fn rand_bytes(out: &mut [u8]) {
    use ring::rand::SecureRandom;
    ring::rand::SystemRandom::new()
        .fill(out)
        .expect("the system's random source works");
}

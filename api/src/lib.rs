//! kihon4-api: the actix-web application. Handlers are thin: they parse,
//! authorise, call one function in `kihon4_core` and map the result.

pub mod extract;
pub mod limits;
pub mod middleware;
pub mod openapi;
pub mod problem;
pub mod routes;
pub mod witness;

use std::net::TcpListener;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{App, HttpResponse, HttpServer, web};
use kihon4_core::auth::Authenticator;
use kihon4_core::provider::Provider;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use sea_orm::DatabaseConnection;

use crate::problem::{ApiError, ProblemKind};

/// What every handler shares.
pub struct AppState {
    pub db: DatabaseConnection,
    pub auth: Authenticator,
    pub metrics: PrometheusHandle,
    pub consent_texts: kihon4_core::consent::texts::ConsentTexts,
    pub consent_verifier: kihon4_core::consent::ConsentVerifier,
    pub consent_settings: kihon4_core::consent::ConsentSettings,
    pub notices: std::sync::Arc<kihon4_core::notices::Notices>,
    /// Mynaportal-routed consent, when a provider is configured.
    pub mynaportal: Option<std::sync::Arc<Mynaportal>>,
    /// The key that signs audit checkpoints and export manifests.
    pub audit_key: Option<std::sync::Arc<kihon4_core::audit_export::SigningKey>>,
    /// The roles that may export personal values in clear
    /// (`KIHON4_AUDIT_PII_ROLES`; by default `auditor_pii` and `admin`).
    pub audit_pii_roles: Vec<kihon4_core::auth::Role>,
    /// The rate limits, and whose report of a client's address is believed.
    pub limits: std::sync::Arc<limits::Limits>,
    /// How refused requests are counted in the audit trail.
    pub refusals: kihon4_core::refusals::RefusalSettings,
    /// The roles that may read `GET /v1/changes` (`KIHON4_CHANGES_READ_ROLES`).
    pub changes_read_roles: Vec<kihon4_core::auth::Role>,
    /// How much of the changed values the feed gives (`KIHON4_CHANGE_FEED_VALUES`).
    pub change_values: kihon4_core::changes::ValuePolicy,
}

impl AppState {
    /// The state `serve` and `api` run with, from the configuration and
    /// what the process shares between its roles; `provider` is the
    /// provider client ([`provider`]), when one is configured. The only
    /// place an `AppState` is assembled (the tests override a field or two).
    pub fn build(
        config: &kihon4_core::config::Config,
        shared: &kihon4_core::shared::Shared,
        provider: Option<Arc<dyn Provider>>,
    ) -> Result<Self, String> {
        let trust = config.trust();
        Ok(Self {
            db: shared.db.clone(),
            auth: Authenticator::new(&config.jwt)?,
            metrics: metrics_handle(),
            consent_texts: kihon4_core::consent::texts::ConsentTexts::for_institution(
                &config.settings.institution_name,
            ),
            consent_verifier: kihon4_core::consent::ConsentVerifier::new(
                trust.role,
                shared.anchors.clone(),
                trust.revocation,
                provider.clone(),
            ),
            consent_settings: config.consent(),
            notices: shared.notices.clone(),
            mynaportal: provider.map(|p| {
                let settings = config.mynaportal();
                Arc::new(Mynaportal::new(settings.requests, settings.callbacks, p))
            }),
            audit_key: shared.audit_key.clone(),
            audit_pii_roles: config.settings.audit_pii_roles.clone(),
            limits: Arc::new(limits::Limits::from_config(config)),
            refusals: config.refusals(),
            changes_read_roles: config.settings.changes_read_roles.clone(),
            change_values: config.settings.change_feed_values,
        })
    }
}

/// The provider client the API uses, when one is configured. A request
/// answers within seconds, so it tries briefly (the worker's waits out
/// maintenance windows).
pub fn provider(config: &kihon4_core::config::Config) -> Result<Option<Arc<dyn Provider>>, String> {
    use kihon4_core::provider::{ProviderSettings, connect};
    let Some(upstream) = config.upstream()? else {
        return Ok(None);
    };
    let mut settings = ProviderSettings::new(upstream.url, upstream.api_key);
    settings.timeout = Duration::from_secs(10);
    settings.max_attempts = 2;
    settings.max_wait = Duration::from_secs(2);
    // The adapter of the configured kind (KIHON4_PROVIDER_KIND).
    connect(upstream.kind, settings, upstream.check_method).map(Some)
}

/// Mynaportal-routed consent, as core holds it.
pub use kihon4_core::consent::mynaportal::Mynaportal;

/// The process's metrics recorder (installed once, shared by every app in it).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ];
            let builder = PrometheusBuilder::new()
                .set_buckets(&buckets)
                .expect("buckets are not empty");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Another recorder may exist in tests; then this one simply records nothing.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Registers every route, the body and query limits, and the problem
/// answers for anything no route matched.
pub fn configure(cfg: &mut web::ServiceConfig, max_body_bytes: usize) {
    cfg.app_data(web::PayloadConfig::new(max_body_bytes))
        .app_data(web::QueryConfig::default().error_handler(|err, _| {
            let message = err.to_string();
            if kihon4_core::domain::contains_my_number(&message) {
                return ApiError::from(kihon4_core::domain::FieldErrors(vec![
                    kihon4_core::domain::FieldError {
                        field: "query".into(),
                        error: kihon4_core::domain::ValueError::MyNumber,
                    },
                ]))
                .into();
            }
            let message = message
                .strip_prefix("Query deserialize error: ")
                .unwrap_or(&message)
                .to_owned();
            ApiError::field(ProblemKind::InvalidQuery, "query", message).into()
        }))
        .app_data(
            web::PathConfig::default().error_handler(|_, _| ApiError::not_found("resource").into()),
        )
        .service(routes::service::healthz)
        .service(routes::service::readyz)
        .service(routes::service::metrics)
        .service(routes::service::openapi)
        .service(routes::service::docs)
        .service(routes::customers::create)
        .service(routes::customers::list)
        .service(routes::customers::read)
        .service(routes::customers::change)
        .service(routes::customers::history)
        .service(routes::audit::events)
        .service(routes::audit::checkpoint)
        .service(routes::audit_log::checkpoint_at)
        .service(routes::audit_log::log_checkpoint)
        .service(routes::audit_log::log_keys)
        .service(routes::audit_log::tile)
        .service(routes::audit_log::inclusion)
        .service(routes::audit_log::consistency)
        .service(routes::audit_log::customer)
        .service(routes::audit::manifest)
        .service(routes::audit::export)
        .service(routes::audit::export_manifest)
        .service(routes::audit::export_personal_data)
        .service(routes::consent::texts)
        .service(routes::consent::grant)
        .service(routes::consent::list)
        .service(routes::consent::read)
        .service(routes::consent::withdraw)
        .service(routes::consent::retry_registration)
        .service(routes::mynaportal::create)
        .service(routes::mynaportal::read)
        .service(routes::mynaportal::webhook)
        .service(routes::pages::style)
        .service(routes::pages::icon)
        .service(routes::pages::landing)
        .service(routes::pages::start)
        .service(routes::pages::done)
        .service(routes::reports::revocation_checks)
        .service(routes::outbox::list)
        .service(routes::outbox::retry)
        .service(routes::sync::request)
        .service(routes::sync::list)
        .service(routes::sync::read)
        .service(routes::sync::reviews)
        .service(routes::sync::resolve)
        .service(routes::changes::list)
        .service(routes::changes::create)
        .service(routes::changes::list_endpoints)
        .service(routes::changes::read)
        .service(routes::changes::disable)
        .service(routes::changes::enable)
        .service(routes::changes::remove)
        .service(routes::changes::rotate)
        .service(routes::changes::replay)
        .service(routes::changes::attempts);
}

/// No route took the request: `405` with `Allow` when the path is one of
/// the described routes' (another method), else `404`.
async fn no_route(req: actix_web::HttpRequest) -> HttpResponse {
    use actix_web::ResponseError;
    let allowed = openapi::methods_of(req.path());
    if allowed.is_empty() {
        return ApiError::new(ProblemKind::NotFound, "No such route.").error_response();
    }
    let allow = allowed.join(", ");
    let mut res = ApiError::new(
        ProblemKind::MethodNotAllowed,
        format!("This route takes {allow}."),
    )
    .error_response();
    if let Ok(value) = actix_web::http::header::HeaderValue::from_str(&allow) {
        res.headers_mut()
            .insert(actix_web::http::header::ALLOW, value);
    }
    res
}

/// Builds the HTTP server on `listener`; the caller runs it and stops it
/// through its handle (in-flight requests finish within `grace`).
pub fn server(
    state: web::Data<AppState>,
    listener: TcpListener,
    max_body_bytes: usize,
    grace: Duration,
) -> std::io::Result<Server> {
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .configure(|cfg| configure(cfg, max_body_bytes))
            .default_service(web::to(no_route))
            .wrap(actix_web::middleware::from_fn(middleware::idempotency))
            .wrap(actix_web::middleware::from_fn(middleware::request_context))
    })
    .disable_signals()
    .shutdown_timeout(grace.as_secs())
    .listen(listener)?
    .run();
    Ok(server)
}

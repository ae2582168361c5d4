//! Spawns the real app on port 0 with a fresh database per test, on SQLite
//! or PostgreSQL, and talks HTTP to it.

use std::net::TcpListener;
use std::time::Duration;

use actix_web::web;
use kihon4_api::AppState;
use kihon4_core::auth::{JwtAlgorithm, JwtKeys, JwtSettings, Role, issue_token};
use kihon4_core::config::Config;
use kihon4_core::consent::ConsentVerifier;
use kihon4_core::domain::JpkiRole;
use kihon4_core::entities::{audit_events, outbox};
use kihon4_core::shared::Shared;
use kihon4_migrations::{Migrator, MigratorTrait};
use reqwest::{Response, StatusCode};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, EntityTrait, PaginatorTrait,
    QueryFilter, Statement, sea_query::IntoCondition,
};
use secrecy::SecretString;
use serde_json::Value;

pub use kihon4_test_support::{Backend, fresh_database};

pub const SECRET: &str = "test-secret-test-secret-test-secret-0123";
pub const ISSUER: &str = "kihon4-tests";
pub const AUDIENCE: &str = "kihon4";
pub const MAX_BODY: usize = 16 * 1024;
pub const INSTITUTION: &str = "かもめ銀行";

/// kihon4's client id at the provider in these tests (the callbacks' `aud`).
pub const MYNAPORTAL_CLIENT: &str = "kihon4-test";

/// The built-in notices, signed by the test institution.
pub fn notices() -> kihon4_core::notices::Notices {
    kihon4_core::notices::Notices::load(
        kihon4_core::notices::Institution {
            name: INSTITUTION.into(),
            contact: "0120-000-000（平日9時〜17時）".into(),
            reply_to: String::new(),
            ..Default::default()
        },
        kihon4_core::notices::Sender {
            address: "notices@bank.example.jp",
            reply_to: Some("support@bank.example.jp"),
            timezone: chrono_tz::Asia::Tokyo,
        },
        None,
    )
    .expect("the built-in templates render")
}

pub fn jwt_settings() -> JwtSettings {
    JwtSettings {
        algorithm: JwtAlgorithm::Hs256,
        keys: JwtKeys::Secret(SecretString::from(SECRET.to_owned())),
        issuer: Some(ISSUER.into()),
        audience: Some(AUDIENCE.into()),
        max_token_lifetime: kihon4_core::auth::DEFAULT_MAX_TOKEN_LIFETIME,
    }
}

/// The rate limits and the counting of refusals of a test app. By default
/// the limits are kihon4's own and every refusal up to 100 per source and
/// minute gets its own event, so that tests of refusals see each one.
pub struct Guard {
    pub limits: kihon4_api::limits::Limits,
    pub refusals: kihon4_core::refusals::RefusalSettings,
}

impl Default for Guard {
    fn default() -> Self {
        Self {
            limits: kihon4_api::limits::Limits::new(600, 6000, Default::default()),
            refusals: kihon4_core::refusals::RefusalSettings {
                window_seconds: 60,
                individually: 100,
            },
        }
    }
}

pub struct TestApp {
    pub base: String,
    pub db: DatabaseConnection,
    pub http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(backend, true).await
    }

    /// With `migrate` false the database is left empty (a schema behind the binary).
    pub async fn spawn_with(backend: Backend, migrate: bool) -> Self {
        let unconfigured = ConsentVerifier::Unconfigured("no provider in this test".into());
        Self::spawn_full(
            backend,
            migrate,
            unconfigured,
            JpkiRole::Platform,
            None,
            Guard::default(),
        )
        .await
    }

    /// An app that asks customers for consent on Mynaportal through
    /// `provider`, trusting callbacks from `issuer`; its public base URL is
    /// its own address.
    pub async fn spawn_mynaportal(
        backend: Backend,
        provider: std::sync::Arc<dyn kihon4_core::provider::Provider>,
        issuer: &str,
    ) -> Self {
        let unconfigured = ConsentVerifier::Unconfigured("no provider in this test".into());
        Self::spawn_full(
            backend,
            true,
            unconfigured,
            JpkiRole::Platform,
            Some((provider, Some(issuer.to_owned()))),
            Guard::default(),
        )
        .await
    }

    /// Like [`spawn_mynaportal`](Self::spawn_mynaportal), without
    /// `KIHON4_PROVIDER_ISSUER`: no callback can be trusted.
    pub async fn spawn_mynaportal_without_issuer(
        backend: Backend,
        provider: std::sync::Arc<dyn kihon4_core::provider::Provider>,
    ) -> Self {
        let unconfigured = ConsentVerifier::Unconfigured("no provider in this test".into());
        Self::spawn_full(
            backend,
            true,
            unconfigured,
            JpkiRole::Platform,
            Some((provider, None)),
            Guard::default(),
        )
        .await
    }

    /// An app with these rate limits and this counting of refusals.
    pub async fn spawn_guarded(backend: Backend, guard: Guard) -> Self {
        let unconfigured = ConsentVerifier::Unconfigured("no provider in this test".into());
        Self::spawn_full(backend, true, unconfigured, JpkiRole::Platform, None, guard).await
    }

    /// Like [`spawn_mynaportal`](Self::spawn_mynaportal), with `guard`.
    pub async fn spawn_mynaportal_guarded(
        backend: Backend,
        provider: std::sync::Arc<dyn kihon4_core::provider::Provider>,
        issuer: &str,
        guard: Guard,
    ) -> Self {
        let unconfigured = ConsentVerifier::Unconfigured("no provider in this test".into());
        Self::spawn_full(
            backend,
            true,
            unconfigured,
            JpkiRole::Platform,
            Some((provider, Some(issuer.to_owned()))),
            guard,
        )
        .await
    }

    /// An app that takes consents with `verifier`, in `role`.
    pub async fn spawn_consent(
        backend: Backend,
        verifier: ConsentVerifier,
        role: JpkiRole,
    ) -> Self {
        Self::spawn_full(backend, true, verifier, role, None, Guard::default()).await
    }

    /// An app that takes consents with `verifier`, in `role`, with `tune`
    /// applied to its state (`changes_read_roles`, `change_values`, …).
    pub async fn spawn_tuned(
        backend: Backend,
        verifier: ConsentVerifier,
        role: JpkiRole,
        tune: impl FnOnce(&mut AppState),
    ) -> Self {
        Self::spawn_tuned_full(backend, true, verifier, role, None, Guard::default(), tune).await
    }

    async fn spawn_full(
        backend: Backend,
        migrate: bool,
        consent_verifier: ConsentVerifier,
        role: JpkiRole,
        mynaportal: Option<(
            std::sync::Arc<dyn kihon4_core::provider::Provider>,
            Option<String>,
        )>,
        guard: Guard,
    ) -> Self {
        Self::spawn_tuned_full(
            backend,
            migrate,
            consent_verifier,
            role,
            mynaportal,
            guard,
            |_| {},
        )
        .await
    }

    async fn spawn_tuned_full(
        backend: Backend,
        migrate: bool,
        consent_verifier: ConsentVerifier,
        role: JpkiRole,
        mynaportal: Option<(
            std::sync::Arc<dyn kihon4_core::provider::Provider>,
            Option<String>,
        )>,
        Guard { limits, refusals }: Guard,
        tune: impl FnOnce(&mut AppState),
    ) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().unwrap().port();
        let base = format!("http://127.0.0.1:{port}");
        let db_url = fresh_database(backend, dir.path()).await;
        let db = kihon4_core::db::connect(&db_url, 5).await.expect("connect");
        if migrate {
            Migrator::up(&db, None).await.expect("migrate");
        }
        let (provider, issuer) = match mynaportal {
            Some((provider, issuer)) => (Some(provider), issuer),
            None => (None, None),
        };
        // The test app is configured as `serve` is, and built by the same function.
        let mut settings = vec![
            ("KIHON4_DATA_DIR", dir.path().display().to_string()),
            ("KIHON4_DATABASE_URL", db_url),
            ("KIHON4_JWT_SECRET", SECRET.into()),
            ("KIHON4_JWT_ISSUER", ISSUER.into()),
            ("KIHON4_JWT_AUDIENCE", AUDIENCE.into()),
            ("KIHON4_ROLE", role.as_str().into()),
            ("KIHON4_INSTITUTION_NAME", INSTITUTION.into()),
            ("KIHON4_MAX_BODY_BYTES", MAX_BODY.to_string()),
            ("KIHON4_SHUTDOWN_GRACE_SECONDS", "5".into()),
            ("KIHON4_PUBLIC_BASE_URL", base.clone()),
            ("KIHON4_PROVIDER_CLIENT_ID", MYNAPORTAL_CLIENT.into()),
        ];
        if let Some(issuer) = issuer {
            settings.push(("KIHON4_PROVIDER_ISSUER", issuer));
        }
        let config = Config::load_from(
            None,
            settings
                .into_iter()
                .map(|(name, value)| (name.to_owned(), value)),
        )
        .expect("the test configuration");
        let shared = Shared {
            db: db.clone(),
            notices: std::sync::Arc::new(notices()),
            audit_key: Some(std::sync::Arc::new(
                kihon4_core::audit_export::SigningKey::load_or_create(
                    &config.audit().audit_signing_key,
                    true,
                )
                .expect("an audit key"),
            )),
            anchors: None,
        };
        let mut state = AppState::build(&config, &shared, provider).expect("the app state");
        // What the test is about.
        state.consent_verifier = consent_verifier;
        state.limits = std::sync::Arc::new(limits);
        state.refusals = refusals;
        tune(&mut state);
        let http = config.http();
        let server = kihon4_api::server(
            web::Data::new(state),
            listener,
            http.max_body_bytes,
            http.shutdown_grace,
        )
        .expect("server");
        tokio::spawn(server);
        // As every kihon4 process does: queued audit events into the chain.
        tokio::spawn(kihon4_core::audit::queue::run(
            db.clone(),
            tokio_util::sync::CancellationToken::new(),
        ));
        TestApp {
            base,
            db,
            http: reqwest::Client::new(),
            _dir: dir,
        }
    }

    /// The app's own folder (its database, its audit signing key).
    pub fn dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// The app's audit signing key (which also signs the audit log).
    pub fn audit_key(&self) -> kihon4_core::audit_export::SigningKey {
        kihon4_core::audit_export::SigningKey::load(&self.dir().join("audit-signing-key.pem"))
            .expect("the app's audit key")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn token(&self, roles: &[Role]) -> String {
        token_for("tester", roles)
    }

    pub fn operator(&self) -> String {
        self.token(&[Role::Operator])
    }

    pub fn auditor(&self) -> String {
        self.token(&[Role::Auditor])
    }

    pub async fn post(&self, path: &str, token: &str, body: &Value) -> Response {
        self.http
            .post(self.url(path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("request")
    }

    pub async fn get(&self, path: &str, token: &str) -> Response {
        self.http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("request")
    }

    pub async fn create_customer(&self, external_ref: &str) -> Value {
        let res = self
            .post(
                "/v1/customers",
                &self.operator(),
                &customer_body(external_ref),
            )
            .await;
        assert_eq!(res.status(), StatusCode::CREATED);
        res.json().await.unwrap()
    }

    /// How many rows `entity`'s table holds.
    pub async fn count<E: EntityTrait>(&self, entity: E) -> i64
    where
        E::Model: Sync,
    {
        self.count_where(entity, Condition::all()).await
    }

    /// How many rows of `entity`'s table match `filter`, a condition on its
    /// columns: `count_where(outbox::Entity, outbox::Column::Status.eq("sent"))`.
    pub async fn count_where<E: EntityTrait>(&self, _entity: E, filter: impl IntoCondition) -> i64
    where
        E::Model: Sync,
    {
        self.sequenced().await;
        let n = E::find()
            .filter(filter)
            .count(&self.db)
            .await
            .expect("count");
        i64::try_from(n).expect("a count fits")
    }

    /// How many audit events have `action`.
    pub async fn count_events(&self, action: &str) -> i64 {
        self.count_where(
            audit_events::Entity,
            audit_events::Column::Action.eq(action),
        )
        .await
    }

    /// How many notices of `kind` the outbox holds, whatever their status.
    pub async fn count_notices(&self, kind: &str) -> i64 {
        self.count_where(outbox::Entity, outbox::Column::Kind.eq(kind))
            .await
    }

    /// Waits for the audit events queued so far to be in the chain (when
    /// writers raced for its head, PostgreSQL).
    pub async fn sequenced(&self) {
        kihon4_core::audit::queue::sequence_all(&self.db)
            .await
            .expect("the queue empties");
    }

    /// The actions of every audit event, in chain order.
    pub async fn audit_actions(&self) -> Vec<String> {
        self.sequenced().await;
        let rows = self
            .db
            .query_all_raw(Statement::from_string(
                self.db.get_database_backend(),
                "SELECT action FROM audit_events ORDER BY seq".to_owned(),
            ))
            .await
            .expect("audit events");
        rows.iter()
            .map(|r| r.try_get::<String>("", "action").unwrap())
            .collect()
    }

    /// Asserts the stored chain verifies and returns its length.
    pub async fn assert_chain_verifies(&self) -> u64 {
        self.sequenced().await;
        let summary = kihon4_core::audit::verify_chain(&self.db)
            .await
            .expect("readable")
            .expect("the chain verifies");
        summary.events
    }
}

pub fn token_for(sub: &str, roles: &[Role]) -> String {
    issue_token(&jwt_settings(), None, sub, roles, Duration::from_secs(600)).expect("token")
}

pub fn customer_body(external_ref: &str) -> Value {
    serde_json::json!({
        "external_ref": external_ref,
        "email": "taro.yamada@example.jp",
        "locale": "ja",
        "basic4": {
            "name": "山田太郎",
            "address": "東京都千代田区千代田1-1",
            "birth_date": "1980-02-17",
            "gender": "1"
        }
    })
}

/// Reads a problem response, checking its media type, status and type.
pub async fn expect_problem(res: Response, status: u16, slug: &str) -> Value {
    let actual = res.status().as_u16();
    let content_type = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    assert!(res.headers().contains_key("x-request-id"));
    let text = res.text().await.expect("a body");
    assert_eq!(actual, status, "status, with body {text}");
    assert_eq!(content_type.as_deref(), Some("application/problem+json"));
    let body: Value = serde_json::from_str(&text).expect("a JSON problem");
    assert_eq!(
        body["type"],
        format!("https://kihon4.dev/problems/{slug}"),
        "problem type in {body}"
    );
    assert_eq!(body["status"], status);
    body
}

/// The fields a validation problem names, in order.
pub fn problem_fields(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| e["field"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The refusal tallies (`core/src/refusals.rs`, which writes them in SQL of
/// its own), as an entity so that tests can count them.
pub mod refusal_tallies {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "refusal_tallies")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub action: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub source: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub window_start: i64,
        pub window_seconds: i64,
        pub actor: String,
        pub count: i64,
        pub aggregated: i64,
        pub first_request_id: Option<String>,
        pub last_request_id: Option<String>,
        pub first_at: Option<DateTimeUtc>,
        pub last_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

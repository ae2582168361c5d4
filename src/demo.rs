//! `kihon4 demo`: the whole loop on this machine with no configuration at
//! all. SQLite in a local folder, the simulator in the same process as the
//! provider (its CA trusted: only the demo does that), notices as `.eml`
//! files. It takes consents signed by residents' keys, lets life happen on
//! the register, runs detection and sync, and says what became of each
//! record.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use kihon4_core::audit::{Actor, AuditContext};
use kihon4_core::auth::{Role, issue_token};
use kihon4_core::config::Config;
use kihon4_core::notices::mail::dispatch_due;
use kihon4_core::provider::{HttpProvider, Provider, ProviderSettings};
use kihon4_core::shared::Shared;
use kihon4_core::sync::{self, Scope};
use serde_json::{Value, json};

const INSTITUTION: &str = "かもめ銀行";
const FROM: &str = "notices@kamome-bank.example";

/// The residents of the demo: who they are and what happens to them.
const PEOPLE: [(&str, &str, &str, &str, &str); 5] = [
    (
        "DEMO-001",
        "山田太郎",
        "東京都千代田区千代田1-1",
        "1980-02-17",
        "stays",
    ),
    (
        "DEMO-002",
        "佐藤花子",
        "東京都新宿区西新宿2-8-1",
        "1991-07-03",
        "moves",
    ),
    (
        "DEMO-003",
        "鈴木一郎",
        "神奈川県横浜市中区日本大通1",
        "1975-11-30",
        "renames",
    ),
    (
        "DEMO-004",
        "高橋次郎",
        "大阪府大阪市北区中之島1-3-20",
        "1948-04-12",
        "dies",
    ),
    (
        "DEMO-005",
        "田中三郎",
        "愛知県名古屋市中区三の丸3-1-1",
        "1988-09-21",
        "loses",
    ),
];

fn say(line: impl AsRef<str>) {
    println!("{}", line.as_ref());
}

fn free_listener(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))
}

/// Removes what an earlier demo left in `dir`, keeping nothing but the folder.
fn fresh(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    kihon4_core::files::create_private_dir(dir)?;
    Ok(())
}

struct Client {
    http: reqwest::Client,
    api: String,
    sim: String,
    token: String,
}

impl Client {
    async fn sim(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let res = self
            .http
            .post(format!("{}{path}", self.sim))
            .json(&body)
            .send()
            .await?;
        anyhow::ensure!(
            res.status().is_success(),
            "the simulator answered {}",
            res.status()
        );
        Ok(res.json().await.unwrap_or(Value::Null))
    }

    async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.api))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await?;
        let status = res.status();
        let body: Value = res.json().await.unwrap_or(Value::Null);
        anyhow::ensure!(status.is_success(), "{path} answered {status}: {body}");
        Ok(body)
    }
}

pub async fn demo(dir: PathBuf, listen: SocketAddr, serve: bool) -> anyhow::Result<()> {
    fresh(&dir)?;
    say("kihon4 demo — everything runs in this process; nothing leaves this machine.");
    say(format!("Its files are in {}.\n", dir.display()));

    // J-LIS and the platform operator: the simulator.
    let sim = web::Data::new(
        kihon4_sim::Simulator::open(kihon4_sim::SimSettings {
            data_dir: dir.join("sim"),
            api_key: None,
            sim_routes_public: false,
        })
        .await?,
    );
    let sim_listener = free_listener(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    let sim_url = format!("http://{}", sim_listener.local_addr()?);
    let sim_server = kihon4_sim::server(sim.clone(), sim_listener)?;
    let sim_handle = sim_server.handle();
    tokio::spawn(sim_server);
    say(format!(
        "1. The J-LIS simulator is up at {sim_url} (its CA is trusted, for the demo only)."
    ));

    // kihon4 itself, on SQLite, configured as `serve` is: from settings.
    let secret: String = (0..48)
        .map(|_| char::from(b'a' + rand::random::<u8>() % 26))
        .collect();
    let settings = [
        ("KIHON4_DATA_DIR", dir.display().to_string()),
        ("KIHON4_LISTEN", listen.to_string()),
        ("KIHON4_DB_MAX_CONNECTIONS", "5".into()),
        ("KIHON4_JWT_SECRET", secret),
        ("KIHON4_PROVIDER_URL", format!("{sim_url}/")),
        ("KIHON4_PROVIDER_API_KEY", "demo-api-key".into()),
        (
            "KIHON4_TRUST_ANCHORS",
            dir.join("sim/ca.pem").display().to_string(),
        ),
        ("KIHON4_INSTITUTION_NAME", INSTITUTION.into()),
        (
            "KIHON4_INSTITUTION_CONTACT",
            "0120-000-000（平日9時〜17時）".into(),
        ),
        ("KIHON4_MAIL_FROM", FROM.into()),
        ("KIHON4_SHUTDOWN_GRACE_SECONDS", "5".into()),
    ];
    let config = Config::load_from(None, settings.map(|(name, value)| (name.to_owned(), value)))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let storage = config.audit();
    // The embedded default: migrated as it is opened.
    let db = crate::wiring::open_current(&storage).await?;
    // The demo's own patience with the provider: a few quick retries.
    let upstream = config
        .upstream()
        .map_err(anyhow::Error::msg)?
        .expect("the simulator is the provider");
    let mut provider_settings = ProviderSettings::new(upstream.url, upstream.api_key);
    provider_settings.max_attempts = 3;
    provider_settings.max_wait = Duration::from_secs(5);
    let provider: Arc<dyn Provider> =
        Arc::new(HttpProvider::new(provider_settings).map_err(anyhow::Error::msg)?);
    let anchors = crate::wiring::anchors(&config)?.expect("the simulator's CA is trusted");
    let notices = crate::wiring::notices(&config)?;
    let mail = config.mail_drop_dir();
    let mailer = config.mail().mailer().map_err(anyhow::Error::msg)?;
    let shared = Shared {
        db: db.clone(),
        notices: notices.clone(),
        audit_key: Some(Arc::new(crate::wiring::audit_key(&storage)?)),
        anchors: Some(anchors.clone()),
    };
    let mut state = kihon4_api::AppState::build(&config, &shared, Some(provider.clone()))
        .map_err(anyhow::Error::msg)?;
    // The demo takes consents with cards only, not through Mynaportal.
    state.mynaportal = None;
    let state = web::Data::new(state);
    let listener = free_listener(listen)?;
    let api_url = format!("http://{}", listener.local_addr()?);
    let http = config.http();
    let server = kihon4_api::server(state, listener, http.max_body_bytes, http.shutdown_grace)?;
    let api_handle = server.handle();
    tokio::spawn(server);
    let jwt = &config.jwt;
    let token = issue_token(
        jwt,
        None,
        "demo",
        &[Role::Operator, Role::Auditor, Role::Admin],
        Duration::from_secs(12 * 3600),
    )
    .map_err(anyhow::Error::msg)?;
    say(format!(
        "2. kihon4's API is up at {api_url}, on SQLite in {}.\n",
        dir.join("kihon4.db").display()
    ));
    let client = Client {
        http: reqwest::Client::new(),
        api: api_url.clone(),
        sim: sim_url.clone(),
        token: token.clone(),
    };

    // Customers consent with their cards.
    let texts = client
        .api(reqwest::Method::GET, "/v1/consent-texts", None)
        .await?;
    let text = texts["items"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let version = texts["items"][0]["version"].clone();
    say(
        "3. Five customers sign the consent with their My Number Card (the simulator's residents' keys):",
    );
    let mut people = Vec::new();
    for (external_ref, name, address, birth, fate) in PEOPLE {
        let person = client
            .sim(
                "/sim/persons",
                json!({"basic4": {"name": name, "address": address, "birth_date": birth, "gender": "1"}}),
            )
            .await?;
        let customer = client
            .api(
                reqwest::Method::POST,
                "/v1/customers",
                Some(json!({"external_ref": external_ref, "email": format!("{}@example.jp", external_ref.to_lowercase()), "locale": "ja"})),
            )
            .await?;
        let person_id = person["person_id"].as_str().unwrap_or_default().to_owned();
        let signed = client
            .sim(
                &format!("/sim/persons/{person_id}/sign"),
                json!({"content_b64": B64.encode(text.as_bytes())}),
            )
            .await?;
        let customer_id = customer["id"].as_str().unwrap_or_default().to_owned();
        let consent = client
            .api(
                reqwest::Method::POST,
                &format!("/v1/customers/{customer_id}/consents"),
                Some(json!({
                    "text_version": version,
                    "channel": "online_signature",
                    "signed_document_b64": signed["cms_der_b64"],
                })),
            )
            .await?;
        say(format!(
            "   {external_ref}: consent recorded; the four items came from the certificate (serial {}), valid until {}.",
            consent["cert_serial"].as_str().unwrap_or_default(),
            consent["expires_at"].as_str().unwrap_or_default()
        ));
        people.push((external_ref, customer_id, person_id, fate));
    }
    let registered = kihon4_core::consent::registrations::run_due(
        &db,
        provider.as_ref(),
        &notices,
        config.settings.timezone,
        "demo",
        100,
    )
    .await?;
    say(format!(
        "   The worker registered {} consents with the provider.\n",
        registered.done
    ));

    // Life on the register.
    say("4. Meanwhile, on the resident register:");
    for (external_ref, _, person_id, fate) in &people {
        let (body, words) = match *fate {
            "moves" => (
                json!({"kind": "move", "basic4": {"address": "大阪府大阪市中央区大手前2-1-22"}}),
                "moves to Osaka",
            ),
            "renames" => (
                json!({"kind": "rename", "basic4": {"name": "鈴木一子"}}),
                "changes name",
            ),
            "dies" => (json!({"kind": "death"}), "dies"),
            "loses" => (json!({"kind": "card_lost"}), "reports the card lost"),
            _ => continue,
        };
        client
            .sim(&format!("/sim/persons/{person_id}/events"), body)
            .await?;
        say(format!(
            "   {external_ref} {words}; J-LIS revokes the certificate."
        ));
    }
    client.sim("/sim/crl/publish", json!({})).await?;
    say("   J-LIS publishes a new CRL.\n");

    // Detection and sync, as the worker does each morning.
    say(
        "5. kihon4's sync run: the CRL against the consenting customers' certificates, then J-LIS asked about each hit:",
    );
    let ctx = AuditContext::new(Actor::cli(), None);
    let run = sync::runs::request(&db, &ctx, "cli", Scope::Revoked, None).await?;
    sync::runs::take(&db, run.run.id, config.sync().lease).await?;
    let found = sync::detect::by_crl(&db, provider.as_ref(), &anchors).await?;
    say(format!(
        "   {} of {} certificates are in the CRL.",
        found.len(),
        people.len()
    ));
    sync::runs::detected(&db, run.run.id, &found).await?;
    let done = sync::jobs::process_due(
        &db,
        provider.as_ref(),
        &notices,
        config.sync(),
        "demo",
        1000,
    )
    .await?;
    sync::runs::complete_finished(&db).await?;
    let outcomes = done
        .outcomes
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ");
    say(format!("   Answers applied: {outcomes}.\n"));

    say("6. What became of each record:");
    for (external_ref, customer_id, _, _) in &people {
        let record = client
            .api(
                reqwest::Method::GET,
                &format!("/v1/customers/{customer_id}"),
                None,
            )
            .await?;
        say(format!(
            "   {external_ref}: {} / {} / status {} / version {}",
            record["basic4"]["name"].as_str().unwrap_or("-"),
            record["basic4"]["address"].as_str().unwrap_or("-"),
            record["status"].as_str().unwrap_or("-"),
            record["version"]
        ));
    }
    let reviews = client
        .api(reqwest::Method::GET, "/v1/reviews?status=open", None)
        .await?;
    for review in reviews["items"].as_array().into_iter().flatten() {
        let who = people
            .iter()
            .find(|p| review["customer_id"] == p.1.as_str())
            .map_or("?", |p| p.0);
        say(format!(
            "   A review waits for a person: {who}, {}.",
            review["kind"].as_str().unwrap_or_default()
        ));
    }

    let sent = dispatch_due(&db, &db, &mailer, "demo", 1000, &|| false).await?;
    say(format!(
        "\n7. {} notices (consent receipts, change notices, a lost-card notice) are in {} as .eml files.",
        sent.sent,
        mail.display()
    ));
    let chain = kihon4_core::audit::verify_chain(&db)
        .await?
        .map_err(|b| anyhow::anyhow!("the audit chain breaks at {}: {}", b.seq, b.reason))?;
    say(format!(
        "8. The audit trail holds {} events and its hash chain verifies.\n",
        chain.events
    ));

    if serve {
        say(format!(
            "The API keeps running at {api_url} until Ctrl-C. Browse {api_url}/docs, or try:"
        ));
        say(format!(
            "  curl -H 'Authorization: Bearer {token}' {api_url}/v1/customers"
        ));
        say(format!(
            "  curl -H 'Authorization: Bearer {token}' {api_url}/v1/audit/events"
        ));
        let _ = tokio::signal::ctrl_c().await;
    } else {
        say("Run `kihon4 demo --serve` to keep the API running and look around.");
    }
    api_handle.stop(true).await;
    sim_handle.stop(true).await;
    db.close().await?;
    Ok(())
}

//! kihon4-sim: a J-LIS + platform-operator simulator speaking
//! PROVIDER-PROTOCOL.md, for kihon4's tests, its demo, and institutions'
//! developers before J-LIS grants them a test environment.
//!
//! Its state (CA, residents, certificates) lives in its data folder and
//! survives a restart.

pub mod bulk;
mod ca;
mod cms_sign;
pub mod crl;
pub mod events;
pub mod faults;
mod keys;
pub mod municipality;
pub mod mynaportal;
pub mod ocsp;
pub mod pocketsign;
mod problem;
pub mod queries;
pub mod residents;
mod routes;
pub mod store;
mod verify;

use std::net::TcpListener;
use std::path::PathBuf;

use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::{Next, from_fn};
use actix_web::{App, HttpServer, ResponseError, web};

pub use ca::Ca;
use problem::Problem;
pub use store::Store;

/// How the simulator runs.
#[derive(Debug, Clone)]
pub struct SimSettings {
    pub data_dir: PathBuf,
    /// When set, provider routes need exactly this API key; otherwise any non-empty one.
    pub api_key: Option<String>,
    /// Serve `/sim/` routes to other hosts too (off: loopback only).
    pub sim_routes_public: bool,
}

/// The simulator's state, shared by its handlers.
pub struct Simulator {
    pub ca: std::sync::Arc<Ca>,
    pub callback_key: mynaportal::CallbackKey,
    pub store: Store,
    pub settings: SimSettings,
    published: std::sync::RwLock<std::sync::Arc<crl::Published>>,
    faults: std::sync::RwLock<faults::Faults>,
    /// Requests that reached a provider route, for tests of callers' manners.
    provider_requests: std::sync::atomic::AtomicU64,
    /// Whose provider API is served: unset, both (as tests and the demo
    /// use it); set by `kihon4 sim --flavor`, that one only.
    flavor: std::sync::OnceLock<Flavor>,
}

/// Whose provider API the simulator stands in for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// kihon4's provider protocol under `/v1/` (and Mynaportal).
    Kihon4,
    /// PocketSign Verify API v2's Connect routes.
    PocketSign,
}

impl Flavor {
    /// Whether a request path belongs to the other flavour's provider API.
    fn excludes(self, path: &str) -> bool {
        match self {
            Self::Kihon4 => path.starts_with(pocketsign::PREFIX),
            Self::PocketSign => path.starts_with("/v1/"),
        }
    }
}

impl Simulator {
    /// Opens (or creates) the simulator's state in its data folder.
    pub async fn open(settings: SimSettings) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&settings.data_dir)?;
        let dir = settings.data_dir.clone();
        let ca = std::sync::Arc::new(
            tokio::task::spawn_blocking(move || Ca::load_or_create(&dir)).await??,
        );
        let store = Store::open(&settings.data_dir).await?;
        let key_dir = settings.data_dir.clone();
        let callback_key =
            tokio::task::spawn_blocking(move || mynaportal::CallbackKey::load_or_create(&key_dir))
                .await??;
        let first = Self::make_crls(&ca, &store).await?;
        Ok(Self {
            ca,
            callback_key,
            store,
            settings,
            published: std::sync::RwLock::new(std::sync::Arc::new(first)),
            faults: std::sync::RwLock::new(faults::Faults::default()),
            provider_requests: std::sync::atomic::AtomicU64::new(0),
            flavor: std::sync::OnceLock::new(),
        })
    }

    /// Serves only `flavor`'s provider API from now on (once; the
    /// control routes under `/sim/` stay).
    pub fn serve_only(&self, flavor: Flavor) {
        let _ = self.flavor.set(flavor);
    }

    async fn make_crls(ca: &std::sync::Arc<Ca>, store: &Store) -> anyhow::Result<crl::Published> {
        let now = chrono::Utc::now();
        let revocations = store.revocations(now).await?;
        let number = store.next_crl_number().await?;
        let ca = ca.clone();
        // Signing is CPU work: off the async threads.
        tokio::task::spawn_blocking(move || crl::publish(&ca, number, now, &revocations)).await?
    }

    /// Publishes new CRLs now (also done daily and at start).
    pub async fn publish_crls(&self) -> anyhow::Result<std::sync::Arc<crl::Published>> {
        let published = std::sync::Arc::new(Self::make_crls(&self.ca, &self.store).await?);
        *self.published.write().expect("not poisoned") = published.clone();
        Ok(published)
    }

    pub fn faults(&self) -> faults::Faults {
        self.faults.read().expect("not poisoned").clone()
    }

    pub fn set_faults(&self, faults: faults::Faults) {
        *self.faults.write().expect("not poisoned") = faults;
    }

    /// A certificate's DER and key, made now if it was issued lazily.
    pub async fn material(
        &self,
        cert: &store::IssuedCertificate,
    ) -> anyhow::Result<(Vec<u8>, String)> {
        if let (Some(der), Some(key)) = (&cert.der, &cert.key_pem) {
            return Ok((der.clone(), key.clone()));
        }
        let person = self
            .store
            .person(&cert.person_id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("a certificate without its person"))?;
        let (ca, c) = (self.ca.clone(), cert.clone());
        let (der, key) =
            tokio::task::spawn_blocking(move || residents::materialize(&ca, &c, &person.basic4))
                .await??;
        self.store.set_material(&cert.serial, &der, &key).await?;
        // Another request may have made it first: the stored one wins.
        let stored = self.store.certificate(&cert.serial).await?;
        match stored.and_then(|c| c.der.zip(c.key_pem)) {
            Some(made) => Ok(made),
            None => Ok((der, key)),
        }
    }

    /// How many requests reached the provider routes.
    pub fn provider_requests(&self) -> u64 {
        self.provider_requests
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The CRLs served now.
    pub fn published(&self) -> std::sync::Arc<crl::Published> {
        self.published.read().expect("not poisoned").clone()
    }
}

/// Provider routes need `Authorization: Bearer <api key>`, except the CA
/// certificate and the JWKS; `/sim/` routes are for loopback callers unless
/// opened up.
pub async fn guard(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    let sim = req.app_data::<web::Data<Simulator>>().cloned();
    let path = req.path().to_owned();
    if let Some(sim) = &sim
        && sim.flavor.get().is_some_and(|f| f.excludes(&path))
    {
        return Ok(req.into_response(Problem::not_found("route").error_response()));
    }
    let refusal = match sim {
        Some(sim) if path.starts_with("/sim/") => {
            let local = req.peer_addr().is_some_and(|a| a.ip().is_loopback());
            (!local && !sim.settings.sim_routes_public).then(|| {
                Problem::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "Simulator control is for loopback callers.",
                )
            })
        }
        Some(sim)
            if (path.starts_with("/v1/") && path != "/v1/ca" && path != "/v1/jwks.json")
                || path.starts_with(pocketsign::PREFIX) =>
        {
            let key = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim)
                .filter(|k| !k.is_empty());
            let ok = match (&sim.settings.api_key, key) {
                (_, None) => false,
                (None, Some(_)) => true,
                (Some(expected), Some(given)) => expected == given,
            };
            if !ok && path.starts_with(pocketsign::PREFIX) {
                let refusal = pocketsign::connect_error(
                    "unauthenticated",
                    "send the tenant's API token",
                    None,
                );
                return Ok(req.into_response(refusal));
            }
            (!ok).then(|| {
                Problem::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "Send the API key: Authorization: Bearer <key>.",
                )
            })
        }
        _ => None,
    };
    if let Some(problem) = refusal {
        return Ok(req.into_response(problem.error_response()));
    }
    let connect = path.starts_with(pocketsign::PREFIX);
    let provider_route = path.starts_with("/v1/") || connect;
    let faults = match req.app_data::<web::Data<Simulator>>() {
        Some(sim) if provider_route => {
            sim.provider_requests
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            sim.faults()
        }
        _ => faults::Faults::default(),
    };
    let mut truncate = false;
    for disruption in faults::disrupt(&faults) {
        match disruption {
            faults::Disruption::Delay(d) => tokio::time::sleep(d).await,
            // PocketSign's stand-in fails as Connect does.
            faults::Disruption::Replace(response) if connect => {
                let retry = response
                    .headers()
                    .get(actix_web::http::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let status = response.status();
                return Ok(req.into_response(pocketsign::connect_fault(status, retry)));
            }
            faults::Disruption::Replace(response) => return Ok(req.into_response(response)),
            faults::Disruption::Truncate => truncate = true,
        }
    }
    let res = next.call(req).await?.map_into_boxed_body();
    if !truncate {
        return Ok(res);
    }
    // A malformed answer: the right status and type, half of the body.
    let (req, res) = res.into_parts();
    let (head, body) = res.into_parts();
    let bytes = actix_web::body::to_bytes(body).await.unwrap_or_default();
    let cut = bytes.slice(..bytes.len() / 2);
    Ok(ServiceResponse::new(
        req,
        head.set_body(cut).map_into_boxed_body(),
    ))
}

fn json_error(
    err: actix_web::error::JsonPayloadError,
    _: &actix_web::HttpRequest,
) -> actix_web::Error {
    let problem = match &err {
        actix_web::error::JsonPayloadError::ContentType => Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Send application/json.",
        ),
        actix_web::error::JsonPayloadError::OverflowKnownLength { .. }
        | actix_web::error::JsonPayloadError::Overflow { .. } => Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            "The body is too large.",
        ),
        other => Problem::bad_request(format!("The body is not valid: {other}")),
    };
    problem.into()
}

/// Starts delivering Mynaportal callbacks in the background (for as long
/// as the runtime lives).
pub fn start_callbacks(sim: &web::Data<Simulator>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(mynaportal::deliver_forever(sim.clone().into_inner()))
}

/// Registers the simulator's routes and request limits (the app's
/// `default_service` and the [`guard`] middleware are added by the caller).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(1024 * 1024)
            .error_handler(json_error),
    )
    .app_data(
        web::PathConfig::default().error_handler(|_, _| Problem::not_found("resource").into()),
    )
    .app_data(
        web::QueryConfig::default().error_handler(|e, _| {
            Problem::bad_request(format!("The query is not valid: {e}")).into()
        }),
    )
    .configure(routes::register)
    .configure(pocketsign::register);
}

/// The answer for a route that does not exist.
pub async fn no_route() -> Result<actix_web::HttpResponse, actix_web::Error> {
    Err(Problem::not_found("route").into())
}

/// The simulator's HTTP server on `listener`.
pub fn server(sim: web::Data<Simulator>, listener: TcpListener) -> std::io::Result<Server> {
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(sim.clone())
            .configure(configure)
            .default_service(web::to(no_route))
            .wrap(from_fn(guard))
    })
    .disable_signals()
    .listen(listener)?
    .run())
}

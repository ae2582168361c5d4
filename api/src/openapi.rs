//! The OpenAPI description, generated from the handlers, and the `/docs` page.
//!
//! # How a route is described
//!
//! Each handler's `#[utoipa::path]` gives its parameters (with their bounds:
//! `limit` 1–500, patterns, lengths), its request body and media type, its
//! success responses, and the problem answers only it gives, written as
//! `(status = 409, description = "external-ref-taken, customer-deceased")`:
//! the slugs of [`ProblemKind`]s, comma-separated, optionally followed by
//! `: ` and a sentence (`"not-found: none written yet"`). No `body` there.
//!
//! [`document`] then completes every operation with the problem answers each
//! kind of route shares, merging them with the route's own by status:
//!
//! | The operation | gets | set |
//! | --- | --- | --- |
//! | every operation | 429 | [`EVERY`] |
//! | every operation under `/v1` | 400, 500 | [`EVERY_V1`] |
//! | has `security` (a bearer token) | 401, 403 | [`AUTHENTICATED`] |
//! | takes an `application/json` body | 400, 413, 415, 422 | [`JSON_BODY`] |
//! | is a `POST` with `security` (the `Idempotency-Key` header is added) | 400, 409, 413, 422 | [`IDEMPOTENT_POST`] |
//! | has query parameters (unknown ones are refused) | 400 | [`QUERY`] |
//! | has a path parameter | 404 | [`PATH`] |
//!
//! Every problem response becomes `application/problem+json` with the
//! `ProblemBody` schema, a description naming each problem type with its
//! title, and `x-problem-types`: the list of its type URIs. Building the
//! document panics when a slug is unknown or its status is not the
//! response's, so the tests catch a wrong annotation. Every response also
//! documents `X-Request-Id`.
//!
//! A new route: annotate its handler as above, add it to `paths(...)` below,
//! and give its own problems only. A new problem every route of a kind can
//! give (a rate limit, say) goes into that kind's set here.
//! `api/tests/it/openapi.rs` checks the document against the router.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use minijinja::value::{Serde, Value};
use serde_json::{Value as Json, json};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::problem::{ProblemBody, ProblemField, ProblemKind};
use crate::routes::{
    audit, audit_log, changes, consent, customers, mynaportal, outbox, pages, reports, service,
    sync,
};

/// Every operation under `/v1`: the database may fail, and a request whose
/// headers or body cannot be read is refused.
pub const EVERY_V1: &[ProblemKind] = &[ProblemKind::Internal, ProblemKind::BadRequest];

/// Every operation, the pages and service routes too: the rate limits
/// (`crate::limits`) come before any route.
pub const EVERY: &[ProblemKind] = &[ProblemKind::RateLimited];

/// An operation that needs a bearer token.
pub const AUTHENTICATED: &[ProblemKind] = &[ProblemKind::Unauthorized, ProblemKind::Forbidden];

/// An operation that takes a JSON body (`crate::extract::JsonBody`).
pub const JSON_BODY: &[ProblemKind] = &[
    ProblemKind::MalformedJson,
    ProblemKind::PayloadTooLarge,
    ProblemKind::UnsupportedMediaType,
    ProblemKind::Validation,
    ProblemKind::MyNumberRefused,
];

/// An authenticated `POST`, which may carry `Idempotency-Key`
/// (`crate::middleware::idempotency` reads its body whatever the route).
pub const IDEMPOTENT_POST: &[ProblemKind] = &[
    ProblemKind::InvalidIdempotencyKey,
    ProblemKind::IdempotencyInProgress,
    ProblemKind::IdempotencyKeyReused,
    ProblemKind::PayloadTooLarge,
];

/// An operation with query parameters: a bad value or an unknown name.
pub const QUERY: &[ProblemKind] = &[ProblemKind::InvalidQuery];

/// An operation with a path parameter: a malformed id is not found.
pub const PATH: &[ProblemKind] = &[ProblemKind::NotFound];

#[derive(OpenApi)]
#[openapi(
    info(
        title = "kihon4 API",
        description = "Keeps customer records in step with J-LIS's latest basic four information. Errors are RFC 9457 problem details (`application/problem+json`; each response lists its problem types, also as `x-problem-types`); every response carries X-Request-Id; an authenticated POST accepts Idempotency-Key.",
    ),
    paths(
        service::healthz,
        service::readyz,
        service::metrics,
        service::openapi,
        service::docs,
        customers::create,
        customers::read,
        customers::list,
        customers::change,
        customers::history,
        audit::events,
        audit::checkpoint,
        audit_log::log_checkpoint,
        audit_log::log_keys,
        audit_log::checkpoint_at,
        audit_log::tile,
        audit_log::inclusion,
        audit_log::consistency,
        audit_log::customer,
        audit::export,
        audit::manifest,
        audit::export_manifest,
        audit::export_personal_data,
        consent::texts,
        consent::grant,
        consent::list,
        consent::read,
        consent::withdraw,
        consent::retry_registration,
        mynaportal::create,
        mynaportal::read,
        mynaportal::webhook,
        pages::landing,
        pages::start,
        pages::done,
        pages::style,
        pages::icon,
        reports::revocation_checks,
        outbox::list,
        outbox::retry,
        sync::request,
        sync::list,
        sync::read,
        sync::reviews,
        sync::resolve,
        changes::list,
        changes::create,
        changes::list_endpoints,
        changes::read,
        changes::disable,
        changes::enable,
        changes::remove,
        changes::rotate,
        changes::replay,
        changes::attempts,
    ),
    components(schemas(ProblemBody, ProblemField)),
    modifiers(&BearerAuth),
    tags(
        (name = "customers", description = "Customer records. Role: operator."),
        (name = "audit", description = "The hash-chained audit trail. Role: auditor."),
        (name = "consent", description = "Consent to the provision of the basic four information. Role: operator; the provider's callback authenticates itself."),
        (name = "pages", description = "The customer's pages of a Mynaportal consent request (HTML). No token: the link's single-use token."),
        (name = "sync", description = "Sync runs and reviews. Role: operator."),
        (name = "notices", description = "The outbox of email notices. Role: admin."),
        (name = "changes", description = "The change feed for the institution's systems: the cursor API (roles as configured; by default integration and admin) and webhook endpoints (role admin)."),
        (name = "reports", description = "Counts for the institution's reports. Role: auditor."),
        (name = "service", description = "Health, readiness, metrics and this description. No token."),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The complete description served at `/openapi.json` (built once).
pub fn document() -> &'static Json {
    static DOC: OnceLock<Json> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the description serialises");
        complete(&mut doc);
        doc
    })
}

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// The methods (upper case) the described routes take at `path`; none when
/// no route has this path.
pub fn methods_of(path: &str) -> Vec<String> {
    let segments: Vec<&str> = path.split('/').collect();
    let mut methods = Vec::new();
    for (template, item) in document()["paths"].as_object().into_iter().flatten() {
        let parts: Vec<&str> = template.split('/').collect();
        let matches = parts.len() == segments.len()
            && parts.iter().zip(&segments).all(|(part, segment)| {
                if part.starts_with('{') && part.ends_with('}') {
                    !segment.is_empty()
                } else {
                    part == segment
                }
            });
        if matches {
            for method in METHODS {
                if item.get(method).is_some() {
                    let method = method.to_uppercase();
                    if !methods.contains(&method) {
                        methods.push(method);
                    }
                }
            }
        }
    }
    methods
}

/// Adds the shared problem answers and headers to every operation.
fn complete(doc: &mut Json) {
    let paths = doc["paths"]
        .as_object_mut()
        .expect("the description has paths");
    let mut ids = std::collections::BTreeSet::new();
    for (path, item) in paths.iter_mut() {
        for method in METHODS {
            if let Some(op) = item.get_mut(method) {
                let id = op["operationId"].as_str().unwrap_or_default().to_owned();
                assert!(ids.insert(id.clone()), "operationId `{id}` is used twice");
                complete_operation(path, method, op);
            }
        }
    }
}

fn complete_operation(path: &str, method: &str, op: &mut Json) {
    let label = format!("{} {path}", method.to_uppercase());
    // A parameter that is left out is absent, never `null`.
    if let Some(params) = op.get_mut("parameters").and_then(Json::as_array_mut) {
        for param in params {
            let Some(schema) = param.get_mut("schema") else {
                continue;
            };
            if let Some(types) = schema.get_mut("type").and_then(Json::as_array_mut) {
                types.retain(|t| t != "null");
                if types.len() == 1 {
                    schema["type"] = types[0].clone();
                }
            }
        }
    }
    let params: Vec<Json> = op["parameters"].as_array().cloned().unwrap_or_default();
    let has_in = |place: &str| params.iter().any(|p| p["in"] == place);
    let authenticated = op["security"].as_array().is_some_and(|s| !s.is_empty());
    let json_body = op["requestBody"]["content"]
        .as_object()
        .is_some_and(|c| c.contains_key("application/json"));
    // The customer pages and the service routes answer in their own way.
    let mut sets: Vec<&[ProblemKind]> = vec![EVERY];
    if path.starts_with("/v1/") {
        sets.push(EVERY_V1);
        if authenticated {
            sets.push(AUTHENTICATED);
        }
        if json_body {
            sets.push(JSON_BODY);
        }
        if authenticated && method == "post" {
            sets.push(IDEMPOTENT_POST);
            add_idempotency_key(op);
        }
        if has_in("query") {
            sets.push(QUERY);
        }
        if has_in("path") {
            sets.push(PATH);
        }
    }

    let responses = op["responses"]
        .as_object_mut()
        .unwrap_or_else(|| panic!("{label} has no responses"));
    // The route's own problems, then the shared ones, by status.
    let mut problems: BTreeMap<u16, (Vec<ProblemKind>, Option<String>)> = BTreeMap::new();
    responses.retain(|status, response| {
        let code: u16 = status
            .parse()
            .unwrap_or_else(|_| panic!("{label}: status {status} is not a number"));
        if code < 400 || response.get("content").is_some() {
            return true;
        }
        let description = response["description"].as_str().unwrap_or_default();
        let (slugs, prose) = match description.split_once(": ") {
            Some((slugs, prose)) => (slugs, Some(prose.to_owned())),
            None => (description, None),
        };
        let kinds = slugs
            .split(',')
            .map(|slug| {
                let slug = slug.trim();
                ProblemKind::from_slug(slug)
                    .unwrap_or_else(|| panic!("{label} {status}: `{slug}` is not a problem type"))
            })
            .collect();
        problems.insert(code, (kinds, prose));
        false
    });
    for kind in sets.into_iter().flatten() {
        let entry = problems.entry(kind.status().as_u16()).or_default();
        if !entry.0.contains(kind) {
            entry.0.push(*kind);
        }
    }
    for (code, (kinds, prose)) in problems {
        for kind in &kinds {
            assert_eq!(
                kind.status().as_u16(),
                code,
                "{label}: `{}` is answered with {}, not {code}",
                kind.slug(),
                kind.status()
            );
        }
        let mut response = problem_response(&kinds, prose.as_deref());
        // A page's own answer (HTML) stays beside the problem document.
        if let Some(own) = responses.remove(&code.to_string()) {
            for (media_type, content) in own["content"].as_object().into_iter().flatten() {
                response["content"][media_type] = content.clone();
            }
            if let Some(own) = own["description"].as_str() {
                let description = format!(
                    "{own}. {}",
                    response["description"].as_str().unwrap_or_default()
                );
                response["description"] = json!(description);
            }
        }
        responses.insert(code.to_string(), response);
    }
    for response in responses.values_mut() {
        let headers = response
            .as_object_mut()
            .expect("a response is an object")
            .entry("headers")
            .or_insert_with(|| json!({}));
        headers["X-Request-Id"] = json!({
            "description": "The request's id: the caller's when plain (1–128 of `A–Z a–z 0–9 . _ : -`), else a new UUID.",
            "required": true,
            "schema": {"type": "string", "maxLength": 128}
        });
    }
}

fn problem_response(kinds: &[ProblemKind], prose: Option<&str>) -> Json {
    let mut description: Vec<String> = kinds
        .iter()
        .map(|k| format!("`{}`: {}.", k.slug(), k.title()))
        .collect();
    if let Some(prose) = prose {
        description.push(prose.to_owned());
    }
    let mut response = json!({
        "description": description.join(" "),
        "content": {
            "application/problem+json": {
                "schema": {"$ref": "#/components/schemas/ProblemBody"}
            }
        },
        "x-problem-types": kinds.iter().map(|k| k.type_uri()).collect::<Vec<_>>(),
    });
    if kinds.contains(&ProblemKind::RateLimited) {
        response["headers"] = json!({
            "Retry-After": {
                "description": "The whole seconds to wait (with `rate-limited`).",
                "schema": {"type": "integer", "minimum": 1}
            }
        });
    }
    if kinds.contains(&ProblemKind::Unauthorized) {
        response["headers"] = json!({
            "WWW-Authenticate": {
                "description": "`Bearer` (with `unauthorized`).",
                "schema": {"type": "string"}
            }
        });
    }
    response
}

fn add_idempotency_key(op: &mut Json) {
    let params = op
        .as_object_mut()
        .expect("an operation is an object")
        .entry("parameters")
        .or_insert_with(|| json!([]));
    let params = params.as_array_mut().expect("parameters are a list");
    if params.iter().any(|p| p["name"] == "Idempotency-Key") {
        return;
    }
    params.push(json!({
        "name": "Idempotency-Key",
        "in": "header",
        "required": false,
        "description": "Makes a retry safe: the same key and request get the first response again (docs/api.md, Idempotency-Key).",
        "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"}
    }));
}

const DOCS_TEMPLATE: &str = include_str!("../../templates/pages/api-docs.html");

/// Renders the browsable page from the OpenAPI description.
pub fn render_docs_page() -> Result<String, minijinja::Error> {
    let doc = document();
    let mut operations = Vec::new();
    if let Some(paths) = doc["paths"].as_object() {
        for (path, item) in paths {
            let Some(methods) = item.as_object() else {
                continue;
            };
            for (method, op) in methods {
                let roles: Vec<String> = op["security"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s["bearer"].as_array())
                    .flatten()
                    .filter_map(|r| r.as_str().map(str::to_owned))
                    .collect();
                operations.push(serde_json::json!({
                    "method": method.to_uppercase(),
                    "path": path,
                    "summary": op["summary"],
                    "description": op["description"],
                    "tag": op["tags"][0],
                    "roles": roles,
                    "parameters": op["parameters"],
                    "request": op["requestBody"]["content"]["application/json"]["schema"],
                    "responses": op["responses"],
                }));
            }
        }
    }
    let mut env = minijinja::Environment::new();
    env.add_template("docs", DOCS_TEMPLATE)?;
    env.get_template("docs")?.render(minijinja::context! {
        title => Value::from(Serde(&doc["info"]["title"])),
        version => Value::from(Serde(&doc["info"]["version"])),
        description => Value::from(Serde(&doc["info"]["description"])),
        operations => Value::from(Serde(&operations)),
        schemas => Value::from(Serde(&doc["components"]["schemas"])),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_builds_and_every_problem_is_typed() {
        let doc = document();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                for (status, response) in op["responses"].as_object().unwrap() {
                    let content = response["content"].as_object();
                    if path.starts_with("/v1/") && status.as_str() >= "400" {
                        let content = content.unwrap_or_else(|| panic!("{method} {path} {status}"));
                        assert!(
                            content.contains_key("application/problem+json"),
                            "{method} {path} {status}"
                        );
                        assert!(!response["x-problem-types"].as_array().unwrap().is_empty());
                    }
                }
            }
        }
    }
}

//! The OpenAPI description, generated from the handlers, and the `/docs` page.

use minijinja::value::{Serde, Value};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::problem::{ProblemBody, ProblemField};
use crate::routes::{audit, consent, customers, outbox, reports, service, sync};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "kihon4 API",
        description = "Keeps customer records in step with J-LIS's latest basic four information. Errors are RFC 9457 problem details; every response carries X-Request-Id; POST accepts Idempotency-Key.",
    ),
    paths(
        service::healthz,
        service::readyz,
        service::metrics,
        customers::create,
        customers::read,
        customers::list,
        customers::change,
        customers::history,
        audit::events,
        consent::texts,
        consent::grant,
        consent::list,
        consent::read,
        consent::withdraw,
        consent::retry_registration,
        reports::revocation_checks,
        outbox::list,
        outbox::retry,
        sync::request,
        sync::list,
        sync::read,
        sync::reviews,
        sync::resolve,
    ),
    components(schemas(ProblemBody, ProblemField)),
    modifiers(&BearerAuth),
    tags(
        (name = "customers", description = "Customer records. Role: operator."),
        (name = "audit", description = "The hash-chained audit trail. Role: auditor."),
        (name = "consent", description = "Consent to the provision of the basic four information. Role: operator."),
        (name = "sync", description = "Sync runs and reviews. Role: operator."),
        (name = "notices", description = "The outbox of email notices. Role: admin."),
        (name = "reports", description = "Counts for the institution's reports. Role: auditor."),
        (name = "service", description = "Health, readiness and metrics. No token."),
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

const DOCS_TEMPLATE: &str = include_str!("../../templates/pages/api-docs.html");

/// Renders the browsable page from the OpenAPI description.
pub fn render_docs_page() -> Result<String, minijinja::Error> {
    let doc: serde_json::Value =
        serde_json::to_value(ApiDoc::openapi()).expect("the description serialises");
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

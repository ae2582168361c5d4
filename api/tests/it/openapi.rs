//! The OpenAPI description against the router: every registered route is
//! described, every described operation is served, every problem answer is
//! `application/problem+json` with its types, and docs/problems.md lists
//! every problem type with its status and title.

use std::collections::BTreeSet;

use kihon4_api::problem::ProblemKind;
use kihon4_test_support::both;
use regex::Regex;
use serde_json::Value;

use crate::helpers::{Backend, TestApp};

both!(every_described_operation_is_served);

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

fn described() -> BTreeSet<(String, String)> {
    let doc = kihon4_api::openapi::document();
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS {
            if item.get(method).is_some() {
                ops.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    ops
}

/// The routes `kihon4_api::configure` registers, read from its source: each
/// `.service(routes::<module>::<handler>)` and that handler's route attribute.
fn registered() -> BTreeSet<(String, String)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(root.join("lib.rs")).unwrap();
    let configure = lib
        .split("pub fn configure(")
        .nth(1)
        .expect("lib.rs has configure")
        .split("\n}\n")
        .next()
        .unwrap();
    let service = Regex::new(r"\.service\(routes::(\w+)::(\w+)\)").unwrap();
    // `{name:regex}` is described as `{name}`.
    let pattern = Regex::new(r"\{(\w+):[^}]*\}").unwrap();
    let mut routes = BTreeSet::new();
    for found in service.captures_iter(configure) {
        let (module, handler) = (&found[1], &found[2]);
        let source = std::fs::read_to_string(root.join(format!("routes/{module}.rs"))).unwrap();
        let attr = Regex::new(&format!(
            r#"#\[(get|post|put|patch|delete)\("([^"]+)"\)\]\s*pub async fn {handler}\("#
        ))
        .unwrap();
        let route = attr
            .captures(&source)
            .unwrap_or_else(|| panic!("routes::{module}::{handler} has no route attribute"));
        let path = pattern.replace_all(&route[2], "{$1}");
        routes.insert((route[1].to_uppercase(), path.into_owned()));
    }
    assert!(routes.len() > 30, "the source was read: {routes:?}");
    routes
}

#[test]
fn every_registered_route_is_described_and_nothing_else() {
    let registered = registered();
    let described = described();
    let missing: Vec<_> = registered.difference(&described).collect();
    let extra: Vec<_> = described.difference(&registered).collect();
    assert!(
        missing.is_empty(),
        "registered but not described: {missing:?}"
    );
    assert!(extra.is_empty(), "described but not registered: {extra:?}");
}

#[test]
fn every_problem_answer_is_a_problem_document_with_its_types() {
    let doc = kihon4_api::openapi::document();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            let label = format!("{method} {path}");
            for param in op["parameters"].as_array().into_iter().flatten() {
                let name = param["name"].as_str().unwrap();
                assert_eq!(
                    param["in"] == "path",
                    path.contains(&format!("{{{name}}}")),
                    "{label}: {name} is in {}",
                    param["in"]
                );
                assert!(!param["schema"]["type"].is_array(), "{label}: {name}");
            }
            let responses = op["responses"].as_object().unwrap();
            let authenticated = op["security"].as_array().is_some_and(|s| !s.is_empty());
            if authenticated {
                for status in ["401", "403", "500"] {
                    assert!(responses.contains_key(status), "{label} lacks {status}");
                }
            }
            if op["requestBody"]["content"]
                .as_object()
                .is_some_and(|c| c.contains_key("application/json"))
            {
                for status in ["400", "413", "415", "422"] {
                    assert!(responses.contains_key(status), "{label} lacks {status}");
                }
            }
            if !path.starts_with("/v1/") {
                continue;
            }
            for (status, response) in responses {
                if status.as_str() < "400" {
                    continue;
                }
                let content = response["content"].as_object().unwrap();
                assert_eq!(
                    content.keys().collect::<Vec<_>>(),
                    ["application/problem+json"],
                    "{label} {status}"
                );
                let types = response["x-problem-types"].as_array().unwrap();
                assert!(!types.is_empty(), "{label} {status}");
                for uri in types {
                    let slug = uri
                        .as_str()
                        .unwrap()
                        .strip_prefix(kihon4_api::problem::PROBLEM_BASE)
                        .unwrap();
                    let kind = ProblemKind::from_slug(slug).unwrap();
                    assert_eq!(kind.status().as_str(), status, "{label}: {slug}");
                    assert!(
                        response["description"].as_str().unwrap().contains(slug),
                        "{label} {status} names {slug}"
                    );
                }
            }
        }
    }
    let events = &doc["paths"]["/v1/audit/events"]["get"]["parameters"];
    let limit = events
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "limit")
        .unwrap();
    assert_eq!(limit["schema"]["minimum"], 1);
    assert_eq!(limit["schema"]["maximum"], 500);
    let report = &doc["paths"]["/v1/reports/revocation-checks"]["get"]["parameters"];
    for p in report.as_array().unwrap() {
        assert_eq!(p["required"], true, "{p}");
    }
    let webhook = &doc["paths"]["/v1/webhooks/mynaportal"]["post"];
    assert!(webhook["requestBody"]["content"]["application/jwt"].is_object());
    assert!(webhook.get("security").is_none());
    let export = &doc["paths"]["/v1/audit/export"]["get"]["responses"]["200"]["content"];
    assert!(export["text/csv"].is_object() && export["application/jsonl"].is_object());
    let landing = &doc["paths"]["/consent/{token}"]["get"]["responses"]["200"]["content"];
    assert!(landing["text/html"].is_object());
}

#[test]
fn problems_md_lists_every_problem_type() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/problems.md");
    let text = std::fs::read_to_string(path).unwrap();
    let row =
        Regex::new(r"(?m)^\| \[`([a-z0-9-]+)`\]\(#[a-z0-9-]+\) \| (\d{3}) \| (.+) \|$").unwrap();
    let documented: BTreeSet<(String, String, String)> = row
        .captures_iter(&text)
        .map(|c| (c[1].to_owned(), c[2].to_owned(), c[3].to_owned()))
        .collect();
    let kinds: BTreeSet<(String, String, String)> = ProblemKind::ALL
        .iter()
        .map(|k| {
            (
                k.slug().to_owned(),
                k.status().as_u16().to_string(),
                k.title().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        documented, kinds,
        "docs/problems.md's summary and ProblemKind"
    );
}

/// Each described operation, asked without a token and with a made-up id,
/// reaches its route: no `404`/`405` from the router's fallback.
async fn every_described_operation_is_served(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut served = 0;
    for (method, path) in described() {
        let url = app.url(
            &path
                .replace("{id}", &uuid::Uuid::new_v4().to_string())
                .replace("{token}", "no-such-token"),
        );
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let res = app.http.request(method.clone(), url).send().await.unwrap();
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        let fallback = serde_json::from_str::<Value>(&text).is_ok_and(|p| {
            p["type"] == ProblemKind::MethodNotAllowed.type_uri() || p["detail"] == "No such route."
        });
        assert!(!fallback, "{method} {path}: {status} {text}");
        served += 1;
    }
    assert_eq!(served, described().len());
    assert_eq!(
        kihon4_api::openapi::methods_of("/v1/customers"),
        ["GET", "POST"]
    );
    assert!(kihon4_api::openapi::methods_of("/v1/nothing").is_empty());
}

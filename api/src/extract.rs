//! Extractors: JSON bodies that name what is wrong, bearer-token roles, the
//! request id.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::error::PayloadError;
use actix_web::http::header;
use actix_web::{FromRequest, HttpMessage, HttpRequest, web};
use kihon4_core::audit::events::AuthAttempt;
use kihon4_core::audit::{Actor, AuditContext};
use kihon4_core::auth::{AuthError, Principal, Role};
use kihon4_core::domain::{ValueError, contains_my_number};
use serde::de::DeserializeOwned;

use crate::AppState;
use crate::problem::{ApiError, ProblemKind};

/// The id of the request being served (taken from `X-Request-Id` when sane).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

pub fn request_id(req: &HttpRequest) -> Option<String> {
    req.extensions().get::<RequestId>().map(|r| r.0.clone())
}

/// A JSON body: `application/json` only, bounded in size, unknown fields
/// refused, each problem reported with the field at fault.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for JsonBody<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let body = read_json(req, payload, &[]);
        Box::pin(async move { body.await.map(JsonBody) })
    }
}

/// The top-level fields of a body that are lists of plain values
/// (`event_types: ["basic4.changed"]`): [`JsonListBody`] takes them.
pub trait ListFields {
    const LISTS: &'static [&'static str];
}

/// A [`JsonBody`] whose top-level fields named by [`ListFields`] may be
/// lists of plain values; any other list is refused as there.
pub struct JsonListBody<T>(pub T);

impl<T: DeserializeOwned + ListFields + 'static> FromRequest for JsonListBody<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let body = read_json(req, payload, T::LISTS);
        Box::pin(async move { body.await.map(JsonListBody) })
    }
}

/// Reads a JSON body of `application/json`, `lists` being the top-level
/// fields that may be lists of plain values.
fn read_json<T: DeserializeOwned + 'static>(
    req: &HttpRequest,
    payload: &mut Payload,
    lists: &'static [&'static str],
) -> impl Future<Output = Result<T, ApiError>> + 'static {
    let json = req.mime_type().ok().flatten().is_some_and(|m| {
        m.subtype() == mime_json() || m.suffix().is_some_and(|s| s == mime_json())
    });
    let bytes = web::Bytes::from_request(req, payload);
    async move {
        if !json {
            return Err(ApiError::new(
                ProblemKind::UnsupportedMediaType,
                "Send the body as application/json.",
            ));
        }
        let bytes = bytes.await.map_err(payload_error)?;
        parse_json_with_lists(&bytes, lists)
    }
}

fn mime_json() -> &'static str {
    "json"
}

/// Maps a failure to read the body to its problem.
pub fn payload_error(err: actix_web::Error) -> ApiError {
    match err.as_error::<PayloadError>() {
        Some(PayloadError::Overflow) => ApiError::new(
            ProblemKind::PayloadTooLarge,
            "The body is larger than this route accepts.",
        ),
        _ if err.as_response_error().status_code()
            == actix_web::http::StatusCode::PAYLOAD_TOO_LARGE =>
        {
            ApiError::new(
                ProblemKind::PayloadTooLarge,
                "The body is larger than this route accepts.",
            )
        }
        _ => ApiError::new(ProblemKind::MalformedJson, "The body could not be read."),
    }
}

/// Where a body is not of the shape every kihon4 body has: an object whose
/// values are objects or plain values, never lists, but for the top-level
/// fields `lists` names, which may be lists of plain values. (serde would
/// take a list for a struct, its fields in order, so `[null, null]` would
/// pass.)
fn misshapen(value: &serde_json::Value, lists: &[&str]) -> Option<(String, &'static str)> {
    fn list_in(value: &serde_json::Value, path: &str) -> Option<String> {
        match value {
            serde_json::Value::Array(_) => Some(path.to_owned()),
            serde_json::Value::Object(fields) => fields.iter().find_map(|(name, v)| {
                let here = if path.is_empty() {
                    name.clone()
                } else {
                    format!("{path}.{name}")
                };
                list_in(v, &here)
            }),
            _ => None,
        }
    }
    let Some(fields) = value.as_object() else {
        return Some(("body".to_owned(), "must be a JSON object"));
    };
    let plain = |v: &serde_json::Value| !v.is_array() && !v.is_object();
    fields.iter().find_map(|(name, v)| match v {
        serde_json::Value::Array(items) if lists.contains(&name.as_str()) => items
            .iter()
            .position(|item| !plain(item))
            .map(|i| (format!("{name}[{i}]"), "must be a single value")),
        _ => list_in(v, name).map(|path| (path, "must be an object or a single value, not a list")),
    })
}

/// Parses JSON into `T`, naming the field of a type error or unknown field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    parse_json_with_lists(bytes, &[])
}

/// [`parse_json`], the top-level fields `lists` names being lists of plain values.
pub fn parse_json_with_lists<T: DeserializeOwned>(
    bytes: &[u8],
    lists: &[&str],
) -> Result<T, ApiError> {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes)
        && let Some((field, message)) = misshapen(&value, lists)
    {
        // Never echo a My Number, not even as a field name.
        let field = if contains_my_number(&field) {
            "body".to_owned()
        } else {
            field
        };
        return Err(ApiError::field(ProblemKind::Validation, field, message));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize::<_, T>(&mut de);
    if let (Ok(_), Err(e)) = (&value, de.end()) {
        return Err(ApiError::new(
            ProblemKind::MalformedJson,
            format!(
                "The body has data after the JSON value (line {}, column {}).",
                e.line(),
                e.column()
            ),
        ));
    }
    value.map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::new(
                ProblemKind::MalformedJson,
                format!(
                    "The body is not valid JSON (line {}, column {}).",
                    inner.line(),
                    inner.column()
                ),
            );
        }
        let message = inner.to_string();
        let message = message
            .split(" at line ")
            .next()
            .unwrap_or_default()
            .to_owned();
        let unknown = message
            .strip_prefix("unknown field `")
            .and_then(|rest| rest.split('`').next());
        // The path already ends with an unknown field's name.
        let field = match (path.as_str(), unknown) {
            (".", Some(unknown)) => unknown.to_owned(),
            (".", None) => "body".to_owned(),
            _ => path,
        };
        // Never echo a My Number, whether it came as a value or as a field name.
        if contains_my_number(&field) || contains_my_number(&message) {
            let field = if contains_my_number(&field) {
                "body".to_owned()
            } else {
                field
            };
            return ApiError::from(kihon4_core::domain::FieldErrors(vec![
                kihon4_core::domain::FieldError {
                    field,
                    error: ValueError::MyNumber,
                },
            ]));
        }
        if unknown.is_some() {
            return ApiError::field(ProblemKind::Validation, field, "is not a known field");
        }
        ApiError::field(ProblemKind::Validation, field, message)
    })
}

/// A role a route needs.
pub trait RequiredRole {
    const ROLE: Role;
}

pub struct Operator;
impl RequiredRole for Operator {
    const ROLE: Role = Role::Operator;
}

pub struct Auditor;
impl RequiredRole for Auditor {
    const ROLE: Role = Role::Auditor;
}

pub struct Admin;
impl RequiredRole for Admin {
    const ROLE: Role = Role::Admin;
}

/// A caller whose bearer token holds role `R`. A refusal is audited (without
/// anything from the token) and answered 401 or 403.
pub struct Auth<R: RequiredRole> {
    pub principal: Principal,
    pub request_id: Option<String>,
    _role: PhantomData<R>,
}

impl<R: RequiredRole> Auth<R> {
    /// Who acts, for the audit events of this request.
    pub fn audit(&self) -> AuditContext {
        AuditContext::new(Actor::user(&self.principal.sub), self.request_id.clone())
    }
}

/// The bearer token of a request, if it carries one.
pub fn bearer(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl<R: RequiredRole + 'static> FromRequest for Auth<R> {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    /// Decides at once, so that a refusal answers before any other part of
    /// the request (body, path, query) is looked at. The refusal's audit
    /// event is written by [`crate::middleware::request_context`] before the
    /// response leaves.
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(
            authorise(req, |_| &[R::ROLE]).map(|(principal, request_id)| Auth {
                principal,
                request_id,
                _role: PhantomData,
            }),
        )
    }
}

/// The caller's principal and request id when its token holds one of the
/// roles `roles` gives; otherwise the refusal (naming the first role).
fn authorise(
    req: &HttpRequest,
    roles: impl FnOnce(&AppState) -> &[Role],
) -> Result<(Principal, Option<String>), ApiError> {
    let Some(state) = req.app_data::<web::Data<AppState>>() else {
        return Err(ApiError::internal("application state missing"));
    };
    let roles = roles(state);
    let required = roles.first().copied().unwrap_or(Role::Admin);
    let verdict = match bearer(req) {
        None => Err(AuthError::Missing),
        Some(token) => state.auth.verify(token),
    };
    match verdict {
        Ok(principal) if roles.iter().any(|&r| principal.has(r)) => {
            Ok((principal, request_id(req)))
        }
        Ok(principal) => Err(ApiError::refused(Refusal {
            actor: Actor::user(&principal.sub),
            reason: "forbidden",
            required_role: required,
        })),
        Err(e) => Err(ApiError::refused(Refusal {
            actor: Actor::anonymous(),
            reason: e.reason(),
            required_role: required,
        })),
    }
}

/// A caller whose token holds one of the roles that may read the change
/// feed (`KIHON4_CHANGES_READ_ROLES`).
pub struct ChangesReader {
    pub principal: Principal,
    pub request_id: Option<String>,
}

impl ChangesReader {
    /// Who acts, for the audit events of this request.
    pub fn audit(&self) -> AuditContext {
        AuditContext::new(Actor::user(&self.principal.sub), self.request_id.clone())
    }
}

impl FromRequest for ChangesReader {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(authorise(req, |state| &state.changes_read_roles).map(
            |(principal, request_id)| ChangesReader {
                principal,
                request_id,
            },
        ))
    }
}

/// A refused authorisation, carried on the response until it is audited.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub actor: Actor,
    /// `missing`, `expired`, `invalid` or `forbidden`.
    pub reason: &'static str,
    pub required_role: Role,
}

/// Appends the audit event of a refused authorisation (nothing from the token in it).
pub async fn audit_refusal(
    state: &AppState,
    refusal: &Refusal,
    req: &HttpRequest,
) -> Result<(), sea_orm::DbErr> {
    let attempt = AuthAttempt {
        reason: refusal.reason,
        method: req.method().as_str().to_owned(),
        route: req.match_pattern().unwrap_or_else(|| "unmatched".into()),
        required_role: refusal.required_role.as_str(),
    };
    let ctx = AuditContext::new(refusal.actor.clone(), request_id(req));
    // A valid token that lacks the role is counted under its subject; any
    // other refusal under the client's address.
    let source = if refusal.actor == Actor::anonymous() {
        crate::limits::ClientSource::of(&state.limits, req).0
    } else {
        refusal.actor.as_str().to_owned()
    };
    let refusal = kihon4_core::refusals::Refusal::Auth(attempt);
    kihon4_core::refusals::record(&state.db, &state.refusals, &source, &ctx, refusal).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        a: Option<String>,
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        x: Option<String>,
        inner: Option<Inner>,
    }

    #[test]
    fn a_list_is_never_taken_for_an_object() {
        for (json, field) in [
            (r#"[null, null]"#, "body"),
            (r#""text""#, "body"),
            (r#"{"x": "1", "inner": ["a"]}"#, "inner"),
        ] {
            let err = parse_json::<Body>(json.as_bytes()).unwrap_err();
            assert_eq!(err.kind, ProblemKind::Validation, "{json}");
            assert_eq!(err.errors[0].field, field, "{json}");
        }
        let ok: Body = parse_json(br#"{"x": "1", "inner": {"a": "b"}}"#).unwrap();
        assert_eq!(ok.x.as_deref(), Some("1"));
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct WithList {
        types: Option<Vec<String>>,
        inner: Option<Inner>,
    }

    #[test]
    fn only_the_named_fields_may_be_lists_of_plain_values() {
        let ok: WithList = parse_json_with_lists(br#"{"types": ["a", "b"]}"#, &["types"]).unwrap();
        assert_eq!(ok.types.unwrap(), ["a", "b"]);
        for (json, field) in [
            (r#"{"types": ["a"]}"#, "types"),
            (r#"{"inner": ["a"]}"#, "inner"),
        ] {
            let err = parse_json::<WithList>(json.as_bytes()).unwrap_err();
            assert_eq!(err.errors[0].field, field, "{json}");
        }
        for (json, field) in [
            (r#"{"types": ["a", ["b"]]}"#, "types[1]"),
            (r#"{"types": [{"a": "b"}]}"#, "types[0]"),
            (r#"{"inner": ["a"]}"#, "inner"),
            (r#"[["a"]]"#, "body"),
        ] {
            let err = parse_json_with_lists::<WithList>(json.as_bytes(), &["types"]).unwrap_err();
            assert_eq!(err.kind, ProblemKind::Validation, "{json}");
            assert_eq!(err.errors[0].field, field, "{json}");
        }
    }
}

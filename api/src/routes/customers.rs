//! `/v1/customers`: role operator.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, get, patch, post, web};
use chrono::{DateTime, NaiveDate, Utc};
use kihon4_core::customers::{self, ContactChange, Customer, NewCustomer};
use kihon4_core::domain::{
    Basic4, Email, ExternalRef, FieldError, FieldErrors, Locale, RawBasic4, ValueError,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Page, Paging, next_cursor, page_limit, uuid_cursor};
use crate::AppState;
use crate::extract::{Auth, JsonBody, Operator};
use crate::problem::{ApiError, ProblemKind};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Basic4Body {
    /// 氏名, as on the resident register (at most 100 characters).
    #[schema(required = true, value_type = String, min_length = 1, max_length = 100)]
    name: Option<String>,
    /// One `0`/`1` per character of `name`; `1` marks a substitute character. Default: all `0`.
    #[schema(pattern = "^[01]*$", max_length = 100)]
    name_substitute_flags: Option<String>,
    /// 住所 (at most 300 characters).
    #[schema(required = true, value_type = String, min_length = 1, max_length = 300)]
    address: Option<String>,
    /// As `name_substitute_flags`, for `address`.
    #[schema(pattern = "^[01]*$", max_length = 300)]
    address_substitute_flags: Option<String>,
    /// `YYYY-MM-DD`, a real date from 1868-01-25 (Meiji) to today.
    #[schema(required = true, value_type = String, format = Date)]
    birth_date: Option<String>,
    /// JIS X 0303: `"1"` male, `"2"` female, `"9"` not applicable.
    #[schema(required = true, value_type = String, pattern = "^[129]$")]
    gender: Option<String>,
}

impl Basic4Body {
    fn parse(&self) -> Result<Basic4, FieldErrors> {
        Basic4::parse(RawBasic4 {
            name: self.name.as_deref(),
            name_substitute_flags: self.name_substitute_flags.as_deref(),
            address: self.address.as_deref(),
            address_substitute_flags: self.address_substitute_flags.as_deref(),
            birth_date: self.birth_date.as_deref(),
            gender: self.gender.as_deref(),
        })
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCustomer {
    /// The institution's own customer number (ASCII letters, digits, `-_.:/`; at most 64).
    #[schema(required = true, value_type = String, pattern = "^[A-Za-z0-9_.:/-]{1,64}$")]
    external_ref: Option<String>,
    /// A plain address (no display name), at most 254 characters.
    #[schema(required = true, value_type = String, format = Email, max_length = 254)]
    email: Option<String>,
    /// `ja` (default) or `en`.
    #[schema(pattern = "^(ja|en)$")]
    locale: Option<String>,
    /// Leave out when the four items will come from the consent's certificate.
    basic4: Option<Basic4Body>,
}

impl CreateCustomer {
    fn parse(&self) -> Result<NewCustomer, FieldErrors> {
        let mut errors = FieldErrors::new();
        let external_ref = errors.check(
            "external_ref",
            self.external_ref.as_deref(),
            ExternalRef::parse,
        );
        let email = errors.check("email", self.email.as_deref(), Email::parse);
        let locale = errors
            .check_optional("locale", self.locale.as_deref(), Locale::parse)
            .unwrap_or_default();
        let basic4 = match &self.basic4 {
            None => None,
            Some(b) => match b.parse() {
                Ok(b) => Some(b),
                Err(e) => {
                    errors.extend_prefixed("basic4", e);
                    None
                }
            },
        };
        errors.into_result()?;
        Ok(NewCustomer {
            external_ref: external_ref.expect("checked"),
            email: email.expect("checked"),
            locale,
            basic4,
        })
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchCustomer {
    /// A plain address (no display name), at most 254 characters.
    #[schema(format = Email, max_length = 254)]
    email: Option<String>,
    /// `ja` or `en`.
    #[schema(pattern = "^(ja|en)$")]
    locale: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Basic4View {
    name: String,
    name_substitute_flags: String,
    address: String,
    address_substitute_flags: String,
    birth_date: String,
    gender: String,
    /// Furigana, when J-LIS returned it.
    #[serde(skip_serializing_if = "Option::is_none")]
    name_kana: Option<String>,
    /// The former surname (旧姓), when J-LIS returned one.
    #[serde(skip_serializing_if = "Option::is_none")]
    former_surname: Option<String>,
    /// A move abroad J-LIS reported as scheduled.
    #[serde(skip_serializing_if = "Option::is_none")]
    overseas_move: Option<OverseasMoveView>,
}

#[derive(Serialize, ToSchema)]
pub struct OverseasMoveView {
    scheduled_on: NaiveDate,
}

#[derive(Serialize, ToSchema)]
pub struct CustomerView {
    id: Uuid,
    external_ref: String,
    email: String,
    locale: String,
    basic4: Option<Basic4View>,
    /// `active`, `review` or `deceased`.
    status: String,
    /// The signing certificate the record is tied to (lowercase hex).
    jpki_cert_serial: Option<String>,
    /// Send as `If-Match` to change the record.
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<&Customer> for CustomerView {
    fn from(c: &Customer) -> Self {
        Self {
            id: c.id,
            external_ref: c.external_ref.as_str().to_owned(),
            email: c.email.as_str().to_owned(),
            locale: c.locale.as_str().to_owned(),
            basic4: c.basic4.as_ref().map(|b| Basic4View {
                name: b.name.as_str().to_owned(),
                name_substitute_flags: b.name.flags().as_str().to_owned(),
                address: b.address.as_str().to_owned(),
                address_substitute_flags: b.address.flags().as_str().to_owned(),
                birth_date: b.birth_date.to_iso(),
                gender: b.gender.code().to_owned(),
                name_kana: c.optional.name_kana.clone(),
                former_surname: c.optional.former_surname.clone(),
                overseas_move: c
                    .optional
                    .overseas_move_on
                    .map(|scheduled_on| OverseasMoveView { scheduled_on }),
            }),
            status: c.status.as_str().to_owned(),
            jpki_cert_serial: c.jpki_cert_serial.as_ref().map(|s| s.as_str().to_owned()),
            version: c.version,
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct HistoryEntry {
    id: Uuid,
    /// The customer's version after this change.
    customer_version: i64,
    /// `api`, `consent` or `sync`.
    source: String,
    /// The four items before (null when first recorded).
    #[schema(value_type = Option<Object>)]
    before: Option<Value>,
    #[schema(value_type = Object)]
    after: Value,
    /// The date J-LIS reported the change, when it came from J-LIS.
    reported_on: Option<NaiveDate>,
    changed_at: DateTime<Utc>,
}

fn with_etag(mut res: actix_web::HttpResponseBuilder, customer: &Customer) -> HttpResponse {
    res.insert_header((header::ETAG, format!("\"{}\"", customer.version)))
        .json(CustomerView::from(customer))
}

/// Creates a customer. Role: operator.
#[utoipa::path(
    operation_id = "createCustomer",
    tag = "customers",
    request_body = CreateCustomer,
    responses(
        (status = 201, body = CustomerView, description = "Created; `Location` names it, `ETag` is its version",
            headers(("Location" = String), ("ETag" = String))),
        (status = 409, description = "external-ref-taken"),
    ),
    security(("bearer" = ["operator"]))
)]
#[post("/v1/customers")]
pub async fn create(
    state: web::Data<AppState>,
    auth: Auth<Operator>,
    body: JsonBody<CreateCustomer>,
) -> Result<HttpResponse, ApiError> {
    let new = body.0.parse()?;
    let customer = customers::create(&state.db, &auth.audit(), new).await?;
    let mut res = HttpResponse::Created();
    res.insert_header((header::LOCATION, format!("/v1/customers/{}", customer.id)));
    Ok(with_etag(res, &customer))
}

/// Reads a customer. Role: operator.
#[utoipa::path(
    operation_id = "getCustomer",
    tag = "customers",
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, body = CustomerView, description = "The customer; `ETag` is its version", headers(("ETag" = String))),
        (status = 404, description = "not-found"),
    ),
    security(("bearer" = ["operator"]))
)]
#[get("/v1/customers/{id}")]
pub async fn read(
    state: web::Data<AppState>,
    _auth: Auth<Operator>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let customer = customers::get(&state.db, *id).await?;
    Ok(with_etag(HttpResponse::Ok(), &customer))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only the customer with this customer number.
    #[param(pattern = "^[A-Za-z0-9_.:/-]{1,64}$")]
    external_ref: Option<String>,
    /// The `next_cursor` of the page before.
    #[param(format = Uuid)]
    cursor: Option<String>,
    /// Items per page (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u64>,
}

/// Lists customers, oldest first, or finds one by `external_ref`. Role: operator.
#[utoipa::path(
    operation_id = "listCustomers",
    tag = "customers",
    params(ListQuery),
    responses(
        (status = 200, body = Page<CustomerView>),
        (status = 422, description = "my-number-refused: `external_ref` holds one"),
    ),
    security(("bearer" = ["operator"]))
)]
#[get("/v1/customers")]
pub async fn list(
    state: web::Data<AppState>,
    _auth: Auth<Operator>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = page_limit(query.limit)?;
    let external_ref = query
        .external_ref
        .as_deref()
        .map(ExternalRef::parse)
        .transpose()
        .map_err(|e| match e {
            ValueError::MyNumber => ApiError::from(FieldErrors(vec![FieldError {
                field: "external_ref".into(),
                error: e,
            }])),
            e => ApiError::field(ProblemKind::InvalidQuery, "external_ref", e.to_string()),
        })?;
    let after = uuid_cursor(query.cursor.as_deref())?;
    let found = customers::list(&state.db, external_ref.as_ref(), after, limit).await?;
    let next_cursor = next_cursor(&found, limit, |c| c.id.to_string());
    Ok(HttpResponse::Ok().json(Page {
        items: found.iter().map(CustomerView::from).collect(),
        next_cursor,
    }))
}

/// The version an `If-Match` header names: `"3"`, `W/"3"` or `3`.
fn if_match_version(req: &HttpRequest) -> Result<i64, ApiError> {
    let Some(value) = req.headers().get(header::IF_MATCH) else {
        return Err(ApiError::new(
            ProblemKind::PreconditionRequired,
            "Send If-Match with the version you read (the ETag of GET /v1/customers/{id}).",
        ));
    };
    let text = value.to_str().unwrap_or_default().trim();
    let text = text.strip_prefix("W/").unwrap_or(text);
    let text = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text);
    text.parse::<i64>().map_err(|_| {
        ApiError::new(
            ProblemKind::PreconditionFailed,
            "If-Match does not name a version of this record.",
        )
    })
}

/// Changes a customer's email and/or locale. Role: operator.
#[utoipa::path(
    operation_id = "changeCustomer",
    tag = "customers",
    request_body = PatchCustomer,
    params(("id" = Uuid, Path), ("If-Match" = String, Header, description = "The version read, e.g. \"3\"")),
    responses(
        (status = 200, body = CustomerView, headers(("ETag" = String))),
        (status = 404, description = "not-found"),
        (status = 412, description = "precondition-failed: the record changed, or If-Match names no version"),
        (status = 422, description = "nothing-to-change"),
        (status = 428, description = "precondition-required"),
    ),
    security(("bearer" = ["operator"]))
)]
#[patch("/v1/customers/{id}")]
pub async fn change(
    req: HttpRequest,
    state: web::Data<AppState>,
    auth: Auth<Operator>,
    id: web::Path<Uuid>,
    body: JsonBody<PatchCustomer>,
) -> Result<HttpResponse, ApiError> {
    let mut errors = FieldErrors::new();
    let email = errors.check_optional("email", body.0.email.as_deref(), Email::parse);
    let locale = errors.check_optional("locale", body.0.locale.as_deref(), Locale::parse);
    errors.into_result()?;
    let expected = if_match_version(&req)?;
    let customer = customers::change_contact(
        &state.db,
        &auth.audit(),
        *id,
        expected,
        ContactChange { email, locale },
    )
    .await?;
    Ok(with_etag(HttpResponse::Ok(), &customer))
}

/// The changes to a customer's four items, oldest first. Role: operator.
#[utoipa::path(
    operation_id = "listCustomerHistory",
    tag = "customers",
    params(("id" = Uuid, Path), Paging),
    responses(
        (status = 200, body = Page<HistoryEntry>),
        (status = 404, description = "not-found"),
    ),
    security(("bearer" = ["operator"]))
)]
#[get("/v1/customers/{id}/history")]
pub async fn history(
    state: web::Data<AppState>,
    _auth: Auth<Operator>,
    id: web::Path<Uuid>,
    query: web::Query<Paging>,
) -> Result<HttpResponse, ApiError> {
    let limit = page_limit(query.limit)?;
    let after = uuid_cursor(query.cursor.as_deref())?;
    let changes = customers::history(&state.db, *id, after, limit).await?;
    let next_cursor = next_cursor(&changes, limit, |c| c.id.to_string());
    let items = changes
        .into_iter()
        .map(|c| HistoryEntry {
            id: c.id,
            customer_version: c.customer_version,
            source: c.source,
            before: c.before,
            after: c.after,
            reported_on: c.reported_on,
            changed_at: c.changed_at,
        })
        .collect();
    Ok(HttpResponse::Ok().json(Page { items, next_cursor }))
}

//! Consent texts: role operator.

use actix_web::{HttpResponse, get, web};
use serde::Serialize;
use utoipa::ToSchema;

use super::Page;
use crate::AppState;
use crate::extract::{Auth, Operator};
use crate::problem::ApiError;

#[derive(Serialize, ToSchema)]
pub struct ConsentTextView {
    /// Give this as `text_version` with the signed consent.
    version: String,
    /// `ja` or `en`.
    locale: String,
    /// SHA-256 of the text's UTF-8 bytes, hex.
    sha256: String,
    /// The exact text to sign: its UTF-8 bytes are the signed content.
    text: String,
}

/// The consent texts a customer may sign, oldest first. Role: operator.
#[utoipa::path(
    tag = "consent",
    responses((status = 200, body = Page<ConsentTextView>)),
    security(("bearer" = ["operator"]))
)]
#[get("/v1/consent-texts")]
pub async fn texts(
    state: web::Data<AppState>,
    _auth: Auth<Operator>,
) -> Result<HttpResponse, ApiError> {
    let items = state
        .consent_texts
        .all()
        .iter()
        .map(|t| ConsentTextView {
            version: t.version.clone(),
            locale: t.locale.as_str().to_owned(),
            sha256: t.sha256.clone(),
            text: t.text.clone(),
        })
        .collect();
    Ok(HttpResponse::Ok().json(Page {
        items,
        next_cursor: None,
    }))
}

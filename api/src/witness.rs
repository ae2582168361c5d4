//! The witness's HTTP service (C2SP tlog-witness): `POST /add-checkpoint`
//! and nothing else, for `kihon4 witness serve`. A witness needs no
//! database and no kihon4 configuration: its key, the logs it follows and
//! its state file (`kihon4_core::audit_log::witness::Witness`).

use std::sync::Arc;

use actix_web::{App, HttpResponse, HttpServer, web};
use kihon4_core::audit_log::witness::Witness;

/// The largest request taken: 63 proof lines and a checkpoint with a few
/// signatures fit in a few kilobytes.
const MAX_BODY: usize = 64 * 1024;

async fn add_checkpoint(witness: web::Data<Arc<Witness>>, body: web::Bytes) -> HttpResponse {
    match witness.add_checkpoint(&body).await {
        Ok(cosignature) => {
            tracing::info!("checkpoint cosigned");
            HttpResponse::Ok()
                .content_type("text/plain; charset=utf-8")
                .body(cosignature)
        }
        Err(refusal) => {
            tracing::warn!(status = refusal.status, reason = %refusal.body.trim_end(), "checkpoint refused");
            let status = actix_web::http::StatusCode::from_u16(refusal.status)
                .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR);
            let content_type = if refusal.status == 409 {
                "text/x.tlog.size"
            } else {
                "text/plain; charset=utf-8"
            };
            HttpResponse::build(status)
                .content_type(content_type)
                .body(refusal.body)
        }
    }
}

/// The witness's server on `listener`: await it to serve until the process
/// is stopped.
pub fn server(
    listener: std::net::TcpListener,
    witness: Arc<Witness>,
) -> std::io::Result<actix_web::dev::Server> {
    let data = web::Data::new(witness);
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(web::PayloadConfig::new(MAX_BODY))
            .route("/add-checkpoint", web::post().to(add_checkpoint))
    })
    .listen(listener)?
    .run())
}

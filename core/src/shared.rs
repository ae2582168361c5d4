//! What a process loads once from its configuration and its roles (the
//! API, the worker) share: `AppState::build` and
//! `WorkerSettings::from_config` take it with the configuration.

use std::sync::Arc;

use sea_orm::DatabaseConnection;

use crate::audit_export::SigningKey;
use crate::jpki::verify::TrustAnchors;
use crate::notices::Notices;

pub struct Shared {
    pub db: DatabaseConnection,
    /// The notices' templates, checked ([`crate::config::NoticeSettings::load`]).
    pub notices: Arc<Notices>,
    /// The key that signs audit checkpoints and export manifests.
    pub audit_key: Option<Arc<SigningKey>>,
    /// The trust anchors, in the platform role when configured
    /// ([`crate::config::TrustSettings::load`]).
    pub anchors: Option<Arc<TrustAnchors>>,
}

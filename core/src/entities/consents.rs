use sea_orm::entity::prelude::*;

/// A granted consent and its evidence; never updated (its state lives in `consent_events`).
#[derive(Clone, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "consents")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub customer_id: Uuid,
    pub purpose: String,
    pub channel: String,
    pub role: String,
    pub text_version: String,
    pub text_sha256: String,
    pub cert_serial: String,
    pub cert_not_after: DateTimeUtc,
    pub granted_at: DateTimeUtc,
    pub expires_at: DateTimeUtc,
    pub document_sha256: String,
    #[sea_orm(unique)]
    pub signature_sha256: String,
    pub signed_document: Option<Vec<u8>>,
    pub certificate: Option<Vec<u8>>,
    pub anchor_key_id: Option<String>,
    pub verification_id: Option<String>,
    pub certificate_id: Option<String>,
    pub signed_content: Vec<u8>,
    pub revocation_method: String,
    /// Mynaportal's pairwise id of the holder, for consents given there.
    pub ppid: Option<String>,
    /// How it was signed: `cms`, `pkcs1_sha256` (a raw card signature,
    /// `signed_document` then holds the signature value) or `mynaportal`.
    pub evidence_form: String,
    /// The platform operator's id of the holder, where its API keeps one.
    pub provider_user_id: Option<String>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consent")
            .field("id", &self.id)
            .field("customer_id", &self.customer_id)
            .finish_non_exhaustive()
    }
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

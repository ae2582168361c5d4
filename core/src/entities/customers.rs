use sea_orm::entity::prelude::*;

#[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "customers")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    #[sea_orm(unique)]
    pub external_ref: String,
    pub email: String,
    pub locale: String,
    pub name: Option<String>,
    pub name_flags: Option<String>,
    pub address: Option<String>,
    pub address_flags: Option<String>,
    pub birth_date: Option<Date>,
    pub gender: Option<String>,
    pub jpki_cert_serial: Option<String>,
    pub cert_not_after: Option<DateTimeUtc>,
    pub status: String,
    pub version: i64,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    /// Optional items J-LIS returns where the register has them.
    pub name_kana: Option<String>,
    pub former_surname: Option<String>,
    pub overseas_move_on: Option<Date>,
}

// Rows hold personal data: a row printed by mistake shows only its identity.
impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Customer")
            .field("id", &self.id)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

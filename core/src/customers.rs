//! Customers: creating them, reading them, changing their contact details.
//! Every change writes its audit event in the same transaction.

use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect, UpdateMany,
};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::audit::events::{Change, CustomerCreated, CustomerUpdated, Event};
use crate::audit::{self, AuditContext};
use crate::db;
use crate::domain::{Basic4, CertSerial, Email, ExternalRef, Locale, RawBasic4};
use crate::entities::{basic4_history, customers};
use crate::error::CoreError;
use crate::provider::OptionalItems;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CustomerStatus {
    Active,
    Review,
    Deceased,
}

impl CustomerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Review => "review",
            Self::Deceased => "deceased",
        }
    }

    fn parse(raw: &str) -> Result<Self, CoreError> {
        match raw {
            "active" => Ok(Self::Active),
            "review" => Ok(Self::Review),
            "deceased" => Ok(Self::Deceased),
            other => Err(CoreError::Corrupt(format!(
                "unknown customer status `{other}`"
            ))),
        }
    }
}

/// A customer as the rules see one.
#[derive(Debug, Clone)]
pub struct Customer {
    pub id: Uuid,
    pub external_ref: ExternalRef,
    pub email: Email,
    pub locale: Locale,
    pub basic4: Option<Basic4>,
    /// What J-LIS returned beyond the four, where the register has it.
    pub optional: OptionalItems,
    pub status: CustomerStatus,
    pub jpki_cert_serial: Option<CertSerial>,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl TryFrom<customers::Model> for Customer {
    type Error = CoreError;

    fn try_from(row: customers::Model) -> Result<Self, CoreError> {
        let corrupt = |what: &str| {
            CoreError::Corrupt(format!("customer {}: stored {what} is not valid", row.id))
        };
        let birth_date = row.birth_date.map(|d| d.format("%Y-%m-%d").to_string());
        let basic4 = match (&row.name, &row.address, &birth_date, &row.gender) {
            (None, None, None, None) => None,
            _ => Some(
                Basic4::parse(RawBasic4 {
                    name: row.name.as_deref(),
                    name_substitute_flags: row.name_flags.as_deref(),
                    address: row.address.as_deref(),
                    address_substitute_flags: row.address_flags.as_deref(),
                    birth_date: birth_date.as_deref(),
                    gender: row.gender.as_deref(),
                })
                .map_err(|_| corrupt("basic four information"))?,
            ),
        };
        Ok(Self {
            id: row.id,
            external_ref: ExternalRef::parse(&row.external_ref)
                .map_err(|_| corrupt("external_ref"))?,
            email: Email::parse(&row.email).map_err(|_| corrupt("email"))?,
            locale: Locale::parse(&row.locale).map_err(|_| corrupt("locale"))?,
            basic4,
            optional: OptionalItems {
                name_kana: row.name_kana.clone(),
                former_surname: row.former_surname.clone(),
                overseas_move_on: row.overseas_move_on,
            },
            status: CustomerStatus::parse(&row.status)?,
            jpki_cert_serial: row
                .jpki_cert_serial
                .as_deref()
                .map(CertSerial::parse)
                .transpose()
                .map_err(|_| corrupt("certificate serial"))?,
            version: row.version,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

/// What a new customer starts with.
#[derive(Debug, Clone)]
pub struct NewCustomer {
    pub external_ref: ExternalRef,
    pub email: Email,
    pub locale: Locale,
    pub basic4: Option<Basic4>,
}

/// The contact details an operator may change.
#[derive(Debug, Clone, Default)]
pub struct ContactChange {
    pub email: Option<Email>,
    pub locale: Option<Locale>,
}

/// Where a change to the four items came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basic4Source {
    Api,
    Consent,
    Sync,
    /// `kihon4 customers import`.
    Import,
}

impl Basic4Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Consent => "consent",
            Self::Sync => "sync",
            Self::Import => "import",
        }
    }
}

/// The four items as plain JSON, for the history kept with the customer.
pub fn basic4_json(b: &Basic4) -> Value {
    json!({
        "name": b.name.as_str(),
        "name_substitute_flags": b.name.flags().as_str(),
        "address": b.address.as_str(),
        "address_substitute_flags": b.address.flags().as_str(),
        "birth_date": b.birth_date.to_iso(),
        "gender": b.gender.code(),
    })
}

/// The four items and the optional ones present, as plain JSON (the
/// optional ones under the names J-LIS gives them).
pub fn items_json(b: &Basic4, optional: &OptionalItems) -> Value {
    let mut v = basic4_json(b);
    if let Value::Object(map) = &mut v {
        if let Some(kana) = &optional.name_kana {
            map.insert("name_kana".into(), json!(kana));
        }
        if let Some(surname) = &optional.former_surname {
            map.insert("former_surname".into(), json!(surname));
        }
        if let Some(on) = optional.overseas_move_on {
            map.insert("overseas_move".into(), json!({"scheduled_on": on}));
        }
    }
    v
}

fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// The row of a new customer.
pub(crate) fn new_row(id: Uuid, new: &NewCustomer, at: DateTime<Utc>) -> customers::ActiveModel {
    let b = new.basic4.as_ref();
    customers::ActiveModel {
        id: Set(id),
        external_ref: Set(new.external_ref.as_str().to_owned()),
        email: Set(new.email.as_str().to_owned()),
        locale: Set(new.locale.as_str().to_owned()),
        name: Set(b.map(|b| b.name.as_str().to_owned())),
        name_flags: Set(b.map(|b| b.name.flags().as_str().to_owned())),
        address: Set(b.map(|b| b.address.as_str().to_owned())),
        address_flags: Set(b.map(|b| b.address.flags().as_str().to_owned())),
        birth_date: Set(b.map(|b| b.birth_date.date())),
        gender: Set(b.map(|b| b.gender.code().to_owned())),
        jpki_cert_serial: Set(None),
        cert_not_after: Set(None),
        status: Set(CustomerStatus::Active.as_str().to_owned()),
        version: Set(1),
        created_at: Set(at),
        updated_at: Set(at),
        name_kana: Set(None),
        former_surname: Set(None),
        overseas_move_on: Set(None),
    }
}

/// Writes the four items into a customer: `update` (of the customer's row)
/// sets them, and the history entry returned records the change, for the
/// caller to insert in the same transaction. `before` and `after` are the
/// items as the history shows them (the four, or the four with the
/// optional ones: [`basic4_json`], [`items_json`]).
pub(crate) fn write_basic4(
    update: UpdateMany<customers::Entity>,
    b: &Basic4,
    entry: HistoryEntry,
) -> (UpdateMany<customers::Entity>, basic4_history::ActiveModel) {
    let update = update
        .col_expr(customers::Column::Name, Expr::value(b.name.as_str()))
        .col_expr(
            customers::Column::NameFlags,
            Expr::value(b.name.flags().as_str()),
        )
        .col_expr(customers::Column::Address, Expr::value(b.address.as_str()))
        .col_expr(
            customers::Column::AddressFlags,
            Expr::value(b.address.flags().as_str()),
        )
        .col_expr(
            customers::Column::BirthDate,
            Expr::value(b.birth_date.date()),
        )
        .col_expr(customers::Column::Gender, Expr::value(b.gender.code()));
    (update, entry.row())
}

/// One entry of a customer's four-item history.
pub(crate) struct HistoryEntry {
    pub customer_id: Uuid,
    /// The customer's version the change makes.
    pub version: i64,
    pub source: Basic4Source,
    pub before: Option<Value>,
    pub after: Value,
    /// The date J-LIS gives for the change.
    pub reported_on: Option<chrono::NaiveDate>,
    pub at: DateTime<Utc>,
}

impl HistoryEntry {
    fn row(self) -> basic4_history::ActiveModel {
        basic4_history::ActiveModel {
            id: Set(Uuid::now_v7()),
            customer_id: Set(self.customer_id),
            customer_version: Set(self.version),
            source: Set(self.source.as_str().to_owned()),
            before: Set(self.before),
            after: Set(self.after),
            reported_on: Set(self.reported_on),
            changed_at: Set(self.at),
        }
    }
}

/// The first history entry of a customer given the four items at
/// `version` (1 for a new customer).
pub(crate) fn first_history(
    id: Uuid,
    version: i64,
    b: &Basic4,
    source: Basic4Source,
    at: DateTime<Utc>,
) -> basic4_history::ActiveModel {
    HistoryEntry {
        customer_id: id,
        version,
        source,
        before: None,
        after: basic4_json(b),
        reported_on: None,
        at,
    }
    .row()
}

/// The `customer.created` event of a new customer.
pub(crate) fn created_event(id: Uuid, new: &NewCustomer, imported: bool) -> Event {
    Event::CustomerCreated(CustomerCreated {
        customer_id: id,
        external_ref: new.external_ref.as_str().to_owned(),
        email: new.email.as_str().to_owned(),
        locale: new.locale,
        basic4: new.basic4.clone(),
        imported,
    })
}

/// Creates a customer with its audit event (and history, when the four
/// items are known). The audit append comes last: it holds the chain lock
/// until commit.
pub async fn create(
    db: &DatabaseConnection,
    ctx: &AuditContext,
    new: NewCustomer,
) -> Result<Customer, CoreError> {
    let txn = db::begin_write(db).await?;
    let id = Uuid::now_v7();
    let at = now();
    // The unique index decides, also between processes racing for one external_ref.
    match customers::Entity::insert(new_row(id, &new, at))
        .exec_without_returning(&txn)
        .await
    {
        Ok(_) => {}
        Err(e) if db::is_unique_violation(&e) => return Err(CoreError::ExternalRefTaken),
        Err(e) => return Err(e.into()),
    }
    if let Some(b) = &new.basic4 {
        basic4_history::Entity::insert(first_history(id, 1, b, Basic4Source::Api, at))
            .exec_without_returning(&txn)
            .await?;
    }
    audit::append(&txn, ctx, created_event(id, &new, false)).await?;
    txn.commit().await?;
    Ok(Customer {
        id,
        external_ref: new.external_ref,
        email: new.email,
        locale: new.locale,
        basic4: new.basic4,
        optional: OptionalItems::default(),
        status: CustomerStatus::Active,
        jpki_cert_serial: None,
        version: 1,
        created_at: at,
        updated_at: at,
    })
}

pub async fn get<C: ConnectionTrait>(db: &C, id: Uuid) -> Result<Customer, CoreError> {
    customers::Entity::find_by_id(id)
        .one(db)
        .await?
        .ok_or(CoreError::NotFound("customer"))?
        .try_into()
}

/// A page of customers, oldest first, optionally only the one with `external_ref`.
pub async fn list<C: ConnectionTrait>(
    db: &C,
    external_ref: Option<&ExternalRef>,
    after: Option<Uuid>,
    limit: u64,
) -> Result<Vec<Customer>, CoreError> {
    let mut query = customers::Entity::find().order_by_asc(customers::Column::Id);
    if let Some(r) = external_ref {
        query = query.filter(customers::Column::ExternalRef.eq(r.as_str()));
    }
    if let Some(after) = after {
        query = query.filter(customers::Column::Id.gt(after));
    }
    query
        .limit(limit)
        .all(db)
        .await?
        .into_iter()
        .map(Customer::try_from)
        .collect()
}

/// Changes email and/or locale when the caller saw `expected_version`.
/// Values equal to the stored ones change nothing and write nothing.
pub async fn change_contact(
    db: &DatabaseConnection,
    ctx: &AuditContext,
    id: Uuid,
    expected_version: i64,
    change: ContactChange,
) -> Result<Customer, CoreError> {
    if change.email.is_none() && change.locale.is_none() {
        return Err(CoreError::NothingToChange);
    }
    let txn = db::begin_write(db).await?;
    let current = customers::Entity::find_by_id(id)
        .one(&txn)
        .await?
        .ok_or(CoreError::NotFound("customer"))?;
    if current.version != expected_version {
        return Err(CoreError::VersionMismatch {
            current: current.version,
        });
    }
    let new_email = change.email.filter(|e| e.as_str() != current.email);
    let new_locale = change.locale.filter(|l| l.as_str() != current.locale);
    if new_email.is_none() && new_locale.is_none() {
        txn.rollback().await?;
        return current.try_into();
    }

    let version = current.version + 1;
    let at = now();
    let mut update = customers::Entity::update_many()
        .col_expr(customers::Column::Version, Expr::value(version))
        .col_expr(customers::Column::UpdatedAt, Expr::value(at))
        .filter(
            Condition::all()
                .add(customers::Column::Id.eq(id))
                .add(customers::Column::Version.eq(expected_version)),
        );
    let mut event = CustomerUpdated::new(id, Change::new(current.version, version));
    if let Some(email) = &new_email {
        update = update.col_expr(customers::Column::Email, Expr::value(email.as_str()));
        event.email = Some(Change::new(
            current.email.clone(),
            email.as_str().to_owned(),
        ));
    }
    if let Some(locale) = new_locale {
        update = update.col_expr(customers::Column::Locale, Expr::value(locale.as_str()));
        event.locale = Some(Change::new(
            current.locale.clone(),
            locale.as_str().to_owned(),
        ));
    }
    if update.exec(&txn).await?.rows_affected != 1 {
        // Another writer won the race since we read the row.
        let current = get(&txn, id).await?;
        return Err(CoreError::VersionMismatch {
            current: current.version,
        });
    }
    audit::append(&txn, ctx, Event::CustomerUpdated(event)).await?;
    txn.commit().await?;
    let mut changed = Customer::try_from(current)?;
    if let Some(email) = new_email {
        changed.email = email;
    }
    if let Some(locale) = new_locale {
        changed.locale = locale;
    }
    changed.version = version;
    changed.updated_at = at;
    Ok(changed)
}

/// One change to a customer's four items.
#[derive(Debug, Clone)]
pub struct Basic4Change {
    pub id: Uuid,
    pub customer_version: i64,
    pub source: String,
    pub before: Option<Value>,
    pub after: Value,
    pub reported_on: Option<chrono::NaiveDate>,
    pub changed_at: DateTime<Utc>,
}

/// A page of the changes to a customer's four items, oldest first, after
/// the change `after`.
pub async fn history<C: ConnectionTrait>(
    db: &C,
    id: Uuid,
    after: Option<Uuid>,
    limit: u64,
) -> Result<Vec<Basic4Change>, CoreError> {
    get(db, id).await?;
    let mut query = basic4_history::Entity::find()
        .filter(basic4_history::Column::CustomerId.eq(id))
        .order_by_asc(basic4_history::Column::Id);
    if let Some(after) = after {
        query = query.filter(basic4_history::Column::Id.gt(after));
    }
    Ok(query
        .limit(limit)
        .all(db)
        .await?
        .into_iter()
        .map(|h| Basic4Change {
            id: h.id,
            customer_version: h.customer_version,
            source: h.source,
            before: h.before,
            after: h.after,
            reported_on: h.reported_on,
            changed_at: h.changed_at,
        })
        .collect())
}

/// Reads the customer's row for a write transaction and holds it until the
/// transaction ends: PostgreSQL locks the row (`FOR UPDATE`); on SQLite the
/// write transaction already excludes every other writer.
pub(crate) async fn lock<C: ConnectionTrait>(
    txn: &C,
    id: Uuid,
) -> Result<customers::Model, CoreError> {
    let mut query = customers::Entity::find_by_id(id);
    if txn.get_database_backend() == sea_orm::DatabaseBackend::Postgres {
        query = query.lock_exclusive();
    }
    query.one(txn).await?.ok_or(CoreError::NotFound("customer"))
}

/// [`lock`] for many customers at once, in the order of their ids (so that
/// two lockers cannot deadlock); those that do not exist are left out.
pub(crate) async fn lock_many<C: ConnectionTrait>(
    txn: &C,
    ids: &[Uuid],
) -> Result<std::collections::HashMap<Uuid, customers::Model>, CoreError> {
    let mut query = customers::Entity::find()
        .filter(customers::Column::Id.is_in(ids.iter().copied()))
        .order_by_asc(customers::Column::Id);
    if txn.get_database_backend() == sea_orm::DatabaseBackend::Postgres {
        query = query.lock_exclusive();
    }
    Ok(query
        .all(txn)
        .await?
        .into_iter()
        .map(|row| (row.id, row))
        .collect())
}

//! Notices to customers: their templates, the transactional outbox, and
//! sending (docs/architecture.md#notices; the `outbox` table in
//! docs/architecture.md#data-model).

pub mod mail;
pub mod outbox;
pub mod templates;
pub mod values;

pub use outbox::{NewNotice, enqueue};
pub use templates::{Institution, NoticeKind, Notices, Rendered, Sender};
pub use values::NoticeValues;

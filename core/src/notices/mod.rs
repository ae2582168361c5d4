//! Notices to customers: their templates, the transactional outbox, and
//! sending (DESIGN §3 `outbox`, §4 step 5).

pub mod mail;
pub mod outbox;
pub mod templates;
pub mod values;

pub use outbox::{NewNotice, enqueue};
pub use templates::{Institution, NoticeKind, Notices, Rendered, Sender};
pub use values::NoticeValues;

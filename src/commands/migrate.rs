//! `kihon4 migrate`.

use kihon4_core::config::Config;
use kihon4_migrations::{Migrator, MigratorTrait, schema_status};

use crate::wiring;

pub async fn migrate(config: Config) -> anyhow::Result<()> {
    let db = wiring::connect(&config.audit()).await?;
    let before = schema_status(&db).await?;
    Migrator::up(&db, None).await?;
    for name in &before.pending {
        tracing::info!(migration = %name, "applied");
    }
    println!(
        "kihon4: {} migration(s) applied; the schema is current",
        before.pending.len()
    );
    Ok(())
}

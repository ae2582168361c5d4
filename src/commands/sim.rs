//! `kihon4 sim`: the J-LIS / platform-operator simulator.

use std::net::TcpListener;
use std::time::Duration;

use actix_web::web;

use crate::wiring;

/// Runs the simulator until SIGTERM/SIGINT.
pub async fn run(
    settings: kihon4_sim::SimSettings,
    listen: std::net::SocketAddr,
    flavor: Option<kihon4_sim::Flavor>,
) -> anyhow::Result<()> {
    let sim = web::Data::new(kihon4_sim::Simulator::open(settings).await?);
    if let Some(flavor) = flavor {
        sim.serve_only(flavor);
    }
    let callbacks = kihon4_sim::start_callbacks(&sim);
    // J-LIS publishes its CRL daily; so does the simulator (and at start, and on demand).
    let daily = {
        let sim = sim.clone();
        tokio::spawn(async move {
            let mut every_day = tokio::time::interval(Duration::from_secs(24 * 3600));
            every_day.tick().await;
            loop {
                every_day.tick().await;
                match sim.publish_crls().await {
                    Ok(p) => {
                        tracing::info!(crl_number = p.number, entries = p.entries, "CRLs published")
                    }
                    Err(e) => tracing::error!(error = %e, "CRL publication failed"),
                }
            }
        })
    };
    let listener =
        TcpListener::bind(listen).map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let server = kihon4_sim::server(sim, listener)?;
    let handle = server.handle();
    let task = tokio::spawn(server);
    tracing::info!(listen = %listen, "simulator listening");
    if flavor == Some(kihon4_sim::Flavor::PocketSign) {
        tracing::info!(
            base = %format!("http://{listen}/"),
            "PocketSign Verify API v2 stand-in: set KIHON4_PROVIDER_KIND=pocketsign, KIHON4_ROLE=service_provider and KIHON4_PROVIDER_URL to this base"
        );
    }
    wiring::wait_for_signal().await;
    daily.abort();
    callbacks.abort();
    handle.stop(true).await;
    task.await??;
    tracing::info!("simulator stopped");
    Ok(())
}

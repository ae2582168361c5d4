//! `kihon4 witness`: a witness of a kihon4 audit log (C2SP tlog-witness),
//! for an auditor to run on their own machine with their own key.

use std::process::ExitCode;
use std::sync::Arc;

use kihon4_core::audit_export::SigningKey;
use kihon4_core::audit_log::witness::{Cosigner, Witness};

use crate::{WitnessCommand, wiring};

pub fn run(command: &WitnessCommand) -> ExitCode {
    let result = match command {
        WitnessCommand::InitKey { key, name } => SigningKey::create(key)
            .and_then(|k| Cosigner::new(k, name))
            .map(|c| {
                println!("{}", c.public_key().vkey());
                eprintln!(
                    "kihon4: witness key {} made (owner-only); give the log's operator the line above",
                    key.display()
                );
            }),
        WitnessCommand::PublicKey { key, name } => SigningKey::load(key)
            .and_then(|k| Cosigner::new(k, name))
            .map(|c| println!("{}", c.public_key().vkey())),
        WitnessCommand::Serve {
            key,
            name,
            logs,
            state,
            listen,
        } => {
            let witness = SigningKey::load(key)
                .and_then(|k| Cosigner::new(k, name))
                .and_then(|c| Witness::open(c, logs, state));
            match witness {
                Ok(witness) => {
                    let witness = Arc::new(witness);
                    return wiring::block_on(async move {
                        let listener = std::net::TcpListener::bind(listen)
                            .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
                        tracing::info!(
                            listen = %listener.local_addr()?,
                            witness = %witness.public_key().vkey(),
                            "witness serving"
                        );
                        kihon4_api::witness::server(listener, witness)?.await?;
                        Ok(())
                    });
                }
                Err(e) => Err(e),
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kihon4: {e}");
            ExitCode::from(crate::BAD_USAGE)
        }
    }
}

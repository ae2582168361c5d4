//! The `kihon4` binary: a command line that wires the API, the worker and
//! the migrations together. No rules here.

mod commands;
mod demo;
mod wiring;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use kihon4_core::auth::Role;
use kihon4_core::config::Config;

#[derive(Parser)]
#[command(
    name = "kihon4",
    version,
    about = "Keeps customer records in step with J-LIS's latest basic four information"
)]
struct Cli {
    /// A TOML configuration file; KIHON4_* variables override it.
    #[arg(long, global = true, env = "KIHON4_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Who is acting, as the audit trail names the command's own events
    /// (`cli:NAME`); by default the login (LOGNAME, USER).
    #[arg(long, global = true, value_name = "NAME")]
    actor: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the API and the worker in one process.
    Serve,
    /// Runs the API only.
    Api,
    /// Runs the worker only.
    Worker,
    /// Applies the database migrations this binary carries.
    Migrate,
    /// Runs the J-LIS / platform-operator simulator (PROVIDER-PROTOCOL.md).
    Sim {
        /// Address and port to listen on.
        #[arg(long, default_value = "127.0.0.1:8090")]
        listen: std::net::SocketAddr,
        /// Where the simulator keeps its CA, residents and certificates.
        #[arg(long, value_name = "DIR", default_value = "sim-data")]
        data_dir: PathBuf,
        /// Require exactly this API key on provider routes (default: any non-empty key).
        #[arg(long)]
        api_key: Option<String>,
        /// Serve the `/sim/` control routes to other hosts too (default: loopback only).
        #[arg(long)]
        sim_routes_public: bool,
        /// Whose provider API to serve: `kihon4` (the provider protocol under
        /// `/v1/`) or `pocketsign` (PocketSign Verify API v2's Connect routes),
        /// from the same store. Without it, both are served.
        #[arg(long, value_parser = ["kihon4", "pocketsign"])]
        flavor: Option<String>,
    },
    /// Sync: asks J-LIS, through the provider, about consenting customers and applies the answers.
    Sync {
        #[command(subcommand)]
        command: SyncCommand,
    },
    /// The whole loop on this machine, with no configuration: SQLite, the
    /// simulator in-process, notices as .eml files.
    Demo {
        /// Where the demo keeps its files (emptied at start).
        #[arg(long, value_name = "DIR", default_value = "kihon4-demo")]
        data_dir: PathBuf,
        /// Keep the API running afterwards.
        #[arg(long)]
        serve: bool,
        /// Where the API listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
    },
    /// A witness of a kihon4 audit log (C2SP tlog-witness), run by an
    /// auditor with its own key and state: it cosigns a checkpoint only if
    /// it extends the last one it cosigned. Needs no kihon4 configuration.
    Witness {
        #[command(subcommand)]
        command: WitnessCommand,
    },
    /// The audit trail for auditors: the public key, exports, offline verification.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Mynaportal consent requests to existing customers.
    ConsentRequests {
        #[command(subcommand)]
        command: ConsentRequestsCommand,
    },
    /// Customers in bulk.
    Customers {
        #[command(subcommand)]
        command: CustomersCommand,
    },
    /// The change feed's daily file.
    Changes {
        #[command(subcommand)]
        command: ChangesCommand,
    },
    /// Bearer tokens for the configured key.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Subcommand)]
enum ChangesCommand {
    /// Writes a business day's change file and its manifest (the same
    /// bytes as the worker's, whenever it is written again).
    Export {
        /// The business day, YYYY-MM-DD (in JST).
        #[arg(long, value_name = "DATE")]
        date: chrono::NaiveDate,
        /// Where to write (default: KIHON4_CHANGES_FILE_DIR).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// `utf-8` (with a BOM) or `cp932` (default: KIHON4_CHANGES_FILE_ENCODING).
        #[arg(long, value_parser = ["utf-8", "cp932"])]
        encoding: Option<String>,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Prints the public key that checkpoints and manifests are signed with
    /// (SubjectPublicKeyInfo PEM), for auditors; its key id goes to stderr.
    PublicKey,
    /// Makes the audit signing key (Ed25519, PKCS#8 PEM, owner-only) and its
    /// public key beside it; never replaces one. Needed once before
    /// `serve`, `api`, `worker` or `audit export` outside the embedded default.
    /// Given a PKCS#11 URI (`pkcs11:token=…;object=…?module-path=…&pin-source=…`),
    /// makes the key pair in the token instead, not extractable.
    InitKey {
        /// Where to write it, or a PKCS#11 URI (default: KIHON4_AUDIT_SIGNING_KEY).
        #[arg(long, value_name = "PATH")]
        out: Option<PathBuf>,
    },
    /// Exports the events of a time range with its signed manifest
    /// (written to OUT.manifest.json).
    Export {
        /// The first moment (RFC 3339), inclusive; default: the first event.
        #[arg(long)]
        from: Option<chrono::DateTime<chrono::Utc>>,
        /// The last moment (RFC 3339), exclusive; default: now.
        #[arg(long)]
        to: Option<chrono::DateTime<chrono::Utc>>,
        /// `jsonl` (what was hashed, verifiable) or `csv` (for spreadsheets).
        #[arg(long, default_value = "jsonl", value_parser = ["jsonl", "csv"])]
        format: String,
        /// The export file to write.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Also write the personal values in clear, with their salts, to
        /// FILE (JSON Lines `{seq, field, value, salt}`); audited as such.
        #[arg(long, value_name = "FILE")]
        personal_data: Option<PathBuf>,
    },
    /// Erases the stored personal values (and their salts) of one customer's
    /// audit events; the chain and earlier exports still verify.
    Erase {
        /// The customer's id.
        #[arg(long, value_name = "ID")]
        customer: uuid::Uuid,
        /// Why (kept in the `audit.erased` event; no personal data).
        #[arg(long, value_name = "TEXT")]
        reason: String,
    },
    /// Prints the audit log's verifier key (C2SP signed-note:
    /// `<origin>+<key id>+<base64 key>`), which checks its checkpoints.
    LogKey,
    /// Lists every key the audit log has had, oldest first, with the trees
    /// each may sign: one verifier key per line on stdout (a file
    /// `verify-log --log-key` takes), the validity of each on stderr.
    LogKeys,
    /// Replaces the audit log's key by another: seals what is committed
    /// with the current key (KIHON4_AUDIT_SIGNING_KEY), records the
    /// rotation in the log with a statement both keys sign, and seals with
    /// the new one. Then point KIHON4_AUDIT_SIGNING_KEY at the new key and
    /// restart kihon4: the retired key signs nothing more.
    RotateKey {
        /// The new key (PKCS#8 PEM, e.g. from `kihon4 audit init-key --out`).
        #[arg(long, value_name = "FILE")]
        new_key: PathBuf,
    },
    /// Seals every audit event committed so far into the audit log and
    /// prints the newest checkpoint (a signed note). The worker does this
    /// every second on its own.
    Seal,
    /// Checks a JSON Lines export from the first event against checkpoints
    /// of the audit log kept earlier (signed notes, as served at
    /// /v1/audit/log/checkpoint): each must be the tree of the export's
    /// first events. No database, no network. Exit 0 when all hold, 1 when
    /// one does not.
    VerifyLog {
        /// The export (JSON Lines, from seq 1).
        export: PathBuf,
        /// The log's verifier key, or a file holding it (`kihon4 audit
        /// log-key`; or one key per line, as `kihon4 audit log-keys`
        /// prints); repeat for several. Keys that rotations in the export
        /// bring in are followed from these.
        #[arg(long = "log-key", value_name = "VKEY", required = true)]
        log_key: Vec<String>,
        /// A checkpoint kept earlier; repeat for several.
        #[arg(long = "checkpoint", value_name = "FILE", required = true)]
        checkpoints: Vec<PathBuf>,
        /// A witness whose cosignature counts (its vkey, from `kihon4 witness
        /// public-key`); repeat for several.
        #[arg(long = "witness", value_name = "VKEY")]
        witnesses: Vec<String>,
        /// How many of the witnesses must have cosigned each checkpoint
        /// (default: all of those given).
        #[arg(long, value_name = "K")]
        quorum: Option<usize>,
    },
    /// Checks one customer's events and their inclusion proofs (pages of
    /// /v1/audit/proofs/customers/{id}) against the log's key, with no
    /// database and no network: each event is in its checkpoint's tree.
    /// Exit 0 when all hold, 1 when one does not.
    VerifyCustomer {
        /// The pages, as served (JSON), in order.
        #[arg(required = true)]
        pages: Vec<PathBuf>,
        /// The log's verifier key, or a file holding one per line; repeat
        /// for several (the keys before and after a rotation).
        #[arg(long = "log-key", value_name = "VKEY", required = true)]
        log_key: Vec<String>,
        /// A witness whose cosignature counts; repeat for several.
        #[arg(long = "witness", value_name = "VKEY")]
        witnesses: Vec<String>,
        /// How many must have cosigned each page's checkpoint (default: all given).
        #[arg(long, value_name = "K")]
        quorum: Option<usize>,
    },
    /// Checks that a newer checkpoint of the audit log extends an older one
    /// kept earlier, by a consistency proof (/v1/audit/proofs/consistency),
    /// with no database and no network. Exit 0 when it does, 1 when not.
    VerifyConsistency {
        /// The log's verifier key, or a file holding one per line; repeat
        /// for several (the keys before and after a rotation).
        #[arg(long = "log-key", value_name = "VKEY", required = true)]
        log_key: Vec<String>,
        /// The checkpoint kept earlier.
        #[arg(long, value_name = "FILE")]
        old: PathBuf,
        /// The newer checkpoint.
        #[arg(long, value_name = "FILE")]
        new: PathBuf,
        /// The proof, as served (JSON).
        #[arg(long, value_name = "FILE")]
        proof: PathBuf,
    },
    /// Verifies a JSON Lines export against its manifest and the public key,
    /// with no database and no network; names the first line that does not
    /// verify. Exit 0 when everything holds, 1 when something does not.
    Verify {
        /// The export (JSON Lines).
        export: PathBuf,
        /// Its manifest.
        manifest: PathBuf,
        /// The public key (from `kihon4 audit public-key`).
        #[arg(long, value_name = "PUBKEY")]
        key: PathBuf,
        /// The companion file of personal values, checked against the commitments.
        #[arg(long, value_name = "FILE")]
        personal_data: Option<PathBuf>,
        /// A checkpoint kept from an earlier export (as served at
        /// /v1/audit/checkpoints/latest, or a manifest holding one) that this
        /// export must extend; repeat for several.
        #[arg(long = "checkpoint", value_name = "FILE")]
        checkpoints: Vec<PathBuf>,
        /// The key id the manifest, its checkpoint, every kept checkpoint
        /// and the public key must have (`kihon4 audit public-key` prints it).
        #[arg(long, value_name = "ID")]
        expect_key_id: Option<String>,
    },
}

#[derive(Subcommand)]
enum WitnessCommand {
    /// Makes the witness's key (Ed25519, PKCS#8 PEM, owner-only; never
    /// replaces one) and prints its cosigner key (vkey) for the log's
    /// KIHON4_AUDIT_LOG_WITNESSES and for verifiers.
    InitKey {
        /// Where to write the key.
        #[arg(long, value_name = "PATH")]
        key: PathBuf,
        /// The witness's name, a schema-less URL such as auditor.example/witness.
        #[arg(long)]
        name: String,
    },
    /// Prints the cosigner key (vkey) of a witness key.
    PublicKey {
        #[arg(long, value_name = "PATH")]
        key: PathBuf,
        #[arg(long)]
        name: String,
    },
    /// Serves `POST /add-checkpoint` (C2SP tlog-witness) for the logs given.
    Serve {
        #[arg(long, value_name = "PATH")]
        key: PathBuf,
        #[arg(long)]
        name: String,
        /// The verifier key of a log it follows (`kihon4 audit log-key`); repeat for several.
        #[arg(long = "log", value_name = "VKEY", required = true)]
        logs: Vec<String>,
        /// Where it keeps the latest checkpoint it cosigned of each log (JSON, owner-only).
        #[arg(long, value_name = "PATH")]
        state: PathBuf,
        /// Address and port to listen on.
        #[arg(long, default_value = "127.0.0.1:7380")]
        listen: std::net::SocketAddr,
    },
}

#[derive(Subcommand)]
enum ConsentRequestsCommand {
    /// Emails a consent request to customers who have neither an active
    /// consent nor an open request; run again, it goes on where it stopped.
    Send {
        /// Every customer without consent (required: says what is meant).
        #[arg(long, required = true)]
        all_without_consent: bool,
        /// Ask at most this many customers.
        #[arg(long, value_name = "N")]
        limit: Option<u64>,
    },
}

#[derive(Subcommand)]
enum CustomersCommand {
    /// Imports customers from a CSV file (columns external_ref, email,
    /// locale, and optionally name, address, birth_date, gender); rows
    /// that cannot be imported go to a report by line number and reason.
    /// Importing the same file again changes nothing.
    Import {
        /// The CSV file, with a header row.
        file: PathBuf,
        /// The file's encoding: utf-8 (with or without BOM) or shift_jis (CP932).
        #[arg(long, default_value = "utf-8", value_parser = ["utf-8", "shift_jis", "cp932"])]
        encoding: String,
        /// Where rejected rows are reported (default: FILE.rejected.csv).
        #[arg(long, value_name = "FILE")]
        rejected: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum SyncCommand {
    /// Runs one sync run to its end in this process: a progress bar on a
    /// terminal, a summary at the end.
    RunOnce {
        /// `revoked` (certificates no longer valid), `all` or `customer`.
        #[arg(long, default_value = "revoked", value_parser = ["revoked", "all", "customer"])]
        scope: String,
        /// The customer, with `--scope customer`.
        #[arg(long, value_name = "ID", required_if_eq("scope", "customer"))]
        customer: Option<uuid::Uuid>,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Prints a signed token.
    Issue {
        /// A role the token carries (repeat for several).
        #[arg(long = "role", required = true, value_parser = parse_role)]
        roles: Vec<Role>,
        /// How long the token is valid, e.g. 15m, 1h, 7d.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// The subject: who the token speaks for (recorded as the actor of audit events).
        #[arg(long, default_value = "kihon4-cli")]
        sub: String,
        /// The PKCS#8 PEM private key, when tokens are checked with public keys (RS256/ES256).
        #[arg(long, value_name = "FILE")]
        private_key: Option<PathBuf>,
    },
}

fn parse_role(raw: &str) -> Result<Role, String> {
    Role::parse(raw).ok_or_else(|| {
        format!("`{raw}` is not a role: use operator, auditor, auditor_pii or admin")
    })
}

/// Exit codes: 0 ok, 1 failed, 2 bad usage or configuration.
const FAILED: u8 = 1;
pub(crate) const BAD_USAGE: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = wiring::set_actor(cli.actor.as_deref()) {
        eprintln!("kihon4: {e}");
        return ExitCode::from(BAD_USAGE);
    }
    // The simulator stands in for J-LIS: it needs none of kihon4's configuration.
    if let Command::Sim {
        listen,
        data_dir,
        api_key,
        sim_routes_public,
        flavor,
    } = cli.command
    {
        let settings = kihon4_sim::SimSettings {
            data_dir,
            api_key,
            sim_routes_public,
        };
        let flavor = flavor.map(|f| match f.as_str() {
            "pocketsign" => kihon4_sim::Flavor::PocketSign,
            _ => kihon4_sim::Flavor::Kihon4,
        });
        return wiring::block_on(commands::sim::run(settings, listen, flavor));
    }
    // A witness is the auditor's, with its own key and state.
    if let Command::Witness { command } = &cli.command {
        return commands::witness::run(command);
    }
    // The demo needs no configuration at all.
    if let Command::Demo {
        data_dir,
        serve,
        listen,
    } = cli.command
    {
        // The demo speaks for itself: only warnings go to the log.
        return wiring::block_on_logging(demo::demo(data_dir, listen, serve), "warn");
    }
    // Verification needs nothing of kihon4's: no configuration, no database.
    if let Command::Audit {
        command:
            AuditCommand::Verify {
                export,
                manifest,
                key,
                personal_data,
                checkpoints,
                expect_key_id,
            },
    } = &cli.command
    {
        return commands::audit::verify(
            export,
            manifest,
            key,
            personal_data.as_deref(),
            checkpoints,
            expect_key_id.as_deref(),
        );
    }
    if let Command::Audit {
        command:
            AuditCommand::VerifyLog {
                export,
                log_key,
                checkpoints,
                witnesses,
                quorum,
            },
    } = &cli.command
    {
        return commands::audit::verify_log(export, log_key, checkpoints, witnesses, *quorum);
    }
    if let Command::Audit {
        command:
            AuditCommand::VerifyCustomer {
                pages,
                log_key,
                witnesses,
                quorum,
            },
    } = &cli.command
    {
        return commands::audit::verify_customer(pages, log_key, witnesses, *quorum);
    }
    if let Command::Audit {
        command:
            AuditCommand::VerifyConsistency {
                log_key,
                old,
                new,
                proof,
            },
    } = &cli.command
    {
        return commands::audit::verify_consistency(log_key, old, new, proof);
    }
    // The audit key and export need the database and the key, not the
    // token settings.
    if let Command::Audit { command } = &cli.command
        && matches!(
            command,
            AuditCommand::PublicKey
                | AuditCommand::InitKey { .. }
                | AuditCommand::Export { .. }
                | AuditCommand::LogKey
                | AuditCommand::LogKeys
                | AuditCommand::RotateKey { .. }
                | AuditCommand::Seal
        )
    {
        let config = match Config::load_audit(cli.config.as_deref()) {
            Ok(config) => config,
            Err(errors) => {
                eprintln!("kihon4: {errors}");
                return ExitCode::from(BAD_USAGE);
            }
        };
        return audit_without_tokens(config, command);
    }
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("kihon4: {errors}");
            return ExitCode::from(BAD_USAGE);
        }
    };
    match cli.command {
        Command::Token {
            command:
                TokenCommand::Issue {
                    roles,
                    ttl,
                    sub,
                    private_key,
                },
        } => commands::token::issue(&config, &roles, ttl, &sub, private_key.as_deref()),
        Command::Sim { .. } | Command::Demo { .. } | Command::Witness { .. } => {
            unreachable!("handled before the configuration is read")
        }
        Command::Migrate => wiring::block_on(commands::migrate::migrate(config)),
        Command::Audit {
            command:
                AuditCommand::PublicKey
                | AuditCommand::InitKey { .. }
                | AuditCommand::Export { .. }
                | AuditCommand::LogKey
                | AuditCommand::LogKeys
                | AuditCommand::RotateKey { .. }
                | AuditCommand::Seal,
        } => unreachable!("handled before the whole configuration is read"),
        Command::Audit {
            command: AuditCommand::Erase { customer, reason },
        } => {
            let reason = match kihon4_core::domain::FreeText::parse(&reason) {
                Ok(reason) => reason,
                Err(e) => {
                    eprintln!("kihon4: --reason {e}");
                    return ExitCode::from(BAD_USAGE);
                }
            };
            wiring::block_on(commands::audit::erase(config, customer, reason))
        }
        Command::Audit {
            command:
                AuditCommand::Verify { .. }
                | AuditCommand::VerifyLog { .. }
                | AuditCommand::VerifyCustomer { .. }
                | AuditCommand::VerifyConsistency { .. },
        } => unreachable!("handled above"),
        Command::ConsentRequests {
            command: ConsentRequestsCommand::Send { limit, .. },
        } => wiring::block_on(commands::consent_requests::send(config, limit)),
        Command::Customers {
            command:
                CustomersCommand::Import {
                    file,
                    encoding,
                    rejected,
                },
        } => {
            let encoding =
                kihon4_core::import::Encoding::parse(&encoding).expect("clap checked it");
            wiring::block_on(commands::import::customers(
                config, file, encoding, rejected,
            ))
        }
        Command::Changes {
            command:
                ChangesCommand::Export {
                    date,
                    dir,
                    encoding,
                },
        } => {
            let encoding = encoding.map(|e| e.parse().expect("clap checked it"));
            wiring::block_on(commands::changes::export(config, date, dir, encoding))
        }
        Command::Sync {
            command: SyncCommand::RunOnce { scope, customer },
        } => {
            let scope = kihon4_core::sync::Scope::parse(&scope).expect("clap checked it");
            wiring::block_on(commands::sync::run_once(config, scope, customer))
        }
        Command::Serve => wiring::block_on(commands::serve::serve(
            config,
            commands::serve::Roles {
                api: true,
                worker: true,
            },
        )),
        Command::Api => wiring::block_on(commands::serve::serve(
            config,
            commands::serve::Roles {
                api: true,
                worker: false,
            },
        )),
        Command::Worker => wiring::block_on(commands::serve::serve(
            config,
            commands::serve::Roles {
                api: false,
                worker: true,
            },
        )),
    }
}

/// `kihon4 audit public-key | init-key | export`.
fn audit_without_tokens(
    config: kihon4_core::config::AuditConfig,
    command: &AuditCommand,
) -> ExitCode {
    match command {
        AuditCommand::PublicKey => match commands::audit::public_key(&config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("kihon4: {e}");
                failed()
            }
        },
        AuditCommand::InitKey { out } => match commands::audit::init_key(&config, out.as_deref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("kihon4: {e}");
                failed()
            }
        },
        AuditCommand::Export {
            from,
            to,
            format,
            out,
            personal_data,
        } => {
            let format = kihon4_core::audit_export::Format::parse(format).expect("clap checked it");
            wiring::block_on(commands::audit::export(
                config,
                *from,
                *to,
                format,
                out.clone(),
                personal_data.clone(),
            ))
        }
        AuditCommand::LogKey => wiring::block_on(commands::audit::log_key(config)),
        AuditCommand::Seal => wiring::block_on(commands::audit::seal(config)),
        AuditCommand::LogKeys => wiring::block_on(commands::audit::log_keys(config)),
        AuditCommand::RotateKey { new_key } => {
            wiring::block_on(commands::audit::rotate_key(config, new_key.clone()))
        }
        AuditCommand::Erase { .. }
        | AuditCommand::Verify { .. }
        | AuditCommand::VerifyLog { .. }
        | AuditCommand::VerifyCustomer { .. }
        | AuditCommand::VerifyConsistency { .. } => {
            unreachable!("read with the whole configuration")
        }
    }
}

pub(crate) fn failed() -> ExitCode {
    ExitCode::from(FAILED)
}

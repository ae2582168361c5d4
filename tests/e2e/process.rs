//! Running `kihon4` as a child process.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use kihon4_core::auth::{Role, issue_token};
use kihon4_core::config::{JwtAlgorithm, JwtKeys, JwtSettings};
use secrecy::SecretString;

pub const SECRET: &str = "e2e-secret-e2e-secret-e2e-secret-e2e-0001";

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_kihon4")
}

/// A command for the binary with no `KIHON4_*` variables but those given.
/// With a database configured (not the embedded default), the audit signing
/// key is made first if there is none, as an operator's `kihon4 audit
/// init-key` would: kihon4 itself no longer makes it silently.
pub fn kihon4(dir: &Path, envs: &[(&str, String)]) -> Command {
    if envs.iter().any(|(k, _)| *k == "KIHON4_DATABASE_URL") {
        let key = envs
            .iter()
            .find(|(k, _)| *k == "KIHON4_AUDIT_SIGNING_KEY")
            .map(|(_, v)| dir.join(v))
            .unwrap_or_else(|| {
                let data = envs
                    .iter()
                    .find(|(k, _)| *k == "KIHON4_DATA_DIR")
                    .map(|(_, v)| dir.join(v))
                    .unwrap_or_else(|| dir.join("data"));
                data.join("audit-signing-key.pem")
            });
        // A key in a token (a PKCS#11 URI) is the test's to make.
        let in_token = envs
            .iter()
            .any(|(k, v)| *k == "KIHON4_AUDIT_SIGNING_KEY" && v.starts_with("pkcs11:"));
        if !key.exists() && !in_token {
            kihon4_core::audit_export::SigningKey::create(&key).expect("an audit signing key");
        }
    }
    kihon4_without_key(dir, envs)
}

/// As [`kihon4`], with no audit signing key made beforehand.
pub fn kihon4_without_key(dir: &Path, envs: &[(&str, String)]) -> Command {
    let mut cmd = Command::new(binary());
    for (name, _) in std::env::vars() {
        if name.starts_with("KIHON4_") {
            cmd.env_remove(name);
        }
    }
    cmd.current_dir(dir)
        .env("KIHON4_DATA_DIR", dir.join("data"));
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn token(roles: &[Role]) -> String {
    let settings = JwtSettings {
        algorithm: JwtAlgorithm::Hs256,
        keys: JwtKeys::Secret(SecretString::from(SECRET.to_owned())),
        issuer: None,
        audience: None,
        max_token_lifetime: kihon4_core::config::DEFAULT_MAX_TOKEN_LIFETIME,
    };
    issue_token(&settings, None, "e2e", roles, Duration::from_secs(600)).unwrap()
}

/// A running `kihon4` process whose stderr (its log) goes to a file.
pub struct Running {
    pub child: Child,
    pub base: String,
    pub log: PathBuf,
}

impl Running {
    /// Starts `kihon4 <role>` listening on a free port; waits for `/healthz`.
    pub async fn start(dir: &Path, role: &str, envs: &[(&str, String)]) -> Self {
        Self::start_at(dir, role, envs, free_port()).await
    }

    /// As [`start`](Self::start), on `port` (for a process that must know
    /// its own address beforehand, as in `KIHON4_PUBLIC_BASE_URL`).
    pub async fn start_at(dir: &Path, role: &str, envs: &[(&str, String)], port: u16) -> Self {
        let log = dir.join(format!("{role}-{port}.log"));
        let mut envs = envs.to_vec();
        envs.push(("KIHON4_LISTEN", format!("127.0.0.1:{port}")));
        let child = kihon4(dir, &envs)
            .arg(role)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("kihon4 starts");
        let running = Running {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
        };
        if role != "worker" {
            running.wait_healthy().await;
        }
        running
    }

    async fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let res = reqwest::get(format!("{}/healthz", self.base)).await;
            if res.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("kihon4 did not become healthy:\n{}", self.log_text());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits for the process to end by itself.
    pub async fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("kihon4 did not stop within {limit:?}:\n{}", self.log_text());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The one number a query answers (a count, usually).
pub async fn scalar(db: &sea_orm::DatabaseConnection, sql: &str) -> i64 {
    use sea_orm::{ConnectionTrait, Statement};
    db.query_one_raw(Statement::from_string(
        db.get_database_backend(),
        sql.to_owned(),
    ))
    .await
    .unwrap()
    .expect("a row")
    .try_get_by_index(0)
    .unwrap()
}

//! A real webhook receiver for tests: `test-support/webhook_receiver.py` as a
//! child process, in the virtual environment `infra/dev/smtp-sink-env.sh`
//! makes. It checks every delivery's signature with the official
//! `standardwebhooks` library, not kihon4's own code, answers as its mode
//! says (up, down, flaky), and keeps what it accepted in `received.jsonl`.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::smtp_sink::{free_port, python};

/// How long the receiver may take to say `ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The receiver's script, beside this crate's manifest.
fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("webhook_receiver.py")
}

/// One delivery the receiver verified and answered 2xx.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedEvent {
    /// The `webhook-id` header.
    pub webhook_id: String,
    /// The `webhook-timestamp` header, Unix seconds.
    pub webhook_timestamp: i64,
    /// The body's `type`.
    pub event_type: String,
    /// The body's `timestamp`.
    pub timestamp: String,
    /// `data.cursor`.
    pub cursor: String,
    /// `data.customer_id`.
    pub customer_id: String,
    /// `data.customer_seq`.
    pub customer_seq: i64,
    /// `data.event_id`.
    pub event_id: String,
    /// When it arrived, RFC 3339 in UTC.
    pub received_at: String,
    /// Which of the receiver's secrets verified it (their order at that time).
    pub secret_index: usize,
}

impl ReceivedEvent {
    /// Reads one record of `received.jsonl`; a field the body lacked is
    /// empty (or 0).
    fn from_json(v: &Value) -> Self {
        let text = |key: &str| match &v[key] {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        };
        Self {
            webhook_id: text("webhook_id"),
            webhook_timestamp: v["webhook_timestamp"].as_i64().unwrap_or_default(),
            event_type: text("type"),
            timestamp: text("timestamp"),
            cursor: text("cursor"),
            customer_id: text("customer_id"),
            customer_seq: v["customer_seq"].as_i64().unwrap_or_default(),
            event_id: text("event_id"),
            received_at: text("received_at"),
            secret_index: v["secret_index"].as_u64().unwrap_or_default() as usize,
        }
    }
}

/// What the receiver has seen.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Received {
    /// Every verified delivery answered 2xx, in arrival order, across stops
    /// and resumes.
    pub events: Vec<ReceivedEvent>,
    /// Requests no secret verified (answered 401), since the last start.
    pub rejected: u64,
    /// Verified requests answered otherwise than 2xx (down, flaky), since
    /// the last start.
    pub failed: u64,
}

/// The receiver, on a port of its own, killed when dropped.
pub struct WebhookReceiver {
    child: Option<Child>,
    /// The port it listens on, the same after [`resume`](Self::resume).
    pub port: u16,
    /// The folder of `received.jsonl` and `receiver.stderr`.
    pub dir: PathBuf,
    /// The secrets it verifies with: those it started with, or the last
    /// ones [`set`](Self::set) gave.
    secrets: Mutex<Vec<String>>,
    http: reqwest::Client,
}

impl WebhookReceiver {
    /// Starts on a free port in mode `up`, verifying with `secrets` (tried in
    /// order) and keeping what it accepts in `dir/received.jsonl`.
    pub fn start(dir: &Path, secrets: &[&str]) -> Self {
        std::fs::create_dir_all(dir).expect("the receiver's folder can be made");
        let mut receiver = Self {
            child: None,
            port: free_port(),
            dir: dir.to_path_buf(),
            secrets: Mutex::new(secrets.iter().map(|s| (*s).to_owned()).collect()),
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("an HTTP client"),
        };
        receiver.resume();
        receiver
    }

    /// Starts again on the same port after [`stop`](Self::stop), with the
    /// same file (so earlier records are still there) and secrets, in mode
    /// `up` with the rejected and failed counts at 0.
    pub fn resume(&mut self) {
        if self.child.is_some() {
            return;
        }
        let stderr = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.stderr_path())
            .expect("the receiver's stderr file opens");
        let mut cmd = Command::new(python());
        cmd.arg(script())
            .args(["--port", &self.port.to_string(), "--quiet", "--out"])
            .arg(self.out())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        for secret in self.secrets.lock().unwrap().iter() {
            cmd.args(["--secret", secret]);
        }
        let mut child = cmd.spawn().expect("the webhook receiver starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        match rx.recv_timeout(READY_TIMEOUT) {
            Ok(line) if line.starts_with("ready") => self.child = Some(child),
            said => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the webhook receiver did not start ({said:?}); see {}",
                    self.stderr_path().display()
                );
            }
        }
    }

    /// Stops it: the port refuses connections (a real outage) until
    /// [`resume`](Self::resume).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }

    /// Whether it is running (not [`stop`](Self::stop)ped).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The URL to register as an endpoint: `http://127.0.0.1:PORT/hook`.
    pub fn url(&self) -> String {
        format!("{}/hook", self.base())
    }

    /// The JSON lines file of what it accepted.
    pub fn out(&self) -> PathBuf {
        self.dir.join("received.jsonl")
    }

    fn stderr_path(&self) -> PathBuf {
        self.dir.join("receiver.stderr")
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Changes its state (`POST /_control`): any of `{"mode": "up" | "down" |
    /// "flaky", "fail_rate": 0.3, "retry_after": 2, "seed": 1, "secrets":
    /// [...]}`; new secrets are kept for [`resume`](Self::resume) too.
    /// Returns the state it answers (secrets counted, not shown); panics if
    /// it refuses the change.
    pub async fn set(&self, control: Value) -> Value {
        let response = self
            .http
            .post(format!("{}/_control", self.base()))
            .json(&control)
            .send()
            .await
            .expect("the webhook receiver answers /_control");
        let status = response.status();
        let state: Value = response.json().await.expect("/_control answers JSON");
        assert!(status.is_success(), "/_control refused the change: {state}");
        if let Some(secrets) = control["secrets"].as_array() {
            *self.secrets.lock().unwrap() = secrets
                .iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect();
        }
        state
    }

    /// What it has seen so far; while stopped, the records of its file
    /// (and no counts).
    pub async fn received(&self) -> Received {
        if self.child.is_none() {
            return Received {
                events: read_records(&self.out()),
                ..Received::default()
            };
        }
        let body: Value = self
            .http
            .get(format!("{}/_received", self.base()))
            .send()
            .await
            .expect("the webhook receiver answers /_received")
            .json()
            .await
            .expect("/_received answers JSON");
        Received {
            events: body["received"]
                .as_array()
                .map(|a| a.iter().map(ReceivedEvent::from_json).collect())
                .unwrap_or_default(),
            rejected: body["rejected"].as_u64().unwrap_or_default(),
            failed: body["failed"].as_u64().unwrap_or_default(),
        }
    }

    /// Waits until at least `n` events arrived, or `limit` passed; returns
    /// what it has then.
    pub async fn wait_for(&self, n: usize, limit: Duration) -> Received {
        let deadline = Instant::now() + limit;
        loop {
            let got = self.received().await;
            if got.events.len() >= n || Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The records of a `received.jsonl`, none if it is missing.
fn read_records(path: &Path) -> Vec<ReceivedEvent> {
    let Ok(file) = File::open(path) else {
        return Vec::new();
    };
    BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| serde_json::from_str::<Value>(&l).ok())
        .map(|v| ReceivedEvent::from_json(&v))
        .collect()
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

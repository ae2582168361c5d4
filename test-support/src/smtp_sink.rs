//! A real SMTP server for tests: `test-support/smtp_sink.py` (aiosmtpd) in
//! a virtual environment `infra/dev/smtp-sink-env.sh` makes, as a child
//! process. What it accepts can be read back as parsed by Python's email
//! package.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The sink's script, beside this crate's manifest.
fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("smtp_sink.py")
}

/// The workspace root, this crate's parent directory.
fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("test-support sits in the workspace root")
}

/// A Python with aiosmtpd, standardwebhooks and httpx (for this sink and the
/// [webhook receiver](crate::webhook_receiver)): `KIHON4_TEST_SMTP_PYTHON`,
/// or the one `infra/dev/smtp-sink-env.sh` makes.
pub fn python() -> &'static str {
    static PYTHON: OnceLock<String> = OnceLock::new();
    PYTHON.get_or_init(|| {
        if let Ok(p) = std::env::var("KIHON4_TEST_SMTP_PYTHON") {
            return p;
        }
        let out = Command::new(workspace().join("infra/dev/smtp-sink-env.sh"))
            .output()
            .expect("infra/dev/smtp-sink-env.sh runs");
        assert!(
            out.status.success(),
            "cannot make the SMTP sink's environment: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    })
}

pub struct SmtpSink {
    child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
    reject: Option<String>,
}

/// A port free on 127.0.0.1 just now.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl SmtpSink {
    /// Starts on a free port, keeping messages in `dir`; recipients containing
    /// `reject` are refused with 550.
    pub fn start(dir: &Path, reject: Option<&str>) -> Self {
        let mut sink = Self {
            child: None,
            port: free_port(),
            dir: dir.to_path_buf(),
            reject: reject.map(str::to_owned),
        };
        sink.resume();
        sink
    }

    /// Starts again on the same port after [`stop`](Self::stop).
    pub fn resume(&mut self) {
        let mut cmd = Command::new(python());
        cmd.arg(script())
            .args(["--port", &self.port.to_string(), "--dir"])
            .arg(&self.dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some(r) = &self.reject {
            cmd.args(["--reject", r]);
        }
        let mut child = cmd.spawn().expect("the SMTP sink starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("ready"), "the SMTP sink said {line:?}");
        self.child = Some(child);
    }

    /// Stops it: the port refuses connections until [`resume`](Self::resume).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every message accepted so far, as Python parsed it.
    pub fn messages(&self) -> Vec<Value> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map(|d| {
                d.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| {
                        p.extension().is_some_and(|x| x == "json")
                            && !p.file_name().unwrap().to_string_lossy().starts_with('.')
                    })
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
            .iter()
            .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
            .collect()
    }

    /// Waits until at least `n` messages arrived.
    pub async fn wait_for(&self, n: usize, limit: Duration) -> Vec<Value> {
        let deadline = Instant::now() + limit;
        loop {
            let got = self.messages();
            if got.len() >= n || Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

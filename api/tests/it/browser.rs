//! The customer's pages in a real browser: headless Chromium (Debian's
//! package, installed by infra/dev/test when missing) driven through
//! ChromeDriver's WebDriver API. It opens the emailed link in Japanese and
//! in English, checks the text and that the console shows no error, clicks
//! the button and follows the redirect to the provider. A screenshot of each
//! page is kept in `target/test-artefacts/browser/`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp};
use crate::sim::spawn_sim;

/// ChromeDriver and the Chromium it drives.
fn browser_paths() -> (PathBuf, PathBuf) {
    let driver = std::env::var_os("KIHON4_TEST_CHROMEDRIVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromedriver"));
    let chromium = std::env::var_os("KIHON4_TEST_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        driver.exists() && chromium.exists(),
        "the browser test needs Chromium and ChromeDriver ({} and {}); infra/dev/test installs Debian's chromium and chromium-driver",
        chromium.display(),
        driver.display()
    );
    (driver, chromium)
}

fn artefacts() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-artefacts/browser");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

struct Driver {
    child: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    async fn start() -> Self {
        let (driver, chromium) = browser_paths();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while http.get(format!("{base}/status")).send().await.is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not answer");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let args = [
            "--headless=new".to_owned(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--window-size=390,844".into(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let created: Value = http
            .post(format!("{base}/session"))
            .json(&json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {"binary": chromium, "args": args},
                "goog:loggingPrefs": {"browser": "ALL"},
            }}}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {created}"))
            .to_owned();
        Self {
            child,
            base,
            session,
            http,
            _profile: profile,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut req = self.http.request(method, url);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let answer: Value = req.send().await.unwrap().json().await.unwrap();
        answer["value"].clone()
    }

    async fn open(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    async fn url(&self) -> String {
        self.call(reqwest::Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn text(&self) -> String {
        let body = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": "body"})),
            )
            .await;
        let id = body
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap()
            .to_owned();
        self.call(reqwest::Method::GET, &format!("/element/{id}/text"), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    async fn click(&self, selector: &str) {
        let found = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": selector})),
            )
            .await;
        let id = found
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no {selector}: {found}"))
            .to_owned();
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            Some(json!({})),
        )
        .await;
    }

    /// What the page wrote to the console that is an error (SEVERE).
    async fn console_errors(&self) -> Vec<String> {
        let entries = self
            .call(
                reqwest::Method::POST,
                "/se/log",
                Some(json!({"type": "browser"})),
            )
            .await;
        entries
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|e| e["level"] == "SEVERE")
                    .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    async fn screenshot(&self, name: &str) {
        let png = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let bytes = B64.decode(png.as_str().unwrap()).unwrap();
        std::fs::write(artefacts().join(format!("{name}.png")), bytes).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_emailed_link_works_in_a_real_browser() {
    let sim = spawn_sim().await;
    let app = TestApp::spawn_mynaportal(Backend::Sqlite, sim.provider(), "kihon4-sim").await;
    let res = app
        .post(
            "/v1/customers",
            &app.operator(),
            &json!({"external_ref": "WEB-1", "email": "web1@example.jp", "locale": "ja"}),
        )
        .await;
    let id = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let res = app
        .post(
            &format!("/v1/customers/{id}/consent-requests"),
            &app.operator(),
            &json!({}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let link = crate::mynaportal::emailed_link(&app).await;

    let browser = Driver::start().await;
    browser.open(&format!("{link}?lang=en")).await;
    let english = browser.text().await;
    assert!(english.contains("Consent on Mynaportal"), "{english}");
    assert!(english.contains("10 years"), "{english}");
    browser.screenshot("landing-en").await;
    assert_eq!(browser.console_errors().await, Vec::<String>::new());

    // The switch to Japanese, as a customer would use it.
    browser.click("nav.lang a[hreflang=ja]").await;
    let japanese = browser.text().await;
    assert!(japanese.contains("マイナポータルで同意する"), "{japanese}");
    assert!(japanese.contains("基本4情報"), "{japanese}");
    browser.screenshot("landing-ja").await;
    assert_eq!(browser.console_errors().await, Vec::<String>::new());

    // The button: through kihon4's redirect to the provider's consent page.
    browser.click("form button[type=submit]").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !browser.url().await.starts_with(&sim.base) {
        assert!(
            Instant::now() < deadline,
            "still at {}",
            browser.url().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    browser.screenshot("provider").await;
    // Back on the link: used.
    browser.open(&link).await;
    let used = browser.text().await;
    assert!(used.contains("すでに使われています"), "{used}");
    browser.screenshot("used").await;
}

//! A simulator on a free port with its own data directory, and what the
//! tests share: requests with and without the institution's key, OpenSSL,
//! residents, problem answers.

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

use actix_web::web;
use kihon4_sim::{SimSettings, Simulator};
use serde_json::{Value, json};

pub struct TestSim {
    pub base: String,
    pub http: reqwest::Client,
    pub handle: actix_web::dev::ServerHandle,
}

pub async fn spawn(dir: &Path, api_key: Option<&str>) -> TestSim {
    spawn_flavor(dir, api_key, None).await
}

/// A simulator serving only `flavor`'s provider API (`kihon4 sim --flavor`).
pub async fn spawn_flavor(
    dir: &Path,
    api_key: Option<&str>,
    flavor: Option<kihon4_sim::Flavor>,
) -> TestSim {
    let sim = Simulator::open(SimSettings {
        data_dir: dir.to_path_buf(),
        api_key: api_key.map(str::to_owned),
        sim_routes_public: false,
    })
    .await
    .expect("simulator opens");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    if let Some(flavor) = flavor {
        sim.serve_only(flavor);
    }
    let sim = web::Data::new(sim);
    kihon4_sim::start_callbacks(&sim);
    let server = kihon4_sim::server(sim, listener).unwrap();
    let handle = server.handle();
    tokio::spawn(server);
    TestSim {
        base: format!("http://127.0.0.1:{port}"),
        http: reqwest::Client::new(),
        handle,
    }
}

impl TestSim {
    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
    }

    pub async fn ca_pem(&self, dir: &Path) -> std::path::PathBuf {
        let der = self.get("/v1/ca").await.bytes().await.unwrap();
        std::fs::write(dir.join("ca.der"), &der).unwrap();
        openssl(
            dir,
            &["x509", "-inform", "DER", "-in", "ca.der", "-out", "ca.pem"],
        );
        dir.join("ca.pem")
    }
}

pub fn openssl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn taro() -> Value {
    json!({"basic4": {
        "name": "山田 太郎", "address": "東京都千代田区霞が関1-1-1",
        "birth_date": "1980-02-17", "gender": "1"
    }})
}

pub async fn problem(res: reqwest::Response, status: u16, slug: &str) -> Value {
    assert_eq!(res.status().as_u16(), status);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body["type"],
        format!("https://kihon4.dev/sim/problems/{slug}")
    );
    body
}

pub fn osaka() -> Value {
    json!({"basic4": {
        "name": "鈴木 花子", "address": "大阪府大阪市北区梅田1-1",
        "birth_date": "1990-07-07", "gender": "2"
    }})
}

pub async fn keyed(
    sim: &TestSim,
    method: reqwest::Method,
    path: &str,
    body: Option<&Value>,
) -> reqwest::Response {
    let mut req = sim
        .http
        .request(method, format!("{}{path}", sim.base))
        .bearer_auth("institution-key");
    if let Some(b) = body {
        req = req.json(b);
    }
    req.send().await.unwrap()
}

pub fn ocsp_check(dir: &Path, sim: &TestSim, cert: &str) -> String {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args([
            "ocsp", "-issuer", "ca.pem", "-cert", cert, "-CAfile", "ca.pem", "-url",
        ])
        .arg(format!("{}/v1/ocsp", sim.base))
        .args(["-header", "Authorization=Bearer institution-key"])
        .output()
        .expect("openssl runs");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

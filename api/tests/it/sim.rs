//! A simulator per test, in the test's runtime: the provider upstream, the
//! residents whose keys sign, and OpenSSL to sign as an outside party would.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use kihon4_core::config::Revocation;
use kihon4_core::consent::ConsentVerifier;
use kihon4_core::jpki::revocation::RevocationChecker;
use kihon4_core::jpki::verify::TrustAnchors;
use kihon4_core::provider::{HttpProvider, Provider, ProviderSettings};
use kihon4_sim::faults::Faults;
use kihon4_sim::{SimSettings, Simulator};
use serde_json::{Value, json};

pub fn shared_fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures")
}

pub fn openssl(dir: &Path, args: &[&str]) {
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
}

pub struct TestSim {
    pub base: String,
    pub sim: web::Data<Simulator>,
    pub dir: tempfile::TempDir,
    http: reqwest::Client,
}

pub async fn spawn_sim() -> TestSim {
    let dir = tempfile::tempdir().expect("temp dir");
    let sim = Simulator::open(SimSettings {
        data_dir: dir.path().to_path_buf(),
        api_key: None,
        sim_routes_public: false,
    })
    .await
    .expect("simulator opens");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().unwrap().port();
    let sim = web::Data::new(sim);
    let server = kihon4_sim::server(sim.clone(), listener).expect("server");
    tokio::spawn(server);
    // Mynaportal decisions are called back, as the real provider does.
    kihon4_sim::start_callbacks(&sim);
    TestSim {
        base: format!("http://127.0.0.1:{port}"),
        sim,
        dir,
        http: reqwest::Client::new(),
    }
}

impl TestSim {
    /// The provider client as the API uses it: brief retries only.
    pub fn provider(&self) -> Arc<dyn Provider> {
        let mut settings = ProviderSettings::new(
            format!("{}/", self.base).parse().unwrap(),
            "test-api-key".to_owned().into(),
        );
        settings.timeout = Duration::from_secs(10);
        settings.max_attempts = 2;
        settings.max_wait = Duration::from_secs(1);
        Arc::new(HttpProvider::new(settings).expect("a client"))
    }

    pub fn ca_pem(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The platform role, trusting this simulator's CA.
    pub fn platform(&self, revocation: Revocation) -> ConsentVerifier {
        self.platform_trusting(&[self.ca_pem()], revocation)
    }

    pub fn platform_trusting(
        &self,
        anchors: &[PathBuf],
        revocation: Revocation,
    ) -> ConsentVerifier {
        ConsentVerifier::Platform {
            anchors: Arc::new(TrustAnchors::load(anchors).expect("anchors load")),
            revocation: RevocationChecker::new(self.provider(), revocation),
        }
    }

    pub fn service_provider(&self) -> ConsentVerifier {
        ConsentVerifier::ServiceProvider {
            provider: self.provider(),
        }
    }

    async fn post(&self, path: &str, body: &Value) -> Value {
        let res = self
            .http
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .expect("the simulator answers");
        assert!(res.status().is_success(), "{path}: {}", res.status());
        res.json().await.unwrap_or(Value::Null)
    }

    /// A resident with a signing certificate, as the default customer's four items.
    pub async fn resident(&self) -> Signer {
        self.resident_with(json!({
            "name": "山田太郎",
            "address": "東京都千代田区千代田1-1",
            "birth_date": "1980-02-17",
            "gender": "1"
        }))
        .await
    }

    pub async fn resident_with(&self, basic4: Value) -> Signer {
        let made = self
            .post("/sim/persons", &json!({ "basic4": basic4 }))
            .await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("signer.pem"),
            made["certificate_pem"].as_str().unwrap(),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("signer.key"),
            made["private_key_pem"].as_str().unwrap(),
        )
        .unwrap();
        Signer {
            dir,
            person_id: made["person_id"].as_str().map(str::to_owned),
            serial: made["cert_serial"].as_str().unwrap().to_owned(),
        }
    }

    pub async fn life_event(&self, signer: &Signer, kind: &str) {
        let id = signer.person_id.as_deref().expect("a resident");
        self.post(
            &format!("/sim/persons/{id}/events"),
            &json!({ "kind": kind }),
        )
        .await;
    }

    /// A life event with its details (`basic4`, `reissue`).
    pub async fn life_event_with(&self, signer: &Signer, body: Value) {
        let id = signer.person_id.as_deref().expect("a resident");
        self.post(&format!("/sim/persons/{id}/events"), &body).await;
    }

    pub async fn publish_crl(&self) {
        self.post("/sim/crl/publish", &json!({})).await;
    }

    pub fn set_faults(&self, faults: Faults) {
        self.sim.set_faults(faults);
    }

    /// A certificate OpenSSL makes from the shared JPKI profile, issued by
    /// this simulator's CA key, with `edit` applied to the profile and
    /// `days` of validity (negative: already expired).
    pub fn fixture_signer(&self, days: i32, edit: impl Fn(String) -> String) -> Signer {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let config = std::fs::read_to_string(
            shared_fixtures().join("jpki-profile/openssl-signing-cert.cnf"),
        )
        .unwrap();
        // OpenSSL reads the config as Latin-1 unless told the values are UTF-8;
        // the profile's address flags are two short of its address.
        let config = edit(config)
            .replace(";UTF8:", ";FORMAT:UTF8,UTF8:")
            .replace("UTF8:0000000000000\n", "UTF8:000000000000000\n");
        std::fs::write(d.join("leaf.cnf"), config).unwrap();
        let ca = self.ca_pem();
        let ca_key = self.dir.path().join("ca-key.pem");
        openssl(
            d,
            &[
                "req",
                "-new",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "signer.key",
                "-out",
                "leaf.csr",
                "-config",
                "leaf.cnf",
            ],
        );
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "leaf.csr",
                "-CA",
                ca.to_str().unwrap(),
                "-CAkey",
                ca_key.to_str().unwrap(),
                "-set_serial",
                &format!("0x{:x}", rand::random::<u64>() | 1 << 62),
                "-out",
                "signer.pem",
                "-days",
                &days.to_string(),
                "-extfile",
                "leaf.cnf",
                "-extensions",
                "ext",
            ],
        );
        Signer {
            dir,
            person_id: None,
            serial: String::new(),
        }
    }
}

/// A certificate and its key, signing with OpenSSL.
pub struct Signer {
    dir: tempfile::TempDir,
    pub person_id: Option<String>,
    pub serial: String,
}

impl Signer {
    /// The folder with `signer.pem` and `signer.key`.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The certificate, DER.
    pub fn certificate_der(&self) -> Vec<u8> {
        let d = self.dir.path();
        openssl(
            d,
            &[
                "x509",
                "-in",
                "signer.pem",
                "-outform",
                "DER",
                "-out",
                "signer.der",
            ],
        );
        std::fs::read(d.join("signer.der")).unwrap()
    }

    /// A raw PKCS#1 v1.5 signature of `content`, as a card client makes it:
    /// `openssl dgst -<md> -sign` (`sha256` or `sha1`), or with `md` =
    /// `pkeyutl`, `openssl pkeyutl -sign` over a SHA-256 DigestInfo built
    /// here, as the card's JPKI application receives it.
    pub fn sign_raw(&self, content: &[u8], md: &str) -> Vec<u8> {
        use sha2::Digest as _;
        let d = self.dir.path();
        std::fs::write(d.join("content.txt"), content).unwrap();
        if md == "pkeyutl" {
            let mut digest_info = vec![
                0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x01, 0x05, 0x00, 0x04, 0x20,
            ];
            digest_info.extend_from_slice(&sha2::Sha256::digest(content));
            std::fs::write(d.join("digest-info.der"), digest_info).unwrap();
            openssl(
                d,
                &[
                    "pkeyutl",
                    "-sign",
                    "-inkey",
                    "signer.key",
                    "-pkeyopt",
                    "rsa_padding_mode:pkcs1",
                    "-in",
                    "digest-info.der",
                    "-out",
                    "raw.sig",
                ],
            );
        } else {
            let md = format!("-{md}");
            openssl(
                d,
                &[
                    "dgst",
                    &md,
                    "-sign",
                    "signer.key",
                    "-out",
                    "raw.sig",
                    "content.txt",
                ],
            );
        }
        std::fs::read(d.join("raw.sig")).unwrap()
    }

    /// `openssl cms -sign -binary -md sha256`, the content attached or not.
    pub fn sign(&self, content: &[u8], attached: bool) -> Vec<u8> {
        let d = self.dir.path();
        std::fs::write(d.join("content.txt"), content).unwrap();
        let mut args = vec![
            "cms",
            "-sign",
            "-binary",
            "-md",
            "sha256",
            "-in",
            "content.txt",
            "-signer",
            "signer.pem",
            "-inkey",
            "signer.key",
            "-outform",
            "DER",
            "-out",
            "signed.der",
        ];
        if attached {
            args.push("-nodetach");
        }
        openssl(d, &args);
        std::fs::read(d.join("signed.der")).unwrap()
    }
}

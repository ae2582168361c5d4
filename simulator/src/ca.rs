//! The simulator's signing CA: RSA-2048, sha256WithRSAEncryption, a
//! JPKI-like name, kept in the data folder so that a restart keeps it.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use der::{DecodePem, Encode, EncodePem};
use kihon4_core::jpki;
use rsa::RsaPrivateKey;
use rsa::pkcs1v15::{Signature, SigningKey};
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use sha2::Sha256;
use x509_cert::Certificate;
use x509_cert::builder::{Builder, CertificateBuilder, Profile};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::SubjectPublicKeyInfoOwned;
use x509_cert::time::Validity;

/// The CA's name: J-LIS's signing CA name with a last unit that says it is a simulator.
pub const CA_UNITS: [&str; 2] = ["JPKI for digital signature", "kihon4 simulator (not J-LIS)"];

pub struct Ca {
    pub signer: SigningKey<Sha256>,
    pub certificate: Certificate,
    pub certificate_der: Vec<u8>,
    pub key_id: Vec<u8>,
}

impl Ca {
    pub fn name(&self) -> &Name {
        &self.certificate.tbs_certificate.subject
    }

    /// Loads the CA from `dir`, or creates it there on first start.
    pub fn load_or_create(dir: &Path) -> anyhow::Result<Self> {
        let key_path = dir.join("ca-key.pem");
        let cert_path = dir.join("ca.pem");
        if key_path.exists() && cert_path.exists() {
            let key = RsaPrivateKey::read_pkcs8_pem_file(&key_path)
                .with_context(|| format!("reading {}", key_path.display()))?;
            let pem = std::fs::read_to_string(&cert_path)?;
            let certificate = Certificate::from_pem(pem.as_bytes())
                .with_context(|| format!("reading {}", cert_path.display()))?;
            return Self::from_parts(key, certificate);
        }
        let key = crate::keys::generate()?;
        let certificate = self_signed(&key)?;
        std::fs::create_dir_all(dir)?;
        let key_pem = key.to_pkcs8_pem(LineEnding::LF)?;
        kihon4_core::files::write_private_file(&key_path, key_pem.as_bytes())
            .with_context(|| format!("writing {}", key_path.display()))?;
        std::fs::write(&cert_path, certificate.to_pem(LineEnding::LF)?)?;
        Self::from_parts(key, certificate)
    }

    fn from_parts(key: RsaPrivateKey, certificate: Certificate) -> anyhow::Result<Self> {
        let key_id = jpki::subject_key_id(&certificate)?
            .context("the CA certificate has no subject key identifier")?;
        Ok(Self {
            signer: SigningKey::<Sha256>::new(key),
            certificate_der: certificate.to_der()?,
            certificate,
            key_id,
        })
    }
}

fn self_signed(key: &RsaPrivateKey) -> anyhow::Result<Certificate> {
    use const_oid::db::rfc4519::{COUNTRY_NAME, ORGANIZATION_NAME, ORGANIZATIONAL_UNIT_NAME};
    let name = jpki::directory_name(&[
        (COUNTRY_NAME, "JP"),
        (ORGANIZATION_NAME, "JPKI"),
        (ORGANIZATIONAL_UNIT_NAME, CA_UNITS[0]),
        (ORGANIZATIONAL_UNIT_NAME, CA_UNITS[1]),
    ])?;
    let signer = SigningKey::<Sha256>::new(key.clone());
    let spki = SubjectPublicKeyInfoOwned::from_key(key.to_public_key())?;
    let serial = SerialNumber::new(&rand::random::<[u8; 8]>().map(|b| b & 0x7f))?;
    let validity = Validity::from_now(Duration::from_secs(10 * 365 * 24 * 3600))?;
    let builder = CertificateBuilder::new(Profile::Root, serial, validity, name, spki, &signer)?;
    Ok(builder.build::<Signature>()?)
}

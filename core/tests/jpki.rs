//! The JPKI profile against bytes kihon4 did not make: certificates made by
//! OpenSSL from the shared profile config, and the real J-LIS CA certificates.
//! OpenSSL also checks the certificates kihon4 makes.

use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::{Duration, Utc};
use der::{Decode, DecodePem, Encode};
use kihon4_core::domain::{Basic4, CertSerial, RawBasic4};
use kihon4_core::jpki::{
    self, CertificateKind, CrlPartition, JpkiError, SigningCertificateSpec, certificate_kind, oid,
    parse_signing_certificate,
};
use rsa::pkcs8::DecodePrivateKey;
use x509_cert::Certificate;
use x509_cert::spki::SubjectPublicKeyInfoOwned;

fn shared() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures")
}

fn openssl(dir: &Path, args: &[&str]) -> String {
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

/// A test CA made by OpenSSL.
fn openssl_ca(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "30",
            "-subj",
            "/C=JP/O=JPKI/OU=JPKI for digital signature/OU=Test CA",
            "-addext",
            "subjectKeyIdentifier=hash",
            // CA:TRUE and keyCertSign, as J-LIS's CAs have: trust anchors need them.
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

/// A leaf made by OpenSSL from the shared profile config, with `edit` applied
/// to the config. `UTF8:` values are marked `FORMAT:UTF8`: without it OpenSSL
/// reads the config's UTF-8 as Latin-1 and encodes every byte again.
fn openssl_leaf(dir: &Path, edit: impl Fn(String) -> String) -> Vec<u8> {
    openssl_leaf_raw(dir, |c| edit(c).replace(";UTF8:", ";FORMAT:UTF8,UTF8:"))
}

fn openssl_leaf_raw(dir: &Path, edit: impl Fn(String) -> String) -> Vec<u8> {
    let config =
        std::fs::read_to_string(shared().join("jpki-profile/openssl-signing-cert.cnf")).unwrap();
    std::fs::write(dir.join("leaf.cnf"), edit(config)).unwrap();
    openssl(
        dir,
        &[
            "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", "leaf.key", "-out",
            "leaf.csr", "-config", "leaf.cnf",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "leaf.pem",
            "-days",
            "365",
            "-extfile",
            "leaf.cnf",
            "-extensions",
            "ext",
            "-outform",
            "DER",
        ],
    );
    std::fs::read(dir.join("leaf.pem")).unwrap()
}

#[test]
fn reads_a_certificate_openssl_made_from_the_profile() {
    let dir = tempfile::tempdir().unwrap();
    openssl_ca(dir.path());
    let der = openssl_leaf(dir.path(), |c| c);
    let cert = parse_signing_certificate(&der).expect("a signing certificate");
    let b = &cert.basic4;
    assert_eq!(b.name.as_str(), "山田 太郎");
    assert_eq!(b.name.flags().as_str(), "00000");
    assert_eq!(b.address.as_str(), "東京都千代田区霞が関1-1-1");
    // The config's address flags are 13 zeros for 15 characters: no substitute
    // character either way, so they are read as 15 zeros.
    assert_eq!(b.address.flags().as_str(), "0".repeat(15));
    assert_eq!(b.birth_date.to_iso(), "1980-02-17");
    assert_eq!(b.gender.code(), "1");
    assert_eq!(cert.issue_number, "20261125000000123450ABCDEFGHI");
    assert_eq!(cert.prefecture.as_deref(), Some("Tokyo-to"));
    assert_eq!(cert.city, None);
    let serial = openssl(
        dir.path(),
        &[
            "x509", "-inform", "DER", "-in", "leaf.pem", "-noout", "-serial",
        ],
    );
    let serial = serial.trim().strip_prefix("serial=").unwrap();
    assert_eq!(cert.serial, CertSerial::parse(serial).unwrap());
    assert!(cert.not_after > Utc::now());
}

#[test]
fn refuses_names_that_openssl_encoded_twice() {
    let dir = tempfile::tempdir().unwrap();
    openssl_ca(dir.path());
    // The shared config as it is: OpenSSL turns 山田 into Latin-1 mojibake with C1 controls.
    let der = openssl_leaf_raw(dir.path(), |c| c);
    assert_eq!(
        parse_signing_certificate(&der).unwrap_err(),
        JpkiError::Invalid {
            item: "the name",
            reason: "must not contain control, bidirectional or format characters (U+0094)".into()
        }
    );
}

#[test]
fn reads_by_oid_whatever_the_order() {
    let dir = tempfile::tempdir().unwrap();
    openssl_ca(dir.path());
    // Flags first, name last: the parser must not care.
    let der = openssl_leaf(dir.path(), |c| {
        c.replace(
            "otherName.1 = 1.2.392.200149.8.5.5.1;UTF8:山田 太郎",
            "otherName.7 = 1.2.392.200149.8.5.5.1;UTF8:山田 太郎",
        )
        .replace(
            "otherName.5 = 1.2.392.200149.8.5.5.2;UTF8:00000",
            "otherName.0 = 1.2.392.200149.8.5.5.2;UTF8:00100",
        )
    });
    let cert = parse_signing_certificate(&der).unwrap();
    assert_eq!(cert.basic4.name.as_str(), "山田 太郎");
    assert!(cert.basic4.name.flags().any());
}

#[test]
fn refuses_certificates_outside_the_profile() {
    let dir = tempfile::tempdir().unwrap();
    openssl_ca(dir.path());
    // (text in the config, its replacement, the refusal)
    let cases: Vec<(&str, &str, JpkiError)> = vec![
        (
            "1.2.392.200149.8.5.1.1.20",
            "1.2.392.200149.8.5.1.3.30",
            JpkiError::UserIdentificationCertificate,
        ),
        (
            "certificatePolicies = 1.2.392.200149.8.5.1.1.20\n",
            "",
            JpkiError::NotSigningCertificate,
        ),
        (
            "keyUsage = critical, digitalSignature, nonRepudiation",
            "keyUsage = digitalSignature, nonRepudiation",
            JpkiError::KeyUsage,
        ),
        (
            "keyUsage = critical, digitalSignature, nonRepudiation",
            "keyUsage = critical, digitalSignature",
            JpkiError::KeyUsage,
        ),
        (
            "otherName.3 = 1.2.392.200149.8.5.5.3;UTF8:1\n",
            "",
            JpkiError::Missing("the gender"),
        ),
        (
            "UTF8:319800217",
            "UTF8:419800217",
            JpkiError::Invalid {
                item: "the date of birth",
                reason: "the era digit does not match the date".into(),
            },
        ),
        (
            "UTF8:319800217",
            "UTF8:319800230",
            JpkiError::Invalid {
                item: "the date of birth",
                reason: "must be EYYYYMMDD with an era digit 0-5".into(),
            },
        ),
        (
            "UTF8:00000",
            "UTF8:0010",
            JpkiError::Invalid {
                item: "the name",
                reason: "must have one flag per character of the text it marks".into(),
            },
        ),
        (
            "UTF8:1\n",
            "UTF8:3\n",
            JpkiError::Invalid {
                item: "the gender",
                reason: "must be a JIS X 0303 code: \"1\", \"2\" or \"9\"".into(),
            },
        ),
        (
            "otherName.6",
            "otherName.6 = 1.2.392.200149.8.5.5.3;UTF8:2\notherName.8",
            JpkiError::Invalid {
                item: "a subjectAltName otherName",
                reason: "1.2.392.200149.8.5.5.3 appears twice".into(),
            },
        ),
    ];
    for (from, to, expected) in cases {
        let der = openssl_leaf(dir.path(), |c| c.replace(from, to));
        assert_eq!(parse_signing_certificate(&der).unwrap_err(), expected);
    }
    assert!(matches!(
        parse_signing_certificate(b"\x30\x03\x02\x01\x01"),
        Err(JpkiError::Malformed(_))
    ));
    assert!(matches!(
        parse_signing_certificate(&[]),
        Err(JpkiError::Malformed(_))
    ));
}

#[test]
fn loads_the_real_jlis_ca_certificates() {
    let anchors = shared().join("jpki-trust-anchors");
    let expected_ski = [
        (
            "sign_ca_2015.pem",
            "0d034cbb34d0714f45e45a1cafd8fd143fab54a7",
            "JPKI for digital signature",
        ),
        (
            "sign_ca_2023.pem",
            "d21ea55895617e93adbf966b941ab4edf653f08f",
            "JPKI for digital signature",
        ),
        (
            "auth_ca_2015.pem",
            "9567951b5ca70d84a0fff1d85a87f1aab1340385",
            "JPKI for user authentication",
        ),
        (
            "auth_ca_2023.pem",
            "1ac100f596a3bc8c4b3df195e32699249e9e308a",
            "JPKI for user authentication",
        ),
    ];
    for (file, ski, unit) in expected_ski {
        let pem = std::fs::read_to_string(anchors.join(file)).unwrap();
        let cert = Certificate::from_pem(pem.as_bytes()).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(
            hex::encode(jpki::subject_key_id(&cert).unwrap().unwrap()),
            ski,
            "{file}"
        );
        let subject = cert.tbs_certificate.subject.to_string();
        assert!(
            subject.contains(unit) && subject.contains("O=JPKI"),
            "{file}: {subject}"
        );
        // Self-issued: subject and issuer are the same name across generations.
        assert_eq!(cert.tbs_certificate.subject, cert.tbs_certificate.issuer);
        assert_eq!(certificate_kind(&cert).unwrap(), CertificateKind::Other);
        assert!(matches!(
            parse_signing_certificate(&cert.to_der().unwrap()),
            Err(JpkiError::NotSigningCertificate)
        ));
    }
}

#[test]
fn certificates_kihon4_issues_satisfy_openssl_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    openssl_ca(dir.path());
    openssl(
        dir.path(),
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            "leaf.key",
        ],
    );
    openssl(
        dir.path(),
        &[
            "pkey",
            "-in",
            "leaf.key",
            "-pubout",
            "-outform",
            "DER",
            "-out",
            "leaf.spki",
        ],
    );
    let ca_pem = std::fs::read_to_string(dir.path().join("ca.pem")).unwrap();
    let ca = Certificate::from_pem(ca_pem.as_bytes()).unwrap();
    let ca_key = rsa::RsaPrivateKey::read_pkcs8_pem_file(dir.path().join("ca.key")).unwrap();
    let ca_signer = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(ca_key);
    let spki =
        SubjectPublicKeyInfoOwned::from_der(&std::fs::read(dir.path().join("leaf.spki")).unwrap())
            .unwrap();

    let basic4 = Basic4::parse(RawBasic4 {
        name: Some("髙橋 花子"),
        name_substitute_flags: Some("10000"),
        address: Some("大阪府大阪市北区梅田1-1"),
        birth_date: Some("2001-05-03"),
        gender: Some("2"),
        ..Default::default()
    })
    .unwrap();
    let serial = CertSerial::parse("0a1b2c3d4e5f").unwrap();
    let partition = CrlPartition {
        prefecture: "大阪府".into(),
        city: "大阪市".into(),
    };
    let now = Utc::now();
    let issued = jpki::issue_signing_certificate(
        SigningCertificateSpec {
            serial: &serial,
            issue_number: "20261125ISSUE0001",
            partition: &partition,
            basic4: &basic4,
            not_before: now - Duration::minutes(1),
            not_after: now + Duration::days(365 * 5),
            subject_public_key: spki,
        },
        &ca.tbs_certificate.subject,
        &jpki::subject_key_id(&ca).unwrap().unwrap(),
        &ca_signer,
    )
    .unwrap();
    let der = issued.to_der().unwrap();
    std::fs::write(dir.path().join("issued.der"), &der).unwrap();
    openssl(
        dir.path(),
        &[
            "x509",
            "-inform",
            "DER",
            "-in",
            "issued.der",
            "-out",
            "issued.pem",
        ],
    );
    let verified = openssl(dir.path(), &["verify", "-CAfile", "ca.pem", "issued.pem"]);
    assert!(verified.contains("issued.pem: OK"), "{verified}");
    let text = openssl(
        dir.path(),
        &["x509", "-in", "issued.pem", "-noout", "-text"],
    );
    for oid in [
        oid::NAME,
        oid::NAME_FLAGS,
        oid::GENDER,
        oid::BIRTH_DATE,
        oid::ADDRESS,
        oid::ADDRESS_FLAGS,
    ] {
        assert!(text.contains(&oid.to_string()), "{oid} not shown:\n{text}");
    }
    assert!(
        text.contains("Digital Signature, Non Repudiation"),
        "{text}"
    );
    assert!(text.contains("X509v3 Key Usage: critical"));
    assert!(text.contains("1.2.392.200149.8.5.1.1.20"));
    assert!(text.contains("sha256WithRSAEncryption"));

    let back = parse_signing_certificate(&der).unwrap();
    assert_eq!(back.basic4, basic4);
    assert_eq!(back.serial, serial);
    assert_eq!(back.prefecture.as_deref(), Some("大阪府"));
    assert_eq!(back.city.as_deref(), Some("大阪市"));
    assert_eq!(back.crl_partition, Some(partition));
    assert_eq!(back.authority_key_id, jpki::subject_key_id(&ca).unwrap());
    // The era digit of 2001 is Heisei (4).
    assert!(text.contains("420010503"), "{text}");
}

/// A CRL made by `openssl ca -gencrl` from an index of `n` revoked serials
/// (0x1000 + i, reasons cycling through affiliationChanged, superseded,
/// cessationOfOperation, certificateHold).
fn openssl_crl(dir: &Path, n: usize, hours: u32) -> Vec<u8> {
    let reasons = [
        "affiliationChanged",
        "superseded",
        "cessationOfOperation",
        "certificateHold",
    ];
    let index: String = (0..n)
        .map(|i| {
            let serial = format!("{:04X}", 0x1000 + i);
            format!(
                "R\t301231235959Z\t261120000000Z,{}\t{serial}\tunknown\t/CN=resident\n",
                reasons[i % 4]
            )
        })
        .collect();
    std::fs::write(dir.join("index.txt"), index).unwrap();
    std::fs::write(dir.join("index.txt.attr"), "unique_subject = no\n").unwrap();
    std::fs::write(dir.join("crlnumber"), "2A\n").unwrap();
    std::fs::write(
        dir.join("ca.cnf"),
        format!(
            "[ ca ]\ndefault_ca = t\n[ t ]\ndatabase = {d}/index.txt\ncrlnumber = {d}/crlnumber\ncertificate = {d}/ca.pem\n\
             private_key = {d}/ca.key\ndefault_md = sha256\ndefault_crl_hours = {hours}\ncrl_extensions = e\nunique_subject = no\n\
             [ e ]\nauthorityKeyIdentifier = keyid:always\n",
            d = dir.display()
        ),
    )
    .unwrap();
    openssl(
        dir,
        &["ca", "-gencrl", "-config", "ca.cnf", "-out", "crl.pem"],
    );
    openssl(
        dir,
        &[
            "crl", "-in", "crl.pem", "-outform", "DER", "-out", "crl.der",
        ],
    );
    std::fs::read(dir.join("crl.der")).unwrap()
}

fn issuer_of(dir: &Path) -> jpki::crl::CrlIssuer {
    let ca = Certificate::from_pem(
        std::fs::read_to_string(dir.join("ca.pem"))
            .unwrap()
            .as_bytes(),
    )
    .unwrap();
    jpki::crl::CrlIssuer::from_certificate(&ca).unwrap()
}

#[test]
fn walks_an_openssl_crl_and_finds_the_serials_asked_for() {
    use jpki::crl::{CrlError, SerialSet, check_crl};
    let dir = tempfile::tempdir().unwrap();
    openssl_ca(dir.path());
    let crl = openssl_crl(dir.path(), 1000, 24);
    let issuer = issuer_of(dir.path());
    let wanted: Vec<CertSerial> = ["1000", "1001", "1002", "13e7", "ffff", "abcdef"]
        .iter()
        .map(|s| CertSerial::parse(s).unwrap())
        .collect();
    let set: SerialSet = wanted.iter().collect();
    let now = Utc::now();
    let (summary, found) = check_crl(crl.as_slice(), &issuer, &set, now).unwrap();
    assert_eq!(summary.entries, 1000);
    assert_eq!(summary.crl_number, Some(0x2a));
    assert!(summary.next_update > now);
    let got: Vec<(String, Option<u8>)> = found
        .iter()
        .map(|r| (r.serial.as_str().to_owned(), r.reason))
        .collect();
    assert_eq!(
        got,
        [
            ("1000".into(), Some(3)),
            ("1001".into(), Some(4)),
            ("1002".into(), Some(5)),
            ("13e7".into(), Some(6))
        ]
    );
    assert_eq!(
        found[0].revoked_at.format("%Y-%m-%d").to_string(),
        "2026-11-20"
    );

    // Nothing asked: every entry still counted, none kept.
    let (summary, found) = check_crl(crl.as_slice(), &issuer, &SerialSet::default(), now).unwrap();
    assert_eq!((summary.entries, found.len()), (1000, 0));

    // A changed byte, another CA, a CRL past its nextUpdate, cut or padded bytes.
    let mut tampered = crl.clone();
    let at = crl.windows(2).position(|w| w == [0x13, 0xe7]).unwrap();
    tampered[at + 1] ^= 0x01;
    assert_eq!(
        check_crl(tampered.as_slice(), &issuer, &set, now).unwrap_err(),
        CrlError::BadSignature
    );
    let other = tempfile::tempdir().unwrap();
    openssl(
        other.path(),
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "30",
            "-subj",
            "/C=JP/O=Elsewhere",
        ],
    );
    assert_eq!(
        check_crl(crl.as_slice(), &issuer_of(other.path()), &set, now).unwrap_err(),
        CrlError::WrongIssuer
    );
    assert_eq!(
        check_crl(crl.as_slice(), &issuer, &set, summary.next_update).unwrap_err(),
        CrlError::Stale
    );
    assert!(matches!(
        check_crl(&crl[..crl.len() - 10], &issuer, &set, now),
        Err(CrlError::Malformed(_))
    ));
    let mut padded = crl.clone();
    padded.push(0);
    assert!(matches!(
        check_crl(padded.as_slice(), &issuer, &set, now),
        Err(CrlError::Malformed(_))
    ));
    assert!(matches!(
        check_crl(&b"not a crl"[..], &issuer, &set, now),
        Err(CrlError::Malformed(_))
    ));
    assert!(matches!(
        check_crl(&[][..], &issuer, &set, now),
        Err(CrlError::Malformed(_))
    ));
}

/// A leaf from the profile config signed by the test CA in `dir`, with `edit`
/// applied to the config; writes `<name>.pem` and `<name>.key`.
fn profile_leaf(dir: &Path, name: &str, days: &str, edit: impl Fn(String) -> String) {
    let config =
        std::fs::read_to_string(shared().join("jpki-profile/openssl-signing-cert.cnf")).unwrap();
    let config = edit(config).replace(";UTF8:", ";FORMAT:UTF8,UTF8:");
    std::fs::write(dir.join(format!("{name}.cnf")), config).unwrap();
    let cnf = format!("{name}.cnf");
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-config",
            &cnf,
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            days,
            "-extfile",
            &cnf,
            "-extensions",
            "ext",
        ],
    );
}

fn cms_sign(dir: &Path, signer: &str, extra: &[&str], out: &str) -> Vec<u8> {
    let mut args = vec![
        "cms",
        "-sign",
        "-binary",
        "-md",
        "sha256",
        "-in",
        "consent.txt",
        "-signer",
    ];
    let pem = format!("{signer}.pem");
    let key = format!("{signer}.key");
    args.extend([
        pem.as_str(),
        "-inkey",
        key.as_str(),
        "-outform",
        "DER",
        "-out",
        out,
    ]);
    args.extend(extra);
    openssl(dir, &args);
    std::fs::read(dir.join(out)).unwrap()
}

#[test]
fn verifies_openssl_signed_consents_and_refuses_every_flaw() {
    use jpki::verify::{SignatureError, TrustAnchors, verify_signed_document};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    openssl_ca(d);
    let fix_flags = |c: String| c.replace("UTF8:0000000000000", "UTF8:000000000000000");
    profile_leaf(d, "leaf", "365", fix_flags);
    let text = "私は、基本4情報の提供に同意します。\n";
    std::fs::write(d.join("consent.txt"), text).unwrap();
    let anchors = TrustAnchors::load(&[d.join("ca.pem")]).unwrap();
    let now = Utc::now();

    let attached = cms_sign(d, "leaf", &["-nodetach"], "attached.der");
    let ok = verify_signed_document(&attached, None, &anchors, now)
        .expect("an OpenSSL-signed consent verifies");
    assert_eq!(ok.content, text.as_bytes());
    assert_eq!(ok.certificate.basic4.name.as_str(), "山田 太郎");

    let detached = cms_sign(d, "leaf", &[], "detached.der");
    assert!(verify_signed_document(&detached, Some(text.as_bytes()), &anchors, now).is_ok());
    assert_eq!(
        verify_signed_document(&detached, None, &anchors, now).unwrap_err(),
        SignatureError::ContentMissing
    );
    let mut other_text = text.as_bytes().to_vec();
    other_text[0] ^= 1;
    assert_eq!(
        verify_signed_document(&detached, Some(&other_text), &anchors, now).unwrap_err(),
        SignatureError::DigestMismatch
    );

    // Tampered attached content; a changed signature byte.
    let mut tampered = attached.clone();
    let at = tampered
        .windows(3)
        .position(|w| w == "基".as_bytes())
        .unwrap();
    tampered[at + 2] ^= 1;
    assert_eq!(
        verify_signed_document(&tampered, None, &anchors, now).unwrap_err(),
        SignatureError::DigestMismatch
    );
    let mut bad_signature = attached.clone();
    let last = bad_signature.len() - 5;
    bad_signature[last] ^= 1;
    assert_eq!(
        verify_signed_document(&bad_signature, None, &anchors, now).unwrap_err(),
        SignatureError::BadSignature
    );

    // An expired certificate (the anchor still valid).
    profile_leaf(d, "short", "1", fix_flags);
    let short = cms_sign(d, "short", &["-nodetach"], "short.der");
    // Verified once now, its path is remembered; its validity is still checked later.
    assert!(verify_signed_document(&short, None, &anchors, Utc::now()).is_ok());
    assert_eq!(
        verify_signed_document(&short, None, &anchors, now + chrono::Duration::days(3))
            .unwrap_err(),
        SignatureError::CertificateExpired
    );

    // A user-identification certificate; not CMS; no signer; several signers.
    profile_leaf(d, "auth", "365", |c| {
        fix_flags(c).replace("1.2.392.200149.8.5.1.1.20", "1.2.392.200149.8.5.1.3.30")
    });
    let by_auth = cms_sign(d, "auth", &["-nodetach"], "auth.der");
    assert_eq!(
        verify_signed_document(&by_auth, None, &anchors, now).unwrap_err(),
        SignatureError::Profile(JpkiError::UserIdentificationCertificate)
    );
    assert_eq!(
        verify_signed_document(b"\x30\x03\x02\x01\x01", None, &anchors, now).unwrap_err(),
        SignatureError::NotCms
    );
    assert_eq!(
        verify_signed_document(b"", None, &anchors, now).unwrap_err(),
        SignatureError::NotCms
    );
    openssl(
        d,
        &[
            "crl2pkcs7",
            "-nocrl",
            "-certfile",
            "leaf.pem",
            "-outform",
            "DER",
            "-out",
            "nosigner.der",
        ],
    );
    let no_signer = std::fs::read(d.join("nosigner.der")).unwrap();
    assert_eq!(
        verify_signed_document(&no_signer, Some(text.as_bytes()), &anchors, now).unwrap_err(),
        SignatureError::NoSigner
    );
    let two = cms_sign(
        d,
        "leaf",
        &["-nodetach", "-signer", "short.pem", "-inkey", "short.key"],
        "two.der",
    );
    assert_eq!(
        verify_signed_document(&two, None, &anchors, now).unwrap_err(),
        SignatureError::SeveralSigners
    );

    // A chain that does not lead to the anchors: the real J-LIS CAs.
    let jlis = TrustAnchors::load(&[shared().join("jpki-trust-anchors")]).unwrap();
    assert_eq!(jlis.len(), 4);
    assert_eq!(
        verify_signed_document(&attached, None, &jlis, now).unwrap_err(),
        SignatureError::UntrustedIssuer
    );
    // Same name, other key: picked by key identifier, refused.
    let impostor = tempfile::tempdir().unwrap();
    openssl_ca(impostor.path());
    let other_anchors = TrustAnchors::load(&[impostor.path().join("ca.pem")]).unwrap();
    assert_eq!(
        verify_signed_document(&attached, None, &other_anchors, now).unwrap_err(),
        SignatureError::UntrustedIssuer
    );
    assert_eq!(
        verify_signed_document(&attached, None, &anchors, now + chrono::Duration::days(60))
            .unwrap_err(),
        SignatureError::UntrustedIssuer,
        "the test CA is valid for 30 days"
    );
}

/// A raw PKCS#1 v1.5 signature of `consent.txt` made by OpenSSL as a card
/// client would: `dgst -sign` (OpenSSL builds the DigestInfo) or `pkeyutl
/// -sign` over a DigestInfo built here, as a card's JPKI application gets it.
fn raw_sign(dir: &Path, key: &str, how: &str) -> Vec<u8> {
    let out = format!("{key}.{how}.sig");
    let key_file = format!("{key}.key");
    match how {
        "dgst-sha256" | "dgst-sha1" => {
            let md = if how == "dgst-sha1" {
                "-sha1"
            } else {
                "-sha256"
            };
            openssl(
                dir,
                &["dgst", md, "-sign", &key_file, "-out", &out, "consent.txt"],
            );
        }
        "pkeyutl" => {
            use sha2::Digest as _;
            let text = std::fs::read(dir.join("consent.txt")).unwrap();
            let mut digest_info = vec![
                0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x01, 0x05, 0x00, 0x04, 0x20,
            ];
            digest_info.extend_from_slice(&sha2::Sha256::digest(&text));
            std::fs::write(dir.join("digest-info.der"), digest_info).unwrap();
            openssl(
                dir,
                &[
                    "pkeyutl",
                    "-sign",
                    "-inkey",
                    &key_file,
                    "-pkeyopt",
                    "rsa_padding_mode:pkcs1",
                    "-in",
                    "digest-info.der",
                    "-out",
                    &out,
                ],
            );
        }
        other => panic!("no such way to sign: {other}"),
    }
    std::fs::read(dir.join(out)).unwrap()
}

fn pem_to_der(pem_path: &Path) -> Vec<u8> {
    let pem = std::fs::read(pem_path).unwrap();
    x509_cert::Certificate::load_pem_chain(&pem).unwrap()[0]
        .to_der()
        .unwrap()
}

#[test]
fn verifies_raw_card_signatures_and_refuses_every_flaw() {
    use jpki::verify::{
        HashAlgorithm, RawSignature, SignatureError, TrustAnchors, verify_raw_signature,
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    openssl_ca(d);
    let fix_flags = |c: String| c.replace("UTF8:0000000000000", "UTF8:000000000000000");
    profile_leaf(d, "leaf", "365", fix_flags);
    let text = "私は、基本4情報の提供に同意します。\n";
    std::fs::write(d.join("consent.txt"), text).unwrap();
    let certificate = pem_to_der(&d.join("leaf.pem"));
    let now = Utc::now();
    let raw = |signature: &'static [u8], certificate: &'static [u8]| RawSignature {
        certificate_der: certificate,
        signature,
        hash: HashAlgorithm::Sha256,
    };
    let leak = |v: Vec<u8>| -> &'static [u8] { Box::leak(v.into_boxed_slice()) };
    let cert = leak(certificate);

    // Both ways a client signs give the same, verifying signature; a card
    // seen before verifies from memory.
    let by_dgst = leak(raw_sign(d, "leaf", "dgst-sha256"));
    let by_pkeyutl = leak(raw_sign(d, "leaf", "pkeyutl"));
    assert_eq!(by_dgst, by_pkeyutl, "PKCS#1 v1.5 is deterministic");
    for anchors in [
        TrustAnchors::load(&[d.join("ca.pem")]).unwrap(),
        TrustAnchors::load(&[d.join("ca.pem")])
            .unwrap()
            .remembering(0),
    ] {
        for _ in 0..2 {
            let ok = verify_raw_signature(&raw(by_dgst, cert), text.as_bytes(), &anchors, now)
                .expect("an OpenSSL raw signature verifies");
            assert_eq!(ok.content, text.as_bytes());
            assert_eq!(ok.signature, by_dgst);
            assert_eq!(ok.certificate.basic4.name.as_str(), "山田 太郎");
        }
    }
    let anchors = TrustAnchors::load(&[d.join("ca.pem")]).unwrap();

    // Over other bytes; a SHA-1 DigestInfo; a changed byte; a cut signature.
    let mut other = text.as_bytes().to_vec();
    other[0] ^= 1;
    assert_eq!(
        verify_raw_signature(&raw(by_dgst, cert), &other, &anchors, now).unwrap_err(),
        SignatureError::DigestMismatch
    );
    let sha1 = leak(raw_sign(d, "leaf", "dgst-sha1"));
    assert_eq!(
        verify_raw_signature(&raw(sha1, cert), text.as_bytes(), &anchors, now).unwrap_err(),
        SignatureError::UnsupportedHash("sha1".into())
    );
    let mut flipped = by_dgst.to_vec();
    flipped[100] ^= 1;
    assert_eq!(
        verify_raw_signature(&raw(leak(flipped), cert), text.as_bytes(), &anchors, now)
            .unwrap_err(),
        SignatureError::BadSignature
    );
    assert_eq!(
        verify_raw_signature(&raw(&by_dgst[1..], cert), text.as_bytes(), &anchors, now)
            .unwrap_err(),
        SignatureError::BadSignature
    );
    assert_eq!(
        verify_raw_signature(&raw(b"", cert), text.as_bytes(), &anchors, now).unwrap_err(),
        SignatureError::BadSignature
    );

    // Another key's signature with this certificate.
    profile_leaf(d, "other", "365", fix_flags);
    let by_other = leak(raw_sign(d, "other", "dgst-sha256"));
    assert_eq!(
        verify_raw_signature(&raw(by_other, cert), text.as_bytes(), &anchors, now).unwrap_err(),
        SignatureError::BadSignature
    );

    // Certificates: garbage, a user-identification one, expired, untrusted.
    assert!(matches!(
        verify_raw_signature(
            &raw(by_dgst, b"\x30\x03\x02\x01\x01"),
            text.as_bytes(),
            &anchors,
            now
        )
        .unwrap_err(),
        SignatureError::Profile(JpkiError::Malformed(_))
    ));
    profile_leaf(d, "auth", "365", |c| {
        fix_flags(c).replace("1.2.392.200149.8.5.1.1.20", "1.2.392.200149.8.5.1.3.30")
    });
    let auth_cert = leak(pem_to_der(&d.join("auth.pem")));
    let by_auth = leak(raw_sign(d, "auth", "dgst-sha256"));
    assert_eq!(
        verify_raw_signature(&raw(by_auth, auth_cert), text.as_bytes(), &anchors, now).unwrap_err(),
        SignatureError::Profile(JpkiError::UserIdentificationCertificate)
    );
    assert_eq!(
        verify_raw_signature(
            &raw(by_dgst, cert),
            text.as_bytes(),
            &anchors,
            now + chrono::Duration::days(400)
        )
        .unwrap_err(),
        SignatureError::UntrustedIssuer,
        "the test CA is valid for 30 days"
    );
    profile_leaf(d, "short", "1", fix_flags);
    let short_cert = leak(pem_to_der(&d.join("short.pem")));
    let by_short = leak(raw_sign(d, "short", "dgst-sha256"));
    assert_eq!(
        verify_raw_signature(
            &raw(by_short, short_cert),
            text.as_bytes(),
            &anchors,
            now + chrono::Duration::days(3)
        )
        .unwrap_err(),
        SignatureError::CertificateExpired
    );
    let jlis = TrustAnchors::load(&[shared().join("jpki-trust-anchors")]).unwrap();
    assert_eq!(
        verify_raw_signature(&raw(by_dgst, cert), text.as_bytes(), &jlis, now).unwrap_err(),
        SignatureError::UntrustedIssuer
    );

    // Hash names: SHA-256 under its usual spellings; SHA-1 and others refused by name.
    for name in [
        "sha256",
        "SHA256",
        "sha-256",
        "SHA-256",
        "HASH_ALGORITHM_SHA256",
    ] {
        assert_eq!(
            HashAlgorithm::parse(name),
            Ok(HashAlgorithm::Sha256),
            "{name}"
        );
    }
    for name in ["sha1", "SHA-1", "sha384", "md5", ""] {
        assert_eq!(
            HashAlgorithm::parse(name),
            Err(SignatureError::UnsupportedHash(name.into())),
            "{name}"
        );
    }
}

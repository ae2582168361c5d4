//! Residents and their signing certificates.

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use der::Encode;
use kihon4_core::domain::{Basic4, CertSerial};
use kihon4_core::jpki::{self, CrlPartition, SigningCertificateSpec};
use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use x509_cert::spki::SubjectPublicKeyInfoOwned;

use crate::ca::Ca;
use crate::store::IssuedCertificate;

/// The first birthday after `issued`, four years on: a signing certificate
/// runs to the holder's fifth birthday after issue.
pub fn fifth_birthday_after(birth: NaiveDate, issued: NaiveDate) -> NaiveDate {
    let on = |year: i32| {
        NaiveDate::from_ymd_opt(year, birth.month(), birth.day())
            .or_else(|| NaiveDate::from_ymd_opt(year, 2, 28))
            .expect("a real date")
    };
    let first = if on(issued.year()) > issued {
        on(issued.year())
    } else {
        on(issued.year() + 1)
    };
    on(first.year() + 4)
}

/// The end of a day in Japan (23:59:59 JST), as J-LIS dates expiry.
fn end_of_day_in_japan(day: NaiveDate) -> DateTime<Utc> {
    let end = day.and_hms_opt(23, 59, 59).expect("a real time");
    Utc.from_utc_datetime(&end) - Duration::hours(9)
}

pub fn new_serial() -> CertSerial {
    let mut bytes: [u8; 9] = rand::random();
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    CertSerial::from_be_bytes(&bytes).expect("a positive serial")
}

/// A certificate recorded for a resident, made (key and DER) only when
/// first needed: a million bulk residents need serials, not RSA keys.
pub fn lazy(
    person_id: &str,
    basic4: &Basic4,
    partition: &CrlPartition,
    now: DateTime<Utc>,
    serial: CertSerial,
) -> IssuedCertificate {
    let not_after = end_of_day_in_japan(fifth_birthday_after(
        basic4.birth_date.date(),
        now.date_naive(),
    ));
    IssuedCertificate {
        issue_number: format!(
            "{}{}",
            now.format("%Y%m%d"),
            serial.as_str().to_ascii_uppercase()
        ),
        serial,
        person_id: person_id.to_owned(),
        der: None,
        key_pem: None,
        partition: partition.clone(),
        issued_at: now,
        not_after,
        revoked_at: None,
        reason: None,
    }
}

/// Makes the key pair and the certificate for a recorded one. RSA key
/// generation takes a while: call it off the async threads.
pub fn materialize(
    ca: &Ca,
    cert: &IssuedCertificate,
    basic4: &Basic4,
) -> anyhow::Result<(Vec<u8>, String)> {
    let key = crate::keys::generate()?;
    let certificate = jpki::issue_signing_certificate(
        SigningCertificateSpec {
            serial: &cert.serial,
            issue_number: &cert.issue_number,
            partition: &cert.partition,
            basic4,
            not_before: cert.issued_at - Duration::minutes(5),
            not_after: cert.not_after,
            subject_public_key: SubjectPublicKeyInfoOwned::from_key(key.to_public_key())?,
        },
        ca.name(),
        &ca.key_id,
        &ca.signer,
    )?;
    Ok((
        certificate.to_der()?,
        key.to_pkcs8_pem(LineEnding::LF)?.to_string(),
    ))
}

/// Issues a new signing certificate to a resident, with a fresh key pair (the card's).
pub fn issue(
    ca: &Ca,
    person_id: &str,
    basic4: &Basic4,
    partition: &CrlPartition,
) -> anyhow::Result<IssuedCertificate> {
    let mut cert = lazy(person_id, basic4, partition, Utc::now(), new_serial());
    let (der, key_pem) = materialize(ca, &cert, basic4)?;
    cert.der = Some(der);
    cert.key_pem = Some(key_pem);
    Ok(cert)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    #[test]
    fn certificates_run_to_the_fifth_birthday_after_issue() {
        assert_eq!(
            fifth_birthday_after(d(1980, 2, 17), d(2026, 11, 25)),
            d(2031, 2, 17)
        );
        assert_eq!(
            fifth_birthday_after(d(1980, 12, 1), d(2026, 11, 25)),
            d(2030, 12, 1)
        );
        // Issued on the birthday itself: that birthday does not count.
        assert_eq!(
            fifth_birthday_after(d(1980, 11, 25), d(2026, 11, 25)),
            d(2031, 11, 25)
        );
        assert_eq!(
            fifth_birthday_after(d(2000, 2, 29), d(2026, 1, 1)),
            d(2030, 2, 28)
        );
    }
}

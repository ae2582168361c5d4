//! An RFC 6960 OCSP responder for the simulator's CA: good, revoked or
//! unknown, signed by the CA, the nonce echoed when one is sent.

use chrono::{DateTime, Utc};
use const_oid::db::rfc5912::{ID_SHA_1, ID_SHA_256};
use der::{Decode, Encode};
use kihon4_core::domain::CertSerial;
use rsa::pkcs1v15::Signature;
use sha2::Digest;
use x509_ocsp::builder::OcspResponseBuilder;
use x509_ocsp::{
    CertId, CertStatus, OcspGeneralizedTime, OcspRequest, OcspResponse, RevokedInfo, SingleResponse,
};

use crate::Simulator;

/// How long an answer may be relied on: J-LIS's OCSP data is refreshed every 15 minutes.
const VALIDITY: chrono::Duration = chrono::Duration::minutes(15);

fn ocsp_time(t: DateTime<Utc>) -> anyhow::Result<OcspGeneralizedTime> {
    let since = std::time::Duration::from_secs(u64::try_from(t.timestamp())?);
    Ok(OcspGeneralizedTime::from(
        der::DateTime::from_unix_duration(since)?,
    ))
}

/// Whether a request's CertID names our CA (by the hashes of its name and key).
fn names_our_ca(sim: &Simulator, id: &CertId) -> bool {
    let issuer = &sim.ca.certificate.tbs_certificate;
    let Ok(name_der) = issuer.subject.to_der() else {
        return false;
    };
    let key = issuer
        .subject_public_key_info
        .subject_public_key
        .raw_bytes();
    let (name_hash, key_hash): (Vec<u8>, Vec<u8>) = match id.hash_algorithm.oid {
        oid if oid == ID_SHA_1 => (
            sha1::Sha1::digest(&name_der).to_vec(),
            sha1::Sha1::digest(key).to_vec(),
        ),
        oid if oid == ID_SHA_256 => (
            sha2::Sha256::digest(&name_der).to_vec(),
            sha2::Sha256::digest(key).to_vec(),
        ),
        _ => return false,
    };
    id.issuer_name_hash.as_bytes() == name_hash && id.issuer_key_hash.as_bytes() == key_hash
}

/// Answers a DER OCSP request with a DER OCSP response. A request that does
/// not parse gets `malformedRequest`, as RFC 6960 says.
pub async fn respond(sim: &Simulator, body: &[u8]) -> anyhow::Result<Vec<u8>> {
    let Ok(request) = OcspRequest::from_der(body) else {
        return Ok(OcspResponse::malformed_request().to_der()?);
    };
    let now = Utc::now();
    let mut builder = OcspResponseBuilder::new(sim.ca.name().clone());
    for single in &request.tbs_request.request_list {
        let id = &single.req_cert;
        let status = if !names_our_ca(sim, id) {
            CertStatus::unknown()
        } else {
            let serial = CertSerial::from_be_bytes(id.serial_number.as_bytes()).ok();
            let cert = match serial {
                Some(s) => sim.store.certificate(&s).await?,
                None => None,
            };
            match cert {
                None => CertStatus::unknown(),
                Some(c) => match (c.revoked_at, c.reason) {
                    (Some(at), code) => CertStatus::revoked(RevokedInfo {
                        revocation_time: ocsp_time(at)?,
                        revocation_reason: Some(crate::crl::reason(code.unwrap_or(0))),
                    }),
                    (None, _) => CertStatus::good(),
                },
            }
        };
        builder = builder.with_single_response(
            SingleResponse::new(id.clone(), status, ocsp_time(now)?)
                .with_next_update(ocsp_time(now + VALIDITY)?),
        );
    }
    sim.store
        .record_checks(
            crate::store::CheckPurpose::SignatureVerification,
            request.tbs_request.request_list.len() as u64,
            now,
        )
        .await?;
    if let Some(nonce) = request.nonce() {
        builder = builder
            .with_extension(nonce)
            .map_err(|e| anyhow::anyhow!("nonce: {e:?}"))?;
    }
    let mut signer = sim.ca.signer.clone();
    let response = builder
        .sign::<_, Signature>(&mut signer, None, ocsp_time(now)?)
        .map_err(|e| anyhow::anyhow!("signing the OCSP response: {e:?}"))?;
    Ok(response.to_der()?)
}

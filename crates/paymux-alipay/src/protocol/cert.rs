//! Certificate mode: the SNs by which Alipay names certificates.
//!
//! An SN is the lower-case hex MD5 of the issuer's distinguished name in RFC 2253 form (most
//! significant RDN last, `,` without a space) followed by the serial number in decimal.
//! `alipay_root_cert_sn` joins with `_` the SNs of the root bundle's RSA-signed certificates.

use rustls_pki_types::pem::SectionKind;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Why an SN could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertSnError {
    #[error("no certificate in the PEM text")]
    NoCertificate,
    #[error("bad PEM: {0}")]
    Pem(String),
    #[error("bad certificate: {0}")]
    Certificate(String),
    #[error("an issuer attribute is not a string")]
    IssuerValue,
}

/// The OID prefix of the RSA signature algorithms (`sha256WithRSAEncryption`, ...).
const RSA_FAMILY_OID_PREFIX: &str = "1.2.840.113549.1.1";

/// The SN of the first certificate of a PEM text (`app_cert_sn`, `alipay_cert_sn`).
pub fn cert_sn(pem: &str) -> Result<String, CertSnError> {
    let der = certificates(pem)?.into_iter().next().ok_or(CertSnError::NoCertificate)?;
    let (_, cert) =
        X509Certificate::from_der(&der).map_err(|e| CertSnError::Certificate(e.to_string()))?;
    sn_of(&cert)
}

/// `alipay_root_cert_sn` of a root bundle: the SNs of its RSA-signed certificates, in file
/// order, joined with `_`. Other roots (SM2, ECDSA) are skipped, including one whose encoding a
/// strict parser refuses (the published bundle's ECDSA root carries a NULL algorithm parameter).
pub fn root_cert_sn(bundle_pem: &str) -> Result<String, CertSnError> {
    let mut sns = Vec::new();
    for der in certificates(bundle_pem)? {
        match X509Certificate::from_der(&der) {
            Ok((_, cert)) => {
                if cert
                    .signature_algorithm
                    .algorithm
                    .to_id_string()
                    .starts_with(RSA_FAMILY_OID_PREFIX)
                {
                    sns.push(sn_of(&cert)?);
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "root bundle: unparsable certificate skipped");
            }
        }
    }
    if sns.is_empty() {
        return Err(CertSnError::NoCertificate);
    }
    Ok(sns.join("_"))
}

/// The issuer in RFC 2253 form: RDNs most significant last, joined with `,`; attributes by
/// short name (`CN`, `OU`, `O`, `C`, ...), or the dotted OID when there is none.
fn issuer_rfc2253(cert: &X509Certificate<'_>) -> Result<String, CertSnError> {
    let registry = x509_parser::objects::oid_registry();
    let mut rdns = Vec::new();
    for rdn in cert.issuer().iter() {
        let mut attrs = Vec::new();
        for attr in rdn.iter() {
            let name = x509_parser::objects::oid2abbrev(attr.attr_type(), registry)
                .map(str::to_owned)
                .unwrap_or_else(|_| attr.attr_type().to_id_string());
            let value = attr.as_str().map_err(|_| CertSnError::IssuerValue)?;
            attrs.push(format!("{name}={value}"));
        }
        rdns.push(attrs.join("+"));
    }
    rdns.reverse();
    Ok(rdns.join(","))
}

fn sn_of(cert: &X509Certificate<'_>) -> Result<String, CertSnError> {
    let text = format!("{}{}", issuer_rfc2253(cert)?, cert.tbs_certificate.serial.to_str_radix(10));
    Ok(md5_hex(text.as_bytes()))
}

fn certificates(pem: &str) -> Result<Vec<Vec<u8>>, CertSnError> {
    let sections =
        paymux_crypto::pem_sections(pem.as_bytes()).map_err(|e| CertSnError::Pem(e.to_string()))?;
    Ok(sections
        .into_iter()
        .filter(|(kind, _)| *kind == SectionKind::Certificate)
        .map(|(_, der)| der)
        .collect())
}

/// MD5, lower-case hex: Alipay names certificates by it (never used for security).
fn md5_hex(data: &[u8]) -> String {
    use md5::{Digest, Md5};
    hex::encode(Md5::digest(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_matches_the_rfc_1321_test_suite() {
        for (input, hex) in [
            ("", "d41d8cd98f00b204e9800998ecf8427e"),
            ("a", "0cc175b9c0f1b6a831c399e269772661"),
            ("abc", "900150983cd24fb0d6963f7d28e17f72"),
            ("message digest", "f96b697d7cb7938d525a2f31aaf161d0"),
            ("abcdefghijklmnopqrstuvwxyz", "c3fcd3d76192e4007dfb496cca67e13b"),
            (
                "12345678901234567890123456789012345678901234567890123456789012345678901234567890",
                "57edf4a22be3c955ac49da2e2107b67a",
            ),
        ] {
            assert_eq!(md5_hex(input.as_bytes()), hex, "{input:?}");
        }
    }

    #[test]
    fn garbage_is_refused() {
        assert_eq!(cert_sn("no pem here"), Err(CertSnError::NoCertificate));
        assert_eq!(root_cert_sn(""), Err(CertSnError::NoCertificate));
    }
}

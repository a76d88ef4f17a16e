use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::{CryptoError, RsaPublicKey, pem_sections};
use rustls_pki_types::pem::SectionKind;

/// An X.509 certificate with the parts paymux reads: serial, issuer, validity, RSA public key.
#[derive(Debug, Clone)]
pub struct Certificate {
    der: Vec<u8>,
    serial_hex: String,
    serial_decimal: String,
    issuer: String,
    subject: String,
    not_before: i64,
    not_after: i64,
    signature_oid: String,
    public_key: Option<RsaPublicKey>,
}

impl Certificate {
    /// The first certificate in a PEM text.
    pub fn from_pem(text: &str) -> Result<Self, CryptoError> {
        Self::all_from_pem(text)?
            .into_iter()
            .next()
            .ok_or_else(|| CryptoError::Certificate("no certificate in the PEM text".into()))
    }

    /// Every certificate in a PEM text (a chain or a bundle), in file order.
    pub fn all_from_pem(text: &str) -> Result<Vec<Self>, CryptoError> {
        pem_sections(text.as_bytes())?
            .into_iter()
            .filter(|(kind, _)| *kind == SectionKind::Certificate)
            .map(|(_, der)| Self::from_der(der))
            .collect()
    }

    pub fn from_der(der: Vec<u8>) -> Result<Self, CryptoError> {
        let (_, cert) = X509Certificate::from_der(&der)
            .map_err(|e| CryptoError::Certificate(format!("bad X.509: {e}")))?;
        let serial = cert.tbs_certificate.raw_serial();
        let serial_hex = hex_upper_trimmed(serial);
        let serial_decimal = cert.tbs_certificate.serial.to_str_radix(10);
        let issuer = cert.issuer().to_string();
        let subject = cert.subject().to_string();
        let not_before = cert.validity().not_before.timestamp();
        let not_after = cert.validity().not_after.timestamp();
        let signature_oid = cert.signature_algorithm.algorithm.to_id_string();
        let public_key = RsaPublicKey::from_der(cert.public_key().raw).ok();
        Ok(Self {
            der: der.clone(),
            serial_hex,
            serial_decimal,
            issuer,
            subject,
            not_before,
            not_after,
            signature_oid,
            public_key,
        })
    }

    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The serial number as upper-case hex with leading zeros stripped (WeChat's form).
    pub fn serial_hex(&self) -> &str {
        &self.serial_hex
    }

    pub fn serial_decimal(&self) -> &str {
        &self.serial_decimal
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn subject(&self) -> &str {
        &self.subject
    }

    pub fn signature_oid(&self) -> &str {
        &self.signature_oid
    }

    /// Whether `at` lies within the certificate's validity period.
    pub fn is_valid_at(&self, at: OffsetDateTime) -> bool {
        let t = at.unix_timestamp();
        self.not_before <= t && t <= self.not_after
    }

    pub fn not_after(&self) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(self.not_after).unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    /// The RSA public key; an error for a certificate with another kind of key.
    pub fn public_key(&self) -> Result<&RsaPublicKey, CryptoError> {
        self.public_key
            .as_ref()
            .ok_or_else(|| CryptoError::Certificate("the certificate's key is not RSA".into()))
    }
}

/// Upper-case hex of big-endian bytes, leading zeros dropped ("0" for zero).
fn hex_upper_trimmed(bytes: &[u8]) -> String {
    let s = hex::encode_upper(bytes);
    let t = s.trim_start_matches('0');
    if t.is_empty() { "0".to_owned() } else { t.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_hex_drops_leading_zeros() {
        assert_eq!(hex_upper_trimmed(&[0x00, 0x0a, 0xbc]), "ABC");
        assert_eq!(hex_upper_trimmed(&[0]), "0");
    }
}

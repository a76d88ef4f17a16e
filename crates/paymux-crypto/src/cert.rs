use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::{CryptoError, RsaPublicKey, pem_sections};
use rustls_pki_types::pem::SectionKind;
use rustls_pki_types::{
    AlgorithmIdentifier, CertificateDer, InvalidSignature, SignatureVerificationAlgorithm,
    UnixTime, alg_id,
};

/// An X.509 certificate with the parts paymux reads: serial, issuer, validity, RSA public key.
#[derive(Debug, Clone)]
pub struct Certificate {
    der: Vec<u8>,
    serial_hex: String,
    serial_decimal: String,
    issuer: String,
    subject: String,
    common_name: Option<String>,
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
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned);
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
            common_name,
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

    /// The subject's first common name (CN), when it has one as a string.
    pub fn common_name(&self) -> Option<&str> {
        self.common_name.as_deref()
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

/// Checks that `leaf` chains through exactly `intermediates` (leaf first: the first one issued
/// the leaf) to `root`, and that every certificate of the chain is valid at `at`. A leaf that
/// `root` issued directly, or one issued by another intermediate, is refused. RSA (PKCS#1 v1.5 with SHA-1, SHA-256, SHA-384, SHA-512) and ECDSA
/// signatures are accepted: SHA-1 because UnionPay's test chain (CFCA TEST) is signed with it.
/// Extended key usage is not checked: the channels do not document what their signing
/// certificates carry.
pub fn verify_chain(
    leaf: &Certificate,
    intermediates: &[Certificate],
    root: &Certificate,
    at: OffsetDateTime,
) -> Result<(), CryptoError> {
    let chain_error = |e: webpki::Error| CryptoError::Chain(format!("{e:?}"));
    let root_der = CertificateDer::from(root.der());
    let anchor = webpki::anchor_from_trusted_cert(&root_der).map_err(chain_error)?;
    let leaf_der = CertificateDer::from(leaf.der());
    let end_entity = webpki::EndEntityCert::try_from(&leaf_der).map_err(chain_error)?;
    let expected: Vec<&[u8]> = intermediates.iter().map(Certificate::der).collect();
    let intermediates: Vec<CertificateDer<'_>> =
        intermediates.iter().map(|c| CertificateDer::from(c.der())).collect();
    let exact_path = |path: &webpki::VerifiedPath<'_>| {
        let used: Vec<CertificateDer<'_>> =
            path.intermediate_certificates().map(|c| c.der()).collect();
        if used.iter().map(|d| d.as_ref()).eq(expected.iter().copied()) {
            Ok(())
        } else {
            Err(webpki::Error::UnknownIssuer)
        }
    };
    let seconds = u64::try_from(at.unix_timestamp())
        .map_err(|_| CryptoError::Chain("the time is before 1970".into()))?;
    let time = UnixTime::since_unix_epoch(std::time::Duration::from_secs(seconds));
    end_entity
        .verify_for_usage(
            CHAIN_ALGORITHMS,
            &[anchor],
            &intermediates,
            time,
            AnyExtendedKeyUsage,
            None,
            Some(&exact_path),
        )
        .map(|_| ())
        .map_err(chain_error)
}

/// The signature algorithms a chain may use.
static CHAIN_ALGORITHMS: &[&dyn SignatureVerificationAlgorithm] = &[
    webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA256,
    webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA384,
    webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA512,
    webpki::aws_lc_rs::ECDSA_P256_SHA256,
    webpki::aws_lc_rs::ECDSA_P384_SHA384,
    &RsaPkcs1Sha1 { with_null: true },
    &RsaPkcs1Sha1 { with_null: false },
];

/// `sha1WithRSAEncryption` (1.2.840.113549.1.1.5), which webpki leaves out. Encoders differ on
/// whether the algorithm's NULL parameter is present, so both forms are registered.
#[derive(Debug)]
struct RsaPkcs1Sha1 {
    with_null: bool,
}

const SHA1_WITH_RSA_NULL: &[u8] =
    &[0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05, 0x05, 0x00];

impl SignatureVerificationAlgorithm for RsaPkcs1Sha1 {
    fn verify_signature(
        &self,
        public_key: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), InvalidSignature> {
        aws_lc_rs::signature::UnparsedPublicKey::new(
            &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
            public_key,
        )
        .verify(message, signature)
        .map_err(|_| InvalidSignature)
    }

    fn public_key_alg_id(&self) -> AlgorithmIdentifier {
        alg_id::RSA_ENCRYPTION
    }

    fn signature_alg_id(&self) -> AlgorithmIdentifier {
        let der = if self.with_null { SHA1_WITH_RSA_NULL } else { &SHA1_WITH_RSA_NULL[..11] };
        AlgorithmIdentifier::from_slice(der)
    }
}

struct AnyExtendedKeyUsage;

impl webpki::ExtendedKeyUsageValidator for AnyExtendedKeyUsage {
    fn validate(&self, _purposes: webpki::KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        Ok(())
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

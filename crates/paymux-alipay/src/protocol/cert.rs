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

/// MD5 (RFC 1321), lower-case hex. Used only to name certificates, never for security; written
/// here because no MD5 is among the workspace's dependencies.
fn md5_hex(data: &[u8]) -> String {
    const S: [u32; 64] = [
        7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5,
        9, 14, 20, 5, 9, 14, 20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10,
        15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
    ];
    const K: [u32; 64] = [
        0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613,
        0xfd469501, 0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193,
        0xa679438e, 0x49b40821, 0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d,
        0x02441453, 0xd8a1e681, 0xe7d3fbc8, 0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed,
        0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a, 0xfffa3942, 0x8771f681, 0x6d9d6122,
        0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70, 0x289b7ec6, 0xeaa127fa,
        0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665, 0xf4292244,
        0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
        0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb,
        0xeb86d391,
    ];
    let mut state: [u32; 4] = [0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476];
    let mut message = data.to_vec();
    let bit_len = (data.len() as u64).wrapping_mul(8);
    message.push(0x80);
    while message.len() % 64 != 56 {
        message.push(0);
    }
    message.extend_from_slice(&bit_len.to_le_bytes());
    for block in message.chunks_exact(64) {
        let mut m = [0u32; 16];
        for (word, bytes) in m.iter_mut().zip(block.chunks_exact(4)) {
            *word = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        }
        let [mut a, mut b, mut c, mut d] = state;
        for i in 0..64 {
            let (f, g) = match i / 16 {
                0 => ((b & c) | (!b & d), i),
                1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                2 => (b ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            let rotated = a.wrapping_add(f).wrapping_add(K[i]).wrapping_add(m[g]).rotate_left(S[i]);
            a = d;
            d = c;
            c = b;
            b = b.wrapping_add(rotated);
        }
        for (s, v) in state.iter_mut().zip([a, b, c, d]) {
            *s = s.wrapping_add(v);
        }
    }
    state.iter().flat_map(|w| w.to_le_bytes()).map(|byte| format!("{byte:02x}")).collect()
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

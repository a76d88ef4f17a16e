//! The sandbox's own WeChat Pay keys: platform certificates (issued by a sandbox root CA, like the
//! real ones are issued by Tenpay's root) and the "WeChat Pay public key" with its `PUB_KEY_ID_`.

use std::fmt;

use paymux_crypto::{Certificate, RsaPrivateKey, RsaPublicKey};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_RSA_SHA256, SerialNumber,
};
use time::{Duration, OffsetDateTime};

/// Why keys could not be made or loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("key generation failed: {0}")]
    Generate(String),
    #[error("certificate issuance failed: {0}")]
    Issue(String),
    #[error("key bundle is not valid: {0}")]
    Bundle(String),
    #[error(transparent)]
    Crypto(#[from] paymux_crypto::CryptoError),
}

const BUNDLE_HEADER: &str = "paymux-wechat-sandbox-keys v1";
const PUBLIC_KEY_ID_LABEL: &str = "public_key_id: ";
const CERT_VALIDITY_DAYS: i64 = 5 * 365;

/// One platform certificate with its private key.
#[derive(Clone)]
pub(crate) struct PlatformCert {
    pub(crate) pem: String,
    pub(crate) cert: Certificate,
    pub(crate) key: RsaPrivateKey,
    key_pem: String,
}

impl PlatformCert {
    pub(crate) fn serial(&self) -> &str {
        self.cert.serial_hex()
    }

    /// Start of validity (`effective_time`); paymux-crypto's `Certificate` exposes only the end.
    pub(crate) fn cert_not_before(&self) -> OffsetDateTime {
        x509_parser::parse_x509_certificate(self.cert.der())
            .ok()
            .and_then(|(_, c)| {
                OffsetDateTime::from_unix_timestamp(c.validity().not_before.timestamp()).ok()
            })
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }
}

/// The sandbox's signing keys. `Debug` prints serials and ids only, never a private key.
#[derive(Clone)]
pub struct PlatformKeys {
    ca_pem: String,
    ca_key: RsaPrivateKey,
    ca_key_pem: String,
    /// Oldest first; the last one signs.
    pub(crate) platform: Vec<PlatformCert>,
    pub(crate) public_key_id: String,
    pub(crate) public_key_private: RsaPrivateKey,
    public_key_private_pem: String,
}

impl fmt::Debug for PlatformKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let serials: Vec<&str> = self.platform.iter().map(PlatformCert::serial).collect();
        f.debug_struct("PlatformKeys")
            .field("platform_serials", &serials)
            .field("public_key_id", &self.public_key_id)
            .finish_non_exhaustive()
    }
}

impl PlatformKeys {
    /// A sandbox root CA, one RSA-2048 platform certificate it issued (valid 5 years from now) and
    /// a WeChat Pay public key pair with a fresh `PUB_KEY_ID_`.
    pub fn generate() -> Result<Self, KeysError> {
        let ca_key = RsaPrivateKey::generate()?;
        let ca_pem = issue_ca(&ca_key)?;
        let first = issue_platform(&ca_pem, &ca_key)?;
        let public_key_private = RsaPrivateKey::generate()?;
        Ok(Self {
            ca_pem,
            ca_key_pem: ca_key.to_pkcs8_pem()?,
            ca_key,
            platform: vec![first],
            public_key_id: new_public_key_id(),
            public_key_private_pem: public_key_private.to_pkcs8_pem()?,
            public_key_private,
        })
    }

    /// A new platform certificate from the same CA; it becomes the signing one. Returns its serial.
    pub(crate) fn rotate(&mut self) -> Result<String, KeysError> {
        let next = issue_platform(&self.ca_pem, &self.ca_key)?;
        let serial = next.serial().to_owned();
        self.platform.push(next);
        Ok(serial)
    }

    /// Everything needed to restore these keys, as text: a header line, the public key id, then
    /// PEM sections in a fixed order (CA certificate, CA key, public-key-mode key, then each
    /// platform certificate followed by its key, oldest first). Holds private keys: store it
    /// like one.
    pub fn to_pem_bundle(&self) -> String {
        let mut out = format!("{BUNDLE_HEADER}\n{PUBLIC_KEY_ID_LABEL}{}\n", self.public_key_id);
        out.push_str(&self.ca_pem);
        out.push_str(&self.ca_key_pem);
        out.push_str(&self.public_key_private_pem);
        for p in &self.platform {
            out.push_str(&p.pem);
            out.push_str(&p.key_pem);
        }
        out
    }

    /// Reads what [`PlatformKeys::to_pem_bundle`] wrote; checks that every key matches its
    /// certificate.
    pub fn from_pem_bundle(text: &str) -> Result<Self, KeysError> {
        let bad = |why: &str| KeysError::Bundle(why.to_owned());
        let mut lines = text.lines();
        if lines.next().map(str::trim) != Some(BUNDLE_HEADER) {
            return Err(bad("missing header line"));
        }
        let public_key_id = lines
            .next()
            .and_then(|l| l.trim().strip_prefix(PUBLIC_KEY_ID_LABEL.trim_end()))
            .map(|id| id.trim().to_owned())
            .filter(|id| id.starts_with("PUB_KEY_ID_"))
            .ok_or_else(|| bad("missing public_key_id line"))?;

        let blocks = pem_blocks(text);
        if blocks.len() < 5 || !(blocks.len() - 3).is_multiple_of(2) {
            return Err(bad("expected CA cert, CA key, public key, then cert/key pairs"));
        }
        let ca_pem = blocks[0].clone();
        let ca_cert = Certificate::from_pem(&ca_pem)?;
        let ca_key = RsaPrivateKey::load(&blocks[1])?;
        if ca_cert.public_key()? != &ca_key.public_key() {
            return Err(bad("the CA key does not match the CA certificate"));
        }
        let public_key_private = RsaPrivateKey::load(&blocks[2])?;
        let mut platform = Vec::new();
        for pair in blocks[3..].chunks(2) {
            let cert = Certificate::from_pem(&pair[0])?;
            let key = RsaPrivateKey::load(&pair[1])?;
            if cert.public_key()? != &key.public_key() {
                return Err(bad("a platform key does not match its certificate"));
            }
            platform.push(PlatformCert {
                pem: pair[0].clone(),
                cert,
                key,
                key_pem: pair[1].clone(),
            });
        }
        Ok(Self {
            ca_pem,
            ca_key,
            ca_key_pem: blocks[1].clone(),
            platform,
            public_key_id,
            public_key_private,
            public_key_private_pem: blocks[2].clone(),
        })
    }

    pub(crate) fn current(&self) -> &PlatformCert {
        // `generate` and `from_pem_bundle` both guarantee at least one certificate.
        &self.platform[self.platform.len() - 1]
    }

    /// PEM of the certificate that signs now.
    pub fn platform_certificate_pem(&self) -> String {
        self.current().pem.clone()
    }

    /// Serial (upper-case hex) of the certificate that signs now.
    pub fn platform_serial(&self) -> String {
        self.current().serial().to_owned()
    }

    /// Every platform certificate still listed, oldest first.
    pub fn platform_serials(&self) -> Vec<String> {
        self.platform.iter().map(|p| p.serial().to_owned()).collect()
    }

    /// PEM of the sandbox root CA that issues the platform certificates.
    pub fn ca_certificate_pem(&self) -> String {
        self.ca_pem.clone()
    }

    /// The WeChat Pay public key, SPKI PEM (`BEGIN PUBLIC KEY`), as the merchant portal hands it out.
    pub fn public_key_pem(&self) -> String {
        self.public_key_private.public_key().to_spki_pem()
    }

    pub fn public_key(&self) -> RsaPublicKey {
        self.public_key_private.public_key()
    }

    pub fn public_key_id(&self) -> String {
        self.public_key_id.clone()
    }
}

/// Each PEM section of `text` re-armoured on its own, in order (labels kept).
fn pem_blocks(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("-----BEGIN ") {
            current = Some(format!("{line}\n"));
        } else if let Some(block) = current.as_mut() {
            block.push_str(line);
            block.push('\n');
            if line.starts_with("-----END ") {
                out.extend(current.take());
            }
        }
    }
    out
}

fn rcgen_key(key: &RsaPrivateKey) -> Result<KeyPair, KeysError> {
    KeyPair::from_pem_and_sign_algo(&key.to_pkcs8_pem()?, &PKCS_RSA_SHA256)
        .map_err(|e| KeysError::Generate(e.to_string()))
}

fn name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CountryName, "CN");
    dn.push(DnType::OrganizationName, "paymux sandbox");
    dn.push(DnType::OrganizationalUnitName, "WeChat Pay sandbox");
    dn.push(DnType::CommonName, cn);
    dn
}

/// A positive 20-byte serial whose first byte is non-zero, so its hex is 40 digits like
/// WeChat's platform serials.
fn random_serial() -> SerialNumber {
    let mut bytes = paymux_crypto::random_bytes::<20>();
    bytes[0] = (bytes[0] & 0x3f) | 0x10;
    SerialNumber::from_slice(&bytes)
}

fn validity(params: &mut CertificateParams) {
    let now = OffsetDateTime::now_utc();
    // Back-dated a little so a client whose clock lags still sees it as valid.
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(CERT_VALIDITY_DAYS);
}

fn issue_ca(ca_key: &RsaPrivateKey) -> Result<String, KeysError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = name("paymux sandbox WeChat Pay Root CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.serial_number = Some(random_serial());
    validity(&mut params);
    params.not_after = OffsetDateTime::now_utc() + Duration::days(2 * CERT_VALIDITY_DAYS);
    let cert =
        params.self_signed(&rcgen_key(ca_key)?).map_err(|e| KeysError::Issue(e.to_string()))?;
    Ok(cert.pem())
}

fn issue_platform(ca_pem: &str, ca_key: &RsaPrivateKey) -> Result<PlatformCert, KeysError> {
    let issuer = Issuer::from_ca_cert_pem(ca_pem, rcgen_key(ca_key)?)
        .map_err(|e| KeysError::Issue(e.to_string()))?;
    let key = RsaPrivateKey::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = name("Tenpay.com sign (paymux sandbox)");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.serial_number = Some(random_serial());
    validity(&mut params);
    let cert = params
        .signed_by(&rcgen_key(&key)?, &issuer)
        .map_err(|e| KeysError::Issue(e.to_string()))?;
    let pem = cert.pem();
    let parsed = Certificate::from_pem(&pem)?;
    Ok(PlatformCert { pem, cert: parsed, key_pem: key.to_pkcs8_pem()?, key })
}

fn new_public_key_id() -> String {
    // Real ids are PUB_KEY_ID_ followed by 34 digits.
    let digits: String =
        paymux_crypto::random_bytes::<34>().iter().map(|b| char::from(b'0' + b % 10)).collect();
    format!("PUB_KEY_ID_{digits}")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_survive_a_bundle_round_trip_with_rotation() {
        let mut keys = PlatformKeys::generate().unwrap();
        let first = keys.platform_serial();
        assert_eq!(first.len(), 40);
        let second = keys.rotate().unwrap();
        assert_ne!(first, second);
        assert_eq!(keys.platform_serial(), second);

        let bundle = keys.to_pem_bundle();
        let again = PlatformKeys::from_pem_bundle(&bundle).unwrap();
        assert_eq!(again.platform_serials(), vec![first, second]);
        assert_eq!(again.public_key_id(), keys.public_key_id());
        assert_eq!(again.public_key_pem(), keys.public_key_pem());
        assert!(again.public_key_id().starts_with("PUB_KEY_ID_"));

        let cert = Certificate::from_pem(&again.platform_certificate_pem()).unwrap();
        assert!(cert.is_valid_at(OffsetDateTime::now_utc()));
        assert!(cert.issuer().contains("Root CA"));
        assert!(!format!("{again:?}").contains("PRIVATE"));
    }

    #[test]
    fn a_bundle_with_a_mismatched_key_is_refused() {
        let a = PlatformKeys::generate().unwrap().to_pem_bundle();
        let b = PlatformKeys::generate().unwrap().to_pem_bundle();
        let blocks_a = pem_blocks(&a);
        let blocks_b = pem_blocks(&b);
        let mixed = format!(
            "{BUNDLE_HEADER}\n{PUBLIC_KEY_ID_LABEL}PUB_KEY_ID_1\n{}{}{}{}{}",
            blocks_a[0], blocks_a[1], blocks_a[2], blocks_a[3], blocks_b[4]
        );
        assert!(matches!(PlatformKeys::from_pem_bundle(&mixed), Err(KeysError::Bundle(_))));
        assert!(PlatformKeys::from_pem_bundle("nonsense").is_err());
    }
}

//! The sandbox's UnionPay certificates: a fake root -> intermediate -> signing chain (the
//! signing certificate's CN carries UnionPay's owner name, as the notes require of a real one),
//! and a merchant key and certificate issued under the same intermediate.

use std::fmt;
use std::path::{Path, PathBuf};

use paymux_crypto::{Certificate, RsaPrivateKey};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_RSA_SHA256, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use crate::protocol::{UNIONPAY_OWNER, pem_crlf};

/// Why keys could not be made, written or read.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("certificate issuance failed: {0}")]
    Issue(#[from] rcgen::Error),
    #[error(transparent)]
    Crypto(#[from] paymux_crypto::CryptoError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

const VALIDITY_DAYS: i64 = 5 * 365;

/// The mock's "UnionPay": the chain a merchant configures (root, intermediate) and the signing
/// key and certificate its answers and notifications carry. `Debug` never prints the key.
#[derive(Clone)]
pub struct UnionpayKeys {
    root_pem: String,
    intermediate_pem: String,
    signing_pem: String,
    signing_key: RsaPrivateKey,
    /// The signing certificate as `signPubKeyCert` carries it (CR LF, no trailing newline).
    sign_pub_key_cert: String,
}

impl fmt::Debug for UnionpayKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnionpayKeys").finish_non_exhaustive()
    }
}

/// A merchant's signing key and certificate; `cert_id` is the certificate's serial in decimal.
#[derive(Clone)]
pub struct MerchantCredentials {
    pub cert_id: String,
    pub private_key: RsaPrivateKey,
    pub certificate_pem: String,
}

impl fmt::Debug for MerchantCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MerchantCredentials")
            .field("cert_id", &self.cert_id)
            .finish_non_exhaustive()
    }
}

/// Where [`write_sandbox_credentials`] put each file.
#[derive(Debug, Clone)]
pub struct CredentialPaths {
    pub root_certificate: PathBuf,
    pub intermediate_certificate: PathBuf,
    pub signing_certificate: PathBuf,
    pub signing_private_key: PathBuf,
    /// The intermediate's key, so tests can issue certificates under the sandbox's own chain
    /// ([`issue_signing_certificate`]); absent in key directories written before it was kept.
    pub intermediate_private_key: PathBuf,
    pub merchant_certificate: PathBuf,
    pub merchant_private_key: PathBuf,
}

impl CredentialPaths {
    /// The file names inside `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            root_certificate: dir.join("unionpay-root.pem"),
            intermediate_certificate: dir.join("unionpay-intermediate.pem"),
            signing_certificate: dir.join("unionpay-signing-cert.pem"),
            signing_private_key: dir.join("unionpay-signing-key.pem"),
            intermediate_private_key: dir.join("unionpay-intermediate-key.pem"),
            merchant_certificate: dir.join("unionpay-merchant-cert.pem"),
            merchant_private_key: dir.join("unionpay-merchant-key.pem"),
        }
    }
}

impl UnionpayKeys {
    /// Reads keys written before; checks that the signing key matches its certificate.
    pub fn from_pem(
        root_pem: &str,
        intermediate_pem: &str,
        signing_pem: &str,
        signing_key_pem: &str,
    ) -> Result<Self, KeysError> {
        let signing = Certificate::from_pem(signing_pem)?;
        let signing_key = RsaPrivateKey::load(signing_key_pem)?;
        if signing.public_key()? != &signing_key.public_key() {
            return Err(paymux_crypto::CryptoError::Key(
                "the signing key does not match the signing certificate".into(),
            )
            .into());
        }
        Certificate::from_pem(root_pem)?;
        Certificate::from_pem(intermediate_pem)?;
        Ok(Self {
            root_pem: root_pem.to_owned(),
            intermediate_pem: intermediate_pem.to_owned(),
            signing_pem: signing_pem.to_owned(),
            sign_pub_key_cert: pem_crlf(signing.der()),
            signing_key,
        })
    }

    pub fn root_certificate_pem(&self) -> &str {
        &self.root_pem
    }

    pub fn intermediate_certificate_pem(&self) -> &str {
        &self.intermediate_pem
    }

    pub fn signing_certificate_pem(&self) -> &str {
        &self.signing_pem
    }

    /// The key answers and notifications are signed with (for tests that act as UnionPay).
    pub fn signing_key(&self) -> &RsaPrivateKey {
        &self.signing_key
    }

    /// The signing certificate as `signPubKeyCert` carries it (CR LF, no trailing newline).
    pub fn sign_pub_key_cert(&self) -> &str {
        &self.sign_pub_key_cert
    }
}

/// Makes a fresh chain and a merchant certificate for `mer_id`: (the mock's keys, the
/// merchant's credentials).
pub fn generate(mer_id: &str) -> Result<(UnionpayKeys, MerchantCredentials), KeysError> {
    let (keys, merchant, _) = generate_chain(mer_id)?;
    Ok((keys, merchant))
}

/// [`generate`], also handing back the intermediate's key.
fn generate_chain(
    mer_id: &str,
) -> Result<(UnionpayKeys, MerchantCredentials, RsaPrivateKey), KeysError> {
    let root_key = RsaPrivateKey::generate()?;
    let mut root = ca_params("paymux sandbox UnionPay Root CA");
    root.not_after = OffsetDateTime::now_utc() + Duration::days(2 * VALIDITY_DAYS);
    let root_cert = root.self_signed(&rcgen_key(&root_key)?)?;
    let root_pem = root_cert.pem();

    let intermediate_key = RsaPrivateKey::generate()?;
    let root_issuer = Issuer::from_ca_cert_pem(&root_pem, rcgen_key(&root_key)?)?;
    let intermediate_pem = ca_params("paymux sandbox UnionPay OCA1")
        .signed_by(&rcgen_key(&intermediate_key)?, &root_issuer)?
        .pem();
    let issuer = Issuer::from_ca_cert_pem(&intermediate_pem, rcgen_key(&intermediate_key)?)?;

    let signing_key = RsaPrivateKey::generate()?;
    let signing_pem =
        leaf_params(&signing_cn()).signed_by(&rcgen_key(&signing_key)?, &issuer)?.pem();

    let merchant_key = RsaPrivateKey::generate()?;
    let merchant_cn = format!("041@Z{mer_id}@paymux sandbox merchant@00000001");
    let merchant_pem =
        leaf_params(&merchant_cn).signed_by(&rcgen_key(&merchant_key)?, &issuer)?.pem();
    let merchant_cert = Certificate::from_pem(&merchant_pem)?;

    let keys = UnionpayKeys::from_pem(
        &root_pem,
        &intermediate_pem,
        &signing_pem,
        &signing_key.to_pkcs8_pem()?,
    )?;
    let merchant = MerchantCredentials {
        cert_id: merchant_cert.serial_decimal().to_owned(),
        private_key: merchant_key,
        certificate_pem: merchant_pem,
    };
    Ok((keys, merchant, intermediate_key))
}

/// A signing certificate with UnionPay's owner name, issued by the intermediate
/// (`intermediate_pem`, `intermediate_key`) and valid from `not_before` to `not_after`, and its
/// fresh key: how a test makes an expired or not-yet-valid certificate that otherwise chains to
/// the sandbox's root. Returns (key, certificate PEM).
pub fn issue_signing_certificate(
    intermediate_pem: &str,
    intermediate_key: &RsaPrivateKey,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<(RsaPrivateKey, String), KeysError> {
    let issuer = Issuer::from_ca_cert_pem(intermediate_pem, rcgen_key(intermediate_key)?)?;
    let key = RsaPrivateKey::generate()?;
    let mut params = leaf_params(&signing_cn());
    params.not_before = not_before;
    params.not_after = not_after;
    let pem = params.signed_by(&rcgen_key(&key)?, &issuer)?.pem();
    Ok((key, pem))
}

fn signing_cn() -> String {
    format!("041@Z{}@{UNIONPAY_OWNER}@00000001", paymux_mock_kit::random_digits(16))
}

/// What `paymux up` calls: the chain and the merchant credentials for `mer_id`, read from `dir`
/// when written there before (so configured clients keep working), else generated and written
/// as PEM files (private keys readable by the owner only).
pub fn write_sandbox_credentials(
    dir: &Path,
    mer_id: &str,
) -> Result<(UnionpayKeys, MerchantCredentials, CredentialPaths), KeysError> {
    let paths = CredentialPaths::in_dir(dir);
    if paths.merchant_private_key.exists() && paths.signing_private_key.exists() {
        let keys = UnionpayKeys::from_pem(
            &read(&paths.root_certificate)?,
            &read(&paths.intermediate_certificate)?,
            &read(&paths.signing_certificate)?,
            &read(&paths.signing_private_key)?,
        )?;
        let certificate_pem = read(&paths.merchant_certificate)?;
        let merchant = MerchantCredentials {
            cert_id: Certificate::from_pem(&certificate_pem)?.serial_decimal().to_owned(),
            private_key: RsaPrivateKey::load(&read(&paths.merchant_private_key)?)?,
            certificate_pem,
        };
        return Ok((keys, merchant, paths));
    }
    let (keys, merchant, intermediate_key) = generate_chain(mer_id)?;
    write(&paths.root_certificate, &keys.root_pem, false)?;
    write(&paths.intermediate_certificate, &keys.intermediate_pem, false)?;
    write(&paths.intermediate_private_key, &intermediate_key.to_pkcs8_pem()?, true)?;
    write(&paths.signing_certificate, &keys.signing_pem, false)?;
    write(&paths.signing_private_key, &keys.signing_key.to_pkcs8_pem()?, true)?;
    write(&paths.merchant_certificate, &merchant.certificate_pem, false)?;
    write(&paths.merchant_private_key, &merchant.private_key.to_pkcs8_pem()?, true)?;
    Ok((keys, merchant, paths))
}

fn read(path: &Path) -> Result<String, KeysError> {
    std::fs::read_to_string(path).map_err(|source| KeysError::Io { path: path.to_owned(), source })
}

fn write(path: &Path, text: &str, private: bool) -> Result<(), KeysError> {
    let io = |source| KeysError::Io { path: path.to_owned(), source };
    std::fs::write(path, text).map_err(io)?;
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    }
    #[cfg(not(unix))]
    let _ = private;
    Ok(())
}

fn rcgen_key(key: &RsaPrivateKey) -> Result<KeyPair, KeysError> {
    Ok(KeyPair::from_pem_and_sign_algo(&key.to_pkcs8_pem()?, &PKCS_RSA_SHA256)?)
}

fn name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CountryName, "CN");
    dn.push(DnType::OrganizationName, "paymux sandbox");
    dn.push(DnType::CommonName, cn);
    dn
}

/// A positive serial of five bytes, so `certId` has about eleven decimal digits like UnionPay's.
fn serial() -> SerialNumber {
    let mut bytes = paymux_crypto::random_bytes::<5>();
    bytes[0] = (bytes[0] & 0x3f) | 0x10;
    SerialNumber::from_slice(&bytes)
}

fn dated(mut params: CertificateParams) -> CertificateParams {
    let now = OffsetDateTime::now_utc();
    // Back-dated a little so a client whose clock lags still sees it as valid.
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(VALIDITY_DAYS);
    params.serial_number = Some(serial());
    params
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = name(cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    dated(params)
}

fn leaf_params(cn: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = name(cn);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    dated(params)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_signing_certificate_carries_unionpay_as_owner_and_is_valid_now() {
        let (keys, merchant) = generate("777290058110048").unwrap();
        let signing = Certificate::from_pem(keys.signing_certificate_pem()).unwrap();
        let cn = signing.subject().split(',').find_map(|p| p.trim().strip_prefix("CN=")).unwrap();
        assert_eq!(cn.split('@').nth(2), Some(UNIONPAY_OWNER));
        assert!(signing.is_valid_at(OffsetDateTime::now_utc()));
        let intermediate = Certificate::from_pem(keys.intermediate_certificate_pem()).unwrap();
        assert_eq!(signing.issuer(), intermediate.subject());
        let root = Certificate::from_pem(keys.root_certificate_pem()).unwrap();
        assert_eq!(intermediate.issuer(), root.subject());
        assert!(!keys.sign_pub_key_cert().ends_with('\n'));
        assert!(keys.sign_pub_key_cert().contains("\r\n"));

        let cert = Certificate::from_pem(&merchant.certificate_pem).unwrap();
        assert_eq!(cert.serial_decimal(), merchant.cert_id);
        assert!(merchant.cert_id.bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(cert.public_key().unwrap(), &merchant.private_key.public_key());
        assert!(!format!("{keys:?}{merchant:?}").contains("PRIVATE"));
    }

    #[test]
    fn sandbox_credentials_are_written_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let (keys, merchant, paths) =
            write_sandbox_credentials(dir.path(), "777290058110048").unwrap();
        assert!(paths.merchant_private_key.exists() && paths.root_certificate.exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&paths.merchant_private_key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (again, merchant_again, _) =
            write_sandbox_credentials(dir.path(), "777290058110048").unwrap();
        assert_eq!(again.signing_certificate_pem(), keys.signing_certificate_pem());
        assert_eq!(merchant_again.cert_id, merchant.cert_id);
    }

    #[test]
    fn a_certificate_issued_under_the_kept_intermediate_chains_to_it_with_the_chosen_validity() {
        let dir = tempfile::tempdir().unwrap();
        let (keys, _, paths) = write_sandbox_credentials(dir.path(), "777290058110048").unwrap();
        let intermediate_key =
            RsaPrivateKey::load(&std::fs::read_to_string(&paths.intermediate_private_key).unwrap())
                .unwrap();
        let now = OffsetDateTime::now_utc();
        let (key, pem) = issue_signing_certificate(
            keys.intermediate_certificate_pem(),
            &intermediate_key,
            now - Duration::days(30),
            now - Duration::days(1),
        )
        .unwrap();
        let cert = Certificate::from_pem(&pem).unwrap();
        let intermediate = Certificate::from_pem(keys.intermediate_certificate_pem()).unwrap();
        assert_eq!(cert.issuer(), intermediate.subject());
        assert_eq!(cert.public_key().unwrap(), &key.public_key());
        assert!(!cert.is_valid_at(now), "expired");
        assert!(cert.is_valid_at(now - Duration::days(2)));
        let cn = cert.subject().split(',').find_map(|p| p.trim().strip_prefix("CN=")).unwrap();
        assert_eq!(cn.split('@').nth(2), Some(UNIONPAY_OWNER));
    }
}

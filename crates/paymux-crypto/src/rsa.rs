use std::fmt;
use std::sync::Arc;

use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::rsa::{
    KeyPair, KeySize, OAEP_SHA1_MGF1SHA1, OaepPublicEncryptingKey, Pkcs1PrivateDecryptingKey,
    Pkcs1PublicEncryptingKey, PrivateDecryptingKey, PublicEncryptingKey,
};
use aws_lc_rs::signature::{
    KeyPair as _, ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256,
};
use rustls_pki_types::pem::SectionKind;

use crate::{CryptoError, b64_decode, b64_encode, pem_encode, pem_sections};

/// An RSA private key for SHA256withRSA (RSASSA-PKCS1-v1_5). Cheap to clone; never printed.
#[derive(Clone)]
pub struct RsaPrivateKey {
    inner: Arc<KeyPair>,
}

impl fmt::Debug for RsaPrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RsaPrivateKey(<redacted>)")
    }
}

impl RsaPrivateKey {
    /// A fresh RSA-2048 key (the sandbox makes its keys with this).
    pub fn generate() -> Result<Self, CryptoError> {
        let pair = KeyPair::generate(KeySize::Rsa2048)
            .map_err(|_| CryptoError::Key("RSA key generation failed".into()))?;
        Ok(Self { inner: Arc::new(pair) })
    }

    /// Loads a key in any of the shapes the channels hand out: PEM (`PRIVATE KEY` for PKCS#8,
    /// `RSA PRIVATE KEY` for PKCS#1) or bare base64 of either DER form.
    pub fn load(text: &str) -> Result<Self, CryptoError> {
        if text.contains("-----BEGIN") {
            let sections = pem_sections(text.as_bytes())?;
            for (kind, der) in sections {
                match kind {
                    SectionKind::PrivateKey => return Self::from_pkcs8_der(&der),
                    SectionKind::RsaPrivateKey => return Self::from_pkcs1_der(&der),
                    _ => continue,
                }
            }
            return Err(CryptoError::Key("no RSA private key in the PEM text".into()));
        }
        let der =
            b64_decode(text).ok_or_else(|| CryptoError::Key("neither PEM nor base64".into()))?;
        Self::from_pkcs8_der(&der).or_else(|_| Self::from_pkcs1_der(&der))
    }

    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, CryptoError> {
        KeyPair::from_pkcs8(der)
            .map(|k| Self { inner: Arc::new(k) })
            .map_err(|e| CryptoError::Key(format!("not a PKCS#8 RSA key: {e}")))
    }

    pub fn from_pkcs1_der(der: &[u8]) -> Result<Self, CryptoError> {
        KeyPair::from_der(der)
            .map(|k| Self { inner: Arc::new(k) })
            .map_err(|e| CryptoError::Key(format!("not a PKCS#1 RSA key: {e}")))
    }

    /// SHA256withRSA over `message`.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let mut sig = vec![0u8; self.inner.public_modulus_len()];
        self.inner
            .sign(&RSA_PKCS1_SHA256, &rng, message, &mut sig)
            .map_err(|_| CryptoError::Sign)?;
        Ok(sig)
    }

    /// SHA256withRSA over `message`, base64: the form every channel puts on the wire.
    pub fn sign_base64(&self, message: &[u8]) -> Result<String, CryptoError> {
        self.sign(message).map(|s| b64_encode(&s))
    }

    pub fn public_key(&self) -> RsaPublicKey {
        // The key pair's own public half always re-parses.
        #[allow(clippy::expect_used)]
        RsaPublicKey::from_der(self.inner.public_key().as_ref())
            .expect("an RSA key pair's public key is valid")
    }

    pub fn to_pkcs8_der(&self) -> Result<Vec<u8>, CryptoError> {
        self.inner
            .as_der()
            .map(|d| d.as_ref().to_vec())
            .map_err(|_| CryptoError::Key("cannot encode the key as PKCS#8".into()))
    }

    /// PKCS#8 PEM (`BEGIN PRIVATE KEY`), the form SDKs accept most widely.
    pub fn to_pkcs8_pem(&self) -> Result<String, CryptoError> {
        Ok(pem_encode("PRIVATE KEY", &self.to_pkcs8_der()?))
    }

    /// RSAES-PKCS1-v1_5 decryption (UnionPay encrypts `accNo` for the merchant this way).
    pub fn decrypt_pkcs1v15(&self, ciphertext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let key = PrivateDecryptingKey::from_pkcs8(&self.to_pkcs8_der()?)
            .map_err(|e| CryptoError::Key(format!("not an RSA decryption key: {e}")))?;
        let key = Pkcs1PrivateDecryptingKey::new(key)
            .map_err(|_| CryptoError::Key("not an RSA decryption key".into()))?;
        let mut out = vec![0u8; key.min_output_size()];
        let plain = key.decrypt(ciphertext, &mut out).map_err(|_| CryptoError::Decrypt)?;
        Ok(plain.to_vec())
    }
}

/// An RSA public key, parsed once, for SHA256withRSA verification.
#[derive(Clone)]
pub struct RsaPublicKey {
    parsed: Arc<ParsedPublicKey>,
    spki_der: Arc<[u8]>,
}

impl fmt::Debug for RsaPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RsaPublicKey(..)")
    }
}

impl PartialEq for RsaPublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.spki_der == other.spki_der
    }
}

impl RsaPublicKey {
    /// Loads `PUBLIC KEY` (SPKI) or `RSA PUBLIC KEY` (PKCS#1) PEM, or bare base64 of either DER.
    pub fn load(text: &str) -> Result<Self, CryptoError> {
        if text.contains("-----BEGIN") {
            if text.contains("BEGIN CERTIFICATE") {
                return crate::Certificate::from_pem(text)?.public_key().cloned();
            }
            if let Some(der) = rsa_public_pem_body(text) {
                return Self::from_der(&der);
            }
            let sections = pem_sections(text.as_bytes())?;
            for (kind, der) in sections {
                if kind == SectionKind::PublicKey {
                    return Self::from_der(&der);
                }
            }
            return Err(CryptoError::Key("no public key in the PEM text".into()));
        }
        let der =
            b64_decode(text).ok_or_else(|| CryptoError::Key("neither PEM nor base64".into()))?;
        Self::from_der(&der)
    }

    /// From DER: SubjectPublicKeyInfo or PKCS#1 RSAPublicKey.
    pub fn from_der(der: &[u8]) -> Result<Self, CryptoError> {
        let key = aws_lc_rs::rsa::PublicKey::from_der(der)
            .map_err(|e| CryptoError::Key(format!("not an RSA public key: {e}")))?;
        let spki: PublicKeyX509Der<'static> =
            key.as_der().map_err(|_| CryptoError::Key("cannot encode the public key".into()))?;
        let spki_der: Arc<[u8]> = Arc::from(spki.as_ref());
        let parsed = ParsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &spki_der[..])
            .map_err(|e| CryptoError::Key(format!("unsupported RSA public key: {e}")))?;
        Ok(Self { parsed: Arc::new(parsed), spki_der })
    }

    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), CryptoError> {
        self.parsed.verify_sig(message, signature).map_err(|_| CryptoError::BadSignature)
    }

    /// Verifies a base64 signature (whitespace tolerated, as some channels wrap it).
    pub fn verify_base64(&self, message: &[u8], signature_b64: &str) -> Result<(), CryptoError> {
        let sig = b64_decode(signature_b64).ok_or(CryptoError::SignatureEncoding)?;
        self.verify(message, &sig)
    }

    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// RSAES-PKCS1-v1_5 encryption (what UnionPay does to `accNo`; the sandbox and tests use it).
    pub fn encrypt_pkcs1v15(&self, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let key = PublicEncryptingKey::from_der(&self.spki_der)
            .map_err(|e| CryptoError::Key(format!("not an RSA encryption key: {e}")))?;
        let key = Pkcs1PublicEncryptingKey::new(key)
            .map_err(|_| CryptoError::Key("not an RSA encryption key".into()))?;
        let mut out = vec![0u8; key.ciphertext_size()];
        let sealed = key.encrypt(plaintext, &mut out).map_err(|_| CryptoError::Encrypt)?;
        Ok(sealed.to_vec())
    }

    /// RSAES-OAEP with SHA-1 and MGF1-SHA-1 (what WeChat Pay v3 asks for its sensitive fields,
    /// such as a profit-sharing receiver's name). Randomised: each call gives a new ciphertext.
    pub fn encrypt_oaep_sha1(&self, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let key = PublicEncryptingKey::from_der(&self.spki_der)
            .map_err(|e| CryptoError::Key(format!("not an RSA encryption key: {e}")))?;
        let key = OaepPublicEncryptingKey::new(key)
            .map_err(|_| CryptoError::Key("not an RSA encryption key".into()))?;
        let mut out = vec![0u8; key.ciphertext_size()];
        let sealed = key
            .encrypt(&OAEP_SHA1_MGF1SHA1, plaintext, &mut out, None)
            .map_err(|_| CryptoError::Encrypt)?;
        Ok(sealed.to_vec())
    }

    /// SPKI PEM (`BEGIN PUBLIC KEY`).
    pub fn to_spki_pem(&self) -> String {
        pem_encode("PUBLIC KEY", &self.spki_der)
    }

    /// Bare base64 SPKI, as Alipay's tools show public keys.
    pub fn to_spki_base64(&self) -> String {
        b64_encode(&self.spki_der)
    }
}

/// rustls-pki-types does not know the `RSA PUBLIC KEY` label; read that one by hand.
fn rsa_public_pem_body(text: &str) -> Option<Vec<u8>> {
    let start = text.find("-----BEGIN RSA PUBLIC KEY-----")?;
    let body = &text[start + "-----BEGIN RSA PUBLIC KEY-----".len()..];
    let end = body.find("-----END RSA PUBLIC KEY-----")?;
    b64_decode(&body[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_round_trips_through_pem_and_base64() {
        let key = RsaPrivateKey::generate().unwrap();
        let pem = key.to_pkcs8_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let again = RsaPrivateKey::load(&pem).unwrap();
        assert_eq!(again.public_key(), key.public_key());

        let bare = b64_encode(&key.to_pkcs8_der().unwrap());
        assert_eq!(RsaPrivateKey::load(&bare).unwrap().public_key(), key.public_key());

        let public = key.public_key();
        assert_eq!(RsaPublicKey::load(&public.to_spki_pem()).unwrap(), public);
        assert_eq!(RsaPublicKey::load(&public.to_spki_base64()).unwrap(), public);
    }

    #[test]
    fn signatures_are_deterministic_and_bound_to_the_message() {
        let key = RsaPrivateKey::generate().unwrap();
        let a = key.sign(b"message").unwrap();
        assert_eq!(a, key.sign(b"message").unwrap());
        assert_eq!(a.len(), 256);
        let public = key.public_key();
        assert!(public.verify(b"message", &a).is_ok());
        assert_eq!(public.verify(b"messagf", &a), Err(CryptoError::BadSignature));
        let other = RsaPrivateKey::generate().unwrap().public_key();
        assert_eq!(other.verify(b"message", &a), Err(CryptoError::BadSignature));
        assert_eq!(public.verify_base64(b"message", "***"), Err(CryptoError::SignatureEncoding));
    }

    #[test]
    fn pkcs1v15_encryption_round_trips_and_refuses_tampering() {
        let key = RsaPrivateKey::generate().unwrap();
        let sealed = key.public_key().encrypt_pkcs1v15(b"6216***********0018").unwrap();
        assert_eq!(sealed.len(), 256);
        assert_eq!(key.decrypt_pkcs1v15(&sealed).unwrap(), b"6216***********0018");
        let mut bad = sealed.clone();
        bad[10] ^= 1;
        assert_eq!(key.decrypt_pkcs1v15(&bad), Err(CryptoError::Decrypt));
        let other = RsaPrivateKey::generate().unwrap();
        assert_eq!(other.decrypt_pkcs1v15(&sealed), Err(CryptoError::Decrypt));
        assert_eq!(key.decrypt_pkcs1v15(b"short"), Err(CryptoError::Decrypt));
    }

    #[test]
    fn oaep_sha1_encryption_is_randomised_and_opens_with_the_private_key() {
        use aws_lc_rs::rsa::OaepPrivateDecryptingKey;

        let key = RsaPrivateKey::generate().unwrap();
        let a = key.public_key().encrypt_oaep_sha1("示例商户全称".as_bytes()).unwrap();
        let b = key.public_key().encrypt_oaep_sha1("示例商户全称".as_bytes()).unwrap();
        assert_eq!(a.len(), 256);
        assert_ne!(a, b);
        let private = PrivateDecryptingKey::from_pkcs8(&key.to_pkcs8_der().unwrap()).unwrap();
        let private = OaepPrivateDecryptingKey::new(private).unwrap();
        let mut out = vec![0u8; private.min_output_size()];
        let plain = private.decrypt(&OAEP_SHA1_MGF1SHA1, &a, &mut out, None).unwrap();
        assert_eq!(plain, "示例商户全称".as_bytes());
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        assert!(matches!(RsaPrivateKey::load("not a key"), Err(CryptoError::Key(_))));
        assert!(matches!(RsaPublicKey::load("AAAA"), Err(CryptoError::Key(_))));
        let pem = "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n";
        assert!(RsaPrivateKey::load(pem).is_err());
    }
}

//! The cryptography paymux needs, and nothing more: RSA-2048 SHA256withRSA (PKCS#1 v1.5) signing
//! and verification, RSAES-PKCS1-v1_5 decryption, certificate chain checks, AES-GCM, HMAC-SHA256, constant-time comparison, and loading of keys and
//! certificates in the shapes the channels hand them out (PEM, bare base64, PKCS#1, PKCS#8, SPKI,
//! X.509).
//!
//! It is a thin layer over aws-lc-rs. Keys are parsed once, when loaded; signing and verifying then
//! do no parsing.
//!
//! ```
//! use paymux_crypto::RsaPrivateKey;
//!
//! let key = RsaPrivateKey::generate().unwrap();
//! let public = key.public_key();
//! let sig = key.sign_base64(b"a=1&b=2").unwrap();
//! assert!(public.verify_base64(b"a=1&b=2", &sig).is_ok());
//! assert!(public.verify_base64(b"a=1&b=3", &sig).is_err());
//! ```

mod aead;
mod cert;
mod mac;
mod pem;
mod rsa;

pub use aead::{aes_gcm_decrypt, aes_gcm_encrypt};
pub use cert::{Certificate, verify_chain};
pub use mac::{constant_time_eq, hmac_sha256, hmac_sha256_hex, sha256_hex};
pub use pem::{pem_encode, pem_sections};
pub use rsa::{RsaPrivateKey, RsaPublicKey};

/// Why a key could not be loaded or a signature or ciphertext did not check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("key could not be loaded: {0}")]
    Key(String),
    #[error("certificate could not be loaded: {0}")]
    Certificate(String),
    #[error("signature is not valid base64")]
    SignatureEncoding,
    #[error("signature does not verify")]
    BadSignature,
    #[error("signing failed")]
    Sign,
    #[error("RSA decryption failed")]
    Decrypt,
    #[error("RSA encryption failed")]
    Encrypt,
    #[error("certificate chain does not verify: {0}")]
    Chain(String),
    #[error("AES-GCM: {0}")]
    Aead(&'static str),
}

/// Standard base64 (with padding), as every channel uses it for signatures.
pub fn b64_encode(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Decodes standard base64, ignoring ASCII whitespace (keys are often wrapped over lines).
pub fn b64_decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(compact).ok()
}

/// Random bytes from the system's secure generator.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    // SystemRandom fails only when the OS has no entropy source at all.
    #[allow(clippy::expect_used)]
    aws_lc_rs::rand::fill(&mut out).expect("the system random generator is available");
    out
}

/// A random string of `len` characters from `[0-9A-Za-z]` (nonces).
pub fn random_alphanumeric(len: usize) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut s = String::with_capacity(len);
    while s.len() < len {
        for b in random_bytes::<32>() {
            // 62 * 4 = 248: reject the top values to stay unbiased.
            if b < 248 && s.len() < len {
                s.push(ALPHABET[(b % 62) as usize] as char);
            }
        }
    }
    s
}

use aws_lc_rs::aead::{AES_128_GCM, AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};

use crate::CryptoError;

fn key_for(key: &[u8]) -> Result<LessSafeKey, CryptoError> {
    let alg = match key.len() {
        32 => &AES_256_GCM,
        16 => &AES_128_GCM,
        _ => return Err(CryptoError::Aead("key must be 16 or 32 bytes")),
    };
    let unbound = UnboundKey::new(alg, key).map_err(|_| CryptoError::Aead("bad key"))?;
    Ok(LessSafeKey::new(unbound))
}

fn nonce_for(nonce: &[u8]) -> Result<Nonce, CryptoError> {
    Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Aead("nonce must be 12 bytes"))
}

/// AES-GCM decryption of `ciphertext || tag` (the tag is the last 16 bytes). The key length
/// picks AES-256 (32 bytes) or AES-128 (16 bytes); callers that require one size check it.
pub fn aes_gcm_decrypt(
    key: &[u8],
    nonce: &[u8],
    aad: &[u8],
    ciphertext_and_tag: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let key = key_for(key)?;
    let mut buf = ciphertext_and_tag.to_vec();
    let plain = key
        .open_in_place(nonce_for(nonce)?, Aad::from(aad), &mut buf)
        .map_err(|_| CryptoError::Aead("authentication failed"))?;
    Ok(plain.to_vec())
}

/// AES-GCM encryption; returns `ciphertext || tag`.
pub fn aes_gcm_encrypt(
    key: &[u8],
    nonce: &[u8],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let key = key_for(key)?;
    let mut buf = plaintext.to_vec();
    key.seal_in_place_append_tag(nonce_for(nonce)?, Aad::from(aad), &mut buf)
        .map_err(|_| CryptoError::Aead("encryption failed"))?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper_detection() {
        let key = [7u8; 32];
        let nonce = b"0123456789ab";
        let sealed = aes_gcm_encrypt(&key, nonce, b"transaction", b"{\"a\":1}").unwrap();
        assert_eq!(aes_gcm_decrypt(&key, nonce, b"transaction", &sealed).unwrap(), b"{\"a\":1}");
        let mut bad = sealed.clone();
        bad[0] ^= 1;
        assert!(aes_gcm_decrypt(&key, nonce, b"transaction", &bad).is_err());
        assert!(aes_gcm_decrypt(&key, nonce, b"certificate", &sealed).is_err());
        assert!(aes_gcm_decrypt(&key[..31], nonce, b"", &sealed).is_err());
        assert!(aes_gcm_decrypt(&key, b"short", b"", &sealed).is_err());
    }
}

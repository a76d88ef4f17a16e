//! The mock's own ACP 5.1.0 byte rules, written from the protocol notes and pinned by the
//! vectors U1, U2 and U4: the signing and verification strings, signMethod 01 and 11, raw
//! `k=v&` answers, the encrypted `accNo`, amounts and Beijing times. No I/O.

use std::collections::BTreeMap;

use aws_lc_rs::rsa::{Pkcs1PublicEncryptingKey, PublicEncryptingKey};
use paymux_crypto::{RsaPrivateKey, RsaPublicKey, b64_encode, sha256_hex};
use time::macros::{format_description, offset};
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset, format_description::BorrowedFormatItem};

/// A message's fields by name (sorted, as every ACP string wants them).
pub type Fields = BTreeMap<String, String>;

pub const VERSION: &str = "5.1.0";
/// signMethod 01: RSA with the merchant's certificate.
pub const SIGN_METHOD_RSA: &str = "01";
/// signMethod 11: SHA-256 with a secure key.
pub const SIGN_METHOD_SECURE_KEY: &str = "11";
/// The owner name a UnionPay signing certificate carries as the third `@`-part of its CN.
pub const UNIONPAY_OWNER: &str = "中国银联股份有限公司";

const BEIJING: UtcOffset = offset!(+8);
const COMPACT: &[BorrowedFormatItem<'static>] =
    format_description!("[year][month][day][hour][minute][second]");

/// Why a message could not be signed or a value could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error(transparent)]
    Crypto(#[from] paymux_crypto::CryptoError),
    #[error("the merchant certificate's key cannot encrypt: {0}")]
    EncryptionKey(String),
    #[error("encryption failed")]
    Encrypt,
}

/// The string a request is signed over: every non-empty field except `signature`, sorted by
/// name, joined `name=value&...` with raw values.
pub fn signing_string(fields: &Fields) -> String {
    join(fields.iter().filter(|(k, v)| !v.is_empty() && k.as_str() != "signature"))
}

/// The string an answer or notification is verified over: every field except `signature`,
/// empty ones included, raw (`signPubKeyCert` with its exact CR LF bytes).
pub fn verification_string(fields: &Fields) -> String {
    join(fields.iter().filter(|(k, _)| k.as_str() != "signature"))
}

/// `name=value&...` in the order given, values raw.
fn join<'a>(fields: impl Iterator<Item = (&'a String, &'a String)>) -> String {
    let mut out = String::new();
    for (name, value) in fields {
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(name);
        out.push('=');
        out.push_str(value);
    }
    out
}

/// signMethod 01: SHA256withRSA over the ASCII of the string's lower-case SHA-256 hex; base64.
pub fn sign_rsa(key: &RsaPrivateKey, string: &str) -> Result<String, ProtocolError> {
    Ok(key.sign_base64(sha256_hex(string.as_bytes()).as_bytes())?)
}

/// Checks a signMethod 01 signature over `string`.
pub fn verify_rsa(key: &RsaPublicKey, string: &str, signature: &str) -> bool {
    key.verify_base64(sha256_hex(string.as_bytes()).as_bytes(), signature).is_ok()
}

/// signMethod 11: lower-case hex SHA-256 of `string&<hex SHA-256 of the secure key>`.
pub fn sign_secure_key(string: &str, secure_key: &str) -> String {
    sha256_hex(format!("{string}&{}", sha256_hex(secure_key.as_bytes())).as_bytes())
}

/// A synchronous answer's body: raw `k=v&k=v`, values not URL-encoded. The mock never sends an
/// empty-valued field.
pub fn encode_answer(fields: &Fields) -> String {
    join(fields.iter().filter(|(_, v)| !v.is_empty()))
}

/// A certificate in PEM as `signPubKeyCert` carries it: CR LF line breaks, no trailing newline.
pub fn pem_crlf(der: &[u8]) -> String {
    paymux_crypto::pem_encode("CERTIFICATE", der)
        .trim_end()
        .replace("\r\n", "\n")
        .replace('\n', "\r\n")
}

/// `accNo` as the test environment sends it to a merchant: base64 of RSAES-PKCS1-v1_5 under the
/// merchant's signing certificate (`spki_der`: its SubjectPublicKeyInfo).
pub fn encrypt_for_merchant(spki_der: &[u8], plaintext: &str) -> Result<String, ProtocolError> {
    let key = PublicEncryptingKey::from_der(spki_der)
        .map_err(|e| ProtocolError::EncryptionKey(e.to_string()))?;
    let key = Pkcs1PublicEncryptingKey::new(key)
        .map_err(|_| ProtocolError::EncryptionKey("PKCS#1".into()))?;
    let mut out = vec![0u8; key.ciphertext_size()];
    let written =
        key.encrypt(plaintext.as_bytes(), &mut out).map_err(|_| ProtocolError::Encrypt)?;
    Ok(b64_encode(written))
}

/// A card number as the test environment shows it once decrypted: first four and last four.
pub fn mask_card(card: &str) -> String {
    let digits: Vec<char> = card.chars().filter(char::is_ascii_digit).collect();
    if digits.len() <= 8 {
        return "*".repeat(digits.len());
    }
    let head: String = digits[..4].iter().collect();
    let tail: String = digits[digits.len() - 4..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(digits.len() - 8))
}

/// `YYYYMMDDhhmmss` in Beijing time.
pub fn beijing_compact(at: OffsetDateTime) -> String {
    at.to_offset(BEIJING).format(COMPACT).unwrap_or_default()
}

/// Reads a `YYYYMMDDhhmmss` Beijing time (`txnTime`, `payTimeout`).
pub fn parse_beijing(text: &str) -> Option<OffsetDateTime> {
    if text.len() != 14 {
        return None;
    }
    PrimitiveDateTime::parse(text, COMPACT).ok().map(|t| t.assume_offset(BEIJING))
}

/// A `txnAmt`: fen as digits, no leading zeros, more than zero.
pub fn parse_amount(text: &str) -> Option<i64> {
    let well_formed = !text.is_empty()
        && text.len() <= 12
        && text.bytes().all(|b| b.is_ascii_digit())
        && !text.starts_with('0');
    if well_formed { text.parse().ok() } else { None }
}

/// An `orderId`: 8-32 letters and digits (QR orders: up to 40).
pub fn valid_order_id(text: &str, max: usize) -> bool {
    (8..=max).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_alphanumeric())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use aws_lc_rs::rsa::{Pkcs1PrivateDecryptingKey, PrivateDecryptingKey};
    use paymux_crypto::{Certificate, b64_decode};
    use serde_json::Value;

    use super::*;

    fn vector_file(name: &str) -> String {
        let path = format!("{}/../../tests/vectors/unionpay/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap()
    }

    fn vector(id: &str) -> Value {
        let path = format!("{}/../../tests/vectors/vectors.json", env!("CARGO_MANIFEST_DIR"));
        let all: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        all["vectors"].as_array().unwrap().iter().find(|v| v["id"] == id).unwrap().clone()
    }

    fn fields(value: &Value) -> Fields {
        value
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect()
    }

    /// 2026-11-25: inside U1's certificate validity (it expired on 2026-11-26).
    fn u1_clock() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_795_564_800).unwrap()
    }

    #[test]
    fn u1_request_signature_and_cert_id_are_reproduced() {
        let u1 = vector("U1");
        let key = RsaPrivateKey::load(&vector_file("acp-test-sign-key-from-pfx.pem")).unwrap();
        let cert = Certificate::from_pem(&vector_file("acp-test-sign-cert-certId-69903319369.pem"))
            .unwrap();
        let mut request = fields(&u1["inputs"]["fields"]);
        let string = signing_string(&request);
        assert_eq!(string, u1["expected"]["string_to_sign"]);
        assert_eq!(sha256_hex(string.as_bytes()), u1["expected"]["sha256_hex"]);
        let signature = sign_rsa(&key, &string).unwrap();
        assert_eq!(signature, u1["expected"]["signature"]);
        assert_eq!(cert.serial_decimal(), u1["expected"]["certId"]);
        assert!(cert.is_valid_at(u1_clock()));

        // The mock verifies such a request with the registered certificate's key.
        request.insert("signature".into(), signature.clone());
        assert!(verify_rsa(cert.public_key().unwrap(), &signing_string(&request), &signature));
    }

    #[test]
    fn u1_signing_drops_empty_fields_and_one_changed_byte_fails() {
        let u1 = vector("U1");
        let cert = Certificate::from_pem(&vector_file("acp-test-sign-cert-certId-69903319369.pem"))
            .unwrap();
        let signature = u1["expected"]["signature"].as_str().unwrap();
        let mut request = fields(&u1["inputs"]["fields"]);
        request.insert("reqReserved".into(), String::new());
        assert_eq!(signing_string(&request), u1["expected"]["string_to_sign"]);
        request.insert("txnAmt".into(), "2".into());
        assert!(!verify_rsa(cert.public_key().unwrap(), &signing_string(&request), signature));
    }

    #[test]
    fn u1_certificate_has_expired_by_today() {
        let cert = Certificate::from_pem(&vector_file("acp-test-sign-cert-certId-69903319369.pem"))
            .unwrap();
        let today = OffsetDateTime::from_unix_timestamp(1_795_910_400).unwrap(); // 2026-11-29
        assert!(!cert.is_valid_at(today));
    }

    #[test]
    fn u2_verification_string_keeps_every_field_and_the_crlf_bytes() {
        let u2 = vector("U2");
        let mut message =
            fields(&serde_json::from_str(&vector_file("frontnotify-fields.json")).unwrap());
        let expected = vector_file("frontnotify-signed-string.txt");
        let string = verification_string(&message);
        assert_eq!(string.as_bytes(), expected.as_bytes());
        assert_eq!(sha256_hex(string.as_bytes()), u2["expected"]["sha256_hex"]);

        let exact = vector_file("frontnotify-signPubKeyCert-exact-CRLF.txt");
        assert_eq!(message["signPubKeyCert"].as_bytes(), exact.as_bytes());
        let cert = Certificate::from_pem(&exact).unwrap();
        assert_eq!(pem_crlf(cert.der()), exact, "the mock writes signPubKeyCert the same way");
        let signature = message["signature"].clone();
        assert!(verify_rsa(cert.public_key().unwrap(), &string, &signature));

        let cn = cert.subject().split(',').find_map(|p| p.trim().strip_prefix("CN=")).unwrap();
        assert_eq!(cn.split('@').nth(2), Some(UNIONPAY_OWNER));
        assert_eq!(u2["expected"]["cn_third_part"], UNIONPAY_OWNER);

        // Negative: one byte changed, or an empty field dropped, and it no longer verifies.
        message.insert("txnAmt".into(), "2".into());
        assert!(!verify_rsa(
            cert.public_key().unwrap(),
            &verification_string(&message),
            &signature
        ));
        message.insert("txnAmt".into(), "1".into());
        message.insert("extra".into(), String::new());
        assert!(!verify_rsa(
            cert.public_key().unwrap(),
            &verification_string(&message),
            &signature
        ));
    }

    fn decrypt(key_pem: &str, b64: &str) -> Option<String> {
        let der = paymux_crypto::pem_sections(key_pem.as_bytes()).ok()?.pop()?.1;
        let key =
            Pkcs1PrivateDecryptingKey::new(PrivateDecryptingKey::from_pkcs8(&der).ok()?).ok()?;
        let mut out = vec![0u8; key.min_output_size()];
        let plain = key.decrypt(&b64_decode(b64)?, &mut out).ok()?;
        String::from_utf8(plain.to_vec()).ok()
    }

    #[test]
    fn u4_encrypted_acc_no_uses_pkcs1_v1_5_under_the_merchant_certificate() {
        let u4 = vector("U4");
        let key_pem = vector_file("acp-test-sign-key-from-pfx.pem");
        let expected = u4["expected"]["plaintext"].as_str().unwrap();
        assert_eq!(
            decrypt(&key_pem, u4["inputs"]["accNo"].as_str().unwrap()).as_deref(),
            Some(expected)
        );

        let cert = Certificate::from_pem(&vector_file("acp-test-sign-cert-certId-69903319369.pem"))
            .unwrap();
        let ours = encrypt_for_merchant(cert.public_key().unwrap().spki_der(), expected).unwrap();
        assert_eq!(decrypt(&key_pem, &ours).as_deref(), Some(expected));

        // Negative: another key cannot read it.
        let other = RsaPrivateKey::generate().unwrap().to_pkcs8_pem().unwrap();
        assert_eq!(decrypt(&other, &ours), None);
    }

    #[test]
    fn secure_key_signature_follows_the_formula() {
        let string = "a=1&b=2";
        let key_hash = sha256_hex(b"secret");
        assert_eq!(
            sign_secure_key(string, "secret"),
            sha256_hex(format!("a=1&b=2&{key_hash}").as_bytes())
        );
        // Pinned value, derived once from the formula (no published vector exists).
        assert_eq!(
            sign_secure_key(string, "secret"),
            "c4364eb2d771a4cad4f3faa1f5600bda7d822ffe803082e994c691ec0a58e1af"
        );
        assert_ne!(sign_secure_key(string, "secret"), sign_secure_key(string, "other"));
    }

    #[test]
    fn answers_are_raw_and_skip_empty_values() {
        let mut f = Fields::new();
        f.insert("b".into(), "x+y/z==".into());
        f.insert("a".into(), "{k=v&w=1}".into());
        f.insert("c".into(), String::new());
        assert_eq!(encode_answer(&f), "a={k=v&w=1}&b=x+y/z==");
    }

    #[test]
    fn amounts_and_order_ids_follow_the_notes() {
        assert_eq!(parse_amount("1"), Some(1));
        assert_eq!(parse_amount("100"), Some(100));
        for bad in ["", "0", "01", "1.00", "-1", "1e3"] {
            assert_eq!(parse_amount(bad), None, "{bad}");
        }
        assert!(valid_order_id("yansongda20220903065448", 32));
        assert!(!valid_order_id("order-42-abc", 32));
        assert!(!valid_order_id("short", 32));
        assert!(!valid_order_id(&"a".repeat(33), 32));
    }

    #[test]
    fn beijing_times_round_trip() {
        let t = parse_beijing("20220903065448").unwrap();
        assert_eq!(t.unix_timestamp(), 1_662_159_288);
        assert_eq!(beijing_compact(t), "20220903065448");
        assert!(parse_beijing("2022090306544").is_none());
    }

    #[test]
    fn cards_are_masked_like_the_test_environment() {
        assert_eq!(mask_card("6216261000000000018"), "6216***********0018");
    }
}

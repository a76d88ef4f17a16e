//! WeChat Pay API v3 wire rules, pure (no I/O): the request message and `Authorization` header,
//! the answer/notification message, AEAD_AES_256_GCM resources, Beijing-time RFC 3339.

use paymux_crypto::{CryptoError, aes_gcm_decrypt, aes_gcm_encrypt, b64_decode, b64_encode};
use serde::{Deserialize, Serialize};
use time::{OffsetDateTime, UtcOffset};

/// The scheme word that opens `Authorization` and the value of `Wechatpay-Signature-Type`.
pub const SIGNATURE_TYPE: &str = "WECHATPAY2-SHA256-RSA2048";

/// The prefix of WeChat's signature probes: a signature that must never verify.
pub const SIGNATURE_PROBE_PREFIX: &str = "WECHATPAY/SIGNTEST/";

/// The message a merchant signs: method, request target, timestamp, nonce, body, each line
/// ending in `\n` (the body line too, even when empty).
pub fn request_message(
    method: &str,
    target: &str,
    timestamp: &str,
    nonce: &str,
    body: &[u8],
) -> Vec<u8> {
    let mut m = Vec::with_capacity(method.len() + target.len() + body.len() + 64);
    for part in [method.as_bytes(), target.as_bytes(), timestamp.as_bytes(), nonce.as_bytes(), body]
    {
        m.extend_from_slice(part);
        m.push(b'\n');
    }
    m
}

/// The message WeChat signs on an answer or a notification: timestamp, nonce, body.
pub fn answer_message(timestamp: &str, nonce: &str, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(body.len() + 64);
    for part in [timestamp.as_bytes(), nonce.as_bytes(), body] {
        m.extend_from_slice(part);
        m.push(b'\n');
    }
    m
}

/// The parameters of a merchant's `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub mchid: String,
    pub nonce_str: String,
    pub signature: String,
    pub timestamp: String,
    pub serial_no: String,
}

/// Why an `Authorization` header could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthorizationError {
    #[error("Authorization does not start with {SIGNATURE_TYPE}")]
    Scheme,
    #[error("Authorization parameter is malformed: {0}")]
    Malformed(String),
    #[error("Authorization lacks {0}")]
    Missing(&'static str),
}

impl Authorization {
    /// Reads the header by key: SDKs send the pairs in different orders.
    pub fn parse(header: &str) -> Result<Self, AuthorizationError> {
        let rest = header
            .trim()
            .strip_prefix(SIGNATURE_TYPE)
            .filter(|r| r.starts_with(' '))
            .ok_or(AuthorizationError::Scheme)?;
        let (mut mchid, mut nonce_str, mut signature, mut timestamp, mut serial_no) =
            (None, None, None, None, None);
        for pair in rest.split(',') {
            let pair = pair.trim();
            if pair.is_empty() {
                continue;
            }
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| AuthorizationError::Malformed(pair.to_owned()))?;
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .ok_or_else(|| AuthorizationError::Malformed(key.to_owned()))?
                .to_owned();
            match key.trim() {
                "mchid" => mchid = Some(value),
                "nonce_str" => nonce_str = Some(value),
                "signature" => signature = Some(value),
                "timestamp" => timestamp = Some(value),
                "serial_no" => serial_no = Some(value),
                _ => {}
            }
        }
        Ok(Self {
            mchid: mchid.ok_or(AuthorizationError::Missing("mchid"))?,
            nonce_str: nonce_str.ok_or(AuthorizationError::Missing("nonce_str"))?,
            signature: signature.ok_or(AuthorizationError::Missing("signature"))?,
            timestamp: timestamp.ok_or(AuthorizationError::Missing("timestamp"))?,
            serial_no: serial_no.ok_or(AuthorizationError::Missing("serial_no"))?,
        })
    }

    /// The header value, pairs in the order of WeChat's documentation.
    pub fn to_header(&self) -> String {
        format!(
            "{SIGNATURE_TYPE} mchid=\"{}\",nonce_str=\"{}\",signature=\"{}\",timestamp=\"{}\",serial_no=\"{}\"",
            self.mchid, self.nonce_str, self.signature, self.timestamp, self.serial_no
        )
    }
}

/// Upper-case hex with leading zeros dropped: Java prints serials as numbers, Go as bytes.
pub fn normalize_serial(serial: &str) -> String {
    let upper = serial.trim().to_ascii_uppercase();
    let trimmed = upper.trim_start_matches('0');
    if trimmed.is_empty() { "0".to_owned() } else { trimmed.to_owned() }
}

/// An `encrypt-resource` (notification `resource`) or `encrypt_certificate` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptedResource {
    pub algorithm: String,
    pub ciphertext: String,
    pub associated_data: String,
    pub nonce: String,
    /// Present on notification resources, absent from certificate entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_type: Option<String>,
}

pub const AEAD_AES_256_GCM: &str = "AEAD_AES_256_GCM";

/// AEAD_AES_256_GCM: the key's and nonce's string bytes, AAD passed verbatim (even when empty),
/// base64 of `ciphertext || tag`.
pub fn encrypt_resource(
    key: &[u8],
    nonce: &str,
    associated_data: &str,
    plaintext: &[u8],
) -> Result<EncryptedResource, CryptoError> {
    let sealed = aes_gcm_encrypt(key, nonce.as_bytes(), associated_data.as_bytes(), plaintext)?;
    Ok(EncryptedResource {
        algorithm: AEAD_AES_256_GCM.to_owned(),
        ciphertext: b64_encode(&sealed),
        associated_data: associated_data.to_owned(),
        nonce: nonce.to_owned(),
        original_type: None,
    })
}

pub fn decrypt_resource(key: &[u8], resource: &EncryptedResource) -> Result<Vec<u8>, CryptoError> {
    if resource.algorithm != AEAD_AES_256_GCM {
        return Err(CryptoError::Aead("algorithm is not AEAD_AES_256_GCM"));
    }
    let sealed =
        b64_decode(&resource.ciphertext).ok_or(CryptoError::Aead("ciphertext is not base64"))?;
    aes_gcm_decrypt(key, resource.nonce.as_bytes(), resource.associated_data.as_bytes(), &sealed)
}

/// One entry of `GET /v3/certificates`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateEntry {
    pub serial_no: String,
    pub effective_time: String,
    pub expire_time: String,
    pub encrypt_certificate: EncryptedResource,
}

/// The body of `GET /v3/certificates`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificatesAnswer {
    pub data: Vec<CertificateEntry>,
}

pub const CERTIFICATE_AAD: &str = "certificate";

/// Builds a certificate entry: the PEM (without trailing newline, as WeChat sends it) encrypted
/// under the merchant's APIv3 key with AAD `certificate`.
pub fn certificate_entry(
    apiv3_key: &[u8],
    nonce: &str,
    serial_no: &str,
    effective: OffsetDateTime,
    expire: OffsetDateTime,
    certificate_pem: &str,
) -> Result<CertificateEntry, CryptoError> {
    let plaintext = certificate_pem.trim_end();
    Ok(CertificateEntry {
        serial_no: serial_no.to_owned(),
        effective_time: beijing_rfc3339(effective),
        expire_time: beijing_rfc3339(expire),
        encrypt_certificate: encrypt_resource(
            apiv3_key,
            nonce,
            CERTIFICATE_AAD,
            plaintext.as_bytes(),
        )?,
    })
}

/// The certificate PEM carried by an entry.
pub fn decrypt_certificate_entry(
    apiv3_key: &[u8],
    entry: &CertificateEntry,
) -> Result<String, CryptoError> {
    let plain = decrypt_resource(apiv3_key, &entry.encrypt_certificate)?;
    String::from_utf8(plain).map_err(|_| CryptoError::Aead("certificate is not UTF-8"))
}

/// Beijing time, RFC 3339 with `+08:00` and whole seconds: `2015-05-20T13:29:35+08:00`.
pub fn beijing_rfc3339(at: OffsetDateTime) -> String {
    let offset = UtcOffset::from_hms(8, 0, 0).unwrap_or(UtcOffset::UTC);
    let t = at.to_offset(offset);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}+08:00",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Digits of Beijing time `yyyyMMddHHmmss`, used inside generated ids.
pub fn beijing_compact(at: OffsetDateTime) -> String {
    let offset = UtcOffset::from_hms(8, 0, 0).unwrap_or(UtcOffset::UTC);
    let t = at.to_offset(offset);
    format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Whether `out_trade_no` matches `^[0-9A-Za-z_*-]{6,32}$`.
pub fn valid_out_trade_no(s: &str) -> bool {
    (6..=32).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'*'))
}

/// Whether `out_refund_no` is 1-64 of digits, letters and `_-|*@`.
pub fn valid_out_refund_no(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'|' | b'*' | b'@'))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use paymux_crypto::{Certificate, RsaPrivateKey, sha256_hex};
    use serde_json::Value;

    const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/vectors/");

    fn vector(id: &str) -> Value {
        let text = std::fs::read_to_string(format!("{VECTORS}vectors.json")).unwrap();
        let all: Value = serde_json::from_str(&text).unwrap();
        all["vectors"].as_array().unwrap().iter().find(|v| v["id"] == id).unwrap().clone()
    }

    fn file(name: &str) -> String {
        std::fs::read_to_string(format!("{VECTORS}{name}")).unwrap()
    }

    fn s<'a>(v: &'a Value, key: &str) -> &'a str {
        v[key].as_str().unwrap()
    }

    #[test]
    fn w1_request_message_signature_and_header() {
        let v = vector("W1");
        let (i, e) = (&v["inputs"], &v["expected"]);
        let message = request_message(
            s(i, "method"),
            s(i, "url"),
            s(i, "timestamp"),
            s(i, "nonce"),
            s(i, "body").as_bytes(),
        );
        assert_eq!(message, s(e, "message").as_bytes());

        let key = RsaPrivateKey::load(&file(s(i, "private_key_file"))).unwrap();
        let signature = key.sign_base64(&message).unwrap();
        assert_eq!(signature, s(e, "signature"));

        let auth = Authorization {
            mchid: s(i, "mchid").into(),
            nonce_str: s(i, "nonce").into(),
            signature,
            timestamp: s(i, "timestamp").into(),
            serial_no: s(i, "serial_no").into(),
        };
        assert_eq!(auth.to_header(), s(e, "authorization"));

        // The verifier's side: parse the official header, rebuild the message, verify.
        let parsed = Authorization::parse(s(e, "authorization")).unwrap();
        assert_eq!(parsed, auth);
        let rebuilt = request_message(
            "POST",
            s(i, "url"),
            &parsed.timestamp,
            &parsed.nonce_str,
            s(i, "body").as_bytes(),
        );
        key.public_key().verify_base64(&rebuilt, &parsed.signature).unwrap();
        let tampered = request_message(
            "POST",
            "/v3/pay/transactions/native",
            &parsed.timestamp,
            &parsed.nonce_str,
            s(i, "body").as_bytes(),
        );
        assert!(key.public_key().verify_base64(&tampered, &parsed.signature).is_err());
    }

    #[test]
    fn authorization_is_parsed_by_key_in_any_order() {
        let header = "WECHATPAY2-SHA256-RSA2048 serial_no=\"0A1B\",timestamp=\"1\",signature=\"a+b/c==\",nonce_str=\"n\",mchid=\"19\"";
        let a = Authorization::parse(header).unwrap();
        assert_eq!(
            (a.mchid.as_str(), a.signature.as_str(), a.serial_no.as_str()),
            ("19", "a+b/c==", "0A1B")
        );
        assert_eq!(Authorization::parse("Bearer x"), Err(AuthorizationError::Scheme));
        assert_eq!(
            Authorization::parse("WECHATPAY2-SHA256-RSA2048 mchid=\"1\""),
            Err(AuthorizationError::Missing("nonce_str"))
        );
        assert!(matches!(
            Authorization::parse("WECHATPAY2-SHA256-RSA2048 mchid=1"),
            Err(AuthorizationError::Malformed(_))
        ));
    }

    #[test]
    fn w3_answer_message_in_public_key_mode() {
        let v = vector("W3");
        let (i, e) = (&v["inputs"], &v["expected"]);
        let h = &i["headers"];
        let message = answer_message(
            s(h, "Wechatpay-Timestamp"),
            s(h, "Wechatpay-Nonce"),
            s(i, "body").as_bytes(),
        );
        assert_eq!(message, s(e, "message").as_bytes());
        let key = paymux_crypto::RsaPublicKey::load(&file(s(i, "public_key_file"))).unwrap();
        key.verify_base64(&message, s(h, "Wechatpay-Signature")).unwrap();
    }

    #[test]
    fn w4_sign_primitive_and_serial() {
        let v = vector("W4");
        let (i, e) = (&v["inputs"], &v["expected"]);
        let key = RsaPrivateKey::load(&file(s(i, "private_key_file"))).unwrap();
        let signature = key.sign_base64(s(i, "message").as_bytes()).unwrap();
        assert_eq!(signature, s(e, "signature"));
        let cert = Certificate::from_pem(&file(s(i, "certificate_file"))).unwrap();
        assert_eq!(cert.serial_hex(), s(e, "certificate_serial_hex"));
        cert.public_key().unwrap().verify_base64(s(i, "message").as_bytes(), &signature).unwrap();
    }

    #[test]
    fn w6_encrypt_reproduces_the_vector_and_decrypts_back() {
        let v = vector("W6");
        let (i, e) = (&v["inputs"], &v["expected"]);
        let key = s(i, "apiv3_key").as_bytes();
        assert_eq!(key.len(), 32);
        let r = encrypt_resource(
            key,
            s(i, "nonce"),
            s(i, "associated_data"),
            s(i, "plaintext").as_bytes(),
        )
        .unwrap();
        assert_eq!(r.ciphertext, s(e, "ciphertext_base64"));
        assert_eq!(decrypt_resource(key, &r).unwrap(), s(e, "decrypts_to").as_bytes());
    }

    #[test]
    fn w5_and_w8_decrypt_with_16_byte_test_keys() {
        let v = vector("W8");
        let i = &v["inputs"];
        let r = EncryptedResource {
            algorithm: AEAD_AES_256_GCM.into(),
            ciphertext: s(i, "ciphertext_base64").into(),
            associated_data: s(i, "associated_data").into(),
            nonce: s(i, "nonce").into(),
            original_type: None,
        };
        assert_eq!(decrypt_resource(s(i, "aes_key").as_bytes(), &r).unwrap(), b"Hello World");

        let v = vector("W5");
        let (i, e) = (&v["inputs"], &v["expected"]);
        let h = &i["headers"];
        let body = s(i, "body");
        let message =
            answer_message(s(h, "Wechatpay-Timestamp"), s(h, "Wechatpay-Nonce"), body.as_bytes());
        assert_eq!(message, s(e, "message").as_bytes());
        let cert = Certificate::from_pem(&file(s(i, "platform_certificate_file"))).unwrap();
        assert_eq!(normalize_serial(s(h, "Wechatpay-Serial")), cert.serial_hex());
        cert.public_key().unwrap().verify_base64(&message, s(h, "Wechatpay-Signature")).unwrap();
        let notification: Value = serde_json::from_str(body).unwrap();
        let resource: EncryptedResource =
            serde_json::from_value(notification["resource"].clone()).unwrap();
        let plain = decrypt_resource(s(i, "aes_key").as_bytes(), &resource).unwrap();
        assert_eq!(plain, s(e, "plaintext").as_bytes());
    }

    #[test]
    fn w7_certificate_entry_decrypts_and_is_rebuilt_byte_for_byte() {
        let v = vector("W7");
        let (i, e) = (&v["inputs"], &v["expected"]);
        let key = s(i, "apiv3_key").as_bytes();
        let answer: CertificatesAnswer =
            serde_json::from_str(&file(s(i, "response_json_file"))).unwrap();
        let entry = &answer.data[0];
        let pem = decrypt_certificate_entry(key, entry).unwrap();
        assert_eq!(pem, file(s(e, "plaintext_file")));
        assert_eq!(sha256_hex(pem.as_bytes()), s(e, "plaintext_sha256"));
        let cert = Certificate::from_pem(&pem).unwrap();
        assert_eq!(cert.serial_hex(), entry.serial_no);
        assert_eq!(cert.serial_hex(), s(e, "certificate_serial_hex"));

        // The builder the mock serves entries with, given the vector's nonce and times,
        // reproduces the official entry exactly.
        let parse = |t: &str| {
            OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).unwrap()
        };
        let rebuilt = certificate_entry(
            key,
            &entry.encrypt_certificate.nonce,
            &entry.serial_no,
            parse(&entry.effective_time),
            parse(&entry.expire_time),
            &pem,
        )
        .unwrap();
        assert_eq!(&rebuilt, entry);
        assert_eq!(
            serde_json::to_value(&rebuilt).unwrap(),
            serde_json::from_str::<Value>(&file(s(i, "response_json_file"))).unwrap()["data"][0]
        );
    }

    #[test]
    fn trade_and_refund_numbers_follow_the_documented_alphabets() {
        assert!(valid_out_trade_no("1217752501201407033233368018"));
        assert!(valid_out_trade_no("ab_-*1"));
        assert!(!valid_out_trade_no("abc12"));
        assert!(!valid_out_trade_no("order|123"));
        assert!(!valid_out_trade_no(&"1".repeat(33)));
        assert!(valid_out_refund_no("r|1@2*"));
        assert!(!valid_out_refund_no("r 1"));
    }

    #[test]
    fn beijing_time_is_rfc3339_with_plus_eight() {
        let t = OffsetDateTime::from_unix_timestamp(1432099775).unwrap();
        assert_eq!(beijing_rfc3339(t), "2015-05-20T13:29:35+08:00");
        assert_eq!(beijing_compact(t), "20150520132935");
        assert_eq!(normalize_serial("0f57"), "F57");
    }
}

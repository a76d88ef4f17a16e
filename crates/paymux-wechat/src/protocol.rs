//! The WeChat Pay API v3 wire protocol, with no I/O: canonical messages, request signatures, answer
//! and notification verification, AEAD_AES_256_GCM resources, the `/v3/certificates` answer, the
//! wire types, and the client-side payment parameters.
//!
//! The sandbox mock uses the same module from the server's side, so everything here is symmetric
//! where the protocol is (sign and parse an `Authorization`, encrypt and decrypt a resource).

use std::collections::BTreeMap;
use std::fmt;

use paymux_crypto::{
    Certificate, RsaPrivateKey, RsaPublicKey, aes_gcm_decrypt, aes_gcm_encrypt, b64_decode,
    b64_encode,
};
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::macros::{format_description, offset};
use time::{OffsetDateTime, UtcOffset};

/// The signature scheme in `Authorization` and `Wechatpay-Signature-Type`.
pub const SIGNATURE_SCHEME: &str = "WECHATPAY2-SHA256-RSA2048";
/// WeChat sends signatures with this prefix to check that merchants verify; they never verify.
pub const PROBE_PREFIX: &str = "WECHATPAY/SIGNTEST/";
/// The prefix of a WeChat Pay public key id (public-key mode).
pub const PUBLIC_KEY_ID_PREFIX: &str = "PUB_KEY_ID_";
/// How far a signed timestamp may be from our clock, either way (replay window).
pub const TIME_WINDOW_SECS: i64 = 300;
/// The only resource algorithm WeChat uses.
pub const AEAD_AES_256_GCM: &str = "AEAD_AES_256_GCM";
/// The `resource_type` of every v3 notification.
pub const ENCRYPT_RESOURCE: &str = "encrypt-resource";
/// The associated data of a `/v3/certificates` entry.
pub const CERTIFICATE_AAD: &str = "certificate";

/// Beijing time, the offset of every time WeChat puts in a body.
pub const BEIJING: UtcOffset = offset!(+8);

/// Why a message could not be built, signed, decrypted or parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("the APIv3 key must be exactly 32 bytes, got {0}")]
    ApiV3KeyLength(usize),
    #[error("signing with the merchant key failed")]
    Sign,
    #[error("malformed Authorization header: {0}")]
    Authorization(&'static str),
    #[error("ciphertext is not valid base64")]
    CiphertextEncoding,
    #[error("decryption failed: wrong key, nonce or associated data, or a tampered ciphertext")]
    Decrypt,
    #[error("decrypted text is not UTF-8")]
    NotUtf8,
    #[error("unsupported algorithm {0:?} (expected AEAD_AES_256_GCM)")]
    Algorithm(String),
    #[error("unsupported resource_type {0:?} (expected encrypt-resource)")]
    ResourceType(String),
    #[error("malformed JSON: {0}")]
    Json(String),
}

/// Why an answer or a notification did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("missing or empty header {0}")]
    MissingHeader(&'static str),
    #[error("unsupported Wechatpay-Signature-Type {0:?}")]
    SignatureType(String),
    #[error("the signature is a WECHATPAY/SIGNTEST/ probe")]
    Probe,
    #[error("Wechatpay-Timestamp {0:?} is not unix seconds")]
    BadTimestamp(String),
    #[error("Wechatpay-Timestamp {timestamp} is more than 5 minutes from now ({now})")]
    OutsideWindow { timestamp: i64, now: i64 },
    #[error("no key known for Wechatpay-Serial {0}")]
    UnknownSerial(String),
    #[error("platform certificate {0} is not valid now")]
    CertificateNotValid(String),
    #[error("the signature does not verify")]
    BadSignature,
}

// ---------------------------------------------------------------------------------------------
// Requests

/// The canonical request message: method, request target, timestamp, nonce and body, each
/// followed by `\n` (the body line too, even when empty).
pub fn request_message(
    method: &str,
    target: &str,
    timestamp: i64,
    nonce: &str,
    body: &[u8],
) -> Vec<u8> {
    let mut m = format!("{method}\n{target}\n{timestamp}\n{nonce}\n").into_bytes();
    m.extend_from_slice(body);
    m.push(b'\n');
    m
}

/// The `Authorization` value from its parts, in the order of WeChat's documentation.
pub fn authorization_header(
    mchid: &str,
    nonce: &str,
    signature: &str,
    timestamp: i64,
    serial_no: &str,
) -> String {
    format!(
        "{SIGNATURE_SCHEME} mchid=\"{mchid}\",nonce_str=\"{nonce}\",signature=\"{signature}\",\
         timestamp=\"{timestamp}\",serial_no=\"{serial_no}\""
    )
}

/// The parameters of an `Authorization` header, read by key (senders differ in their order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationParams {
    pub mchid: String,
    pub nonce_str: String,
    pub signature: String,
    pub timestamp: String,
    pub serial_no: String,
}

/// Parses `WECHATPAY2-SHA256-RSA2048 k="v",...`; each of the five keys exactly once.
pub fn parse_authorization(header: &str) -> Result<AuthorizationParams, ProtocolError> {
    let rest = header
        .strip_prefix(SIGNATURE_SCHEME)
        .and_then(|r| r.strip_prefix(' '))
        .ok_or(ProtocolError::Authorization("scheme is not WECHATPAY2-SHA256-RSA2048"))?;
    let mut pairs: BTreeMap<&str, &str> = BTreeMap::new();
    for part in rest.split(',') {
        let (key, value) =
            part.split_once('=').ok_or(ProtocolError::Authorization("a pair has no '='"))?;
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .ok_or(ProtocolError::Authorization("a value is not quoted"))?;
        if pairs.insert(key, value).is_some() {
            return Err(ProtocolError::Authorization("a key appears twice"));
        }
    }
    let mut take = |key: &'static str| {
        pairs
            .remove(key)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .ok_or(ProtocolError::Authorization("a required key is missing or empty"))
    };
    Ok(AuthorizationParams {
        mchid: take("mchid")?,
        nonce_str: take("nonce_str")?,
        signature: take("signature")?,
        timestamp: take("timestamp")?,
        serial_no: take("serial_no")?,
    })
}

/// The merchant's signing identity: mchid, API certificate serial and private key.
#[derive(Debug, Clone)]
pub struct MerchantSigner {
    mchid: String,
    serial_no: String,
    key: RsaPrivateKey,
}

impl MerchantSigner {
    pub fn new(mchid: impl Into<String>, serial_no: impl Into<String>, key: RsaPrivateKey) -> Self {
        Self { mchid: mchid.into(), serial_no: serial_no.into(), key }
    }

    pub fn mchid(&self) -> &str {
        &self.mchid
    }

    /// SHA256withRSA over `message` with the merchant key, base64.
    pub fn sign(&self, message: &[u8]) -> Result<String, ProtocolError> {
        self.key.sign_base64(message).map_err(|_| ProtocolError::Sign)
    }

    /// The `Authorization` header for one request. `target` is the path and query exactly as sent.
    pub fn authorization(
        &self,
        method: &str,
        target: &str,
        timestamp: i64,
        nonce: &str,
        body: &[u8],
    ) -> Result<String, ProtocolError> {
        let signature = self.sign(&request_message(method, target, timestamp, nonce, body))?;
        Ok(authorization_header(&self.mchid, nonce, &signature, timestamp, &self.serial_no))
    }

    /// JSAPI / mini-program parameters for `wx.requestPayment` / `WeixinJSBridge`.
    pub fn jsapi_params(
        &self,
        appid: &str,
        timestamp: i64,
        nonce: &str,
        prepay_id: &str,
    ) -> Result<JsapiPayParams, ProtocolError> {
        let package = format!("prepay_id={prepay_id}");
        let ts = timestamp.to_string();
        let pay_sign = self.sign(&jsapi_pay_message(appid, &ts, nonce, &package))?;
        Ok(JsapiPayParams {
            app_id: appid.to_owned(),
            time_stamp: ts,
            nonce_str: nonce.to_owned(),
            package,
            sign_type: "RSA".to_owned(),
            pay_sign,
        })
    }

    /// App SDK parameters (`PayReq`).
    pub fn app_params(
        &self,
        appid: &str,
        timestamp: i64,
        nonce: &str,
        prepay_id: &str,
    ) -> Result<AppPayParams, ProtocolError> {
        let ts = timestamp.to_string();
        let sign = self.sign(&app_pay_message(appid, &ts, nonce, prepay_id))?;
        Ok(AppPayParams {
            appid: appid.to_owned(),
            partnerid: self.mchid.clone(),
            prepayid: prepay_id.to_owned(),
            package: "Sign=WXPay".to_owned(),
            noncestr: nonce.to_owned(),
            timestamp: ts,
            sign,
        })
    }
}

/// `appId\ntimeStamp\nnonceStr\npackage\n`, the message `paySign` signs.
pub fn jsapi_pay_message(appid: &str, timestamp: &str, nonce: &str, package: &str) -> Vec<u8> {
    format!("{appid}\n{timestamp}\n{nonce}\n{package}\n").into_bytes()
}

/// `appid\ntimestamp\nnoncestr\nprepayid\n` (the bare prepay id), the message App `sign` signs.
pub fn app_pay_message(appid: &str, timestamp: &str, nonce: &str, prepay_id: &str) -> Vec<u8> {
    format!("{appid}\n{timestamp}\n{nonce}\n{prepay_id}\n").into_bytes()
}

/// JSAPI / mini-program payment parameters, under the names the JS APIs take.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JsapiPayParams {
    #[serde(rename = "appId")]
    pub app_id: String,
    #[serde(rename = "timeStamp")]
    pub time_stamp: String,
    #[serde(rename = "nonceStr")]
    pub nonce_str: String,
    pub package: String,
    #[serde(rename = "signType")]
    pub sign_type: String,
    #[serde(rename = "paySign")]
    pub pay_sign: String,
}

/// App payment parameters, under the names the App SDK takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppPayParams {
    pub appid: String,
    pub partnerid: String,
    pub prepayid: String,
    pub package: String,
    pub noncestr: String,
    pub timestamp: String,
    pub sign: String,
}

// ---------------------------------------------------------------------------------------------
// Verification

/// `timestamp\nnonce\nbody\n`, the message an answer or notification signature signs.
pub fn answer_message(timestamp: &str, nonce: &str, body: &[u8]) -> Vec<u8> {
    let mut m = format!("{timestamp}\n{nonce}\n").into_bytes();
    m.extend_from_slice(body);
    m.push(b'\n');
    m
}

/// The signature headers of an answer or a notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureHeaders {
    pub timestamp: String,
    pub nonce: String,
    pub signature: String,
    pub serial: String,
    /// `Wechatpay-Signature-Type`; WeChat does not always send it.
    pub signature_type: Option<String>,
}

impl SignatureHeaders {
    /// Reads the headers through `get` (a case-insensitive lookup by name).
    pub fn from_lookup<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Result<Self, VerifyError> {
        let need = |name: &'static str| {
            get(name)
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
                .ok_or(VerifyError::MissingHeader(name))
        };
        Ok(Self {
            timestamp: need("Wechatpay-Timestamp")?,
            nonce: need("Wechatpay-Nonce")?,
            signature: need("Wechatpay-Signature")?,
            serial: need("Wechatpay-Serial")?,
            signature_type: get("Wechatpay-Signature-Type").map(|v| v.trim().to_owned()),
        })
    }
}

/// Serial numbers compared the way both Go (bytes) and Java (a number) print them: upper-case
/// hex, leading zeros stripped. Anything that is not hex (a `PUB_KEY_ID_...`) is only trimmed.
pub fn normalize_serial(serial: &str) -> String {
    let s = serial.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return s.to_owned();
    }
    let upper = s.to_ascii_uppercase();
    let trimmed = upper.trim_start_matches('0');
    if trimmed.is_empty() { "0".to_owned() } else { trimmed.to_owned() }
}

/// Checks that `timestamp` is within [`TIME_WINDOW_SECS`] of `now`.
pub fn check_window(timestamp: &str, now: OffsetDateTime) -> Result<i64, VerifyError> {
    let t = if !timestamp.is_empty() && timestamp.bytes().all(|b| b.is_ascii_digit()) {
        timestamp.parse::<i64>().ok()
    } else {
        None
    }
    .ok_or_else(|| VerifyError::BadTimestamp(timestamp.to_owned()))?;
    let n = now.unix_timestamp();
    if (n - t).abs() > TIME_WINDOW_SECS {
        return Err(VerifyError::OutsideWindow { timestamp: t, now: n });
    }
    Ok(t)
}

/// The keys that can verify WeChat's signatures: a configured WeChat Pay public key and/or
/// platform certificates, chosen per message by `Wechatpay-Serial`.
#[derive(Debug, Clone, Default)]
pub struct VerifierSet {
    public_key: Option<(String, RsaPublicKey)>,
    certificates: BTreeMap<String, Certificate>,
}

impl VerifierSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the WeChat Pay public key with its id (`PUB_KEY_ID_...`).
    pub fn with_public_key(mut self, id: &str, key: RsaPublicKey) -> Self {
        self.public_key = Some((normalize_serial(id), key));
        self
    }

    /// Replaces the platform certificates.
    pub fn with_certificates(
        mut self,
        certificates: impl IntoIterator<Item = Certificate>,
    ) -> Self {
        self.certificates =
            certificates.into_iter().map(|c| (normalize_serial(c.serial_hex()), c)).collect();
        self
    }

    pub fn public_key_id(&self) -> Option<&str> {
        self.public_key.as_ref().map(|(id, _)| id.as_str())
    }

    pub fn certificates(&self) -> impl Iterator<Item = &Certificate> {
        self.certificates.values()
    }

    /// The certificate that expires last: the one to name in `Wechatpay-Serial`.
    pub fn newest_certificate(&self) -> Option<&Certificate> {
        self.certificates.values().max_by_key(|c| c.not_after())
    }

    /// The key `serial` names: the public key when it is its id, else the platform certificate
    /// with that serial, which must be valid at `now`.
    pub fn key_for(&self, serial: &str, now: OffsetDateTime) -> Result<&RsaPublicKey, VerifyError> {
        let serial = normalize_serial(serial);
        if let Some((id, key)) = &self.public_key
            && *id == serial
        {
            return Ok(key);
        }
        let cert =
            self.certificates.get(&serial).ok_or(VerifyError::UnknownSerial(serial.clone()))?;
        if !cert.is_valid_at(now) {
            return Err(VerifyError::CertificateNotValid(serial));
        }
        cert.public_key().map_err(|_| VerifyError::CertificateNotValid(serial))
    }

    /// Verifies an answer or a notification: signature type, probe, time window, key by serial,
    /// signature over `timestamp\nnonce\nbody\n` (body = the exact bytes received).
    pub fn verify(
        &self,
        headers: &SignatureHeaders,
        body: &[u8],
        now: OffsetDateTime,
    ) -> Result<(), VerifyError> {
        check_headers(headers, now)?;
        let key = self.key_for(&headers.serial, now)?;
        key.verify_base64(
            &answer_message(&headers.timestamp, &headers.nonce, body),
            &headers.signature,
        )
        .map_err(|_| VerifyError::BadSignature)
    }
}

/// The checks that need no key: signature type, probe, time window. Running them first means a
/// stale or probing message never makes a client download certificates.
pub fn check_headers(headers: &SignatureHeaders, now: OffsetDateTime) -> Result<(), VerifyError> {
    if let Some(t) = &headers.signature_type
        && t != SIGNATURE_SCHEME
    {
        return Err(VerifyError::SignatureType(t.clone()));
    }
    if headers.signature.starts_with(PROBE_PREFIX) {
        return Err(VerifyError::Probe);
    }
    check_window(&headers.timestamp, now)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// AEAD_AES_256_GCM

/// The APIv3 key: exactly 32 bytes, the AES-256-GCM key of resources and certificates.
#[derive(Clone)]
pub struct ApiV3Key([u8; 32]);

impl fmt::Debug for ApiV3Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiV3Key(<redacted>)")
    }
}

impl ApiV3Key {
    /// Refuses anything but 32 bytes: a shorter key would silently select AES-128.
    pub fn new(text: &str) -> Result<Self, ProtocolError> {
        let bytes: [u8; 32] =
            text.as_bytes().try_into().map_err(|_| ProtocolError::ApiV3KeyLength(text.len()))?;
        Ok(Self(bytes))
    }

    /// Decrypts base64 `ciphertext || tag`; `associated_data` is used verbatim, empty included.
    pub fn decrypt(
        &self,
        nonce: &str,
        associated_data: &str,
        ciphertext_b64: &str,
    ) -> Result<Vec<u8>, ProtocolError> {
        let sealed = b64_decode(ciphertext_b64).ok_or(ProtocolError::CiphertextEncoding)?;
        aes_gcm_decrypt(&self.0, nonce.as_bytes(), associated_data.as_bytes(), &sealed)
            .map_err(|_| ProtocolError::Decrypt)
    }

    /// Encrypts to base64 `ciphertext || tag` (the channel's side; the mock and tests use it).
    pub fn encrypt(
        &self,
        nonce: &str,
        associated_data: &str,
        plaintext: &[u8],
    ) -> Result<String, ProtocolError> {
        aes_gcm_encrypt(&self.0, nonce.as_bytes(), associated_data.as_bytes(), plaintext)
            .map(|sealed| b64_encode(&sealed))
            .map_err(|_| ProtocolError::Decrypt)
    }
}

// ---------------------------------------------------------------------------------------------
// /v3/certificates

/// The `/v3/certificates` answer. Entries are read leniently so that one incomplete entry is
/// skipped rather than failing the whole answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificatesAnswer {
    pub data: Vec<CertificateEntry>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_no: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expire_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypt_certificate: Option<EncryptedCertificate>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptedCertificate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub associated_data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ciphertext: Option<String>,
}

fn non_empty(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|s| !s.is_empty())
}

impl CertificateEntry {
    /// Decrypts the entry to its certificate PEM. Refuses an incomplete entry or one with another
    /// algorithm or associated data than `AEAD_AES_256_GCM` / `certificate`.
    pub fn decrypt_pem(&self, key: &ApiV3Key) -> Result<String, ProtocolError> {
        let incomplete = || ProtocolError::Json("incomplete certificate entry".into());
        non_empty(&self.serial_no).ok_or_else(incomplete)?;
        non_empty(&self.effective_time).ok_or_else(incomplete)?;
        non_empty(&self.expire_time).ok_or_else(incomplete)?;
        let enc = self.encrypt_certificate.as_ref().ok_or_else(incomplete)?;
        let algorithm = non_empty(&enc.algorithm).ok_or_else(incomplete)?;
        let nonce = non_empty(&enc.nonce).ok_or_else(incomplete)?;
        let aad = non_empty(&enc.associated_data).ok_or_else(incomplete)?;
        let ciphertext = non_empty(&enc.ciphertext).ok_or_else(incomplete)?;
        if algorithm != AEAD_AES_256_GCM {
            return Err(ProtocolError::Algorithm(algorithm.to_owned()));
        }
        if aad != CERTIFICATE_AAD {
            return Err(ProtocolError::Json(format!(
                "associated_data is {aad:?}, not certificate"
            )));
        }
        let plain = key.decrypt(nonce, aad, ciphertext)?;
        String::from_utf8(plain).map_err(|_| ProtocolError::NotUtf8)
    }

    /// The entry's certificate, if it decrypts, its serial is the entry's `serial_no`, and both the
    /// certificate and the entry's own `effective_time`/`expire_time` are valid at `now`.
    pub fn certificate(&self, key: &ApiV3Key, now: OffsetDateTime) -> Result<Certificate, String> {
        let pem = self.decrypt_pem(key).map_err(|e| e.to_string())?;
        let cert = Certificate::from_pem(&pem).map_err(|e| e.to_string())?;
        let listed = normalize_serial(self.serial_no.as_deref().unwrap_or_default());
        if normalize_serial(cert.serial_hex()) != listed {
            return Err(format!(
                "certificate serial {} is not the listed {listed}",
                cert.serial_hex()
            ));
        }
        if !cert.is_valid_at(now) {
            return Err(format!("certificate {listed} is not valid now"));
        }
        let from = self.effective_time.as_deref().and_then(parse_time);
        let until = self.expire_time.as_deref().and_then(parse_time);
        match (from, until) {
            (Some(from), Some(until)) if from <= now && now <= until => Ok(cert),
            (Some(_), Some(_)) => Err(format!("entry {listed} is outside effective/expire time")),
            _ => Err(format!("entry {listed} has unreadable effective/expire time")),
        }
    }
}

/// Parses a `/v3/certificates` answer and keeps the certificates that are complete and valid at
/// `now`; skipped entries are logged. An unreadable answer is an error; an empty result is not.
pub fn decrypt_certificates(
    body: &[u8],
    key: &ApiV3Key,
    now: OffsetDateTime,
) -> Result<Vec<Certificate>, ProtocolError> {
    let answer: CertificatesAnswer =
        serde_json::from_slice(body).map_err(|e| ProtocolError::Json(e.to_string()))?;
    let mut out = Vec::new();
    for entry in &answer.data {
        match entry.certificate(key, now) {
            Ok(cert) => out.push(cert),
            Err(reason) => tracing::warn!(%reason, "skipping a /v3/certificates entry"),
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Notifications

/// A notification body; `resource` is still encrypted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationBody {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_time: Option<String>,
    pub resource_type: String,
    pub event_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    pub resource: EncryptedResource,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptedResource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_type: Option<String>,
    pub algorithm: String,
    pub ciphertext: String,
    /// Absent is read as empty: WeChat's own refund samples carry `""`.
    #[serde(default)]
    pub associated_data: String,
    pub nonce: String,
}

impl NotificationBody {
    pub fn parse(body: &[u8]) -> Result<Self, ProtocolError> {
        serde_json::from_slice(body).map_err(|e| ProtocolError::Json(e.to_string()))
    }

    /// Checks `resource_type` and `algorithm`, then decrypts the resource with the APIv3 key.
    pub fn decrypt_resource(&self, key: &ApiV3Key) -> Result<Vec<u8>, ProtocolError> {
        if self.resource_type != ENCRYPT_RESOURCE {
            return Err(ProtocolError::ResourceType(self.resource_type.clone()));
        }
        let r = &self.resource;
        if r.algorithm != AEAD_AES_256_GCM {
            return Err(ProtocolError::Algorithm(r.algorithm.clone()));
        }
        key.decrypt(&r.nonce, &r.associated_data, &r.ciphertext)
    }
}

// ---------------------------------------------------------------------------------------------
// Wire types

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payer {
    pub openid: String,
}

/// The transaction object: query answers and payment notification plaintexts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appid: Option<String>,
    pub mchid: String,
    pub out_trade_no: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trade_type: Option<String>,
    pub trade_state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trade_state_desc: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bank_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<Payer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<TransactionAmount>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionAmount {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer_total: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer_currency: Option<String>,
}

/// The refund notification plaintext. Not the refund object: the state is `refund_status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundNotice {
    pub mchid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
    pub out_trade_no: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_id: Option<String>,
    pub out_refund_no: String,
    pub refund_status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_received_account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<RefundAmount>,
}

/// The refund object: the refund answer and the refund query answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refund {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_id: Option<String>,
    pub out_refund_no: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_trade_no: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_received_account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_time: Option<String>,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<RefundAmount>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundAmount {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer_total: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer_refund: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
}

/// The body of a create call (native, jsapi, app, h5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateTransactionRequest {
    pub appid: String,
    pub mchid: String,
    pub description: String,
    pub out_trade_no: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_expire: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach: Option<String>,
    pub notify_url: String,
    pub amount: OrderAmount,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<Payer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scene_info: Option<SceneInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settle_info: Option<SettleInfo>,
}

/// `settle_info` of a create body: `profit_sharing: true` freezes the paid funds for profit
/// sharing. Left out entirely for an ordinary payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettleInfo {
    pub profit_sharing: bool,
}

impl SettleInfo {
    /// The `settle_info` a create body carries: present only for a held payment.
    pub fn for_hold(hold: bool) -> Option<Self> {
        hold.then_some(Self { profit_sharing: true })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderAmount {
    pub total: i64,
    pub currency: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SceneInfo {
    pub payer_client_ip: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub h5_info: Option<H5Info>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct H5Info {
    #[serde(rename = "type")]
    pub kind: String,
}

/// `{"prepay_id"}` (jsapi, app), `{"code_url"}` (native), `{"h5_url"}` (h5).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateAnswer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepay_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub h5_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloseRequest {
    pub mchid: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundCreateRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_trade_no: Option<String>,
    pub out_refund_no: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_url: Option<String>,
    pub amount: RefundRequestAmount,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundRequestAmount {
    pub refund: i64,
    pub total: i64,
    pub currency: String,
}

/// The body of a 4xx/5xx answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
}

// ---------------------------------------------------------------------------------------------
// Times

/// RFC 3339 in Beijing time, `2024-05-01T12:00:00+08:00`, as WeChat writes body times.
pub fn format_time(t: OffsetDateTime) -> String {
    let fmt = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]+08:00");
    t.to_offset(BEIJING).format(fmt).unwrap_or_default()
}

/// Parses an RFC 3339 body time (any offset).
pub fn parse_time(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn serials_compare_as_numbers() {
        assert_eq!(normalize_serial("00f5765756002fdd77"), "F5765756002FDD77");
        assert_eq!(normalize_serial(" 0A "), "A");
        assert_eq!(normalize_serial("000"), "0");
        assert_eq!(
            normalize_serial("PUB_KEY_ID_0000000000000024101100397200000006"),
            "PUB_KEY_ID_0000000000000024101100397200000006"
        );
    }

    #[test]
    fn authorization_parses_in_any_order_and_refuses_junk() {
        let h = "WECHATPAY2-SHA256-RSA2048 serial_no=\"AB\",timestamp=\"1\",signature=\"s==\",\
                 nonce_str=\"n\",mchid=\"m\"";
        let p = parse_authorization(h).unwrap();
        assert_eq!(
            (p.mchid.as_str(), p.nonce_str.as_str(), p.signature.as_str()),
            ("m", "n", "s==")
        );
        assert_eq!((p.timestamp.as_str(), p.serial_no.as_str()), ("1", "AB"));
        assert!(parse_authorization("Bearer x").is_err());
        assert!(parse_authorization(&h.replace("mchid=\"m\"", "mchid=\"m\",mchid=\"m\"")).is_err());
        assert!(parse_authorization(&h.replace(",mchid=\"m\"", "")).is_err());
        assert!(parse_authorization(&h.replace("\"n\"", "n")).is_err());
    }

    #[test]
    fn apiv3_key_must_be_32_bytes() {
        assert_eq!(
            ApiV3Key::new("testAPIv3Key0000").unwrap_err(),
            ProtocolError::ApiV3KeyLength(16)
        );
        assert!(ApiV3Key::new(&"k".repeat(33)).is_err());
        assert!(ApiV3Key::new(&"k".repeat(32)).is_ok());
        assert_eq!(
            format!("{:?}", ApiV3Key::new(&"k".repeat(32)).unwrap()),
            "ApiV3Key(<redacted>)"
        );
    }

    #[test]
    fn empty_associated_data_round_trips() {
        let key = ApiV3Key::new(&"k".repeat(32)).unwrap();
        let ct = key.encrypt("0123456789ab", "", b"{}").unwrap();
        assert_eq!(key.decrypt("0123456789ab", "", &ct).unwrap(), b"{}");
        assert_eq!(key.decrypt("0123456789ab", "refund", &ct), Err(ProtocolError::Decrypt));
    }

    #[test]
    fn window_refuses_stale_future_and_non_numeric_timestamps() {
        let now = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        assert!(check_window("1700000000", now).is_ok());
        assert!(check_window("1699999000", now).is_err());
        assert!(check_window("1700001000", now).is_err());
        assert!(check_window("-5", now).is_err());
        assert!(check_window("17e8", now).is_err());
    }

    #[test]
    fn body_times_are_beijing_rfc3339() {
        let t = OffsetDateTime::from_unix_timestamp(1_554_208_460).unwrap();
        assert_eq!(format_time(t), "2019-04-02T20:34:20+08:00");
        assert_eq!(parse_time("2019-04-02T20:34:20+08:00"), Some(t));
    }
}

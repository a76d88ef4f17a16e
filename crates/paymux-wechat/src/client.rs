//! [`WechatChannel`]: the WeChat Pay v3 [`Channel`] over HTTPS, with platform-certificate
//! download and rotation, WeChat Pay public-key mode, and both at once (migration). Barcode
//! payments live in `barcode`, profit sharing (held payments, splits, unfreeze) in `sharing`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use paymux_core::{
    ALREADY_PAID, BarcodeCancel, BarcodePaid, BarcodeSchedule, Channel, ChannelError, ChannelKind,
    ChannelOrderNo, ChannelPayment, ChannelRefund, CreatePayment, CreatedPayment, Currency,
    InboundRequest, Money, Notification, NotificationAck, PaymentAction, PaymentMethod, PaymentRef,
    ReceiverAccount, RefundRequest, ReleaseRequest, Released, ShareRequest, ShareResult,
};
use paymux_crypto::{RsaPrivateKey, RsaPublicKey, random_alphanumeric};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap};
use reqwest::{Method, Url};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::protocol::{
    ApiV3Key, CloseRequest, CreateAnswer, CreateTransactionRequest, ErrorBody, H5Info,
    MerchantSigner, NotificationBody, OrderAmount, PUBLIC_KEY_ID_PREFIX, Payer, Refund,
    RefundCreateRequest, RefundNotice, RefundRequestAmount, SceneInfo, SettleInfo,
    SignatureHeaders, Transaction, VerifierSet, VerifyError, check_headers, decrypt_certificates,
    format_time, normalize_serial, parse_time,
};

mod barcode;
mod sharing;

/// Refresh the platform certificates when the newest expires within this long...
const REFRESH_AHEAD: time::Duration = time::Duration::hours(12);
/// ...or when they were downloaded this long ago.
const REFRESH_EVERY: time::Duration = time::Duration::hours(12);
/// At most one download per this long for an unknown serial or after a failed download, so
/// forged messages cannot make us hammer `/v3/certificates`.
const DOWNLOAD_COOLDOWN: time::Duration = time::Duration::seconds(60);
/// How long after `expires_at` an order WeChat does not know is still reported pending: a create
/// that was in flight may still land.
const NOT_EXIST_GRACE: time::Duration = time::Duration::minutes(10);

/// Characters left as they are in a path segment or query value; everything else is
/// percent-encoded once, and the request target is signed exactly as it is then sent.
const SEGMENT: &AsciiSet =
    &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~').remove(b'*').remove(b'@');

/// Where the adapter reads the time: the clock every window and validity check uses.
pub type Clock = Arc<dyn Fn() -> OffsetDateTime + Send + Sync>;

/// One WeChat Pay merchant account.
#[derive(Clone, Serialize, Deserialize)]
pub struct WechatAccountConfig {
    pub mchid: String,
    pub appid: String,
    /// The serial number of the merchant API certificate (hex).
    pub merchant_serial: String,
    /// The merchant API private key, PEM (PKCS#8 or PKCS#1).
    pub merchant_private_key: String,
    /// The APIv3 key: 32 ASCII characters.
    pub apiv3_key: String,
    /// `https://api.mch.weixin.qq.com`, or a mock's address.
    pub base_url: String,
    /// `PUB_KEY_ID_...` in WeChat Pay public-key mode (with `platform_public_key`).
    #[serde(default)]
    pub platform_public_key_id: Option<String>,
    /// The WeChat Pay public key, PEM.
    #[serde(default)]
    pub platform_public_key: Option<String>,
    /// The merchant's "订单分账最大比例" (portal: 产品中心-分账-分账管理比例) in 1/10000 of a
    /// payment's amount: the most its profit-sharing splits may take together. WeChat offers no
    /// call a direct merchant can read it with. Absent: 3000 (30 %, WeChat's usual value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_share_bps: Option<u32>,
}

impl fmt::Debug for WechatAccountConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WechatAccountConfig")
            .field("mchid", &self.mchid)
            .field("appid", &self.appid)
            .field("merchant_serial", &self.merchant_serial)
            .field("merchant_private_key", &"<redacted>")
            .field("apiv3_key", &"<redacted>")
            .field("base_url", &self.base_url)
            .field("platform_public_key_id", &self.platform_public_key_id)
            .field("platform_public_key", &self.platform_public_key.as_ref().map(|_| "<set>"))
            .field("max_share_bps", &self.max_share_bps)
            .finish()
    }
}

/// The platform certificates known so far, and when they were fetched.
#[derive(Debug)]
struct CertState {
    verifiers: Arc<VerifierSet>,
    fetched_at: Option<OffsetDateTime>,
    last_failed: Option<OffsetDateTime>,
    last_forced: Option<OffsetDateTime>,
    /// `/v3/certificates` answered 404 `RESOURCE_NOT_EXISTS`: a public-key-only merchant.
    unavailable: bool,
}

/// The WeChat Pay v3 adapter for one merchant account. Keys are parsed once, in [`Self::new`].
///
/// Key modes, chosen by the configuration:
/// - platform certificates only (no public key configured): `/v3/certificates` is downloaded on
///   first need, refreshed every 12 hours or when the newest expires within 12 hours, and once
///   more when a message names an unknown serial (then that message fails);
/// - public key configured: requests name the `PUB_KEY_ID_...`, and nothing is downloaded unless
///   a message names a hex serial (a migrating merchant's notification), which triggers one
///   download; a 404 `RESOURCE_NOT_EXISTS` there marks the merchant public-key-only for good.
///
/// Unknown-serial downloads happen at most once a minute, so forged messages cannot drive them.
pub struct WechatChannel {
    http: reqwest::Client,
    base_url: String,
    appid: String,
    signer: MerchantSigner,
    apiv3_key: ApiV3Key,
    public_key: Option<(String, RsaPublicKey)>,
    /// The most a payment's profit-sharing splits may take together, in basis points.
    max_share_bps: u32,
    /// Held only to read or swap the state, never across the network.
    certs: std::sync::Mutex<CertState>,
    /// Held across a download, so one runs at a time. Calls and notifications that can verify
    /// with the keys already known do not wait for it.
    downloading: tokio::sync::Mutex<()>,
    clock: Clock,
}

impl fmt::Debug for WechatChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WechatChannel")
            .field("mchid", &self.signer.mchid())
            .field("appid", &self.appid)
            .field("base_url", &self.base_url)
            .field("public_key_id", &self.public_key.as_ref().map(|(id, _)| id))
            .finish_non_exhaustive()
    }
}

/// An HTTP answer as received.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The error body's `code` and `message`, empty when there is none.
    fn error(&self) -> (String, String) {
        serde_json::from_slice::<ErrorBody>(&self.body)
            .map(|e| (e.code, e.message))
            .unwrap_or_default()
    }
}

/// Why a certificate download did not give certificates.
enum DownloadError {
    /// 404 `RESOURCE_NOT_EXISTS`: this merchant has no platform certificates.
    NotAvailable,
    Failed(ChannelError),
}

impl WechatChannel {
    /// Builds the adapter: parses the keys once and checks the configuration.
    pub fn new(config: &WechatAccountConfig, timeout: Duration) -> Result<Self, ChannelError> {
        let required = |name: &str, value: &str| {
            if value.trim().is_empty() {
                Err(ChannelError::invalid(format!("wechat: {name} is empty")))
            } else {
                Ok(())
            }
        };
        required("mchid", &config.mchid)?;
        required("appid", &config.appid)?;
        required("merchant_serial", &config.merchant_serial)?;
        let key = RsaPrivateKey::load(&config.merchant_private_key)
            .map_err(|e| ChannelError::invalid(format!("wechat: merchant_private_key: {e}")))?;
        let apiv3_key = ApiV3Key::new(&config.apiv3_key)
            .map_err(|e| ChannelError::invalid(format!("wechat: apiv3_key: {e}")))?;
        let base_url = config.base_url.trim_end_matches('/').to_owned();
        Url::parse(&base_url)
            .map_err(|e| ChannelError::invalid(format!("wechat: base_url: {e}")))?;
        let public_key = match (&config.platform_public_key_id, &config.platform_public_key) {
            (Some(id), Some(pem)) => {
                required("platform_public_key_id", id)?;
                let key = RsaPublicKey::load(pem).map_err(|e| {
                    ChannelError::invalid(format!("wechat: platform_public_key: {e}"))
                })?;
                Some((normalize_serial(id), key))
            }
            (None, None) => None,
            _ => {
                return Err(ChannelError::invalid(
                    "wechat: platform_public_key_id and platform_public_key go together",
                ));
            }
        };
        let max_share_bps = config.max_share_bps.unwrap_or(sharing::DEFAULT_MAX_SHARE_BPS);
        if max_share_bps > 10_000 {
            return Err(ChannelError::invalid(format!(
                "wechat: max_share_bps is {max_share_bps}, more than 10000 (the whole amount)"
            )));
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("paymux-wechat/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ChannelError::invalid(format!("wechat: HTTP client: {e}")))?;
        let mut verifiers = VerifierSet::new();
        if let Some((id, key)) = &public_key {
            verifiers = verifiers.with_public_key(id, key.clone());
        }
        Ok(Self {
            http,
            base_url,
            appid: config.appid.clone(),
            signer: MerchantSigner::new(config.mchid.clone(), config.merchant_serial.trim(), key),
            apiv3_key,
            public_key,
            max_share_bps,
            certs: std::sync::Mutex::new(CertState {
                verifiers: Arc::new(verifiers),
                fetched_at: None,
                last_failed: None,
                last_forced: None,
                unavailable: false,
            }),
            downloading: tokio::sync::Mutex::new(()),
            clock: Arc::new(OffsetDateTime::now_utc),
        })
    }

    /// Replaces the clock (tests fix it; the time window and certificate validity follow it).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    fn now(&self) -> OffsetDateTime {
        (self.clock)()
    }

    fn mchid(&self) -> &str {
        self.signer.mchid()
    }

    fn base_set(&self) -> VerifierSet {
        match &self.public_key {
            Some((id, key)) => VerifierSet::new().with_public_key(id, key.clone()),
            None => VerifierSet::new(),
        }
    }

    // -----------------------------------------------------------------------------------------
    // HTTP

    /// Signs and sends one request; answers of any status come back as they are.
    async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
        serial: Option<&str>,
    ) -> Result<Answer, ChannelError> {
        let url = Url::parse(&format!("{}{path_and_query}", self.base_url))
            .map_err(|e| ChannelError::invalid(format!("wechat: bad URL: {e}")))?;
        let target = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        let nonce = random_alphanumeric(32);
        let body_bytes = body.as_deref().unwrap_or_default();
        let auth = self
            .signer
            .authorization(
                method.as_str(),
                &target,
                self.now().unix_timestamp(),
                &nonce,
                body_bytes,
            )
            .map_err(|e| ChannelError::invalid(format!("wechat: {e}")))?;
        let mut request = self
            .http
            .request(method.clone(), url)
            .header(ACCEPT, "application/json")
            .header(AUTHORIZATION, auth);
        if let Some(serial) = serial {
            request = request.header("Wechatpay-Serial", serial);
        }
        if let Some(body) = body {
            request = request.header(CONTENT_TYPE, "application/json").body(body);
        }
        let transport = |e: reqwest::Error| {
            if e.is_timeout() {
                ChannelError::timeout(format!("wechat {method} {target}: timed out"))
            } else {
                ChannelError::unknown(format!("wechat {method} {target}: {e}"))
            }
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(transport)?.to_vec();
        if !(200..300).contains(&status) {
            let request_id = headers.get("Request-ID").and_then(|v| v.to_str().ok());
            tracing::info!(status, ?request_id, %target, "wechat answered with an error");
        }
        Ok(Answer { status, headers, body })
    }

    /// Signs, sends with `Wechatpay-Serial`, and verifies every 2xx answer: an answer that does
    /// not verify is an unknown outcome, whatever it says.
    async fn call(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, ChannelError> {
        let (serial, _) = self.wechat_key().await?;
        self.call_naming(method, path_and_query, body, &serial).await
    }

    /// [`Self::call`] naming `serial` in `Wechatpay-Serial`: the key a field of the body was
    /// encrypted for, which WeChat then also signs its answer with.
    async fn call_naming(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
        serial: &str,
    ) -> Result<Answer, ChannelError> {
        let answer = self.send(method, path_and_query, body, Some(serial)).await?;
        if answer.is_success() {
            let verified = match SignatureHeaders::from_lookup(|n| answer.header(n)) {
                Ok(headers) => self.verify(&headers, &answer.body).await,
                Err(e) => Err(e.to_string()),
            };
            if let Err(reason) = verified {
                tracing::warn!(%reason, path = path_and_query, "wechat answer failed verification");
                return Err(ChannelError::unknown(format!(
                    "wechat answer to {path_and_query} failed verification: {reason}"
                )));
            }
        }
        Ok(answer)
    }

    /// WeChat's key we use, with its serial: the public key when configured, else the newest
    /// platform certificate. Requests name it so WeChat signs its answer with it, and sensitive
    /// fields are encrypted for it.
    async fn wechat_key(&self) -> Result<(String, RsaPublicKey), ChannelError> {
        if let Some((id, key)) = &self.public_key {
            return Ok((id.clone(), key.clone()));
        }
        let set = self.verifiers(self.now()).await?;
        let cert = set
            .newest_certificate()
            .ok_or_else(|| ChannelError::unknown("wechat: no platform certificate is known"))?;
        let key = cert.public_key().map_err(|e| {
            ChannelError::unknown(format!(
                "wechat: platform certificate {}: {e}",
                cert.serial_hex()
            ))
        })?;
        Ok((cert.serial_hex().to_owned(), key.clone()))
    }

    // -----------------------------------------------------------------------------------------
    // Certificates and verification

    /// Verifies an answer or notification. The key-less checks run first, so a stale or probing
    /// message never causes a download; an unknown serial causes at most one.
    async fn verify(&self, headers: &SignatureHeaders, body: &[u8]) -> Result<(), String> {
        let now = self.now();
        check_headers(headers, now).map_err(|e| e.to_string())?;
        let set = self.verifiers(now).await.map_err(|e| e.to_string())?;
        match set.verify(headers, body, now) {
            Err(VerifyError::UnknownSerial(serial)) => {
                let set = self.refresh_for_serial(&serial, now).await?;
                set.verify(headers, body, now).map_err(|e| e.to_string())
            }
            other => other.map_err(|e| e.to_string()),
        }
    }

    fn cert_state(&self) -> std::sync::MutexGuard<'_, CertState> {
        // The state is swapped whole under the lock, so a panic elsewhere cannot leave it torn.
        self.certs.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether platform certificates are in use and missing, old or about to expire, and no
    /// failed download is cooling down.
    fn refresh_due(&self, st: &CertState, now: OffsetDateTime) -> bool {
        let in_use = self.public_key.is_none() || st.fetched_at.is_some();
        if !in_use || st.unavailable {
            return false;
        }
        let stale = match (st.fetched_at, st.verifiers.newest_certificate()) {
            (Some(at), Some(newest)) => {
                now - at >= REFRESH_EVERY || newest.not_after() - now < REFRESH_AHEAD
            }
            _ => true,
        };
        let cooling = st.last_failed.is_some_and(|t| now - t < DOWNLOAD_COOLDOWN);
        stale && !cooling
    }

    /// The current verifiers, downloading platform certificates first when they are in use and
    /// missing, old, or about to expire. While the known certificates are still valid, a
    /// refresh another task is running is not waited for: a slow `/v3/certificates` must not
    /// hold up every call and notification of the account.
    async fn verifiers(&self, now: OffsetDateTime) -> Result<Arc<VerifierSet>, ChannelError> {
        let current = {
            let st = self.cert_state();
            if !self.refresh_due(&st, now) {
                return Ok(st.verifiers.clone());
            }
            st.verifiers.clone()
        };
        let usable = current.certificates().any(|c| c.is_valid_at(now));
        let _downloading = if usable {
            match self.downloading.try_lock() {
                Ok(guard) => guard,
                Err(_) => return Ok(current),
            }
        } else {
            self.downloading.lock().await
        };
        let current = {
            let st = self.cert_state();
            if !self.refresh_due(&st, now) {
                // Another task refreshed, or failed and is cooling down, meanwhile.
                return Ok(st.verifiers.clone());
            }
            st.verifiers.clone()
        };
        let downloaded = self.download(&current, now).await;
        let mut st = self.cert_state();
        match downloaded {
            Ok(set) => {
                st.verifiers = Arc::new(set);
                st.fetched_at = Some(now);
                st.last_failed = None;
            }
            Err(e) => {
                st.last_failed = Some(now);
                let e = match e {
                    DownloadError::NotAvailable => {
                        st.unavailable = true;
                        ChannelError::invalid(
                            "wechat: /v3/certificates answered RESOURCE_NOT_EXISTS: the \
                             merchant is in public-key mode; configure \
                             platform_public_key_id and platform_public_key",
                        )
                    }
                    DownloadError::Failed(e) => e,
                };
                let usable = st.verifiers.certificates().any(|c| c.is_valid_at(now));
                if !usable {
                    return Err(e);
                }
                tracing::warn!(error = %e, "wechat certificate refresh failed; keeping the old ones");
            }
        }
        Ok(st.verifiers.clone())
    }

    /// One download for a serial no key is known for; then the serial verifies or fails. A
    /// download already running is waited for: it may bring the key.
    async fn refresh_for_serial(
        &self,
        serial: &str,
        now: OffsetDateTime,
    ) -> Result<Arc<VerifierSet>, String> {
        let unknown = || format!("no key known for Wechatpay-Serial {serial}");
        if serial.starts_with(PUBLIC_KEY_ID_PREFIX) {
            return Err(unknown());
        }
        let _downloading = self.downloading.lock().await;
        let current = {
            let mut st = self.cert_state();
            if st.verifiers.key_for(serial, now).is_ok() {
                // Another task downloaded it meanwhile.
                return Ok(st.verifiers.clone());
            }
            let cooling = st.last_forced.is_some_and(|t| now - t < DOWNLOAD_COOLDOWN);
            if st.unavailable || cooling {
                return Err(unknown());
            }
            st.last_forced = Some(now);
            st.verifiers.clone()
        };
        tracing::info!(%serial, "unknown wechat serial: downloading platform certificates");
        let downloaded = self.download(&current, now).await;
        let mut st = self.cert_state();
        match downloaded {
            Ok(set) => {
                st.verifiers = Arc::new(set);
                st.fetched_at = Some(now);
                st.last_failed = None;
                Ok(st.verifiers.clone())
            }
            Err(DownloadError::NotAvailable) => {
                st.unavailable = true;
                Err(unknown())
            }
            Err(DownloadError::Failed(e)) => {
                st.last_failed = Some(now);
                Err(format!("{}; certificate download failed: {e}", unknown()))
            }
        }
    }

    /// `GET /v3/certificates`: decrypts the entries valid now and checks the answer's signature
    /// with a key we already trust or one of the certificates it carries (bootstrap). The APIv3
    /// key's AEAD is what makes the certificates authentic.
    async fn download(
        &self,
        current: &VerifierSet,
        now: OffsetDateTime,
    ) -> Result<VerifierSet, DownloadError> {
        let serial = match &self.public_key {
            Some((id, _)) => Some(id.clone()),
            None => current.newest_certificate().map(|c| c.serial_hex().to_owned()),
        };
        let answer = self
            .send(Method::GET, "/v3/certificates", None, serial.as_deref())
            .await
            .map_err(DownloadError::Failed)?;
        if !answer.is_success() {
            let (code, message) = answer.error();
            if answer.status == 404 && code == "RESOURCE_NOT_EXISTS" {
                return Err(DownloadError::NotAvailable);
            }
            // Our own mistakes (SIGN_ERROR, ...) stay invalid; anything else is retried later.
            return Err(DownloadError::Failed(match error_outcome(&answer) {
                e @ ChannelError::Invalid { .. } => e,
                _ => ChannelError::unknown(format!(
                    "wechat /v3/certificates: HTTP {} {code} {message}",
                    answer.status
                )),
            }));
        }
        let fail = |reason: String| {
            DownloadError::Failed(ChannelError::unknown(format!(
                "wechat /v3/certificates: {reason}"
            )))
        };
        let certs = decrypt_certificates(&answer.body, &self.apiv3_key, now)
            .map_err(|e| fail(e.to_string()))?;
        if certs.is_empty() {
            return Err(fail("no complete certificate valid now".into()));
        }
        let headers =
            SignatureHeaders::from_lookup(|n| answer.header(n)).map_err(|e| fail(e.to_string()))?;
        let bootstrap = self
            .base_set()
            .with_certificates(certs.iter().cloned().chain(current.certificates().cloned()));
        bootstrap.verify(&headers, &answer.body, now).map_err(|e| fail(e.to_string()))?;
        tracing::info!(
            serials = ?certs.iter().map(|c| c.serial_hex()).collect::<Vec<_>>(),
            "wechat platform certificates downloaded"
        );
        Ok(self.base_set().with_certificates(certs))
    }

    fn verified_json<T: serde::de::DeserializeOwned>(answer: &Answer) -> Result<T, ChannelError> {
        serde_json::from_slice(&answer.body).map_err(|e| {
            ChannelError::unknown(format!("wechat: verified answer is unreadable: {e}"))
        })
    }

    fn client_params(
        &self,
        method: PaymentMethod,
        prepay_id: &str,
    ) -> Result<PaymentAction, ChannelError> {
        let ts = self.now().unix_timestamp();
        let nonce = random_alphanumeric(32);
        // The order exists at WeChat by now: a local failure leaves it to be queried.
        let failed = |_| ChannelError::unknown("wechat: could not sign the client parameters");
        let params = if method == PaymentMethod::App {
            let p = self.signer.app_params(&self.appid, ts, &nonce, prepay_id).map_err(failed)?;
            serde_json::to_value(p)
        } else {
            let p = self.signer.jsapi_params(&self.appid, ts, &nonce, prepay_id).map_err(failed)?;
            serde_json::to_value(p)
        };
        let params =
            params.map_err(|e| ChannelError::unknown(format!("wechat: client parameters: {e}")))?;
        Ok(PaymentAction::Sdk { params })
    }
}

/// A non-2xx answer: 5xx, 429 and the retry codes are unknown; our own mistakes are invalid; any
/// other 4xx business code is a definite refusal.
fn error_outcome(answer: &Answer) -> ChannelError {
    let (code, message) = answer.error();
    let status = answer.status;
    match code.as_str() {
        "SYSTEM_ERROR" | "BANKERROR" | "FREQUENCY_LIMITED" => {
            ChannelError::unknown(format!("wechat: HTTP {status} {code}: {message}"))
        }
        _ if status >= 500 || status == 429 || !(400..500).contains(&status) => {
            ChannelError::unknown(format!("wechat: HTTP {status} {code}: {message}"))
        }
        "SIGN_ERROR" | "PARAM_ERROR" | "APPID_MCHID_NOT_MATCH" | "MCH_NOT_EXISTS" => {
            ChannelError::invalid(format!("wechat: {code}: {message}"))
        }
        "" => ChannelError::unknown(format!("wechat: HTTP {status} without an error code")),
        _ => ChannelError::declined(code, message),
    }
}

/// For queries a refusal is not a business outcome: only our own mistakes stay invalid, the rest
/// is unknown (a query must never fail a payment or a refund).
fn query_error_outcome(answer: &Answer) -> ChannelError {
    match error_outcome(answer) {
        ChannelError::Declined { code, message } => ChannelError::unknown(format!(
            "wechat query answered HTTP {} {code}: {message}",
            answer.status
        )),
        other => other,
    }
}

/// `trade_state` to the unified payment state.
fn payment_state(tx: &Transaction) -> Result<ChannelPayment, String> {
    match tx.trade_state.as_str() {
        "SUCCESS" | "REFUND" => {
            let trade_no = tx
                .transaction_id
                .clone()
                .filter(|t| !t.is_empty())
                .ok_or("a paid transaction without transaction_id")?;
            let amount = tx.amount.as_ref().ok_or("a paid transaction without amount")?;
            let total = amount.total.ok_or("a paid transaction without amount.total")?;
            let currency = match amount.currency.as_deref() {
                None => Currency::Cny,
                Some(c) => c.parse().map_err(|e| format!("amount.currency: {e}"))?,
            };
            let amount = Money::new(total, currency).map_err(|e| format!("amount.total: {e}"))?;
            let paid_at = tx.success_time.as_deref().and_then(parse_time);
            Ok(ChannelPayment::Succeeded { channel_trade_no: trade_no, amount, paid_at })
        }
        "NOTPAY" | "USERPAYING" => Ok(ChannelPayment::Pending),
        "CLOSED" | "REVOKED" => Ok(ChannelPayment::Closed),
        "PAYERROR" => Ok(ChannelPayment::Failed {
            code: "PAYERROR".into(),
            message: tx.trade_state_desc.clone().unwrap_or_default(),
        }),
        other => Err(format!("unknown trade_state {other:?}")),
    }
}

/// Refund `status` / `refund_status` to the unified refund state.
fn refund_state(
    status: &str,
    refund_id: Option<&str>,
    success_time: Option<&str>,
    refunded_fen: Option<i64>,
) -> Result<ChannelRefund, String> {
    let channel_refund_id = refund_id.filter(|r| !r.is_empty()).map(str::to_owned);
    match status {
        "SUCCESS" => Ok(ChannelRefund::Succeeded {
            channel_refund_id,
            succeeded_at: success_time.and_then(parse_time),
            amount: refunded_fen
                .map(|fen| Money::new(fen, Currency::Cny))
                .transpose()
                .map_err(|e| format!("refund amount: {e}"))?,
            refunded_total: None,
        }),
        "PROCESSING" => Ok(ChannelRefund::Pending { channel_refund_id }),
        // ABNORMAL is not final: once re-driven (apply-abnormal-refund, or the merchant portal)
        // the refund can still succeed. Re-sending it does not help.
        "ABNORMAL" => Ok(ChannelRefund::ActionRequired { channel_refund_id }),
        "CLOSED" => Ok(ChannelRefund::Failed {
            code: "CLOSED".into(),
            message: "WeChat closed the refund".into(),
        }),
        other => Err(format!("unknown refund status {other:?}")),
    }
}

fn encode(segment: &str) -> String {
    utf8_percent_encode(segment, SEGMENT).to_string()
}

/// WeChat's `out_trade_no` rule: 6-32 of `[0-9A-Za-z_*-]`.
fn valid_out_trade_no(no: &str) -> bool {
    (6..=32).contains(&no.len())
        && no.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'*' | b'-'))
}

#[async_trait]
impl Channel for WechatChannel {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Wechat
    }

    fn supports(&self, method: PaymentMethod) -> bool {
        matches!(
            method,
            PaymentMethod::Qr
                | PaymentMethod::Jsapi
                | PaymentMethod::MiniProgram
                | PaymentMethod::H5
                | PaymentMethod::App
                | PaymentMethod::Barcode
        )
    }

    async fn create(&self, req: &CreatePayment) -> Result<CreatedPayment, ChannelError> {
        let out_trade_no = req.channel_order_no.as_str();
        if !valid_out_trade_no(out_trade_no) {
            return Err(ChannelError::invalid(format!(
                "wechat: out_trade_no {out_trade_no:?} is not 6-32 of [0-9A-Za-z_*-]"
            )));
        }
        let chars = req.subject.chars().count();
        if chars == 0 || chars > 127 {
            return Err(ChannelError::invalid("wechat: subject must be 1-127 characters"));
        }
        let (path, payer, scene_info) = match req.method {
            PaymentMethod::Qr => ("native", None, None),
            PaymentMethod::App => ("app", None, None),
            PaymentMethod::Jsapi | PaymentMethod::MiniProgram => {
                let openid =
                    req.payer_openid.clone().filter(|o| !o.is_empty()).ok_or_else(|| {
                        ChannelError::invalid("wechat: jsapi and mini_program need payer.openid")
                    })?;
                ("jsapi", Some(Payer { openid }), None)
            }
            PaymentMethod::H5 => {
                let ip = req.client_ip.clone().filter(|ip| !ip.is_empty()).ok_or_else(|| {
                    ChannelError::invalid("wechat: h5 needs the payer's client_ip")
                })?;
                let scene = SceneInfo {
                    payer_client_ip: ip,
                    device_id: None,
                    h5_info: Some(H5Info { kind: "Wap".into() }),
                };
                ("h5", None, Some(scene))
            }
            other => {
                return Err(ChannelError::invalid(format!("wechat does not support {other}")));
            }
        };
        let body = CreateTransactionRequest {
            appid: self.appid.clone(),
            mchid: self.mchid().to_owned(),
            description: req.subject.clone(),
            out_trade_no: out_trade_no.to_owned(),
            time_expire: Some(format_time(req.expires_at)),
            attach: None,
            notify_url: req.notify_url.clone(),
            amount: OrderAmount {
                total: req.amount.minor(),
                currency: req.amount.currency().code().to_owned(),
            },
            payer,
            scene_info,
            settle_info: SettleInfo::for_hold(req.hold),
        };
        let body = serde_json::to_vec(&body)
            .map_err(|e| ChannelError::invalid(format!("wechat: create body: {e}")))?;
        let answer =
            self.call(Method::POST, &format!("/v3/pay/transactions/{path}"), Some(body)).await?;
        if !answer.is_success() {
            return Err(error_outcome(&answer));
        }
        let created: CreateAnswer = Self::verified_json(&answer)?;
        let missing = |field: &str| ChannelError::unknown(format!("wechat: answer lacks {field}"));
        match req.method {
            PaymentMethod::Qr => {
                let code_url = created.code_url.ok_or_else(|| missing("code_url"))?;
                Ok(CreatedPayment {
                    action: PaymentAction::QrCode { code_url },
                    channel_data: serde_json::json!({}),
                })
            }
            PaymentMethod::H5 => {
                let url = created.h5_url.ok_or_else(|| missing("h5_url"))?;
                Ok(CreatedPayment {
                    action: PaymentAction::Redirect { url },
                    channel_data: serde_json::json!({}),
                })
            }
            method => {
                let prepay_id = created.prepay_id.ok_or_else(|| missing("prepay_id"))?;
                Ok(CreatedPayment {
                    action: self.client_params(method, &prepay_id)?,
                    channel_data: serde_json::json!({ "prepay_id": prepay_id }),
                })
            }
        }
    }

    /// `ORDER_NOT_EXIST` is pending until 10 minutes after `expires_at` (a create in flight may
    /// still land), then closed: an order WeChat does not know cannot be paid. Never failed.
    async fn query(&self, payment: &PaymentRef) -> Result<ChannelPayment, ChannelError> {
        let no = payment.channel_order_no.as_str();
        let path = format!(
            "/v3/pay/transactions/out-trade-no/{}?mchid={}",
            encode(no),
            encode(self.mchid())
        );
        let answer = self.call(Method::GET, &path, None).await?;
        if !answer.is_success() {
            if answer.error().0 == "ORDER_NOT_EXIST" {
                return Ok(if self.now() < payment.expires_at + NOT_EXIST_GRACE {
                    ChannelPayment::Pending
                } else {
                    ChannelPayment::Closed
                });
            }
            return Err(query_error_outcome(&answer));
        }
        let tx: Transaction = Self::verified_json(&answer)?;
        if tx.out_trade_no != no || tx.mchid != self.mchid() {
            return Err(ChannelError::unknown(format!(
                "wechat: query for {no} answered for {} of {}",
                tx.out_trade_no, tx.mchid
            )));
        }
        payment_state(&tx).map_err(|e| ChannelError::unknown(format!("wechat: {e}")))
    }

    /// 204 (signed) closes; `ORDER_CLOSED` is already closed; `ORDERPAID` is
    /// `Declined { code: already_paid }`. `ORDER_NOT_EXIST` counts as closed, as Alipay's
    /// `ACQ.TRADE_NOT_EXIST` does: the create never reached WeChat (its process died before
    /// sending it, say), so there is no order anyone can pay, and closing is what was asked.
    /// Should a create still in flight land later, its order expires at the `time_expire` sent
    /// with it, and the closed payment is queried until then, so a payment of it is still found.
    async fn close(&self, payment: &PaymentRef) -> Result<(), ChannelError> {
        let path = format!(
            "/v3/pay/transactions/out-trade-no/{}/close",
            encode(payment.channel_order_no.as_str())
        );
        let body = serde_json::to_vec(&CloseRequest { mchid: self.mchid().to_owned() })
            .map_err(|e| ChannelError::invalid(format!("wechat: close body: {e}")))?;
        let answer = self.call(Method::POST, &path, Some(body)).await?;
        if answer.is_success() {
            return Ok(());
        }
        let (code, message) = answer.error();
        match code.as_str() {
            "ORDERPAID" => Err(ChannelError::declined(ALREADY_PAID, message)),
            "ORDER_CLOSED" | "ORDER_NOT_EXIST" => Ok(()),
            _ => Err(error_outcome(&answer)),
        }
    }

    async fn refund(&self, req: &RefundRequest) -> Result<ChannelRefund, ChannelError> {
        let body = RefundCreateRequest {
            transaction_id: None,
            out_trade_no: Some(req.payment.channel_order_no.as_str().to_owned()),
            out_refund_no: req.channel_refund_no.as_str().to_owned(),
            reason: req.reason.clone().filter(|r| !r.is_empty()),
            notify_url: Some(req.notify_url.clone()),
            amount: RefundRequestAmount {
                refund: req.amount.minor(),
                total: req.payment.amount.minor(),
                currency: req.amount.currency().code().to_owned(),
            },
        };
        let body = serde_json::to_vec(&body)
            .map_err(|e| ChannelError::invalid(format!("wechat: refund body: {e}")))?;
        let answer = self.call(Method::POST, "/v3/refund/domestic/refunds", Some(body)).await?;
        if !answer.is_success() {
            return Err(error_outcome(&answer));
        }
        self.refund_answer(&answer, req)
    }

    /// `RESOURCE_NOT_EXISTS` (the refund never reached WeChat) is unknown, not failed: re-sending
    /// the refund with the same `out_refund_no` is safe, declaring it failed is not.
    async fn query_refund(&self, req: &RefundRequest) -> Result<ChannelRefund, ChannelError> {
        let path =
            format!("/v3/refund/domestic/refunds/{}", encode(req.channel_refund_no.as_str()));
        let answer = self.call(Method::GET, &path, None).await?;
        if !answer.is_success() {
            return Err(query_error_outcome(&answer));
        }
        self.refund_answer(&answer, req)
    }

    async fn parse_notification(&self, req: &InboundRequest) -> Result<Notification, ChannelError> {
        let unverified = |reason: String| {
            tracing::warn!(%reason, "wechat notification refused");
            ChannelError::unverified(format!("wechat notification: {reason}"))
        };
        if !req.method.eq_ignore_ascii_case("POST") {
            return Err(unverified(format!("method {}", req.method)));
        }
        let headers = SignatureHeaders::from_lookup(|n| req.header(n))
            .map_err(|e| unverified(e.to_string()))?;
        self.verify(&headers, &req.body).await.map_err(unverified)?;
        let body = NotificationBody::parse(&req.body).map_err(|e| unverified(e.to_string()))?;
        let plain =
            body.decrypt_resource(&self.apiv3_key).map_err(|e| unverified(e.to_string()))?;
        let notify_id = Some(body.id.clone()).filter(|id| !id.is_empty());
        let order_no = |no: &str| {
            ChannelOrderNo::from_channel(no)
                .ok_or_else(|| unverified(format!("bad order number {no:?}")))
        };
        match body.event_type.as_str() {
            "TRANSACTION.SUCCESS" => {
                let tx: Transaction = serde_json::from_slice(&plain)
                    .map_err(|e| unverified(format!("transaction: {e}")))?;
                if tx.mchid != self.mchid() {
                    return Err(unverified(format!("for another mchid {}", tx.mchid)));
                }
                let state = payment_state(&tx).map_err(unverified)?;
                if !matches!(state, ChannelPayment::Succeeded { .. }) {
                    return Err(unverified(format!(
                        "TRANSACTION.SUCCESS with trade_state {}",
                        tx.trade_state
                    )));
                }
                Ok(Notification::Payment {
                    notify_id,
                    channel_order_no: order_no(&tx.out_trade_no)?,
                    state,
                })
            }
            event @ ("REFUND.SUCCESS" | "REFUND.CLOSED" | "REFUND.ABNORMAL") => {
                let notice: RefundNotice = serde_json::from_slice(&plain)
                    .map_err(|e| unverified(format!("refund: {e}")))?;
                if notice.mchid != self.mchid() {
                    return Err(unverified(format!("for another mchid {}", notice.mchid)));
                }
                if event.strip_prefix("REFUND.") != Some(notice.refund_status.as_str()) {
                    return Err(unverified(format!(
                        "{event} with refund_status {}",
                        notice.refund_status
                    )));
                }
                let state = refund_state(
                    &notice.refund_status,
                    notice.refund_id.as_deref(),
                    notice.success_time.as_deref(),
                    notice.amount.as_ref().and_then(|a| a.refund),
                )
                .map_err(unverified)?;
                Ok(Notification::Refund {
                    notify_id,
                    channel_order_no: order_no(&notice.out_trade_no)?,
                    channel_refund_no: order_no(&notice.out_refund_no)?,
                    state,
                })
            }
            other => Err(unverified(format!("unsupported event_type {other:?}"))),
        }
    }

    fn check_auth_code(&self, auth_code: &str) -> Result<(), String> {
        barcode::check_auth_code(auth_code)
    }

    fn barcode_schedule(&self) -> Option<BarcodeSchedule> {
        Some(barcode::SCHEDULE)
    }

    async fn pay_barcode(&self, req: &CreatePayment) -> Result<BarcodePaid, ChannelError> {
        self.barcode_pay(req).await
    }

    async fn cancel_barcode(&self, payment: &PaymentRef) -> Result<BarcodeCancel, ChannelError> {
        self.barcode_reverse(payment).await
    }

    fn holds_funds(&self) -> bool {
        true
    }

    fn max_share_bps(&self) -> u32 {
        self.max_share_bps
    }

    async fn add_receiver(&self, receiver: &ReceiverAccount) -> Result<(), ChannelError> {
        self.sharing_add_receiver(receiver).await
    }

    async fn share(&self, req: &ShareRequest) -> Result<ShareResult, ChannelError> {
        self.sharing_split(req).await
    }

    async fn query_share(&self, req: &ShareRequest) -> Result<ShareResult, ChannelError> {
        self.sharing_query(req).await
    }

    async fn release(&self, req: &ReleaseRequest) -> Result<Released, ChannelError> {
        self.sharing_unfreeze(req).await
    }

    fn ack(&self, accepted: bool) -> NotificationAck {
        if accepted {
            NotificationAck { status: 204, content_type: "application/json", body: Vec::new() }
        } else {
            NotificationAck {
                status: 500,
                content_type: "application/json",
                body: r#"{"code":"FAIL","message":"失败"}"#.as_bytes().to_vec(),
            }
        }
    }
}

impl WechatChannel {
    fn refund_answer(
        &self,
        answer: &Answer,
        req: &RefundRequest,
    ) -> Result<ChannelRefund, ChannelError> {
        let refund: Refund = Self::verified_json(answer)?;
        if refund.out_refund_no != req.channel_refund_no.as_str() {
            return Err(ChannelError::unknown(format!(
                "wechat: refund answer is for {}, not {}",
                refund.out_refund_no, req.channel_refund_no
            )));
        }
        refund_state(
            &refund.status,
            refund.refund_id.as_deref(),
            refund.success_time.as_deref(),
            refund.amount.as_ref().and_then(|a| a.refund),
        )
        .map_err(|e| ChannelError::unknown(format!("wechat: {e}")))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Answer {
        Answer { status, headers: HeaderMap::new(), body: body.as_bytes().to_vec() }
    }

    fn declined(code: &str) -> ChannelError {
        ChannelError::declined(code, "m")
    }

    #[test]
    fn errors_map_to_the_four_outcomes() {
        let e = |s, code: &str| {
            error_outcome(&answer(s, &format!(r#"{{"code":"{code}","message":"m"}}"#)))
        };
        assert!(matches!(e(500, "SYSTEM_ERROR"), ChannelError::Unknown { timed_out: false, .. }));
        assert!(matches!(e(403, "BANKERROR"), ChannelError::Unknown { .. }));
        assert!(matches!(e(429, "FREQUENCY_LIMITED"), ChannelError::Unknown { .. }));
        assert!(matches!(e(502, "NOT_ENOUGH"), ChannelError::Unknown { .. }));
        assert!(matches!(e(401, "SIGN_ERROR"), ChannelError::Invalid { .. }));
        assert!(matches!(e(400, "PARAM_ERROR"), ChannelError::Invalid { .. }));
        assert!(matches!(e(400, "APPID_MCHID_NOT_MATCH"), ChannelError::Invalid { .. }));
        assert!(matches!(e(400, "MCH_NOT_EXISTS"), ChannelError::Invalid { .. }));
        assert_eq!(e(403, "NOT_ENOUGH"), declined("NOT_ENOUGH"));
        assert_eq!(e(400, "INVALID_REQUEST"), declined("INVALID_REQUEST"));
        assert_eq!(e(400, "ORDER_CLOSED"), declined("ORDER_CLOSED"));
        assert!(matches!(error_outcome(&answer(400, "<html>")), ChannelError::Unknown { .. }));
        assert!(matches!(
            query_error_outcome(&answer(403, r#"{"code":"NOT_ENOUGH","message":"m"}"#)),
            ChannelError::Unknown { .. }
        ));
    }

    fn tx(state: &str) -> Transaction {
        serde_json::from_value(serde_json::json!({
            "mchid": "1", "out_trade_no": "ORDER123", "transaction_id": "42000",
            "trade_state": state, "success_time": "2024-05-01T12:00:00+08:00",
            "amount": {"total": 100, "currency": "CNY"}
        }))
        .unwrap()
    }

    #[test]
    fn trade_states_map_to_unified_states() {
        let paid = payment_state(&tx("SUCCESS")).unwrap();
        assert_eq!(
            paid,
            ChannelPayment::Succeeded {
                channel_trade_no: "42000".into(),
                amount: Money::new(100, Currency::Cny).unwrap(),
                paid_at: parse_time("2024-05-01T04:00:00Z"),
            }
        );
        assert_eq!(payment_state(&tx("REFUND")).unwrap(), paid);
        assert_eq!(payment_state(&tx("NOTPAY")), Ok(ChannelPayment::Pending));
        assert_eq!(payment_state(&tx("USERPAYING")), Ok(ChannelPayment::Pending));
        assert_eq!(payment_state(&tx("CLOSED")), Ok(ChannelPayment::Closed));
        assert_eq!(payment_state(&tx("REVOKED")), Ok(ChannelPayment::Closed));
        assert!(matches!(payment_state(&tx("PAYERROR")), Ok(ChannelPayment::Failed { .. })));
        assert!(payment_state(&tx("SOMETHING")).is_err());
        let mut no_amount = tx("SUCCESS");
        no_amount.amount = None;
        assert!(payment_state(&no_amount).is_err());
        let mut usd = tx("SUCCESS");
        usd.amount.as_mut().unwrap().currency = Some("USD".into());
        assert!(payment_state(&usd).is_err());
    }

    #[test]
    fn refund_states_map_to_unified_states() {
        assert!(matches!(
            refund_state("SUCCESS", Some("50"), None, None),
            Ok(ChannelRefund::Succeeded { channel_refund_id: Some(_), .. })
        ));
        assert!(matches!(
            refund_state("PROCESSING", None, None, None),
            Ok(ChannelRefund::Pending { .. })
        ));
        assert!(matches!(
            refund_state("CLOSED", None, None, None),
            Ok(ChannelRefund::Failed { .. })
        ));
    }

    #[test]
    fn an_abnormal_refund_needs_action_and_is_not_final() {
        assert_eq!(
            refund_state("ABNORMAL", Some("50300"), None, None),
            Ok(ChannelRefund::ActionRequired { channel_refund_id: Some("50300".into()) })
        );
    }

    #[test]
    fn unknown_refund_states_are_refused() {
        assert!(refund_state("WHATEVER", None, None, None).is_err());
    }

    #[test]
    fn out_trade_no_rule() {
        assert!(valid_out_trade_no("0193A7C2E4F87B1D9C3E5A6B7C8D9E0F"));
        assert!(valid_out_trade_no("a_b*c-"));
        assert!(!valid_out_trade_no("short"));
        assert!(!valid_out_trade_no("has|bar1"));
        assert_eq!(encode("a|b*@"), "a%7Cb*@");
    }
}

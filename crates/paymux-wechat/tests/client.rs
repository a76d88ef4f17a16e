//! `WechatChannel` against a tiny WeChat stand-in on 127.0.0.1:0 that checks our request
//! signatures and signs its answers with test platform certificates or a test public key.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use paymux_core::{
    ALREADY_PAID, BarcodeCancel, Channel, ChannelError, ChannelOrderNo, ChannelPayment,
    ChannelRefund, CreatePayment, Currency, InboundRequest, Money, Notification, PaymentAction,
    PaymentMethod, PaymentRef, RefundRequest,
};
use paymux_crypto::{Certificate, RsaPrivateKey, RsaPublicKey, random_alphanumeric};
use paymux_wechat::protocol::{
    ApiV3Key, CertificateEntry, CertificatesAnswer, EncryptedCertificate, answer_message,
    parse_authorization, request_message,
};
use paymux_wechat::{WechatAccountConfig, WechatChannel};
use serde_json::{Value, json};
use support::{WECHAT_CODE, barcode, create};
use time::OffsetDateTime;

const APIV3: &str = "0123456789abcdefghijABCDEFGHIJ01";
const MCHID: &str = "1900007291";
const PUB_ID: &str = "PUB_KEY_ID_0000000000000024101100397200000006";

/// A test platform certificate and its key.
#[derive(Clone)]
struct Platform {
    key: RsaPrivateKey,
    pem: String,
    serial: String,
}

fn platform(serial: u64) -> Platform {
    let key = RsaPrivateKey::generate().unwrap();
    let kp = rcgen::KeyPair::from_pkcs8_pem_and_sign_algo(
        &key.to_pkcs8_pem().unwrap(),
        &rcgen::PKCS_RSA_SHA256,
    )
    .unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial.to_be_bytes()));
    let now = OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(365);
    params.distinguished_name.push(rcgen::DnType::CommonName, "Tenpay.com sign");
    let pem = params.self_signed(&kp).unwrap().pem();
    let serial = Certificate::from_pem(&pem).unwrap().serial_hex().to_owned();
    Platform { key, pem, serial }
}

/// Which key signs the stand-in's answers.
#[derive(Clone)]
enum Signer {
    Cert(Platform),
    PublicKey(RsaPrivateKey),
}

impl Signer {
    fn sign(&self, ts: i64, nonce: &str, body: &[u8]) -> (String, String) {
        let message = answer_message(&ts.to_string(), nonce, body);
        match self {
            Signer::Cert(p) => (p.serial.clone(), p.key.sign_base64(&message).unwrap()),
            Signer::PublicKey(k) => (PUB_ID.to_owned(), k.sign_base64(&message).unwrap()),
        }
    }
}

struct World {
    merchant: RsaPublicKey,
    listed: Vec<Platform>,
    signer: Signer,
    /// `/v3/certificates` answers 404 RESOURCE_NOT_EXISTS (public-key-only merchant).
    no_certificates: bool,
    bad_signature: bool,
    slow: bool,
    error: Option<(u16, &'static str)>,
    trade_state: &'static str,
    cert_downloads: usize,
    serial_headers: Vec<Option<String>>,
    /// When set, a `/v3/certificates` request waits for a permit before it is answered.
    cert_gate: Option<Arc<tokio::sync::Semaphore>>,
    /// `/v3/certificates` requests received, counted before any gate.
    cert_requests: usize,
    /// The body of the last business request, as parsed JSON.
    last_body: Value,
}

#[derive(Clone)]
struct Stand(Arc<Mutex<World>>);

fn reply(status: u16, body: Vec<u8>, signer: Option<&Signer>, bad: bool) -> Response {
    let mut b = Response::builder().status(status).header("Request-ID", "test-request");
    if !body.is_empty() {
        b = b.header("Content-Type", "application/json");
    }
    if let Some(signer) = signer {
        let ts = OffsetDateTime::now_utc().unix_timestamp();
        let nonce = random_alphanumeric(32);
        let signed: &[u8] = if bad { b"{\"something\":\"else\"}" } else { &body };
        let (serial, sig) = signer.sign(ts, &nonce, signed);
        b = b
            .header("Wechatpay-Timestamp", ts.to_string())
            .header("Wechatpay-Nonce", nonce)
            .header("Wechatpay-Signature", sig)
            .header("Wechatpay-Serial", serial)
            .header("Wechatpay-Signature-Type", "WECHATPAY2-SHA256-RSA2048");
    }
    b.body(Body::from(body)).unwrap()
}

fn error(status: u16, code: &str) -> Response {
    reply(status, json!({"code": code, "message": "test"}).to_string().into_bytes(), None, false)
}

fn certificates_body(listed: &[Platform]) -> Vec<u8> {
    let key = ApiV3Key::new(APIV3).unwrap();
    let now = OffsetDateTime::now_utc();
    let data = listed
        .iter()
        .map(|p| {
            let nonce = random_alphanumeric(12);
            CertificateEntry {
                serial_no: Some(p.serial.clone()),
                effective_time: Some(paymux_wechat::protocol::format_time(
                    now - time::Duration::days(1),
                )),
                expire_time: Some(paymux_wechat::protocol::format_time(
                    now + time::Duration::days(300),
                )),
                encrypt_certificate: Some(EncryptedCertificate {
                    algorithm: Some("AEAD_AES_256_GCM".into()),
                    ciphertext: Some(key.encrypt(&nonce, "certificate", p.pem.as_bytes()).unwrap()),
                    nonce: Some(nonce),
                    associated_data: Some("certificate".into()),
                }),
            }
        })
        .collect();
    serde_json::to_vec(&CertificatesAnswer { data }).unwrap()
}

async fn handle(
    State(stand): State<Stand>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (slow, merchant, gate) = {
        let mut w = stand.0.lock().unwrap();
        let gate = if uri.path() == "/v3/certificates" {
            w.cert_requests += 1;
            w.cert_gate.clone()
        } else {
            None
        };
        (w.slow, w.merchant.clone(), gate)
    };
    if slow {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    if let Some(gate) = gate {
        gate.acquire().await.unwrap().forget();
    }
    // Check the request signature over the target exactly as received.
    let auth = headers.get("Authorization").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let Ok(p) = parse_authorization(auth) else { return error(401, "SIGN_ERROR") };
    let target = uri.path_and_query().map(|pq| pq.as_str()).unwrap_or_default();
    let ts: i64 = p.timestamp.parse().unwrap_or_default();
    let message = request_message(method.as_str(), target, ts, &p.nonce_str, &body);
    if p.mchid != MCHID || merchant.verify_base64(&message, &p.signature).is_err() {
        return error(401, "SIGN_ERROR");
    }

    let mut w = stand.0.lock().unwrap();
    w.serial_headers
        .push(headers.get("Wechatpay-Serial").and_then(|v| v.to_str().ok()).map(str::to_owned));
    let path = uri.path().to_owned();
    if path == "/v3/certificates" {
        w.cert_downloads += 1;
        if w.no_certificates {
            return error(404, "RESOURCE_NOT_EXISTS");
        }
        // Signed with a certificate the answer lists, so a client can bootstrap.
        let signer = Signer::Cert(w.listed[0].clone());
        return reply(200, certificates_body(&w.listed), Some(&signer), false);
    }
    if let Some((status, code)) = w.error.take() {
        return error(status, code);
    }
    let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    w.last_body = req.clone();
    let answer = match (method.as_str(), path.as_str()) {
        ("POST", "/v3/pay/transactions/native") => {
            json!({"code_url": "weixin://wxpay/bizpayurl?pr=T"})
        }
        ("POST", "/v3/pay/transactions/jsapi" | "/v3/pay/transactions/app") => {
            json!({"prepay_id": "wx201410272009395522657a690389285100"})
        }
        ("POST", "/v3/pay/transactions/h5") => json!({"h5_url": "https://wx.tenpay.com/h5"}),
        ("POST", "/v3/pay/transactions/codepay") if w.trade_state == "USERPAYING" => {
            let body = json!({"trade_state": "USERPAYING"}).to_string().into_bytes();
            return reply(202, body, Some(&w.signer.clone()), w.bad_signature);
        }
        ("POST", "/v3/pay/transactions/codepay") => {
            json!({"mchid": MCHID, "appid": "wxapp", "out_trade_no": req["out_trade_no"],
                   "transaction_id": "4200000002", "trade_type": "MICROPAY",
                   "trade_state": w.trade_state, "success_time": "2024-05-01T12:00:00+08:00",
                   "amount": {"total": 100, "payer_total": 100, "currency": "CNY"}})
        }
        ("POST", p) if p.ends_with("/reverse") => {
            let no = p.split('/').nth(5).unwrap_or_default();
            json!({"appid": req["appid"], "mchid": req["mchid"], "out_trade_no": no})
        }
        ("POST", p) if p.ends_with("/close") => {
            return reply(204, Vec::new(), Some(&w.signer.clone()), w.bad_signature);
        }
        ("GET", p) if p.starts_with("/v3/pay/transactions/out-trade-no/") => {
            let no = p.rsplit('/').next().unwrap();
            json!({"mchid": MCHID, "appid": "wxapp", "out_trade_no": no,
                   "transaction_id": "4200000001", "trade_state": w.trade_state,
                   "success_time": "2024-05-01T12:00:00+08:00",
                   "amount": {"total": 100, "payer_total": 100, "currency": "CNY"}})
        }
        ("POST", "/v3/refund/domestic/refunds") => {
            json!({"refund_id": "50000", "out_refund_no": req["out_refund_no"], "status": "PROCESSING"})
        }
        _ => return error(404, "RESOURCE_NOT_EXISTS"),
    };
    reply(200, answer.to_string().into_bytes(), Some(&w.signer.clone()), w.bad_signature)
}

struct Harness {
    stand: Stand,
    channel: WechatChannel,
    merchant: RsaPrivateKey,
}

/// Starts the stand-in. `public_key`: configure (and answer with) the WeChat Pay public key.
async fn start(
    listed: Vec<Platform>,
    public_key: Option<RsaPrivateKey>,
    timeout: Duration,
) -> Harness {
    let merchant = RsaPrivateKey::generate().unwrap();
    let signer = match &public_key {
        Some(k) => Signer::PublicKey(k.clone()),
        None => Signer::Cert(listed[0].clone()),
    };
    let stand = Stand(Arc::new(Mutex::new(World {
        merchant: merchant.public_key(),
        listed,
        signer,
        no_certificates: public_key.is_some(),
        bad_signature: false,
        slow: false,
        error: None,
        trade_state: "SUCCESS",
        cert_downloads: 0,
        serial_headers: Vec::new(),
        cert_gate: None,
        cert_requests: 0,
        last_body: Value::Null,
    })));
    let app = Router::new().fallback(handle).with_state(stand.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let config = WechatAccountConfig {
        mchid: MCHID.into(),
        appid: "wx2421b1c4370ec43b".into(),
        merchant_serial: "408B07E79B8269FEC3D5D3E6AB8ED163A6A380DB".into(),
        merchant_private_key: merchant.to_pkcs8_pem().unwrap(),
        apiv3_key: APIV3.into(),
        base_url: format!("http://{addr}"),
        platform_public_key_id: public_key.as_ref().map(|_| PUB_ID.to_owned()),
        platform_public_key: public_key.as_ref().map(|k| k.public_key().to_spki_pem()),
        max_share_bps: None,
    };
    let channel = WechatChannel::new(&config, timeout).unwrap();
    Harness { stand, channel, merchant }
}

impl Harness {
    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.stand.0.lock().unwrap()
    }
}

fn payment_ref() -> PaymentRef {
    let now = OffsetDateTime::now_utc();
    PaymentRef {
        channel_order_no: ChannelOrderNo::generate(),
        channel_trade_no: None,
        amount: Money::new(100, Currency::Cny).unwrap(),
        created_at: now,
        expires_at: now + time::Duration::minutes(30),
        channel_data: json!({}),
    }
}

fn refund_request() -> RefundRequest {
    RefundRequest {
        payment: payment_ref(),
        channel_refund_no: ChannelOrderNo::generate(),
        amount: Money::new(40, Currency::Cny).unwrap(),
        reason: None,
        notify_url: "https://merchant.example/callbacks/wechat/1".into(),
        created_at: OffsetDateTime::now_utc(),
    }
}

/// A notification as WeChat would send it, signed by `signer` at `ts`.
fn notification(signer: &Signer, event: &str, plaintext: &Value, ts: i64) -> InboundRequest {
    let key = ApiV3Key::new(APIV3).unwrap();
    let nonce = random_alphanumeric(12);
    let aad = if event.starts_with("REFUND") { "" } else { "transaction" };
    let body = json!({
        "id": "EV-2018022511223320873", "create_time": "2015-05-20T13:29:35+08:00",
        "resource_type": "encrypt-resource", "event_type": event, "summary": "支付成功",
        "resource": {"original_type": "transaction", "algorithm": "AEAD_AES_256_GCM",
            "ciphertext": key.encrypt(&nonce, aad, plaintext.to_string().as_bytes()).unwrap(),
            "associated_data": aad, "nonce": nonce}
    })
    .to_string()
    .into_bytes();
    signed_request(signer, body, ts)
}

fn signed_request(signer: &Signer, body: Vec<u8>, ts: i64) -> InboundRequest {
    let nonce = random_alphanumeric(32);
    let (serial, sig) = signer.sign(ts, &nonce, &body);
    InboundRequest {
        method: "POST".into(),
        path: "/callbacks/wechat/acct".into(),
        query: None,
        headers: vec![
            ("wechatpay-timestamp".into(), ts.to_string()),
            ("wechatpay-nonce".into(), nonce),
            ("wechatpay-signature".into(), sig),
            ("wechatpay-serial".into(), serial),
            ("wechatpay-signature-type".into(), "WECHATPAY2-SHA256-RSA2048".into()),
        ],
        body,
    }
}

fn paid(no: &str) -> Value {
    json!({"mchid": MCHID, "appid": "wxapp", "out_trade_no": no, "transaction_id": "4200000002",
           "trade_state": "SUCCESS", "success_time": "2024-05-01T12:00:00+08:00",
           "amount": {"total": 100, "currency": "CNY"}})
}

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

const T: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_200_with_a_bad_signature_is_unknown_never_success() {
    let h = start(vec![platform(0x1A01)], None, T).await;
    h.world().bad_signature = true;
    let r = h.channel.create(&create(PaymentMethod::Qr)).await;
    assert!(matches!(r, Err(ChannelError::Unknown { timed_out: false, .. })), "{r:?}");
    let r = h.channel.query(&payment_ref()).await;
    assert!(matches!(r, Err(ChannelError::Unknown { .. })), "{r:?}");
    let r = h.channel.close(&payment_ref()).await;
    assert!(matches!(r, Err(ChannelError::Unknown { .. })), "{r:?}");
}

#[tokio::test]
async fn certificate_mode_downloads_lazily_and_names_the_newest_serial() {
    let a = platform(0x1A02);
    let h = start(vec![a.clone()], None, T).await;
    assert_eq!(h.world().cert_downloads, 0);
    let created = h.channel.create(&create(PaymentMethod::Qr)).await.unwrap();
    assert_eq!(
        created.action,
        PaymentAction::QrCode { code_url: "weixin://wxpay/bizpayurl?pr=T".into() }
    );
    assert_eq!(
        h.channel.query(&payment_ref()).await.unwrap(),
        ChannelPayment::Succeeded {
            channel_trade_no: "4200000001".into(),
            amount: Money::new(100, Currency::Cny).unwrap(),
            paid_at: Some(OffsetDateTime::from_unix_timestamp(1_714_536_000).unwrap()),
        }
    );
    h.channel.close(&payment_ref()).await.unwrap();
    let w = h.world();
    assert_eq!(w.cert_downloads, 1);
    // The download itself has nothing to name yet; every later request names the certificate.
    assert_eq!(w.serial_headers[0], None);
    assert!(w.serial_headers[1..].iter().all(|s| s.as_deref() == Some(a.serial.as_str())));
}

#[tokio::test]
async fn an_unknown_serial_triggers_exactly_one_certificate_download() {
    let h = start(vec![platform(0x1A03)], None, T).await;
    h.channel.query(&payment_ref()).await.unwrap();
    assert_eq!(h.world().cert_downloads, 1);
    // Answers now signed by a certificate /v3/certificates does not list.
    h.world().signer = Signer::Cert(platform(0x1A04));
    let r = h.channel.query(&payment_ref()).await;
    assert!(matches!(r, Err(ChannelError::Unknown { .. })), "{r:?}");
    assert_eq!(h.world().cert_downloads, 2);
    let r = h.channel.query(&payment_ref()).await;
    assert!(matches!(r, Err(ChannelError::Unknown { .. })), "{r:?}");
    assert_eq!(h.world().cert_downloads, 2);
}

#[tokio::test]
async fn certificate_rotation_keeps_verifying_without_restart() {
    let (a, b) = (platform(0x1A05), platform(0x1A06));
    let h = start(vec![a.clone()], None, T).await;
    h.channel.query(&payment_ref()).await.unwrap();
    {
        let mut w = h.world();
        w.listed = vec![b.clone()];
        w.signer = Signer::Cert(b.clone());
    }
    h.channel.query(&payment_ref()).await.unwrap();
    assert_eq!(h.world().cert_downloads, 2);
    let order = payment_ref().channel_order_no;
    let n =
        notification(&Signer::Cert(b.clone()), "TRANSACTION.SUCCESS", &paid(order.as_str()), now());
    assert!(h.channel.parse_notification(&n).await.is_ok());
    h.channel.query(&payment_ref()).await.unwrap();
    let w = h.world();
    assert_eq!(w.cert_downloads, 2);
    assert_eq!(w.serial_headers.last().unwrap().as_deref(), Some(b.serial.as_str()));
}

#[tokio::test]
async fn payment_notification_verifies_decrypts_and_maps() {
    let a = platform(0x1A07);
    let h = start(vec![a.clone()], None, T).await;
    let order = ChannelOrderNo::generate();
    let n =
        notification(&Signer::Cert(a.clone()), "TRANSACTION.SUCCESS", &paid(order.as_str()), now());
    let parsed = h.channel.parse_notification(&n).await.unwrap();
    assert_eq!(
        parsed,
        Notification::Payment {
            notify_id: Some("EV-2018022511223320873".into()),
            channel_order_no: order.clone(),
            state: ChannelPayment::Succeeded {
                channel_trade_no: "4200000002".into(),
                amount: Money::new(100, Currency::Cny).unwrap(),
                paid_at: Some(OffsetDateTime::from_unix_timestamp(1_714_536_000).unwrap()),
            },
        }
    );

    let refund = |status: &str| {
        json!({"mchid": MCHID, "out_trade_no": order.as_str(), "transaction_id": "4200000002",
               "refund_id": "50000", "out_refund_no": "R0193A7C2E4F87B1D",
               "refund_status": status, "success_time": "2024-05-01T12:00:00+08:00",
               "amount": {"total": 100, "refund": 40, "payer_total": 100, "payer_refund": 40}})
    };
    let signer = Signer::Cert(a);
    let state = |n: Notification| match n {
        Notification::Refund { state, .. } => state,
        other => panic!("{other:?}"),
    };
    let n = notification(&signer, "REFUND.SUCCESS", &refund("SUCCESS"), now());
    assert!(matches!(
        state(h.channel.parse_notification(&n).await.unwrap()),
        ChannelRefund::Succeeded { channel_refund_id: Some(_), succeeded_at: Some(_), .. }
    ));
    let n = notification(&signer, "REFUND.CLOSED", &refund("CLOSED"), now());
    assert!(matches!(
        state(h.channel.parse_notification(&n).await.unwrap()),
        ChannelRefund::Failed { .. }
    ));
    let n = notification(&signer, "REFUND.ABNORMAL", &refund("ABNORMAL"), now());
    assert_eq!(
        state(h.channel.parse_notification(&n).await.unwrap()),
        ChannelRefund::ActionRequired { channel_refund_id: Some("50000".into()) }
    );
    // Event and status must agree; another merchant's notification is refused.
    let n = notification(&signer, "REFUND.SUCCESS", &refund("CLOSED"), now());
    assert!(matches!(h.channel.parse_notification(&n).await, Err(ChannelError::Unverified { .. })));
    let mut other = paid(order.as_str());
    other["mchid"] = json!("1230000109");
    let n = notification(&signer, "TRANSACTION.SUCCESS", &other, now());
    assert!(matches!(h.channel.parse_notification(&n).await, Err(ChannelError::Unverified { .. })));
}

#[tokio::test]
async fn stale_probing_or_tampered_notifications_are_refused() {
    let a = platform(0x1A08);
    let h = start(vec![a.clone()], None, T).await;
    let signer = Signer::Cert(a.clone());
    let body = paid("0193A7C2E4F87B1D9C3E5A6B7C8D9E0F");
    let unverified = |r: Result<Notification, ChannelError>| {
        assert!(matches!(r, Err(ChannelError::Unverified { .. })), "{r:?}");
    };

    unverified(
        h.channel
            .parse_notification(&notification(&signer, "TRANSACTION.SUCCESS", &body, now() - 600))
            .await,
    );
    unverified(
        h.channel
            .parse_notification(&notification(&signer, "TRANSACTION.SUCCESS", &body, now() + 600))
            .await,
    );
    // Stale messages are refused before any key is looked for.
    assert_eq!(h.world().cert_downloads, 0);

    let mut probe = notification(&signer, "TRANSACTION.SUCCESS", &body, now());
    probe.headers[2].1 = format!("WECHATPAY/SIGNTEST/{}", probe.headers[2].1);
    unverified(h.channel.parse_notification(&probe).await);

    // Tampered ciphertext, correctly re-signed: the signature holds, the AEAD does not.
    let good = notification(&signer, "TRANSACTION.SUCCESS", &body, now());
    let mut v: Value = serde_json::from_slice(&good.body).unwrap();
    let ct = v["resource"]["ciphertext"].as_str().unwrap().to_owned();
    let flipped =
        if ct.starts_with('A') { ct.replacen('A', "B", 1) } else { format!("A{}", &ct[1..]) };
    v["resource"]["ciphertext"] = json!(flipped);
    let tampered = signed_request(&signer, v.to_string().into_bytes(), now());
    unverified(h.channel.parse_notification(&tampered).await);

    // Tampered body with the original signature.
    let mut forged = good.clone();
    forged.body = v.to_string().into_bytes();
    unverified(h.channel.parse_notification(&forged).await);

    // Unsigned.
    let mut unsigned = good.clone();
    unsigned.headers.retain(|(k, _)| k != "wechatpay-signature");
    unverified(h.channel.parse_notification(&unsigned).await);

    assert!(h.channel.parse_notification(&good).await.is_ok());
}

#[tokio::test]
async fn a_notification_for_a_known_serial_is_verified_while_a_certificate_refresh_is_in_flight() {
    let a = platform(0x1A10);
    // The channel's timeout outlasts the guard below, so the refresh cannot end by timing out.
    let Harness { stand, channel, .. } =
        start(vec![a.clone()], None, Duration::from_secs(600)).await;
    let ahead = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let clock = ahead.clone();
    let channel = Arc::new(channel.with_clock(Arc::new(move || {
        OffsetDateTime::now_utc()
            + time::Duration::seconds(clock.load(std::sync::atomic::Ordering::SeqCst))
    })));
    channel.query(&payment_ref()).await.unwrap();
    assert_eq!(stand.0.lock().unwrap().cert_downloads, 1);

    // Thirteen hours on, the certificates are due for their refresh, and /v3/certificates
    // hangs until the test lets it answer.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    stand.0.lock().unwrap().cert_gate = Some(gate.clone());
    let later = 13 * 3600;
    ahead.store(later, std::sync::atomic::Ordering::SeqCst);
    let refreshing = tokio::spawn({
        let channel = channel.clone();
        async move { channel.query(&payment_ref()).await }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while stand.0.lock().unwrap().cert_requests < 2 {
        assert!(tokio::time::Instant::now() < deadline, "the refresh never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let n = notification(
        &Signer::Cert(a),
        "TRANSACTION.SUCCESS",
        &paid("0193A7C2E4F87B1D"),
        now() + later,
    );
    // A guard against a hang, not a timing threshold: the gate stays shut until after this.
    let verified = tokio::time::timeout(Duration::from_secs(60), channel.parse_notification(&n))
        .await
        .expect("the notification waited for the certificate download");
    assert!(verified.is_ok(), "{verified:?}");
    assert!(!refreshing.is_finished(), "the refresh was still in flight meanwhile");
    assert_eq!(stand.0.lock().unwrap().cert_requests, 2, "one refresh, not one per message");
    refreshing.abort();
}

#[tokio::test]
async fn public_key_mode_never_calls_v3_certificates() {
    let pk = RsaPrivateKey::generate().unwrap();
    let h = start(vec![platform(0x1A09)], Some(pk.clone()), T).await;
    h.channel.create(&create(PaymentMethod::Qr)).await.unwrap();
    h.channel.query(&payment_ref()).await.unwrap();
    h.channel.close(&payment_ref()).await.unwrap();
    assert!(matches!(h.channel.refund(&refund_request()).await, Ok(ChannelRefund::Pending { .. })));
    let n = notification(
        &Signer::PublicKey(pk),
        "TRANSACTION.SUCCESS",
        &paid("0193A7C2E4F87B1D"),
        now(),
    );
    assert!(h.channel.parse_notification(&n).await.is_ok());
    let w = h.world();
    assert_eq!(w.cert_downloads, 0);
    assert!(w.serial_headers.iter().all(|s| s.as_deref() == Some(PUB_ID)));
}

#[tokio::test]
async fn migration_chooses_the_key_per_message_by_serial() {
    let pk = RsaPrivateKey::generate().unwrap();
    let a = platform(0x1A0A);
    let h = start(vec![a.clone()], Some(pk.clone()), T).await;
    h.world().no_certificates = false;
    h.channel.query(&payment_ref()).await.unwrap();
    assert_eq!(h.world().cert_downloads, 0);
    let n = notification(&Signer::Cert(a), "TRANSACTION.SUCCESS", &paid("0193A7C2E4F87B1D"), now());
    assert!(h.channel.parse_notification(&n).await.is_ok());
    let n = notification(
        &Signer::PublicKey(pk),
        "TRANSACTION.SUCCESS",
        &paid("0193A7C2E4F87B1D"),
        now(),
    );
    assert!(h.channel.parse_notification(&n).await.is_ok());
    assert_eq!(h.world().cert_downloads, 1);
}

#[tokio::test]
async fn a_timeout_is_unknown_and_timed_out() {
    let h = start(
        vec![platform(0x1A0B)],
        Some(RsaPrivateKey::generate().unwrap()),
        Duration::from_millis(300),
    )
    .await;
    h.world().slow = true;
    let r = h.channel.query(&payment_ref()).await;
    assert!(matches!(r, Err(ChannelError::Unknown { timed_out: true, .. })), "{r:?}");
}

#[tokio::test]
async fn jsapi_and_app_hand_back_signed_client_parameters() {
    let h = start(vec![platform(0x1A0C)], Some(RsaPrivateKey::generate().unwrap()), T).await;
    let r = h.channel.create(&create(PaymentMethod::Jsapi)).await;
    assert!(matches!(r, Err(ChannelError::Invalid { .. })), "{r:?}");
    let mut req = create(PaymentMethod::MiniProgram);
    req.payer_openid = Some("oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".into());
    let created = h.channel.create(&req).await.unwrap();
    assert_eq!(created.channel_data["prepay_id"], "wx201410272009395522657a690389285100");
    let PaymentAction::Sdk { params } = created.action else { panic!() };
    assert_eq!(params["package"], "prepay_id=wx201410272009395522657a690389285100");
    assert_eq!(params["signType"], "RSA");
    let message = format!(
        "{}\n{}\n{}\n{}\n",
        params["appId"].as_str().unwrap(),
        params["timeStamp"].as_str().unwrap(),
        params["nonceStr"].as_str().unwrap(),
        params["package"].as_str().unwrap()
    );
    let public = h.merchant.public_key();
    assert!(public.verify_base64(message.as_bytes(), params["paySign"].as_str().unwrap()).is_ok());

    let created = h.channel.create(&create(PaymentMethod::App)).await.unwrap();
    let PaymentAction::Sdk { params } = created.action else { panic!() };
    assert_eq!(params["package"], "Sign=WXPay");
    assert_eq!(params["partnerid"], MCHID);
    let message = format!(
        "{}\n{}\n{}\n{}\n",
        params["appid"].as_str().unwrap(),
        params["timestamp"].as_str().unwrap(),
        params["noncestr"].as_str().unwrap(),
        params["prepayid"].as_str().unwrap()
    );
    assert!(public.verify_base64(message.as_bytes(), params["sign"].as_str().unwrap()).is_ok());

    let r = h.channel.create(&create(PaymentMethod::H5)).await;
    assert!(matches!(r, Err(ChannelError::Invalid { .. })), "{r:?}");
    let mut req = create(PaymentMethod::H5);
    req.client_ip = Some("203.0.113.7".into());
    let created = h.channel.create(&req).await.unwrap();
    assert_eq!(created.action, PaymentAction::Redirect { url: "https://wx.tenpay.com/h5".into() });
    let r = h.channel.create(&create(PaymentMethod::Barcode)).await;
    assert!(matches!(r, Err(ChannelError::Invalid { .. })), "{r:?}");
}

#[tokio::test]
async fn business_answers_map_to_outcomes() {
    let h = start(vec![platform(0x1A0D)], Some(RsaPrivateKey::generate().unwrap()), T).await;
    let set = |status, code| h.world().error = Some((status, code));

    set(400, "ORDERPAID");
    let r = h.channel.close(&payment_ref()).await;
    assert!(
        matches!(&r, Err(ChannelError::Declined { code, .. }) if code == ALREADY_PAID),
        "{r:?}"
    );
    set(400, "ORDER_CLOSED");
    assert_eq!(h.channel.close(&payment_ref()).await, Ok(()));
    set(404, "ORDER_NOT_EXIST");
    assert_eq!(h.channel.close(&payment_ref()).await, Ok(()));
    set(403, "NOT_ENOUGH");
    let r = h.channel.refund(&refund_request()).await;
    assert!(
        matches!(&r, Err(ChannelError::Declined { code, .. }) if code == "NOT_ENOUGH"),
        "{r:?}"
    );
    set(500, "SYSTEM_ERROR");
    assert!(matches!(h.channel.refund(&refund_request()).await, Err(ChannelError::Unknown { .. })));
    set(429, "FREQUENCY_LIMITED");
    assert!(matches!(h.channel.query(&payment_ref()).await, Err(ChannelError::Unknown { .. })));
    set(401, "SIGN_ERROR");
    assert!(matches!(h.channel.query(&payment_ref()).await, Err(ChannelError::Invalid { .. })));

    set(404, "ORDER_NOT_EXIST");
    assert_eq!(h.channel.query(&payment_ref()).await, Ok(ChannelPayment::Pending));
    let mut expired = payment_ref();
    expired.expires_at = OffsetDateTime::now_utc() - time::Duration::hours(1);
    set(404, "ORDER_NOT_EXIST");
    assert_eq!(h.channel.query(&expired).await, Ok(ChannelPayment::Closed));

    h.world().trade_state = "NOTPAY";
    assert_eq!(h.channel.query(&payment_ref()).await, Ok(ChannelPayment::Pending));
    h.world().trade_state = "CLOSED";
    assert_eq!(h.channel.query(&payment_ref()).await, Ok(ChannelPayment::Closed));
    h.world().trade_state = "PAYERROR";
    assert!(matches!(h.channel.query(&payment_ref()).await, Ok(ChannelPayment::Failed { .. })));

    set(404, "RESOURCE_NOT_EXISTS");
    assert!(matches!(
        h.channel.query_refund(&refund_request()).await,
        Err(ChannelError::Unknown { .. })
    ));

    let ok = h.channel.ack(true);
    assert_eq!((ok.status, ok.body.len()), (204, 0));
    let fail = h.channel.ack(false);
    assert_eq!(fail.status, 500);
    assert_eq!(fail.body, r#"{"code":"FAIL","message":"失败"}"#.as_bytes());
}

#[tokio::test]
async fn configuration_is_checked_and_secrets_are_not_printed() {
    let merchant = RsaPrivateKey::generate().unwrap();
    let mut config = WechatAccountConfig {
        mchid: MCHID.into(),
        appid: "wxapp".into(),
        merchant_serial: "408B07E79B8269FE".into(),
        merchant_private_key: merchant.to_pkcs8_pem().unwrap(),
        apiv3_key: APIV3.into(),
        base_url: "http://127.0.0.1:9".into(),
        platform_public_key_id: None,
        platform_public_key: None,
        max_share_bps: None,
    };
    let shown = format!("{config:?}");
    assert!(!shown.contains(APIV3) && !shown.contains("PRIVATE KEY"), "{shown}");
    assert_eq!(WechatChannel::new(&config, T).unwrap().max_share_bps(), 3000);
    config.max_share_bps = Some(2000);
    assert_eq!(WechatChannel::new(&config, T).unwrap().max_share_bps(), 2000);
    config.max_share_bps = Some(10_001);
    assert!(matches!(WechatChannel::new(&config, T), Err(ChannelError::Invalid { .. })));
    config.max_share_bps = None;
    config.apiv3_key = "testAPIv3Key0000".into();
    assert!(matches!(WechatChannel::new(&config, T), Err(ChannelError::Invalid { .. })));
    config.apiv3_key = APIV3.into();
    config.platform_public_key_id = Some(PUB_ID.into());
    assert!(matches!(WechatChannel::new(&config, T), Err(ChannelError::Invalid { .. })));
    config.platform_public_key = Some("garbage".into());
    assert!(matches!(WechatChannel::new(&config, T), Err(ChannelError::Invalid { .. })));
    config.platform_public_key = None;
    config.platform_public_key_id = None;
    config.merchant_private_key = "garbage".into();
    assert!(matches!(WechatChannel::new(&config, T), Err(ChannelError::Invalid { .. })));
}

#[tokio::test]
async fn answers_outside_the_window_of_the_injected_clock_are_unknown() {
    let h = start(vec![platform(0x1A0E)], Some(RsaPrivateKey::generate().unwrap()), T).await;
    let ahead = OffsetDateTime::now_utc() + time::Duration::minutes(10);
    let channel = h.channel.with_clock(Arc::new(move || ahead));
    let r = channel.query(&payment_ref()).await;
    assert!(matches!(r, Err(ChannelError::Unknown { timed_out: false, .. })), "{r:?}");
}

#[tokio::test]
async fn codepay_sends_the_code_and_is_paid_at_once_or_waits_for_the_password() {
    let h = start(vec![platform(1)], None, Duration::from_secs(5)).await;
    assert!(h.channel.supports(PaymentMethod::Barcode));
    let req = barcode();
    let paid = h.channel.pay_barcode(&req).await.unwrap();
    assert!(matches!(
        paid.state,
        ChannelPayment::Succeeded { ref channel_trade_no, amount, .. }
            if channel_trade_no == "4200000002" && amount.minor() == 100
    ));
    {
        let w = h.world();
        assert_eq!(w.last_body["payer"]["auth_code"], WECHAT_CODE);
        assert_eq!(w.last_body["out_trade_no"], req.channel_order_no.as_str());
        assert_eq!(w.last_body["amount"]["total"], 100);
        assert_eq!(w.last_body["scene_info"]["device_ip"], "203.0.113.9");
        assert!(w.last_body.get("notify_url").is_none(), "codepay has no notification");
    }
    // The 202 whose body is trade_state alone: the payer enters a password.
    h.world().trade_state = "USERPAYING";
    assert_eq!(h.channel.pay_barcode(&barcode()).await.unwrap().state, ChannelPayment::Pending);
    // USERPAYING as an error code means the same.
    h.world().error = Some((400, "USERPAYING"));
    assert_eq!(h.channel.pay_barcode(&barcode()).await.unwrap().state, ChannelPayment::Pending);
}

#[tokio::test]
async fn codepay_refusals_are_declined_and_system_errors_or_bad_signatures_unknown() {
    let h = start(vec![platform(1)], None, Duration::from_secs(5)).await;
    h.world().error = Some((400, "AUTH_CODE_INVALID"));
    assert!(matches!(
        h.channel.pay_barcode(&barcode()).await,
        Err(ChannelError::Declined { code, .. }) if code == "AUTH_CODE_INVALID"
    ));
    h.world().error = Some((403, "NOTENOUGH"));
    assert!(matches!(h.channel.pay_barcode(&barcode()).await, Err(ChannelError::Declined { .. })));
    for (status, code) in [(500, "SYSTEM_ERROR"), (500, "BANKERROR"), (429, "FREQUENCY_LIMITED")] {
        h.world().error = Some((status, code));
        assert!(matches!(
            h.channel.pay_barcode(&barcode()).await,
            Err(ChannelError::Unknown { .. })
        ));
    }
    h.world().bad_signature = true;
    assert!(matches!(h.channel.pay_barcode(&barcode()).await, Err(ChannelError::Unknown { .. })));
    h.world().trade_state = "USERPAYING";
    assert!(matches!(h.channel.pay_barcode(&barcode()).await, Err(ChannelError::Unknown { .. })));
}

#[tokio::test]
async fn a_malformed_wechat_code_is_refused_before_any_call() {
    let h = start(vec![platform(1)], None, Duration::from_secs(5)).await;
    for code in
        ["164567890123456789", "13456789012345678", "13456789012345678x", "286012345678901234"]
    {
        assert!(h.channel.check_auth_code(code).is_err(), "{code}");
        let req = CreatePayment { auth_code: Some(code.into()), ..barcode() };
        assert!(matches!(h.channel.pay_barcode(&req).await, Err(ChannelError::Invalid { .. })));
    }
    assert!(h.channel.check_auth_code(WECHAT_CODE).is_ok());
    assert!(h.world().last_body.is_null(), "nothing was sent");
}

#[tokio::test]
async fn reverse_is_confirmed_by_a_signed_answer_and_sent_again_otherwise() {
    let h = start(vec![platform(1)], None, Duration::from_secs(5)).await;
    let p = payment_ref();
    assert_eq!(h.channel.cancel_barcode(&p).await, Ok(BarcodeCancel::Closed));
    {
        let w = h.world();
        assert_eq!(w.last_body["mchid"], MCHID);
        assert_eq!(w.last_body["appid"], "wx2421b1c4370ec43b");
    }
    h.world().error = Some((404, "ORDER_NOT_EXIST"));
    assert_eq!(h.channel.cancel_barcode(&p).await, Ok(BarcodeCancel::Closed));
    for (status, code) in [(400, "USERPAYING"), (500, "SYSTEM_ERROR")] {
        h.world().error = Some((status, code));
        assert!(matches!(h.channel.cancel_barcode(&p).await, Err(ChannelError::Unknown { .. })));
    }
    h.world().bad_signature = true;
    assert!(matches!(h.channel.cancel_barcode(&p).await, Err(ChannelError::Unknown { .. })));
}

#[tokio::test]
async fn the_create_body_carries_settle_info_only_for_a_held_payment() {
    let h = start(vec![platform(0x1A20)], None, T).await;
    assert!(h.channel.holds_funds());
    h.channel.create(&create(PaymentMethod::Qr)).await.unwrap();
    assert_eq!(h.world().last_body.get("settle_info"), None);
    h.channel.create(&CreatePayment { hold: true, ..create(PaymentMethod::Qr) }).await.unwrap();
    assert_eq!(h.world().last_body["settle_info"], json!({"profit_sharing": true}));
    h.channel.pay_barcode(&barcode()).await.unwrap();
    assert_eq!(h.world().last_body.get("settle_info"), None);
    h.channel.pay_barcode(&CreatePayment { hold: true, ..barcode() }).await.unwrap();
    assert_eq!(h.world().last_body["settle_info"], json!({"profit_sharing": true}));
}

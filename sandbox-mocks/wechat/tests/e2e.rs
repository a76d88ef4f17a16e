//! The mock over real loopback sockets, driven as a merchant would drive WeChat Pay.

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use paymux_crypto::{Certificate, RsaPrivateKey, RsaPublicKey, random_alphanumeric};
use paymux_mock_wechat::protocol::{
    Authorization, CertificatesAnswer, EncryptedResource, answer_message,
    decrypt_certificate_entry, decrypt_resource, request_message,
};
use paymux_mock_wechat::{KeyMode, PlatformKeys, WechatMerchant, WechatMock, WechatMockConfig};
use serde_json::{Value, json};

const APIV3_KEY: &str = "a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb";
const APPID: &str = "wxd678efh567hg6787";

struct Merchant {
    mchid: String,
    serial: String,
    key: RsaPrivateKey,
}

struct App {
    base: String,
    mock: WechatMock,
    http: reqwest::Client,
}

async fn spawn_mock(delays: Vec<Duration>) -> App {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let config = WechatMockConfig {
        public_url: base.clone(),
        notify_delays: delays,
        timestamp_tolerance: Duration::from_secs(300),
    };
    let mock = WechatMock::new(config, PlatformKeys::generate().unwrap());
    mock.set_refund_delay(Duration::from_millis(50));
    tokio::spawn(mock.clone().serve(listener));
    App { base, mock, http: reqwest::Client::new() }
}

impl App {
    fn merchant(&self, mchid: &str, mode: KeyMode) -> Merchant {
        let key = RsaPrivateKey::generate().unwrap();
        let serial = "3775B6A45ACD588826D15E583A95F5DD00C1A0B2".to_owned();
        self.mock.register_merchant(
            WechatMerchant {
                mchid: mchid.into(),
                appid: APPID.into(),
                merchant_serial: serial.clone(),
                merchant_public_key: key.public_key(),
                apiv3_key: APIV3_KEY.into(),
            },
            mode,
        );
        Merchant { mchid: mchid.into(), serial, key }
    }

    /// A request signed as `m`, with an optional `Wechatpay-Serial` and a chosen timestamp.
    async fn call_at(
        &self,
        m: &Merchant,
        method: &str,
        target: &str,
        body: &str,
        wechatpay_serial: Option<&str>,
        timestamp: i64,
    ) -> reqwest::Response {
        let nonce = random_alphanumeric(32);
        let ts = timestamp.to_string();
        let message = request_message(method, target, &ts, &nonce, body.as_bytes());
        let auth = Authorization {
            mchid: m.mchid.clone(),
            nonce_str: nonce,
            signature: m.key.sign_base64(&message).unwrap(),
            timestamp: ts,
            serial_no: m.serial.clone(),
        };
        let url = format!("{}{}", self.base, target);
        let mut req = self
            .http
            .request(method.parse().unwrap(), url)
            .header("authorization", auth.to_header())
            .header("accept", "application/json");
        if !body.is_empty() {
            req = req.header("content-type", "application/json").body(body.to_owned());
        }
        if let Some(serial) = wechatpay_serial {
            req = req.header("wechatpay-serial", serial);
        }
        req.send().await.unwrap()
    }

    async fn call(
        &self,
        m: &Merchant,
        method: &str,
        target: &str,
        body: &str,
    ) -> reqwest::Response {
        self.call_at(m, method, target, body, None, now()).await
    }

    async fn control(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self.http.request(method.parse().unwrap(), format!("{}{}", self.base, path));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// The platform certificates, as a merchant bootstraps them.
    async fn certificates(&self, m: &Merchant) -> (HeaderMap, Vec<Certificate>) {
        let res = self.call(m, "GET", "/v3/certificates", "").await;
        assert_eq!(res.status(), 200);
        let headers = res.headers().clone();
        let body = res.bytes().await.unwrap();
        let answer: CertificatesAnswer = serde_json::from_slice(&body).unwrap();
        let certs: Vec<Certificate> = answer
            .data
            .iter()
            .map(|e| {
                assert!(!e.effective_time.is_empty() && !e.expire_time.is_empty());
                assert_eq!(e.encrypt_certificate.associated_data, "certificate");
                let pem = decrypt_certificate_entry(APIV3_KEY.as_bytes(), e).unwrap();
                let cert = Certificate::from_pem(&pem).unwrap();
                assert_eq!(cert.serial_hex(), e.serial_no);
                cert
            })
            .collect();
        let serial = header(&headers, "wechatpay-serial");
        let signer =
            certs.iter().find(|c| c.serial_hex() == serial).expect("signed by a listed cert");
        verify(&headers, &body, signer.public_key().unwrap()).unwrap();
        (headers, certs)
    }
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn header(h: &HeaderMap, name: &str) -> String {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
}

/// Checks an answer or a notification as an SDK does.
fn verify(
    h: &HeaderMap,
    body: &[u8],
    key: &RsaPublicKey,
) -> Result<(), paymux_crypto::CryptoError> {
    assert_eq!(header(h, "wechatpay-signature-type"), "WECHATPAY2-SHA256-RSA2048");
    let message =
        answer_message(&header(h, "wechatpay-timestamp"), &header(h, "wechatpay-nonce"), body);
    key.verify_base64(&message, &header(h, "wechatpay-signature"))
}

fn native_body(m: &Merchant, out_trade_no: &str, total: i64, notify_url: &str) -> String {
    json!({
        "appid": APPID,
        "mchid": m.mchid,
        "description": "Image形象店-深圳腾大-QQ公仔",
        "out_trade_no": out_trade_no,
        "notify_url": notify_url,
        "amount": {"total": total, "currency": "CNY"},
    })
    .to_string()
}

/// A notification as received: headers and raw body.
type Received = (HeaderMap, Vec<u8>);

#[derive(Clone, Default)]
struct Receiver {
    received: Arc<Mutex<Vec<Received>>>,
    failures_left: Arc<Mutex<u32>>,
}

/// A merchant notification endpoint that answers 500 `fail_first` times, then 204.
async fn spawn_receiver(fail_first: u32) -> (String, Receiver) {
    let receiver =
        Receiver { failures_left: Arc::new(Mutex::new(fail_first)), ..Default::default() };
    let r = receiver.clone();
    let app = axum::Router::new().route(
        "/notify",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let r = r.clone();
            async move {
                r.received.lock().unwrap().push((headers, body.to_vec()));
                let mut left = r.failures_left.lock().unwrap();
                if *left > 0 {
                    *left -= 1;
                    (StatusCode::INTERNAL_SERVER_ERROR, r#"{"code":"FAIL","message":"失败"}"#)
                } else {
                    (StatusCode::NO_CONTENT, "")
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/notify", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, receiver)
}

impl Receiver {
    /// Waits (bounded, not timed) until `n` notifications have arrived.
    async fn wait_for(&self, n: usize) -> Vec<Received> {
        for _ in 0..1000 {
            {
                let got = self.received.lock().unwrap();
                if got.len() >= n {
                    return got.clone();
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("expected {n} notifications, got {}", self.received.lock().unwrap().len());
    }
}

fn decrypt_notification(body: &[u8]) -> (Value, Value) {
    let n: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(n["resource_type"], "encrypt-resource");
    assert_eq!(n["resource"]["algorithm"], "AEAD_AES_256_GCM");
    let resource: EncryptedResource = serde_json::from_value(n["resource"].clone()).unwrap();
    let plain = decrypt_resource(APIV3_KEY.as_bytes(), &resource).unwrap();
    (n, serde_json::from_slice(&plain).unwrap())
}

async fn create_and_pay(app: &App, m: &Merchant, no: &str, total: i64, notify_url: &str) {
    let res = app
        .call(m, "POST", "/v3/pay/transactions/native", &native_body(m, no, total, notify_url))
        .await;
    assert_eq!(res.status(), 200);
    let (status, _) = app.control("POST", &format!("/_sandbox/orders/{no}/pay"), None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn native_payment_is_answered_signed_and_notified_encrypted() {
    let app = spawn_mock(vec![Duration::from_millis(20); 3]).await;
    let m = app.merchant("1900007291", KeyMode::PlatformCertificate);
    let (notify_url, receiver) = spawn_receiver(0).await;
    let (_, certs) = app.certificates(&m).await;
    assert_eq!(certs.len(), 1);
    let platform = certs[0].public_key().unwrap().clone();

    let body = native_body(&m, "1217752501201407033233368018", 100, &notify_url);
    let res = app.call(&m, "POST", "/v3/pay/transactions/native", &body).await;
    assert_eq!(res.status(), 200);
    let headers = res.headers().clone();
    assert!(!header(&headers, "request-id").is_empty());
    assert_eq!(header(&headers, "wechatpay-serial"), certs[0].serial_hex());
    let answer = res.bytes().await.unwrap();
    verify(&headers, &answer, &platform).unwrap();
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    let code_url = answer["code_url"].as_str().unwrap();
    assert_eq!(code_url, format!("{}/_sandbox/cashier/1217752501201407033233368018", app.base));

    // The same create again gets the same answer; changed parameters are refused.
    let again = app.call(&m, "POST", "/v3/pay/transactions/native", &body).await;
    assert_eq!(again.json::<Value>().await.unwrap(), answer);
    let changed = native_body(&m, "1217752501201407033233368018", 101, &notify_url);
    let res = app.call(&m, "POST", "/v3/pay/transactions/native", &changed).await;
    assert_eq!(res.status(), 400);
    assert_eq!(res.json::<Value>().await.unwrap()["code"], "INVALID_REQUEST");

    let page = app.http.get(code_url).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("¥1.00") && page.contains("<svg") && page.contains("/pay"));

    let target =
        format!("/v3/pay/transactions/out-trade-no/1217752501201407033233368018?mchid={}", m.mchid);
    let res = app.call(&m, "GET", &target, "").await;
    assert_eq!(res.json::<Value>().await.unwrap()["trade_state"], "NOTPAY");

    let (status, order) =
        app.control("POST", "/_sandbox/orders/1217752501201407033233368018/pay", None).await;
    assert_eq!(status, 200);
    assert_eq!(order["trade_state"], "SUCCESS");

    let got = receiver.wait_for(1).await;
    let (headers, body) = &got[0];
    assert_eq!(header(headers, "wechatpay-serial"), certs[0].serial_hex());
    verify(headers, body, &platform).unwrap();
    let (n, transaction) = decrypt_notification(body);
    assert_eq!(n["event_type"], "TRANSACTION.SUCCESS");
    assert_eq!(n["resource"]["original_type"], "transaction");
    assert_eq!(transaction["trade_state"], "SUCCESS");
    assert_eq!(transaction["amount"]["total"], 100);
    assert_eq!(transaction["trade_type"], "NATIVE");
    let transaction_id = transaction["transaction_id"].as_str().unwrap();

    let res = app
        .call(&m, "GET", &format!("/v3/pay/transactions/id/{transaction_id}?mchid={}", m.mchid), "")
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["out_trade_no"], "1217752501201407033233368018");

    let res = app
        .call(
            &m,
            "GET",
            &format!("/v3/pay/transactions/out-trade-no/nosuchorder1?mchid={}", m.mchid),
            "",
        )
        .await;
    assert_eq!(res.status(), 404);
    assert_eq!(res.json::<Value>().await.unwrap()["code"], "ORDER_NOT_EXIST");
}

#[tokio::test]
async fn a_receiver_answering_500_twice_gets_three_sends() {
    let app = spawn_mock(vec![Duration::from_millis(20); 5]).await;
    let m = app.merchant("1900000001", KeyMode::PlatformCertificate);
    let (notify_url, receiver) = spawn_receiver(2).await;
    create_and_pay(&app, &m, "retry_order_1", 1, &notify_url).await;

    let got = receiver.wait_for(3).await;
    let ids: Vec<Value> = got
        .iter()
        .map(|(_, b)| serde_json::from_slice::<Value>(b).unwrap()["id"].clone())
        .collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "re-sends carry the same notification id");

    // Delivered on the third send: the log is complete and nothing is re-sent after it.
    let mut deliveries = Value::Null;
    for _ in 0..500 {
        let (_, order) = app.control("GET", "/_sandbox/orders/retry_order_1", None).await;
        deliveries = order["deliveries"].clone();
        if deliveries.as_array().unwrap().len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let outcomes: Vec<&str> =
        deliveries.as_array().unwrap().iter().map(|d| d["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["refused", "refused", "delivered"]);
}

#[tokio::test]
async fn a_receiver_that_never_accepts_is_given_up_after_the_schedule() {
    let app = spawn_mock(vec![Duration::from_millis(10); 2]).await;
    let m = app.merchant("1900000002", KeyMode::PlatformCertificate);
    let (notify_url, receiver) = spawn_receiver(u32::MAX).await;
    create_and_pay(&app, &m, "giveup_order", 1, &notify_url).await;
    receiver.wait_for(3).await;
    let mut count = 0;
    for _ in 0..500 {
        let (_, order) = app.control("GET", "/_sandbox/orders/giveup_order", None).await;
        count = order["deliveries"].as_array().unwrap().len();
        if count >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(count, 3, "one send plus one per configured delay");
}

#[tokio::test]
async fn bad_signatures_stale_timestamps_and_strangers_get_401_sign_error() {
    let app = spawn_mock(vec![]).await;
    let m = app.merchant("1900000003", KeyMode::PlatformCertificate);
    let body = native_body(&m, "sign_order_1", 100, "https://example.com/n");

    let stale =
        app.call_at(&m, "POST", "/v3/pay/transactions/native", &body, None, now() - 3600).await;
    assert_eq!(stale.status(), 401);
    assert_eq!(stale.json::<Value>().await.unwrap()["code"], "SIGN_ERROR");

    // Signed by another key.
    let impostor = Merchant { key: RsaPrivateKey::generate().unwrap(), ..clone_merchant(&m) };
    let res = app.call(&impostor, "POST", "/v3/pay/transactions/native", &body).await;
    assert_eq!(res.status(), 401);
    assert_eq!(res.json::<Value>().await.unwrap()["code"], "SIGN_ERROR");

    let wrong_serial = Merchant { serial: "0123".into(), ..clone_merchant(&m) };
    let res = app.call(&wrong_serial, "POST", "/v3/pay/transactions/native", &body).await;
    assert_eq!(res.status(), 401);

    let stranger = Merchant { mchid: "1999999999".into(), ..clone_merchant(&m) };
    let res = app.call(&stranger, "POST", "/v3/pay/transactions/native", &body).await;
    assert_eq!(res.status(), 401);

    // A body changed after signing.
    let nonce = random_alphanumeric(32);
    let ts = now().to_string();
    let signed =
        request_message("POST", "/v3/pay/transactions/native", &ts, &nonce, body.as_bytes());
    let auth = Authorization {
        mchid: m.mchid.clone(),
        nonce_str: nonce,
        signature: m.key.sign_base64(&signed).unwrap(),
        timestamp: ts,
        serial_no: m.serial.clone(),
    };
    let res = app
        .http
        .post(format!("{}/v3/pay/transactions/native", app.base))
        .header("authorization", auth.to_header())
        .header("content-type", "application/json")
        .body(body.replace("100", "1"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(res.json::<Value>().await.unwrap()["code"], "SIGN_ERROR");

    // The right one passes; nothing above created the order.
    let res = app.call(&m, "POST", "/v3/pay/transactions/native", &body).await;
    assert_eq!(res.status(), 200);
}

fn clone_merchant(m: &Merchant) -> Merchant {
    Merchant { mchid: m.mchid.clone(), serial: m.serial.clone(), key: m.key.clone() }
}

#[tokio::test]
async fn refunds_are_bounded_idempotent_and_notified() {
    let app = spawn_mock(vec![Duration::from_millis(20); 3]).await;
    let m = app.merchant("1900000004", KeyMode::PlatformCertificate);
    let (notify_url, receiver) = spawn_receiver(0).await;

    let refund = |no: &str, out_refund_no: &str, refund: i64, total: i64| {
        json!({
            "out_trade_no": no,
            "out_refund_no": out_refund_no,
            "reason": "sandbox",
            "amount": {"refund": refund, "total": total, "currency": "CNY"},
        })
        .to_string()
    };
    const PATH: &str = "/v3/refund/domestic/refunds";

    // Unpaid orders are not refunded.
    let res = app
        .call(
            &m,
            "POST",
            "/v3/pay/transactions/native",
            &native_body(&m, "unpaid_order", 100, &notify_url),
        )
        .await;
    assert_eq!(res.status(), 200);
    let res = app.call(&m, "POST", PATH, &refund("unpaid_order", "R0", 10, 100)).await;
    assert_eq!(res.status(), 400);

    create_and_pay(&app, &m, "refund_order", 100, &notify_url).await;
    receiver.wait_for(1).await;

    let res = app.call(&m, "POST", PATH, &refund("refund_order", "R1", 60, 100)).await;
    assert_eq!(res.status(), 200);
    let first: Value = res.json().await.unwrap();
    assert_eq!(first["status"], "PROCESSING");

    let res = app.call(&m, "POST", PATH, &refund("refund_order", "R2", 50, 100)).await;
    assert_eq!(res.status(), 400, "60 + 50 exceeds the 100 paid");
    assert_eq!(res.json::<Value>().await.unwrap()["code"], "INVALID_REQUEST");

    let res = app.call(&m, "POST", PATH, &refund("refund_order", "R3", 10, 99)).await;
    assert_eq!(res.status(), 400, "total must equal the order amount");

    let res = app.call(&m, "POST", PATH, &refund("refund_order", "R1", 60, 100)).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["refund_id"], first["refund_id"]);
    let res = app.call(&m, "POST", PATH, &refund("refund_order", "R1", 40, 100)).await;
    assert_eq!(res.status(), 400, "a used out_refund_no with other parameters");

    let got = receiver.wait_for(2).await;
    let (n, plain) = decrypt_notification(&got[1].1);
    assert_eq!(n["event_type"], "REFUND.SUCCESS");
    assert_eq!(plain["refund_status"], "SUCCESS");
    assert!(plain.get("status").is_none());
    assert_eq!(plain["amount"]["refund"], 60);
    assert_eq!(plain["out_refund_no"], "R1");

    let res = app.call(&m, "GET", &format!("{PATH}/R1"), "").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "SUCCESS");
    let res = app.call(&m, "GET", &format!("{PATH}/R404"), "").await;
    assert_eq!(res.status(), 404);
    assert_eq!(res.json::<Value>().await.unwrap()["code"], "RESOURCE_NOT_EXISTS");

    let res = app.call(&m, "POST", PATH, &refund("refund_order", "R4", 40, 100)).await;
    assert_eq!(res.status(), 200, "the remaining 40 can still be refunded");
    let (_, order) = app.control("GET", "/_sandbox/orders/refund_order", None).await;
    assert_eq!(order["trade_state"], "REFUND");
    assert_eq!(order["refunded"], 100);
}

#[tokio::test]
async fn close_is_a_signed_204_and_a_paid_order_cannot_be_closed() {
    let app = spawn_mock(vec![]).await;
    let m = app.merchant("1900000005", KeyMode::PlatformCertificate);
    let (_, certs) = app.certificates(&m).await;
    let close_body = json!({"mchid": m.mchid}).to_string();
    let res = app
        .call(
            &m,
            "POST",
            "/v3/pay/transactions/native",
            &native_body(&m, "close_order", 1, "https://example.com/n"),
        )
        .await;
    assert_eq!(res.status(), 200);

    let res = app
        .call(&m, "POST", "/v3/pay/transactions/out-trade-no/close_order/close", &close_body)
        .await;
    assert_eq!(res.status(), 204);
    let headers = res.headers().clone();
    assert!(res.bytes().await.unwrap().is_empty());
    verify(&headers, b"", certs[0].public_key().unwrap()).unwrap();
    let (status, _) = app.control("POST", "/_sandbox/orders/close_order/pay", None).await;
    assert_eq!(status, 409, "a closed order cannot be paid");

    create_and_pay(&app, &m, "paid_order", 1, "http://127.0.0.1:9/unreachable").await;
    let res = app
        .call(&m, "POST", "/v3/pay/transactions/out-trade-no/paid_order/close", &close_body)
        .await;
    assert_eq!(res.status(), 400);
    assert_eq!(res.json::<Value>().await.unwrap()["code"], "ORDERPAID");
}

#[tokio::test]
async fn rotation_lists_both_certificates_and_signs_with_the_new_one() {
    let app = spawn_mock(vec![]).await;
    let m = app.merchant("1900000006", KeyMode::PlatformCertificate);
    let (_, before) = app.certificates(&m).await;
    assert_eq!(before.len(), 1);

    let new_serial = app.mock.rotate_platform_certificate();
    let (headers, after) = app.certificates(&m).await;
    assert_eq!(after.len(), 2);
    assert!(after.iter().any(|c| c.serial_hex() == before[0].serial_hex()));
    assert_eq!(header(&headers, "wechatpay-serial"), new_serial);

    let (status, rotated) = app.control("POST", "/_sandbox/rotate_certificate", None).await;
    assert_eq!(status, 200);
    let (_, three) = app.certificates(&m).await;
    assert_eq!(three.len(), 3);
    let res = app
        .call(
            &m,
            "POST",
            "/v3/pay/transactions/native",
            &native_body(&m, "rotate_order", 1, "https://example.com/n"),
        )
        .await;
    assert_eq!(header(res.headers(), "wechatpay-serial"), rotated["serial"].as_str().unwrap());
}

#[tokio::test]
async fn public_key_mode_and_migration_choose_the_key_by_wechatpay_serial() {
    let app = spawn_mock(vec![Duration::from_millis(20)]).await;
    let keys = app.mock.keys();
    let public = RsaPublicKey::load(&keys.public_key_pem()).unwrap();
    let id = keys.public_key_id();

    let only = app.merchant("1900000007", KeyMode::PublicKey);
    let res = app.call(&only, "GET", "/v3/certificates", "").await;
    assert_eq!(res.status(), 404);
    assert_eq!(res.json::<Value>().await.unwrap()["code"], "RESOURCE_NOT_EXISTS");
    let res = app
        .call_at(
            &only,
            "POST",
            "/v3/pay/transactions/native",
            &native_body(&only, "pk_order_1", 1, "https://example.com/n"),
            Some(&id),
            now(),
        )
        .await;
    let headers = res.headers().clone();
    assert_eq!(header(&headers, "wechatpay-serial"), id);
    verify(&headers, &res.bytes().await.unwrap(), &public).unwrap();

    let both = app.merchant("1900000008", KeyMode::Both);
    let (notify_url, receiver) = spawn_receiver(0).await;
    let body = native_body(&both, "both_order_1", 1, &notify_url);
    let res =
        app.call_at(&both, "POST", "/v3/pay/transactions/native", &body, Some(&id), now()).await;
    assert_eq!(header(res.headers(), "wechatpay-serial"), id);
    let res = app.call(&both, "POST", "/v3/pay/transactions/native", &body).await;
    assert_eq!(header(res.headers(), "wechatpay-serial"), keys.platform_serial());

    app.control("POST", "/_sandbox/orders/both_order_1/pay", None).await;
    let got = receiver.wait_for(1).await;
    assert_eq!(header(&got[0].0, "wechatpay-serial"), id, "Both mode notifies with the public key");
    verify(&got[0].0, &got[0].1, &public).unwrap();
}

#[tokio::test]
async fn faults_probe_fail_and_withhold_answers() {
    let app = spawn_mock(vec![]).await;
    let m = app.merchant("1900000009", KeyMode::PlatformCertificate);

    let (status, _) =
        app.control("POST", "/_sandbox/faults", Some(json!({"signature_probe": true}))).await;
    assert_eq!(status, 200);
    let res = app
        .call(
            &m,
            "POST",
            "/v3/pay/transactions/native",
            &native_body(&m, "fault_order_1", 1, "https://example.com/n"),
        )
        .await;
    assert_eq!(res.status(), 200);
    assert!(header(res.headers(), "wechatpay-signature").starts_with("WECHATPAY/SIGNTEST/"));

    app.control("POST", "/_sandbox/faults", Some(json!({"error_rate": 1.0}))).await;
    let res = app
        .call(
            &m,
            "POST",
            "/v3/pay/transactions/native",
            &native_body(&m, "fault_order_2", 1, "https://example.com/n"),
        )
        .await;
    assert_eq!(res.status(), 500);
    assert_eq!(res.json::<Value>().await.unwrap()["code"], "SYSTEM_ERROR");
    let (status, _) = app.control("GET", "/_sandbox/orders/fault_order_2", None).await;
    assert_eq!(status, 404, "an injected error does no work");

    app.control("POST", "/_sandbox/faults", Some(json!({"timeout_after_commit": ["create"]})))
        .await;
    let nonce = random_alphanumeric(32);
    let ts = now().to_string();
    let body = native_body(&m, "fault_order_3", 1, "https://example.com/n");
    let message =
        request_message("POST", "/v3/pay/transactions/native", &ts, &nonce, body.as_bytes());
    let auth = Authorization {
        mchid: m.mchid.clone(),
        nonce_str: nonce,
        signature: m.key.sign_base64(&message).unwrap(),
        timestamp: ts,
        serial_no: m.serial.clone(),
    };
    let res = app
        .http
        .post(format!("{}/v3/pay/transactions/native", app.base))
        .timeout(Duration::from_millis(500))
        .header("authorization", auth.to_header())
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await;
    assert!(res.unwrap_err().is_timeout());
    let (status, order) = app.control("GET", "/_sandbox/orders/fault_order_3", None).await;
    assert_eq!(status, 200, "the work was committed");
    assert_eq!(order["trade_state"], "NOTPAY");

    let (status, _) = app
        .control("POST", "/_sandbox/faults", Some(json!({"timeout_after_commit": ["nap"]})))
        .await;
    assert_eq!(status, 400);
    app.control("DELETE", "/_sandbox/faults", None).await;
    let res = app
        .call(
            &m,
            "POST",
            "/v3/pay/transactions/native",
            &native_body(&m, "fault_order_4", 1, "https://example.com/n"),
        )
        .await;
    assert_eq!(res.status(), 200);
    assert!(!header(res.headers(), "wechatpay-signature").starts_with("WECHATPAY/"));
}

#[tokio::test]
async fn create_validates_like_wechat() {
    let app = spawn_mock(vec![]).await;
    let m = app.merchant("1900000010", KeyMode::PlatformCertificate);
    let post = |path: &'static str, body: Value| {
        let app = &app;
        let m = &m;
        async move { app.call(m, "POST", path, &body.to_string()).await.status() }
    };
    let base = json!({
        "appid": APPID, "mchid": m.mchid, "description": "d", "out_trade_no": "valid_no_1",
        "notify_url": "https://example.com/n", "amount": {"total": 1},
    });
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    assert_eq!(
        post("/v3/pay/transactions/native", with("out_trade_no", json!("bad|no1"))).await,
        400
    );
    assert_eq!(post("/v3/pay/transactions/native", with("amount", json!({"total": 0}))).await, 400);
    assert_eq!(
        post("/v3/pay/transactions/native", with("amount", json!({"total": 1.5}))).await,
        400
    );
    assert_eq!(post("/v3/pay/transactions/native", with("appid", json!("wx0000"))).await, 400);
    assert_eq!(
        post("/v3/pay/transactions/jsapi", base.clone()).await,
        400,
        "JSAPI needs payer.openid"
    );
    assert_eq!(post("/v3/pay/transactions/h5", base.clone()).await, 400, "H5 needs scene_info");

    let jsapi = with("payer", json!({"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"}));
    let res = app.call(&m, "POST", "/v3/pay/transactions/jsapi", &jsapi.to_string()).await;
    assert!(res.json::<Value>().await.unwrap()["prepay_id"].as_str().unwrap().starts_with("wx"));

    let mut h5 = with("out_trade_no", json!("valid_no_2"));
    h5["scene_info"] = json!({"payer_client_ip": "127.0.0.1", "h5_info": {"type": "Wap"}});
    let res = app.call(&m, "POST", "/v3/pay/transactions/h5", &h5.to_string()).await;
    assert!(
        res.json::<Value>().await.unwrap()["h5_url"]
            .as_str()
            .unwrap()
            .ends_with("/_sandbox/cashier/valid_no_2")
    );
}

#[tokio::test]
async fn reorder_fault_sends_the_newer_notification_first_and_a_lone_one_after_the_hold() {
    let app = spawn_mock(vec![Duration::from_millis(20); 3]).await;
    let m = app.merchant("1900000011", KeyMode::PlatformCertificate);
    let (notify_url, receiver) = spawn_receiver(0).await;
    let (status, faults) =
        app.control("POST", "/_sandbox/faults", Some(json!({"reorder_notifications": true}))).await;
    assert_eq!(status, 200);
    assert_eq!(faults["reorder_notifications"], true);
    let out_trade_nos = |got: &[Received]| -> Vec<String> {
        got.iter()
            .map(|(_, body)| {
                let (_, transaction) = decrypt_notification(body);
                transaction["out_trade_no"].as_str().unwrap().to_owned()
            })
            .collect()
    };

    // The first is held; the second overtakes it, and then the first follows.
    create_and_pay(&app, &m, "reorder_order_1", 1, &notify_url).await;
    create_and_pay(&app, &m, "reorder_order_2", 2, &notify_url).await;
    let got = receiver.wait_for(2).await;
    assert_eq!(out_trade_nos(&got), ["reorder_order_2", "reorder_order_1"]);

    // Nothing comes after the third: it goes out once the hold runs out, exactly once.
    create_and_pay(&app, &m, "reorder_order_3", 3, &notify_url).await;
    let got = receiver.wait_for(3).await;
    assert_eq!(out_trade_nos(&got), ["reorder_order_2", "reorder_order_1", "reorder_order_3"]);
    // The log is written once the send has finished, which may be just after the receiver saw it.
    let mut outcomes = Vec::new();
    for _ in 0..500 {
        let (_, order) = app.control("GET", "/_sandbox/orders/reorder_order_3", None).await;
        outcomes = order["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["outcome"].as_str().unwrap().to_owned())
            .collect();
        if !outcomes.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(outcomes, ["delivered"]);
}

/// Sends `request` as raw bytes and reads the answer as written: its status line and header
/// names, in the case they went over the wire.
async fn raw_head(addr: &str, request: &str) -> (String, Vec<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8(answer).unwrap();
    let (head, _) = answer.split_once("\r\n\r\n").unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().to_owned();
    (status, lines.map(|l| l.split_once(':').unwrap().0.to_owned()).collect())
}

#[tokio::test]
async fn answers_carry_wechat_header_names_in_wechat_case_on_the_wire() {
    let app = spawn_mock(vec![]).await;
    let m = app.merchant("1900009191", KeyMode::PlatformCertificate);
    let addr = app.base.trim_start_matches("http://");

    let (ts, nonce) = (now().to_string(), random_alphanumeric(32));
    let message = request_message("GET", "/v3/certificates", &ts, &nonce, b"");
    let auth = Authorization {
        mchid: m.mchid.clone(),
        nonce_str: nonce,
        signature: m.key.sign_base64(&message).unwrap(),
        timestamp: ts,
        serial_no: m.serial.clone(),
    };
    let request = format!(
        "GET /v3/certificates HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\n\
         Authorization: {}\r\nConnection: close\r\n\r\n",
        auth.to_header()
    );
    let (status, names) = raw_head(addr, &request).await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    for name in [
        "Wechatpay-Timestamp",
        "Wechatpay-Nonce",
        "Wechatpay-Signature",
        "Wechatpay-Serial",
        "Wechatpay-Signature-Type",
        "Request-ID",
        "Content-Type",
        "Content-Length",
    ] {
        assert!(names.iter().any(|n| n == name), "no {name} in {names:?}");
    }
    assert!(names.iter().all(|n| !n.starts_with(|c: char| c.is_ascii_lowercase())), "{names:?}");

    // An error answer (unsigned, as WeChat's are) names its Request-ID the same way.
    let request =
        format!("GET /v3/certificates HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let (status, names) = raw_head(addr, &request).await;
    assert_eq!(status, "HTTP/1.1 401 Unauthorized");
    assert!(names.iter().any(|n| n == "Request-ID"), "{names:?}");
}

#[tokio::test]
async fn notifications_carry_wechat_header_names_in_wechat_case_on_the_wire() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_mock(vec![]).await;
    let m = app.merchant("1900009192", KeyMode::PlatformCertificate);
    let receiver = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let notify_url = format!("http://{}/notify", receiver.local_addr().unwrap());
    let reading = tokio::spawn(async move {
        let (mut stream, _) = receiver.accept().await.unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
        stream.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n").await.unwrap();
        String::from_utf8(head).unwrap()
    });
    create_and_pay(&app, &m, "raw_case_order_1", 100, &notify_url).await;
    let head = reading.await.unwrap();
    let names: Vec<&str> =
        head.trim_end().split("\r\n").skip(1).map(|l| l.split_once(':').unwrap().0).collect();
    for name in [
        "Wechatpay-Timestamp",
        "Wechatpay-Nonce",
        "Wechatpay-Signature",
        "Wechatpay-Serial",
        "Wechatpay-Signature-Type",
        "Content-Type",
    ] {
        assert!(names.contains(&name), "no {name} in {names:?}");
    }
}

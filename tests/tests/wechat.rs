//! WeChat Pay end to end: the real gateway, the WeChat Pay mock and a SQLite file, over loopback.

#![allow(clippy::unwrap_used)]

use paymux_crypto::{Certificate, RsaPrivateKey, b64_decode, b64_encode, pem_sections};
use paymux_e2e::TestApp;
use paymux_mock_wechat::KeyMode;
use paymux_mock_wechat::protocol::{answer_message, beijing_rfc3339, encrypt_resource};
use serde_json::{Value, json};
use time::OffsetDateTime;

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_owned()
}

fn order_no(v: &Value) -> String {
    v["channel_order_no"].as_str().unwrap().to_owned()
}

/// A key WeChat signs with, and the serial (or `PUB_KEY_ID_`) it names in `Wechatpay-Serial`.
struct WechatKey {
    key: RsaPrivateKey,
    serial: String,
}

/// The platform certificates' keys, oldest first: the last one is the current signer. Read from
/// the bundle's PEM sections: CA cert, CA key, public-key-mode key, then cert/key pairs.
fn platform_keys(app: &TestApp) -> Vec<WechatKey> {
    let bundle = app.sandbox.wechat.keys().to_pem_bundle();
    let sections = pem_sections(bundle.as_bytes()).unwrap();
    assert!(sections.len() >= 5 && (sections.len() - 3).is_multiple_of(2), "bundle layout");
    sections[3..]
        .chunks(2)
        .map(|pair| {
            let cert = Certificate::from_der(pair[0].1.clone()).unwrap();
            let key = RsaPrivateKey::from_pkcs8_der(&pair[1].1).unwrap();
            assert_eq!(cert.public_key().unwrap(), &key.public_key(), "pairs stay in order");
            WechatKey { key, serial: cert.serial_hex().to_owned() }
        })
        .collect()
}

fn current_platform_key(app: &TestApp) -> WechatKey {
    platform_keys(app).pop().unwrap()
}

/// The WeChat Pay public key (public-key mode) with its id.
fn public_mode_key(app: &TestApp) -> WechatKey {
    let bundle = app.sandbox.wechat.keys().to_pem_bundle();
    let sections = pem_sections(bundle.as_bytes()).unwrap();
    WechatKey {
        key: RsaPrivateKey::from_pkcs8_der(&sections[2].1).unwrap(),
        serial: app.sandbox.manifest.channels.wechat.platform_public_key_id.clone(),
    }
}

/// A notification body with `plaintext` encrypted under the sandbox merchant's APIv3 key.
fn notification_body(
    app: &TestApp,
    event_type: &str,
    original_type: &str,
    plaintext: &Value,
) -> Vec<u8> {
    let apiv3 = &app.sandbox.manifest.channels.wechat.apiv3_key;
    let nonce = paymux_crypto::random_alphanumeric(12);
    let mut resource =
        encrypt_resource(apiv3.as_bytes(), &nonce, original_type, plaintext.to_string().as_bytes())
            .unwrap();
    resource.original_type = Some(original_type.to_owned());
    json!({
        "id": format!("EV-{}", paymux_crypto::random_alphanumeric(20)),
        "create_time": beijing_rfc3339(OffsetDateTime::now_utc()),
        "resource_type": "encrypt-resource",
        "event_type": event_type,
        "summary": "支付成功",
        "resource": resource,
    })
    .to_string()
    .into_bytes()
}

/// TRANSACTION.SUCCESS for `out_trade_no`, claiming `total` fen paid.
fn paid_notification(app: &TestApp, out_trade_no: &str, total: i64) -> Vec<u8> {
    let wx = &app.sandbox.manifest.channels.wechat;
    let transaction = json!({
        "appid": wx.appid,
        "mchid": wx.mchid,
        "out_trade_no": out_trade_no,
        "transaction_id": "4200000000202611240000000001",
        "trade_type": "NATIVE",
        "trade_state": "SUCCESS",
        "trade_state_desc": "支付成功",
        "bank_type": "OTHERS",
        "success_time": beijing_rfc3339(OffsetDateTime::now_utc()),
        "payer": {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
        "amount": {"total": total, "payer_total": total, "currency": "CNY", "payer_currency": "CNY"},
    });
    notification_body(app, "TRANSACTION.SUCCESS", "transaction", &transaction)
}

/// The five signature headers over `body`, signed by `signer` at `timestamp`.
fn signed_headers(signer: &WechatKey, timestamp: i64, body: &[u8]) -> Vec<(&'static str, String)> {
    let ts = timestamp.to_string();
    let nonce = paymux_crypto::random_alphanumeric(32);
    let signature = signer.key.sign_base64(&answer_message(&ts, &nonce, body)).unwrap();
    vec![
        ("wechatpay-timestamp", ts),
        ("wechatpay-nonce", nonce),
        ("wechatpay-signature", signature),
        ("wechatpay-serial", signer.serial.clone()),
        ("wechatpay-signature-type", "WECHATPAY2-SHA256-RSA2048".to_owned()),
    ]
}

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

const JSON: &str = "application/json";

/// Create -> pay at the mock -> encrypted notification -> succeeded with the mock's transaction id.
async fn pay_and_wait(app: &TestApp, p: &Value) -> Value {
    let no = order_no(p);
    assert_eq!(app.pay_at_mock("wechat", &no).await, 200);
    let paid = app.wait_payment(&id(p), "succeeded").await;
    let mock = app.mock_order("wechat", &no).await;
    assert_eq!(paid["channel_trade_no"], mock["transaction_id"], "{paid} / {mock}");
    assert!(paid["paid_at"].is_string());
    paid
}

#[tokio::test]
async fn native_jsapi_and_h5_payments_are_paid_through_encrypted_notifications() {
    let app = TestApp::spawn().await;

    let (s, qr) = app.create_payment("wechat", "qr", "wx-qr", 1000).await;
    assert_eq!(s, 201, "{qr}");
    assert_eq!(qr["status"], "pending");
    assert_eq!(qr["action"]["type"], "qr_code");
    assert!(qr["action"]["code_url"].as_str().unwrap().starts_with("http"), "{qr}");
    pay_and_wait(&app, &qr).await;

    let (s, js) = app.create_payment("wechat", "jsapi", "wx-js", 1200).await;
    assert_eq!(s, 201, "{js}");
    let action = &js["action"];
    assert_eq!(action["type"], "sdk");
    let params = action["params"].as_object().unwrap();
    let mut keys: Vec<&str> = params.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["appId", "nonceStr", "package", "paySign", "signType", "timeStamp"]);
    let wx = &app.sandbox.manifest.channels.wechat;
    assert_eq!(params["appId"], wx.appid.as_str());
    assert_eq!(params["signType"], "RSA");
    let prepay_id =
        app.mock_order("wechat", &order_no(&js)).await["prepay_id"].as_str().unwrap().to_owned();
    assert_eq!(params["package"], format!("prepay_id={prepay_id}").as_str());
    let field = |k: &str| params[k].as_str().unwrap().to_owned();
    assert!(field("timeStamp").parse::<i64>().is_ok(), "timeStamp is a string of digits");
    let merchant =
        RsaPrivateKey::load(&std::fs::read_to_string(&wx.merchant_private_key).unwrap()).unwrap();
    let message = format!(
        "{}\n{}\n{}\n{}\n",
        field("appId"),
        field("timeStamp"),
        field("nonceStr"),
        field("package")
    );
    merchant
        .public_key()
        .verify_base64(message.as_bytes(), &field("paySign"))
        .expect("paySign verifies with the merchant's public key");
    assert!(
        merchant.public_key().verify_base64(b"something else\n", &field("paySign")).is_err(),
        "and only over its own message"
    );
    pay_and_wait(&app, &js).await;

    let (s, h5) = app.create_payment("wechat", "h5", "wx-h5", 800).await;
    assert_eq!(s, 201, "{h5}");
    assert_eq!(h5["action"]["type"], "redirect");
    assert!(h5["action"]["url"].as_str().unwrap().starts_with("http"), "{h5}");
    pay_and_wait(&app, &h5).await;

    let kinds: Vec<String> =
        app.events().await.iter().map(|e| e["type"].as_str().unwrap().to_owned()).collect();
    assert_eq!(kinds, ["payment.succeeded", "payment.succeeded", "payment.succeeded"]);
}

#[tokio::test]
async fn a_partial_refund_succeeds_by_notification_and_an_unpaid_payment_closes() {
    let app = TestApp::spawn().await;
    let (_, p) = app.create_payment("wechat", "qr", "wx-refund", 1000).await;
    pay_and_wait(&app, &p).await;

    let (s, r) = app
        .post(
            &format!("/v1/payments/{}/refunds", id(&p)),
            json!({"amount": 300, "merchant_refund_no": "wr-1"}),
        )
        .await;
    assert_eq!(s, 201, "{r}");
    assert_eq!(r["status"], "pending", "WeChat accepts a refund as PROCESSING");
    let done =
        app.wait_for(&format!("/v1/refunds/{}", id(&r)), 10, |r| r["status"] == "succeeded").await;
    assert_eq!(done["amount"], 300);
    let (_, after) = app.get(&format!("/v1/payments/{}", id(&p))).await;
    assert_eq!(after["amount_refunded"], 300, "{after}");
    assert_eq!(after["status"], "succeeded");
    let mock = app.mock_order("wechat", &order_no(&p)).await;
    assert_eq!(mock["refunded"], 300, "the channel agrees: {mock}");
    // The mock logs the outcome after the gateway has answered: wait for the log entry itself.
    app.wait_mock_order("wechat", &order_no(&p), 10, |mock| {
        mock["deliveries"].as_array().is_some_and(|d| {
            d.iter().any(|d| d["event_type"] == "REFUND.SUCCESS" && d["outcome"] == "delivered")
        })
    })
    .await;

    let (_, unpaid) = app.create_payment("wechat", "qr", "wx-close", 500).await;
    let (s, closed) = app.post(&format!("/v1/payments/{}/close", id(&unpaid)), json!({})).await;
    assert_eq!(s, 200, "{closed}");
    assert_eq!(closed["status"], "closed");
    assert_eq!(app.mock_order("wechat", &order_no(&unpaid)).await["trade_state"], "CLOSED");

    let kinds: Vec<String> =
        app.events().await.iter().map(|e| e["type"].as_str().unwrap().to_owned()).collect();
    assert_eq!(kinds, ["payment.succeeded", "refund.succeeded", "payment.closed"]);
}

#[tokio::test]
async fn a_platform_certificate_rotation_mid_run_needs_no_restart() {
    let app = TestApp::spawn().await;
    let (_, before) = app.create_payment("wechat", "qr", "wx-rot-1", 1000).await;
    pay_and_wait(&app, &before).await;
    let old = current_platform_key(&app);

    let new_serial = app.sandbox.wechat.rotate_platform_certificate();
    assert!(!new_serial.is_empty(), "rotation issued a certificate");
    assert_ne!(new_serial, old.serial);
    assert_eq!(current_platform_key(&app).serial, new_serial);

    // The answer to this create is signed by a certificate the adapter has never seen: it must
    // fetch the new list and carry on.
    let (s, after) = app.create_payment("wechat", "jsapi", "wx-rot-2", 700).await;
    assert_eq!(s, 201, "{after}");
    pay_and_wait(&app, &after).await;
    let deliveries = app.wechat_deliveries(&order_no(&after)).await;
    assert_eq!(deliveries[0]["signature"], "valid");
    assert_eq!(deliveries[0]["outcome"], "delivered", "{deliveries}");

    let (s, r) = app
        .post(
            &format!("/v1/payments/{}/refunds", id(&after)),
            json!({"amount": 100, "merchant_refund_no": "wr-rot"}),
        )
        .await;
    assert_eq!(s, 201, "{r}");
    app.wait_for(&format!("/v1/refunds/{}", id(&r)), 10, |r| r["status"] == "succeeded").await;

    // The old certificate is still listed and valid: what it signed still verifies.
    let (_, third) = app.create_payment("wechat", "qr", "wx-rot-3", 900).await;
    let body = paid_notification(&app, &order_no(&third), 900);
    let (s, text) =
        app.post_callback("wechat", &signed_headers(&old, now(), &body), JSON, body).await;
    assert!((200..300).contains(&s), "{s} {text}");
    app.wait_payment(&id(&third), "succeeded").await;
}

#[tokio::test]
async fn a_notification_signed_by_a_rotated_certificate_is_verified_on_first_sight() {
    let app = TestApp::spawn().await;
    let (_, p) = app.create_payment("wechat", "qr", "wx-rot-n", 1000).await;
    let old = current_platform_key(&app).serial;
    let new_serial = app.sandbox.wechat.rotate_platform_certificate();
    assert_ne!(new_serial, old);
    // The notification, not an answer, is the first message signed by the new certificate.
    pay_and_wait(&app, &p).await;
    let deliveries = app.wechat_deliveries(&order_no(&p)).await;
    assert_eq!(deliveries[0]["outcome"], "delivered", "accepted on the first send: {deliveries}");
    let (s, p2) = app.create_payment("wechat", "qr", "wx-rot-n2", 500).await;
    assert_eq!(s, 201, "{p2}");
}

#[tokio::test]
async fn public_key_mode_pays_without_platform_certificates() {
    let app = TestApp::spawn_with(|o| o.wechat_key_mode = KeyMode::PublicKey).await;
    let (s, p) = app.create_payment("wechat", "qr", "wx-pk", 1000).await;
    assert_eq!(s, 201, "{p}");
    pay_and_wait(&app, &p).await;
    let deliveries = app.wechat_deliveries(&order_no(&p)).await;
    assert_eq!(deliveries[0]["outcome"], "delivered", "{deliveries}");

    let (s, js) = app.create_payment("wechat", "jsapi", "wx-pk-js", 300).await;
    assert_eq!(s, 201, "{js}");
    pay_and_wait(&app, &js).await;
}

#[tokio::test]
async fn both_mode_accepts_either_key_while_migrating() {
    let app = TestApp::spawn_with(|o| o.wechat_key_mode = KeyMode::Both).await;
    let (s, p) = app.create_payment("wechat", "qr", "wx-both", 1000).await;
    assert_eq!(s, 201, "{p}");
    pay_and_wait(&app, &p).await;

    // A notification still signed by the platform certificate: the adapter fetches it on sight.
    let (_, p2) = app.create_payment("wechat", "qr", "wx-both-2", 600).await;
    let body = paid_notification(&app, &order_no(&p2), 600);
    let platform = current_platform_key(&app);
    let (s, text) =
        app.post_callback("wechat", &signed_headers(&platform, now(), &body), JSON, body).await;
    assert!((200..300).contains(&s), "{s} {text}");
    app.wait_payment(&id(&p2), "succeeded").await;

    // And one signed by the public key, built here rather than by the mock.
    let (_, p3) = app.create_payment("wechat", "qr", "wx-both-3", 400).await;
    let body = paid_notification(&app, &order_no(&p3), 400);
    let (s, text) = app
        .post_callback("wechat", &signed_headers(&public_mode_key(&app), now(), &body), JSON, body)
        .await;
    assert!((200..300).contains(&s), "{s} {text}");
    app.wait_payment(&id(&p3), "succeeded").await;
}

#[tokio::test]
async fn forged_stale_tampered_and_mismatched_notifications_change_nothing() {
    let app = TestApp::spawn().await;
    let (_, p) = app.create_payment("wechat", "qr", "wx-forged", 1000).await;
    let no = order_no(&p);
    let platform = current_platform_key(&app);
    let refused = |s: u16, what: &str, text: &str| {
        assert!(!(200..300).contains(&s), "{what} must be refused, got {s} {text}");
    };

    // Right serial, wrong key.
    let stranger =
        WechatKey { key: RsaPrivateKey::generate().unwrap(), serial: platform.serial.clone() };
    let body = paid_notification(&app, &no, 1000);
    let (s, text) =
        app.post_callback("wechat", &signed_headers(&stranger, now(), &body), JSON, body).await;
    refused(s, "a bad signature", &text);
    assert!(text.contains("FAIL"), "WeChat's failure reply: {text}");

    // A serial no certificate has: the adapter looks once, finds nothing, refuses.
    let unknown = WechatKey {
        key: RsaPrivateKey::generate().unwrap(),
        serial: "5157F09EFDC096DE15EBE81A47057A7232F1B8E1".to_owned(),
    };
    let body = paid_notification(&app, &no, 1000);
    let (s, text) =
        app.post_callback("wechat", &signed_headers(&unknown, now(), &body), JSON, body).await;
    refused(s, "an unknown certificate", &text);

    let body = paid_notification(&app, &no, 1000);
    let (s, text) = app
        .post_callback("wechat", &signed_headers(&platform, now() - 600, &body), JSON, body)
        .await;
    refused(s, "a ten-minute-old timestamp", &text);

    // Correctly signed, but the ciphertext's tag no longer matches.
    let mut tampered: Value = serde_json::from_slice(&paid_notification(&app, &no, 1000)).unwrap();
    let mut sealed = b64_decode(tampered["resource"]["ciphertext"].as_str().unwrap()).unwrap();
    sealed[0] ^= 0x01;
    tampered["resource"]["ciphertext"] = json!(b64_encode(&sealed));
    let body = tampered.to_string().into_bytes();
    let (s, text) =
        app.post_callback("wechat", &signed_headers(&platform, now(), &body), JSON, body).await;
    refused(s, "a tampered ciphertext", &text);

    // Authentic in every way but the amount: the gateway refuses it and raises an alert.
    let body = paid_notification(&app, &no, 1);
    let (s, text) =
        app.post_callback("wechat", &signed_headers(&platform, now(), &body), JSON, body).await;
    refused(s, "a different amount", &text);

    let (_, after) = app.get(&format!("/v1/payments/{}", id(&p))).await;
    assert_eq!(after["status"], "pending", "{after}");
    assert!(after["channel_trade_no"].is_null(), "{after}");
    assert!(app.events().await.is_empty());

    // Each refusal above was for its one defect: the same notification without it is accepted.
    let body = paid_notification(&app, &no, 1000);
    let (s, text) =
        app.post_callback("wechat", &signed_headers(&platform, now(), &body), JSON, body).await;
    assert!((200..300).contains(&s), "{s} {text}");
    app.wait_payment(&id(&p), "succeeded").await;
    assert_eq!(app.events().await.len(), 1);
}

#[tokio::test]
async fn a_notification_delivered_twice_changes_state_once_and_is_acknowledged_twice() {
    let app = TestApp::spawn().await;
    let (_, p) = app.create_payment("wechat", "qr", "wx-dup", 1000).await;
    let body = paid_notification(&app, &order_no(&p), 1000);
    let headers = signed_headers(&current_platform_key(&app), now(), &body);
    let (first, t1) = app.post_callback("wechat", &headers, JSON, body.clone()).await;
    let (second, t2) = app.post_callback("wechat", &headers, JSON, body).await;
    assert!((200..300).contains(&first), "{first} {t1}");
    assert!((200..300).contains(&second), "{second} {t2}");
    let (_, after) = app.get(&format!("/v1/payments/{}", id(&p))).await;
    assert_eq!(after["status"], "succeeded");
    assert_eq!(after["channel_trade_no"], "4200000000202611240000000001");
    assert_eq!(app.events().await.len(), 1, "one payment.succeeded, not two");
}

#[tokio::test]
async fn a_bad_signature_on_the_channels_answer_is_an_unknown_outcome() {
    let app = TestApp::spawn().await;
    // A first payment while all is well, so the platform certificates are already known and the
    // failure below is the answer's own signature.
    let (s, warm) = app.create_payment("wechat", "qr", "wx-warm", 100).await;
    assert_eq!(s, 201, "{warm}");

    app.set_faults("wechat", json!({"bad_signature": true})).await;
    let (s, e) = app.create_payment("wechat", "qr", "wx-badsig", 1000).await;
    assert_eq!(s, 502, "{e}");
    assert_eq!(e["error"]["type"], "channel_unavailable");
    let payment_id = e["error"]["object_id"].as_str().unwrap().to_owned();
    let (_, p) = app.get(&format!("/v1/payments/{payment_id}")).await;
    assert_eq!(p["status"], "pending", "{p}");
    assert!(app.events().await.is_empty());

    // The order did reach WeChat: once answers verify again, a sync reads its real state.
    app.clear_faults("wechat").await;
    let (s, synced) = app.post(&format!("/v1/payments/{payment_id}/sync"), json!({})).await;
    assert_eq!(s, 200, "{synced}");
    assert_eq!(synced["status"], "pending");
}

/// REFUND.SUCCESS for a refund, claiming `refund` fen returned.
fn refunded_notification(
    app: &TestApp,
    out_trade_no: &str,
    out_refund_no: &str,
    refund: i64,
) -> Vec<u8> {
    let wx = &app.sandbox.manifest.channels.wechat;
    let notice = json!({
        "mchid": wx.mchid,
        "out_trade_no": out_trade_no,
        "transaction_id": "4200000000202611240000000001",
        "out_refund_no": out_refund_no,
        "refund_id": "50300000000000000000000000001",
        "refund_status": "SUCCESS",
        "success_time": beijing_rfc3339(OffsetDateTime::now_utc()),
        "user_received_account": "支付用户零钱",
        "amount": {"total": 1000, "refund": refund, "payer_total": 1000, "payer_refund": refund},
    });
    notification_body(app, "REFUND.SUCCESS", "refund", &notice)
}

#[tokio::test]
async fn a_refund_notification_with_another_amount_changes_nothing() {
    let app = TestApp::spawn().await;
    // The mock's own REFUND.SUCCESS comes much later: this test plays WeChat itself.
    app.sandbox.wechat.set_refund_delay(std::time::Duration::from_secs(120));
    let (_, p) = app.create_payment("wechat", "qr", "o-refund-amount", 1000).await;
    pay_and_wait(&app, &p).await;
    let (s, r) = app
        .post(
            &format!("/v1/payments/{}/refunds", id(&p)),
            json!({"amount": 300, "merchant_refund_no": "r-1"}),
        )
        .await;
    assert_eq!(s, 201, "{r}");
    assert_eq!(r["status"], "pending");
    let out_refund_no = r["channel_refund_no"].as_str().unwrap();
    let signer = current_platform_key(&app);

    let body = refunded_notification(&app, &order_no(&p), out_refund_no, 500);
    let (s, _) =
        app.post_callback("wechat", &signed_headers(&signer, now(), &body), JSON, body).await;
    assert!(s >= 400, "a refund of another amount is refused: {s}");
    let (_, still) = app.get(&format!("/v1/refunds/{}", id(&r))).await;
    assert_eq!(still["status"], "pending");
    let (_, payment) = app.get(&format!("/v1/payments/{}", id(&p))).await;
    assert_eq!(payment["amount_refunded"], 0);

    let body = refunded_notification(&app, &order_no(&p), out_refund_no, 300);
    let (s, _) =
        app.post_callback("wechat", &signed_headers(&signer, now(), &body), JSON, body).await;
    assert!((200..300).contains(&s), "the right amount is accepted: {s}");
    let (_, done) = app.get(&format!("/v1/refunds/{}", id(&r))).await;
    assert_eq!(done["status"], "succeeded");
}

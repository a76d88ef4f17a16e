//! Several attempts at one payment, end to end: the payer switches channels, the first success
//! wins and the other attempt is closed at its channel; a payer who pays both is refunded the
//! second automatically (or, with the merchant's setting off, only told of it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::routing::post;
use paymux_core::{AccountId, MerchantId};
use paymux_e2e::TestApp;
use paymux_store::{AccountRecord, NewApiKey};
use serde_json::{Value, json};

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_owned()
}

fn no(v: &Value) -> String {
    v["channel_order_no"].as_str().unwrap().to_owned()
}

/// A 10.00 Alipay QR payment whose code the payer has opened (from then on the trade exists at
/// Alipay), then switched to WeChat Pay: the payment, and both attempts' channel order numbers.
async fn switched_to_wechat(app: &TestApp, order: &str) -> (String, String, String) {
    let (s, p) = app.create_payment("alipay", "qr", order, 1000).await;
    assert_eq!(s, 201, "{p}");
    let code_url = p["action"]["code_url"].as_str().unwrap();
    assert!(app.http.get(code_url).send().await.unwrap().status().is_success());
    let path = format!("/v1/payments/{}/attempts", id(&p));
    let body = json!({"channel": "wechat", "method": "qr"});
    let (s, switched) = app.call_with_key(&format!("{order}-switch"), &path, body.clone()).await;
    assert_eq!(s, 201, "{switched}");
    assert_eq!(switched["channel"], "wechat");
    assert_eq!(switched["action"]["type"], "qr_code");
    let attempts = switched["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{switched}");
    assert_eq!(attempts[0]["channel_order_no"], p["channel_order_no"]);
    assert_eq!(attempts[1]["channel_order_no"], switched["channel_order_no"]);
    assert_ne!(switched["channel_order_no"], p["channel_order_no"]);
    // The same key and body replay the answer: no third attempt.
    let (s, again) = app.call_with_key(&format!("{order}-switch"), &path, body).await;
    assert_eq!((s, &again["channel_order_no"]), (201, &switched["channel_order_no"]));
    (id(&p), no(&p), no(&switched))
}

fn count(events: &[Value], kind: &str, payment: &str) -> usize {
    events.iter().filter(|e| e["type"] == kind && e["data"]["object"]["id"] == payment).count()
}

#[tokio::test]
async fn switching_from_alipay_to_wechat_then_paying_wechat_succeeds_once_and_closes_alipay() {
    let app = TestApp::spawn().await;
    let (pid, alipay_no, wechat_no) = switched_to_wechat(&app, "att-switch").await;
    assert_eq!(app.pay_at_mock("wechat", &wechat_no).await, 200);
    let paid = app.wait_payment(&pid, "succeeded").await;
    assert_eq!((paid["channel"].as_str(), no(&paid)), (Some("wechat"), wechat_no.clone()));
    // The Alipay attempt is closed at Alipay, and shows so.
    let order = app
        .wait_mock_order("alipay", &alipay_no, 10, |o| o["trade_status"] == "TRADE_CLOSED")
        .await;
    assert_eq!(order["paid"], false, "{order}");
    let p = app
        .wait_for(&format!("/v1/payments/{pid}"), 10, |p| p["attempts"][0]["status"] == "closed")
        .await;
    assert_eq!(p["attempts"][1]["status"], "succeeded");
    assert_eq!(p["amount_refunded"], 0);
    let events = app.events().await;
    assert_eq!(count(&events, "payment.succeeded", &pid), 1);
    assert_eq!(count(&events, "payment.duplicate_paid", &pid), 0);
    // A succeeded payment takes no more attempts, and says why.
    let (s, e) = app
        .post(&format!("/v1/payments/{pid}/attempts"), json!({"channel": "alipay", "method": "qr"}))
        .await;
    assert_eq!((s, e["error"]["code"].as_str()), (409, Some("payment_not_pending")), "{e}");
}

#[tokio::test]
async fn an_attempt_at_an_unknown_or_unconfigured_channel_or_to_another_merchants_payment_changes_nothing()
 {
    let app = TestApp::spawn().await;
    let (_, p) = app.create_payment("alipay", "qr", "att-bad", 1000).await;
    let path = format!("/v1/payments/{}/attempts", id(&p));
    for (body, status, param) in [
        (json!({"channel": "paypal", "method": "qr"}), 400, "channel"),
        (json!({"method": "qr"}), 400, "channel"),
        (json!({"channel": "wechat"}), 400, "method"),
        (json!({"channel": "wechat", "method": "barcode"}), 400, "payer.auth_code"),
        (json!({"channel": "wechat", "method": "page"}), 400, "channel"),
        (json!({"channel": "wechat", "method": "qr", "surprise": 1}), 400, ""),
    ] {
        let (s, e) = app.post(&path, body.clone()).await;
        assert_eq!(s, status, "{body}: {e}");
        if !param.is_empty() {
            assert_eq!(e["error"]["param"], param, "{body}: {e}");
        }
    }
    let (_, after) = app.get(&format!("/v1/payments/{}", id(&p))).await;
    assert_eq!(after["attempts"].as_array().unwrap().len(), 1, "nothing changed: {after}");
    assert_eq!(after["channel_order_no"], p["channel_order_no"]);
    let other = app.other_merchant_key().await;
    let (s, _) = app
        .call_as(
            &other,
            reqwest::Method::POST,
            &path,
            Some(json!({"channel": "wechat", "method": "qr"})),
        )
        .await;
    assert_eq!(s, 404, "another merchant's payment is not found");
}

/// A merchant's webhook receiver that keeps what it got.
#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<Value>>>);

async fn receive(State(r): State<Receiver>, body: String) -> &'static str {
    r.0.lock().unwrap().push(serde_json::from_str(&body).unwrap_or(Value::Null));
    "ok"
}

async fn start_receiver(app: &TestApp) -> Receiver {
    let r = Receiver::default();
    let router = axum::Router::new().route("/hook", post(receive)).with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    let (s, ep) = app.post("/v1/webhook_endpoints", json!({"url": url})).await;
    assert_eq!(s, 201, "{ep}");
    r
}

/// The payer pays the Alipay attempt (whose notification is lost) and then the WeChat one:
/// WeChat's success is the first paymux hears of, so it wins, and Alipay's is a duplicate
/// found when paymux asks Alipay about the other attempt.
async fn pay_both(app: &TestApp, order: &str) -> (String, String) {
    let (pid, alipay_no, wechat_no) = switched_to_wechat(app, order).await;
    app.set_faults("alipay", json!({"drop_notifications": true})).await;
    assert_eq!(app.pay_at_mock("alipay", &alipay_no).await, 200);
    assert_eq!(app.pay_at_mock("wechat", &wechat_no).await, 200);
    let paid = app.wait_payment(&pid, "succeeded").await;
    assert_eq!(no(&paid), wechat_no, "the first success paymux heard of wins");
    let p = app
        .wait_for(&format!("/v1/payments/{pid}"), 10, |p| {
            p["attempts"][0]["status"] == "duplicate_paid"
        })
        .await;
    assert_eq!(p["status"], "succeeded");
    assert_eq!(p["attempts"][1]["status"], "succeeded");
    (pid, alipay_no)
}

#[tokio::test]
async fn paying_both_attempts_refunds_the_duplicate_in_full_and_tells_the_merchant() {
    let app = TestApp::spawn().await;
    let hooks = start_receiver(&app).await;
    let (pid, alipay_no) = pay_both(&app, "att-both").await;
    // The duplicate attempt is refunded in full at Alipay, by a refund of its own.
    let order =
        app.wait_mock_order("alipay", &alipay_no, 10, |o| o["refunded_amount"] == "10.00").await;
    assert_eq!(order["refunds"].as_array().unwrap().len(), 1, "{order}");
    let refunds = app
        .wait_for(&format!("/v1/payments/{pid}/refunds"), 10, |l| {
            l["data"][0]["status"] == "succeeded"
        })
        .await;
    let refund = &refunds["data"][0];
    assert_eq!(refunds["data"].as_array().unwrap().len(), 1);
    assert_eq!(
        (refund["amount"].as_i64(), refund["reason"].as_str()),
        (Some(1000), Some("duplicate"))
    );
    let (_, p) = app.get(&format!("/v1/payments/{pid}")).await;
    assert_eq!(refund["attempt_id"], p["attempts"][0]["id"]);
    assert_eq!(p["amount_refunded"], 0, "the merchant's refundable amount is untouched: {p}");
    // The ledger has the duplicate coming in and going back, and still balances.
    let (_, ledger) = app.get(&format!("/v1/ledger?payment_id={pid}")).await;
    let entries = ledger["data"].as_array().unwrap();
    let sum_of = |kind: &str| -> i64 {
        entries.iter().filter(|e| e["kind"] == kind).map(|e| e["amount"].as_i64().unwrap()).sum()
    };
    assert_eq!(entries.iter().map(|e| e["amount"].as_i64().unwrap()).sum::<i64>(), 0, "{ledger}");
    let merchant = |kind: &str| -> i64 {
        entries
            .iter()
            .filter(|e| e["kind"] == kind && e["account"] == "merchant")
            .map(|e| e["amount"].as_i64().unwrap())
            .sum()
    };
    assert_eq!(
        (merchant("duplicate_paid"), merchant("duplicate_refund")),
        (1000, -1000),
        "{ledger}"
    );
    assert_eq!(sum_of("paid"), 0, "the payment itself came in once: {ledger}");
    // The merchant can still refund all of its payment (at WeChat, where it was paid).
    let (s, r) = app
        .post(&format!("/v1/payments/{pid}/refunds"), json!({"merchant_refund_no": "att-both-r"}))
        .await;
    assert_eq!((s, r["amount"].as_i64()), (201, Some(1000)), "{r}");
    // One success, one duplicate, each delivered to the merchant's endpoint.
    let events = app.events().await;
    assert_eq!(count(&events, "payment.succeeded", &pid), 1);
    assert_eq!(count(&events, "payment.duplicate_paid", &pid), 1);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let got = hooks.0.lock().unwrap().clone();
        if count(&got, "payment.duplicate_paid", &pid) == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no duplicate_paid webhook: {got:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let metrics = app.http.get(format!("{}/metrics", app.gateway)).send().await.unwrap();
    let text = metrics.text().await.unwrap();
    assert!(
        text.lines().any(|l| l.starts_with("paymux_anomalies_total{type=\"duplicate_paid\"}")
            && !l.ends_with(" 0")),
        "the anomaly is counted"
    );
}

#[tokio::test]
async fn with_duplicate_auto_refund_off_a_duplicate_is_only_reported() {
    let app = TestApp::spawn().await;
    app.sandbox.store.set_duplicate_auto_refund(app.sandbox.merchant_id, false).await.unwrap();
    let (pid, alipay_no) = pay_both(&app, "att-noref").await;
    let events = app.events().await;
    assert_eq!(count(&events, "payment.duplicate_paid", &pid), 1);
    let (_, refunds) = app.get(&format!("/v1/payments/{pid}/refunds")).await;
    assert_eq!(refunds["data"].as_array().unwrap().len(), 0, "{refunds}");
    let order = app.mock_order("alipay", &alipay_no).await;
    assert_eq!(order["refunds"].as_array().unwrap().len(), 0, "nothing refunded: {order}");
}

#[tokio::test]
async fn an_attempt_whose_create_times_out_stays_pending_and_wins_once_paid() {
    let app = TestApp::spawn().await;
    let (_, p) = app.create_payment("alipay", "qr", "att-timeout", 1000).await;
    let pid = id(&p);
    app.set_faults("wechat", json!({"timeout_after_commit": ["create"]})).await;
    let path = format!("/v1/payments/{pid}/attempts");
    let (s, e) = app.post(&path, json!({"channel": "wechat", "method": "qr"})).await;
    assert_eq!((s, e["error"]["object_id"].as_str()), (504, Some(pid.as_str())), "{e}");
    app.clear_faults("wechat").await;
    let (_, now) = app.get(&format!("/v1/payments/{pid}")).await;
    assert_eq!(now["status"], "pending", "an unknown outcome is never a failure: {now}");
    let attempt = &now["attempts"][1];
    assert_eq!((attempt["status"].as_str(), attempt["action"].is_null()), (Some("pending"), true));
    // The order exists at WeChat all the same; the payer pays it, and it wins.
    let wechat_no = attempt["channel_order_no"].as_str().unwrap();
    assert_eq!(app.pay_at_mock("wechat", wechat_no).await, 200);
    let paid = app.wait_payment(&pid, "succeeded").await;
    assert_eq!(paid["channel"], "wechat");
    let events = app.events().await;
    assert_eq!(count(&events, "payment.succeeded", &pid), 1);
}

#[tokio::test]
async fn close_others_closes_the_earlier_attempt_at_its_channel_and_the_new_one_stays_payable() {
    let app = TestApp::spawn().await;
    let (_, p) = app.create_payment("alipay", "qr", "att-close-others", 1000).await;
    let pid = id(&p);
    let code_url = p["action"]["code_url"].as_str().unwrap();
    assert!(app.http.get(code_url).send().await.unwrap().status().is_success());
    let body = json!({"channel": "wechat", "method": "qr", "close_others": true});
    let (s, switched) = app.post(&format!("/v1/payments/{pid}/attempts"), body).await;
    assert_eq!(s, 201, "{switched}");
    app.wait_mock_order("alipay", &no(&p), 10, |o| o["trade_status"] == "TRADE_CLOSED").await;
    let now = app
        .wait_for(&format!("/v1/payments/{pid}"), 10, |x| x["attempts"][0]["status"] == "closed")
        .await;
    assert_eq!(now["status"], "pending", "the WeChat attempt is still open: {now}");
    assert_eq!(app.pay_at_mock("wechat", &no(&switched)).await, 200);
    app.wait_payment(&pid, "succeeded").await;
}

#[tokio::test]
async fn a_late_notification_of_the_duplicate_and_a_repeated_one_of_the_winner_change_nothing() {
    let app = TestApp::spawn().await;
    let (pid, alipay_no, wechat_no) = switched_to_wechat(&app, "att-late").await;
    // WeChat's notifications are held back a moment (and reordered); Alipay's come twice.
    app.set_faults("wechat", json!({"reorder_notifications": true})).await;
    app.set_faults("alipay", json!({"duplicate_notifications": true})).await;
    assert_eq!(app.pay_at_mock("wechat", &wechat_no).await, 200);
    assert_eq!(app.pay_at_mock("alipay", &alipay_no).await, 200);
    let paid = app.wait_payment(&pid, "succeeded").await;
    assert_eq!(paid["channel"], "alipay", "Alipay's notification came first: {paid}");
    // WeChat's attempt is the duplicate, refunded at WeChat (its refund notification settles it).
    let refunds = app
        .wait_for(&format!("/v1/payments/{pid}/refunds"), 15, |l| {
            l["data"][0]["status"] == "succeeded"
        })
        .await;
    let (_, p) = app.get(&format!("/v1/payments/{pid}")).await;
    assert_eq!(p["attempts"][1]["status"], "duplicate_paid", "{p}");
    assert_eq!(refunds["data"][0]["attempt_id"], p["attempts"][1]["id"]);
    // WeChat's own payment notification, held back, arrives after all of that and is answered.
    let order = app
        .wait_mock_order("wechat", &wechat_no, 10, |o| {
            o["deliveries"]
                .as_array()
                .is_some_and(|d| d.len() >= 2 && d.iter().all(|x| x["outcome"].is_string()))
        })
        .await;
    assert_eq!(order["refunded"], 1000, "{order}");
    let events = app.events().await;
    assert_eq!(count(&events, "payment.succeeded", &pid), 1);
    assert_eq!(count(&events, "payment.duplicate_paid", &pid), 1);
    let (_, after) = app.get(&format!("/v1/payments/{pid}")).await;
    assert_eq!(
        (after["status"].as_str(), after["amount_refunded"].as_i64()),
        (Some("succeeded"), Some(0))
    );
    assert_eq!(after["channel"], "alipay");
}

/// An account of `merchant` with the sandbox's `channel` credentials, in the given mode.
async fn account_like_the_sandboxs(app: &TestApp, merchant: MerchantId, channel: &str, live: bool) {
    let store = &app.sandbox.store;
    let channels = &app.sandbox.manifest.channels;
    let sandbox = match channel {
        "alipay" => &channels.alipay.account_id,
        _ => &channels.wechat.account_id,
    };
    let template = store.channel_account(sandbox.parse().unwrap()).await.unwrap().unwrap();
    let account =
        AccountRecord { id: AccountId::new(), merchant_id: merchant, livemode: live, ..template };
    store.put_channel_account(&account).await.unwrap();
}

#[tokio::test]
async fn an_attempt_at_an_account_of_the_other_mode_is_refused_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let store = &app.sandbox.store;
    let merchant = store.create_merchant("Test Alipay, live WeChat").await.unwrap();
    account_like_the_sandboxs(&app, merchant, "alipay", false).await;
    account_like_the_sandboxs(&app, merchant, "wechat", true).await;
    let key = format!("sk_test_{}", paymux_crypto::random_alphanumeric(32));
    let api_key = NewApiKey {
        merchant_id: merchant,
        key_hash: paymux_crypto::sha256_hex(key.as_bytes()),
        prefix: key[..12].to_owned(),
        livemode: false,
    };
    store.add_api_key(&api_key).await.unwrap();
    let order = json!({"merchant_order_no": "att-mode", "amount": 1000, "currency": "CNY",
                       "subject": "s", "channel": "alipay", "method": "qr"});
    let post = reqwest::Method::POST;
    let (s, p) = app.call_as(&key, post.clone(), "/v1/payments", Some(order)).await;
    assert_eq!(s, 201, "{p}");
    let path = format!("/v1/payments/{}/attempts", id(&p));
    let (s, e) =
        app.call_as(&key, post, &path, Some(json!({"channel": "wechat", "method": "qr"}))).await;
    assert_eq!((s, e["error"]["code"].as_str()), (400, Some("livemode_mismatch")), "{e}");
    assert!(app.mock_orders("wechat").await.is_empty(), "nothing reached the live channel");
    let (_, after) =
        app.call_as(&key, reqwest::Method::GET, &format!("/v1/payments/{}", id(&p)), None).await;
    assert_eq!(after["attempts"].as_array().unwrap().len(), 1, "{after}");
}

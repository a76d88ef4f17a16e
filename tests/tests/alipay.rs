//! Alipay end to end: the real gateway, the Alipay mock and a SQLite file, over loopback.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use paymux_e2e::TestApp;
use paymux_mock_alipay::protocol::notification_sign_content;
use serde_json::{Value, json};

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_owned()
}

/// A trade notification as Alipay sends it, signed with `key` (sign and sign_type left out of the
/// signed string).
fn notification(
    key: &paymux_crypto::RsaPrivateKey,
    out_trade_no: &str,
    total_amount: &str,
    notify_id: &str,
) -> Vec<u8> {
    let mut f: BTreeMap<String, String> = [
        ("notify_time", "2026-11-24 10:00:00"),
        ("notify_type", "trade_status_sync"),
        ("notify_id", notify_id),
        ("app_id", "2021000000000001"),
        ("auth_app_id", "2021000000000001"),
        ("charset", "utf-8"),
        ("version", "1.0"),
        ("sign_type", "RSA2"),
        ("trade_no", "2026112422001400000000000001"),
        ("out_trade_no", out_trade_no),
        ("buyer_id", "2088102000000001"),
        ("seller_id", "2088000000000001"),
        ("trade_status", "TRADE_SUCCESS"),
        ("total_amount", total_amount),
        ("receipt_amount", total_amount),
        ("subject", "Test order"),
        ("gmt_create", "2026-11-24 09:59:00"),
        ("gmt_payment", "2026-11-24 09:59:30"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let sign = key.sign_base64(notification_sign_content(&f).as_bytes()).unwrap();
    f.insert("sign".into(), sign);
    form_urlencoded::Serializer::new(String::new()).extend_pairs(&f).finish().into_bytes()
}

#[tokio::test]
async fn qr_payment_is_paid_refunded_twice_and_an_overshoot_is_refused() {
    let app = TestApp::spawn().await;
    let (status, p) = app.create_payment("alipay", "qr", "order-42", 1000).await;
    assert_eq!(status, 201, "{p}");
    assert_eq!(p["status"], "pending");
    assert_eq!(p["action"]["type"], "qr_code");
    let no = p["channel_order_no"].as_str().unwrap().to_owned();
    assert_eq!(no.len(), 32);

    // The cashier page is what the payer's phone would open.
    let cashier = p["action"]["code_url"].as_str().unwrap();
    let page = app.http.get(cashier).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("10.00"), "the cashier shows the amount in yuan");

    assert_eq!(app.pay_at_mock("alipay", &no).await, 200);
    let paid = app.wait_payment(&id(&p), "succeeded").await;
    let trade_no = paid["channel_trade_no"].as_str().unwrap();
    assert_eq!(trade_no, app.mock_order("alipay", &no).await["trade_no"].as_str().unwrap());
    assert!(paid["paid_at"].is_string());

    let (s, r1) = app
        .post(
            &format!("/v1/payments/{}/refunds", id(&p)),
            json!({"amount": 300, "merchant_refund_no": "r-1"}),
        )
        .await;
    assert_eq!(s, 201, "{r1}");
    assert_eq!(r1["status"], "succeeded");
    let (s, r2) = app
        .post(
            &format!("/v1/payments/{}/refunds", id(&p)),
            json!({"amount": 500, "merchant_refund_no": "r-2"}),
        )
        .await;
    assert_eq!(s, 201, "{r2}");
    assert_eq!(r2["status"], "succeeded");

    let (s, err) = app
        .post(
            &format!("/v1/payments/{}/refunds", id(&p)),
            json!({"amount": 300, "merchant_refund_no": "r-3"}),
        )
        .await;
    assert_eq!(s, 400, "{err}");
    assert_eq!(err["error"]["code"], "refund_exceeds_payment");
    assert_eq!(err["error"]["param"], "amount");
    assert!(err["error"]["message"].as_str().unwrap().contains("200"), "says what is left: {err}");
    assert!(err["error"]["request_id"].as_str().unwrap().starts_with("req_"));

    let (_, after) = app.get(&format!("/v1/payments/{}", id(&p))).await;
    assert_eq!(after["amount_refunded"], 800);
    assert_eq!(after["status"], "succeeded");
    let mock = app.mock_order("alipay", &no).await;
    assert_eq!(mock["refunded_amount"], "8.00", "the channel agrees: {mock}");
    let (_, r1_again) = app.get(&format!("/v1/refunds/{}", id(&r1))).await;
    assert_eq!(r1_again["status"], "succeeded");

    // A second, unpaid payment is closed.
    let (_, p2) = app.create_payment("alipay", "qr", "order-43", 500).await;
    let (s, closed) = app.post(&format!("/v1/payments/{}/close", id(&p2)), json!({})).await;
    assert_eq!(s, 200, "{closed}");
    assert_eq!(closed["status"], "closed");

    let kinds: Vec<String> =
        app.events().await.iter().map(|e| e["type"].as_str().unwrap().to_owned()).collect();
    assert_eq!(
        kinds,
        ["payment.succeeded", "refund.succeeded", "refund.succeeded", "payment.closed"]
    );
}

#[tokio::test]
async fn page_wap_and_app_payments_hand_the_payer_a_signed_action() {
    let app = TestApp::spawn().await;
    let (s, page) = app.create_payment("alipay", "page", "o-page", 100).await;
    assert_eq!(s, 201, "{page}");
    assert_eq!(page["action"]["type"], "form");
    assert_eq!(page["action"]["method"], "POST");
    assert!(page["action"]["fields"]["biz_content"].is_string());
    // The payer's browser submits the form to Alipay (here the mock), which verifies it.
    let url = page["action"]["url"].as_str().unwrap();
    let res = app
        .http
        .post(url)
        .form(&[("biz_content", page["action"]["fields"]["biz_content"].as_str().unwrap())])
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    assert!(res.text().await.unwrap().contains("1.00"), "the browser lands on the cashier");
    let no = page["channel_order_no"].as_str().unwrap();
    assert_eq!(app.mock_order("alipay", no).await["exists_at_alipay"], true);
    // The cashier's Pay button is a plain form post, as a browser sends it.
    let res = app
        .http
        .post(format!("{}/_sandbox/cashier/{no}/pay", app.alipay_mock()))
        .header("content-type", "application/x-www-form-urlencoded")
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success() || res.status().is_redirection(), "{}", res.status());
    app.wait_payment(&id(&page), "succeeded").await;

    let (s, wap) = app.create_payment("alipay", "wap", "o-wap", 100).await;
    assert_eq!(s, 201, "{wap}");
    assert_eq!(wap["action"]["type"], "form");

    let (s, app_pay) = app.create_payment("alipay", "app", "o-app", 100).await;
    assert_eq!(s, 201, "{app_pay}");
    assert_eq!(app_pay["action"]["type"], "sdk");
    let order_string = app_pay["action"]["params"]["order_string"].as_str().unwrap();
    assert!(order_string.contains("method=alipay.trade.app.pay") && order_string.contains("sign="));
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let base = json!({"merchant_order_no": "o-1", "amount": 100, "currency": "CNY", "subject": "s", "channel": "alipay", "method": "qr"});
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };

    let (s, e) = app.call_as("", reqwest::Method::POST, "/v1/payments", Some(base.clone())).await;
    assert_eq!(s, 401, "{e}");
    assert_eq!(e["error"]["type"], "authentication_error");
    let (s, _) = app
        .call_as(
            "sk_test_wrongwrongwrongwrongwrongwrong12",
            reqwest::Method::POST,
            "/v1/payments",
            Some(base.clone()),
        )
        .await;
    assert_eq!(s, 401);

    for (field, value, param) in [
        ("currency", json!("USD"), "currency"),
        ("amount", json!(0), "amount"),
        ("amount", json!(-100), "amount"),
        ("amount", json!(1.5), "amount"),
        ("amount", json!("100"), "amount"),
        ("amount", json!(10_000_000_001_i64), "amount"),
        ("method", json!("card"), "method"),
        ("channel", json!("paypal"), "channel"),
        ("subject", json!(""), "subject"),
    ] {
        let (s, e) = app.post("/v1/payments", with(field, value.clone())).await;
        assert_eq!(s, 400, "{field}={value}: {e}");
        assert_eq!(e["error"]["type"], "invalid_request");
        assert_eq!(e["error"]["param"], param, "{field}={value}: {e}");
    }
    let mut missing = base.clone();
    missing.as_object_mut().unwrap().remove("amount");
    let (s, e) = app.post("/v1/payments", missing).await;
    assert_eq!((s, e["error"]["param"].as_str()), (400, Some("amount")));
    let (_, list) = app.get("/v1/payments").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 0, "nothing was written");

    let (s, p) = app.post("/v1/payments", base.clone()).await;
    assert_eq!(s, 201);
    let (s, e) = app.post("/v1/payments", base.clone()).await;
    assert_eq!(s, 409, "{e}");
    assert_eq!(e["error"]["code"], "duplicate_merchant_order_no");

    let (s, e) = app
        .post(
            &format!("/v1/payments/{}/refunds", id(&p)),
            json!({"amount": 10, "merchant_refund_no": "r"}),
        )
        .await;
    assert_eq!(s, 400, "{e}");
    assert_eq!(e["error"]["code"], "payment_not_refundable");

    let (s, e) = app.get("/v1/payments/pay_0193a7c2e4f87b1d9c3e5a6b7c8d9e0f").await;
    assert_eq!(s, 404, "{e}");
    let (s, _) = app.get("/v1/payments/not-an-id").await;
    assert_eq!(s, 404);

    let other = app.other_merchant_key().await;
    let (s, e) =
        app.call_as(&other, reqwest::Method::GET, &format!("/v1/payments/{}", id(&p)), None).await;
    assert_eq!(s, 404, "another merchant's payment is not found, not forbidden: {e}");
    let (s, _) = app
        .call_as(
            &other,
            reqwest::Method::POST,
            &format!("/v1/payments/{}/close", id(&p)),
            Some(json!({})),
        )
        .await;
    assert_eq!(s, 404);

    let (_, list) = app.get("/v1/payments").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert!(app.events().await.is_empty());
}

#[tokio::test]
async fn forged_mismatched_and_unknown_notifications_change_nothing() {
    let app = TestApp::spawn().await;
    let (_, p) = app.create_payment("alipay", "qr", "o-1", 1000).await;
    let no = p["channel_order_no"].as_str().unwrap();
    let form = "application/x-www-form-urlencoded";

    let stranger = paymux_crypto::RsaPrivateKey::generate().unwrap();
    let (s, body) =
        app.post_callback("alipay", &[], form, notification(&stranger, no, "10.00", "n1")).await;
    assert_eq!((s, body.as_str()), (200, "fail"), "a bad signature is refused");

    let alipay = app.alipay_channel_key();
    let (_, body) =
        app.post_callback("alipay", &[], form, notification(&alipay, no, "0.01", "n2")).await;
    assert_eq!(body, "fail", "a different amount is refused");

    let (_, body) = app
        .post_callback(
            "alipay",
            &[],
            form,
            notification(&alipay, "0000000000000000000000000000000F", "10.00", "n3"),
        )
        .await;
    assert_eq!(body, "fail", "an unknown order is refused");

    let mut tampered = notification(&alipay, no, "10.00", "n4");
    let text = String::from_utf8(tampered.clone()).unwrap().replace("Test+order", "Test+orders");
    tampered = text.into_bytes();
    let (_, body) = app.post_callback("alipay", &[], form, tampered).await;
    assert_eq!(body, "fail", "a changed field breaks the signature");

    let (_, after) = app.get(&format!("/v1/payments/{}", id(&p))).await;
    assert_eq!(after["status"], "pending");
    assert!(app.events().await.is_empty());
}

#[tokio::test]
async fn a_notification_delivered_twice_changes_state_once_and_is_acknowledged_twice() {
    let app = TestApp::spawn().await;
    let (_, p) = app.create_payment("alipay", "qr", "o-1", 1000).await;
    let no = p["channel_order_no"].as_str().unwrap();
    let body = notification(&app.alipay_channel_key(), no, "10.00", "n-dup");
    let form = "application/x-www-form-urlencoded";
    let first = app.post_callback("alipay", &[], form, body.clone()).await;
    let second = app.post_callback("alipay", &[], form, body).await;
    assert_eq!(first, (200, "success".to_owned()));
    assert_eq!(second, (200, "success".to_owned()));
    let (_, after) = app.get(&format!("/v1/payments/{}", id(&p))).await;
    assert_eq!(after["status"], "succeeded");
    assert_eq!(app.events().await.len(), 1, "one payment.succeeded, not two");
}

#[tokio::test]
async fn a_create_that_times_out_leaves_the_payment_pending_never_failed() {
    let app =
        TestApp::spawn_with(|o| o.channel_timeout = std::time::Duration::from_millis(500)).await;
    app.set_faults("alipay", json!({"latency_ms": 2000})).await;
    let (s, e) = app.create_payment("alipay", "qr", "o-slow", 1000).await;
    assert_eq!(s, 504, "{e}");
    assert_eq!(e["error"]["type"], "channel_timeout");
    let payment_id = e["error"]["object_id"].as_str().unwrap().to_owned();
    let (_, p) = app.get(&format!("/v1/payments/{payment_id}")).await;
    assert_eq!(p["status"], "pending");
    assert_eq!(p["merchant_order_no"], "o-slow");
    assert!(app.events().await.is_empty());

    // Once the channel answers again, a sync takes its truth; still not failed.
    app.clear_faults("alipay").await;
    let (s, synced) = app.post(&format!("/v1/payments/{payment_id}/sync"), json!({})).await;
    assert_eq!(s, 200, "{synced}");
    assert_eq!(synced["status"], "pending");
}

#[tokio::test]
async fn a_bad_signature_on_the_channels_answer_is_an_unknown_outcome() {
    let app = TestApp::spawn().await;
    app.set_faults("alipay", json!({"bad_signature": true})).await;
    let (s, e) = app.create_payment("alipay", "qr", "o-1", 1000).await;
    assert_eq!(s, 502, "{e}");
    assert_eq!(e["error"]["type"], "channel_unavailable");
    let (_, p) =
        app.get(&format!("/v1/payments/{}", e["error"]["object_id"].as_str().unwrap())).await;
    assert_eq!(p["status"], "pending");
}

const FORM: &str = "application/x-www-form-urlencoded";

/// A refund-triggered notification (a partial refund: TRADE_SUCCESS with the refund's fields).
fn refund_notification(
    key: &paymux_crypto::RsaPrivateKey,
    out_trade_no: &str,
    out_biz_no: &str,
    refund_fee: &str,
    notify_id: &str,
) -> Vec<u8> {
    let body = notification(key, out_trade_no, "10.00", notify_id);
    let mut f: BTreeMap<String, String> =
        form_urlencoded::parse(&body).into_owned().filter(|(k, _)| k != "sign").collect();
    f.insert("out_biz_no".into(), out_biz_no.into());
    f.insert("refund_fee".into(), refund_fee.into());
    f.insert("gmt_refund".into(), "2026-11-24 10:05:00".into());
    let sign = key.sign_base64(notification_sign_content(&f).as_bytes()).unwrap();
    f.insert("sign".into(), sign);
    form_urlencoded::Serializer::new(String::new()).extend_pairs(&f).finish().into_bytes()
}

/// A paid 10.00 payment and a refund of 3.00 whose answer was lost: pending at paymux, done at
/// the mock. The mock's own partial-refund notification is lost too (and every resend of it,
/// the fault staying on), so the notifications the test posts are the only ones paymux sees.
async fn refund_with_lost_answer(app: &TestApp, order: &str) -> (Value, Value) {
    let (_, p) = app.create_payment("alipay", "qr", order, 1000).await;
    app.pay_at_mock("alipay", p["channel_order_no"].as_str().unwrap()).await;
    app.wait_payment(&id(&p), "succeeded").await;
    app.set_faults(
        "alipay",
        json!({"timeout_after_commit": ["alipay.trade.refund"], "drop_notifications": true}),
    )
    .await;
    let (s, e) = app
        .post(
            &format!("/v1/payments/{}/refunds", id(&p)),
            json!({"amount": 300, "merchant_refund_no": format!("{order}-r")}),
        )
        .await;
    assert_eq!(s, 504, "{e}");
    app.set_faults("alipay", json!({"drop_notifications": true})).await;
    let rid = e["error"]["object_id"].as_str().unwrap();
    let (_, r) = app.get(&format!("/v1/refunds/{rid}")).await;
    (p, r)
}

#[tokio::test]
async fn a_refund_notification_whose_refunded_total_cannot_include_it_changes_nothing() {
    let app = TestApp::spawn().await;
    let (p, r) = refund_with_lost_answer(&app, "o-refund-total").await;
    let no = p["channel_order_no"].as_str().unwrap();
    let refund_no = r["channel_refund_no"].as_str().unwrap();
    let key = app.alipay_channel_key();
    // 9.00 refunded in all, when the only refund that can have moved money is 3.00.
    let body = refund_notification(&key, no, refund_no, "9.00", "n-total-bad");
    let (_, ack) = app.post_callback("alipay", &[], FORM, body).await;
    assert_eq!(ack, "fail");
    let (_, still) = app.get(&format!("/v1/refunds/{}", id(&r))).await;
    assert_eq!(still["status"], "pending");
    let (_, payment) = app.get(&format!("/v1/payments/{}", id(&p))).await;
    assert_eq!(payment["amount_refunded"], 0);
    let body = refund_notification(&key, no, refund_no, "3.00", "n-total-ok");
    let (_, ack) = app.post_callback("alipay", &[], FORM, body).await;
    assert_eq!(ack, "success");
    let (_, done) = app.get(&format!("/v1/refunds/{}", id(&r))).await;
    assert_eq!(done["status"], "succeeded");
}

#[tokio::test]
async fn a_refund_held_as_failed_that_succeeded_becomes_succeeded_with_an_anomaly_event() {
    let app = TestApp::spawn().await;
    let (p, r) = refund_with_lost_answer(&app, "o-refund-late").await;
    // What a guess used to leave behind: the refund failed and its amount released.
    let pool = app.db().await;
    let sql = "UPDATE refunds SET status = 'failed', next_check_at = NULL WHERE id = ?";
    pool.execute(sql, &[id(&r).as_str().into()]).await;
    let sql = "UPDATE payments SET amount_reserved = amount_reserved - 300 WHERE id = ?";
    pool.execute(sql, &[id(&p).as_str().into()]).await;
    pool.close().await;
    let body = refund_notification(
        &app.alipay_channel_key(),
        p["channel_order_no"].as_str().unwrap(),
        r["channel_refund_no"].as_str().unwrap(),
        "3.00",
        "n-late",
    );
    let (_, ack) = app.post_callback("alipay", &[], FORM, body).await;
    assert_eq!(ack, "success");
    let (_, done) = app.get(&format!("/v1/refunds/{}", id(&r))).await;
    assert_eq!(done["status"], "succeeded");
    let (_, payment) = app.get(&format!("/v1/payments/{}", id(&p))).await;
    assert_eq!(payment["amount_refunded"], 300);
    let kinds: Vec<Value> = app.events().await.iter().map(|e| e["type"].clone()).collect();
    assert_eq!(
        kinds[kinds.len() - 2..],
        [json!("refund.succeeded"), json!("refund.succeeded_after_failure")]
    );
    // Its amount is reserved again: only 7.00 is left to refund.
    let (s, e) = app
        .post(
            &format!("/v1/payments/{}/refunds", id(&p)),
            json!({"amount": 701, "merchant_refund_no": "o-refund-late-2"}),
        )
        .await;
    assert_eq!((s, e["error"]["code"].as_str()), (400, Some("refund_exceeds_payment")), "{e}");
}

/// Waits until the Alipay mock has logged, for its notification number `index` on `no`, every
/// send of it (two with the duplicate fault) and returns that log entry.
async fn delivered_notification(app: &TestApp, no: &str, index: usize, sends: usize) -> Value {
    let order = app
        .wait_mock_order("alipay", no, 10, |o| {
            o["notifications"][index]["attempts"].as_array().is_some_and(|a| a.len() >= sends)
        })
        .await;
    order["notifications"][index].clone()
}

/// A paid 10.00 precreate payment whose payment notification the gateway has acknowledged.
async fn paid_precreate(app: &TestApp, order: &str) -> (Value, String) {
    let (_, p) = app.create_payment("alipay", "qr", order, 1000).await;
    let no = p["channel_order_no"].as_str().unwrap().to_owned();
    assert_eq!(app.pay_at_mock("alipay", &no).await, 200);
    let paid = app.wait_payment(&id(&p), "succeeded").await;
    let first = delivered_notification(app, &no, 0, 1).await;
    assert_eq!(first["attempts"][0]["acknowledged"], true, "{first}");
    (paid, no)
}

#[tokio::test]
async fn a_partial_refund_notification_is_acknowledged_and_changes_nothing_even_twice() {
    let app = TestApp::spawn().await;
    let (paid, no) = paid_precreate(&app, "o-partial-notify").await;
    app.set_faults("alipay", json!({"duplicate_notifications": true})).await;
    let (s, r) = app
        .post(
            &format!("/v1/payments/{}/refunds", id(&paid)),
            json!({"amount": 300, "merchant_refund_no": "pr-1"}),
        )
        .await;
    assert_eq!(s, 201, "{r}");
    assert_eq!(r["status"], "succeeded");

    // Alipay's partial-refund notification: TRADE_SUCCESS again, naming the refund. Sent twice
    // (the duplicate fault), each copy answered `success`.
    let n = delivered_notification(&app, &no, 1, 2).await;
    assert_eq!(n["trade_status"], "TRADE_SUCCESS", "{n}");
    assert_eq!(n["out_biz_no"], r["channel_refund_no"], "{n}");
    for attempt in n["attempts"].as_array().unwrap() {
        assert_eq!(attempt["acknowledged"], true, "{n}");
        assert!(attempt["outcome"].as_str().unwrap().contains(r#"body "success""#), "{n}");
    }

    let (_, payment) = app.get(&format!("/v1/payments/{}", id(&paid))).await;
    assert_eq!(payment["status"], "succeeded");
    assert_eq!(payment["amount_refunded"], 300);
    assert_eq!(payment["paid_at"], paid["paid_at"]);
    assert_eq!(payment["channel_trade_no"], paid["channel_trade_no"]);
    let (_, refund) = app.get(&format!("/v1/refunds/{}", id(&r))).await;
    assert_eq!(refund, r, "the refund is as its answer left it");
    let kinds: Vec<String> =
        app.events().await.iter().map(|e| e["type"].as_str().unwrap().to_owned()).collect();
    assert_eq!(kinds, ["payment.succeeded", "refund.succeeded"], "no second success");
}

#[tokio::test]
async fn partial_refund_notifications_out_of_order_are_each_checked_against_their_refund() {
    let app = TestApp::spawn().await;
    let (paid, no) = paid_precreate(&app, "o-partial-reorder").await;
    app.set_faults("alipay", json!({"reorder_notifications": true})).await;
    let mut refunds = Vec::new();
    for (n, amount) in [("rr-1", 300), ("rr-2", 200)] {
        let (s, r) = app
            .post(
                &format!("/v1/payments/{}/refunds", id(&paid)),
                json!({"amount": amount, "merchant_refund_no": n}),
            )
            .await;
        assert_eq!(s, 201, "{r}");
        refunds.push(r);
    }
    // With the reorder fault the second refund's notification (refund_fee 5.00) goes out before
    // the first's (3.00); each names its own refund and is acknowledged.
    let first = delivered_notification(&app, &no, 1, 1).await;
    let second = delivered_notification(&app, &no, 2, 1).await;
    for (n, r) in [(&first, &refunds[0]), (&second, &refunds[1])] {
        assert_eq!(n["out_biz_no"], r["channel_refund_no"], "{n}");
        assert_eq!(n["attempts"][0]["acknowledged"], true, "{n}");
        let (_, refund) = app.get(&format!("/v1/refunds/{}", id(r))).await;
        assert_eq!(&refund, r);
    }
    let (_, payment) = app.get(&format!("/v1/payments/{}", id(&paid))).await;
    assert_eq!(
        (&payment["status"], &payment["amount_refunded"]),
        (&json!("succeeded"), &json!(500))
    );
    assert_eq!(app.events().await.len(), 3, "one payment.succeeded, two refund.succeeded");
}

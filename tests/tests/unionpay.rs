//! UnionPay end to end: the real gateway, the UnionPay mock (ACP 5.1.0) and a SQLite file, over
//! loopback; the payer's browser played by an HTTP client that posts forms as a browser does.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use paymux_crypto::{Certificate, RsaPrivateKey};
use paymux_e2e::TestApp;
use paymux_engine::SweeperConfig;
use paymux_mock_unionpay::keys::{self, CredentialPaths, UnionpayKeys};
use paymux_mock_unionpay::protocol::{Fields, pem_crlf, sign_rsa, verification_string};
use serde_json::{Value, json};

const FORM: &str = "application/x-www-form-urlencoded; charset=UTF-8";

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_owned()
}

fn order_no(v: &Value) -> String {
    v["channel_order_no"].as_str().unwrap().to_owned()
}

/// The value of the hidden input `name` on a page.
fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker).unwrap_or_else(|| panic!("no {name} on the page: {html}"))
        + marker.len();
    html[start..].split('"').next().unwrap().to_owned()
}

/// The payer's browser posts the merchant's `form` action; the mock answers 303 to its bank page,
/// which the client follows. Returns (the bank page's URL, its HTML).
async fn post_form_action(app: &TestApp, action: &Value) -> (String, String) {
    assert_eq!(action["type"], "form", "{action}");
    assert_eq!(action["method"], "POST");
    let fields: Vec<(String, String)> = action["fields"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    let res = app.http.post(action["url"].as_str().unwrap()).form(&fields).send().await.unwrap();
    assert_eq!(res.status(), 200, "the bank page answers after the 303");
    let url = res.url().to_string();
    assert!(url.contains("/_sandbox/cashier/"), "the browser landed on the bank page: {url}");
    (url, res.text().await.unwrap())
}

/// The bank page's Pay button, posted as the page posts it (its hidden fields and the card).
async fn press_pay(app: &TestApp, order_id: &str, page: &str) {
    let res = app
        .http
        .post(format!("{}/_sandbox/cashier/{order_id}/pay", app.unionpay_mock()))
        .form(&[
            ("merId", hidden(page, "merId")),
            ("txnTime", hidden(page, "txnTime")),
            ("accNo", "6216261000000000018".to_owned()),
        ])
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "Pay: {}", res.status());
}

/// What the merchant sees of a payment and its events; a refused notification changes neither.
async fn snapshot(app: &TestApp, payment_id: &str) -> (Value, Vec<Value>) {
    let (_, p) = app.get(&format!("/v1/payments/{payment_id}")).await;
    let p = json!({
        "status": p["status"],
        "amount": p["amount"],
        "amount_refunded": p["amount_refunded"],
        "channel_trade_no": p["channel_trade_no"],
        "paid_at": p["paid_at"],
    });
    (p, app.events().await)
}

/// A successful consume's back notification as UnionPay sends it, signed with `key` and carrying
/// `sign_pub_key_cert` (form-encoded).
fn back_notification(
    key: &RsaPrivateKey,
    sign_pub_key_cert: &str,
    order_id: &str,
    txn_time: &str,
    txn_amt: i64,
) -> Vec<u8> {
    let mut f = Fields::new();
    for (k, v) in [
        ("version", "5.1.0"),
        ("encoding", "UTF-8"),
        ("signMethod", "01"),
        ("accessType", "0"),
        ("merId", "777290058110048"),
        ("orderId", order_id),
        ("txnTime", txn_time),
        ("txnType", "01"),
        ("txnSubType", "07"),
        ("bizType", "000000"),
        ("txnAmt", &txn_amt.to_string()),
        ("currencyCode", "156"),
        ("queryId", "782611241000000000018"),
        ("respCode", "00"),
        ("respMsg", "success"),
        ("settleAmt", &txn_amt.to_string()),
        ("settleCurrencyCode", "156"),
        ("exchangeRate", "0"),
        ("traceNo", "000018"),
        ("traceTime", "1124100000"),
        ("settleDate", "1124"),
        ("signPubKeyCert", sign_pub_key_cert),
    ] {
        f.insert(k.to_owned(), v.to_owned());
    }
    let signature = sign_rsa(key, &verification_string(&f)).unwrap();
    f.insert("signature".into(), signature);
    form_urlencoded::Serializer::new(String::new()).extend_pairs(&f).finish().into_bytes()
}

fn credential_paths(app: &TestApp) -> CredentialPaths {
    let root = &app.sandbox.manifest.channels.unionpay.root_certificate;
    CredentialPaths::in_dir(root.parent().unwrap())
}

/// The sandbox's own "UnionPay" keys, read from the keys directory `paymux up` wrote.
fn sandbox_keys(app: &TestApp) -> UnionpayKeys {
    let p = credential_paths(app);
    let read = |path: &std::path::Path| std::fs::read_to_string(path).unwrap();
    UnionpayKeys::from_pem(
        &read(&p.root_certificate),
        &read(&p.intermediate_certificate),
        &read(&p.signing_certificate),
        &read(&p.signing_private_key),
    )
    .unwrap()
}

/// A QR payment created and paid at the mock with its notification dropped: the gateway still
/// holds it pending.
async fn paid_with_notification_dropped(app: &TestApp, order: &str, amount: i64) -> Value {
    let (s, p) = app.create_payment("unionpay", "qr", order, amount).await;
    assert_eq!(s, 201, "{p}");
    app.set_faults("unionpay", json!({"drop_notifications": true})).await;
    assert_eq!(app.pay_at_mock("unionpay", &order_no(&p)).await, 200);
    p
}

/// Waits until the mock has recorded at least `n` sends of `order_id`'s back notification with
/// `outcome`; returns the order as the mock holds it.
async fn wait_deliveries(app: &TestApp, order_id: &str, outcome: &str, n: usize) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let order = app.mock_order("unionpay", order_id).await;
        let count = order["deliveries"]
            .as_array()
            .map_or(0, |d| d.iter().filter(|d| d["outcome"] == outcome).count());
        if count >= n {
            return order;
        }
        assert!(tokio::time::Instant::now() < deadline, "never {n} × {outcome}: {order}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A PC web or mobile web payment: UnionPay needs the `frontUrl` the payer's browser returns to.
async fn create_web_payment(app: &TestApp, method: &str, order: &str, amount: i64) -> Value {
    let (s, p) = app
        .post(
            "/v1/payments",
            json!({
                "merchant_order_no": order,
                "amount": amount,
                "currency": "CNY",
                "subject": "Test order",
                "channel": "unionpay",
                "method": method,
                "return_url": "https://shop.example/return",
            }),
        )
        .await;
    assert_eq!(s, 201, "{p}");
    assert_eq!(p["status"], "pending");
    p
}

/// Asks for a refund and waits for the refund to succeed (UnionPay accepts it at once and tells
/// its result by back notification).
async fn refund(app: &TestApp, payment_id: &str, amount: i64, merchant_refund_no: &str) -> Value {
    let (s, r) = app
        .post(
            &format!("/v1/payments/{payment_id}/refunds"),
            json!({"amount": amount, "merchant_refund_no": merchant_refund_no}),
        )
        .await;
    assert_eq!(s, 201, "{r}");
    assert_ne!(r["status"], "failed", "{r}");
    app.wait_for(&format!("/v1/refunds/{}", id(&r)), 10, |r| r["status"] == "succeeded").await
}

fn events_of(events: &[Value], payment_id: &str, kind: &str) -> usize {
    events.iter().filter(|e| e["type"] == kind && e["data"]["object"]["id"] == payment_id).count()
}

#[tokio::test]
async fn pc_web_page_form_posted_by_the_browser_then_paid_on_the_bank_page_succeeds() {
    let app = TestApp::spawn().await;
    let p = create_web_payment(&app, "page", "up-page-1", 2590).await;
    let fields = &p["action"]["fields"];
    assert_eq!(fields["txnType"], "01");
    assert_eq!(fields["txnSubType"], "01");
    assert_eq!(fields["bizType"], "000201");
    assert_eq!(fields["txnAmt"], "2590");
    assert_eq!(fields["orderId"], p["channel_order_no"]);

    let (_, page) = post_form_action(&app, &p["action"]).await;
    assert!(page.contains("25.90"), "the bank page shows the amount in yuan: {page}");
    assert!(page.contains("paymux sandbox shop"), "and the merchant's name");
    press_pay(&app, &order_no(&p), &page).await;

    let paid = app.wait_payment(&id(&p), "succeeded").await;
    let mock = app.mock_order("unionpay", &order_no(&p)).await;
    assert_eq!(paid["channel_trade_no"], mock["query_id"], "{paid} {mock}");
    assert_eq!(mock["status"], "succeeded");
    assert!(paid["paid_at"].is_string());
    assert_eq!(events_of(&app.events().await, &id(&p), "payment.succeeded"), 1);
}

#[tokio::test]
async fn a_page_payment_without_a_return_url_is_refused_with_a_clear_error_and_its_request_id() {
    let app = TestApp::spawn().await;
    let (s, e) = app.create_payment("unionpay", "page", "up-no-return", 100).await;
    assert_eq!(s, 400, "{e}");
    assert_eq!(e["error"]["type"], "invalid_request");
    assert!(e["error"]["message"].as_str().unwrap().contains("return_url"), "{e}");
    assert!(e["error"]["request_id"].as_str().unwrap().starts_with("req_"), "{e}");
    assert!(app.mock_orders("unionpay").await.is_empty(), "nothing reached the channel");
    // Nothing can have been paid: the payment it left behind is failed, and says so once.
    let pid = e["error"]["object_id"].as_str().unwrap();
    let (_, p) = app.get(&format!("/v1/payments/{pid}")).await;
    assert_eq!(p["status"], "failed", "{p}");
    let kinds: Vec<Value> = app.events().await.iter().map(|e| e["type"].clone()).collect();
    assert_eq!(kinds, [json!("payment.failed")]);
}

#[tokio::test]
async fn wap_form_posted_by_the_browser_then_paid_on_the_bank_page_succeeds() {
    let app = TestApp::spawn().await;
    let p = create_web_payment(&app, "wap", "up-wap-1", 100).await;
    assert_eq!(p["action"]["fields"]["channelType"], "08", "mobile web is channelType 08");
    let (_, page) = post_form_action(&app, &p["action"]).await;
    assert!(page.contains("1.00"), "{page}");
    press_pay(&app, &order_no(&p), &page).await;
    app.wait_payment(&id(&p), "succeeded").await;
}

#[tokio::test]
async fn qr_code_scanned_and_paid_on_the_bank_page_succeeds() {
    let app = TestApp::spawn().await;
    let (s, p) = app.create_payment("unionpay", "qr", "up-qr-1", 1234).await;
    assert_eq!(s, 201, "{p}");
    assert_eq!(p["action"]["type"], "qr_code");
    // The payer's scan opens the code's URL, which lands on the bank page.
    let res = app.http.get(p["action"]["code_url"].as_str().unwrap()).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.url().path().starts_with("/_sandbox/cashier/"), "{}", res.url());
    let page = res.text().await.unwrap();
    assert!(page.contains("12.34"), "{page}");
    press_pay(&app, &order_no(&p), &page).await;
    let paid = app.wait_payment(&id(&p), "succeeded").await;
    assert_eq!(paid["amount"], 1234);
}

#[tokio::test]
async fn app_payment_hands_over_the_tn_and_succeeds_when_paid_in_the_app() {
    let app = TestApp::spawn().await;
    let (s, p) = app.create_payment("unionpay", "app", "up-app-1", 500).await;
    assert_eq!(s, 201, "{p}");
    assert_eq!(p["action"]["type"], "sdk");
    let tn = p["action"]["params"]["tn"].as_str().unwrap();
    let mock = app.mock_order("unionpay", &order_no(&p)).await;
    assert_eq!(mock["tn"], tn, "the tn is the mock's: {mock}");
    assert_eq!(app.pay_at_mock("unionpay", &order_no(&p)).await, 200);
    app.wait_payment(&id(&p), "succeeded").await;
}

#[tokio::test]
async fn a_query_answering_in_process_stays_pending_and_a_later_query_succeeds() {
    let app = TestApp::spawn().await;
    let p = paid_with_notification_dropped(&app, "up-05", 1000).await;
    wait_deliveries(&app, &order_no(&p), "dropped", 1).await;
    app.set_faults("unionpay", json!({"drop_notifications": true, "in_process_queries": 1})).await;

    // respCode 05 is "in process, ask again": the sync answers the payment as pending, as for the
    // other channels' "not yet".
    let (s, first) = app.post(&format!("/v1/payments/{}/sync", id(&p)), json!({})).await;
    assert_eq!((s, &first["status"]), (200, &json!("pending")), "{first}");
    let (_, after) = app.get(&format!("/v1/payments/{}", id(&p))).await;
    assert_eq!(after["status"], "pending", "unknown, never failed: {after}");
    assert!(app.events().await.is_empty());

    let (s, second) = app.post(&format!("/v1/payments/{}/sync", id(&p)), json!({})).await;
    assert_eq!(s, 200, "{second}");
    assert_eq!(second["status"], "succeeded");
    assert_eq!(
        second["channel_trade_no"],
        app.mock_order("unionpay", &order_no(&p)).await["query_id"]
    );
    assert_eq!(events_of(&app.events().await, &id(&p), "payment.succeeded"), 1);
}

#[tokio::test]
async fn a_partial_refund_and_a_second_are_made_and_an_over_refund_is_refused_changing_nothing() {
    let app = TestApp::spawn().await;
    let (_, p) = app.create_payment("unionpay", "qr", "up-refund", 1000).await;
    assert_eq!(app.pay_at_mock("unionpay", &order_no(&p)).await, 200);
    app.wait_payment(&id(&p), "succeeded").await;
    let refunds = format!("/v1/payments/{}/refunds", id(&p));

    refund(&app, &id(&p), 300, "r-1").await;
    refund(&app, &id(&p), 500, "r-2").await;

    let before = snapshot(&app, &id(&p)).await;
    // Each refund's notification is logged by the mock once the gateway has answered it, after
    // the refund's own answer: the channel's view is settled only when both are in its log.
    let mock_before = app
        .wait_mock_order("unionpay", &order_no(&p), 10, |o| {
            o["refunds"].as_array().is_some_and(|r| {
                r.len() == 2
                    && r.iter().all(|r| {
                        r["deliveries"]
                            .as_array()
                            .is_some_and(|d| d.iter().any(|d| d["outcome"] == "acknowledged"))
                    })
            })
        })
        .await;
    let (s, err) = app.post(&refunds, json!({"amount": 201, "merchant_refund_no": "r-3"})).await;
    assert_eq!(s, 400, "{err}");
    assert_eq!(err["error"]["code"], "refund_exceeds_payment");
    assert!(err["error"]["message"].as_str().unwrap().contains("200"), "says what is left: {err}");
    assert_eq!(snapshot(&app, &id(&p)).await, before, "nothing changed at the gateway");
    assert_eq!(before.0["amount_refunded"], 800);

    let mock = app.mock_order("unionpay", &order_no(&p)).await;
    assert_eq!(mock, mock_before, "nothing changed at the channel");
    assert_eq!(mock["refunded"], 800, "{mock}");
    assert_eq!(mock["cancelled"], false);
    let made: Vec<(Value, Value)> = mock["refunds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["txn_type"].clone(), r["amount"].clone()))
        .collect();
    assert_eq!(made, [(json!("04"), json!(300)), (json!("04"), json!(500))], "{mock}");
}

#[tokio::test]
async fn a_full_refund_on_the_day_of_payment_is_made_as_a_consume_cancel() {
    let app = TestApp::spawn().await;
    let (_, p) = app.create_payment("unionpay", "qr", "up-cancel", 1000).await;
    assert_eq!(app.pay_at_mock("unionpay", &order_no(&p)).await, 200);
    app.wait_payment(&id(&p), "succeeded").await;
    refund(&app, &id(&p), 1000, "cancel-1").await;
    let (_, after) = app.get(&format!("/v1/payments/{}", id(&p))).await;
    assert_eq!(after["amount_refunded"], 1000);

    let mock = app.mock_order("unionpay", &order_no(&p)).await;
    let refunds = mock["refunds"].as_array().unwrap();
    assert_eq!(refunds.len(), 1, "{mock}");
    assert_eq!(refunds[0]["amount"], 1000);
    // The adapter cancels only on the payment's Beijing day before 22:00 (docs/channels/
    // unionpay.md); a run that straddles that cut-off sees a refund, which is then right too.
    let paid_at = mock["txn_time"].as_str().unwrap();
    let refunded_at = refunds[0]["txn_time"].as_str().unwrap();
    if paid_at[..8] == refunded_at[..8] && &refunded_at[8..10] < "22" {
        assert_eq!(refunds[0]["txn_type"], "31", "a consume cancel, not a refund: {mock}");
        assert_eq!(mock["cancelled"], true, "{mock}");
    } else {
        assert_eq!(refunds[0]["txn_type"], "04", "after the cut-off, a refund: {mock}");
    }
}

#[tokio::test]
async fn forged_mismatched_and_unknown_back_notifications_change_nothing() {
    let app = TestApp::spawn().await;
    let (_, p) = app.create_payment("unionpay", "qr", "up-forged", 1000).await;
    let no = order_no(&p);
    let txn_time = app.mock_order("unionpay", &no).await["txn_time"].as_str().unwrap().to_owned();
    let sandbox = sandbox_keys(&app);

    // Signed by a chain whose root the gateway does not trust.
    let (stranger, _) = keys::generate("777290058110048").unwrap();
    let unknown_root = back_notification(
        stranger.signing_key(),
        stranger.sign_pub_key_cert(),
        &no,
        &txn_time,
        1000,
    );

    // Under the sandbox's own chain, but expired yesterday.
    let paths = credential_paths(&app);
    let intermediate_key =
        RsaPrivateKey::load(&std::fs::read_to_string(&paths.intermediate_private_key).unwrap())
            .unwrap();
    let now = time::OffsetDateTime::now_utc();
    let (expired_key, expired_pem) = keys::issue_signing_certificate(
        sandbox.intermediate_certificate_pem(),
        &intermediate_key,
        now - time::Duration::days(30),
        now - time::Duration::days(1),
    )
    .unwrap();
    let expired_cert = pem_crlf(Certificate::from_pem(&expired_pem).unwrap().der());
    let expired = back_notification(&expired_key, &expired_cert, &no, &txn_time, 1000);

    // The sandbox's valid certificate, but a signature by another key.
    let wrong_signature = back_notification(
        &RsaPrivateKey::generate().unwrap(),
        sandbox.sign_pub_key_cert(),
        &no,
        &txn_time,
        1000,
    );

    // Authentic, but not what we hold.
    let key = sandbox.signing_key();
    let cert = sandbox.sign_pub_key_cert();
    let other_amount = back_notification(key, cert, &no, &txn_time, 1);
    let unknown_order =
        back_notification(key, cert, "0000000000000000000000000000000F", &txn_time, 1000);

    let before = snapshot(&app, &id(&p)).await;
    assert_eq!(before.0["status"], "pending");
    for (what, body) in [
        ("a certificate chained to an unknown root", unknown_root),
        ("an expired certificate", expired),
        ("a wrong signature", wrong_signature),
        ("a txnAmt unlike the order's", other_amount),
        ("an unknown order", unknown_order),
    ] {
        let (status, reply) = app.post_callback("unionpay", &[], FORM, body).await;
        // UnionPay re-sends on anything but HTTP 200; the gateway answers 503 `fail`.
        assert_eq!((status, reply.as_str()), (503, "fail"), "{what}");
        assert_eq!(snapshot(&app, &id(&p)).await, before, "{what} changed something");
    }

    // The same notification, authentic and matching, is taken: the refusals above were theirs.
    let (status, reply) = app
        .post_callback("unionpay", &[], FORM, back_notification(key, cert, &no, &txn_time, 1000))
        .await;
    assert_eq!((status, reply.as_str()), (200, "ok"));
    let paid = app.wait_payment(&id(&p), "succeeded").await;
    assert_eq!(paid["amount"], 1000);
}

#[tokio::test]
async fn an_answer_that_fails_verification_is_an_unknown_outcome_settled_by_a_later_query() {
    let app = TestApp::spawn().await;
    app.set_faults("unionpay", json!({"bad_signature": true})).await;
    let (s, e) = app.create_payment("unionpay", "qr", "up-badsig", 1000).await;
    assert_eq!(s, 502, "{e}");
    assert_eq!(e["error"]["type"], "channel_unavailable");
    let pid = e["error"]["object_id"].as_str().unwrap().to_owned();
    let (_, p) = app.get(&format!("/v1/payments/{pid}")).await;
    assert_eq!(p["status"], "pending", "never failed: {p}");
    let no = order_no(&p);

    // The channel did take the order: the payer pays it; its notification is lost and the query's
    // answer fails verification too, so the payment stays pending.
    app.set_faults("unionpay", json!({"bad_signature": true, "drop_notifications": true})).await;
    assert_eq!(app.pay_at_mock("unionpay", &no).await, 200);
    let (s, synced) = app.post(&format!("/v1/payments/{pid}/sync"), json!({})).await;
    assert!(s == 200 || s == 502, "{s} {synced}");
    let (_, still) = app.get(&format!("/v1/payments/{pid}")).await;
    assert_eq!(still["status"], "pending", "an unverifiable answer is no outcome: {still}");
    assert!(app.events().await.is_empty());

    app.set_faults("unionpay", json!({"drop_notifications": true})).await;
    let (s, settled) = app.post(&format!("/v1/payments/{pid}/sync"), json!({})).await;
    assert_eq!(s, 200, "{settled}");
    assert_eq!(settled["status"], "succeeded");
    assert_eq!(events_of(&app.events().await, &pid, "payment.succeeded"), 1);
}

#[tokio::test]
async fn duplicate_and_reordered_back_notifications_settle_once() {
    let app = TestApp::spawn().await;
    for (order, faults) in [
        ("up-dup", json!({"duplicate_notifications": true})),
        ("up-reorder", json!({"duplicate_notifications": true, "reorder_notifications": true})),
    ] {
        app.set_faults("unionpay", faults.clone()).await;
        let (_, p) = app.create_payment("unionpay", "qr", order, 1000).await;
        assert_eq!(app.pay_at_mock("unionpay", &order_no(&p)).await, 200);
        // Both copies were delivered and acknowledged.
        wait_deliveries(&app, &order_no(&p), "acknowledged", 2).await;
        let (_, paid) = app.get(&format!("/v1/payments/{}", id(&p))).await;
        assert_eq!(paid["status"], "succeeded", "{faults}: {paid}");
        let events = app.events().await;
        assert_eq!(events_of(&events, &id(&p), "payment.succeeded"), 1, "{faults}: {events:?}");
        let changes = events.iter().filter(|e| e["data"]["object"]["id"] == id(&p)).count();
        assert_eq!(changes, 1, "one state change: {events:?}");
    }
}

#[tokio::test]
async fn a_dropped_back_notification_is_recovered_by_the_sweeper() {
    let app = TestApp::spawn_with(|o| {
        o.sweeper = SweeperConfig {
            interval: Duration::from_millis(100),
            first_check_after: Duration::from_millis(300),
            max_backoff: Duration::from_millis(600),
            lease: Duration::from_secs(5),
        }
    })
    .await;
    let p = paid_with_notification_dropped(&app, "up-dropped", 1000).await;
    let paid = app.wait_payment(&id(&p), "succeeded").await;
    let mock = wait_deliveries(&app, &order_no(&p), "dropped", 1).await;
    assert_eq!(paid["channel_trade_no"], mock["query_id"]);
    let acknowledged =
        mock["deliveries"].as_array().unwrap().iter().filter(|d| d["outcome"] == "acknowledged");
    assert_eq!(acknowledged.count(), 0, "no notification reached the gateway: {mock}");
    assert_eq!(events_of(&app.events().await, &id(&p), "payment.succeeded"), 1);
}

#[tokio::test]
async fn a_refund_whose_answer_is_lost_after_the_channel_made_it_is_settled_once_by_query() {
    let app = TestApp::spawn_with(|o| {
        o.sweeper = SweeperConfig {
            interval: Duration::from_millis(100),
            first_check_after: Duration::from_millis(300),
            max_backoff: Duration::from_millis(600),
            lease: Duration::from_secs(5),
        };
        o.channel_timeout = Duration::from_millis(800);
    })
    .await;
    let (_, p) = app.create_payment("unionpay", "qr", "up-lost-refund", 1000).await;
    assert_eq!(app.pay_at_mock("unionpay", &order_no(&p)).await, 200);
    app.wait_payment(&id(&p), "succeeded").await;

    // The channel makes the refund, then its answer never comes, and its notification is lost.
    app.set_faults(
        "unionpay",
        json!({"timeout_after_commit": ["refund"], "drop_notifications": true}),
    )
    .await;
    let (s, e) = app
        .post(
            &format!("/v1/payments/{}/refunds", id(&p)),
            json!({"amount": 400, "merchant_refund_no": "r-lost"}),
        )
        .await;
    assert_eq!(s, 504, "{e}");
    assert_eq!(e["error"]["type"], "channel_timeout", "reported as unknown, never failed");
    let rid = e["error"]["object_id"].as_str().unwrap().to_owned();
    // Pending until the sweeper's query, which may already have run: never failed.
    let (_, held) = app.get(&format!("/v1/refunds/{rid}")).await;
    assert_ne!(held["status"], "failed", "{held}");

    // The sweeper's query learns the refund succeeded; nothing is refunded twice.
    let done =
        app.wait_for(&format!("/v1/refunds/{rid}"), 15, |r| r["status"] == "succeeded").await;
    assert_eq!(done["amount"], 400);
    let mock = app.mock_order("unionpay", &order_no(&p)).await;
    assert_eq!(mock["refunds"].as_array().unwrap().len(), 1, "no second refund: {mock}");
    assert_eq!(mock["refunded"], 400, "{mock}");
    let (_, after) = app.get(&format!("/v1/payments/{}", id(&p))).await;
    assert_eq!(after["amount_refunded"], 400);
}

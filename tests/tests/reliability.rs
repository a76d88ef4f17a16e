//! Money is never lost or doubled: idempotency, concurrent refunds, timeouts after commit, lost
//! notifications and merchant webhooks, end to end on real sockets.

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use paymux_e2e::TestApp;
use paymux_engine::{SweeperConfig, WebhookConfig};
use serde_json::{Value, json};

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_owned()
}

/// A sweeper that wakes often and checks soon: seconds become milliseconds.
fn fast_sweeper() -> SweeperConfig {
    SweeperConfig {
        interval: Duration::from_millis(100),
        first_check_after: Duration::from_millis(300),
        max_backoff: Duration::from_millis(600),
        lease: Duration::from_secs(5),
    }
}

fn fast_webhooks(give_up_after: Duration) -> WebhookConfig {
    WebhookConfig {
        interval: Duration::from_millis(50),
        first_retry: Duration::from_millis(100),
        max_backoff: Duration::from_millis(400),
        give_up_after,
        timeout: Duration::from_secs(2),
        allow_private_urls: true,
    }
}

#[tokio::test]
async fn fifty_concurrent_creates_with_one_key_make_one_payment_and_one_channel_order() {
    let app = Arc::new(TestApp::spawn().await);
    let body = json!({"merchant_order_no": "o-idem", "amount": 1000, "currency": "CNY", "subject": "s", "channel": "alipay", "method": "qr"});
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let app = app.clone();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let res = app
                .http
                .post(format!("{}/v1/payments", app.gateway))
                .bearer_auth(&app.api_key)
                .header("Idempotency-Key", "key-1")
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = res.status().as_u16();
            (status, res.json::<Value>().await.unwrap())
        }));
    }
    let mut created = Vec::new();
    let mut first = None;
    for t in tasks {
        let (status, v) = t.await.unwrap();
        match status {
            201 => {
                created.push(id(&v));
                first.get_or_insert(v);
            }
            409 => assert_eq!(v["error"]["code"], "idempotency_key_in_flight", "{v}"),
            other => panic!("unexpected {other}: {v}"),
        }
    }
    assert!(!created.is_empty());
    assert!(created.iter().all(|c| *c == created[0]), "every 201 is the same payment");
    let (_, list) = app.get("/v1/payments").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert_eq!(app.mock_orders("alipay").await.len(), 1, "one channel order");

    // The same key later replays the stored answer; with another body it is refused.
    let (s, replay) = app.call_with_key("key-1", "/v1/payments", body.clone()).await;
    assert_eq!(s, 201);
    assert_eq!(Some(replay), first, "the replay is the first answer, whole");
    let mut other = body.clone();
    other["amount"] = json!(2000);
    let (s, e) = app.call_with_key("key-1", "/v1/payments", other).await;
    assert_eq!(s, 409, "{e}");
    assert_eq!(e["error"]["code"], "idempotency_key_reused");
}

#[tokio::test]
async fn fifty_concurrent_one_fen_refunds_of_a_twenty_fen_payment_refund_exactly_twenty() {
    let app = Arc::new(TestApp::spawn().await);
    let (_, p) = app.create_payment("alipay", "qr", "o-20", 20).await;
    app.pay_at_mock("alipay", p["channel_order_no"].as_str().unwrap()).await;
    app.wait_payment(&id(&p), "succeeded").await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let app = app.clone();
        let path = format!("/v1/payments/{}/refunds", id(&p));
        tasks.push(tokio::spawn(async move {
            app.post(&path, json!({"amount": 1, "merchant_refund_no": format!("r-{i}")})).await
        }));
    }
    let (mut ok, mut refused) = (0, 0);
    for t in tasks {
        let (status, v) = t.await.unwrap();
        match status {
            201 => {
                assert_eq!(v["status"], "succeeded", "{v}");
                ok += 1;
            }
            400 => {
                assert_eq!(v["error"]["code"], "refund_exceeds_payment", "{v}");
                refused += 1;
            }
            other => panic!("unexpected {other}: {v}"),
        }
    }
    assert_eq!((ok, refused), (20, 30));
    let (_, after) = app.get(&format!("/v1/payments/{}", id(&p))).await;
    assert_eq!(after["amount_refunded"], 20);
    let mock = app.mock_order("alipay", p["channel_order_no"].as_str().unwrap()).await;
    assert_eq!(mock["refunded_amount"], "0.20", "the channel agrees: {mock}");
}

#[tokio::test]
async fn a_create_whose_answer_is_lost_is_settled_by_the_sweeper_without_a_second_order() {
    let app = TestApp::spawn_with(|o| {
        o.sweeper = fast_sweeper();
        o.channel_timeout = Duration::from_millis(800);
    })
    .await;
    app.set_faults("alipay", json!({"timeout_after_commit": ["alipay.trade.precreate"]})).await;
    let (s, e) = app.create_payment("alipay", "qr", "o-lost", 1000).await;
    assert_eq!(s, 504, "{e}");
    let pid = e["error"]["object_id"].as_str().unwrap().to_owned();
    app.clear_faults("alipay").await;
    let (_, p) = app.get(&format!("/v1/payments/{pid}")).await;
    assert_eq!(p["status"], "pending");
    let no = p["channel_order_no"].as_str().unwrap();
    // The channel did make the order: the buyer pays it, and its notification is lost.
    app.set_faults("alipay", json!({"drop_notifications": true})).await;
    assert_eq!(app.pay_at_mock("alipay", no).await, 200);
    let paid = app.wait_payment(&pid, "succeeded").await;
    assert!(paid["channel_trade_no"].is_string());
    assert_eq!(app.mock_orders("alipay").await.len(), 1, "no second order");
}

#[tokio::test]
async fn a_refund_whose_answer_is_lost_is_settled_by_the_sweeper_without_a_second_refund() {
    let app = TestApp::spawn_with(|o| {
        o.sweeper = fast_sweeper();
        o.channel_timeout = Duration::from_millis(800);
    })
    .await;
    let (_, p) = app.create_payment("alipay", "qr", "o-r", 1000).await;
    let no = p["channel_order_no"].as_str().unwrap().to_owned();
    app.pay_at_mock("alipay", &no).await;
    app.wait_payment(&id(&p), "succeeded").await;
    app.set_faults("alipay", json!({"timeout_after_commit": ["alipay.trade.refund"]})).await;
    let (s, e) = app
        .post(
            &format!("/v1/payments/{}/refunds", id(&p)),
            json!({"amount": 400, "merchant_refund_no": "r-lost"}),
        )
        .await;
    assert_eq!(s, 504, "{e}");
    let rid = e["error"]["object_id"].as_str().unwrap().to_owned();
    assert_eq!(e["error"]["type"], "channel_timeout", "reported as unknown, never failed");
    app.clear_faults("alipay").await;
    let done =
        app.wait_for(&format!("/v1/refunds/{rid}"), 10, |r| r["status"] == "succeeded").await;
    assert_eq!(done["amount"], 400);
    let mock = app.mock_order("alipay", &no).await;
    assert_eq!(mock["refunded_amount"], "4.00");
    assert_eq!(mock["refunds"].as_array().unwrap().len(), 1, "no second refund: {mock}");
    let (_, after) = app.get(&format!("/v1/payments/{}", id(&p))).await;
    assert_eq!(after["amount_refunded"], 400);
}

#[tokio::test]
async fn dropped_notifications_are_recovered_by_the_sweeper() {
    let app = TestApp::spawn_with(|o| o.sweeper = fast_sweeper()).await;
    app.set_faults("wechat", json!({"drop_notifications": true})).await;
    let (_, p) = app.create_payment("wechat", "qr", "o-drop", 1000).await;
    app.pay_at_mock("wechat", p["channel_order_no"].as_str().unwrap()).await;
    let paid = app.wait_payment(&id(&p), "succeeded").await;
    assert!(paid["channel_trade_no"].is_string());
    let kinds: Vec<Value> = app.events().await.iter().map(|e| e["type"].clone()).collect();
    assert_eq!(kinds, [json!("payment.succeeded")]);
}

#[tokio::test]
async fn an_unpaid_payment_past_its_expiry_is_closed_at_the_channel() {
    let app = TestApp::spawn_with(|o| o.sweeper = fast_sweeper()).await;
    let (_, p) = app
        .post(
            "/v1/payments",
            json!({"merchant_order_no": "o-exp", "amount": 100, "currency": "CNY", "subject": "s",
                   "channel": "wechat", "method": "qr", "expires_in": 60}),
        )
        .await;
    assert_eq!(p["status"], "pending");
    // Make it expire now, as if a minute had passed.
    app.expire_now(&id(&p)).await;
    let closed = app.wait_payment(&id(&p), "closed").await;
    assert_eq!(closed["status"], "closed");
    let mock = app.mock_order("wechat", p["channel_order_no"].as_str().unwrap()).await;
    assert_eq!(mock["trade_state"], "CLOSED", "closed at the channel too: {mock}");
}

/// A merchant's webhook receiver whose answer can be switched, recording what it got.
#[derive(Clone, Default)]
struct Receiver {
    healthy: Arc<Mutex<bool>>,
    got: Arc<Mutex<Vec<(String, String)>>>,
}

/// What the receiver answers with: the gateway must never show it back.
const RECEIVER_ANSWER: &str = "answer-from-inside-the-merchants-network";

async fn receive(
    State(r): State<Receiver>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, &'static str) {
    let sig =
        headers.get("paymux-signature").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    r.got.lock().unwrap().push((sig, body));
    let status =
        if *r.healthy.lock().unwrap() { StatusCode::OK } else { StatusCode::INTERNAL_SERVER_ERROR };
    (status, RECEIVER_ANSWER)
}

async fn start_receiver() -> (Receiver, String) {
    let r = Receiver::default();
    let app = axum::Router::new().route("/hook", post(receive)).with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (r, url)
}

async fn wait_until(secs: u64, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn webhooks_survive_an_endpoint_outage_and_arrive_signed() {
    let app = TestApp::spawn_with(|o| o.webhooks = fast_webhooks(Duration::from_secs(60))).await;
    let (rx, url) = start_receiver().await;
    let (s, ep) = app.post("/v1/webhook_endpoints", json!({"url": url})).await;
    assert_eq!(s, 201, "{ep}");
    let secret = ep["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"));

    // The endpoint is down while three payments succeed.
    let mut paid = Vec::new();
    for i in 0..3 {
        let (_, p) = app.create_payment("alipay", "qr", &format!("o-{i}"), 100 + i).await;
        app.pay_at_mock("alipay", p["channel_order_no"].as_str().unwrap()).await;
        app.wait_payment(&id(&p), "succeeded").await;
        paid.push(id(&p));
    }
    wait_until(10, || rx.got.lock().unwrap().len() >= 6).await;
    *rx.healthy.lock().unwrap() = true;

    let events = app.events().await;
    assert_eq!(events.len(), 3);
    for e in &events {
        let eid = id(e);
        app.wait_for(&format!("/v1/events/{eid}"), 10, |v| {
            v["deliveries"][0]["status"] == "delivered"
        })
        .await;
        let (_, detail) = app.get(&format!("/v1/events/{eid}")).await;
        let attempts = detail["deliveries"][0]["attempts"].as_array().unwrap();
        assert!(attempts.len() >= 2, "failed first, then delivered: {detail}");
        assert_eq!(attempts.last().unwrap()["status_code"], 200);
    }
    // Every event arrived, with a valid signature, at least once.
    let got = rx.got.lock().unwrap().clone();
    for e in &events {
        let (sig, body) = got.iter().rev().find(|(_, b)| b.contains(&id(e))).unwrap();
        paymux_webhook::verify_webhook(&secret, sig, body.as_bytes(), Duration::from_secs(300))
            .unwrap();
        let v: Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["type"], "payment.succeeded");
        assert!(paid.contains(&id(&v["data"]["object"])));
        // One byte of body changed, or the signature too old, and it no longer verifies.
        let tampered = body.replacen("succeeded", "succeedex", 1);
        assert!(
            paymux_webhook::verify_webhook(
                &secret,
                sig,
                tampered.as_bytes(),
                Duration::from_secs(300)
            )
            .is_err()
        );
        let ts: i64 = sig.split(',').find_map(|p| p.strip_prefix("t=")).unwrap().parse().unwrap();
        assert!(
            paymux_webhook::verify_webhook_at(
                &secret,
                sig,
                body.as_bytes(),
                Duration::from_secs(300),
                ts + 301
            )
            .is_err()
        );
    }
}

#[tokio::test]
async fn a_webhook_refused_forever_ends_failed_and_can_be_redelivered_by_hand() {
    let app =
        TestApp::spawn_with(|o| o.webhooks = fast_webhooks(Duration::from_millis(1500))).await;
    let (rx, url) = start_receiver().await;
    let (_, ep) = app
        .post("/v1/webhook_endpoints", json!({"url": url, "events": ["payment.succeeded"]}))
        .await;
    let secret = ep["secret"].as_str().unwrap().to_owned();
    let (_, p) = app.create_payment("alipay", "qr", "o-f", 100).await;
    app.pay_at_mock("alipay", p["channel_order_no"].as_str().unwrap()).await;
    app.wait_payment(&id(&p), "succeeded").await;
    let eid = id(&app.events().await[0]);
    let failed = app
        .wait_for(&format!("/v1/events/{eid}"), 15, |v| v["deliveries"][0]["status"] == "failed")
        .await;
    assert!(failed["deliveries"][0]["attempts"].as_array().unwrap().len() >= 2, "{failed}");

    *rx.healthy.lock().unwrap() = true;
    let (s, r) = app.post(&format!("/v1/events/{eid}/redeliver"), json!({})).await;
    assert_eq!(s, 200, "{r}");
    app.wait_for(&format!("/v1/events/{eid}"), 10, |v| v["deliveries"][0]["status"] == "delivered")
        .await;
    let got = rx.got.lock().unwrap().clone();
    let (sig, body) = got.last().unwrap();
    paymux_webhook::verify_webhook(&secret, sig, body.as_bytes(), Duration::from_secs(300))
        .unwrap();

    // Rotation: the new secret verifies at once, and the old one keeps working for a while.
    let (_, rotated) =
        app.post(&format!("/v1/webhook_endpoints/{}/rotate_secret", id(&ep)), json!({})).await;
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, secret);
    let n = got.len();
    app.post(&format!("/v1/events/{eid}/redeliver"), json!({})).await;
    wait_until(10, || rx.got.lock().unwrap().len() > n).await;
    let (sig, body) = rx.got.lock().unwrap().last().unwrap().clone();
    paymux_webhook::verify_webhook(&new_secret, &sig, body.as_bytes(), Duration::from_secs(300))
        .unwrap();
    paymux_webhook::verify_webhook(&secret, &sig, body.as_bytes(), Duration::from_secs(300))
        .unwrap();
}

/// Pays one payment and returns the signature header and body of the webhook that reports it.
async fn next_webhook(app: &TestApp, rx: &Receiver, order: &str) -> (String, String) {
    let n = rx.got.lock().unwrap().len();
    let (_, p) = app.create_payment("alipay", "qr", order, 100).await;
    app.pay_at_mock("alipay", p["channel_order_no"].as_str().unwrap()).await;
    wait_until(10, || rx.got.lock().unwrap().len() > n).await;
    rx.got.lock().unwrap()[n].clone()
}

fn signed_by(secret: &str, sig: &str, body: &str) -> bool {
    paymux_webhook::verify_webhook(secret, sig, body.as_bytes(), Duration::from_secs(300)).is_ok()
}

#[tokio::test]
async fn rotating_twice_in_a_row_keeps_signing_with_every_secret_in_its_overlap() {
    let app = TestApp::spawn_with(|o| o.webhooks = fast_webhooks(Duration::from_secs(60))).await;
    let (rx, url) = start_receiver().await;
    *rx.healthy.lock().unwrap() = true;
    let (_, ep) = app.post("/v1/webhook_endpoints", json!({"url": url})).await;
    let rotate = format!("/v1/webhook_endpoints/{}/rotate_secret", id(&ep));
    let mut secrets = vec![ep["secret"].as_str().unwrap().to_owned()];
    for _ in 0..2 {
        let (s, rotated) = app.post(&rotate, json!({})).await;
        assert_eq!(s, 200, "{rotated}");
        secrets.push(rotated["secret"].as_str().unwrap().to_owned());
    }
    let (sig, body) = next_webhook(&app, &rx, "o-rot-twice").await;
    assert_eq!(sig.matches("v1=").count(), 3, "{sig}");
    for secret in &secrets {
        assert!(signed_by(secret, &sig, &body), "still signed with {secret}: {sig}");
    }
}

#[tokio::test]
async fn a_rotation_retried_after_its_answer_was_lost_hands_back_the_same_secret() {
    let app = TestApp::spawn_with(|o| o.webhooks = fast_webhooks(Duration::from_secs(60))).await;
    let (rx, url) = start_receiver().await;
    *rx.healthy.lock().unwrap() = true;
    let (_, ep) = app.post("/v1/webhook_endpoints", json!({"url": url})).await;
    let first = ep["secret"].as_str().unwrap().to_owned();
    let rotate = format!("/v1/webhook_endpoints/{}/rotate_secret", id(&ep));
    let (s, rotated) = app.call_with_key("rotate-1", &rotate, json!({})).await;
    assert_eq!(s, 200, "{rotated}");
    let made = rotated["secret"].as_str().unwrap().to_owned();

    // The answer was lost, and so was its stored replay (as when the first run died right after
    // its commit): the retry runs the handler again.
    let pool = app.db().await;
    pool.execute("DELETE FROM idempotency_keys WHERE key = 'rotate-1'", &[]).await;
    pool.close().await;
    let (s, again) = app.call_with_key("rotate-1", &rotate, json!({})).await;
    assert_eq!(s, 200, "{again}");
    assert_eq!(again["secret"], made.as_str(), "the same new secret, not another one");

    let (sig, body) = next_webhook(&app, &rx, "o-rot-retry").await;
    assert_eq!(sig.matches("v1=").count(), 2, "rotated once: {sig}");
    assert!(signed_by(&made, &sig, &body));
    assert!(signed_by(&first, &sig, &body), "the secret in use before still signs");
}

#[tokio::test]
async fn a_refund_that_never_reached_the_channel_is_sent_again_by_the_sweeper() {
    let app = TestApp::spawn_with(|o| o.sweeper = fast_sweeper()).await;
    let (_, p) = app.create_payment("alipay", "qr", "o-resend", 1000).await;
    let no = p["channel_order_no"].as_str().unwrap().to_owned();
    app.pay_at_mock("alipay", &no).await;
    app.wait_payment(&id(&p), "succeeded").await;
    // The channel answers "busy" (unsigned 20000) without doing anything.
    app.set_faults("alipay", json!({"error_rate": 1.0})).await;
    let (s, e) = app
        .post(
            &format!("/v1/payments/{}/refunds", id(&p)),
            json!({"amount": 100, "merchant_refund_no": "r-busy"}),
        )
        .await;
    assert_eq!(s, 502, "{e}");
    let rid = e["error"]["object_id"].as_str().unwrap().to_owned();
    assert!(app.mock_order("alipay", &no).await["refunds"].as_array().unwrap().is_empty());
    app.clear_faults("alipay").await;
    let done =
        app.wait_for(&format!("/v1/refunds/{rid}"), 10, |r| r["status"] == "succeeded").await;
    assert_eq!(done["amount"], 100);
    let mock = app.mock_order("alipay", &no).await;
    assert_eq!(
        mock["refunds"].as_array().unwrap().len(),
        1,
        "sent once more, refunded once: {mock}"
    );
}

#[tokio::test]
async fn an_idempotent_replay_of_an_error_carries_the_whole_error() {
    let app = TestApp::spawn().await;
    let body = json!({"merchant_order_no": "o-e", "amount": 0, "currency": "CNY", "subject": "s", "channel": "alipay", "method": "qr"});
    let (s1, e1) = app.call_with_key("k-err", "/v1/payments", body.clone()).await;
    let (s2, e2) = app.call_with_key("k-err", "/v1/payments", body).await;
    assert_eq!((s1, s2), (400, 400));
    assert_eq!(e1, e2, "the replay is the stored answer, body and all");
    assert_eq!(e2["error"]["param"], "amount");
}

#[tokio::test]
async fn a_payment_paid_after_its_close_is_found_and_never_hidden() {
    let app = TestApp::spawn_with(|o| o.sweeper = fast_sweeper()).await;
    let (_, p) = app.create_payment("alipay", "qr", "o-late", 1000).await;
    // Closed before the buyer scanned: Alipay has no trade yet, so the close is local.
    let (_, closed) = app.post(&format!("/v1/payments/{}/close", id(&p)), json!({})).await;
    assert_eq!(closed["status"], "closed");
    // The buyer pays the QR code anyway, and the notification is lost.
    app.set_faults("alipay", json!({"drop_notifications": true})).await;
    assert_eq!(app.pay_at_mock("alipay", p["channel_order_no"].as_str().unwrap()).await, 200);
    let paid = app.wait_payment(&id(&p), "succeeded").await;
    assert!(paid["channel_trade_no"].is_string());
    let kinds: Vec<Value> = app.events().await.iter().map(|e| e["type"].clone()).collect();
    assert_eq!(
        kinds,
        [json!("payment.closed"), json!("payment.succeeded"), json!("payment.paid_after_close")]
    );
}

#[tokio::test]
async fn a_merchant_cannot_touch_another_merchants_webhook_endpoint() {
    let app = TestApp::spawn_with(|o| o.webhooks = fast_webhooks(Duration::from_secs(60))).await;
    let (rx, url) = start_receiver().await;
    *rx.healthy.lock().unwrap() = true;
    let (_, ep) = app.post("/v1/webhook_endpoints", json!({"url": url})).await;
    let other = app.other_merchant_key().await;
    let (s, _) = app
        .call_as(
            &other,
            reqwest::Method::DELETE,
            &format!("/v1/webhook_endpoints/{}", id(&ep)),
            None,
        )
        .await;
    assert_eq!(s, 404);
    let (s, _) = app
        .call_as(
            &other,
            reqwest::Method::POST,
            &format!("/v1/webhook_endpoints/{}/rotate_secret", id(&ep)),
            Some(json!({})),
        )
        .await;
    assert_eq!(s, 404);
    let (_, p) = app.create_payment("alipay", "qr", "o-w", 100).await;
    app.pay_at_mock("alipay", p["channel_order_no"].as_str().unwrap()).await;
    app.wait_payment(&id(&p), "succeeded").await;
    wait_until(10, || !rx.got.lock().unwrap().is_empty()).await;
}

#[tokio::test]
async fn webhook_endpoints_inside_the_gateways_network_are_refused_outside_the_sandbox() {
    let app = TestApp::spawn_with(|o| o.webhooks.allow_private_urls = false).await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost/x",
        "http://169.254.169.254/latest",
        "http://[::1]/x",
        "http://10.0.0.8/x",
        "http://100.64.0.1/x",
        "http://198.18.0.1/x",
        "http://224.0.0.1/x",
        "http://[64:ff9b::7f00:1]/x",
        "http://[2002:7f00:1::1]/x",
        "http://[::ffff:7f00:1]/x",
        "http://[fd00::1]/x",
        "http://no-such-host.invalid/x",
    ] {
        let (s, e) = app.post("/v1/webhook_endpoints", json!({"url": url})).await;
        assert_eq!(s, 400, "{url}: {e}");
        assert_eq!(e["error"]["param"], "url");
    }
}

/// An endpoint whose name passed the check when it was registered and points at loopback now
/// (DNS rebinding): written to the store directly, as registration would have.
async fn endpoint_behind_a_rebound_name(app: &TestApp, url: &str) {
    let ep = paymux_store::WebhookEndpointRecord {
        id: "we_rebound".to_owned(),
        merchant_id: app.sandbox.merchant_id,
        url: url.to_owned(),
        secret: "whsec_rebound".to_owned(),
        events: None,
        livemode: false,
        created_at: time::OffsetDateTime::now_utc(),
    };
    app.sandbox.store.create_webhook_endpoint(&ep).await.unwrap();
}

#[tokio::test]
async fn webhook_to_a_name_resolving_to_loopback_is_refused_when_sent() {
    let app = TestApp::spawn_with(|o| {
        o.webhooks =
            WebhookConfig { allow_private_urls: false, ..fast_webhooks(Duration::from_secs(60)) }
    })
    .await;
    let (rx, url) = start_receiver().await;
    endpoint_behind_a_rebound_name(&app, &url.replace("127.0.0.1", "localhost")).await;
    let (_, p) = app.create_payment("alipay", "qr", "o-rebound", 100).await;
    app.pay_at_mock("alipay", p["channel_order_no"].as_str().unwrap()).await;
    app.wait_payment(&id(&p), "succeeded").await;
    let eid = id(&app.events().await[0]);
    let detail = app
        .wait_for(&format!("/v1/events/{eid}"), 10, |v| {
            v["deliveries"][0]["attempts"].as_array().is_some_and(|a| !a.is_empty())
        })
        .await;
    let attempt = &detail["deliveries"][0]["attempts"][0];
    assert!(attempt["status_code"].is_null(), "{detail}");
    let error = attempt["error"].as_str().unwrap();
    assert!(error.contains("not globally routable"), "{error}");
    assert!(rx.got.lock().unwrap().is_empty(), "nothing reached the loopback receiver");
}

#[tokio::test]
async fn webhook_to_a_name_resolving_to_loopback_is_delivered_in_the_sandbox() {
    let app = TestApp::spawn_with(|o| o.webhooks = fast_webhooks(Duration::from_secs(60))).await;
    let (rx, url) = start_receiver().await;
    *rx.healthy.lock().unwrap() = true;
    let local = url.replace("127.0.0.1", "localhost");
    let (s, ep) = app.post("/v1/webhook_endpoints", json!({"url": local})).await;
    assert_eq!(s, 201, "{ep}");
    let (_, p) = app.create_payment("alipay", "qr", "o-local", 100).await;
    app.pay_at_mock("alipay", p["channel_order_no"].as_str().unwrap()).await;
    app.wait_payment(&id(&p), "succeeded").await;
    let eid = id(&app.events().await[0]);
    app.wait_for(&format!("/v1/events/{eid}"), 10, |v| v["deliveries"][0]["status"] == "delivered")
        .await;
    assert_eq!(rx.got.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_delivery_attempt_shows_its_status_and_never_the_endpoints_answer() {
    let app = TestApp::spawn_with(|o| o.webhooks = fast_webhooks(Duration::from_secs(60))).await;
    let (rx, url) = start_receiver().await;
    *rx.healthy.lock().unwrap() = true;
    app.post("/v1/webhook_endpoints", json!({"url": url})).await;
    let (_, p) = app.create_payment("alipay", "qr", "o-answer", 100).await;
    app.pay_at_mock("alipay", p["channel_order_no"].as_str().unwrap()).await;
    app.wait_payment(&id(&p), "succeeded").await;
    let eid = id(&app.events().await[0]);
    let detail = app
        .wait_for(&format!("/v1/events/{eid}"), 10, |v| v["deliveries"][0]["status"] == "delivered")
        .await;
    let attempt = &detail["deliveries"][0]["attempts"][0];
    assert_eq!(attempt["status_code"], 200, "{detail}");
    assert!(!detail.to_string().contains(RECEIVER_ANSWER), "the answer is not shown: {detail}");
}

#[tokio::test]
async fn reordered_notifications_still_settle_each_object_once() {
    let app = TestApp::spawn().await;
    app.set_faults("wechat", json!({"reorder_notifications": true})).await;

    let (_, a) = app.create_payment("wechat", "qr", "o-reorder-a", 1000).await;
    let (_, b) = app.create_payment("wechat", "qr", "o-reorder-b", 500).await;
    // Paid back to back: A's TRANSACTION.SUCCESS is held until B's has gone out.
    assert_eq!(app.pay_at_mock("wechat", a["channel_order_no"].as_str().unwrap()).await, 200);
    assert_eq!(app.pay_at_mock("wechat", b["channel_order_no"].as_str().unwrap()).await, 200);
    app.wait_payment(&id(&a), "succeeded").await;
    app.wait_payment(&id(&b), "succeeded").await;

    // Two partial refunds of A: the first one's REFUND.SUCCESS is held until the second's. The
    // mock's refund delays keep the two completions in creation order with room to spare, and
    // both well inside the mock's one-second hold.
    let mut refunds = Vec::new();
    for (no, amount, delay) in [("r-reorder-1", 200, 100), ("r-reorder-2", 300, 400)] {
        app.sandbox.wechat.set_refund_delay(Duration::from_millis(delay));
        let (s, r) = app
            .post(
                &format!("/v1/payments/{}/refunds", id(&a)),
                json!({"amount": amount, "merchant_refund_no": no}),
            )
            .await;
        assert_eq!(s, 201, "{r}");
        assert_eq!(r["status"], "pending", "WeChat accepts a refund as PROCESSING");
        refunds.push(id(&r));
    }
    for rid in &refunds {
        app.wait_for(&format!("/v1/refunds/{rid}"), 10, |r| r["status"] == "succeeded").await;
    }

    let (_, after) = app.get(&format!("/v1/payments/{}", id(&a))).await;
    assert_eq!(after["amount_refunded"], 500, "{after}");
    assert_eq!(after["status"], "succeeded");
    let (_, other) = app.get(&format!("/v1/payments/{}", id(&b))).await;
    assert_eq!(other["amount_refunded"], 0, "{other}");
    let mock = app.mock_order("wechat", a["channel_order_no"].as_str().unwrap()).await;
    assert_eq!(mock["refunded"], 500, "the channel agrees: {mock}");

    // One event per object. The payments' notifications arrived reversed (each pay produces its
    // notification before it returns, so that order is certain); the refunds' order depends on
    // the mock's timing, so only that each settled exactly once is asserted. The sweeper's first
    // look is a minute away: the notifications alone settled all four.
    let seen: Vec<(String, String)> = app
        .events()
        .await
        .iter()
        .map(|e| (e["type"].as_str().unwrap().to_owned(), id(&e["data"]["object"])))
        .collect();
    let payments = [("payment.succeeded", id(&b)), ("payment.succeeded", id(&a))]
        .map(|(kind, object)| (kind.to_owned(), object));
    assert_eq!(seen[..2], payments, "(event type, object id), oldest first: {seen:?}");
    let mut refund_events: Vec<(String, String)> = seen[2..].to_vec();
    refund_events.sort();
    let mut expected: Vec<(String, String)> =
        refunds.iter().map(|r| ("refund.succeeded".to_owned(), r.clone())).collect();
    expected.sort();
    assert_eq!(refund_events, expected, "each refund settled exactly once: {seen:?}");
}

#[tokio::test]
async fn a_close_whose_answer_is_lost_stays_pending_until_the_channel_says_closed() {
    let app = TestApp::spawn_with(|o| {
        o.sweeper = fast_sweeper();
        o.channel_timeout = Duration::from_millis(800);
    })
    .await;
    let (_, p) = app.create_payment("wechat", "qr", "o-close-lost", 500).await;
    app.set_faults("wechat", json!({"timeout_after_commit": ["close"]})).await;
    let (s, e) = app.post(&format!("/v1/payments/{}/close", id(&p)), json!({})).await;
    assert_eq!(s, 504, "{e}");
    assert_eq!(e["error"]["object_id"], id(&p));
    app.clear_faults("wechat").await;
    // The channel did close it: the sweeper's query brings that truth home, never "failed".
    let closed = app.wait_payment(&id(&p), "closed").await;
    assert!(closed["failure"].is_null());
    let mock = app.mock_order("wechat", p["channel_order_no"].as_str().unwrap()).await;
    assert_eq!(mock["trade_state"], "CLOSED");
    let kinds: Vec<Value> = app.events().await.iter().map(|e| e["type"].clone()).collect();
    assert_eq!(kinds, [json!("payment.closed")]);
}

/// Polls the store until `sql` (one `?`, bound to `id`) gives a row whose first column is true.
async fn wait_db(app: &TestApp, secs: u64, sql: &'static str, id: &str) {
    let pool = app.db().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if pool.fetch_bool(sql, &[id.into()]).await == Some(true) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {sql} on {id}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pool.close().await;
}

fn kinds(events: &[Value]) -> Vec<String> {
    events.iter().map(|e| e["type"].as_str().unwrap_or_default().to_owned()).collect()
}

/// A WeChat payment of 100 fen, paid, with a refund of 30 that stays PROCESSING at the mock.
async fn wechat_refund_in_processing(app: &TestApp, order: &str) -> (Value, Value) {
    app.sandbox.wechat.set_refund_delay(Duration::from_secs(600));
    let (_, p) = app.create_payment("wechat", "qr", order, 100).await;
    app.pay_at_mock("wechat", p["channel_order_no"].as_str().unwrap()).await;
    app.wait_payment(&id(&p), "succeeded").await;
    let (s, r) = app
        .post(
            &format!("/v1/payments/{}/refunds", id(&p)),
            json!({"amount": 30, "merchant_refund_no": format!("{order}-r")}),
        )
        .await;
    assert_eq!((s, r["status"].as_str()), (201, Some("pending")), "{r}");
    (p, r)
}

#[tokio::test]
async fn declined_resend_leaves_refund_pending_and_stops_resending() {
    let app = TestApp::spawn_with(|o| o.sweeper = fast_sweeper()).await;
    let (p, r) = wechat_refund_in_processing(&app, "o-declined-resend").await;
    // The sweeper finds the refund still PROCESSING and sends it again; WeChat refuses the
    // re-sent number. That says nothing about the refund itself.
    app.set_faults("wechat", json!({"decline_refund_resends": true})).await;
    wait_db(
        &app,
        10,
        "SELECT resend_declined_code = 'INVALID_REQUEST' FROM refunds WHERE id = ?",
        &id(&r),
    )
    .await;
    // Looked at again since, queried only: still pending, never failed.
    let checks = "SELECT check_count >= 3 FROM refunds WHERE id = ?";
    wait_db(&app, 10, checks, &id(&r)).await;
    let (_, still) = app.get(&format!("/v1/refunds/{}", id(&r))).await;
    assert_eq!(still["status"], "pending", "{still}");
    assert!(!kinds(&app.events().await).contains(&"refund.failed".to_owned()));
    // Its amount stays reserved: refunding the same 30 again is not possible beyond the 100.
    let (s, e) = app
        .post(
            &format!("/v1/payments/{}/refunds", id(&p)),
            json!({"amount": 71, "merchant_refund_no": "o-declined-resend-again"}),
        )
        .await;
    assert_eq!((s, e["error"]["code"].as_str()), (400, Some("refund_exceeds_payment")), "{e}");
    let mock = app.mock_order("wechat", p["channel_order_no"].as_str().unwrap()).await;
    assert_eq!(mock["refunds"].as_array().unwrap().len(), 1, "{mock}");
}

#[tokio::test]
async fn abnormal_refund_asks_for_action_once_and_is_not_resent() {
    let app = TestApp::spawn_with(|o| o.sweeper = fast_sweeper()).await;
    let (_, r) = wechat_refund_in_processing(&app, "o-abnormal").await;
    // Any re-send would be refused and recorded: none may happen.
    app.set_faults("wechat", json!({"decline_refund_resends": true})).await;
    let url = format!(
        "{}/_sandbox/refunds/{}/abnormal",
        app.wechat_mock(),
        r["channel_refund_no"].as_str().unwrap()
    );
    assert_eq!(app.http.post(url).send().await.unwrap().status(), 200);
    // The notification and the sweeper's queries both say ABNORMAL, several times over.
    wait_db(&app, 10, "SELECT check_count >= 3 FROM refunds WHERE id = ?", &id(&r)).await;
    let events = kinds(&app.events().await);
    let asked = events.iter().filter(|k| *k == "refund.action_required").count();
    assert_eq!(asked, 1, "{events:?}");
    let (_, still) = app.get(&format!("/v1/refunds/{}", id(&r))).await;
    assert_eq!(still["status"], "pending", "{still}");
    wait_db(&app, 1, "SELECT resend_declined_code IS NULL FROM refunds WHERE id = ?", &id(&r))
        .await;
}

#[tokio::test]
async fn a_qr_code_paid_after_its_payment_was_closed_and_expired_is_still_found() {
    let app = TestApp::spawn_with(|o| o.sweeper = fast_sweeper()).await;
    let (_, p) = app
        .post(
            "/v1/payments",
            json!({"merchant_order_no": "o-qr-late", "amount": 100, "currency": "CNY",
                   "subject": "s", "channel": "alipay", "method": "qr", "expires_in": 60}),
        )
        .await;
    let (_, closed) = app.post(&format!("/v1/payments/{}/close", id(&p)), json!({})).await;
    assert_eq!(closed["status"], "closed");
    // Later, for paymux: its expiry is long past, beyond any margin after it. The code the
    // channel holds (given the payment's minute when it was created) is what decides whether
    // the payer can still pay, and it still lives: the watch must follow the code.
    let pool = app.db().await;
    let long_ago = time::OffsetDateTime::now_utc() - time::Duration::minutes(30);
    let shifted = pool
        .fetch_i64(
            "UPDATE payments SET expires_at = ? WHERE id = ? RETURNING check_count AS n",
            &[
                ((long_ago.unix_timestamp_nanos() / 1_000_000) as i64).into(),
                id(&p).as_str().into(),
            ],
        )
        .await
        .unwrap();
    // The sweeper looks at the closed payment once more, and decides whether to keep watching.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let looked = pool
            .fetch_bool(
                "SELECT check_count > ? OR next_check_at IS NULL FROM payments WHERE id = ?",
                &[shifted.into(), id(&p).as_str().into()],
            )
            .await
            .unwrap();
        if looked {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the sweeper never looked again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pool.close().await;
    // Only then does the payer scan and pay, and the notification is lost.
    app.set_faults("alipay", json!({"drop_notifications": true})).await;
    assert_eq!(app.pay_at_mock("alipay", p["channel_order_no"].as_str().unwrap()).await, 200);
    let paid = app.wait_payment(&id(&p), "succeeded").await;
    assert!(paid["channel_trade_no"].is_string());
    assert!(kinds(&app.events().await).contains(&"payment.paid_after_close".to_owned()));
}

#[tokio::test]
async fn a_close_refused_as_paid_says_paid_only_when_the_payment_is() {
    let app = TestApp::spawn().await;
    let (_, p) = app.create_payment("wechat", "qr", "o-close-orderpaid", 100).await;
    app.set_faults("wechat", json!({"close_answers_orderpaid": true})).await;
    let (s, e) = app.post(&format!("/v1/payments/{}/close", id(&p)), json!({})).await;
    assert_eq!(s, 502, "not paid, whatever the close said: {e}");
    assert_eq!(e["error"]["object_id"], id(&p));
    let (_, still) = app.get(&format!("/v1/payments/{}", id(&p))).await;
    assert_eq!(still["status"], "pending");
    app.clear_faults("wechat").await;
    app.pay_at_mock("wechat", p["channel_order_no"].as_str().unwrap()).await;
    let (s, e) = app.post(&format!("/v1/payments/{}/close", id(&p)), json!({})).await;
    assert_eq!((s, e["error"]["code"].as_str()), (409, Some("payment_succeeded")), "{e}");
}

#[tokio::test]
async fn an_error_in_the_payments_pass_does_not_skip_the_refunds_pass() {
    // No lease: an unreadable payment row is due again at every sweep.
    let app = TestApp::spawn_with(|o| {
        o.sweeper = SweeperConfig { lease: Duration::ZERO, ..fast_sweeper() }
    })
    .await;
    let (_, p) = app.create_payment("alipay", "qr", "o-pass", 1000).await;
    app.pay_at_mock("alipay", p["channel_order_no"].as_str().unwrap()).await;
    app.wait_payment(&id(&p), "succeeded").await;
    app.set_faults("alipay", json!({"error_rate": 1.0})).await;
    let (s, e) = app
        .post(
            &format!("/v1/payments/{}/refunds", id(&p)),
            json!({"amount": 100, "merchant_refund_no": "r-pass"}),
        )
        .await;
    assert_eq!(s, 502, "{e}");
    let rid = e["error"]["object_id"].as_str().unwrap().to_owned();
    // Another payment's row cannot be read back (a hand edit): claiming payments fails.
    let (_, bad) = app.create_payment("wechat", "qr", "o-unreadable", 100).await;
    let pool = app.db().await;
    let sql = "UPDATE payments SET method = 'carrier_pigeon', next_check_at = 0 WHERE id = ?";
    pool.execute(sql, &[id(&bad).as_str().into()]).await;
    pool.close().await;
    app.clear_faults("alipay").await;
    let done =
        app.wait_for(&format!("/v1/refunds/{rid}"), 10, |r| r["status"] == "succeeded").await;
    assert_eq!(done["amount"], 100);
}

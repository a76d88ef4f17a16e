//! Escrow and profit sharing end to end: receivers, a held payment, refund before settlement,
//! settle, the ledger and the balances, the events and their webhooks, and the bad inputs that
//! change nothing. On UnionPay (the paymux-side hold); WeChat and Alipay refuse a hold until
//! their adapters make the channel's split calls (docs/settlement.md).

#![allow(clippy::unwrap_used)]

use axum::http::StatusCode;
use axum::routing::post;
use std::time::Duration;

use paymux_e2e::TestApp;
use paymux_engine::SweeperConfig;
use serde_json::{Value, json};

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_owned()
}

async fn receiver(app: &TestApp, name: &str) -> String {
    let body = json!({"name": name, "accounts": {"unionpay": {"account": format!("{name}-acct")}}});
    let (s, r) = app.post("/v1/receivers", body).await;
    assert_eq!(s, 201, "{r}");
    assert_eq!(r["object"], "receiver");
    id(&r)
}

/// A held UnionPay QR payment of `amount` fen with `splits` (receiver, ratio_bps).
async fn held_payment(
    app: &TestApp,
    order: &str,
    amount: i64,
    splits: &[(&str, u32)],
) -> (u16, Value) {
    held_payment_with(app, order, amount, splits, None).await
}

async fn held_payment_with(
    app: &TestApp,
    order: &str,
    amount: i64,
    splits: &[(&str, u32)],
    auto_settle_after: Option<i64>,
) -> (u16, Value) {
    let splits: Vec<Value> =
        splits.iter().map(|(r, bps)| json!({"receiver": r, "ratio_bps": bps})).collect();
    let mut settlement = json!({"hold": true, "splits": splits});
    if let Some(after) = auto_settle_after {
        settlement["auto_settle_after"] = json!(after);
    }
    app.post(
        "/v1/payments",
        json!({"merchant_order_no": order, "amount": amount, "currency": "CNY", "subject": "s",
               "channel": "unionpay", "method": "qr", "settlement": settlement}),
    )
    .await
}

async fn paid_held(app: &TestApp, order: &str, amount: i64, splits: &[(&str, u32)]) -> String {
    let (s, p) = held_payment(app, order, amount, splits).await;
    assert_eq!(s, 201, "{p}");
    assert_eq!(p["settlement"]["status"], "held", "{p}");
    app.pay_at_mock("unionpay", p["channel_order_no"].as_str().unwrap()).await;
    app.wait_payment(&id(&p), "succeeded").await;
    id(&p)
}

async fn ledger_sum(app: &TestApp, payment: &str) -> (i64, Vec<Value>) {
    let (s, l) = app.get(&format!("/v1/ledger?payment_id={payment}")).await;
    assert_eq!(s, 200, "{l}");
    let entries = l["data"].as_array().unwrap().clone();
    (entries.iter().map(|e| e["amount"].as_i64().unwrap()).sum(), entries)
}

fn balance(balances: &Value, account: &str) -> (i64, i64) {
    let b = balances["data"].as_array().unwrap().iter().find(|b| b["account"] == account);
    b.map_or((0, 0), |b| (b["held"].as_i64().unwrap(), b["settled"].as_i64().unwrap()))
}

#[tokio::test]
async fn a_held_payment_settles_its_splits_once_and_the_ledger_balances() {
    let app = TestApp::spawn().await;
    // A webhook endpoint that takes everything.
    let hook = axum::Router::new().route("/hook", post(|| async { StatusCode::OK }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, hook).await });
    let (s, ep) = app.post("/v1/webhook_endpoints", json!({"url": url})).await;
    assert_eq!(s, 201, "{ep}");

    let platform = receiver(&app, "platform").await;
    let agent = receiver(&app, "agent").await;
    let (_, list) = app.get("/v1/receivers").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 2, "{list}");
    let (s, got) = app.get(&format!("/v1/receivers/{platform}")).await;
    assert_eq!((s, got["name"].as_str()), (200, Some("platform")));

    let pid = paid_held(&app, "hold-1", 10_000, &[(&platform, 1_500), (&agent, 333)]).await;
    let (_, p) = app.get(&format!("/v1/payments/{pid}")).await;
    assert_eq!(p["settlement"]["status"], "held", "{p}");
    let (_, b) = app.get("/v1/balances").await;
    assert_eq!(balance(&b, "merchant"), (10_000, 0), "held until settled: {b}");

    let (s, settled) = app.post(&format!("/v1/payments/{pid}/settle"), json!({})).await;
    assert_eq!(s, 200, "{settled}");
    let st = &settled["settlement"];
    assert_eq!(st["status"], "settled", "{settled}");
    assert_eq!(st["splits"][0]["amount"], 1_500);
    assert_eq!(st["splits"][1]["amount"], 333);
    assert_eq!(st["splits"][0]["status"], "succeeded");
    assert!(st["settled_at"].is_string());

    // Settling again changes nothing.
    let (s, again) = app.post(&format!("/v1/payments/{pid}/settle"), json!({})).await;
    assert_eq!(s, 200);
    assert_eq!(again["settlement"], settled["settlement"]);
    let (sum, entries) = ledger_sum(&app, &pid).await;
    assert_eq!(sum, 0, "the entries sum to zero: {entries:?}");
    assert_eq!(entries.len(), 8, "paid, held, 2 splits, release: {entries:?}");
    let (_, b) = app.get("/v1/balances").await;
    assert_eq!(balance(&b, &platform), (0, 1_500), "{b}");
    assert_eq!(balance(&b, &agent), (0, 333), "{b}");
    assert_eq!(balance(&b, "merchant"), (0, 10_000 - 1_500 - 333), "{b}");
    let (_, mine) = app.get(&format!("/v1/ledger?receiver={platform}")).await;
    assert_eq!(mine["data"].as_array().unwrap().len(), 1, "{mine}");

    // settlement.succeeded, once, delivered as a webhook.
    let events: Vec<Value> =
        app.events().await.into_iter().filter(|e| e["type"] == "settlement.succeeded").collect();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["data"]["object"]["settlement"]["status"], "settled");
    let eid = id(&events[0]);
    app.wait_for(&format!("/v1/events/{eid}"), 15, |v| v["deliveries"][0]["status"] == "delivered")
        .await;
}

#[tokio::test]
async fn a_refund_before_settlement_comes_out_of_the_held_funds() {
    let app = TestApp::spawn().await;
    let platform = receiver(&app, "platform").await;
    let agent = receiver(&app, "agent").await;
    let pid = paid_held(&app, "hold-r", 10_000, &[(&platform, 1_500), (&agent, 333)]).await;
    let (s, r) = app
        .post(
            &format!("/v1/payments/{pid}/refunds"),
            json!({"amount": 2_000, "merchant_refund_no": "r1"}),
        )
        .await;
    assert_eq!(s, 201, "{r}");
    let rid = id(&r);
    app.wait_for(&format!("/v1/refunds/{rid}"), 15, |v| v["status"] == "succeeded").await;
    let (_, b) = app.get("/v1/balances").await;
    assert_eq!(balance(&b, "merchant"), (8_000, 0), "the refund left the held funds: {b}");

    let (s, settled) = app.post(&format!("/v1/payments/{pid}/settle"), json!({})).await;
    assert_eq!(s, 200, "{settled}");
    assert_eq!(settled["settlement"]["splits"][0]["amount"], 1_200);
    assert_eq!(settled["settlement"]["splits"][1]["amount"], 266);
    let (_, b) = app.get("/v1/balances").await;
    assert_eq!(balance(&b, "merchant"), (0, 8_000 - 1_200 - 266), "{b}");
    assert_eq!(ledger_sum(&app, &pid).await.0, 0);
}

#[tokio::test]
async fn bad_settlement_input_is_refused_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let platform = receiver(&app, "platform").await;
    let agent = receiver(&app, "agent").await;
    let code = |v: &Value| v["error"]["code"].as_str().unwrap_or_default().to_owned();

    let (s, e) = held_payment(&app, "bad-1", 10_000, &[(&platform, 6_000), (&agent, 4_001)]).await;
    assert_eq!((s, code(&e)), (400, "ratio_over_cap".into()), "{e}");
    let unknown = "rcv_0192f0c0a0b07c3d8e9f0a1b2c3d4e5f";
    let (s, e) = held_payment(&app, "bad-2", 10_000, &[(unknown, 100)]).await;
    assert_eq!((s, code(&e)), (400, "unknown_receiver".into()), "{e}");
    let (s, e) = held_payment(&app, "bad-3", 10_000, &[(&platform, 0)]).await;
    assert_eq!(s, 400, "{e}");
    let (s, e) = held_payment(&app, "bad-4", 10_000, &[(&platform, 100), (&platform, 100)]).await;
    assert_eq!((s, code(&e)), (400, "invalid_splits".into()), "{e}");
    let (s, e) = app
        .post(
            "/v1/payments",
            json!({"merchant_order_no": "bad-5", "amount": 100, "currency": "CNY", "subject": "s",
                   "channel": "alipay", "method": "qr",
                   "settlement": {"hold": true, "splits": [{"receiver": platform, "ratio_bps": 100}]}}),
        )
        .await;
    assert_eq!((s, code(&e)), (400, "settlement_unsupported".into()), "{e}");
    let (s, e) = app
        .post("/v1/receivers", json!({"name": "w", "accounts": {"wechat": {"type": "MERCHANT_ID", "account": "1900000109", "relation_type": "PARTNER"}}}))
        .await;
    assert_eq!((s, code(&e)), (400, "settlement_unsupported".into()), "{e}");
    let (s, e) = app.post("/v1/receivers", json!({"name": "x", "accounts": {}})).await;
    assert_eq!(s, 400, "{e}");
    // None of those made a payment or a receiver.
    let (_, payments) = app.get("/v1/payments").await;
    assert!(payments["data"].as_array().unwrap().is_empty(), "{payments}");
    let (_, receivers) = app.get("/v1/receivers").await;
    assert_eq!(receivers["data"].as_array().unwrap().len(), 2);

    // Settling an unpaid held payment, or a payment that is not held.
    let (s, p) = held_payment(&app, "unpaid", 10_000, &[(&platform, 100)]).await;
    assert_eq!(s, 201, "{p}");
    let (s, e) = app.post(&format!("/v1/payments/{}/settle", id(&p)), json!({})).await;
    assert_eq!((s, code(&e)), (400, "payment_not_paid".into()), "{e}");
    let (s, plain) = app.create_payment("unionpay", "qr", "plain", 100).await;
    assert_eq!(s, 201);
    let (s, e) = app.post(&format!("/v1/payments/{}/settle", id(&plain)), json!({})).await;
    assert_eq!((s, code(&e)), (400, "payment_not_held".into()), "{e}");
    let (_, p) = app.get(&format!("/v1/payments/{}", id(&p))).await;
    assert_eq!(p["settlement"]["status"], "held", "unchanged: {p}");
    assert!(app.get("/v1/ledger").await.1["data"].as_array().unwrap().is_empty());

    // A deleted receiver is gone from the list and can no longer be named.
    let (s, _) = app.call(reqwest::Method::DELETE, &format!("/v1/receivers/{agent}"), None).await;
    assert_eq!(s, 200);
    let (s, _) = app.get(&format!("/v1/receivers/{agent}")).await;
    assert_eq!(s, 404);
    let (s, e) = held_payment(&app, "bad-6", 10_000, &[(&agent, 100)]).await;
    assert_eq!((s, code(&e)), (400, "unknown_receiver".into()), "{e}");
}

#[tokio::test]
async fn the_sweeper_settles_a_held_payment_once_its_auto_settle_after_has_passed() {
    let app = TestApp::spawn_with(|o| {
        o.sweeper = SweeperConfig {
            interval: Duration::from_millis(100),
            first_check_after: Duration::from_secs(60),
            max_backoff: Duration::from_secs(60),
            lease: Duration::from_secs(5),
        };
    })
    .await;
    let platform = receiver(&app, "platform").await;
    // Not paid when its time comes: the sweeper waits for the payment.
    let (s, p) = held_payment_with(&app, "auto-1", 10_000, &[(&platform, 1_000)], Some(1)).await;
    assert_eq!(s, 201, "{p}");
    assert!(p["settlement"]["auto_settle_at"].is_string(), "{p}");
    let pid = id(&p);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let (_, still) = app.get(&format!("/v1/payments/{pid}")).await;
    assert_eq!(still["settlement"]["status"], "held", "unpaid stays held: {still}");
    app.pay_at_mock("unionpay", p["channel_order_no"].as_str().unwrap()).await;
    let settled = app
        .wait_for(&format!("/v1/payments/{pid}"), 15, |v| v["settlement"]["status"] == "settled")
        .await;
    assert_eq!(settled["settlement"]["splits"][0]["amount"], 1_000);
    // Once: one event, one split in the ledger, however many sweeps ran since.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events: Vec<Value> =
        app.events().await.into_iter().filter(|e| e["type"] == "settlement.succeeded").collect();
    assert_eq!(events.len(), 1, "{events:?}");
    let (sum, entries) = ledger_sum(&app, &pid).await;
    assert_eq!(sum, 0);
    assert_eq!(entries.iter().filter(|e| e["kind"] == "split").count(), 2, "{entries:?}");
}

//! Escrow and profit sharing end to end, on each channel: receivers, a held payment, refund
//! before settlement, settle, the ledger and the balances, the events and their webhooks, a
//! receiver the channel refuses, auto-settle, and the bad inputs that change nothing.
//!
//! WeChat Pay and Alipay hold and split the money themselves (their mocks' receiver balances are
//! checked); UnionPay is the paymux-side hold (the ledger alone).

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

/// A sandbox whose sweeper looks every 100 ms, with the channels' profit-sharing waits shortened
/// (WeChat accepts a split 1 minute after the payment, Alipay about 30 s: here at once).
async fn app() -> TestApp {
    let app = TestApp::spawn_with(|o| {
        o.sweeper = SweeperConfig {
            interval: Duration::from_millis(100),
            first_check_after: Duration::from_secs(60),
            max_backoff: Duration::from_secs(60),
            lease: Duration::from_secs(5),
        };
    })
    .await;
    quick_channels(&app, json!({}), json!({})).await;
    app
}

/// Sets the mocks' profit-sharing rules to answer quickly, with the faults given (receiver
/// account -> reason) for WeChat and Alipay.
async fn quick_channels(app: &TestApp, wechat_refused: Value, alipay_refused: Value) {
    app.mock_post(
        "wechat",
        "/_sandbox/profitsharing/settings",
        json!({"min_wait_ms": 0, "processing_ms": 300, "split_requests_per_second": 0,
               "refused_receivers": wechat_refused}),
    )
    .await;
    app.mock_post(
        "alipay",
        "/_sandbox/royalty/settings",
        json!({"min_wait_ms": 0, "processing_ms": 300, "refused_receivers": alipay_refused}),
    )
    .await;
}

/// A receiver's account numbers: a WeChat merchant id and an Alipay user id of its own (not the
/// sandbox merchant's, 1900000001: a split to the paying merchant itself is a release).
fn accounts_of(n: u32) -> (String, String) {
    (format!("16000{n:05}"), format!("2088{n:012}"))
}

async fn receiver(app: &TestApp, name: &str, n: u32) -> String {
    let (wechat, alipay) = accounts_of(n);
    let body = json!({"name": name, "accounts": {
        "unionpay": {"account": format!("{name}-acct")},
        "wechat": {"type": "MERCHANT_ID", "account": wechat, "relation_type": "PARTNER"},
        "alipay": {"type": "userId", "account": alipay},
    }});
    let (s, r) = app.post("/v1/receivers", body).await;
    assert_eq!(s, 201, "{r}");
    assert_eq!(r["object"], "receiver");
    id(&r)
}

/// What the channel's mock paid the receiver `n`, in fen (UnionPay: nothing moves at the channel).
async fn paid_at_channel(app: &TestApp, channel: &str, n: u32) -> i64 {
    let (wechat, alipay) = accounts_of(n);
    let account = match channel {
        "wechat" => wechat,
        "alipay" => alipay,
        _ => return 0,
    };
    app.mock_get(channel, &format!("/_sandbox/receivers/{account}")).await["balance_fen"]
        .as_i64()
        .unwrap()
}

/// A held QR payment on `channel` of `amount` fen with `splits` (receiver, ratio_bps).
async fn held_payment(
    app: &TestApp,
    channel: &str,
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
               "channel": channel, "method": "qr", "settlement": settlement}),
    )
    .await
}

async fn paid_held(
    app: &TestApp,
    channel: &str,
    order: &str,
    amount: i64,
    splits: &[(&str, u32)],
) -> String {
    let (s, p) = held_payment(app, channel, order, amount, splits, None).await;
    assert_eq!(s, 201, "{p}");
    assert_eq!(p["settlement"]["status"], "held", "{p}");
    app.pay_at_mock(channel, p["channel_order_no"].as_str().unwrap()).await;
    app.wait_payment(&id(&p), "succeeded").await;
    id(&p)
}

/// Settles and waits until the settlement is `status` (a channel split is asynchronous).
async fn settle_until(app: &TestApp, pid: &str, status: &str) -> Value {
    let (s, answer) = app.post(&format!("/v1/payments/{pid}/settle"), json!({})).await;
    assert_eq!(s, 200, "{answer}");
    app.wait_for(&format!("/v1/payments/{pid}"), 20, |v| v["settlement"]["status"] == status).await
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

/// Pay 100.00 held with 15 % and 3.33 %, settle: the receivers get 15.00 and 3.33 (at the
/// channel where it splits), the merchant the rest, the ledger balances, the webhook is
/// delivered; settling again changes nothing and pays no one twice.
async fn settles_once(channel: &str) {
    let app = app().await;
    let hook = axum::Router::new().route("/hook", post(|| async { StatusCode::OK }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, hook).await });
    let (s, ep) = app.post("/v1/webhook_endpoints", json!({"url": url})).await;
    assert_eq!(s, 201, "{ep}");

    let platform = receiver(&app, "platform", 1).await;
    let agent = receiver(&app, "agent", 2).await;
    let (_, list) = app.get("/v1/receivers").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 2, "{list}");
    let (s, got) = app.get(&format!("/v1/receivers/{platform}")).await;
    assert_eq!((s, got["name"].as_str()), (200, Some("platform")));
    if channel != "unionpay" {
        // Registered with the channel account (WeChat add receiver, Alipay relation bind).
        assert_eq!(got["registrations"][channel].as_object().map(|m| m.len()), Some(1), "{got}");
    }

    let pid =
        paid_held(&app, channel, "hold-1", 10_000, &[(&platform, 1_500), (&agent, 333)]).await;
    let (_, b) = app.get("/v1/balances").await;
    assert_eq!(balance(&b, "merchant"), (10_000, 0), "held until settled: {b}");

    let settled = settle_until(&app, &pid, "settled").await;
    let st = &settled["settlement"];
    assert_eq!(st["splits"][0]["amount"], 1_500, "{settled}");
    assert_eq!(st["splits"][1]["amount"], 333);
    assert_eq!(st["splits"][0]["status"], "succeeded");
    assert_eq!(st["splits"][1]["status"], "succeeded");
    assert!(st["settled_at"].is_string());
    if channel != "unionpay" {
        assert_eq!(paid_at_channel(&app, channel, 1).await, 1_500);
        assert_eq!(paid_at_channel(&app, channel, 2).await, 333);
    }

    // Settling again changes nothing, here or at the channel.
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
    if channel != "unionpay" {
        assert_eq!(paid_at_channel(&app, channel, 1).await, 1_500, "paid once");
        assert_eq!(paid_at_channel(&app, channel, 2).await, 333, "paid once");
    }

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
async fn unionpay_settles_a_held_payment_once_in_the_ledger() {
    settles_once("unionpay").await;
}

#[tokio::test]
async fn alipay_splits_a_held_payment_once_at_the_channel() {
    settles_once("alipay").await;
}

#[tokio::test]
async fn wechat_splits_a_held_payment_once_at_the_channel() {
    settles_once("wechat").await;
}

/// A refund of 20.00 before settlement comes out of the held funds; the splits are computed on
/// 80.00.
async fn refund_then_settle(channel: &str) {
    let app = app().await;
    let platform = receiver(&app, "platform", 1).await;
    let agent = receiver(&app, "agent", 2).await;
    let pid =
        paid_held(&app, channel, "hold-r", 10_000, &[(&platform, 1_500), (&agent, 333)]).await;
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

    let settled = settle_until(&app, &pid, "settled").await;
    assert_eq!(settled["settlement"]["splits"][0]["amount"], 1_200, "{settled}");
    assert_eq!(settled["settlement"]["splits"][1]["amount"], 266);
    let (_, b) = app.get("/v1/balances").await;
    assert_eq!(balance(&b, "merchant"), (0, 8_000 - 1_200 - 266), "{b}");
    assert_eq!(ledger_sum(&app, &pid).await.0, 0);
    if channel != "unionpay" {
        assert_eq!(paid_at_channel(&app, channel, 1).await, 1_200);
        assert_eq!(paid_at_channel(&app, channel, 2).await, 266);
    }
}

#[tokio::test]
async fn unionpay_refund_before_settlement_comes_out_of_the_held_funds() {
    refund_then_settle("unionpay").await;
}

#[tokio::test]
async fn alipay_refund_before_settlement_comes_out_of_the_held_funds() {
    refund_then_settle("alipay").await;
}

#[tokio::test]
async fn wechat_refund_before_settlement_comes_out_of_the_held_funds() {
    refund_then_settle("wechat").await;
}

/// The channel refuses one receiver: the other split succeeds, `settlement.split_failed` is
/// emitted, and a second settle after the fault is cleared completes it without paying the first
/// receiver twice.
async fn one_receiver_refused(channel: &str, wechat_refused: Value, alipay_refused: Value) {
    let app = app().await;
    let platform = receiver(&app, "platform", 1).await;
    let agent = receiver(&app, "agent", 2).await;
    quick_channels(&app, wechat_refused, alipay_refused).await;
    let pid =
        paid_held(&app, channel, "hold-f", 10_000, &[(&platform, 1_500), (&agent, 333)]).await;

    let failed = settle_until(&app, &pid, "failed").await;
    let splits = &failed["settlement"]["splits"];
    assert_eq!(splits[0]["status"], "succeeded", "{failed}");
    assert_eq!(splits[1]["status"], "failed", "{failed}");
    assert!(splits[1]["failure"].is_string(), "{failed}");
    assert_eq!(paid_at_channel(&app, channel, 1).await, 1_500);
    assert_eq!(paid_at_channel(&app, channel, 2).await, 0);
    let kinds: Vec<String> = app
        .events()
        .await
        .into_iter()
        .filter_map(|e| {
            e["type"].as_str().filter(|t| t.starts_with("settlement.")).map(String::from)
        })
        .collect();
    assert_eq!(kinds, vec!["settlement.split_failed".to_owned()]);
    let (_, b) = app.get("/v1/balances").await;
    assert_eq!(balance(&b, &platform), (0, 1_500), "{b}");
    assert_eq!(balance(&b, "merchant"), (10_000 - 1_500, 0), "the rest stays held: {b}");
    // No refund while part of the held funds is paid out and the rest waits for a retry.
    let (s, e) = app
        .post(
            &format!("/v1/payments/{pid}/refunds"),
            json!({"amount": 100, "merchant_refund_no": "rf"}),
        )
        .await;
    assert_eq!((s, e["error"]["code"].as_str()), (400, Some("settlement_in_progress")), "{e}");

    quick_channels(&app, json!({}), json!({})).await;
    let settled = settle_until(&app, &pid, "settled").await;
    assert_eq!(settled["settlement"]["splits"][1]["status"], "succeeded", "{settled}");
    assert_eq!(paid_at_channel(&app, channel, 1).await, 1_500, "not paid twice");
    assert_eq!(paid_at_channel(&app, channel, 2).await, 333);
    let (sum, entries) = ledger_sum(&app, &pid).await;
    assert_eq!(sum, 0, "{entries:?}");
    assert_eq!(entries.iter().filter(|e| e["kind"] == "split").count(), 4, "{entries:?}");
    let (_, b) = app.get("/v1/balances").await;
    assert_eq!(balance(&b, "merchant"), (0, 10_000 - 1_500 - 333), "{b}");
}

#[tokio::test]
async fn alipay_one_refused_receiver_fails_its_split_only_and_a_second_settle_completes_it() {
    let (_, agent) = accounts_of(2);
    one_receiver_refused(
        "alipay",
        json!({}),
        json!({agent: "TXN_RESULT_ACCOUNT_STATUS_NOT_VALID"}),
    )
    .await;
}

#[tokio::test]
async fn wechat_one_refused_receiver_fails_its_split_only_and_a_second_settle_completes_it() {
    let (agent, _) = accounts_of(2);
    one_receiver_refused("wechat", json!({agent: "ACCOUNT_ABNORMAL"}), json!({})).await;
}

/// `auto_settle_after` elapsed: the sweeper settles it once (waiting while it is unpaid).
async fn auto_settles(channel: &str) {
    let app = app().await;
    let platform = receiver(&app, "platform", 1).await;
    let (s, p) =
        held_payment(&app, channel, "auto-1", 10_000, &[(&platform, 1_000)], Some(1)).await;
    assert_eq!(s, 201, "{p}");
    assert!(p["settlement"]["auto_settle_at"].is_string(), "{p}");
    let pid = id(&p);
    // Not paid when its time comes: the sweeper waits for the payment.
    app.wait_for(&format!("/v1/payments/{pid}"), 5, |v| {
        v["settlement"]["auto_settle_at"].as_str().is_some_and(|at| {
            time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
                .is_ok_and(|at| at < time::OffsetDateTime::now_utc())
        })
    })
    .await;
    let (_, still) = app.get(&format!("/v1/payments/{pid}")).await;
    assert_eq!(still["settlement"]["status"], "held", "unpaid stays held: {still}");
    app.pay_at_mock(channel, p["channel_order_no"].as_str().unwrap()).await;
    let settled = app
        .wait_for(&format!("/v1/payments/{pid}"), 20, |v| v["settlement"]["status"] == "settled")
        .await;
    assert_eq!(settled["settlement"]["splits"][0]["amount"], 1_000);
    // Once: one event, one split in the ledger, however many sweeps ran since.
    let events: Vec<Value> =
        app.events().await.into_iter().filter(|e| e["type"] == "settlement.succeeded").collect();
    assert_eq!(events.len(), 1, "{events:?}");
    let (sum, entries) = ledger_sum(&app, &pid).await;
    assert_eq!(sum, 0);
    assert_eq!(entries.iter().filter(|e| e["kind"] == "split").count(), 2, "{entries:?}");
    if channel != "unionpay" {
        assert_eq!(paid_at_channel(&app, channel, 1).await, 1_000);
    }
}

#[tokio::test]
async fn unionpay_the_sweeper_settles_once_after_auto_settle_after() {
    auto_settles("unionpay").await;
}

#[tokio::test]
async fn alipay_the_sweeper_settles_once_after_auto_settle_after() {
    auto_settles("alipay").await;
}

#[tokio::test]
async fn wechat_the_sweeper_settles_once_after_auto_settle_after() {
    auto_settles("wechat").await;
}

#[tokio::test]
async fn bad_settlement_input_is_refused_and_changes_nothing() {
    let app = app().await;
    let platform = receiver(&app, "platform", 1).await;
    let agent = receiver(&app, "agent", 2).await;
    let code = |v: &Value| v["error"]["code"].as_str().unwrap_or_default().to_owned();
    let held = |channel: &'static str, order: &'static str, splits: Vec<(String, u32)>| {
        let app = &app;
        async move {
            let splits: Vec<(&str, u32)> = splits.iter().map(|(r, b)| (r.as_str(), *b)).collect();
            held_payment(app, channel, order, 10_000, &splits, None).await
        }
    };

    // Above the cap: 100 % on UnionPay (paymux's ledger), 30 % on WeChat and Alipay.
    let (s, e) =
        held("unionpay", "bad-1", vec![(platform.clone(), 6_000), (agent.clone(), 4_001)]).await;
    assert_eq!((s, code(&e)), (400, "ratio_over_cap".into()), "{e}");
    let (s, e) =
        held("alipay", "bad-1a", vec![(platform.clone(), 2_000), (agent.clone(), 1_001)]).await;
    assert_eq!((s, code(&e)), (400, "ratio_over_cap".into()), "{e}");
    let (s, e) = held("wechat", "bad-1w", vec![(platform.clone(), 3_001)]).await;
    assert_eq!((s, code(&e)), (400, "ratio_over_cap".into()), "{e}");
    let unknown = "rcv_0192f0c0a0b07c3d8e9f0a1b2c3d4e5f".to_owned();
    let (s, e) = held("unionpay", "bad-2", vec![(unknown, 100)]).await;
    assert_eq!((s, code(&e)), (400, "unknown_receiver".into()), "{e}");
    let (s, e) = held("unionpay", "bad-3", vec![(platform.clone(), 0)]).await;
    assert_eq!(s, 400, "{e}");
    let (s, e) =
        held("unionpay", "bad-4", vec![(platform.clone(), 100), (platform.clone(), 100)]).await;
    assert_eq!((s, code(&e)), (400, "invalid_splits".into()), "{e}");
    // A receiver without an account on the payment's channel.
    let body = json!({"name": "only-unionpay", "accounts": {"unionpay": {"account": "u-1"}}});
    let (s, only) = app.post("/v1/receivers", body).await;
    assert_eq!(s, 201, "{only}");
    let (s, e) = held("alipay", "bad-5", vec![(id(&only), 100)]).await;
    assert_eq!((s, code(&e)), (400, "receiver_without_account".into()), "{e}");
    let (s, e) = app.post("/v1/receivers", json!({"name": "x", "accounts": {}})).await;
    assert_eq!(s, 400, "{e}");
    // None of those made a payment; only the one good receiver was added.
    let (_, payments) = app.get("/v1/payments").await;
    assert!(payments["data"].as_array().unwrap().is_empty(), "{payments}");
    let (_, receivers) = app.get("/v1/receivers").await;
    assert_eq!(receivers["data"].as_array().unwrap().len(), 3);

    // Settling an unpaid held payment, or a payment that is not held.
    let (s, p) = held("alipay", "unpaid", vec![(platform.clone(), 100)]).await;
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
    let (s, e) = held("unionpay", "bad-6", vec![(agent.clone(), 100)]).await;
    assert_eq!((s, code(&e)), (400, "unknown_receiver".into()), "{e}");
}

//! Barcode payments end to end (the merchant scans the payer's code), on each channel: the real
//! gateway, the channel's mock and a real store, with the channels' poll-then-cancel schedules
//! compressed ten times.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use paymux_e2e::TestApp;
use serde_json::{Value, json};

/// The codes each mock documents (docs/sandbox.md), per channel.
struct Codes {
    channel: &'static str,
    /// Paid at once.
    paid: &'static str,
    /// The payer confirms on the phone; paid only through the control API.
    waits: &'static str,
    /// A definite refusal.
    declined: &'static str,
    /// Codes whose format the channel does not take.
    malformed: &'static [&'static str],
    /// Whether the pay call's answer already says paid (UnionPay's only accepts).
    paid_at_once: bool,
    /// The channel's method for giving up, whose answer the fault holds back.
    cancel_method: &'static str,
    /// The pay call, as the mock's `timeout_after_commit` fault names it.
    pay_method: &'static str,
}

const ALIPAY: Codes = Codes {
    channel: "alipay",
    paid: "286012345678901234",
    waits: "250012345678901234",
    declined: "250034567890123456",
    malformed: &["134567890123456789", "12", "abcdefghijklmnopqr"],
    paid_at_once: true,
    cancel_method: "alipay.trade.cancel",
    pay_method: "alipay.trade.pay",
};

const WECHAT: Codes = Codes {
    channel: "wechat",
    paid: "134567890123456789",
    waits: "100012345678901234",
    declined: "100034567890123456",
    malformed: &["286012345678901234", "12", "abcdefghijklmnopqr"],
    paid_at_once: true,
    cancel_method: "reverse",
    pay_method: "codepay",
};

const UNIONPAY: Codes = Codes {
    channel: "unionpay",
    paid: "6225880000000000001",
    waits: "0000112345678901234",
    declined: "0000312345678906789",
    malformed: &["123456789012345678901", "62258800000000x0001", "abcdefghijklmnopqr"],
    paid_at_once: false,
    cancel_method: "reversal",
    pay_method: "barcode",
};

/// Every line any part of the process logs, for the check that the payer's code never appears.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "debug,sqlx=info,hyper=info,hyper_util=info,h2=info,reqwest=info,rustls=info",
            ))
            .with_writer(move || LogSink(sink.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        buffer
    })
    .clone()
}

struct LogSink(Arc<Mutex<Vec<u8>>>);

impl Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn spawn() -> TestApp {
    captured_logs();
    TestApp::spawn_with(|o| {
        o.sweeper.interval = Duration::from_millis(100);
        o.barcode.time_compression = 10;
    })
    .await
}

/// The channels' real schedules: the loop gives up only after half a minute.
async fn spawn_slow() -> TestApp {
    captured_logs();
    TestApp::spawn_with(|o| o.sweeper.interval = Duration::from_millis(100)).await
}

async fn pay_with_code(app: &TestApp, channel: &str, order: &str, code: &str) -> (u16, Value) {
    app.post(
        "/v1/payments",
        json!({
            "merchant_order_no": order,
            "amount": 1234,
            "currency": "CNY",
            "subject": "Barcode order",
            "channel": channel,
            "method": "barcode",
            "payer": {"auth_code": code},
            "client_ip": "203.0.113.9",
        }),
    )
    .await
}

fn text(v: &Value, field: &str) -> String {
    v[field].as_str().unwrap_or_else(|| panic!("no {field} in {v}")).to_owned()
}

/// The mock's barcode record of a trade (`GET /_sandbox/barcode/{no}`).
async fn mock_barcode(app: &TestApp, channel: &str, no: &str) -> Value {
    let url = format!("{}/_sandbox/barcode/{no}", app.mock_url(channel));
    app.http.get(url).send().await.unwrap().json().await.unwrap()
}

async fn wait_mock_barcode(
    app: &TestApp,
    c: &Codes,
    no: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let v = mock_barcode(app, c.channel, no).await;
        if done(&v) {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out on the mock's {no}: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_status(app: &TestApp, id: &str, status: &str) -> Value {
    app.wait_for(&format!("/v1/payments/{id}"), 20, |p| p["status"] == status).await
}

async fn immediate_success(c: &Codes) {
    let app = spawn().await;
    let (status, p) = pay_with_code(&app, c.channel, "bar-1", c.paid).await;
    assert_eq!(status, 201, "{p}");
    let p = if c.paid_at_once {
        assert_eq!(p["status"], "succeeded", "{p}");
        p
    } else {
        // The answer only accepted: the bank's notification (which may come before the answer
        // is written) or the first poll finds it paid. Never failed or closed meanwhile.
        assert!(p["status"] == "pending" || p["status"] == "succeeded", "{p}");
        wait_status(&app, &text(&p, "id"), "succeeded").await
    };
    assert_eq!(p["method"], "barcode");
    assert!(p["channel_trade_no"].is_string(), "{p}");
    assert!(p["paid_at"].is_string(), "{p}");
    let m = mock_barcode(&app, c.channel, &text(&p, "channel_order_no")).await;
    assert_eq!(m["paid"], true, "{m}");
    let events = app.events().await;
    assert!(events.iter().any(|e| e["type"] == "payment.succeeded"), "{events:?}");
}

async fn user_paying_then_paid(c: &Codes) {
    let app = spawn().await;
    let (status, p) = pay_with_code(&app, c.channel, "bar-2", c.waits).await;
    assert_eq!(status, 201, "{p}");
    assert_eq!(p["status"], "pending", "{p}");
    let no = text(&p, "channel_order_no");
    assert_eq!(app.pay_at_mock(c.channel, &no).await, 200);
    let paid = wait_status(&app, &text(&p, "id"), "succeeded").await;
    assert!(paid["channel_trade_no"].is_string(), "{paid}");
    let m = mock_barcode(&app, c.channel, &no).await;
    assert_eq!((m["paid"].as_bool(), m["cancels"].as_u64()), (Some(true), Some(0)), "{m}");
}

async fn never_confirmed_is_cancelled_and_closed(c: &Codes) {
    let app = spawn().await;
    let (status, p) = pay_with_code(&app, c.channel, "bar-3", c.waits).await;
    assert_eq!((status, p["status"].as_str()), (201, Some("pending")), "{p}");
    let closed = wait_status(&app, &text(&p, "id"), "closed").await;
    let m = mock_barcode(&app, c.channel, &text(&closed, "channel_order_no")).await;
    assert_eq!(m["closed"], true, "{m}");
    assert_eq!(m["paid"], false, "{m}");
    assert!(m["cancels"].as_u64().unwrap() >= 1, "{m}");
    assert!(m["queries"].as_u64().unwrap() >= 1, "the payer got polled before the cancel: {m}");
    let events = app.events().await;
    assert!(events.iter().any(|e| e["type"] == "payment.closed"), "{events:?}");
    // The payer can no longer pay it.
    assert_ne!(app.pay_at_mock(c.channel, &text(&closed, "channel_order_no")).await, 200);
}

async fn the_merchant_closes_it_and_it_is_cancelled_at_the_channel(c: &Codes) {
    let app = spawn_slow().await;
    let (status, p) = pay_with_code(&app, c.channel, "bar-10", c.waits).await;
    assert_eq!((status, p["status"].as_str()), (201, Some("pending")), "{p}");
    let (status, closed) =
        app.post(&format!("/v1/payments/{}/close", text(&p, "id")), json!({})).await;
    assert_eq!((status, closed["status"].as_str()), (200, Some("closed")), "{closed}");
    let m = mock_barcode(&app, c.channel, &text(&p, "channel_order_no")).await;
    assert_eq!((m["closed"].as_bool(), m["paid"].as_bool()), (Some(true), Some(false)), "{m}");
    assert_eq!(m["cancels"], 1, "{m}");
}

async fn a_lost_cancel_answer_is_sent_again_until_confirmed(c: &Codes) {
    let app = spawn().await;
    app.set_faults(c.channel, json!({"timeout_after_commit": [c.cancel_method]})).await;
    let (status, p) = pay_with_code(&app, c.channel, "bar-4", c.waits).await;
    assert_eq!((status, p["status"].as_str()), (201, Some("pending")), "{p}");
    let id = text(&p, "id");
    let no = text(&p, "channel_order_no");
    // The cancel took effect at the channel, but its answer never came back.
    wait_mock_barcode(&app, c, &no, |m| m["closed"] == true && m["cancels"].as_u64() >= Some(1))
        .await;
    let (_, now) = app.get(&format!("/v1/payments/{id}")).await;
    assert_eq!(now["status"], "pending", "an unconfirmed cancel is not a close: {now}");
    app.clear_faults(c.channel).await;
    wait_status(&app, &id, "closed").await;
    let m = mock_barcode(&app, c.channel, &no).await;
    assert!(m["cancels"].as_u64().unwrap() >= 2, "the cancel was sent again: {m}");
    assert_eq!(m["paid"], false, "{m}");
}

/// A declined code: refused in the pay call's answer (422), or, where the answer only accepts,
/// failed by the first poll.
async fn pay_declined(app: &TestApp, c: &Codes, order: &str) -> Value {
    let (status, e) = pay_with_code(app, c.channel, order, c.declined).await;
    if c.paid_at_once {
        assert_eq!(status, 422, "{e}");
    } else {
        assert_eq!((status, e["status"].as_str()), (201, Some("pending")), "{e}");
    }
    app.wait_for(&format!("/v1/payments?merchant_order_no={order}"), 20, |l| {
        l["data"][0]["status"] == "failed"
    })
    .await
}

/// The pay call went through but its answer never came: a 504 naming the payment, which is
/// never failed for it; the loop's query (already running while the call hung) finds it paid.
async fn a_lost_pay_answer_is_settled_by_the_loop(c: &Codes) {
    let app = spawn().await;
    app.set_faults(c.channel, json!({"timeout_after_commit": [c.pay_method]})).await;
    let (status, e) = pay_with_code(&app, c.channel, "bar-11", c.paid).await;
    assert_eq!(status, 504, "{e}");
    let id = text(&e["error"], "object_id");
    let paid = wait_status(&app, &id, "succeeded").await;
    assert!(paid["channel_trade_no"].is_string(), "{paid}");
    let events = app.events().await;
    assert!(!events.iter().any(|e| e["type"] == "payment.failed"), "{events:?}");
}

async fn a_declined_code_fails_the_payment(c: &Codes) {
    let app = spawn().await;
    let list = pay_declined(&app, c, "bar-5").await;
    assert!(list["data"][0]["failure"]["code"].is_string(), "{list}");
}

async fn a_malformed_code_is_refused_and_nothing_is_stored(c: &Codes) {
    let app = spawn().await;
    for &code in c.malformed {
        let (status, e) = pay_with_code(&app, c.channel, "bar-6", code).await;
        assert_eq!(status, 400, "{e}");
        assert_eq!(e["error"]["param"], "payer.auth_code", "{e}");
        assert!(!e.to_string().contains(code) || code.len() <= 8, "the code is masked: {e}");
    }
    let (_, list) = app.get("/v1/payments?merchant_order_no=bar-6").await;
    assert_eq!(list["data"], json!([]), "{list}");
    let db = app.db().await;
    assert_eq!(db.fetch_i64("SELECT COUNT(*) FROM payments", &[]).await, Some(0));
    db.close().await;
    assert!(app.mock_orders(c.channel).await.is_empty());
}

async fn the_code_is_never_logged_nor_stored_in_full(c: &Codes) {
    let logs = captured_logs();
    let app = spawn().await;
    let (_, paid) = pay_with_code(&app, c.channel, "bar-7", c.paid).await;
    wait_status(&app, &text(&paid, "id"), "succeeded").await;
    let (_, p) = pay_with_code(&app, c.channel, "bar-8", c.waits).await;
    wait_status(&app, &text(&p, "id"), "closed").await;
    pay_declined(&app, c, "bar-9").await;
    let db = app.db().await;
    for code in [c.paid, c.waits, c.declined] {
        let like = format!("%{code}%");
        for sql in [
            "SELECT COUNT(*) FROM payments WHERE payer LIKE ?",
            "SELECT COUNT(*) FROM attempts WHERE channel_data LIKE ?",
            "SELECT COUNT(*) FROM events WHERE data LIKE ?",
        ] {
            assert_eq!(db.fetch_i64(sql, &[like.as_str().into()]).await, Some(0), "{sql} {code}");
        }
        // What is kept is the masked form.
        let masked = format!("{}%{}", &code[..4], &code[code.len() - 4..]);
        let sql = "SELECT COUNT(*) FROM payments WHERE payer LIKE ?";
        let like = format!("%{masked}%");
        assert_eq!(db.fetch_i64(sql, &[like.as_str().into()]).await, Some(1), "{code}");
    }
    db.close().await;
    let logged = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(logged.contains("barcode"), "the capture saw the gateway's logs");
    for code in [c.paid, c.waits, c.declined] {
        assert!(!logged.contains(code), "the code {code} reached a log");
    }
}

macro_rules! on_each_channel {
    ($($channel:ident: $codes:expr;)*) => {$(
        mod $channel {
            use super::*;

            #[tokio::test]
            async fn immediate_success() {
                super::immediate_success(&$codes).await;
            }

            #[tokio::test]
            async fn user_paying_then_paid() {
                super::user_paying_then_paid(&$codes).await;
            }

            #[tokio::test]
            async fn never_confirmed_is_cancelled_at_the_channel_and_closed() {
                super::never_confirmed_is_cancelled_and_closed(&$codes).await;
            }

            #[tokio::test]
            async fn the_merchant_closes_it_and_it_is_cancelled_at_the_channel() {
                super::the_merchant_closes_it_and_it_is_cancelled_at_the_channel(&$codes).await;
            }

            #[tokio::test]
            async fn a_lost_cancel_answer_is_sent_again_until_the_channel_confirms() {
                super::a_lost_cancel_answer_is_sent_again_until_confirmed(&$codes).await;
            }

            #[tokio::test]
            async fn a_lost_pay_answer_is_settled_by_the_loop() {
                super::a_lost_pay_answer_is_settled_by_the_loop(&$codes).await;
            }

            #[tokio::test]
            async fn a_declined_code_fails_the_payment() {
                super::a_declined_code_fails_the_payment(&$codes).await;
            }

            #[tokio::test]
            async fn a_malformed_code_is_refused_and_nothing_is_stored() {
                super::a_malformed_code_is_refused_and_nothing_is_stored(&$codes).await;
            }

            #[tokio::test]
            async fn the_code_is_never_logged_nor_stored_in_full() {
                super::the_code_is_never_logged_nor_stored_in_full(&$codes).await;
            }
        }
    )*};
}

on_each_channel! {
    alipay: ALIPAY;
    wechat: WECHAT;
    unionpay: UNIONPAY;
}

/// The loop is durable work in the store, not a task in the memory of the instance that took
/// the payment: an instance whose sweeper does not run (as if it had died right after the pay
/// call) leaves the payment to another instance on the same store, which polls and cancels it.
#[tokio::test]
async fn the_loop_survives_a_restart_and_is_finished_by_another_instance() {
    let app = TestApp::spawn_with(|o| {
        // The first instance's sweeper passes once at start, then not for an hour.
        o.sweeper.interval = Duration::from_secs(3600);
        o.barcode.time_compression = 10;
    })
    .await;
    let (status, p) = pay_with_code(&app, "alipay", "bar-restart", ALIPAY.waits).await;
    assert_eq!((status, p["status"].as_str()), (201, Some("pending")), "{p}");
    let no = text(&p, "channel_order_no");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let m = mock_barcode(&app, "alipay", &no).await;
    assert_eq!((m["queries"].as_u64(), m["cancels"].as_u64()), (Some(0), Some(0)), "{m}");

    let mut config = paymux_engine::GatewayConfig::new(app.gateway.clone());
    config.channel_timeout = Duration::from_secs(3);
    config.sweeper.interval = Duration::from_millis(100);
    config.barcode.time_compression = 10;
    let other = paymux_engine::Engine::new(app.sandbox.store.clone(), config);
    let workers = other.start_workers().unwrap();
    wait_status(&app, &text(&p, "id"), "closed").await;
    workers.shutdown().await;
    let m = mock_barcode(&app, "alipay", &no).await;
    assert_eq!((m["closed"].as_bool(), m["paid"].as_bool()), (Some(true), Some(false)), "{m}");
    assert!(m["cancels"].as_u64().unwrap() >= 1, "{m}");
}

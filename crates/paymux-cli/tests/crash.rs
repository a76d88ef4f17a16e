//! The gateway process killed (SIGKILL) between a channel call and the commit that records it,
//! then restarted on the same store: the payment or refund ends in the channel's state and
//! nothing is duplicated. The mocks run in this test process, so they outlive the gateway.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use paymux_cli::sandbox::{Sandbox, SandboxOptions, start};
use paymux_core::{PaymentStatus, RefundStatus};
use serde_json::{Value, json};

struct Crash {
    sandbox: Sandbox,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Crash {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = SandboxOptions::new(dir.path());
        opts.gateway_port = 0;
        opts.alipay_port = 0;
        opts.wechat_port = 0;
        opts.unionpay_port = 0;
        opts.run_gateway = false;
        opts.notify_delays = Some(vec![Duration::from_millis(100); 3]);
        let sandbox = start(opts).await.unwrap();
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
        Self { sandbox, http, _dir: dir }
    }

    fn gateway(&self) -> &str {
        &self.sandbox.manifest.gateway_url
    }

    /// `paymux serve` on the sandbox's store and gateway port, with an optional failpoint.
    async fn serve(&self, failpoint: Option<&str>) -> Gateway {
        self.serve_with(failpoint, &[]).await
    }

    /// [`Crash::serve`] with more flags.
    async fn serve_with(&self, failpoint: Option<&str>, flags: &[&str]) -> Gateway {
        let db = self._dir.path().join("paymux.db");
        let listen = self.gateway().trim_start_matches("http://").to_owned();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_paymux"));
        cmd.args(["serve", "--database"])
            .arg(&db)
            .args(["--listen", &listen, "--public-url", self.gateway()])
            .args(["--sweep-interval-ms", "100", "--sweep-first-check-ms", "300"])
            .args(["--idempotency-lease-ms", "1000"])
            .args(flags)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        match failpoint {
            Some(f) => cmd.env("PAYMUX_FAILPOINT", f),
            None => cmd.env_remove("PAYMUX_FAILPOINT"),
        };
        let child = Gateway(cmd.spawn().expect("the paymux binary starts"));
        for _ in 0..200 {
            if let Ok(r) = self.http.get(format!("{}/healthz", self.gateway())).send().await
                && r.status().is_success()
            {
                return child;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("paymux serve did not come up");
    }

    /// POSTs `body` to `path` on a task of its own (the gateway may be killed under it), with an
    /// `Idempotency-Key` if one is given.
    fn post_in_background(
        &self,
        path: &str,
        idempotency_key: Option<&str>,
        body: Value,
    ) -> tokio::task::JoinHandle<reqwest::Result<reqwest::Response>> {
        let mut req = self
            .http
            .post(format!("{}{path}", self.gateway()))
            .bearer_auth(&self.sandbox.manifest.api_key)
            .json(&body);
        if let Some(key) = idempotency_key {
            req = req.header("Idempotency-Key", key);
        }
        tokio::spawn(req.send())
    }

    async fn post(&self, path: &str, body: Value) -> reqwest::Result<reqwest::Response> {
        self.http
            .post(format!("{}{path}", self.gateway()))
            .bearer_auth(&self.sandbox.manifest.api_key)
            .json(&body)
            .send()
            .await
    }

    async fn mock(&self, path: &str) -> Value {
        let url = format!("{}{path}", self.sandbox.manifest.channels.alipay.mock_url);
        self.http.get(url).send().await.unwrap().json().await.unwrap()
    }

    async fn mock_post(&self, path: &str, body: Value) {
        let url = format!("{}{path}", self.sandbox.manifest.channels.alipay.mock_url);
        let res = self.http.post(url).json(&body).send().await.unwrap();
        assert!(res.status().is_success(), "{path}: {}", res.status());
    }

    /// A 10.00 Alipay QR payment ("o-1"), paid at the mock, once the gateway holds it succeeded:
    /// its id and its channel order number.
    async fn paid_payment(&self) -> (paymux_core::PaymentId, String) {
        let body = json!({"merchant_order_no": "o-1", "amount": 1000, "currency": "CNY",
                          "subject": "s", "channel": "alipay", "method": "qr"});
        let p: Value = self.post("/v1/payments", body).await.unwrap().json().await.unwrap();
        let no = p["channel_order_no"].as_str().unwrap().to_owned();
        self.mock_post(&format!("/_sandbox/orders/{no}/pay"), json!({})).await;
        let pid = p["id"].as_str().unwrap().parse().unwrap();
        let (store, merchant) = (&self.sandbox.store, self.sandbox.merchant_id);
        self.wait("the payment to succeed", async || {
            store.payment(merchant, pid).await.unwrap().unwrap().status == PaymentStatus::Succeeded
        })
        .await;
        (pid, no)
    }

    async fn wait(&self, what: &str, mut done: impl AsyncFnMut() -> bool) {
        for _ in 0..300 {
            if done().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("timed out waiting for {what}");
    }
}

/// A `paymux serve` child process, killed when dropped so a failing test leaves none behind.
struct Gateway(Child);

impl Drop for Gateway {
    fn drop(&mut self) {
        // Child::kill sends SIGKILL on Unix: no shutdown code runs.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn kill(gateway: Gateway) {
    drop(gateway);
}

#[tokio::test]
async fn killed_after_the_channel_created_the_order_the_payment_ends_in_the_channels_state() {
    let t = Crash::new().await;
    let store = t.sandbox.store.clone();
    let merchant = t.sandbox.merchant_id;
    let gw = t.serve(Some(paymux_engine::failpoint::AFTER_CHANNEL_CREATE)).await;
    let body = json!({"merchant_order_no": "o-crash", "amount": 1000, "currency": "CNY", "subject": "s", "channel": "alipay", "method": "qr"});
    let call = t.post_in_background("/v1/payments", None, body);
    t.wait("the channel order", async || {
        t.mock("/_sandbox/orders").await["orders"].as_array().unwrap().len() == 1
    })
    .await;
    kill(gw);
    assert!(call.await.unwrap().is_err(), "the merchant never got an answer");

    let p = store
        .payment_by_order_no(merchant, "o-crash")
        .await
        .unwrap()
        .expect("written before the call");
    assert_eq!(p.status, PaymentStatus::Pending);
    assert!(p.action.is_none(), "the channel's answer was never recorded");

    // The buyer pays; the notification is lost too, so only the restarted sweeper can tell.
    t.mock_post("/_sandbox/faults", json!({"drop_notifications": true})).await;
    t.mock_post(&format!("/_sandbox/orders/{}/pay", p.channel_order_no), json!({})).await;
    let gw = t.serve(None).await;
    t.wait("the payment to succeed", async || {
        store.payment(merchant, p.id).await.unwrap().unwrap().status == PaymentStatus::Succeeded
    })
    .await;
    let after = store.payment(merchant, p.id).await.unwrap().unwrap();
    assert!(after.channel_trade_no.is_some());
    assert_eq!(t.mock("/_sandbox/orders").await["orders"].as_array().unwrap().len(), 1);
    let all = store
        .list_payments(merchant, &paymux_store::PaymentFilter { limit: 100, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(all.len(), 1, "nothing duplicated");
    assert_eq!(store.events(merchant, false, None, 100).await.unwrap().len(), 1);
    kill(gw);
}

#[tokio::test]
async fn killed_after_the_channel_refunded_the_refund_ends_in_the_channels_state() {
    let t = Crash::new().await;
    let store = t.sandbox.store.clone();
    let merchant = t.sandbox.merchant_id;
    let gw = t.serve(None).await;
    let (pid, no) = t.paid_payment().await;
    kill(gw);
    // Alipay notifies a partial refund; lost here, so only the restarted gateway's own recovery
    // can learn the refund's outcome.
    t.mock_post("/_sandbox/faults", json!({"drop_notifications": true})).await;

    let gw = t.serve(Some(paymux_engine::failpoint::AFTER_CHANNEL_REFUND)).await;
    let body = json!({"amount": 250, "merchant_refund_no": "r-crash"});
    let call = t.post_in_background(&format!("/v1/payments/{pid}/refunds"), None, body);
    t.wait("the channel refund", async || {
        t.mock(&format!("/_sandbox/orders/{no}")).await["refunds"].as_array().unwrap().len() == 1
    })
    .await;
    kill(gw);
    assert!(call.await.unwrap().is_err());
    let r = store
        .refund_by_merchant_refund_no(merchant, "r-crash")
        .await
        .unwrap()
        .expect("reserved before the call");
    assert_eq!(r.status, RefundStatus::Pending);

    let gw = t.serve(None).await;
    t.wait("the refund to succeed", async || {
        store.refund(merchant, r.id).await.unwrap().unwrap().status == RefundStatus::Succeeded
    })
    .await;
    let order = t.mock(&format!("/_sandbox/orders/{no}")).await;
    assert_eq!(order["refunds"].as_array().unwrap().len(), 1, "no second refund: {order}");
    assert_eq!(order["refunded_amount"], "2.50");
    assert_eq!(store.payment(merchant, pid).await.unwrap().unwrap().amount_refunded, 250);
    kill(gw);
}

/// Posts with an Idempotency-Key until the answer is no longer "in flight" (the dead claim's lease
/// runs out), and returns that answer.
async fn retry_until_settled(t: &Crash, path: &str, key: &str, body: &Value) -> (u16, Value) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let res = t
            .http
            .post(format!("{}{path}", t.gateway()))
            .bearer_auth(&t.sandbox.manifest.api_key)
            .header("Idempotency-Key", key)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        let v: Value = res.json().await.unwrap();
        if !(status == 409 && v["error"]["code"] == "idempotency_key_in_flight") {
            return (status, v);
        }
        assert!(tokio::time::Instant::now() < deadline, "the key stayed in flight: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_retry_of_a_create_killed_after_its_write_replays_the_payment_not_a_409() {
    let t = Crash::new().await;
    let store = t.sandbox.store.clone();
    let merchant = t.sandbox.merchant_id;
    let gw = t.serve(Some(paymux_engine::failpoint::AFTER_CHANNEL_CREATE)).await;
    let body = json!({"merchant_order_no": "o-lost", "amount": 1000, "currency": "CNY", "subject": "s", "channel": "alipay", "method": "qr"});
    let call = t.post_in_background("/v1/payments", Some("k-lost"), body.clone());
    t.wait("the channel order", async || {
        t.mock("/_sandbox/orders").await["orders"].as_array().unwrap().len() == 1
    })
    .await;
    kill(gw);
    assert!(call.await.unwrap().is_err(), "the merchant never got an answer");
    let written = store.payment_by_order_no(merchant, "o-lost").await.unwrap().unwrap();

    let gw = t.serve(None).await;
    let (status, replayed) = retry_until_settled(&t, "/v1/payments", "k-lost", &body).await;
    assert_eq!(status, 200, "{replayed}");
    assert_eq!(replayed["id"], written.id.to_string());
    // And it stays so: the key now answers with that payment every time.
    let (status, again) = retry_until_settled(&t, "/v1/payments", "k-lost", &body).await;
    assert_eq!((status, &again["id"]), (200, &replayed["id"]));
    assert_eq!(t.mock("/_sandbox/orders").await["orders"].as_array().unwrap().len(), 1);
    kill(gw);
}

#[tokio::test]
async fn a_retry_of_a_create_killed_after_its_answer_was_kept_replays_that_answer_at_once() {
    let t = Crash::new().await;
    let store = t.sandbox.store.clone();
    let merchant = t.sandbox.merchant_id;
    let gw = t.serve(Some(paymux_engine::failpoint::AFTER_CREATE_RECORDED)).await;
    let body = json!({"merchant_order_no": "o-kept", "amount": 1000, "currency": "CNY", "subject": "s", "channel": "alipay", "method": "qr"});
    let call = t.post_in_background("/v1/payments", Some("k-kept"), body.clone());
    t.wait("the channel's answer committed", async || {
        let p = store.payment_by_order_no(merchant, "o-kept").await.unwrap();
        p.is_some_and(|p| p.action.is_some())
    })
    .await;
    kill(gw);
    assert!(call.await.unwrap().is_err(), "the merchant never got an answer");
    let written = store.payment_by_order_no(merchant, "o-kept").await.unwrap().unwrap();

    // No lease to wait out: the answer was kept with the channel's, and the retry gets it, 201,
    // byte for byte the same every time.
    let gw = t.serve(None).await;
    let retry = async || {
        let res = t
            .http
            .post(format!("{}/v1/payments", t.gateway()))
            .bearer_auth(&t.sandbox.manifest.api_key)
            .header("Idempotency-Key", "k-kept")
            .json(&body)
            .send()
            .await
            .unwrap();
        let replayed = res.headers().get("idempotent-replayed").cloned();
        (res.status().as_u16(), replayed, res.bytes().await.unwrap())
    };
    let (status, replayed, bytes) = retry().await;
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(status, 201, "{v}");
    assert_eq!(replayed.as_ref().map(|h| h.as_bytes()), Some(&b"true"[..]));
    assert_eq!(v["id"], written.id.to_string());
    assert_eq!(Some(&v["action"]), written.action.as_ref());
    assert_eq!(retry().await, (201, replayed, bytes));
    assert_eq!(t.mock("/_sandbox/orders").await["orders"].as_array().unwrap().len(), 1);
    kill(gw);
}

#[tokio::test]
async fn a_retry_of_a_refund_killed_after_its_write_replays_the_refund_not_a_409() {
    let t = Crash::new().await;
    let store = t.sandbox.store.clone();
    let merchant = t.sandbox.merchant_id;
    let gw = t.serve(None).await;
    let (pid, no) = t.paid_payment().await;
    kill(gw);

    let gw = t.serve(Some(paymux_engine::failpoint::AFTER_CHANNEL_REFUND)).await;
    let path = format!("/v1/payments/{pid}/refunds");
    let body = json!({"amount": 250, "merchant_refund_no": "r-lost"});
    let call = t.post_in_background(&path, Some("k-refund"), body.clone());
    t.wait("the channel refund", async || {
        t.mock(&format!("/_sandbox/orders/{no}")).await["refunds"].as_array().unwrap().len() == 1
    })
    .await;
    kill(gw);
    assert!(call.await.unwrap().is_err());
    let written = store.refund_by_merchant_refund_no(merchant, "r-lost").await.unwrap().unwrap();

    let gw = t.serve(None).await;
    let (status, replayed) = retry_until_settled(&t, &path, "k-refund", &body).await;
    assert_eq!(status, 200, "{replayed}");
    assert_eq!(replayed["id"], written.id.to_string());
    let order = t.mock(&format!("/_sandbox/orders/{no}")).await;
    assert_eq!(order["refunds"].as_array().unwrap().len(), 1, "no second refund: {order}");
    kill(gw);
}

/// Barcode payments whose pay answers (paid at once; the payer confirming) were never recorded:
/// the restarted gateway's loop finds the paid one paid and cancels the other at the channel.
#[tokio::test]
async fn killed_after_barcode_pay_calls_the_restarted_loop_settles_both() {
    let t = Crash::new().await;
    let store = t.sandbox.store.clone();
    let merchant = t.sandbox.merchant_id;
    // The paid one's notification is lost: only the loop can tell.
    t.mock_post("/_sandbox/faults", json!({"drop_notifications": true})).await;
    let fast = ["--barcode-time-compression", "10", "--channel-timeout-secs", "2"];
    let gw = t.serve_with(Some(paymux_engine::failpoint::AFTER_CHANNEL_CREATE), &fast).await;
    let mut calls = Vec::new();
    for (order, code) in [("o-paid", "286012345678901234"), ("o-wait", "250012345678901234")] {
        let body = json!({"merchant_order_no": order, "amount": 1000, "currency": "CNY",
                          "subject": "s", "channel": "alipay", "method": "barcode",
                          "payer": {"auth_code": code}});
        calls.push(t.post_in_background("/v1/payments", None, body));
    }
    t.wait("both channel orders", async || {
        t.mock("/_sandbox/orders").await["orders"].as_array().unwrap().len() == 2
    })
    .await;
    kill(gw);
    for call in calls {
        assert!(call.await.unwrap().is_err(), "the merchant never got an answer");
    }
    let paid = store.payment_by_order_no(merchant, "o-paid").await.unwrap().unwrap();
    let waiting = store.payment_by_order_no(merchant, "o-wait").await.unwrap().unwrap();
    assert_eq!((paid.status, waiting.status), (PaymentStatus::Pending, PaymentStatus::Pending));

    let gw = t.serve_with(None, &fast).await;
    t.wait("the paid one to succeed and the other to close", async || {
        let p = store.payment(merchant, paid.id).await.unwrap().unwrap();
        let w = store.payment(merchant, waiting.id).await.unwrap().unwrap();
        (p.status, w.status) == (PaymentStatus::Succeeded, PaymentStatus::Closed)
    })
    .await;
    let w = t.mock(&format!("/_sandbox/barcode/{}", waiting.channel_order_no)).await;
    assert_eq!((w["closed"].as_bool(), w["paid"].as_bool()), (Some(true), Some(false)), "{w}");
    let p = t.mock(&format!("/_sandbox/barcode/{}", paid.channel_order_no)).await;
    assert_eq!((p["paid"].as_bool(), p["cancels"].as_u64()), (Some(true), Some(0)), "{p}");
    assert_eq!(t.mock("/_sandbox/orders").await["orders"].as_array().unwrap().len(), 2);
    assert_eq!(store.events(merchant, false, None, 100).await.unwrap().len(), 2);
    kill(gw);
}

#[tokio::test]
async fn killed_between_a_duplicates_detection_and_its_refund_the_duplicate_is_refunded_once() {
    let t = Crash::new().await;
    let store = t.sandbox.store.clone();
    let merchant = t.sandbox.merchant_id;
    let gw = t.serve(Some(paymux_engine::failpoint::BEFORE_DUPLICATE_REFUND)).await;
    let body = json!({"merchant_order_no": "o-dup", "amount": 1000, "currency": "CNY",
                      "subject": "s", "channel": "alipay", "method": "qr"});
    let p: Value = t.post("/v1/payments", body).await.unwrap().json().await.unwrap();
    let alipay_no = p["channel_order_no"].as_str().unwrap().to_owned();
    // The payer opens Alipay's code, switches to WeChat Pay, and pays both; Alipay's
    // notification is lost, so paymux learns of that payment when it asks Alipay.
    let code_url = p["action"]["code_url"].as_str().unwrap();
    assert!(t.http.get(code_url).send().await.unwrap().status().is_success());
    let path = format!("/v1/payments/{}/attempts", p["id"].as_str().unwrap());
    let switched: Value = t
        .post(&path, json!({"channel": "wechat", "method": "qr"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let wechat_no = switched["channel_order_no"].as_str().unwrap().to_owned();
    t.mock_post("/_sandbox/faults", json!({"drop_notifications": true})).await;
    t.mock_post(&format!("/_sandbox/orders/{alipay_no}/pay"), json!({})).await;
    let wechat = &t.sandbox.manifest.channels.wechat.mock_url;
    let res = t.http.post(format!("{wechat}/_sandbox/orders/{wechat_no}/pay")).send().await;
    assert!(res.unwrap().status().is_success());
    // The duplicate is recorded with its refund; the gateway dies before sending it.
    let duplicate_refund = async || {
        let pid = p["id"].as_str().unwrap().parse().unwrap();
        let attempts = store.attempts(pid).await.unwrap();
        let dup =
            attempts.iter().find(|a| a.status == paymux_core::AttemptStatus::DuplicatePaid)?;
        store
            .refund_by_merchant_refund_no(merchant, &format!("duplicate_{}", dup.id))
            .await
            .unwrap()
    };
    t.wait("the duplicate to be recorded", async || duplicate_refund().await.is_some()).await;
    kill(gw);
    let refund = duplicate_refund().await.unwrap();

    let gw = t.serve(None).await;
    t.wait("the duplicate's refund to succeed", async || {
        store.refund(merchant, refund.id).await.unwrap().unwrap().status == RefundStatus::Succeeded
    })
    .await;
    let order = t.mock(&format!("/_sandbox/orders/{alipay_no}")).await;
    assert_eq!(order["refunds"].as_array().unwrap().len(), 1, "refunded once: {order}");
    assert_eq!(order["refunded_amount"], "10.00");
    let pid = p["id"].as_str().unwrap().parse().unwrap();
    let paid = store.payment(merchant, pid).await.unwrap().unwrap();
    assert_eq!((paid.status, paid.amount_refunded), (PaymentStatus::Succeeded, 0));
    kill(gw);
}

#[tokio::test]
async fn killed_between_a_split_at_the_channel_and_its_commit_the_settlement_completes_once() {
    let t = Crash::new().await;
    let store = t.sandbox.store.clone();
    let gw = t.serve(None).await;
    t.mock_post("/_sandbox/royalty/settings", json!({"min_wait_ms": 0, "processing_ms": 200}))
        .await;
    let account = "2088000000000777";
    let body = json!({"name": "platform",
                      "accounts": {"alipay": {"type": "userId", "account": account}}});
    let r: Value = t.post("/v1/receivers", body).await.unwrap().json().await.unwrap();
    let body = json!({"merchant_order_no": "held-1", "amount": 10000, "currency": "CNY",
                      "subject": "s", "channel": "alipay", "method": "qr",
                      "settlement": {"hold": true,
                                     "splits": [{"receiver": r["id"], "ratio_bps": 1500}]}});
    let p: Value = t.post("/v1/payments", body).await.unwrap().json().await.unwrap();
    let no = p["channel_order_no"].as_str().unwrap().to_owned();
    t.mock_post(&format!("/_sandbox/orders/{no}/pay"), json!({})).await;
    let pid: paymux_core::PaymentId = p["id"].as_str().unwrap().parse().unwrap();
    let merchant = t.sandbox.merchant_id;
    t.wait("the payment to succeed", async || {
        store.payment(merchant, pid).await.unwrap().unwrap().status == PaymentStatus::Succeeded
    })
    .await;
    kill(gw);

    // The split reaches Alipay; the gateway dies before it records the answer.
    let gw = t.serve(Some(paymux_engine::failpoint::AFTER_CHANNEL_SHARE)).await;
    let call = t.post_in_background(&format!("/v1/payments/{pid}/settle"), None, json!({}));
    let receiver = format!("/_sandbox/receivers/{account}");
    t.wait("the split at the channel", async || {
        t.mock(&receiver).await["lines"].as_array().is_some_and(|l| l.len() == 1)
    })
    .await;
    kill(gw);
    assert!(call.await.unwrap().is_err());
    let s = store.settlement(pid).await.unwrap().expect("written with the payment");
    assert_eq!(s.status, paymux_core::SettlementStatus::Settling, "written before the call");

    // Restarted, the sweeper asks Alipay about the same split number and finishes the settlement.
    let gw = t.serve(None).await;
    t.wait("the settlement to settle", async || {
        store.settlement(pid).await.unwrap().unwrap().status
            == paymux_core::SettlementStatus::Settled
    })
    .await;
    let paid = t.mock(&receiver).await;
    assert_eq!(paid["lines"].as_array().unwrap().len(), 1, "split once: {paid}");
    assert_eq!(paid["balance_fen"], 1500, "{paid}");
    assert!(store.ledger_imbalances().await.unwrap().is_empty());
    let settled = store.settlement(pid).await.unwrap().unwrap();
    assert_eq!(settled.splits[0].amount, Some(1500));
    kill(gw);
}

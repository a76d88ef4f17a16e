//! Two `paymux serve` instances on one PostgreSQL database, behind a round-robin load balancer
//! that both the merchants and the channels' notifications go through. The sandbox's mocks run
//! in this test process and a merchant's webhook endpoint records every delivery. Concurrent
//! merchants create, pay and refund; one instance is killed (SIGKILL) in the middle of it and
//! started again later. Afterwards every payment and refund is in the channel's state, once;
//! nothing is doubled; every Idempotency-Key replays its first answer; every event has reached the
//! endpoint.

#![allow(clippy::unwrap_used, clippy::expect_used)]

// Shared with the end-to-end crate, which uses the parts of it this test does not.
#[allow(dead_code)]
#[path = "../../../tests/src/pg.rs"]
mod pg;
#[path = "../../../tests/src/proxy.rs"]
mod proxy;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use paymux_cli::config::DatabaseUrl;
use paymux_cli::sandbox::{Sandbox, SandboxOptions, start};
use serde_json::{Value, json};
use tokio::time::Instant;

/// Merchants' backends running at once, one order each.
const CLIENTS: usize = 40;
/// Every wait in the test ends by then (from the start): generous, for a loaded machine.
const BUDGET: Duration = Duration::from_secs(150);
/// What each client refunds of its payment.
const REFUND: i64 = 300;

/// The settings `paymux serve` has no flag for: a fast dispatcher that may deliver to loopback,
/// sweeper leases that run out in seconds rather than a minute.
const CONFIG: &str = r#"
[sweeper]
max_backoff_secs = 1
lease_secs = 12

[webhooks]
interval_ms = 100
timeout_secs = 2
first_retry_secs = 1
max_backoff_secs = 2
allow_private_urls = true
"#;

/// A `paymux serve` process, killed (SIGKILL) when dropped so a failing test leaves none behind.
struct Instance {
    listen: String,
    child: Child,
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback address for an instance to listen on.
fn free_address() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// An answer as the merchant got it.
#[derive(Debug, Clone, PartialEq)]
struct Answer {
    status: u16,
    body: Value,
}

/// One POST a client made with an Idempotency-Key, and the answer it settled on.
#[derive(Debug)]
struct Keyed {
    path: String,
    key: String,
    body: Value,
    answer: Answer,
}

/// What one client did.
#[derive(Debug)]
struct Outcome {
    order_no: String,
    channel: &'static str,
    payment_id: String,
    channel_order_no: String,
    /// The buyer paid at the channel (false: the order never reached it, so it was closed).
    paid: bool,
    refund_id: Option<String>,
    keyed: Vec<Keyed>,
}

struct Cluster {
    sandbox: Sandbox,
    http: reqwest::Client,
    /// The load balancer's address: the gateway's public URL, for merchants and channels alike.
    public_url: String,
    database_url: String,
    config: PathBuf,
    deadline: Instant,
    /// Deliveries received by the merchant's endpoint, by event id.
    received: Arc<Mutex<HashMap<String, usize>>>,
    /// POSTs sent again: after no answer, and after "in flight".
    unanswered: AtomicUsize,
    in_flight: AtomicUsize,
}

impl Cluster {
    fn api_key(&self) -> &str {
        &self.sandbox.manifest.api_key
    }

    fn mock(&self, channel: &str) -> &str {
        match channel {
            "alipay" => &self.sandbox.manifest.channels.alipay.mock_url,
            "wechat" => &self.sandbox.manifest.channels.wechat.mock_url,
            other => panic!("no mock for {other}"),
        }
    }

    fn check_deadline(&self, what: &str) {
        assert!(Instant::now() < self.deadline, "timed out: {what}");
    }

    /// Starts `paymux serve` on `listen` and waits until it answers `/readyz`.
    async fn serve(&self, listen: &str) -> Instance {
        let child = Command::new(env!("CARGO_BIN_EXE_paymux"))
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            .args(["--database-url", &self.database_url])
            .args(["--listen", listen, "--public-url", &self.public_url])
            .args(["--channel-timeout-secs", "5"])
            .args(["--sweep-interval-ms", "100", "--sweep-first-check-ms", "300"])
            .args(["--idempotency-lease-ms", "1000"])
            .env("RUST_LOG", "warn")
            .env_remove("PAYMUX_FAILPOINT")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the paymux binary starts");
        let mut instance = Instance { listen: listen.to_owned(), child };
        loop {
            if let Ok(r) = self.http.get(format!("http://{listen}/readyz")).send().await
                && r.status() == 200
            {
                return instance;
            }
            if let Some(status) = instance.child.try_wait().unwrap() {
                panic!("paymux serve on {} exited at start: {status}", instance.listen);
            }
            self.check_deadline("an instance to become ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A POST as a merchant's backend makes it: with an Idempotency-Key, sent again with the same
    /// key and body while the answer says nothing was decided yet (no answer at all, a 5xx that
    /// is not the key's stored answer, 429, or the key still in flight). The answer it settles on.
    async fn post_idempotent(&self, path: &str, key: &str, body: &Value) -> Answer {
        loop {
            self.check_deadline(&format!("an answer to POST {path} ({key})"));
            let sent = self
                .http
                .post(format!("{}{path}", self.public_url))
                .bearer_auth(self.api_key())
                .header("Idempotency-Key", key)
                .json(body)
                .send()
                .await;
            let answer = match sent {
                Ok(res) => {
                    let status = res.status().as_u16();
                    let replayed = res.headers().contains_key("idempotent-replayed");
                    res.text().await.ok().map(|text| (status, replayed, text))
                }
                Err(_) => None,
            };
            match answer {
                None => {
                    self.unanswered.fetch_add(1, Ordering::Relaxed);
                }
                Some((status, replayed, text)) => {
                    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
                    let in_flight =
                        status == 409 && body["error"]["code"] == "idempotency_key_in_flight";
                    if in_flight {
                        self.in_flight.fetch_add(1, Ordering::Relaxed);
                    }
                    let again = in_flight || status == 429 || (status >= 500 && !replayed);
                    if !again {
                        return Answer { status, body };
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A GET through the load balancer, tried again on a network error or a 5xx.
    async fn get(&self, path: &str) -> Value {
        let mut last = String::new();
        loop {
            self.check_deadline(&format!("GET {path}: {last}"));
            let sent = self
                .http
                .get(format!("{}{path}", self.public_url))
                .bearer_auth(self.api_key())
                .send()
                .await;
            match sent {
                Ok(res) if res.status().as_u16() < 500 => {
                    let status = res.status();
                    let body: Value = res.json().await.unwrap();
                    assert!(status.is_success(), "GET {path}: {status} {body}");
                    return body;
                }
                Ok(res) => {
                    last = format!("{} {}", res.status(), res.text().await.unwrap_or_default())
                }
                Err(e) => last = format!("{e:?}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls `path` until its `status` is no longer `pending`; that object.
    async fn settled(&self, path: &str) -> Value {
        loop {
            let v = self.get(path).await;
            if v["status"] != "pending" {
                return v;
            }
            self.check_deadline(&format!("{path} to be final: {v}"));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The channel's order at its mock, if it has one.
    async fn mock_order(&self, channel: &str, channel_order_no: &str) -> Option<Value> {
        let url = format!("{}/_sandbox/orders/{channel_order_no}", self.mock(channel));
        let res = self.http.get(url).send().await.unwrap();
        if res.status() == 404 {
            return None;
        }
        assert!(res.status().is_success(), "mock order {channel_order_no}: {}", res.status());
        Some(res.json().await.unwrap())
    }

    async fn mock_orders(&self, channel: &str) -> Vec<Value> {
        let url = format!("{}/_sandbox/orders", self.mock(channel));
        let v: Value = self.http.get(url).send().await.unwrap().json().await.unwrap();
        v["orders"].as_array().unwrap().clone()
    }

    /// Every event of the merchant, oldest first, paged with `after`.
    async fn events(&self) -> Vec<Value> {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let path = match &after {
                Some(a) => format!("/v1/events?limit=100&after={a}"),
                None => "/v1/events?limit=100".to_owned(),
            };
            let page = self.get(&path).await;
            let data = page["data"].as_array().unwrap();
            all.extend(data.iter().cloned());
            if !page["has_more"].as_bool().unwrap() || data.is_empty() {
                return all;
            }
            after = Some(data.last().unwrap()["id"].as_str().unwrap().to_owned());
        }
    }

    /// One merchant order, start to end: create (alipay or wechat QR), the buyer pays at the
    /// channel, wait until paymux says succeeded, refund part of it, wait until the refund is
    /// final. `created` counts the payments created so far, across clients.
    async fn client(self: Arc<Self>, i: usize, created: Arc<AtomicUsize>) -> Outcome {
        let channel = if i.is_multiple_of(2) { "alipay" } else { "wechat" };
        let order_no = format!("cluster-{i}");
        let amount = 1000 + i64::try_from(i).unwrap();
        let body = json!({"merchant_order_no": order_no, "amount": amount, "currency": "CNY",
                          "subject": order_no, "channel": channel, "method": "qr"});
        let key = format!("create-{i}");
        let answer = self.post_idempotent("/v1/payments", &key, &body).await;
        let payment_id = match answer.status {
            200 | 201 => answer.body["id"].as_str().unwrap().to_owned(),
            // The channel's answer was lost: the payment stays pending, named in the error.
            502 | 504 => answer.body["error"]["object_id"].as_str().unwrap().to_owned(),
            _ => panic!("create {order_no}: {answer:?}"),
        };
        let mut keyed = vec![Keyed { path: "/v1/payments".into(), key, body, answer }];
        created.fetch_add(1, Ordering::SeqCst);
        let payment = self.get(&format!("/v1/payments/{payment_id}")).await;
        let channel_order_no = payment["channel_order_no"].as_str().unwrap().to_owned();

        // The buyer pays. An instance killed between writing the payment and calling the channel
        // leaves no order at the channel to pay: the merchant closes that payment instead.
        let pay = format!("{}/_sandbox/orders/{channel_order_no}/pay", self.mock(channel));
        let paid = match self.http.post(pay).json(&json!({})).send().await.unwrap().status() {
            s if s.is_success() => true,
            StatusCode::NOT_FOUND => false,
            s => panic!("paying {channel_order_no} at the mock: {s}"),
        };
        if !paid {
            let path = format!("/v1/payments/{payment_id}/close");
            let key = format!("close-{i}");
            let answer = self.post_idempotent(&path, &key, &json!({})).await;
            keyed.push(Keyed { path, key, body: json!({}), answer });
        }
        let payment = self.settled(&format!("/v1/payments/{payment_id}")).await;
        let expected = if paid { "succeeded" } else { "closed" };
        assert_eq!(payment["status"], expected, "{payment}");

        let mut refund_id = None;
        if paid {
            let path = format!("/v1/payments/{payment_id}/refunds");
            let key = format!("refund-{i}");
            let body = json!({"amount": REFUND, "merchant_refund_no": format!("refund-{i}")});
            let answer = self.post_idempotent(&path, &key, &body).await;
            let id = match answer.status {
                200 | 201 => answer.body["id"].as_str().unwrap().to_owned(),
                502 | 504 => answer.body["error"]["object_id"].as_str().unwrap().to_owned(),
                _ => panic!("refund {order_no}: {answer:?}"),
            };
            keyed.push(Keyed { path, key, body, answer });
            let refund = self.settled(&format!("/v1/refunds/{id}")).await;
            assert_eq!(refund["status"], "succeeded", "{refund}");
            refund_id = Some(id);
        }
        Outcome { order_no, channel, payment_id, channel_order_no, paid, refund_id, keyed }
    }
}

/// The merchant's webhook endpoint: counts deliveries by event id, answers 200.
async fn receiver(received: Arc<Mutex<HashMap<String, usize>>>) -> String {
    async fn hook(
        State(received): State<Arc<Mutex<HashMap<String, usize>>>>,
        body: Bytes,
    ) -> StatusCode {
        let event: Value = serde_json::from_slice(&body).unwrap();
        let id = event["id"].as_str().unwrap().to_owned();
        *received.lock().unwrap().entry(id).or_default() += 1;
        StatusCode::OK
    }
    let app = axum::Router::new().route("/hook", post(hook)).with_state(received);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/hook")
}

/// Whether the mock's order is in the state paymux reports for its payment.
fn mock_agrees(channel: &str, order: Option<&Value>, status: &str) -> bool {
    let Some(order) = order else {
        // No order at the channel: nobody could pay it.
        return status == "closed";
    };
    let state = match channel {
        "alipay" => order["trade_status"].as_str().unwrap(),
        _ => order["trade_state"].as_str().unwrap(),
    };
    match status {
        // A partly refunded Alipay trade stays TRADE_SUCCESS; WeChat shows REFUND.
        "succeeded" => matches!(state, "TRADE_SUCCESS" | "SUCCESS" | "REFUND"),
        "closed" => matches!(state, "TRADE_CLOSED" | "CLOSED"),
        _ => false,
    }
}

/// What the mock says was refunded on an order, in fen, and how many refunds it holds.
fn mock_refunded(channel: &str, order: &Value) -> (i64, usize) {
    let n = order["refunds"].as_array().unwrap().len();
    let fen = match channel {
        "alipay" => {
            let yuan = order["refunded_amount"].as_str().unwrap();
            let (whole, cents) = yuan.split_once('.').unwrap();
            whole.parse::<i64>().unwrap() * 100 + cents.parse::<i64>().unwrap()
        }
        _ => order["refunded"].as_i64().unwrap(),
    };
    (fen, n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_postgres_one_killed_under_load_lose_and_double_nothing() {
    let started = Instant::now();
    let db = pg::PgDatabase::create().await;
    let dir = tempfile::tempdir().unwrap();
    let mut opts = SandboxOptions::new(dir.path());
    opts.database_url = Some(DatabaseUrl::new(db.url.clone()));
    opts.gateway_port = 0;
    opts.alipay_port = 0;
    opts.wechat_port = 0;
    opts.unionpay_port = 0;
    opts.run_gateway = false;
    // A notification that finds an instance dead is sent again soon, through the balancer.
    opts.notify_delays =
        Some([100, 200, 400, 800].into_iter().map(Duration::from_millis).collect());
    let sandbox = start(opts).await.unwrap();

    let config = dir.path().join("paymux.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let (addr_a, addr_b) = (free_address(), free_address());
    let lb = proxy::Proxy::balance(vec![addr_a.clone(), addr_b.clone()]).await;
    let received = Arc::new(Mutex::new(HashMap::new()));
    let hook_url = receiver(received.clone()).await;
    let t = Arc::new(Cluster {
        sandbox,
        http: reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap(),
        public_url: format!("http://{}", lb.addr),
        database_url: db.url.clone(),
        config,
        deadline: started + BUDGET,
        received,
        unanswered: AtomicUsize::new(0),
        in_flight: AtomicUsize::new(0),
    });

    let mut a = Some(t.serve(&addr_a).await);
    let _b = t.serve(&addr_b).await;
    let endpoint =
        t.post_idempotent("/v1/webhook_endpoints", "endpoint", &json!({"url": hook_url})).await;
    assert_eq!(endpoint.status, 201, "{endpoint:?}");

    // The load: clients start 25 ms apart and every channel call takes 200 ms, so creates,
    // payments, notifications, refunds and deliveries are all under way when A dies.
    for channel in ["alipay", "wechat"] {
        let url = format!("{}/_sandbox/faults", t.mock(channel));
        let res = t.http.post(url).json(&json!({"latency_ms": 200})).send().await.unwrap();
        assert!(res.status().is_success());
    }
    let created = Arc::new(AtomicUsize::new(0));
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..CLIENTS {
        let (t, created) = (t.clone(), created.clone());
        clients.spawn(async move {
            tokio::time::sleep(Duration::from_millis(25 * u64::try_from(i).unwrap())).await;
            t.client(i, created).await
        });
    }
    // Once a third of the payments exist, SIGKILL A; once two thirds do, start it again.
    while created.load(Ordering::SeqCst) < CLIENTS / 3 {
        t.check_deadline("a third of the payments to be created");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(a.take());
    while created.load(Ordering::SeqCst) < CLIENTS * 2 / 3 {
        t.check_deadline("two thirds of the payments to be created");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _a = t.serve(&addr_a).await;
    let mut outcomes = Vec::new();
    while let Some(done) = clients.join_next().await {
        outcomes.push(done.unwrap());
    }
    outcomes.sort_by_key(|o| o.order_no.clone());
    let loaded = started.elapsed();
    // The kill cut requests in flight (every channel call takes 200 ms, so A had some).
    assert!(t.unanswered.load(Ordering::Relaxed) > 0, "the kill cut no request: nothing shown");

    // Each payment ends in one final state, the channel's; one payment and one channel order
    // per merchant order; the refunds at the channel add up to exactly what paymux refunded.
    let mut orders_by_subject: HashMap<String, usize> = HashMap::new();
    for channel in ["alipay", "wechat"] {
        for o in t.mock_orders(channel).await {
            let subject = if channel == "alipay" { &o["subject"] } else { &o["description"] };
            *orders_by_subject.entry(subject.as_str().unwrap().to_owned()).or_default() += 1;
        }
    }
    for o in &outcomes {
        let payment = t.get(&format!("/v1/payments/{}", o.payment_id)).await;
        let status = payment["status"].as_str().unwrap();
        let order = t.mock_order(o.channel, &o.channel_order_no).await;
        assert!(
            mock_agrees(o.channel, order.as_ref(), status),
            "{}: paymux says {status}, the channel {order:?}",
            o.order_no
        );
        let same_order = t.get(&format!("/v1/payments?merchant_order_no={}", o.order_no)).await;
        assert_eq!(same_order["data"].as_array().unwrap().len(), 1, "{}: {same_order}", o.order_no);
        let at_channel = orders_by_subject.get(&o.order_no).copied().unwrap_or(0);
        assert_eq!(at_channel, usize::from(order.is_some()), "{}: channel orders", o.order_no);

        let refunds = t.get(&format!("/v1/payments/{}/refunds", o.payment_id)).await;
        let refunds = refunds["data"].as_array().unwrap();
        let refunded = if o.paid { REFUND } else { 0 };
        assert_eq!(refunds.len(), usize::from(o.paid), "{}: {refunds:?}", o.order_no);
        if let Some(id) = &o.refund_id {
            assert_eq!(refunds[0]["id"], id.as_str());
        }
        assert_eq!(payment["amount_refunded"], refunded, "{}: {payment}", o.order_no);
        if let Some(order) = &order {
            assert_eq!(
                mock_refunded(o.channel, order),
                (refunded, refunds.len()),
                "{}: refunds at the channel {order}",
                o.order_no
            );
        }
    }
    let paid = outcomes.iter().filter(|o| o.paid).count();

    // Every Idempotency-Key answers again exactly what it first answered.
    for o in &outcomes {
        for k in &o.keyed {
            let again = t.post_idempotent(&k.path, &k.key, &k.body).await;
            assert_eq!(again, k.answer, "{} {} replayed", k.path, k.key);
        }
    }

    // Every event, once per change: one payment.succeeded per paid payment, one refund.succeeded
    // per refund, nothing else but closes ...
    let events = t.events().await;
    let mut per_object: HashMap<(String, String), usize> = HashMap::new();
    for e in &events {
        let kind = e["type"].as_str().unwrap().to_owned();
        let object = e["data"]["object"]["id"].as_str().unwrap().to_owned();
        *per_object.entry((kind, object)).or_default() += 1;
    }
    for o in &outcomes {
        let paid_events = per_object.get(&("payment.succeeded".into(), o.payment_id.clone()));
        assert_eq!(paid_events.copied().unwrap_or(0), usize::from(o.paid), "{}", o.order_no);
        if let Some(r) = &o.refund_id {
            let n = per_object.get(&("refund.succeeded".into(), r.clone())).copied();
            assert_eq!(n, Some(1), "{}: refund events", o.order_no);
        }
    }
    assert!(
        per_object.keys().all(|(kind, _)| matches!(
            kind.as_str(),
            "payment.succeeded" | "refund.succeeded" | "payment.closed"
        )),
        "unexpected events: {per_object:?}"
    );
    // ... and each delivered to the endpoint at least once, whatever instance held it when A died.
    let ids: HashSet<String> =
        events.iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect();
    loop {
        let missing: Vec<String> = {
            let received = t.received.lock().unwrap();
            ids.iter().filter(|id| !received.contains_key(*id)).cloned().collect()
        };
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < t.deadline,
            "{} of {} events never delivered: {missing:?}",
            missing.len(),
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let duplicates = t.received.lock().unwrap().values().filter(|n| **n > 1).count();
    let recovered =
        outcomes.iter().flat_map(|o| &o.keyed).filter(|k| k.answer.status == 200).count();
    eprintln!(
        "cluster: {CLIENTS} orders ({paid} paid), {} POSTs unanswered and sent again, {} told \
         in flight, {recovered} answered by recovery; {} events, {duplicates} delivered more \
         than once; load {:.1} s, all {:.1} s",
        t.unanswered.load(Ordering::Relaxed),
        t.in_flight.load(Ordering::Relaxed),
        ids.len(),
        loaded.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

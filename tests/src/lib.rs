//! The end-to-end harness: [`TestApp::spawn`] starts exactly what `paymux up` starts (the gateway,
//! the Alipay, WeChat Pay and UnionPay mocks, a fresh store) on free loopback ports, and hands back
//! a client that talks to it the way a merchant's backend would.
//!
//! The store is a fresh SQLite file, or, with `PAYMUX_E2E_DATABASE=postgres`, a fresh PostgreSQL
//! database on the machine's server (dropped after the test): `scripts/test.sh` runs the
//! end-to-end suites both ways.
//!
//! ```no_run
//! # async fn demo() {
//! let app = paymux_e2e::TestApp::spawn().await;
//! let (status, payment) = app.create_payment("alipay", "qr", "order-1", 1000).await;
//! assert_eq!(status, 201);
//! # let _ = payment; }
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

pub mod browser;
pub mod db;
pub mod pg;
pub mod proxy;

use paymux_cli::sandbox::{Sandbox, SandboxOptions, start};
use serde_json::{Value, json};

/// A running sandbox and an HTTP client for it.
#[derive(Debug)]
pub struct TestApp {
    pub sandbox: Sandbox,
    pub http: reqwest::Client,
    pub gateway: String,
    pub api_key: String,
    pub data_dir: tempfile::TempDir,
    /// The PostgreSQL database of this test, when it runs on PostgreSQL.
    pub postgres: Option<pg::PgDatabase>,
}

/// Whether the end-to-end tests run on PostgreSQL (`PAYMUX_E2E_DATABASE=postgres`).
pub fn on_postgres() -> bool {
    std::env::var("PAYMUX_E2E_DATABASE").is_ok_and(|v| v == "postgres")
}

/// Notification retries in tests: milliseconds, not hours.
pub fn fast_retries() -> Vec<Duration> {
    [50, 100, 200, 400, 800].into_iter().map(Duration::from_millis).collect()
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// Starts the sandbox after `adjust` has had its say on the options.
    pub async fn spawn_with(adjust: impl FnOnce(&mut SandboxOptions)) -> Self {
        let data_dir = tempfile::tempdir().unwrap();
        let mut opts = SandboxOptions::new(data_dir.path());
        opts.gateway_port = 0;
        opts.alipay_port = 0;
        opts.wechat_port = 0;
        opts.unionpay_port = 0;
        opts.notify_delays = Some(fast_retries());
        opts.channel_timeout = Duration::from_secs(3);
        let postgres = if on_postgres() { Some(pg::PgDatabase::create().await) } else { None };
        if let Some(db) = &postgres {
            opts.database_url = Some(db.url.parse().unwrap());
        }
        adjust(&mut opts);
        let sandbox = start(opts).await.unwrap();
        let gateway = sandbox.manifest.gateway_url.clone();
        let api_key = sandbox.manifest.api_key.clone();
        let http = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
        Self { sandbox, http, gateway, api_key, data_dir, postgres }
    }

    pub fn alipay_mock(&self) -> &str {
        &self.sandbox.manifest.channels.alipay.mock_url
    }

    pub fn wechat_mock(&self) -> &str {
        &self.sandbox.manifest.channels.wechat.mock_url
    }

    pub fn unionpay_mock(&self) -> &str {
        &self.sandbox.manifest.channels.unionpay.mock_url
    }

    /// The sandbox mock of `channel` ("alipay", "wechat" or "unionpay").
    pub fn mock_url(&self, channel: &str) -> &str {
        match channel {
            "alipay" => self.alipay_mock(),
            "wechat" => self.wechat_mock(),
            "unionpay" => self.unionpay_mock(),
            other => panic!("no sandbox mock for channel {other:?}"),
        }
    }

    /// A request to the gateway with this app's API key.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.call_as(&self.api_key, method, path, body).await
    }

    pub async fn call_as(
        &self,
        key: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.gateway)).bearer_auth(key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, v)
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    pub async fn create_payment(
        &self,
        channel: &str,
        method: &str,
        order_no: &str,
        amount: i64,
    ) -> (u16, Value) {
        let mut body = json!({
            "merchant_order_no": order_no,
            "amount": amount,
            "currency": "CNY",
            "subject": "Test order",
            "channel": channel,
            "method": method,
        });
        if method == "jsapi" || method == "mini_program" {
            body["payer"] = json!({"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"});
        }
        if method == "h5" {
            body["client_ip"] = json!("203.0.113.7");
        }
        self.post("/v1/payments", body).await
    }

    /// The buyer pays at the channel's mock (its control API).
    pub async fn pay_at_mock(&self, channel: &str, channel_order_no: &str) -> u16 {
        self.mock_control(channel, channel_order_no, "pay").await
    }

    pub async fn mock_control(&self, channel: &str, channel_order_no: &str, action: &str) -> u16 {
        let base = self.mock_url(channel);
        let url = format!("{base}/_sandbox/orders/{channel_order_no}/{action}");
        self.http.post(url).send().await.unwrap().status().as_u16()
    }

    pub async fn mock_order(&self, channel: &str, channel_order_no: &str) -> Value {
        let base = self.mock_url(channel);
        let url = format!("{base}/_sandbox/orders/{channel_order_no}");
        self.http.get(url).send().await.unwrap().json().await.unwrap()
    }

    /// Polls the channel mock's view of an order until `done` holds, for at most `secs` seconds;
    /// returns that view. A mock records a notification's outcome after the gateway has answered
    /// it, so the gateway's state says nothing yet about the mock's log: wait on the log itself.
    pub async fn wait_mock_order(
        &self,
        channel: &str,
        channel_order_no: &str,
        secs: u64,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let order = self.mock_order(channel, channel_order_no).await;
            if done(&order) {
                return order;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "timed out waiting on the {channel} mock's order {channel_order_no}: {order}"
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the WeChat mock has recorded the outcome of the order's first notification
    /// send, and returns the order's delivery log.
    pub async fn wechat_deliveries(&self, channel_order_no: &str) -> Value {
        let order = self
            .wait_mock_order("wechat", channel_order_no, 10, |o| {
                o["deliveries"][0]["outcome"].is_string()
            })
            .await;
        order["deliveries"].clone()
    }

    /// Every order the channel's mock holds.
    pub async fn mock_orders(&self, channel: &str) -> Vec<Value> {
        let base = self.mock_url(channel);
        let v: Value = self
            .http
            .get(format!("{base}/_sandbox/orders"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["orders"].as_array().cloned().unwrap_or_default()
    }

    /// A POST with an `Idempotency-Key`.
    pub async fn call_with_key(&self, key: &str, path: &str, body: Value) -> (u16, Value) {
        let res = self
            .http
            .post(format!("{}{path}", self.gateway))
            .bearer_auth(&self.api_key)
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap())
    }

    /// A connection to the gateway's store, for tests that set up what only time, a crash or an
    /// old defect could leave behind, and read what the API does not show.
    pub async fn db(&self) -> db::TestDb {
        match &self.postgres {
            Some(pg) => db::TestDb::connect(&pg.url).await,
            None => {
                let path = self.data_dir.path().join("paymux.db");
                db::TestDb::connect(&format!("sqlite://{}", path.display())).await
            }
        }
    }

    /// Moves a payment's expiry to now, as if its time had run out (the sweeper then closes it).
    pub async fn expire_now(&self, payment_id: &str) {
        let pool = self.db().await;
        let now_ms = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
        let sql = "UPDATE payments SET expires_at = ? WHERE id = ?";
        pool.execute(sql, &[(now_ms - 1).into(), payment_id.into()]).await;
        pool.close().await;
    }

    pub async fn set_faults(&self, channel: &str, faults: Value) {
        let base = self.mock_url(channel);
        let res =
            self.http.post(format!("{base}/_sandbox/faults")).json(&faults).send().await.unwrap();
        assert!(res.status().is_success(), "setting faults: {}", res.status());
    }

    /// POSTs `body` to a mock's control API (`/_sandbox/...`).
    pub async fn mock_post(&self, channel: &str, path: &str, body: Value) {
        let base = self.mock_url(channel);
        let res = self.http.post(format!("{base}{path}")).json(&body).send().await.unwrap();
        assert!(res.status().is_success(), "POST {path} at the {channel} mock: {}", res.status());
    }

    /// GETs a mock's control API (`/_sandbox/...`).
    pub async fn mock_get(&self, channel: &str, path: &str) -> Value {
        let base = self.mock_url(channel);
        let res = self.http.get(format!("{base}{path}")).send().await.unwrap();
        assert!(res.status().is_success(), "GET {path} at the {channel} mock: {}", res.status());
        res.json().await.unwrap()
    }

    pub async fn clear_faults(&self, channel: &str) {
        let base = self.mock_url(channel);
        self.http.delete(format!("{base}/_sandbox/faults")).send().await.unwrap();
    }

    /// Polls `path` until `done` holds, for at most `secs` seconds; returns the last body.
    pub async fn wait_for(&self, path: &str, secs: u64, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let (status, body) = self.get(path).await;
            if status == 200 && done(&body) {
                return body;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("timed out waiting on {path}; last: {status} {body}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// [`TestApp::wait_for`] with another API key.
    pub async fn wait_for_as(&self, key: &str, path: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (status, body) = self.call_as(key, reqwest::Method::GET, path, None).await;
            if status == 200 && done(&body) {
                return body;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("timed out waiting on {path}; last: {status} {body}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for a payment to reach `status`.
    pub async fn wait_payment(&self, id: &str, status: &str) -> Value {
        self.wait_for(&format!("/v1/payments/{id}"), 10, |p| p["status"] == status).await
    }

    /// Posts a raw notification to the gateway's callback for `channel`'s sandbox account.
    pub async fn post_callback(
        &self,
        channel: &str,
        headers: &[(&str, String)],
        content_type: &str,
        body: Vec<u8>,
    ) -> (u16, String) {
        let channels = &self.sandbox.manifest.channels;
        let account = match channel {
            "alipay" => &channels.alipay.account_id,
            "wechat" => &channels.wechat.account_id,
            "unionpay" => &channels.unionpay.account_id,
            other => panic!("no sandbox account for channel {other:?}"),
        };
        let mut req = self
            .http
            .post(format!("{}/callbacks/{channel}/{account}", self.gateway))
            .header("content-type", content_type)
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let res = req.send().await.unwrap();
        (res.status().as_u16(), res.text().await.unwrap())
    }

    /// Every event the merchant can see, oldest first.
    pub async fn events(&self) -> Vec<Value> {
        let (_, body) = self.get("/v1/events?limit=100").await;
        body["data"].as_array().cloned().unwrap_or_default()
    }

    /// A second merchant with its own API key, in the same store.
    pub async fn other_merchant_key(&self) -> String {
        let store = &self.sandbox.store;
        let merchant = store.create_merchant("Other").await.unwrap();
        let key = format!("sk_test_{}", paymux_crypto::random_alphanumeric(32));
        store
            .add_api_key(&paymux_store::NewApiKey {
                merchant_id: merchant,
                key_hash: paymux_crypto::sha256_hex(key.as_bytes()),
                prefix: key[..12].to_owned(),
                livemode: false,
            })
            .await
            .unwrap();
        key
    }

    /// The Alipay mock's private key (the sandbox's "Alipay"), for tests that act as Alipay.
    pub fn alipay_channel_key(&self) -> paymux_crypto::RsaPrivateKey {
        let path = self.data_dir.path().join("keys/alipay-mock-private.pem");
        paymux_crypto::RsaPrivateKey::load(&std::fs::read_to_string(path).unwrap()).unwrap()
    }
}

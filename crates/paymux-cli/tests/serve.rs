//! `paymux serve` as an operator runs it: from a TOML file with environment overrides, with a
//! channel account declared in the file, stopped by SIGTERM. The sandbox's mocks run in this test
//! process (the sandbox's own gateway does not run), so the channel outlives the gateway.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use paymux_cli::sandbox::{Sandbox, SandboxOptions, start};
use paymux_core::{AccountId, MerchantId};
use paymux_store::SqliteStore;
use paymux_store::prelude::*;
use serde_json::{Value, json};

/// The sandbox's mocks, a fresh store for `paymux serve` with one merchant made by
/// `paymux admin create-merchant`, and a config file declaring that merchant's Alipay account on
/// the Alipay mock.
struct Operator {
    sandbox: Sandbox,
    _dir: tempfile::TempDir,
    http: reqwest::Client,
    database: PathBuf,
    merchant: MerchantId,
    api_key: String,
    config: PathBuf,
    listen: String,
}

impl Operator {
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
        let database = dir.path().join("serve.db");

        let out = paymux()
            .args(["admin", "create-merchant", "--name", "Shop", "--database-url"])
            .arg(format!("sqlite://{}", database.display()))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let stdout = String::from_utf8(out.stdout).unwrap();
        let word = |prefix: &str, n: usize| {
            let line = stdout.lines().find(|l| l.starts_with(prefix)).expect(prefix);
            line.split_whitespace().nth(n).unwrap().to_owned()
        };
        let merchant: MerchantId = word("merchant ", 1).parse().unwrap();
        let api_key = word("api key ", 2);

        // The sandbox's gateway port is free: `paymux serve` takes it.
        let listen = sandbox.manifest.gateway_url.trim_start_matches("http://").to_owned();
        let alipay = &sandbox.manifest.channels.alipay;
        let config = dir.path().join("paymux.toml");
        // Key paths are relative to the file; `listen` is an address this machine does not have,
        // so the gateway comes up only if PAYMUX_LISTEN overrides it.
        let text = format!(
            r#"
listen = "192.0.2.1:8080"
public_url = "{public_url}"
database_url = "sqlite://{database}"
channel_timeout_secs = 10
shutdown_timeout_secs = 20

[sweeper]
interval_ms = 200

[[accounts]]
id = "{account}"
merchant = "{merchant}"
mode = "test"
channel = "alipay"
base_url = "{gateway_do}"
app_id = "{app_id}"
seller_id = "{seller_id}"
app_private_key_file = "keys/alipay-app-private.pem"
alipay_public_key_file = "keys/alipay-public.pem"
"#,
            public_url = sandbox.manifest.gateway_url,
            database = database.display(),
            account = AccountId::new(),
            gateway_do = alipay.gateway_do,
            app_id = alipay.app_id,
            seller_id = alipay.seller_id,
        );
        std::fs::write(&config, text).unwrap();
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
        Self { sandbox, _dir: dir, http, database, merchant, api_key, config, listen }
    }

    fn gateway(&self) -> &str {
        &self.sandbox.manifest.gateway_url
    }

    fn alipay_mock(&self) -> &str {
        &self.sandbox.manifest.channels.alipay.mock_url
    }

    /// `paymux serve --config <file>` with `PAYMUX_LISTEN` set, once `/readyz` answers 200.
    async fn serve(&self) -> Gateway {
        let child = paymux()
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            .env("PAYMUX_LISTEN", &self.listen)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the paymux binary starts");
        let mut gateway = Gateway(child);
        for _ in 0..400 {
            if let Ok(r) = self.http.get(format!("{}/readyz", self.gateway())).send().await
                && r.status() == 200
            {
                return gateway;
            }
            if let Some(status) = gateway.0.try_wait().unwrap() {
                panic!("paymux serve exited at start: {status}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("paymux serve did not become ready");
    }

    async fn create_payment(&self, order_no: &str) -> reqwest::Result<reqwest::Response> {
        let body = json!({"merchant_order_no": order_no, "amount": 1000, "currency": "CNY",
                          "subject": "s", "channel": "alipay", "method": "qr"});
        self.http
            .post(format!("{}/v1/payments", self.gateway()))
            .bearer_auth(&self.api_key)
            .json(&body)
            .send()
            .await
    }

    async fn get(&self, path: &str) -> Value {
        let res = self
            .http
            .get(format!("{}{path}", self.gateway()))
            .bearer_auth(&self.api_key)
            .send()
            .await
            .unwrap();
        res.json().await.unwrap()
    }

    async fn wait(&self, what: &str, mut done: impl AsyncFnMut() -> bool) {
        for _ in 0..400 {
            if done().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("timed out waiting for {what}");
    }

    async fn set_alipay_faults(&self, faults: Value) {
        let url = format!("{}/_sandbox/faults", self.sandbox.manifest.channels.alipay.mock_url);
        let res = self.http.post(url).json(&faults).send().await.unwrap();
        assert!(res.status().is_success(), "{}", res.status());
    }
}

/// The binary, with nothing inherited that would configure it behind the test's back.
fn paymux() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_paymux"));
    for var in [
        "PAYMUX_CONFIG",
        "PAYMUX_DATABASE",
        "PAYMUX_DATABASE_URL",
        "PAYMUX_LISTEN",
        "PAYMUX_PUBLIC_URL",
        "PAYMUX_FAILPOINT",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("RUST_LOG", "warn").stdin(Stdio::null());
    cmd
}

/// A `paymux serve` child process, killed when dropped so a failing test leaves none behind.
struct Gateway(Child);

impl Gateway {
    fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits for the process to exit on its own.
    async fn exit_status(&mut self) -> ExitStatus {
        for _ in 0..600 {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("paymux serve did not exit after SIGTERM");
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn open(database: &Path) -> SqliteStore {
    SqliteStore::open(database).await.unwrap()
}

#[tokio::test]
async fn serve_from_a_config_file_with_an_env_override_takes_payments_on_the_configured_account() {
    let op = Operator::new().await;
    let _gateway = op.serve().await;

    let res = op.create_payment("o-config").await.unwrap();
    assert_eq!(res.status(), 201);
    let payment: Value = res.json().await.unwrap();
    assert_eq!(payment["status"], "pending");
    assert_eq!(payment["livemode"], false);
    let no = payment["channel_order_no"].as_str().unwrap();
    assert!(
        payment["action"]["code_url"].as_str().unwrap().starts_with(op.alipay_mock()),
        "{payment}"
    );

    // The buyer pays; the mock's notification, sent to the configured public URL, verifies with
    // the configured keys.
    let pay = format!("{}/_sandbox/orders/{no}/pay", op.alipay_mock());
    assert!(op.http.post(pay).send().await.unwrap().status().is_success());
    let path = format!("/v1/payments/{}", payment["id"].as_str().unwrap());
    op.wait("the payment to succeed", async || op.get(&path).await["status"] == "succeeded").await;
}

#[tokio::test]
async fn sigterm_lets_a_request_in_flight_finish_commits_it_and_exits_zero() {
    let op = Operator::new().await;
    let mut gateway = op.serve().await;
    // Every Alipay answer now takes 3 s: the create below is at the channel when SIGTERM comes.
    op.set_alipay_faults(json!({"latency_ms": 3000})).await;
    let call = tokio::spawn({
        let op_http = op.http.clone();
        let url = format!("{}/v1/payments", op.gateway());
        let key = op.api_key.clone();
        async move {
            let body = json!({"merchant_order_no": "o-slow", "amount": 1000, "currency": "CNY",
                              "subject": "s", "channel": "alipay", "method": "qr"});
            op_http.post(url).bearer_auth(key).json(&body).send().await
        }
    });
    // The payment is written before the channel is called: once it is there, the call is out.
    let store = open(&op.database).await;
    op.wait("the payment to be written", async || {
        store.payment_by_order_no(op.merchant, "o-slow").await.unwrap().is_some()
    })
    .await;
    gateway.sigterm();

    let res = call.await.unwrap().expect("the request in flight is answered");
    assert_eq!(res.status(), 201);
    let answered: Value = res.json().await.unwrap();
    assert_eq!(answered["action"]["type"], "qr_code", "{answered}");
    let status = gateway.exit_status().await;
    assert!(status.success(), "exit status {status}");

    let stored = store.payment_by_order_no(op.merchant, "o-slow").await.unwrap().unwrap();
    assert_eq!(stored.id.to_string(), answered["id"]);
    assert!(stored.action.is_some(), "the channel's answer was committed before the exit");
    assert!(op.http.get(format!("{}/healthz", op.gateway())).send().await.is_err());
}

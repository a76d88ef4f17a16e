//! The `paymux` binary as a user runs it: what it says when it cannot start, and what
//! `paymux up --wechat-key-mode` sets up.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use paymux_core::{Channel, ChannelOrderNo, Currency, Money, PaymentMethod, PaymentRef};
use serde_json::Value;

fn paymux(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_paymux"))
        .args(args)
        .env("RUST_LOG", "warn")
        // A backtrace must not appear even when one is asked for.
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .output()
        .expect("the paymux binary runs")
}

/// The run failed, and said so on exactly one line of stderr that names `flag`.
fn one_line_naming(out: &Output, flag: &str) -> String {
    assert!(!out.status.success(), "exit status {:?}", out.status);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(lines[0].contains(flag), "names {flag}: {stderr}");
    assert!(!stderr.contains("backtrace"), "{stderr}");
    lines[0].to_owned()
}

fn taken_port() -> (std::net::TcpListener, String) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    (listener, port)
}

#[test]
fn up_on_a_port_in_use_prints_one_line_naming_the_port_flag() {
    let dir = tempfile::tempdir().unwrap();
    let (_held, port) = taken_port();
    let data = dir.path().to_str().unwrap();
    let out = paymux(&[
        "up",
        "--data-dir",
        data,
        "--gateway-port",
        &port,
        "--alipay-port",
        "0",
        "--wechat-port",
        "0",
        "--unionpay-port",
        "0",
    ]);
    let line = one_line_naming(&out, "--gateway-port");
    assert!(line.contains(&port), "{line}");
}

#[test]
fn serve_on_a_port_in_use_prints_one_line_naming_the_listen_flag() {
    let dir = tempfile::tempdir().unwrap();
    let (_held, port) = taken_port();
    let db = dir.path().join("paymux.db");
    let listen = format!("127.0.0.1:{port}");
    let out = paymux(&[
        "serve",
        "--database",
        db.to_str().unwrap(),
        "--listen",
        &listen,
        "--public-url",
        "http://127.0.0.1",
    ]);
    one_line_naming(&out, "--listen");
}

#[test]
fn up_with_a_data_dir_it_cannot_use_prints_one_line_naming_the_data_dir_flag() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-directory");
    std::fs::write(&file, "a file where the data directory should be").unwrap();
    let out = paymux(&[
        "up",
        "--data-dir",
        file.to_str().unwrap(),
        "--gateway-port",
        "0",
        "--alipay-port",
        "0",
        "--wechat-port",
        "0",
        "--unionpay-port",
        "0",
    ]);
    one_line_naming(&out, "--data-dir");
}

#[test]
fn a_bad_flag_value_prints_one_line_naming_the_flag() {
    one_line_naming(&paymux(&["up", "--wechat-key-mode", "sideways"]), "--wechat-key-mode");
    one_line_naming(&paymux(&["up", "--gateway-port", "eighty"]), "--gateway-port");
    one_line_naming(&paymux(&["serve"]), "--public-url");
}

#[test]
fn serve_on_a_database_it_cannot_open_prints_one_line_naming_the_database_flag() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("no-such-directory/paymux.db");
    let out = paymux(&[
        "serve",
        "--database-url",
        db.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--public-url",
        "http://127.0.0.1",
    ]);
    let line = one_line_naming(&out, "--database-url");
    assert!(line.contains(db.to_str().unwrap()), "{line}");
}

#[test]
fn serve_on_an_unreachable_postgres_says_so_on_one_line_and_never_prints_the_password() {
    // Nothing listens on port 1: the connection is refused at once.
    let out = paymux(&[
        "serve",
        "--database-url",
        "postgres://paymux:hunter2@127.0.0.1:1/paymux",
        "--public-url",
        "http://127.0.0.1",
    ]);
    let line = one_line_naming(&out, "--database-url");
    assert!(!line.contains("hunter2"), "{line}");
}

#[test]
fn serve_with_a_key_file_it_cannot_read_prints_one_line_naming_the_file_and_setting() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("paymux.toml");
    std::fs::write(
        &config,
        r#"
public_url = "https://pay.example.com"
[[accounts]]
id = "acct_0193a7c2e4f87b1d9c3e5a6b7c8d9e0f"
merchant = "mch_0193a7c2e4f87b1d9c3e5a6b7c8d9e0f"
mode = "live"
channel = "alipay"
base_url = "https://openapi.alipay.com/gateway.do"
app_id = "2021000000000001"
app_private_key_file = "keys/app-private.pem"
alipay_public_key_file = "keys/alipay-public.pem"
"#,
    )
    .unwrap();
    let out = paymux(&["serve", "--config", config.to_str().unwrap()]);
    let line = one_line_naming(&out, "app_private_key_file");
    assert!(
        line.contains(&dir.path().join("keys/app-private.pem").display().to_string()),
        "{line}"
    );
}

#[test]
fn serve_with_a_key_that_does_not_load_names_the_file_it_came_from() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("paymux.db");
    let out = Command::new(env!("CARGO_BIN_EXE_paymux"))
        .args(["admin", "create-merchant", "--name", "Shop", "--database"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let merchant =
        String::from_utf8(out.stdout).unwrap().split_whitespace().nth(1).unwrap().to_owned();
    std::fs::create_dir(dir.path().join("keys")).unwrap();
    std::fs::write(dir.path().join("keys/app.pem"), "not a key").unwrap();
    std::fs::write(dir.path().join("keys/alipay.pem"), "not a key either").unwrap();
    let config = dir.path().join("paymux.toml");
    std::fs::write(
        &config,
        format!(
            r#"
public_url = "https://pay.example.com"
database_url = "{db}"
[[accounts]]
id = "acct_0193a7c2e4f87b1d9c3e5a6b7c8d9e0f"
merchant = "{merchant}"
mode = "live"
channel = "alipay"
base_url = "https://openapi.alipay.com/gateway.do"
app_id = "2021000000000001"
app_private_key_file = "keys/app.pem"
alipay_public_key_file = "keys/alipay.pem"
"#,
            db = db.display()
        ),
    )
    .unwrap();
    let out = paymux(&["serve", "--config", config.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The engine logs the refused account too; the last line is the error.
    let last = stderr.lines().last().unwrap();
    assert!(last.starts_with("paymux: "), "{stderr}");
    assert!(last.contains("app_private_key_file"), "{last}");
    assert!(last.contains(&dir.path().join("keys/app.pem").display().to_string()), "{last}");
}

#[test]
fn migrate_brings_a_new_store_up_to_date_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("paymux.db");
    let out = paymux(&["migrate", "--database-url", &format!("sqlite://{}", db.display())]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(db.exists());
}

/// A `paymux up` child process, killed when dropped.
struct Up(Child);

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn up(dir: &Path, key_mode: Option<&str>) -> (Up, Value) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_paymux"));
    cmd.arg("up").arg("--data-dir").arg(dir);
    cmd.args(["--gateway-port", "0", "--alipay-port", "0", "--wechat-port", "0"]);
    cmd.args(["--unionpay-port", "0"]);
    if let Some(mode) = key_mode {
        cmd.args(["--wechat-key-mode", mode]);
    }
    let child = Up(cmd
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap());
    // sandbox.json is written once every server is bound.
    let manifest = dir.join("sandbox.json");
    for _ in 0..600 {
        if let Ok(text) = std::fs::read_to_string(&manifest)
            && let Ok(v) = serde_json::from_str::<Value>(&text)
        {
            return (child, v);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("paymux up wrote no sandbox.json");
}

#[tokio::test]
async fn up_stops_on_sigterm_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let (mut up, manifest) = up(dir.path(), None);
    let gateway = manifest["gateway_url"].as_str().unwrap();
    let ready = reqwest::get(format!("{gateway}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    let kill = Command::new("kill").args(["-TERM", &up.0.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let status = up.0.wait().unwrap();
    assert!(status.success(), "exit status {status}");
}

#[test]
fn up_runs_the_wechat_mock_in_both_key_modes_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let (_up, manifest) = up(dir.path(), None);
    assert_eq!(manifest["channels"]["wechat"]["key_mode"], "both");
}

#[tokio::test]
async fn a_public_key_mode_client_of_up_never_calls_v3_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let (_up, manifest) = up(dir.path(), Some("public-key"));
    let wx = &manifest["channels"]["wechat"];
    assert_eq!(wx["key_mode"], "public-key");
    let text = |key: &str| wx[key].as_str().unwrap().to_owned();
    let file = |key: &str| std::fs::read_to_string(text(key)).unwrap();
    // A merchant's client configured from sandbox.json the way a public-key merchant is.
    let config = paymux_wechat::WechatAccountConfig {
        mchid: text("mchid"),
        appid: text("appid"),
        merchant_serial: text("merchant_serial"),
        merchant_private_key: file("merchant_private_key"),
        apiv3_key: text("apiv3_key"),
        base_url: text("mock_url"),
        platform_public_key_id: Some(text("platform_public_key_id")),
        platform_public_key: Some(file("platform_public_key")),
        max_share_bps: None,
    };
    let client = paymux_wechat::WechatChannel::new(&config, Duration::from_secs(20)).unwrap();
    let now = time::OffsetDateTime::now_utc();
    let order = paymux_core::CreatePayment {
        channel_order_no: ChannelOrderNo::generate(),
        amount: Money::new(100, Currency::Cny).unwrap(),
        subject: "public-key mode".into(),
        method: PaymentMethod::Qr,
        created_at: now,
        expires_at: now + time::Duration::minutes(30),
        notify_url: "http://127.0.0.1:9/callbacks".into(),
        return_url: None,
        client_ip: None,
        payer_openid: None,
        auth_code: None,
        hold: false,
    };
    client.create(&order).await.expect("the answer verifies with the public key");
    let payment = PaymentRef {
        channel_order_no: order.channel_order_no.clone(),
        channel_trade_no: None,
        amount: order.amount,
        created_at: now,
        expires_at: order.expires_at,
        channel_data: serde_json::json!({}),
    };
    client.query(&payment).await.expect("the answer verifies with the public key");
    let keys: Value = reqwest::get(format!("{}/_sandbox/keys", text("mock_url")))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(keys["certificate_downloads"], 0, "{keys}");
}

#[test]
fn merchant_settings_turn_the_automatic_refund_of_duplicates_off_and_refuse_an_unknown_merchant() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("paymux.db");
    let admin = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_paymux"))
            .arg("admin")
            .args(args)
            .arg("--database")
            .arg(&db)
            .output()
            .unwrap()
    };
    let out = admin(&["create-merchant", "--name", "Shop"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let merchant =
        String::from_utf8(out.stdout).unwrap().split_whitespace().nth(1).unwrap().to_owned();
    let out =
        admin(&["merchant-settings", "--merchant", &merchant, "--duplicate-auto-refund", "false"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("duplicate_auto_refund false"));
    let merchant_row = tokio::runtime::Runtime::new().unwrap().block_on(async {
        use paymux_store::MerchantStore as _;
        let store = paymux_store::SqliteStore::open(&db).await.unwrap();
        store.merchant(merchant.parse().unwrap()).await.unwrap().unwrap()
    });
    assert!(!merchant_row.duplicate_auto_refund);
    let unknown = "mch_0193a7c2e4f87b1d9c3e5a6b7c8d9e0f";
    let out =
        admin(&["merchant-settings", "--merchant", unknown, "--duplicate-auto-refund", "true"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("merchant"), "names what is missing");
}

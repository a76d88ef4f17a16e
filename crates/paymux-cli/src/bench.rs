//! `paymux bench`: the gateway measured from outside, against floors measured in the same run.
//!
//! It starts the sandbox (the gateway and the mocks) on a temporary store and drives it over
//! HTTP/1.1 keep-alive from a load generator in this process, latencies in an HDR histogram. Each
//! rate is printed beside what bounds it on this machine, measured in the same run, because a
//! shared machine's speed changes from one minute to the next:
//! - the create floor: the signatures one create costs on both sides (the gateway signs the
//!   request and verifies the answer; the channel verifies and signs), in a tight loop on every
//!   core;
//! - the callback floor: one signature verification and one single-row durable commit on a store
//!   of the same kind with the same durability settings, one after the other;
//! - the direct baseline: the same channel call made straight to the mock by a client that signs
//!   and verifies as a merchant's SDK would (paymux's own adapter, without the gateway), whose
//!   latency the gateway's is compared with.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use paymux_core::{
    AccountId, Channel, ChannelKind, ChannelOrderNo, CreatePayment, Currency, Money, PaymentMethod,
};
use paymux_crypto::{RsaPrivateKey, RsaPublicKey};
use serde::Serialize;
use serde_json::json;
use time::OffsetDateTime;

use crate::config::DatabaseUrl;
use crate::sandbox::{self, Sandbox, SandboxOptions};

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The store: a fresh SQLite file in a temporary directory when `None`.
    pub database_url: Option<DatabaseUrl>,
    /// How long each closed-loop run warms up, then measures.
    pub warmup: Duration,
    pub measure: Duration,
    /// The concurrent clients of the create runs.
    pub clients: Vec<usize>,
    /// The clients of the slow-channel run.
    pub slow_clients: usize,
    /// How many notifications the callback run replays.
    pub callbacks: usize,
    /// Whether to draw a progress bar (on a terminal).
    pub progress: bool,
}

impl BenchOptions {
    /// About a minute: 16 clients at most for creates, short runs.
    pub fn quick() -> Self {
        Self {
            database_url: None,
            warmup: Duration::from_millis(300),
            measure: Duration::from_millis(1500),
            clients: vec![1, 16],
            slow_clients: 256,
            callbacks: 1500,
            progress: true,
        }
    }

    /// The full run: 1, 16 and 256 clients, longer runs.
    pub fn full() -> Self {
        Self {
            warmup: Duration::from_secs(2),
            measure: Duration::from_secs(8),
            clients: vec![1, 16, 256],
            callbacks: 10_000,
            ..Self::quick()
        }
    }
}

/// The machine the numbers are from.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub cpu_model: String,
}

/// One measured run.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// `create`, `callback`, `slow_channel`, `open_loop`, or a floor: `create_floor`,
    /// `callback_floor`, `direct`.
    pub scenario: &'static str,
    pub channel: &'static str,
    pub store: &'static str,
    pub clients: usize,
    pub idempotency: bool,
    pub requests: u64,
    pub errors: u64,
    pub rps: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// The floor this run is compared with, when it has one.
    pub floor_rps: Option<f64>,
    /// `rps / floor_rps`.
    pub ratio: Option<f64>,
    /// p50 over the direct baseline's p50 at the same clients.
    pub added_p50_ms: Option<f64>,
    /// The peak resident memory of this process (gateway, mocks and load generator together).
    pub peak_rss_mb: f64,
}

/// Everything one `paymux bench` measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub results: Vec<Row>,
}

/// Requests counted and timed during the measurement window of a run.
struct Measured {
    requests: u64,
    errors: u64,
    seconds: f64,
    latency_us: Histogram<u64>,
}

impl Measured {
    fn row(&self, scenario: &'static str, channel: &'static str, store: &'static str) -> Row {
        let q = |p: f64| self.latency_us.value_at_quantile(p) as f64 / 1000.0;
        Row {
            scenario,
            channel,
            store,
            clients: 0,
            idempotency: false,
            requests: self.requests,
            errors: self.errors,
            rps: self.requests as f64 / self.seconds.max(1e-9),
            p50_ms: q(0.5),
            p90_ms: q(0.9),
            p99_ms: q(0.99),
            max_ms: self.latency_us.max() as f64 / 1000.0,
            floor_rps: None,
            ratio: None,
            added_p50_ms: None,
            peak_rss_mb: peak_rss_mb(),
        }
    }
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 100 s at 3 significant digits: constant bounds, which the crate accepts.
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("valid histogram bounds")
}

/// Runs `call` from `clients` concurrent loops: a warm-up, then a measured window whose requests
/// (those that started in it) are counted and timed.
async fn closed_loop<F, Fut>(
    clients: usize,
    warmup: Duration,
    measure: Duration,
    call: F,
) -> Measured
where
    F: Fn(u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    let seq = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let (from, until) = (start + warmup, start + warmup + measure);
    let mut tasks = Vec::with_capacity(clients);
    for _ in 0..clients {
        let (call, seq) = (call.clone(), seq.clone());
        tasks.push(tokio::spawn(async move {
            let mut h = histogram();
            let (mut ok, mut bad) = (0u64, 0u64);
            loop {
                let t0 = Instant::now();
                if t0 >= until {
                    break;
                }
                let fine = call(seq.fetch_add(1, Ordering::Relaxed)).await;
                if t0 >= from {
                    let _ = h.record(t0.elapsed().as_micros().max(1) as u64);
                    if fine { ok += 1 } else { bad += 1 }
                }
            }
            (h, ok, bad)
        }));
    }
    let mut m = Measured {
        requests: 0,
        errors: 0,
        seconds: measure.as_secs_f64(),
        latency_us: histogram(),
    };
    for t in tasks {
        if let Ok((h, ok, bad)) = t.await {
            let _ = m.latency_us.add(&h);
            m.requests += ok;
            m.errors += bad;
        }
    }
    m
}

/// Sends at a fixed `rate` per second for `measure`, each request timed from when it was due
/// (not from when it could be sent), so a stall shows in the latency instead of hiding in a
/// lower rate.
async fn open_loop<F, Fut>(rate: f64, measure: Duration, call: F) -> Measured
where
    F: Fn(u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send + 'static,
{
    let start = tokio::time::Instant::now();
    let total = (rate * measure.as_secs_f64()).ceil() as u64;
    let results = Arc::new(std::sync::Mutex::new((histogram(), 0u64, 0u64)));
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due).await;
        let (call, results) = (call.clone(), results.clone());
        tasks.push(tokio::spawn(async move {
            let fine = call(i).await;
            let us = due.elapsed().as_micros().max(1) as u64;
            if let Ok(mut r) = results.lock() {
                let _ = r.0.record(us);
                if fine { r.1 += 1 } else { r.2 += 1 }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let seconds = start.elapsed().as_secs_f64();
    // Every task has ended: what they recorded is taken as it stands.
    let (latency_us, requests, errors) = {
        let mut r = results.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::replace(&mut *r, (histogram(), 0, 0))
    };
    Measured { requests, errors, seconds, latency_us }
}

/// Peak resident memory of this process, from `/proc/self/status` (0 where there is none).
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn machine() -> Machine {
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("model name"))?;
            Some(line.split_once(':')?.1.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    Machine { cores: std::thread::available_parallelism().map_or(1, usize::from), cpu_model }
}

/// The running sandbox and what the load generator needs to talk to it.
struct Target {
    sandbox: Sandbox,
    http: reqwest::Client,
    dir: tempfile::TempDir,
    store: &'static str,
    run: String,
}

impl Target {
    fn gateway(&self) -> &str {
        &self.sandbox.manifest.gateway_url
    }

    fn key(&self) -> &str {
        &self.sandbox.manifest.api_key
    }
}

/// Creates a payment; its body, unparsed, when the gateway answered 201. The timed runs only
/// check the status (parsing every answer would charge the load generator's JSON work to the
/// machine the gateway runs on); the callback run parses what it needs.
async fn create_payment(
    http: &reqwest::Client,
    gateway: &str,
    key: &str,
    body: serde_json::Value,
    idempotency_key: Option<String>,
) -> Option<Vec<u8>> {
    let mut req = http.post(format!("{gateway}/v1/payments")).bearer_auth(key).json(&body);
    if let Some(k) = idempotency_key {
        req = req.header("Idempotency-Key", k);
    }
    let res = req.send().await.ok()?;
    if res.status() != reqwest::StatusCode::CREATED {
        return None;
    }
    // Read to the end either way, so the connection is kept alive.
    res.bytes().await.ok().map(Vec::from)
}

fn order(run: &str, tag: &str, seq: u64, channel: &str) -> serde_json::Value {
    json!({"merchant_order_no": format!("{run}-{tag}-{seq}"), "amount": 1000, "currency": "CNY",
           "subject": "bench", "channel": channel, "method": "qr"})
}

/// A closed-loop create run against the gateway.
async fn create_run(
    t: &Target,
    channel: &'static str,
    clients: usize,
    idem: bool,
    o: &BenchOptions,
    tag: &str,
) -> Row {
    let (http, gateway, key, run) =
        (t.http.clone(), t.gateway().to_owned(), t.key().to_owned(), format!("{}-{tag}", t.run));
    let m = closed_loop(clients, o.warmup, o.measure, move |seq| {
        let (http, gateway, key, run) = (http.clone(), gateway.clone(), key.clone(), run.clone());
        async move {
            let idem_key = idem.then(|| format!("{run}-{seq}"));
            create_payment(&http, &gateway, &key, order(&run, "c", seq, channel), idem_key)
                .await
                .is_some()
        }
    })
    .await;
    let mut row = m.row("create", channel, t.store);
    row.clients = clients;
    row.idempotency = idem;
    row
}

/// The same create made straight to the channel's mock by the channel's adapter.
async fn direct_run(
    t: &Target,
    adapter: Arc<dyn Channel>,
    channel: &'static str,
    clients: usize,
    o: &BenchOptions,
) -> Row {
    let notify_url = format!("{}/callbacks/{channel}/direct", t.gateway());
    let m = closed_loop(clients, o.warmup, o.measure, move |_| {
        let (adapter, notify_url) = (adapter.clone(), notify_url.clone());
        async move {
            let now = OffsetDateTime::now_utc();
            let Ok(amount) = Money::new(1000, Currency::Cny) else { return false };
            let call = CreatePayment {
                channel_order_no: ChannelOrderNo::generate(),
                amount,
                subject: "bench".into(),
                method: PaymentMethod::Qr,
                created_at: now,
                expires_at: now + time::Duration::hours(2),
                notify_url,
                return_url: None,
                client_ip: None,
                payer_openid: None,
                auth_code: None,
                hold: false,
            };
            adapter.create(&call).await.is_ok()
        }
    })
    .await;
    let mut row = m.row("direct", channel, t.store);
    row.clients = clients;
    row
}

/// The signatures one create costs on both sides, on every core for `measure`: creates/s.
fn create_floor(client: &RsaPrivateKey, channel: &RsaPrivateKey, measure: Duration) -> f64 {
    let message = vec![b'x'; 600];
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let (client_pub, channel_pub) = (client.public_key(), channel.public_key());
    let done = AtomicU64::new(0);
    let until = Instant::now() + measure;
    std::thread::scope(|s| {
        for _ in 0..cores {
            s.spawn(|| {
                while Instant::now() < until {
                    // Gateway signs the request; channel verifies it, signs its answer; gateway
                    // verifies the answer.
                    let ok = client
                        .sign_base64(&message)
                        .and_then(|sig| client_pub.verify_base64(&message, &sig))
                        .and_then(|()| channel.sign_base64(&message))
                        .and_then(|sig| channel_pub.verify_base64(&message, &sig));
                    if ok.is_ok() {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    done.load(Ordering::Relaxed) as f64 / measure.as_secs_f64()
}

/// One verification and one single-row durable commit, one after the other, on a store of the
/// same kind and settings as the gateway's: callbacks/s.
async fn callback_floor(
    key: &RsaPrivateKey,
    public: &RsaPublicKey,
    database_url: Option<&DatabaseUrl>,
    dir: &Path,
    measure: Duration,
) -> Result<f64> {
    let message = vec![b'n'; 700];
    let sig = key.sign_base64(&message)?;
    let db = FloorDb::open(database_url, dir).await?;
    let start = Instant::now();
    let mut n = 0i64;
    while start.elapsed() < measure {
        public.verify_base64(&message, &sig)?;
        db.commit(n).await?;
        n += 1;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// The store of the callback floor: one row per durable transaction.
enum FloorDb {
    /// The embedded store's driver and settings, on the caller's thread: nothing between the
    /// commit and the disk.
    Sqlite(rusqlite::Connection),
    Postgres(sqlx::PgPool),
}

impl FloorDb {
    /// PostgreSQL at `database_url` (its default durability), or a SQLite file in `dir` with the
    /// gateway's settings: WAL, `synchronous=FULL`, one writer.
    async fn open(database_url: Option<&DatabaseUrl>, dir: &Path) -> Result<Self> {
        Ok(match database_url {
            Some(url) if url.expose().starts_with("postgres") => {
                let pool = sqlx::PgPool::connect(url.expose()).await?;
                sqlx::query(
                    "CREATE TABLE IF NOT EXISTS bench_floor (id BIGINT PRIMARY KEY, v TEXT)",
                )
                .execute(&pool)
                .await?;
                sqlx::query("TRUNCATE bench_floor").execute(&pool).await?;
                FloorDb::Postgres(pool)
            }
            _ => {
                let conn = rusqlite::Connection::open(dir.join("floor.db"))?;
                conn.pragma_update(None, "journal_mode", "wal")?;
                conn.pragma_update(None, "synchronous", "full")?;
                conn.execute_batch(
                    "CREATE TABLE IF NOT EXISTS bench_floor (id INTEGER PRIMARY KEY, v TEXT)",
                )?;
                FloorDb::Sqlite(conn)
            }
        })
    }

    async fn commit(&self, i: i64) -> Result<()> {
        match self {
            FloorDb::Sqlite(c) => {
                c.prepare_cached("INSERT INTO bench_floor (id, v) VALUES (?, 'x')")?
                    .execute([i])?;
            }
            FloorDb::Postgres(p) => {
                sqlx::query("INSERT INTO bench_floor (id, v) VALUES ($1, 'x')")
                    .bind(i)
                    .execute(p)
                    .await?;
            }
        }
        Ok(())
    }
}

/// Alipay's signed payment notification for a pending payment (what the mock would send).
fn alipay_notification(
    key: &RsaPrivateKey,
    t: &Target,
    out_trade_no: &str,
    seq: usize,
) -> Result<Vec<u8>> {
    let alipay = &t.sandbox.manifest.channels.alipay;
    let now = paymux_mock_alipay::protocol::format_beijing(OffsetDateTime::now_utc());
    let mut f: std::collections::BTreeMap<String, String> = [
        ("notify_time", now.as_str()),
        ("notify_type", "trade_status_sync"),
        ("notify_id", &format!("{}-n-{seq}", t.run)),
        ("app_id", alipay.app_id.as_str()),
        ("charset", "utf-8"),
        ("version", "1.0"),
        ("sign_type", "RSA2"),
        ("trade_no", &format!("2026{seq:024}")),
        ("out_trade_no", out_trade_no),
        ("seller_id", alipay.seller_id.as_str()),
        ("trade_status", "TRADE_SUCCESS"),
        ("total_amount", "10.00"),
        ("receipt_amount", "10.00"),
        ("gmt_payment", now.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let sign =
        key.sign_base64(paymux_mock_alipay::protocol::notification_sign_content(&f).as_bytes())?;
    f.insert("sign".into(), sign);
    Ok(form_urlencoded::Serializer::new(String::new()).extend_pairs(&f).finish().into_bytes())
}

/// Replays `n` pre-signed notifications, each for its own pending payment, from `clients`
/// connections.
async fn callback_run(t: &Target, n: usize, clients: usize, bar: &ProgressBar) -> Result<Row> {
    let key = RsaPrivateKey::load(&std::fs::read_to_string(
        t.dir.path().join("keys/alipay-mock-private.pem"),
    )?)?;
    // The pending payments, created without timing.
    let mut bodies = Vec::with_capacity(n);
    let (gateway, api_key) = (t.gateway().to_owned(), t.key().to_owned());
    let created = closed_count(n, 16, {
        let (http, run) = (t.http.clone(), t.run.clone());
        move |seq| {
            let (http, gateway, api_key, run) =
                (http.clone(), gateway.clone(), api_key.clone(), run.clone());
            async move {
                create_payment(&http, &gateway, &api_key, order(&run, "cb", seq, "alipay"), None)
                    .await
            }
        }
    })
    .await;
    bar.set_message("callback: signing notifications");
    for (i, body) in created.iter().enumerate() {
        let p: serde_json::Value = serde_json::from_slice(body)?;
        let no = p["channel_order_no"].as_str().context("a payment without channel_order_no")?;
        bodies.push(alipay_notification(&key, t, no, i)?);
    }
    let bodies = Arc::new(bodies);
    let url = format!(
        "{}/callbacks/alipay/{}",
        t.gateway(),
        t.sandbox.manifest.channels.alipay.account_id
    );
    let http = t.http.clone();
    let next = Arc::new(AtomicU64::new(0));
    let total = bodies.len() as u64;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (bodies, url, http, next) = (bodies.clone(), url.clone(), http.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut h = histogram();
            let (mut ok, mut bad) = (0u64, 0u64);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let t0 = Instant::now();
                let res = http
                    .post(&url)
                    .header("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
                    .body(bodies[i as usize].clone())
                    .send()
                    .await;
                let fine = match res {
                    Ok(r) => {
                        r.status().is_success() && r.text().await.is_ok_and(|b| b == "success")
                    }
                    Err(_) => false,
                };
                let _ = h.record(t0.elapsed().as_micros().max(1) as u64);
                if fine { ok += 1 } else { bad += 1 }
            }
            (h, ok, bad)
        }));
    }
    let mut m = Measured { requests: 0, errors: 0, seconds: 0.0, latency_us: histogram() };
    for task in tasks {
        if let Ok((h, ok, bad)) = task.await {
            let _ = m.latency_us.add(&h);
            m.requests += ok;
            m.errors += bad;
        }
    }
    m.seconds = start.elapsed().as_secs_f64();
    let mut row = m.row("callback", "alipay", t.store);
    row.clients = clients;
    Ok(row)
}

/// Runs `call` `n` times from `clients` loops, untimed; returns the values it gave.
async fn closed_count<F, Fut, T>(n: usize, clients: usize, call: F) -> Vec<T>
where
    F: Fn(u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Option<T>> + Send,
    T: Send + 'static,
{
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (call, next) = (call.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n as u64 {
                    break;
                }
                if let Some(v) = call(i).await {
                    out.push(v);
                }
            }
            out
        }));
    }
    let mut all = Vec::with_capacity(n);
    for t in tasks {
        if let Ok(v) = t.await {
            all.extend(v);
        }
    }
    all
}

async fn set_latency(t: &Target, channel: &str, ms: Option<u64>) -> Result<()> {
    let base = match channel {
        "wechat" => &t.sandbox.manifest.channels.wechat.mock_url,
        "unionpay" => &t.sandbox.manifest.channels.unionpay.mock_url,
        _ => &t.sandbox.manifest.channels.alipay.mock_url,
    };
    let req = match ms {
        Some(ms) => t.http.post(format!("{base}/_sandbox/faults")).json(&json!({"latency_ms": ms})),
        None => t.http.delete(format!("{base}/_sandbox/faults")),
    };
    let res = req.send().await?;
    anyhow::ensure!(res.status().is_success(), "setting the mock's latency: {}", res.status());
    Ok(())
}

const CHANNELS: [(&str, ChannelKind); 3] = [
    ("alipay", ChannelKind::Alipay),
    ("wechat", ChannelKind::Wechat),
    ("unionpay", ChannelKind::Unionpay),
];

/// Runs every scenario and floor; `bar` shows where it is.
pub async fn run(o: &BenchOptions) -> Result<Report> {
    let bar = if o.progress { ProgressBar::new_spinner() } else { ProgressBar::hidden() };
    bar.set_style(ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")?);
    bar.enable_steady_tick(Duration::from_millis(120));
    let dir = tempfile::tempdir()?;
    let mut opts = SandboxOptions::new(dir.path());
    opts.database_url = o.database_url.clone();
    opts.gateway_port = 0;
    opts.alipay_port = 0;
    opts.wechat_port = 0;
    opts.unionpay_port = 0;
    // The mocks' own notifications would add load the scenarios do not ask for: none is paid.
    let store = if o.database_url.as_ref().is_some_and(|u| u.expose().starts_with("postgres")) {
        "postgres"
    } else {
        "sqlite"
    };
    bar.set_message("starting the gateway and the mocks");
    let sandbox = sandbox::start(opts).await?;
    let http = reqwest::Client::builder()
        .http1_only()
        .pool_max_idle_per_host(1024)
        .timeout(Duration::from_secs(30))
        .build()?;
    let run = format!("b{}", uuid::Uuid::now_v7().simple());
    let t = Target { sandbox, http, dir, store, run };
    let mut rows = Vec::new();

    // Floors first, on a quiet gateway.
    bar.set_message("floor: signatures of one create");
    let keys = t.dir.path().join("keys");
    let load = |name: &str| -> Result<RsaPrivateKey> {
        let path = keys.join(name);
        Ok(RsaPrivateKey::load(
            &std::fs::read_to_string(&path).with_context(|| path.display().to_string())?,
        )?)
    };
    let (app_key, mock_key) = (load("alipay-app-private.pem")?, load("alipay-mock-private.pem")?);
    let floor_create = {
        let (a, m, d) = (app_key.clone(), mock_key.clone(), o.measure);
        tokio::task::spawn_blocking(move || create_floor(&a, &m, d)).await?
    };
    bar.set_message("floor: one verification and one durable commit");
    let floor_callback = callback_floor(
        &mock_key,
        &mock_key.public_key(),
        o.database_url.as_ref(),
        t.dir.path(),
        o.measure,
    )
    .await?;
    rows.push(floor_row("create_floor", floor_create, t.store));
    rows.push(floor_row("callback_floor", floor_callback, t.store));

    // The direct baseline, per channel, at 1 and 16 clients.
    let registry = paymux_engine::ChannelRegistry::new(Duration::from_secs(10));
    let mut direct_p50 = std::collections::HashMap::new();
    for (name, _) in CHANNELS {
        let id: AccountId = account_id(&t, name).parse()?;
        let account = t.sandbox.store.channel_account(id).await?.context("the sandbox account")?;
        let adapter = registry.adapter(&account)?;
        for clients in o.clients.iter().copied().filter(|c| *c <= 16) {
            bar.set_message(format!("direct: {name} at {clients} clients"));
            let row = direct_run(&t, adapter.clone(), name, clients, o).await;
            direct_p50.insert((name, clients), row.p50_ms);
            rows.push(row);
        }
    }

    // Creates through the gateway.
    let mut best = 0.0f64;
    for (name, _) in CHANNELS {
        for &clients in &o.clients {
            for idem in [false, true] {
                bar.set_message(format!(
                    "create: {name} at {clients} clients{}",
                    if idem { ", with Idempotency-Key" } else { "" }
                ));
                let mut row =
                    create_run(&t, name, clients, idem, o, &format!("{name}{clients}{idem}")).await;
                row.floor_rps = Some(floor_create);
                row.ratio = Some(row.rps / floor_create);
                row.added_p50_ms = direct_p50.get(&(name, clients)).map(|d| row.p50_ms - d);
                if name == "alipay" && !idem {
                    best = best.max(row.rps);
                }
                rows.push(row);
            }
        }
    }

    // Callbacks: pre-signed notifications, 16 connections.
    bar.set_message("callback: creating pending payments");
    let mut row = callback_run(&t, o.callbacks, 16, &bar).await?;
    row.floor_rps = Some(floor_callback);
    row.ratio = Some(row.rps / floor_callback);
    rows.push(row);

    // A slow channel: 50 ms at the mock, many clients: throughput should follow concurrency.
    bar.set_message(format!("slow channel: alipay +50 ms at {} clients", o.slow_clients));
    set_latency(&t, "alipay", Some(50)).await?;
    let mut row = create_run(&t, "alipay", o.slow_clients, false, o, "slow").await;
    set_latency(&t, "alipay", None).await?;
    row.scenario = "slow_channel";
    // With 50 ms per call and nothing else limiting, `clients / 0.05` per second.
    row.floor_rps = Some(o.slow_clients as f64 / 0.05);
    row.ratio = row.floor_rps.map(|f| row.rps / f);
    rows.push(row);

    // Open loop at shares of the best closed-loop rate.
    for share in [0.25, 0.5, 0.75] {
        let rate = (best * share).max(1.0);
        bar.set_message(format!(
            "open loop: alipay at {rate:.0}/s ({:.0}% of the maximum)",
            share * 100.0
        ));
        let (http, gateway, key, run) = (
            t.http.clone(),
            t.gateway().to_owned(),
            t.key().to_owned(),
            format!("{}-ol{}", t.run, (share * 100.0) as u32),
        );
        let m = open_loop(rate, o.measure, move |seq| {
            let (http, gateway, key, run) =
                (http.clone(), gateway.clone(), key.clone(), run.clone());
            async move {
                create_payment(&http, &gateway, &key, order(&run, "o", seq, "alipay"), None)
                    .await
                    .is_some()
            }
        })
        .await;
        let mut row = m.row("open_loop", "alipay", t.store);
        row.clients = 0;
        row.floor_rps = Some(rate);
        row.ratio = Some(row.rps / rate);
        rows.push(row);
    }
    bar.finish_and_clear();
    t.sandbox.stop().await;
    Ok(Report { machine: machine(), results: rows })
}

fn account_id(t: &Target, channel: &str) -> String {
    let c = &t.sandbox.manifest.channels;
    match channel {
        "wechat" => c.wechat.account_id.clone(),
        "unionpay" => c.unionpay.account_id.clone(),
        _ => c.alipay.account_id.clone(),
    }
}

fn floor_row(scenario: &'static str, rps: f64, store: &'static str) -> Row {
    Row {
        scenario,
        channel: "-",
        store,
        clients: 0,
        idempotency: false,
        requests: 0,
        errors: 0,
        rps,
        p50_ms: 0.0,
        p90_ms: 0.0,
        p99_ms: 0.0,
        max_ms: 0.0,
        floor_rps: None,
        ratio: None,
        added_p50_ms: None,
        peak_rss_mb: peak_rss_mb(),
    }
}

/// The report as a table, one row per run.
pub fn table(r: &Report) -> String {
    let mut out = format!("machine: {} cores, {}\n", r.machine.cores, r.machine.cpu_model);
    out.push_str(&format!(
        "{:<15} {:<9} {:<8} {:>7} {:>5} {:>8} {:>6} {:>9} {:>8} {:>8} {:>8} {:>8} {:>9} {:>6} {:>9} {:>7}\n",
        "scenario", "channel", "store", "clients", "idem", "requests", "errors", "rps", "p50 ms", "p90 ms", "p99 ms", "max ms", "floor/s", "ratio", "+p50 ms", "rss MB"
    ));
    let opt = |v: Option<f64>, prec: usize| v.map_or("-".to_owned(), |v| format!("{v:.prec$}"));
    for x in &r.results {
        out.push_str(&format!(
            "{:<15} {:<9} {:<8} {:>7} {:>5} {:>8} {:>6} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>9} {:>6} {:>9} {:>7.0}\n",
            x.scenario, x.channel, x.store, x.clients, if x.idempotency { "yes" } else { "no" }, x.requests, x.errors, x.rps,
            x.p50_ms, x.p90_ms, x.p99_ms, x.max_ms, opt(x.floor_rps, 0), opt(x.ratio, 2), opt(x.added_p50_ms, 2), x.peak_rss_mb
        ));
    }
    out
}

/// Where to write the JSON report, if anywhere.
pub fn write_json(r: &Report, path: &PathBuf) -> Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(r)?)
        .with_context(|| format!("writing {}", path.display()))
}

/// A picture of the report: creates per second against clients for each channel (bars), and the
/// open loop's p50 and p99 latency against the offered rate (points). Plain SVG, no dependency.
pub fn svg(r: &Report) -> String {
    let (w, h, pad) = (900.0f64, 360.0f64, 50.0f64);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    // Left panel: create throughput.
    let creates: Vec<&Row> =
        r.results.iter().filter(|x| x.scenario == "create" && !x.idempotency).collect();
    let max_rps = creates.iter().map(|x| x.rps).fold(1.0, f64::max);
    let panel_w = w / 2.0 - pad * 1.5;
    let base = h - pad;
    out.push_str(&format!(
        "<text x=\"{pad}\" y=\"20\" font-size=\"13\">creates/s by clients (no Idempotency-Key)</text>\n"
    ));
    let colours = [("alipay", "#1677ff"), ("wechat", "#07c160"), ("unionpay", "#d7000f")];
    let bar_w = panel_w / (creates.len().max(1) as f64) * 0.8;
    for (i, x) in creates.iter().enumerate() {
        let bh = (x.rps / max_rps) * (h - 2.0 * pad - 20.0);
        let bx = pad + i as f64 * panel_w / creates.len().max(1) as f64;
        let colour = colours.iter().find(|c| c.0 == x.channel).map_or("#888", |c| c.1);
        out.push_str(&format!(
            "<rect x=\"{bx:.1}\" y=\"{:.1}\" width=\"{bar_w:.1}\" height=\"{bh:.1}\" fill=\"{colour}\"/>\n<text x=\"{bx:.1}\" y=\"{:.1}\">{:.0}</text>\n<text x=\"{bx:.1}\" y=\"{:.1}\">{} c{}</text>\n",
            base - bh,
            base - bh - 3.0,
            x.rps,
            base + 14.0,
            &x.channel[..2],
            x.clients
        ));
    }
    // Right panel: open-loop latency.
    let open: Vec<&Row> = r.results.iter().filter(|x| x.scenario == "open_loop").collect();
    let max_ms = open.iter().map(|x| x.p99_ms).fold(1.0, f64::max);
    let max_rate = open.iter().filter_map(|x| x.floor_rps).fold(1.0, f64::max);
    let x0 = w / 2.0 + pad / 2.0;
    out.push_str(&format!(
        "<text x=\"{x0}\" y=\"20\" font-size=\"13\">open loop: latency (ms) by offered rate (/s), p50 ● p99 ▲</text>\n<line x1=\"{x0}\" y1=\"{base}\" x2=\"{:.1}\" y2=\"{base}\" stroke=\"#444\"/>\n",
        x0 + panel_w
    ));
    for x in open {
        let rate = x.floor_rps.unwrap_or(0.0);
        let px = x0 + rate / max_rate * (panel_w - 20.0);
        let y = |ms: f64| base - ms / max_ms * (h - 2.0 * pad - 20.0);
        out.push_str(&format!(
            "<circle cx=\"{px:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"#1677ff\"/>\n<text x=\"{px:.1}\" y=\"{:.1}\">▲</text>\n<text x=\"{:.1}\" y=\"{:.1}\">{rate:.0}/s: {:.1} / {:.1}</text>\n",
            y(x.p50_ms),
            y(x.p99_ms),
            px - 30.0,
            base + 14.0,
            x.p50_ms,
            x.p99_ms
        ));
    }
    out.push_str(&format!(
        "<text x=\"{pad}\" y=\"{:.0}\" fill=\"#666\">{} cores, {}; store {}</text>\n</svg>\n",
        h - 8.0,
        r.machine.cores,
        r.machine.cpu_model,
        r.results.first().map_or("-", |x| x.store)
    ));
    out
}

//! `paymux`: the gateway and its sandbox from the command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use paymux_cli::config::{
    AccountMode, DEFAULT_DATABASE, DatabaseArgs, DatabaseUrl, ServeArgs, ServeConfig,
    install_accounts,
};
use paymux_cli::sandbox::{self, SandboxOptions};
use paymux_cli::{bench, open_store, shutdown};
use paymux_core::{ChannelKind, MerchantId};
use paymux_engine::{Engine, GatewayConfig};
use paymux_mock_wechat::KeyMode;
use tokio_util::sync::CancellationToken;

/// mimalloc instead of the system allocator: requests allocate and free many small buffers on
/// every thread, and the system allocator's share of a callback's CPU was about a tenth
/// (docs/architecture.md, decision 52).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "paymux",
    version,
    about = "One payment API in front of WeChat Pay, Alipay and UnionPay"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The gateway plus sandbox Alipay, WeChat Pay and UnionPay channels on the embedded store,
    /// wired together.
    Up {
        #[arg(long, default_value = "./paymux-data")]
        data_dir: PathBuf,
        /// The gateway's store [default: <data-dir>/paymux.db]
        #[arg(long, env = "PAYMUX_DATABASE_URL", hide_env_values = true)]
        database_url: Option<DatabaseUrl>,
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        #[arg(long, default_value_t = 8080)]
        gateway_port: u16,
        #[arg(long, default_value_t = 9102)]
        alipay_port: u16,
        #[arg(long, default_value_t = 9101)]
        wechat_port: u16,
        #[arg(long, default_value_t = 9103)]
        unionpay_port: u16,
        /// Divide the channels' notification retry intervals by this (1 = real time).
        #[arg(long, default_value_t = 60)]
        notify_time_compression: u32,
        /// Divide the channels' barcode poll-then-cancel schedules by this (1 = real time).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        barcode_time_compression: u32,
        /// The keys the WeChat mock verifies with: `certificate` (platform certificates from
        /// /v3/certificates), `public-key` (the WeChat Pay public key, PUB_KEY_ID_...), or `both`
        /// (WeChat's migration state, which serves either kind of merchant).
        #[arg(long, default_value = "both")]
        wechat_key_mode: KeyMode,
        /// How long a SIGTERM or Ctrl-C waits for the work in flight.
        #[arg(long, default_value_t = shutdown::DEFAULT_GRACE.as_secs())]
        shutdown_timeout_secs: u64,
    },
    /// The gateway alone, for real channel accounts: configured by a TOML file (--config),
    /// environment variables and flags, in rising order of precedence.
    Serve(ServeArgs),
    /// Brings the store's schema up to date and exits (`serve` and `up` also do it on start).
    Migrate {
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Create merchants, API keys, channel accounts and operator tokens in a store.
    #[command(subcommand)]
    Admin(Admin),
    /// Audit the ledger of escrow and profit sharing.
    #[command(subcommand)]
    Ledger(Ledger),
    /// Measure the gateway with its sandbox channels (creates, callbacks, a slow channel, an
    /// open loop) against floors measured in the same run; build with --release.
    Bench {
        /// About a minute: 1 and 16 clients, short runs (the full run adds 256 clients).
        #[arg(long)]
        quick: bool,
        /// The store to run on: a fresh SQLite file when not given; for PostgreSQL, a scratch
        /// database (the run leaves its payments in it).
        #[arg(long, env = "PAYMUX_DATABASE_URL", hide_env_values = true)]
        database_url: Option<DatabaseUrl>,
        /// Also write the results as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Also draw the results as an SVG here.
        #[arg(long)]
        svg: Option<PathBuf>,
        /// Measure each closed-loop run for this long instead (milliseconds).
        #[arg(long)]
        measure_ms: Option<u64>,
        /// Warm each closed-loop run up for this long instead (milliseconds).
        #[arg(long)]
        warmup_ms: Option<u64>,
        /// Replay this many notifications in the callback run instead.
        #[arg(long)]
        callbacks: Option<usize>,
        /// The clients of the create runs instead, e.g. 1,16,256.
        #[arg(long, value_delimiter = ',')]
        clients: Option<Vec<usize>>,
        /// The clients of the slow-channel run instead.
        #[arg(long)]
        slow_clients: Option<usize>,
    },
    /// Prints the merchant API's OpenAPI 3.1 document (what `GET /openapi.json` serves).
    Openapi,
}

#[derive(Debug, Subcommand)]
enum Ledger {
    /// Checks that every payment's ledger entries sum to zero and record its amount as paid;
    /// lists each one that does not and exits non-zero if any.
    Check {
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

#[derive(Debug, Subcommand)]
enum Admin {
    /// A new operator token for the admin page (/admin), shown once: paymux keeps its hash.
    Token {
        #[command(flatten)]
        database: DatabaseArgs,
        /// Who or what the token is for, shown with the actions done with it.
        #[arg(long, default_value = "operator")]
        label: String,
    },
    /// A new merchant and its first test API key (shown once).
    CreateMerchant {
        #[command(flatten)]
        database: DatabaseArgs,
        #[arg(long)]
        name: String,
        #[arg(long)]
        live: bool,
    },
    /// A channel account for a merchant, from the channel crate's JSON configuration.
    AddAccount {
        #[command(flatten)]
        database: DatabaseArgs,
        #[arg(long)]
        merchant: String,
        #[arg(long)]
        channel: String,
        /// A JSON file: AlipayAccountConfig or WechatAccountConfig (see docs/channels/).
        #[arg(long)]
        config: PathBuf,
        /// `live` moves real money and only live keys (sk_live_) can use it; `test` is for a
        /// sandbox (a channel's own, or a mock) and only test keys (sk_test_) can use it. Live
        /// by default: credentials added by hand are real unless said otherwise, and a test key
        /// (the one in every developer's config) must never reach them by omission.
        #[arg(long, value_enum, default_value_t = AccountMode::Live)]
        mode: AccountMode,
    },
    /// A merchant's settings.
    MerchantSettings {
        #[command(flatten)]
        database: DatabaseArgs,
        #[arg(long)]
        merchant: String,
        /// Refund a duplicate payment (a second attempt paid after another won) automatically,
        /// in full, at its channel: `true` (the default for every merchant) or `false` (only
        /// the `payment.duplicate_paid` event).
        #[arg(long, action = clap::ArgAction::Set)]
        duplicate_auto_refund: bool,
    },
}

fn init_tracing(command: &Command) {
    // A benchmark prints its own report; the servers it starts log warnings only, unless asked.
    let default = match command {
        Command::Bench { .. } => "warn",
        _ => "info,sqlx=warn,tower_http=info",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).init();
}

/// A startup failure is one line on stderr, naming the problem and the flag to change, and a
/// non-zero exit: no usage block, no backtrace.
#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version: their text is the point.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("paymux: {}", clap_error_line(&e));
            return ExitCode::from(2);
        }
    };
    init_tracing(&cli.command);
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The whole chain of causes on one line; a cause's own line breaks go too. A cause
            // whose text its parent already ends with (errors that print their source) is
            // said once.
            let mut parts: Vec<String> = Vec::new();
            for cause in e.chain() {
                let text = cause.to_string();
                if !parts.last().is_some_and(|p| p.ends_with(&text)) {
                    parts.push(text);
                }
            }
            let line = parts.join(": ").replace('\n', " ");
            eprintln!("paymux: {line}");
            ExitCode::FAILURE
        }
    }
}

/// clap's message without its usage block, on one line: the first paragraph names the flag
/// (`invalid value 'x' for '--gateway-port <GATEWAY_PORT>'`, or the missing arguments).
fn clap_error_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let paragraph: Vec<&str> = text.lines().map(str::trim).take_while(|l| !l.is_empty()).collect();
    paragraph.join(" ").trim_start_matches("error: ").to_owned()
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Up {
            data_dir,
            database_url,
            host,
            gateway_port,
            alipay_port,
            wechat_port,
            unionpay_port,
            notify_time_compression,
            barcode_time_compression,
            wechat_key_mode,
            shutdown_timeout_secs,
        } => {
            let signal = shutdown::signal().context("cannot listen for SIGTERM and Ctrl-C")?;
            let mut opts = SandboxOptions::new(&data_dir);
            opts.database_url = database_url;
            opts.host = host;
            opts.gateway_port = gateway_port;
            opts.alipay_port = alipay_port;
            opts.wechat_port = wechat_port;
            opts.unionpay_port = unionpay_port;
            opts.notify_time_compression = notify_time_compression;
            opts.barcode.time_compression = barcode_time_compression;
            opts.wechat_key_mode = wechat_key_mode;
            let sandbox = sandbox::start(opts).await?;
            print_welcome(&sandbox.manifest, &data_dir);
            signal.await;
            shutdown::within(Duration::from_secs(shutdown_timeout_secs), sandbox.stop()).await?;
            Ok(())
        }
        Command::Serve(args) => serve(&args).await,
        Command::Bench {
            quick,
            database_url,
            json,
            svg,
            measure_ms,
            warmup_ms,
            callbacks,
            clients,
            slow_clients,
        } => {
            let mut o =
                if quick { bench::BenchOptions::quick() } else { bench::BenchOptions::full() };
            o.database_url = database_url;
            o.progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
            if let Some(ms) = measure_ms {
                o.measure = Duration::from_millis(ms);
            }
            if let Some(ms) = warmup_ms {
                o.warmup = Duration::from_millis(ms);
            }
            if let Some(n) = callbacks {
                o.callbacks = n;
            }
            if let Some(c) = clients {
                o.clients = c;
            }
            if let Some(c) = slow_clients {
                o.slow_clients = c;
            }
            let report = bench::run(&o).await?;
            print!("{}", bench::table(&report));
            if let Some(path) = json {
                bench::write_json(&report, &path)?;
            }
            if let Some(path) = svg {
                std::fs::write(&path, bench::svg(&report))
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            Ok(())
        }
        Command::Openapi => {
            let doc = paymux_gateway::openapi_document();
            println!("{}", serde_json::to_string_pretty(&doc)?);
            Ok(())
        }
        Command::Migrate { database } => {
            let url = database_or_default(&database);
            open_store(url.expose()).await.with_context(|| {
                format!("cannot migrate the store {url} (change --database-url)")
            })?;
            println!("the store {url} is up to date");
            Ok(())
        }
        Command::Admin(Admin::Token { database, label }) => {
            let engine = admin_engine(&database).await?;
            let (id, token) = engine.create_operator_token(&label).await?;
            println!(
                "operator token {id}\ntoken  {token}  (shown once; paymux keeps only its hash)\n\
                 sign in at <public-url>/admin/login?token={token}"
            );
            Ok(())
        }
        Command::Ledger(Ledger::Check { database }) => {
            let engine = admin_engine(&database).await?;
            let bad = engine.ledger_imbalances().await?;
            for b in &bad {
                println!(
                    "{}: entries sum to {} fen; {} fen recorded as paid of an amount of {} fen",
                    b.payment_id, b.sum, b.paid, b.amount
                );
            }
            if !bad.is_empty() {
                anyhow::bail!("{} payment(s) whose ledger does not balance", bad.len());
            }
            println!("the ledger balances: every payment's entries sum to zero");
            Ok(())
        }
        Command::Admin(Admin::CreateMerchant { database, name, live }) => {
            let engine = admin_engine(&database).await?;
            let (merchant, key) = engine.create_merchant(&name, live).await?;
            println!(
                "merchant {merchant}\napi key  {key}  (shown once; paymux keeps only its hash)"
            );
            Ok(())
        }
        Command::Admin(Admin::MerchantSettings { database, merchant, duplicate_auto_refund }) => {
            let engine = admin_engine(&database).await?;
            let merchant: MerchantId = merchant.parse()?;
            engine.set_duplicate_auto_refund(merchant, duplicate_auto_refund).await?;
            println!("merchant {merchant}\nduplicate_auto_refund {duplicate_auto_refund}");
            Ok(())
        }
        Command::Admin(Admin::AddAccount { database, merchant, channel, config, mode }) => {
            let engine = admin_engine(&database).await?;
            let merchant: MerchantId = merchant.parse()?;
            let channel: ChannelKind = channel.parse().map_err(anyhow::Error::msg)?;
            let text = std::fs::read_to_string(&config)
                .with_context(|| format!("reading {}", config.display()))?;
            let config = serde_json::from_str(&text).context("the config is not JSON")?;
            let account =
                engine.add_account(merchant, channel, config, mode == AccountMode::Live).await?;
            println!(
                "account {} ({} mode)\nnotifications: <public-url>/callbacks/{}/{}",
                account.id,
                if account.livemode { "live" } else { "test" },
                channel,
                account.id
            );
            Ok(())
        }
    }
}

/// `paymux serve`: the configured accounts into the store, then the gateway and its workers
/// until a signal, then a graceful stop bounded by the shutdown timeout.
async fn serve(args: &ServeArgs) -> Result<()> {
    let signal = shutdown::signal().context("cannot listen for SIGTERM and Ctrl-C")?;
    let config = ServeConfig::load(args)?;
    // Every key file is read before anything else is touched.
    let accounts = config.read_accounts()?;
    let database = &config.database_url;
    let store = open_store(database.expose()).await.with_context(|| {
        format!("cannot open the store {database} (change database_url, --database-url or PAYMUX_DATABASE_URL)")
    })?;
    let engine = Engine::new(store, config.gateway);
    install_accounts(&engine, &accounts).await?;
    let listen = &config.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (change --listen)"))?;
    tracing::info!(%listen, %database, accounts = accounts.len(), "paymux gateway listening");
    let stopping = CancellationToken::new();
    let mut server =
        tokio::spawn(paymux_gateway::serve(listener, engine, stopping.clone().cancelled_owned()));
    tokio::select! {
        () = signal => stopping.cancel(),
        ended = &mut server => {
            ended.context("the gateway task failed")?.context("the gateway stopped")?;
            anyhow::bail!("the gateway stopped by itself");
        }
    }
    shutdown::within(config.shutdown_timeout, server)
        .await?
        .context("the gateway task failed")?
        .context("the gateway failed while stopping")?;
    tracing::info!("stopped");
    Ok(())
}

fn database_or_default(database: &DatabaseArgs) -> DatabaseUrl {
    database.url().unwrap_or_else(|| DatabaseUrl::new(DEFAULT_DATABASE))
}

/// The engine the admin commands run on: the store the flags name, no server, no workers (the
/// public URL is never used by them).
async fn admin_engine(database: &DatabaseArgs) -> Result<Engine> {
    let url = database_or_default(database);
    let store = open_store(url.expose())
        .await
        .with_context(|| format!("cannot open the store {url} (change --database-url)"))?;
    Ok(Engine::new(store, GatewayConfig::new("http://127.0.0.1")))
}

fn print_welcome(m: &sandbox::Manifest, data_dir: &std::path::Path) {
    let gw = &m.gateway_url;
    println!(
        r#"
paymux sandbox is up.

  gateway        {gw}
  API key        {key}
  admin page     {admin}
  Alipay mock    {ali}   (cashier pages under /_sandbox/cashier/)
  WeChat mock    {wx}   (key mode: {wx_mode})
  UnionPay mock  {up}   (the bank's card page under /_sandbox/)
  manifest       {manifest}

Try it:

  curl -s {gw}/v1/payments \
    -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' \
    -d '{{"merchant_order_no":"order-1","amount":1000,"currency":"CNY","subject":"Coffee","channel":"alipay","method":"qr"}}'

Open the payment's action.code_url in a browser and press Pay, then GET {gw}/v1/payments/<id>.
Or open {gw}/pay/<id>, paymux's own cashier: pick a channel, switch, pay.
Ctrl-C stops everything; state and keys stay in {dir}.
"#,
        key = m.api_key,
        admin = m.admin_url,
        ali = m.channels.alipay.mock_url,
        wx = m.channels.wechat.mock_url,
        wx_mode = m.channels.wechat.key_mode,
        up = m.channels.unionpay.mock_url,
        manifest = data_dir.join("sandbox.json").display(),
        dir = data_dir.display(),
    );
}

//! `paymux serve`'s configuration: a TOML file (`--config`), then environment variables, then
//! flags, each overriding the one before. Every setting has a default but the public URL.
//!
//! The file names key files, never keys: they are read at start ([`AccountSettings::read`]) into
//! the channel crates' account configurations, whose `Debug` redacts them, and the database URL
//! (which can carry a password) is a [`DatabaseUrl`], shown with its password masked. So the
//! configuration can be logged and printed whole. `docs/operations.md` has a full example.
//!
//! ```no_run
//! # fn demo() -> Result<(), paymux_cli::config::SetupError> {
//! use clap::Parser;
//! #[derive(Parser)]
//! struct Cli {
//!     #[command(flatten)]
//!     serve: paymux_cli::config::ServeArgs,
//! }
//! let config = paymux_cli::config::ServeConfig::load(&Cli::parse().serve)?;
//! let accounts = config.read_accounts()?;
//! println!("{config:?} {accounts:?}");
//! # Ok(()) }
//! ```

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use paymux_alipay::AlipayAccountConfig;
use paymux_core::{AccountId, ChannelKind, MerchantId};
use paymux_engine::{Engine, EngineError, GatewayConfig};
use paymux_store::StoreError;
use paymux_unionpay::UnionpayAccountConfig;
use paymux_wechat::WechatAccountConfig;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// Where the store is when nothing says otherwise.
pub const DEFAULT_DATABASE: &str = "./paymux-data/paymux.db";
const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// Why `paymux serve` cannot start from its configuration. Each names the file, the setting or
/// the account to change, and never a configured secret.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot read the config file {}", path.display())]
    ReadConfig {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    ParseConfig { path: PathBuf, message: String },
    #[error("no public URL: set public_url in the config file, PAYMUX_PUBLIC_URL or --public-url")]
    NoPublicUrl,
    #[error("{setting}: {why}")]
    Invalid { setting: &'static str, why: String },
    #[error("account {account}: cannot read {field} {}", path.display())]
    KeyFile {
        account: AccountId,
        field: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("account {account}: {why}")]
    Account { account: AccountId, why: String },
    #[error("account {account}: the store did not answer")]
    Store {
        account: AccountId,
        #[source]
        source: StoreError,
    },
}

/// A store's URL or SQLite path. A PostgreSQL URL can carry a password, so the text is kept
/// secret: `Debug` and `Display` show it with the password and the query masked.
#[derive(Clone)]
pub struct DatabaseUrl(SecretString);

impl DatabaseUrl {
    pub fn new(url_or_path: impl Into<String>) -> Self {
        Self(SecretString::from(url_or_path.into()))
    }

    /// The text itself, for opening the store only.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl FromStr for DatabaseUrl {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self::new(s))
    }
}

impl<'de> Deserialize<'de> for DatabaseUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self::new)
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.expose();
        let Some((scheme, rest)) = text.split_once("://") else {
            return f.write_str(text);
        };
        let (rest, query) = match rest.split_once('?') {
            Some((rest, _)) => (rest, "?<redacted>"),
            None => (rest, ""),
        };
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let authority = match authority.rsplit_once('@') {
            Some((userinfo, host)) => match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:<redacted>@{host}"),
                None => format!("{userinfo}@{host}"),
            },
            None => authority.to_owned(),
        };
        write!(f, "{scheme}://{authority}{path}{query}")
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

/// The store flags every command that opens one takes.
#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseArgs {
    /// The store: a SQLite file (a path or a `sqlite://` URL) or `postgres://...` [default:
    /// ./paymux-data/paymux.db]
    #[arg(long, env = "PAYMUX_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<DatabaseUrl>,
    /// The SQLite database file (the older spelling of --database-url, which wins over it).
    #[arg(long, env = "PAYMUX_DATABASE")]
    pub database: Option<PathBuf>,
}

impl DatabaseArgs {
    /// The store these flags name, if they name one.
    pub fn url(&self) -> Option<DatabaseUrl> {
        self.database_url
            .clone()
            .or_else(|| self.database.as_ref().map(|p| DatabaseUrl::new(p.display().to_string())))
    }
}

/// `paymux serve`'s flags. Each has an environment variable; both override the file.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// A TOML configuration file (see docs/operations.md).
    #[arg(long, env = "PAYMUX_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The address to listen on [default: 127.0.0.1:8080]
    #[arg(long, env = "PAYMUX_LISTEN")]
    pub listen: Option<String>,
    /// The URL the channels reach this gateway at (notification URLs are built on it).
    #[arg(long, env = "PAYMUX_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// The timeout of one channel call [default: 10]
    #[arg(long, env = "PAYMUX_CHANNEL_TIMEOUT_SECS")]
    pub channel_timeout_secs: Option<u64>,
    /// How often the sweeper looks for pending payments and refunds to settle [default: 5000]
    #[arg(long, env = "PAYMUX_SWEEP_INTERVAL_MS")]
    pub sweep_interval_ms: Option<u64>,
    /// How long after creation a still-pending payment or refund is first queried [default:
    /// 60000]
    #[arg(long, env = "PAYMUX_SWEEP_FIRST_CHECK_MS")]
    pub sweep_first_check_ms: Option<u64>,
    /// Divide the channels' barcode poll-then-cancel schedules by this [default: 1]
    #[arg(long, env = "PAYMUX_BARCODE_TIME_COMPRESSION")]
    pub barcode_time_compression: Option<u32>,
    /// How long an Idempotency-Key stays claimed by a request that never finished (its process
    /// died) before a retry may take it over [default: 120000]
    #[arg(long, env = "PAYMUX_IDEMPOTENCY_LEASE_MS")]
    pub idempotency_lease_ms: Option<u64>,
    /// How long a SIGTERM or Ctrl-C waits for requests and background work in flight [default:
    /// 30]
    #[arg(long, env = "PAYMUX_SHUTDOWN_TIMEOUT_SECS")]
    pub shutdown_timeout_secs: Option<u64>,
}

/// The file, as written. Every field is optional; unknown ones are refused (a misspelt setting
/// must not be silently ignored).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    public_url: Option<String>,
    database_url: Option<DatabaseUrl>,
    channel_timeout_secs: Option<u64>,
    shutdown_timeout_secs: Option<u64>,
    #[serde(default)]
    sweeper: SweeperFile,
    #[serde(default)]
    webhooks: WebhooksFile,
    #[serde(default)]
    idempotency: IdempotencyFile,
    #[serde(default)]
    barcode: BarcodeFile,
    #[serde(default)]
    accounts: Vec<AccountSettings>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SweeperFile {
    interval_ms: Option<u64>,
    first_check_ms: Option<u64>,
    max_backoff_secs: Option<u64>,
    lease_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhooksFile {
    interval_ms: Option<u64>,
    timeout_secs: Option<u64>,
    first_retry_secs: Option<u64>,
    max_backoff_secs: Option<u64>,
    give_up_after_hours: Option<u64>,
    allow_private_urls: Option<bool>,
}

/// Barcode payments: `time_compression` divides the channels' poll-then-cancel schedules (a
/// staging setup that must not wait half a minute per abandoned payment; 1 in production).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BarcodeFile {
    time_compression: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct IdempotencyFile {
    lease_ms: Option<u64>,
    retention_hours: Option<u64>,
}

/// Whether an account moves real money (`live`, for `sk_live_` keys only) or talks to a
/// sandbox (`test`, for `sk_test_` keys only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AccountMode {
    Test,
    Live,
}

/// One `[[accounts]]` entry: a merchant's channel account, with its keys named by file (relative
/// paths are read from the config file's directory).
#[derive(Debug, Clone, Deserialize)]
pub struct AccountSettings {
    pub id: AccountId,
    pub merchant: MerchantId,
    pub mode: AccountMode,
    /// `channel = "alipay" | "wechat" | "unionpay"` and that channel's fields.
    #[serde(flatten)]
    pub channel: ChannelSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "channel", rename_all = "lowercase")]
pub enum ChannelSettings {
    Alipay(AlipaySettings),
    Wechat(WechatSettings),
    Unionpay(UnionpaySettings),
}

/// An Alipay application (see docs/channels/alipay.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlipaySettings {
    /// `https://openapi.alipay.com/gateway.do`, Alipay's sandbox, or a mock's `/gateway.do`.
    pub base_url: String,
    pub app_id: String,
    pub seller_id: Option<String>,
    pub app_private_key_file: PathBuf,
    pub alipay_public_key_file: PathBuf,
    /// Certificate mode: the app's public-key certificate, with `alipay_root_cert_file`.
    pub app_cert_file: Option<PathBuf>,
    pub alipay_root_cert_file: Option<PathBuf>,
    /// 商家分账: the most of a payment its splits may take, in basis points (default 3000).
    pub max_share_bps: Option<u32>,
}

/// A WeChat Pay merchant (see docs/channels/wechat.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WechatSettings {
    /// `https://api.mch.weixin.qq.com`, or a mock's address.
    pub base_url: String,
    pub mchid: String,
    pub appid: String,
    pub merchant_serial: String,
    pub merchant_private_key_file: PathBuf,
    /// A file holding the 32-character APIv3 key (surrounding whitespace is ignored).
    pub apiv3_key_file: PathBuf,
    /// Public-key mode: `PUB_KEY_ID_...`, with `platform_public_key_file`.
    pub platform_public_key_id: Option<String>,
    pub platform_public_key_file: Option<PathBuf>,
    /// The most a payment's profit-sharing splits may take, in 1/10000 (default 3000).
    pub max_share_bps: Option<u32>,
}

/// A UnionPay merchant (see docs/channels/unionpay.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnionpaySettings {
    /// `https://gateway.95516.com`, `https://gateway.test.95516.com`, or a mock's address.
    pub base_url: String,
    pub mer_id: String,
    pub merchant_private_key_file: PathBuf,
    pub merchant_certificate_file: PathBuf,
    pub root_certificate_file: PathBuf,
    pub intermediate_certificate_file: PathBuf,
    pub signer_owner: Option<String>,
}

/// Everything `paymux serve` runs with, resolved from the file, the environment and the flags.
#[derive(Debug)]
pub struct ServeConfig {
    pub listen: String,
    pub database_url: DatabaseUrl,
    pub gateway: GatewayConfig,
    pub shutdown_timeout: Duration,
    /// The accounts to put in the store on start, key file paths made absolute or relative to the
    /// working directory.
    pub accounts: Vec<AccountSettings>,
}

impl ServeConfig {
    /// Reads `args.config` if given and lays the environment and the flags (both in `args`) over
    /// it. Key files are not read yet: see [`ServeConfig::read_accounts`].
    pub fn load(args: &ServeArgs) -> Result<Self, SetupError> {
        let (file, dir) = match &args.config {
            Some(path) => (read_file(path)?, path.parent().map(Path::to_path_buf)),
            None => (FileConfig::default(), None),
        };
        let public_url =
            args.public_url.clone().or(file.public_url).ok_or(SetupError::NoPublicUrl)?;
        if !(public_url.starts_with("https://") || public_url.starts_with("http://")) {
            return Err(SetupError::Invalid {
                setting: "public_url",
                why: format!("{public_url:?} is not an http(s) URL"),
            });
        }
        let mut gateway = GatewayConfig::new(public_url);
        let d = GatewayConfig::new("");
        gateway.channel_timeout = secs(
            "channel_timeout_secs",
            args.channel_timeout_secs.or(file.channel_timeout_secs),
            d.channel_timeout,
        )?;
        let s = &file.sweeper;
        gateway.sweeper.interval = ms(
            "sweeper.interval_ms",
            args.sweep_interval_ms.or(s.interval_ms),
            d.sweeper.interval,
        )?;
        gateway.sweeper.first_check_after = ms(
            "sweeper.first_check_ms",
            args.sweep_first_check_ms.or(s.first_check_ms),
            d.sweeper.first_check_after,
        )?;
        gateway.sweeper.max_backoff =
            secs("sweeper.max_backoff_secs", s.max_backoff_secs, d.sweeper.max_backoff)?;
        gateway.sweeper.lease = secs("sweeper.lease_secs", s.lease_secs, d.sweeper.lease)?;
        match args.barcode_time_compression.or(file.barcode.time_compression) {
            Some(0) => {
                return Err(SetupError::Invalid {
                    setting: "barcode.time_compression",
                    why: "must be at least 1 (1 is real time)".into(),
                });
            }
            Some(f) => gateway.barcode.time_compression = f,
            None => {}
        }
        let w = &file.webhooks;
        gateway.webhooks.interval = ms("webhooks.interval_ms", w.interval_ms, d.webhooks.interval)?;
        gateway.webhooks.timeout =
            secs("webhooks.timeout_secs", w.timeout_secs, d.webhooks.timeout)?;
        gateway.webhooks.first_retry =
            secs("webhooks.first_retry_secs", w.first_retry_secs, d.webhooks.first_retry)?;
        gateway.webhooks.max_backoff =
            secs("webhooks.max_backoff_secs", w.max_backoff_secs, d.webhooks.max_backoff)?;
        gateway.webhooks.give_up_after =
            positive("webhooks.give_up_after_hours", w.give_up_after_hours)?
                .map_or(d.webhooks.give_up_after, |h| Duration::from_secs(h.saturating_mul(3600)));
        gateway.webhooks.allow_private_urls =
            w.allow_private_urls.unwrap_or(d.webhooks.allow_private_urls);
        let i = &file.idempotency;
        gateway.idempotency_lease = ms(
            "idempotency.lease_ms",
            args.idempotency_lease_ms.or(i.lease_ms),
            d.idempotency_lease,
        )?;
        gateway.idempotency_retention = positive("idempotency.retention_hours", i.retention_hours)?
            .map_or(d.idempotency_retention, |h| Duration::from_secs(h.saturating_mul(3600)));

        let mut accounts = file.accounts;
        let mut ids = HashSet::new();
        for a in &mut accounts {
            if !ids.insert(a.id) {
                return Err(SetupError::Account {
                    account: a.id,
                    why: "declared twice in the config file".into(),
                });
            }
            if let Some(dir) = &dir {
                a.channel.resolve_paths(dir);
            }
        }
        Ok(Self {
            listen: args.listen.clone().or(file.listen).unwrap_or_else(|| DEFAULT_LISTEN.into()),
            database_url: args
                .database
                .url()
                .or(file.database_url)
                .unwrap_or_else(|| DatabaseUrl::new(DEFAULT_DATABASE)),
            gateway,
            shutdown_timeout: secs(
                "shutdown_timeout_secs",
                args.shutdown_timeout_secs.or(file.shutdown_timeout_secs),
                crate::shutdown::DEFAULT_GRACE,
            )?,
            accounts,
        })
    }

    /// Reads every account's key files into its channel's configuration.
    pub fn read_accounts(&self) -> Result<Vec<ChannelAccount>, SetupError> {
        self.accounts.iter().map(AccountSettings::read).collect()
    }
}

fn read_file(path: &Path) -> Result<FileConfig, SetupError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| SetupError::ReadConfig { path: path.to_owned(), source })?;
    toml::from_str(&text).map_err(|e| {
        // toml's own rendering spans several lines with a snippet (which could be a secret);
        // the line number and the message are enough to find the mistake.
        let line = e.span().map(|s| {
            text.as_bytes()[..s.start.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
        });
        let message = e.message().trim().to_owned();
        let message = match line {
            Some(n) => format!("line {n}: {message}"),
            None => message,
        };
        SetupError::ParseConfig { path: path.to_owned(), message }
    })
}

/// A duration setting must be more than zero: a zero interval or timeout is never what was meant
/// (and a zero interval cannot tick).
fn positive(setting: &'static str, value: Option<u64>) -> Result<Option<u64>, SetupError> {
    match value {
        Some(0) => Err(SetupError::Invalid { setting, why: "must be more than 0".into() }),
        v => Ok(v),
    }
}

fn secs(
    setting: &'static str,
    value: Option<u64>,
    default: Duration,
) -> Result<Duration, SetupError> {
    Ok(positive(setting, value)?.map_or(default, Duration::from_secs))
}

fn ms(
    setting: &'static str,
    value: Option<u64>,
    default: Duration,
) -> Result<Duration, SetupError> {
    Ok(positive(setting, value)?.map_or(default, Duration::from_millis))
}

impl ChannelSettings {
    fn resolve_paths(&mut self, dir: &Path) {
        let paths: Vec<&mut PathBuf> = match self {
            Self::Alipay(a) => [&mut a.app_private_key_file, &mut a.alipay_public_key_file]
                .into_iter()
                .chain(a.app_cert_file.as_mut())
                .chain(a.alipay_root_cert_file.as_mut())
                .collect(),
            Self::Wechat(w) => [&mut w.merchant_private_key_file, &mut w.apiv3_key_file]
                .into_iter()
                .chain(w.platform_public_key_file.as_mut())
                .collect(),
            Self::Unionpay(u) => vec![
                &mut u.merchant_private_key_file,
                &mut u.merchant_certificate_file,
                &mut u.root_certificate_file,
                &mut u.intermediate_certificate_file,
            ],
        };
        for p in paths {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        }
    }
}

/// One channel account with its keys read: what goes into the store.
#[derive(Debug)]
pub struct ChannelAccount {
    pub id: AccountId,
    pub merchant: MerchantId,
    pub livemode: bool,
    pub config: ChannelConfig,
    /// Each key file read, with its setting: an error about a key names the file it came from.
    pub files: Vec<(&'static str, PathBuf)>,
}

/// A channel crate's account configuration (each one's `Debug` redacts its keys).
#[derive(Debug)]
pub enum ChannelConfig {
    Alipay(AlipayAccountConfig),
    Wechat(WechatAccountConfig),
    Unionpay(UnionpayAccountConfig),
}

impl AccountSettings {
    /// Reads the account's key files; a file that cannot be read is named with its setting.
    pub fn read(&self) -> Result<ChannelAccount, SetupError> {
        let mut files = Vec::new();
        let mut read = |field: &'static str, path: &Path| {
            files.push((field, path.to_owned()));
            std::fs::read_to_string(path).map_err(|source| SetupError::KeyFile {
                account: self.id,
                field,
                path: path.to_owned(),
                source,
            })
        };
        let config = match &self.channel {
            ChannelSettings::Alipay(a) => ChannelConfig::Alipay(AlipayAccountConfig {
                app_id: a.app_id.clone(),
                app_private_key: read("app_private_key_file", &a.app_private_key_file)?,
                alipay_public_key: read("alipay_public_key_file", &a.alipay_public_key_file)?,
                gateway_url: a.base_url.clone(),
                seller_id: a.seller_id.clone(),
                app_cert: a
                    .app_cert_file
                    .as_deref()
                    .map(|p| read("app_cert_file", p))
                    .transpose()?,
                alipay_root_cert: a
                    .alipay_root_cert_file
                    .as_deref()
                    .map(|p| read("alipay_root_cert_file", p))
                    .transpose()?,
                max_share_bps: a.max_share_bps,
            }),
            ChannelSettings::Wechat(w) => ChannelConfig::Wechat(WechatAccountConfig {
                mchid: w.mchid.clone(),
                appid: w.appid.clone(),
                merchant_serial: w.merchant_serial.clone(),
                merchant_private_key: read(
                    "merchant_private_key_file",
                    &w.merchant_private_key_file,
                )?,
                apiv3_key: read("apiv3_key_file", &w.apiv3_key_file)?.trim().to_owned(),
                base_url: w.base_url.clone(),
                platform_public_key_id: w.platform_public_key_id.clone(),
                platform_public_key: w
                    .platform_public_key_file
                    .as_deref()
                    .map(|p| read("platform_public_key_file", p))
                    .transpose()?,
                max_share_bps: w.max_share_bps,
            }),
            ChannelSettings::Unionpay(u) => ChannelConfig::Unionpay(UnionpayAccountConfig {
                mer_id: u.mer_id.clone(),
                gateway_url: u.base_url.clone(),
                merchant_private_key: read(
                    "merchant_private_key_file",
                    &u.merchant_private_key_file,
                )?,
                merchant_certificate: read(
                    "merchant_certificate_file",
                    &u.merchant_certificate_file,
                )?,
                root_certificate: read("root_certificate_file", &u.root_certificate_file)?,
                intermediate_certificate: read(
                    "intermediate_certificate_file",
                    &u.intermediate_certificate_file,
                )?,
                signer_owner: u
                    .signer_owner
                    .clone()
                    .unwrap_or_else(|| paymux_unionpay::protocol::UNIONPAY_OWNER.into()),
            }),
        };
        Ok(ChannelAccount {
            id: self.id,
            merchant: self.merchant,
            livemode: self.mode == AccountMode::Live,
            config,
            files,
        })
    }
}

impl ChannelConfig {
    pub fn kind(&self) -> ChannelKind {
        match self {
            Self::Alipay(_) => ChannelKind::Alipay,
            Self::Wechat(_) => ChannelKind::Wechat,
            Self::Unionpay(_) => ChannelKind::Unionpay,
        }
    }

    fn to_json(&self) -> Result<serde_json::Value, serde_json::Error> {
        match self {
            Self::Alipay(c) => serde_json::to_value(c),
            Self::Wechat(c) => serde_json::to_value(c),
            Self::Unionpay(c) => serde_json::to_value(c),
        }
    }
}

/// Puts the configured accounts in the store, each added or updated under its id. An account's
/// keys and URL can change from one start to the next; its merchant, channel and mode cannot
/// (its payments were made under them): such a change is refused, as is an account whose
/// merchant does not exist or whose keys do not load.
pub async fn install_accounts(
    engine: &Engine,
    accounts: &[ChannelAccount],
) -> Result<(), SetupError> {
    for a in accounts {
        let refuse = |why: String| SetupError::Account { account: a.id, why };
        let channel = a.config.kind();
        let config = a
            .config
            .to_json()
            .map_err(|e| refuse(format!("cannot encode the {channel} configuration: {e}")))?;
        match engine.put_account(a.id, a.merchant, channel, config, a.livemode).await {
            Ok(_) => {}
            Err(EngineError::Store(source)) => {
                return Err(SetupError::Store { account: a.id, source });
            }
            Err(EngineError::NotFound { .. }) => {
                return Err(refuse(format!(
                    "merchant {} does not exist (create it with `paymux admin create-merchant`)",
                    a.merchant
                )));
            }
            Err(EngineError::Misconfigured { source, .. }) => {
                // The adapters name the configuration field (`app_private_key: ...`): say which
                // file that field was read from.
                let text = source.to_string();
                let file = a.files.iter().find(|(setting, _)| {
                    text.contains(&format!("{}:", setting.trim_end_matches("_file")))
                });
                return Err(refuse(match file {
                    Some((setting, path)) => format!("{setting} {}: {text}", path.display()),
                    None => format!("the {channel} configuration is refused: {text}"),
                }));
            }
            Err(other) => return Err(refuse(other.to_string())),
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn args(list: &[&str]) -> ServeArgs {
        Cli::try_parse_from(std::iter::once("paymux").chain(list.iter().copied())).unwrap().serve
    }

    const MERCHANT: &str = "mch_0193a7c2e4f87b1d9c3e5a6b7c8d9e0f";
    const ACCOUNT: &str = "acct_0193a7c2e4f87b1d9c3e5a6b7c8d9e0f";

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn flags_override_the_file_and_the_file_overrides_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(
            dir.path(),
            "paymux.toml",
            r#"
            listen = "0.0.0.0:9000"
            public_url = "https://pay.example.com"
            channel_timeout_secs = 7
            [sweeper]
            interval_ms = 250
            [webhooks]
            allow_private_urls = true
            [barcode]
            time_compression = 5
            "#,
        );
        let file = file.to_str().unwrap();
        let c = ServeConfig::load(&args(&["--config", file, "--listen", "127.0.0.1:1"])).unwrap();
        assert_eq!(c.listen, "127.0.0.1:1");
        assert_eq!(c.gateway.public_url, "https://pay.example.com");
        assert_eq!(c.gateway.channel_timeout, Duration::from_secs(7));
        assert_eq!(c.gateway.sweeper.interval, Duration::from_millis(250));
        assert_eq!(c.gateway.sweeper.first_check_after, Duration::from_secs(60));
        assert!(c.gateway.webhooks.allow_private_urls);
        assert_eq!(c.gateway.barcode.time_compression, 5);
        assert_eq!(c.database_url.expose(), DEFAULT_DATABASE);
        assert_eq!(c.shutdown_timeout, Duration::from_secs(30));
    }

    #[test]
    fn a_misspelt_setting_is_refused_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(
            dir.path(),
            "p.toml",
            "public_url = \"https://x\"\n\n[sweeper]\nintervall_ms = 5\n",
        );
        let e = ServeConfig::load(&args(&["--config", file.to_str().unwrap()])).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("line 4") && text.contains("intervall_ms"), "{text}");
    }

    #[test]
    fn a_zero_interval_is_refused_by_name() {
        let e = ServeConfig::load(&args(&["--public-url", "http://x", "--sweep-interval-ms", "0"]))
            .unwrap_err();
        assert!(e.to_string().contains("sweeper.interval_ms"), "{e}");
    }

    #[test]
    fn an_unknown_account_field_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "public_url = \"https://x\"\n[[accounts]]\nid = \"{ACCOUNT}\"\nmerchant = \"{MERCHANT}\"\n\
             mode = \"live\"\nchannel = \"alipay\"\nbase_url = \"u\"\napp_id = \"1\"\n\
             app_private_key_file = \"k\"\nalipay_public_key_file = \"p\"\napp_private_key = \"x\"\n"
        );
        let file = write(dir.path(), "p.toml", &text);
        let e = ServeConfig::load(&args(&["--config", file.to_str().unwrap()])).unwrap_err();
        assert!(e.to_string().contains("app_private_key"), "{e}");
    }

    #[test]
    fn a_missing_key_file_is_named_with_its_setting() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "public_url = \"https://x\"\n[[accounts]]\nid = \"{ACCOUNT}\"\nmerchant = \"{MERCHANT}\"\n\
             mode = \"test\"\nchannel = \"wechat\"\nbase_url = \"u\"\nmchid = \"1\"\nappid = \"a\"\n\
             merchant_serial = \"s\"\nmerchant_private_key_file = \"keys/none.pem\"\n\
             apiv3_key_file = \"keys/apiv3\"\n"
        );
        let file = write(dir.path(), "p.toml", &text);
        let c = ServeConfig::load(&args(&["--config", file.to_str().unwrap()])).unwrap();
        let e = c.read_accounts().unwrap_err();
        let text = e.to_string();
        assert!(text.contains("merchant_private_key_file"), "{text}");
        assert!(text.contains(&dir.path().join("keys/none.pem").display().to_string()), "{text}");
    }

    #[test]
    fn the_debug_of_the_configuration_holds_no_key_material_and_no_database_password() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "app.pem", "-----BEGIN PRIVATE KEY-----\nALIPAYSECRETKEY\n");
        write(dir.path(), "ali.pem", "-----BEGIN PUBLIC KEY-----\nALIPAYPUBLICKEY\n");
        write(dir.path(), "wx.pem", "-----BEGIN PRIVATE KEY-----\nWECHATSECRETKEY\n");
        write(dir.path(), "apiv3", "APIV3SECRETAPIV3SECRETAPIV3SECRE\n");
        write(dir.path(), "up.pem", "-----BEGIN PRIVATE KEY-----\nUNIONPAYSECRETKEY\n");
        write(dir.path(), "up.crt", "cert");
        let text = format!(
            r#"
            public_url = "https://pay.example.com"
            database_url = "postgres://paymux:DBPASSWORD@db.internal:5432/paymux?sslpassword=DBPASSWORD"
            [[accounts]]
            id = "{ACCOUNT}"
            merchant = "{MERCHANT}"
            mode = "live"
            channel = "alipay"
            base_url = "https://openapi.alipay.com/gateway.do"
            app_id = "2021000000000001"
            app_private_key_file = "app.pem"
            alipay_public_key_file = "ali.pem"
            [[accounts]]
            id = "acct_0193a7c2e4f87b1d9c3e5a6b7c8d9e01"
            merchant = "{MERCHANT}"
            mode = "live"
            channel = "wechat"
            base_url = "https://api.mch.weixin.qq.com"
            mchid = "1900000001"
            appid = "wx8888888888888888"
            merchant_serial = "ABC"
            merchant_private_key_file = "wx.pem"
            apiv3_key_file = "apiv3"
            [[accounts]]
            id = "acct_0193a7c2e4f87b1d9c3e5a6b7c8d9e02"
            merchant = "{MERCHANT}"
            mode = "test"
            channel = "unionpay"
            base_url = "https://gateway.test.95516.com"
            mer_id = "777290058110048"
            merchant_private_key_file = "up.pem"
            merchant_certificate_file = "up.crt"
            root_certificate_file = "up.crt"
            intermediate_certificate_file = "up.crt"
            "#
        );
        let file = write(dir.path(), "paymux.toml", &text);
        let config = ServeConfig::load(&args(&["--config", file.to_str().unwrap()])).unwrap();
        let accounts = config.read_accounts().unwrap();
        assert_eq!(accounts.len(), 3);
        let printed = format!(
            "{config:?} {accounts:?} {:?}",
            args(&["--database-url", "postgres://u:DBPASSWORD@h/d"])
        );
        for secret in
            ["ALIPAYSECRETKEY", "WECHATSECRETKEY", "APIV3SECRET", "UNIONPAYSECRETKEY", "DBPASSWORD"]
        {
            assert!(!printed.contains(secret), "{secret} printed: {printed}");
        }
        assert!(printed.contains("db.internal:5432/paymux"), "{printed}");
        assert!(printed.contains("2021000000000001"), "{printed}");
    }

    #[test]
    fn a_database_url_is_shown_with_its_password_masked() {
        let shown = |s: &str| DatabaseUrl::new(s).to_string();
        assert_eq!(shown("./paymux-data/paymux.db"), "./paymux-data/paymux.db");
        assert_eq!(shown("sqlite:///var/lib/paymux.db"), "sqlite:///var/lib/paymux.db");
        assert_eq!(shown("postgres://u:p@h:5432/d"), "postgres://u:<redacted>@h:5432/d");
        assert_eq!(shown("postgres://u@h/d?password=p"), "postgres://u@h/d?<redacted>");
    }
}

//! `paymux up`: the gateway and the sandbox channels on one machine, with no channel account.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use paymux_core::{AccountId, ChannelKind, MerchantId};
use paymux_crypto::{RsaPrivateKey, RsaPublicKey, random_alphanumeric};
use paymux_engine::{BarcodeConfig, Engine, GatewayConfig, SweeperConfig, WebhookConfig};
use paymux_mock_alipay::{AlipayMock, AlipayMockConfig};
use paymux_mock_unionpay::{UnionpayMerchant, UnionpayMock, UnionpayMockConfig};
use paymux_mock_wechat::{KeyMode, PlatformKeys, WechatMerchant, WechatMock, WechatMockConfig};
use paymux_store::Store;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::DatabaseUrl;

const ALIPAY_APP_ID: &str = "2021000000000001";
const ALIPAY_SELLER_ID: &str = "2088000000000001";
const WECHAT_MCHID: &str = "1900000001";
const WECHAT_APPID: &str = "wx8888888888888888";
const UNIONPAY_MER_ID: &str = "777290058110048";

/// How to start the sandbox.
#[derive(Debug, Clone)]
pub struct SandboxOptions {
    pub data_dir: PathBuf,
    /// The gateway's store; `<data_dir>/paymux.db` when not set.
    pub database_url: Option<DatabaseUrl>,
    /// The address every server binds to; loopback unless asked otherwise.
    pub host: String,
    /// 0 picks a free port; the manifest says which.
    pub gateway_port: u16,
    pub alipay_port: u16,
    pub wechat_port: u16,
    pub unionpay_port: u16,
    /// Divides the channels' real notification retry intervals (Alipay 4m..15h, WeChat 15s..6h).
    pub notify_time_compression: u32,
    /// Replaces the compressed schedules entirely (tests use milliseconds).
    pub notify_delays: Option<Vec<Duration>>,
    pub wechat_key_mode: KeyMode,
    /// The timeout of one channel call made by the gateway.
    pub channel_timeout: Duration,
    pub sweeper: SweeperConfig,
    pub webhooks: WebhookConfig,
    /// Barcode payments' poll-then-cancel schedules (tests compress them).
    pub barcode: BarcodeConfig,
    /// False leaves the gateway to another process (`paymux serve` on the manifest's gateway
    /// URL): crash tests kill that process while the mocks here keep their state.
    pub run_gateway: bool,
}

impl SandboxOptions {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            database_url: None,
            host: "127.0.0.1".into(),
            gateway_port: 8080,
            alipay_port: 9102,
            wechat_port: 9101,
            unionpay_port: 9103,
            notify_time_compression: 60,
            notify_delays: None,
            wechat_key_mode: KeyMode::PlatformCertificate,
            channel_timeout: Duration::from_secs(10),
            sweeper: SweeperConfig::default(),
            // The sandbox's merchant endpoints live on this machine.
            webhooks: WebhookConfig { allow_private_urls: true, ..WebhookConfig::default() },
            barcode: BarcodeConfig::default(),
            run_gateway: true,
        }
    }
}

/// `<data-dir>/sandbox.json`: what a newcomer, a script or a test needs to talk to the sandbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub gateway_url: String,
    pub api_key: String,
    /// The admin page's sign-in link, with an operator token made for this start: opening it
    /// signs in and takes the token out of the address bar.
    #[serde(default)]
    pub admin_url: String,
    pub merchants: Vec<ManifestMerchant>,
    pub channels: ManifestChannels,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestMerchant {
    pub id: String,
    pub api_key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestChannels {
    pub alipay: AlipayManifest,
    pub wechat: WechatManifest,
    pub unionpay: UnionpayManifest,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AlipayManifest {
    pub mock_url: String,
    pub gateway_do: String,
    pub account_id: String,
    pub app_id: String,
    pub seller_id: String,
    pub app_private_key: PathBuf,
    pub app_public_key: PathBuf,
    pub alipay_public_key: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WechatManifest {
    pub mock_url: String,
    pub account_id: String,
    pub mchid: String,
    pub appid: String,
    pub merchant_serial: String,
    pub apiv3_key: String,
    pub merchant_private_key: PathBuf,
    pub platform_certificate: PathBuf,
    pub platform_public_key: PathBuf,
    pub platform_public_key_id: String,
    /// `certificate`, `public-key` or `both`: how the mock signs, and what the gateway's account
    /// is configured with.
    pub key_mode: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnionpayManifest {
    pub mock_url: String,
    pub account_id: String,
    pub mer_id: String,
    /// The merchant signing certificate's serial in decimal, sent as `certId`.
    pub cert_id: String,
    pub merchant_private_key: PathBuf,
    pub merchant_certificate: PathBuf,
    pub root_certificate: PathBuf,
    pub intermediate_certificate: PathBuf,
    /// The mock's own signing certificate (what `signPubKeyCert` carries).
    pub signing_certificate: PathBuf,
}

/// The running sandbox: the servers run on background tasks until [`Sandbox::stop`], a drop, or
/// the end of the process.
#[derive(Debug)]
pub struct Sandbox {
    pub manifest: Manifest,
    pub merchant_id: MerchantId,
    pub store: Arc<dyn Store>,
    pub alipay: AlipayMock,
    pub wechat: WechatMock,
    pub unionpay: UnionpayMock,
    gateway: Option<JoinHandle<()>>,
    stopping: CancellationToken,
    mocks: Vec<JoinHandle<()>>,
}

impl Sandbox {
    /// Stops the gateway as `paymux serve` stops on a signal (no new connections, the requests
    /// in flight finished, the workers' leases released), then the mocks, which the requests in
    /// flight may still have needed.
    pub async fn stop(mut self) {
        self.stopping.cancel();
        if let Some(gateway) = self.gateway.take()
            && let Err(e) = gateway.await
        {
            tracing::error!(error = %e, "the gateway ended abnormally");
        }
    }
}

impl Drop for Sandbox {
    /// Aborts every server still running, where it is.
    fn drop(&mut self) {
        for t in self.gateway.iter().chain(&self.mocks) {
            t.abort();
        }
    }
}

/// What persists across restarts besides keys: the merchant, its key and its accounts.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Identity {
    merchant_id: String,
    api_key: String,
    alipay_account_id: String,
    wechat_account_id: String,
    wechat_merchant_serial: String,
    wechat_apiv3_key: String,
    /// Absent in a data directory made before UnionPay joined the sandbox; made on the next start.
    #[serde(default)]
    unionpay_account_id: Option<String>,
}

fn read_or_create_key(path: &Path) -> Result<RsaPrivateKey> {
    if path.exists() {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        return RsaPrivateKey::load(&text).with_context(|| format!("loading {}", path.display()));
    }
    let key = RsaPrivateKey::generate()?;
    write_private(path, &key.to_pkcs8_pem()?)?;
    Ok(key)
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

fn write_public(path: &Path, key: &RsaPublicKey) -> Result<()> {
    std::fs::write(path, key.to_spki_pem()).with_context(|| format!("writing {}", path.display()))
}

/// Binds `host:port`; a failure names the flag that chose the port, so the one line a user
/// sees says what to change.
async fn bind(host: &str, port: u16, flag: &str) -> Result<(TcpListener, String)> {
    let listener = TcpListener::bind((host, port))
        .await
        .with_context(|| format!("cannot listen on {host}:{port} (change {flag} or --host)"))?;
    let addr = listener.local_addr()?;
    Ok((listener, format!("http://{addr}")))
}

fn spawn_server(
    name: &'static str,
    fut: impl std::future::Future<Output = std::io::Result<()>> + Send + 'static,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(e) = fut.await {
            tracing::error!(server = name, error = %e, "server stopped");
        }
    })
}

fn scaled(real: &[u64], compression: u32) -> Vec<Duration> {
    let c = u64::from(compression.max(1));
    real.iter().map(|s| Duration::from_millis(s * 1000 / c)).collect()
}

async fn identity(engine: &Engine, dir: &Path) -> Result<Identity> {
    let path = dir.join("identity.json");
    if path.exists() {
        let text = std::fs::read_to_string(&path)?;
        let mut id: Identity = serde_json::from_str(&text).context("reading identity.json")?;
        let merchant: MerchantId = id.merchant_id.parse()?;
        if engine.merchant_exists(merchant).await? {
            if id.unionpay_account_id.is_none() {
                id.unionpay_account_id = Some(AccountId::new().to_string());
                write_private(&path, &serde_json::to_string_pretty(&id)?)?;
            }
            return Ok(id);
        }
        tracing::warn!("identity.json names a merchant the store does not have; making a new one");
    }
    // The sandbox's accounts talk to its mocks: test mode, for a test key.
    let (merchant, api_key) = engine.create_merchant("Sandbox merchant", false).await?;
    let id = Identity {
        merchant_id: merchant.to_string(),
        api_key,
        alipay_account_id: AccountId::new().to_string(),
        wechat_account_id: AccountId::new().to_string(),
        wechat_merchant_serial: paymux_crypto::random_bytes::<20>()
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect(),
        wechat_apiv3_key: random_alphanumeric(32),
        unionpay_account_id: Some(AccountId::new().to_string()),
    };
    write_private(&path, &serde_json::to_string_pretty(&id)?)?;
    Ok(id)
}

/// Starts the store, the mocks and the gateway, and writes `sandbox.json`.
pub async fn start(opts: SandboxOptions) -> Result<Sandbox> {
    let dir = &opts.data_dir;
    let keys_dir = dir.join("keys");
    std::fs::create_dir_all(&keys_dir)
        .with_context(|| format!("cannot create {} (change --data-dir)", keys_dir.display()))?;
    let (database, flag) = match &opts.database_url {
        Some(url) => (url.clone(), "--database-url"),
        None => (DatabaseUrl::new(dir.join("paymux.db").display().to_string()), "--data-dir"),
    };
    let store = crate::open_store(database.expose())
        .await
        .with_context(|| format!("cannot open the store {database} (change {flag})"))?;
    let (gw_listener, gateway_url) = bind(&opts.host, opts.gateway_port, "--gateway-port").await?;
    let (ali_listener, alipay_url) = bind(&opts.host, opts.alipay_port, "--alipay-port").await?;
    let (wx_listener, wechat_url) = bind(&opts.host, opts.wechat_port, "--wechat-port").await?;
    let (up_listener, unionpay_url) =
        bind(&opts.host, opts.unionpay_port, "--unionpay-port").await?;
    let mut config = GatewayConfig::new(gateway_url.clone());
    config.channel_timeout = opts.channel_timeout;
    config.sweeper = opts.sweeper.clone();
    config.webhooks = opts.webhooks.clone();
    config.barcode = opts.barcode.clone();
    // A developer watching the sandbox's backlog gauges sees them move at once.
    config.gauges_interval = Duration::from_secs(1);
    let state = Engine::new(store.clone(), config);
    let id = identity(&state, dir).await?;
    let merchant_id: MerchantId = id.merchant_id.parse()?;
    // A fresh operator token on every start (only its hash is kept), for the sign-in link.
    let (_, operator_token) = state.create_operator_token("sandbox (paymux up)").await?;
    let admin_url = format!("{gateway_url}/admin/login?token={operator_token}");

    // Keys are made on first start and kept, so a developer's configured SDKs keep working.
    let app_key = read_or_create_key(&keys_dir.join("alipay-app-private.pem"))?;
    let alipay_key = read_or_create_key(&keys_dir.join("alipay-mock-private.pem"))?;
    let wx_merchant_key = read_or_create_key(&keys_dir.join("wechat-merchant-private.pem"))?;
    let wx_bundle = keys_dir.join("wechat-platform-bundle.pem");
    let platform = if wx_bundle.exists() {
        PlatformKeys::from_pem_bundle(&std::fs::read_to_string(&wx_bundle)?)
            .map_err(|e| anyhow::anyhow!("loading {}: {e}", wx_bundle.display()))?
    } else {
        let k =
            PlatformKeys::generate().map_err(|e| anyhow::anyhow!("generating WeChat keys: {e}"))?;
        write_private(&wx_bundle, &k.to_pem_bundle())?;
        k
    };
    let paths = KeyPaths::new(&keys_dir);
    write_public(&paths.alipay_app_public, &app_key.public_key())?;
    write_public(&paths.alipay_public, &alipay_key.public_key())?;
    std::fs::write(&paths.wechat_platform_cert, platform.platform_certificate_pem())?;
    std::fs::write(&paths.wechat_platform_public, platform.public_key_pem())?;

    let alipay = AlipayMock::new(AlipayMockConfig {
        public_url: alipay_url.clone(),
        alipay_private_key: alipay_key.clone(),
        seller_id: ALIPAY_SELLER_ID.into(),
        notify_delays: opts.notify_delays.clone().unwrap_or_else(|| {
            scaled(&[240, 600, 600, 3600, 7200, 21600, 54000], opts.notify_time_compression)
        }),
        timestamp_tolerance: Some(Duration::from_secs(15 * 60)),
    });
    alipay.register_app(ALIPAY_APP_ID, app_key.public_key());

    let mut wx_config = WechatMockConfig::new(wechat_url.clone());
    wx_config.notify_delays = opts.notify_delays.clone().unwrap_or_else(|| {
        scaled(
            &[
                15, 15, 30, 180, 600, 1200, 1800, 1800, 1800, 3600, 10800, 10800, 10800, 21600,
                21600,
            ],
            opts.notify_time_compression,
        )
    });
    let wechat = WechatMock::new(wx_config, platform.clone());
    wechat.register_merchant(
        WechatMerchant {
            mchid: WECHAT_MCHID.into(),
            appid: WECHAT_APPID.into(),
            merchant_serial: id.wechat_merchant_serial.clone(),
            merchant_public_key: wx_merchant_key.public_key(),
            apiv3_key: id.wechat_apiv3_key.clone(),
        },
        opts.wechat_key_mode,
    );

    let (up_keys, up_merchant, up_paths) =
        paymux_mock_unionpay::keys::write_sandbox_credentials(&keys_dir, UNIONPAY_MER_ID)
            .context("UnionPay sandbox certificates")?;
    let mut up_config = UnionpayMockConfig::new(unionpay_url.clone());
    up_config.notify_delays = opts
        .notify_delays
        .clone()
        .unwrap_or_else(|| scaled(&[60, 120, 240, 300], opts.notify_time_compression));
    let unionpay = UnionpayMock::new(up_config, up_keys);
    unionpay.register_merchant(
        UnionpayMerchant::with_certificate(
            UNIONPAY_MER_ID,
            "paymux sandbox shop",
            &up_merchant.certificate_pem,
        )
        .context("registering the UnionPay sandbox merchant")?,
    );

    let alipay_account: AccountId = id.alipay_account_id.parse()?;
    let wechat_account: AccountId = id.wechat_account_id.parse()?;
    let alipay_config = paymux_alipay::AlipayAccountConfig {
        app_id: ALIPAY_APP_ID.into(),
        app_private_key: app_key.to_pkcs8_pem()?,
        alipay_public_key: alipay_key.public_key().to_spki_pem(),
        gateway_url: format!("{alipay_url}/gateway.do"),
        seller_id: Some(ALIPAY_SELLER_ID.into()),
        app_cert: None,
        alipay_root_cert: None,
        max_share_bps: None,
    };
    let config = serde_json::to_value(&alipay_config)?;
    state.put_account(alipay_account, merchant_id, ChannelKind::Alipay, config, false).await?;
    let with_public_key = opts.wechat_key_mode != KeyMode::PlatformCertificate;
    let wechat_config = paymux_wechat::WechatAccountConfig {
        mchid: WECHAT_MCHID.into(),
        appid: WECHAT_APPID.into(),
        merchant_serial: id.wechat_merchant_serial.clone(),
        merchant_private_key: wx_merchant_key.to_pkcs8_pem()?,
        apiv3_key: id.wechat_apiv3_key.clone(),
        base_url: wechat_url.clone(),
        platform_public_key_id: with_public_key.then(|| platform.public_key_id()),
        platform_public_key: with_public_key.then(|| platform.public_key_pem()),
        max_share_bps: None,
    };
    let config = serde_json::to_value(&wechat_config)?;
    state.put_account(wechat_account, merchant_id, ChannelKind::Wechat, config, false).await?;

    let unionpay_account_id =
        id.unionpay_account_id.clone().context("identity.json has no UnionPay account")?;
    let unionpay_account: AccountId = unionpay_account_id.parse()?;
    let read =
        |p: &Path| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
    let unionpay_config = paymux_unionpay::UnionpayAccountConfig {
        mer_id: UNIONPAY_MER_ID.into(),
        gateway_url: unionpay_url.clone(),
        merchant_private_key: read(&up_paths.merchant_private_key)?,
        merchant_certificate: up_merchant.certificate_pem.clone(),
        root_certificate: read(&up_paths.root_certificate)?,
        intermediate_certificate: read(&up_paths.intermediate_certificate)?,
        signer_owner: paymux_unionpay::protocol::UNIONPAY_OWNER.into(),
    };
    let config = serde_json::to_value(&unionpay_config)?;
    state.put_account(unionpay_account, merchant_id, ChannelKind::Unionpay, config, false).await?;

    let mocks = vec![
        spawn_server("alipay-mock", alipay.clone().serve(ali_listener)),
        spawn_server("wechat-mock", wechat.clone().serve(wx_listener)),
        spawn_server("unionpay-mock", unionpay.clone().serve(up_listener)),
    ];
    let stopping = CancellationToken::new();
    let gateway = if opts.run_gateway {
        let shutdown = stopping.clone().cancelled_owned();
        Some(spawn_server("gateway", paymux_gateway::serve(gw_listener, state, shutdown)))
    } else {
        // Free the port for the process that will serve it.
        drop(gw_listener);
        None
    };

    let manifest = Manifest {
        gateway_url,
        api_key: id.api_key.clone(),
        admin_url,
        merchants: vec![ManifestMerchant {
            id: id.merchant_id.clone(),
            api_key: id.api_key.clone(),
        }],
        channels: ManifestChannels {
            alipay: AlipayManifest {
                gateway_do: format!("{alipay_url}/gateway.do"),
                mock_url: alipay_url,
                account_id: id.alipay_account_id.clone(),
                app_id: ALIPAY_APP_ID.into(),
                seller_id: ALIPAY_SELLER_ID.into(),
                app_private_key: keys_dir.join("alipay-app-private.pem"),
                app_public_key: paths.alipay_app_public,
                alipay_public_key: paths.alipay_public,
            },
            wechat: WechatManifest {
                mock_url: wechat_url,
                account_id: id.wechat_account_id.clone(),
                mchid: WECHAT_MCHID.into(),
                appid: WECHAT_APPID.into(),
                merchant_serial: id.wechat_merchant_serial.clone(),
                apiv3_key: id.wechat_apiv3_key.clone(),
                merchant_private_key: keys_dir.join("wechat-merchant-private.pem"),
                platform_certificate: paths.wechat_platform_cert,
                platform_public_key: paths.wechat_platform_public,
                platform_public_key_id: platform.public_key_id(),
                key_mode: opts.wechat_key_mode.as_str().to_owned(),
            },
            unionpay: UnionpayManifest {
                mock_url: unionpay_url,
                account_id: unionpay_account_id,
                mer_id: UNIONPAY_MER_ID.into(),
                cert_id: up_merchant.cert_id.clone(),
                merchant_private_key: up_paths.merchant_private_key.clone(),
                merchant_certificate: up_paths.merchant_certificate.clone(),
                root_certificate: up_paths.root_certificate.clone(),
                intermediate_certificate: up_paths.intermediate_certificate.clone(),
                signing_certificate: up_paths.signing_certificate.clone(),
            },
        },
    };
    write_private(&dir.join("sandbox.json"), &serde_json::to_string_pretty(&manifest)?)?;
    Ok(Sandbox { manifest, merchant_id, store, alipay, wechat, unionpay, gateway, stopping, mocks })
}

struct KeyPaths {
    alipay_app_public: PathBuf,
    alipay_public: PathBuf,
    wechat_platform_cert: PathBuf,
    wechat_platform_public: PathBuf,
}

impl KeyPaths {
    fn new(dir: &Path) -> Self {
        Self {
            alipay_app_public: dir.join("alipay-app-public.pem"),
            alipay_public: dir.join("alipay-public.pem"),
            wechat_platform_cert: dir.join("wechat-platform-cert.pem"),
            wechat_platform_public: dir.join("wechat-platform-public.pem"),
        }
    }
}

//! The engine: the store, the channel registry and the configuration, shared by every door
//! (the HTTP gateway, the CLI) and by the background workers.

use std::sync::Arc;

use paymux_core::{AccountId, Channel, ChannelKind, PaymentRef};
use paymux_store::{AttemptRecord, PaymentRecord, Store};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::access::CallerCache;
use crate::config::GatewayConfig;
use crate::error::EngineError;
use crate::outbound::{self, OutboundError};
use crate::registry::ChannelRegistry;

/// Everything a use case needs, cheap to clone.
#[derive(Debug, Clone)]
pub struct Engine {
    pub store: Arc<dyn Store>,
    pub channels: Arc<ChannelRegistry>,
    pub config: Arc<GatewayConfig>,
    /// API keys already authenticated.
    pub callers: Arc<CallerCache>,
}

impl Engine {
    pub fn new(store: Arc<dyn Store>, config: GatewayConfig) -> Self {
        let channels = Arc::new(ChannelRegistry::new(config.channel_timeout));
        Self { store, channels, config: Arc::new(config), callers: Arc::default() }
    }

    /// Where `channel` sends this account's notifications.
    pub fn notify_url(&self, channel: ChannelKind, account: AccountId) -> String {
        format!(
            "{}/callbacks/{}/{}",
            self.config.public_url.trim_end_matches('/'),
            channel,
            account
        )
    }

    /// Starts the background workers, the sweeper, the webhook dispatcher and the backlog gauges, on the current
    /// runtime. [`Workers::shutdown`] stops them cleanly; dropping the returned [`Workers`]
    /// aborts them where they are (their leases then run out by themselves).
    ///
    /// No webhook is ever sent by a client without timeouts and the address filter: if that
    /// client cannot be built, nothing starts.
    pub fn start_workers(&self) -> Result<Workers, OutboundError> {
        let hooks = &self.config.webhooks;
        let http = outbound::webhook_client(hooks.timeout, hooks.allow_private_urls)?;
        let stop = CancellationToken::new();
        Ok(Workers {
            tasks: vec![
                tokio::spawn(crate::sweeper::run(self.clone(), stop.clone())),
                tokio::spawn(crate::dispatcher::run(self.clone(), http, stop.clone())),
                tokio::spawn(crate::telemetry::run_gauges(
                    self.clone(),
                    self.config.gauges_interval,
                    stop.clone(),
                )),
            ],
            stop,
        })
    }

    /// The adapter and the attempt the payment shows: its latest, or the one it succeeded
    /// with.
    pub async fn adapter_and_attempt(
        &self,
        p: &PaymentRecord,
    ) -> Result<(Arc<dyn Channel>, AttemptRecord), EngineError> {
        let attempt = self
            .store
            .attempts(p.id)
            .await?
            .into_iter()
            .find(|a| a.channel_order_no == p.channel_order_no && a.account_id == p.account_id)
            .ok_or(EngineError::NoAttempt(p.id))?;
        Ok((self.attempt_adapter(&attempt).await?, attempt))
    }

    /// The adapter of the attempt's account.
    pub async fn attempt_adapter(
        &self,
        a: &AttemptRecord,
    ) -> Result<Arc<dyn Channel>, EngineError> {
        let account = self
            .store
            .channel_account(a.account_id)
            .await?
            .ok_or(EngineError::AccountGone(a.account_id))?;
        self.adapter(&account)
    }

    /// The account's adapter.
    pub fn adapter(
        &self,
        account: &paymux_store::AccountRecord,
    ) -> Result<Arc<dyn Channel>, EngineError> {
        self.channels
            .adapter(account)
            .map_err(|source| EngineError::Misconfigured { account: account.id, source })
    }

    /// Asks the channel about every attempt of the payment it still watches, applies its truth
    /// (closing the attempts that lost to another), and returns the payment as it is after.
    pub async fn sync_payment(&self, p: &PaymentRecord) -> Result<PaymentRecord, EngineError> {
        self.check_payment(p, false).await?;
        self.store
            .payment(p.merchant_id, p.id)
            .await?
            .ok_or(EngineError::NotFound { what: "payment" })
    }
}

/// Now, to the millisecond: what the store keeps of a time, so an object returned by the call
/// that made it reads the same as the object read back later.
pub fn now_ms() -> time::OffsetDateTime {
    let now = time::OffsetDateTime::now_utc();
    now.replace_nanosecond(now.millisecond() as u32 * 1_000_000).unwrap_or(now)
}

/// How a channel finds one attempt of a payment: its numbers and channel state.
pub fn payment_ref(p: &PaymentRecord, attempt: &AttemptRecord) -> PaymentRef {
    PaymentRef {
        channel_order_no: attempt.channel_order_no.clone(),
        channel_trade_no: attempt.channel_trade_no.clone(),
        amount: p.amount,
        // The attempt's own time: what its create sent (UnionPay's txnTime, Alipay's QR timeout).
        created_at: attempt.created_at,
        expires_at: p.expires_at,
        channel_data: attempt.channel_data.clone(),
    }
}

/// The running background workers. [`Workers::shutdown`] stops them cleanly; dropping this
/// aborts them.
#[derive(Debug)]
pub struct Workers {
    tasks: Vec<JoinHandle<()>>,
    stop: CancellationToken,
}

impl Workers {
    /// Tells the workers to stop and waits until they have: each finishes the row or delivery
    /// in hand, starts no other, and releases the leases on the ones it claimed but did not
    /// start, so another instance takes them at once instead of after the lease. Bound the wait
    /// with a timeout: a row in hand can take a few channel timeouts.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        for task in self.tasks.drain(..) {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "a background worker ended abnormally");
            }
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

//! Merchant webhook endpoints and events: create, list, rotate a secret, delete; read an event
//! with its deliveries, redeliver it by hand. The dispatcher is in [`crate::dispatcher`].

use std::time::Duration;

use paymux_core::{EventId, EventType, MerchantId};
use paymux_crypto::random_alphanumeric;
use paymux_store::{
    DeliveryRecord, EventRecord, SecretRotation, StoreError, WebhookEndpointRecord,
};
use time::OffsetDateTime;

use crate::engine::Engine;
use crate::error::EngineError;
use crate::objects::{Event, Page};
use crate::outbound;

/// How long a replaced secret keeps signing after a rotation.
const SECRET_OVERLAP: Duration = Duration::from_secs(24 * 3600);

/// Who is asking: a merchant, through a key of one mode. Another mode's objects are not found.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub merchant: MerchantId,
    pub livemode: bool,
}

impl Caller {
    pub fn sees(&self, livemode: bool) -> bool {
        self.livemode == livemode
    }
}

fn new_secret() -> String {
    format!("whsec_{}", random_alphanumeric(32))
}

fn invalid(field: &'static str, message: impl Into<String>) -> EngineError {
    EngineError::InvalidInput { field, message: message.into() }
}

impl Engine {
    /// A new endpoint for `url`, receiving `events` (every type when `None`); its secret is in
    /// the record returned, shown to the merchant once.
    pub async fn create_webhook_endpoint(
        &self,
        caller: Caller,
        url: Option<String>,
        events: Option<Vec<String>>,
    ) -> Result<WebhookEndpointRecord, EngineError> {
        let url = url.ok_or_else(|| invalid("url", "url is required"))?;
        let parsed = reqwest::Url::parse(&url)
            .map_err(|e| invalid("url", format!("url is not a valid URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") || url.len() > 512 {
            return Err(invalid("url", "url must be an http(s) URL of at most 512 characters"));
        }
        if !self.config.webhooks.allow_private_urls
            && let Err(e) = outbound::check_url(&parsed).await
        {
            return Err(invalid("url", format!("url must reach a globally routable address: {e}")));
        }
        let events = events
            .map(|list| {
                if list.is_empty() {
                    return Err(invalid("events", "events must not be empty; omit it for all"));
                }
                list.iter()
                    .map(|t| t.parse::<EventType>().map_err(|e| invalid("events", e)))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        let ep = WebhookEndpointRecord {
            id: format!("we_{}", uuid::Uuid::now_v7().simple()),
            merchant_id: caller.merchant,
            url,
            secret: new_secret(),
            events,
            livemode: caller.livemode,
            created_at: OffsetDateTime::now_utc(),
        };
        self.store.create_webhook_endpoint(&ep).await?;
        Ok(ep)
    }

    /// The caller's endpoints of its mode.
    pub async fn webhook_endpoints(
        &self,
        caller: Caller,
    ) -> Result<Vec<WebhookEndpointRecord>, EngineError> {
        Ok(self.store.webhook_endpoints(caller.merchant, caller.livemode).await?)
    }

    /// A new secret; every secret replaced within the overlap keeps signing until its own overlap
    /// ends. With an `idempotency_key`, a retried rotation hands back the secret its first run
    /// made, even once a stored answer is gone (its first run died after the commit, or the
    /// answer is older than the retention).
    pub async fn rotate_webhook_secret(
        &self,
        caller: Caller,
        id: &str,
        idempotency_key: Option<&str>,
    ) -> Result<WebhookEndpointRecord, EngineError> {
        self.own_endpoint(caller, id).await?;
        let secret = new_secret();
        let now = OffsetDateTime::now_utc();
        let rotation = SecretRotation {
            secret: &secret,
            old_expires_at: now + SECRET_OVERLAP,
            now,
            idempotency_key,
        };
        let not_found = EngineError::NotFound { what: "webhook endpoint" };
        let Some(secret) = self.store.rotate_webhook_secret(caller.merchant, id, &rotation).await?
        else {
            return Err(not_found);
        };
        let mut ep = self.store.webhook_endpoint(caller.merchant, id).await?.ok_or(not_found)?;
        ep.secret = secret;
        Ok(ep)
    }

    pub async fn delete_webhook_endpoint(
        &self,
        caller: Caller,
        id: &str,
    ) -> Result<(), EngineError> {
        self.own_endpoint(caller, id).await?;
        if !self.store.delete_webhook_endpoint(caller.merchant, id).await? {
            return Err(EngineError::NotFound { what: "webhook endpoint" });
        }
        Ok(())
    }

    /// The caller's endpoint of its mode.
    async fn own_endpoint(
        &self,
        caller: Caller,
        id: &str,
    ) -> Result<WebhookEndpointRecord, EngineError> {
        self.store
            .webhook_endpoint(caller.merchant, id)
            .await?
            .filter(|ep| caller.sees(ep.livemode))
            .ok_or(EngineError::NotFound { what: "webhook endpoint" })
    }

    /// The caller's event of its mode.
    async fn own_event(&self, caller: Caller, id: EventId) -> Result<EventRecord, EngineError> {
        self.store
            .event(caller.merchant, id)
            .await?
            .filter(|e| caller.sees(e.livemode))
            .ok_or(EngineError::NotFound { what: "event" })
    }

    /// An event with its deliveries.
    pub async fn event_with_deliveries(
        &self,
        caller: Caller,
        id: EventId,
    ) -> Result<(EventRecord, Vec<DeliveryRecord>), EngineError> {
        let e = self.own_event(caller, id).await?;
        let deliveries = self.store.deliveries_for_event(caller.merchant, id).await?;
        Ok((e, deliveries))
    }

    /// The caller's events of its mode, oldest first, after the event `after` (an id).
    pub async fn list_events(
        &self,
        caller: Caller,
        after: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Page<Event>, EngineError> {
        let after = after
            .map(|a| a.parse::<EventId>())
            .transpose()
            .map_err(|_| invalid("after", "after must be an event id"))?;
        let limit = limit.unwrap_or(20).clamp(1, 100);
        let rows = self.store.events(caller.merchant, caller.livemode, after, limit).await?;
        Ok(crate::payments::page(rows.iter().map(Event::from).collect(), limit, |e| e.id.clone()))
    }

    /// Makes every delivery of the event due now, with a fresh retry window. Returns how many.
    pub async fn redeliver_event(&self, caller: Caller, id: EventId) -> Result<u64, EngineError> {
        self.own_event(caller, id).await?;
        match self.store.redeliver_event(caller.merchant, id, OffsetDateTime::now_utc()).await {
            Ok(n) => Ok(n),
            Err(StoreError::NotFound) => Err(EngineError::NotFound { what: "event" }),
            Err(e) => Err(e.into()),
        }
    }
}

//! Who is calling, and idempotent requests: what every door needs before and after a use case.
//!
//! A door (the HTTP gateway) authenticates a key into a [`Caller`], claims an `Idempotency-Key`
//! for a request with [`Engine::idempotency_begin`], runs the use case with the key bound to the
//! object it writes, and keeps the answer with [`Engine::idempotency_finish`], unless the use case
//! kept it already ([`Created`]). How a request is turned into the hash is the door's; the rules
//! (which claim wins, how long a claim and an answer live, what a retry of a lost request gets)
//! are here and in the store.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use paymux_core::{MerchantId, PaymentId, RefundId};
use paymux_crypto::sha256_hex;
use paymux_store::IdempotencyBegin;
use serde_json::Value;
use time::OffsetDateTime;

use crate::endpoints::Caller;
use crate::engine::Engine;
use crate::error::EngineError;
use crate::objects::Refund;

/// API keys already looked up, by the SHA-256 of the key: the merchant and mode they name.
///
/// Every request authenticates, and the store lookup is a round trip to a reader connection's
/// thread; an issued key never changes owner, so the answer is kept. Only keys that exist are
/// kept (an attacker's guesses cost memory nowhere), each for [`CallerCache::TTL`] (so a key
/// revoked in the store, if paymux ever revokes one, stops working within that time on every
/// instance), and the whole map is dropped if it ever holds [`CallerCache::MAX`] keys.
#[derive(Debug, Default)]
pub struct CallerCache {
    keys: RwLock<HashMap<String, (Caller, Instant)>>,
}

impl CallerCache {
    pub const TTL: Duration = Duration::from_secs(60);
    pub const MAX: usize = 10_000;

    fn get(&self, hash: &str, now: Instant) -> Option<Caller> {
        let keys = self.keys.read().ok()?;
        keys.get(hash).filter(|(_, at)| now.duration_since(*at) < Self::TTL).map(|(c, _)| *c)
    }

    fn put(&self, hash: String, caller: Caller, now: Instant) {
        if let Ok(mut keys) = self.keys.write() {
            if keys.len() >= Self::MAX {
                keys.clear();
            }
            keys.insert(hash, (caller, now));
        }
    }
}

/// What a create returns: the object, and the bytes kept as the answer of the request's
/// idempotency key when the use case could keep them itself.
///
/// A door that gets `answer` sends exactly those bytes with [`Created::STATUS`] and does not keep
/// an answer of its own: they were committed with the channel's answer, so a retry replays them
/// even if the process dies before it sends them, and the create spends no write on them.
#[derive(Debug)]
pub struct Created<T> {
    pub object: T,
    pub answer: Option<Vec<u8>>,
}

impl<T> Created<T> {
    /// The status of a created object's answer, as it is kept for its idempotency key.
    pub const STATUS: u16 = 201;

    /// An object whose answer, if any, the door keeps.
    pub(crate) fn unkept(object: T) -> Self {
        Self { object, answer: None }
    }
}

/// The idempotency key a create runs under, as its use case keeps the answer for it.
#[derive(Debug, Clone)]
pub(crate) struct AnswerKey {
    pub merchant: MerchantId,
    pub key: String,
}

impl AnswerKey {
    pub fn of(caller: Caller, key: Option<&str>) -> Option<Self> {
        key.map(|k| Self { merchant: caller.merchant, key: k.to_owned() })
    }
}

impl Engine {
    /// The merchant and mode of a secret API key (`sk_test_...`, `sk_live_...`), if it is one.
    /// The lookup is by the key's hash: the key is never compared against a stored secret.
    pub async fn authenticate(&self, api_key: &str) -> Result<Option<Caller>, EngineError> {
        if !(api_key.starts_with("sk_test_") || api_key.starts_with("sk_live_")) {
            return Ok(None);
        }
        let hash = sha256_hex(api_key.as_bytes());
        let now = Instant::now();
        if let Some(caller) = self.callers.get(&hash, now) {
            return Ok(Some(caller));
        }
        let owner = self.store.merchant_for_key(&hash).await?;
        let caller = owner.map(|o| Caller { merchant: o.merchant_id, livemode: o.livemode });
        if let Some(c) = caller {
            self.callers.put(hash, c, now);
        }
        Ok(caller)
    }

    /// Whether the store answers (readiness).
    pub async fn ready(&self) -> Result<(), EngineError> {
        Ok(self.store.ping().await?)
    }

    /// Claims `key` for a request whose canonical form hashes to `request_hash`: a claim in
    /// flight lasts the configured lease, a stored answer the configured retention.
    pub async fn idempotency_begin(
        &self,
        caller: Caller,
        key: &str,
        request_hash: &str,
    ) -> Result<IdempotencyBegin, EngineError> {
        let now = OffsetDateTime::now_utc();
        Ok(self
            .store
            .idempotency_begin(
                caller.merchant,
                key,
                request_hash,
                now,
                now + self.config.idempotency_lease,
                now - self.config.idempotency_retention,
            )
            .await?)
    }

    /// Keeps the answer of a claimed key, replayed to every retry from now on. Returns whether it
    /// was kept: false if another answer was kept first, which stays.
    pub async fn idempotency_finish(
        &self,
        caller: Caller,
        key: &str,
        status: u16,
        body: &[u8],
    ) -> Result<bool, EngineError> {
        Ok(self.store.idempotency_finish(caller.merchant, key, status, body).await?)
    }

    /// Drops a claim whose request changed nothing, so a retry runs again.
    pub async fn idempotency_release(&self, caller: Caller, key: &str) -> Result<(), EngineError> {
        Ok(self.store.idempotency_release(caller.merchant, key).await?)
    }

    /// The object a request whose answer was lost created (its key is bound to it), as it is now:
    /// what a retry of that request answers.
    pub async fn recovered_object(
        &self,
        caller: Caller,
        object_id: &str,
    ) -> Result<Value, EngineError> {
        let visible = |livemode: bool| caller.sees(livemode);
        let object = if let Ok(id) = object_id.parse::<PaymentId>() {
            match self.store.payment(caller.merchant, id).await?.filter(|p| visible(p.livemode)) {
                Some(p) => Some(serde_json::to_value(self.payment_object(&p).await?)),
                None => None,
            }
        } else if let Ok(id) = object_id.parse::<RefundId>() {
            let r = self.store.refund(caller.merchant, id).await?.filter(|r| visible(r.livemode));
            r.map(|r| serde_json::to_value(Refund::from(&r)))
        } else {
            None
        };
        match object {
            Some(v) => v.map_err(|source| EngineError::Encode { what: "object", source }),
            None => {
                tracing::error!(
                    object = object_id,
                    "an idempotency key is bound to an object that is gone"
                );
                Err(EngineError::BoundObjectGone { object: object_id.to_owned() })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use paymux_core::MerchantId;

    use super::*;

    fn caller() -> Caller {
        Caller { merchant: MerchantId::new(), livemode: false }
    }

    #[test]
    fn a_key_is_kept_for_its_ttl_only() {
        let cache = CallerCache::default();
        let t0 = Instant::now();
        let c = caller();
        cache.put("h".into(), c, t0);
        assert_eq!(cache.get("h", t0).map(|c| c.merchant), Some(c.merchant));
        assert!(cache.get("h", t0 + CallerCache::TTL).is_none(), "expired");
        assert!(cache.get("other", t0).is_none());
    }

    #[test]
    fn a_full_cache_starts_over() {
        let cache = CallerCache::default();
        let t0 = Instant::now();
        for i in 0..CallerCache::MAX {
            cache.put(format!("k{i}"), caller(), t0);
        }
        cache.put("last".into(), caller(), t0);
        assert!(cache.get("k0", t0).is_none());
        assert!(cache.get("last", t0).is_some());
        assert_eq!(cache.keys.read().map(|k| k.len()).unwrap_or(0), 1);
    }
}

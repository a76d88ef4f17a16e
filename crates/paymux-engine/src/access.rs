//! Who is calling, and idempotent requests: what every door needs before and after a use case.
//!
//! A door (the HTTP gateway) authenticates a key into a [`Caller`], claims an `Idempotency-Key`
//! for a request with [`Engine::idempotency_begin`], runs the use case with the key bound to the
//! object it writes, and keeps the answer with [`Engine::idempotency_finish`]. How a request is
//! turned into the hash and how an answer is stored are the door's; the rules (which claim wins,
//! how long a claim and an answer live, what a retry of a lost request gets) are here and in the
//! store.

use paymux_core::{PaymentId, RefundId};
use paymux_crypto::sha256_hex;
use paymux_store::IdempotencyBegin;
use serde_json::Value;
use time::OffsetDateTime;

use crate::endpoints::Caller;
use crate::engine::Engine;
use crate::error::EngineError;
use crate::objects::Refund;

impl Engine {
    /// The merchant and mode of a secret API key (`sk_test_...`, `sk_live_...`), if it is one.
    /// The lookup is by the key's hash: the key is never compared against a stored secret.
    pub async fn authenticate(&self, api_key: &str) -> Result<Option<Caller>, EngineError> {
        if !(api_key.starts_with("sk_test_") || api_key.starts_with("sk_live_")) {
            return Ok(None);
        }
        let owner = self.store.merchant_for_key(&sha256_hex(api_key.as_bytes())).await?;
        Ok(owner.map(|o| Caller { merchant: o.merchant_id, livemode: o.livemode }))
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

    /// Keeps the answer of a claimed key, replayed to every retry from now on.
    pub async fn idempotency_finish(
        &self,
        caller: Caller,
        key: &str,
        status: u16,
        body: &[u8],
    ) -> Result<(), EngineError> {
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

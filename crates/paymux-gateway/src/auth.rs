//! Bearer API keys: `sk_test_...` / `sk_live_...`, stored as SHA-256 hashes.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use paymux_core::MerchantId;
use paymux_crypto::sha256_hex;

use crate::error::ApiError;
use paymux_engine::Engine;

/// The authenticated merchant of a request, and the mode of its key: a key sees only the
/// accounts and objects of its own mode.
#[derive(Debug, Clone, Copy)]
pub struct Merchant {
    pub id: MerchantId,
    pub livemode: bool,
}

impl Merchant {
    /// The key's mode, as errors name it.
    pub fn mode(&self) -> &'static str {
        if self.livemode { "live" } else { "test" }
    }

    /// The merchant and mode, as the engine's use cases take them.
    pub fn caller(&self) -> paymux_engine::Caller {
        paymux_engine::Caller { merchant: self.id, livemode: self.livemode }
    }

    /// Whether an object of this mode is visible to the key: another mode's object is a 404.
    pub fn sees(&self, livemode: bool) -> bool {
        self.livemode == livemode
    }
}

impl FromRequestParts<Engine> for Merchant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Engine) -> Result<Self, ApiError> {
        // Already authenticated by an outer layer (idempotency) for this request.
        if let Some(m) = parts.extensions.get::<Merchant>() {
            return Ok(*m);
        }
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer <API key>"))?;
        let key = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| ApiError::unauthorized("Authorization must be `Bearer <API key>`"))?;
        if !(key.starts_with("sk_test_") || key.starts_with("sk_live_")) {
            return Err(ApiError::unauthorized("invalid API key"));
        }
        // The lookup is by hash, so the key is never compared byte by byte against a stored secret.
        let owner = state
            .store
            .merchant_for_key(&sha256_hex(key.as_bytes()))
            .await?
            .ok_or_else(|| ApiError::unauthorized("invalid API key"))?;
        Ok(Merchant { id: owner.merchant_id, livemode: owner.livemode })
    }
}

//! Bearer API keys: `sk_test_...` / `sk_live_...`, stored as SHA-256 hashes.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use paymux_core::MerchantId;

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
        let caller = state
            .authenticate(key)
            .await?
            .ok_or_else(|| ApiError::unauthorized("invalid API key"))?;
        Ok(Merchant { id: caller.merchant, livemode: caller.livemode })
    }
}

//! The operator's use cases, behind the admin page: operator tokens and the sessions opened with
//! them, the views across merchants (`views`), the actions on a payment, each made through the
//! same engine calls as the merchant API and recorded, and the masking of channel notifications
//! (`mask`).
//!
//! Tokens and sessions are kept as SHA-256 hashes only: a copy of the database opens no session.
//! A session's CSRF token is derived from its cookie (an HMAC keyed by it), so it needs no
//! storage, differs per session and is useless without the cookie it belongs to.

mod mask;
mod views;

use std::time::Duration;

use paymux_core::{EventId, PaymentId};
use paymux_crypto::{constant_time_eq, hmac_sha256_hex, random_alphanumeric, sha256_hex};
use paymux_store::{AdminSessionRecord, OperatorActionRecord, OperatorTokenRecord, PaymentRecord};
use time::OffsetDateTime;

use crate::endpoints::Caller;
use crate::engine::{Engine, now_ms};
use crate::error::EngineError;

pub use mask::{MaskedNotification, is_secret_name, mask_notification};
pub use views::{
    AdminPage, AdminPaymentQuery, ChannelStats, PaymentDetail, Stats, StatsRange, TimelineEntry,
    TimelineKind,
};

/// How long an admin session lasts after sign-in.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// What an operator token starts with.
pub const TOKEN_PREFIX: &str = "pxop_";

/// A signed-in operator, as found from a session cookie.
#[derive(Clone)]
pub struct OperatorSession {
    /// The operator token the session was opened with: who did what.
    pub token_id: String,
    /// Every form the session posts carries this.
    pub csrf_token: String,
    pub expires_at: OffsetDateTime,
}

impl std::fmt::Debug for OperatorSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorSession")
            .field("token_id", &self.token_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl OperatorSession {
    /// Whether `given` is this session's CSRF token, compared in constant time.
    pub fn csrf_ok(&self, given: &str) -> bool {
        constant_time_eq(self.csrf_token.as_bytes(), given.as_bytes())
    }
}

/// A new session: the cookie's value (shown to the browser only) and when it ends.
pub struct SignedIn {
    pub cookie: String,
    pub expires_at: OffsetDateTime,
}

impl std::fmt::Debug for SignedIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedIn").field("expires_at", &self.expires_at).finish_non_exhaustive()
    }
}

/// The CSRF token of the session whose cookie is `cookie`.
pub fn csrf_token(cookie: &str) -> String {
    hmac_sha256_hex(cookie.as_bytes(), b"paymux admin csrf v1")
}

/// What an operator can do to a payment from the admin page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperatorAction {
    /// Ask the channel now and apply its truth (`POST /v1/payments/{id}/sync`).
    Sync,
    /// Close a pending payment at its channel (`POST /v1/payments/{id}/close`).
    Close,
    /// Send one of the payment's events to its endpoints again (`POST /v1/events/{id}/redeliver`).
    Redeliver(EventId),
}

impl OperatorAction {
    pub fn name(self) -> &'static str {
        match self {
            OperatorAction::Sync => "sync",
            OperatorAction::Close => "close",
            OperatorAction::Redeliver(_) => "redeliver",
        }
    }
}

impl Engine {
    /// A new operator token labelled `label`: returns its id and the token, which is shown once
    /// (only its hash is kept).
    pub async fn create_operator_token(
        &self,
        label: &str,
    ) -> Result<(String, String), EngineError> {
        let token = format!("{TOKEN_PREFIX}{}", random_alphanumeric(40));
        let record = OperatorTokenRecord {
            id: format!("opt_{}", uuid::Uuid::now_v7().simple()),
            token_hash: sha256_hex(token.as_bytes()),
            label: label.to_owned(),
            created_at: now_ms(),
        };
        self.store.add_operator_token(&record).await?;
        Ok((record.id, token))
    }

    /// Opens a session for a valid operator token; `None` for any other token.
    pub async fn sign_in(&self, token: &str) -> Result<Option<SignedIn>, EngineError> {
        let token = token.trim();
        if !token.starts_with(TOKEN_PREFIX) || token.len() > 128 {
            return Ok(None);
        }
        let Some(found) = self.store.operator_token_by_hash(&sha256_hex(token.as_bytes())).await?
        else {
            return Ok(None);
        };
        let cookie = random_alphanumeric(43);
        let now = now_ms();
        let expires_at = now + SESSION_TTL;
        self.store
            .create_admin_session(&AdminSessionRecord {
                id_hash: sha256_hex(cookie.as_bytes()),
                token_id: found.id,
                created_at: now,
                expires_at,
            })
            .await?;
        Ok(Some(SignedIn { cookie, expires_at }))
    }

    /// The session a cookie stands for, while it lasts.
    pub async fn operator_session(
        &self,
        cookie: &str,
    ) -> Result<Option<OperatorSession>, EngineError> {
        if cookie.is_empty() || cookie.len() > 128 {
            return Ok(None);
        }
        let id_hash = sha256_hex(cookie.as_bytes());
        let found = self.store.admin_session(&id_hash, OffsetDateTime::now_utc()).await?;
        Ok(found.map(|s| OperatorSession {
            token_id: s.token_id,
            csrf_token: csrf_token(cookie),
            expires_at: s.expires_at,
        }))
    }

    /// Ends the session of this cookie.
    pub async fn sign_out(&self, cookie: &str) -> Result<(), EngineError> {
        Ok(self.store.end_admin_session(&sha256_hex(cookie.as_bytes())).await?)
    }

    /// Does `action` to the payment through the same calls the merchant API makes, and records
    /// who did it, what, when and how it went (durably, before answering). A channel's or the
    /// store's refusal is an outcome, recorded; the error returned is only for a payment or
    /// event that does not exist, or a record that could not be written.
    pub async fn operator_action(
        &self,
        session: &OperatorSession,
        payment: PaymentId,
        action: OperatorAction,
    ) -> Result<OperatorActionRecord, EngineError> {
        let p = self
            .store
            .payment_by_id(payment)
            .await?
            .ok_or(EngineError::NotFound { what: "payment" })?;
        let result = match action {
            OperatorAction::Sync => {
                self.sync_payment(&p).await.map(|after| format!("the payment is {}", after.status))
            }
            OperatorAction::Close => {
                self.close_payment(&p).await.map(|after| format!("the payment is {}", after.status))
            }
            OperatorAction::Redeliver(event) => {
                self.payments_event(&p, event).await?;
                let caller = Caller { merchant: p.merchant_id, livemode: p.livemode };
                self.redeliver_event(caller, event)
                    .await
                    .map(|n| format!("{n} deliveries of {event} are due now"))
            }
        };
        let (outcome, detail) = match result {
            Ok(detail) => ("ok", detail),
            Err(e) => ("error", e.to_string()),
        };
        let record = OperatorActionRecord {
            id: format!("opa_{}", uuid::Uuid::now_v7().simple()),
            token_id: session.token_id.clone(),
            action: action.name().to_owned(),
            payment_id: p.id,
            target: match action {
                OperatorAction::Redeliver(event) => Some(event.to_string()),
                _ => None,
            },
            outcome: outcome.to_owned(),
            detail,
            at: now_ms(),
        };
        self.store.record_operator_action(&record).await?;
        tracing::info!(operator = %record.token_id, action = %record.action, payment = %p.id, outcome, "operator action");
        Ok(record)
    }

    /// An event about this payment or one of its refunds; anything else is not found.
    async fn payments_event(&self, p: &PaymentRecord, event: EventId) -> Result<(), EngineError> {
        let not_found = EngineError::NotFound { what: "event" };
        let e = self.store.event(p.merchant_id, event).await?.ok_or(not_found)?;
        if e.object_id == p.id.to_string() {
            return Ok(());
        }
        let refunds = self.payment_refunds(p).await?;
        if refunds.iter().any(|r| r.id.to_string() == e.object_id) {
            Ok(())
        } else {
            Err(EngineError::NotFound { what: "event" })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_csrf_token_is_bound_to_its_session_and_checked_whole() {
        let a = csrf_token("cookie-a");
        let b = csrf_token("cookie-b");
        assert_ne!(a, b);
        assert_eq!(a, csrf_token("cookie-a"));
        let session = OperatorSession {
            token_id: "opt_1".into(),
            csrf_token: a.clone(),
            expires_at: OffsetDateTime::now_utc(),
        };
        assert!(session.csrf_ok(&a));
        assert!(!session.csrf_ok(&b));
        assert!(!session.csrf_ok(""));
        assert!(!session.csrf_ok(&a[..a.len() - 1]));
    }

    #[test]
    fn a_session_prints_no_csrf_token_and_a_sign_in_no_cookie() {
        let session = OperatorSession {
            token_id: "opt_1".into(),
            csrf_token: "csrf-secret".into(),
            expires_at: OffsetDateTime::now_utc(),
        };
        assert!(!format!("{session:?}").contains("csrf-secret"));
        let signed =
            SignedIn { cookie: "cookie-secret".into(), expires_at: OffsetDateTime::now_utc() };
        assert!(!format!("{signed:?}").contains("cookie-secret"));
    }

    #[tokio::test]
    async fn tokens_are_kept_hashed_and_sessions_open_only_with_a_valid_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = paymux_store::SqliteStore::open(dir.path().join("t.db")).await.unwrap();
        let store: std::sync::Arc<dyn paymux_store::Store> = std::sync::Arc::new(store);
        let engine = Engine::new(store.clone(), crate::GatewayConfig::new("http://127.0.0.1"));
        let (id, token) = engine.create_operator_token("ops").await.unwrap();
        assert!(token.starts_with(TOKEN_PREFIX));
        let kept = store.operator_token_by_hash(&sha256_hex(token.as_bytes())).await.unwrap();
        let kept = kept.unwrap();
        assert_eq!(kept.id, id);
        assert_ne!(kept.token_hash, token, "only the hash is kept");

        assert!(engine.sign_in("pxop_wrong").await.unwrap().is_none());
        assert!(engine.sign_in("").await.unwrap().is_none());
        let signed = engine.sign_in(&token).await.unwrap().unwrap();
        let session = engine.operator_session(&signed.cookie).await.unwrap().unwrap();
        assert_eq!(session.token_id, id);
        assert!(session.csrf_ok(&csrf_token(&signed.cookie)));
        // The cookie is not kept either: its hash finds the session, the cookie itself nothing.
        let by_hash = engine.operator_session(&sha256_hex(signed.cookie.as_bytes())).await;
        assert!(by_hash.unwrap().is_none());
        engine.sign_out(&signed.cookie).await.unwrap();
        assert!(engine.operator_session(&signed.cookie).await.unwrap().is_none());
    }
}

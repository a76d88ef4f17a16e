//! What a use case reports when it does not do what was asked, in the payments domain's terms.
//! The gateway maps each variant to the API's error shape in one place.

use paymux_core::{AccountId, ChannelError, PaymentId};
use paymux_store::StoreError;

use crate::registry::ConfigError;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The input is not acceptable; `field` names it as the API does (`url`, `events`).
    #[error("{message}")]
    InvalidInput { field: &'static str, message: String },
    /// No such object for this merchant and mode (`what` names its kind: "payment", "refund").
    #[error("no such {what}")]
    NotFound { what: &'static str },
    /// The channel's report contradicts what we hold (amount, currency): nothing changed.
    #[error("{why}")]
    ChannelMismatch { why: String },
    /// A channel call did not succeed: declined, unknown outcome, invalid, unverified. An unknown
    /// outcome leaves the object pending; it is never taken as a failure.
    #[error(transparent)]
    Channel(#[from] ChannelError),
    /// A channel call about `object` did not succeed and the object stays as it was (pending, on
    /// an unknown outcome: never taken as a failure).
    #[error("{source}")]
    ChannelCall {
        #[source]
        source: ChannelError,
        object: String,
    },
    /// A close of a payment that has succeeded.
    #[error("the payment has succeeded; refund it instead")]
    PaymentSucceeded,
    /// A close of a payment that has failed.
    #[error("the payment has failed; there is nothing to close")]
    PaymentFailed,
    /// The payer paid before the close: at the channel (it refused the close and its query shows
    /// the payment paid), or here (a notification of payment won the race with the close).
    #[error("{}", if *at_channel {
        "the payer paid before the close reached the channel; the payment has succeeded"
    } else {
        "the payer paid before the close took effect; the payment has succeeded"
    })]
    PaidBeforeClose { payment: PaymentId, at_channel: bool },
    /// The account's stored configuration gives no adapter.
    #[error("channel account {account} is misconfigured: {source}")]
    Misconfigured {
        account: AccountId,
        #[source]
        source: ConfigError,
    },
    /// The payment's channel account is no longer in the store.
    #[error("channel account {0} is gone")]
    AccountGone(AccountId),
    /// The payment has no attempt to ask its channel about.
    #[error("payment {0} has no attempt")]
    NoAttempt(PaymentId),
    /// The store did not answer: nothing was changed.
    #[error("store unavailable: {0}")]
    Store(#[from] StoreError),
}

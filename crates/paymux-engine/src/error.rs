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
    /// The request is well formed but cannot be done (`code` says why, as the API names it:
    /// `livemode_mismatch`, `refund_exceeds_payment`, ...); `field` names the input at fault.
    #[error("{message}")]
    Rejected { code: &'static str, field: Option<&'static str>, message: String },
    /// A merchant number (`merchant_order_no`, `merchant_refund_no`) is already used; `object` is
    /// the caller's object that holds it, for a caller whose first call's answer was lost.
    #[error("{message}")]
    DuplicateNumber { field: &'static str, message: String, object: Option<String> },
    /// The store failed after the channel was called about `object`: something may have moved at
    /// the channel, and the sweeper settles the object from the channel's truth. Not a "nothing
    /// changed" failure, so an idempotent retry replays it instead of calling the channel again.
    #[error("the answer of a channel call about {object} could not be recorded: {source}")]
    StoreAfterChannel {
        #[source]
        source: StoreError,
        object: String,
    },
    /// The task that called the channel about `object` did not finish (the runtime is shutting
    /// down): the object stays pending and the sweeper settles it.
    #[error("the channel call about {object} was interrupted; it stays pending")]
    Interrupted { object: String },
    /// An idempotency key is bound to an object that cannot be read any more (a bug or a hand
    /// edit): the retry cannot be answered with it.
    #[error("the object {object} this Idempotency-Key created cannot be read")]
    BoundObjectGone { object: String },
    /// A value paymux stored cannot be read back (a bug or a hand edit): nothing was changed.
    #[error("the stored {what} cannot be read")]
    Corrupt { what: &'static str },
    /// A value the engine made could not be encoded as JSON (a bug).
    #[error("could not encode the {what}: {source}")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
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
    /// An attempt for a payment that is no longer pending.
    #[error("the payment is {status}; only a pending payment takes another attempt")]
    PaymentNotPending { status: paymux_core::PaymentStatus },
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

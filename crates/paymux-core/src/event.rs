use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{EventId, MerchantId};

/// What happened. The names are the merchant webhook's `type` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventType {
    #[serde(rename = "payment.succeeded")]
    PaymentSucceeded,
    #[serde(rename = "payment.failed")]
    PaymentFailed,
    #[serde(rename = "payment.closed")]
    PaymentClosed,
    #[serde(rename = "payment.duplicate_paid")]
    PaymentDuplicatePaid,
    /// A verified success arrived for a payment that was already closed or failed: money moved
    /// after the close. The payment becomes succeeded and an operator must look.
    #[serde(rename = "payment.paid_after_close")]
    PaymentPaidAfterClose,
    #[serde(rename = "refund.succeeded")]
    RefundSucceeded,
    #[serde(rename = "refund.failed")]
    RefundFailed,
    /// The refund cannot reach the payer (WeChat `ABNORMAL`: the card was cancelled or frozen)
    /// and waits for the merchant to re-drive it at the channel. Sent once; the refund stays
    /// pending.
    #[serde(rename = "refund.action_required")]
    RefundActionRequired,
    /// A verified success arrived for a refund held as failed: the money moved after all. The
    /// refund becomes succeeded (with its own `refund.succeeded`) and an operator must look.
    #[serde(rename = "refund.succeeded_after_failure")]
    RefundSucceededAfterFailure,
    /// The channel reports refunds that add up to more than the payment's amount (a refund
    /// held as failed turned out to have succeeded after another took its place). The channel's
    /// truth is recorded; an operator must look.
    #[serde(rename = "payment.over_refunded")]
    PaymentOverRefunded,
    /// A held payment's settlement finished: every split was paid and the rest released.
    #[serde(rename = "settlement.succeeded")]
    SettlementSucceeded,
    /// A held payment's settlement was refused as a whole; nothing was split.
    #[serde(rename = "settlement.failed")]
    SettlementFailed,
    /// One receiver's split was refused while the others settled; settling again retries it.
    #[serde(rename = "settlement.split_failed")]
    SettlementSplitFailed,
}

impl EventType {
    pub const ALL: [EventType; 13] = [
        EventType::PaymentSucceeded,
        EventType::PaymentFailed,
        EventType::PaymentClosed,
        EventType::PaymentDuplicatePaid,
        EventType::PaymentPaidAfterClose,
        EventType::RefundSucceeded,
        EventType::RefundFailed,
        EventType::RefundActionRequired,
        EventType::RefundSucceededAfterFailure,
        EventType::PaymentOverRefunded,
        EventType::SettlementSucceeded,
        EventType::SettlementFailed,
        EventType::SettlementSplitFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::PaymentSucceeded => "payment.succeeded",
            EventType::PaymentFailed => "payment.failed",
            EventType::PaymentClosed => "payment.closed",
            EventType::PaymentDuplicatePaid => "payment.duplicate_paid",
            EventType::PaymentPaidAfterClose => "payment.paid_after_close",
            EventType::RefundSucceeded => "refund.succeeded",
            EventType::RefundFailed => "refund.failed",
            EventType::RefundActionRequired => "refund.action_required",
            EventType::RefundSucceededAfterFailure => "refund.succeeded_after_failure",
            EventType::PaymentOverRefunded => "payment.over_refunded",
            EventType::SettlementSucceeded => "settlement.succeeded",
            EventType::SettlementFailed => "settlement.failed",
            EventType::SettlementSplitFailed => "settlement.split_failed",
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| format!("unknown event type {s:?}"))
    }
}

/// An event as written to the outbox, in the same transaction as the state change it reports.
/// `data` is the object (payment or refund) as the API shows it after the change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: EventId,
    pub merchant_id: MerchantId,
    #[serde(rename = "type")]
    pub kind: EventType,
    pub object_id: String,
    pub data: serde_json::Value,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types_round_trip() {
        for t in EventType::ALL {
            assert_eq!(t.as_str().parse::<EventType>(), Ok(t));
            assert_eq!(serde_json::to_value(t).unwrap(), serde_json::json!(t.as_str()));
        }
    }
}

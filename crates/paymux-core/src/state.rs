use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a {object} cannot go from {from} to {to}")]
pub struct TransitionError {
    pub object: &'static str,
    pub from: &'static str,
    pub to: &'static str,
}

/// A payment's status. `pending -> succeeded | closed | failed`; `succeeded` is final.
///
/// Two extra edges exist on purpose: `closed -> succeeded` and `failed -> succeeded`. A verified
/// success that arrives for a closed or failed payment (the payer paid as it closed) is money that
/// moved, and is never hidden; the caller raises an anomaly event alongside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    Pending,
    Succeeded,
    Closed,
    Failed,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Pending => "pending",
            PaymentStatus::Succeeded => "succeeded",
            PaymentStatus::Closed => "closed",
            PaymentStatus::Failed => "failed",
        }
    }

    pub fn can_become(self, to: PaymentStatus) -> bool {
        use PaymentStatus::*;
        matches!(
            (self, to),
            (Pending, Succeeded)
                | (Pending, Closed)
                | (Pending, Failed)
                | (Closed, Succeeded)
                | (Failed, Succeeded)
        )
    }

    /// Checks the edge; staying where it is counts as an error too, so that callers notice
    /// duplicates explicitly instead of writing them twice.
    pub fn transition(self, to: PaymentStatus) -> Result<PaymentStatus, TransitionError> {
        if self.can_become(to) {
            Ok(to)
        } else {
            Err(TransitionError { object: "payment", from: self.as_str(), to: to.as_str() })
        }
    }

    /// Only a success is final: closed and failed can still learn that money moved.
    pub fn is_final(self) -> bool {
        matches!(self, PaymentStatus::Succeeded)
    }
}

impl fmt::Display for PaymentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PaymentStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(PaymentStatus::Pending),
            "succeeded" => Ok(PaymentStatus::Succeeded),
            "closed" => Ok(PaymentStatus::Closed),
            "failed" => Ok(PaymentStatus::Failed),
            other => Err(format!("unknown payment status {other:?}")),
        }
    }
}

/// A refund's status: `pending -> succeeded | failed`; `succeeded` is final.
///
/// One extra edge exists on purpose: `failed -> succeeded`. A refund is failed only on a
/// definitive answer about it, but a verified success that arrives later is money that moved,
/// and is never hidden; the caller raises an anomaly event alongside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundStatus {
    Pending,
    Succeeded,
    Failed,
}

impl RefundStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RefundStatus::Pending => "pending",
            RefundStatus::Succeeded => "succeeded",
            RefundStatus::Failed => "failed",
        }
    }

    pub fn can_become(self, to: RefundStatus) -> bool {
        matches!(
            (self, to),
            (RefundStatus::Pending, RefundStatus::Succeeded)
                | (RefundStatus::Pending, RefundStatus::Failed)
                | (RefundStatus::Failed, RefundStatus::Succeeded)
        )
    }

    pub fn transition(self, to: RefundStatus) -> Result<RefundStatus, TransitionError> {
        if self.can_become(to) {
            Ok(to)
        } else {
            Err(TransitionError { object: "refund", from: self.as_str(), to: to.as_str() })
        }
    }
}

impl fmt::Display for RefundStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RefundStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(RefundStatus::Pending),
            "succeeded" => Ok(RefundStatus::Succeeded),
            "failed" => Ok(RefundStatus::Failed),
            other => Err(format!("unknown refund status {other:?}")),
        }
    }
}

/// An attempt's status: `pending -> succeeded | closed | failed | duplicate_paid`.
///
/// `succeeded` is the attempt its payment succeeded with (one per payment). `duplicate_paid` is
/// an attempt the payer paid after another had already won: its money is refunded on its own.
/// Like a payment, a closed or failed attempt can still learn that it was paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptStatus {
    Pending,
    Succeeded,
    Closed,
    Failed,
    DuplicatePaid,
}

impl AttemptStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptStatus::Pending => "pending",
            AttemptStatus::Succeeded => "succeeded",
            AttemptStatus::Closed => "closed",
            AttemptStatus::Failed => "failed",
            AttemptStatus::DuplicatePaid => "duplicate_paid",
        }
    }

    pub fn can_become(self, to: AttemptStatus) -> bool {
        use AttemptStatus::*;
        matches!(
            (self, to),
            (Pending, Succeeded | Closed | Failed | DuplicatePaid)
                | (Closed | Failed, Succeeded | DuplicatePaid)
        )
    }

    /// Whether money was taken through this attempt.
    pub fn is_paid(self) -> bool {
        matches!(self, AttemptStatus::Succeeded | AttemptStatus::DuplicatePaid)
    }
}

impl fmt::Display for AttemptStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AttemptStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        use AttemptStatus::*;
        [Pending, Succeeded, Closed, Failed, DuplicatePaid]
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| format!("unknown attempt status {s:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payment_edges() {
        use PaymentStatus::*;
        let all = [Pending, Succeeded, Closed, Failed];
        let allowed = [
            (Pending, Succeeded),
            (Pending, Closed),
            (Pending, Failed),
            (Closed, Succeeded),
            (Failed, Succeeded),
        ];
        for from in all {
            for to in all {
                assert_eq!(from.can_become(to), allowed.contains(&(from, to)), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn succeeded_payment_is_final_and_transition_says_why() {
        let err = PaymentStatus::Succeeded.transition(PaymentStatus::Closed).unwrap_err();
        assert_eq!(err.to_string(), "a payment cannot go from succeeded to closed");
        assert!(PaymentStatus::Succeeded.is_final());
        assert!(!PaymentStatus::Closed.is_final());
        assert!(!PaymentStatus::Failed.is_final());
    }

    #[test]
    fn refund_edges() {
        use RefundStatus::*;
        assert!(Pending.can_become(Succeeded));
        assert!(Pending.can_become(Failed));
        assert!(!Succeeded.can_become(Failed));
        assert!(!Succeeded.can_become(Pending));
        assert!(!Failed.can_become(Pending));
        assert!(!Pending.can_become(Pending));
    }

    #[test]
    fn a_failed_refund_can_still_learn_that_it_succeeded() {
        assert!(RefundStatus::Failed.can_become(RefundStatus::Succeeded));
        assert_eq!(
            RefundStatus::Failed.transition(RefundStatus::Succeeded),
            Ok(RefundStatus::Succeeded)
        );
    }

    #[test]
    fn statuses_round_trip_through_strings() {
        for s in ["pending", "succeeded", "closed", "failed"] {
            assert_eq!(s.parse::<PaymentStatus>().unwrap().as_str(), s);
        }
        for s in ["pending", "succeeded", "failed"] {
            assert_eq!(s.parse::<RefundStatus>().unwrap().as_str(), s);
        }
        assert!("paid".parse::<PaymentStatus>().is_err());
        for s in ["pending", "succeeded", "closed", "failed", "duplicate_paid"] {
            assert_eq!(s.parse::<AttemptStatus>().unwrap().as_str(), s);
        }
    }

    #[test]
    fn a_paid_attempt_is_final_and_an_ended_one_can_still_learn_it_was_paid() {
        use AttemptStatus::*;
        for paid in [Succeeded, DuplicatePaid] {
            for to in [Pending, Succeeded, Closed, Failed, DuplicatePaid] {
                assert!(!paid.can_become(to), "{paid} -> {to}");
            }
        }
        assert!(Closed.can_become(DuplicatePaid));
        assert!(Failed.can_become(Succeeded));
        assert!(!Closed.can_become(Failed));
    }
}

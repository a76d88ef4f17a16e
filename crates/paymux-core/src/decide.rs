//! What a channel's report does to a payment or a refund: the decision alone, with no I/O.
//!
//! The engine reads the object, asks here what the report asks of it, and writes the answer as a
//! compare-and-set with its events; when it loses a race it reads the object again and asks again.
//! Every rule about which report moves what lives here, so it is tested without a store.

use crate::{ChannelPayment, ChannelRefund, EventType, Money, PaymentStatus, RefundStatus};

/// What a report does to a payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentDecision {
    /// Nothing: the channel says "not yet", or the payment is already there (a duplicate), or the
    /// state machine has no such edge (a success is final).
    Unchanged,
    /// The channel reports another amount paid than the payment's: nothing changes, an operator
    /// must look.
    AmountMismatch { reported: Money, expected: Money },
    /// Move to `to` and raise `events`, in that order, in the same transaction.
    Transition { to: PaymentStatus, events: Vec<EventType> },
}

impl PaymentDecision {
    /// Whether this is a success arriving for a payment that was closed or failed: money moved
    /// after we said it would not, which an operator must hear of.
    pub fn is_paid_after_close(&self) -> bool {
        matches!(self, PaymentDecision::Transition { events, .. } if events.contains(&EventType::PaymentPaidAfterClose))
    }
}

/// What `report` does to a payment of `amount` now in `status`.
///
/// A verified success for a closed or failed payment makes it succeeded with
/// `payment.paid_after_close` too: money that moved is never hidden.
pub fn decide_payment(
    status: PaymentStatus,
    amount: Money,
    report: &ChannelPayment,
) -> PaymentDecision {
    let to = match report {
        ChannelPayment::Pending => return PaymentDecision::Unchanged,
        ChannelPayment::Succeeded { amount: reported, .. } if *reported != amount => {
            return PaymentDecision::AmountMismatch { reported: *reported, expected: amount };
        }
        ChannelPayment::Succeeded { .. } => PaymentStatus::Succeeded,
        ChannelPayment::Closed => PaymentStatus::Closed,
        ChannelPayment::Failed { .. } => PaymentStatus::Failed,
    };
    if !status.can_become(to) {
        return PaymentDecision::Unchanged;
    }
    let events = match to {
        PaymentStatus::Succeeded if status != PaymentStatus::Pending => {
            vec![EventType::PaymentSucceeded, EventType::PaymentPaidAfterClose]
        }
        PaymentStatus::Succeeded => vec![EventType::PaymentSucceeded],
        PaymentStatus::Closed => vec![EventType::PaymentClosed],
        PaymentStatus::Failed => vec![EventType::PaymentFailed],
        PaymentStatus::Pending => return PaymentDecision::Unchanged,
    };
    PaymentDecision::Transition { to, events }
}

/// What a report does to a refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundDecision {
    /// Nothing: "not yet", already there, or already marked as needing action.
    Unchanged,
    /// The channel reports another amount refunded than the refund's: nothing changes.
    AmountMismatch { reported: Money, expected: Money },
    /// The channel reports a final state that contradicts the final one we hold (a failure for a
    /// succeeded refund): nothing changes, an operator must look.
    Contradiction { held: RefundStatus, reported: RefundStatus },
    /// The refund stays pending but needs someone to act at the channel; said once, with
    /// `refund.action_required`.
    ActionRequired,
    /// Move to `to` and raise `events`. `after_failure`: a verified success for a refund held as
    /// failed, whose amount is reserved again (and the payment may then be over-refunded).
    Transition { to: RefundStatus, events: Vec<EventType>, after_failure: bool },
}

/// What `report` does to a refund of `amount` now in `status`; `action_required` says whether
/// it was already marked as needing action at the channel.
///
/// A refund is failed only on a definitive answer about it; a verified success for a failed one
/// makes it succeeded with `refund.succeeded_after_failure`.
pub fn decide_refund(
    status: RefundStatus,
    action_required: bool,
    amount: Money,
    report: &ChannelRefund,
) -> RefundDecision {
    let to = match report {
        ChannelRefund::Pending { .. } => return RefundDecision::Unchanged,
        ChannelRefund::Succeeded { amount: Some(reported), .. } if *reported != amount => {
            return RefundDecision::AmountMismatch { reported: *reported, expected: amount };
        }
        ChannelRefund::ActionRequired { .. } => {
            return if status == RefundStatus::Pending && !action_required {
                RefundDecision::ActionRequired
            } else {
                RefundDecision::Unchanged
            };
        }
        ChannelRefund::Succeeded { .. } => RefundStatus::Succeeded,
        ChannelRefund::Failed { .. } => RefundStatus::Failed,
    };
    if !status.can_become(to) {
        return if status == to {
            RefundDecision::Unchanged
        } else {
            RefundDecision::Contradiction { held: status, reported: to }
        };
    }
    let after_failure = status == RefundStatus::Failed;
    let mut events = vec![if to == RefundStatus::Succeeded {
        EventType::RefundSucceeded
    } else {
        EventType::RefundFailed
    }];
    if after_failure {
        events.push(EventType::RefundSucceededAfterFailure);
    }
    RefundDecision::Transition { to, events, after_failure }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Currency;

    fn fen(n: i64) -> Money {
        Money::new(n, Currency::Cny).expect("a valid amount")
    }

    fn paid(n: i64) -> ChannelPayment {
        ChannelPayment::Succeeded { channel_trade_no: "T1".into(), amount: fen(n), paid_at: None }
    }

    fn failed() -> ChannelPayment {
        ChannelPayment::Failed { code: "NOPE".into(), message: "declined".into() }
    }

    #[test]
    fn a_pending_payment_takes_success_close_and_failure_with_one_event_each() {
        use PaymentStatus::*;
        for (report, to, event) in [
            (paid(1000), Succeeded, EventType::PaymentSucceeded),
            (ChannelPayment::Closed, Closed, EventType::PaymentClosed),
            (failed(), Failed, EventType::PaymentFailed),
        ] {
            let d = decide_payment(Pending, fen(1000), &report);
            assert_eq!(d, PaymentDecision::Transition { to, events: vec![event] });
            assert!(!d.is_paid_after_close());
        }
    }

    #[test]
    fn not_yet_changes_nothing() {
        for status in [PaymentStatus::Pending, PaymentStatus::Closed, PaymentStatus::Succeeded] {
            assert_eq!(
                decide_payment(status, fen(1000), &ChannelPayment::Pending),
                PaymentDecision::Unchanged
            );
        }
    }

    #[test]
    fn success_after_close_or_failure_is_taken_with_paid_after_close() {
        for status in [PaymentStatus::Closed, PaymentStatus::Failed] {
            let d = decide_payment(status, fen(1000), &paid(1000));
            assert_eq!(
                d,
                PaymentDecision::Transition {
                    to: PaymentStatus::Succeeded,
                    events: vec![EventType::PaymentSucceeded, EventType::PaymentPaidAfterClose],
                }
            );
            assert!(d.is_paid_after_close());
        }
    }

    #[test]
    fn duplicate_reports_change_nothing() {
        use PaymentStatus::*;
        assert_eq!(decide_payment(Succeeded, fen(1000), &paid(1000)), PaymentDecision::Unchanged);
        assert_eq!(
            decide_payment(Closed, fen(1000), &ChannelPayment::Closed),
            PaymentDecision::Unchanged
        );
        assert_eq!(decide_payment(Failed, fen(1000), &failed()), PaymentDecision::Unchanged);
    }

    #[test]
    fn a_succeeded_payment_is_never_closed_or_failed() {
        for report in [ChannelPayment::Closed, failed()] {
            assert_eq!(
                decide_payment(PaymentStatus::Succeeded, fen(1000), &report),
                PaymentDecision::Unchanged
            );
        }
        assert_eq!(
            decide_payment(PaymentStatus::Closed, fen(1000), &failed()),
            PaymentDecision::Unchanged
        );
    }

    #[test]
    fn another_amount_paid_changes_nothing_in_any_state() {
        for status in [PaymentStatus::Pending, PaymentStatus::Closed, PaymentStatus::Succeeded] {
            assert_eq!(
                decide_payment(status, fen(1000), &paid(999)),
                PaymentDecision::AmountMismatch { reported: fen(999), expected: fen(1000) }
            );
        }
    }

    fn refunded(amount: Option<i64>) -> ChannelRefund {
        ChannelRefund::Succeeded {
            channel_refund_id: Some("R1".into()),
            succeeded_at: None,
            amount: amount.map(fen),
            refunded_total: None,
        }
    }

    fn refund_failed() -> ChannelRefund {
        ChannelRefund::Failed { code: "NOPE".into(), message: "declined".into() }
    }

    #[test]
    fn a_pending_refund_succeeds_or_fails_with_its_event() {
        assert_eq!(
            decide_refund(RefundStatus::Pending, false, fen(300), &refunded(Some(300))),
            RefundDecision::Transition {
                to: RefundStatus::Succeeded,
                events: vec![EventType::RefundSucceeded],
                after_failure: false,
            }
        );
        assert_eq!(
            decide_refund(RefundStatus::Pending, false, fen(300), &refund_failed()),
            RefundDecision::Transition {
                to: RefundStatus::Failed,
                events: vec![EventType::RefundFailed],
                after_failure: false,
            }
        );
    }

    #[test]
    fn refund_success_after_failure_is_taken_with_its_own_event() {
        assert_eq!(
            decide_refund(RefundStatus::Failed, false, fen(300), &refunded(None)),
            RefundDecision::Transition {
                to: RefundStatus::Succeeded,
                events: vec![EventType::RefundSucceeded, EventType::RefundSucceededAfterFailure],
                after_failure: true,
            }
        );
    }

    #[test]
    fn a_failure_for_a_succeeded_refund_is_a_contradiction_that_changes_nothing() {
        assert_eq!(
            decide_refund(RefundStatus::Succeeded, false, fen(300), &refund_failed()),
            RefundDecision::Contradiction {
                held: RefundStatus::Succeeded,
                reported: RefundStatus::Failed
            }
        );
    }

    #[test]
    fn duplicate_and_not_yet_refund_reports_change_nothing() {
        let pending = ChannelRefund::Pending { channel_refund_id: None };
        for status in [RefundStatus::Pending, RefundStatus::Succeeded, RefundStatus::Failed] {
            assert_eq!(decide_refund(status, false, fen(300), &pending), RefundDecision::Unchanged);
        }
        assert_eq!(
            decide_refund(RefundStatus::Succeeded, false, fen(300), &refunded(Some(300))),
            RefundDecision::Unchanged
        );
        assert_eq!(
            decide_refund(RefundStatus::Failed, false, fen(300), &refund_failed()),
            RefundDecision::Unchanged
        );
    }

    #[test]
    fn another_amount_refunded_changes_nothing() {
        assert_eq!(
            decide_refund(RefundStatus::Pending, false, fen(300), &refunded(Some(200))),
            RefundDecision::AmountMismatch { reported: fen(200), expected: fen(300) }
        );
    }

    #[test]
    fn action_required_is_said_once_and_only_while_pending() {
        let stuck = ChannelRefund::ActionRequired { channel_refund_id: None };
        assert_eq!(
            decide_refund(RefundStatus::Pending, false, fen(300), &stuck),
            RefundDecision::ActionRequired
        );
        assert_eq!(
            decide_refund(RefundStatus::Pending, true, fen(300), &stuck),
            RefundDecision::Unchanged
        );
        assert_eq!(
            decide_refund(RefundStatus::Succeeded, false, fen(300), &stuck),
            RefundDecision::Unchanged
        );
    }
}

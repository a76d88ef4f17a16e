//! What a channel's report does to a payment or a refund: the decision alone, with no I/O.
//!
//! The engine reads the object, asks here what the report asks of it, and writes the answer as a
//! compare-and-set with its events; when it loses a race it reads the object again and asks again.
//! Every rule about which report moves what lives here, so it is tested without a store.

use crate::{
    AttemptStatus, ChannelPayment, ChannelRefund, EventType, Money, PaymentStatus, RefundStatus,
};

/// Where a report about an attempt comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportSource {
    /// The channel said it: a notification, a query, a create's answer.
    Channel,
    /// Our own close call went through. That stops the attempt at paymux but does not prove
    /// the channel can no longer take money for it (Alipay accepts a close of a trade the payer
    /// has not scanned yet, and the scan still creates it), so the attempt stays watched.
    OurClose,
}

/// What deciding about one attempt needs to know of it and of its payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptView {
    pub payment: PaymentStatus,
    pub attempt: AttemptStatus,
    /// The sweeper still asks the channel about this attempt.
    pub watching: bool,
    /// Another attempt of the payment is still pending: it could still be paid.
    pub others_open: bool,
    pub amount: Money,
}

/// What a report about one attempt does to it and to its payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptDecision {
    /// Nothing: "not yet", a duplicate report, or no such edge.
    Unchanged,
    /// The channel reports another amount paid than the payment's: nothing changes, an operator
    /// must look.
    AmountMismatch { reported: Money, expected: Money },
    /// The payment moves with this attempt, to `to`, raising `events` in the same transaction;
    /// the attempt becomes `attempt` and stays watched if `watch`.
    Payment { to: PaymentStatus, attempt: AttemptStatus, events: Vec<EventType>, watch: bool },
    /// Only the attempt moves (no event): the payment has other attempts still open, or is
    /// already settled by another.
    Attempt { to: AttemptStatus, watch: bool },
    /// The channel confirms an attempt we closed is closed: nothing more to watch.
    StopWatching,
    /// Another attempt already won and this one was paid too (the payer paid twice): recorded as
    /// `duplicate_paid` with `payment.duplicate_paid`, and its money goes back.
    Duplicate,
}

impl AttemptDecision {
    /// Whether this is a success arriving for a payment that was closed or failed: money moved
    /// after we said it would not, which an operator must hear of.
    pub fn is_paid_after_close(&self) -> bool {
        matches!(self, AttemptDecision::Payment { events, .. } if events.contains(&EventType::PaymentPaidAfterClose))
    }
}

/// What `report` (from `source`) does to an attempt and its payment.
///
/// The first success wins: it makes the payment succeeded. A success for a closed or failed
/// payment still wins, with `payment.paid_after_close` (money that moved is never hidden). A
/// success for another attempt once the payment has succeeded is a duplicate payment. A close or
/// failure of one attempt moves the payment only when no other attempt is open.
pub fn decide_attempt(
    view: AttemptView,
    report: &ChannelPayment,
    source: ReportSource,
) -> AttemptDecision {
    match report {
        ChannelPayment::Pending => AttemptDecision::Unchanged,
        ChannelPayment::Succeeded { amount: reported, .. } if *reported != view.amount => {
            AttemptDecision::AmountMismatch { reported: *reported, expected: view.amount }
        }
        ChannelPayment::Succeeded { .. } if view.attempt.is_paid() => AttemptDecision::Unchanged,
        ChannelPayment::Succeeded { .. } => match view.payment {
            PaymentStatus::Pending => AttemptDecision::Payment {
                to: PaymentStatus::Succeeded,
                attempt: AttemptStatus::Succeeded,
                events: vec![EventType::PaymentSucceeded],
                watch: false,
            },
            PaymentStatus::Closed | PaymentStatus::Failed => AttemptDecision::Payment {
                to: PaymentStatus::Succeeded,
                attempt: AttemptStatus::Succeeded,
                events: vec![EventType::PaymentSucceeded, EventType::PaymentPaidAfterClose],
                watch: false,
            },
            PaymentStatus::Succeeded => AttemptDecision::Duplicate,
        },
        ChannelPayment::Closed | ChannelPayment::Failed { .. } => {
            let (to, payment_to, event) = if matches!(report, ChannelPayment::Closed) {
                (AttemptStatus::Closed, PaymentStatus::Closed, EventType::PaymentClosed)
            } else {
                (AttemptStatus::Failed, PaymentStatus::Failed, EventType::PaymentFailed)
            };
            let watch = source == ReportSource::OurClose;
            if view.attempt != AttemptStatus::Pending {
                return if view.watching
                    && !view.attempt.is_paid()
                    && source == ReportSource::Channel
                {
                    AttemptDecision::StopWatching
                } else {
                    AttemptDecision::Unchanged
                };
            }
            if view.payment == PaymentStatus::Pending && !view.others_open {
                AttemptDecision::Payment { to: payment_to, attempt: to, events: vec![event], watch }
            } else {
                AttemptDecision::Attempt { to, watch }
            }
        }
    }
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

    fn view(payment: PaymentStatus, attempt: AttemptStatus, others_open: bool) -> AttemptView {
        AttemptView { payment, attempt, watching: true, others_open, amount: fen(1000) }
    }

    fn decide(view: AttemptView, report: &ChannelPayment) -> AttemptDecision {
        decide_attempt(view, report, ReportSource::Channel)
    }

    #[test]
    fn the_first_success_wins_the_payment_with_one_event() {
        let d = decide(view(PaymentStatus::Pending, AttemptStatus::Pending, true), &paid(1000));
        assert_eq!(
            d,
            AttemptDecision::Payment {
                to: PaymentStatus::Succeeded,
                attempt: AttemptStatus::Succeeded,
                events: vec![EventType::PaymentSucceeded],
                watch: false,
            }
        );
        assert!(!d.is_paid_after_close());
    }

    #[test]
    fn a_second_attempt_paid_after_another_won_is_a_duplicate() {
        for attempt in [AttemptStatus::Pending, AttemptStatus::Closed, AttemptStatus::Failed] {
            assert_eq!(
                decide(view(PaymentStatus::Succeeded, attempt, false), &paid(1000)),
                AttemptDecision::Duplicate,
                "{attempt}"
            );
        }
    }

    #[test]
    fn a_paid_attempt_reported_paid_again_changes_nothing() {
        for attempt in [AttemptStatus::Succeeded, AttemptStatus::DuplicatePaid] {
            assert_eq!(
                decide(view(PaymentStatus::Succeeded, attempt, false), &paid(1000)),
                AttemptDecision::Unchanged
            );
        }
    }

    #[test]
    fn success_after_close_or_failure_wins_with_paid_after_close() {
        for status in [PaymentStatus::Closed, PaymentStatus::Failed] {
            let d = decide(view(status, AttemptStatus::Closed, false), &paid(1000));
            assert_eq!(
                d,
                AttemptDecision::Payment {
                    to: PaymentStatus::Succeeded,
                    attempt: AttemptStatus::Succeeded,
                    events: vec![EventType::PaymentSucceeded, EventType::PaymentPaidAfterClose],
                    watch: false,
                }
            );
            assert!(d.is_paid_after_close());
        }
    }

    #[test]
    fn a_close_or_failure_moves_the_payment_only_when_no_other_attempt_is_open() {
        use AttemptStatus as A;
        for (report, a_to, p_to, event) in [
            (ChannelPayment::Closed, A::Closed, PaymentStatus::Closed, EventType::PaymentClosed),
            (failed(), A::Failed, PaymentStatus::Failed, EventType::PaymentFailed),
        ] {
            assert_eq!(
                decide(view(PaymentStatus::Pending, A::Pending, false), &report),
                AttemptDecision::Payment {
                    to: p_to,
                    attempt: a_to,
                    events: vec![event],
                    watch: false
                }
            );
            assert_eq!(
                decide(view(PaymentStatus::Pending, A::Pending, true), &report),
                AttemptDecision::Attempt { to: a_to, watch: false }
            );
        }
    }

    #[test]
    fn a_losing_attempt_the_channel_reports_closed_is_closed_and_no_longer_watched() {
        assert_eq!(
            decide(
                view(PaymentStatus::Succeeded, AttemptStatus::Pending, false),
                &ChannelPayment::Closed
            ),
            AttemptDecision::Attempt { to: AttemptStatus::Closed, watch: false }
        );
    }

    #[test]
    fn our_own_close_keeps_the_attempt_watched_until_the_channel_confirms_it() {
        let d = decide_attempt(
            view(PaymentStatus::Succeeded, AttemptStatus::Pending, false),
            &ChannelPayment::Closed,
            ReportSource::OurClose,
        );
        assert_eq!(d, AttemptDecision::Attempt { to: AttemptStatus::Closed, watch: true });
        let closed = view(PaymentStatus::Succeeded, AttemptStatus::Closed, false);
        assert_eq!(decide(closed, &ChannelPayment::Closed), AttemptDecision::StopWatching);
        let done = AttemptView { watching: false, ..closed };
        assert_eq!(decide(done, &ChannelPayment::Closed), AttemptDecision::Unchanged);
        assert_eq!(
            decide_attempt(closed, &ChannelPayment::Closed, ReportSource::OurClose),
            AttemptDecision::Unchanged
        );
    }

    #[test]
    fn not_yet_changes_nothing() {
        for status in [PaymentStatus::Pending, PaymentStatus::Closed, PaymentStatus::Succeeded] {
            assert_eq!(
                decide(view(status, AttemptStatus::Pending, false), &ChannelPayment::Pending),
                AttemptDecision::Unchanged
            );
        }
    }

    #[test]
    fn a_won_attempt_is_never_closed_or_failed() {
        for report in [ChannelPayment::Closed, failed()] {
            assert_eq!(
                decide(view(PaymentStatus::Succeeded, AttemptStatus::Succeeded, false), &report),
                AttemptDecision::Unchanged
            );
        }
    }

    #[test]
    fn another_amount_paid_changes_nothing_in_any_state() {
        for status in [PaymentStatus::Pending, PaymentStatus::Closed, PaymentStatus::Succeeded] {
            assert_eq!(
                decide(view(status, AttemptStatus::Pending, false), &paid(999)),
                AttemptDecision::AmountMismatch { reported: fen(999), expected: fen(1000) }
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

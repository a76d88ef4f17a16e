//! The store's rules that are not SQL, the same for every backend: which endpoints receive an
//! event, what a claim of an idempotency key finds, how a refund reserves and releases its
//! payment's amount, and where a delivery's attempts go next. A backend reads the rows, asks
//! these functions, and writes what they answer, in one transaction. (Whether a payment stays
//! due for the sweeper is the SQL itself: while it is pending or an attempt is watched.)

use paymux_core::{EventType, PaymentStatus, RefundStatus};
use time::OffsetDateTime;

use crate::codec::ms;
use crate::{DeliveryNext, IdempotencyBegin, StoreError, StoreResult};

/// A webhook endpoint as far as routing events is concerned.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Subscriber {
    pub livemode: bool,
    pub deleted: bool,
    /// `None` subscribes to every event type.
    pub events: Option<Vec<EventType>>,
}

/// Whether the endpoint receives an event of `kind` about an object of mode `livemode`: only a
/// live endpoint gets live events, a deleted one gets nothing, and a list of types limits it to
/// those.
pub(crate) fn receives(endpoint: &Subscriber, kind: EventType, livemode: bool) -> bool {
    !endpoint.deleted
        && endpoint.livemode == livemode
        && endpoint.events.as_ref().is_none_or(|list| list.contains(&kind))
}

/// An idempotency key's row as stored.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct KeyRow {
    pub request_hash: String,
    /// The first request's answer; `None` while it is in flight.
    pub response: Option<(u16, Vec<u8>)>,
    pub locked_until: OffsetDateTime,
    pub created_at: OffsetDateTime,
    /// The payment or refund the first request wrote, if it got that far.
    pub object_id: Option<String>,
}

/// What to do with a claim of an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyDecision {
    /// Answer without running the request; the row stays as it is.
    Answer(IdempotencyBegin),
    /// Write the row as a new in-flight claim of this request (replacing what is there) and
    /// answer [`IdempotencyBegin::Started`].
    Claim,
}

/// What a claim of a key finds, given its row (if any), the request's hash and the clock.
/// Times compare at the millisecond, the resolution they are stored at.
pub(crate) fn idempotency_decision(
    existing: Option<&KeyRow>,
    request_hash: &str,
    now: OffsetDateTime,
    retain_after: OffsetDateTime,
) -> KeyDecision {
    let Some(row) = existing else { return KeyDecision::Claim };
    // Past its retention the key is forgotten: new again, whatever it was.
    if ms(row.created_at) < ms(retain_after) {
        return KeyDecision::Claim;
    }
    // A key taken over from a dead process still belongs to the request it was made for.
    if row.request_hash != request_hash {
        return KeyDecision::Answer(IdempotencyBegin::Mismatch);
    }
    if let Some((status, body)) = &row.response {
        return KeyDecision::Answer(IdempotencyBegin::Replay {
            status: *status,
            body: body.clone(),
        });
    }
    if ms(row.locked_until) >= ms(now) {
        return KeyDecision::Answer(IdempotencyBegin::InFlight);
    }
    // Abandoned. If the dead request wrote its object, running it again would collide with it.
    match &row.object_id {
        Some(object_id) => {
            KeyDecision::Answer(IdempotencyBegin::Recover { object_id: object_id.clone() })
        }
        None => KeyDecision::Claim,
    }
}

/// A payment as far as reserving refunds is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refundable {
    pub status: PaymentStatus,
    pub amount: i64,
    /// Every refund that has not failed: `amount_reserved + amount_over_reserved`.
    pub reserved: i64,
}

/// Whether a refund of `requested` may be reserved on the payment: only a succeeded payment is
/// refunded, and never past its amount.
pub(crate) fn check_refund(payment: &Refundable, requested: i64) -> StoreResult<()> {
    if payment.status != PaymentStatus::Succeeded {
        return Err(StoreError::PaymentNotRefundable(payment.status));
    }
    let available = (payment.amount - payment.reserved).max(0);
    if requested > available {
        return Err(StoreError::RefundExceedsAmount { requested, available });
    }
    Ok(())
}

/// How a refund's change of status moves its payment's totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RefundSettlement {
    /// Added to the non-failed refunds (negative: released).
    pub reserve: i64,
    /// Added to `amount_refunded`.
    pub refunded: i64,
}

/// What a refund of `amount` going from `from` to `to` does to its payment; `None` for a change
/// that moves nothing (and is not applied).
pub(crate) fn refund_settlement(
    from: RefundStatus,
    to: RefundStatus,
    amount: i64,
) -> Option<RefundSettlement> {
    match (from, to) {
        (RefundStatus::Pending, RefundStatus::Succeeded) => {
            Some(RefundSettlement { reserve: 0, refunded: amount })
        }
        // Its reservation was released when it failed: the money moved, so it is taken again.
        (RefundStatus::Failed, RefundStatus::Succeeded) => {
            Some(RefundSettlement { reserve: amount, refunded: amount })
        }
        (_, RefundStatus::Failed) => Some(RefundSettlement { reserve: -amount, refunded: 0 }),
        _ => None,
    }
}

/// A payment's reservation columns after a settlement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reservations {
    /// Up to the payment's amount (the schema checks `amount_reserved <= amount`).
    pub amount_reserved: i64,
    /// What the channel refunded beyond the amount.
    pub amount_over_reserved: i64,
    /// This settlement took the non-failed refunds past the amount: the over-refund events go
    /// out with it.
    pub over_refunded: bool,
}

/// Splits the payment's non-failed refunds after `settlement` into its two columns. The total is
/// kept whole; the part past the amount goes to `amount_over_reserved`.
pub(crate) fn reservations(
    amount: i64,
    reserved: i64,
    settlement: RefundSettlement,
) -> Reservations {
    let total = reserved + settlement.reserve;
    Reservations {
        amount_reserved: total.clamp(0, amount),
        amount_over_reserved: (total - amount).max(0),
        over_refunded: settlement.reserve > 0 && total > amount,
    }
}

/// A delivery's columns after an attempt at `at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DeliveryUpdate {
    pub status: &'static str,
    pub next_attempt_at: OffsetDateTime,
    pub delivered_at: Option<OffsetDateTime>,
}

pub(crate) fn delivery_update(next: DeliveryNext, at: OffsetDateTime) -> DeliveryUpdate {
    match next {
        DeliveryNext::Delivered => {
            DeliveryUpdate { status: "delivered", next_attempt_at: at, delivered_at: Some(at) }
        }
        DeliveryNext::RetryAt(when) => {
            DeliveryUpdate { status: "pending", next_attempt_at: when, delivered_at: None }
        }
        DeliveryNext::Failed => {
            DeliveryUpdate { status: "failed", next_attempt_at: at, delivered_at: None }
        }
    }
}

#[cfg(test)]
mod tests {
    use time::Duration;

    use super::*;

    fn endpoint(livemode: bool, events: Option<Vec<EventType>>) -> Subscriber {
        Subscriber { livemode, deleted: false, events }
    }

    #[test]
    fn an_endpoint_receives_only_its_modes_events_of_its_types() {
        let all = endpoint(true, None);
        assert!(receives(&all, EventType::PaymentSucceeded, true));
        assert!(!receives(&all, EventType::PaymentSucceeded, false), "a test event");
        let some = endpoint(false, Some(vec![EventType::RefundSucceeded]));
        assert!(receives(&some, EventType::RefundSucceeded, false));
        assert!(!receives(&some, EventType::PaymentSucceeded, false));
        let none = endpoint(false, Some(vec![]));
        assert!(!receives(&none, EventType::RefundSucceeded, false));
    }

    #[test]
    fn a_deleted_endpoint_receives_nothing() {
        let gone = Subscriber { deleted: true, ..endpoint(true, None) };
        assert!(!receives(&gone, EventType::PaymentSucceeded, true));
    }

    fn t0() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("a valid time")
    }

    fn key(response: Option<(u16, &[u8])>, object_id: Option<&str>) -> KeyRow {
        KeyRow {
            request_hash: "h1".into(),
            response: response.map(|(s, b)| (s, b.to_vec())),
            locked_until: t0() + Duration::minutes(2),
            created_at: t0(),
            object_id: object_id.map(str::to_owned),
        }
    }

    fn decide(row: Option<&KeyRow>, hash: &str, now: OffsetDateTime) -> KeyDecision {
        idempotency_decision(row, hash, now, now - Duration::hours(24))
    }

    #[test]
    fn a_new_key_is_claimed() {
        assert_eq!(decide(None, "h1", t0()), KeyDecision::Claim);
    }

    #[test]
    fn a_key_in_flight_is_refused_until_its_lock_runs_out() {
        let row = key(None, None);
        let answer = |at| decide(Some(&row), "h1", at);
        assert_eq!(answer(t0()), KeyDecision::Answer(IdempotencyBegin::InFlight));
        assert_eq!(
            answer(t0() + Duration::minutes(2)),
            KeyDecision::Answer(IdempotencyBegin::InFlight),
            "the lock holds to its last millisecond"
        );
        assert_eq!(answer(t0() + Duration::minutes(3)), KeyDecision::Claim);
    }

    #[test]
    fn another_request_under_the_key_is_a_mismatch_even_once_abandoned() {
        let row = key(None, None);
        let mismatch = KeyDecision::Answer(IdempotencyBegin::Mismatch);
        assert_eq!(decide(Some(&row), "h2", t0()), mismatch);
        assert_eq!(decide(Some(&row), "h2", t0() + Duration::minutes(3)), mismatch);
    }

    #[test]
    fn a_finished_key_replays_its_answer() {
        let row = key(Some((201, b"{}")), None);
        assert_eq!(
            decide(Some(&row), "h1", t0() + Duration::hours(1)),
            KeyDecision::Answer(IdempotencyBegin::Replay { status: 201, body: b"{}".to_vec() })
        );
    }

    #[test]
    fn an_abandoned_claim_bound_to_its_object_recovers_it() {
        let row = key(None, Some("pay_1"));
        assert_eq!(
            decide(Some(&row), "h1", t0() + Duration::minutes(3)),
            KeyDecision::Answer(IdempotencyBegin::Recover { object_id: "pay_1".into() })
        );
        assert_eq!(
            decide(Some(&row), "h1", t0()),
            KeyDecision::Answer(IdempotencyBegin::InFlight),
            "while its lock holds, it is in flight"
        );
    }

    #[test]
    fn a_key_past_its_retention_is_new_again() {
        let row = key(Some((201, b"{}")), Some("pay_1"));
        assert_eq!(decide(Some(&row), "h2", t0() + Duration::hours(25)), KeyDecision::Claim);
    }

    fn paid(amount: i64, reserved: i64) -> Refundable {
        Refundable { status: PaymentStatus::Succeeded, amount, reserved }
    }

    #[test]
    fn a_refund_fits_in_what_is_left() {
        assert!(check_refund(&paid(100, 60), 40).is_ok());
        assert!(matches!(
            check_refund(&paid(100, 60), 41),
            Err(StoreError::RefundExceedsAmount { requested: 41, available: 40 })
        ));
    }

    #[test]
    fn nothing_is_refundable_past_an_over_refund() {
        assert!(matches!(
            check_refund(&paid(100, 130), 1),
            Err(StoreError::RefundExceedsAmount { requested: 1, available: 0 })
        ));
    }

    #[test]
    fn only_a_succeeded_payment_is_refundable() {
        let pending = Refundable { status: PaymentStatus::Pending, ..paid(100, 0) };
        assert!(matches!(
            check_refund(&pending, 1),
            Err(StoreError::PaymentNotRefundable(PaymentStatus::Pending))
        ));
    }

    #[test]
    fn refund_changes_move_reservations_and_refunded_totals() {
        use RefundStatus::*;
        assert_eq!(
            refund_settlement(Pending, Succeeded, 30),
            Some(RefundSettlement { reserve: 0, refunded: 30 })
        );
        assert_eq!(
            refund_settlement(Pending, Failed, 30),
            Some(RefundSettlement { reserve: -30, refunded: 0 })
        );
        assert_eq!(
            refund_settlement(Failed, Succeeded, 30),
            Some(RefundSettlement { reserve: 30, refunded: 30 })
        );
        assert_eq!(refund_settlement(Succeeded, Succeeded, 30), None);
    }

    #[test]
    fn a_late_success_past_the_amount_is_kept_whole_and_reported() {
        let late = RefundSettlement { reserve: 30, refunded: 30 };
        assert_eq!(
            reservations(100, 100, late),
            Reservations { amount_reserved: 100, amount_over_reserved: 30, over_refunded: true }
        );
        assert_eq!(
            reservations(100, 70, late),
            Reservations { amount_reserved: 100, amount_over_reserved: 0, over_refunded: false }
        );
        let release = RefundSettlement { reserve: -50, refunded: 0 };
        assert_eq!(
            reservations(100, 130, release),
            Reservations { amount_reserved: 80, amount_over_reserved: 0, over_refunded: false }
        );
    }

    #[test]
    fn an_attempt_moves_the_delivery_on() {
        let at = t0();
        let later = at + Duration::minutes(5);
        assert_eq!(
            delivery_update(DeliveryNext::Delivered, at),
            DeliveryUpdate { status: "delivered", next_attempt_at: at, delivered_at: Some(at) }
        );
        assert_eq!(
            delivery_update(DeliveryNext::RetryAt(later), at),
            DeliveryUpdate { status: "pending", next_attempt_at: later, delivered_at: None }
        );
        assert_eq!(delivery_update(DeliveryNext::Failed, at).status, "failed");
    }
}

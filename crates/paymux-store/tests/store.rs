#![allow(clippy::unwrap_used)]
//! One suite for every backend: uniqueness, compare-and-set transitions, the refund reservation
//! under concurrency, idempotency keys, leases and the outbox. Each test is a function of the
//! store, run once on SQLite (a temporary file) and once on PostgreSQL (a fresh database; see
//! `support`).

mod support;

use std::sync::Arc;

use paymux_core::*;
use paymux_store::*;
use time::OffsetDateTime;

/// Instantiates each test for every backend: `sqlite::<test>` and `postgres::<test>`.
macro_rules! on_every_backend {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    crate::support::on_sqlite(crate::$test).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    crate::support::on_postgres(crate::$test).await
                }
            )*
        }
    };
}

on_every_backend!(
    a_failed_refund_that_succeeds_after_all_is_reserved_again,
    a_late_success_past_the_payments_amount_is_recorded_with_its_over_refund_event,
    a_refund_is_marked_as_needing_action_once,
    a_lease_another_sweeper_took_over_cannot_be_renewed,
    merchant_order_no_is_unique_per_merchant,
    transition_applies_once_and_writes_its_event,
    refund_needs_a_succeeded_payment,
    concurrent_refunds_never_exceed_the_amount,
    failed_refund_releases_its_reservation_and_success_counts_as_refunded,
    idempotency_keys_replay_refuse_and_expire,
    an_abandoned_claim_bound_to_the_payment_it_wrote_recovers_that_payment,
    a_claim_whose_object_was_never_written_runs_again,
    a_create_keeps_its_answer_with_the_channels_answer_only_under_its_own_claim,
    refunds_list_newest_first_by_payment_and_by_merchant_refund_no,
    events_carry_their_objects_mode_and_reach_only_endpoints_of_that_mode,
    events_page_in_commit_order,
    a_delivery_is_leased_retried_and_delivered,
    backlogs_count_the_undelivered_and_the_due_until_they_are_done,
    a_rotated_secret_signs_alongside_until_it_expires_and_a_retried_rotation_changes_nothing,
    a_notification_counts_as_applied_once_logged_so,
    a_transition_logs_its_notification_only_if_it_applies,
    a_payment_change_that_loses_its_compare_and_set_undoes_its_attempts_and_writes_nothing,
    a_payment_change_whose_attempt_moved_meanwhile_writes_nothing,
    keys_accounts_and_ping_read_back,
    operator_tokens_are_found_by_hash_and_sessions_expire,
    operator_actions_and_a_payments_notifications_read_back_in_order,
    admin_payments_filter_across_merchants_and_count_outcomes,
    an_attempt_is_added_only_to_a_pending_payment_which_then_shows_it,
    a_success_shows_its_attempt_and_keeps_the_payment_due_while_another_is_watched,
    a_duplicate_is_recorded_once_with_a_refund_that_never_counts_against_the_payment,
    the_duplicate_auto_refund_setting_reads_back,
    receivers_are_scoped_listed_and_deleted,
    a_settlement_moves_once_with_its_ledger_entries_and_events,
    payments_and_refunds_write_balanced_ledger_entries,
);

async fn an_attempt_is_added_only_to_a_pending_payment_which_then_shows_it(store: Arc<dyn Store>) {
    let f = fixture(store).await;
    let (p, a) = payment(&f, "o-att", 100);
    f.store.insert_payment(&p, &a, None, OffsetDateTime::now_utc(), None).await.unwrap();
    let b = another_attempt(&f, &p);
    f.store.insert_attempt(&b, None).await.unwrap();
    let got = f.store.payment(f.merchant, p.id).await.unwrap().unwrap();
    assert_eq!(
        (got.method, &got.channel_order_no, got.action),
        (b.method, &b.channel_order_no, None)
    );
    let attempts = f.store.attempts(p.id).await.unwrap();
    assert_eq!(attempts.iter().map(|x| x.id).collect::<Vec<_>>(), [a.id, b.id]);
    // The action of an attempt the payment no longer shows stays on that attempt only.
    let old = serde_json::json!({"type": "qr_code", "code_url": "https://qr.example/a"});
    f.store.record_created(a.id, &old, &serde_json::json!({}), None).await.unwrap();
    assert_eq!(f.store.payment(f.merchant, p.id).await.unwrap().unwrap().action, None);
    assert_eq!(f.store.attempts(p.id).await.unwrap()[0].action, Some(old));
    let q = paid(&f, "o-att-paid", 100).await;
    assert!(matches!(
        f.store.insert_attempt(&another_attempt(&f, &q), None).await,
        Err(StoreError::PaymentNotPending(PaymentStatus::Succeeded))
    ));
    assert_eq!(f.store.attempts(q.id).await.unwrap().len(), 1, "nothing written");
}

async fn a_success_shows_its_attempt_and_keeps_the_payment_due_while_another_is_watched(
    store: Arc<dyn Store>,
) {
    let f = fixture(store).await;
    let (p, a) = payment(&f, "o-win", 100);
    let t = OffsetDateTime::now_utc();
    f.store.insert_payment(&p, &a, None, t, None).await.unwrap();
    let b = another_attempt(&f, &p);
    f.store.insert_attempt(&b, None).await.unwrap();
    // The first attempt wins although the payment shows the second.
    assert!(f.store.transition_payment(&succeed(&p)).await.unwrap());
    let got = f.store.payment(f.merchant, p.id).await.unwrap().unwrap();
    assert_eq!(
        (got.status, &got.channel_order_no),
        (PaymentStatus::Succeeded, &a.channel_order_no)
    );
    let attempts = f.store.attempts(p.id).await.unwrap();
    assert_eq!((attempts[0].status, attempts[0].watching), (AttemptStatus::Succeeded, false));
    assert_eq!(attempts[0].channel_trade_no.as_deref(), Some("T1"));
    assert_eq!((attempts[1].status, attempts[1].watching), (AttemptStatus::Pending, true));
    let due =
        f.store.claim_due_payments(t + time::Duration::hours(1), t + time::Duration::hours(2), 10);
    assert_eq!(due.await.unwrap().len(), 1, "the other attempt is still watched");
    // The loser is closed but still watched, then confirmed closed.
    let close = AttemptChange {
        attempt_id: b.id,
        from: AttemptStatus::Pending,
        to: AttemptStatus::Closed,
        watching: true,
        channel_trade_no: None,
    };
    assert!(f.store.transition_attempt(&close).await.unwrap());
    assert!(!f.store.transition_attempt(&close).await.unwrap(), "a compare-and-set");
    let done = AttemptChange { from: AttemptStatus::Closed, watching: false, ..close };
    assert!(f.store.transition_attempt(&done).await.unwrap());
    assert!(!f.store.attempts(p.id).await.unwrap()[1].watching);
    // A lone attempt's success leaves nothing to watch.
    let q = paid(&f, "o-win-alone", 100).await;
    let later = t + time::Duration::hours(3);
    let due = f.store.claim_due_payments(later, later + time::Duration::hours(1), 10).await;
    assert!(due.unwrap().iter().all(|d| d.id != q.id));
}

async fn a_duplicate_is_recorded_once_with_a_refund_that_never_counts_against_the_payment(
    store: Arc<dyn Store>,
) {
    let f = fixture(store).await;
    let (p, a) = payment(&f, "o-dup", 100);
    f.store.insert_payment(&p, &a, None, OffsetDateTime::now_utc(), None).await.unwrap();
    let b = another_attempt(&f, &p);
    f.store.insert_attempt(&b, None).await.unwrap();
    assert!(f.store.transition_payment(&succeed(&p)).await.unwrap());
    let mut r = refund(&p, "duplicate_b", 100);
    r.attempt_id = Some(b.id);
    r.reason = Some("duplicate".into());
    let now = OffsetDateTime::now_utc();
    let d = DuplicatePaid {
        change: AttemptChange {
            attempt_id: b.id,
            from: AttemptStatus::Pending,
            to: AttemptStatus::DuplicatePaid,
            watching: false,
            channel_trade_no: Some("T2".into()),
        },
        merchant_id: f.merchant,
        at: now,
        events: vec![NewEvent {
            id: EventId::new(),
            kind: EventType::PaymentDuplicatePaid,
            object_id: p.id.to_string(),
            data: serde_json::json!({}),
        }],
        refund: Some((r.clone(), now)),
    };
    assert!(f.store.record_duplicate(&d).await.unwrap());
    assert!(!f.store.record_duplicate(&d).await.unwrap(), "recorded once");
    let kinds = event_kinds(&f).await;
    assert_eq!(kinds.iter().filter(|k| **k == EventType::PaymentDuplicatePaid).count(), 1);
    let stored = f.store.refund(f.merchant, r.id).await.unwrap().unwrap();
    assert_eq!((stored.attempt_id, stored.status), (Some(b.id), RefundStatus::Pending));
    // The merchant can still refund all of the payment: the duplicate's refund reserved nothing.
    let mut ok = refund_change(&r, RefundStatus::Pending, RefundStatus::Succeeded);
    ok.of_duplicate = true;
    assert!(f.store.transition_refund(&ok).await.unwrap());
    let got = f.store.payment(f.merchant, p.id).await.unwrap().unwrap();
    assert_eq!((got.amount_refunded, got.amount_reserved), (0, 0));
    f.store.insert_refund(&refund(&p, "r-all", 100), now, None).await.unwrap();
}

async fn the_duplicate_auto_refund_setting_reads_back(store: Arc<dyn Store>) {
    let f = fixture(store).await;
    assert!(f.store.merchant(f.merchant).await.unwrap().unwrap().duplicate_auto_refund);
    assert!(f.store.set_duplicate_auto_refund(f.merchant, false).await.unwrap());
    assert!(!f.store.merchant(f.merchant).await.unwrap().unwrap().duplicate_auto_refund);
    assert!(!f.store.set_duplicate_auto_refund(MerchantId::new(), false).await.unwrap());
}

struct Fixture {
    store: Arc<dyn Store>,
    merchant: MerchantId,
    account: AccountId,
}

async fn fixture(store: Arc<dyn Store>) -> Fixture {
    let merchant = store.create_merchant("m").await.unwrap();
    let account = AccountId::new();
    store
        .put_channel_account(&AccountRecord {
            id: account,
            merchant_id: merchant,
            channel: ChannelKind::Alipay,
            config: serde_json::json!({}),
            livemode: false,
            created_at: OffsetDateTime::now_utc(),
        })
        .await
        .unwrap();
    Fixture { store, merchant, account }
}

fn payment(f: &Fixture, order_no: &str, amount: i64) -> (PaymentRecord, AttemptRecord) {
    let now = OffsetDateTime::now_utc();
    let id = PaymentId::new();
    let attempt = AttemptId::new();
    let no = ChannelOrderNo::of_attempt(attempt);
    let p = PaymentRecord {
        id,
        merchant_id: f.merchant,
        merchant_order_no: order_no.into(),
        amount: Money::new(amount, Currency::Cny).unwrap(),
        subject: "s".into(),
        status: PaymentStatus::Pending,
        channel: ChannelKind::Alipay,
        method: PaymentMethod::Qr,
        account_id: f.account,
        channel_order_no: no.clone(),
        channel_trade_no: None,
        action: None,
        amount_refunded: 0,
        amount_reserved: 0,
        failure_code: None,
        failure_message: None,
        client_ip: None,
        return_url: None,
        payer: None,
        metadata: serde_json::json!({}),
        expires_at: now,
        paid_at: None,
        created_at: now,
        updated_at: now,
        check_count: 0,
        livemode: false,
    };
    let a = AttemptRecord {
        id: attempt,
        payment_id: id,
        account_id: f.account,
        channel: ChannelKind::Alipay,
        method: PaymentMethod::Qr,
        channel_order_no: no,
        status: AttemptStatus::Pending,
        action: None,
        channel_trade_no: None,
        channel_data: serde_json::json!({}),
        watching: true,
        created_at: now,
    };
    (p, a)
}

/// The id of the attempt `payment` made with `p` (its number is the attempt id's body).
fn attempt_of(p: &PaymentRecord) -> AttemptId {
    format!("att_{}", p.channel_order_no.as_str().to_ascii_lowercase()).parse().unwrap()
}

/// Another attempt of `p`, pending, at the fixture's account.
fn another_attempt(f: &Fixture, p: &PaymentRecord) -> AttemptRecord {
    let id = AttemptId::new();
    AttemptRecord {
        id,
        payment_id: p.id,
        account_id: f.account,
        channel: ChannelKind::Alipay,
        method: PaymentMethod::Page,
        channel_order_no: ChannelOrderNo::of_attempt(id),
        status: AttemptStatus::Pending,
        action: None,
        channel_trade_no: None,
        channel_data: serde_json::json!({}),
        watching: true,
        created_at: OffsetDateTime::now_utc(),
    }
}

fn succeed(p: &PaymentRecord) -> PaymentTransition {
    PaymentTransition {
        payment_id: p.id,
        merchant_id: p.merchant_id,
        from: PaymentStatus::Pending,
        to: PaymentStatus::Succeeded,
        channel_trade_no: Some("T1".into()),
        paid_at: Some(OffsetDateTime::now_utc()),
        failure_code: None,
        failure_message: None,
        at: OffsetDateTime::now_utc(),
        events: vec![NewEvent {
            id: EventId::new(),
            kind: EventType::PaymentSucceeded,
            object_id: p.id.to_string(),
            data: serde_json::json!({"id": p.id.to_string()}),
        }],
        attempt: AttemptChange {
            attempt_id: attempt_of(p),
            from: AttemptStatus::Pending,
            to: AttemptStatus::Succeeded,
            watching: false,
            channel_trade_no: Some("T1".into()),
        },
        inbound: None,
    }
}

fn refund(p: &PaymentRecord, no: &str, amount: i64) -> RefundRecord {
    let now = OffsetDateTime::now_utc();
    RefundRecord {
        id: RefundId::new(),
        merchant_id: p.merchant_id,
        payment_id: p.id,
        merchant_refund_no: no.into(),
        channel_refund_no: ChannelOrderNo::generate(),
        amount: Money::new(amount, Currency::Cny).unwrap(),
        status: RefundStatus::Pending,
        reason: None,
        channel_refund_id: None,
        failure_code: None,
        failure_message: None,
        created_at: now,
        succeeded_at: None,
        updated_at: now,
        check_count: 0,
        livemode: p.livemode,
        resend_declined_code: None,
        action_required_at: None,
        attempt_id: None,
    }
}

fn refund_change(r: &RefundRecord, from: RefundStatus, to: RefundStatus) -> RefundTransition {
    RefundTransition {
        refund_id: r.id,
        payment_id: r.payment_id,
        merchant_id: r.merchant_id,
        amount: r.amount.minor(),
        from,
        to,
        channel_refund_id: None,
        succeeded_at: None,
        failure_code: None,
        failure_message: None,
        at: OffsetDateTime::now_utc(),
        events: vec![],
        over_refund_events: vec![NewEvent {
            id: EventId::new(),
            kind: EventType::PaymentOverRefunded,
            object_id: r.payment_id.to_string(),
            data: serde_json::json!({}),
        }],
        of_duplicate: false,
    }
}

async fn event_kinds(f: &Fixture) -> Vec<EventType> {
    f.store.events(f.merchant, false, None, 100).await.unwrap().iter().map(|e| e.kind).collect()
}

/// A succeeded payment of `amount`, in the store.
async fn paid(f: &Fixture, order_no: &str, amount: i64) -> PaymentRecord {
    let (p, a) = payment(f, order_no, amount);
    f.store.insert_payment(&p, &a, None, OffsetDateTime::now_utc(), None).await.unwrap();
    assert!(f.store.transition_payment(&succeed(&p)).await.unwrap());
    p
}

async fn a_failed_refund_that_succeeds_after_all_is_reserved_again(store: Arc<dyn Store>) {
    let f = fixture(store).await;
    let p = paid(&f, "o-saf", 100).await;
    let r1 = refund(&p, "r1", 30);
    f.store.insert_refund(&r1, OffsetDateTime::now_utc(), None).await.unwrap();
    let fail = refund_change(&r1, RefundStatus::Pending, RefundStatus::Failed);
    assert!(f.store.transition_refund(&fail).await.unwrap());
    let late = refund_change(&r1, RefundStatus::Failed, RefundStatus::Succeeded);
    assert!(f.store.transition_refund(&late).await.unwrap());
    let got = f.store.payment(f.merchant, p.id).await.unwrap().unwrap();
    assert_eq!((got.amount_refunded, got.amount_reserved), (30, 30));
    assert!(!event_kinds(&f).await.contains(&EventType::PaymentOverRefunded));
    f.store.insert_refund(&refund(&p, "r2", 70), OffsetDateTime::now_utc(), None).await.unwrap();
    assert!(matches!(
        f.store.insert_refund(&refund(&p, "r3", 1), OffsetDateTime::now_utc(), None).await,
        Err(StoreError::RefundExceedsAmount { available: 0, .. })
    ));
}

async fn a_late_success_past_the_payments_amount_is_recorded_with_its_over_refund_event(
    store: Arc<dyn Store>,
) {
    let f = fixture(store).await;
    let p = paid(&f, "o-over", 100).await;
    let r1 = refund(&p, "r1", 30);
    f.store.insert_refund(&r1, OffsetDateTime::now_utc(), None).await.unwrap();
    let fail = refund_change(&r1, RefundStatus::Pending, RefundStatus::Failed);
    assert!(f.store.transition_refund(&fail).await.unwrap());
    // The merchant refunds the rest under new numbers: one succeeds, one is still pending.
    let r2 = refund(&p, "r2", 50);
    let r3 = refund(&p, "r3", 50);
    f.store.insert_refund(&r2, OffsetDateTime::now_utc(), None).await.unwrap();
    f.store.insert_refund(&r3, OffsetDateTime::now_utc(), None).await.unwrap();
    let ok = refund_change(&r2, RefundStatus::Pending, RefundStatus::Succeeded);
    assert!(f.store.transition_refund(&ok).await.unwrap());
    // The first refund went through after all: the channel's truth is recorded.
    let late = refund_change(&r1, RefundStatus::Failed, RefundStatus::Succeeded);
    assert!(f.store.transition_refund(&late).await.unwrap());
    let got = f.store.payment(f.merchant, p.id).await.unwrap().unwrap();
    assert_eq!((got.amount_refunded, got.amount_reserved), (80, 100));
    assert_eq!(event_kinds(&f).await.last(), Some(&EventType::PaymentOverRefunded));
    assert!(matches!(
        f.store.insert_refund(&refund(&p, "r4", 1), OffsetDateTime::now_utc(), None).await,
        Err(StoreError::RefundExceedsAmount { .. })
    ));
    // The pending one fails: what is left to refund is what really is, 100 - 30 - 50.
    let r3_fails = refund_change(&r3, RefundStatus::Pending, RefundStatus::Failed);
    assert!(f.store.transition_refund(&r3_fails).await.unwrap());
    assert!(matches!(
        f.store.insert_refund(&refund(&p, "r5", 21), OffsetDateTime::now_utc(), None).await,
        Err(StoreError::RefundExceedsAmount { available: 20, .. })
    ));
    f.store.insert_refund(&refund(&p, "r6", 20), OffsetDateTime::now_utc(), None).await.unwrap();
}

async fn a_refund_is_marked_as_needing_action_once(store: Arc<dyn Store>) {
    let f = fixture(store).await;
    let p = paid(&f, "o-abn", 100).await;
    let r = refund(&p, "r1", 30);
    f.store.insert_refund(&r, OffsetDateTime::now_utc(), None).await.unwrap();
    let mark = RefundActionRequired {
        refund_id: r.id,
        merchant_id: r.merchant_id,
        channel_refund_id: Some("50300".into()),
        at: OffsetDateTime::now_utc(),
        events: vec![NewEvent {
            id: EventId::new(),
            kind: EventType::RefundActionRequired,
            object_id: r.id.to_string(),
            data: serde_json::json!({}),
        }],
    };
    assert!(f.store.mark_refund_action_required(&mark).await.unwrap());
    assert!(!f.store.mark_refund_action_required(&mark).await.unwrap());
    let got = f.store.refund(f.merchant, r.id).await.unwrap().unwrap();
    assert_eq!(got.status, RefundStatus::Pending);
    assert!(got.action_required_at.is_some());
    assert_eq!(got.channel_refund_id.as_deref(), Some("50300"));
    let kinds = event_kinds(&f).await;
    assert_eq!(kinds.iter().filter(|k| **k == EventType::RefundActionRequired).count(), 1);
}

async fn a_lease_another_sweeper_took_over_cannot_be_renewed(store: Arc<dyn Store>) {
    let f = fixture(store).await;
    let (p, a) = payment(&f, "o-lease", 100);
    let t = OffsetDateTime::now_utc();
    f.store.insert_payment(&p, &a, None, t, None).await.unwrap();
    let s = time::Duration::seconds;
    // Sweeper A claims it for a second, and takes longer than that to reach it.
    let a_lease = t + s(1);
    assert_eq!(f.store.claim_due_payments(t, a_lease, 10).await.unwrap().len(), 1);
    // Sweeper B finds the lease run out and claims it.
    let b_lease = t + s(62);
    assert_eq!(f.store.claim_due_payments(t + s(2), b_lease, 10).await.unwrap().len(), 1);
    assert!(!f.store.renew_payment_lease(p.id, a_lease, t + s(63)).await.unwrap());
    assert!(f.store.renew_payment_lease(p.id, b_lease, t + s(64)).await.unwrap());
    assert!(f.store.claim_due_payments(t + s(3), t + s(65), 10).await.unwrap().is_empty());
    // Refunds are leased the same way.
    let q = paid(&f, "o-lease-r", 100).await;
    let r = refund(&q, "r1", 10);
    f.store.insert_refund(&r, t, None).await.unwrap();
    assert_eq!(f.store.claim_due_refunds(t, a_lease, 10).await.unwrap().len(), 1);
    assert_eq!(f.store.claim_due_refunds(t + s(2), b_lease, 10).await.unwrap().len(), 1);
    assert!(!f.store.renew_refund_lease(r.id, a_lease, t + s(63)).await.unwrap());
    assert!(f.store.renew_refund_lease(r.id, b_lease, t + s(64)).await.unwrap());
}

async fn merchant_order_no_is_unique_per_merchant(store: Arc<dyn Store>) {
    let f = fixture(store).await;
    let (p, a) = payment(&f, "order-1", 100);
    f.store.insert_payment(&p, &a, None, OffsetDateTime::now_utc(), None).await.unwrap();
    let (p2, a2) = payment(&f, "order-1", 100);
    assert!(matches!(
        f.store.insert_payment(&p2, &a2, None, OffsetDateTime::now_utc(), None).await,
        Err(StoreError::Duplicate("merchant_order_no"))
    ));
    assert!(f.store.payment(f.merchant, p2.id).await.unwrap().is_none());
    let other = f.store.create_merchant("other").await.unwrap();
    assert!(f.store.payment(other, p.id).await.unwrap().is_none(), "scoped to its merchant");
}

async fn transition_applies_once_and_writes_its_event(store: Arc<dyn Store>) {
    let f = fixture(store).await;
    let (p, a) = payment(&f, "order-1", 100);
    f.store.insert_payment(&p, &a, None, OffsetDateTime::now_utc(), None).await.unwrap();
    assert!(f.store.transition_payment(&succeed(&p)).await.unwrap());
    assert!(!f.store.transition_payment(&succeed(&p)).await.unwrap(), "second is a no-op");
    let got = f.store.payment(f.merchant, p.id).await.unwrap().unwrap();
    assert_eq!(got.status, PaymentStatus::Succeeded);
    assert_eq!(got.channel_trade_no.as_deref(), Some("T1"));
    let events = f.store.events(f.merchant, false, None, 10).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, EventType::PaymentSucceeded);
}

async fn refund_needs_a_succeeded_payment(store: Arc<dyn Store>) {
    let f = fixture(store).await;
    let (p, a) = payment(&f, "order-1", 100);
    f.store.insert_payment(&p, &a, None, OffsetDateTime::now_utc(), None).await.unwrap();
    assert!(matches!(
        f.store.insert_refund(&refund(&p, "r1", 10), OffsetDateTime::now_utc(), None).await,
        Err(StoreError::PaymentNotRefundable(PaymentStatus::Pending))
    ));
}

async fn concurrent_refunds_never_exceed_the_amount(store: Arc<dyn Store>) {
    let f = fixture(store).await;
    let (p, a) = payment(&f, "order-1", 20);
    f.store.insert_payment(&p, &a, None, OffsetDateTime::now_utc(), None).await.unwrap();
    f.store.transition_payment(&succeed(&p)).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..50 {
        let store = f.store.clone();
        let r = refund(&p, &format!("r{i}"), 1);
        tasks.push(tokio::spawn(async move {
            store.insert_refund(&r, OffsetDateTime::now_utc(), None).await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => ok += 1,
            Err(StoreError::RefundExceedsAmount { requested: 1, available: 0 }) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(ok, 20);
    let got = f.store.payment(f.merchant, p.id).await.unwrap().unwrap();
    assert_eq!(got.amount_reserved, 20);
}

async fn failed_refund_releases_its_reservation_and_success_counts_as_refunded(
    store: Arc<dyn Store>,
) {
    let f = fixture(store).await;
    let (p, a) = payment(&f, "order-1", 100);
    f.store.insert_payment(&p, &a, None, OffsetDateTime::now_utc(), None).await.unwrap();
    f.store.transition_payment(&succeed(&p)).await.unwrap();
    let r1 = refund(&p, "r1", 60);
    let r2 = refund(&p, "r2", 40);
    f.store.insert_refund(&r1, OffsetDateTime::now_utc(), None).await.unwrap();
    f.store.insert_refund(&r2, OffsetDateTime::now_utc(), None).await.unwrap();
    assert!(matches!(
        f.store.insert_refund(&refund(&p, "r3", 1), OffsetDateTime::now_utc(), None).await,
        Err(StoreError::RefundExceedsAmount { available: 0, .. })
    ));
    assert!(matches!(
        f.store.insert_refund(&refund(&p, "r1", 1), OffsetDateTime::now_utc(), None).await,
        Err(StoreError::Duplicate(_)) | Err(StoreError::RefundExceedsAmount { .. })
    ));
    let change = |r: &RefundRecord, to| RefundTransition {
        refund_id: r.id,
        payment_id: p.id,
        merchant_id: p.merchant_id,
        amount: r.amount.minor(),
        from: RefundStatus::Pending,
        to,
        channel_refund_id: None,
        succeeded_at: None,
        failure_code: None,
        failure_message: None,
        at: OffsetDateTime::now_utc(),
        events: vec![],
        over_refund_events: vec![],
        of_duplicate: false,
    };
    assert!(f.store.transition_refund(&change(&r1, RefundStatus::Succeeded)).await.unwrap());
    assert!(!f.store.transition_refund(&change(&r1, RefundStatus::Succeeded)).await.unwrap());
    assert!(f.store.transition_refund(&change(&r2, RefundStatus::Failed)).await.unwrap());
    let got = f.store.payment(f.merchant, p.id).await.unwrap().unwrap();
    assert_eq!(got.amount_refunded, 60);
    assert_eq!(got.amount_reserved, 60);
    f.store.insert_refund(&refund(&p, "r4", 40), OffsetDateTime::now_utc(), None).await.unwrap();
}

async fn idempotency_keys_replay_refuse_and_expire(store: Arc<dyn Store>) {
    let f = fixture(store).await;
    let now = OffsetDateTime::now_utc();
    let lock = now + time::Duration::minutes(2);
    let keep = now - time::Duration::hours(24);
    let begin = |hash: &'static str, at: OffsetDateTime| {
        let store = f.store.clone();
        let m = f.merchant;
        async move {
            store
                .idempotency_begin(
                    m,
                    "k",
                    hash,
                    at,
                    at + time::Duration::minutes(2),
                    at - time::Duration::hours(24),
                )
                .await
                .unwrap()
        }
    };
    assert_eq!(
        f.store.idempotency_begin(f.merchant, "k", "h1", now, lock, keep).await.unwrap(),
        IdempotencyBegin::Started
    );
    assert_eq!(begin("h1", now).await, IdempotencyBegin::InFlight);
    assert_eq!(begin("h2", now).await, IdempotencyBegin::Mismatch);
    // A dead process's claim is taken over, but only by the same request.
    let later = now + time::Duration::minutes(3);
    assert_eq!(begin("h2", later).await, IdempotencyBegin::Mismatch);
    assert_eq!(begin("h1", later).await, IdempotencyBegin::Started);
    assert!(f.store.idempotency_finish(f.merchant, "k", 201, b"{\"id\":1}").await.unwrap());
    assert_eq!(
        begin("h1", later).await,
        IdempotencyBegin::Replay { status: 201, body: b"{\"id\":1}".to_vec() }
    );
    // Other merchants have their own keys.
    let other = f.store.create_merchant("o").await.unwrap();
    assert_eq!(
        f.store.idempotency_begin(other, "k", "h9", now, lock, keep).await.unwrap(),
        IdempotencyBegin::Started
    );
    // After the retention period the key is new again.
    let next_day = later + time::Duration::hours(25);
    assert_eq!(begin("h2", next_day).await, IdempotencyBegin::Started);
    // Purged past retention, the key is gone (and then new again).
    assert_eq!(
        f.store.purge_idempotency_keys(next_day + time::Duration::seconds(1)).await.unwrap(),
        2
    );
    // A released claim lets the same key run again at once.
    f.store.idempotency_release(f.merchant, "k").await.unwrap();
    assert_eq!(begin("h3", next_day).await, IdempotencyBegin::Started);
}

async fn an_abandoned_claim_bound_to_the_payment_it_wrote_recovers_that_payment(
    store: Arc<dyn Store>,
) {
    let f = fixture(store).await;
    let now = OffsetDateTime::now_utc();
    let lock = now + time::Duration::minutes(2);
    let keep = now - time::Duration::hours(24);
    let later = now + time::Duration::minutes(3);
    let begin = |key: &'static str, hash: &'static str, at: OffsetDateTime| {
        let store = f.store.clone();
        let m = f.merchant;
        async move {
            store
                .idempotency_begin(
                    m,
                    key,
                    hash,
                    at,
                    at + time::Duration::minutes(2),
                    at - time::Duration::hours(24),
                )
                .await
                .unwrap()
        }
    };
    assert_eq!(
        f.store.idempotency_begin(f.merchant, "k", "h1", now, lock, keep).await.unwrap(),
        IdempotencyBegin::Started
    );
    let (p, a) = payment(&f, "o-1", 100);
    f.store.insert_payment(&p, &a, None, now, Some("k")).await.unwrap();
    // The process dies here: no answer is stored. While the claim's lease runs, it is in flight.
    assert_eq!(begin("k", "h1", now).await, IdempotencyBegin::InFlight);
    // Past the lease, the same request recovers the payment instead of running again.
    assert_eq!(
        begin("k", "h1", later).await,
        IdempotencyBegin::Recover { object_id: p.id.to_string() }
    );
    // A different request under the key is still refused.
    assert_eq!(begin("k", "h2", later).await, IdempotencyBegin::Mismatch);
    // A bound claim is never released: the object exists.
    f.store.idempotency_release(f.merchant, "k").await.unwrap();
    assert_eq!(
        begin("k", "h1", later).await,
        IdempotencyBegin::Recover { object_id: p.id.to_string() }
    );

    // The same for a refund.
    f.store.transition_payment(&succeed(&p)).await.unwrap();
    assert_eq!(
        f.store.idempotency_begin(f.merchant, "r", "h3", now, lock, keep).await.unwrap(),
        IdempotencyBegin::Started
    );
    let r = refund(&p, "r-1", 10);
    f.store.insert_refund(&r, now, Some("r")).await.unwrap();
    assert_eq!(
        begin("r", "h3", later).await,
        IdempotencyBegin::Recover { object_id: r.id.to_string() }
    );
}

async fn a_claim_whose_object_was_never_written_runs_again(store: Arc<dyn Store>) {
    let f = fixture(store).await;
    let now = OffsetDateTime::now_utc();
    let lock = now + time::Duration::minutes(2);
    let keep = now - time::Duration::hours(24);
    f.store.idempotency_begin(f.merchant, "k", "h1", now, lock, keep).await.unwrap();
    // A write that failed on its order number binds nothing.
    let (p, a) = payment(&f, "o-1", 100);
    f.store.insert_payment(&p, &a, None, now, None).await.unwrap();
    let (p2, a2) = payment(&f, "o-1", 100);
    assert!(f.store.insert_payment(&p2, &a2, None, now, Some("k")).await.is_err());
    let later = now + time::Duration::minutes(3);
    assert_eq!(
        f.store
            .idempotency_begin(
                f.merchant,
                "k",
                "h1",
                later,
                later + time::Duration::minutes(2),
                keep
            )
            .await
            .unwrap(),
        IdempotencyBegin::Started
    );
}

async fn a_create_keeps_its_answer_with_the_channels_answer_only_under_its_own_claim(
    store: Arc<dyn Store>,
) {
    let f = fixture(store).await;
    let now = OffsetDateTime::now_utc();
    let lock = now + time::Duration::minutes(2);
    let keep = now - time::Duration::hours(24);
    let begin =
        |key: &'static str| f.store.idempotency_begin(f.merchant, key, "h", now, lock, keep);
    let answer = |key: &'static str, body: &'static [u8]| {
        Some(KeptAnswer { merchant: f.merchant, key, status: 201, body })
    };
    let action = serde_json::json!({"type": "qr_code", "code_url": "https://qr.example/k"});
    let data = serde_json::json!({});

    // The request's own claim, bound to the payment it wrote: the answer commits with the
    // channel's, and every retry replays it.
    assert_eq!(begin("k").await.unwrap(), IdempotencyBegin::Started);
    let (p, a) = payment(&f, "o-k", 100);
    f.store.insert_payment(&p, &a, None, now, Some("k")).await.unwrap();
    assert!(f.store.record_created(a.id, &action, &data, answer("k", b"first")).await.unwrap());
    assert_eq!(
        begin("k").await.unwrap(),
        IdempotencyBegin::Replay { status: 201, body: b"first".to_vec() }
    );
    assert_eq!(
        f.store.payment(f.merchant, p.id).await.unwrap().unwrap().action,
        Some(action.clone())
    );
    // An answer already kept is never replaced, by a create or by the door.
    assert!(!f.store.record_created(a.id, &action, &data, answer("k", b"second")).await.unwrap());
    assert!(!f.store.idempotency_finish(f.merchant, "k", 200, b"recovered").await.unwrap());
    assert_eq!(
        begin("k").await.unwrap(),
        IdempotencyBegin::Replay { status: 201, body: b"first".to_vec() }
    );
    // An attempt's request binds its key to the payment, and keeps its answer the same way.
    assert_eq!(begin("attempt").await.unwrap(), IdempotencyBegin::Started);
    let b = another_attempt(&f, &p);
    f.store.insert_attempt(&b, Some("attempt")).await.unwrap();
    assert!(
        f.store.record_created(b.id, &action, &data, answer("attempt", b"attempt")).await.unwrap()
    );
    assert_eq!(
        begin("attempt").await.unwrap(),
        IdempotencyBegin::Replay { status: 201, body: b"attempt".to_vec() }
    );

    // A claim bound to another payment keeps no answer from this one, which is still recorded.
    assert_eq!(begin("other").await.unwrap(), IdempotencyBegin::Started);
    let (q, qa) = payment(&f, "o-other", 100);
    f.store.insert_payment(&q, &qa, None, now, Some("other")).await.unwrap();
    let (r, c) = payment(&f, "o-unkeyed", 100);
    f.store.insert_payment(&r, &c, None, now, None).await.unwrap();
    assert!(!f.store.record_created(c.id, &action, &data, answer("other", b"x")).await.unwrap());
    assert_eq!(begin("other").await.unwrap(), IdempotencyBegin::InFlight);
    assert_eq!(
        f.store.payment(f.merchant, r.id).await.unwrap().unwrap().action,
        Some(action.clone())
    );
    // Nor does a key never claimed.
    assert!(!f.store.record_created(c.id, &action, &data, answer("none", b"x")).await.unwrap());
    assert_eq!(begin("none").await.unwrap(), IdempotencyBegin::Started);
}

async fn refunds_list_newest_first_by_payment_and_by_merchant_refund_no(store: Arc<dyn Store>) {
    let f = fixture(store).await;
    let (p, a) = payment(&f, "o-1", 100);
    f.store.insert_payment(&p, &a, None, OffsetDateTime::now_utc(), None).await.unwrap();
    f.store.transition_payment(&succeed(&p)).await.unwrap();
    let (q, b) = payment(&f, "o-2", 100);
    f.store.insert_payment(&q, &b, None, OffsetDateTime::now_utc(), None).await.unwrap();
    f.store.transition_payment(&succeed(&q)).await.unwrap();
    let mut made = Vec::new();
    for (pay, no) in [(&p, "r-1"), (&q, "r-2"), (&p, "r-3")] {
        let r = refund(pay, no, 10);
        f.store.insert_refund(&r, OffsetDateTime::now_utc(), None).await.unwrap();
        made.push(r.id);
    }
    let all = |filter: RefundFilter| {
        let store = f.store.clone();
        let m = f.merchant;
        async move {
            store.list_refunds(m, &filter).await.unwrap().iter().map(|r| r.id).collect::<Vec<_>>()
        }
    };
    assert_eq!(
        all(RefundFilter { limit: 10, ..Default::default() }).await,
        [made[2], made[1], made[0]]
    );
    assert_eq!(
        all(RefundFilter { payment_id: Some(p.id), limit: 10, ..Default::default() }).await,
        [made[2], made[0]]
    );
    assert_eq!(
        all(RefundFilter {
            merchant_refund_no: Some("r-2".into()),
            limit: 10,
            ..Default::default()
        })
        .await,
        [made[1]]
    );
    assert_eq!(
        all(RefundFilter { before: Some(made[2]), limit: 1, ..Default::default() }).await,
        [made[1]]
    );
}

async fn events_carry_their_objects_mode_and_reach_only_endpoints_of_that_mode(
    store: Arc<dyn Store>,
) {
    let f = fixture(store).await;
    let live_account = AccountId::new();
    f.store
        .put_channel_account(&AccountRecord {
            id: live_account,
            merchant_id: f.merchant,
            channel: ChannelKind::Alipay,
            config: serde_json::json!({}),
            livemode: true,
            created_at: OffsetDateTime::now_utc(),
        })
        .await
        .unwrap();
    for (id, livemode) in [("we_test", false), ("we_live", true)] {
        f.store
            .create_webhook_endpoint(&WebhookEndpointRecord {
                id: id.into(),
                merchant_id: f.merchant,
                url: "http://127.0.0.1:9/".into(),
                secret: "whsec_x".into(),
                events: None,
                livemode,
                created_at: OffsetDateTime::now_utc(),
            })
            .await
            .unwrap();
    }
    let (mut p, mut a) = payment(&f, "o-live", 100);
    p.account_id = live_account;
    a.account_id = live_account;
    p.livemode = true;
    f.store.insert_payment(&p, &a, None, OffsetDateTime::now_utc(), None).await.unwrap();
    assert!(f.store.transition_payment(&succeed(&p)).await.unwrap());

    assert!(f.store.events(f.merchant, false, None, 10).await.unwrap().is_empty());
    let live = f.store.events(f.merchant, true, None, 10).await.unwrap();
    assert_eq!(live.len(), 1);
    assert!(live[0].livemode);
    let deliveries = f.store.deliveries_for_event(f.merchant, live[0].id).await.unwrap();
    let endpoints: Vec<&str> = deliveries.iter().map(|d| d.endpoint_id.as_str()).collect();
    assert_eq!(endpoints, ["we_live"]);
    assert_eq!(
        f.store.redeliver_event(f.merchant, live[0].id, OffsetDateTime::now_utc()).await.unwrap(),
        1
    );
    let eps = f.store.webhook_endpoints(f.merchant, true).await.unwrap();
    assert_eq!(eps.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["we_live"]);
    let paid = f.store.payment(f.merchant, p.id).await.unwrap().unwrap();
    assert!(paid.livemode);
    assert!(
        f.store
            .list_payments(
                f.merchant,
                &PaymentFilter { livemode: false, limit: 10, ..Default::default() }
            )
            .await
            .unwrap()
            .is_empty()
    );
}

async fn events_page_in_commit_order(store: Arc<dyn Store>) {
    let f = fixture(store).await;
    let mut made = Vec::new();
    for no in ["o-1", "o-2", "o-3"] {
        let p = paid(&f, no, 100).await;
        made.push(p.id.to_string());
    }
    let all = f.store.events(f.merchant, false, None, 10).await.unwrap();
    assert_eq!(all.iter().map(|e| e.object_id.clone()).collect::<Vec<_>>(), made);
    let rest = f.store.events(f.merchant, false, Some(all[0].id), 10).await.unwrap();
    assert_eq!(rest.iter().map(|e| e.id).collect::<Vec<_>>(), [all[1].id, all[2].id]);
    let page = f.store.events(f.merchant, false, Some(all[0].id), 1).await.unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(f.store.event(f.merchant, all[2].id).await.unwrap().as_ref(), Some(&all[2]));
    let other = f.store.create_merchant("other").await.unwrap();
    assert!(f.store.event(other, all[2].id).await.unwrap().is_none(), "scoped to its merchant");
}

fn endpoint(f: &Fixture, id: &str, events: Option<Vec<EventType>>) -> WebhookEndpointRecord {
    WebhookEndpointRecord {
        id: id.into(),
        merchant_id: f.merchant,
        url: format!("http://127.0.0.1:9/{id}"),
        secret: format!("whsec_{id}"),
        events,
        livemode: false,
        created_at: OffsetDateTime::now_utc(),
    }
}

async fn a_delivery_is_leased_retried_and_delivered(store: Arc<dyn Store>) {
    let f = fixture(store).await;
    let refunds_only = endpoint(&f, "we_refunds", Some(vec![EventType::RefundSucceeded]));
    f.store.create_webhook_endpoint(&endpoint(&f, "we_all", None)).await.unwrap();
    f.store.create_webhook_endpoint(&refunds_only).await.unwrap();
    let p = paid(&f, "o-1", 100).await;
    let t = OffsetDateTime::now_utc() + time::Duration::seconds(1);
    let s = time::Duration::seconds;
    let due = f.store.claim_due_deliveries(t, t + s(30), 10).await.unwrap();
    assert_eq!(due.len(), 1, "only the endpoint subscribed to payment events");
    let d = &due[0];
    assert_eq!((d.url.as_str(), d.secret.as_str()), ("http://127.0.0.1:9/we_all", "whsec_we_all"));
    assert_eq!(d.event.object_id, p.id.to_string());
    assert!(f.store.claim_due_deliveries(t, t + s(30), 10).await.unwrap().is_empty(), "leased");
    assert!(f.store.renew_delivery_lease(&d.delivery_id, t + s(30), t + s(60)).await.unwrap());
    assert!(!f.store.renew_delivery_lease(&d.delivery_id, t + s(30), t + s(90)).await.unwrap());
    let attempt =
        |at, status_code| DeliveryAttemptRecord { at, status_code, latency_ms: 12, error: None };
    f.store
        .record_delivery_attempt(
            &d.delivery_id,
            &attempt(t, Some(500)),
            DeliveryNext::RetryAt(t + s(10)),
        )
        .await
        .unwrap();
    assert!(f.store.claim_due_deliveries(t + s(5), t + s(90), 10).await.unwrap().is_empty());
    let again = f.store.claim_due_deliveries(t + s(10), t + s(90), 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 1);
    f.store
        .record_delivery_attempt(
            &d.delivery_id,
            &attempt(t + s(11), Some(200)),
            DeliveryNext::Delivered,
        )
        .await
        .unwrap();
    let record = f.store.deliveries_for_event(f.merchant, d.event.id).await.unwrap();
    assert_eq!(record.len(), 1);
    assert_eq!(record[0].status, "delivered");
    assert_eq!(record[0].next_attempt_at, None);
    assert_eq!(
        record[0].attempts.iter().map(|a| a.status_code).collect::<Vec<_>>(),
        [Some(500), Some(200)]
    );
    // A manual redeliver makes it due again, and reaches the endpoint that had none.
    f.store.create_webhook_endpoint(&endpoint(&f, "we_late", None)).await.unwrap();
    assert_eq!(f.store.redeliver_event(f.merchant, d.event.id, t + s(20)).await.unwrap(), 2);
    assert_eq!(f.store.claim_due_deliveries(t + s(20), t + s(90), 10).await.unwrap().len(), 2);
    // Nothing goes to a deleted endpoint.
    assert!(f.store.delete_webhook_endpoint(f.merchant, "we_late").await.unwrap());
    assert!(!f.store.delete_webhook_endpoint(f.merchant, "we_late").await.unwrap());
    let eps = f.store.webhook_endpoints(f.merchant, false).await.unwrap();
    assert_eq!(eps.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["we_all", "we_refunds"]);
    assert_eq!(
        f.store.webhook_endpoint(f.merchant, "we_refunds").await.unwrap().unwrap().events,
        Some(vec![EventType::RefundSucceeded])
    );
}

async fn backlogs_count_the_undelivered_and_the_due_until_they_are_done(store: Arc<dyn Store>) {
    let f = fixture(store).await;
    let s = time::Duration::seconds;
    let t = OffsetDateTime::now_utc() + s(1);
    assert_eq!(f.store.outbox_backlog().await.unwrap(), OutboxBacklog::default());
    assert_eq!(f.store.sweeper_backlog(t).await.unwrap(), SweeperBacklog::default());

    f.store.create_webhook_endpoint(&endpoint(&f, "we_all", None)).await.unwrap();
    let p = paid(&f, "o-1", 100).await;
    let event = f.store.events(f.merchant, false, None, 10).await.unwrap().remove(0);
    let backlog = f.store.outbox_backlog().await.unwrap();
    assert_eq!(backlog.undelivered, 1);
    assert_eq!(backlog.oldest_undelivered_at, Some(event.created_at));

    // A pending payment and a pending refund, first checked at t + 10 s.
    let (pending, attempt) = payment(&f, "o-2", 100);
    f.store.insert_payment(&pending, &attempt, None, t + s(10), None).await.unwrap();
    f.store.insert_refund(&refund(&p, "r-1", 30), t + s(10), None).await.unwrap();
    assert_eq!(f.store.sweeper_backlog(t).await.unwrap(), SweeperBacklog::default());
    let due = SweeperBacklog { payments_due: 1, refunds_due: 1 };
    assert_eq!(f.store.sweeper_backlog(t + s(10)).await.unwrap(), due);
    // A claimed row is leased, so no longer due; the succeeded payment never was.
    f.store.claim_due_payments(t + s(10), t + s(70), 10).await.unwrap();
    let leased = SweeperBacklog { payments_due: 0, refunds_due: 1 };
    assert_eq!(f.store.sweeper_backlog(t + s(10)).await.unwrap(), leased);

    let d = f.store.claim_due_deliveries(t, t + s(30), 10).await.unwrap().remove(0);
    let attempt =
        DeliveryAttemptRecord { at: t, status_code: Some(200), latency_ms: 3, error: None };
    f.store
        .record_delivery_attempt(&d.delivery_id, &attempt, DeliveryNext::Delivered)
        .await
        .unwrap();
    assert_eq!(f.store.outbox_backlog().await.unwrap(), OutboxBacklog::default());
}

async fn a_rotated_secret_signs_alongside_until_it_expires_and_a_retried_rotation_changes_nothing(
    store: Arc<dyn Store>,
) {
    let f = fixture(store).await;
    f.store.create_webhook_endpoint(&endpoint(&f, "we_1", None)).await.unwrap();
    let t = OffsetDateTime::now_utc();
    let hour = time::Duration::hours(1);
    let rotation = |secret, key| SecretRotation {
        secret,
        old_expires_at: t + hour,
        now: t,
        idempotency_key: key,
    };
    let first = rotation("whsec_2", Some("rot-1"));
    assert_eq!(
        f.store.rotate_webhook_secret(f.merchant, "we_1", &first).await.unwrap().as_deref(),
        Some("whsec_2")
    );
    let retried = rotation("whsec_other", Some("rot-1"));
    assert_eq!(
        f.store.rotate_webhook_secret(f.merchant, "we_1", &retried).await.unwrap().as_deref(),
        Some("whsec_2"),
        "the retry hands back what the first made"
    );
    assert_eq!(
        f.store.rotate_webhook_secret(f.merchant, "we_9", &first).await.unwrap(),
        None,
        "no such endpoint"
    );
    paid(&f, "o-1", 100).await;
    let due = f.store.claim_due_deliveries(t + time::Duration::seconds(1), t + hour, 10).await;
    let due = due.unwrap();
    assert_eq!(due[0].secret, "whsec_2");
    assert_eq!(due[0].previous_secrets, ["whsec_we_1"]);
}

fn notification(f: &Fixture, id: &str, notify_id: &str, outcome: &str) -> InboundRecord {
    InboundRecord {
        id: id.into(),
        channel: ChannelKind::Alipay,
        account_id: f.account,
        notify_id: Some(notify_id.into()),
        headers: vec![("content-type".into(), "application/x-www-form-urlencoded".into())],
        body: b"a=1".to_vec(),
        received_at: OffsetDateTime::now_utc(),
        outcome: Some(outcome.into()),
        payment_id: None,
    }
}

async fn a_notification_counts_as_applied_once_logged_so(store: Arc<dyn Store>) {
    let f = fixture(store).await;
    let applied = || f.store.inbound_already_applied(ChannelKind::Alipay, f.account, "n-1");
    f.store.log_inbound(&notification(&f, "in_1", "n-1", "mismatch: amount")).await.unwrap();
    assert!(!applied().await.unwrap());
    f.store.log_inbound(&notification(&f, "in_2", "n-1", "unchanged")).await.unwrap();
    assert!(applied().await.unwrap());
}

async fn a_transition_logs_its_notification_only_if_it_applies(store: Arc<dyn Store>) {
    let f = fixture(store).await;
    let (p, a) = payment(&f, "ord-in", 100);
    f.store.insert_payment(&p, &a, None, OffsetDateTime::now_utc(), None).await.unwrap();
    let logged =
        |n: &'static str| f.store.inbound_already_applied(ChannelKind::Alipay, f.account, n);
    let first = PaymentTransition {
        inbound: Some(notification(&f, "in_a", "n-a", "applied")),
        ..succeed(&p)
    };
    assert!(f.store.transition_payment(&first).await.unwrap());
    assert!(logged("n-a").await.unwrap(), "logged in the transition's transaction");
    // The same change again loses its compare-and-set: nothing of it is written, not even its log.
    let again = PaymentTransition {
        inbound: Some(notification(&f, "in_b", "n-b", "applied")),
        ..succeed(&p)
    };
    assert!(!f.store.transition_payment(&again).await.unwrap());
    assert!(!logged("n-b").await.unwrap());
}

async fn a_payment_change_that_loses_its_compare_and_set_undoes_its_attempts_and_writes_nothing(
    store: Arc<dyn Store>,
) {
    let f = fixture(store).await;
    let (p, a) = payment(&f, "ord-stale", 100);
    f.store.insert_payment(&p, &a, None, OffsetDateTime::now_utc(), None).await.unwrap();
    // The payment closes while its attempt stays pending and watched.
    let close = PaymentTransition {
        to: PaymentStatus::Closed,
        channel_trade_no: None,
        paid_at: None,
        events: Vec::new(),
        attempt: AttemptChange {
            to: AttemptStatus::Pending,
            watching: true,
            channel_trade_no: None,
            ..succeed(&p).attempt
        },
        ..succeed(&p)
    };
    assert!(f.store.transition_payment(&close).await.unwrap());
    // A success decided against the payment as it was (pending): the attempt's compare-and-set
    // holds, the payment's does not, so neither is written, nor anything that comes with them.
    let stale = PaymentTransition {
        inbound: Some(notification(&f, "in_s", "n-s", "applied")),
        ..succeed(&p)
    };
    assert!(!f.store.transition_payment(&stale).await.unwrap());
    let attempts = f.store.attempts(p.id).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].status, AttemptStatus::Pending, "the attempt's change is undone");
    assert!(attempts[0].watching);
    assert_eq!(attempts[0].channel_trade_no, None);
    let got = f.store.payment(f.merchant, p.id).await.unwrap().unwrap();
    assert_eq!(got.status, PaymentStatus::Closed);
    assert_eq!(got.channel_trade_no, None);
    assert!(f.store.events(f.merchant, false, None, 10).await.unwrap().is_empty());
    assert!(!f.store.inbound_already_applied(ChannelKind::Alipay, f.account, "n-s").await.unwrap());
    let all = LedgerFilter { limit: 100, ..Default::default() };
    assert!(f.store.ledger_entries(f.merchant, &all).await.unwrap().is_empty());
    // The success decided against the payment as it is now (closed) applies, with all of it.
    let late = PaymentTransition { from: PaymentStatus::Closed, ..succeed(&p) };
    assert!(f.store.transition_payment(&late).await.unwrap());
    let got = f.store.payment(f.merchant, p.id).await.unwrap().unwrap();
    assert_eq!(got.status, PaymentStatus::Succeeded);
    assert_eq!(f.store.attempts(p.id).await.unwrap()[0].status, AttemptStatus::Succeeded);
    assert_eq!(f.store.ledger_entries(f.merchant, &all).await.unwrap().len(), 2);
}

async fn a_payment_change_whose_attempt_moved_meanwhile_writes_nothing(store: Arc<dyn Store>) {
    let f = fixture(store).await;
    let (p, a) = payment(&f, "ord-moved", 100);
    f.store.insert_payment(&p, &a, None, OffsetDateTime::now_utc(), None).await.unwrap();
    // The attempt fails on its own (the channel said so) while the payment stays pending.
    let failed = AttemptChange {
        to: AttemptStatus::Failed,
        watching: false,
        channel_trade_no: None,
        ..succeed(&p).attempt
    };
    assert!(f.store.transition_attempt(&failed).await.unwrap());
    // A success decided against the attempt as it was (pending): the payment's compare-and-set
    // would hold, the attempt's does not, so nothing is written.
    let stale = PaymentTransition {
        inbound: Some(notification(&f, "in_m", "n-m", "applied")),
        ..succeed(&p)
    };
    assert!(!f.store.transition_payment(&stale).await.unwrap());
    let got = f.store.payment(f.merchant, p.id).await.unwrap().unwrap();
    assert_eq!(got.status, PaymentStatus::Pending);
    assert_eq!(got.channel_trade_no, None);
    assert_eq!(f.store.attempts(p.id).await.unwrap()[0].status, AttemptStatus::Failed);
    assert!(f.store.events(f.merchant, false, None, 10).await.unwrap().is_empty());
    assert!(!f.store.inbound_already_applied(ChannelKind::Alipay, f.account, "n-m").await.unwrap());
    let all = LedgerFilter { limit: 100, ..Default::default() };
    assert!(f.store.ledger_entries(f.merchant, &all).await.unwrap().is_empty());
}

async fn keys_accounts_and_ping_read_back(store: Arc<dyn Store>) {
    let f = fixture(store).await;
    f.store.ping().await.unwrap();
    assert_eq!(f.store.merchant(f.merchant).await.unwrap().unwrap().name, "m");
    let key = NewApiKey {
        merchant_id: f.merchant,
        key_hash: "ab".repeat(32),
        prefix: "sk_test_ab".into(),
        livemode: false,
    };
    f.store.add_api_key(&key).await.unwrap();
    assert!(matches!(f.store.add_api_key(&key).await, Err(StoreError::Duplicate("api key"))));
    assert_eq!(
        f.store.merchant_for_key(&key.key_hash).await.unwrap(),
        Some(ApiKeyOwner { merchant_id: f.merchant, livemode: false })
    );
    assert_eq!(f.store.merchant_for_key("nope").await.unwrap(), None);
    let accounts = f.store.channel_accounts(f.merchant).await.unwrap();
    assert_eq!(accounts.iter().map(|a| a.id).collect::<Vec<_>>(), [f.account]);
    let (p, a) = payment(&f, "o-1", 100);
    f.store.insert_payment(&p, &a, None, OffsetDateTime::now_utc(), None).await.unwrap();
    let action = serde_json::json!({"type": "qr_code", "code_url": "https://qr.example/1"});
    f.store.record_created(a.id, &action, &serde_json::json!({"tn": "1"}), None).await.unwrap();
    let got = f.store.payment_by_order_no(f.merchant, "o-1").await.unwrap().unwrap();
    assert_eq!(got.action, Some(action));
    let attempt = f.store.attempt_by_channel_order_no(f.account, &a.channel_order_no).await;
    assert_eq!(attempt.unwrap().unwrap().channel_data, serde_json::json!({"tn": "1"}));
}

async fn operator_tokens_are_found_by_hash_and_sessions_expire(store: Arc<dyn Store>) {
    // Whole seconds: the store keeps milliseconds.
    let now =
        OffsetDateTime::from_unix_timestamp(OffsetDateTime::now_utc().unix_timestamp()).unwrap();
    let token = OperatorTokenRecord {
        id: "opt_1".into(),
        token_hash: "cd".repeat(32),
        label: "sandbox".into(),
        created_at: now,
    };
    store.add_operator_token(&token).await.unwrap();
    assert!(matches!(
        store.add_operator_token(&token).await,
        Err(StoreError::Duplicate("operator token"))
    ));
    let found = store.operator_token_by_hash(&token.token_hash).await.unwrap().unwrap();
    assert_eq!(found.id, "opt_1");
    assert_eq!(store.operator_token_by_hash(&"00".repeat(32)).await.unwrap(), None);

    let hour = time::Duration::hours(1);
    let old = AdminSessionRecord {
        id_hash: "s-old".into(),
        token_id: "opt_1".into(),
        created_at: now - hour * 2,
        expires_at: now - hour,
    };
    store.create_admin_session(&old).await.unwrap();
    assert_eq!(store.admin_session("s-old", now).await.unwrap(), None, "expired");
    let live = AdminSessionRecord {
        id_hash: "s-live".into(),
        token_id: "opt_1".into(),
        created_at: now,
        expires_at: now + hour,
    };
    store.create_admin_session(&live).await.unwrap();
    assert_eq!(store.admin_session("s-live", now).await.unwrap(), Some(live.clone()));
    assert_eq!(store.admin_session("s-live", now + hour).await.unwrap(), None);
    // Opening a session swept the expired one away, so it cannot come back even at an old clock.
    assert_eq!(store.admin_session("s-old", now - hour * 3).await.unwrap(), None);
    store.end_admin_session("s-live").await.unwrap();
    assert_eq!(store.admin_session("s-live", now).await.unwrap(), None);
}

async fn operator_actions_and_a_payments_notifications_read_back_in_order(store: Arc<dyn Store>) {
    let f = fixture(store).await;
    let (p, a) = payment(&f, "o-1", 100);
    f.store.insert_payment(&p, &a, None, OffsetDateTime::now_utc(), None).await.unwrap();
    let now = OffsetDateTime::now_utc();
    let token = OperatorTokenRecord {
        id: "opt_1".into(),
        token_hash: "ef".repeat(32),
        label: "ops".into(),
        created_at: now,
    };
    f.store.add_operator_token(&token).await.unwrap();
    for (i, action) in ["sync", "close"].into_iter().enumerate() {
        let record = OperatorActionRecord {
            id: format!("opa_{i}"),
            token_id: "opt_1".into(),
            action: action.into(),
            payment_id: p.id,
            target: None,
            outcome: "ok".into(),
            detail: format!("payment is {action}ed"),
            at: now + time::Duration::milliseconds(i as i64),
        };
        f.store.record_operator_action(&record).await.unwrap();
    }
    let actions = f.store.operator_actions(p.id).await.unwrap();
    assert_eq!(actions.iter().map(|a| a.action.as_str()).collect::<Vec<_>>(), ["sync", "close"]);
    assert_eq!(actions[1].token_id, "opt_1");

    f.store.transition_payment(&succeed(&p)).await.unwrap();
    let events = f.store.object_events(&p.id.to_string()).await.unwrap();
    assert_eq!(events.iter().map(|e| e.kind).collect::<Vec<_>>(), [EventType::PaymentSucceeded]);

    for (id, linked) in [("in_a", Some(p.id)), ("in_b", None)] {
        let inbound = InboundRecord {
            id: id.into(),
            channel: ChannelKind::Alipay,
            account_id: f.account,
            notify_id: None,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: id.as_bytes().to_vec(),
            received_at: OffsetDateTime::now_utc(),
            outcome: Some("applied".into()),
            payment_id: linked,
        };
        f.store.log_inbound(&inbound).await.unwrap();
    }
    let logged = f.store.inbound_for_payment(p.id).await.unwrap();
    assert_eq!(logged.len(), 1);
    assert_eq!(logged[0].body, b"in_a");
    assert_eq!(logged[0].outcome.as_deref(), Some("applied"));
    assert_eq!(logged[0].headers, [("content-type".to_owned(), "text/plain".to_owned())]);
}

async fn admin_payments_filter_across_merchants_and_count_outcomes(store: Arc<dyn Store>) {
    let f = fixture(store.clone()).await;
    let g = fixture(store).await;
    let (p1, a1) = payment(&f, "o-1", 100);
    let (mut p2, a2) = payment(&g, "o-2", 200);
    p2.livemode = true;
    for (p, a) in [(&p1, &a1), (&p2, &a2)] {
        f.store.insert_payment(p, a, None, OffsetDateTime::now_utc(), None).await.unwrap();
    }
    f.store.transition_payment(&succeed(&p1)).await.unwrap();
    let mut fail = succeed(&p2);
    fail.to = PaymentStatus::Failed;
    fail.failure_code = Some("CARD_DECLINED".into());
    fail.failure_message = Some("declined by the bank".into());
    fail.events.clear();
    f.store.transition_payment(&fail).await.unwrap();

    let everything = AdminPaymentFilter { limit: 10, ..Default::default() };
    let all = f.store.admin_payments(&everything).await.unwrap();
    assert_eq!(all.iter().map(|p| p.id).collect::<Vec<_>>(), [p2.id, p1.id], "newest first");
    let filter = AdminPaymentFilter {
        status: Some(PaymentStatus::Succeeded),
        channel: Some(ChannelKind::Alipay),
        method: Some(PaymentMethod::Qr),
        limit: 10,
        ..Default::default()
    };
    let ok = f.store.admin_payments(&filter).await.unwrap();
    assert_eq!(ok.iter().map(|p| p.id).collect::<Vec<_>>(), [p1.id]);
    let by_no = AdminPaymentFilter {
        merchant_order_no: Some("o-2".into()),
        limit: 10,
        ..Default::default()
    };
    assert_eq!(f.store.admin_payments(&by_no).await.unwrap()[0].id, p2.id);
    let page = AdminPaymentFilter { before: Some(p2.id), limit: 10, ..Default::default() };
    assert_eq!(f.store.admin_payments(&page).await.unwrap()[0].id, p1.id);
    let later = AdminPaymentFilter {
        created_from: Some(OffsetDateTime::now_utc() + time::Duration::hours(1)),
        limit: 10,
        ..Default::default()
    };
    assert!(f.store.admin_payments(&later).await.unwrap().is_empty());

    let from = OffsetDateTime::now_utc() - time::Duration::minutes(30);
    let to = OffsetDateTime::now_utc() + time::Duration::minutes(30);
    let outcomes = f.store.payment_outcomes(from, to, 3_600_000).await.unwrap();
    let mut seen: Vec<(PaymentStatus, u64, i64)> =
        outcomes.iter().map(|o| (o.status, o.count, o.bucket)).collect();
    seen.sort_by_key(|s| s.0.as_str());
    assert_eq!(seen, [(PaymentStatus::Failed, 1, 0), (PaymentStatus::Succeeded, 1, 0)]);
    let reasons = f.store.failure_reasons(from, to, 5).await.unwrap();
    assert_eq!(
        reasons,
        [FailureReason {
            channel: ChannelKind::Alipay,
            code: "CARD_DECLINED".into(),
            message: "declined by the bank".into(),
            count: 1,
        }]
    );
}

/// SQLite only: a store made by the migrations before live and test were apart, with rows in it, then opened
/// by this version.
#[tokio::test]
async fn existing_rows_migrate_to_the_mode_of_their_account() {
    let dir = tempfile::tempdir().unwrap();
    let before = dir.path().join("migrations");
    std::fs::create_dir(&before).unwrap();
    let all = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
    for entry in std::fs::read_dir(&all).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if name.as_str() < "0004" {
            std::fs::copy(&path, before.join(&name)).unwrap();
        }
    }
    let db = dir.path().join("old.db");
    let url = format!("sqlite://{}?mode=rwc", db.display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::migrate::Migrator::new(before.as_path()).await.unwrap().run(&pool).await.unwrap();
    let merchant = MerchantId::new();
    let (sandbox, real) = (AccountId::new(), AccountId::new());
    let (test_pay, live_pay) = (PaymentId::new(), PaymentId::new());
    let script = [
        format!("INSERT INTO merchants VALUES ('{merchant}', 'm', 0)"),
        format!(
            "INSERT INTO channel_accounts VALUES ('{sandbox}', '{merchant}', 'alipay', \
             '{{\"gateway_url\": \"http://127.0.0.1:9102/gateway.do\"}}', 0)"
        ),
        format!(
            "INSERT INTO channel_accounts VALUES ('{real}', '{merchant}', 'wechat', \
             '{{\"base_url\": \"https://api.mch.weixin.qq.com\"}}', 0)"
        ),
    ];
    for sql in &script {
        sqlx::query(sqlx::AssertSqlSafe(sql.clone())).execute(&pool).await.unwrap();
    }
    for (pay, account, no) in [(test_pay, sandbox, "o-test"), (live_pay, real, "o-live")] {
        sqlx::query(
            "INSERT INTO payments (id, merchant_id, merchant_order_no, amount, currency, subject, \
             status, channel, method, account_id, channel_order_no, metadata, expires_at, \
             created_at, updated_at) VALUES (?, ?, ?, 100, 'CNY', 's', 'succeeded', 'alipay', 'qr', \
             ?, ?, '{}', 0, 0, 0)",
        )
        .bind(pay.to_string())
        .bind(merchant.to_string())
        .bind(no)
        .bind(account.to_string())
        .bind(ChannelOrderNo::generate().as_str())
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO events (id, merchant_id, type, object_id, data, created_at) \
             VALUES (?, ?, 'payment.succeeded', ?, '{}', 0)",
        )
        .bind(EventId::new().to_string())
        .bind(merchant.to_string())
        .bind(pay.to_string())
        .execute(&pool)
        .await
        .unwrap();
    }
    sqlx::query(
        "INSERT INTO webhook_endpoints (id, merchant_id, url, secret, created_at) \
         VALUES ('we_1', ?, 'https://example.com/hook', 'whsec_x', 0)",
    )
    .bind(merchant.to_string())
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;

    let store = SqliteStore::open(&db).await.unwrap();
    assert!(!store.channel_account(sandbox).await.unwrap().unwrap().livemode, "loopback: test");
    assert!(store.channel_account(real).await.unwrap().unwrap().livemode, "the real host: live");
    assert!(!store.payment_by_id(test_pay).await.unwrap().unwrap().livemode);
    assert!(store.payment_by_id(live_pay).await.unwrap().unwrap().livemode);
    let live = store.events(merchant, true, None, 10).await.unwrap();
    let test = store.events(merchant, false, None, 10).await.unwrap();
    assert_eq!(
        live.iter().map(|e| e.object_id.clone()).collect::<Vec<_>>(),
        [live_pay.to_string()]
    );
    assert_eq!(
        test.iter().map(|e| e.object_id.clone()).collect::<Vec<_>>(),
        [test_pay.to_string()]
    );
    // The merchant has a live account: its endpoint keeps the live events.
    assert_eq!(store.webhook_endpoints(merchant, true).await.unwrap().len(), 1);
    // Payments written without their attempt got the one they describe.
    let attempts = store.attempts(test_pay).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!((attempts[0].status, attempts[0].watching), (AttemptStatus::Succeeded, false));
    assert!(store.merchant(merchant).await.unwrap().unwrap().duplicate_auto_refund);
}

/// Now, to the millisecond the store keeps.
fn now_ms() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_millisecond(now.millisecond()).unwrap()
}

fn receiver(f: &Fixture, name: &str) -> ReceiverRecord {
    ReceiverRecord {
        id: ReceiverId::new(),
        merchant_id: f.merchant,
        livemode: false,
        name: name.into(),
        accounts: serde_json::json!({"alipay": {"type": "loginName", "account": "a@example.com"}}),
        registrations: serde_json::json!({"alipay": {"result_code": "SUCCESS"}}),
        created_at: now_ms(),
        deleted_at: None,
    }
}

async fn receivers_are_scoped_listed_and_deleted(store: Arc<dyn Store>) {
    let f = fixture(store).await;
    let other = f.store.create_merchant("other").await.unwrap();
    let r1 = receiver(&f, "one");
    let r2 = receiver(&f, "two");
    f.store.insert_receiver(&r1).await.unwrap();
    f.store.insert_receiver(&r2).await.unwrap();
    assert_eq!(f.store.receiver(f.merchant, r1.id).await.unwrap(), Some(r1.clone()));
    assert_eq!(f.store.receiver(other, r1.id).await.unwrap(), None, "another merchant's");
    let listed = f.store.list_receivers(f.merchant, false).await.unwrap();
    assert_eq!(listed, vec![r1.clone(), r2.clone()]);
    assert!(f.store.list_receivers(f.merchant, true).await.unwrap().is_empty(), "live mode");
    let now = now_ms();
    assert!(!f.store.delete_receiver(other, r1.id, now).await.unwrap());
    assert!(f.store.delete_receiver(f.merchant, r1.id, now).await.unwrap());
    assert!(!f.store.delete_receiver(f.merchant, r1.id, now).await.unwrap(), "once");
    let gone = f.store.receiver(f.merchant, r1.id).await.unwrap().unwrap();
    assert!(gone.deleted_at.is_some(), "kept for the splits that name it");
    assert_eq!(f.store.list_receivers(f.merchant, false).await.unwrap(), vec![r2]);
}

async fn a_settlement_moves_once_with_its_ledger_entries_and_events(store: Arc<dyn Store>) {
    let f = fixture(store).await;
    let r = receiver(&f, "platform");
    f.store.insert_receiver(&r).await.unwrap();
    let (p, a) = payment(&f, "order-1", 10_000);
    let now = now_ms();
    let split = SplitRecord {
        receiver: r.id,
        ratio_bps: 1_500,
        amount: None,
        status: SplitStatus::Pending,
        account: None,
        out_order_no: None,
        failure: None,
    };
    let s = SettlementRecord {
        payment_id: p.id,
        merchant_id: f.merchant,
        livemode: false,
        status: SettlementStatus::Held,
        splits: vec![split.clone()],
        auto_settle_at: Some(now),
        settled_at: None,
        release_no: None,
        created_at: now,
        updated_at: now,
    };
    let entry = |account: &str, bucket, kind, amount| {
        LedgerEntryRecord::new(p.id, account, bucket, kind, amount, now)
    };
    // The settlement is written with its payment, in one transaction.
    f.store.insert_payment(&p, &a, Some(&s), now, None).await.unwrap();
    // The payment's success writes what came in, held for the settlement.
    f.store.transition_payment(&succeed(&p)).await.unwrap();
    let all = LedgerFilter { limit: 100, ..Default::default() };
    let got = f.store.ledger_entries(f.merchant, &all).await.unwrap();
    let moves: Vec<_> =
        got.iter().map(|e| (e.account.as_str(), e.bucket, e.kind, e.amount)).collect();
    assert_eq!(
        moves,
        vec![
            (CHANNEL_ACCOUNT, LedgerBucket::External, LedgerKind::Paid, -10_000),
            (MERCHANT_ACCOUNT, LedgerBucket::Held, LedgerKind::Held, 10_000),
        ]
    );
    assert_eq!(f.store.settlement(p.id).await.unwrap(), Some(s.clone()));
    assert!(f.store.ledger_imbalances().await.unwrap().is_empty());

    // Due at its auto-settle time, claimed once while the lease lasts.
    let lease = now + time::Duration::minutes(1);
    let due = f.store.claim_due_settlements(now, lease, 10).await.unwrap();
    assert_eq!(due.iter().map(|d| d.payment_id).collect::<Vec<_>>(), vec![p.id]);
    assert!(f.store.claim_due_settlements(now, lease, 10).await.unwrap().is_empty());
    f.store.schedule_settlement_check(p.id, Some(now)).await.unwrap();
    assert_eq!(f.store.claim_due_settlements(now, lease, 10).await.unwrap().len(), 1);

    let rid = r.id.to_string();
    let settled = SettlementChange {
        payment_id: p.id,
        merchant_id: f.merchant,
        from: SettlementStatus::Held,
        from_updated_at: now,
        to: SettlementStatus::Settled,
        release_no: Some("R1".into()),
        expect_refunds: Some((0, 0)),
        splits: vec![SplitRecord {
            amount: Some(1_500),
            status: SplitStatus::Succeeded,
            out_order_no: Some("S1".into()),
            ..split
        }],
        settled_at: Some(now),
        next_check_at: None,
        entries: vec![
            entry(MERCHANT_ACCOUNT, LedgerBucket::Held, LedgerKind::Split, -1_500),
            entry(&rid, LedgerBucket::Settled, LedgerKind::Split, 1_500),
            entry(MERCHANT_ACCOUNT, LedgerBucket::Held, LedgerKind::Released, -8_500),
            entry(MERCHANT_ACCOUNT, LedgerBucket::Settled, LedgerKind::Released, 8_500),
        ],
        events: vec![NewEvent {
            id: EventId::new(),
            kind: EventType::SettlementSucceeded,
            object_id: p.id.to_string(),
            data: serde_json::json!({}),
        }],
        at: now + time::Duration::milliseconds(1),
    };
    // A change computed from a settlement someone else has changed since is refused.
    let stale = SettlementChange {
        from_updated_at: now - time::Duration::milliseconds(1),
        ..settled.clone()
    };
    assert!(!f.store.transition_settlement(&stale).await.unwrap());
    // Nor one planned on refunds the payment no longer has.
    let replanned = SettlementChange { expect_refunds: Some((100, 0)), ..settled.clone() };
    assert!(!f.store.transition_settlement(&replanned).await.unwrap());
    assert!(f.store.transition_settlement(&settled).await.unwrap());
    assert!(!f.store.transition_settlement(&settled).await.unwrap(), "second is a no-op");
    let got = f.store.settlement(p.id).await.unwrap().unwrap();
    assert_eq!(got.status, SettlementStatus::Settled);
    assert_eq!(got.splits, settled.splits);
    assert!(got.settled_at.is_some());
    assert_eq!(got.release_no.as_deref(), Some("R1"));
    assert_eq!(
        event_kinds(&f).await,
        vec![EventType::PaymentSucceeded, EventType::SettlementSucceeded]
    );

    assert_eq!(f.store.ledger_entries(f.merchant, &all).await.unwrap().len(), 6, "once");
    let to_receiver = LedgerFilter { account: Some(rid.clone()), ..all.clone() };
    let got = f.store.ledger_entries(f.merchant, &to_receiver).await.unwrap();
    assert_eq!(got.iter().map(|e| e.amount).collect::<Vec<_>>(), vec![1_500]);
    let later = LedgerFilter { from: Some(now + time::Duration::seconds(1)), ..all.clone() };
    assert!(f.store.ledger_entries(f.merchant, &later).await.unwrap().is_empty());
    let balances = f.store.balances(f.merchant, false).await.unwrap();
    let mut want = vec![
        BalanceRecord { account: MERCHANT_ACCOUNT.into(), held: 0, settled: 8_500 },
        BalanceRecord { account: rid, held: 0, settled: 1_500 },
    ];
    want.sort_by(|a, b| a.account.cmp(&b.account));
    assert_eq!(balances, want);
    assert!(f.store.ledger_imbalances().await.unwrap().is_empty());

    // An entry that breaks the balance is found by the check.
    let stray = [entry(MERCHANT_ACCOUNT, LedgerBucket::Settled, LedgerKind::Released, 1)];
    f.store.insert_ledger_entries(f.merchant, false, &stray).await.unwrap();
    let bad = f.store.ledger_imbalances().await.unwrap();
    assert_eq!(
        bad,
        vec![LedgerImbalance { payment_id: p.id, amount: 10_000, paid: 10_000, sum: 1 }]
    );
}

async fn payments_and_refunds_write_balanced_ledger_entries(store: Arc<dyn Store>) {
    let f = fixture(store).await;
    let p = paid(&f, "order-1", 1_000).await;
    let r = refund(&p, "r1", 300);
    f.store.insert_refund(&r, OffsetDateTime::now_utc(), None).await.unwrap();
    assert!(
        f.store
            .transition_refund(&refund_change(&r, RefundStatus::Pending, RefundStatus::Succeeded))
            .await
            .unwrap()
    );
    let filter = LedgerFilter { payment_id: Some(p.id), limit: 100, ..Default::default() };
    let got = f.store.ledger_entries(f.merchant, &filter).await.unwrap();
    let moves: Vec<_> =
        got.iter().map(|e| (e.account.as_str(), e.bucket, e.kind, e.amount)).collect();
    assert_eq!(
        moves,
        vec![
            (CHANNEL_ACCOUNT, LedgerBucket::External, LedgerKind::Paid, -1_000),
            (MERCHANT_ACCOUNT, LedgerBucket::Settled, LedgerKind::Paid, 1_000),
            (CHANNEL_ACCOUNT, LedgerBucket::External, LedgerKind::Refunded, 300),
            (MERCHANT_ACCOUNT, LedgerBucket::Settled, LedgerKind::Refunded, -300),
        ]
    );
    assert_eq!(
        f.store.balances(f.merchant, false).await.unwrap(),
        vec![BalanceRecord { account: MERCHANT_ACCOUNT.into(), held: 0, settled: 700 }]
    );
    assert!(f.store.ledger_imbalances().await.unwrap().is_empty());
}

#![allow(clippy::unwrap_used)]
//! Two gateway instances on one PostgreSQL database, each with its own `PgStore` (its own pool):
//! what SQLite gets from its single writer must hold across instances here.

mod support;

use std::collections::HashSet;
use std::sync::Arc;

use paymux_core::*;
use paymux_store::*;
use time::{Duration, OffsetDateTime};

/// Two instances on one fresh database, and a merchant with a test account.
struct Pair {
    a: Arc<PgStore>,
    b: Arc<PgStore>,
    merchant: MerchantId,
    account: AccountId,
}

impl Pair {
    async fn new(url: &str) -> Self {
        let a = Arc::new(PgStore::connect(url).await.unwrap());
        let b = Arc::new(PgStore::connect(url).await.unwrap());
        let merchant = a.create_merchant("m").await.unwrap();
        let account = AccountId::new();
        a.put_channel_account(&AccountRecord {
            id: account,
            merchant_id: merchant,
            channel: ChannelKind::Wechat,
            config: serde_json::json!({}),
            livemode: false,
            created_at: OffsetDateTime::now_utc(),
        })
        .await
        .unwrap();
        Self { a, b, merchant, account }
    }

    /// Instance a for even `i`, b for odd.
    fn either(&self, i: usize) -> Arc<PgStore> {
        if i.is_multiple_of(2) { self.a.clone() } else { self.b.clone() }
    }

    async fn payment(&self, order_no: &str, amount: i64, check_at: OffsetDateTime) -> PaymentId {
        let now = OffsetDateTime::now_utc();
        let id = PaymentId::new();
        let attempt = AttemptId::new();
        let no = ChannelOrderNo::of_attempt(attempt);
        let p = PaymentRecord {
            id,
            merchant_id: self.merchant,
            merchant_order_no: order_no.into(),
            amount: Money::new(amount, Currency::Cny).unwrap(),
            subject: "s".into(),
            status: PaymentStatus::Pending,
            channel: ChannelKind::Wechat,
            method: PaymentMethod::Qr,
            account_id: self.account,
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
            account_id: self.account,
            channel: ChannelKind::Wechat,
            method: PaymentMethod::Qr,
            channel_order_no: no,
            status: AttemptStatus::Pending,
            action: None,
            channel_trade_no: None,
            channel_data: serde_json::json!({}),
            watching: true,
            created_at: now,
        };
        self.a.insert_payment(&p, &a, None, check_at, None).await.unwrap();
        id
    }

    /// A succeeded payment (with its `payment.succeeded` event).
    async fn paid(&self, order_no: &str, amount: i64) -> PaymentId {
        let id = self.payment(order_no, amount, OffsetDateTime::now_utc()).await;
        let attempt = self.a.attempts(id).await.unwrap()[0].id;
        let at = OffsetDateTime::now_utc();
        let change = PaymentTransition {
            payment_id: id,
            merchant_id: self.merchant,
            from: PaymentStatus::Pending,
            to: PaymentStatus::Succeeded,
            channel_trade_no: Some("T".into()),
            paid_at: Some(at),
            failure_code: None,
            failure_message: None,
            at,
            events: vec![NewEvent {
                id: EventId::new(),
                kind: EventType::PaymentSucceeded,
                object_id: id.to_string(),
                data: serde_json::json!({}),
            }],
            attempt: AttemptChange {
                attempt_id: attempt,
                from: AttemptStatus::Pending,
                to: AttemptStatus::Succeeded,
                watching: false,
                channel_trade_no: Some("T".into()),
            },
            inbound: None,
        };
        assert!(self.a.transition_payment(&change).await.unwrap());
        id
    }

    fn refund(&self, payment: PaymentId, no: &str, amount: i64) -> RefundRecord {
        let now = OffsetDateTime::now_utc();
        RefundRecord {
            id: RefundId::new(),
            merchant_id: self.merchant,
            payment_id: payment,
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
            livemode: false,
            resend_declined_code: None,
            action_required_at: None,
            attempt_id: None,
        }
    }
}

fn fail(r: &RefundRecord) -> RefundTransition {
    RefundTransition {
        refund_id: r.id,
        payment_id: r.payment_id,
        merchant_id: r.merchant_id,
        amount: r.amount.minor(),
        from: RefundStatus::Pending,
        to: RefundStatus::Failed,
        channel_refund_id: None,
        succeeded_at: None,
        failure_code: Some("DECLINED".into()),
        failure_message: None,
        at: OffsetDateTime::now_utc(),
        events: vec![],
        over_refund_events: vec![],
        of_duplicate: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_refunds_from_two_instances_never_reserve_past_the_amount() {
    support::on_postgres_database(|url| async move {
        let pair = Pair::new(&url).await;
        let payment = pair.paid("o-1", 20).await;
        let mut tasks = Vec::new();
        for i in 0..60 {
            let store = pair.either(i);
            let r = pair.refund(payment, &format!("r{i}"), 1);
            tasks.push(tokio::spawn(async move {
                store.insert_refund(&r, OffsetDateTime::now_utc(), None).await.map(|()| r)
            }));
        }
        let mut made = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                Ok(r) => made.push(r),
                Err(StoreError::RefundExceedsAmount { requested: 1, available: 0 }) => {}
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert_eq!(made.len(), 20);
        // Failures releasing on one instance race new refunds on the other: what is reserved is
        // always exactly the refunds that have not failed.
        let mut tasks = Vec::new();
        for (i, r) in made.iter().take(5).enumerate() {
            let store = pair.either(i);
            let change = fail(r);
            tasks.push(tokio::spawn(async move {
                assert!(store.transition_refund(&change).await.unwrap());
                false
            }));
        }
        for i in 0..10 {
            let store = pair.either(i + 1);
            let r = pair.refund(payment, &format!("again{i}"), 1);
            tasks.push(tokio::spawn(async move {
                match store.insert_refund(&r, OffsetDateTime::now_utc(), None).await {
                    Ok(()) => true,
                    Err(StoreError::RefundExceedsAmount { .. }) => false,
                    Err(e) => panic!("unexpected {e}"),
                }
            }));
        }
        let mut reserved_again = 0;
        for t in tasks {
            reserved_again += i64::from(t.await.unwrap());
        }
        let got = pair.b.payment(pair.merchant, payment).await.unwrap().unwrap();
        assert!(reserved_again <= 5);
        assert_eq!(got.amount_reserved, 15 + reserved_again);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_attempt_added_while_another_wins_is_refused_or_stays_watched_never_lost() {
    support::on_postgres_database(|url| async move {
        let pair = Pair::new(&url).await;
        for i in 0..20 {
            let t = OffsetDateTime::now_utc();
            let payment = pair.payment(&format!("o-race-{i}"), 100, t).await;
            let winner = pair.a.attempts(payment).await.unwrap()[0].id;
            let win = PaymentTransition {
                payment_id: payment,
                merchant_id: pair.merchant,
                from: PaymentStatus::Pending,
                to: PaymentStatus::Succeeded,
                channel_trade_no: Some("T".into()),
                paid_at: Some(t),
                failure_code: None,
                failure_message: None,
                at: t,
                events: vec![],
                attempt: AttemptChange {
                    attempt_id: winner,
                    from: AttemptStatus::Pending,
                    to: AttemptStatus::Succeeded,
                    watching: false,
                    channel_trade_no: Some("T".into()),
                },
                inbound: None,
            };
            let id = AttemptId::new();
            let other = AttemptRecord {
                id,
                payment_id: payment,
                account_id: pair.account,
                channel: ChannelKind::Wechat,
                method: PaymentMethod::Qr,
                channel_order_no: ChannelOrderNo::of_attempt(id),
                status: AttemptStatus::Pending,
                action: None,
                channel_trade_no: None,
                channel_data: serde_json::json!({}),
                watching: true,
                created_at: t,
            };
            let (a, b) = (pair.a.clone(), pair.b.clone());
            let won = tokio::spawn(async move { a.transition_payment(&win).await.unwrap() });
            let add = tokio::spawn(async move { b.insert_attempt(&other, None).await });
            assert!(won.await.unwrap());
            let added = match add.await.unwrap() {
                Ok(()) => true,
                Err(StoreError::PaymentNotPending(PaymentStatus::Succeeded)) => false,
                Err(e) => panic!("unexpected {e}"),
            };
            // The payment stays due for the sweeper exactly when an attempt is still watched:
            // an attempt that got in is closed and watched, never forgotten.
            let later = t + Duration::days(1);
            let due = pair.a.claim_due_payments(later, later + Duration::hours(1), 100).await;
            assert_eq!(due.unwrap().iter().any(|p| p.id == payment), added, "race {i}");
        }
    })
    .await
}

/// Claims every row it can, `limit` at a time, until none is due.
async fn drain<T, F, Fut>(claim: F) -> Vec<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = StoreResult<Vec<T>>>,
{
    let mut all = Vec::new();
    loop {
        let got = claim().await.unwrap();
        if got.is_empty() {
            return all;
        }
        all.extend(got);
    }
}

/// Four claimers on each instance take every due row exactly once between them.
async fn claimed_once<F, Fut>(pair: &Pair, claim: F) -> Vec<String>
where
    F: Fn(Arc<PgStore>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = StoreResult<Vec<String>>> + Send,
{
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = pair.either(i);
        let claim = claim.clone();
        tasks.push(tokio::spawn(async move { drain(|| claim(store.clone())).await }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let unique: HashSet<&String> = all.iter().collect();
    assert_eq!(unique.len(), all.len(), "a row was handed to two claimers");
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claims_hand_each_row_to_one_instance_and_an_expired_lease_is_taken_over() {
    support::on_postgres_database(|url| async move {
        let pair = Pair::new(&url).await;
        pair.a
            .create_webhook_endpoint(&WebhookEndpointRecord {
                id: "we_1".into(),
                merchant_id: pair.merchant,
                url: "http://127.0.0.1:9/".into(),
                secret: "whsec_1".into(),
                events: None,
                livemode: false,
                created_at: OffsetDateTime::now_utc(),
            })
            .await
            .unwrap();
        let t = OffsetDateTime::now_utc() + Duration::seconds(5);
        const N: usize = 24;
        for i in 0..N {
            pair.payment(&format!("pending-{i}"), 100, t).await;
            // Paid: a delivery of its event, and a refund for the sweeper.
            let paid = pair.paid(&format!("paid-{i}"), 100).await;
            pair.a.insert_refund(&pair.refund(paid, &format!("r{i}"), 10), t, None).await.unwrap();
        }
        let lease = t + Duration::seconds(60);
        let payments = claimed_once(&pair, move |s: Arc<PgStore>| async move {
            let got = s.claim_due_payments(t, lease, 3).await?;
            Ok(got.into_iter().map(|p| p.id.to_string()).collect())
        })
        .await;
        let refunds = claimed_once(&pair, move |s: Arc<PgStore>| async move {
            let got = s.claim_due_refunds(t, lease, 3).await?;
            Ok(got.into_iter().map(|r| r.id.to_string()).collect())
        })
        .await;
        let deliveries = claimed_once(&pair, move |s: Arc<PgStore>| async move {
            let got = s.claim_due_deliveries(t, lease, 3).await?;
            Ok(got.into_iter().map(|d| d.delivery_id).collect())
        })
        .await;
        assert_eq!((payments.len(), refunds.len(), deliveries.len()), (N, N, N));

        // While the leases hold, nothing is due on either instance.
        let during = lease - Duration::seconds(1);
        assert!(pair.b.claim_due_payments(during, lease, 100).await.unwrap().is_empty());
        assert!(pair.b.claim_due_refunds(during, lease, 100).await.unwrap().is_empty());
        assert!(pair.b.claim_due_deliveries(during, lease, 100).await.unwrap().is_empty());

        // The instance holding them died: once the leases run out, the other takes them over,
        // and the dead one cannot renew.
        let after = lease + Duration::seconds(1);
        let next = after + Duration::seconds(60);
        let payments = pair.b.claim_due_payments(after, next, 100).await.unwrap();
        assert_eq!(payments.len(), N);
        assert_eq!(pair.b.claim_due_refunds(after, next, 100).await.unwrap().len(), N);
        let deliveries = pair.b.claim_due_deliveries(after, next, 100).await.unwrap();
        assert_eq!(deliveries.len(), N);
        assert!(!pair.a.renew_payment_lease(payments[0].id, lease, next).await.unwrap());
        let delivery = &deliveries[0].delivery_id;
        assert!(!pair.a.renew_delivery_lease(delivery, lease, next).await.unwrap());
        assert!(
            pair.b
                .renew_delivery_lease(delivery, next, next + Duration::seconds(60))
                .await
                .unwrap()
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_racing_on_one_idempotency_key_start_it_once() {
    support::on_postgres_database(|url| async move {
        let pair = Pair::new(&url).await;
        let now = OffsetDateTime::now_utc();
        let race = |key: String, at: OffsetDateTime| {
            let mut tasks = Vec::new();
            for i in 0..6 {
                let store = pair.either(i);
                let (key, merchant) = (key.clone(), pair.merchant);
                tasks.push(tokio::spawn(async move {
                    let lock = at + Duration::minutes(2);
                    let keep = at - Duration::hours(24);
                    store.idempotency_begin(merchant, &key, "h1", at, lock, keep).await.unwrap()
                }));
            }
            async move {
                let mut answers = Vec::new();
                for t in tasks {
                    answers.push(t.await.unwrap());
                }
                answers
            }
        };
        for round in 0..10 {
            let key = format!("k{round}");
            let answers = race(key.clone(), now).await;
            let started = answers.iter().filter(|a| **a == IdempotencyBegin::Started).count();
            assert_eq!(started, 1, "{answers:?}");
            assert!(
                answers
                    .iter()
                    .all(|a| matches!(a, IdempotencyBegin::Started | IdempotencyBegin::InFlight)),
                "{answers:?}"
            );
            // The claim's process died: past its lock, exactly one instance takes it over.
            let answers = race(key, now + Duration::minutes(3)).await;
            let started = answers.iter().filter(|a| **a == IdempotencyBegin::Started).count();
            assert_eq!(started, 1, "{answers:?}");
        }
    })
    .await
}

//! Attempts: the tries at channels to pay one payment.
//!
//! A payment is the merchant's order; an attempt is one try at one channel, with its own channel
//! order number. The payer may switch (`POST /v1/payments/{id}/attempts`, or the cashier page),
//! so several attempts can be open at once. The first success the channels report wins the
//! payment; the other open attempts are then closed at their channels and watched until their
//! channels can no longer take money for them. One that reports a success anyway (the payer paid
//! twice) is recorded as `duplicate_paid` with `payment.duplicate_paid`, and, unless the merchant
//! turned it off, refunded in full by a refund of its own that never counts against the payment.
//!
//! Every attempt is written before its channel is called; the work that follows a success (the
//! closes, the watching, the refund of a duplicate) lives in the store, so the sweeper finishes
//! whatever a crash interrupted.

use std::sync::Arc;

use paymux_core::{
    ALREADY_PAID, AttemptId, AttemptStatus, Channel, ChannelError, ChannelKind, ChannelOrderNo,
    ChannelPayment, ChannelRefund, CreatePayment, PaymentId, PaymentMethod, PaymentRef,
    PaymentStatus, RefundRequest, ReportSource,
};
use paymux_store::{
    AttemptChange, AttemptRecord, InboundRecord, KeptAnswer, PaymentRecord, RefundRecord,
    StoreError,
};
use serde::Deserialize;
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::access::{AnswerKey, Created};
use crate::apply::{Applied, apply_attempt_notified, apply_refund};
use crate::endpoints::Caller;
use crate::engine::{Engine, payment_ref};
use crate::error::EngineError;
use crate::objects::Payment;
use crate::payments::{Payer, PayerInputs, payer_inputs, required};

/// How long after the channel's last moment to take money an attempt that can no longer win is
/// still asked about: clocks differ, and a payer who confirmed at that moment takes a while to
/// be settled.
const WATCH_MARGIN: time::Duration = time::Duration::minutes(10);

/// A request to add an attempt to a pending payment (`POST /v1/payments/{id}/attempts`): the
/// payer chose another way to pay.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAttemptRequest {
    #[schema(schema_with = crate::schema::channel, required = true)]
    pub channel: Option<String>,
    #[schema(schema_with = crate::schema::method, required = true)]
    pub method: Option<String>,
    #[serde(default)]
    pub payer: Option<Payer>,
    pub client_ip: Option<String>,
    /// Close the payment's other open attempts at their channels once this one is made
    /// (default `false`: the payer may still pay any of them, and the first success wins).
    pub close_others: Option<bool>,
}

/// A validated attempt request.
#[derive(Debug)]
struct NewAttempt {
    channel: ChannelKind,
    method: PaymentMethod,
    payer: PayerInputs,
    close_others: bool,
}

impl CreateAttemptRequest {
    fn validate(self) -> Result<NewAttempt, EngineError> {
        let channel = required(self.channel, "channel")?
            .parse::<ChannelKind>()
            .map_err(|e| EngineError::InvalidInput { field: "channel", message: e })?;
        let method: PaymentMethod = required(self.method, "method")?
            .parse()
            .map_err(|e: String| EngineError::InvalidInput { field: "method", message: e })?;
        let payer = payer_inputs(self.payer, self.client_ip, method)?;
        Ok(NewAttempt { channel, method, payer, close_others: self.close_others.unwrap_or(false) })
    }
}

/// An attempt written to the store and about to be created at its channel, with what the answer
/// shows beside it.
pub(crate) struct Started {
    pub payment: PaymentRecord,
    pub attempt: AttemptRecord,
    /// The payment's other attempts.
    pub others: Vec<AttemptRecord>,
    /// A held payment's settlement.
    pub settlement: Option<crate::settlement::Settlement>,
    pub key: Option<AnswerKey>,
}

impl Engine {
    /// The payment with its attempts, and its settlement if it is held, as the API shows it.
    pub async fn payment_object(&self, p: &PaymentRecord) -> Result<Payment, EngineError> {
        let mut object = Payment::new(p, &self.store.attempts(p.id).await?);
        object.settlement =
            self.store.settlement(p.id).await?.as_ref().map(crate::settlement::Settlement::from);
        Ok(object)
    }

    /// Adds an attempt to the caller's pending payment `payment_id` and creates it at its
    /// channel; returns the payment, which now shows it (and its `action`), with the answer kept
    /// for `idempotency_key` if it could be ([`Created`]).
    pub async fn create_attempt(
        &self,
        caller: Caller,
        payment_id: &str,
        request: CreateAttemptRequest,
        idempotency_key: Option<&str>,
    ) -> Result<Created<Payment>, EngineError> {
        let req = request.validate()?;
        let mut payment = self.payment_record(caller, payment_id).await?;
        if payment.status != PaymentStatus::Pending {
            return Err(EngineError::PaymentNotPending { status: payment.status });
        }
        let (account, adapter) = self.route(caller, Some(req.channel), req.method).await?;
        // A held payment stays held whichever channel the payer switches to.
        let held = self.store.settlement(payment.id).await?;
        if let Some(s) = &held {
            self.check_hold_on(caller, &*adapter, s).await?;
        }
        let now = crate::engine::now_ms();
        let id = AttemptId::new();
        let attempt = AttemptRecord {
            id,
            payment_id: payment.id,
            account_id: account.id,
            channel: account.channel,
            method: req.method,
            channel_order_no: ChannelOrderNo::of_attempt(id),
            status: AttemptStatus::Pending,
            action: None,
            channel_trade_no: None,
            channel_data: serde_json::json!({}),
            watching: true,
            created_at: now,
        };
        // Write before the call: the attempt is in the store before its channel hears of it.
        match self.store.insert_attempt(&attempt, idempotency_key).await {
            Ok(()) => {}
            Err(StoreError::PaymentNotPending(status)) => {
                return Err(EngineError::PaymentNotPending { status });
            }
            Err(e) => return Err(e.into()),
        }
        let others: Vec<AttemptRecord> =
            self.store.attempts(payment.id).await?.into_iter().filter(|a| a.id != id).collect();
        payment.channel = attempt.channel;
        payment.method = attempt.method;
        payment.account_id = attempt.account_id;
        payment.channel_order_no = attempt.channel_order_no.clone();
        payment.action = None;
        let call = CreatePayment {
            channel_order_no: attempt.channel_order_no.clone(),
            amount: payment.amount,
            subject: payment.subject.clone(),
            method: req.method,
            created_at: now,
            expires_at: payment.expires_at,
            notify_url: self.notify_url(account.channel, account.id),
            return_url: payment.return_url.clone(),
            client_ip: req.payer.client_ip.or_else(|| payment.client_ip.clone()),
            payer_openid: req.payer.openid,
            auth_code: req.payer.auth_code,
            hold: held.is_some() && adapter.holds_funds(),
        };
        let payment_id = payment.id;
        let started = Started {
            payment,
            attempt,
            others,
            settlement: held.as_ref().map(crate::settlement::Settlement::from),
            key: AnswerKey::of(caller, idempotency_key),
        };
        let created = self.start_attempt(adapter, started, call).await?;
        if req.close_others {
            self.close_other_attempts_soon(payment_id, id);
        }
        Ok(created)
    }

    /// Calls the channel to create `attempt` (already in the store) and records its answer;
    /// returns the payment with its attempts (`others` and this one) as the answer left it.
    ///
    /// Only a definite refusal fails the attempt (and the payment, if no other attempt is open);
    /// an unknown outcome leaves it pending for the sweeper. From the channel call to the commit
    /// of its answer runs on its own task: a caller that goes away (an HTTP client hanging up)
    /// cannot cut it in the middle.
    ///
    /// With `key`, the payment as answered is kept as that key's answer in the transaction that
    /// records the channel's answer ([`Created`]).
    pub(crate) async fn start_attempt(
        &self,
        adapter: Arc<dyn Channel>,
        started: Started,
        call: CreatePayment,
    ) -> Result<Created<Payment>, EngineError> {
        let Started { mut payment, mut attempt, others, settlement, key } = started;
        let payment_id = payment.id;
        let engine = self.clone();
        let task = tokio::spawn(async move {
            let outcome = adapter.create(&call).await;
            crate::failpoint::hit(crate::failpoint::AFTER_CHANNEL_CREATE).await;
            let object = payment_id.to_string();
            match outcome {
                Ok(created) => {
                    let action = serde_json::to_value(&created.action)
                        .map_err(|source| EngineError::Encode { what: "action", source })?;
                    let attempt_id = attempt.id;
                    payment.action = Some(action.clone());
                    attempt.action = Some(action.clone());
                    attempt.channel_data = created.channel_data.clone();
                    let mut attempts = others;
                    attempts.push(attempt);
                    let mut answered = Payment::new(&payment, &attempts);
                    answered.settlement = settlement;
                    // Should the answer not render, the channel's answer is recorded all the
                    // same, and the door keeps the answer it sends.
                    let body = key.as_ref().and_then(|_| serde_json::to_vec(&answered).ok());
                    let answer = key.as_ref().zip(body.as_deref()).map(|(k, body)| KeptAnswer {
                        merchant: k.merchant,
                        key: &k.key,
                        status: Created::<Payment>::STATUS,
                        body,
                    });
                    let kept = engine
                        .store
                        .record_created(attempt_id, &action, &created.channel_data, answer)
                        .await
                        .map_err(|source| EngineError::StoreAfterChannel { source, object })?;
                    crate::failpoint::hit(crate::failpoint::AFTER_CREATE_RECORDED).await;
                    Ok(Created { object: answered, answer: body.filter(|_| kept) })
                }
                Err(e @ (ChannelError::Declined { .. } | ChannelError::Invalid { .. })) => {
                    // A definite refusal: nothing exists at the channel, so the attempt failed.
                    let (code, message) = match &e {
                        ChannelError::Declined { code, message } => (code.clone(), message.clone()),
                        other => ("invalid_request".to_owned(), other.to_string()),
                    };
                    let failed = ChannelPayment::Failed { code, message };
                    if let Err(source) = engine
                        .apply_report(&payment, &attempt, &failed, ReportSource::Channel)
                        .await
                    {
                        return Err(EngineError::StoreAfterChannel { source, object });
                    }
                    Err(EngineError::ChannelCall { source: e, object })
                }
                Err(e) => {
                    // Unknown: the attempt stays pending; the sweeper (or a sync) settles it.
                    tracing::warn!(payment = %payment_id, error = %e, "create outcome unknown; attempt stays pending");
                    Err(EngineError::ChannelCall { source: e, object })
                }
            }
        });
        task.await.map_err(|_| EngineError::Interrupted { object: payment_id.to_string() })?
    }

    /// Applies what the channel says about one attempt, then starts what follows at once: the
    /// closes of the other attempts when this one won, the refund of a duplicate payment. Both
    /// are durable work as well (the sweeper does them if this process dies first).
    pub(crate) async fn apply_report(
        &self,
        p: &PaymentRecord,
        a: &AttemptRecord,
        report: &ChannelPayment,
        source: ReportSource,
    ) -> Result<Applied, StoreError> {
        Ok(self.apply_report_notified(p, a, report, source, None).await?.0)
    }

    /// [`Engine::apply_report`] for a report that came in `inbound`, a channel notification;
    /// says whether the notification was logged with the change it made (see
    /// [`crate::apply::apply_attempt_notified`]).
    pub(crate) async fn apply_report_notified(
        &self,
        p: &PaymentRecord,
        a: &AttemptRecord,
        report: &ChannelPayment,
        source: ReportSource,
        inbound: Option<&InboundRecord>,
    ) -> Result<(Applied, bool), StoreError> {
        let first_check = self.config.sweeper.first_check_after;
        let (applied, logged) =
            apply_attempt_notified(&*self.store, first_check, p, a, report, source, inbound)
                .await?;
        match &applied {
            Applied::Changed if matches!(report, ChannelPayment::Succeeded { .. }) => {
                self.settle_other_attempts_soon(p.id, a.id);
            }
            Applied::Duplicate(Some(refund)) => self.refund_duplicate_soon((**refund).clone()),
            _ => {}
        }
        Ok((applied, logged))
    }

    /// Looks, on a task of its own, at the other attempts of a payment one attempt has just
    /// won: each is asked about first (one the payer paid too is a duplicate), then closed. What
    /// fails here is done by the sweeper: the payment stays due while they are watched.
    fn settle_other_attempts_soon(&self, payment: PaymentId, won: AttemptId) {
        let engine = self.clone();
        tokio::spawn(async move {
            for a in engine.other_watched_attempts(payment, won).await {
                if let Err(e) = engine.check_attempt(payment, &a, false).await {
                    tracing::info!(%payment, attempt = %a.id, error = %e, "no answer about another attempt; the sweeper asks again");
                }
            }
        });
    }

    /// Closes, on a task of its own, the payment's other attempts that are still open (the
    /// payer asked for only the new one to be payable). One whose close fails stays payable, and
    /// the first success still wins.
    fn close_other_attempts_soon(&self, payment: PaymentId, keep: AttemptId) {
        let engine = self.clone();
        tokio::spawn(async move {
            for a in engine.other_watched_attempts(payment, keep).await {
                if let Err(e) = engine.close_if_open(payment, &a).await {
                    tracing::info!(%payment, attempt = %a.id, error = %e, "closing another attempt did not go through");
                }
            }
        });
    }

    async fn other_watched_attempts(
        &self,
        payment: PaymentId,
        not: AttemptId,
    ) -> Vec<AttemptRecord> {
        match self.store.attempts(payment).await {
            Ok(all) => all.into_iter().filter(|a| a.id != not && a.watching).collect(),
            Err(e) => {
                tracing::warn!(%payment, error = %e, "could not read the payment's attempts; the sweeper will look");
                Vec::new()
            }
        }
    }

    /// Closes `a` at its channel if it is still pending there, and records the close.
    async fn close_if_open(
        &self,
        payment: PaymentId,
        a: &AttemptRecord,
    ) -> Result<(), EngineError> {
        let p = self
            .store
            .payment_by_id(payment)
            .await?
            .ok_or(EngineError::NotFound { what: "payment" })?;
        let adapter = self.attempt_adapter(a).await?;
        let reference = payment_ref(&p, a);
        if a.status == AttemptStatus::Pending {
            self.close_attempt(&p, a, &*adapter, &reference).await?;
        }
        Ok(())
    }

    /// Sends paymux's own refund of a duplicate payment, on a task of its own, and records the
    /// answer. An unknown outcome leaves it pending for the sweeper.
    fn refund_duplicate_soon(&self, refund: RefundRecord) {
        let engine = self.clone();
        tokio::spawn(async move {
            crate::failpoint::hit(crate::failpoint::BEFORE_DUPLICATE_REFUND).await;
            if let Err(e) = engine.send_duplicate_refund(&refund).await {
                tracing::warn!(refund = %refund.id, error = %e, "the refund of a duplicate payment stays pending; the sweeper settles it");
            }
        });
    }

    async fn send_duplicate_refund(&self, r: &RefundRecord) -> Result<(), EngineError> {
        let p = self
            .store
            .payment_by_id(r.payment_id)
            .await?
            .ok_or(EngineError::NotFound { what: "payment" })?;
        let (adapter, attempt) = self.refund_target(&p, r).await?;
        let call = RefundRequest {
            payment: payment_ref(&p, &attempt),
            channel_refund_no: r.channel_refund_no.clone(),
            amount: r.amount,
            reason: r.reason.clone(),
            notify_url: self.notify_url(attempt.channel, attempt.account_id),
            created_at: r.created_at,
        };
        let report = match adapter.refund(&call).await {
            Ok(report) => report,
            Err(ChannelError::Declined { code, message }) => {
                ChannelRefund::Failed { code, message }
            }
            Err(e @ ChannelError::Invalid { .. }) => {
                ChannelRefund::Failed { code: "invalid_request".into(), message: e.to_string() }
            }
            Err(e) => return Err(e.into()),
        };
        apply_refund(&*self.store, r, &report).await?;
        Ok(())
    }

    /// The adapter and attempt a refund is made at: the duplicate attempt it returns, or the
    /// attempt the payment succeeded with.
    pub(crate) async fn refund_target(
        &self,
        p: &PaymentRecord,
        r: &RefundRecord,
    ) -> Result<(Arc<dyn Channel>, AttemptRecord), EngineError> {
        let Some(id) = r.attempt_id else {
            return self.adapter_and_attempt(p).await;
        };
        let attempt = self
            .store
            .attempts(p.id)
            .await?
            .into_iter()
            .find(|a| a.id == id)
            .ok_or(EngineError::NoAttempt(p.id))?;
        Ok((self.attempt_adapter(&attempt).await?, attempt))
    }

    /// Asks the channel about every attempt of `p` it still watches and applies each answer;
    /// closes the attempts that lost to another, and, when `sweeping`, those of a payment past
    /// its expiry; stops watching an attempt once its channel can no longer take money for it.
    /// Returns whether the payment still needs looking at (it is pending, or an attempt is still
    /// watched). A failure to ask about the attempt the payment shows is returned; one about
    /// another attempt is logged, and that attempt is looked at again next time.
    pub(crate) async fn check_payment(
        &self,
        p: &PaymentRecord,
        sweeping: bool,
    ) -> Result<bool, EngineError> {
        let attempts = self.store.attempts(p.id).await?;
        let mut shown_failed = None;
        // A merchant's sync asks about the attempt the payment shows even when it is no longer
        // watched: "ask the channel now" is what a sync is for.
        let asked = |a: &&AttemptRecord| {
            a.watching || (!sweeping && a.channel_order_no == p.channel_order_no)
        };
        for a in attempts.iter().filter(asked) {
            if let Err(e) = self.check_attempt(p.id, a, sweeping).await {
                if a.channel_order_no == p.channel_order_no {
                    shown_failed = Some(e);
                } else {
                    tracing::info!(payment = %p.id, attempt = %a.id, error = %e, "no answer about an attempt; asked again later");
                }
            }
        }
        if let Some(e) = shown_failed {
            return Err(e);
        }
        let now = self
            .store
            .payment_by_id(p.id)
            .await?
            .ok_or(EngineError::NotFound { what: "payment" })?;
        let watching = self.store.attempts(p.id).await?.iter().any(|a| a.watching);
        Ok(now.status == PaymentStatus::Pending || watching)
    }

    async fn check_attempt(
        &self,
        payment: PaymentId,
        a: &AttemptRecord,
        sweeping: bool,
    ) -> Result<(), EngineError> {
        let p = self
            .store
            .payment_by_id(payment)
            .await?
            .ok_or(EngineError::NotFound { what: "payment" })?;
        let adapter = self.attempt_adapter(a).await?;
        let reference = payment_ref(&p, a);
        let report = adapter
            .query(&reference)
            .await
            .map_err(|source| EngineError::ChannelCall { source, object: p.id.to_string() })?;
        match self.apply_report(&p, a, &report, ReportSource::Channel).await? {
            Applied::Mismatch(why) => return Err(EngineError::ChannelMismatch { why }),
            Applied::Unchanged if report == ChannelPayment::Pending => {}
            _ => return Ok(()),
        }
        // The channel says "not yet" about this attempt.
        let now = OffsetDateTime::now_utc();
        if p.status != PaymentStatus::Pending
            && now > adapter.payable_until(&reference) + WATCH_MARGIN
        {
            // Its channel can no longer take money for it: nothing more to learn.
            let done = AttemptChange {
                attempt_id: a.id,
                from: a.status,
                to: a.status,
                watching: false,
                channel_trade_no: None,
            };
            self.store.transition_attempt(&done).await?;
            return Ok(());
        }
        let lost = p.status != PaymentStatus::Pending;
        let expired = sweeping && p.status == PaymentStatus::Pending && now >= p.expires_at;
        if a.status == AttemptStatus::Pending && (lost || expired) {
            self.close_attempt(&p, a, &*adapter, &reference).await?;
        }
        Ok(())
    }

    /// Closes one attempt at its channel so nobody can pay it any more, and records the close
    /// (the last open attempt of a pending payment closes the payment). A channel that answers
    /// "already paid" is asked again next time, and its success taken then.
    pub(crate) async fn close_attempt(
        &self,
        p: &PaymentRecord,
        a: &AttemptRecord,
        adapter: &dyn Channel,
        reference: &PaymentRef,
    ) -> Result<(), EngineError> {
        match adapter.close(reference).await {
            Ok(()) => {
                self.apply_report(p, a, &ChannelPayment::Closed, ReportSource::OurClose).await?;
                Ok(())
            }
            Err(ChannelError::Declined { code, .. }) if code == ALREADY_PAID => {
                tracing::info!(payment = %p.id, attempt = %a.id, "close refused as already paid; the next query takes the success");
                Ok(())
            }
            Err(source) => Err(EngineError::ChannelCall { source, object: p.id.to_string() }),
        }
    }
}

/// What the cashier page of one payment shows the payer.
#[derive(Debug, Clone)]
pub struct Cashier {
    /// The payment as the API shows it (its latest attempt's action is what the payer acts on).
    pub payment: Payment,
    /// The channels the merchant has an account at, in the payment's mode: the payer's choices.
    pub channels: Vec<ChannelKind>,
}

impl Engine {
    /// The cashier of a payment, by its id alone: the page a payer is sent to (`/pay/{id}`).
    /// The id is the page's only key: an unguessable random value, shown only to the merchant.
    pub async fn cashier(&self, payment_id: &str) -> Result<Cashier, EngineError> {
        let p = self.cashier_payment(payment_id).await?;
        let mut channels: Vec<ChannelKind> = self
            .store
            .channel_accounts(p.merchant_id)
            .await?
            .into_iter()
            .filter(|a| a.livemode == p.livemode)
            .map(|a| a.channel)
            .collect();
        channels.sort();
        channels.dedup();
        Ok(Cashier { payment: self.payment_object(&p).await?, channels })
    }

    /// The payer picked `channel` at the cashier: the payment's attempt at that channel if it
    /// is the one the payment shows and still open, or a new QR code attempt there, made by
    /// the same call as `POST /v1/payments/{id}/attempts`. Returns the payment after.
    pub async fn cashier_pick(
        &self,
        payment_id: &str,
        channel: &str,
    ) -> Result<Payment, EngineError> {
        let p = self.cashier_payment(payment_id).await?;
        let caller = Caller { merchant: p.merchant_id, livemode: p.livemode };
        let attempts = self.store.attempts(p.id).await?;
        let shown = attempts.iter().find(|a| a.channel_order_no == p.channel_order_no);
        if let Some(a) = shown
            && a.channel.as_str() == channel
            && a.status == AttemptStatus::Pending
            && a.action.is_some()
        {
            return Ok(Payment::new(&p, &attempts));
        }
        let request = CreateAttemptRequest {
            channel: Some(channel.to_owned()),
            method: Some(PaymentMethod::Qr.as_str().to_owned()),
            ..Default::default()
        };
        Ok(self.create_attempt(caller, payment_id, request, None).await?.object)
    }

    async fn cashier_payment(&self, payment_id: &str) -> Result<PaymentRecord, EngineError> {
        let not_found = || EngineError::NotFound { what: "payment" };
        let id: PaymentId = payment_id.parse().map_err(|_| not_found())?;
        self.store.payment_by_id(id).await?.ok_or_else(not_found)
    }
}

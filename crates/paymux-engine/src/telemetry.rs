//! What the engine counts and measures, through the `metrics` facade: whoever installs a recorder
//! (the gateway installs a Prometheus one) sees it; with none installed, every call is a no-op.
//!
//! Every label has a bounded set of values (a channel, a method, a status, an outcome); no id or
//! order number is ever a label. `docs/metrics.md` says what each series means.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use metrics::{counter, gauge, histogram};
use paymux_core::{
    BarcodeCancel, BarcodePaid, BarcodeSchedule, Channel, ChannelError, ChannelKind,
    ChannelPayment, ChannelRefund, CreatePayment, CreatedPayment, InboundRequest, Notification,
    NotificationAck, PaymentMethod, PaymentRef, PaymentStatus, ReceiverAccount, RefundRequest,
    ReleaseRequest, Released, ShareRequest, ShareResult,
};
use paymux_store::AttemptRecord;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::engine::Engine;

pub const CHANNEL_REQUESTS: &str = "paymux_channel_requests_total";
pub const CHANNEL_REQUEST_DURATION: &str = "paymux_channel_request_duration_seconds";
pub const PAYMENTS: &str = "paymux_payments_total";
pub const NOTIFICATIONS: &str = "paymux_notifications_total";
pub const NOTIFICATION_LAG: &str = "paymux_notification_lag_seconds";
pub const WEBHOOK_DELIVERIES: &str = "paymux_webhook_deliveries_total";
pub const OUTBOX_BACKLOG: &str = "paymux_outbox_undelivered";
pub const OUTBOX_OLDEST_AGE: &str = "paymux_outbox_oldest_undelivered_age_seconds";
pub const SWEEPER_DUE: &str = "paymux_sweeper_due";
pub const ANOMALIES: &str = "paymux_anomalies_total";

/// The anomalies an operator must look at; each is also logged with `alert = <its name>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anomaly {
    /// A verified payment arrived for a payment already closed or failed.
    PaidAfterClose,
    /// A second attempt of one payment was paid after another had won.
    DuplicatePaid,
    /// A refund that succeeded after all took the payment's refunds past its amount.
    OverRefunded,
    /// A channel reported another amount than the payment's or refund's.
    AmountMismatch,
}

impl Anomaly {
    const ALL: [Anomaly; 4] = [
        Anomaly::PaidAfterClose,
        Anomaly::DuplicatePaid,
        Anomaly::OverRefunded,
        Anomaly::AmountMismatch,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Anomaly::PaidAfterClose => "paid_after_close",
            Anomaly::DuplicatePaid => "duplicate_paid",
            Anomaly::OverRefunded => "over_refunded",
            Anomaly::AmountMismatch => "amount_mismatch",
        }
    }
}

/// Describes every series the engine writes, and shows each anomaly at zero, so a dashboard
/// and an alert rule find them before the first one happens. Call once the recorder is installed.
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(CHANNEL_REQUESTS, "Calls to a channel's API, by operation and outcome.");
    describe_histogram!(
        CHANNEL_REQUEST_DURATION,
        Unit::Seconds,
        "How long a call to a channel's API took."
    );
    describe_counter!(PAYMENTS, "Payments that reached a final status (each transition once).");
    describe_counter!(NOTIFICATIONS, "Channel notifications received, by what became of them.");
    describe_histogram!(
        NOTIFICATION_LAG,
        Unit::Seconds,
        "From a payment's creation to the notification that settled it."
    );
    describe_counter!(WEBHOOK_DELIVERIES, "Tries at delivering an event to a merchant endpoint.");
    describe_gauge!(OUTBOX_BACKLOG, "Webhook deliveries not made yet.");
    describe_gauge!(
        OUTBOX_OLDEST_AGE,
        Unit::Seconds,
        "Age of the oldest event with a delivery not made yet (0 when none)."
    );
    describe_gauge!(SWEEPER_DUE, "Payments and refunds due for a sweeper check.");
    describe_counter!(ANOMALIES, "Anomalies an operator must look at, by type.");
    for a in Anomaly::ALL {
        counter!(ANOMALIES, "type" => a.as_str()).increment(0);
    }
}

/// Counts one anomaly.
pub(crate) fn anomaly(a: Anomaly) {
    counter!(ANOMALIES, "type" => a.as_str()).increment(1);
}

/// Counts a payment that reached a final status (every transition leaves pending, or ends a
/// closed or failed payment that was paid after all). Called only where the store's
/// compare-and-set applied the transition, so each transition is counted once, whoever learned
/// of it.
pub(crate) fn payment_final(through: &AttemptRecord, to: PaymentStatus) {
    counter!(
        PAYMENTS,
        "channel" => through.channel.as_str(),
        "method" => through.method.as_str(),
        "status" => to.as_str(),
    )
    .increment(1);
}

/// What became of one channel notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotificationResult {
    /// It changed a payment or refund.
    Applied,
    /// A re-send, or news we already had: acknowledged, nothing changed.
    Duplicate,
    /// Not authentic, not ours, contradicting what we hold, or not recorded: not acknowledged.
    Refused,
}

pub(crate) fn notification(channel: ChannelKind, result: NotificationResult) {
    let result = match result {
        NotificationResult::Applied => "applied",
        NotificationResult::Duplicate => "duplicate",
        NotificationResult::Refused => "refused",
    };
    counter!(NOTIFICATIONS, "channel" => channel.as_str(), "result" => result).increment(1);
}

/// The lag from `p`'s creation to the notification that settled it.
pub(crate) fn notification_lag(a: &AttemptRecord) {
    let lag = (OffsetDateTime::now_utc() - a.created_at).as_seconds_f64().max(0.0);
    histogram!(NOTIFICATION_LAG, "channel" => a.channel.as_str()).record(lag);
}

/// What became of one try at a webhook delivery.
pub(crate) fn webhook_delivery(result: &'static str) {
    counter!(WEBHOOK_DELIVERIES, "result" => result).increment(1);
}

/// An adapter that measures every call the engine makes to its channel, around the adapter the
/// registry built: the channel crates know nothing of metrics.
#[derive(Debug)]
pub(crate) struct Metered(pub(crate) Arc<dyn Channel>);

impl Metered {
    async fn measure<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, ChannelError>>,
    ) -> Result<T, ChannelError> {
        let started = Instant::now();
        let result = call.await;
        let channel = self.0.kind().as_str();
        let outcome = match &result {
            Ok(_) => "ok",
            Err(ChannelError::Declined { .. }) => "declined",
            Err(ChannelError::Invalid { .. }) => "invalid",
            // An answer that does not verify is an unknown outcome for a call (see ChannelError).
            Err(ChannelError::Unknown { .. } | ChannelError::Unverified { .. }) => "unknown",
        };
        histogram!(CHANNEL_REQUEST_DURATION, "channel" => channel, "operation" => operation)
            .record(started.elapsed().as_secs_f64());
        counter!(CHANNEL_REQUESTS, "channel" => channel, "operation" => operation, "outcome" => outcome)
            .increment(1);
        result
    }
}

#[async_trait]
impl Channel for Metered {
    fn kind(&self) -> ChannelKind {
        self.0.kind()
    }

    fn supports(&self, method: PaymentMethod) -> bool {
        self.0.supports(method)
    }

    async fn create(&self, req: &CreatePayment) -> Result<CreatedPayment, ChannelError> {
        self.measure("create", self.0.create(req)).await
    }

    async fn query(&self, payment: &PaymentRef) -> Result<ChannelPayment, ChannelError> {
        self.measure("query", self.0.query(payment)).await
    }

    fn payable_until(&self, payment: &PaymentRef) -> OffsetDateTime {
        self.0.payable_until(payment)
    }

    async fn close(&self, payment: &PaymentRef) -> Result<(), ChannelError> {
        self.measure("close", self.0.close(payment)).await
    }

    async fn refund(&self, req: &RefundRequest) -> Result<ChannelRefund, ChannelError> {
        self.measure("refund", self.0.refund(req)).await
    }

    async fn query_refund(&self, req: &RefundRequest) -> Result<ChannelRefund, ChannelError> {
        self.measure("query_refund", self.0.query_refund(req)).await
    }

    async fn parse_notification(&self, req: &InboundRequest) -> Result<Notification, ChannelError> {
        // Local work, no call to the channel: counted as a notification, not a request.
        self.0.parse_notification(req).await
    }

    fn ack(&self, accepted: bool) -> NotificationAck {
        self.0.ack(accepted)
    }

    fn check_auth_code(&self, auth_code: &str) -> Result<(), String> {
        self.0.check_auth_code(auth_code)
    }

    fn barcode_schedule(&self) -> Option<BarcodeSchedule> {
        self.0.barcode_schedule()
    }

    async fn pay_barcode(&self, req: &CreatePayment) -> Result<BarcodePaid, ChannelError> {
        self.measure("barcode_pay", self.0.pay_barcode(req)).await
    }

    async fn cancel_barcode(&self, payment: &PaymentRef) -> Result<BarcodeCancel, ChannelError> {
        self.measure("barcode_cancel", self.0.cancel_barcode(payment)).await
    }

    fn holds_funds(&self) -> bool {
        self.0.holds_funds()
    }

    fn max_share_bps(&self) -> u32 {
        self.0.max_share_bps()
    }

    async fn add_receiver(&self, receiver: &ReceiverAccount) -> Result<(), ChannelError> {
        self.measure("add_receiver", self.0.add_receiver(receiver)).await
    }

    async fn share(&self, req: &ShareRequest) -> Result<ShareResult, ChannelError> {
        self.measure("share", self.0.share(req)).await
    }

    async fn query_share(&self, req: &ShareRequest) -> Result<ShareResult, ChannelError> {
        self.measure("query_share", self.0.query_share(req)).await
    }

    async fn release(&self, req: &ReleaseRequest) -> Result<Released, ChannelError> {
        self.measure("release", self.0.release(req)).await
    }
}

/// Refreshes the backlog gauges from the store every `every` until `stop` is cancelled: several
/// gateway instances on one database each report the same shared backlog.
pub async fn run_gauges(state: Engine, every: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        refresh_gauges(&state).await;
    }
}

/// Reads the backlogs once and sets their gauges; a store that does not answer leaves them as
/// they were.
pub async fn refresh_gauges(state: &Engine) {
    let now = OffsetDateTime::now_utc();
    match state.store.outbox_backlog().await {
        Ok(b) => {
            gauge!(OUTBOX_BACKLOG).set(b.undelivered as f64);
            let age = b.oldest_undelivered_at.map_or(0.0, |at| (now - at).as_seconds_f64());
            gauge!(OUTBOX_OLDEST_AGE).set(age.max(0.0));
        }
        Err(e) => tracing::warn!(error = %e, "could not read the outbox backlog"),
    }
    match state.store.sweeper_backlog(now).await {
        Ok(b) => {
            gauge!(SWEEPER_DUE, "kind" => "payment").set(b.payments_due as f64);
            gauge!(SWEEPER_DUE, "kind" => "refund").set(b.refunds_due as f64);
        }
        Err(e) => tracing::warn!(error = %e, "could not read the sweeper backlog"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A channel that only says what it holds; every call is refused.
    #[derive(Debug)]
    struct Holding;

    #[async_trait]
    impl Channel for Holding {
        fn kind(&self) -> ChannelKind {
            ChannelKind::Wechat
        }
        fn supports(&self, _: PaymentMethod) -> bool {
            true
        }
        async fn create(&self, _: &CreatePayment) -> Result<CreatedPayment, ChannelError> {
            Err(ChannelError::invalid("test"))
        }
        async fn query(&self, _: &PaymentRef) -> Result<ChannelPayment, ChannelError> {
            Err(ChannelError::invalid("test"))
        }
        async fn close(&self, _: &PaymentRef) -> Result<(), ChannelError> {
            Err(ChannelError::invalid("test"))
        }
        async fn refund(&self, _: &RefundRequest) -> Result<ChannelRefund, ChannelError> {
            Err(ChannelError::invalid("test"))
        }
        async fn query_refund(&self, _: &RefundRequest) -> Result<ChannelRefund, ChannelError> {
            Err(ChannelError::invalid("test"))
        }
        async fn parse_notification(
            &self,
            _: &InboundRequest,
        ) -> Result<Notification, ChannelError> {
            Err(ChannelError::invalid("test"))
        }
        fn ack(&self, _: bool) -> NotificationAck {
            NotificationAck { status: 200, content_type: "text/plain", body: Vec::new() }
        }
        fn holds_funds(&self) -> bool {
            true
        }
        fn max_share_bps(&self) -> u32 {
            1_234
        }
        async fn add_receiver(&self, _: &ReceiverAccount) -> Result<(), ChannelError> {
            Ok(())
        }
        async fn release(&self, _: &ReleaseRequest) -> Result<Released, ChannelError> {
            Ok(Released::Done)
        }
    }

    /// The metering wrapper passes the profit-sharing answers through instead of the trait's
    /// defaults (which would make every held payment a paymux-side hold).
    #[tokio::test]
    async fn metering_keeps_what_the_channel_says_about_holding_funds() {
        let metered = Metered(Arc::new(Holding));
        assert!(metered.holds_funds());
        assert_eq!(metered.max_share_bps(), 1_234);
        let who = ReceiverAccount {
            kind: "MERCHANT_ID".into(),
            account: "1900000109".into(),
            name: None,
            relation_type: None,
        };
        assert_eq!(metered.add_receiver(&who).await, Ok(()));
    }
}

//! What the admin page shows: payments across merchants, one payment's whole story on one
//! timeline, and success rates and failure reasons per channel.

use std::time::Duration;

use paymux_core::{ChannelKind, EventId, PaymentId, PaymentMethod, PaymentStatus};
use paymux_store::{
    AdminPaymentFilter, AttemptRecord, DeliveryRecord, EventRecord, FailureReason, PaymentRecord,
    RefundFilter, RefundRecord,
};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

use super::mask::mask_notification;
use crate::engine::Engine;
use crate::error::EngineError;

/// Payments on one page of the list.
pub const PAGE_SIZE: u32 = 50;

/// The list's filters as the page's form sends them: every field optional, empty means unset.
#[derive(Debug, Clone, Default)]
pub struct AdminPaymentQuery {
    pub status: Option<String>,
    pub channel: Option<String>,
    pub method: Option<String>,
    pub merchant_order_no: Option<String>,
    /// Created at or after: RFC 3339, or `YYYY-MM-DDTHH:MM[:SS]` / `YYYY-MM-DD` in UTC.
    pub from: Option<String>,
    /// Created before, the same forms.
    pub to: Option<String>,
    /// The next page: payments created before this one.
    pub before: Option<String>,
}

/// One page of payments, and where the next one starts.
#[derive(Debug, Clone)]
pub struct AdminPage {
    pub payments: Vec<PaymentRecord>,
    pub next: Option<PaymentId>,
}

fn invalid(field: &'static str, message: impl Into<String>) -> EngineError {
    EngineError::InvalidInput { field, message: message.into() }
}

/// A value a form left empty is not set.
fn given(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// A time from a form, UTC unless it says otherwise.
pub fn parse_time(field: &'static str, text: &str) -> Result<OffsetDateTime, EngineError> {
    if let Ok(t) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(t);
    }
    let minutes = format_description!("[year]-[month]-[day]T[hour]:[minute]");
    let seconds = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    if let Ok(t) = time::PrimitiveDateTime::parse(text, &seconds)
        .or_else(|_| time::PrimitiveDateTime::parse(text, &minutes))
    {
        return Ok(t.assume_utc());
    }
    if let Ok(d) = time::Date::parse(text, format_description!("[year]-[month]-[day]")) {
        return Ok(d.midnight().assume_utc());
    }
    Err(invalid(field, format!("{field} must be a time like 2026-11-29T21:30 (UTC) or RFC 3339")))
}

fn parse_filter(q: &AdminPaymentQuery) -> Result<AdminPaymentFilter, EngineError> {
    Ok(AdminPaymentFilter {
        status: given(&q.status)
            .map(|s| s.parse::<PaymentStatus>().map_err(|_| invalid("status", "unknown status")))
            .transpose()?,
        channel: given(&q.channel)
            .map(|s| s.parse::<ChannelKind>().map_err(|_| invalid("channel", "unknown channel")))
            .transpose()?,
        method: given(&q.method)
            .map(|s| s.parse::<PaymentMethod>().map_err(|e| invalid("method", e)))
            .transpose()?,
        merchant_order_no: given(&q.merchant_order_no).map(str::to_owned),
        created_from: given(&q.from).map(|t| parse_time("from", t)).transpose()?,
        created_to: given(&q.to).map(|t| parse_time("to", t)).transpose()?,
        before: given(&q.before)
            .map(|s| s.parse::<PaymentId>().map_err(|_| invalid("before", "not a payment id")))
            .transpose()?,
        // One more than a page, to know whether there is a next one.
        limit: PAGE_SIZE + 1,
    })
}

/// What a timeline entry is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimelineKind {
    Payment,
    Attempt,
    Refund,
    Event,
    Delivery,
    Notification,
    Operator,
}

impl TimelineKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TimelineKind::Payment => "payment",
            TimelineKind::Attempt => "attempt",
            TimelineKind::Refund => "refund",
            TimelineKind::Event => "event",
            TimelineKind::Delivery => "webhook",
            TimelineKind::Notification => "notification",
            TimelineKind::Operator => "operator",
        }
    }
}

/// One thing that happened to a payment.
#[derive(Debug, Clone)]
pub struct TimelineEntry {
    pub at: OffsetDateTime,
    pub kind: TimelineKind,
    pub title: String,
    /// Whether it went wrong (a failed delivery, a refused notification, a failed action).
    pub bad: bool,
    pub details: Vec<(String, String)>,
    /// The event an operator may redeliver from this entry.
    pub redeliver: Option<EventId>,
}

impl TimelineEntry {
    fn new(at: OffsetDateTime, kind: TimelineKind, title: impl Into<String>) -> Self {
        Self { at, kind, title: title.into(), bad: false, details: Vec::new(), redeliver: None }
    }

    fn detail(mut self, name: &str, value: impl ToString) -> Self {
        self.details.push((name.to_owned(), value.to_string()));
        self
    }
}

/// A payment with everything that happened to it.
#[derive(Debug, Clone)]
pub struct PaymentDetail {
    pub payment: PaymentRecord,
    /// Today a payment has one channel order: its first attempt.
    pub attempts: Vec<AttemptRecord>,
    pub refunds: Vec<RefundRecord>,
    pub events: Vec<(EventRecord, Vec<DeliveryRecord>)>,
    /// All of it, ordered by time.
    pub timeline: Vec<TimelineEntry>,
}

/// The ranges the success-rate chart offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatsRange {
    Hour,
    Day,
    Week,
    Month,
}

impl StatsRange {
    pub const ALL: [StatsRange; 4] =
        [StatsRange::Hour, StatsRange::Day, StatsRange::Week, StatsRange::Month];

    pub fn as_str(self) -> &'static str {
        match self {
            StatsRange::Hour => "1h",
            StatsRange::Day => "24h",
            StatsRange::Week => "7d",
            StatsRange::Month => "30d",
        }
    }

    pub fn parse(text: Option<&str>) -> Result<Self, EngineError> {
        match text.map(str::trim).filter(|s| !s.is_empty()) {
            None => Ok(StatsRange::Day),
            Some(t) => Self::ALL
                .into_iter()
                .find(|r| r.as_str() == t)
                .ok_or_else(|| invalid("range", "range must be 1h, 24h, 7d or 30d")),
        }
    }

    fn length(self) -> Duration {
        Duration::from_secs(match self {
            StatsRange::Hour => 3600,
            StatsRange::Day => 24 * 3600,
            StatsRange::Week => 7 * 24 * 3600,
            StatsRange::Month => 30 * 24 * 3600,
        })
    }
}

/// Buckets on the chart's time axis.
pub const BUCKETS: usize = 12;

/// One channel's payments in the range: created and succeeded, per bucket and in all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelStats {
    pub channel: ChannelKind,
    /// `(succeeded, created)` per bucket, oldest first.
    pub buckets: Vec<(u64, u64)>,
    pub succeeded: u64,
    pub created: u64,
}

/// Success rates per channel over a range, and its commonest failures.
#[derive(Debug, Clone)]
pub struct Stats {
    pub range: StatsRange,
    pub from: OffsetDateTime,
    pub to: OffsetDateTime,
    pub bucket: Duration,
    /// Every channel, those with no payment in the range too.
    pub channels: Vec<ChannelStats>,
    pub failures: Vec<FailureReason>,
}

impl Engine {
    /// Payments of every merchant and mode, newest first, filtered.
    pub async fn admin_payments(&self, q: &AdminPaymentQuery) -> Result<AdminPage, EngineError> {
        let filter = parse_filter(q)?;
        let mut payments = self.store.admin_payments(&filter).await?;
        let next = if payments.len() > PAGE_SIZE as usize {
            payments.truncate(PAGE_SIZE as usize);
            payments.last().map(|p| p.id)
        } else {
            None
        };
        Ok(AdminPage { payments, next })
    }

    /// A payment's refunds, newest first.
    pub(crate) async fn payment_refunds(
        &self,
        p: &PaymentRecord,
    ) -> Result<Vec<RefundRecord>, EngineError> {
        let filter = RefundFilter {
            livemode: p.livemode,
            payment_id: Some(p.id),
            limit: 100,
            ..RefundFilter::default()
        };
        Ok(self.store.list_refunds(p.merchant_id, &filter).await?)
    }

    /// A payment of any merchant, with its attempts, refunds, events, their webhook deliveries,
    /// the channel's notifications (masked) and what operators did, on one timeline.
    pub async fn payment_detail(&self, id: &str) -> Result<PaymentDetail, EngineError> {
        let not_found = || EngineError::NotFound { what: "payment" };
        let id: PaymentId = id.parse().map_err(|_| not_found())?;
        let payment = self.store.payment_by_id(id).await?.ok_or_else(not_found)?;
        let attempts: Vec<AttemptRecord> = self.store.attempts(id).await?;
        let refunds = self.payment_refunds(&payment).await?;
        let mut events = Vec::new();
        let objects =
            std::iter::once(id.to_string()).chain(refunds.iter().map(|r| r.id.to_string()));
        for object in objects {
            for e in self.store.object_events(&object).await? {
                let deliveries = self.store.deliveries_for_event(payment.merchant_id, e.id).await?;
                events.push((e, deliveries));
            }
        }
        let notifications = self.store.inbound_for_payment(id).await?;
        let actions = self.store.operator_actions(id).await?;

        let p = &payment;
        let mut timeline = vec![
            TimelineEntry::new(p.created_at, TimelineKind::Payment, "payment created")
                .detail("merchant", p.merchant_id)
                .detail("merchant_order_no", &p.merchant_order_no)
                .detail("amount", p.amount)
                .detail("mode", if p.livemode { "live" } else { "test" }),
        ];
        for (i, a) in attempts.iter().enumerate() {
            let mut entry = TimelineEntry::new(
                a.created_at,
                TimelineKind::Attempt,
                format!("attempt {} at {}", i + 1, a.channel),
            )
            .detail("channel_order_no", &a.channel_order_no)
            .detail("status", p.status);
            if let Some(t) = &p.channel_trade_no {
                entry = entry.detail("channel_trade_no", t);
            }
            if let Some(code) = &p.failure_code {
                entry.bad = true;
                entry = entry
                    .detail("failure_code", code)
                    .detail("failure_message", p.failure_message.as_deref().unwrap_or(""));
            }
            timeline.push(entry);
        }
        for r in &refunds {
            let mut entry = TimelineEntry::new(
                r.created_at,
                TimelineKind::Refund,
                format!("refund {} of {}", r.id, r.amount),
            )
            .detail("status", r.status)
            .detail("merchant_refund_no", &r.merchant_refund_no);
            if let Some(code) = &r.failure_code {
                entry.bad = true;
                entry = entry.detail("failure_code", code);
            }
            timeline.push(entry);
        }
        for (e, deliveries) in &events {
            let mut entry = TimelineEntry::new(e.created_at, TimelineKind::Event, e.kind.as_str())
                .detail("event", e.id);
            if !deliveries.is_empty() {
                entry.redeliver = Some(e.id);
            }
            for d in deliveries {
                entry = entry.detail(&format!("delivery to {}", d.url), &d.status);
                entry.bad |= d.status == "failed";
                for attempt in &d.attempts {
                    let mut t = TimelineEntry::new(
                        attempt.at,
                        TimelineKind::Delivery,
                        format!("{} to {}", e.kind.as_str(), d.url),
                    )
                    .detail("event", e.id);
                    let ok = attempt.status_code.is_some_and(|c| (200..300).contains(&c));
                    t.bad = !ok;
                    t = match (attempt.status_code, &attempt.error) {
                        (Some(code), _) => t.detail("answer", format!("HTTP {code}")),
                        (None, Some(err)) => t.detail("error", err),
                        (None, None) => t.detail("answer", "none"),
                    };
                    timeline.push(t.detail("latency", format!("{} ms", attempt.latency_ms)));
                }
                if d.status == "failed" {
                    let mut t = TimelineEntry::new(
                        d.attempts.last().map_or(e.created_at, |a| a.at),
                        TimelineKind::Delivery,
                        format!("{} to {} gave up: failed", e.kind.as_str(), d.url),
                    );
                    t.bad = true;
                    t.redeliver = Some(e.id);
                    timeline.push(t.detail("event", e.id));
                }
            }
            timeline.push(entry);
        }
        for n in &notifications {
            let masked = mask_notification(&n.headers, &n.body);
            let outcome = n.outcome.as_deref().unwrap_or("not processed");
            let mut entry = TimelineEntry::new(
                n.received_at,
                TimelineKind::Notification,
                format!("{} notification: {outcome}", n.channel),
            );
            entry.bad = !matches!(outcome, "applied" | "unchanged");
            if let Some(id) = &n.notify_id {
                entry = entry.detail("notify_id", id);
            }
            for (k, v) in masked.headers {
                entry = entry.detail(&format!("header {k}"), v);
            }
            for (k, v) in masked.fields {
                entry = entry.detail(&k, v);
            }
            timeline.push(entry);
        }
        for a in &actions {
            let mut entry = TimelineEntry::new(
                a.at,
                TimelineKind::Operator,
                format!("operator.action {}: {}", a.action, a.outcome),
            )
            .detail("operator", &a.token_id)
            .detail("result", &a.detail);
            if let Some(target) = &a.target {
                entry = entry.detail("target", target);
            }
            entry.bad = a.outcome != "ok";
            timeline.push(entry);
        }
        // Stable: what was pushed first comes first at the same millisecond.
        timeline.sort_by_key(|e| e.at);
        Ok(PaymentDetail { payment, attempts, refunds, events, timeline })
    }

    /// Success rate per channel over `range` up to now (succeeded out of created, by creation
    /// time), in [`BUCKETS`] buckets, and the commonest failure codes of the range.
    pub async fn payment_stats(&self, range: StatsRange) -> Result<Stats, EngineError> {
        let to = OffsetDateTime::now_utc();
        let length = range.length();
        let from = to - length;
        let bucket = length / BUCKETS as u32;
        let bucket_ms = i64::try_from(bucket.as_millis()).unwrap_or(i64::MAX);
        let counts = self.store.payment_outcomes(from, to, bucket_ms).await?;
        let mut channels: Vec<ChannelStats> = ChannelKind::ALL
            .into_iter()
            .map(|channel| ChannelStats {
                channel,
                buckets: vec![(0, 0); BUCKETS],
                succeeded: 0,
                created: 0,
            })
            .collect();
        for c in counts {
            let Some(stats) = channels.iter_mut().find(|s| s.channel == c.channel) else {
                continue;
            };
            let i = usize::try_from(c.bucket).unwrap_or(0).min(BUCKETS - 1);
            let ok = if c.status == PaymentStatus::Succeeded { c.count } else { 0 };
            stats.buckets[i].0 += ok;
            stats.buckets[i].1 += c.count;
            stats.succeeded += ok;
            stats.created += c.count;
        }
        let failures = self.store.failure_reasons(from, to, 10).await?;
        Ok(Stats { range, from, to, bucket, channels, failures })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_times_are_utc_unless_they_say_otherwise() {
        let t = parse_time("from", "2026-11-29T21:30").unwrap();
        assert_eq!(t.unix_timestamp(), 1_795_987_800);
        assert_eq!(parse_time("from", "2026-11-29T21:30:00").unwrap(), t);
        assert_eq!(parse_time("from", "2026-11-30T05:30:00+08:00").unwrap(), t);
        assert_eq!(parse_time("from", "2026-11-29").unwrap().unix_timestamp(), 1_795_910_400);
        assert!(matches!(
            parse_time("from", "yesterday"),
            Err(EngineError::InvalidInput { field: "from", .. })
        ));
    }

    #[test]
    fn empty_filters_are_unset_and_bad_ones_name_their_field() {
        let q = AdminPaymentQuery {
            status: Some(String::new()),
            channel: Some("alipay".into()),
            merchant_order_no: Some("  ".into()),
            ..Default::default()
        };
        let f = parse_filter(&q).unwrap();
        assert_eq!(
            (f.status, f.channel, f.merchant_order_no),
            (None, Some(ChannelKind::Alipay), None)
        );
        for (q, field) in [
            (AdminPaymentQuery { status: Some("paid".into()), ..Default::default() }, "status"),
            (AdminPaymentQuery { method: Some("cash".into()), ..Default::default() }, "method"),
            (AdminPaymentQuery { before: Some("x".into()), ..Default::default() }, "before"),
        ] {
            match parse_filter(&q) {
                Err(EngineError::InvalidInput { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }
}

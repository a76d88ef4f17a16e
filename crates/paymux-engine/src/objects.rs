//! The API's objects, as typed values: each is what a merchant reads in an answer and what an
//! event carries in `data.object` when it changes. One type renders both, so an event's payload is
//! exactly the object the API would have shown at that moment.

use paymux_store::{
    AttemptRecord, DeliveryRecord, EventRecord, PaymentRecord, RefundRecord, WebhookEndpointRecord,
};
use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::ToSchema;

pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// Why a payment or refund failed, as the channel put it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Failure {
    pub code: String,
    pub message: Option<String>,
}

fn failure(code: &Option<String>, message: &Option<String>) -> Option<Failure> {
    code.as_ref().map(|code| Failure { code: code.clone(), message: message.clone() })
}

/// A payment as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Payment {
    pub id: String,
    /// Always `"payment"`.
    #[schema(schema_with = crate::schema::payment_object)]
    pub object: &'static str,
    pub merchant_order_no: String,
    /// In minor units (fen).
    pub amount: i64,
    #[schema(schema_with = crate::schema::currency)]
    pub currency: &'static str,
    pub subject: String,
    #[schema(schema_with = crate::schema::payment_status)]
    pub status: &'static str,
    #[schema(schema_with = crate::schema::channel)]
    pub channel: &'static str,
    #[schema(schema_with = crate::schema::method)]
    pub method: &'static str,
    pub channel_order_no: String,
    pub channel_trade_no: Option<String>,
    /// What the payer does next (a QR code, a form, a redirect, parameters for a client SDK).
    #[schema(schema_with = crate::schema::action_or_null)]
    pub action: Option<Value>,
    pub amount_refunded: i64,
    pub expires_at: String,
    pub paid_at: Option<String>,
    pub created_at: String,
    /// The merchant's own key-value data, as given at creation.
    #[schema(value_type = Object)]
    pub metadata: Value,
    pub livemode: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    /// Every try at a channel to pay it, oldest first. The payment's `channel`, `method`,
    /// `channel_order_no` and `action` are its latest attempt's, or the one it succeeded with.
    pub attempts: Vec<Attempt>,
    /// A held payment's settlement (`settlement.hold` at create); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settlement: Option<crate::settlement::Settlement>,
}

/// One try at one channel to pay a payment, with its own channel order number.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Attempt {
    pub id: String,
    #[schema(schema_with = crate::schema::channel)]
    pub channel: &'static str,
    #[schema(schema_with = crate::schema::method)]
    pub method: &'static str,
    pub channel_order_no: String,
    /// `succeeded`: the payment succeeded with it. `duplicate_paid`: paid after another attempt
    /// had won; its money is refunded by a refund of its own (`attempt_id`).
    #[schema(schema_with = crate::schema::attempt_status)]
    pub status: &'static str,
    #[schema(schema_with = crate::schema::action_or_null)]
    pub action: Option<Value>,
    pub channel_trade_no: Option<String>,
    pub created_at: String,
}

impl From<&AttemptRecord> for Attempt {
    fn from(a: &AttemptRecord) -> Self {
        Self {
            id: a.id.to_string(),
            channel: a.channel.as_str(),
            method: a.method.as_str(),
            channel_order_no: a.channel_order_no.as_str().to_owned(),
            status: a.status.as_str(),
            action: a.action.clone(),
            channel_trade_no: a.channel_trade_no.clone(),
            created_at: rfc3339(a.created_at),
        }
    }
}

impl Payment {
    /// The payment with its attempts (all of them, as read with it).
    pub fn new(p: &PaymentRecord, attempts: &[AttemptRecord]) -> Self {
        Self {
            id: p.id.to_string(),
            object: "payment",
            merchant_order_no: p.merchant_order_no.clone(),
            amount: p.amount.minor(),
            currency: p.amount.currency().code(),
            subject: p.subject.clone(),
            status: p.status.as_str(),
            channel: p.channel.as_str(),
            method: p.method.as_str(),
            channel_order_no: p.channel_order_no.as_str().to_owned(),
            channel_trade_no: p.channel_trade_no.clone(),
            action: p.action.clone(),
            amount_refunded: p.amount_refunded,
            expires_at: rfc3339(p.expires_at),
            paid_at: p.paid_at.map(rfc3339),
            created_at: rfc3339(p.created_at),
            metadata: p.metadata.clone(),
            livemode: p.livemode,
            failure: failure(&p.failure_code, &p.failure_message),
            attempts: attempts.iter().map(Attempt::from).collect(),
            settlement: None,
        }
    }
}

/// A refund as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Refund {
    pub id: String,
    /// Always `"refund"`.
    #[schema(schema_with = crate::schema::refund_object)]
    pub object: &'static str,
    pub payment_id: String,
    pub merchant_refund_no: String,
    /// In minor units (fen).
    pub amount: i64,
    #[schema(schema_with = crate::schema::currency)]
    pub currency: &'static str,
    #[schema(schema_with = crate::schema::refund_status)]
    pub status: &'static str,
    pub channel_refund_no: String,
    pub channel_refund_id: Option<String>,
    pub reason: Option<String>,
    pub created_at: String,
    pub succeeded_at: Option<String>,
    pub livemode: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    /// Set on paymux's automatic refund of a duplicate payment: the attempt it returns in full
    /// (`reason` is `duplicate`). Such a refund is not the merchant's and never counts against
    /// the payment's `amount_refunded`.
    pub attempt_id: Option<String>,
}

impl From<&RefundRecord> for Refund {
    fn from(r: &RefundRecord) -> Self {
        Self {
            id: r.id.to_string(),
            object: "refund",
            payment_id: r.payment_id.to_string(),
            merchant_refund_no: r.merchant_refund_no.clone(),
            amount: r.amount.minor(),
            currency: r.amount.currency().code(),
            status: r.status.as_str(),
            channel_refund_no: r.channel_refund_no.as_str().to_owned(),
            channel_refund_id: r.channel_refund_id.clone(),
            reason: r.reason.clone(),
            created_at: rfc3339(r.created_at),
            succeeded_at: r.succeeded_at.map(rfc3339),
            livemode: r.livemode,
            failure: failure(&r.failure_code, &r.failure_message),
            attempt_id: r.attempt_id.map(|a| a.to_string()),
        }
    }
}

/// What an event carries: the object it is about, as it was when the event was written.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(untagged)]
pub enum EventObject {
    Payment(Payment),
    Refund(Refund),
}

impl EventObject {
    /// The payload as the store keeps it (events are immutable snapshots).
    pub fn to_value(&self) -> Value {
        // Serialising these plain structs cannot fail: every field is a string, number, bool or
        // an already-parsed JSON value, and no map has a non-string key. Were that ever broken,
        // failing loudly before the transaction beats writing an event with no payload.
        serde_json::to_value(self).expect("an API object always serialises to JSON")
    }
}

impl EventObject {
    /// A payment with its attempts.
    pub fn payment(p: &PaymentRecord, attempts: &[AttemptRecord]) -> Self {
        Self::Payment(Payment::new(p, attempts))
    }
}

impl From<&RefundRecord> for EventObject {
    fn from(r: &RefundRecord) -> Self {
        Self::Refund(r.into())
    }
}

/// `data` of an event.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct EventData {
    /// The payload as it was written: a [`Payment`] or a [`Refund`], kept as stored so an event
    /// reads the same however old it is.
    #[schema(value_type = EventObject)]
    pub object: Value,
}

/// An event as the API shows it and as webhooks deliver it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Event {
    pub id: String,
    /// Always `"event"`.
    #[schema(schema_with = crate::schema::event_object)]
    pub object: &'static str,
    #[serde(rename = "type")]
    #[schema(schema_with = crate::schema::event_type)]
    pub kind: &'static str,
    /// Unix seconds.
    pub created: i64,
    pub livemode: bool,
    pub data: EventData,
}

impl From<&EventRecord> for Event {
    fn from(e: &EventRecord) -> Self {
        Self {
            id: e.id.to_string(),
            object: "event",
            kind: e.kind.as_str(),
            created: e.created_at.unix_timestamp(),
            livemode: e.livemode,
            data: EventData { object: e.data.clone() },
        }
    }
}

/// A webhook endpoint; its secret only when it is shown (at creation and rotation).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct WebhookEndpoint {
    pub id: String,
    /// Always `"webhook_endpoint"`.
    #[schema(schema_with = crate::schema::webhook_endpoint_object)]
    pub object: &'static str,
    pub url: String,
    /// The event types it receives; `null` for all.
    #[schema(schema_with = crate::schema::event_types_or_null)]
    pub events: Option<Vec<&'static str>>,
    pub livemode: bool,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl WebhookEndpoint {
    pub fn new(ep: &WebhookEndpointRecord, with_secret: bool) -> Self {
        Self {
            id: ep.id.clone(),
            object: "webhook_endpoint",
            url: ep.url.clone(),
            events: ep.events.as_ref().map(|e| e.iter().map(|t| t.as_str()).collect()),
            livemode: ep.livemode,
            created_at: rfc3339(ep.created_at),
            secret: with_secret.then(|| ep.secret.clone()),
        }
    }
}

/// One try at delivering an event (never the answer's body).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct DeliveryAttempt {
    pub at: String,
    pub status_code: Option<u16>,
    pub latency_ms: i64,
    pub error: Option<String>,
}

/// One delivery of an event to one endpoint, with its attempts.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Delivery {
    pub id: String,
    pub endpoint_id: String,
    pub url: String,
    pub status: String,
    pub next_attempt_at: Option<String>,
    pub delivered_at: Option<String>,
    pub attempts: Vec<DeliveryAttempt>,
}

impl From<&DeliveryRecord> for Delivery {
    fn from(d: &DeliveryRecord) -> Self {
        Self {
            id: d.id.clone(),
            endpoint_id: d.endpoint_id.clone(),
            url: d.url.clone(),
            status: d.status.clone(),
            next_attempt_at: d.next_attempt_at.map(rfc3339),
            delivered_at: d.delivered_at.map(rfc3339),
            attempts: d
                .attempts
                .iter()
                .map(|a| DeliveryAttempt {
                    at: rfc3339(a.at),
                    status_code: a.status_code,
                    latency_ms: a.latency_ms,
                    error: a.error.clone(),
                })
                .collect(),
        }
    }
}

/// An event with its deliveries (`GET /v1/events/{id}`).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct EventWithDeliveries {
    #[serde(flatten)]
    pub event: Event,
    pub deliveries: Vec<Delivery>,
}

/// One page of a list, newest first for payments and refunds, oldest first for events.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Page<T> {
    /// Always `"list"`.
    #[schema(schema_with = crate::schema::list_object)]
    pub object: &'static str,
    pub data: Vec<T>,
    pub has_more: bool,
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    pub fn new(data: Vec<T>, has_more: bool, next_cursor: Option<String>) -> Self {
        Self { object: "list", data, has_more, next_cursor }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_payload_is_the_object_the_api_shows() {
        let p = crate::testdata::payment_record();
        let a = crate::testdata::attempt_record(&p);
        let api = serde_json::to_value(Payment::new(&p, std::slice::from_ref(&a)))
            .expect("payment serialises");
        assert_eq!(EventObject::payment(&p, std::slice::from_ref(&a)).to_value(), api);
        assert_eq!(api["object"], "payment");
        assert_eq!(api["amount"], 1234);
        assert!(api.get("failure").is_none(), "no failure key on a pending payment");
        assert_eq!(api["attempts"][0]["id"], a.id.to_string());
        assert_eq!(api["attempts"][0]["channel_order_no"], api["channel_order_no"]);
        assert_eq!(api["attempts"][0]["status"], "pending");
    }

    #[test]
    fn a_failed_payment_says_why() {
        let mut p = crate::testdata::payment_record();
        p.failure_code = Some("TRADE_CLOSED".into());
        p.failure_message = Some("closed".into());
        let v = serde_json::to_value(Payment::new(&p, &[])).expect("payment serialises");
        assert_eq!(v["failure"]["code"], "TRADE_CLOSED");
        assert_eq!(v["failure"]["message"], "closed");
    }
}

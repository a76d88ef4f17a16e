//! The API's objects, rendered from store rows.

use paymux_store::{
    DeliveryRecord, EventRecord, PaymentRecord, RefundRecord, WebhookEndpointRecord,
};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

fn opt_time(t: Option<OffsetDateTime>) -> Value {
    t.map(|t| Value::String(rfc3339(t))).unwrap_or(Value::Null)
}

pub fn payment(p: &PaymentRecord) -> Value {
    let mut v = json!({
        "id": p.id.to_string(),
        "object": "payment",
        "merchant_order_no": p.merchant_order_no,
        "amount": p.amount.minor(),
        "currency": p.amount.currency().code(),
        "subject": p.subject,
        "status": p.status.as_str(),
        "channel": p.channel.as_str(),
        "method": p.method.as_str(),
        "channel_order_no": p.channel_order_no.as_str(),
        "channel_trade_no": p.channel_trade_no,
        "action": p.action,
        "amount_refunded": p.amount_refunded,
        "expires_at": rfc3339(p.expires_at),
        "paid_at": opt_time(p.paid_at),
        "created_at": rfc3339(p.created_at),
        "metadata": p.metadata,
        "livemode": p.livemode,
    });
    if let Some(code) = &p.failure_code {
        v["failure"] = json!({"code": code, "message": p.failure_message});
    }
    v
}

pub fn refund(r: &RefundRecord) -> Value {
    let mut v = json!({
        "id": r.id.to_string(),
        "object": "refund",
        "payment_id": r.payment_id.to_string(),
        "merchant_refund_no": r.merchant_refund_no,
        "amount": r.amount.minor(),
        "currency": r.amount.currency().code(),
        "status": r.status.as_str(),
        "channel_refund_no": r.channel_refund_no.as_str(),
        "channel_refund_id": r.channel_refund_id,
        "reason": r.reason,
        "created_at": rfc3339(r.created_at),
        "succeeded_at": opt_time(r.succeeded_at),
        "livemode": r.livemode,
    });
    if let Some(code) = &r.failure_code {
        v["failure"] = json!({"code": code, "message": r.failure_message});
    }
    v
}

pub fn event(e: &EventRecord) -> Value {
    json!({
        "id": e.id.to_string(),
        "object": "event",
        "type": e.kind.as_str(),
        "created": e.created_at.unix_timestamp(),
        "livemode": e.livemode,
        "data": {"object": e.data},
    })
}

/// A webhook endpoint; its secret only when it is shown (at creation and rotation).
pub fn endpoint_object(ep: &WebhookEndpointRecord, with_secret: bool) -> Value {
    let mut v = json!({
        "id": ep.id,
        "object": "webhook_endpoint",
        "url": ep.url,
        "events": ep.events.as_ref().map(|e| e.iter().map(|t| t.as_str()).collect::<Vec<_>>()),
        "livemode": ep.livemode,
        "created_at": rfc3339(ep.created_at),
    });
    if with_secret {
        v["secret"] = json!(ep.secret);
    }
    v
}

/// One delivery of an event to one endpoint, with its attempts (never the answers' bodies).
pub fn delivery_object(d: &DeliveryRecord) -> Value {
    json!({
        "id": d.id,
        "endpoint_id": d.endpoint_id,
        "url": d.url,
        "status": d.status,
        "next_attempt_at": d.next_attempt_at.map(rfc3339),
        "delivered_at": d.delivered_at.map(rfc3339),
        "attempts": d.attempts.iter().map(|a| json!({
            "at": rfc3339(a.at),
            "status_code": a.status_code,
            "latency_ms": a.latency_ms,
            "error": a.error,
        })).collect::<Vec<_>>(),
    })
}

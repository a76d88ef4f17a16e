//! `POST /callbacks/{channel}/{account_id}`: the channels' asynchronous notifications.
//!
//! Verify, record durably, then acknowledge: the channel's success reply goes out only after the
//! state change and its event are committed. Anything not authentic, not ours, or not matching what
//! we hold changes nothing and gets the channel's failure reply, so the channel keeps the message.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use paymux_core::{AccountId, ChannelKind, InboundRequest, Notification, NotificationAck};
use paymux_store::{AccountRecord, InboundRecord};
use time::OffsetDateTime;

use paymux_engine::Engine;
use paymux_engine::{Applied, apply_payment, apply_refund};

fn reply(ack: NotificationAck) -> Response {
    let status = StatusCode::from_u16(ack.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [(header::CONTENT_TYPE, ack.content_type)], ack.body).into_response()
}

pub async fn receive(
    State(state): State<Engine>,
    Path((channel, account_id)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (Ok(channel), Ok(account_id)) =
        (channel.parse::<ChannelKind>(), account_id.parse::<AccountId>())
    else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let account = match state.store.channel_account(account_id).await {
        Ok(Some(a)) if a.channel == channel => a,
        Ok(_) => return StatusCode::NOT_FOUND.into_response(),
        Err(e) => {
            tracing::error!(error = %e, "store unavailable while receiving a notification");
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
    };
    let adapter = match state.channels.adapter(&account) {
        Ok(a) => a,
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    let inbound = InboundRequest {
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        headers: headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect(),
        body: body.to_vec(),
    };
    // Verify first: an unauthenticated POST costs no write (the account id in a notify URL is
    // no secret), and nothing changes because of it.
    let notification = match adapter.parse_notification(&inbound).await {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(%channel, account = %account_id, error = %e, "notification refused");
            return reply(adapter.ack(false));
        }
    };
    let notify_id = notification.notify_id().map(str::to_owned);
    if let Some(id) = &notify_id
        && matches!(state.store.inbound_already_applied(channel, account_id, id).await, Ok(true))
    {
        // A re-send of one already applied: acknowledge, change nothing.
        return reply(adapter.ack(true));
    }
    // The verified raw notification is logged before it is processed.
    let log_id = format!("in_{}", uuid::Uuid::now_v7().simple());
    let record = InboundRecord {
        id: log_id.clone(),
        channel,
        account_id,
        notify_id: notify_id.clone(),
        headers: inbound.headers,
        body: inbound.body,
        received_at: OffsetDateTime::now_utc(),
    };
    if let Err(e) = state.store.log_inbound(&record).await {
        // Not recorded, so not acknowledged: the channel will send it again.
        tracing::error!(error = %e, "could not record a verified notification");
        return reply(adapter.ack(false));
    }
    let outcome = process(&state, &account, &notification).await;
    let (accepted, note) = match &outcome {
        Ok(Applied::Changed) => (true, "applied".to_owned()),
        Ok(Applied::Unchanged) => (true, "unchanged".to_owned()),
        Ok(Applied::Mismatch(why)) => (false, format!("mismatch: {why}")),
        Err(why) => (false, why.clone()),
    };
    if let Err(e) = state.store.mark_inbound(&log_id, &note).await {
        tracing::warn!(error = %e, "could not mark the inbound notification processed");
    }
    if !accepted {
        tracing::error!(alert = "notification_rejected", %channel, account = %account_id, reason = %note, "notification not applied");
    }
    reply(adapter.ack(accepted))
}

/// Checks the notification against what we hold and applies it. `Err` carries why it was refused.
async fn process(
    state: &Engine,
    account: &AccountRecord,
    n: &Notification,
) -> Result<Applied, String> {
    let store = &*state.store;
    let attempt = store
        .attempt_by_channel_order_no(account.id, n.channel_order_no())
        .await
        .map_err(|e| format!("store: {e}"))?
        .ok_or_else(|| format!("unknown order {}", n.channel_order_no()))?;
    let payment = store
        .payment(account.merchant_id, attempt.payment_id)
        .await
        .map_err(|e| format!("store: {e}"))?
        .ok_or("payment gone")?;
    match n {
        Notification::Payment { state: report, .. } => {
            apply_payment(store, &payment, report).await.map_err(|e| format!("store: {e}"))
        }
        Notification::Refund { channel_refund_no, state: report, .. } => {
            let refund = store
                .refund_by_channel_refund_no(channel_refund_no)
                .await
                .map_err(|e| format!("store: {e}"))?
                .filter(|r| r.payment_id == payment.id)
                .ok_or_else(|| format!("unknown refund {channel_refund_no}"))?;
            apply_refund(store, &refund, report).await.map_err(|e| format!("store: {e}"))
        }
    }
}

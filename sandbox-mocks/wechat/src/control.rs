//! The `/_sandbox/` control API: act as the buyer or the channel, inspect orders, inject faults.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use time::OffsetDateTime;

use paymux_mock_kit::random_digits;

use crate::notify;
use crate::protocol::beijing_compact;
use crate::state::{Faults, OPERATIONS, OrderKey, RefundStatus, Shared, TradeState, lock, read};

type St = State<Arc<Shared>>;
type Params = Query<HashMap<String, String>>;

/// A control API refusal, in the same `{code, message}` shape as WeChat's errors.
#[derive(Debug)]
pub(crate) struct ControlError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ControlError {
    fn not_found(what: &str) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            code: "NOT_FOUND",
            message: format!("no order {what}"),
        }
    }

    fn conflict(message: String) -> Self {
        Self { status: StatusCode::CONFLICT, code: "INVALID_STATE", message }
    }

    fn bad(message: String) -> Self {
        Self { status: StatusCode::BAD_REQUEST, code: "PARAM_ERROR", message }
    }
}

impl IntoResponse for ControlError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({"code": self.code, "message": self.message}))).into_response()
    }
}

/// The order with this out_trade_no; `mchid` picks one when several merchants used the number.
pub(crate) fn find_order(
    shared: &Shared,
    out_trade_no: &str,
    mchid: Option<&str>,
) -> Result<OrderKey, ControlError> {
    let book = lock(&shared.book);
    let mut matches =
        book.orders.keys().filter(|(m, n)| n == out_trade_no && mchid.is_none_or(|want| want == m));
    let first = matches.next().cloned().ok_or_else(|| ControlError::not_found(out_trade_no))?;
    if matches.next().is_some() {
        return Err(ControlError::bad(format!(
            "several merchants have order {out_trade_no}: add ?mchid="
        )));
    }
    Ok(first)
}

fn view(shared: &Shared, key: &OrderKey) -> Result<Value, ControlError> {
    lock(&shared.book)
        .orders
        .get(key)
        .map(|o| o.view())
        .ok_or_else(|| ControlError::not_found(&key.1))
}

/// The buyer pays: SUCCESS, a transaction id, and TRANSACTION.SUCCESS is notified.
pub(crate) fn pay_order(shared: &Arc<Shared>, key: &OrderKey) -> Result<Value, ControlError> {
    let (url, transaction) = {
        let mut book = lock(&shared.book);
        let order = book.orders.get_mut(key).ok_or_else(|| ControlError::not_found(&key.1))?;
        // A barcode order waiting for its payer's password is USERPAYING.
        if !matches!(order.state, TradeState::Notpay | TradeState::Userpaying) {
            return Err(ControlError::conflict(format!(
                "order {} is {}, only NOTPAY or USERPAYING can be paid",
                key.1,
                order.state.as_str()
            )));
        }
        let now = OffsetDateTime::now_utc();
        order.state = TradeState::Success;
        order.success_time = Some(now);
        order.transaction_id = Some(format!(
            "4200{}{}{}",
            random_digits(6),
            &beijing_compact(now)[..8],
            random_digits(10)
        ));
        if order.payer_openid.is_none() {
            order.payer_openid = Some(format!("o{}", paymux_crypto::random_alphanumeric(27)));
        }
        (order.notify_url.clone(), order.transaction())
    };
    tracing::info!(mchid = %key.0, out_trade_no = %key.1, "order paid");
    // A barcode (codepay) order has no notify_url: WeChat sends no notification for it.
    if url.is_empty() {
        return view(shared, key);
    }
    notify::dispatch(
        shared,
        key,
        "TRANSACTION.SUCCESS",
        "支付成功",
        "transaction",
        url,
        &transaction,
    );
    view(shared, key)
}

/// Moves an unpaid order to a final state without a notification (WeChat sends none).
pub(crate) fn end_order(
    shared: &Shared,
    key: &OrderKey,
    to: TradeState,
) -> Result<Value, ControlError> {
    {
        let mut book = lock(&shared.book);
        let order = book.orders.get_mut(key).ok_or_else(|| ControlError::not_found(&key.1))?;
        if !matches!(order.state, TradeState::Notpay | TradeState::Userpaying) {
            return Err(ControlError::conflict(format!(
                "order {} is {}, only NOTPAY or USERPAYING can become {}",
                key.1,
                order.state.as_str(),
                to.as_str()
            )));
        }
        order.state = to;
    }
    tracing::info!(mchid = %key.0, out_trade_no = %key.1, state = to.as_str(), "order ended");
    view(shared, key)
}

pub(crate) async fn list_orders(State(shared): St) -> Json<Value> {
    let orders: Vec<Value> = lock(&shared.book).orders.values().map(|o| o.view()).collect();
    Json(json!({ "orders": orders }))
}

pub(crate) async fn show_order(
    State(shared): St,
    Path(out_trade_no): Path<String>,
    Query(q): Params,
) -> Result<Json<Value>, ControlError> {
    let key = find_order(&shared, &out_trade_no, q.get("mchid").map(String::as_str))?;
    view(&shared, &key).map(Json)
}

pub(crate) async fn pay(
    State(shared): St,
    Path(out_trade_no): Path<String>,
    Query(q): Params,
) -> Result<Json<Value>, ControlError> {
    let key = find_order(&shared, &out_trade_no, q.get("mchid").map(String::as_str))?;
    pay_order(&shared, &key).map(Json)
}

pub(crate) async fn fail(
    State(shared): St,
    Path(out_trade_no): Path<String>,
    Query(q): Params,
) -> Result<Json<Value>, ControlError> {
    let key = find_order(&shared, &out_trade_no, q.get("mchid").map(String::as_str))?;
    end_order(&shared, &key, TradeState::Payerror).map(Json)
}

pub(crate) async fn close(
    State(shared): St,
    Path(out_trade_no): Path<String>,
    Query(q): Params,
) -> Result<Json<Value>, ControlError> {
    let key = find_order(&shared, &out_trade_no, q.get("mchid").map(String::as_str))?;
    end_order(&shared, &key, TradeState::Closed).map(Json)
}

/// The payer's card refuses a processing refund: ABNORMAL, and REFUND.ABNORMAL is notified.
pub(crate) async fn abnormal_refund(
    State(shared): St,
    Path(out_refund_no): Path<String>,
) -> Result<Json<Value>, ControlError> {
    let (key, url, notice) = {
        let mut book = lock(&shared.book);
        let found = book.orders.iter_mut().find_map(|(key, o)| {
            let idx = o.refunds.iter().position(|r| r.out_refund_no == out_refund_no)?;
            Some((key.clone(), o, idx))
        });
        let (key, order, idx) = found.ok_or_else(|| ControlError::not_found(&out_refund_no))?;
        if order.refunds[idx].status != RefundStatus::Processing {
            return Err(ControlError::conflict(format!(
                "refund {out_refund_no} is {}, only PROCESSING can become ABNORMAL",
                order.refunds[idx].status.as_str()
            )));
        }
        order.refunds[idx].status = RefundStatus::Abnormal;
        let refund = &order.refunds[idx];
        let url = refund.notify_url.clone().unwrap_or_else(|| order.notify_url.clone());
        (key, url, order.refund_notification(refund))
    };
    tracing::info!(out_trade_no = %key.1, out_refund_no, "refund abnormal");
    notify::dispatch(&shared, &key, "REFUND.ABNORMAL", "退款异常", "refund", url, &notice);
    view(&shared, &key).map(Json)
}

pub(crate) async fn rotate_certificate(State(shared): St) -> Result<Json<Value>, ControlError> {
    let serial = shared.rotate().map_err(|e| ControlError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        code: "SYSTEM_ERROR",
        message: e.to_string(),
    })?;
    let serials = read(&shared.keys).platform_serials();
    Ok(Json(json!({"serial": serial, "serials": serials})))
}

/// Public material only: what a developer pastes into a client's configuration.
pub(crate) async fn show_keys(State(shared): St) -> Json<Value> {
    let keys = read(&shared.keys);
    Json(json!({
        "platform_serial": keys.platform_serial(),
        "platform_serials": keys.platform_serials(),
        "platform_certificate_pem": keys.platform_certificate_pem(),
        "ca_certificate_pem": keys.ca_certificate_pem(),
        "public_key_id": keys.public_key_id(),
        "public_key_pem": keys.public_key_pem(),
        "certificate_downloads":
            shared.certificate_downloads.load(std::sync::atomic::Ordering::Relaxed),
    }))
}

pub(crate) async fn show_faults(State(shared): St) -> Json<Faults> {
    Json(shared.faults())
}

pub(crate) async fn set_faults(
    State(shared): St,
    Json(faults): Json<Faults>,
) -> Result<Json<Faults>, ControlError> {
    if !(0.0..=1.0).contains(&faults.error_rate) {
        return Err(ControlError::bad("error_rate must be between 0 and 1".into()));
    }
    if let Some(op) = faults.timeout_after_commit.iter().find(|o| !OPERATIONS.contains(&o.as_str()))
    {
        return Err(ControlError::bad(format!(
            "unknown operation {op:?} in timeout_after_commit; known: {}",
            OPERATIONS.join(", ")
        )));
    }
    tracing::info!(?faults, "sandbox faults set");
    shared.faults.set(faults.clone());
    Ok(Json(faults))
}

pub(crate) async fn clear_faults(State(shared): St) -> Json<Faults> {
    let cleared = shared.faults.clear();
    tracing::info!("sandbox faults cleared");
    Json(cleared)
}

//! Everything under `/_sandbox/`: the cashier page a buyer "pays" on, the control API that pays,
//! fails or closes orders and shows their notifications, and fault injection.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use paymux_mock_kit::faults::roll;
use paymux_mock_kit::html::{escape, page, qr_svg};
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;

use crate::protocol::{Params, format_beijing, format_yuan, notification_sign_content};
use crate::trade::{
    ControlError, NotificationLog, NotifyJob, Order, PayMethod, Refusal, TradeStatus,
};
use crate::{Shared, notify};

/// Alipay's blue, for the Pay button.
const ACCENT: &str = "#1677ff";

/// Faults switched on through `POST /_sandbox/faults`; all off by default.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Faults {
    /// Added before every gateway answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// Share (0..=1) of gateway calls answered with an unsigned 20000, before any work is done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<f64>,
    /// Methods whose work is done but whose answer never comes in time.
    #[serde(default)]
    pub timeout_after_commit: Vec<String>,
    #[serde(default)]
    pub drop_notifications: bool,
    #[serde(default)]
    pub duplicate_notifications: bool,
    /// Notifications are delivered out of order, deterministically: a new notification is held
    /// back; when the mock produces its next one, that newer one is sent first and the held one
    /// only once the newer one's first send has finished (each then retries on its own schedule).
    /// A notification held 1 s with no successor is sent anyway.
    #[serde(default)]
    pub reorder_notifications: bool,
    /// Answers and notifications carry a well-formed signature over other bytes.
    #[serde(default)]
    pub bad_signature: bool,
}

impl Faults {
    pub(crate) fn roll_error(&self) -> bool {
        self.error_rate.is_some_and(roll)
    }
}

/// The control API's error shape: `{"error": "..."}` with a fitting status.
#[derive(Debug)]
pub(crate) struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        let status = match e {
            ControlError::NotFound(_) => StatusCode::NOT_FOUND,
            ControlError::Conflict(_) => StatusCode::CONFLICT,
        };
        Self(status, e.to_string())
    }
}

#[derive(Serialize)]
pub(crate) struct RefundView {
    out_request_no: String,
    refund_amount: String,
    gmt_refund: String,
}

#[derive(Serialize)]
pub(crate) struct OrderView {
    out_trade_no: String,
    trade_no: String,
    app_id: String,
    method: &'static str,
    subject: String,
    total_amount: String,
    trade_status: TradeStatus,
    /// False while a QR code or cashier page has not been opened: Alipay answers
    /// ACQ.TRADE_NOT_EXIST until then.
    exists_at_alipay: bool,
    paid: bool,
    refunded_amount: String,
    refunds: Vec<RefundView>,
    gmt_create: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    gmt_payment: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gmt_close: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    notify_url: Option<String>,
    cashier_url: String,
    notifications: Vec<NotificationLog>,
}

fn view(shared: &Shared, order: &Order) -> OrderView {
    OrderView {
        out_trade_no: order.request.out_trade_no.clone(),
        trade_no: order.trade_no.clone(),
        app_id: order.request.app_id.clone(),
        method: order.request.method.api_name(),
        subject: order.request.subject.clone(),
        total_amount: format_yuan(order.request.total_fen),
        trade_status: order.status,
        exists_at_alipay: order.exists,
        paid: order.paid_at.is_some(),
        refunded_amount: format_yuan(order.refunded_fen()),
        refunds: order
            .refunds
            .iter()
            .map(|r| RefundView {
                out_request_no: r.out_request_no.clone(),
                refund_amount: format_yuan(r.amount_fen),
                gmt_refund: format_beijing(r.at),
            })
            .collect(),
        gmt_create: format_beijing(order.created_at),
        gmt_payment: order.paid_at.map(format_beijing),
        gmt_close: order.closed_at.map(format_beijing),
        notify_url: order.request.notify_url.clone(),
        cashier_url: shared.cashier_url(&order.request.out_trade_no),
        notifications: order.notifications.clone(),
    }
}

fn order_json(shared: &Shared, out_trade_no: &str) -> Result<Json<OrderView>, ApiError> {
    let trades = shared.trades();
    let order =
        trades.get(out_trade_no).ok_or_else(|| ControlError::NotFound(out_trade_no.to_owned()))?;
    Ok(Json(view(shared, order)))
}

/// `{"orders": [...]}`, the same shape as the WeChat mock's.
pub(crate) async fn list_orders(State(shared): State<Arc<Shared>>) -> Json<OrderList> {
    let trades = shared.trades();
    Json(OrderList { orders: trades.all().into_iter().map(|o| view(&shared, o)).collect() })
}

#[derive(serde::Serialize)]
pub(crate) struct OrderList {
    orders: Vec<OrderView>,
}

pub(crate) async fn show_order(
    State(shared): State<Arc<Shared>>,
    Path(out_trade_no): Path<String>,
) -> Result<Json<OrderView>, ApiError> {
    order_json(&shared, &out_trade_no)
}

fn pay(shared: &Arc<Shared>, out_trade_no: &str) -> Result<(), ControlError> {
    let job =
        shared.trades().pay(out_trade_no, OffsetDateTime::now_utc(), &shared.config.seller_id)?;
    notify::spawn(shared, job);
    Ok(())
}

fn close_unpaid(shared: &Arc<Shared>, out_trade_no: &str) -> Result<(), ControlError> {
    let job: Option<NotifyJob> = shared.trades().close_unpaid(
        out_trade_no,
        OffsetDateTime::now_utc(),
        &shared.config.seller_id,
    )?;
    if let Some(job) = job {
        notify::spawn(shared, job);
    }
    Ok(())
}

/// The buyer pays; the notification goes out.
pub(crate) async fn pay_order(
    State(shared): State<Arc<Shared>>,
    Path(out_trade_no): Path<String>,
) -> Result<Json<OrderView>, ApiError> {
    pay(&shared, &out_trade_no)?;
    order_json(&shared, &out_trade_no)
}

/// The buyer gave up: the trade closes without payment.
pub(crate) async fn fail_order(
    State(shared): State<Arc<Shared>>,
    Path(out_trade_no): Path<String>,
) -> Result<Json<OrderView>, ApiError> {
    close_unpaid(&shared, &out_trade_no)?;
    order_json(&shared, &out_trade_no)
}

/// Alipay closes the unpaid trade (as on expiry).
pub(crate) async fn close_order(
    State(shared): State<Arc<Shared>>,
    Path(out_trade_no): Path<String>,
) -> Result<Json<OrderView>, ApiError> {
    close_unpaid(&shared, &out_trade_no)?;
    order_json(&shared, &out_trade_no)
}

pub(crate) async fn show_faults(State(shared): State<Arc<Shared>>) -> Json<Faults> {
    Json(shared.faults())
}

pub(crate) async fn set_faults(
    State(shared): State<Arc<Shared>>,
    faults: Result<Json<Faults>, JsonRejection>,
) -> Result<Json<Faults>, ApiError> {
    let Json(faults) = faults.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
    if faults.error_rate.is_some_and(|r| !(0.0..=1.0).contains(&r)) {
        return Err(ApiError(StatusCode::BAD_REQUEST, "error_rate must be within 0..=1".into()));
    }
    shared.faults.set(faults.clone());
    tracing::info!(?faults, "faults set");
    Ok(Json(faults))
}

pub(crate) async fn clear_faults(State(shared): State<Arc<Shared>>) -> Json<Faults> {
    Json(shared.faults.clear())
}

/// The mock's public key and identity, for configuring an adapter against it.
pub(crate) async fn keys(State(shared): State<Arc<Shared>>) -> Json<serde_json::Value> {
    let public = shared.config.alipay_private_key.public_key();
    Json(json!({
        "gateway_url": format!("{}/gateway.do", shared.public_url),
        "alipay_public_key": public.to_spki_base64(),
        "alipay_public_key_pem": public.to_spki_pem(),
        "seller_id": shared.config.seller_id,
    }))
}

/// An HTML page for a refused page.pay / wap.pay, as Alipay shows the payer one.
pub(crate) fn error_page(refusal: &Refusal) -> Response {
    let body = format!(
        "<h1>Alipay sandbox: request refused</h1><dl><dt>code</dt><dd>{} {}</dd>\
         <dt>sub_code</dt><dd><code>{}</code></dd><dt>sub_msg</dt><dd><code>{}</code></dd></dl>",
        refusal.code.code(),
        escape(refusal.code.msg()),
        escape(refusal.sub_code),
        escape(&refusal.sub_msg)
    );
    Html(page("Alipay sandbox: error", ACCENT, &body)).into_response()
}

/// `GET /_sandbox/cashier/{out_trade_no}`: opening it counts as the buyer scanning the code.
pub(crate) async fn cashier(
    State(shared): State<Arc<Shared>>,
    Path(out_trade_no): Path<String>,
) -> Response {
    let mut trades = shared.trades();
    trades.mark_scanned(&out_trade_no);
    let Some(order) = trades.get(&out_trade_no) else {
        let body = format!("<h1>No such order</h1><p><code>{}</code></p>", escape(&out_trade_no));
        return (StatusCode::NOT_FOUND, Html(page("Alipay sandbox", ACCENT, &body)))
            .into_response();
    };
    let url = shared.cashier_url(&out_trade_no);
    let base = format!("/_sandbox/cashier/{}", escape(&out_trade_no));
    let actions = match order.status {
        TradeStatus::WaitBuyerPay => format!(
            "<form method=\"post\" action=\"{base}/pay\" style=\"display:inline\">\
             <button class=\"pay\" type=\"submit\">Pay</button></form>\
             <form method=\"post\" action=\"{base}/cancel\" style=\"display:inline\">\
             <button type=\"submit\">Cancel</button></form>"
        ),
        _ if order.paid_at.is_some() => match return_url(&shared, order) {
            Some(back) => {
                format!("<p>Paid. <a href=\"{}\">Back to the merchant</a></p>", escape(&back))
            }
            None => "<p>Paid.</p>".to_owned(),
        },
        _ => "<p>This trade is closed.</p>".to_owned(),
    };
    let body = format!(
        "<h1>Alipay sandbox cashier</h1><p>{}</p><p class=\"amount\">¥{}</p>\
         <p>Status: <strong>{}</strong></p>{actions}<div>{}</div>\
         <dl><dt>out_trade_no</dt><dd><code>{}</code></dd><dt>trade_no</dt><dd><code>{}</code></dd>\
         <dt>page</dt><dd><code>{}</code></dd></dl>",
        escape(&order.request.subject),
        format_yuan(order.request.total_fen),
        order.status.as_str(),
        qr_svg(&url),
        escape(&order.request.out_trade_no),
        escape(&order.trade_no),
        escape(&url),
    );
    Html(page("Alipay sandbox cashier", ACCENT, &body)).into_response()
}

/// The Pay button: pays, then sends the browser to the merchant's `return_url` (page/wap) or
/// back to the cashier page.
pub(crate) async fn cashier_pay(
    State(shared): State<Arc<Shared>>,
    Path(out_trade_no): Path<String>,
) -> Response {
    match pay(&shared, &out_trade_no) {
        Err(ControlError::NotFound(_)) => {
            return ApiError::from(ControlError::NotFound(out_trade_no)).into_response();
        }
        // Already paid or closed (a second click): the page shows the state.
        Err(ControlError::Conflict(_)) | Ok(()) => {}
    }
    let back = shared.trades().get(&out_trade_no).and_then(|order| return_url(&shared, order));
    Redirect::to(&back.unwrap_or_else(|| format!("/_sandbox/cashier/{out_trade_no}")))
        .into_response()
}

/// The Cancel button: the buyer gives up.
pub(crate) async fn cashier_cancel(
    State(shared): State<Arc<Shared>>,
    Path(out_trade_no): Path<String>,
) -> Response {
    match close_unpaid(&shared, &out_trade_no) {
        Err(ControlError::NotFound(_)) => {
            ApiError::from(ControlError::NotFound(out_trade_no)).into_response()
        }
        Err(ControlError::Conflict(_)) | Ok(()) => {
            Redirect::to(&format!("/_sandbox/cashier/{out_trade_no}")).into_response()
        }
    }
}

/// The signed `return_url` GET a paid page.pay / wap.pay order sends the browser back with,
/// signed like a notification.
fn return_url(shared: &Shared, order: &Order) -> Option<String> {
    if !matches!(order.request.method, PayMethod::PagePay | PayMethod::WapPay)
        || order.paid_at.is_none()
    {
        return None;
    }
    let target = order.request.return_url.as_deref()?;
    let mut fields = Params::new();
    for (name, value) in [
        ("charset", "utf-8".to_owned()),
        ("out_trade_no", order.request.out_trade_no.clone()),
        ("method", format!("{}.return", order.request.method.api_name())),
        ("total_amount", format_yuan(order.request.total_fen)),
        ("trade_no", order.trade_no.clone()),
        ("auth_app_id", order.request.app_id.clone()),
        ("version", "1.0".to_owned()),
        ("app_id", order.request.app_id.clone()),
        ("sign_type", "RSA2".to_owned()),
        ("seller_id", shared.config.seller_id.clone()),
        ("timestamp", format_beijing(OffsetDateTime::now_utc())),
    ] {
        fields.insert(name.to_owned(), value);
    }
    let sign = shared.sign(&notification_sign_content(&fields))?;
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.extend_pairs(fields.iter());
    query.append_pair("sign", &sign);
    let separator = if target.contains('?') { '&' } else { '?' };
    Some(format!("{target}{separator}{}", query.finish()))
}

//! Barcode payments as Alipay answers them (`channels/barcode.md`): `alipay.trade.pay` with
//! `scene=bar_code`, and `alipay.trade.cancel`. The trade lives with the others (query, refund
//! and the control API's `pay` see it); this module keeps only what is barcode's own: which
//! variant a code asked for, and how many queries and cancels the trade has seen.
//!
//! The payer's code picks the outcome. Any code of Alipay's format (16 to 24 digits starting
//! with 25 to 30) is paid at once, except these documented variants:
//!
//! | code starts with | answer |
//! |---|---|
//! | `25001` | `10003`: the payer confirms on the phone; the trade waits until paid through the control API (`POST /_sandbox/orders/{out_trade_no}/pay`) or cancelled |
//! | `25002` | `10003`, then paid by itself at the second query |
//! | `25003` | `40004 ACQ.PAYMENT_AUTH_CODE_INVALID` (no trade) |
//! | `25004` | `40004 ACQ.BUYER_BALANCE_NOT_ENOUGH` (no trade) |
//! | `25005` | `20000` (unknown); the trade exists and waits as for `25001` |
//!
//! A code of another format is refused with `ACQ.PAYMENT_AUTH_CODE_INVALID`. To lose a cancel's
//! answer, set the fault `timeout_after_commit: ["alipay.trade.cancel"]`: the cancel is done but
//! its answer never comes.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use paymux_mock_kit::sync::lock;
use serde::Serialize;
use serde_json::json;
use time::OffsetDateTime;

use crate::protocol::{Node, Params, ResultCode, format_beijing, format_yuan};
use crate::trade::{PayMethod, Refund, Refusal, TradeStatus};
use crate::{Shared, notify};

/// What a barcode code asked the mock to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Variant {
    PaidAtOnce,
    WaitsForPayer,
    PaidAtSecondQuery,
    CodeInvalid,
    BalanceNotEnough,
    Unknown,
}

impl Variant {
    fn of(code: &str) -> Option<Self> {
        let format_ok = (16..=24).contains(&code.len())
            && code.bytes().all(|b| b.is_ascii_digit())
            && code[..2].parse::<u8>().is_ok_and(|p| (25..=30).contains(&p));
        if !format_ok {
            return None;
        }
        Some(match &code[..5] {
            "25001" => Self::WaitsForPayer,
            "25002" => Self::PaidAtSecondQuery,
            "25003" => Self::CodeInvalid,
            "25004" => Self::BalanceNotEnough,
            "25005" => Self::Unknown,
            _ => Self::PaidAtOnce,
        })
    }
}

/// One barcode trade's own record.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct BarcodeTrade {
    variant: Variant,
    queries: u32,
    cancels: u32,
    /// What the last cancel did: `close` or `refund`.
    #[serde(skip_serializing_if = "Option::is_none")]
    cancel_action: Option<&'static str>,
}

/// Every barcode trade, by `out_trade_no`.
#[derive(Debug, Default)]
pub(crate) struct Book {
    trades: HashMap<String, BarcodeTrade>,
}

fn business(sub_code: &'static str, sub_msg: &str) -> Refusal {
    Refusal::business(sub_code, sub_msg)
}

/// `alipay.trade.pay`: the gateway's answer node, or a refusal.
pub(crate) fn pay(
    shared: &Arc<Shared>,
    params: &Params,
    biz: &serde_json::Map<String, serde_json::Value>,
) -> Result<Node, Refusal> {
    let text = |name: &str| match biz.get(name) {
        Some(serde_json::Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let missing = |name: &str| Refusal {
        code: ResultCode::MissingArguments,
        sub_code: "isv.missing-parameter",
        sub_msg: format!("缺少必选参数 {name}"),
    };
    let out_trade_no = text("out_trade_no").ok_or_else(|| missing("out_trade_no"))?;
    if out_trade_no.len() > 64
        || !out_trade_no.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(business(
            "ACQ.INVALID_PARAMETER",
            "out_trade_no: at most 64 letters, digits, `_` or `-`",
        ));
    }
    let scene = text("scene").ok_or_else(|| missing("scene"))?;
    if scene != "bar_code" && scene != "wave_code" {
        return Err(business("ACQ.INVALID_PARAMETER", "scene must be bar_code or wave_code"));
    }
    let auth_code = text("auth_code").ok_or_else(|| missing("auth_code"))?;
    let subject = text("subject").ok_or_else(|| missing("subject"))?;
    let total_fen =
        crate::protocol::parse_yuan(&text("total_amount").ok_or_else(|| missing("total_amount"))?)
            .map_err(|e| business("ACQ.INVALID_PARAMETER", &format!("total_amount: {e}")))?;
    let variant = Variant::of(&auth_code).ok_or_else(|| {
        business(
            "ACQ.PAYMENT_AUTH_CODE_INVALID",
            "支付失败，获取顾客账户信息失败，请顾客刷新付款码后重新收款",
        )
    })?;
    match variant {
        Variant::CodeInvalid => {
            return Err(business(
                "ACQ.PAYMENT_AUTH_CODE_INVALID",
                "支付失败，获取顾客账户信息失败，请顾客刷新付款码后重新收款",
            ));
        }
        Variant::BalanceNotEnough => {
            return Err(business("ACQ.BUYER_BALANCE_NOT_ENOUGH", "买家余额不足"));
        }
        _ => {}
    }
    let param = |name: &str| params.get(name).filter(|v| !v.is_empty()).cloned();
    let now = OffsetDateTime::now_utc();
    let order = crate::trade::NewOrder {
        method: PayMethod::BarcodePay,
        app_id: param("app_id").unwrap_or_default(),
        out_trade_no: out_trade_no.clone(),
        subject,
        body: None,
        total_fen,
        notify_url: param("notify_url"),
        return_url: None,
        passback_params: None,
        royalty_freeze: crate::royalty::asks_freeze(biz),
    };
    let mut trades = shared.trades();
    trades.register(order, now)?;
    trades.mark_scanned(&out_trade_no);
    lock(&shared.barcode).trades.insert(
        out_trade_no.clone(),
        BarcodeTrade { variant, queries: 0, cancels: 0, cancel_action: None },
    );
    let pay_fields = |node: Node, trades: &crate::trade::Trades| {
        let Some(o) = trades.get(&out_trade_no) else { return node };
        node.field("trade_no", o.trade_no.clone())
            .field("out_trade_no", out_trade_no.clone())
            .field("buyer_logon_id", o.buyer_logon_id.clone())
            .field("total_amount", format_yuan(total_fen))
    };
    match variant {
        Variant::PaidAtOnce => {
            let job = trades
                .pay(&out_trade_no, now, &shared.config.seller_id)
                .map_err(|e| business("ACQ.TRADE_STATUS_ERROR", &e.to_string()))?;
            let total = format_yuan(total_fen);
            let node = pay_fields(Node::success(), &trades)
                .field("receipt_amount", total.clone())
                .field("buyer_pay_amount", total)
                .field("point_amount", "0.00")
                .field("gmt_payment", format_beijing(now));
            drop(trades);
            notify::spawn(shared, job);
            Ok(node)
        }
        Variant::Unknown => {
            Ok(Node::error(ResultCode::ServiceUnavailable, "isp.unknow-error", "系统繁忙"))
        }
        // The captured 10003 carries zero amounts (and a leading space in its msg).
        _ => Ok(pay_fields(Node::with_code(ResultCode::PayInProcess), &trades)
            .field("buyer_pay_amount", "0.00")
            .field("invoice_amount", "0.00")
            .field("point_amount", "0.00")
            .field("receipt_amount", "0.00")),
    }
}

/// Before a query: counts it, and pays a `25002` trade at its second.
pub(crate) fn before_query(shared: &Arc<Shared>, out_trade_no: Option<&str>) {
    let Some(no) = out_trade_no else { return };
    let due = {
        let mut book = lock(&shared.barcode);
        let Some(t) = book.trades.get_mut(no) else { return };
        t.queries += 1;
        t.variant == Variant::PaidAtSecondQuery && t.queries == 2
    };
    if due {
        let paid = shared.trades().pay(no, OffsetDateTime::now_utc(), &shared.config.seller_id);
        if let Ok(job) = paid {
            notify::spawn(shared, job);
        }
    }
}

/// `alipay.trade.cancel`: an unpaid trade closes (`action=close`); a paid one is refunded in
/// full and closes (`action=refund`). Repeating it answers the same.
pub(crate) fn cancel(shared: &Arc<Shared>, out_trade_no: Option<&str>) -> Result<Node, Refusal> {
    let no = out_trade_no.ok_or_else(|| Refusal {
        code: ResultCode::MissingArguments,
        sub_code: "isv.missing-parameter",
        sub_msg: "缺少必选参数 out_trade_no".into(),
    })?;
    let now = OffsetDateTime::now_utc();
    let mut trades = shared.trades();
    let order =
        trades.order_mut(no).ok_or_else(|| business("ACQ.TRADE_NOT_EXIST", "交易不存在"))?;
    let action = match order.status {
        TradeStatus::WaitBuyerPay => {
            order.status = TradeStatus::TradeClosed;
            order.closed_at = Some(now);
            "close"
        }
        TradeStatus::TradeSuccess => {
            let rest = order.request.total_fen - order.refunded_fen();
            order.refunds.push(Refund {
                out_request_no: format!("cancel-{no}"),
                amount_fen: rest,
                at: now,
            });
            order.status = TradeStatus::TradeClosed;
            order.closed_at = Some(now);
            "refund"
        }
        TradeStatus::TradeClosed if order.paid_at.is_some() => "refund",
        TradeStatus::TradeClosed => "close",
    };
    let node = Node::success()
        .field("trade_no", order.trade_no.clone())
        .field("out_trade_no", no.to_owned())
        .field("retry_flag", "N")
        .field("action", action);
    drop(trades);
    let mut book = lock(&shared.barcode);
    if let Some(t) = book.trades.get_mut(no) {
        t.cancels += 1;
        t.cancel_action = Some(action);
    }
    Ok(node)
}

/// `GET /_sandbox/barcode/{out_trade_no}`: the trade's barcode record and its status.
pub(crate) async fn show(State(shared): State<Arc<Shared>>, Path(no): Path<String>) -> Response {
    let record = lock(&shared.barcode).trades.get(&no).cloned();
    let status = shared.trades().get(&no).map(|o| (o.status, o.paid_at.is_some()));
    match (record, status) {
        (Some(r), Some((status, paid))) => Json(json!({
            "out_trade_no": no,
            "trade_status": status.as_str(),
            "paid": paid,
            "closed": status == TradeStatus::TradeClosed,
            "variant": r.variant,
            "queries": r.queries,
            "cancels": r.cancels,
            "cancel_action": r.cancel_action,
        }))
        .into_response(),
        _ => (StatusCode::NOT_FOUND, Json(json!({"error": format!("no barcode trade `{no}`")})))
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_pick_their_variant_and_other_formats_are_refused() {
        assert_eq!(Variant::of("286012345678901234"), Some(Variant::PaidAtOnce));
        assert_eq!(Variant::of("250012345678901234"), Some(Variant::WaitsForPayer));
        assert_eq!(Variant::of("250023456789012345"), Some(Variant::PaidAtSecondQuery));
        assert_eq!(Variant::of("250034567890123456"), Some(Variant::CodeInvalid));
        assert_eq!(Variant::of("250045678901234567"), Some(Variant::BalanceNotEnough));
        assert_eq!(Variant::of("250056789012345678"), Some(Variant::Unknown));
        assert_eq!(Variant::of("134567890123456789"), None);
        assert_eq!(Variant::of("2860123456789"), None);
        assert_eq!(Variant::of("28601234567890123x"), None);
    }
}

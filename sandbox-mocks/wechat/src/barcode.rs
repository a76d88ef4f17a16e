//! Barcode payments as WeChat Pay v3 answers them (`channels/barcode.md`):
//! `POST /v3/pay/transactions/codepay` and `POST /v3/pay/transactions/out-trade-no/{no}/reverse`,
//! verified and signed like every other `/v3/` call. The order lives with the others (the
//! ordinary query and the control API's `pay` see it, `trade_type=MICROPAY`); it has no
//! `notify_url` and no notification is ever sent for it. This module keeps what is barcode's own:
//! the variant its code chose, and how many queries and reverses it has seen.
//!
//! Any code of WeChat's format (18 digits starting with 10 to 15) is paid at once (200 with the
//! transaction), except these documented variants:
//!
//! | code starts with | answer |
//! |---|---|
//! | `10001` | 202 `{"trade_state":"USERPAYING"}`: the payer enters a password; the query shows `USERPAYING` until the order is paid through the control API (`POST /_sandbox/orders/{out_trade_no}/pay`) or reversed |
//! | `10002` | 202 `USERPAYING`, then `SUCCESS` at the second query |
//! | `10003` | 400 `AUTH_CODE_INVALID` (no order) |
//! | `10004` | 403 `NOTENOUGH` (no order) |
//! | `10005` | 500 `SYSTEM_ERROR` (unknown); the order exists and waits as for `10001` |
//! | `10006` | 202 `USERPAYING`, then `PAYERROR` at the second query |
//!
//! A code of another format is refused with 400 `AUTH_CODE_INVALID`. To lose a reverse's answer,
//! set the fault `timeout_after_commit: ["reverse"]`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use paymux_mock_kit::random_digits;
use serde::Serialize;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::api::{Verified, finish, json_bytes, require_str};
use crate::protocol::{beijing_compact, valid_out_trade_no};
use crate::state::{ApiError, Order, OrderKey, Refund, RefundStatus, Shared, TradeState, lock};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Variant {
    PaidAtOnce,
    WaitsForPayer,
    PaidAtSecondQuery,
    CodeInvalid,
    NotEnough,
    SystemError,
    FailsAtSecondQuery,
}

impl Variant {
    fn of(code: &str) -> Option<Self> {
        let format_ok = code.len() == 18
            && code.bytes().all(|b| b.is_ascii_digit())
            && code[..2].parse::<u8>().is_ok_and(|p| (10..=15).contains(&p));
        if !format_ok {
            return None;
        }
        Some(match &code[..5] {
            "10001" => Self::WaitsForPayer,
            "10002" => Self::PaidAtSecondQuery,
            "10003" => Self::CodeInvalid,
            "10004" => Self::NotEnough,
            "10005" => Self::SystemError,
            "10006" => Self::FailsAtSecondQuery,
            _ => Self::PaidAtOnce,
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct CodeOrder {
    variant: Variant,
    queries: u32,
    reverses: u32,
}

/// Every barcode order, by (mchid, out_trade_no).
#[derive(Debug, Default)]
pub(crate) struct Book {
    orders: HashMap<OrderKey, CodeOrder>,
}

fn auth_code_invalid() -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "AUTH_CODE_INVALID", "付款码无效，请重新扫码")
}

/// Pays the order now: `SUCCESS` with a transaction id (no notification: codepay has none).
fn mark_paid(order: &mut Order, now: OffsetDateTime) {
    order.state = TradeState::Success;
    order.success_time = Some(now);
    order.transaction_id = Some(format!(
        "4200{}{}{}",
        random_digits(6),
        &beijing_compact(now)[..8],
        random_digits(10)
    ));
    order.payer_openid = Some(format!("o{}", paymux_crypto::random_alphanumeric(27)));
}

/// `POST /v3/pay/transactions/codepay`.
pub(crate) async fn codepay(
    State(shared): State<Arc<Shared>>,
    v: Verified,
) -> Result<Response, ApiError> {
    let body = v.json()?;
    let merchant = &v.merchant.merchant;
    if require_str(&body, "mchid")? != merchant.mchid {
        return Err(ApiError::param("mchid与Authorization中的商户号不一致"));
    }
    let appid = require_str(&body, "appid")?;
    if appid != merchant.appid {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "APPID_MCHID_NOT_MATCH",
            "appid和mch_id不匹配",
        ));
    }
    let description = require_str(&body, "description")?;
    if description.chars().count() > 127 {
        return Err(ApiError::param("description超出长度限制(127)"));
    }
    let out_trade_no = require_str(&body, "out_trade_no")?;
    if !valid_out_trade_no(out_trade_no) {
        return Err(ApiError::param("out_trade_no格式错误: 6-32位数字、字母、_-*"));
    }
    let auth_code = body
        .get("payer")
        .and_then(|p| p.get("auth_code"))
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty())
        .ok_or_else(|| ApiError::param("payer.auth_code必填"))?;
    let total = body
        .get("amount")
        .and_then(|a| a.get("total"))
        .and_then(Value::as_i64)
        .filter(|t| *t > 0)
        .ok_or_else(|| ApiError::param("amount.total须为正整数(分)"))?;
    if !body.get("scene_info").is_some_and(Value::is_object) {
        return Err(ApiError::param("scene_info必填"));
    }
    let variant = Variant::of(auth_code).ok_or_else(auth_code_invalid)?;
    match variant {
        Variant::CodeInvalid => return Err(auth_code_invalid()),
        Variant::NotEnough => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "NOTENOUGH",
                "用户余额不足，请用户换卡支付",
            ));
        }
        _ => {}
    }
    // The order keeps its parameters without the payer's code.
    let mut params = body.clone();
    if let Some(payer) = params.get_mut("payer") {
        *payer = json!({});
    }
    let key: OrderKey = (merchant.mchid.clone(), out_trade_no.to_owned());
    let now = OffsetDateTime::now_utc();
    let answer = {
        let mut book = lock(&shared.book);
        if let Some(existing) = book.orders.get(&key) {
            if existing.params != params || existing.trade_type != "MICROPAY" {
                return Err(ApiError::invalid(
                    "OUT_TRADE_NO_USED: 商户订单号重复, 且参数与原订单不一致",
                ));
            }
            return Err(match existing.state {
                s if s.is_paid() => {
                    ApiError::new(StatusCode::BAD_REQUEST, "ORDERPAID", "该订单已支付")
                }
                _ => ApiError::new(StatusCode::BAD_REQUEST, "ORDER_CLOSED", "该订单已关闭"),
            });
        }
        let mut order = Order {
            mchid: merchant.mchid.clone(),
            appid: appid.to_owned(),
            out_trade_no: out_trade_no.to_owned(),
            trade_type: "MICROPAY",
            description: description.to_owned(),
            attach: None,
            notify_url: String::new(),
            total,
            payer_openid: None,
            params,
            answer: Value::Null,
            prepay_id: String::new(),
            state: TradeState::Userpaying,
            transaction_id: None,
            created_at: now,
            success_time: None,
            refunds: Vec::new(),
            deliveries: Vec::new(),
        };
        if variant == Variant::PaidAtOnce {
            mark_paid(&mut order, now);
        }
        let answer = order.transaction();
        book.orders.insert(key.clone(), order);
        answer
    };
    lock(&shared.barcode).orders.insert(key, CodeOrder { variant, queries: 0, reverses: 0 });
    tracing::info!(mchid = %merchant.mchid, out_trade_no, total, ?variant, "codepay order");
    let response = match variant {
        Variant::PaidAtOnce => shared.signed(v.signer, StatusCode::OK, json_bytes(&answer))?,
        Variant::SystemError => return Err(ApiError::system("系统错误")),
        // The 202 carries trade_state alone; the mock signs it, as SDKs verify every 2xx.
        _ => shared.signed(
            v.signer,
            StatusCode::ACCEPTED,
            json_bytes(&json!({"trade_state": "USERPAYING"})),
        )?,
    };
    Ok(finish(&shared, "codepay", response).await)
}

/// Before a query by `out_trade_no`: counts it, and settles a `10002` or `10006` order at its
/// second.
pub(crate) fn before_query(shared: &Shared, mchid: &str, out_trade_no: &str) {
    let key: OrderKey = (mchid.to_owned(), out_trade_no.to_owned());
    let settle = {
        let mut codes = lock(&shared.barcode);
        let Some(c) = codes.orders.get_mut(&key) else { return };
        c.queries += 1;
        (c.queries == 2).then_some(c.variant)
    };
    let mut book = lock(&shared.book);
    let Some(order) = book.orders.get_mut(&key).filter(|o| o.state == TradeState::Userpaying)
    else {
        return;
    };
    match settle {
        Some(Variant::PaidAtSecondQuery) => mark_paid(order, OffsetDateTime::now_utc()),
        Some(Variant::FailsAtSecondQuery) => order.state = TradeState::Payerror,
        _ => {}
    }
}

/// `POST /v3/pay/transactions/out-trade-no/{out_trade_no}/reverse`: an unpaid order closes, a
/// paid one is refunded in full; either way it is `REVOKED`. Repeating it answers the same.
pub(crate) async fn reverse(
    State(shared): State<Arc<Shared>>,
    Path(out_trade_no): Path<String>,
    v: Verified,
) -> Result<Response, ApiError> {
    let body = v.json()?;
    let mchid = v.merchant.merchant.mchid.clone();
    if require_str(&body, "mchid")? != mchid {
        return Err(ApiError::param("mchid与Authorization中的商户号不一致"));
    }
    let appid = require_str(&body, "appid")?.to_owned();
    let key: OrderKey = (mchid.clone(), out_trade_no.clone());
    {
        let mut book = lock(&shared.book);
        let order = book
            .orders
            .get_mut(&key)
            .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "ORDER_NOT_EXIST", "订单不存在"))?;
        if order.state.is_paid() {
            let now = OffsetDateTime::now_utc();
            let rest = order.total - order.refunded();
            order.refunds.push(Refund {
                out_refund_no: format!("reverse-{out_trade_no}"),
                refund_id: format!("50{}", random_digits(27)),
                amount: rest,
                notify_url: None,
                status: RefundStatus::Success,
                create_time: now,
                success_time: Some(now),
            });
        }
        order.state = TradeState::Revoked;
    }
    if let Some(c) = lock(&shared.barcode).orders.get_mut(&key) {
        c.reverses += 1;
    }
    tracing::info!(%mchid, out_trade_no, "codepay order reversed");
    let answer = json!({"appid": appid, "mchid": mchid, "out_trade_no": out_trade_no});
    let response = shared.signed(v.signer, StatusCode::OK, json_bytes(&answer))?;
    Ok(finish(&shared, "reverse", response).await)
}

/// `GET /_sandbox/barcode/{out_trade_no}`: the order's barcode record and state.
pub(crate) async fn show(State(shared): State<Arc<Shared>>, Path(no): Path<String>) -> Response {
    let found = lock(&shared.barcode)
        .orders
        .iter()
        .find(|((_, n), _)| *n == no)
        .map(|(k, c)| (k.clone(), c.clone()));
    let Some((key, code)) = found else {
        return (StatusCode::NOT_FOUND, Json(json!({"error": format!("no barcode order `{no}`")})))
            .into_response();
    };
    let Some((state, paid)) =
        lock(&shared.book).orders.get(&key).map(|o| (o.state, o.success_time.is_some()))
    else {
        return (StatusCode::NOT_FOUND, Json(json!({"error": "order gone"}))).into_response();
    };
    Json(json!({
        "out_trade_no": no,
        "trade_state": state.as_str(),
        "paid": paid,
        "closed": matches!(state, TradeState::Revoked | TradeState::Closed),
        "variant": code.variant,
        "queries": code.queries,
        "cancels": code.reverses,
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_pick_their_variant_and_other_formats_are_refused() {
        assert_eq!(Variant::of("134567890123456789"), Some(Variant::PaidAtOnce));
        assert_eq!(Variant::of("100012345678901234"), Some(Variant::WaitsForPayer));
        assert_eq!(Variant::of("100022345678901234"), Some(Variant::PaidAtSecondQuery));
        assert_eq!(Variant::of("100032345678901234"), Some(Variant::CodeInvalid));
        assert_eq!(Variant::of("100042345678901234"), Some(Variant::NotEnough));
        assert_eq!(Variant::of("100052345678901234"), Some(Variant::SystemError));
        assert_eq!(Variant::of("100062345678901234"), Some(Variant::FailsAtSecondQuery));
        assert_eq!(Variant::of("164567890123456789"), None);
        assert_eq!(Variant::of("13456789012345678"), None);
        assert_eq!(Variant::of("286012345678901234"), None);
    }
}

//! Profit sharing (分账) as a direct merchant sees it: orders created with
//! `settle_info.profit_sharing=true` have their net amount (after WeChat's fee) frozen once paid;
//! receivers are added first, then split orders move frozen money to them asynchronously
//! (PROCESSING, then FINISHED with a result per receiver line), unfreeze releases the rest to
//! the merchant, returns take money back from merchant receivers, and refunds follow WeChat's
//! table for frozen and split funds.
//!
//! Every `/v3/profitsharing/` call is verified and answered like the mock's other calls. The
//! `/_sandbox/profitsharing` control API shows holds, split orders, receivers and balances and
//! sets the rules' values and faults ([`ProfitSharingSettings`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{OriginalUri, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::api::Verified;
use crate::protocol::beijing_rfc3339;
use crate::state::{ApiError, Order, Shared, lock};

mod control;
mod orders;
mod receivers;
mod returns;

pub(crate) use control::{set_settings, show, show_receiver, show_settings};
pub(crate) use orders::{amounts, create_order, query_order, unfreeze};
pub(crate) use receivers::{add_receiver, delete_receiver};
pub(crate) use returns::{create_return, query_return};

type St = State<Arc<Shared>>;

/// Why a receiver line ends CLOSED (wpgo `DetailFailReason`).
const FAIL_REASONS: [&str; 5] = [
    "ACCOUNT_ABNORMAL",
    "NO_RELATION",
    "RECEIVER_HIGH_RISK",
    "RECEIVER_REAL_NAME_NOT_VERIFIED",
    "NO_AUTH",
];

/// The values of WeChat's profit-sharing rules, and the faults, as `POST
/// /_sandbox/profitsharing/settings` sets them (a POST replaces them all).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProfitSharingSettings {
    /// The merchant's "订单分账最大比例" in 1/10000 of the order amount (default 3000 = 30 %).
    pub max_ratio_bps: u32,
    /// Per-mchid overrides of `max_ratio_bps`.
    pub merchant_max_ratio_bps: BTreeMap<String, u32>,
    /// Whether splits to the paying merchant itself count toward the ratio (uncertain at WeChat;
    /// default no).
    pub self_split_counts_toward_ratio: bool,
    /// WeChat's fee in 1/10000 of the order amount (default 60 = 0.6 %), rounded half up to a
    /// fen; what is frozen, and can be split, is the order amount minus this fee.
    pub fee_rate_bps: u32,
    /// How long after the payment a split or unfreeze is first accepted (WeChat: 1 minute;
    /// earlier gets 400 INVALID_REQUEST "订单处理中，请稍后重试").
    pub min_wait_ms: u64,
    /// How long split orders stay PROCESSING (their lines PENDING) before they finish.
    pub processing_ms: u64,
    /// The freeze period (WeChat: 30 days); after it the remainder unfreezes by itself.
    pub freeze_seconds: u64,
    /// Fault: receiver accounts whose lines end CLOSED, with the fail reason to report
    /// (`ACCOUNT_ABNORMAL`, `NO_RELATION`, `RECEIVER_HIGH_RISK`,
    /// `RECEIVER_REAL_NAME_NOT_VERIFIED`, `NO_AUTH`).
    pub refused_receivers: BTreeMap<String, String>,
    /// The URL a `MERCHANT_ID` receiver set in its own portal for 分账动账通知; the receiver
    /// must be a merchant registered with the mock (its APIv3 key encrypts the notification).
    pub receiver_notify_urls: BTreeMap<String, String>,
    /// What a merchant's available balance starts at, in fen: refunds that cannot be paid
    /// from frozen funds draw on it.
    pub opening_available_balance: i64,
    /// `MERCHANT_ID` receivers that have not turned on "同意分账回退": returns from them are
    /// refused.
    pub no_return_consent: Vec<String>,
    /// Fault: receivers whose returns end FAILED, with the reason (`ACCOUNT_ABNORMAL`,
    /// `BALANCE_NOT_ENOUGH`, `TIME_OUT_CLOSED`). A receiver whose balance is short fails with
    /// `BALANCE_NOT_ENOUGH` anyway.
    pub refused_returns: BTreeMap<String, String>,
    /// Split requests a merchant may make per second (WeChat: 30; 0: no limit); more get 429
    /// `FREQUENCY_LIMITED`.
    pub split_requests_per_second: u32,
    /// Fault: the next N split queries answer 404 `RESOURCE_NOT_EXISTS`, as WeChat sometimes
    /// does shortly after a payment (the count restarts with each POST of the settings).
    pub not_found_queries: u32,
}

impl Default for ProfitSharingSettings {
    fn default() -> Self {
        Self {
            max_ratio_bps: 3000,
            merchant_max_ratio_bps: BTreeMap::new(),
            self_split_counts_toward_ratio: false,
            fee_rate_bps: 60,
            min_wait_ms: 60_000,
            processing_ms: 1_000,
            freeze_seconds: 30 * 24 * 3600,
            refused_receivers: BTreeMap::new(),
            receiver_notify_urls: BTreeMap::new(),
            opening_available_balance: 100_000_000,
            no_return_consent: Vec::new(),
            refused_returns: BTreeMap::new(),
            split_requests_per_second: 30,
            not_found_queries: 0,
        }
    }
}

impl ProfitSharingSettings {
    fn max_ratio(&self, mchid: &str) -> u32 {
        self.merchant_max_ratio_bps.get(mchid).copied().unwrap_or(self.max_ratio_bps)
    }

    fn check(&self) -> Result<(), SettingsError> {
        let ratios =
            std::iter::once(&self.max_ratio_bps).chain(self.merchant_max_ratio_bps.values());
        if ratios.into_iter().any(|r| *r > 10_000) || self.fee_rate_bps > 10_000 {
            return Err(SettingsError::Ratio);
        }
        let unknown = |map: &BTreeMap<String, String>, known: &[&str]| {
            map.iter()
                .find(|(_, r)| !known.contains(&r.as_str()))
                .map(|(a, r)| (a.clone(), r.clone()))
        };
        if let Some((account, reason)) = unknown(&self.refused_receivers, &FAIL_REASONS) {
            return Err(SettingsError::FailReason { field: "refused_receivers", account, reason });
        }
        if let Some((account, reason)) = unknown(&self.refused_returns, &returns::FAIL_REASONS) {
            return Err(SettingsError::FailReason { field: "refused_returns", account, reason });
        }
        if self.opening_available_balance < 0 {
            return Err(SettingsError::NegativeBalance);
        }
        Ok(())
    }
}

/// Why `POST /_sandbox/profitsharing/settings` refused a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SettingsError {
    #[error("ratios and fee rates are at most 10000 (1/10000 units)")]
    Ratio,
    #[error("{field}[{account}]: unknown fail reason {reason:?}")]
    FailReason { field: &'static str, account: String, reason: String },
    #[error("opening_available_balance cannot be negative")]
    NegativeBalance,
}

/// A receiver added by `receivers/add`.
#[derive(Debug, Clone, Serialize)]
struct Relation {
    appid: String,
    #[serde(rename = "type")]
    kind: String,
    account: String,
    /// The decrypted name, as WeChat reads it.
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    relation_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    custom_relation: Option<String>,
}

/// The frozen funds of one profit-sharing order.
#[derive(Debug, Clone, Serialize)]
struct Hold {
    mchid: String,
    transaction_id: String,
    out_trade_no: String,
    total: i64,
    fee: i64,
    /// total - fee: what was frozen.
    net: i64,
    /// Lines PENDING or SUCCESS.
    split: i64,
    /// Lines CLOSED: their money went back to the merchant.
    returned: i64,
    /// Refunds paid from the frozen funds.
    refunded_from_frozen: i64,
    /// Released to the merchant by unfreeze, `unfreeze_unsplit` or the freeze period's end.
    released: i64,
    /// No more splits: unfrozen, or the freeze period ended.
    finished: bool,
    split_requests: usize,
    #[serde(skip)]
    paid_at: OffsetDateTime,
}

impl Hold {
    fn unsplit(&self) -> i64 {
        if self.finished {
            0
        } else {
            (self.net - self.split - self.returned - self.refunded_from_frozen - self.released)
                .max(0)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum LineResult {
    Pending,
    Success,
    Closed,
}

#[derive(Debug, Clone, Serialize)]
struct Line {
    #[serde(rename = "type")]
    kind: String,
    account: String,
    amount: i64,
    description: String,
    result: LineResult,
    #[serde(skip_serializing_if = "Option::is_none")]
    fail_reason: Option<String>,
    detail_id: String,
    #[serde(skip)]
    create_time: OffsetDateTime,
    #[serde(skip)]
    finish_time: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum SplitState {
    Processing,
    Finished,
}

/// A split order (or an unfreeze, which is a split order of its own).
#[derive(Debug, Clone, Serialize)]
struct Split {
    mchid: String,
    transaction_id: String,
    out_order_no: String,
    order_id: String,
    state: SplitState,
    unfreeze: bool,
    receivers: Vec<Line>,
    /// The request body: a resend with the same `out_order_no` must carry the same.
    #[serde(skip)]
    params: Value,
}

impl Split {
    /// WeChat's `OrdersEntity`.
    fn entity(&self) -> Value {
        let receivers: Vec<Value> = self
            .receivers
            .iter()
            .map(|l| {
                let mut v = json!({
                    "amount": l.amount,
                    "description": l.description,
                    "type": l.kind,
                    "account": l.account,
                    "result": l.result,
                    "detail_id": l.detail_id,
                    "create_time": beijing_rfc3339(l.create_time),
                    "finish_time": beijing_rfc3339(l.finish_time.unwrap_or(l.create_time)),
                });
                if let Some(reason) = &l.fail_reason {
                    v["fail_reason"] = json!(reason);
                }
                v
            })
            .collect();
        json!({
            "transaction_id": self.transaction_id,
            "out_order_no": self.out_order_no,
            "order_id": self.order_id,
            "state": self.state,
            "receivers": receivers,
        })
    }
}

/// Everything profit sharing keeps, behind one lock. Lock order: the order book
/// (`Shared::book`) before this one, never the other way round.
#[derive(Debug, Default)]
pub(crate) struct Book {
    settings: ProfitSharingSettings,
    /// mchid -> (type, account) -> relation.
    receivers: BTreeMap<String, BTreeMap<(String, String), Relation>>,
    /// By transaction_id.
    holds: BTreeMap<String, Hold>,
    /// By (mchid, out_order_no).
    splits: BTreeMap<(String, String), Split>,
    /// What each receiver (type, account) has been paid by split lines that succeeded.
    balances: BTreeMap<(String, String), i64>,
    /// Each merchant's available (unfrozen) balance, from its first use on.
    available: BTreeMap<String, i64>,
    /// Return orders by (mchid, out_return_no).
    returns: BTreeMap<(String, String), returns::Return>,
    /// Split requests per merchant in the current second: (unix second, count).
    rate: BTreeMap<String, (i64, u32)>,
    /// Split queries answered 404 under the `not_found_queries` fault since it was set.
    not_found_served: u32,
}

impl Book {
    pub(crate) fn set_settings(&mut self, settings: ProfitSharingSettings) {
        self.settings = settings;
        self.not_found_served = 0;
    }

    /// Counts a split request; false when the merchant is over its per-second limit.
    fn within_rate(&mut self, mchid: &str, now: OffsetDateTime) -> bool {
        let limit = self.settings.split_requests_per_second;
        let second = now.unix_timestamp();
        let entry = self.rate.entry(mchid.to_owned()).or_insert((second, 0));
        if entry.0 != second {
            *entry = (second, 0);
        }
        entry.1 += 1;
        limit == 0 || entry.1 <= limit
    }

    fn available_mut(&mut self, mchid: &str) -> &mut i64 {
        let opening = self.settings.opening_available_balance;
        self.available.entry(mchid.to_owned()).or_insert(opening)
    }

    /// The hold of a paid profit-sharing order, made on first use; the freeze period's end
    /// releases what is left.
    fn hold_for(&mut self, order: &OrderFacts, now: OffsetDateTime) -> Option<&mut Hold> {
        let paid_at = order.paid_at?;
        if !order.profit_sharing {
            return None;
        }
        let fee_rate = i64::from(self.settings.fee_rate_bps);
        let freeze = Duration::from_secs(self.settings.freeze_seconds);
        let hold = self.holds.entry(order.transaction_id.clone()).or_insert_with(|| {
            let fee = (order.total * fee_rate + 5_000) / 10_000;
            Hold {
                mchid: order.mchid.clone(),
                transaction_id: order.transaction_id.clone(),
                out_trade_no: order.out_trade_no.clone(),
                total: order.total,
                fee,
                net: order.total - fee,
                split: 0,
                returned: 0,
                refunded_from_frozen: 0,
                released: 0,
                finished: false,
                split_requests: 0,
                paid_at,
            }
        });
        let mut expired = 0;
        if !hold.finished && now - hold.paid_at >= freeze {
            expired = hold.unsplit();
            hold.released += expired;
            hold.finished = true;
        }
        if expired > 0 {
            tracing::info!(transaction_id = %order.transaction_id, expired, "freeze period over: remainder released");
            *self.available_mut(&order.mchid) += expired;
        }
        self.holds.get_mut(&order.transaction_id)
    }
}

/// What profit sharing needs to know of a payment order.
struct OrderFacts {
    mchid: String,
    out_trade_no: String,
    transaction_id: String,
    total: i64,
    profit_sharing: bool,
    paid_at: Option<OffsetDateTime>,
}

impl OrderFacts {
    fn of(order: &Order) -> Self {
        Self {
            mchid: order.mchid.clone(),
            out_trade_no: order.out_trade_no.clone(),
            transaction_id: order.transaction_id.clone().unwrap_or_default(),
            total: order.total,
            profit_sharing: order.params["settle_info"]["profit_sharing"] == json!(true),
            paid_at: order.success_time.filter(|_| order.state.is_paid()),
        }
    }
}

fn unknown_fields(paths: Vec<String>) -> ApiError {
    ApiError::param("请求中含有未在API文档中定义的参数")
        .with_detail(json!({"location": null, "value": paths}))
}

/// Refuses fields the API does not define (WeChat: PARAM_ERROR naming them).
fn only_fields(v: &Value, allowed: &[&str], at: &str) -> Result<(), ApiError> {
    let Some(map) = v.as_object() else { return Ok(()) };
    let extra: Vec<String> = map
        .keys()
        .filter(|k| !allowed.contains(&k.as_str()))
        .map(|k| format!("{at}/{k}"))
        .collect();
    if extra.is_empty() { Ok(()) } else { Err(unknown_fields(extra)) }
}

/// The create body's fields (`/v3/pay/transactions/{jsapi,native,app,h5}`).
const CREATE_FIELDS: [&str; 14] = [
    "appid",
    "mchid",
    "description",
    "out_trade_no",
    "time_expire",
    "attach",
    "notify_url",
    "goods_tag",
    "support_fapiao",
    "amount",
    "payer",
    "detail",
    "scene_info",
    "settle_info",
];

/// Checks a create body as WeChat v3 does: undefined fields (the v2 top-level
/// `profit_sharing` among them) are refused, and `settle_info.profit_sharing` is a boolean.
pub(crate) fn check_create_body(body: &Value) -> Result<(), ApiError> {
    only_fields(body, &CREATE_FIELDS, "/body")?;
    if let Some(settle) = body.get("settle_info") {
        if !settle.is_object() {
            return Err(ApiError::param("settle_info格式错误"));
        }
        only_fields(settle, &["profit_sharing"], "/body/settle_info")?;
        if settle.get("profit_sharing").is_some_and(|p| !p.is_boolean()) {
            return Err(ApiError::param("settle_info.profit_sharing须为布尔值"));
        }
    }
    Ok(())
}

/// A refund of `order` as profit sharing allows it (WeChat's refund table, `RULE_LIMIT`):
/// from the frozen funds while they cover it, else from the available balance once the order
/// is finished. Called with the order book locked, after the refund's own checks passed.
pub(crate) fn draw_refund(shared: &Shared, order: &Order, amount: i64) -> Result<(), ApiError> {
    let facts = OrderFacts::of(order);
    let mut book = lock(&shared.profit);
    let now = OffsetDateTime::now_utc();
    let Some(hold) = book.hold_for(&facts, now) else { return Ok(()) };
    let unsplit = hold.unsplit();
    if hold.finished {
        let mchid = hold.mchid.clone();
        let available = book.available_mut(&mchid);
        if *available < amount {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "NOT_ENOUGH",
                "基本账户余额不足，请充值后重新发起",
            ));
        }
        *available -= amount;
    } else if hold.split == 0 && hold.returned == 0 {
        // Nothing split: any refund comes out of the frozen funds (WeChat's fee comes back too).
        hold.refunded_from_frozen += amount.min(unsplit);
    } else if amount <= unsplit {
        hold.refunded_from_frozen += amount;
    } else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "RULE_LIMIT",
            "申请退款金额大于剩余未分账金额,请等待分账完成后再试",
        ));
    }
    Ok(())
}

fn not_exists() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "RESOURCE_NOT_EXISTS", "记录不存在")
}

fn not_enough() -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "NOT_ENOUGH", "分账金额不足")
}

fn processing() -> ApiError {
    ApiError::invalid("订单处理中，请稍后重试")
}

fn text<'a>(v: &'a Value, name: &str, at: &str, max: usize) -> Result<&'a str, ApiError> {
    let s = v.get(name).and_then(Value::as_str).filter(|s| !s.is_empty()).ok_or_else(|| {
        ApiError::param(format!("输入源“{at}/{name}”映射到字段“{name}”必填性规则校验失败"))
    })?;
    if s.chars().count() > max {
        return Err(ApiError::param(format!("{name}超出长度限制({max})")));
    }
    Ok(s)
}

fn valid_out_order_no(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'*' | b'@' | b'|'))
}

/// The paid order with this transaction id, for the signing merchant.
fn order_facts(shared: &Shared, mchid: &str, transaction_id: &str) -> Result<OrderFacts, ApiError> {
    lock(&shared.book)
        .orders
        .values()
        .find(|o| o.mchid == mchid && o.transaction_id.as_deref() == Some(transaction_id))
        .map(OrderFacts::of)
        .ok_or_else(not_exists)
}

fn signed(shared: &Shared, v: &Verified, answer: &Value) -> Result<Response, ApiError> {
    shared.signed(v.signer, StatusCode::OK, answer.to_string().into_bytes())
}

fn query_param<'a>(uri: &'a OriginalUri, name: &str) -> Option<&'a str> {
    uri.0
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn create_bodies_refuse_the_v2_flag_and_unknown_fields() {
        let ok = json!({"appid": "wx", "settle_info": {"profit_sharing": true}});
        assert!(check_create_body(&ok).is_ok());
        let v2 = check_create_body(&json!({"appid": "wx", "profit_sharing": "Y"})).unwrap_err();
        assert_eq!(v2.code, "PARAM_ERROR");
        assert_eq!(v2.detail.unwrap()["value"], json!(["/body/profit_sharing"]));
        assert!(check_create_body(&json!({"settle_info": {"profit_sharing": "true"}})).is_err());
        assert!(check_create_body(&json!({"settle_info": {"x": true}})).is_err());
    }

    #[test]
    fn the_unsplit_amount_is_net_of_everything_taken() {
        let hold = Hold {
            mchid: "1".into(),
            transaction_id: "t".into(),
            out_trade_no: "o".into(),
            total: 10_000,
            fee: 60,
            net: 9_940,
            split: 1_000,
            returned: 500,
            refunded_from_frozen: 2_000,
            released: 0,
            finished: false,
            split_requests: 1,
            paid_at: OffsetDateTime::now_utc(),
        };
        assert_eq!(hold.unsplit(), 6_440);
        assert_eq!(Hold { finished: true, ..hold }.unsplit(), 0);
    }

    #[test]
    fn out_order_numbers_follow_the_documented_alphabet() {
        assert!(valid_out_order_no("P20150806125346"));
        assert!(valid_out_order_no("a_b-c*d@e|f"));
        assert!(!valid_out_order_no("a b"));
        assert!(!valid_out_order_no(&"1".repeat(65)));
    }
}

//! 商家分账 (merchant royalty): a trade created with `extend_params.royalty_freeze="true"` has
//! its funds frozen once paid; receivers are bound with `alipay.trade.royalty.relation.bind`;
//! `alipay.trade.order.settle` splits frozen money to them (`sync`: all or nothing, answered at
//! once; `async`: accepted, lines end one by one, with the `alipay.trade.order.settle.notify`
//! message sent to the app's application gateway), and `royalty_finish="true"` unfreezes the
//! rest. Every method goes through `/gateway.do`, verified and answered signed like the others.
//!
//! The `/_sandbox/royalty` control API shows relations, settles and balances and sets the rules'
//! values and faults ([`RoyaltySettings`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use paymux_mock_kit::notify::Scheduler;
use paymux_mock_kit::sync::lock;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::Shared;
use crate::protocol::{Node, Params, ResultCode};
use crate::trade::Refusal;

mod control;
mod message;
mod settle;

pub(crate) use control::{set_settings, show, show_receiver, show_settings};
use message::SettleMessage;
use settle::{on_settle_query, settle, settle_query};

/// Receivers per bind call, and per merchant (keleyu; uncertain).
const MAX_BIND_PER_CALL: usize = 20;
const MAX_RELATIONS: usize = 20_000;

/// The royalty methods `/gateway.do` serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    Bind,
    Unbind,
    BatchQuery,
    RateQuery,
    Settle,
    SettleQuery,
    OnSettleQuery,
}

impl Method {
    pub(crate) fn parse(method: &str) -> Option<Self> {
        Some(match method {
            "alipay.trade.royalty.relation.bind" => Self::Bind,
            "alipay.trade.royalty.relation.unbind" => Self::Unbind,
            "alipay.trade.royalty.relation.batchquery" => Self::BatchQuery,
            "alipay.trade.royalty.rate.query" => Self::RateQuery,
            "alipay.trade.order.settle" => Self::Settle,
            "alipay.trade.order.settle.query" => Self::SettleQuery,
            "alipay.trade.order.onsettle.query" => Self::OnSettleQuery,
            _ => return None,
        })
    }
}

/// The rules' values and the faults, as `POST /_sandbox/royalty/settings` sets them (a POST
/// replaces them all).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoyaltySettings {
    /// `alipay.trade.royalty.rate.query`'s `max_ratio`, an integer percent; transfers of a
    /// trade above that share of its amount are refused (sub_code uncertain:
    /// `ACQ.INVALID_PARAMETER` here).
    pub max_ratio: u32,
    /// How long after the payment the first settle is accepted (about 30 s at Alipay); earlier
    /// ones get `ACQ.TRADE_SETTLE_ERROR`, which tells the caller to re-send.
    pub min_wait_ms: u64,
    /// How long `async` settle lines stay PROCESSING.
    pub processing_ms: u64,
    /// The application gateway (应用网关) subscribed to `alipay.trade.order.settle.notify`;
    /// `None`: no settle messages (paymux then polls `alipay.trade.order.settle.query`).
    pub app_gateway_url: Option<String>,
    /// The freeze period, after which what is still frozen unfreezes by itself and the trade
    /// can no longer be split (30 days for 直付通 per a second-hand source; uncertain for
    /// 商家分账). `None`: the funds stay frozen until `royalty_finish`.
    pub freeze_seconds: Option<u64>,
    /// Fault: receiver accounts (`trans_in`) whose lines fail, with the error code to report
    /// (`TXN_RESULT_ACCOUNT_BALANCE_NOT_ENOUGH`, `TXN_RESULT_ACCOUNT_STATUS_NOT_VALID` or
    /// `TXN_RESULT_RECEIVER_NOT_CERTIFY`). A `sync` settle naming one fails as a whole with
    /// that code behind `ACQ.`; an `async` one fails that line only.
    pub refused_receivers: BTreeMap<String, String>,
}

impl Default for RoyaltySettings {
    fn default() -> Self {
        Self {
            max_ratio: 30,
            min_wait_ms: 30_000,
            processing_ms: 1_000,
            app_gateway_url: None,
            freeze_seconds: None,
            refused_receivers: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
struct Relation {
    #[serde(rename = "type")]
    kind: String,
    account: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    memo: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum LineState {
    Processing,
    Success,
    Fail,
}

#[derive(Debug, Clone, Serialize)]
struct Line {
    trans_in: String,
    trans_in_type: String,
    amount_fen: i64,
    state: LineState,
    detail_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_desc: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    desc: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    execute_dt: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Mode {
    Sync,
    Async,
}

/// One `alipay.trade.order.settle`.
#[derive(Debug, Clone, Serialize)]
struct Settle {
    app_id: String,
    out_request_no: String,
    settle_no: String,
    trade_no: String,
    mode: Mode,
    finish: bool,
    lines: Vec<Line>,
    operation_dt: String,
    /// A `sync` settle refused as a whole: its sub_code and sub_msg, answered again on resend.
    #[serde(skip_serializing_if = "Option::is_none")]
    refused: Option<(String, String)>,
    #[serde(skip)]
    biz: Map<String, Value>,
}

/// The frozen funds of one trade.
#[derive(Debug, Clone, Default, Serialize)]
struct Hold {
    /// Transfers not failed.
    settled_fen: i64,
    /// Unfrozen to the merchant by `royalty_finish`.
    released_fen: i64,
    finished: bool,
    mode: Option<Mode>,
    settles: usize,
}

#[derive(Debug, Default)]
struct Book {
    settings: RoyaltySettings,
    /// app_id -> (type, account) -> relation.
    relations: BTreeMap<String, BTreeMap<(String, String), Relation>>,
    /// By trade_no.
    holds: BTreeMap<String, Hold>,
    /// By (app_id, out_request_no).
    settles: BTreeMap<(String, String), Settle>,
    /// What each receiver account was paid by lines that succeeded.
    balances: BTreeMap<String, i64>,
    /// What `royalty_finish` unfroze to each merchant (seller).
    released: BTreeMap<String, i64>,
}

/// Royalty state and the scheduler of its settle messages.
pub(crate) struct Royalty {
    book: Mutex<Book>,
    notifier: Scheduler<SettleMessage>,
}

impl Royalty {
    pub(crate) fn new(delays: Vec<Duration>) -> Self {
        Self { book: Mutex::new(Book::default()), notifier: Scheduler::new(delays) }
    }

    fn book(&self) -> MutexGuard<'_, Book> {
        lock(&self.book)
    }

    pub(crate) fn set_settings(&self, settings: RoyaltySettings) {
        self.book().settings = settings;
    }
}

fn refusal(sub_code: &'static str, sub_msg: impl Into<String>) -> Refusal {
    Refusal { code: ResultCode::BusinessFailed, sub_code, sub_msg: sub_msg.into() }
}

fn missing(name: &str) -> Refusal {
    Refusal {
        code: ResultCode::MissingArguments,
        sub_code: "isv.missing-parameter",
        sub_msg: format!("缺少必选参数 {name}"),
    }
}

fn invalid(message: impl Into<String>) -> Refusal {
    refusal("ACQ.INVALID_PARAMETER", message)
}

fn text(biz: &Map<String, Value>, name: &str) -> Option<String> {
    match biz.get(name)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn required(biz: &Map<String, Value>, name: &str) -> Result<String, Refusal> {
    text(biz, name).ok_or_else(|| missing(name))
}

fn valid_request_no(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn valid_user_id(s: &str) -> bool {
    s.len() == 16 && s.starts_with("2088") && s.bytes().all(|b| b.is_ascii_digit())
}

/// Whether a create's `extend_params.royalty_freeze` asks for the funds to be frozen.
pub(crate) fn asks_freeze(biz: &Map<String, Value>) -> bool {
    biz.get("extend_params").and_then(|e| e.get("royalty_freeze")).and_then(Value::as_str)
        == Some("true")
}

/// Runs a royalty method for `app_id`.
pub(crate) fn call(
    shared: &Arc<Shared>,
    method: Method,
    params: &Params,
    biz: &Map<String, Value>,
) -> Result<Node, Refusal> {
    let app_id = params.get("app_id").cloned().unwrap_or_default();
    match method {
        Method::Bind | Method::Unbind => bind(shared, &app_id, biz, method == Method::Bind),
        Method::BatchQuery => batch_query(shared, &app_id, biz),
        Method::RateQuery => Ok(Node::success()
            .field("user_id", shared.config.seller_id.clone())
            .json_field("max_ratio", json!(shared.royalty.book().settings.max_ratio))),
        Method::Settle => settle(shared, &app_id, biz),
        Method::SettleQuery => settle_query(shared, &app_id, biz),
        Method::OnSettleQuery => on_settle_query(shared, &app_id, biz),
    }
}

fn bind(
    shared: &Shared,
    app_id: &str,
    biz: &Map<String, Value>,
    bind: bool,
) -> Result<Node, Refusal> {
    let out_request_no = required(biz, "out_request_no")?;
    if out_request_no.len() > 32 || !valid_request_no(&out_request_no) {
        return Err(invalid("out_request_no: 至多32位字母、数字或下划线"));
    }
    let list = biz
        .get("receiver_list")
        .and_then(Value::as_array)
        .filter(|l| !l.is_empty())
        .ok_or_else(|| missing("receiver_list"))?;
    if list.len() > MAX_BIND_PER_CALL {
        return Err(invalid("receiver_list: 单次至多20个分账接收方"));
    }
    let mut relations = Vec::with_capacity(list.len());
    for item in list {
        let item = item.as_object().ok_or_else(|| invalid("receiver_list格式错误"))?;
        let kind = required(item, "type")?;
        let account = required(item, "account")?;
        let name = text(item, "name");
        match kind.as_str() {
            "userId" if !valid_user_id(&account) => {
                return Err(invalid("account: userId须为2088开头的16位数字"));
            }
            "loginName" if bind && name.is_none() => {
                return Err(invalid("loginName类型的分账接收方须填写name"));
            }
            "userId" | "loginName" | "openId" => {}
            _ => return Err(invalid("type须为userId、loginName或openId")),
        }
        relations.push(Relation { kind, account, name, memo: text(item, "memo") });
    }
    let mut book = shared.royalty.book();
    let set = book.relations.entry(app_id.to_owned()).or_default();
    for r in relations {
        let key = (r.kind.clone(), r.account.clone());
        if bind {
            if !set.contains_key(&key) && set.len() >= MAX_RELATIONS {
                return Err(refusal("ACQ.INVALID_PARAMETER", "分账关系数量已达上限"));
            }
            set.insert(key, r);
        } else {
            set.remove(&key);
        }
    }
    tracing::info!(app_id, out_request_no, bind, "royalty relations changed");
    Ok(Node::success().field("result_code", "SUCCESS"))
}

fn batch_query(shared: &Shared, app_id: &str, biz: &Map<String, Value>) -> Result<Node, Refusal> {
    let page = |name: &str, default: usize| -> Result<usize, Refusal> {
        match text(biz, name) {
            None => Ok(default),
            Some(t) => t
                .parse()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| invalid(format!("{name}须为正整数"))),
        }
    };
    let (page_num, page_size) = (page("page_num", 1)?, page("page_size", 20)?.min(100));
    let book = shared.royalty.book();
    let all: Vec<&Relation> =
        book.relations.get(app_id).map(|s| s.values().collect()).unwrap_or_default();
    let list: Vec<Value> = all
        .iter()
        .skip((page_num - 1) * page_size)
        .take(page_size)
        .map(|r| json!({"type": r.kind, "account": r.account, "memo": r.memo.clone().unwrap_or_default()}))
        .collect();
    Ok(Node::success()
        .field("result_code", "SUCCESS")
        .json_field("receiver_list", Value::Array(list))
        .json_field("total_page_num", json!(all.len().div_ceil(page_size)))
        .json_field("total_record_num", json!(all.len()))
        .json_field("current_page_num", json!(page_num))
        .json_field("current_page_size", json!(page_size)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_string_true_freezes() {
        let biz = |v: Value| v.as_object().cloned().unwrap_or_default();
        assert!(asks_freeze(&biz(json!({"extend_params": {"royalty_freeze": "true"}}))));
        assert!(!asks_freeze(&biz(json!({"extend_params": {"royalty_freeze": true}}))));
        assert!(!asks_freeze(&biz(json!({"extend_params": {"royalty_freeze": "false"}}))));
        assert!(!asks_freeze(&biz(json!({}))));
    }

    #[test]
    fn user_ids_are_2088_and_twelve_digits() {
        assert!(valid_user_id("2088000000000101"));
        assert!(!valid_user_id("2089000000000101"));
        assert!(!valid_user_id("208800000000010"));
        assert!(valid_request_no("bind_01"));
        assert!(!valid_request_no("bind-01"));
    }
}

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

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use paymux_mock_kit::notify::{Notification, Scheduler};
use paymux_mock_kit::random_digits;
use paymux_mock_kit::sync::lock;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use crate::Shared;
use crate::protocol::{
    Node, Params, ResultCode, format_beijing, format_yuan, notification_sign_content, parse_yuan,
};
use crate::trade::{Refusal, TradeStatus};

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

/// What a settle needs of the trade.
struct TradeFacts {
    trade_no: String,
    total_fen: i64,
    refunded_fen: i64,
    freeze: bool,
    paid_at: OffsetDateTime,
}

/// The paid trade `trade_no` of the app `app_id` (another app's trade does not exist for it).
fn trade_facts(shared: &Shared, app_id: &str, trade_no: &str) -> Result<TradeFacts, Refusal> {
    let trades = shared.trades();
    let order = trades
        .all()
        .into_iter()
        .find(|o| o.trade_no == trade_no && o.exists && o.request.app_id == app_id)
        .ok_or_else(|| refusal("ACQ.TRADE_NOT_EXIST", "交易不存在"))?;
    let paid_at = order
        .paid_at
        .filter(|_| order.status == TradeStatus::TradeSuccess)
        .ok_or_else(|| refusal("ACQ.TRADE_STATUS_ERROR", "交易状态不合法"))?;
    Ok(TradeFacts {
        trade_no: order.trade_no.clone(),
        total_fen: order.request.total_fen,
        refunded_fen: order.refunded_fen(),
        freeze: order.request.royalty_freeze,
        paid_at,
    })
}

impl Hold {
    /// What is still frozen and can be split.
    fn unsettled(&self, trade: &TradeFacts) -> i64 {
        if self.finished || !trade.freeze {
            return 0;
        }
        (trade.total_fen - trade.refunded_fen - self.settled_fen - self.released_fen).max(0)
    }

    /// What a transfer may take: the frozen remainder, or for a trade that froze nothing, what
    /// was paid and not refunded or split (Alipay then takes it from the merchant's balance).
    fn splittable(&self, trade: &TradeFacts) -> i64 {
        if trade.freeze {
            self.unsettled(trade)
        } else {
            (trade.total_fen - trade.refunded_fen - self.settled_fen).max(0)
        }
    }
}

/// One `royalty_parameters` item, checked.
struct Wanted {
    trans_in: String,
    trans_in_type: String,
    amount_fen: i64,
    desc: Option<String>,
}

fn parse_parameters(
    items: &[Value],
    trade: &TradeFacts,
    relations: &BTreeMap<(String, String), Relation>,
) -> Result<Vec<Wanted>, Refusal> {
    let mut wanted = Vec::with_capacity(items.len());
    for item in items {
        let item = item.as_object().ok_or_else(|| invalid("royalty_parameters格式错误"))?;
        match text(item, "royalty_type").as_deref() {
            None | Some("transfer") => {}
            Some(other) => {
                return Err(invalid(format!("royalty_type {other}: 沙箱仅支持transfer(普通分账)")));
            }
        }
        let trans_in = required(item, "trans_in")?;
        let trans_in_type = text(item, "trans_in_type").unwrap_or_else(|| "userId".into());
        if !matches!(trans_in_type.as_str(), "userId" | "loginName" | "openId") {
            return Err(invalid(
                "trans_in_type须为userId、loginName或openId(商家分账不支持cardAliasNo)",
            ));
        }
        if !relations.contains_key(&(trans_in_type.clone(), trans_in.clone())) {
            return Err(refusal(
                "ACQ.INVALID_PARAMETER",
                format!("分账收入方{trans_in}未绑定分账关系"),
            ));
        }
        let amount_fen = match (text(item, "amount"), text(item, "amount_percentage")) {
            (Some(amount), None) => {
                parse_yuan(&amount).map_err(|e| invalid(format!("amount: {e}")))?
            }
            (None, Some(pct)) => {
                let pct: i64 = pct
                    .parse()
                    .ok()
                    .filter(|p| (1..=100).contains(p))
                    .ok_or_else(|| invalid("amount_percentage须为1到100的整数"))?;
                trade.total_fen * pct / 100
            }
            _ => return Err(invalid("amount和amount_percentage须且仅须填写一个")),
        };
        wanted.push(Wanted { trans_in, trans_in_type, amount_fen, desc: text(item, "desc") });
    }
    Ok(wanted)
}

fn settle(shared: &Arc<Shared>, app_id: &str, biz: &Map<String, Value>) -> Result<Node, Refusal> {
    let out_request_no = required(biz, "out_request_no")?;
    if !valid_request_no(&out_request_no) {
        return Err(invalid("out_request_no: 至多64位字母、数字或下划线"));
    }
    let trade_no = required(biz, "trade_no")?;
    let mode = match text(biz, "royalty_mode").as_deref() {
        None | Some("sync") => Mode::Sync,
        Some("async") => Mode::Async,
        Some(_) => return Err(invalid("royalty_mode须为sync或async")),
    };
    let finish = match biz.get("extend_params").and_then(|e| e.get("royalty_finish")) {
        None => false,
        Some(Value::String(s)) if s == "true" => true,
        Some(Value::String(s)) if s == "false" => false,
        Some(_) => return Err(invalid("extend_params.royalty_finish须为\"true\"或\"false\"")),
    };
    let items: Vec<Value> = match biz.get("royalty_parameters") {
        None => Vec::new(),
        Some(Value::Array(items)) => items.clone(),
        Some(_) => return Err(invalid("royalty_parameters须为数组")),
    };
    if items.is_empty() && !finish {
        return Err(missing("royalty_parameters"));
    }
    let limit = if mode == Mode::Sync { 5 } else { 50 };
    if items.len() > limit {
        return Err(invalid(format!(
            "{} 模式单次至多{limit}个分账收入方",
            if mode == Mode::Sync { "sync" } else { "async" }
        )));
    }
    let trade = trade_facts(shared, app_id, &trade_no)?;
    let key = (app_id.to_owned(), out_request_no.clone());
    let now = OffsetDateTime::now_utc();
    let mut book = shared.royalty.book();
    if let Some(existing) = book.settles.get(&key) {
        if existing.biz != *biz {
            return Err(refusal(
                "ACQ.CONTEXT_INCONSISTENT",
                "请求信息被篡改: out_request_no已用于另一笔分账",
            ));
        }
        return match &existing.refused {
            Some((code, msg)) => Err(Refusal {
                code: ResultCode::BusinessFailed,
                sub_code: sub_code_of(code),
                sub_msg: msg.clone(),
            }),
            None => Ok(settle_answer(existing)),
        };
    }
    if now - trade.paid_at < Duration::from_millis(book.settings.min_wait_ms) {
        return Err(refusal(
            "ACQ.TRADE_SETTLE_ERROR",
            "分账处理中，请稍后使用相同的out_request_no重试",
        ));
    }
    let relations = book.relations.get(app_id).cloned().unwrap_or_default();
    let wanted = parse_parameters(&items, &trade, &relations)?;
    let settings = book.settings.clone();
    let hold = book.holds.entry(trade.trade_no.clone()).or_default();
    if hold.mode.is_some_and(|m| m != mode) && !wanted.is_empty() {
        return Err(invalid("同一笔交易不能混用sync和async分账"));
    }
    let per_trade = if mode == Mode::Sync { 50 } else { 300 };
    if hold.settles >= per_trade {
        return Err(invalid(format!("该交易分账次数已达上限({per_trade})")));
    }
    let asked: i64 = wanted.iter().map(|w| w.amount_fen).sum();
    let cap = trade.total_fen * i64::from(settings.max_ratio) / 100;
    if asked > 0 && hold.settled_fen + asked > cap {
        return Err(invalid(format!("分账金额超过最大分账比例({}%)", settings.max_ratio)));
    }
    let short = asked > hold.splittable(&trade);
    let exec = format_beijing(now);
    let mut lines: Vec<Line> = wanted
        .into_iter()
        .map(|w| Line {
            trans_in: w.trans_in,
            trans_in_type: w.trans_in_type,
            amount_fen: w.amount_fen,
            state: LineState::Processing,
            detail_id: format!(
                "{}{}",
                &trade.trade_no[..8.min(trade.trade_no.len())],
                random_digits(24)
            ),
            error_code: None,
            error_desc: None,
            desc: w.desc,
            execute_dt: None,
        })
        .collect();
    let fail = |line: &mut Line, code: &str| {
        line.state = LineState::Fail;
        line.error_code = Some(code.to_owned());
        line.error_desc = Some(error_desc(code).to_owned());
        line.execute_dt = Some(exec.clone());
    };
    let mut refused = None;
    match mode {
        Mode::Sync => {
            // All or nothing, decided now.
            let bad =
                lines.iter().find_map(|l| settings.refused_receivers.get(&l.trans_in).cloned());
            let cause =
                if short { Some("TXN_RESULT_ACCOUNT_BALANCE_NOT_ENOUGH".to_owned()) } else { bad };
            match cause {
                Some(code) => {
                    for line in &mut lines {
                        fail(line, &code);
                    }
                    refused = Some((format!("ACQ.{code}"), error_desc(&code).to_owned()));
                }
                None => {
                    for line in &mut lines {
                        line.state = LineState::Success;
                        line.execute_dt = Some(exec.clone());
                    }
                }
            }
        }
        Mode::Async if short => {
            return Err(refusal("ACQ.TXN_RESULT_ACCOUNT_BALANCE_NOT_ENOUGH", "分账余额不足"));
        }
        Mode::Async => {}
    }
    let taken: i64 =
        lines.iter().filter(|l| l.state != LineState::Fail).map(|l| l.amount_fen).sum();
    hold.settled_fen += taken;
    hold.settles += 1;
    if !lines.is_empty() {
        hold.mode = Some(mode);
    }
    let mut released = 0;
    if finish && refused.is_none() {
        released = hold.unsettled(&trade);
        hold.released_fen += released;
        hold.finished = true;
    }
    for line in lines.iter().filter(|l| l.state == LineState::Success) {
        *book.balances.entry(line.trans_in.clone()).or_default() += line.amount_fen;
    }
    if released > 0 {
        *book.released.entry(shared.config.seller_id.clone()).or_default() += released;
    }
    let record = Settle {
        app_id: app_id.to_owned(),
        out_request_no: out_request_no.clone(),
        settle_no: format!("{}002530020{}", &exec[..10].replace('-', ""), random_digits(13)),
        trade_no: trade.trade_no.clone(),
        mode,
        finish,
        lines,
        operation_dt: exec,
        refused: refused.clone(),
        biz: biz.clone(),
    };
    let answer = settle_answer(&record);
    let pending = record.lines.iter().any(|l| l.state == LineState::Processing);
    book.settles.insert(key.clone(), record);
    tracing::info!(app_id, out_request_no, trade_no, asked, released, ?mode, "settle recorded");
    if pending {
        let shared = shared.clone();
        let delay = Duration::from_millis(settings.processing_ms);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            finish_async(&shared, &key);
        });
    }
    match refused {
        Some((code, msg)) => Err(Refusal {
            code: ResultCode::BusinessFailed,
            sub_code: sub_code_of(&code),
            sub_msg: msg,
        }),
        None => Ok(answer),
    }
}

/// The line error codes the mock reports (the first is documented; the others are the
/// mock's names for a receiver Alipay refuses: uncertain).
const LINE_ERRORS: [&str; 3] = [
    "TXN_RESULT_ACCOUNT_BALANCE_NOT_ENOUGH",
    "TXN_RESULT_ACCOUNT_STATUS_NOT_VALID",
    "TXN_RESULT_RECEIVER_NOT_CERTIFY",
];

/// A refused sync settle's sub_code: its lines' error code with `ACQ.` in front.
fn sub_code_of(code: &str) -> &'static str {
    match code {
        "ACQ.TXN_RESULT_ACCOUNT_STATUS_NOT_VALID" => "ACQ.TXN_RESULT_ACCOUNT_STATUS_NOT_VALID",
        "ACQ.TXN_RESULT_RECEIVER_NOT_CERTIFY" => "ACQ.TXN_RESULT_RECEIVER_NOT_CERTIFY",
        _ => "ACQ.TXN_RESULT_ACCOUNT_BALANCE_NOT_ENOUGH",
    }
}

fn error_desc(code: &str) -> &'static str {
    match code {
        "TXN_RESULT_ACCOUNT_BALANCE_NOT_ENOUGH" => "分账余额不足",
        "TXN_RESULT_ACCOUNT_STATUS_NOT_VALID" => "分账收入方账户状态异常",
        "TXN_RESULT_RECEIVER_NOT_CERTIFY" => "分账收入方未实名认证",
        _ => "分账失败",
    }
}

fn settle_answer(s: &Settle) -> Node {
    Node::success().field("trade_no", s.trade_no.clone()).field("settle_no", s.settle_no.clone())
}

/// The async lines end: SUCCESS, or FAIL for a receiver the fault refuses (its money stays
/// frozen); then the settle message goes to the application gateway, if one is set.
fn finish_async(shared: &Arc<Shared>, key: &(String, String)) {
    let now = format_beijing(OffsetDateTime::now_utc());
    let (settle, url) = {
        let mut book = shared.royalty.book();
        let refused = book.settings.refused_receivers.clone();
        let url = book.settings.app_gateway_url.clone();
        let Some(settle) = book.settles.get_mut(key) else { return };
        let mut failed = 0;
        for line in settle.lines.iter_mut().filter(|l| l.state == LineState::Processing) {
            line.execute_dt = Some(now.clone());
            match refused.get(&line.trans_in) {
                Some(code) => {
                    line.state = LineState::Fail;
                    line.error_code = Some(code.clone());
                    line.error_desc = Some(error_desc(code).to_owned());
                    failed += line.amount_fen;
                }
                None => line.state = LineState::Success,
            }
        }
        let settle = settle.clone();
        let mut unfrozen = 0;
        if let Some(hold) = book.holds.get_mut(&settle.trade_no) {
            hold.settled_fen -= failed;
            // Already finished (royalty_finish): what a failed line kept is unfrozen too.
            if hold.finished {
                hold.released_fen += failed;
                unfrozen = failed;
            }
        }
        if unfrozen > 0 {
            *book.released.entry(shared.config.seller_id.clone()).or_default() += unfrozen;
        }
        for line in settle.lines.iter().filter(|l| l.state == LineState::Success) {
            *book.balances.entry(line.trans_in.clone()).or_default() += line.amount_fen;
        }
        (settle, url)
    };
    tracing::info!(out_request_no = %settle.out_request_no, "async settle finished");
    if let Some(url) = url {
        let reorder = shared.faults().reorder_notifications;
        let message =
            SettleMessage { shared: shared.clone(), url, fields: message_fields(&settle) };
        shared.royalty.notifier.dispatch(message, 1, reorder);
    }
}

fn detail_list(s: &Settle, shared: &Shared) -> Value {
    Value::Array(
        s.lines
            .iter()
            .map(|l| {
                let mut v = json!({
                    "operation_type": "transfer",
                    "trans_out": shared.config.seller_id,
                    "trans_out_type": "userId",
                    "trans_in": l.trans_in,
                    "trans_in_type": l.trans_in_type,
                    "amount": format_yuan(l.amount_fen),
                    "state": l.state,
                    "detail_id": l.detail_id,
                });
                if let Some(dt) = &l.execute_dt {
                    v["execute_dt"] = json!(dt);
                }
                if let (Some(code), Some(desc)) = (&l.error_code, &l.error_desc) {
                    v["error_code"] = json!(code);
                    v["error_desc"] = json!(desc);
                }
                v
            })
            .collect(),
    )
}

fn settle_query(shared: &Shared, app_id: &str, biz: &Map<String, Value>) -> Result<Node, Refusal> {
    let settle_no = text(biz, "settle_no");
    let by_request = (text(biz, "out_request_no"), text(biz, "trade_no"));
    let book = shared.royalty.book();
    let found = match (settle_no, by_request) {
        (Some(no), _) => book.settles.values().find(|s| s.app_id == app_id && s.settle_no == no),
        (None, (Some(out_request_no), Some(trade_no))) => book
            .settles
            .get(&(app_id.to_owned(), out_request_no))
            .filter(|s| s.trade_no == trade_no),
        (None, _) => return Err(missing("settle_no 或 out_request_no + trade_no")),
    };
    let s = found.ok_or_else(|| refusal("ACQ.TRADE_NOT_EXIST", "分账单不存在"))?;
    Ok(Node::success()
        .field("out_request_no", s.out_request_no.clone())
        .field("settle_no", s.settle_no.clone())
        .field("operation_dt", s.operation_dt.clone())
        .field("result_code", "SUCCESS")
        .json_field("royalty_detail_list", detail_list(s, shared)))
}

fn on_settle_query(
    shared: &Shared,
    app_id: &str,
    biz: &Map<String, Value>,
) -> Result<Node, Refusal> {
    let trade_no = required(biz, "trade_no")?;
    let trade = trade_facts(shared, app_id, &trade_no)?;
    let book = shared.royalty.book();
    let unsettled = book.holds.get(&trade_no).cloned().unwrap_or_default().unsettled(&trade);
    Ok(Node::success().field("unsettled_amount", format_yuan(unsettled)))
}

/// The form fields of the `alipay.trade.order.settle.notify` message, unsigned.
fn message_fields(s: &Settle) -> Params {
    let content = json!({
        "out_request_no": s.out_request_no,
        "settle_no": s.settle_no,
        "trade_no": s.trade_no,
        "operation_dt": s.operation_dt,
        "royalty_detail_list": s.lines.iter().map(|l| {
            let mut v = json!({
                "operation_type": "transfer",
                "trans_in": l.trans_in,
                "amount": format_yuan(l.amount_fen),
                "state": l.state,
                "detail_id": l.detail_id,
            });
            if let Some(dt) = &l.execute_dt {
                v["execute_dt"] = json!(dt);
            }
            if let (Some(code), Some(desc)) = (&l.error_code, &l.error_desc) {
                v["error_code"] = json!(code);
                v["error_desc"] = json!(desc);
            }
            v
        }).collect::<Vec<_>>(),
    });
    let now = OffsetDateTime::now_utc();
    let mut fields = Params::new();
    for (k, v) in [
        ("charset", "utf-8".to_owned()),
        ("biz_content", content.to_string()),
        ("msg_method", "alipay.trade.order.settle.notify".to_owned()),
        ("utc_timestamp", (now.unix_timestamp_nanos() / 1_000_000).to_string()),
        ("version", "1.1".to_owned()),
        ("sign_type", "RSA2".to_owned()),
        (
            "notify_id",
            format!("{}{}", &format_beijing(now)[..10].replace('-', ""), random_digits(24)),
        ),
        ("app_id", s.app_id.clone()),
    ] {
        fields.insert(k.to_owned(), v);
    }
    fields
}

/// A settle message on its way to the application gateway; `success` stops the retries.
pub(crate) struct SettleMessage {
    shared: Arc<Shared>,
    url: String,
    fields: Params,
}

impl Notification for SettleMessage {
    async fn send(&self, attempt: usize) -> bool {
        if self.shared.faults().drop_notifications {
            return false;
        }
        // Signed like trade notifications: everything but `sign` and `sign_type`.
        let Some(sign) = self.shared.sign(&notification_sign_content(&self.fields)) else {
            return false;
        };
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(self.fields.iter())
            .append_pair("sign", &sign)
            .finish();
        let sent = self
            .shared
            .http
            .post(&self.url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded; charset=utf-8",
            )
            .body(body)
            .send()
            .await;
        let acknowledged = match sent {
            Ok(answer) => answer.text().await.is_ok_and(|body| body.trim() == "success"),
            Err(error) => {
                tracing::debug!(%error, url = %self.url, "settle message send failed");
                false
            }
        };
        tracing::info!(attempt, acknowledged, url = %self.url, "settle message");
        acknowledged
    }

    fn finished(&self, acknowledged: bool) {
        if !acknowledged {
            tracing::warn!(url = %self.url, "settle message given up");
        }
    }

    fn label(&self) -> String {
        self.fields.get("notify_id").cloned().unwrap_or_default()
    }
}

/// `GET /_sandbox/royalty`: settings, relations, holds, settles and balances.
pub(crate) async fn show(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let book = shared.royalty.book();
    let settles: Vec<Value> = book
        .settles
        .values()
        .map(|s| {
            let mut v = json!(s);
            v["royalty_detail_list"] = detail_list(s, &shared);
            v
        })
        .collect();
    Json(json!({
        "settings": book.settings,
        "relations": book.relations.iter()
            .map(|(app, set)| (app.clone(), set.values().cloned().collect::<Vec<_>>()))
            .collect::<BTreeMap<_, _>>(),
        "holds": book.holds,
        "settles": settles,
        "balances": book.balances.iter().map(|(k, v)| (k.clone(), format_yuan(*v))).collect::<BTreeMap<_, _>>(),
        "released": book.released.iter().map(|(k, v)| (k.clone(), format_yuan(*v))).collect::<BTreeMap<_, _>>(),
    }))
}

/// `GET /_sandbox/receivers/{account}`: what one receiver was paid.
pub(crate) async fn show_receiver(
    State(shared): State<Arc<Shared>>,
    Path(account): Path<String>,
) -> Json<Value> {
    let book = shared.royalty.book();
    let fen = book.balances.get(&account).copied().unwrap_or(0);
    let lines: Vec<Value> = book
        .settles
        .values()
        .flat_map(|s| {
            s.lines.iter().filter(|l| l.trans_in == account).map(|l| {
                json!({"out_request_no": s.out_request_no, "trade_no": s.trade_no,
                       "amount": format_yuan(l.amount_fen), "state": l.state,
                       "error_code": l.error_code})
            })
        })
        .collect();
    Json(
        json!({"account": account, "balance": format_yuan(fen), "balance_fen": fen, "lines": lines}),
    )
}

pub(crate) async fn show_settings(State(shared): State<Arc<Shared>>) -> Json<RoyaltySettings> {
    Json(shared.royalty.book().settings.clone())
}

pub(crate) async fn set_settings(
    State(shared): State<Arc<Shared>>,
    body: Result<Json<RoyaltySettings>, JsonRejection>,
) -> Result<Json<RoyaltySettings>, (StatusCode, Json<Value>)> {
    let bad = |m: String| (StatusCode::BAD_REQUEST, Json(json!({"error": m})));
    let Json(settings) = body.map_err(|e| bad(e.body_text()))?;
    if settings.max_ratio > 100 {
        return Err(bad("max_ratio is a percent, 0..=100".into()));
    }
    if let Some((account, code)) =
        settings.refused_receivers.iter().find(|(_, c)| !LINE_ERRORS.contains(&c.as_str()))
    {
        return Err(bad(format!(
            "refused_receivers[{account}]: unknown error code {code:?}; known: {}",
            LINE_ERRORS.join(", ")
        )));
    }
    tracing::info!(?settings, "royalty settings set");
    shared.royalty.set_settings(settings.clone());
    Ok(Json(settings))
}

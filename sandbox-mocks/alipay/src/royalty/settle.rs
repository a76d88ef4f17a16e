//! `alipay.trade.order.settle` (sync and async, with `royalty_finish`), its query and the
//! unsettled amount.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use paymux_mock_kit::random_digits;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use super::message::SettleMessage;
use super::{
    Book, Hold, Line, LineState, Mode, Relation, Settle, invalid, missing, refusal, required, text,
    valid_request_no,
};
use crate::Shared;
use crate::protocol::{Node, ResultCode, format_beijing, format_yuan, parse_yuan};
use crate::trade::{Refusal, TradeStatus};

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

pub(super) fn settle(
    shared: &Arc<Shared>,
    app_id: &str,
    biz: &Map<String, Value>,
) -> Result<Node, Refusal> {
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
    expire(&mut book, &trade, &shared.config.seller_id, now);
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
pub(super) const LINE_ERRORS: [&str; 3] = [
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
        let message = SettleMessage::new(shared.clone(), url, &settle);
        shared.royalty.notifier.dispatch(message, 1, reorder);
    }
}

pub(super) fn detail_list(s: &Settle, shared: &Shared) -> Value {
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

pub(super) fn settle_query(
    shared: &Shared,
    app_id: &str,
    biz: &Map<String, Value>,
) -> Result<Node, Refusal> {
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

/// At the end of the freeze period (when one is set) what is still frozen unfreezes by itself.
fn expire(book: &mut Book, trade: &TradeFacts, seller_id: &str, now: OffsetDateTime) {
    let Some(seconds) = book.settings.freeze_seconds else { return };
    if !trade.freeze || now - trade.paid_at < Duration::from_secs(seconds) {
        return;
    }
    let hold = book.holds.entry(trade.trade_no.clone()).or_default();
    if hold.finished {
        return;
    }
    let left = hold.unsettled(trade);
    hold.released_fen += left;
    hold.finished = true;
    if left > 0 {
        tracing::info!(trade_no = %trade.trade_no, left, "freeze period over: remainder unfrozen");
        *book.released.entry(seller_id.to_owned()).or_default() += left;
    }
}

pub(super) fn on_settle_query(
    shared: &Shared,
    app_id: &str,
    biz: &Map<String, Value>,
) -> Result<Node, Refusal> {
    let trade_no = required(biz, "trade_no")?;
    let trade = trade_facts(shared, app_id, &trade_no)?;
    let mut book = shared.royalty.book();
    expire(&mut book, &trade, &shared.config.seller_id, OffsetDateTime::now_utc());
    let unsettled = book.holds.get(&trade_no).cloned().unwrap_or_default().unsettled(&trade);
    Ok(Node::success().field("unsettled_amount", format_yuan(unsettled)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trade(freeze: bool) -> TradeFacts {
        TradeFacts {
            trade_no: "2026112922001".into(),
            total_fen: 10_000,
            refunded_fen: 1_000,
            freeze,
            paid_at: OffsetDateTime::now_utc(),
        }
    }

    #[test]
    fn what_is_frozen_is_paid_less_refunds_splits_and_releases() {
        let hold = Hold { settled_fen: 2_000, released_fen: 500, ..Hold::default() };
        assert_eq!(hold.unsettled(&trade(true)), 6_500);
        assert_eq!(hold.splittable(&trade(true)), 6_500);
        let finished = Hold { finished: true, ..hold.clone() };
        assert_eq!(finished.unsettled(&trade(true)), 0);
        // Nothing frozen without royalty_freeze, yet a split may take what was paid.
        assert_eq!(hold.unsettled(&trade(false)), 0);
        assert_eq!(hold.splittable(&trade(false)), 7_000);
    }
}

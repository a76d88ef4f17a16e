//! Split orders: create (accepted PROCESSING, finished in the background), unfreeze, the query
//! and the unsplit amount.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use paymux_mock_kit::random_digits;
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::receivers::{check_appid, check_kind, decrypt_name, wechatpay_serial};
use super::{
    Book, Line, LineResult, OrderFacts, ProfitSharingSettings, Split, SplitState, St, lock,
    not_enough, not_exists, only_fields, order_facts, processing, query_param, signed, text,
    valid_out_order_no,
};
use crate::api::{Verified, finish};
use crate::notify;
use crate::protocol::{beijing_compact, beijing_rfc3339};
use crate::state::{ApiError, Shared};

/// WeChat's limits (profit-sharing `apilist.html`): receivers per split request, and split
/// requests per order.
const MAX_RECEIVERS_PER_REQUEST: usize = 50;

const MAX_REQUESTS_PER_ORDER: usize = 50;

/// One receiver line of a split request.
struct Wanted {
    kind: String,
    account: String,
    amount: i64,
    description: String,
}

/// The receiver lines of a split request; a personal receiver's `name` must decrypt under the
/// key `Wechatpay-Serial` names (WeChat then checks it against the real name).
fn parse_receivers(
    shared: &Shared,
    headers: &HeaderMap,
    v: &Verified,
    body: &Value,
) -> Result<Vec<Wanted>, ApiError> {
    let list = body
        .get("receivers")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::param("分账接收方列表格式错误"))?;
    if list.is_empty() || list.len() > MAX_RECEIVERS_PER_REQUEST {
        return Err(ApiError::param("分账接收方列表须有1到50个接收方"));
    }
    let mut wanted = Vec::with_capacity(list.len());
    for (i, r) in list.iter().enumerate() {
        let at = format!("/body/receivers/{i}");
        only_fields(r, &["type", "account", "name", "amount", "description"], &at)?;
        let kind = text(r, "type", &at, 32)?;
        check_kind(kind)?;
        if kind == "PERSONAL_OPENID" {
            let appid = body.get("appid").and_then(Value::as_str).unwrap_or_default();
            if appid.is_empty() {
                return Err(ApiError::param("接收方为PERSONAL_OPENID时须填写appid"));
            }
            check_appid(v, appid)?;
            if r.get("name").is_some() {
                decrypt_name(shared, wechatpay_serial(headers), text(r, "name", &at, 1024)?)?;
            }
        } else if r.get("name").is_some() {
            return Err(ApiError::param("name仅用于个人接收方"));
        }
        // A JSON number, an integer number of fen above zero: a string is a format error.
        let amount = r
            .get("amount")
            .and_then(Value::as_i64)
            .filter(|a| *a > 0)
            .ok_or_else(|| ApiError::param("分账接收方列表格式错误"))?;
        wanted.push(Wanted {
            kind: kind.to_owned(),
            account: text(r, "account", &at, 64)?.to_owned(),
            amount,
            description: text(r, "description", &at, 80)?.to_owned(),
        });
    }
    Ok(wanted)
}

fn new_order_id(now: OffsetDateTime) -> String {
    format!("30{}{}", &beijing_compact(now)[..8], random_digits(18))
}

fn new_detail_id() -> String {
    format!("36{}", random_digits(21))
}

/// The checks every split and unfreeze makes of the paid order behind `transaction_id`.
fn check_order(facts: &OrderFacts, settings: &ProfitSharingSettings) -> Result<(), ApiError> {
    if !facts.profit_sharing {
        return Err(ApiError::invalid("非分账订单不支持分账"));
    }
    let Some(paid_at) = facts.paid_at else { return Err(processing()) };
    if OffsetDateTime::now_utc() - paid_at < Duration::from_millis(settings.min_wait_ms) {
        return Err(processing());
    }
    Ok(())
}

/// An existing split order with this out_order_no: the same request gets its current state.
fn again(book: &Book, key: &(String, String), body: &Value) -> Option<Result<Value, ApiError>> {
    let existing = book.splits.get(key)?;
    Some(if existing.params == *body {
        Ok(existing.entity())
    } else {
        Err(ApiError::invalid("商户分账单号重复, 且参数与原分账单不一致"))
    })
}

/// `POST /v3/profitsharing/orders`: accepted PROCESSING, finished in the background.
pub(crate) async fn create_order(
    State(shared): St,
    headers: HeaderMap,
    v: Verified,
) -> Result<Response, ApiError> {
    let body = v.json()?;
    only_fields(
        &body,
        &["appid", "transaction_id", "out_order_no", "receivers", "unfreeze_unsplit"],
        "/body",
    )?;
    let transaction_id = text(&body, "transaction_id", "/body", 32)?;
    let out_order_no = text(&body, "out_order_no", "/body", 64)?;
    if !valid_out_order_no(out_order_no) {
        return Err(ApiError::param("out_order_no格式错误: 最长64位数字、字母、_-|*@"));
    }
    let unfreeze_unsplit = body
        .get("unfreeze_unsplit")
        .and_then(Value::as_bool)
        .ok_or_else(|| ApiError::param("unfreeze_unsplit必填, 须为布尔值"))?;
    let wanted = parse_receivers(&shared, &headers, &v, &body)?;
    let mchid = v.mchid().to_owned();
    let key = (mchid.clone(), out_order_no.to_owned());
    let facts = order_facts(&shared, &mchid, transaction_id)?;
    let now = OffsetDateTime::now_utc();
    let answer = {
        let mut book = lock(&shared.profit);
        if !book.within_rate(&mchid, now) {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "FREQUENCY_LIMITED",
                "分账请求频率超限，请降低频率后重试",
            ));
        }
        match again(&book, &key, &body) {
            Some(result) => result?,
            None => {
                check_order(&facts, &book.settings)?;
                let relations = book.receivers.get(&mchid).cloned().unwrap_or_default();
                let stranger = wanted.iter().any(|w| {
                    let own = w.kind == "MERCHANT_ID" && w.account == mchid;
                    !own && !relations.contains_key(&(w.kind.clone(), w.account.clone()))
                });
                if stranger {
                    return Err(ApiError::invalid(
                        "分账接收方关系不存在,请检查参数中每个接收方的关系",
                    ));
                }
                let settings = book.settings.clone();
                let splits_to_others: i64 = book
                    .splits
                    .values()
                    .filter(|s| s.transaction_id == transaction_id && !s.unfreeze)
                    .flat_map(|s| &s.receivers)
                    .filter(|l| l.result != LineResult::Closed)
                    .filter(|l| settings.self_split_counts_toward_ratio || l.account != mchid)
                    .map(|l| l.amount)
                    .sum();
                let hold = book.hold_for(&facts, now).ok_or_else(processing)?;
                if hold.finished {
                    return Err(not_enough());
                }
                if hold.split_requests >= MAX_REQUESTS_PER_ORDER {
                    return Err(ApiError::invalid("该订单分账次数已达上限(50)"));
                }
                let asked: i64 = wanted.iter().map(|w| w.amount).sum();
                if asked > hold.unsplit() {
                    return Err(not_enough());
                }
                let counted: i64 = wanted
                    .iter()
                    .filter(|w| settings.self_split_counts_toward_ratio || w.account != mchid)
                    .map(|w| w.amount)
                    .sum();
                let cap = i128::from(hold.total) * i128::from(settings.max_ratio(&mchid));
                if i128::from(splits_to_others + counted) * 10_000 > cap {
                    return Err(ApiError::invalid("分账金额超出最大分账比例"));
                }
                hold.split += asked;
                hold.split_requests += 1;
                let mut released = 0;
                if unfreeze_unsplit {
                    released = hold.unsplit();
                    hold.released += released;
                    hold.finished = true;
                }
                if released > 0 {
                    *book.available_mut(&mchid) += released;
                }
                let split = Split {
                    mchid: mchid.clone(),
                    transaction_id: transaction_id.to_owned(),
                    out_order_no: out_order_no.to_owned(),
                    order_id: new_order_id(now),
                    state: SplitState::Processing,
                    unfreeze: false,
                    receivers: wanted
                        .into_iter()
                        .map(|w| Line {
                            kind: w.kind,
                            account: w.account,
                            amount: w.amount,
                            description: w.description,
                            result: LineResult::Pending,
                            fail_reason: None,
                            detail_id: new_detail_id(),
                            create_time: now,
                            finish_time: None,
                        })
                        .collect(),
                    params: body.clone(),
                };
                let entity = split.entity();
                book.splits.insert(key.clone(), split);
                tracing::info!(%mchid, out_order_no, transaction_id, asked, released, "split accepted");
                schedule_finish(&shared, key, book.settings.processing_ms);
                entity
            }
        }
    };
    let response = signed(&shared, &v, &answer)?;
    Ok(finish(&shared, "profitsharing", response).await)
}

/// `POST /v3/profitsharing/orders/unfreeze`: the remainder goes to the merchant.
pub(crate) async fn unfreeze(State(shared): St, v: Verified) -> Result<Response, ApiError> {
    let body = v.json()?;
    only_fields(&body, &["transaction_id", "out_order_no", "description"], "/body")?;
    let transaction_id = text(&body, "transaction_id", "/body", 32)?;
    let out_order_no = text(&body, "out_order_no", "/body", 64)?;
    if !valid_out_order_no(out_order_no) {
        return Err(ApiError::param("out_order_no格式错误: 最长64位数字、字母、_-|*@"));
    }
    let description = text(&body, "description", "/body", 80)?;
    let mchid = v.mchid().to_owned();
    let key = (mchid.clone(), out_order_no.to_owned());
    let facts = order_facts(&shared, &mchid, transaction_id)?;
    let now = OffsetDateTime::now_utc();
    let answer = {
        let mut book = lock(&shared.profit);
        match again(&book, &key, &body) {
            Some(result) => result?,
            None => {
                check_order(&facts, &book.settings)?;
                let hold = book.hold_for(&facts, now).ok_or_else(processing)?;
                // Already finished (split with unfreeze_unsplit, unfrozen, expired): WeChat
                // answers 403 NOT_ENOUGH, which a resent unfreeze counts as done.
                if hold.finished {
                    return Err(not_enough());
                }
                let released = hold.unsplit();
                hold.released += released;
                hold.finished = true;
                if released == 0 {
                    // Everything was split (or refunded): nothing to unfreeze, the order is done.
                    return Err(not_enough());
                }
                *book.available_mut(&mchid) += released;
                let split = Split {
                    mchid: mchid.clone(),
                    transaction_id: transaction_id.to_owned(),
                    out_order_no: out_order_no.to_owned(),
                    order_id: new_order_id(now),
                    state: SplitState::Processing,
                    unfreeze: true,
                    receivers: vec![Line {
                        kind: "MERCHANT_ID".into(),
                        account: mchid.clone(),
                        amount: released,
                        description: description.to_owned(),
                        result: LineResult::Pending,
                        fail_reason: None,
                        detail_id: new_detail_id(),
                        create_time: now,
                        finish_time: None,
                    }],
                    params: body.clone(),
                };
                let entity = split.entity();
                book.splits.insert(key.clone(), split);
                tracing::info!(%mchid, out_order_no, transaction_id, released, "unfreeze accepted");
                schedule_finish(&shared, key, book.settings.processing_ms);
                entity
            }
        }
    };
    let response = signed(&shared, &v, &answer)?;
    Ok(finish(&shared, "profitsharing", response).await)
}

fn schedule_finish(shared: &Arc<Shared>, key: (String, String), after_ms: u64) {
    let shared = shared.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(after_ms)).await;
        finish_split(&shared, &key);
    });
}

/// The split order's lines end (SUCCESS, or CLOSED for a receiver the fault refuses, its
/// money back to the merchant), the order is FINISHED, and receivers that set a URL are told.
fn finish_split(shared: &Arc<Shared>, key: &(String, String)) {
    let now = OffsetDateTime::now_utc();
    let (split, urls) = {
        let mut book = lock(&shared.profit);
        let refused = book.settings.refused_receivers.clone();
        let urls = book.settings.receiver_notify_urls.clone();
        let Some(split) = book.splits.get_mut(key) else { return };
        if split.state == SplitState::Finished {
            return;
        }
        for line in &mut split.receivers {
            line.finish_time = Some(now);
            match refused.get(&line.account).filter(|_| !split.unfreeze) {
                Some(reason) => {
                    line.result = LineResult::Closed;
                    line.fail_reason = Some(reason.clone());
                }
                None => line.result = LineResult::Success,
            }
        }
        split.state = SplitState::Finished;
        let split = split.clone();
        for line in &split.receivers {
            let own = line.kind == "MERCHANT_ID" && line.account == split.mchid;
            match line.result {
                _ if split.unfreeze => {}
                LineResult::Closed => {
                    if let Some(hold) = book.holds.get_mut(&split.transaction_id) {
                        hold.split -= line.amount;
                        hold.returned += line.amount;
                    }
                    *book.available_mut(&split.mchid) += line.amount;
                }
                LineResult::Success if own => *book.available_mut(&split.mchid) += line.amount,
                LineResult::Success => {
                    *book.balances.entry((line.kind.clone(), line.account.clone())).or_default() +=
                        line.amount;
                }
                LineResult::Pending => {}
            }
        }
        (split, urls)
    };
    tracing::info!(mchid = %split.mchid, out_order_no = %split.out_order_no, "split finished");
    if split.unfreeze {
        return;
    }
    let out_trade_no = lock(&shared.profit)
        .holds
        .get(&split.transaction_id)
        .map(|h| h.out_trade_no.clone())
        .unwrap_or_default();
    for line in split.receivers.iter().filter(|l| l.result == LineResult::Success) {
        let Some(url) = urls.get(&line.account).filter(|_| line.kind == "MERCHANT_ID") else {
            continue;
        };
        let resource = json!({
            "mchid": split.mchid,
            "transaction_id": split.transaction_id,
            "order_id": split.order_id,
            "out_order_no": split.out_order_no,
            "receiver": {
                "type": line.kind,
                "account": line.account,
                "amount": line.amount,
                "description": line.description,
            },
            "success_time": beijing_rfc3339(now),
        });
        // To the receiver only, encrypted with its own APIv3 key (it must be registered).
        notify::dispatch(
            shared,
            &(line.account.clone(), out_trade_no.clone()),
            "TRANSACTION.SUCCESS",
            "分账",
            "transaction",
            url.clone(),
            &resource,
        );
    }
}

/// `GET /v3/profitsharing/orders/{out_order_no}?transaction_id=`.
pub(crate) async fn query_order(
    State(shared): St,
    Path(out_order_no): Path<String>,
    uri: OriginalUri,
    v: Verified,
) -> Result<Response, ApiError> {
    let transaction_id = query_param(&uri, "transaction_id")
        .ok_or_else(|| ApiError::param("缺少查询参数transaction_id"))?;
    let answer = {
        let mut book = lock(&shared.profit);
        if book.not_found_served < book.settings.not_found_queries {
            book.not_found_served += 1;
            None
        } else {
            book.splits
                .get(&(v.mchid().to_owned(), out_order_no))
                .filter(|s| s.transaction_id == transaction_id)
                .map(Split::entity)
        }
    }
    .ok_or_else(not_exists)?;
    let response = signed(&shared, &v, &answer)?;
    Ok(finish(&shared, "profitsharing_query", response).await)
}

/// `GET /v3/profitsharing/transactions/{transaction_id}/amounts`.
pub(crate) async fn amounts(
    State(shared): St,
    Path(transaction_id): Path<String>,
    v: Verified,
) -> Result<Response, ApiError> {
    let facts = order_facts(&shared, v.mchid(), &transaction_id)?;
    let unsplit = lock(&shared.profit)
        .hold_for(&facts, OffsetDateTime::now_utc())
        .map(|h| h.unsplit())
        .unwrap_or(0);
    let answer = json!({"transaction_id": transaction_id, "unsplit_amount": unsplit});
    let response = signed(&shared, &v, &answer)?;
    Ok(finish(&shared, "profitsharing_query", response).await)
}

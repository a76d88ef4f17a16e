//! Returns (分账回退): money a `MERCHANT_ID` receiver got from a finished split goes back to the
//! paying merchant. Accepted PROCESSING, then SUCCESS or FAILED with a reason; re-sent with the
//! same `out_return_no` while it is in progress.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{OriginalUri, Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use paymux_mock_kit::random_digits;
use serde::Serialize;
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::{
    LineResult, SplitState, St, lock, not_exists, only_fields, query_param, signed, text,
    valid_out_order_no,
};
use crate::api::{Verified, finish};
use crate::notify;
use crate::protocol::{beijing_compact, beijing_rfc3339};
use crate::state::{ApiError, Shared};

pub(super) const FAIL_REASONS: [&str; 3] =
    ["ACCOUNT_ABNORMAL", "BALANCE_NOT_ENOUGH", "TIME_OUT_CLOSED"];

/// At most this many returns per split order, within this many days of it.
const MAX_RETURNS_PER_SPLIT: usize = 50;
const RETURN_WINDOW_DAYS: i64 = 180;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum ReturnResult {
    Processing,
    Success,
    Failed,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Return {
    mchid: String,
    transaction_id: String,
    order_id: String,
    out_order_no: String,
    out_return_no: String,
    return_id: String,
    return_mchid: String,
    amount: i64,
    description: String,
    result: ReturnResult,
    #[serde(skip_serializing_if = "Option::is_none")]
    fail_reason: Option<String>,
    #[serde(skip)]
    create_time: OffsetDateTime,
    #[serde(skip)]
    finish_time: Option<OffsetDateTime>,
    #[serde(skip)]
    params: Value,
}

impl Return {
    /// WeChat's `ReturnOrdersEntity`.
    fn entity(&self) -> Value {
        let mut v = json!({
            "order_id": self.order_id,
            "out_order_no": self.out_order_no,
            "out_return_no": self.out_return_no,
            "return_id": self.return_id,
            "return_mchid": self.return_mchid,
            "amount": self.amount,
            "description": self.description,
            "result": self.result,
            "create_time": beijing_rfc3339(self.create_time),
            "finish_time": beijing_rfc3339(self.finish_time.unwrap_or(self.create_time)),
        });
        if let Some(reason) = &self.fail_reason {
            v["fail_reason"] = json!(reason);
        }
        v
    }

    fn counts(&self) -> bool {
        self.result != ReturnResult::Failed
    }
}

/// `POST /v3/profitsharing/return-orders`.
pub(crate) async fn create_return(State(shared): St, v: Verified) -> Result<Response, ApiError> {
    let body = v.json()?;
    only_fields(
        &body,
        &["out_order_no", "order_id", "out_return_no", "return_mchid", "amount", "description"],
        "/body",
    )?;
    let out_order_no = body.get("out_order_no").and_then(Value::as_str).filter(|s| !s.is_empty());
    let order_id = body.get("order_id").and_then(Value::as_str).filter(|s| !s.is_empty());
    if out_order_no.is_none() && order_id.is_none() {
        return Err(ApiError::param("out_order_no和order_id必须二选一"));
    }
    let out_return_no = text(&body, "out_return_no", "/body", 64)?;
    if !valid_out_order_no(out_return_no) {
        return Err(ApiError::param("out_return_no格式错误: 最长64位数字、字母、_-|*@"));
    }
    let return_mchid = text(&body, "return_mchid", "/body", 32)?;
    let amount = body
        .get("amount")
        .and_then(Value::as_i64)
        .filter(|a| *a > 0)
        .ok_or_else(|| ApiError::param("amount须为大于0的整数(单位:分)"))?;
    let description = text(&body, "description", "/body", 80)?;
    let mchid = v.mchid().to_owned();
    let key = (mchid.clone(), out_return_no.to_owned());
    let now = OffsetDateTime::now_utc();
    let answer = {
        let mut book = lock(&shared.profit);
        if let Some(existing) = book.returns.get(&key) {
            if existing.params != body {
                return Err(ApiError::invalid("商户回退单号重复, 且参数与原回退单不一致"));
            }
            existing.entity()
        } else {
            let split = book
                .splits
                .values()
                .find(|s| {
                    s.mchid == mchid
                        && !s.unfreeze
                        && out_order_no.is_none_or(|n| s.out_order_no == n)
                        && order_id.is_none_or(|n| s.order_id == n)
                })
                .cloned()
                .ok_or_else(not_exists)?;
            if split.state != SplitState::Finished {
                return Err(ApiError::invalid("分账单未完成, 不能回退"));
            }
            let finished = split.receivers.iter().filter_map(|l| l.finish_time).max();
            if finished
                .is_some_and(|t| now - t > Duration::from_secs(RETURN_WINDOW_DAYS as u64 * 86_400))
            {
                return Err(ApiError::invalid("已超过可回退时间(180天)"));
            }
            let paid: i64 = split
                .receivers
                .iter()
                .filter(|l| {
                    l.kind == "MERCHANT_ID"
                        && l.account == return_mchid
                        && l.result == LineResult::Success
                })
                .map(|l| l.amount)
                .sum();
            if paid == 0 {
                return Err(ApiError::invalid(
                    "回退方须为该分账单中分账成功的商户号接收方(个人接收方不支持回退)",
                ));
            }
            if book.settings.no_return_consent.iter().any(|a| a == return_mchid) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "NO_AUTH",
                    "回退方未开启同意分账回退",
                ));
            }
            let earlier: Vec<&Return> = book
                .returns
                .values()
                .filter(|r| r.mchid == mchid && r.order_id == split.order_id)
                .collect();
            if earlier.len() >= MAX_RETURNS_PER_SPLIT {
                return Err(ApiError::invalid("该分账单回退次数已达上限(50)"));
            }
            let returned: i64 = earlier
                .iter()
                .filter(|r| r.return_mchid == return_mchid && r.counts())
                .map(|r| r.amount)
                .sum();
            if returned + amount > paid {
                return Err(ApiError::invalid("回退金额超过该接收方的可回退金额"));
            }
            let record = Return {
                mchid: mchid.clone(),
                transaction_id: split.transaction_id.clone(),
                order_id: split.order_id.clone(),
                out_order_no: split.out_order_no.clone(),
                out_return_no: out_return_no.to_owned(),
                return_id: format!("40{}{}", &beijing_compact(now)[..8], random_digits(18)),
                return_mchid: return_mchid.to_owned(),
                amount,
                description: description.to_owned(),
                result: ReturnResult::Processing,
                fail_reason: None,
                create_time: now,
                finish_time: None,
                params: body.clone(),
            };
            let entity = record.entity();
            book.returns.insert(key.clone(), record);
            tracing::info!(%mchid, out_return_no, return_mchid, amount, "return accepted");
            let delay = Duration::from_millis(book.settings.processing_ms);
            let shared = shared.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                finish_return(&shared, &key);
            });
            entity
        }
    };
    let response = signed(&shared, &v, &answer)?;
    Ok(finish(&shared, "profitsharing", response).await)
}

/// The return ends: FAILED for a receiver the fault names or whose balance is short, else
/// SUCCESS, the money back in the merchant's available balance and the receiver told.
fn finish_return(shared: &Arc<Shared>, key: &(String, String)) {
    let now = OffsetDateTime::now_utc();
    let (done, url, out_trade_no) = {
        let mut guard = lock(&shared.profit);
        let book = &mut *guard;
        let Some(r) = book.returns.get_mut(key) else { return };
        if r.result != ReturnResult::Processing {
            return;
        }
        let balance =
            book.balances.entry(("MERCHANT_ID".to_owned(), r.return_mchid.clone())).or_default();
        let reason = match book.settings.refused_returns.get(&r.return_mchid) {
            Some(reason) => Some(reason.clone()),
            None if *balance < r.amount => Some("BALANCE_NOT_ENOUGH".to_owned()),
            None => None,
        };
        r.finish_time = Some(now);
        match reason {
            Some(reason) => {
                r.result = ReturnResult::Failed;
                r.fail_reason = Some(reason);
            }
            None => {
                r.result = ReturnResult::Success;
                *balance -= r.amount;
            }
        }
        let done = r.clone();
        if done.result == ReturnResult::Success {
            *book.available_mut(&done.mchid) += done.amount;
        }
        let url = book.settings.receiver_notify_urls.get(&done.return_mchid).cloned();
        let out_trade_no = book
            .holds
            .get(&done.transaction_id)
            .map(|h| h.out_trade_no.clone())
            .unwrap_or_default();
        (done, url, out_trade_no)
    };
    tracing::info!(out_return_no = %done.out_return_no, result = ?done.result, "return finished");
    let Some(url) = url.filter(|_| done.result == ReturnResult::Success) else { return };
    // For a return, order_id and out_order_no carry the return's numbers (uncertain).
    let resource = json!({
        "mchid": done.mchid,
        "transaction_id": done.transaction_id,
        "order_id": done.return_id,
        "out_order_no": done.out_return_no,
        "receiver": {
            "type": "MERCHANT_ID",
            "account": done.return_mchid,
            "amount": done.amount,
            "description": done.description,
        },
        "success_time": beijing_rfc3339(now),
    });
    notify::dispatch(
        shared,
        &(done.return_mchid.clone(), out_trade_no),
        "TRANSACTION.SUCCESS",
        "分账回退",
        "transaction",
        url,
        &resource,
    );
}

/// `GET /v3/profitsharing/return-orders/{out_return_no}?out_order_no=`.
pub(crate) async fn query_return(
    State(shared): St,
    Path(out_return_no): Path<String>,
    uri: OriginalUri,
    v: Verified,
) -> Result<Response, ApiError> {
    let out_order_no = query_param(&uri, "out_order_no")
        .ok_or_else(|| ApiError::param("缺少查询参数out_order_no"))?;
    let answer = lock(&shared.profit)
        .returns
        .get(&(v.mchid().to_owned(), out_return_no))
        .filter(|r| r.out_order_no == out_order_no)
        .map(Return::entity)
        .ok_or_else(not_exists)?;
    let response = signed(&shared, &v, &answer)?;
    Ok(finish(&shared, "profitsharing_query", response).await)
}

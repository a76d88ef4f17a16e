//! Profit sharing (分账) over API v3, as a direct merchant (`channels/profit-sharing.md`): add a
//! receiver (`POST /v3/profitsharing/receivers/add`, its name RSAES-OAEP-encrypted for the key
//! `Wechatpay-Serial` names), split (`POST /v3/profitsharing/orders`, asynchronous: the answer
//! only accepts), query a split (`GET /v3/profitsharing/orders/{out_order_no}`), and unfreeze
//! the rest (`POST /v3/profitsharing/orders/unfreeze`, a split order of its own).
//!
//! Splits are sent with `unfreeze_unsplit: false`: the rest stays frozen until paymux releases
//! it, so a line WeChat refused can be split again under a new number first.

use paymux_core::{
    ChannelError, ChannelOrderNo, Currency, Money, PaymentRef, ReceiverAccount, ReleaseRequest,
    Released, ShareLineResult, ShareLineState, ShareRequest, ShareResult,
};
use paymux_crypto::b64_encode;
use reqwest::Method;
use serde::{Deserialize, Serialize};

use super::{Answer, WechatChannel, encode, error_outcome};

/// The ratio cap when the account's configuration sets none: 30 %, WeChat's usual value.
pub(super) const DEFAULT_MAX_SHARE_BPS: u32 = 3000;

/// `relation_type` when the receiver's account gives none.
const DEFAULT_RELATION_TYPE: &str = "PARTNER";

/// The unfreeze's `description` (string(80), required). The same text on every send, so a
/// re-sent unfreeze carries the very body of the first.
const RELEASE_DESCRIPTION: &str = "解冻剩余资金";

/// WeChat's limits on one split request: receivers, and characters of a line's description.
const MAX_LINES: usize = 50;
const MAX_DESCRIPTION_CHARS: usize = 80;

const RECEIVERS_ADD: &str = "/v3/profitsharing/receivers/add";
const ORDERS: &str = "/v3/profitsharing/orders";
const UNFREEZE: &str = "/v3/profitsharing/orders/unfreeze";

#[derive(Serialize)]
struct AddReceiverBody<'a> {
    appid: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    account: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    relation_type: &'a str,
}

/// The add-receiver answer; its `name` is encrypted for the merchant and not needed.
#[derive(Deserialize)]
struct AddReceiverAnswer {
    #[serde(rename = "type")]
    kind: String,
    account: String,
}

/// A split body. No receiver `name`: it is optional, and its ciphertext would differ on every
/// send, while WeChat wants a re-sent `out_order_no` to carry the same body.
#[derive(Serialize)]
struct SplitBody<'a> {
    appid: &'a str,
    transaction_id: &'a str,
    out_order_no: &'a str,
    receivers: Vec<SplitReceiver<'a>>,
    unfreeze_unsplit: bool,
}

#[derive(Serialize)]
struct SplitReceiver<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    account: &'a str,
    /// Fen, a JSON integer (a string is refused as a format error).
    amount: i64,
    description: &'a str,
}

#[derive(Serialize)]
struct UnfreezeBody<'a> {
    transaction_id: &'a str,
    out_order_no: &'a str,
    description: &'a str,
}

/// WeChat's `OrdersEntity`: the answer to a split, its query and an unfreeze.
#[derive(Debug, Deserialize)]
struct OrdersEntity {
    transaction_id: String,
    out_order_no: String,
    #[serde(default)]
    order_id: Option<String>,
    state: String,
    #[serde(default)]
    receivers: Vec<ReceiverDetail>,
}

#[derive(Debug, Deserialize)]
struct ReceiverDetail {
    account: String,
    amount: i64,
    result: String,
    #[serde(default)]
    fail_reason: Option<String>,
}

impl WechatChannel {
    /// Registers the receiver; WeChat answers an already added one as a new one. The name is
    /// encrypted for the key this request names, chosen once, so both always agree.
    pub(super) async fn sharing_add_receiver(
        &self,
        receiver: &ReceiverAccount,
    ) -> Result<(), ChannelError> {
        let name = receiver.name.as_deref().filter(|n| !n.is_empty());
        if receiver.kind == "MERCHANT_ID" && name.is_none() {
            return Err(ChannelError::invalid(
                "wechat: a MERCHANT_ID receiver needs its registered full name",
            ));
        }
        let (serial, key) = self.wechat_key().await?;
        let name = name
            .map(|n| key.encrypt_oaep_sha1(n.as_bytes()).map(|sealed| b64_encode(&sealed)))
            .transpose()
            .map_err(|e| ChannelError::invalid(format!("wechat: encrypting the name: {e}")))?;
        let body = AddReceiverBody {
            appid: &self.appid,
            kind: &receiver.kind,
            account: &receiver.account,
            name,
            relation_type: receiver.relation_type.as_deref().unwrap_or(DEFAULT_RELATION_TYPE),
        };
        let body = serde_json::to_vec(&body)
            .map_err(|e| ChannelError::invalid(format!("wechat: receiver body: {e}")))?;
        let answer = self.call_naming(Method::POST, RECEIVERS_ADD, Some(body), &serial).await?;
        if !answer.is_success() {
            return Err(sharing_error(&answer));
        }
        let added: AddReceiverAnswer = Self::verified_json(&answer)?;
        if added.kind != receiver.kind || added.account != receiver.account {
            return Err(ChannelError::unknown(format!(
                "wechat: receivers/add for {} {} answered for {} {}",
                receiver.kind, receiver.account, added.kind, added.account
            )));
        }
        tracing::info!(kind = %receiver.kind, account = %receiver.account, "wechat receiver added");
        Ok(())
    }

    /// Sends the split. WeChat only accepts it here (lines `PENDING`); the query tells the end.
    pub(super) async fn sharing_split(
        &self,
        req: &ShareRequest,
    ) -> Result<ShareResult, ChannelError> {
        let transaction_id = transaction_id(&req.payment)?;
        if req.lines.is_empty() || req.lines.len() > MAX_LINES {
            return Err(ChannelError::invalid(format!(
                "wechat: a split has 1 to {MAX_LINES} receiver lines, not {}",
                req.lines.len()
            )));
        }
        let mut receivers = Vec::with_capacity(req.lines.len());
        for line in &req.lines {
            if line.amount.currency() != Currency::Cny {
                return Err(ChannelError::invalid("wechat splits only CNY"));
            }
            let chars = line.description.chars().count();
            if chars == 0 || chars > MAX_DESCRIPTION_CHARS {
                return Err(ChannelError::invalid(format!(
                    "wechat: a split line's description must be 1-{MAX_DESCRIPTION_CHARS} \
                     characters"
                )));
            }
            receivers.push(SplitReceiver {
                kind: &line.receiver.kind,
                account: &line.receiver.account,
                amount: line.amount.minor(),
                description: &line.description,
            });
        }
        let body = SplitBody {
            appid: &self.appid,
            transaction_id,
            out_order_no: req.share_no.as_str(),
            receivers,
            unfreeze_unsplit: false,
        };
        let body = serde_json::to_vec(&body)
            .map_err(|e| ChannelError::invalid(format!("wechat: split body: {e}")))?;
        let answer = self.call(Method::POST, ORDERS, Some(body)).await?;
        if !answer.is_success() {
            return Err(sharing_error(&answer));
        }
        let entity = entity_for(&answer, transaction_id, &req.share_no)?;
        tracing::info!(
            out_order_no = %req.share_no, state = %entity.state, "wechat split accepted"
        );
        share_result(entity)
    }

    /// Reads a split. 404 `RESOURCE_NOT_EXISTS` is unknown, never a refusal: WeChat answers it
    /// for a split it has not recorded yet, and for a while after some payments.
    pub(super) async fn sharing_query(
        &self,
        req: &ShareRequest,
    ) -> Result<ShareResult, ChannelError> {
        let transaction_id = transaction_id(&req.payment)?;
        let entity = self.query_order(&req.share_no, transaction_id).await?;
        share_result(entity)
    }

    /// Unfreezes the rest under `release_no`. `PROCESSING` is pending and `FINISHED` done; 403
    /// `NOT_ENOUGH` (nothing left: released already, by this call or another) is done too.
    /// Sending it again with the same number is safe: WeChat counts it once and answers its
    /// state.
    pub(super) async fn sharing_unfreeze(
        &self,
        req: &ReleaseRequest,
    ) -> Result<Released, ChannelError> {
        let transaction_id = transaction_id(&req.payment)?;
        let body = UnfreezeBody {
            transaction_id,
            out_order_no: req.release_no.as_str(),
            description: RELEASE_DESCRIPTION,
        };
        let body = serde_json::to_vec(&body)
            .map_err(|e| ChannelError::invalid(format!("wechat: unfreeze body: {e}")))?;
        let answer = self.call(Method::POST, UNFREEZE, Some(body)).await?;
        if !answer.is_success() {
            if (400..500).contains(&answer.status) && answer.error().0 == "NOT_ENOUGH" {
                tracing::info!(out_order_no = %req.release_no, "wechat: nothing left to unfreeze");
                return Ok(Released::Done);
            }
            return Err(sharing_error(&answer));
        }
        let entity = entity_for(&answer, transaction_id, &req.release_no)?;
        match entity.state.as_str() {
            "PROCESSING" => Ok(Released::Pending),
            "FINISHED" => Ok(Released::Done),
            other => {
                Err(ChannelError::unknown(format!("wechat: unknown unfreeze state {other:?}")))
            }
        }
    }

    /// `GET /v3/profitsharing/orders/{out_order_no}?transaction_id=...`.
    async fn query_order(
        &self,
        out_order_no: &ChannelOrderNo,
        transaction_id: &str,
    ) -> Result<OrdersEntity, ChannelError> {
        let path = format!(
            "{ORDERS}/{}?transaction_id={}",
            encode(out_order_no.as_str()),
            encode(transaction_id)
        );
        let answer = self.call(Method::GET, &path, None).await?;
        if !answer.is_success() {
            return Err(match sharing_error(&answer) {
                ChannelError::Declined { code, message } => ChannelError::unknown(format!(
                    "wechat split query answered HTTP {} {code}: {message}",
                    answer.status
                )),
                other => other,
            });
        }
        entity_for(&answer, transaction_id, out_order_no)
    }
}

/// WeChat's number of the paid order: splits and unfreezes name the order by it.
fn transaction_id(payment: &PaymentRef) -> Result<&str, ChannelError> {
    payment.channel_trade_no.as_deref().filter(|t| !t.is_empty()).ok_or_else(|| {
        ChannelError::invalid(format!(
            "wechat: payment {} has no transaction_id: only a paid payment can be split",
            payment.channel_order_no
        ))
    })
}

/// The verified `OrdersEntity`, if it is the one asked about.
fn entity_for(
    answer: &Answer,
    transaction_id: &str,
    out_order_no: &ChannelOrderNo,
) -> Result<OrdersEntity, ChannelError> {
    let entity: OrdersEntity = WechatChannel::verified_json(answer)?;
    if entity.out_order_no != out_order_no.as_str() || entity.transaction_id != transaction_id {
        return Err(ChannelError::unknown(format!(
            "wechat: answer for split {} of {} is about {} of {}",
            out_order_no, transaction_id, entity.out_order_no, entity.transaction_id
        )));
    }
    Ok(entity)
}

/// `OrdersEntity` to the unified result, line by line: lines end one by one, so each line's
/// `result` counts, not the order's `state`.
fn share_result(entity: OrdersEntity) -> Result<ShareResult, ChannelError> {
    let lines =
        entity.receivers.into_iter().map(line_result).collect::<Result<Vec<_>, String>>().map_err(
            |e| ChannelError::unknown(format!("wechat split {}: {e}", entity.out_order_no)),
        )?;
    Ok(ShareResult { channel_share_no: entity.order_id.filter(|o| !o.is_empty()), lines })
}

fn line_result(line: ReceiverDetail) -> Result<ShareLineResult, String> {
    let amount = Money::new(line.amount, Currency::Cny)
        .map_err(|e| format!("line of {}: amount: {e}", line.account))?;
    let state = match line.result.as_str() {
        "PENDING" => ShareLineState::Pending,
        "SUCCESS" => ShareLineState::Succeeded,
        "CLOSED" => {
            let code =
                line.fail_reason.filter(|r| !r.is_empty()).unwrap_or_else(|| "CLOSED".into());
            let message = fail_reason_text(&code).to_owned();
            ShareLineState::Failed { code, message }
        }
        other => return Err(format!("line of {}: unknown result {other:?}", line.account)),
    };
    Ok(ShareLineResult { account: line.account, amount, state })
}

/// What a `fail_reason` (wpgo `DetailFailReason`) means.
fn fail_reason_text(code: &str) -> &'static str {
    match code {
        "ACCOUNT_ABNORMAL" => "the receiver's account is abnormal",
        "NO_RELATION" => "the receiver relation does not exist",
        "RECEIVER_HIGH_RISK" => "the receiver is flagged high risk",
        "RECEIVER_REAL_NAME_NOT_VERIFIED" => "the receiver has not verified its real name",
        "NO_AUTH" => "profit sharing is not authorised",
        _ => "WeChat closed the line",
    }
}

/// A non-2xx answer to a profit-sharing call. Unknown (send again with the same number, or
/// query): 5xx, throttling, 404 `RESOURCE_NOT_EXISTS` (seen transiently after a payment), and
/// `INVALID_REQUEST` "订单处理中，请稍后重试" (too soon after the payment, or not settled yet).
/// Our own mistakes stay invalid, and so does a number re-sent with another body (the first
/// body's call may have moved money). Every other code, `PARAM_ERROR` included, is a definite
/// refusal with WeChat's code and message: over the ratio cap, `NO_AUTH`, "非分账订单不支持分账",
/// `NOT_ENOUGH`.
fn sharing_error(answer: &Answer) -> ChannelError {
    let (code, message) = answer.error();
    let status = answer.status;
    let retry_later = status == 404
        || matches!(code.as_str(), "RESOURCE_NOT_EXISTS" | "RATELIMIT_EXCEED" | "RATE_LIMITED")
        || (code == "INVALID_REQUEST" && message.contains("稍后重试"));
    if retry_later {
        return ChannelError::unknown(format!("wechat: HTTP {status} {code}: {message}"));
    }
    if message.contains("单号重复") {
        return ChannelError::invalid(format!(
            "wechat: {code}: {message} (the same number was sent with another body)"
        ));
    }
    match error_outcome(answer) {
        ChannelError::Invalid { .. } if code == "PARAM_ERROR" => {
            ChannelError::declined(code, message)
        }
        other => other,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use reqwest::header::HeaderMap;

    use super::*;

    fn answer(status: u16, code: &str, message: &str) -> Answer {
        let body = serde_json::json!({"code": code, "message": message}).to_string();
        Answer { status, headers: HeaderMap::new(), body: body.into_bytes() }
    }

    fn unknown(e: &ChannelError) -> bool {
        matches!(e, ChannelError::Unknown { .. })
    }

    #[test]
    fn retry_answers_are_unknown_and_refusals_declined() {
        let e = |s, c, m| sharing_error(&answer(s, c, m));
        assert!(unknown(&e(500, "SYSTEM_ERROR", "系统错误")));
        assert!(unknown(&e(503, "", "")));
        assert!(unknown(&e(429, "FREQUENCY_LIMITED", "频率超限")));
        assert!(unknown(&e(400, "RATELIMIT_EXCEED", "频率超限")));
        assert!(unknown(&e(404, "RESOURCE_NOT_EXISTS", "记录不存在")));
        assert!(unknown(&e(400, "INVALID_REQUEST", "订单处理中，请稍后重试")));
        assert_eq!(
            e(400, "INVALID_REQUEST", "分账金额超出最大分账比例"),
            ChannelError::declined("INVALID_REQUEST", "分账金额超出最大分账比例")
        );
        assert_eq!(
            e(400, "INVALID_REQUEST", "非分账订单不支持分账"),
            ChannelError::declined("INVALID_REQUEST", "非分账订单不支持分账")
        );
        assert_eq!(
            e(403, "NO_AUTH", "无分账权限"),
            ChannelError::declined("NO_AUTH", "无分账权限")
        );
        assert_eq!(
            e(400, "PARAM_ERROR", "格式错误"),
            ChannelError::declined("PARAM_ERROR", "格式错误")
        );
        assert_eq!(
            e(403, "NOT_ENOUGH", "分账金额不足"),
            ChannelError::declined("NOT_ENOUGH", "分账金额不足")
        );
        assert!(matches!(e(401, "SIGN_ERROR", "签名错误"), ChannelError::Invalid { .. }));
        assert!(matches!(
            e(400, "INVALID_REQUEST", "商户分账单号重复, 且参数与原分账单不一致"),
            ChannelError::Invalid { .. }
        ));
    }

    fn detail(result: &str, fail_reason: Option<&str>) -> ReceiverDetail {
        ReceiverDetail {
            account: "1900000109".into(),
            amount: 333,
            result: result.into(),
            fail_reason: fail_reason.map(str::to_owned),
        }
    }

    #[test]
    fn line_results_map_to_line_states() {
        assert_eq!(line_result(detail("PENDING", None)).unwrap().state, ShareLineState::Pending);
        let ok = line_result(detail("SUCCESS", None)).unwrap();
        assert_eq!(ok.state, ShareLineState::Succeeded);
        assert_eq!(ok.amount, Money::new(333, Currency::Cny).unwrap());
        assert_eq!(ok.account, "1900000109");
        assert!(matches!(
            line_result(detail("CLOSED", Some("NO_RELATION"))).unwrap().state,
            ShareLineState::Failed { code, .. } if code == "NO_RELATION"
        ));
        assert!(matches!(
            line_result(detail("CLOSED", None)).unwrap().state,
            ShareLineState::Failed { code, .. } if code == "CLOSED"
        ));
        assert!(line_result(detail("WHATEVER", None)).is_err());
        assert!(line_result(ReceiverDetail { amount: 0, ..detail("SUCCESS", None) }).is_err());
    }

    #[test]
    fn a_split_body_has_integer_fen_and_keeps_the_rest_frozen() {
        let body = SplitBody {
            appid: "wx8888888888888888",
            transaction_id: "4208450740201411110007820472",
            out_order_no: "P20150806125346",
            receivers: vec![SplitReceiver {
                kind: "MERCHANT_ID",
                account: "86693852",
                amount: 888,
                description: "分给商户A",
            }],
            unfreeze_unsplit: false,
        };
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            serde_json::json!({"appid": "wx8888888888888888",
                "transaction_id": "4208450740201411110007820472", "out_order_no": "P20150806125346",
                "receivers": [{"type": "MERCHANT_ID", "account": "86693852", "amount": 888,
                               "description": "分给商户A"}],
                "unfreeze_unsplit": false})
        );
    }
}

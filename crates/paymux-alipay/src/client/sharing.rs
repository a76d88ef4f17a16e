//! 商家分账 (merchant royalty, `channels/profit-sharing.md`): a held payment is created with
//! `extend_params.royalty_freeze="true"`; receivers are bound with
//! `alipay.trade.royalty.relation.bind`; a share is an `alipay.trade.order.settle` in `async`
//! mode, read back with `alipay.trade.order.settle.query`; the release is a settle that only
//! finishes (`royalty_finish="true"`, no receivers), in `async` mode too.
//!
//! `async` because a `sync` settle is all or nothing (one refused receiver fails every line), and
//! the two modes must never be mixed on one trade (the notes' corrections). Nothing in the notes
//! or the SDK makes a call that only finishes synchronous: `royalty_mode` belongs to every settle,
//! and when left out it means `sync`, so the release names `async` as the shares do. An `async`
//! answer only accepts: share lines are pending, and the release is pending, until the query
//! says otherwise.

use md5::{Digest, Md5};
use paymux_core::{
    ChannelError, PaymentRef, ReceiverAccount, ReleaseRequest, Released, ShareLineResult,
    ShareLineState, ShareRequest, ShareResult,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AlipayChannel, check_echo, describe, failure};
use crate::protocol::{self, Answer, ResultCode};

mod lines;

use lines::RoyaltyDetail;

const METHOD_BIND: &str = "alipay.trade.royalty.relation.bind";
const METHOD_SETTLE: &str = "alipay.trade.order.settle";
const METHOD_SETTLE_QUERY: &str = "alipay.trade.order.settle.query";

/// Alipay's usual `max_ratio` (30 %), used when the account does not say.
const DEFAULT_MAX_SHARE_BPS: u32 = 3_000;
/// `out_request_no` of settle and bind: at most 32 letters, digits or `_`.
const REQUEST_NO_MAX: usize = 32;
/// Receivers in one `async` settle.
const ASYNC_MAX_LINES: usize = 50;
const DESC_MAX_CHARS: usize = 1_000;
/// The relation's `memo` when the receiver has no `relation_type`.
const DEFAULT_MEMO: &str = "分账接收方";

/// The configured `max_share_bps`, checked: 1 to 10 000 basis points.
pub(super) fn max_share_bps(configured: Option<u32>) -> Result<u32, ChannelError> {
    match configured {
        None => Ok(DEFAULT_MAX_SHARE_BPS),
        Some(bps) if (1..=10_000).contains(&bps) => Ok(bps),
        Some(bps) => Err(ChannelError::invalid(format!(
            "alipay: max_share_bps must be 1 to 10000 basis points, got {bps}"
        ))),
    }
}

/// Freezes a held payment's funds: `extend_params.royalty_freeze`, the string `"true"`.
pub(super) fn add_hold(biz: &mut Value, hold: bool) {
    if hold {
        biz["extend_params"] = json!({ "royalty_freeze": "true" });
    }
}

/// The bind's `out_request_no`: the MD5 of the receiver's type and account, in hex (32
/// characters). Binding the same receiver again sends the same number.
fn bind_request_no(receiver: &ReceiverAccount) -> String {
    let digest = Md5::new()
        .chain_update(receiver.kind.as_bytes())
        .chain_update([0u8])
        .chain_update(receiver.account.as_bytes())
        .finalize();
    hex::encode(digest)
}

fn check_request_no(field: &str, no: &str) -> Result<(), ChannelError> {
    let ok = !no.is_empty()
        && no.len() <= REQUEST_NO_MAX
        && no.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ChannelError::invalid(format!(
            "alipay: {field} must be 1-{REQUEST_NO_MAX} letters, digits or `_`, got {no:?}"
        )))
    }
}

fn check_account_type(kind: &str) -> Result<(), ChannelError> {
    match kind {
        "userId" | "loginName" | "openId" => Ok(()),
        other => Err(ChannelError::invalid(format!(
            "alipay: a receiver's type is userId, loginName or openId, not {other:?}"
        ))),
    }
}

/// Whether a refused bind says the relation is already there. No official code is known for
/// it (`channels/profit-sharing.md`): a sub_code naming an existing relation, or a sub_msg
/// saying "already exists" / "already bound".
fn says_already_bound(r: &ResultCode) -> bool {
    let code = r.sub_code.as_deref().unwrap_or_default().to_ascii_uppercase();
    let by_code = (code.ends_with("_EXIST") || code.ends_with("_EXISTS"))
        && (code.contains("ALREADY") || code.contains("RELATION"))
        && !code.contains("NOT_EXIST");
    let msg = r.sub_msg.as_deref().unwrap_or_default();
    by_code || msg.contains("已存在") || msg.contains("已绑定")
}

/// The outcome of a settle's answer other than `10000`.
fn settle_failure(method: &str, r: &ResultCode) -> ChannelError {
    match (r.code.as_str(), r.sub_code.as_deref()) {
        // "May or may not have succeeded": re-send with the same out_request_no, or query.
        // ACQ.TRADE_NOT_EXIST on a settle is not pinned down as final: the trade was paid.
        ("40004", Some("ACQ.TRADE_SETTLE_ERROR" | "ACQ.TRADE_NOT_EXIST")) => {
            ChannelError::unknown(format!("alipay {method}: {}", describe(r)))
        }
        // The number was used for another request: paymux sent two different calls under one
        // number, which nothing but a bug does; what moved under it is the earlier call's.
        ("40004", Some("ACQ.CONTEXT_INCONSISTENT")) => {
            ChannelError::invalid(format!("alipay {method}: {}", describe(r)))
        }
        _ => failure(method, r),
    }
}

/// `alipay.trade.royalty.relation.bind`.
#[derive(Debug, Default, Deserialize)]
struct BindAnswer {
    #[serde(default)]
    result_code: Option<String>,
}

/// `alipay.trade.order.settle`.
#[derive(Debug, Default, Deserialize)]
struct SettleAnswer {
    #[serde(default)]
    trade_no: Option<String>,
    #[serde(default)]
    settle_no: Option<String>,
}

/// `alipay.trade.order.settle.query`.
#[derive(Debug, Default, Deserialize)]
struct SettleQueryAnswer {
    #[serde(default)]
    out_request_no: Option<String>,
    #[serde(default)]
    settle_no: Option<String>,
    #[serde(default)]
    result_code: Option<String>,
    #[serde(default)]
    royalty_detail_list: Vec<RoyaltyDetail>,
}

fn paid_trade_no(payment: &PaymentRef) -> Result<&str, ChannelError> {
    payment.channel_trade_no.as_deref().filter(|t| !t.is_empty()).ok_or_else(|| {
        ChannelError::invalid("alipay: the payment has no trade_no (it is not paid)")
    })
}

impl AlipayChannel {
    /// Binds one receiver. An answer saying the relation exists already is success.
    pub(super) async fn bind_receiver(&self, r: &ReceiverAccount) -> Result<(), ChannelError> {
        check_account_type(&r.kind)?;
        if r.account.is_empty() {
            return Err(ChannelError::invalid("alipay: a receiver needs an account"));
        }
        let mut receiver = json!({
            "type": r.kind,
            "account": r.account,
            "memo": r.relation_type.as_deref().filter(|m| !m.is_empty()).unwrap_or(DEFAULT_MEMO),
        });
        if let Some(name) = r.name.as_deref().filter(|n| !n.is_empty()) {
            receiver["name"] = json!(name);
        }
        let out_request_no = bind_request_no(r);
        let biz = json!({ "out_request_no": out_request_no, "receiver_list": [receiver] });
        let signed = self.sign(METHOD_BIND, &biz, &[])?;
        let answer: Answer<BindAnswer> = self.call(METHOD_BIND, &signed).await?;
        if answer.result.code == "10000" {
            return match answer.body.result_code.as_deref() {
                None | Some("SUCCESS") => {
                    tracing::info!(out_request_no, "alipay royalty receiver bound");
                    Ok(())
                }
                Some(other) => Err(ChannelError::declined(
                    other,
                    format!("alipay {METHOD_BIND}: result_code {other}"),
                )),
            };
        }
        if answer.result.code == "40004" && says_already_bound(&answer.result) {
            tracing::info!(out_request_no, "alipay royalty receiver was bound already");
            return Ok(());
        }
        Err(failure(METHOD_BIND, &answer.result))
    }

    /// An `async` settle of the request's lines, leaving the rest frozen
    /// (`royalty_finish="false"`).
    pub(super) async fn settle(&self, req: &ShareRequest) -> Result<ShareResult, ChannelError> {
        let trade_no = paid_trade_no(&req.payment)?;
        let out_request_no = req.share_no.as_str();
        check_request_no("share_no", out_request_no)?;
        if req.lines.is_empty() || req.lines.len() > ASYNC_MAX_LINES {
            return Err(ChannelError::invalid(format!(
                "alipay: a share has 1 to {ASYNC_MAX_LINES} lines, got {}",
                req.lines.len()
            )));
        }
        let mut parameters = Vec::with_capacity(req.lines.len());
        for line in &req.lines {
            check_account_type(&line.receiver.kind)?;
            if line.description.chars().count() > DESC_MAX_CHARS {
                return Err(ChannelError::invalid(format!(
                    "alipay: a share line's description is longer than {DESC_MAX_CHARS} characters"
                )));
            }
            let mut p = json!({
                "royalty_type": "transfer",
                "trans_in": line.receiver.account,
                "trans_in_type": line.receiver.kind,
                "amount": protocol::money_to_yuan(line.amount),
                "desc": line.description,
            });
            if let Some(name) = line.receiver.name.as_deref().filter(|n| !n.is_empty()) {
                p["trans_in_name"] = json!(name);
            }
            parameters.push(p);
        }
        let biz = json!({
            "out_request_no": out_request_no,
            "trade_no": trade_no,
            "royalty_parameters": parameters,
            "royalty_mode": "async",
            "extend_params": { "royalty_finish": "false" },
        });
        let signed = self.sign(METHOD_SETTLE, &biz, &[])?;
        let answer: Answer<SettleAnswer> = self.call(METHOD_SETTLE, &signed).await?;
        if answer.result.code != "10000" {
            return Err(settle_failure(METHOD_SETTLE, &answer.result));
        }
        check_echo(METHOD_SETTLE, "trade_no", answer.body.trade_no.as_deref(), trade_no)?;
        tracing::info!(out_request_no, trade_no, "alipay settle accepted");
        Ok(ShareResult {
            channel_share_no: answer.body.settle_no.filter(|n| !n.is_empty()),
            lines: req
                .lines
                .iter()
                .map(|l| ShareLineResult {
                    account: l.receiver.account.clone(),
                    amount: l.amount,
                    state: ShareLineState::Pending,
                })
                .collect(),
        })
    }

    /// Reads a settle by `out_request_no` + `trade_no`. A query never declines: a settle Alipay
    /// does not know (yet), or any refusal of the query, is unknown.
    async fn query_settle(
        &self,
        trade_no: &str,
        out_request_no: &str,
    ) -> Result<SettleQueryAnswer, ChannelError> {
        let biz = json!({ "out_request_no": out_request_no, "trade_no": trade_no });
        let signed = self.sign(METHOD_SETTLE_QUERY, &biz, &[])?;
        let answer: Answer<SettleQueryAnswer> = self.call(METHOD_SETTLE_QUERY, &signed).await?;
        if answer.result.code != "10000" {
            return Err(match failure(METHOD_SETTLE_QUERY, &answer.result) {
                invalid @ ChannelError::Invalid { .. } => invalid,
                _ => ChannelError::unknown(format!(
                    "alipay {METHOD_SETTLE_QUERY}: {}",
                    describe(&answer.result)
                )),
            });
        }
        check_echo(
            METHOD_SETTLE_QUERY,
            "out_request_no",
            answer.body.out_request_no.as_deref(),
            out_request_no,
        )?;
        Ok(answer.body)
    }

    /// A share's state, its lines reported under the accounts as the request sent them (see
    /// the `lines` module); lines not found in the answer are left out.
    pub(super) async fn settle_query(
        &self,
        req: &ShareRequest,
    ) -> Result<ShareResult, ChannelError> {
        let trade_no = paid_trade_no(&req.payment)?;
        let out_request_no = req.share_no.as_str();
        check_request_no("share_no", out_request_no)?;
        let b = self.query_settle(trade_no, out_request_no).await?;
        let lines = lines::as_sent(&req.lines, &b.royalty_detail_list)
            .map_err(|e| ChannelError::unknown(format!("alipay {METHOD_SETTLE_QUERY}: {e}")))?;
        Ok(ShareResult { channel_share_no: b.settle_no.filter(|n| !n.is_empty()), lines })
    }

    /// An `async` settle that only finishes: whatever is still frozen goes to the merchant.
    /// Alipay keeps it by `out_request_no`, so a re-sent one answers as the first did. Its
    /// `10000` only accepts it: the release is `Done` once settle.query shows it, and pending
    /// until then (the engine sends it again, with the same number, later).
    pub(super) async fn settle_finish(
        &self,
        req: &ReleaseRequest,
    ) -> Result<Released, ChannelError> {
        let trade_no = paid_trade_no(&req.payment)?;
        let out_request_no = req.release_no.as_str();
        check_request_no("release_no", out_request_no)?;
        let biz = json!({
            "out_request_no": out_request_no,
            "trade_no": trade_no,
            "royalty_mode": "async",
            "extend_params": { "royalty_finish": "true" },
        });
        let signed = self.sign(METHOD_SETTLE, &biz, &[])?;
        let answer: Answer<SettleAnswer> = self.call(METHOD_SETTLE, &signed).await?;
        if answer.result.code != "10000" {
            return Err(settle_failure(METHOD_SETTLE, &answer.result));
        }
        check_echo(METHOD_SETTLE, "trade_no", answer.body.trade_no.as_deref(), trade_no)?;
        tracing::info!(out_request_no, trade_no, "alipay release accepted");
        let state = match self.query_settle(trade_no, out_request_no).await {
            Ok(found) => finish_state(&found),
            Err(e) => {
                tracing::warn!(out_request_no, error = %e, "alipay release not confirmed yet");
                Released::Pending
            }
        };
        if state == Released::Done {
            tracing::info!(out_request_no, trade_no, "alipay frozen remainder released");
        }
        Ok(state)
    }
}

/// What settle.query says of a release. It is done once the query finds it with every line it
/// lists final (a call that only finishes has no lines of its own, so usually none), and, when
/// the answer carries a `result_code`, that code is `SUCCESS`. Anything else: not yet.
fn finish_state(found: &SettleQueryAnswer) -> Released {
    let result_ok = found.result_code.as_deref().is_none_or(|c| c == "SUCCESS");
    let lines_final = found
        .royalty_detail_list
        .iter()
        .all(|d| matches!(d.state.as_deref(), Some("SUCCESS" | "FAIL")));
    if result_ok && lines_final { Released::Done } else { Released::Pending }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn receiver(kind: &str, account: &str) -> ReceiverAccount {
        ReceiverAccount {
            kind: kind.into(),
            account: account.into(),
            name: None,
            relation_type: None,
        }
    }

    #[test]
    fn the_bind_number_is_fixed_by_the_receiver_and_fits_alipays_rule() {
        let a = bind_request_no(&receiver("userId", "2088000000000101"));
        assert_eq!(a, bind_request_no(&receiver("userId", "2088000000000101")));
        assert!(check_request_no("out_request_no", &a).is_ok());
        assert_ne!(a, bind_request_no(&receiver("userId", "2088000000000102")));
        assert_ne!(a, bind_request_no(&receiver("loginName", "2088000000000101")));
        // A name or relation type does not change it.
        let named = ReceiverAccount {
            name: Some("张三".into()),
            relation_type: Some("PARTNER".into()),
            ..receiver("userId", "2088000000000101")
        };
        assert_eq!(a, bind_request_no(&named));
    }

    #[test]
    fn request_numbers_are_32_letters_digits_or_underscores() {
        assert!(check_request_no("n", &"A_1".repeat(10)).is_ok());
        assert!(check_request_no("n", &"A".repeat(33)).is_err());
        assert!(check_request_no("n", "A-1").is_err());
        assert!(check_request_no("n", "").is_err());
    }

    #[test]
    fn max_share_bps_defaults_to_30_percent_and_is_bounded() {
        assert_eq!(max_share_bps(None).unwrap(), 3_000);
        assert_eq!(max_share_bps(Some(10_000)).unwrap(), 10_000);
        assert!(max_share_bps(Some(0)).is_err());
        assert!(max_share_bps(Some(10_001)).is_err());
    }

    fn result(code: &str, sub_code: Option<&str>, sub_msg: Option<&str>) -> ResultCode {
        ResultCode {
            code: code.into(),
            msg: None,
            sub_code: sub_code.map(str::to_owned),
            sub_msg: sub_msg.map(str::to_owned),
        }
    }

    #[test]
    fn an_existing_relation_is_recognised_but_a_missing_one_is_not() {
        assert!(says_already_bound(&result("40004", Some("ACQ.RELATION_ALREADY_EXIST"), None)));
        assert!(says_already_bound(&result("40004", Some("ACQ.X"), Some("分账关系已存在"))));
        assert!(!says_already_bound(&result("40004", Some("ACQ.RELATION_NOT_EXIST"), None)));
        assert!(!says_already_bound(&result("40004", Some("ACQ.TRADE_NOT_EXIST"), None)));
        assert!(!says_already_bound(&result("40004", Some("ACQ.INVALID_PARAMETER"), None)));
    }

    #[test]
    fn settle_answers_that_may_have_moved_money_are_unknown() {
        for sub in ["ACQ.TRADE_SETTLE_ERROR", "ACQ.SYSTEM_ERROR", "ACQ.TRADE_NOT_EXIST"] {
            let e = settle_failure(METHOD_SETTLE, &result("40004", Some(sub), None));
            assert!(matches!(e, ChannelError::Unknown { .. }), "{sub}: {e:?}");
        }
        let e = settle_failure(METHOD_SETTLE, &result("20000", Some("isp.unknow-error"), None));
        assert!(matches!(e, ChannelError::Unknown { .. }));
        let e = settle_failure(
            METHOD_SETTLE,
            &result("40004", Some("ACQ.TRADE_STATUS_ERROR"), Some("交易状态不合法")),
        );
        assert_eq!(e, ChannelError::declined("ACQ.TRADE_STATUS_ERROR", "交易状态不合法"));
        let e =
            settle_failure(METHOD_SETTLE, &result("40004", Some("ACQ.CONTEXT_INCONSISTENT"), None));
        assert!(matches!(e, ChannelError::Invalid { .. }));
    }

    #[test]
    fn a_release_is_done_once_the_query_shows_it_finished() {
        let answer = |v: Value| -> SettleQueryAnswer { serde_json::from_value(v).unwrap() };
        let done = answer(json!({"out_request_no": "R1", "result_code": "SUCCESS",
            "royalty_detail_list": []}));
        assert_eq!(finish_state(&done), Released::Done);
        assert_eq!(finish_state(&answer(json!({"out_request_no": "R1"}))), Released::Done);
        let lines = |state: &str| {
            answer(json!({"royalty_detail_list": [
                {"operation_type": "transfer", "trans_in": "2088000000000101", "amount": "1.00",
                 "state": "SUCCESS"},
                {"operation_type": "transfer", "trans_in": "2088000000000102", "amount": "1.00",
                 "state": state},
            ]}))
        };
        assert_eq!(finish_state(&lines("FAIL")), Released::Done);
        assert_eq!(finish_state(&lines("PROCESSING")), Released::Pending);
        assert_eq!(finish_state(&lines("NEW")), Released::Pending);
        let not_yet = answer(json!({"result_code": "PROCESSING", "royalty_detail_list": []}));
        assert_eq!(finish_state(&not_yet), Released::Pending);
    }

    #[test]
    fn only_a_held_payment_freezes() {
        let mut biz = json!({ "out_trade_no": "A" });
        add_hold(&mut biz, false);
        assert!(biz.get("extend_params").is_none());
        add_hold(&mut biz, true);
        assert_eq!(biz["extend_params"]["royalty_freeze"], "true");
    }
}

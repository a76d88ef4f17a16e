//! Barcode payments over API v3 (`channels/barcode.md`): `POST /v3/pay/transactions/codepay`
//! with the payer's code, the ordinary query while the payer enters a password, and
//! `POST /v3/pay/transactions/out-trade-no/{out_trade_no}/reverse` to give up. The same keys and
//! signatures as every other v3 call: no APIv2 key, no client certificate.

use std::time::Duration;

use paymux_core::{
    BarcodeCancel, BarcodePaid, BarcodeSchedule, ChannelError, ChannelPayment, CreatePayment,
    PaymentRef, digits_with_prefix,
};
use reqwest::Method;
use serde::Deserialize;
use serde_json::json;

use super::{WechatChannel, encode, error_outcome, payment_state, valid_out_trade_no};
use crate::protocol::{SettleInfo, Transaction};

/// WeChat's loop, with the staff variant's pace: a query every 5 s while the payer enters a
/// password, a reverse after 30 s (never within 15 s of the pay call), re-sent every 5 s until
/// it is confirmed.
pub(super) const SCHEDULE: BarcodeSchedule = BarcodeSchedule {
    poll_every: Duration::from_secs(5),
    give_up_after: Duration::from_secs(30),
    cancel_every: Duration::from_secs(5),
};

/// A WeChat payment code: 18 digits starting with 10 to 15.
pub(super) fn check_auth_code(code: &str) -> Result<(), String> {
    if digits_with_prefix(code, 18..=18, 10..=15) {
        Ok(())
    } else {
        Err("a WeChat payment code is 18 digits starting with 10 to 15".to_owned())
    }
}

/// The part of any codepay answer that says whether it is settled: the 202 carries this alone.
#[derive(Deserialize)]
struct TradeStateOnly {
    trade_state: Option<String>,
}

impl WechatChannel {
    /// 200 with `trade_state=SUCCESS` is paid; any 2xx with `USERPAYING` (the 202) or an error
    /// code `USERPAYING` is the payer at the password prompt (pending); 5xx, 429 and unverifiable
    /// answers are unknown; any other 4xx business code is a definite refusal.
    pub(super) async fn barcode_pay(
        &self,
        req: &CreatePayment,
    ) -> Result<BarcodePaid, ChannelError> {
        let out_trade_no = req.channel_order_no.as_str();
        if !valid_out_trade_no(out_trade_no) {
            return Err(ChannelError::invalid(format!(
                "wechat: out_trade_no {out_trade_no:?} is not 6-32 of [0-9A-Za-z_*-]"
            )));
        }
        let chars = req.subject.chars().count();
        if chars == 0 || chars > 127 {
            return Err(ChannelError::invalid("wechat: subject must be 1-127 characters"));
        }
        let auth_code = req.auth_code.as_deref().ok_or_else(|| {
            ChannelError::invalid("wechat: a barcode payment needs the payer's code")
        })?;
        check_auth_code(auth_code).map_err(|e| ChannelError::invalid(format!("wechat: {e}")))?;
        // scene_info is required; which of its fields is not pinned down: the terminal's address
        // when the merchant gave one, else a device id.
        let scene_info = match req.client_ip.as_deref().filter(|ip| !ip.is_empty()) {
            Some(ip) => json!({ "device_ip": ip }),
            None => json!({ "device_id": "paymux" }),
        };
        let mut body = json!({
            "appid": self.appid,
            "mchid": self.mchid(),
            "description": req.subject,
            "out_trade_no": out_trade_no,
            "payer": { "auth_code": auth_code },
            "amount": { "total": req.amount.minor(), "currency": req.amount.currency().code() },
            "scene_info": scene_info,
        });
        if let Some(settle_info) = SettleInfo::for_hold(req.hold) {
            body["settle_info"] = json!(settle_info);
        }
        let body = serde_json::to_vec(&body)
            .map_err(|e| ChannelError::invalid(format!("wechat: codepay body: {e}")))?;
        let answer = self.call(Method::POST, "/v3/pay/transactions/codepay", Some(body)).await?;
        let channel_data = json!({ "trade_type": "MICROPAY" });
        if !answer.is_success() {
            if answer.error().0 == "USERPAYING" {
                return Ok(BarcodePaid { state: ChannelPayment::Pending, channel_data });
            }
            return Err(error_outcome(&answer));
        }
        let head: TradeStateOnly = Self::verified_json(&answer)?;
        let state = match head.trade_state.as_deref() {
            Some("USERPAYING") => ChannelPayment::Pending,
            _ => {
                let tx: Transaction = Self::verified_json(&answer)?;
                if tx.out_trade_no != out_trade_no || tx.mchid != self.mchid() {
                    return Err(ChannelError::unknown(format!(
                        "wechat: codepay for {out_trade_no} answered for {} of {}",
                        tx.out_trade_no, tx.mchid
                    )));
                }
                payment_state(&tx)
                    .map_err(|e| ChannelError::unknown(format!("wechat codepay: {e}")))?
            }
        };
        tracing::info!(out_trade_no, status = answer.status, "wechat codepay answered");
        Ok(BarcodePaid { state, channel_data })
    }

    /// A signed 2xx is confirmed; it does not say whether the order had been paid (both become
    /// `REVOKED`), so it is reported closed. `USERPAYING` (the payer still at the password
    /// prompt), 5xx and no answer: send it again. `ORDER_NOT_EXIST`: the pay call never reached
    /// WeChat, so nothing can be paid.
    pub(super) async fn barcode_reverse(
        &self,
        payment: &PaymentRef,
    ) -> Result<BarcodeCancel, ChannelError> {
        let no = payment.channel_order_no.as_str();
        let path = format!("/v3/pay/transactions/out-trade-no/{}/reverse", encode(no));
        let body = serde_json::to_vec(&json!({ "appid": self.appid, "mchid": self.mchid() }))
            .map_err(|e| ChannelError::invalid(format!("wechat: reverse body: {e}")))?;
        let answer = self.call(Method::POST, &path, Some(body)).await?;
        if answer.is_success() {
            return Ok(BarcodeCancel::Closed);
        }
        let (code, message) = answer.error();
        match code.as_str() {
            "ORDER_NOT_EXIST" => Ok(BarcodeCancel::Closed),
            "USERPAYING" => Err(ChannelError::unknown(format!(
                "wechat reverse: the payer is still confirming ({message})"
            ))),
            _ => Err(error_outcome(&answer)),
        }
    }
}

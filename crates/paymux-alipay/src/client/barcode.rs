//! Barcode payments: `alipay.trade.pay` with `scene=bar_code`, and `alipay.trade.cancel` to give
//! up (`channels/barcode.md`).

use std::time::Duration;

use paymux_core::{
    BarcodeCancel, BarcodePaid, BarcodeSchedule, ChannelError, ChannelPayment, CreatePayment,
    PaymentRef, digits_with_prefix,
};
use serde_json::json;

use super::{AlipayChannel, business_sub_code, check_echo, check_subject, failure, optional_time};
use crate::protocol::response::{CancelAnswer, PayAnswer};
use crate::protocol::{self, Answer, METHOD_CANCEL, METHOD_PAY};

/// The official face-to-face demo's loop (`zfbinfo.properties`): a query every 5 s, 5 times,
/// then `alipay.trade.cancel`, again every 2 s until it is confirmed.
pub(super) const SCHEDULE: BarcodeSchedule = BarcodeSchedule {
    poll_every: Duration::from_secs(5),
    give_up_after: Duration::from_secs(25),
    cancel_every: Duration::from_secs(2),
};

/// An Alipay payment code: 16 to 24 digits starting with 25 to 30.
pub(super) fn check_auth_code(code: &str) -> Result<(), String> {
    if digits_with_prefix(code, 16..=24, 25..=30) {
        Ok(())
    } else {
        Err("an Alipay payment code is 16 to 24 digits starting with 25 to 30".to_owned())
    }
}

impl AlipayChannel {
    /// `10000` is paid; `10003` is the payer confirming in the app (pending); `20000`,
    /// `ACQ.SYSTEM_ERROR`, an unsigned answer or no answer are unknown; any other `40004` is a
    /// definite refusal (a bad or expired code, no balance, ...).
    pub(super) async fn barcode_pay(
        &self,
        req: &CreatePayment,
    ) -> Result<BarcodePaid, ChannelError> {
        check_subject(&req.subject)?;
        let auth_code = req.auth_code.as_deref().ok_or_else(|| {
            ChannelError::invalid("alipay: a barcode payment needs the payer's code")
        })?;
        check_auth_code(auth_code).map_err(|e| ChannelError::invalid(format!("alipay: {e}")))?;
        let out_trade_no = req.channel_order_no.as_str();
        let mut biz = json!({
            "out_trade_no": out_trade_no,
            "scene": "bar_code",
            "auth_code": auth_code,
            "subject": req.subject,
            "total_amount": protocol::money_to_yuan(req.amount),
            "product_code": "FACE_TO_FACE_PAYMENT",
        });
        super::sharing::add_hold(&mut biz, req.hold);
        let signed =
            self.sign(METHOD_PAY, &biz, &[("notify_url", Some(req.notify_url.as_str()))])?;
        let answer: Answer<PayAnswer> = self.call(METHOD_PAY, &signed).await?;
        let channel_data = json!({ "method": METHOD_PAY });
        let b = &answer.body;
        let state = match answer.result.code.as_str() {
            "10000" => {
                check_echo(METHOD_PAY, "out_trade_no", b.out_trade_no.as_deref(), out_trade_no)?;
                let channel_trade_no =
                    b.trade_no.clone().filter(|t| !t.is_empty()).ok_or_else(|| {
                        ChannelError::unknown("alipay alipay.trade.pay: paid but no trade_no")
                    })?;
                let amount = protocol::yuan_to_money(b.total_amount.as_deref().unwrap_or_default())
                    .map_err(|e| {
                        ChannelError::unknown(format!("alipay {METHOD_PAY}: total_amount: {e}"))
                    })?;
                ChannelPayment::Succeeded {
                    channel_trade_no,
                    amount,
                    paid_at: optional_time("gmt_payment", b.gmt_payment.as_deref()),
                }
            }
            "10003" => {
                check_echo(METHOD_PAY, "out_trade_no", b.out_trade_no.as_deref(), out_trade_no)?;
                ChannelPayment::Pending
            }
            _ => return Err(failure(METHOD_PAY, &answer.result)),
        };
        tracing::info!(out_trade_no, code = %answer.result.code, "alipay barcode pay answered");
        Ok(BarcodePaid { state, channel_data })
    }

    /// `retry_flag=Y` (on any answer) means not done: send it again. `action=refund` means the
    /// trade had been paid and the money went back. `ACQ.TRADE_NOT_EXIST`: the pay call never
    /// reached Alipay, so nothing can be paid (the cancel comes long after the pay call's
    /// timeout).
    pub(super) async fn barcode_cancel(
        &self,
        payment: &PaymentRef,
    ) -> Result<BarcodeCancel, ChannelError> {
        let out_trade_no = payment.channel_order_no.as_str();
        let signed = self.sign(METHOD_CANCEL, &json!({ "out_trade_no": out_trade_no }), &[])?;
        let answer: Answer<CancelAnswer> = self.call(METHOD_CANCEL, &signed).await?;
        let b = &answer.body;
        if b.retry_flag.as_deref() == Some("Y") {
            return Err(ChannelError::unknown(format!(
                "alipay {METHOD_CANCEL}: retry_flag=Y ({})",
                answer.result.code
            )));
        }
        if answer.result.code != "10000" {
            if business_sub_code(&answer.result) == Some("ACQ.TRADE_NOT_EXIST") {
                tracing::info!(out_trade_no, "alipay cancel: no trade, nothing to cancel");
                return Ok(BarcodeCancel::Closed);
            }
            return Err(failure(METHOD_CANCEL, &answer.result));
        }
        check_echo(METHOD_CANCEL, "out_trade_no", b.out_trade_no.as_deref(), out_trade_no)?;
        Ok(match b.action.as_deref() {
            Some("refund") => BarcodeCancel::Refunded,
            _ => BarcodeCancel::Closed,
        })
    }
}

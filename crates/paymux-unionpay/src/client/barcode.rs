//! Barcode payments (二维码支付, 被扫: the merchant scans the payer's C2B code;
//! `channels/barcode.md`): consume `01/06` with `qrNo` to backTransReq.do, the ordinary query
//! while the payer confirms, and 冲正 (reversal, `99/01`, naming the original `orderId` and
//! `txnTime`) to give up.

use std::time::Duration;

use paymux_core::{
    BarcodeCancel, BarcodePaid, BarcodeSchedule, ChannelError, ChannelPayment, CreatePayment,
    PaymentRef,
};
use serde_json::json;

use super::{UnionpayChannel, accepted, check_order_id, describe, original};
use crate::protocol::{
    self, BACK_TRANS_PATH, BIZ_TYPE_NONE, CHANNEL_TYPE_MOBILE, CURRENCY_CNY, TXN_SUB_TYPE_BARCODE,
    TXN_SUB_TYPE_REVERSAL, TXN_TYPE_CONSUME, TXN_TYPE_REVERSAL,
};

/// No official pace is published: a query every 5 s, a reversal after 30 s, re-sent every 5 s
/// until it is confirmed.
pub(super) const SCHEDULE: BarcodeSchedule = BarcodeSchedule {
    poll_every: Duration::from_secs(5),
    give_up_after: Duration::from_secs(30),
    cancel_every: Duration::from_secs(5),
};

/// A UnionPay payer code (`qrNo`): 1 to 20 digits, as the QR demo documents it.
pub(super) fn check_auth_code(code: &str) -> Result<(), String> {
    if (1..=20).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err("a UnionPay payer code (qrNo) is 1 to 20 digits".to_owned())
    }
}

impl UnionpayChannel {
    /// The answer only accepts (`respCode=00`): the payment is pending until the query (or the
    /// back notification, sent for a success only) says how it ended. 03/04/05 and no answer
    /// are unknown; another `respCode` is a refusal.
    pub(super) async fn barcode_consume(
        &self,
        req: &CreatePayment,
    ) -> Result<BarcodePaid, ChannelError> {
        check_order_id("barcode consume", &req.channel_order_no)?;
        let qr_no = req.auth_code.as_deref().ok_or_else(|| {
            ChannelError::invalid("unionpay: a barcode payment needs the payer's code")
        })?;
        check_auth_code(qr_no).map_err(|e| ChannelError::invalid(format!("unionpay: {e}")))?;
        let order_id = req.channel_order_no.as_str();
        // The attempt's creation time, so that a query after a lost answer finds it.
        let txn_time = protocol::format_txn_time(req.created_at);
        let mut fields = self.common(
            TXN_TYPE_CONSUME,
            TXN_SUB_TYPE_BARCODE,
            BIZ_TYPE_NONE,
            Some(CHANNEL_TYPE_MOBILE),
            order_id,
            &txn_time,
        );
        fields.insert("txnAmt".to_owned(), protocol::format_txn_amt(req.amount));
        fields.insert("currencyCode".to_owned(), CURRENCY_CNY.to_owned());
        fields.insert("backUrl".to_owned(), req.notify_url.clone());
        fields.insert("qrNo".to_owned(), qr_no.to_owned());
        let answer = self.call("barcode consume", BACK_TRANS_PATH, fields).await?;
        accepted("barcode consume", &answer)?;
        tracing::info!(order_id, txn_time, "unionpay barcode consume accepted");
        Ok(BarcodePaid {
            state: ChannelPayment::Pending,
            channel_data: json!({
                "txnTime": txn_time,
                "txnSubType": TXN_SUB_TYPE_BARCODE,
                "bizType": BIZ_TYPE_NONE,
                "channelType": CHANNEL_TYPE_MOBILE,
            }),
        })
    }

    /// `respCode=00` confirms the reversal (an unpaid consume is closed; a paid one is given
    /// back; the answer does not say which). 03/04/05 and no answer: send it again. Any other code is not a confirmation: the
    /// caller keeps trying and raises an alert.
    pub(super) async fn barcode_reversal(
        &self,
        payment: &PaymentRef,
    ) -> Result<BarcodeCancel, ChannelError> {
        let o = original(payment);
        let order_id = payment.channel_order_no.as_str();
        let fields = self.common(
            TXN_TYPE_REVERSAL,
            TXN_SUB_TYPE_REVERSAL,
            BIZ_TYPE_NONE,
            Some(CHANNEL_TYPE_MOBILE),
            order_id,
            &protocol::format_txn_time(o.txn_time),
        );
        let answer = self.call("reversal", BACK_TRANS_PATH, fields).await?;
        accepted("reversal", &answer)?;
        tracing::info!(order_id, answer = %describe(&answer), "unionpay reversal confirmed");
        // The answer does not say whether the consume had been paid: either way nobody can
        // pay it any more, and money taken went back.
        Ok(BarcodeCancel::Closed)
    }
}

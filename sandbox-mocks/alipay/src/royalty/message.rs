//! The `alipay.trade.order.settle.notify` message: posted to the application gateway once an
//! async settle's lines have ended.

use std::sync::Arc;

use paymux_mock_kit::notify::Notification;
use paymux_mock_kit::random_digits;
use serde_json::json;
use time::OffsetDateTime;

use super::Settle;
use crate::Shared;
use crate::protocol::{Params, format_beijing, format_yuan, notification_sign_content};

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

impl SettleMessage {
    /// The message for `settle`'s current lines, to `url`.
    pub(super) fn new(shared: Arc<Shared>, url: String, settle: &Settle) -> Self {
        Self { shared, url, fields: message_fields(settle) }
    }
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

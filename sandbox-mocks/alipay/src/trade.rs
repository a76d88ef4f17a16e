//! The mock's trades and what each operation does to them: Alipay's business rules, kept apart
//! from HTTP and signing so each answer is decided in one place.

use std::collections::HashMap;

use paymux_mock_kit::random_digits;
use serde::Serialize;
use time::OffsetDateTime;

use crate::protocol::{Node, Params, ResultCode, format_beijing, format_yuan};

/// How the order reached Alipay; decides which notifications Alipay sends by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PayMethod {
    Precreate,
    PagePay,
    WapPay,
    AppPay,
    /// `alipay.trade.pay`: a barcode payment (`barcode.rs`).
    BarcodePay,
}

impl PayMethod {
    pub(crate) fn api_name(self) -> &'static str {
        match self {
            Self::Precreate => "alipay.trade.precreate",
            Self::PagePay => "alipay.trade.page.pay",
            Self::WapPay => "alipay.trade.wap.pay",
            Self::AppPay => "alipay.trade.app.pay",
            Self::BarcodePay => "alipay.trade.pay",
        }
    }

    /// page.pay and precreate notify only TRADE_SUCCESS (which a partial refund sends again)
    /// unless the merchant enables more in the console; app.pay and wap.pay also notify closes
    /// and full refunds.
    fn notifies_closes_and_refunds(self) -> bool {
        matches!(self, Self::WapPay | Self::AppPay)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum TradeStatus {
    WaitBuyerPay,
    TradeSuccess,
    TradeClosed,
}

impl TradeStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::WaitBuyerPay => "WAIT_BUYER_PAY",
            Self::TradeSuccess => "TRADE_SUCCESS",
            Self::TradeClosed => "TRADE_CLOSED",
        }
    }
}

/// A 40004 answer's `sub_code` and `sub_msg`, or another definite refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub code: ResultCode,
    pub sub_code: &'static str,
    pub sub_msg: String,
}

impl Refusal {
    pub(crate) fn business(sub_code: &'static str, sub_msg: &str) -> Self {
        Self { code: ResultCode::BusinessFailed, sub_code, sub_msg: sub_msg.to_owned() }
    }

    pub(crate) fn node(&self) -> Node {
        Node::error(self.code, self.sub_code, &self.sub_msg)
    }
}

fn trade_not_exist() -> Refusal {
    Refusal::business("ACQ.TRADE_NOT_EXIST", "交易不存在")
}

/// What a payment request asks for; two requests with the same `out_trade_no` must agree on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NewOrder {
    pub method: PayMethod,
    pub app_id: String,
    pub out_trade_no: String,
    pub subject: String,
    pub body: Option<String>,
    pub total_fen: i64,
    pub notify_url: Option<String>,
    pub return_url: Option<String>,
    pub passback_params: Option<String>,
    /// `extend_params.royalty_freeze="true"`: the paid funds stay frozen for 商家分账.
    pub royalty_freeze: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct Refund {
    pub out_request_no: String,
    pub amount_fen: i64,
    pub at: OffsetDateTime,
}

/// One notification and every attempt to deliver it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct NotificationLog {
    pub notify_id: String,
    pub trade_status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out_biz_no: Option<String>,
    pub state: DeliveryState,
    pub attempts: Vec<Attempt>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum DeliveryState {
    Pending,
    Delivered,
    GaveUp,
    NoNotifyUrl,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Attempt {
    pub at: String,
    pub outcome: String,
    pub acknowledged: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct Order {
    pub seq: u64,
    pub request: NewOrder,
    pub trade_no: String,
    pub buyer_id: String,
    pub buyer_logon_id: String,
    pub created_at: OffsetDateTime,
    /// Whether the trade exists at Alipay: a QR code, a cashier page or an order string does not
    /// create it until the buyer scans or opens it.
    pub exists: bool,
    pub status: TradeStatus,
    pub paid_at: Option<OffsetDateTime>,
    pub closed_at: Option<OffsetDateTime>,
    pub refunds: Vec<Refund>,
    pub notifications: Vec<NotificationLog>,
}

impl Order {
    pub(crate) fn refunded_fen(&self) -> i64 {
        self.refunds.iter().map(|r| r.amount_fen).sum()
    }
}

/// A notification ready to sign and send. `fields` holds everything but `sign`.
#[derive(Debug, Clone)]
pub(crate) struct NotifyJob {
    pub out_trade_no: String,
    pub index: usize,
    pub url: String,
    pub fields: Params,
}

/// Why a control-API action was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ControlError {
    #[error("no order with out_trade_no `{0}`")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
}

/// Which trade a query, close or refund names.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TradeRef<'a> {
    pub out_trade_no: Option<&'a str>,
    pub trade_no: Option<&'a str>,
}

#[derive(Debug, Default)]
pub(crate) struct Trades {
    orders: HashMap<String, Order>,
    next_seq: u64,
}

fn date_digits(at: OffsetDateTime) -> String {
    format_beijing(at).chars().take(10).filter(char::is_ascii_digit).collect()
}

impl Trades {
    pub(crate) fn get(&self, out_trade_no: &str) -> Option<&Order> {
        self.orders.get(out_trade_no)
    }

    pub(crate) fn all(&self) -> Vec<&Order> {
        let mut list: Vec<&Order> = self.orders.values().collect();
        list.sort_by_key(|o| o.seq);
        list
    }

    /// Registers a payment request, or checks a repeat of one against the first.
    pub(crate) fn register(
        &mut self,
        new: NewOrder,
        now: OffsetDateTime,
    ) -> Result<&Order, Refusal> {
        let key = new.out_trade_no.clone();
        if let Some(existing) = self.orders.get(&key) {
            if existing.request.method != new.method
                || existing.request.app_id != new.app_id
                || existing.request.total_fen != new.total_fen
                || existing.request.subject != new.subject
            {
                return Err(Refusal::business("ACQ.CONTEXT_INCONSISTENT", "交易信息被篡改"));
            }
            if existing.paid_at.is_some() {
                return Err(Refusal::business("ACQ.TRADE_HAS_SUCCESS", "交易已被支付"));
            }
            if existing.status == TradeStatus::TradeClosed {
                return Err(Refusal::business("ACQ.TRADE_HAS_CLOSE", "交易已经关闭"));
            }
        } else {
            self.next_seq += 1;
            let order = Order {
                seq: self.next_seq,
                trade_no: format!("{}22001{}", date_digits(now), random_digits(15)),
                buyer_id: format!("2088{}", random_digits(12)),
                buyer_logon_id: format!("sbx***@{}.com", random_digits(4)),
                created_at: now,
                // The app SDK hands the order string straight to the Alipay app, which creates
                // the trade; the other methods wait for a scan or the cashier page.
                exists: new.method == PayMethod::AppPay,
                status: TradeStatus::WaitBuyerPay,
                paid_at: None,
                closed_at: None,
                refunds: Vec::new(),
                notifications: Vec::new(),
                request: new,
            };
            self.orders.insert(key.clone(), order);
        }
        self.orders.get(&key).ok_or_else(trade_not_exist)
    }

    /// An order by `out_trade_no`, to change (barcode cancels).
    pub(crate) fn order_mut(&mut self, out_trade_no: &str) -> Option<&mut Order> {
        self.orders.get_mut(out_trade_no)
    }

    /// The buyer scanned the QR code or opened the cashier page.
    pub(crate) fn mark_scanned(&mut self, out_trade_no: &str) {
        if let Some(order) = self.orders.get_mut(out_trade_no) {
            order.exists = true;
        }
    }

    /// A trade as Alipay sees it: unknown until it exists.
    fn find_mut(&mut self, which: TradeRef<'_>) -> Result<&mut Order, Refusal> {
        let found = match (which.out_trade_no, which.trade_no) {
            (Some(no), _) => self.orders.get_mut(no),
            (None, Some(trade_no)) => self.orders.values_mut().find(|o| o.trade_no == trade_no),
            (None, None) => None,
        };
        match found {
            Some(order) if order.exists => {
                if let Some(trade_no) = which.trade_no
                    && trade_no != order.trade_no
                {
                    return Err(trade_not_exist());
                }
                Ok(order)
            }
            _ => Err(trade_not_exist()),
        }
    }

    pub(crate) fn query(&mut self, which: TradeRef<'_>) -> Result<Node, Refusal> {
        let order = self.find_mut(which)?;
        let mut node = Node::success()
            .field("trade_no", order.trade_no.clone())
            .field("out_trade_no", order.request.out_trade_no.clone())
            .field("buyer_logon_id", order.buyer_logon_id.clone())
            .field("trade_status", order.status.as_str())
            .field("total_amount", format_yuan(order.request.total_fen));
        if let Some(paid_at) = order.paid_at {
            let total = format_yuan(order.request.total_fen);
            node = node
                .field("buyer_pay_amount", total.clone())
                .field("point_amount", "0.00")
                .field("invoice_amount", total.clone())
                .field("receipt_amount", total)
                .field("send_pay_date", format_beijing(paid_at))
                .field("buyer_user_id", order.buyer_id.clone());
        }
        Ok(node)
    }

    /// `alipay.trade.close`: only a waiting trade closes. Alipay sends no notification for a
    /// close the merchant asked for.
    pub(crate) fn close(
        &mut self,
        which: TradeRef<'_>,
        now: OffsetDateTime,
    ) -> Result<Node, Refusal> {
        let order = self.find_mut(which)?;
        if order.status != TradeStatus::WaitBuyerPay {
            return Err(Refusal::business("ACQ.TRADE_STATUS_ERROR", "交易状态不合法"));
        }
        order.status = TradeStatus::TradeClosed;
        order.closed_at = Some(now);
        Ok(Node::success()
            .field("trade_no", order.trade_no.clone())
            .field("out_trade_no", order.request.out_trade_no.clone()))
    }

    /// `alipay.trade.refund`, idempotent by `out_request_no`.
    pub(crate) fn refund(
        &mut self,
        which: TradeRef<'_>,
        out_request_no: Option<&str>,
        amount_fen: i64,
        now: OffsetDateTime,
        seller_id: &str,
    ) -> Result<(Node, Option<NotifyJob>), Refusal> {
        let order = self.find_mut(which)?;
        let out_request_no = out_request_no.unwrap_or(&order.request.out_trade_no).to_owned();
        let answer = |order: &Order, fund_change: &str, at: OffsetDateTime| {
            Node::success()
                .field("trade_no", order.trade_no.clone())
                .field("out_trade_no", order.request.out_trade_no.clone())
                .field("buyer_logon_id", order.buyer_logon_id.clone())
                .field("fund_change", fund_change)
                .field("refund_fee", format_yuan(order.refunded_fen()))
                .field("gmt_refund_pay", format_beijing(at))
                .field("buyer_user_id", order.buyer_id.clone())
        };
        if let Some(done) = order.refunds.iter().find(|r| r.out_request_no == out_request_no) {
            if done.amount_fen != amount_fen {
                return Err(Refusal::business("ACQ.CONTEXT_INCONSISTENT", "交易信息被篡改"));
            }
            return Ok((answer(order, "N", done.at), None));
        }
        if order.paid_at.is_none() {
            return Err(match order.status {
                TradeStatus::TradeClosed => {
                    Refusal::business("ACQ.TRADE_HAS_CLOSE", "交易已经关闭")
                }
                _ => Refusal::business("ACQ.TRADE_STATUS_ERROR", "交易状态不合法"),
            });
        }
        let remaining = order.request.total_fen - order.refunded_fen();
        if amount_fen > remaining {
            return Err(Refusal::business("ACQ.REFUND_AMT_NOT_EQUAL_TOTAL", "退款金额超限"));
        }
        order.refunds.push(Refund { out_request_no: out_request_no.clone(), amount_fen, at: now });
        let full = order.refunded_fen() == order.request.total_fen;
        if full {
            order.status = TradeStatus::TradeClosed;
            order.closed_at = Some(now);
        }
        let node = answer(order, "Y", now);
        // A partial refund leaves the trade TRADE_SUCCESS and is notified whatever the method
        // (alipay.md "Which notifications are sent"); the TRADE_CLOSED of a full refund is not
        // sent for page.pay and precreate by default.
        let job = if !full || order.request.method.notifies_closes_and_refunds() {
            Some(push_notification(order, seller_id, now, Some((&out_request_no, now))))
        } else {
            None
        };
        Ok((node, job))
    }

    /// `alipay.trade.fastpay.refund.query`: `refund_status` only for a refund that is done.
    pub(crate) fn refund_query(
        &mut self,
        which: TradeRef<'_>,
        out_request_no: &str,
    ) -> Result<Node, Refusal> {
        let order = self.find_mut(which)?;
        let node = Node::success()
            .field("trade_no", order.trade_no.clone())
            .field("out_trade_no", order.request.out_trade_no.clone())
            .field("out_request_no", out_request_no);
        Ok(match order.refunds.iter().find(|r| r.out_request_no == out_request_no) {
            Some(refund) => node
                .field("total_amount", format_yuan(order.request.total_fen))
                .field("refund_amount", format_yuan(refund.amount_fen))
                .field("refund_status", "REFUND_SUCCESS")
                .field("gmt_refund_pay", format_beijing(refund.at)),
            None => node,
        })
    }

    /// The buyer pays (control API or cashier page).
    pub(crate) fn pay(
        &mut self,
        out_trade_no: &str,
        now: OffsetDateTime,
        seller_id: &str,
    ) -> Result<NotifyJob, ControlError> {
        let order = self.control_target(out_trade_no)?;
        order.exists = true;
        order.status = TradeStatus::TradeSuccess;
        order.paid_at = Some(now);
        Ok(push_notification(order, seller_id, now, None))
    }

    /// The buyer gave up, or the trade timed out: it closes unpaid. app/wap orders are told.
    pub(crate) fn close_unpaid(
        &mut self,
        out_trade_no: &str,
        now: OffsetDateTime,
        seller_id: &str,
    ) -> Result<Option<NotifyJob>, ControlError> {
        let order = self.control_target(out_trade_no)?;
        order.exists = true;
        order.status = TradeStatus::TradeClosed;
        order.closed_at = Some(now);
        Ok(order
            .request
            .method
            .notifies_closes_and_refunds()
            .then(|| push_notification(order, seller_id, now, None)))
    }

    fn control_target(&mut self, out_trade_no: &str) -> Result<&mut Order, ControlError> {
        let order = self
            .orders
            .get_mut(out_trade_no)
            .ok_or_else(|| ControlError::NotFound(out_trade_no.to_owned()))?;
        if order.status != TradeStatus::WaitBuyerPay {
            return Err(ControlError::Conflict(format!(
                "order `{out_trade_no}` is {}, not WAIT_BUYER_PAY",
                order.status.as_str()
            )));
        }
        Ok(order)
    }

    pub(crate) fn log_attempt(&mut self, out_trade_no: &str, index: usize, attempt: Attempt) {
        if let Some(log) = self.notification_mut(out_trade_no, index) {
            log.attempts.push(attempt);
        }
    }

    pub(crate) fn set_delivery_state(
        &mut self,
        out_trade_no: &str,
        index: usize,
        state: DeliveryState,
    ) {
        if let Some(log) = self.notification_mut(out_trade_no, index) {
            log.state = state;
        }
    }

    fn notification_mut(
        &mut self,
        out_trade_no: &str,
        index: usize,
    ) -> Option<&mut NotificationLog> {
        self.orders.get_mut(out_trade_no)?.notifications.get_mut(index)
    }
}

/// Builds the notification for the order's current state (a refund's fields when `refund` is
/// given) and records it in the order's log. Empty values are never sent: third-party verifiers
/// drop them while the official ones keep them.
fn push_notification(
    order: &mut Order,
    seller_id: &str,
    now: OffsetDateTime,
    refund: Option<(&str, OffsetDateTime)>,
) -> NotifyJob {
    let notify_id = format!("{}{}", date_digits(now), random_digits(26));
    let req = &order.request;
    let total = format_yuan(req.total_fen);
    let mut fields = Params::new();
    let mut put = |name: &str, value: String| {
        if !value.is_empty() {
            fields.insert(name.to_owned(), value);
        }
    };
    put("notify_time", format_beijing(now));
    put("notify_type", "trade_status_sync".into());
    put("notify_id", notify_id.clone());
    put("app_id", req.app_id.clone());
    put("auth_app_id", req.app_id.clone());
    put("charset", "utf-8".into());
    put("version", "1.0".into());
    put("sign_type", "RSA2".into());
    put("trade_no", order.trade_no.clone());
    put("out_trade_no", req.out_trade_no.clone());
    put("buyer_id", order.buyer_id.clone());
    put("buyer_logon_id", order.buyer_logon_id.clone());
    put("seller_id", seller_id.to_owned());
    put("trade_status", order.status.as_str().into());
    put("total_amount", total.clone());
    put("subject", req.subject.clone());
    put("body", req.body.clone().unwrap_or_default());
    put("passback_params", req.passback_params.clone().unwrap_or_default());
    put("gmt_create", format_beijing(order.created_at));
    if let Some(paid_at) = order.paid_at {
        put("receipt_amount", total.clone());
        put("buyer_pay_amount", total.clone());
        put("invoice_amount", total.clone());
        put("point_amount", "0.00".into());
        put("gmt_payment", format_beijing(paid_at));
        put(
            "fund_bill_list",
            format!("[{{\"amount\":\"{total}\",\"fundChannel\":\"ALIPAYACCOUNT\"}}]"),
        );
    }
    if let Some(closed_at) = order.closed_at {
        put("gmt_close", format_beijing(closed_at));
    }
    if let Some((out_request_no, at)) = refund {
        put("refund_fee", format_yuan(order.refunded_fen()));
        put("gmt_refund", format_beijing(at));
        put("out_biz_no", out_request_no.to_owned());
    }
    let url = req.notify_url.clone().unwrap_or_default();
    order.notifications.push(NotificationLog {
        notify_id,
        trade_status: order.status.as_str(),
        out_biz_no: refund.map(|(no, _)| no.to_owned()),
        state: if url.is_empty() { DeliveryState::NoNotifyUrl } else { DeliveryState::Pending },
        attempts: Vec::new(),
    });
    NotifyJob {
        out_trade_no: req.out_trade_no.clone(),
        index: order.notifications.len() - 1,
        url,
        fields,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn new_order(method: PayMethod, no: &str, fen: i64) -> NewOrder {
        NewOrder {
            method,
            app_id: "2021000000000001".into(),
            out_trade_no: no.into(),
            subject: "Coffee".into(),
            body: None,
            total_fen: fen,
            notify_url: Some("http://127.0.0.1:1/notify".into()),
            return_url: None,
            passback_params: None,
            royalty_freeze: false,
        }
    }

    fn by_no(no: &str) -> TradeRef<'_> {
        TradeRef { out_trade_no: Some(no), trade_no: None }
    }

    #[test]
    fn precreate_trade_does_not_exist_until_scanned() {
        let mut trades = Trades::default();
        let now = OffsetDateTime::now_utc();
        trades.register(new_order(PayMethod::Precreate, "A1", 100), now).unwrap();
        assert_eq!(trades.query(by_no("A1")).unwrap_err().sub_code, "ACQ.TRADE_NOT_EXIST");
        assert_eq!(trades.close(by_no("A1"), now).unwrap_err().sub_code, "ACQ.TRADE_NOT_EXIST");
        trades.mark_scanned("A1");
        assert_eq!(trades.query(by_no("A1")).unwrap().get("trade_status"), Some("WAIT_BUYER_PAY"));
    }

    #[test]
    fn repeated_order_must_match_the_first() {
        let mut trades = Trades::default();
        let now = OffsetDateTime::now_utc();
        let first = trades
            .register(new_order(PayMethod::Precreate, "A2", 100), now)
            .unwrap()
            .trade_no
            .clone();
        let again = trades
            .register(new_order(PayMethod::Precreate, "A2", 100), now)
            .unwrap()
            .trade_no
            .clone();
        assert_eq!(first, again);
        let refused = trades.register(new_order(PayMethod::Precreate, "A2", 101), now).unwrap_err();
        assert_eq!(refused.sub_code, "ACQ.CONTEXT_INCONSISTENT");
    }

    #[test]
    fn a_partial_refund_of_a_precreate_trade_is_notified_and_a_full_one_is_not() {
        let mut trades = Trades::default();
        let now = OffsetDateTime::now_utc();
        trades.register(new_order(PayMethod::Precreate, "P1", 1000), now).unwrap();
        trades.pay("P1", now, "2088").unwrap();
        let (_, job) = trades.refund(by_no("P1"), Some("r1"), 300, now, "2088").unwrap();
        let job = job.unwrap();
        assert_eq!(job.fields["trade_status"], "TRADE_SUCCESS");
        assert_eq!(job.fields["refund_fee"], "3.00");
        assert_eq!(job.fields["out_biz_no"], "r1");
        assert!(job.fields.contains_key("gmt_refund"));
        let (_, again) = trades.refund(by_no("P1"), Some("r1"), 300, now, "2088").unwrap();
        assert!(again.is_none());
        let (_, full) = trades.refund(by_no("P1"), Some("r2"), 700, now, "2088").unwrap();
        assert!(full.is_none());
    }

    #[test]
    fn refunds_are_idempotent_and_bounded() {
        let mut trades = Trades::default();
        let now = OffsetDateTime::now_utc();
        trades.register(new_order(PayMethod::AppPay, "A3", 1000), now).unwrap();
        assert_eq!(
            trades.refund(by_no("A3"), Some("r1"), 100, now, "2088").unwrap_err().sub_code,
            "ACQ.TRADE_STATUS_ERROR"
        );
        trades.pay("A3", now, "2088").unwrap();
        let (node, job) = trades.refund(by_no("A3"), Some("r1"), 300, now, "2088").unwrap();
        assert_eq!((node.get("fund_change"), node.get("refund_fee")), (Some("Y"), Some("3.00")));
        let job = job.unwrap();
        assert_eq!(job.fields["trade_status"], "TRADE_SUCCESS");
        assert_eq!(job.fields["out_biz_no"], "r1");
        let (node, job) = trades.refund(by_no("A3"), Some("r1"), 300, now, "2088").unwrap();
        assert_eq!((node.get("fund_change"), node.get("refund_fee")), (Some("N"), Some("3.00")));
        assert!(job.is_none());
        let refused = trades.refund(by_no("A3"), Some("r2"), 701, now, "2088").unwrap_err();
        assert_eq!(refused.sub_code, "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL");
        let (_, job) = trades.refund(by_no("A3"), Some("r2"), 700, now, "2088").unwrap();
        assert_eq!(job.unwrap().fields["trade_status"], "TRADE_CLOSED");
        assert_eq!(
            trades.refund_query(by_no("A3"), "r2").unwrap().get("refund_status"),
            Some("REFUND_SUCCESS")
        );
        assert_eq!(trades.refund_query(by_no("A3"), "r3").unwrap().get("refund_status"), None);
    }

    #[test]
    fn page_pay_refund_sends_no_notification_and_payment_notification_has_no_empty_field() {
        let mut trades = Trades::default();
        let now = OffsetDateTime::now_utc();
        trades.register(new_order(PayMethod::PagePay, "A4", 100), now).unwrap();
        let job = trades.pay("A4", now, "2088").unwrap();
        assert!(job.fields.values().all(|v| !v.is_empty()));
        assert_eq!(job.fields["trade_no"].len(), 28);
        assert!(!job.fields.contains_key("sign"));
        let (_, job) = trades.refund(by_no("A4"), None, 100, now, "2088").unwrap();
        assert!(job.is_none());
        assert!(matches!(trades.pay("A4", now, "2088"), Err(ControlError::Conflict(_))));
    }
}

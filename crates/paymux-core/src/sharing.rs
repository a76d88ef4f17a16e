//! Profit sharing as a channel performs it: the calls a channel adapter makes for a held payment.
//!
//! A held payment is created with [`CreatePayment::hold`](crate::CreatePayment) set, so the
//! channel freezes its funds (WeChat `settle_info.profit_sharing`, Alipay
//! `extend_params.royalty_freeze`). Settling it is one or more **share** calls, each moving frozen
//! money to receivers, then one **release** that gives the rest to the merchant. Both are keyed by
//! a number paymux chooses and stores before the call (WeChat `out_order_no`, Alipay
//! `out_request_no`): sending the same call again with the same number never moves money twice,
//! which is how an unknown outcome is resolved.
//!
//! A channel without a hold of its own (UnionPay for a direct merchant) leaves these to their
//! defaults, and paymux holds the money in its own ledger instead.

use serde::{Deserialize, Serialize};

use crate::{ChannelOrderNo, Money, PaymentRef};

/// A receiver's account at one channel, as the merchant gave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverAccount {
    /// The account's type: WeChat `MERCHANT_ID` or `PERSONAL_OPENID`; Alipay `userId`,
    /// `loginName` or `openId`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The mchid, openid, Alipay user id or login name.
    pub account: String,
    /// The holder's real name, where the channel checks it (WeChat `MERCHANT_ID`: required, sent
    /// encrypted; Alipay `loginName`: required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// WeChat's `relation_type` (`PARTNER`, `SUPPLIER`, `DISTRIBUTOR`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relation_type: Option<String>,
}

/// One receiver's part in a share call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareLine {
    pub receiver: ReceiverAccount,
    pub amount: Money,
    /// Shown to the receiver (WeChat `description`, Alipay `desc`).
    pub description: String,
}

/// A share call: move `lines` out of the payment's frozen funds. The rest stays frozen until
/// [`Channel::release`](crate::Channel::release).
#[derive(Debug, Clone)]
pub struct ShareRequest {
    /// The paid attempt (its `channel_trade_no` is set).
    pub payment: PaymentRef,
    /// paymux's number for this call, the channel's idempotency key.
    pub share_no: ChannelOrderNo,
    pub lines: Vec<ShareLine>,
}

/// Release everything still frozen on the payment to the merchant. No further share is possible
/// afterwards.
#[derive(Debug, Clone)]
pub struct ReleaseRequest {
    pub payment: PaymentRef,
    /// paymux's number for the release (WeChat makes an unfreeze a split order of its own).
    pub release_no: ChannelOrderNo,
}

/// A receiver line's state at the channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShareLineState {
    /// Still being processed: query again.
    Pending,
    Succeeded,
    /// Final refusal of this line (WeChat `CLOSED` with its `fail_reason`, Alipay `FAIL` with its
    /// `error_code`): the money stays with the merchant.
    Failed {
        code: String,
        message: String,
    },
}

/// What the channel says about one receiver line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareLineResult {
    /// The receiver's account, as sent.
    pub account: String,
    pub amount: Money,
    pub state: ShareLineState,
}

/// A share call as the channel reports it, in its answer or a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareResult {
    /// The channel's number for the call (WeChat `order_id`, Alipay `settle_no`), when it gave one.
    pub channel_share_no: Option<String>,
    /// One entry per line the channel knows of. A line that is missing is not known to have
    /// moved: the caller treats it as pending.
    pub lines: Vec<ShareLineResult>,
}

impl ShareResult {
    /// Every line has a final state.
    pub fn is_final(&self) -> bool {
        self.lines.iter().all(|l| l.state != ShareLineState::Pending)
    }
}

/// A release as the channel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Released {
    /// Still being processed: query (or re-send) later.
    Pending,
    /// The rest went to the merchant (or nothing was left to release).
    Done,
}

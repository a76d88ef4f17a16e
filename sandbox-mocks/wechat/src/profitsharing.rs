//! Profit sharing (分账) as a direct merchant sees it: orders created with
//! `settle_info.profit_sharing=true` have their net amount (after WeChat's fee) frozen once paid;
//! receivers are added first, then split orders move frozen money to them asynchronously
//! (PROCESSING, then FINISHED with a result per receiver line), unfreeze releases the rest to
//! the merchant, and refunds follow WeChat's table for frozen and split funds.
//!
//! Every `/v3/profitsharing/` call is verified and answered like the mock's other calls. The
//! `/_sandbox/profitsharing` control API shows holds, split orders, receivers and balances and
//! sets the rules' values and faults ([`ProfitSharingSettings`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::rsa::{
    OAEP_SHA1_MGF1SHA1, OaepPrivateDecryptingKey, OaepPublicEncryptingKey, PrivateDecryptingKey,
    PublicEncryptingKey,
};
use axum::Json;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use paymux_crypto::{RsaPrivateKey, b64_decode, b64_encode};
use paymux_mock_kit::random_digits;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::api::{Verified, finish};
use crate::notify;
use crate::protocol::{beijing_compact, beijing_rfc3339};
use crate::state::{ApiError, Order, Shared, lock};

mod returns;

pub(crate) use returns::{create_return, query_return};

type St = State<Arc<Shared>>;

/// WeChat's limits (profit-sharing `apilist.html`, `development.html`).
const MAX_RECEIVERS_PER_REQUEST: usize = 50;
const MAX_REQUESTS_PER_ORDER: usize = 50;
const MAX_RECEIVERS_PER_MERCHANT: usize = 20_000;

const RELATION_TYPES: [&str; 11] = [
    "SERVICE_PROVIDER",
    "STORE",
    "STAFF",
    "STORE_OWNER",
    "PARTNER",
    "HEADQUARTER",
    "BRAND",
    "DISTRIBUTOR",
    "USER",
    "SUPPLIER",
    "CUSTOM",
];

const FAIL_REASONS: [&str; 5] = [
    "ACCOUNT_ABNORMAL",
    "NO_RELATION",
    "RECEIVER_HIGH_RISK",
    "RECEIVER_REAL_NAME_NOT_VERIFIED",
    "NO_AUTH",
];

/// The values of WeChat's profit-sharing rules, and the faults, as `POST
/// /_sandbox/profitsharing/settings` sets them (a POST replaces them all).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProfitSharingSettings {
    /// The merchant's "订单分账最大比例" in 1/10000 of the order amount (default 3000 = 30 %).
    pub max_ratio_bps: u32,
    /// Per-mchid overrides of `max_ratio_bps`.
    pub merchant_max_ratio_bps: BTreeMap<String, u32>,
    /// Whether splits to the paying merchant itself count toward the ratio (uncertain at WeChat;
    /// default no).
    pub self_split_counts_toward_ratio: bool,
    /// WeChat's fee in 1/10000 of the order amount (default 60 = 0.6 %), rounded half up to a
    /// fen; what is frozen, and can be split, is the order amount minus this fee.
    pub fee_rate_bps: u32,
    /// How long after the payment a split or unfreeze is first accepted (WeChat: 1 minute;
    /// earlier gets 400 INVALID_REQUEST "订单处理中，请稍后重试").
    pub min_wait_ms: u64,
    /// How long split orders stay PROCESSING (their lines PENDING) before they finish.
    pub processing_ms: u64,
    /// The freeze period (WeChat: 30 days); after it the remainder unfreezes by itself.
    pub freeze_seconds: u64,
    /// Fault: receiver accounts whose lines end CLOSED, with the fail reason to report
    /// (`ACCOUNT_ABNORMAL`, `NO_RELATION`, `RECEIVER_HIGH_RISK`,
    /// `RECEIVER_REAL_NAME_NOT_VERIFIED`, `NO_AUTH`).
    pub refused_receivers: BTreeMap<String, String>,
    /// The URL a `MERCHANT_ID` receiver set in its own portal for 分账动账通知; the receiver
    /// must be a merchant registered with the mock (its APIv3 key encrypts the notification).
    pub receiver_notify_urls: BTreeMap<String, String>,
    /// What a merchant's available balance starts at, in fen: refunds that cannot be paid
    /// from frozen funds draw on it.
    pub opening_available_balance: i64,
    /// `MERCHANT_ID` receivers that have not turned on "同意分账回退": returns from them are
    /// refused.
    pub no_return_consent: Vec<String>,
    /// Fault: receivers whose returns end FAILED, with the reason (`ACCOUNT_ABNORMAL`,
    /// `BALANCE_NOT_ENOUGH`, `TIME_OUT_CLOSED`). A receiver whose balance is short fails with
    /// `BALANCE_NOT_ENOUGH` anyway.
    pub refused_returns: BTreeMap<String, String>,
    /// Split requests a merchant may make per second (WeChat: 30; 0: no limit); more get 429
    /// `FREQUENCY_LIMITED`.
    pub split_requests_per_second: u32,
    /// Fault: the next N split queries answer 404 `RESOURCE_NOT_EXISTS`, as WeChat sometimes
    /// does shortly after a payment (the count restarts with each POST of the settings).
    pub not_found_queries: u32,
}

impl Default for ProfitSharingSettings {
    fn default() -> Self {
        Self {
            max_ratio_bps: 3000,
            merchant_max_ratio_bps: BTreeMap::new(),
            self_split_counts_toward_ratio: false,
            fee_rate_bps: 60,
            min_wait_ms: 60_000,
            processing_ms: 1_000,
            freeze_seconds: 30 * 24 * 3600,
            refused_receivers: BTreeMap::new(),
            receiver_notify_urls: BTreeMap::new(),
            opening_available_balance: 100_000_000,
            no_return_consent: Vec::new(),
            refused_returns: BTreeMap::new(),
            split_requests_per_second: 30,
            not_found_queries: 0,
        }
    }
}

impl ProfitSharingSettings {
    fn max_ratio(&self, mchid: &str) -> u32 {
        self.merchant_max_ratio_bps.get(mchid).copied().unwrap_or(self.max_ratio_bps)
    }

    fn check(&self) -> Result<(), String> {
        let ratios =
            std::iter::once(&self.max_ratio_bps).chain(self.merchant_max_ratio_bps.values());
        if ratios.into_iter().any(|r| *r > 10_000) || self.fee_rate_bps > 10_000 {
            return Err("ratios and fee rates are at most 10000 (1/10000 units)".into());
        }
        if let Some((account, reason)) =
            self.refused_receivers.iter().find(|(_, r)| !FAIL_REASONS.contains(&r.as_str()))
        {
            return Err(format!(
                "refused_receivers[{account}]: unknown fail reason {reason:?}; known: {}",
                FAIL_REASONS.join(", ")
            ));
        }
        if let Some((account, reason)) =
            self.refused_returns.iter().find(|(_, r)| !returns::FAIL_REASONS.contains(&r.as_str()))
        {
            return Err(format!(
                "refused_returns[{account}]: unknown fail reason {reason:?}; known: {}",
                returns::FAIL_REASONS.join(", ")
            ));
        }
        if self.opening_available_balance < 0 {
            return Err("opening_available_balance cannot be negative".into());
        }
        Ok(())
    }
}

/// A receiver added by `receivers/add`.
#[derive(Debug, Clone, Serialize)]
struct Relation {
    appid: String,
    #[serde(rename = "type")]
    kind: String,
    account: String,
    /// The decrypted name, as WeChat reads it.
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    relation_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    custom_relation: Option<String>,
}

/// The frozen funds of one profit-sharing order.
#[derive(Debug, Clone, Serialize)]
struct Hold {
    mchid: String,
    transaction_id: String,
    out_trade_no: String,
    total: i64,
    fee: i64,
    /// total - fee: what was frozen.
    net: i64,
    /// Lines PENDING or SUCCESS.
    split: i64,
    /// Lines CLOSED: their money went back to the merchant.
    returned: i64,
    /// Refunds paid from the frozen funds.
    refunded_from_frozen: i64,
    /// Released to the merchant by unfreeze, `unfreeze_unsplit` or the freeze period's end.
    released: i64,
    /// No more splits: unfrozen, or the freeze period ended.
    finished: bool,
    split_requests: usize,
    #[serde(skip)]
    paid_at: OffsetDateTime,
}

impl Hold {
    fn unsplit(&self) -> i64 {
        if self.finished {
            0
        } else {
            (self.net - self.split - self.returned - self.refunded_from_frozen - self.released)
                .max(0)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum LineResult {
    Pending,
    Success,
    Closed,
}

#[derive(Debug, Clone, Serialize)]
struct Line {
    #[serde(rename = "type")]
    kind: String,
    account: String,
    amount: i64,
    description: String,
    result: LineResult,
    #[serde(skip_serializing_if = "Option::is_none")]
    fail_reason: Option<String>,
    detail_id: String,
    #[serde(skip)]
    create_time: OffsetDateTime,
    #[serde(skip)]
    finish_time: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum SplitState {
    Processing,
    Finished,
}

/// A split order (or an unfreeze, which is a split order of its own).
#[derive(Debug, Clone, Serialize)]
struct Split {
    mchid: String,
    transaction_id: String,
    out_order_no: String,
    order_id: String,
    state: SplitState,
    unfreeze: bool,
    receivers: Vec<Line>,
    /// The request body: a resend with the same `out_order_no` must carry the same.
    #[serde(skip)]
    params: Value,
}

impl Split {
    /// WeChat's `OrdersEntity`.
    fn entity(&self) -> Value {
        let receivers: Vec<Value> = self
            .receivers
            .iter()
            .map(|l| {
                let mut v = json!({
                    "amount": l.amount,
                    "description": l.description,
                    "type": l.kind,
                    "account": l.account,
                    "result": l.result,
                    "detail_id": l.detail_id,
                    "create_time": beijing_rfc3339(l.create_time),
                    "finish_time": beijing_rfc3339(l.finish_time.unwrap_or(l.create_time)),
                });
                if let Some(reason) = &l.fail_reason {
                    v["fail_reason"] = json!(reason);
                }
                v
            })
            .collect();
        json!({
            "transaction_id": self.transaction_id,
            "out_order_no": self.out_order_no,
            "order_id": self.order_id,
            "state": self.state,
            "receivers": receivers,
        })
    }
}

/// Everything profit sharing keeps, behind one lock. Lock order: the order book
/// (`Shared::book`) before this one, never the other way round.
#[derive(Debug, Default)]
pub(crate) struct Book {
    settings: ProfitSharingSettings,
    /// mchid -> (type, account) -> relation.
    receivers: BTreeMap<String, BTreeMap<(String, String), Relation>>,
    /// By transaction_id.
    holds: BTreeMap<String, Hold>,
    /// By (mchid, out_order_no).
    splits: BTreeMap<(String, String), Split>,
    /// What each receiver (type, account) has been paid by split lines that succeeded.
    balances: BTreeMap<(String, String), i64>,
    /// Each merchant's available (unfrozen) balance, from its first use on.
    available: BTreeMap<String, i64>,
    /// Return orders by (mchid, out_return_no).
    returns: BTreeMap<(String, String), returns::Return>,
    /// Split requests per merchant in the current second: (unix second, count).
    rate: BTreeMap<String, (i64, u32)>,
    /// Split queries answered 404 under the `not_found_queries` fault since it was set.
    not_found_served: u32,
}

impl Book {
    pub(crate) fn set_settings(&mut self, settings: ProfitSharingSettings) {
        self.settings = settings;
        self.not_found_served = 0;
    }

    /// Counts a split request; false when the merchant is over its per-second limit.
    fn within_rate(&mut self, mchid: &str, now: OffsetDateTime) -> bool {
        let limit = self.settings.split_requests_per_second;
        let second = now.unix_timestamp();
        let entry = self.rate.entry(mchid.to_owned()).or_insert((second, 0));
        if entry.0 != second {
            *entry = (second, 0);
        }
        entry.1 += 1;
        limit == 0 || entry.1 <= limit
    }

    fn available_mut(&mut self, mchid: &str) -> &mut i64 {
        let opening = self.settings.opening_available_balance;
        self.available.entry(mchid.to_owned()).or_insert(opening)
    }

    /// The hold of a paid profit-sharing order, made on first use; the freeze period's end
    /// releases what is left.
    fn hold_for(&mut self, order: &OrderFacts, now: OffsetDateTime) -> Option<&mut Hold> {
        let paid_at = order.paid_at?;
        if !order.profit_sharing {
            return None;
        }
        let fee_rate = i64::from(self.settings.fee_rate_bps);
        let freeze = Duration::from_secs(self.settings.freeze_seconds);
        let hold = self.holds.entry(order.transaction_id.clone()).or_insert_with(|| {
            let fee = (order.total * fee_rate + 5_000) / 10_000;
            Hold {
                mchid: order.mchid.clone(),
                transaction_id: order.transaction_id.clone(),
                out_trade_no: order.out_trade_no.clone(),
                total: order.total,
                fee,
                net: order.total - fee,
                split: 0,
                returned: 0,
                refunded_from_frozen: 0,
                released: 0,
                finished: false,
                split_requests: 0,
                paid_at,
            }
        });
        let mut expired = 0;
        if !hold.finished && now - hold.paid_at >= freeze {
            expired = hold.unsplit();
            hold.released += expired;
            hold.finished = true;
        }
        if expired > 0 {
            tracing::info!(transaction_id = %order.transaction_id, expired, "freeze period over: remainder released");
            *self.available_mut(&order.mchid) += expired;
        }
        self.holds.get_mut(&order.transaction_id)
    }
}

/// What profit sharing needs to know of a payment order.
struct OrderFacts {
    mchid: String,
    out_trade_no: String,
    transaction_id: String,
    total: i64,
    profit_sharing: bool,
    paid_at: Option<OffsetDateTime>,
}

impl OrderFacts {
    fn of(order: &Order) -> Self {
        Self {
            mchid: order.mchid.clone(),
            out_trade_no: order.out_trade_no.clone(),
            transaction_id: order.transaction_id.clone().unwrap_or_default(),
            total: order.total,
            profit_sharing: order.params["settle_info"]["profit_sharing"] == json!(true),
            paid_at: order.success_time.filter(|_| order.state.is_paid()),
        }
    }
}

fn unknown_fields(paths: Vec<String>) -> ApiError {
    ApiError::param("请求中含有未在API文档中定义的参数")
        .with_detail(json!({"location": null, "value": paths}))
}

/// Refuses fields the API does not define (WeChat: PARAM_ERROR naming them).
fn only_fields(v: &Value, allowed: &[&str], at: &str) -> Result<(), ApiError> {
    let Some(map) = v.as_object() else { return Ok(()) };
    let extra: Vec<String> = map
        .keys()
        .filter(|k| !allowed.contains(&k.as_str()))
        .map(|k| format!("{at}/{k}"))
        .collect();
    if extra.is_empty() { Ok(()) } else { Err(unknown_fields(extra)) }
}

/// The create body's fields (`/v3/pay/transactions/{jsapi,native,app,h5}`).
const CREATE_FIELDS: [&str; 14] = [
    "appid",
    "mchid",
    "description",
    "out_trade_no",
    "time_expire",
    "attach",
    "notify_url",
    "goods_tag",
    "support_fapiao",
    "amount",
    "payer",
    "detail",
    "scene_info",
    "settle_info",
];

/// Checks a create body as WeChat v3 does: undefined fields (the v2 top-level
/// `profit_sharing` among them) are refused, and `settle_info.profit_sharing` is a boolean.
pub(crate) fn check_create_body(body: &Value) -> Result<(), ApiError> {
    only_fields(body, &CREATE_FIELDS, "/body")?;
    if let Some(settle) = body.get("settle_info") {
        if !settle.is_object() {
            return Err(ApiError::param("settle_info格式错误"));
        }
        only_fields(settle, &["profit_sharing"], "/body/settle_info")?;
        if settle.get("profit_sharing").is_some_and(|p| !p.is_boolean()) {
            return Err(ApiError::param("settle_info.profit_sharing须为布尔值"));
        }
    }
    Ok(())
}

/// A refund of `order` as profit sharing allows it (WeChat's refund table, `RULE_LIMIT`):
/// from the frozen funds while they cover it, else from the available balance once the order
/// is finished. Called with the order book locked, after the refund's own checks passed.
pub(crate) fn draw_refund(shared: &Shared, order: &Order, amount: i64) -> Result<(), ApiError> {
    let facts = OrderFacts::of(order);
    let mut book = lock(&shared.profit);
    let now = OffsetDateTime::now_utc();
    let Some(hold) = book.hold_for(&facts, now) else { return Ok(()) };
    let unsplit = hold.unsplit();
    if hold.finished {
        let mchid = hold.mchid.clone();
        let available = book.available_mut(&mchid);
        if *available < amount {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "NOT_ENOUGH",
                "基本账户余额不足，请充值后重新发起",
            ));
        }
        *available -= amount;
    } else if hold.split == 0 && hold.returned == 0 {
        // Nothing split: any refund comes out of the frozen funds (WeChat's fee comes back too).
        hold.refunded_from_frozen += amount.min(unsplit);
    } else if amount <= unsplit {
        hold.refunded_from_frozen += amount;
    } else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "RULE_LIMIT",
            "申请退款金额大于剩余未分账金额,请等待分账完成后再试",
        ));
    }
    Ok(())
}

fn not_exists() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "RESOURCE_NOT_EXISTS", "记录不存在")
}

fn not_enough() -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "NOT_ENOUGH", "分账金额不足")
}

fn processing() -> ApiError {
    ApiError::invalid("订单处理中，请稍后重试")
}

fn text<'a>(v: &'a Value, name: &str, at: &str, max: usize) -> Result<&'a str, ApiError> {
    let s = v.get(name).and_then(Value::as_str).filter(|s| !s.is_empty()).ok_or_else(|| {
        ApiError::param(format!("输入源“{at}/{name}”映射到字段“{name}”必填性规则校验失败"))
    })?;
    if s.chars().count() > max {
        return Err(ApiError::param(format!("{name}超出长度限制({max})")));
    }
    Ok(s)
}

fn valid_out_order_no(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'*' | b'@' | b'|'))
}

/// The paid order with this transaction id, for the signing merchant.
fn order_facts(shared: &Shared, mchid: &str, transaction_id: &str) -> Result<OrderFacts, ApiError> {
    lock(&shared.book)
        .orders
        .values()
        .find(|o| o.mchid == mchid && o.transaction_id.as_deref() == Some(transaction_id))
        .map(OrderFacts::of)
        .ok_or_else(not_exists)
}

/// Decrypts a receiver name sent RSAES-OAEP under the key `Wechatpay-Serial` names.
fn decrypt_name(shared: &Shared, serial: Option<&str>, name: &str) -> Result<String, ApiError> {
    let serial = serial.ok_or_else(|| {
        ApiError::param("请求头Wechatpay-Serial缺失: 加密字段须注明所用的微信支付公钥或平台证书")
    })?;
    let key: RsaPrivateKey = {
        let keys = crate::state::read(&shared.keys);
        if serial == keys.public_key_id {
            keys.public_key_private.clone()
        } else {
            let wanted = crate::protocol::normalize_serial(serial);
            keys.platform
                .iter()
                .find(|p| crate::protocol::normalize_serial(p.serial()) == wanted)
                .map(|p| p.key.clone())
                .ok_or_else(|| ApiError::param("Wechatpay-Serial对应的证书或公钥不存在"))?
        }
    };
    let failed =
        || ApiError::param("敏感信息解密失败: name须用Wechatpay-Serial对应的公钥以RSAES-OAEP加密");
    let ciphertext = b64_decode(name).ok_or_else(failed)?;
    let der = key.to_pkcs8_der().map_err(|_| ApiError::system("密钥读取失败"))?;
    let private = PrivateDecryptingKey::from_pkcs8(&der)
        .ok()
        .and_then(|k| OaepPrivateDecryptingKey::new(k).ok())
        .ok_or_else(|| ApiError::system("密钥读取失败"))?;
    let mut out = vec![0u8; private.min_output_size()];
    let plain =
        private.decrypt(&OAEP_SHA1_MGF1SHA1, &ciphertext, &mut out, None).map_err(|_| failed())?;
    String::from_utf8(plain.to_vec()).map_err(|_| failed())
}

/// Encrypts `plain` RSAES-OAEP (SHA-1) for the merchant, as WeChat returns names.
fn encrypt_for(key: &paymux_crypto::RsaPublicKey, plain: &str) -> Result<String, ApiError> {
    let public = PublicEncryptingKey::from_der(key.spki_der())
        .ok()
        .and_then(|k| OaepPublicEncryptingKey::new(k).ok())
        .ok_or_else(|| ApiError::system("商户公钥读取失败"))?;
    let mut out = vec![0u8; public.ciphertext_size()];
    let sealed = public
        .encrypt(&OAEP_SHA1_MGF1SHA1, plain.as_bytes(), &mut out, None)
        .map_err(|_| ApiError::system("加密失败"))?;
    Ok(b64_encode(sealed))
}

fn wechatpay_serial(headers: &HeaderMap) -> Option<&str> {
    headers.get("wechatpay-serial").and_then(|v| v.to_str().ok()).filter(|s| !s.is_empty())
}

fn signed(shared: &Shared, v: &Verified, answer: &Value) -> Result<Response, ApiError> {
    shared.signed(v.signer, StatusCode::OK, answer.to_string().into_bytes())
}

fn check_kind(kind: &str) -> Result<(), ApiError> {
    if matches!(kind, "MERCHANT_ID" | "PERSONAL_OPENID") {
        Ok(())
    } else {
        Err(ApiError::param("type须为MERCHANT_ID或PERSONAL_OPENID"))
    }
}

fn check_appid(v: &Verified, appid: &str) -> Result<(), ApiError> {
    if appid == v.merchant.merchant.appid {
        Ok(())
    } else {
        Err(ApiError::new(StatusCode::BAD_REQUEST, "APPID_MCHID_NOT_MATCH", "appid和mch_id不匹配"))
    }
}

/// `POST /v3/profitsharing/receivers/add`.
pub(crate) async fn add_receiver(
    State(shared): St,
    headers: HeaderMap,
    v: Verified,
) -> Result<Response, ApiError> {
    let body = v.json()?;
    only_fields(
        &body,
        &["appid", "type", "account", "name", "relation_type", "custom_relation"],
        "/body",
    )?;
    let appid = text(&body, "appid", "/body", 32)?;
    check_appid(&v, appid)?;
    let kind = text(&body, "type", "/body", 32)?;
    check_kind(kind)?;
    let account = text(&body, "account", "/body", 64)?;
    if kind == "MERCHANT_ID" && !account.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::param("MERCHANT_ID类型的account须为商户号"));
    }
    let relation_type = text(&body, "relation_type", "/body", 32)?;
    if !RELATION_TYPES.contains(&relation_type) {
        return Err(ApiError::param("relation_type取值错误"));
    }
    let custom_relation = match (relation_type, body.get("custom_relation")) {
        ("CUSTOM", _) => Some(text(&body, "custom_relation", "/body", 10)?.to_owned()),
        (_, None) => None,
        (_, Some(_)) => {
            return Err(ApiError::param("custom_relation仅在relation_type为CUSTOM时填写"));
        }
    };
    let name = match body.get("name") {
        None if kind == "MERCHANT_ID" => {
            return Err(ApiError::param("MERCHANT_ID类型的接收方须填写name(商户全称)"));
        }
        None => None,
        Some(_) => {
            let sealed = text(&body, "name", "/body", 1024)?;
            Some(decrypt_name(&shared, wechatpay_serial(&headers), sealed)?)
        }
    };
    let mchid = v.mchid().to_owned();
    {
        let mut book = lock(&shared.profit);
        let list = book.receivers.entry(mchid.clone()).or_default();
        let key = (kind.to_owned(), account.to_owned());
        if !list.contains_key(&key) && list.len() >= MAX_RECEIVERS_PER_MERCHANT {
            return Err(ApiError::invalid("分账接收方数量已达上限"));
        }
        list.insert(
            key,
            Relation {
                appid: appid.to_owned(),
                kind: kind.to_owned(),
                account: account.to_owned(),
                name: name.clone(),
                relation_type: relation_type.to_owned(),
                custom_relation: custom_relation.clone(),
            },
        );
    }
    tracing::info!(%mchid, kind, account, "profit-sharing receiver added");
    let mut answer = json!({"type": kind, "account": account, "relation_type": relation_type});
    if let Some(name) = name {
        answer["name"] = json!(encrypt_for(&v.merchant.merchant.merchant_public_key, &name)?);
    }
    if let Some(custom) = custom_relation {
        answer["custom_relation"] = json!(custom);
    }
    let response = signed(&shared, &v, &answer)?;
    Ok(finish(&shared, "profitsharing", response).await)
}

/// `POST /v3/profitsharing/receivers/delete`.
pub(crate) async fn delete_receiver(State(shared): St, v: Verified) -> Result<Response, ApiError> {
    let body = v.json()?;
    only_fields(&body, &["appid", "type", "account"], "/body")?;
    check_appid(&v, text(&body, "appid", "/body", 32)?)?;
    let kind = text(&body, "type", "/body", 32)?;
    check_kind(kind)?;
    let account = text(&body, "account", "/body", 64)?;
    let removed = lock(&shared.profit)
        .receivers
        .get_mut(v.mchid())
        .and_then(|l| l.remove(&(kind.to_owned(), account.to_owned())))
        .is_some();
    tracing::info!(mchid = %v.mchid(), kind, account, removed, "profit-sharing receiver deleted");
    let response = signed(&shared, &v, &json!({"type": kind, "account": account}))?;
    Ok(finish(&shared, "profitsharing", response).await)
}

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

fn query_param<'a>(uri: &'a OriginalUri, name: &str) -> Option<&'a str> {
    uri.0
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
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

/// `GET /_sandbox/profitsharing`: settings, holds, split orders, receivers and balances.
pub(crate) async fn show(State(shared): St) -> Json<Value> {
    let book = lock(&shared.profit);
    let balances: Vec<Value> = book
        .balances
        .iter()
        .map(|((kind, account), amount)| json!({"type": kind, "account": account, "balance": amount}))
        .collect();
    let holds: Vec<Value> = book
        .holds
        .values()
        .map(|h| {
            let mut v = json!(h);
            v["unsplit"] = json!(h.unsplit());
            v
        })
        .collect();
    Json(json!({
        "settings": book.settings,
        "holds": holds,
        "splits": book.splits.values().collect::<Vec<_>>(),
        "receivers": book.receivers.iter()
            .map(|(m, l)| (m.clone(), l.values().cloned().collect::<Vec<_>>()))
            .collect::<BTreeMap<_, _>>(),
        "balances": balances,
        "available": book.available,
        "returns": book.returns.values().collect::<Vec<_>>(),
    }))
}

/// `GET /_sandbox/receivers/{account}`: one receiver's balance, under each type it was paid as.
pub(crate) async fn show_receiver(State(shared): St, Path(account): Path<String>) -> Json<Value> {
    let book = lock(&shared.profit);
    let by_type: BTreeMap<&str, i64> = book
        .balances
        .iter()
        .filter(|((_, a), _)| *a == account)
        .map(|((kind, _), amount)| (kind.as_str(), *amount))
        .collect();
    let lines: Vec<Value> = book
        .splits
        .values()
        .flat_map(|s| {
            s.receivers.iter().filter(|l| l.account == account).map(|l| {
                json!({"out_order_no": s.out_order_no, "transaction_id": s.transaction_id,
                       "amount": l.amount, "result": l.result, "fail_reason": l.fail_reason})
            })
        })
        .collect();
    Json(json!({
        "account": account,
        "balance": by_type.values().sum::<i64>(),
        "balance_fen": by_type.values().sum::<i64>(),
        "balances": by_type,
        "available": book.available.get(&account),
        "lines": lines,
    }))
}

pub(crate) async fn show_settings(State(shared): St) -> Json<ProfitSharingSettings> {
    Json(lock(&shared.profit).settings.clone())
}

pub(crate) async fn set_settings(
    State(shared): St,
    body: Result<Json<ProfitSharingSettings>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<ProfitSharingSettings>, (StatusCode, Json<Value>)> {
    let bad = |message: String| {
        (StatusCode::BAD_REQUEST, Json(json!({"code": "PARAM_ERROR", "message": message})))
    };
    let Json(settings) = body.map_err(|e| bad(e.body_text()))?;
    settings.check().map_err(bad)?;
    tracing::info!(?settings, "profit-sharing settings set");
    lock(&shared.profit).set_settings(settings.clone());
    Ok(Json(settings))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn create_bodies_refuse_the_v2_flag_and_unknown_fields() {
        let ok = json!({"appid": "wx", "settle_info": {"profit_sharing": true}});
        assert!(check_create_body(&ok).is_ok());
        let v2 = check_create_body(&json!({"appid": "wx", "profit_sharing": "Y"})).unwrap_err();
        assert_eq!(v2.code, "PARAM_ERROR");
        assert_eq!(v2.detail.unwrap()["value"], json!(["/body/profit_sharing"]));
        assert!(check_create_body(&json!({"settle_info": {"profit_sharing": "true"}})).is_err());
        assert!(check_create_body(&json!({"settle_info": {"x": true}})).is_err());
    }

    #[test]
    fn the_unsplit_amount_is_net_of_everything_taken() {
        let hold = Hold {
            mchid: "1".into(),
            transaction_id: "t".into(),
            out_trade_no: "o".into(),
            total: 10_000,
            fee: 60,
            net: 9_940,
            split: 1_000,
            returned: 500,
            refunded_from_frozen: 2_000,
            released: 0,
            finished: false,
            split_requests: 1,
            paid_at: OffsetDateTime::now_utc(),
        };
        assert_eq!(hold.unsplit(), 6_440);
        assert_eq!(Hold { finished: true, ..hold }.unsplit(), 0);
    }

    #[test]
    fn out_order_numbers_follow_the_documented_alphabet() {
        assert!(valid_out_order_no("P20150806125346"));
        assert!(valid_out_order_no("a_b-c*d@e|f"));
        assert!(!valid_out_order_no("a b"));
        assert!(!valid_out_order_no(&"1".repeat(65)));
    }

    #[test]
    fn oaep_names_round_trip_through_the_mocks_keys() {
        let key = RsaPrivateKey::generate().unwrap();
        let sealed = encrypt_for(&key.public_key(), "示例商户全称").unwrap();
        let der = key.to_pkcs8_der().unwrap();
        let private =
            OaepPrivateDecryptingKey::new(PrivateDecryptingKey::from_pkcs8(&der).unwrap()).unwrap();
        let mut out = vec![0u8; private.min_output_size()];
        let plain = private
            .decrypt(&OAEP_SHA1_MGF1SHA1, &b64_decode(&sealed).unwrap(), &mut out, None)
            .unwrap();
        assert_eq!(std::str::from_utf8(plain).unwrap(), "示例商户全称");
    }
}

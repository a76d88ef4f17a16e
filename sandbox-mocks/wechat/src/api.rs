//! WeChat's `/v3/` endpoints. Every request is verified before its body is read as JSON.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequest, OriginalUri, Path, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};
use time::OffsetDateTime;

use paymux_mock_kit::random_digits;

use crate::KeyMode;
use crate::notify;
use crate::protocol::{
    Authorization, CertificatesAnswer, beijing_compact, certificate_entry, normalize_serial,
    request_message, valid_out_refund_no, valid_out_trade_no,
};
use crate::state::{
    ApiError, MerchantEntry, Order, OrderKey, Refund, RefundStatus, Shared, Signer, TradeState,
    lock, read,
};

type St = State<Arc<Shared>>;

const BODY_LIMIT: usize = 1 << 20;

/// A request whose signature checked, with its raw body and the key its answer is signed with.
pub(crate) struct Verified {
    pub(crate) merchant: Arc<MerchantEntry>,
    pub(crate) body: Bytes,
    pub(crate) signer: Signer,
}

impl Verified {
    pub(crate) fn mchid(&self) -> &str {
        &self.merchant.merchant.mchid
    }

    pub(crate) fn json(&self) -> Result<Value, ApiError> {
        let v: Value = serde_json::from_slice(&self.body)
            .map_err(|e| ApiError::param(format!("请求体不是合法的JSON: {e}")))?;
        if v.is_object() { Ok(v) } else { Err(ApiError::param("请求体必须是JSON对象")) }
    }
}

impl FromRequest<Arc<Shared>> for Verified {
    type Rejection = ApiError;

    async fn from_request(req: Request, shared: &Arc<Shared>) -> Result<Self, ApiError> {
        let faults = shared.faults();
        if faults.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(faults.latency_ms)).await;
        }
        let (parts, body) = req.into_parts();
        let body = axum::body::to_bytes(body, BODY_LIMIT)
            .await
            .map_err(|_| ApiError::param("请求体过大或读取失败"))?;
        // Behind a nested router the URI is stripped of its prefix; the signature covers what
        // the client sent.
        let uri = parts.extensions.get::<OriginalUri>().map(|u| &u.0).unwrap_or(&parts.uri);
        let target = uri.path_and_query().map(|pq| pq.as_str()).unwrap_or(uri.path());

        let header = parts
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| ApiError::sign("缺少Authorization请求头"))?;
        let auth = Authorization::parse(header).map_err(|e| ApiError::sign(e.to_string()))?;
        let merchant = shared
            .merchant(&auth.mchid)
            .ok_or_else(|| ApiError::sign(format!("商户号{}不存在或未注册", auth.mchid)))?;
        if normalize_serial(&auth.serial_no) != normalize_serial(&merchant.merchant.merchant_serial)
        {
            return Err(ApiError::sign("商户证书序列号有误"));
        }
        let ts: i64 = auth.timestamp.parse().map_err(|_| ApiError::sign("时间戳格式错误"))?;
        let skew = (OffsetDateTime::now_utc().unix_timestamp() - ts).unsigned_abs();
        if skew > shared.config.timestamp_tolerance.as_secs() {
            return Err(ApiError::sign("请求时间戳与系统时间相差过大"));
        }
        let message =
            request_message(parts.method.as_str(), target, &auth.timestamp, &auth.nonce_str, &body);
        merchant
            .merchant
            .merchant_public_key
            .verify_base64(&message, &auth.signature)
            .map_err(|_| ApiError::sign("签名错误"))?;

        if paymux_mock_kit::faults::roll(faults.error_rate) {
            return Err(ApiError::system("系统错误(sandbox fault)"));
        }
        let serial = parts.headers.get("wechatpay-serial").and_then(|v| v.to_str().ok());
        let signer = Signer::for_answer(merchant.mode, serial);
        Ok(Self { merchant, body, signer })
    }
}

/// Sends `answer` unless the fault says this operation commits and then never answers.
pub(crate) async fn finish(shared: &Shared, op: &str, answer: Response) -> Response {
    if shared.faults().timeout_after_commit.iter().any(|o| o == op) {
        tracing::info!(op, "sandbox fault: work done, answer withheld");
        std::future::pending::<()>().await;
    }
    answer
}

pub(crate) fn json_bytes(v: &Value) -> Vec<u8> {
    v.to_string().into_bytes()
}

fn str_field<'a>(v: &'a Value, name: &str) -> Option<&'a str> {
    v.get(name).and_then(Value::as_str)
}

pub(crate) fn require_str<'a>(v: &'a Value, name: &str) -> Result<&'a str, ApiError> {
    str_field(v, name).filter(|s| !s.is_empty()).ok_or_else(|| {
        ApiError::param(format!("输入源“/body/{name}”映射到字段“{name}”必填性规则校验失败"))
    })
}

fn check_notify_url(url: &str) -> Result<(), ApiError> {
    let ok = (url.starts_with("http://") || url.starts_with("https://")) && !url.contains('?');
    if ok {
        Ok(())
    } else {
        Err(ApiError::param("notify_url格式错误: 需为http(s)地址且不带参数"))
    }
}

fn check_amount(amount: Option<&Value>, field: &str) -> Result<i64, ApiError> {
    let amount = amount.filter(|a| a.is_object()).ok_or_else(|| ApiError::param("amount必填"))?;
    let value = amount
        .get(field)
        .and_then(Value::as_i64)
        .filter(|t| *t > 0)
        .ok_or_else(|| ApiError::param(format!("amount.{field}必须是大于0的整数(单位:分)")))?;
    match amount.get("currency") {
        None => Ok(value),
        Some(c) if c == "CNY" => Ok(value),
        Some(_) => Err(ApiError::param("amount.currency仅支持CNY")),
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Native,
    Jsapi,
    App,
    H5,
}

impl Kind {
    fn trade_type(self) -> &'static str {
        match self {
            Self::Native => "NATIVE",
            Self::Jsapi => "JSAPI",
            Self::App => "APP",
            Self::H5 => "MWEB",
        }
    }
}

pub(crate) async fn create_native(State(s): St, v: Verified) -> Result<Response, ApiError> {
    create(s, v, Kind::Native).await
}

pub(crate) async fn create_jsapi(State(s): St, v: Verified) -> Result<Response, ApiError> {
    create(s, v, Kind::Jsapi).await
}

pub(crate) async fn create_app(State(s): St, v: Verified) -> Result<Response, ApiError> {
    create(s, v, Kind::App).await
}

pub(crate) async fn create_h5(State(s): St, v: Verified) -> Result<Response, ApiError> {
    create(s, v, Kind::H5).await
}

async fn create(shared: Arc<Shared>, v: Verified, kind: Kind) -> Result<Response, ApiError> {
    let body = v.json()?;
    crate::profitsharing::check_create_body(&body)?;
    let merchant = &v.merchant.merchant;
    let appid = require_str(&body, "appid")?;
    let mchid = require_str(&body, "mchid")?;
    if mchid != merchant.mchid {
        return Err(ApiError::param("mchid与Authorization中的商户号不一致"));
    }
    if appid != merchant.appid {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "APPID_MCHID_NOT_MATCH",
            "appid和mch_id不匹配",
        ));
    }
    let description = require_str(&body, "description")?;
    if description.chars().count() > 127 {
        return Err(ApiError::param("description超出长度限制(127)"));
    }
    let out_trade_no = require_str(&body, "out_trade_no")?;
    if !valid_out_trade_no(out_trade_no) {
        return Err(ApiError::param("out_trade_no格式错误: 6-32位数字、字母、_-*"));
    }
    let notify_url = require_str(&body, "notify_url")?;
    check_notify_url(notify_url)?;
    let total = check_amount(body.get("amount"), "total")?;
    let attach = match body.get("attach") {
        None => None,
        Some(Value::String(a)) if a.chars().count() <= 128 => Some(a.clone()),
        Some(_) => return Err(ApiError::param("attach须为不超过128字符的字符串")),
    };
    if let Some(t) = body.get("time_expire") {
        let ok = t.as_str().is_some_and(|t| {
            OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).is_ok()
        });
        if !ok {
            return Err(ApiError::param("time_expire须为RFC3339格式"));
        }
    }
    let payer_openid = match kind {
        Kind::Jsapi => Some(
            body.get("payer")
                .and_then(|p| str_field(p, "openid"))
                .filter(|o| !o.is_empty())
                .ok_or_else(|| ApiError::param("JSAPI下单须提供payer.openid"))?
                .to_owned(),
        ),
        _ => None,
    };
    if let Kind::H5 = kind {
        let scene = body.get("scene_info");
        let ip = scene.and_then(|s| str_field(s, "payer_client_ip")).filter(|s| !s.is_empty());
        let h5_type = scene
            .and_then(|s| s.get("h5_info"))
            .and_then(|h| str_field(h, "type"))
            .filter(|s| !s.is_empty());
        if ip.is_none() || h5_type.is_none() {
            return Err(ApiError::param(
                "H5下单须提供scene_info.payer_client_ip和scene_info.h5_info.type",
            ));
        }
    }

    let key: OrderKey = (merchant.mchid.clone(), out_trade_no.to_owned());
    let answer = {
        let mut book = lock(&shared.book);
        if let Some(existing) = book.orders.get(&key) {
            if existing.params != body || existing.trade_type != kind.trade_type() {
                return Err(ApiError::invalid(
                    "OUT_TRADE_NO_USED: 商户订单号重复, 且参数与原订单不一致",
                ));
            }
            match existing.state {
                TradeState::Notpay => existing.answer.clone(),
                s if s.is_paid() => {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "ORDERPAID",
                        "该订单已支付",
                    ));
                }
                _ => {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "ORDER_CLOSED",
                        "该订单已关闭",
                    ));
                }
            }
        } else {
            let now = OffsetDateTime::now_utc();
            let prepay_id = format!(
                "wx{}{}",
                beijing_compact(now),
                hex_lower(&paymux_crypto::random_bytes::<10>())
            );
            let cashier = format!(
                "{}/_sandbox/cashier/{out_trade_no}",
                shared.config.public_url.trim_end_matches('/')
            );
            let answer = match kind {
                Kind::Native => json!({"code_url": cashier}),
                Kind::H5 => json!({"h5_url": cashier}),
                Kind::Jsapi | Kind::App => json!({"prepay_id": prepay_id}),
            };
            book.orders.insert(
                key,
                Order {
                    mchid: merchant.mchid.clone(),
                    appid: appid.to_owned(),
                    out_trade_no: out_trade_no.to_owned(),
                    trade_type: kind.trade_type(),
                    description: description.to_owned(),
                    attach,
                    notify_url: notify_url.to_owned(),
                    total,
                    payer_openid,
                    params: body.clone(),
                    answer: answer.clone(),
                    prepay_id,
                    state: TradeState::Notpay,
                    transaction_id: None,
                    created_at: now,
                    success_time: None,
                    refunds: Vec::new(),
                    deliveries: Vec::new(),
                },
            );
            tracing::info!(mchid = %merchant.mchid, out_trade_no, total, "order created");
            answer
        }
    };
    let response = shared.signed(v.signer, StatusCode::OK, json_bytes(&answer))?;
    Ok(finish(&shared, "create", response).await)
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `?mchid=` must name the signing merchant (WeChat requires it on queries).
fn check_mchid_query(uri: &OriginalUri, v: &Verified) -> Result<(), ApiError> {
    let query = uri.0.query().unwrap_or("");
    let mchid = query
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == "mchid")
        .map(|(_, v)| v);
    match mchid {
        Some(m) if m == v.mchid() => Ok(()),
        Some(_) => Err(ApiError::param("mchid与Authorization中的商户号不一致")),
        None => Err(ApiError::param("缺少查询参数mchid")),
    }
}

fn order_not_exist() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "ORDER_NOT_EXIST", "订单不存在")
}

pub(crate) async fn query_by_out_trade_no(
    State(shared): St,
    Path(out_trade_no): Path<String>,
    uri: OriginalUri,
    v: Verified,
) -> Result<Response, ApiError> {
    check_mchid_query(&uri, &v)?;
    crate::barcode::before_query(&shared, v.mchid(), &out_trade_no);
    let transaction = lock(&shared.book)
        .orders
        .get(&(v.mchid().to_owned(), out_trade_no))
        .map(Order::transaction)
        .ok_or_else(order_not_exist)?;
    let response = shared.signed(v.signer, StatusCode::OK, json_bytes(&transaction))?;
    Ok(finish(&shared, "query", response).await)
}

pub(crate) async fn query_by_id(
    State(shared): St,
    Path(transaction_id): Path<String>,
    uri: OriginalUri,
    v: Verified,
) -> Result<Response, ApiError> {
    check_mchid_query(&uri, &v)?;
    let transaction = lock(&shared.book)
        .orders
        .values()
        .find(|o| o.mchid == v.mchid() && o.transaction_id.as_deref() == Some(&transaction_id))
        .map(Order::transaction)
        .ok_or_else(order_not_exist)?;
    let response = shared.signed(v.signer, StatusCode::OK, json_bytes(&transaction))?;
    Ok(finish(&shared, "query", response).await)
}

pub(crate) async fn close(
    State(shared): St,
    Path(out_trade_no): Path<String>,
    v: Verified,
) -> Result<Response, ApiError> {
    let body = v.json()?;
    if require_str(&body, "mchid")? != v.mchid() {
        return Err(ApiError::param("mchid与Authorization中的商户号不一致"));
    }
    {
        let mut book = lock(&shared.book);
        let order = book
            .orders
            .get_mut(&(v.mchid().to_owned(), out_trade_no.clone()))
            .ok_or_else(order_not_exist)?;
        if order.state.is_paid() || shared.faults().close_answers_orderpaid {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "ORDERPAID",
                "订单已支付, 不能关闭",
            ));
        }
        order.state = TradeState::Closed;
    }
    tracing::info!(mchid = %v.mchid(), out_trade_no, "order closed");
    let response = shared.signed(v.signer, StatusCode::NO_CONTENT, Vec::new())?;
    Ok(finish(&shared, "close", response).await)
}

fn resource_not_exists(message: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "RESOURCE_NOT_EXISTS", message)
}

const MAX_REFUNDS_PER_ORDER: usize = 50;

pub(crate) async fn refund(State(shared): St, v: Verified) -> Result<Response, ApiError> {
    let body = v.json()?;
    let out_refund_no = require_str(&body, "out_refund_no")?;
    if !valid_out_refund_no(out_refund_no) {
        return Err(ApiError::param("out_refund_no格式错误: 最长64位数字、字母、_-|*@"));
    }
    let transaction_id = str_field(&body, "transaction_id").filter(|s| !s.is_empty());
    let out_trade_no = str_field(&body, "out_trade_no").filter(|s| !s.is_empty());
    if transaction_id.is_none() && out_trade_no.is_none() {
        return Err(ApiError::param("transaction_id和out_trade_no必须二选一"));
    }
    let amount = body.get("amount");
    let refund_amount = check_amount(amount, "refund")?;
    let total = check_amount(amount, "total")?;
    let notify_url = str_field(&body, "notify_url").filter(|s| !s.is_empty());
    if let Some(url) = notify_url {
        check_notify_url(url)?;
    }

    let accepted = {
        let mut book = lock(&shared.book);
        let mchid = v.mchid().to_owned();
        let found = book.orders.iter().find(|(_, o)| {
            o.mchid == mchid
                && out_trade_no.is_none_or(|n| o.out_trade_no == n)
                && transaction_id.is_none_or(|t| o.transaction_id.as_deref() == Some(t))
        });
        let Some((key, _)) = found else {
            return Err(resource_not_exists("订单不存在"));
        };
        let key = key.clone();

        // An out_refund_no already used: the same refund again answers it; anything else is refused.
        let previous = book.orders.values().find_map(|o| {
            (o.mchid == mchid)
                .then(|| {
                    o.refunds.iter().find(|r| r.out_refund_no == out_refund_no).map(|r| (o, r))
                })
                .flatten()
        });
        if let Some((o, r)) = previous {
            if shared.faults().decline_refund_resends {
                return Err(ApiError::invalid("退款单号已存在, 请勿重复提交"));
            }
            if o.out_trade_no == key.1 && r.amount == refund_amount && o.total == total {
                Accepted::Again(o.refund_object(r))
            } else {
                return Err(ApiError::invalid("out_refund_no已用于另一笔退款, 且参数不一致"));
            }
        } else {
            accept_refund(&shared, &mut book, key, out_refund_no, refund_amount, total, notify_url)?
        }
    };
    let answer = match accepted {
        Accepted::Again(answer) => answer,
        Accepted::New(key, answer) => {
            let delay = *lock(&shared.refund_delay);
            let completer = shared.clone();
            let out_refund_no = out_refund_no.to_owned();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                complete_refund(&completer, &key, &out_refund_no);
            });
            answer
        }
    };
    let response = shared.signed(v.signer, StatusCode::OK, json_bytes(&answer))?;
    Ok(finish(&shared, "refund", response).await)
}

enum Accepted {
    /// The same out_refund_no with the same parameters: its current state.
    Again(Value),
    New(OrderKey, Value),
}

fn accept_refund(
    shared: &Shared,
    book: &mut crate::state::Book,
    key: OrderKey,
    out_refund_no: &str,
    refund_amount: i64,
    total: i64,
    notify_url: Option<&str>,
) -> Result<Accepted, ApiError> {
    let Some(order) = book.orders.get_mut(&key) else {
        return Err(resource_not_exists("订单不存在"));
    };
    if !order.state.is_paid() {
        return Err(ApiError::invalid("订单未支付, 不能退款"));
    }
    if total != order.total {
        return Err(ApiError::invalid("订单金额(amount.total)与原订单金额不一致"));
    }
    if order.refunds.len() >= MAX_REFUNDS_PER_ORDER {
        return Err(ApiError::invalid("该订单已达到部分退款次数上限(50)"));
    }
    if order.refunded() + refund_amount > order.total {
        return Err(ApiError::invalid("申请退款金额超过订单可退金额"));
    }
    crate::profitsharing::draw_refund(shared, order, refund_amount)?;
    let refund = Refund {
        out_refund_no: out_refund_no.to_owned(),
        refund_id: format!("503{}", random_digits(26)),
        amount: refund_amount,
        notify_url: notify_url.map(str::to_owned),
        status: RefundStatus::Processing,
        create_time: OffsetDateTime::now_utc(),
        success_time: None,
    };
    let answer = order.refund_object(&refund);
    order.refunds.push(refund);
    order.state = TradeState::Refund;
    tracing::info!(mchid = %key.0, out_trade_no = %key.1, out_refund_no, refund_amount, "refund accepted");
    Ok(Accepted::New(key, answer))
}

/// The refund reaches the payer: SUCCESS, then REFUND.SUCCESS is notified.
fn complete_refund(shared: &Arc<Shared>, key: &OrderKey, out_refund_no: &str) {
    let event = {
        let mut book = lock(&shared.book);
        let Some(order) = book.orders.get_mut(key) else { return };
        let Some(idx) = order.refunds.iter().position(|r| r.out_refund_no == out_refund_no) else {
            return;
        };
        // An ABNORMAL refund waits for someone to act; it does not complete by itself.
        if order.refunds[idx].status != RefundStatus::Processing {
            return;
        }
        order.refunds[idx].status = RefundStatus::Success;
        order.refunds[idx].success_time = Some(OffsetDateTime::now_utc());
        let refund = &order.refunds[idx];
        let url = refund.notify_url.clone().unwrap_or_else(|| order.notify_url.clone());
        (url, order.refund_notification(refund))
    };
    tracing::info!(out_trade_no = %key.1, out_refund_no, "refund succeeded");
    notify::dispatch(shared, key, "REFUND.SUCCESS", "退款成功", "refund", event.0, &event.1);
}

pub(crate) async fn refund_query(
    State(shared): St,
    Path(out_refund_no): Path<String>,
    v: Verified,
) -> Result<Response, ApiError> {
    let answer = lock(&shared.book)
        .orders
        .values()
        .filter(|o| o.mchid == v.mchid())
        .find_map(|o| {
            o.refunds.iter().find(|r| r.out_refund_no == out_refund_no).map(|r| o.refund_object(r))
        })
        .ok_or_else(|| resource_not_exists("退款单不存在"))?;
    let response = shared.signed(v.signer, StatusCode::OK, json_bytes(&answer))?;
    Ok(finish(&shared, "refund_query", response).await)
}

pub(crate) async fn certificates(State(shared): St, v: Verified) -> Result<Response, ApiError> {
    shared.certificate_downloads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if v.merchant.mode == KeyMode::PublicKey {
        return Err(resource_not_exists("商户已切换为微信支付公钥模式, 无平台证书"));
    }
    let apiv3_key = v.merchant.merchant.apiv3_key.as_bytes();
    if apiv3_key.len() != 32 {
        return Err(ApiError::system("商户APIv3密钥不是32字节"));
    }
    let answer = {
        let keys = read(&shared.keys);
        let data = keys
            .platform
            .iter()
            .map(|p| {
                let effective = p.cert_not_before();
                certificate_entry(
                    apiv3_key,
                    &paymux_crypto::random_alphanumeric(12),
                    p.serial(),
                    effective,
                    p.cert.not_after(),
                    &p.pem,
                )
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| ApiError::system("证书加密失败"))?;
        CertificatesAnswer { data }
    };
    let body = serde_json::to_vec(&answer).map_err(|_| ApiError::system("序列化失败"))?;
    // Signed with a listed certificate (or the public key when asked for it in Both mode).
    let response = shared.signed(v.signer, StatusCode::OK, body)?;
    Ok(finish(&shared, "certificates", response).await)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn amounts_must_be_positive_integers_in_cny() {
        assert_eq!(check_amount(Some(&json!({"total": 1})), "total").unwrap(), 1);
        assert!(check_amount(Some(&json!({"total": 0})), "total").is_err());
        assert!(check_amount(Some(&json!({"total": 1.5})), "total").is_err());
        assert!(check_amount(Some(&json!({"total": "100"})), "total").is_err());
        assert!(check_amount(Some(&json!({"total": 1, "currency": "USD"})), "total").is_err());
        assert!(check_amount(None, "total").is_err());
    }

    #[test]
    fn notify_urls_are_http_without_query() {
        assert!(check_notify_url("https://example.com/n").is_ok());
        assert!(check_notify_url("http://127.0.0.1:1/n").is_ok());
        assert!(check_notify_url("https://example.com/n?a=1").is_err());
        assert!(check_notify_url("ftp://x").is_err());
    }
}

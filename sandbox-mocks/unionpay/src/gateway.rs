//! The four `/gateway/api/` endpoints. Every request is verified before anything is done.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use paymux_mock_kit::html::{escape, page};
use time::OffsetDateTime;

use crate::UnionpayMerchant;
use crate::notify;
use crate::protocol::{
    Fields, SIGN_METHOD_RSA, SIGN_METHOD_SECURE_KEY, VERSION, beijing_compact, encode_answer,
    parse_amount, parse_beijing, sign_secure_key, signing_string, valid_order_id, verify_rsa,
};
use crate::state::{Kind, Shared, Status, Txn, TxnKey};

type St = State<Arc<Shared>>;

/// A refusal in UnionPay's terms: `respCode` and `respMsg`.
#[derive(Debug, Clone)]
pub(crate) struct Refusal {
    pub(crate) code: &'static str,
    pub(crate) msg: String,
}

pub(crate) fn refuse(code: &'static str, msg: impl Into<String>) -> Refusal {
    Refusal { code, msg: msg.into() }
}

/// A request that passed verification.
pub(crate) struct Verified {
    pub(crate) merchant: Arc<UnionpayMerchant>,
    pub(crate) fields: Fields,
}

impl Verified {
    pub(crate) fn get(&self, name: &str) -> &str {
        self.fields.get(name).map(String::as_str).unwrap_or_default()
    }

    pub(crate) fn require(&self, name: &str) -> Result<&str, Refusal> {
        let value = self.get(name);
        if value.is_empty() {
            Err(refuse("13", format!("报文交易要素缺失[{name}]")))
        } else {
            Ok(value)
        }
    }
}

/// Decodes the form once into fields (a repeated name keeps its first value).
fn parse_form(body: &[u8]) -> Fields {
    let mut fields = Fields::new();
    for (name, value) in form_urlencoded::parse(body) {
        fields.entry(name.into_owned()).or_insert_with(|| value.into_owned());
    }
    fields
}

/// Verifies as UnionPay does: common fields, the merchant registered for `merId`, then for
/// signMethod 01 the `certId` of its registered certificate (valid now) and the signature over
/// the non-empty fields; for signMethod 11 the secure-key digest.
fn verify(shared: &Shared, fields: Fields, now: OffsetDateTime) -> Result<Verified, Refusal> {
    let get = |name: &str| fields.get(name).map(String::as_str).unwrap_or_default();
    for name in ["version", "encoding", "signMethod", "txnType", "merId", "signature"] {
        if get(name).is_empty() {
            return Err(refuse("13", format!("报文交易要素缺失[{name}]")));
        }
    }
    if get("version") != VERSION {
        return Err(refuse("10", format!("报文格式错误[version={}]", get("version"))));
    }
    if !get("encoding").eq_ignore_ascii_case("utf-8") {
        return Err(refuse("10", "报文格式错误[encoding]"));
    }
    let merchant =
        shared.merchant(get("merId")).ok_or_else(|| refuse("31", "商户状态不正确[商户未开通]"))?;
    let string = signing_string(&fields);
    match get("signMethod") {
        SIGN_METHOD_RSA => {
            if get("certId") != merchant.certificate.serial_decimal() {
                return Err(refuse("11", "验证签名失败[certId与商户证书不符]"));
            }
            if !merchant.certificate.is_valid_at(now) {
                return Err(refuse("11", "验证签名失败[商户证书已过期]"));
            }
            let verified = merchant
                .certificate
                .public_key()
                .is_ok_and(|key| verify_rsa(key, &string, get("signature")));
            if !verified {
                return Err(refuse("11", "验证签名失败"));
            }
        }
        SIGN_METHOD_SECURE_KEY => {
            let Some(key) = merchant.secure_key.as_deref() else {
                return Err(refuse("11", "验证签名失败[商户未开通密钥签名]"));
            };
            let expected = sign_secure_key(&string, key);
            if !paymux_crypto::constant_time_eq(expected.as_bytes(), get("signature").as_bytes()) {
                return Err(refuse("11", "验证签名失败"));
            }
        }
        other => return Err(refuse("10", format!("报文格式错误[signMethod={other}]"))),
    }
    Ok(Verified { merchant, fields })
}

/// The echoed part of every answer.
pub(crate) fn answer_fields(request: &Fields) -> Fields {
    let mut fields = Fields::new();
    for name in [
        "version",
        "encoding",
        "signMethod",
        "txnType",
        "txnSubType",
        "bizType",
        "accessType",
        "merId",
        "orderId",
        "txnTime",
        "txnAmt",
        "currencyCode",
        "reqReserved",
        "origQryId",
    ] {
        if let Some(value) = request.get(name) {
            fields.insert(name.to_owned(), value.clone());
        }
    }
    fields
}

/// HTTP 200 with the raw `k=v&` body, signed.
fn answer(
    shared: &Shared,
    merchant: Option<&UnionpayMerchant>,
    mut fields: Fields,
    code: &str,
    msg: &str,
) -> Response {
    fields.insert("respCode".into(), code.to_owned());
    fields.insert("respMsg".into(), msg.to_owned());
    let signed = shared.sign(fields, merchant);
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain;charset=UTF-8")], encode_answer(&signed))
        .into_response()
}

fn refusal_answer(shared: &Shared, request: &Fields, refusal: &Refusal) -> Response {
    tracing::info!(code = refusal.code, msg = %refusal.msg, "request refused");
    let merchant = request.get("merId").and_then(|m| shared.merchant(m));
    answer(shared, merchant.as_deref(), answer_fields(request), refusal.code, &refusal.msg)
}

/// Why a request was not admitted.
enum Rejected {
    Refused(Box<Fields>, Refusal),
    /// The error-rate fault: HTTP 500, nothing done.
    Unavailable,
}

impl Rejected {
    fn answer(self, shared: &Shared) -> Response {
        match self {
            Self::Refused(request, refusal) => refusal_answer(shared, &request, &refusal),
            Self::Unavailable => (StatusCode::INTERNAL_SERVER_ERROR, "").into_response(),
        }
    }

    fn page(self) -> Response {
        match self {
            Self::Refused(_, refusal) => error_page(&refusal),
            Self::Unavailable => (StatusCode::INTERNAL_SERVER_ERROR, "").into_response(),
        }
    }
}

/// Latency, then verification, then the error-rate fault.
async fn admit(shared: &Shared, body: &[u8]) -> Result<Verified, Rejected> {
    let faults = shared.faults();
    if faults.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(faults.latency_ms)).await;
    }
    let fields = parse_form(body);
    let request = fields.clone();
    let verified = verify(shared, fields, OffsetDateTime::now_utc())
        .map_err(|r| Rejected::Refused(Box::new(request), r))?;
    if paymux_mock_kit::faults::roll(faults.error_rate) {
        return Err(Rejected::Unavailable);
    }
    Ok(verified)
}

/// Sends `response` unless the fault says this operation commits and then never answers.
async fn finish(shared: &Shared, op: &str, response: Response) -> Response {
    if shared.faults().timeout_after_commit.iter().any(|o| o == op) {
        tracing::info!(op, "sandbox fault: work done, answer withheld");
        std::future::pending::<()>().await;
    }
    response
}

/// A consume (01/01), or with txnType 02 a preauth (02/01) made the same way.
fn payer_kind(v: &Verified, consume: Kind) -> Result<Kind, Refusal> {
    if v.get("txnType") == "02" {
        check_kind(v, "02", "01").map(|()| Kind::Preauth)
    } else {
        check_kind(v, "01", "01").map(|()| consume)
    }
}

pub(crate) fn check_kind(v: &Verified, txn_type: &str, sub: &str) -> Result<(), Refusal> {
    if v.get("txnType") != txn_type || v.get("txnSubType") != sub {
        return Err(refuse(
            "10",
            format!(
                "报文格式错误[txnType={} txnSubType={}]",
                v.get("txnType"),
                v.get("txnSubType")
            ),
        ));
    }
    Ok(())
}

/// A new consume from the request's fields (not yet stored).
pub(crate) fn new_consume(
    v: &Verified,
    kind: Kind,
    now: OffsetDateTime,
    max_order_id: usize,
) -> Result<Txn, Refusal> {
    let order_id = v.require("orderId")?;
    if !valid_order_id(order_id, max_order_id) {
        return Err(refuse("10", "报文格式错误[orderId]"));
    }
    let txn_time = v.require("txnTime")?;
    if parse_beijing(txn_time).is_none() {
        return Err(refuse("10", "报文格式错误[txnTime]"));
    }
    let amount =
        parse_amount(v.require("txnAmt")?).ok_or_else(|| refuse("10", "报文格式错误[txnAmt]"))?;
    let currency = v.require("currencyCode")?;
    if currency != "156" {
        return Err(refuse("10", "报文格式错误[currencyCode]"));
    }
    let back_url = v.require("backUrl")?;
    let timeout = v.fields.get("payTimeout").filter(|t| !t.is_empty());
    if timeout.is_some_and(|t| parse_beijing(t).is_none()) {
        return Err(refuse("10", "报文格式错误[payTimeout]"));
    }
    let opt = |name: &str| Some(v.get(name).to_owned()).filter(|s| !s.is_empty());
    Ok(Txn {
        kind,
        mer_id: v.merchant.mer_id.clone(),
        order_id: order_id.to_owned(),
        txn_time: txn_time.to_owned(),
        txn_type: v.get("txnType").to_owned(),
        txn_sub_type: v.get("txnSubType").to_owned(),
        biz_type: v.require("bizType")?.to_owned(),
        channel_type: v.require("channelType")?.to_owned(),
        encoding: v.get("encoding").to_owned(),
        sign_method: v.get("signMethod").to_owned(),
        amount,
        currency: currency.to_owned(),
        query_id: new_query_id(now),
        status: Status::Waiting,
        opened: false,
        front_url: opt("frontUrl"),
        back_url: Some(back_url.to_owned()),
        req_reserved: opt("reqReserved"),
        order_desc: opt("orderDesc"),
        tn: None,
        qr_code: None,
        orig_qry_id: None,
        card: None,
        trace_no: None,
        trace_time: None,
        settle_date: None,
        refunded: 0,
        cancelled: false,
        created_at: now,
        deliveries: Vec::new(),
    })
}

/// A `queryId`: 21 digits, led by the Beijing date and time like UnionPay's.
pub(crate) fn new_query_id(now: OffsetDateTime) -> String {
    format!("{}{}", &beijing_compact(now)[2..], paymux_mock_kit::random_digits(9))
}

/// Stores `txn` unless its merId + orderId + txnTime is taken (UnionPay: 12, duplicate).
pub(crate) fn store(shared: &Shared, txn: Txn) -> Result<Txn, Refusal> {
    let mut book = shared.book();
    let key = txn.key();
    if book.txns.contains_key(&key) {
        return Err(refuse("12", "重复交易"));
    }
    book.txns.insert(key, txn.clone());
    Ok(txn)
}

/// `POST /gateway/api/frontTransReq.do`: the payer's browser posts the merchant's form; a
/// verified consume sends it on to the bank page, a refused one sees UnionPay's error page.
pub(crate) async fn front(State(shared): St, body: Bytes) -> Response {
    let v = match admit(&shared, &body).await {
        Ok(v) => v,
        Err(rejected) => return rejected.page(),
    };
    let created = payer_kind(&v, Kind::Front)
        .and_then(|kind| new_consume(&v, kind, OffsetDateTime::now_utc(), 32))
        .and_then(|txn| store(&shared, txn));
    let response = match created {
        Ok(txn) => Redirect::to(&shared.cashier_url(&txn)).into_response(),
        Err(r) => error_page(&r),
    };
    finish(&shared, "front", response).await
}

pub(crate) fn error_page(refusal: &Refusal) -> Response {
    let body = format!(
        "<h1>UnionPay sandbox: transaction refused</h1><p>respCode <code>{}</code></p><p>{}</p>",
        escape(refusal.code),
        escape(&refusal.msg)
    );
    Html(page("UnionPay sandbox", crate::sandbox::ACCENT, &body)).into_response()
}

/// `POST /gateway/api/appTransReq.do`: an app consume; the answer's `tn` goes to the app SDK.
pub(crate) async fn app(State(shared): St, body: Bytes) -> Response {
    let v = match admit(&shared, &body).await {
        Ok(v) => v,
        Err(rejected) => return rejected.answer(&shared),
    };
    let now = OffsetDateTime::now_utc();
    let created = payer_kind(&v, Kind::App).and_then(|kind| new_consume(&v, kind, now, 32));
    let created = created.and_then(|mut txn| {
        txn.tn =
            Some(format!("{}{}", &beijing_compact(now)[2..], paymux_mock_kit::random_digits(9)));
        store(&shared, txn)
    });
    let response = match created {
        Ok(txn) => {
            let mut fields = answer_fields(&v.fields);
            fields.insert("tn".into(), txn.tn.clone().unwrap_or_default());
            accepted(&shared, &v, fields, "app")
        }
        Err(r) => refusal_answer(&shared, &v.fields, &r),
    };
    finish(&shared, "app", response).await
}

/// 00, or 05 when the in-process fault names `op`.
fn accepted(shared: &Shared, v: &Verified, fields: Fields, op: &str) -> Response {
    if shared.faults().in_process_after_commit.iter().any(|o| o == op) {
        return answer(shared, Some(&v.merchant), fields, "05", "交易已受理，请稍后查询交易结果");
    }
    answer(shared, Some(&v.merchant), fields, "00", "成功[0000000]")
}

/// `POST /gateway/api/backTransReq.do`: QR consume (01/07), barcode consume (01/06) and 冲正
/// (99/01) (`barcode.rs`), refund (04), consume cancel (31), preauth completion (03), preauth undo
/// (32), completion undo (33).
pub(crate) async fn back(State(shared): St, body: Bytes) -> Response {
    let v = match admit(&shared, &body).await {
        Ok(v) => v,
        Err(rejected) => return rejected.answer(&shared),
    };
    let (op, outcome) = match v.get("txnType") {
        "01" if v.get("txnSubType") == "06" => ("barcode", crate::barcode::consume(&shared, &v)),
        "01" => ("qr", qr(&shared, &v)),
        "99" => ("reversal", crate::barcode::reversal(&shared, &v)),
        "04" => ("refund", take_back(&shared, &v, Kind::Refund)),
        "31" => ("cancel", take_back(&shared, &v, Kind::Cancel)),
        "03" | "32" | "33" => ("preauth", crate::preauth::back(&shared, &v)),
        other => ("back", Err(refuse("10", format!("报文格式错误[txnType={other}]")))),
    };
    let response = match outcome {
        Ok(fields) => accepted(&shared, &v, fields, op),
        Err(r) => refusal_answer(&shared, &v.fields, &r),
    };
    finish(&shared, op, response).await
}

fn qr(shared: &Shared, v: &Verified) -> Result<Fields, Refusal> {
    check_kind(v, "01", "07")?;
    let mut txn = new_consume(v, Kind::Qr, OffsetDateTime::now_utc(), 40)?;
    // An opaque token like UnionPay's `https://qr.95516.com/...`: a raw answer cannot carry
    // an `&` outside braces, so the cashier's query string stays out of it.
    txn.qr_code = Some(format!("{}/_sandbox/qr/{}", shared.public_url, txn.query_id));
    let txn = store(shared, txn)?;
    let mut fields = answer_fields(&v.fields);
    fields.insert("qrCode".into(), txn.qr_code.unwrap_or_default());
    Ok(fields)
}

/// A refund (any amount up to what is left, repeatable) or a consume cancel (same Beijing day,
/// the full amount, nothing refunded yet) of the consume `origQryId` names. Both succeed at
/// once and are notified to their own `backUrl`.
fn take_back(shared: &Arc<Shared>, v: &Verified, kind: Kind) -> Result<Fields, Refusal> {
    check_kind(v, v.get("txnType"), "00")?;
    let now = OffsetDateTime::now_utc();
    let orig_qry_id = v.require("origQryId")?.to_owned();
    let order_id = v.require("orderId")?;
    if !valid_order_id(order_id, 32) {
        return Err(refuse("10", "报文格式错误[orderId]"));
    }
    let txn_time = v.require("txnTime")?;
    if parse_beijing(txn_time).is_none() {
        return Err(refuse("10", "报文格式错误[txnTime]"));
    }
    let amount =
        parse_amount(v.require("txnAmt")?).ok_or_else(|| refuse("10", "报文格式错误[txnAmt]"))?;
    let back_url = v.require("backUrl")?.to_owned();
    let key: TxnKey = (v.merchant.mer_id.clone(), order_id.to_owned(), txn_time.to_owned());
    let mut book = shared.book();
    if book.txns.contains_key(&key) {
        return Err(refuse("12", "重复交易"));
    }
    let orig_key = book
        .by_query_id(&v.merchant.mer_id, &orig_qry_id)
        .cloned()
        .ok_or_else(|| refuse("35", "原交易不存在或状态不正确"))?;
    let Some(orig) = book.txns.get_mut(&orig_key) else {
        return Err(refuse("35", "原交易不存在或状态不正确"));
    };
    // A completion is refunded like a consume; a preauth is only completed or undone.
    let refundable =
        orig.kind.is_consume() || (kind == Kind::Refund && orig.kind == Kind::Completion);
    if !refundable || orig.status != Status::Succeeded || orig.cancelled {
        return Err(refuse("35", "原交易不存在或状态不正确"));
    }
    if v.get("bizType") != orig.biz_type || v.get("channelType") != orig.channel_type {
        return Err(refuse("36", "与原交易信息不符[bizType/channelType]"));
    }
    if kind == Kind::Cancel {
        let same_day = beijing_compact(now)[..8] == orig.txn_time[..8];
        if !same_day {
            return Err(refuse("35", "原交易不在可撤销时间范围内"));
        }
        if amount != orig.amount || orig.refunded > 0 {
            return Err(refuse("36", "撤销金额须等于原交易金额且原交易未退货"));
        }
        orig.cancelled = true;
    } else if amount > orig.amount - orig.refunded {
        return Err(refuse("36", "退货金额超过原交易可退金额"));
    }
    orig.refunded += amount;
    let orig_snapshot = orig.clone();
    let txn = Txn {
        kind,
        mer_id: v.merchant.mer_id.clone(),
        order_id: order_id.to_owned(),
        txn_time: txn_time.to_owned(),
        txn_type: v.get("txnType").to_owned(),
        txn_sub_type: "00".into(),
        biz_type: orig_snapshot.biz_type.clone(),
        channel_type: orig_snapshot.channel_type.clone(),
        encoding: v.get("encoding").to_owned(),
        sign_method: v.get("signMethod").to_owned(),
        amount,
        currency: orig_snapshot.currency.clone(),
        query_id: new_query_id(now),
        status: Status::Succeeded,
        opened: true,
        front_url: None,
        back_url: Some(back_url),
        req_reserved: Some(v.get("reqReserved").to_owned()).filter(|s| !s.is_empty()),
        order_desc: None,
        tn: None,
        qr_code: None,
        orig_qry_id: Some(orig_qry_id),
        card: orig_snapshot.card.clone(),
        trace_no: Some(paymux_mock_kit::random_digits(6)),
        trace_time: Some(beijing_compact(now)[4..].to_owned()),
        settle_date: Some(beijing_compact(now)[4..8].to_owned()),
        refunded: 0,
        cancelled: false,
        created_at: now,
        deliveries: Vec::new(),
    };
    book.txns.insert(key.clone(), txn.clone());
    drop(book);
    tracing::info!(mer_id = %txn.mer_id, order_id = %txn.order_id, kind = ?kind, amount, "refund or cancel accepted");
    notify::send_back(shared, &txn);
    let mut fields = answer_fields(&v.fields);
    fields.insert("queryId".into(), txn.query_id);
    Ok(fields)
}

/// `POST /gateway/api/queryTrans.do`: the transaction named by `orderId` + `txnTime` (or
/// `queryId`): respCode 34 while UnionPay has no such transaction (a payment page never opened,
/// a lapsed order), else 00 with `origRespCode`.
pub(crate) async fn query(State(shared): St, body: Bytes) -> Response {
    let v = match admit(&shared, &body).await {
        Ok(v) => v,
        Err(rejected) => return rejected.answer(&shared),
    };
    crate::barcode::before_query(&shared, &v);
    let response = match query_fields(&shared, &v) {
        Ok(Some(fields)) => answer(&shared, Some(&v.merchant), fields, "00", "成功[0000000]"),
        Ok(None) => {
            refusal_answer(&shared, &v.fields, &refuse("05", "交易已受理，请稍后查询交易结果"))
        }
        Err(r) => refusal_answer(&shared, &v.fields, &r),
    };
    finish(&shared, "query", response).await
}

/// The query answer's fields; `None` while the in-process fault answers 05.
fn query_fields(shared: &Shared, v: &Verified) -> Result<Option<Fields>, Refusal> {
    check_kind(v, "00", "00")?;
    let mer_id = v.merchant.mer_id.clone();
    let mut book = shared.book();
    let key = match v.fields.get("queryId").filter(|q| !q.is_empty()) {
        Some(query_id) => book.by_query_id(&mer_id, query_id).cloned(),
        None => Some((mer_id, v.require("orderId")?.to_owned(), v.require("txnTime")?.to_owned())),
    };
    let txn = key
        .and_then(|k| book.txns.get(&k))
        .filter(|t| t.opened && t.status != Status::Closed)
        .cloned()
        .ok_or_else(|| refuse("34", "查无此交易"))?;
    if book.in_process_served < shared.faults().in_process_queries {
        book.in_process_served += 1;
        return Ok(None);
    }
    drop(book);
    let (orig_code, orig_msg) = match txn.status {
        Status::Succeeded => ("00", "成功[0000000]"),
        Status::Waiting => ("05", "交易已受理，请稍后查询交易结果"),
        Status::Failed | Status::Closed => ("01", "交易失败"),
    };
    let mut fields = transaction_fields(shared, &txn);
    fields.insert("origRespCode".into(), orig_code.into());
    fields.insert("origRespMsg".into(), orig_msg.into());
    fields.insert("version".into(), VERSION.into());
    fields.insert("signMethod".into(), v.get("signMethod").to_owned());
    fields.insert("encoding".into(), v.get("encoding").to_owned());
    Ok(Some(fields))
}

/// What a notification and a query answer say about `txn` (without `respCode`, signature).
pub(crate) fn transaction_fields(shared: &Shared, txn: &Txn) -> Fields {
    let mut fields = Fields::new();
    let mut put = |name: &str, value: &str| {
        fields.insert(name.to_owned(), value.to_owned());
    };
    put("version", VERSION);
    put("encoding", &txn.encoding);
    put("signMethod", &txn.sign_method);
    put("accessType", "0");
    put("merId", &txn.mer_id);
    put("orderId", &txn.order_id);
    put("txnTime", &txn.txn_time);
    put("txnType", &txn.txn_type);
    put("txnSubType", &txn.txn_sub_type);
    put("bizType", &txn.biz_type);
    put("txnAmt", &txn.amount.to_string());
    put("currencyCode", &txn.currency);
    put("queryId", &txn.query_id);
    if let Some(orig) = &txn.orig_qry_id {
        put("origQryId", orig);
    }
    if let Some(reserved) = &txn.req_reserved {
        put("reqReserved", reserved);
    }
    if txn.status == Status::Succeeded {
        put("settleAmt", &txn.amount.to_string());
        put("settleCurrencyCode", "156");
        put("exchangeRate", "0");
        for (name, value) in [
            ("traceNo", &txn.trace_no),
            ("traceTime", &txn.trace_time),
            ("settleDate", &txn.settle_date),
        ] {
            if let Some(value) = value {
                put(name, value);
            }
        }
        if let Some(card) = &txn.card {
            put("accNo", &shared.encrypted_card(&txn.mer_id, card));
            put("payCardType", "01");
        }
    }
    fields
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::protocol::sign_rsa;
    use paymux_crypto::RsaPrivateKey;

    fn vector_file(name: &str) -> String {
        let path = format!("{}/../../tests/vectors/unionpay/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(path).unwrap()
    }

    fn u1_request() -> (Fields, UnionpayMerchant) {
        let all: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(format!(
                "{}/../../tests/vectors/vectors.json",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap(),
        )
        .unwrap();
        let u1 = all["vectors"].as_array().unwrap().iter().find(|v| v["id"] == "U1").unwrap();
        let mut fields: Fields = u1["inputs"]["fields"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect();
        fields.insert("signature".into(), u1["expected"]["signature"].as_str().unwrap().into());
        let merchant = UnionpayMerchant::with_certificate(
            "777290058167151",
            "U1",
            &vector_file("acp-test-sign-cert-certId-69903319369.pem"),
        )
        .unwrap();
        (fields, merchant)
    }

    fn mock_with(merchant: UnionpayMerchant) -> crate::UnionpayMock {
        let (keys, _) = crate::keys::generate("777290058167151").unwrap();
        let mock =
            crate::UnionpayMock::new(crate::UnionpayMockConfig::new("http://127.0.0.1:1"), keys);
        mock.register_merchant(merchant);
        mock
    }

    fn at(unix: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(unix).unwrap()
    }

    /// 2026-11-25, a day before U1's certificate expired; 2026-11-29, today.
    const BEFORE_EXPIRY: i64 = 1_795_564_800;
    const TODAY: i64 = 1_795_910_400;

    #[test]
    fn a_u1_request_verifies_while_its_certificate_is_valid() {
        let (fields, merchant) = u1_request();
        let mock = mock_with(merchant);
        assert!(verify(&mock.shared, fields, at(BEFORE_EXPIRY)).is_ok());
    }

    #[test]
    fn a_u1_request_is_refused_once_its_certificate_has_expired() {
        let (fields, merchant) = u1_request();
        let mock = mock_with(merchant);
        let refusal = verify(&mock.shared, fields, at(TODAY)).err().unwrap();
        assert_eq!(refusal.code, "11");
    }

    #[test]
    fn a_u1_request_with_one_byte_changed_is_refused() {
        let (mut fields, merchant) = u1_request();
        fields.insert("txnAmt".into(), "2".into());
        let mock = mock_with(merchant);
        assert_eq!(verify(&mock.shared, fields, at(BEFORE_EXPIRY)).err().unwrap().code, "11");
    }

    #[test]
    fn a_request_naming_another_cert_id_is_refused() {
        let (mut fields, merchant) = u1_request();
        fields.insert("certId".into(), "69903319370".into());
        let mock = mock_with(merchant);
        assert_eq!(verify(&mock.shared, fields, at(BEFORE_EXPIRY)).err().unwrap().code, "11");
    }

    #[test]
    fn a_request_from_an_unregistered_mer_id_is_refused() {
        let (mut fields, merchant) = u1_request();
        fields.insert("merId".into(), "777290058100000".into());
        let mock = mock_with(merchant);
        assert_eq!(verify(&mock.shared, fields, at(BEFORE_EXPIRY)).err().unwrap().code, "31");
    }

    #[test]
    fn a_request_signed_by_another_key_is_refused() {
        let (mut fields, merchant) = u1_request();
        let other = RsaPrivateKey::generate().unwrap();
        let signature = sign_rsa(&other, &signing_string(&fields)).unwrap();
        fields.insert("signature".into(), signature);
        let mock = mock_with(merchant);
        assert_eq!(verify(&mock.shared, fields, at(BEFORE_EXPIRY)).err().unwrap().code, "11");
    }

    #[test]
    fn a_secure_key_request_verifies_only_for_a_merchant_with_that_key() {
        let (mut fields, mut merchant) = u1_request();
        fields.remove("certId");
        fields.insert("signMethod".into(), SIGN_METHOD_SECURE_KEY.into());
        let signature = sign_secure_key(&signing_string(&fields), "88888888");
        fields.insert("signature".into(), signature);
        let mock = mock_with(merchant.clone());
        assert_eq!(verify(&mock.shared, fields.clone(), at(TODAY)).err().unwrap().code, "11");
        merchant.secure_key = Some("88888888".into());
        let mock = mock_with(merchant);
        assert!(verify(&mock.shared, fields, at(TODAY)).is_ok());
    }

    #[test]
    fn answers_to_a_secure_key_merchant_are_signed_with_its_key_and_carry_no_certificate() {
        let (_, mut merchant) = u1_request();
        merchant.secure_key = Some("88888888".into());
        let mock = mock_with(merchant.clone());
        let mut fields = Fields::new();
        fields.insert("signMethod".into(), SIGN_METHOD_SECURE_KEY.into());
        fields.insert("respCode".into(), "00".into());
        fields.insert("empty".into(), String::new());
        let signed = mock.shared.sign(fields, Some(&merchant));
        assert!(!signed.contains_key("signPubKeyCert") && !signed.contains_key("empty"));
        let expected = sign_secure_key(&crate::protocol::verification_string(&signed), "88888888");
        assert_eq!(signed["signature"], expected);

        let mut fields = Fields::new();
        fields.insert("signMethod".into(), SIGN_METHOD_SECURE_KEY.into());
        let without_key = mock.shared.sign(fields, None);
        assert_eq!(
            without_key["signMethod"], SIGN_METHOD_RSA,
            "no key: the mock's certificate signs"
        );
        assert!(without_key.contains_key("signPubKeyCert"));
    }
}

//! `/gateway.do`: request checks in Alipay's order, dispatch by `method`, signed answers; and
//! the sandbox's entry for app.pay order strings.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::protocol::{
    Node, Params, ProtocolError, ResultCode, answer_body, merge_form_parts, node_name,
    parse_beijing, parse_yuan, request_sign_content, verify_request,
};
use crate::trade::{NewOrder, PayMethod, Refusal, TradeRef};
use crate::{Shared, notify, sandbox};

/// How long a "timeout after commit" holds the connection: far longer than any client waits.
const HOLD: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    Precreate,
    PagePay,
    WapPay,
    AppPay,
    Query,
    Close,
    Refund,
    RefundQuery,
    Royalty(crate::royalty::Method),
    BarcodePay,
    Cancel,
}

impl Api {
    fn parse(method: &str) -> Option<Self> {
        Some(match method {
            "alipay.trade.precreate" => Self::Precreate,
            "alipay.trade.page.pay" => Self::PagePay,
            "alipay.trade.wap.pay" => Self::WapPay,
            "alipay.trade.app.pay" => Self::AppPay,
            "alipay.trade.query" => Self::Query,
            "alipay.trade.close" => Self::Close,
            "alipay.trade.refund" => Self::Refund,
            "alipay.trade.fastpay.refund.query" => Self::RefundQuery,
            "alipay.trade.pay" => Self::BarcodePay,
            "alipay.trade.cancel" => Self::Cancel,
            other => return crate::royalty::Method::parse(other).map(Self::Royalty),
        })
    }
}

fn refusal(code: ResultCode, sub_code: &'static str, sub_msg: impl Into<String>) -> Refusal {
    Refusal { code, sub_code, sub_msg: sub_msg.into() }
}

/// Checks the common parameters, the app and the signature. Returns the method on success.
fn check_request(shared: &Shared, params: &Params) -> Result<Api, Refusal> {
    use ResultCode::{InvalidArguments as Invalid, MissingArguments as Missing};
    let get = |name: &str| params.get(name).map(String::as_str).filter(|v| !v.is_empty());

    let method =
        get("method").ok_or_else(|| refusal(Missing, "isv.missing-method", "缺少方法名参数"))?;
    let api = Api::parse(method)
        .ok_or_else(|| refusal(Invalid, "isv.invalid-method", "不存在的方法名"))?;
    let app_id =
        get("app_id").ok_or_else(|| refusal(Missing, "isv.missing-app-id", "缺少AppID参数"))?;
    let sign_type = get("sign_type")
        .ok_or_else(|| refusal(Missing, "isv.missing-signature-type", "缺少签名类型参数"))?;
    if sign_type != "RSA2" {
        return Err(refusal(Invalid, "isv.invalid-signature-type", "无效的签名类型参数"));
    }
    if get("sign").is_none() {
        return Err(refusal(Missing, "isv.missing-signature", "缺少签名参数"));
    }
    let timestamp = get("timestamp")
        .ok_or_else(|| refusal(Missing, "isv.missing-timestamp", "缺少时间戳参数"))?;
    let version =
        get("version").ok_or_else(|| refusal(Missing, "isv.missing-version", "缺少版本参数"))?;
    if version != "1.0" {
        return Err(refusal(Invalid, "isv.invalid-version", "无效的版本参数"));
    }
    if get("format").is_some_and(|f| !f.eq_ignore_ascii_case("json")) {
        return Err(refusal(Invalid, "isv.invalid-format", "无效的数据格式参数"));
    }
    if get("charset").is_some_and(|c| !c.eq_ignore_ascii_case("utf-8")) {
        return Err(refusal(
            Invalid,
            "isv.invalid-charset",
            "the sandbox accepts charset=utf-8 only",
        ));
    }
    let at = parse_beijing(timestamp).ok_or_else(|| {
        refusal(Invalid, "isv.invalid-timestamp", "非法的时间戳参数 (yyyy-MM-dd HH:mm:ss)")
    })?;
    if let Some(tolerance) = shared.config.timestamp_tolerance
        && (OffsetDateTime::now_utc() - at).unsigned_abs() > tolerance
    {
        return Err(refusal(Invalid, "isv.invalid-timestamp", "时间戳超出允许范围"));
    }
    let key = shared
        .app_key(app_id)
        .ok_or_else(|| refusal(Invalid, "isv.invalid-app-id", "无效的AppID参数"))?;
    match verify_request(params, &key) {
        Ok(()) => Ok(api),
        Err(ProtocolError::MissingSign) => {
            Err(refusal(Missing, "isv.missing-signature", "缺少签名参数"))
        }
        Err(_) => Err(refusal(
            Invalid,
            "isv.invalid-signature",
            format!(
                "验签出错，建议检查签名字符串或签名私钥与应用公钥证书是否匹配，网关生成的验签字符串为：{}",
                request_sign_content(params)
            ),
        )),
    }
}

/// `biz_content` as a JSON object; absent means empty.
struct Biz(Map<String, Value>);

impl Biz {
    fn parse(params: &Params) -> Result<Self, Refusal> {
        match params.get("biz_content").filter(|t| !t.is_empty()) {
            None => Ok(Self(Map::new())),
            Some(text) => match serde_json::from_str::<Value>(text) {
                Ok(Value::Object(map)) => Ok(Self(map)),
                _ => Err(refusal(
                    ResultCode::InvalidArguments,
                    "isv.invalid-parameter",
                    "biz_content is not a JSON object",
                )),
            },
        }
    }

    /// A string field; numbers are taken as their JSON text (some clients send amounts as
    /// numbers).
    fn text(&self, name: &str) -> Option<String> {
        match self.0.get(name)? {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    fn required(&self, name: &str) -> Result<String, Refusal> {
        self.text(name).ok_or_else(|| {
            refusal(
                ResultCode::MissingArguments,
                "isv.missing-parameter",
                format!("缺少必选参数 {name}"),
            )
        })
    }

    fn trade_ref(&self) -> Result<(Option<String>, Option<String>), Refusal> {
        let out_trade_no = self.text("out_trade_no");
        let trade_no = self.text("trade_no");
        if out_trade_no.is_none() && trade_no.is_none() {
            return Err(refusal(
                ResultCode::MissingArguments,
                "isv.missing-parameter",
                "out_trade_no 和 trade_no 不能同时为空",
            ));
        }
        Ok((out_trade_no, trade_no))
    }
}

fn invalid_parameter(message: String) -> Refusal {
    Refusal::business("ACQ.INVALID_PARAMETER", &message)
}

fn amount(biz: &Biz, name: &str) -> Result<i64, Refusal> {
    parse_yuan(&biz.required(name)?).map_err(|e| invalid_parameter(format!("{name}: {e}")))
}

fn new_order(method: PayMethod, params: &Params, biz: &Biz) -> Result<NewOrder, Refusal> {
    let out_trade_no = biz.required("out_trade_no")?;
    let valid_no = out_trade_no.len() <= 64
        && out_trade_no.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !valid_no {
        return Err(invalid_parameter(
            "out_trade_no: at most 64 letters, digits, `_` or `-`".to_owned(),
        ));
    }
    let total_fen = amount(biz, "total_amount")?;
    let subject = biz.required("subject")?;
    if subject.chars().count() > 256 {
        return Err(invalid_parameter("subject: at most 256 characters".to_owned()));
    }
    let param = |name: &str| params.get(name).filter(|v| !v.is_empty()).cloned();
    Ok(NewOrder {
        method,
        app_id: param("app_id").unwrap_or_default(),
        out_trade_no,
        subject,
        body: biz.text("body"),
        total_fen,
        notify_url: param("notify_url"),
        return_url: param("return_url"),
        passback_params: biz.text("passback_params"),
        royalty_freeze: crate::royalty::asks_freeze(&biz.0),
    })
}

/// A signed JSON answer, HTTP 200 as always.
pub(crate) fn answer(shared: &Shared, node_name: &str, node: &Node) -> Response {
    let text = node.to_json();
    let sign = shared.sign(&text);
    json_response(answer_body(node_name, &text, sign.as_deref()))
}

fn json_response(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json;charset=utf-8")], body).into_response()
}

fn is_form(headers: &HeaderMap) -> bool {
    match headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) {
        None => true,
        Some(ct) => ct.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"),
    }
}

pub(crate) async fn gateway(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body_part: &[u8] = if method == Method::POST && is_form(&headers) { &body } else { b"" };
    let faults = shared.faults();
    if let Some(ms) = faults.latency_ms {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let params = match merge_form_parts(&[uri.query().unwrap_or_default().as_bytes(), body_part]) {
        Ok(params) => params,
        Err(e) => {
            let node =
                Node::error(ResultCode::InvalidArguments, "isv.invalid-parameter", &e.to_string());
            return answer(&shared, "error_response", &node);
        }
    };
    let method_name = params.get("method").cloned().unwrap_or_default();
    let name = match Api::parse(&method_name) {
        Some(_) => node_name(&method_name),
        None => "error_response".to_owned(),
    };
    if faults.roll_error() {
        let node = Node::error(ResultCode::ServiceUnavailable, "isp.unknow-error", "系统繁忙");
        return json_response(answer_body(&name, &node.to_json(), None));
    }
    let api = match check_request(&shared, &params) {
        Ok(api) => api,
        Err(r) if matches!(Api::parse(&method_name), Some(Api::PagePay | Api::WapPay)) => {
            return sandbox::error_page(&r);
        }
        Err(r) => return answer(&shared, &name, &r.node()),
    };
    let outcome = dispatch(&shared, api, &params);
    if faults.timeout_after_commit.iter().any(|m| m == &method_name) {
        tracing::info!(method = %method_name, "fault: holding the answer after commit");
        tokio::time::sleep(HOLD).await;
    }
    match outcome {
        Outcome::Node(node) => answer(&shared, &name, &node),
        Outcome::Browser(response) => response,
    }
}

enum Outcome {
    Node(Node),
    Browser(Response),
}

fn dispatch(shared: &Arc<Shared>, api: Api, params: &Params) -> Outcome {
    let biz = match Biz::parse(params) {
        Ok(biz) => biz,
        Err(r) => return refused(api, &r),
    };
    let result = match api {
        Api::Precreate => precreate(shared, params, &biz),
        Api::PagePay | Api::WapPay => {
            let method = if api == Api::PagePay { PayMethod::PagePay } else { PayMethod::WapPay };
            return match browser_pay(shared, method, params, &biz) {
                Ok(url) => {
                    Outcome::Browser((StatusCode::FOUND, [(header::LOCATION, url)]).into_response())
                }
                Err(r) => Outcome::Browser(sandbox::error_page(&r)),
            };
        }
        Api::AppPay => Err(refusal(
            ResultCode::InvalidArguments,
            "isv.invalid-method",
            "alipay.trade.app.pay is not a gateway call: the order string goes to the Alipay app (sandbox: POST it to /_sandbox/app_pay)",
        )),
        Api::Query => with_trade(&biz, |which| {
            crate::barcode::before_query(shared, which.out_trade_no);
            shared.trades().query(which)
        }),
        Api::BarcodePay => crate::barcode::pay(shared, params, &biz.0),
        Api::Cancel => with_trade(&biz, |which| crate::barcode::cancel(shared, which.out_trade_no)),
        Api::Close => {
            with_trade(&biz, |which| shared.trades().close(which, OffsetDateTime::now_utc()))
        }
        Api::Refund => refund(shared, &biz),
        Api::RefundQuery => biz.required("out_request_no").and_then(|out_request_no| {
            with_trade(&biz, |which| shared.trades().refund_query(which, &out_request_no))
        }),
        Api::Royalty(method) => crate::royalty::call(shared, method, params, &biz.0),
    };
    match result {
        Ok(node) => Outcome::Node(node),
        Err(r) => refused(api, &r),
    }
}

fn refused(api: Api, refusal: &Refusal) -> Outcome {
    match api {
        Api::PagePay | Api::WapPay => Outcome::Browser(sandbox::error_page(refusal)),
        _ => Outcome::Node(refusal.node()),
    }
}

fn with_trade(
    biz: &Biz,
    op: impl FnOnce(TradeRef<'_>) -> Result<Node, Refusal>,
) -> Result<Node, Refusal> {
    let (out_trade_no, trade_no) = biz.trade_ref()?;
    op(TradeRef { out_trade_no: out_trade_no.as_deref(), trade_no: trade_no.as_deref() })
}

fn precreate(shared: &Shared, params: &Params, biz: &Biz) -> Result<Node, Refusal> {
    let order = new_order(PayMethod::Precreate, params, biz)?;
    let mut trades = shared.trades();
    let registered = trades.register(order, OffsetDateTime::now_utc())?;
    let out_trade_no = registered.request.out_trade_no.clone();
    Ok(Node::success()
        .field("out_trade_no", out_trade_no.clone())
        .field("qr_code", shared.cashier_url(&out_trade_no)))
}

/// page.pay and wap.pay: register the order, then send the browser to the cashier page.
fn browser_pay(
    shared: &Shared,
    method: PayMethod,
    params: &Params,
    biz: &Biz,
) -> Result<String, Refusal> {
    let order = new_order(method, params, biz)?;
    let mut trades = shared.trades();
    let registered = trades.register(order, OffsetDateTime::now_utc())?;
    Ok(shared.cashier_url(&registered.request.out_trade_no))
}

fn refund(shared: &Arc<Shared>, biz: &Biz) -> Result<Node, Refusal> {
    let (out_trade_no, trade_no) = biz.trade_ref()?;
    let amount_fen = amount(biz, "refund_amount")?;
    let out_request_no = biz.text("out_request_no");
    let which = TradeRef { out_trade_no: out_trade_no.as_deref(), trade_no: trade_no.as_deref() };
    let (node, job) = shared.trades().refund(
        which,
        out_request_no.as_deref(),
        amount_fen,
        OffsetDateTime::now_utc(),
        &shared.config.seller_id,
    )?;
    if let Some(job) = job {
        notify::spawn(shared, job);
    }
    Ok(node)
}

/// `POST /_sandbox/app_pay`: the body is an app.pay order string, as the app SDK would hand it
/// to the Alipay app. Verified like a gateway request, then the trade exists.
pub(crate) async fn app_pay(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let result = merge_form_parts(&[&body[..]])
        .map_err(|e| refusal(ResultCode::InvalidArguments, "isv.invalid-parameter", e.to_string()))
        .and_then(|params| {
            match check_request(&shared, &params)? {
                Api::AppPay => {}
                _ => {
                    return Err(refusal(
                        ResultCode::InvalidArguments,
                        "isv.invalid-method",
                        "an order string's method is alipay.trade.app.pay",
                    ));
                }
            }
            let order = new_order(PayMethod::AppPay, &params, &Biz::parse(&params)?)?;
            let mut trades = shared.trades();
            let registered = trades.register(order, OffsetDateTime::now_utc())?;
            Ok(serde_json::json!({
                "out_trade_no": registered.request.out_trade_no,
                "trade_no": registered.trade_no,
                "trade_status": registered.status.as_str(),
                "cashier_url": shared.cashier_url(&registered.request.out_trade_no),
            }))
        });
    match result {
        Ok(value) => Json(value).into_response(),
        Err(r) => (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({
                "code": r.code.code(),
                "msg": r.code.msg(),
                "sub_code": r.sub_code,
                "sub_msg": r.sub_msg,
            })),
        )
            .into_response(),
    }
}

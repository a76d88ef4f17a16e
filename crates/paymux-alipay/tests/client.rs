//! Outcome mapping of `AlipayChannel`, against a tiny gateway on 127.0.0.1 that returns canned
//! answers signed with a test key made here.

#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use paymux_alipay::protocol::{self, Params};
use paymux_alipay::{AlipayAccountConfig, AlipayChannel};
use paymux_core::{
    ALREADY_PAID, BarcodeCancel, Channel, ChannelError, ChannelOrderNo, ChannelPayment,
    ChannelRefund, CreatePayment, Currency, InboundRequest, Money, Notification, PaymentAction,
    PaymentMethod, PaymentRef, RefundRequest,
};
use paymux_crypto::{RsaPrivateKey, RsaPublicKey};
use time::OffsetDateTime;
use time::macros::datetime;

const APP_ID: &str = "2021000000000001";
const NOW: OffsetDateTime = datetime!(2026-01-02 03:04:05 UTC);

struct Reply {
    status: u16,
    body: String,
    delay: Option<Duration>,
}

#[derive(Debug, Clone)]
struct Seen {
    query: String,
    content_type: String,
    body: String,
}

#[derive(Default)]
struct Gateway {
    replies: Mutex<VecDeque<Reply>>,
    seen: Mutex<Vec<Seen>>,
}

struct Harness {
    channel: AlipayChannel,
    gateway: Arc<Gateway>,
    alipay_key: RsaPrivateKey,
    app_public: RsaPublicKey,
}

impl Harness {
    fn reply(&self, body: String) {
        self.gateway.replies.lock().unwrap().push_back(Reply { status: 200, body, delay: None });
    }

    fn reply_with(&self, status: u16, body: &str, delay: Option<Duration>) {
        let r = Reply { status, body: body.to_owned(), delay };
        self.gateway.replies.lock().unwrap().push_back(r);
    }

    /// A body laid out as Alipay does: node first, `sign` last.
    fn signed(&self, method: &str, node: &str) -> String {
        let sign = self.alipay_key.sign_base64(node.as_bytes()).unwrap();
        format!(r#"{{"{}":{node},"sign":"{sign}"}}"#, protocol::response_node_name(method))
    }

    fn seen(&self) -> Vec<Seen> {
        self.gateway.seen.lock().unwrap().clone()
    }

    /// The parameters of the last request, query and body merged, after checking our signature.
    fn last_request(&self) -> Params {
        let seen = self.seen().pop().unwrap();
        assert_eq!(seen.content_type, protocol::FORM_CONTENT_TYPE);
        let mut params = protocol::decode_form(seen.query.as_bytes()).unwrap();
        params.extend(protocol::decode_form(seen.body.as_bytes()).unwrap());
        verify_request(&params, &self.app_public);
        params
    }
}

fn verify_request(params: &Params, key: &RsaPublicKey) {
    let content = protocol::request_string_to_sign(params);
    key.verify_base64(content.as_bytes(), &params["sign"]).unwrap();
    assert!(params.values().all(|v| !v.is_empty()), "no empty parameter is ever sent");
}

async fn handle(
    State(gw): State<Arc<Gateway>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let content_type =
        headers.get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    gw.seen.lock().unwrap().push(Seen {
        query: query.unwrap_or_default(),
        content_type,
        body: String::from_utf8(body.to_vec()).unwrap(),
    });
    let reply = gw.replies.lock().unwrap().pop_front();
    let Some(reply) = reply else {
        return (StatusCode::IM_A_TEAPOT, "no reply queued".into());
    };
    if let Some(d) = reply.delay {
        tokio::time::sleep(d).await;
    }
    (StatusCode::from_u16(reply.status).unwrap(), reply.body)
}

async fn harness_with(timeout: Duration, seller_id: Option<&str>) -> Harness {
    let gateway = Arc::new(Gateway::default());
    let app = Router::new().route("/gateway.do", post(handle)).with_state(gateway.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let app_key = RsaPrivateKey::generate().unwrap();
    let alipay_key = RsaPrivateKey::generate().unwrap();
    let config = AlipayAccountConfig {
        app_id: APP_ID.into(),
        app_private_key: app_key.to_pkcs8_pem().unwrap(),
        alipay_public_key: alipay_key.public_key().to_spki_base64(),
        gateway_url: format!("http://{addr}/gateway.do"),
        seller_id: seller_id.map(str::to_owned),
        app_cert: None,
        alipay_root_cert: None,
        max_share_bps: None,
    };
    let channel = AlipayChannel::new(&config, timeout).unwrap().with_clock(|| NOW);
    Harness { channel, gateway, alipay_key, app_public: app_key.public_key() }
}

async fn harness() -> Harness {
    harness_with(Duration::from_secs(10), None).await
}

fn order_no() -> ChannelOrderNo {
    ChannelOrderNo::from_channel("0193A7C2E4F87B1D9C3E5A6B7C8D9E0F").unwrap()
}

fn cny(fen: i64) -> Money {
    Money::new(fen, Currency::Cny).unwrap()
}

fn create_request(method: PaymentMethod) -> CreatePayment {
    CreatePayment {
        channel_order_no: order_no(),
        amount: cny(1),
        subject: "测试 a+b & c".into(),
        method,
        created_at: NOW,
        expires_at: NOW + time::Duration::minutes(30),
        notify_url: "https://pay.example/callbacks/alipay/acct_1".into(),
        return_url: Some("https://shop.example/done?x=1".into()),
        client_ip: None,
        payer_openid: None,
        auth_code: None,
        hold: false,
    }
}

fn payment_ref() -> PaymentRef {
    PaymentRef {
        channel_order_no: order_no(),
        channel_trade_no: None,
        amount: cny(150),
        created_at: NOW,
        expires_at: NOW + time::Duration::minutes(30),
        channel_data: serde_json::Value::Null,
    }
}

fn refund_request() -> RefundRequest {
    RefundRequest {
        payment: payment_ref(),
        channel_refund_no: ChannelOrderNo::from_channel("0193A7C2E4F87B1D9C3E5A6B7C8D9E1A")
            .unwrap(),
        amount: cny(50),
        reason: Some("客户取消".into()),
        notify_url: "https://pay.example/callbacks/alipay/acct_1".into(),
        created_at: NOW,
    }
}

fn biz(params: &Params) -> serde_json::Value {
    serde_json::from_str(&params["biz_content"]).unwrap()
}

fn assert_unknown(r: Result<impl std::fmt::Debug, ChannelError>, timed_out_expected: bool) {
    match r {
        Err(ChannelError::Unknown { timed_out, .. }) => assert_eq!(timed_out, timed_out_expected),
        other => panic!("expected Unknown, got {other:?}"),
    }
}

#[tokio::test]
async fn precreate_sends_a_signed_request_and_returns_the_qr_code() {
    let h = harness().await;
    h.reply(h.signed(
        protocol::METHOD_PRECREATE,
        r#"{"code":"10000","msg":"Success","out_trade_no":"0193A7C2E4F87B1D9C3E5A6B7C8D9E0F","qr_code":"https://qr.alipay.com/bax03206"}"#,
    ));
    let created = h.channel.create(&create_request(PaymentMethod::Qr)).await.unwrap();
    assert_eq!(
        created.action,
        PaymentAction::QrCode { code_url: "https://qr.alipay.com/bax03206".into() }
    );

    let seen = h.seen().pop().unwrap();
    assert!(seen.body.starts_with("biz_content=") && !seen.body.contains('&'));
    assert!(!seen.query.contains("biz_content"));
    let p = h.last_request();
    assert_eq!(p["method"], "alipay.trade.precreate");
    assert_eq!(p["app_id"], APP_ID);
    assert_eq!(p["timestamp"], "2026-01-02 11:04:05");
    assert_eq!(p["notify_url"], "https://pay.example/callbacks/alipay/acct_1");
    assert!(!p.contains_key("return_url"));
    let b = biz(&p);
    assert_eq!(b["out_trade_no"], "0193A7C2E4F87B1D9C3E5A6B7C8D9E0F");
    assert_eq!(b["total_amount"], "0.01");
    assert_eq!(b["subject"], "测试 a+b & c");
    assert_eq!(b["time_expire"], "2026-01-02 11:34:05");
    assert_eq!(b["qr_code_timeout_express"], "30m", "the code dies with the payment");
    assert_eq!(
        created.channel_data["qr_code_expires_at"],
        (NOW + time::Duration::minutes(30)).unix_timestamp()
    );
}

#[tokio::test]
async fn a_closed_precreate_is_watched_until_its_code_expires_at_the_channel() {
    let h = harness().await;
    let mut p = payment_ref();
    // The code was given 31 minutes (an expiry of 30 min 20 s, rounded up to whole minutes).
    p.expires_at = NOW + time::Duration::seconds(30 * 60 + 20);
    p.channel_data = serde_json::json!({"method": "alipay.trade.precreate", "qr_code_expires_at": (NOW + time::Duration::minutes(31)).unix_timestamp()});
    assert_eq!(h.channel.payable_until(&p), NOW + time::Duration::minutes(31));
    // The create's answer was lost: worked out again from the payment, with a minute to spare.
    p.channel_data = serde_json::Value::Null;
    assert_eq!(h.channel.payable_until(&p), NOW + time::Duration::minutes(32));
}

#[tokio::test]
async fn refund_answers_and_notifications_report_the_trades_refunded_total() {
    let h = harness().await;
    let r = protocol::METHOD_REFUND;
    h.reply(h.signed(r, r#"{"code":"10000","msg":"Success","out_trade_no":"0193A7C2E4F87B1D9C3E5A6B7C8D9E0F","fund_change":"Y","refund_fee":"1.20"}"#));
    assert!(matches!(
        h.channel.refund(&refund_request()).await,
        Ok(ChannelRefund::Succeeded { refunded_total: Some(t), .. }) if t == cny(120)
    ));
    h.reply(h.signed(r, r#"{"code":"10000","msg":"Success","out_trade_no":"0193A7C2E4F87B1D9C3E5A6B7C8D9E0F","fund_change":"Y","refund_fee":"x"}"#));
    assert_unknown(h.channel.refund(&refund_request()).await, false);
}

#[tokio::test]
async fn page_and_wap_return_a_signed_form_without_calling_alipay() {
    let h = harness().await;
    for (method, name, product) in [
        (PaymentMethod::Page, "alipay.trade.page.pay", "FAST_INSTANT_TRADE_PAY"),
        (PaymentMethod::Wap, "alipay.trade.wap.pay", "QUICK_WAP_WAY"),
    ] {
        let created = h.channel.create(&create_request(method)).await.unwrap();
        let PaymentAction::Form { method: verb, url, fields } = created.action else {
            panic!("expected a form");
        };
        assert_eq!(verb, "POST");
        let (base, query) = url.split_once('?').unwrap();
        assert!(base.ends_with("/gateway.do"));
        let mut p = protocol::decode_form(query.as_bytes()).unwrap();
        assert!(!p.contains_key("biz_content"));
        assert_eq!(fields.keys().collect::<Vec<_>>(), ["biz_content"]);
        p.extend(fields);
        verify_request(&p, &h.app_public);
        assert_eq!(p["method"], name);
        assert_eq!(p["return_url"], "https://shop.example/done?x=1");
        assert_eq!(biz(&p)["product_code"], product);
    }
    assert!(h.seen().is_empty());
}

#[tokio::test]
async fn app_pay_returns_the_signed_order_string() {
    let h = harness().await;
    let created = h.channel.create(&create_request(PaymentMethod::App)).await.unwrap();
    let PaymentAction::Sdk { params } = created.action else { panic!("expected sdk params") };
    let order_string = params["order_string"].as_str().unwrap();
    let p = protocol::decode_form(order_string.as_bytes()).unwrap();
    verify_request(&p, &h.app_public);
    assert_eq!(p["method"], "alipay.trade.app.pay");
    assert_eq!(biz(&p)["product_code"], "QUICK_MSECURITY_PAY");
    assert!(h.seen().is_empty());
}

#[tokio::test]
async fn unsupported_methods_and_bad_requests_are_invalid() {
    let h = harness().await;
    for m in [PaymentMethod::Jsapi, PaymentMethod::H5, PaymentMethod::MiniProgram] {
        assert!(!h.channel.supports(m));
        assert!(matches!(
            h.channel.create(&create_request(m)).await,
            Err(ChannelError::Invalid { .. })
        ));
    }
    // A barcode payment is a pay call of its own (`pay_barcode`), never a create.
    assert!(matches!(
        h.channel.create(&create_request(PaymentMethod::Barcode)).await,
        Err(ChannelError::Invalid { .. })
    ));
    for m in [
        PaymentMethod::Qr,
        PaymentMethod::Page,
        PaymentMethod::Wap,
        PaymentMethod::App,
        PaymentMethod::Barcode,
    ] {
        assert!(h.channel.supports(m));
    }
    let mut expired = create_request(PaymentMethod::Qr);
    expired.expires_at = NOW;
    assert!(matches!(h.channel.create(&expired).await, Err(ChannelError::Invalid { .. })));
    let mut no_subject = create_request(PaymentMethod::Qr);
    no_subject.subject.clear();
    assert!(matches!(h.channel.create(&no_subject).await, Err(ChannelError::Invalid { .. })));
    assert!(h.seen().is_empty());
}

#[tokio::test]
async fn an_unsigned_error_answer_is_unknown() {
    let h = harness().await;
    h.reply(r#"{"alipay_trade_precreate_response":{"code":"40004","msg":"Business Failed","sub_code":"ACQ.TRADE_HAS_SUCCESS"}}"#.into());
    assert_unknown(h.channel.create(&create_request(PaymentMethod::Qr)).await, false);
    h.reply(r#"{"error_response":{"code":"40002","msg":"Invalid Arguments","sub_code":"isv.invalid-app-id"}}"#.into());
    assert_unknown(h.channel.query(&payment_ref()).await, false);
}

#[tokio::test]
async fn a_bad_signature_on_a_success_is_unknown_never_success() {
    let h = harness().await;
    let node = r#"{"code":"10000","msg":"Success","trade_no":"2026","out_trade_no":"0193A7C2E4F87B1D9C3E5A6B7C8D9E0F","trade_status":"TRADE_SUCCESS","total_amount":"1.50"}"#;
    let forged = RsaPrivateKey::generate().unwrap().sign_base64(node.as_bytes()).unwrap();
    h.reply(format!(r#"{{"alipay_trade_query_response":{node},"sign":"{forged}"}}"#));
    assert_unknown(h.channel.query(&payment_ref()).await, false);

    // Signed text altered after signing (a re-serialised or tampered node).
    let body = h.signed(protocol::METHOD_QUERY, node).replace("1.50", "0.01");
    h.reply(body);
    assert_unknown(h.channel.query(&payment_ref()).await, false);
}

#[tokio::test]
async fn a_timeout_is_unknown_and_says_so() {
    let h = harness_with(Duration::from_millis(300), None).await;
    h.reply_with(200, "{}", Some(Duration::from_secs(30)));
    assert_unknown(h.channel.query(&payment_ref()).await, true);
}

#[tokio::test]
async fn http_errors_and_refused_connections_are_unknown() {
    let h = harness().await;
    h.reply_with(502, "bad gateway", None);
    assert_unknown(h.channel.query(&payment_ref()).await, false);
    h.reply_with(200, "<html>not json</html>", None);
    assert_unknown(h.channel.refund(&refund_request()).await, false);

    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let config = AlipayAccountConfig {
        app_id: APP_ID.into(),
        app_private_key: RsaPrivateKey::generate().unwrap().to_pkcs8_pem().unwrap(),
        alipay_public_key: h.alipay_key.public_key().to_spki_pem(),
        gateway_url: format!("http://{addr}/gateway.do"),
        seller_id: None,
        app_cert: None,
        alipay_root_cert: None,
        max_share_bps: None,
    };
    let channel = AlipayChannel::new(&config, Duration::from_secs(5)).unwrap();
    assert_unknown(channel.close(&payment_ref()).await, false);
}

#[tokio::test]
async fn query_maps_trade_status() {
    let h = harness().await;
    let q = protocol::METHOD_QUERY;
    h.reply(h.signed(q, r#"{"code":"40004","msg":"Business Failed","sub_code":"ACQ.TRADE_NOT_EXIST","sub_msg":"交易不存在"}"#));
    assert_eq!(h.channel.query(&payment_ref()).await, Ok(ChannelPayment::Pending));
    assert_eq!(biz(&h.last_request())["out_trade_no"], "0193A7C2E4F87B1D9C3E5A6B7C8D9E0F");

    h.reply(h.signed(q, r#"{"code":"10000","msg":"Success","trade_no":"2026010222001","out_trade_no":"0193A7C2E4F87B1D9C3E5A6B7C8D9E0F","trade_status":"TRADE_SUCCESS","total_amount":"1.50","send_pay_date":"2026-01-02 11:05:00","fund_bill_list":[{"amount":"1.50","fund_channel":"ALIPAYACCOUNT"}]}"#));
    assert_eq!(
        h.channel.query(&payment_ref()).await,
        Ok(ChannelPayment::Succeeded {
            channel_trade_no: "2026010222001".into(),
            amount: cny(150),
            paid_at: Some(datetime!(2026-01-02 03:05:00 UTC)),
        })
    );

    h.reply(h.signed(q, r#"{"code":"10000","msg":"Success","trade_no":"1","trade_status":"TRADE_FINISHED","total_amount":"2"}"#));
    assert_eq!(
        h.channel.query(&payment_ref()).await,
        Ok(ChannelPayment::Succeeded {
            channel_trade_no: "1".into(),
            amount: cny(200),
            paid_at: None
        })
    );
    h.reply(h.signed(q, r#"{"code":"10000","msg":"Success","trade_no":"1","trade_status":"WAIT_BUYER_PAY","total_amount":"1.50"}"#));
    assert_eq!(h.channel.query(&payment_ref()).await, Ok(ChannelPayment::Pending));
    h.reply(h.signed(q, r#"{"code":"10000","msg":"Success","trade_no":"1","trade_status":"TRADE_CLOSED","total_amount":"1.50"}"#));
    assert_eq!(h.channel.query(&payment_ref()).await, Ok(ChannelPayment::Closed));

    // Answers that cannot be trusted to settle anything.
    for node in [
        r#"{"code":"10000","msg":"Success","trade_no":"1","out_trade_no":"SOMEONE_ELSE","trade_status":"TRADE_SUCCESS","total_amount":"1.50"}"#,
        r#"{"code":"10000","msg":"Success","trade_no":"1","trade_status":"TRADE_SUCCESS","total_amount":"1.505"}"#,
        r#"{"code":"10000","msg":"Success","trade_status":"TRADE_SUCCESS","total_amount":"1.50"}"#,
        r#"{"code":"10000","msg":"Success","trade_no":"1","trade_status":"SOMETHING_NEW"}"#,
        r#"{"code":"20000","msg":"Service Currently Unavailable","sub_code":"isp.unknow-error"}"#,
        r#"{"code":"40004","msg":"Business Failed","sub_code":"ACQ.SYSTEM_ERROR"}"#,
        r#"{"msg":"no code"}"#,
    ] {
        h.reply(h.signed(q, node));
        assert_unknown(h.channel.query(&payment_ref()).await, false);
    }

    h.reply(h.signed(
        q,
        r#"{"code":"40002","msg":"Invalid Arguments","sub_code":"isv.invalid-signature"}"#,
    ));
    assert!(matches!(h.channel.query(&payment_ref()).await, Err(ChannelError::Invalid { .. })));
    h.reply(h.signed(
        q,
        r#"{"code":"40001","msg":"Missing Required Arguments","sub_code":"isv.missing-method"}"#,
    ));
    assert!(matches!(h.channel.query(&payment_ref()).await, Err(ChannelError::Invalid { .. })));
}

#[tokio::test]
async fn close_treats_a_missing_trade_as_closed_and_reports_already_paid() {
    let h = harness().await;
    let c = protocol::METHOD_CLOSE;
    h.reply(h.signed(
        c,
        r#"{"code":"10000","msg":"Success","out_trade_no":"0193A7C2E4F87B1D9C3E5A6B7C8D9E0F"}"#,
    ));
    assert_eq!(h.channel.close(&payment_ref()).await, Ok(()));
    assert_eq!(h.last_request()["method"], "alipay.trade.close");
    h.reply(
        h.signed(c, r#"{"code":"40004","msg":"Business Failed","sub_code":"ACQ.TRADE_NOT_EXIST"}"#),
    );
    assert_eq!(h.channel.close(&payment_ref()).await, Ok(()));
    h.reply(h.signed(c, r#"{"code":"40004","msg":"Business Failed","sub_code":"ACQ.TRADE_HAS_SUCCESS","sub_msg":"交易已支付"}"#));
    assert!(matches!(
        h.channel.close(&payment_ref()).await,
        Err(ChannelError::Declined { code, .. }) if code == ALREADY_PAID
    ));
    h.reply(
        h.signed(c, r#"{"code":"40004","msg":"Business Failed","sub_code":"ACQ.SYSTEM_ERROR"}"#),
    );
    assert_unknown(h.channel.close(&payment_ref()).await, false);
}

#[tokio::test]
async fn refund_maps_fund_change_and_refusals() {
    let h = harness().await;
    let r = protocol::METHOD_REFUND;
    h.reply(h.signed(r, r#"{"code":"10000","msg":"Success","trade_no":"1","out_trade_no":"0193A7C2E4F87B1D9C3E5A6B7C8D9E0F","fund_change":"Y","refund_fee":"0.50","gmt_refund_pay":"2026-01-02 11:10:00"}"#));
    assert_eq!(
        h.channel.refund(&refund_request()).await,
        Ok(ChannelRefund::Succeeded {
            channel_refund_id: None,
            succeeded_at: Some(datetime!(2026-01-02 03:10:00 UTC)),
            amount: None,
            refunded_total: Some(cny(50)),
        })
    );
    let b = biz(&h.last_request());
    assert_eq!(b["out_request_no"], "0193A7C2E4F87B1D9C3E5A6B7C8D9E1A");
    assert_eq!(b["refund_amount"], "0.50");
    assert_eq!(b["refund_reason"], "客户取消");

    for node in [
        r#"{"code":"10000","msg":"Success","fund_change":"N","refund_fee":"0.50"}"#,
        r#"{"code":"10000","msg":"Success","refund_fee":"0.50"}"#,
    ] {
        h.reply(h.signed(r, node));
        assert_eq!(
            h.channel.refund(&refund_request()).await,
            Ok(ChannelRefund::Pending { channel_refund_id: None })
        );
    }
    for sub in [
        "ACQ.TRADE_STATUS_ERROR",
        "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL",
        "ACQ.SELLER_BALANCE_NOT_ENOUGH",
        "ACQ.TRADE_HAS_CLOSE",
    ] {
        h.reply(h.signed(
            r,
            &format!(r#"{{"code":"40004","msg":"Business Failed","sub_code":"{sub}"}}"#),
        ));
        assert!(matches!(
            h.channel.refund(&refund_request()).await,
            Err(ChannelError::Declined { code, .. }) if code == sub
        ));
    }
    h.reply(
        h.signed(r, r#"{"code":"40004","msg":"Business Failed","sub_code":"ACQ.SYSTEM_ERROR"}"#),
    );
    assert_unknown(h.channel.refund(&refund_request()).await, false);
    h.reply(h.signed(
        r,
        r#"{"code":"20000","msg":"Service Currently Unavailable","sub_code":"aop.unknow-error"}"#,
    ));
    assert_unknown(h.channel.refund(&refund_request()).await, false);
}

#[tokio::test]
async fn refund_query_succeeds_only_on_refund_success() {
    let h = harness().await;
    let q = protocol::METHOD_REFUND_QUERY;
    h.reply(h.signed(q, r#"{"code":"10000","msg":"Success","out_trade_no":"0193A7C2E4F87B1D9C3E5A6B7C8D9E0F","out_request_no":"0193A7C2E4F87B1D9C3E5A6B7C8D9E1A","refund_amount":"0.50","refund_status":"REFUND_SUCCESS"}"#));
    assert_eq!(
        h.channel.query_refund(&refund_request()).await,
        Ok(ChannelRefund::Succeeded {
            channel_refund_id: None,
            succeeded_at: None,
            amount: None,
            refunded_total: None,
        })
    );
    let b = biz(&h.last_request());
    assert_eq!(b["out_trade_no"], "0193A7C2E4F87B1D9C3E5A6B7C8D9E0F");
    assert_eq!(b["out_request_no"], "0193A7C2E4F87B1D9C3E5A6B7C8D9E1A");

    h.reply(h.signed(
        q,
        r#"{"code":"10000","msg":"Success","out_trade_no":"0193A7C2E4F87B1D9C3E5A6B7C8D9E0F"}"#,
    ));
    assert_eq!(
        h.channel.query_refund(&refund_request()).await,
        Ok(ChannelRefund::Pending { channel_refund_id: None })
    );
    // Success for another refund number or another amount settles nothing.
    h.reply(h.signed(q, r#"{"code":"10000","msg":"Success","out_request_no":"OTHER","refund_status":"REFUND_SUCCESS"}"#));
    assert_unknown(h.channel.query_refund(&refund_request()).await, false);
    h.reply(h.signed(q, r#"{"code":"10000","msg":"Success","refund_amount":"0.51","refund_status":"REFUND_SUCCESS"}"#));
    assert_unknown(h.channel.query_refund(&refund_request()).await, false);
}

fn notification(h: &Harness, fields: &[(&str, &str)]) -> InboundRequest {
    let mut f: Params = fields.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let sign =
        h.alipay_key.sign_base64(protocol::notification_string_to_verify(&f).as_bytes()).unwrap();
    f.insert("sign".into(), sign);
    InboundRequest {
        method: "POST".into(),
        path: "/callbacks/alipay/acct_1".into(),
        query: None,
        headers: vec![("content-type".into(), "application/x-www-form-urlencoded".into())],
        body: protocol::encode_pairs(f.iter()).into_bytes(),
    }
}

fn trade_fields(status: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        ("app_id", APP_ID),
        ("auth_app_id", APP_ID),
        ("charset", "utf-8"),
        ("notify_id", "2026010200222"),
        ("notify_type", "trade_status_sync"),
        ("notify_time", "2026-01-02 11:05:01"),
        ("out_trade_no", "0193A7C2E4F87B1D9C3E5A6B7C8D9E0F"),
        ("trade_no", "2026010222001"),
        ("seller_id", "2088000000000001"),
        ("sign_type", "RSA2"),
        ("subject", "a+b 测试"),
        ("body", ""),
        ("total_amount", "1.50"),
        ("gmt_payment", "2026-01-02 11:05:00"),
        ("trade_status", status),
        ("version", "1.0"),
    ]
}

#[tokio::test]
async fn notifications_map_trade_status_and_refunds() {
    let h = harness_with(Duration::from_secs(10), Some("2088000000000001")).await;
    let order = order_no();

    let n = h.channel.parse_notification(&notification(&h, &trade_fields("TRADE_SUCCESS"))).await;
    assert_eq!(
        n,
        Ok(Notification::Payment {
            notify_id: Some("2026010200222".into()),
            channel_order_no: order.clone(),
            state: ChannelPayment::Succeeded {
                channel_trade_no: "2026010222001".into(),
                amount: cny(150),
                paid_at: Some(datetime!(2026-01-02 03:05:00 UTC)),
            },
        })
    );
    let n = h.channel.parse_notification(&notification(&h, &trade_fields("WAIT_BUYER_PAY"))).await;
    assert!(matches!(n, Ok(Notification::Payment { state: ChannelPayment::Pending, .. })));
    let n = h.channel.parse_notification(&notification(&h, &trade_fields("TRADE_CLOSED"))).await;
    assert!(matches!(n, Ok(Notification::Payment { state: ChannelPayment::Closed, .. })));

    let mut refund = trade_fields("TRADE_CLOSED");
    refund.extend([
        ("out_biz_no", "0193A7C2E4F87B1D9C3E5A6B7C8D9E1A"),
        ("refund_fee", "1.50"),
        ("gmt_refund", "2026-01-02 12:00:00"),
    ]);
    let n = h.channel.parse_notification(&notification(&h, &refund)).await;
    assert_eq!(
        n,
        Ok(Notification::Refund {
            notify_id: Some("2026010200222".into()),
            channel_order_no: order,
            channel_refund_no: ChannelOrderNo::from_channel("0193A7C2E4F87B1D9C3E5A6B7C8D9E1A")
                .unwrap(),
            state: ChannelRefund::Succeeded {
                channel_refund_id: None,
                succeeded_at: Some(datetime!(2026-01-02 04:00:00 UTC)),
                amount: None,
                refunded_total: Some(cny(150)),
            },
        })
    );
}

#[tokio::test]
async fn notifications_that_do_not_verify_are_refused() {
    let h = harness_with(Duration::from_secs(10), Some("2088000000000001")).await;
    let unverified = |r: Result<Notification, ChannelError>| {
        assert!(matches!(r, Err(ChannelError::Unverified { .. })), "{r:?}");
    };

    let good = notification(&h, &trade_fields("TRADE_SUCCESS"));
    let mut tampered = good.clone();
    tampered.body =
        String::from_utf8(good.body.clone()).unwrap().replace("1.50", "0.01").into_bytes();
    unverified(h.channel.parse_notification(&tampered).await);

    // Decoded twice: the signed `+` becomes a space.
    let mut twice = good.clone();
    twice.body = String::from_utf8(good.body.clone()).unwrap().replace("%2B", "+").into_bytes();
    unverified(h.channel.parse_notification(&twice).await);

    let mut other_app = trade_fields("TRADE_SUCCESS");
    other_app[0] = ("app_id", "2021999999999999");
    unverified(h.channel.parse_notification(&notification(&h, &other_app)).await);

    let mut other_seller = trade_fields("TRADE_SUCCESS");
    other_seller.retain(|(k, _)| *k != "seller_id");
    other_seller.push(("seller_id", "2088999999999999"));
    unverified(h.channel.parse_notification(&notification(&h, &other_seller)).await);

    let mut no_sign = good.clone();
    no_sign.body = b"app_id=2021000000000001&trade_status=TRADE_SUCCESS".to_vec();
    unverified(h.channel.parse_notification(&no_sign).await);

    let mut bad_amount = trade_fields("TRADE_SUCCESS");
    bad_amount.retain(|(k, _)| *k != "total_amount");
    bad_amount.push(("total_amount", "-1.50"));
    unverified(h.channel.parse_notification(&notification(&h, &bad_amount)).await);
}

#[tokio::test]
async fn acks_are_exactly_what_alipay_expects() {
    let h = harness().await;
    let yes = h.channel.ack(true);
    assert_eq!((yes.status, yes.body.as_slice()), (200, &b"success"[..]));
    assert!(yes.content_type.starts_with("text/plain"));
    let no = h.channel.ack(false);
    assert_ne!(no.body.as_slice(), b"success");
}

#[tokio::test]
async fn bad_keys_are_refused_when_the_adapter_is_built() {
    let good = RsaPrivateKey::generate().unwrap();
    let config = AlipayAccountConfig {
        app_id: APP_ID.into(),
        app_private_key: "not a key".into(),
        alipay_public_key: good.public_key().to_spki_base64(),
        gateway_url: "http://127.0.0.1:9/gateway.do".into(),
        seller_id: None,
        app_cert: None,
        alipay_root_cert: None,
        max_share_bps: None,
    };
    let err = AlipayChannel::new(&config, Duration::from_secs(1)).unwrap_err();
    assert!(matches!(err, ChannelError::Invalid { .. }));
    let config = AlipayAccountConfig { app_private_key: good.to_pkcs8_pem().unwrap(), ..config };
    let with_query = AlipayAccountConfig {
        gateway_url: "http://127.0.0.1:9/gateway.do?charset=utf-8".into(),
        ..config.clone()
    };
    let err = AlipayChannel::new(&with_query, Duration::from_secs(1)).unwrap_err();
    assert!(matches!(err, ChannelError::Invalid { .. }));
    let channel = AlipayChannel::new(&config, Duration::from_secs(1)).unwrap();
    assert!(!format!("{channel:?}").contains("PRIVATE"));
}

const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/vectors/alipay");

fn vector_file(name: &str) -> String {
    std::fs::read_to_string(format!("{VECTORS}/{name}")).unwrap()
}

/// The sandbox files of vectors A1/A2: the A1 private key belongs to the app certificate.
fn cert_mode_config() -> AlipayAccountConfig {
    AlipayAccountConfig {
        app_id: "9021000122682882".into(),
        app_private_key: vector_file("yansongda-app-private-key-pkcs1.base64.txt"),
        alipay_public_key: vector_file("yansongda-alipayPublicCert.crt"),
        gateway_url: protocol::SANDBOX_GATEWAY.into(),
        seller_id: None,
        app_cert: Some(vector_file("yansongda-alipayAppPublicCert.crt")),
        alipay_root_cert: Some(vector_file("yansongda-alipayRootCert.crt")),
        max_share_bps: None,
    }
}

#[tokio::test]
async fn cert_mode_signs_the_certificate_sns_into_every_request() {
    let channel =
        AlipayChannel::new(&cert_mode_config(), Duration::from_secs(1)).unwrap().with_clock(|| NOW);
    let created = channel.create(&create_request(PaymentMethod::Page)).await.unwrap();
    let PaymentAction::Form { url, fields, .. } = created.action else { panic!("expected a form") };
    let mut p = protocol::decode_form(url.split_once('?').unwrap().1.as_bytes()).unwrap();
    p.extend(fields);
    let app_cert =
        paymux_crypto::Certificate::from_pem(&vector_file("yansongda-alipayAppPublicCert.crt"))
            .unwrap();
    verify_request(&p, app_cert.public_key().unwrap());
    assert_eq!(p["app_cert_sn"], "e90dd23a37c5c7b616e003970817ff82");
    assert_eq!(
        p["alipay_root_cert_sn"],
        "687b59193f3f462dd5336e5abf83c5d8_02941eef3187dddf3d3b83462e1dfcf6"
    );
}

#[tokio::test]
async fn cert_mode_refuses_half_a_configuration_or_a_foreign_certificate() {
    let half = AlipayAccountConfig { alipay_root_cert: None, ..cert_mode_config() };
    assert!(matches!(
        AlipayChannel::new(&half, Duration::from_secs(1)),
        Err(ChannelError::Invalid { .. })
    ));
    let foreign = AlipayAccountConfig {
        app_private_key: RsaPrivateKey::generate().unwrap().to_pkcs8_pem().unwrap(),
        ..cert_mode_config()
    };
    assert!(matches!(
        AlipayChannel::new(&foreign, Duration::from_secs(1)),
        Err(ChannelError::Invalid { .. })
    ));
    let bare_key = AlipayAccountConfig {
        alipay_public_key: RsaPrivateKey::generate().unwrap().public_key().to_spki_base64(),
        ..cert_mode_config()
    };
    assert!(matches!(
        AlipayChannel::new(&bare_key, Duration::from_secs(1)),
        Err(ChannelError::Invalid { .. })
    ));
}

const ALIPAY_CODE: &str = "286012345678901234";

fn barcode_request() -> CreatePayment {
    CreatePayment { auth_code: Some(ALIPAY_CODE.into()), ..create_request(PaymentMethod::Barcode) }
}

#[tokio::test]
async fn barcode_pay_sends_the_code_with_scene_bar_code_and_maps_its_answers() {
    let h = harness().await;
    let m = protocol::METHOD_PAY;
    h.reply(h.signed(m, r#"{"code":"10000","msg":"Success","trade_no":"2026010222001400000000000001","out_trade_no":"0193A7C2E4F87B1D9C3E5A6B7C8D9E0F","total_amount":"0.01","gmt_payment":"2026-01-02 11:04:06"}"#));
    let paid = h.channel.pay_barcode(&barcode_request()).await.unwrap();
    assert!(matches!(
        paid.state,
        ChannelPayment::Succeeded { ref channel_trade_no, amount, paid_at: Some(_) }
            if channel_trade_no == "2026010222001400000000000001" && amount == cny(1)
    ));
    let params = h.last_request();
    assert_eq!(params["method"], "alipay.trade.pay");
    let b = biz(&params);
    assert_eq!(b["scene"], "bar_code");
    assert_eq!(b["auth_code"], ALIPAY_CODE);
    assert_eq!(b["total_amount"], "0.01");
    assert_eq!(b["out_trade_no"], "0193A7C2E4F87B1D9C3E5A6B7C8D9E0F");

    // The captured 10003, leading space in msg and all: the payer is confirming.
    h.reply(h.signed(m, r#"{"code":"10003","msg":" order success pay inprocess","buyer_pay_amount":"0.00","out_trade_no":"0193A7C2E4F87B1D9C3E5A6B7C8D9E0F","total_amount":"0.01","trade_no":"2026010222001400000000000001"}"#));
    assert_eq!(
        h.channel.pay_barcode(&barcode_request()).await.unwrap().state,
        ChannelPayment::Pending
    );

    // A definite refusal (the captured failure, zero amounts included) is declined.
    h.reply(h.signed(m, r#"{"code":"40004","msg":"Business Failed","sub_code":"ACQ.PAYMENT_AUTH_CODE_INVALID","sub_msg":"支付失败，获取顾客账户信息失败","buyer_pay_amount":"0.00","invoice_amount":"0.00","out_trade_no":"0193A7C2E4F87B1D9C3E5A6B7C8D9E0F","point_amount":"0.00","receipt_amount":"0.00"}"#));
    assert!(matches!(
        h.channel.pay_barcode(&barcode_request()).await,
        Err(ChannelError::Declined { code, .. }) if code == "ACQ.PAYMENT_AUTH_CODE_INVALID"
    ));

    // Unknown: a system error, a 20000, an unsigned answer.
    h.reply(
        h.signed(m, r#"{"code":"40004","msg":"Business Failed","sub_code":"ACQ.SYSTEM_ERROR"}"#),
    );
    assert_unknown(h.channel.pay_barcode(&barcode_request()).await, false);
    h.reply(h.signed(
        m,
        r#"{"code":"20000","msg":"Service Currently Unavailable","sub_code":"isp.unknow-error"}"#,
    ));
    assert_unknown(h.channel.pay_barcode(&barcode_request()).await, false);
    h.reply(r#"{"alipay_trade_pay_response":{"code":"10000","msg":"Success","trade_no":"1","total_amount":"0.01"}}"#.to_owned());
    assert_unknown(h.channel.pay_barcode(&barcode_request()).await, false);
}

#[tokio::test]
async fn a_malformed_code_is_refused_before_any_call() {
    let h = harness().await;
    for code in
        ["186012345678901234", "2860123456789", "28601234567890123x", "2860123456789012345678901"]
    {
        assert!(h.channel.check_auth_code(code).is_err(), "{code}");
        let req = CreatePayment { auth_code: Some(code.into()), ..barcode_request() };
        assert!(matches!(h.channel.pay_barcode(&req).await, Err(ChannelError::Invalid { .. })));
    }
    assert!(h.channel.check_auth_code(ALIPAY_CODE).is_ok());
    assert!(h.channel.check_auth_code("2501234567890123").is_ok());
    assert!(h.seen().is_empty());
}

#[tokio::test]
async fn barcode_cancel_reports_close_or_refund_and_retries_on_retry_flag() {
    let h = harness().await;
    let c = protocol::METHOD_CANCEL;
    h.reply(h.signed(c, r#"{"code":"10000","msg":"Success","out_trade_no":"0193A7C2E4F87B1D9C3E5A6B7C8D9E0F","retry_flag":"N","action":"close"}"#));
    assert_eq!(h.channel.cancel_barcode(&payment_ref()).await, Ok(BarcodeCancel::Closed));
    let params = h.last_request();
    assert_eq!(params["method"], "alipay.trade.cancel");
    assert_eq!(biz(&params)["out_trade_no"], "0193A7C2E4F87B1D9C3E5A6B7C8D9E0F");
    h.reply(h.signed(c, r#"{"code":"10000","msg":"Success","out_trade_no":"0193A7C2E4F87B1D9C3E5A6B7C8D9E0F","retry_flag":"N","action":"refund"}"#));
    assert_eq!(h.channel.cancel_barcode(&payment_ref()).await, Ok(BarcodeCancel::Refunded));
    h.reply(h.signed(c, r#"{"code":"40004","msg":"Business Failed","sub_code":"ACQ.SYSTEM_ERROR","retry_flag":"Y"}"#));
    assert_unknown(h.channel.cancel_barcode(&payment_ref()).await, false);
    h.reply(
        h.signed(c, r#"{"code":"40004","msg":"Business Failed","sub_code":"ACQ.TRADE_NOT_EXIST"}"#),
    );
    assert_eq!(h.channel.cancel_barcode(&payment_ref()).await, Ok(BarcodeCancel::Closed));
    h.reply_with(200, "", Some(Duration::from_millis(10)));
    assert_unknown(h.channel.cancel_barcode(&payment_ref()).await, false);
    // A signed answer for another trade is not this cancel's confirmation.
    h.reply(h.signed(c, r#"{"code":"10000","msg":"Success","out_trade_no":"OTHER","retry_flag":"N","action":"close"}"#));
    assert_unknown(h.channel.cancel_barcode(&payment_ref()).await, false);
}

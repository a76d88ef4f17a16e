//! Outcome mapping of `UnionpayChannel`, against a tiny UnionPay on 127.0.0.1 that returns
//! canned raw answers signed with a root -> intermediate -> signing chain made here.

#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use paymux_core::{
    ALREADY_PAID, BarcodeCancel, Channel, ChannelError, ChannelOrderNo, ChannelPayment,
    ChannelRefund, CreatePayment, Currency, InboundRequest, Money, Notification, PaymentAction,
    PaymentMethod, PaymentRef, RefundRequest,
};
use paymux_crypto::{Certificate, RsaPrivateKey};
use paymux_unionpay::protocol::{self, Fields};
use paymux_unionpay::{UnionpayAccountConfig, UnionpayChannel};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SerialNumber};
use serde_json::json;
use time::OffsetDateTime;
use time::macros::datetime;

const MER_ID: &str = "777290058167151";
const CERT_ID: u64 = 69_903_319_369;
/// 10:00 in Beijing.
const NOW: OffsetDateTime = datetime!(2026-11-29 02:00:00 UTC);
const UNIONPAY_CN: &str = "041@8310000000083040@中国银联股份有限公司@00016495";
const NOTIFY_URL: &str = "https://pay.example/callbacks/unionpay/acct_1";

/// A key that signs answers, and its certificate as `signPubKeyCert` carries it (CR LF, no
/// trailing newline).
struct Signer {
    key: RsaPrivateKey,
    cert: String,
}

struct Pki {
    root: String,
    intermediate: String,
    good: Signer,
    expired: Signer,
    stranger: Signer,
    not_unionpay: Signer,
    merchant_key: RsaPrivateKey,
    merchant_cert: String,
}

fn params(cn: &str, ca: bool, not_after: OffsetDateTime) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.not_before = datetime!(2026-01-01 00:00:00 UTC);
    p.not_after = not_after;
    if ca {
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    }
    p
}

fn rsa_pair() -> (RsaPrivateKey, KeyPair) {
    let key = RsaPrivateKey::generate().unwrap();
    let kp = KeyPair::from_pkcs8_pem_and_sign_algo(
        &key.to_pkcs8_pem().unwrap(),
        &rcgen::PKCS_RSA_SHA256,
    )
    .unwrap();
    (key, kp)
}

/// A CA pair: root and the intermediate it issued, as PEM, and the intermediate as an issuer.
fn ca(name: &str) -> (String, String, Issuer<'static, KeyPair>) {
    let far = datetime!(2036-01-01 00:00:00 UTC);
    let (_, root_key) = rsa_pair();
    let root_params = params(&format!("{name} Root"), true, far);
    let root = root_params.self_signed(&root_key).unwrap();
    let root_issuer = Issuer::new(root_params, root_key);
    let (_, mid_key) = rsa_pair();
    let mid_params = params(&format!("{name} OCA1"), true, far);
    let mid = mid_params.signed_by(&mid_key, &root_issuer).unwrap();
    (root.pem(), mid.pem(), Issuer::new(mid_params, mid_key))
}

fn signer(cn: &str, not_after: OffsetDateTime, issuer: &Issuer<'static, KeyPair>) -> Signer {
    let (key, kp) = rsa_pair();
    let pem = params(cn, false, not_after).signed_by(&kp, issuer).unwrap().pem();
    let cert = pem.trim_end().replace('\n', "\r\n");
    Signer { key, cert }
}

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let valid = datetime!(2027-06-01 00:00:00 UTC);
        let (root, intermediate, issuer) = ca("Test UnionPay");
        let (_, _, other_issuer) = ca("Stranger");
        let (merchant_key, kp) = rsa_pair();
        let mut mp = params("merchant", false, valid);
        mp.serial_number = Some(SerialNumber::from_slice(&CERT_ID.to_be_bytes()[3..]));
        let merchant_cert = mp.self_signed(&kp).unwrap().pem();
        Pki {
            good: signer(UNIONPAY_CN, valid, &issuer),
            expired: signer(UNIONPAY_CN, datetime!(2026-11-26 00:00:00 UTC), &issuer),
            stranger: signer(UNIONPAY_CN, valid, &other_issuer),
            not_unionpay: signer("041@8310000000083040@Somebody Else@00016495", valid, &issuer),
            root,
            intermediate,
            merchant_key,
            merchant_cert,
        }
    })
}

/// Fields signed as UnionPay signs an answer or notification.
fn signed_by(signer: &Signer, pairs: &[(&str, &str)]) -> Fields {
    let mut f: Fields = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    f.insert("merId".into(), MER_ID.into());
    f.insert("version".into(), "5.1.0".into());
    f.insert("encoding".into(), "UTF-8".into());
    f.insert("signMethod".into(), "01".into());
    f.insert("signPubKeyCert".into(), signer.cert.clone());
    let digest = protocol::sha256_hex(&protocol::string_to_verify(&f));
    f.insert("signature".into(), signer.key.sign_base64(digest.as_bytes()).unwrap());
    f
}

fn signed(pairs: &[(&str, &str)]) -> Fields {
    signed_by(&pki().good, pairs)
}

/// Signed, then one field changed.
fn forged(pairs: &[(&str, &str)], name: &str, value: &str) -> Fields {
    let mut f = signed(pairs);
    f.insert(name.into(), value.into());
    f
}

struct Reply {
    status: u16,
    body: String,
}

#[derive(Default)]
struct Gateway {
    replies: Mutex<VecDeque<Reply>>,
    seen: Mutex<Vec<(String, Fields)>>,
}

struct Harness {
    channel: UnionpayChannel,
    gateway: Arc<Gateway>,
}

impl Harness {
    /// Queues a raw answer, laid out as UnionPay lays it out (nothing encoded).
    fn answer(&self, fields: Fields) {
        let body = protocol::format_answer(&fields);
        self.gateway.replies.lock().unwrap().push_back(Reply { status: 200, body });
    }

    fn reply_status(&self, status: u16, body: &str) {
        let r = Reply { status, body: body.to_owned() };
        self.gateway.replies.lock().unwrap().push_back(r);
    }

    /// The path and fields of every request so far, each checked for our signature.
    fn seen(&self) -> Vec<(String, Fields)> {
        let seen = self.gateway.seen.lock().unwrap().clone();
        for (_, f) in &seen {
            verify_merchant_signature(f);
        }
        seen
    }

    fn last(&self) -> (String, Fields) {
        self.seen().pop().unwrap()
    }
}

fn verify_merchant_signature(f: &Fields) {
    assert_eq!(f["certId"], CERT_ID.to_string());
    assert_eq!(f["signMethod"], "01");
    assert!(f.values().all(|v| !v.is_empty()), "no empty field is ever sent");
    let digest = protocol::sha256_hex(&protocol::string_to_sign(f));
    pki().merchant_key.public_key().verify_base64(digest.as_bytes(), &f["signature"]).unwrap();
}

async fn handle(
    State(gw): State<Arc<Gateway>>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let ct = headers.get("content-type").unwrap().to_str().unwrap();
    assert!(ct.starts_with("application/x-www-form-urlencoded"), "{ct}");
    let fields = protocol::decode_form(&body).unwrap();
    gw.seen.lock().unwrap().push((format!("/gateway/api/{path}"), fields));
    let Some(reply) = gw.replies.lock().unwrap().pop_front() else {
        return (StatusCode::IM_A_TEAPOT, "no reply queued".into());
    };
    (StatusCode::from_u16(reply.status).unwrap(), reply.body)
}

fn config(gateway_url: String) -> UnionpayAccountConfig {
    let p = pki();
    UnionpayAccountConfig {
        mer_id: MER_ID.into(),
        gateway_url,
        merchant_private_key: p.merchant_key.to_pkcs8_pem().unwrap(),
        merchant_certificate: p.merchant_cert.clone(),
        root_certificate: p.root.clone(),
        intermediate_certificate: p.intermediate.clone(),
        signer_owner: protocol::UNIONPAY_OWNER.into(),
    }
}

async fn harness() -> Harness {
    let gateway = Arc::new(Gateway::default());
    let app = Router::new().route("/gateway/api/{path}", post(handle)).with_state(gateway.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let channel = UnionpayChannel::new(&config(format!("http://{addr}/")), Duration::from_secs(10))
        .unwrap()
        .with_clock(|| NOW);
    Harness { channel, gateway }
}

fn order_no() -> ChannelOrderNo {
    ChannelOrderNo::from_channel("0193A7C2E4F87B1D9C3E5A6B7C8D9E0F").unwrap()
}

fn refund_no(n: u8) -> ChannelOrderNo {
    ChannelOrderNo::from_channel(&format!("0193A7C2E4F87B1D9C3E5A6B7C8D9E{n:02}")).unwrap()
}

fn cny(fen: i64) -> Money {
    Money::new(fen, Currency::Cny).unwrap()
}

fn create_request(method: PaymentMethod) -> CreatePayment {
    CreatePayment {
        channel_order_no: order_no(),
        amount: cny(1234),
        subject: "测试 a+b & c".into(),
        method,
        created_at: NOW,
        expires_at: NOW + time::Duration::minutes(30),
        notify_url: NOTIFY_URL.into(),
        return_url: Some("https://shop.example/done?x=1&y=2".into()),
        client_ip: None,
        payer_openid: None,
        auth_code: None,
        hold: false,
    }
}

/// A paid payment created as a QR consume at `NOW`.
fn payment_ref() -> PaymentRef {
    PaymentRef {
        channel_order_no: order_no(),
        channel_trade_no: Some("782211290200000000001".into()),
        amount: cny(1234),
        created_at: NOW,
        expires_at: NOW + time::Duration::minutes(30),
        channel_data: json!({
            "txnTime": "20261129100000", "txnSubType": "07", "bizType": "000000",
            "channelType": "08"
        }),
    }
}

fn refund_request(n: u8, fen: i64, created_at: OffsetDateTime) -> RefundRequest {
    RefundRequest {
        payment: payment_ref(),
        channel_refund_no: refund_no(n),
        amount: cny(fen),
        reason: None,
        notify_url: NOTIFY_URL.into(),
        created_at,
    }
}

fn assert_unknown<T: std::fmt::Debug>(r: Result<T, ChannelError>) {
    assert!(matches!(r, Err(ChannelError::Unknown { timed_out: false, .. })), "{r:?}");
}

#[tokio::test]
async fn page_payment_is_a_signed_form_for_front_trans_req_with_no_server_call() {
    let h = harness().await;
    let created = h.channel.create(&create_request(PaymentMethod::Page)).await.unwrap();
    let PaymentAction::Form { method, url, fields } = created.action else { panic!() };
    assert_eq!(method, "POST");
    assert!(url.ends_with("/gateway/api/frontTransReq.do") && !url.contains("//gateway"), "{url}");
    verify_merchant_signature(&fields);
    for (k, v) in [
        ("version", "5.1.0"),
        ("encoding", "UTF-8"),
        ("txnType", "01"),
        ("txnSubType", "01"),
        ("bizType", "000201"),
        ("channelType", "07"),
        ("accessType", "0"),
        ("merId", MER_ID),
        ("orderId", "0193A7C2E4F87B1D9C3E5A6B7C8D9E0F"),
        ("txnTime", "20261129100000"),
        ("txnAmt", "1234"),
        ("currencyCode", "156"),
        ("payTimeout", "20261129103000"),
        ("frontUrl", "https://shop.example/done?x=1&y=2"),
        ("backUrl", NOTIFY_URL),
    ] {
        assert_eq!(fields[k], v, "{k}");
    }
    assert_eq!(created.channel_data["txnTime"], "20261129100000");
    assert_eq!(created.channel_data["bizType"], "000201");
    assert_eq!(created.channel_data["channelType"], "07");
    assert!(h.seen().is_empty());
}

#[tokio::test]
async fn wap_payment_is_the_same_form_on_the_mobile_channel() {
    let h = harness().await;
    let created = h.channel.create(&create_request(PaymentMethod::Wap)).await.unwrap();
    let PaymentAction::Form { fields, .. } = created.action else { panic!() };
    assert_eq!(fields["channelType"], "08");
    assert_eq!(fields["bizType"], "000201");
    assert_eq!(created.channel_data["channelType"], "08");
}

#[tokio::test]
async fn page_payment_without_a_return_url_or_with_a_bad_order_id_is_invalid() {
    let h = harness().await;
    let mut req = create_request(PaymentMethod::Page);
    req.return_url = None;
    assert!(matches!(h.channel.create(&req).await, Err(ChannelError::Invalid { .. })));
    let mut req = create_request(PaymentMethod::Qr);
    req.channel_order_no = ChannelOrderNo::from_channel("order-42_x").unwrap();
    assert!(matches!(h.channel.create(&req).await, Err(ChannelError::Invalid { .. })));
    assert!(!h.channel.supports(PaymentMethod::Jsapi));
    assert!(h.seen().is_empty());
}

#[tokio::test]
async fn app_payment_asks_app_trans_req_and_returns_the_tn() {
    let h = harness().await;
    h.answer(signed(&[
        ("respCode", "00"),
        ("respMsg", "成功[0000000]"),
        ("orderId", "0193A7C2E4F87B1D9C3E5A6B7C8D9E0F"),
        ("tn", "772211291000000000012"),
        ("reqReserved", "{a=1&b=2}"),
    ]));
    let created = h.channel.create(&create_request(PaymentMethod::App)).await.unwrap();
    assert_eq!(
        created.action,
        PaymentAction::Sdk { params: json!({ "tn": "772211291000000000012" }) }
    );
    let (path, f) = h.last();
    assert_eq!(path, "/gateway/api/appTransReq.do");
    assert_eq!((f["txnType"].as_str(), f["txnSubType"].as_str()), ("01", "01"));
    assert_eq!((f["bizType"].as_str(), f["channelType"].as_str()), ("000201", "08"));
    assert!(!f.contains_key("frontUrl"));
}

#[tokio::test]
async fn qr_payment_asks_back_trans_req_with_sub_type_07_and_returns_the_code() {
    let h = harness().await;
    h.answer(signed(&[("respCode", "00"), ("qrCode", "https://qr.95516.com/00010000/0123+/=")]));
    let created = h.channel.create(&create_request(PaymentMethod::Qr)).await.unwrap();
    assert_eq!(
        created.action,
        PaymentAction::QrCode { code_url: "https://qr.95516.com/00010000/0123+/=".into() }
    );
    let (path, f) = h.last();
    assert_eq!(path, "/gateway/api/backTransReq.do");
    assert_eq!((f["txnType"].as_str(), f["txnSubType"].as_str()), ("01", "07"));
    assert_eq!((f["bizType"].as_str(), f["channelType"].as_str()), ("000000", "08"));
    assert_eq!(created.channel_data["txnSubType"], "07");
}

#[tokio::test]
async fn create_answers_map_to_the_four_outcome_classes() {
    let h = harness().await;
    for code in ["03", "04", "05", "12"] {
        h.answer(signed(&[("respCode", code)]));
        assert_unknown(h.channel.create(&create_request(PaymentMethod::Qr)).await);
    }
    h.answer(signed(&[("respCode", "30"), ("respMsg", "交易未通过")]));
    let r = h.channel.create(&create_request(PaymentMethod::Qr)).await;
    assert!(matches!(r, Err(ChannelError::Declined { ref code, .. }) if code == "30"), "{r:?}");
    for code in ["10", "11", "31"] {
        h.answer(signed(&[("respCode", code)]));
        let r = h.channel.create(&create_request(PaymentMethod::Qr)).await;
        assert!(matches!(r, Err(ChannelError::Invalid { .. })), "{code}: {r:?}");
    }
    h.answer(signed(&[("respCode", "00")]));
    assert_unknown(h.channel.create(&create_request(PaymentMethod::Qr)).await);
}

#[tokio::test]
async fn a_forged_refusal_is_unknown_never_declined() {
    let h = harness().await;
    h.answer(forged(&[("respCode", "00"), ("qrCode", "https://qr.example/1")], "respCode", "30"));
    assert_unknown(h.channel.create(&create_request(PaymentMethod::Qr)).await);
    let mut unsigned = signed(&[("respCode", "30")]);
    unsigned.remove("signature");
    h.answer(unsigned);
    assert_unknown(h.channel.create(&create_request(PaymentMethod::Qr)).await);
}

#[tokio::test]
async fn answers_from_an_unknown_root_an_expired_or_a_foreign_certificate_are_unknown() {
    let h = harness().await;
    let p = pki();
    for s in [&p.stranger, &p.expired, &p.not_unionpay] {
        h.answer(signed_by(s, &[("respCode", "30")]));
        assert_unknown(h.channel.create(&create_request(PaymentMethod::Qr)).await);
        h.answer(signed_by(s, &[("respCode", "00"), ("origRespCode", "00")]));
        assert_unknown(h.channel.query(&payment_ref()).await);
    }
}

#[tokio::test]
async fn http_errors_and_unreadable_answers_are_unknown() {
    let h = harness().await;
    h.reply_status(500, "oops");
    assert_unknown(h.channel.query(&payment_ref()).await);
    h.reply_status(200, "");
    assert_unknown(h.channel.query(&payment_ref()).await);
    h.reply_status(200, "respCode=00&origRespCode={00");
    assert_unknown(h.channel.query(&payment_ref()).await);
}

#[tokio::test]
async fn query_sends_order_id_and_txn_time_and_reads_the_original_code() {
    let h = harness().await;
    h.answer(signed(&[
        ("respCode", "00"),
        ("origRespCode", "00"),
        ("orderId", "0193A7C2E4F87B1D9C3E5A6B7C8D9E0F"),
        ("queryId", "782211291000000000099"),
        ("txnAmt", "1234"),
        ("traceTime", "1129100130"),
        ("settleDate", "1129"),
    ]));
    let report = h.channel.query(&payment_ref()).await.unwrap();
    assert_eq!(
        report,
        ChannelPayment::Succeeded {
            channel_trade_no: "782211291000000000099".into(),
            amount: cny(1234),
            paid_at: Some(datetime!(2026-11-29 10:01:30 +8)),
        }
    );
    let (path, f) = h.last();
    assert_eq!(path, "/gateway/api/queryTrans.do");
    for (k, v) in [
        ("txnType", "00"),
        ("txnSubType", "00"),
        ("bizType", "000000"),
        ("orderId", "0193A7C2E4F87B1D9C3E5A6B7C8D9E0F"),
        ("txnTime", "20261129100000"),
    ] {
        assert_eq!(f[k], v, "{k}");
    }
}

#[tokio::test]
async fn query_a6_is_success_and_in_process_or_missing_orders_stay_pending() {
    let h = harness().await;
    h.answer(signed(&[
        ("respCode", "00"),
        ("origRespCode", "A6"),
        ("queryId", "q1"),
        ("txnAmt", "1234"),
    ]));
    let r = h.channel.query(&payment_ref()).await.unwrap();
    assert!(matches!(r, ChannelPayment::Succeeded { .. }), "{r:?}");
    for orig in ["03", "04", "05"] {
        h.answer(signed(&[("respCode", "00"), ("origRespCode", orig)]));
        assert_eq!(h.channel.query(&payment_ref()).await.unwrap(), ChannelPayment::Pending);
    }
    // The query itself "in process, ask again": the same not-yet, never failed.
    for code in ["03", "04", "05"] {
        h.answer(signed(&[("respCode", code)]));
        assert_eq!(h.channel.query(&payment_ref()).await.unwrap(), ChannelPayment::Pending);
    }
    h.answer(signed(&[("respCode", "34"), ("respMsg", "查无此交易")]));
    assert_eq!(h.channel.query(&payment_ref()).await.unwrap(), ChannelPayment::Pending);
}

#[tokio::test]
async fn a_query_that_itself_fails_is_unknown_and_a_refused_original_is_failed() {
    let h = harness().await;
    for code in ["10", "11", "37"] {
        h.answer(signed(&[("respCode", code)]));
        assert_unknown(h.channel.query(&payment_ref()).await);
    }
    h.answer(signed(&[("respCode", "00"), ("origRespCode", "61"), ("origRespMsg", "卡号无效")]));
    assert_eq!(
        h.channel.query(&payment_ref()).await.unwrap(),
        ChannelPayment::Failed { code: "61".into(), message: "卡号无效".into() }
    );
}

#[tokio::test]
async fn a_query_answer_for_another_order_is_unknown() {
    let h = harness().await;
    h.answer(signed(&[
        ("respCode", "00"),
        ("origRespCode", "00"),
        ("orderId", "ANOTHERORDER0001"),
        ("queryId", "q1"),
        ("txnAmt", "1234"),
    ]));
    assert_unknown(h.channel.query(&payment_ref()).await);
}

#[tokio::test]
async fn close_is_a_query_paid_is_already_paid_and_in_process_is_unknown() {
    let h = harness().await;
    h.answer(signed(&[("respCode", "34")]));
    h.channel.close(&payment_ref()).await.unwrap();
    h.answer(signed(&[("respCode", "00"), ("origRespCode", "61")]));
    h.channel.close(&payment_ref()).await.unwrap();
    h.answer(signed(&[("respCode", "00"), ("origRespCode", "05")]));
    assert_unknown(h.channel.close(&payment_ref()).await);
    h.answer(signed(&[
        ("respCode", "00"),
        ("origRespCode", "00"),
        ("queryId", "q1"),
        ("txnAmt", "1234"),
    ]));
    let r = h.channel.close(&payment_ref()).await;
    assert!(matches!(r, Err(ChannelError::Declined { ref code, .. }) if code == ALREADY_PAID));
    assert!(h.seen().iter().all(|(path, _)| path == "/gateway/api/queryTrans.do"));
}

#[tokio::test]
async fn partial_and_repeated_refunds_are_txn_type_04_on_the_original_biz_and_channel() {
    let h = harness().await;
    for (n, fen) in [(1, 234), (2, 1000)] {
        h.answer(signed(&[("respCode", "00"), ("queryId", "r-query")]));
        let r = h.channel.refund(&refund_request(n, fen, NOW + time::Duration::minutes(5))).await;
        assert_eq!(
            r.unwrap(),
            ChannelRefund::Pending { channel_refund_id: Some("r-query".into()) }
        );
        let (path, f) = h.last();
        assert_eq!(path, "/gateway/api/backTransReq.do");
        for (k, v) in [
            ("txnType", "04"),
            ("txnSubType", "00"),
            ("bizType", "000000"),
            ("channelType", "08"),
            ("orderId", refund_no(n).as_str()),
            ("txnTime", "20261129100500"),
            ("txnAmt", fen.to_string().as_str()),
            ("origQryId", "782211290200000000001"),
            ("backUrl", NOTIFY_URL),
            ("reqReserved", "0193A7C2E4F87B1D9C3E5A6B7C8D9E0F"),
        ] {
            assert_eq!(f[k], v, "{k}");
        }
    }
}

#[tokio::test]
async fn a_full_refund_on_the_payment_day_is_a_consume_cancel() {
    let h = harness().await;
    h.answer(signed(&[("respCode", "00")]));
    let same_day = NOW + time::Duration::hours(2);
    h.channel.refund(&refund_request(1, 1234, same_day)).await.unwrap();
    let (_, f) = h.last();
    assert_eq!((f["txnType"].as_str(), f["txnAmt"].as_str()), ("31", "1234"));
    assert_eq!((f["bizType"].as_str(), f["channelType"].as_str()), ("000000", "08"));
    // After 22:00 Beijing, or the next day, a full refund is a refund.
    for at in [datetime!(2026-11-29 14:30:00 UTC), datetime!(2026-11-30 01:00:00 UTC)] {
        h.answer(signed(&[("respCode", "00")]));
        h.channel.refund(&refund_request(2, 1234, at)).await.unwrap();
        assert_eq!(h.last().1["txnType"], "04");
    }
}

#[tokio::test]
async fn refund_answers_map_to_the_four_outcome_classes() {
    let h = harness().await;
    let req = refund_request(1, 100, NOW);
    for code in ["03", "04", "05", "12"] {
        h.answer(signed(&[("respCode", code)]));
        assert_unknown(h.channel.refund(&req).await);
    }
    h.answer(signed(&[("respCode", "35"), ("respMsg", "原交易不存在或状态不正确")]));
    let r = h.channel.refund(&req).await;
    assert!(matches!(r, Err(ChannelError::Declined { ref code, .. }) if code == "35"), "{r:?}");
    h.answer(forged(&[("respCode", "00")], "respCode", "35"));
    assert_unknown(h.channel.refund(&req).await);
    let mut unpaid = req.clone();
    unpaid.payment.channel_trade_no = None;
    assert!(matches!(h.channel.refund(&unpaid).await, Err(ChannelError::Invalid { .. })));
}

#[tokio::test]
async fn refund_query_uses_the_refunds_order_id_and_txn_time() {
    let h = harness().await;
    let req = refund_request(3, 200, NOW + time::Duration::minutes(7));
    h.answer(signed(&[
        ("respCode", "00"),
        ("origRespCode", "00"),
        ("queryId", "r-q"),
        ("txnAmt", "200"),
        ("traceTime", "1129100800"),
    ]));
    assert_eq!(
        h.channel.query_refund(&req).await.unwrap(),
        ChannelRefund::Succeeded {
            channel_refund_id: Some("r-q".into()),
            succeeded_at: Some(datetime!(2026-11-29 10:08:00 +8)),
            amount: Some(cny(200)),
            refunded_total: None,
        }
    );
    let (_, f) = h.last();
    assert_eq!(
        (f["orderId"].as_str(), f["txnTime"].as_str()),
        (refund_no(3).as_str(), "20261129100700")
    );
    h.answer(signed(&[("respCode", "34")]));
    assert_eq!(
        h.channel.query_refund(&req).await.unwrap(),
        ChannelRefund::Pending { channel_refund_id: None }
    );
    h.answer(signed(&[("respCode", "00"), ("origRespCode", "04")]));
    assert_eq!(
        h.channel.query_refund(&req).await.unwrap(),
        ChannelRefund::Pending { channel_refund_id: None }
    );
    h.answer(signed(&[("respCode", "00"), ("origRespCode", "35"), ("origRespMsg", "no")]));
    assert_eq!(
        h.channel.query_refund(&req).await.unwrap(),
        ChannelRefund::Failed { code: "35".into(), message: "no".into() }
    );
}

fn inbound(fields: &Fields) -> InboundRequest {
    InboundRequest {
        method: "POST".into(),
        path: "/callbacks/unionpay/acct_1".into(),
        query: None,
        headers: vec![("content-type".into(), "application/x-www-form-urlencoded".into())],
        body: protocol::encode_form(fields).into_bytes(),
    }
}

fn paid_notification(amount: &str) -> Vec<(&'static str, String)> {
    vec![
        ("txnType", "01".into()),
        ("txnSubType", "01".into()),
        ("bizType", "000201".into()),
        ("orderId", "0193A7C2E4F87B1D9C3E5A6B7C8D9E0F".into()),
        ("txnTime", "20261129100000".into()),
        ("txnAmt", amount.into()),
        ("currencyCode", "156".into()),
        ("respCode", "00".into()),
        ("respMsg", "success".into()),
        ("queryId", "782211291000000000099".into()),
        ("traceTime", "1129100130".into()),
        ("settleDate", "1129".into()),
        ("accNo", "ORRSXWY1kMr8+/=".into()),
    ]
}

fn as_pairs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[tokio::test]
async fn a_paid_notification_reports_the_amount_for_the_gateway_to_check() {
    let h = harness().await;
    for amount in ["1234", "1"] {
        let n = h
            .channel
            .parse_notification(&inbound(&signed(&as_pairs(&paid_notification(amount)))))
            .await
            .unwrap();
        assert_eq!(
            n,
            Notification::Payment {
                notify_id: None,
                channel_order_no: order_no(),
                state: ChannelPayment::Succeeded {
                    channel_trade_no: "782211291000000000099".into(),
                    amount: cny(amount.parse().unwrap()),
                    paid_at: Some(datetime!(2026-11-29 10:01:30 +8)),
                },
            }
        );
    }
    let ok = h.channel.ack(true);
    assert_eq!((ok.status, ok.body.as_slice()), (200, b"ok".as_slice()));
    assert_ne!(h.channel.ack(false).status, 200);
}

#[tokio::test]
async fn a_notification_that_does_not_verify_or_is_not_ours_is_unverified() {
    let h = harness().await;
    let p = pki();
    let pairs = paid_notification("1234");
    let pairs = as_pairs(&pairs);
    let mut cases = vec![
        forged(&pairs, "txnAmt", "1"),
        signed_by(&p.stranger, &pairs),
        signed_by(&p.expired, &pairs),
        signed_by(&p.not_unionpay, &pairs),
    ];
    let mut other_merchant = signed(&pairs);
    other_merchant.insert("merId".into(), "777290058100000".into());
    let digest = protocol::sha256_hex(&protocol::string_to_verify(&other_merchant));
    other_merchant.insert("signature".into(), p.good.key.sign_base64(digest.as_bytes()).unwrap());
    cases.push(other_merchant);
    for fields in cases {
        let r = h.channel.parse_notification(&inbound(&fields)).await;
        assert!(matches!(r, Err(ChannelError::Unverified { .. })), "{r:?}");
    }
    let mut raw = inbound(&signed(&pairs));
    raw.body = b"not a form &&&==".to_vec();
    let r = h.channel.parse_notification(&raw).await;
    assert!(matches!(r, Err(ChannelError::Unverified { .. })), "{r:?}");
}

#[tokio::test]
async fn an_unsuccessful_notification_leaves_the_payment_to_a_query() {
    let h = harness().await;
    let mut pairs = paid_notification("1234");
    pairs.retain(|(k, _)| *k != "respCode");
    pairs.push(("respCode", "61".into()));
    let n = h.channel.parse_notification(&inbound(&signed(&as_pairs(&pairs)))).await.unwrap();
    assert!(matches!(n, Notification::Payment { state: ChannelPayment::Pending, .. }), "{n:?}");
}

#[tokio::test]
async fn refund_and_cancel_notifications_find_their_payment_through_req_reserved() {
    let h = harness().await;
    for txn_type in ["04", "31"] {
        let refund = refund_no(1);
        let pairs = [
            ("txnType", txn_type),
            ("txnSubType", "00"),
            ("orderId", refund.as_str()),
            ("txnTime", "20261129100500"),
            ("txnAmt", "234"),
            ("currencyCode", "156"),
            ("respCode", "00"),
            ("queryId", "r-query"),
            ("origQryId", "782211290200000000001"),
            ("reqReserved", "0193A7C2E4F87B1D9C3E5A6B7C8D9E0F"),
            ("traceTime", "1129100510"),
        ];
        let n = h.channel.parse_notification(&inbound(&signed(&pairs))).await.unwrap();
        assert_eq!(
            n,
            Notification::Refund {
                notify_id: None,
                channel_order_no: order_no(),
                channel_refund_no: refund.clone(),
                state: ChannelRefund::Succeeded {
                    channel_refund_id: Some("r-query".into()),
                    succeeded_at: Some(datetime!(2026-11-29 10:05:10 +8)),
                    amount: Some(cny(234)),
                    refunded_total: None,
                },
            }
        );
        let without: Vec<_> = pairs.into_iter().filter(|(k, _)| *k != "reqReserved").collect();
        let r = h.channel.parse_notification(&inbound(&signed(&without))).await;
        assert!(matches!(r, Err(ChannelError::Unverified { .. })), "{r:?}");
    }
}

#[test]
fn a_misconfigured_account_is_invalid() {
    let good = config("http://127.0.0.1:1".into());
    assert!(UnionpayChannel::new(&good, Duration::from_secs(1)).is_ok());
    let mut c = good.clone();
    c.mer_id = "12345".into();
    assert!(matches!(
        UnionpayChannel::new(&c, Duration::from_secs(1)),
        Err(ChannelError::Invalid { .. })
    ));
    let mut c = good.clone();
    c.merchant_private_key = pki().good.key.to_pkcs8_pem().unwrap();
    assert!(matches!(
        UnionpayChannel::new(&c, Duration::from_secs(1)),
        Err(ChannelError::Invalid { .. })
    ));
    let mut c = good;
    c.gateway_url = "ftp://gateway.test.95516.com".into();
    assert!(matches!(
        UnionpayChannel::new(&c, Duration::from_secs(1)),
        Err(ChannelError::Invalid { .. })
    ));
    let cert = Certificate::from_pem(&pki().merchant_cert).unwrap();
    assert_eq!(cert.serial_decimal(), CERT_ID.to_string());
}

const PAYER_CODE: &str = "6225880000000000001";

fn barcode_request() -> CreatePayment {
    CreatePayment {
        auth_code: Some(PAYER_CODE.into()),
        return_url: None,
        ..create_request(PaymentMethod::Barcode)
    }
}

#[tokio::test]
async fn barcode_consume_is_01_06_with_qr_no_and_its_acceptance_is_pending() {
    let h = harness().await;
    assert!(h.channel.supports(PaymentMethod::Barcode));
    h.answer(signed(&[("respCode", "00"), ("respMsg", "成功[0000000]")]));
    let paid = h.channel.pay_barcode(&barcode_request()).await.unwrap();
    assert_eq!(paid.state, ChannelPayment::Pending, "UnionPay's answer only accepts");
    let (path, f) = h.last();
    assert_eq!(path, "/gateway/api/backTransReq.do");
    verify_merchant_signature(&f);
    assert_eq!((f["txnType"].as_str(), f["txnSubType"].as_str()), ("01", "06"));
    assert_eq!((f["bizType"].as_str(), f["channelType"].as_str()), ("000000", "08"));
    assert_eq!(f["qrNo"], PAYER_CODE);
    assert_eq!(f["txnAmt"], "1234");
    assert_eq!(f["backUrl"], NOTIFY_URL);
    assert_eq!(paid.channel_data["txnTime"], f["txnTime"].as_str());
    assert_eq!(paid.channel_data["txnSubType"], "06");

    for code in ["03", "04", "05"] {
        h.answer(signed(&[("respCode", code)]));
        assert_unknown(h.channel.pay_barcode(&barcode_request()).await);
    }
    h.answer(signed(&[("respCode", "30"), ("respMsg", "交易未通过")]));
    let r = h.channel.pay_barcode(&barcode_request()).await;
    assert!(matches!(r, Err(ChannelError::Declined { ref code, .. }) if code == "30"), "{r:?}");
    h.answer(forged(&[("respCode", "00")], "respCode", "30"));
    assert_unknown(h.channel.pay_barcode(&barcode_request()).await);
}

#[tokio::test]
async fn a_malformed_payer_code_is_refused_before_any_call() {
    let h = harness().await;
    for code in ["", "123456789012345678901", "62258800000000x0001"] {
        assert!(h.channel.check_auth_code(code).is_err(), "{code:?}");
        let req = CreatePayment { auth_code: Some(code.into()), ..barcode_request() };
        assert!(matches!(h.channel.pay_barcode(&req).await, Err(ChannelError::Invalid { .. })));
    }
    assert!(h.channel.check_auth_code(PAYER_CODE).is_ok());
    assert!(h.seen().is_empty());
}

#[tokio::test]
async fn reversal_is_99_01_on_the_original_order_id_and_txn_time() {
    let h = harness().await;
    h.answer(signed(&[("respCode", "00")]));
    assert_eq!(h.channel.cancel_barcode(&payment_ref()).await, Ok(BarcodeCancel::Closed));
    let (path, f) = h.last();
    assert_eq!(path, "/gateway/api/backTransReq.do");
    verify_merchant_signature(&f);
    assert_eq!((f["txnType"].as_str(), f["txnSubType"].as_str()), ("99", "01"));
    assert_eq!(f["orderId"], order_no().as_str());
    assert_eq!(f["txnTime"], "20261129100000");
    for code in ["03", "04", "05"] {
        h.answer(signed(&[("respCode", code)]));
        assert_unknown(h.channel.cancel_barcode(&payment_ref()).await);
    }
    h.reply_status(500, "");
    assert_unknown(h.channel.cancel_barcode(&payment_ref()).await);
}

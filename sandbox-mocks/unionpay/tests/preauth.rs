//! The preauthorisation family (02 preauth, 03 completion, 32 preauth undo, 33 completion undo)
//! over real loopback sockets, driven by a small ACP merchant written here from the protocol
//! notes: it signs its requests (signMethod 01), parses raw `k=v&` answers without URL-decoding
//! them, and verifies every answer and notification by the chain.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use paymux_crypto::{RsaPrivateKey, sha256_hex};
use paymux_mock_unionpay::{
    Faults, UnionpayKeys, UnionpayMerchant, UnionpayMock, UnionpayMockConfig, keys,
};
use serde_json::Value;
use time::OffsetDateTime;
use time::macros::{format_description, offset};
use x509_parser::prelude::{FromDer, X509Certificate};

type Fields = BTreeMap<String, String>;

const MER_ID: &str = "777290058110048";
const SHOP: &str = "Paymux Test Shop";
const OWNER: &str = "中国银联股份有限公司";

/// The merchant's notification endpoint: answers 500 to the first `refuse` posts, then 200,
/// and keeps every post it received.
#[derive(Default)]
struct Receiver {
    refuse: Mutex<usize>,
    received: Mutex<Vec<Fields>>,
}

async fn receive(State(r): State<Arc<Receiver>>, body: Bytes) -> StatusCode {
    let fields: Fields = form_urlencoded::parse(&body).into_owned().collect();
    r.received.lock().unwrap().push(fields);
    let mut refuse = r.refuse.lock().unwrap();
    if *refuse > 0 {
        *refuse -= 1;
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    }
}

struct Sandbox {
    base: String,
    notify_url: String,
    mock: UnionpayMock,
    keys: UnionpayKeys,
    merchant_key: RsaPrivateKey,
    cert_id: String,
    receiver: Arc<Receiver>,
    http: reqwest::Client,
}

async fn start() -> Sandbox {
    let (mock_keys, merchant) = keys::generate(MER_ID).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let mut config = UnionpayMockConfig::new(base.clone());
    config.notify_delays = vec![Duration::from_millis(50); 4];
    let mock = UnionpayMock::new(config, mock_keys.clone());
    mock.register_merchant(
        UnionpayMerchant::with_certificate(MER_ID, SHOP, &merchant.certificate_pem).unwrap(),
    );
    let (addr, _task) = mock.start(listener).unwrap();
    assert_eq!(format!("http://{addr}"), base);

    let receiver = Arc::new(Receiver::default());
    let app = axum::Router::new().route("/notify", post(receive)).with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let notify_url = format!("http://{}/notify", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let http =
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    Sandbox {
        base,
        notify_url,
        mock,
        keys: mock_keys,
        merchant_key: merchant.private_key,
        cert_id: merchant.cert_id,
        receiver,
        http,
    }
}

fn now_compact() -> String {
    OffsetDateTime::now_utc()
        .to_offset(offset!(+8))
        .format(format_description!("[year][month][day][hour][minute][second]"))
        .unwrap()
}

fn order_id(tag: &str) -> String {
    format!("{tag}{}", paymux_crypto::random_alphanumeric(16))
}

/// The merchant's side of the signature: non-empty fields but `signature`, sorted, raw;
/// SHA-256 hex; SHA256withRSA over the hex.
fn sign(mut fields: Fields, key: &RsaPrivateKey, cert_id: &str) -> Fields {
    fields.insert("certId".into(), cert_id.into());
    fields.insert("signMethod".into(), "01".into());
    let string = fields
        .iter()
        .filter(|(k, v)| !v.is_empty() && k.as_str() != "signature")
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let signature = key.sign_base64(sha256_hex(string.as_bytes()).as_bytes()).unwrap();
    fields.insert("signature".into(), signature);
    fields
}

/// Splits a raw answer on `&` outside braces and brackets, key from value at the first `=`;
/// never URL-decodes.
fn parse_raw(body: &str) -> Fields {
    let mut fields = Fields::new();
    let mut depth = 0i32;
    let mut start = 0;
    let bytes = body.as_bytes();
    for i in 0..=bytes.len() {
        let end = i == bytes.len();
        if !end {
            match bytes[i] {
                b'{' | b'[' => depth += 1,
                b'}' | b']' => depth -= 1,
                _ => {}
            }
        }
        if end || (bytes[i] == b'&' && depth == 0) {
            let pair = &body[start..i];
            if let Some((k, v)) = pair.split_once('=') {
                fields.insert(k.to_owned(), v.to_owned());
            }
            start = i + 1;
        }
    }
    fields
}

fn cert_der(pem: &str) -> Vec<u8> {
    paymux_crypto::pem_sections(pem.as_bytes()).unwrap().remove(0).1
}

impl Sandbox {
    /// Verifies an answer or notification as a merchant must: every field but `signature`,
    /// empty ones included; `signPubKeyCert` chained to the configured intermediate and root,
    /// valid now, CN owned by UnionPay.
    fn verified(&self, fields: &Fields) -> bool {
        let Some(cert_pem) = fields.get("signPubKeyCert") else { return false };
        let Some(signature) = fields.get("signature") else { return false };
        let leaf_der = cert_der(cert_pem);
        let mid_der = cert_der(self.keys.intermediate_certificate_pem());
        let root_der = cert_der(self.keys.root_certificate_pem());
        let (_, leaf) = X509Certificate::from_der(&leaf_der).unwrap();
        let (_, mid) = X509Certificate::from_der(&mid_der).unwrap();
        let (_, root) = X509Certificate::from_der(&root_der).unwrap();
        let chained = leaf.verify_signature(Some(mid.public_key())).is_ok()
            && mid.verify_signature(Some(root.public_key())).is_ok()
            && leaf.validity().is_valid()
            && mid.validity().is_valid();
        let owned = leaf
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .is_some_and(|cn| cn.split('@').nth(2) == Some(OWNER));
        let string = fields
            .iter()
            .filter(|(k, _)| k.as_str() != "signature")
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&");
        let key = paymux_crypto::RsaPublicKey::from_der(leaf.public_key().raw).unwrap();
        let signed = key.verify_base64(sha256_hex(string.as_bytes()).as_bytes(), signature).is_ok();
        chained && owned && signed
    }

    fn consume_fields(&self, order_id: &str, txn_time: &str, amount: &str, sub: &str) -> Fields {
        let mut fields = Fields::new();
        for (k, v) in [
            ("version", "5.1.0"),
            ("encoding", "UTF-8"),
            ("txnType", "01"),
            ("txnSubType", sub),
            ("bizType", if sub == "07" { "000000" } else { "000201" }),
            ("channelType", if sub == "07" { "08" } else { "07" }),
            ("accessType", "0"),
            ("merId", MER_ID),
            ("orderId", order_id),
            ("txnTime", txn_time),
            ("txnAmt", amount),
            ("currencyCode", "156"),
            ("backUrl", &self.notify_url),
            ("reqReserved", "{a=1&b=2}"),
        ] {
            fields.insert(k.into(), v.into());
        }
        fields
    }

    async fn post(&self, path: &str, fields: &Fields) -> reqwest::Response {
        let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish();
        self.http
            .post(format!("{}/gateway/api/{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// Posts signed `fields`; the answer must be HTTP 200, raw, and verify by the chain.
    async fn call(&self, path: &str, fields: Fields) -> Fields {
        let signed = sign(fields, &self.merchant_key, &self.cert_id);
        let response = self.post(path, &signed).await;
        assert_eq!(response.status(), 200);
        let answer = parse_raw(&response.text().await.unwrap());
        assert!(self.verified(&answer), "the answer verifies by the chain: {answer:?}");
        answer
    }

    async fn query(&self, order_id: &str, txn_time: &str) -> Fields {
        let mut fields = Fields::new();
        for (k, v) in [
            ("version", "5.1.0"),
            ("encoding", "UTF-8"),
            ("txnType", "00"),
            ("txnSubType", "00"),
            ("bizType", "000000"),
            ("accessType", "0"),
            ("merId", MER_ID),
            ("orderId", order_id),
            ("txnTime", txn_time),
        ] {
            fields.insert(k.into(), v.into());
        }
        self.call("queryTrans.do", fields).await
    }

    async fn control(&self, order_id: &str, action: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/_sandbox/orders/{order_id}/{action}", self.base))
            .send()
            .await
            .unwrap()
    }

    async fn order(&self, order_id: &str) -> Value {
        let url = format!("{}/_sandbox/orders/{order_id}", self.base);
        self.http.get(url).send().await.unwrap().json().await.unwrap()
    }

    /// Waits (with a deadline) until a back notification for `order_id` has been received.
    async fn notification_for(&self, order_id: &str, count: usize) -> Vec<Fields> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let got: Vec<Fields> = self
                .receiver
                .received
                .lock()
                .unwrap()
                .iter()
                .filter(|f| f.get("orderId").map(String::as_str) == Some(order_id))
                .cloned()
                .collect();
            if got.len() >= count {
                return got;
            }
            assert!(Instant::now() < deadline, "no notification for {order_id}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn take_back_fields(
        &self,
        txn_type: &str,
        orig: &str,
        amount: &str,
    ) -> (String, String, Fields) {
        let (id, time) = (order_id("R"), now_compact());
        let mut fields = Fields::new();
        for (k, v) in [
            ("version", "5.1.0"),
            ("encoding", "UTF-8"),
            ("txnType", txn_type),
            ("txnSubType", "00"),
            ("bizType", "000201"),
            ("channelType", "07"),
            ("accessType", "0"),
            ("merId", MER_ID),
            ("orderId", &id),
            ("txnTime", &time),
            ("txnAmt", amount),
            ("currencyCode", "156"),
            ("origQryId", orig),
            ("backUrl", &self.notify_url),
        ] {
            fields.insert(k.into(), v.into());
        }
        (id, time, fields)
    }
}

impl Sandbox {
    /// A preauth (02/01) through the app, paid at the bank page and notified:
    /// (orderId, txnTime, queryId).
    async fn held(&self, amount: &str) -> (String, String, String) {
        let (id, time) = (order_id("PA"), now_compact());
        let mut fields = self.consume_fields(&id, &time, amount, "01");
        fields.insert("txnType".into(), "02".into());
        let answer = self.call("appTransReq.do", fields).await;
        assert_eq!(answer["respCode"], "00", "{answer:?}");
        assert!(!answer["tn"].is_empty());
        assert_eq!(self.control(&id, "pay").await.status(), 200);
        let note = &self.notification_for(&id, 1).await[0];
        assert!(self.verified(note));
        assert_eq!((note["txnType"].as_str(), note["txnAmt"].as_str()), ("02", amount));
        let query = self.query(&id, &time).await;
        assert_eq!((query["origRespCode"].as_str(), query["txnType"].as_str()), ("00", "02"));
        (id, time, query["queryId"].clone())
    }

    /// A back transaction of `txn_type` naming `orig`: its orderId, txnTime and the answer.
    async fn step(&self, txn_type: &str, orig: &str, amount: &str) -> (String, String, Fields) {
        let (id, time, fields) = self.take_back_fields(txn_type, orig, amount);
        let answer = self.call("backTransReq.do", fields).await;
        (id, time, answer)
    }

    async fn preauths(&self) -> Value {
        let url = format!("{}/_sandbox/preauth", self.base);
        self.http.get(url).send().await.unwrap().json().await.unwrap()
    }

    async fn settings(&self, settings: serde_json::Value) {
        let url = format!("{}/_sandbox/preauth/settings", self.base);
        let res = self.http.post(url).json(&settings).send().await.unwrap();
        assert_eq!(res.status(), 200);
    }
}

#[tokio::test]
async fn a_preauth_holds_and_its_completion_captures_up_to_115_percent() {
    let s = start().await;
    let (pre_id, _, pre_qid) = s.held("1000").await;
    let state = s.preauths().await;
    assert_eq!(state["merchants"][MER_ID]["held"], 1000);
    assert_eq!(state["preauths"][0]["state"], "held");
    // A preauth is not a consume: no refund or consume cancel.
    assert_eq!(s.step("04", &pre_qid, "100").await.2["respCode"], "35");
    assert_eq!(s.step("31", &pre_qid, "1000").await.2["respCode"], "35");

    assert_eq!(s.step("03", &pre_qid, "1151").await.2["respCode"], "36", "over 115 %");
    let (done_id, done_time, answer) = s.step("03", &pre_qid, "1150").await;
    assert_eq!(answer["respCode"], "00");
    assert_eq!(answer["origQryId"], pre_qid);
    let completion_qid = answer["queryId"].clone();
    let note = &s.notification_for(&done_id, 1).await[0];
    assert!(s.verified(note));
    assert_eq!((note["txnType"].as_str(), note["txnAmt"].as_str()), ("03", "1150"));
    assert_eq!(note["origQryId"], pre_qid);
    assert_eq!(note["queryId"], completion_qid);
    let query = s.query(&done_id, &done_time).await;
    assert_eq!((query["respCode"].as_str(), query["origRespCode"].as_str()), ("00", "00"));

    assert_eq!(s.step("03", &pre_qid, "10").await.2["respCode"], "35", "completed once");
    assert_eq!(s.step("32", &pre_qid, "1000").await.2["respCode"], "35", "completed: no undo");
    let state = s.preauths().await;
    assert_eq!(state["preauths"][0]["state"], "completed");
    assert_eq!(state["merchants"][MER_ID]["captured"], 1150);
    assert_eq!(state["merchants"][MER_ID]["held"], 0);
    let url = format!("{}/_sandbox/receivers/{MER_ID}", s.base);
    let receiver: Value = s.http.get(url).send().await.unwrap().json().await.unwrap();
    assert_eq!(
        (receiver["held"].as_i64(), receiver["balance_fen"].as_i64()),
        (Some(0), Some(1150))
    );

    // A completion is refunded like a consume (04).
    let (refund_id, _, answer) = s.step("04", &completion_qid, "150").await;
    assert_eq!(answer["respCode"], "00");
    assert_eq!(s.notification_for(&refund_id, 1).await[0]["txnType"], "04");
    assert_eq!(s.preauths().await["merchants"][MER_ID]["captured"], 1000);
    let order = s.order(&pre_id).await;
    assert_eq!(order["refunds"].as_array().unwrap().len(), 1, "the completion, under its preauth");
}

#[tokio::test]
async fn an_undo_releases_the_whole_hold_and_a_completion_undo_reopens_the_preauth() {
    let s = start().await;
    let (_, _, first) = s.held("500").await;
    assert_eq!(s.step("32", &first, "400").await.2["respCode"], "36", "the full amount only");
    let (undo_id, _, answer) = s.step("32", &first, "500").await;
    assert_eq!(answer["respCode"], "00");
    let note = &s.notification_for(&undo_id, 1).await[0];
    assert!(s.verified(note));
    assert_eq!((note["txnType"].as_str(), note["origQryId"].as_str()), ("32", first.as_str()));
    assert_eq!(
        s.step("03", &first, "500").await.2["respCode"],
        "35",
        "undone: nothing to complete"
    );
    assert_eq!(s.step("32", &first, "500").await.2["respCode"], "35");

    let (_, _, second) = s.held("800").await;
    let (_, _, answer) = s.step("03", &second, "800").await;
    let completion = answer["queryId"].clone();
    assert_eq!(s.step("33", &completion, "700").await.2["respCode"], "36", "the full amount only");
    let (cu_id, _, answer) = s.step("33", &completion, "800").await;
    assert_eq!(answer["respCode"], "00");
    assert_eq!(s.notification_for(&cu_id, 1).await[0]["txnType"], "33");
    assert_eq!(s.step("04", &completion, "1").await.2["respCode"], "35", "an undone completion");

    let state = s.preauths().await;
    let states: Vec<&str> = state["preauths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["state"].as_str().unwrap())
        .collect();
    assert!(states.contains(&"undone") && states.contains(&"held"), "{states:?}");
    assert_eq!(state["merchants"][MER_ID]["held"], 800);
    // The reopened preauth completes again.
    assert_eq!(s.step("03", &second, "600").await.2["respCode"], "00");
    assert_eq!(s.preauths().await["merchants"][MER_ID]["captured"], 600);
}

#[tokio::test]
async fn a_completion_in_process_queries_05_until_it_succeeds_and_expired_preauths_refuse() {
    let s = start().await;
    s.settings(serde_json::json!({"completion_delay_ms": 300})).await;
    let (_, _, pre) = s.held("300").await;
    let (id, time, answer) = s.step("03", &pre, "300").await;
    assert_eq!(answer["respCode"], "00", "accepted");
    let query = s.query(&id, &time).await;
    assert_eq!((query["respCode"].as_str(), query["origRespCode"].as_str()), ("00", "05"));
    assert_eq!(s.preauths().await["preauths"][0]["state"], "completing");
    let note = &s.notification_for(&id, 1).await[0];
    assert_eq!((note["txnType"].as_str(), note["respCode"].as_str()), ("03", "00"));
    let query = s.query(&id, &time).await;
    assert_eq!(query["origRespCode"], "00");

    // The in-process fault: the step is done, the answer says 05.
    s.mock.set_faults(Faults {
        in_process_after_commit: vec!["preauth".into()],
        ..Faults::default()
    });
    let (_, _, other) = s.held("200").await;
    let (undo_id, undo_time, answer) = s.step("32", &other, "200").await;
    assert_eq!(answer["respCode"], "05");
    assert_eq!(s.query(&undo_id, &undo_time).await["origRespCode"], "00");
    s.mock.set_faults(Faults::default());

    // Past the validity period a preauth can be neither completed nor undone.
    s.settings(serde_json::json!({"valid_seconds": 0})).await;
    let (_, _, late) = s.held("100").await;
    let (_, _, answer) = s.step("03", &late, "100").await;
    assert_eq!((answer["respCode"].as_str(), answer["respMsg"].as_str()), ("35", "原预授权已过期"));
    assert_eq!(s.step("32", &late, "100").await.2["respCode"], "35");
}

#[tokio::test]
async fn a_completion_whose_answer_never_comes_is_done_and_found_by_the_query() {
    let s = start().await;
    let (_, _, pre) = s.held("700").await;
    s.mock.set_faults(Faults { timeout_after_commit: vec!["preauth".into()], ..Faults::default() });
    let (id, time, fields) = s.take_back_fields("03", &pre, "700");
    let signed = sign(fields, &s.merchant_key, &s.cert_id);
    let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(&signed).finish();
    let impatient = reqwest::Client::builder().timeout(Duration::from_millis(500)).build().unwrap();
    let sent = impatient
        .post(format!("{}/gateway/api/backTransReq.do", s.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await;
    assert!(sent.is_err_and(|e| e.is_timeout()), "no answer");
    s.mock.set_faults(Faults::default());
    // The completion was made: the query and the back notification say so.
    let query = s.query(&id, &time).await;
    assert_eq!((query["respCode"].as_str(), query["origRespCode"].as_str()), ("00", "00"));
    assert_eq!(s.notification_for(&id, 1).await[0]["txnType"], "03");
}

//! The mock over real sockets on 127.0.0.1, driven as an Alipay client and a merchant's
//! notification receiver would drive it.

#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use paymux_crypto::{RsaPrivateKey, RsaPublicKey};
use paymux_mock_alipay::protocol::{
    Params, format_beijing, merge_form_parts, notification_sign_content, sign_request,
};
use paymux_mock_alipay::{AlipayMock, AlipayMockConfig};
use serde_json::{Value, json};

const APP_ID: &str = "2021000000000042";
const SELLER_ID: &str = "2088000000000001";

struct Sandbox {
    base: String,
    app_key: RsaPrivateKey,
    alipay_public: RsaPublicKey,
    http: reqwest::Client,
}

async fn start(notify_delays: Vec<Duration>) -> Sandbox {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let mock = AlipayMock::new(AlipayMockConfig {
        public_url: base.clone(),
        alipay_private_key: RsaPrivateKey::generate().unwrap(),
        seller_id: SELLER_ID.into(),
        notify_delays,
        timestamp_tolerance: Some(Duration::from_secs(900)),
    });
    let app_key = RsaPrivateKey::generate().unwrap();
    mock.register_app(APP_ID, app_key.public_key());
    let alipay_public = mock.alipay_public_key();
    tokio::spawn(mock.serve(listener));
    let http =
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    Sandbox { base, app_key, alipay_public, http }
}

fn common_params(method: &str, notify_url: Option<&str>) -> Params {
    let mut params = Params::new();
    for (k, v) in [
        ("app_id", APP_ID),
        ("method", method),
        ("format", "JSON"),
        ("charset", "utf-8"),
        ("sign_type", "RSA2"),
        ("version", "1.0"),
    ] {
        params.insert(k.into(), v.into());
    }
    params.insert("timestamp".into(), format_beijing(time::OffsetDateTime::now_utc()));
    if let Some(url) = notify_url {
        params.insert("notify_url".into(), url.into());
    }
    params
}

fn encode(pairs: impl IntoIterator<Item = (String, String)>) -> String {
    let mut form = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        form.append_pair(&k, &v);
    }
    form.finish()
}

impl Sandbox {
    fn signed(&self, method: &str, biz: &Value, notify_url: Option<&str>) -> Params {
        let mut params = common_params(method, notify_url);
        params.insert("biz_content".into(), biz.to_string());
        sign_request(params, &self.app_key).unwrap()
    }

    /// Sends like the official SDKs: common parameters in the query string, `biz_content` in the
    /// form body. Returns the raw answer body.
    async fn send(&self, params: Params) -> String {
        let (body, query): (Vec<_>, Vec<_>) =
            params.into_iter().partition(|(k, _)| k == "biz_content");
        let response = self
            .http
            .post(format!("{}/gateway.do?{}", self.base, encode(query)))
            .header("content-type", "application/x-www-form-urlencoded;charset=utf-8")
            .body(encode(body))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    }

    async fn call(&self, method: &str, biz: Value) -> Value {
        self.call_with_notify(method, biz, None).await
    }

    async fn call_with_notify(&self, method: &str, biz: Value, notify_url: Option<&str>) -> Value {
        let body = self.send(self.signed(method, &biz, notify_url)).await;
        let node_name = format!("{}_response", method.replace('.', "_"));
        verified_node(&body, &node_name, &self.alipay_public)
    }

    async fn control(&self, path: &str) -> reqwest::Response {
        self.http.post(format!("{}/_sandbox/{path}", self.base)).send().await.unwrap()
    }

    async fn order(&self, out_trade_no: &str) -> Value {
        let url = format!("{}/_sandbox/orders/{out_trade_no}", self.base);
        self.http.get(url).send().await.unwrap().json().await.unwrap()
    }

    /// Waits (bounded) until the order's first notification is no longer being retried.
    async fn settled_notification(&self, out_trade_no: &str, index: usize) -> Value {
        for _ in 0..500 {
            let order = self.order(out_trade_no).await;
            let log = &order["notifications"][index];
            if log["state"] != "pending" && !log.is_null() {
                return log.clone();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("notification {index} of {out_trade_no} never settled");
    }
}

/// Checks the body layout an SDK relies on and the signature over the exact node text, the way
/// the SDKs find it: by string search, not by re-serialising.
fn verified_node(body: &str, node_name: &str, key: &RsaPublicKey) -> Value {
    let prefix = format!("{{\"{node_name}\":");
    assert!(body.starts_with(&prefix), "node first: {body}");
    let sign_at = body.rfind(",\"sign\":\"").unwrap_or_else(|| panic!("no sign: {body}"));
    let node_text = &body[prefix.len()..sign_at];
    let sign = body[sign_at + 9..].strip_suffix("\"}").unwrap();
    key.verify_base64(node_text.as_bytes(), sign)
        .unwrap_or_else(|_| panic!("bad signature: {body}"));
    assert!(!body.contains("\\/"), "slashes not escaped: {body}");
    assert!(is_compact(body), "compact: {body}");
    serde_json::from_str(node_text).unwrap()
}

/// No whitespace outside JSON strings.
fn is_compact(json: &str) -> bool {
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        match (in_string, escaped, c) {
            (true, true, _) => escaped = false,
            (true, false, '\\') => escaped = true,
            (_, false, '"') => in_string = !in_string,
            (false, _, c) if c.is_whitespace() => return false,
            _ => {}
        }
    }
    true
}

/// A merchant's notify_url that answers from a script (then `success`) and keeps what it got.
#[derive(Clone, Default)]
struct Receiver {
    replies: Arc<Mutex<VecDeque<&'static str>>>,
    received: Arc<Mutex<Vec<Params>>>,
}

async fn receive(State(receiver): State<Receiver>, body: Bytes) -> &'static str {
    receiver.received.lock().unwrap().push(merge_form_parts(&[&body[..]]).unwrap());
    receiver.replies.lock().unwrap().pop_front().unwrap_or("success")
}

async fn start_receiver(replies: &[&'static str]) -> (String, Receiver) {
    let receiver = Receiver::default();
    receiver.replies.lock().unwrap().extend(replies.iter().copied());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/notify", listener.local_addr().unwrap());
    let app = axum::Router::new().route("/notify", post(receive)).with_state(receiver.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, receiver)
}

fn precreate_biz(out_trade_no: &str, amount: &str) -> Value {
    json!({"out_trade_no": out_trade_no, "total_amount": amount, "subject": "Iced coffee / 冰咖啡 +1"})
}

#[tokio::test]
async fn precreate_pay_and_verified_notification() {
    let sandbox = start(vec![Duration::from_millis(10)]).await;
    let (notify_url, receiver) = start_receiver(&[]).await;

    let node = sandbox
        .call_with_notify(
            "alipay.trade.precreate",
            precreate_biz("E2E_1", "0.1"),
            Some(&notify_url),
        )
        .await;
    assert_eq!(node["code"], "10000");
    assert_eq!(node["msg"], "Success");
    assert_eq!(node["qr_code"], format!("{}/_sandbox/cashier/E2E_1", sandbox.base));

    // Not scanned yet: the trade does not exist at Alipay.
    let node = sandbox.call("alipay.trade.query", json!({"out_trade_no": "E2E_1"})).await;
    assert_eq!(
        (node["code"].as_str(), node["sub_code"].as_str()),
        (Some("40004"), Some("ACQ.TRADE_NOT_EXIST"))
    );

    // The same request again gets the same answer; a different amount is refused.
    let again = sandbox
        .call_with_notify(
            "alipay.trade.precreate",
            precreate_biz("E2E_1", "0.10"),
            Some(&notify_url),
        )
        .await;
    assert_eq!(again["qr_code"], format!("{}/_sandbox/cashier/E2E_1", sandbox.base));
    let other = sandbox.call("alipay.trade.precreate", precreate_biz("E2E_1", "0.11")).await;
    assert_eq!(other["sub_code"], "ACQ.CONTEXT_INCONSISTENT");

    let paid = sandbox.control("orders/E2E_1/pay").await;
    assert_eq!(paid.status(), 200);
    let log = sandbox.settled_notification("E2E_1", 0).await;
    assert_eq!(log["state"], "delivered");

    let received = receiver.received.lock().unwrap().clone();
    assert_eq!(received.len(), 1);
    let fields = &received[0];
    let content = notification_sign_content(fields);
    sandbox.alipay_public.verify_base64(content.as_bytes(), &fields["sign"]).unwrap();
    assert!(fields.values().all(|v| !v.is_empty()));
    assert_eq!(fields["trade_status"], "TRADE_SUCCESS");
    assert_eq!(fields["total_amount"], "0.10");
    assert_eq!(fields["subject"], "Iced coffee / 冰咖啡 +1");
    assert_eq!(fields["seller_id"], SELLER_ID);
    assert_eq!(fields["app_id"], APP_ID);
    assert_eq!(fields["auth_app_id"], APP_ID);
    assert_eq!(fields["notify_type"], "trade_status_sync");
    assert_eq!(fields["sign_type"], "RSA2");
    assert_eq!(fields["trade_no"].len(), 28);

    let node = sandbox.call("alipay.trade.query", json!({"out_trade_no": "E2E_1"})).await;
    assert_eq!(node["trade_status"], "TRADE_SUCCESS");
    assert_eq!(node["trade_no"], fields["trade_no"].as_str());
    // A paid order cannot be paid again.
    assert_eq!(sandbox.control("orders/E2E_1/pay").await.status(), 409);
}

#[tokio::test]
async fn receiver_answering_fail_twice_gets_the_notification_three_times() {
    let sandbox = start(vec![Duration::from_millis(5); 3]).await;
    let (notify_url, receiver) = start_receiver(&["fail", "fail"]).await;
    sandbox
        .call_with_notify(
            "alipay.trade.precreate",
            precreate_biz("E2E_2", "1.00"),
            Some(&notify_url),
        )
        .await;
    sandbox.control("orders/E2E_2/pay").await;

    let log = sandbox.settled_notification("E2E_2", 0).await;
    assert_eq!(log["state"], "delivered");
    assert_eq!(log["attempts"].as_array().unwrap().len(), 3);
    let received = receiver.received.lock().unwrap().clone();
    assert_eq!(received.len(), 3);
    assert!(received.iter().all(|f| f["notify_id"] == received[0]["notify_id"]));
}

#[tokio::test]
async fn receiver_that_never_acknowledges_is_given_up_on() {
    let sandbox = start(vec![Duration::from_millis(5); 2]).await;
    let (notify_url, receiver) = start_receiver(&["fail", "Success", "success\n"]).await;
    sandbox
        .call_with_notify(
            "alipay.trade.precreate",
            precreate_biz("E2E_3", "1.00"),
            Some(&notify_url),
        )
        .await;
    sandbox.control("orders/E2E_3/pay").await;
    let log = sandbox.settled_notification("E2E_3", 0).await;
    assert_eq!(log["state"], "gave_up");
    assert_eq!(receiver.received.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn refunds_are_idempotent_by_out_request_no_and_bounded() {
    let sandbox = start(vec![]).await;
    sandbox.call("alipay.trade.precreate", precreate_biz("E2E_4", "1.00")).await;
    let refund = |no: &'static str, amount: &'static str| json!({"out_trade_no": "E2E_4", "refund_amount": amount, "out_request_no": no});
    let node = sandbox.call("alipay.trade.refund", refund("R1", "0.30")).await;
    assert_eq!(node["sub_code"], "ACQ.TRADE_NOT_EXIST");

    // Opening the cashier page is the scan; a waiting trade cannot be refunded.
    let page =
        sandbox.http.get(format!("{}/_sandbox/cashier/E2E_4", sandbox.base)).send().await.unwrap();
    let html = page.text().await.unwrap();
    assert!(html.contains("<svg") && html.contains("1.00"));
    let node = sandbox.call("alipay.trade.query", json!({"out_trade_no": "E2E_4"})).await;
    assert_eq!(node["trade_status"], "WAIT_BUYER_PAY");
    let node = sandbox.call("alipay.trade.refund", refund("R1", "0.30")).await;
    assert_eq!(node["sub_code"], "ACQ.TRADE_STATUS_ERROR");

    sandbox.control("orders/E2E_4/pay").await;
    let node = sandbox.call("alipay.trade.refund", refund("R1", "0.3")).await;
    assert_eq!((node["code"].as_str(), node["fund_change"].as_str()), (Some("10000"), Some("Y")));
    assert_eq!(node["refund_fee"], "0.30");
    let node = sandbox.call("alipay.trade.refund", refund("R1", "0.30")).await;
    assert_eq!(
        (node["fund_change"].as_str(), node["refund_fee"].as_str()),
        (Some("N"), Some("0.30"))
    );

    let node = sandbox.call("alipay.trade.refund", refund("R2", "0.71")).await;
    assert_eq!(
        (node["code"].as_str(), node["sub_code"].as_str()),
        (Some("40004"), Some("ACQ.REFUND_AMT_NOT_EQUAL_TOTAL"))
    );
    let node = sandbox.call("alipay.trade.refund", refund("R3", "0.001")).await;
    assert_eq!(node["sub_code"], "ACQ.INVALID_PARAMETER");

    let query = |no: &'static str| json!({"out_trade_no": "E2E_4", "out_request_no": no});
    let node = sandbox.call("alipay.trade.fastpay.refund.query", query("R1")).await;
    assert_eq!(
        (node["refund_status"].as_str(), node["refund_amount"].as_str()),
        (Some("REFUND_SUCCESS"), Some("0.30"))
    );
    let node = sandbox.call("alipay.trade.fastpay.refund.query", query("R2")).await;
    assert_eq!((node["code"].as_str(), node.get("refund_status")), (Some("10000"), None));

    let order = sandbox.order("E2E_4").await;
    assert_eq!(
        (order["refunded_amount"].as_str(), order["trade_status"].as_str()),
        (Some("0.30"), Some("TRADE_SUCCESS"))
    );
}

#[tokio::test]
async fn bad_signature_and_unknown_app_are_refused_in_the_signed_error_shape() {
    let sandbox = start(vec![]).await;
    let mut params = sandbox.signed("alipay.trade.query", &json!({"out_trade_no": "E2E_5"}), None);
    params.insert("biz_content".into(), json!({"out_trade_no": "E2E_6"}).to_string());
    let body = sandbox.send(params).await;
    let node = verified_node(&body, "alipay_trade_query_response", &sandbox.alipay_public);
    assert_eq!(node["code"], "40002");
    assert_eq!(node["msg"], "Invalid Arguments");
    assert_eq!(node["sub_code"], "isv.invalid-signature");

    let mut params = common_params("alipay.trade.query", None);
    params.insert("app_id".into(), "2021999999999999".into());
    let body = sandbox.send(sign_request(params, &sandbox.app_key).unwrap()).await;
    let node = verified_node(&body, "alipay_trade_query_response", &sandbox.alipay_public);
    assert_eq!(
        (node["code"].as_str(), node["sub_code"].as_str()),
        (Some("40002"), Some("isv.invalid-app-id"))
    );

    let mut params = common_params("alipay.trade.query", None);
    params.remove("timestamp");
    let body = sandbox.send(sign_request(params, &sandbox.app_key).unwrap()).await;
    let node = verified_node(&body, "alipay_trade_query_response", &sandbox.alipay_public);
    assert_eq!(
        (node["code"].as_str(), node["msg"].as_str()),
        (Some("40001"), Some("Missing Required Arguments"))
    );

    for stale in ["2000-01-01 00:00:00", "2024/01/01 10:00:00"] {
        let mut params = common_params("alipay.trade.query", None);
        params.insert("timestamp".into(), stale.into());
        let body = sandbox.send(sign_request(params, &sandbox.app_key).unwrap()).await;
        let node = verified_node(&body, "alipay_trade_query_response", &sandbox.alipay_public);
        assert_eq!(node["sub_code"], "isv.invalid-timestamp");
    }

    let params = common_params("alipay.trade.nonexistent", None);
    let body = sandbox.send(sign_request(params, &sandbox.app_key).unwrap()).await;
    let node = verified_node(&body, "error_response", &sandbox.alipay_public);
    assert_eq!(node["sub_code"], "isv.invalid-method");
}

#[tokio::test]
async fn get_requests_and_lower_case_format_are_accepted() {
    let sandbox = start(vec![]).await;
    let mut params = common_params("alipay.trade.precreate", None);
    params.insert("format".into(), "json".into());
    params.insert("biz_content".into(), precreate_biz("E2E_7", "5").to_string());
    let params = sign_request(params, &sandbox.app_key).unwrap();
    let body = sandbox
        .http
        .get(format!("{}/gateway.do?{}", sandbox.base, encode(params)))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let node = verified_node(&body, "alipay_trade_precreate_response", &sandbox.alipay_public);
    assert_eq!(node["code"], "10000");
}

#[tokio::test]
async fn page_pay_redirects_the_browser_to_the_cashier_and_returns_signed() {
    let sandbox = start(vec![]).await;
    let mut params = common_params("alipay.trade.page.pay", None);
    params.insert("return_url".into(), "http://merchant.invalid/back?x=1".into());
    params.insert(
        "biz_content".into(),
        json!({"out_trade_no": "E2E_8", "total_amount": "2.50", "subject": "Book", "product_code": "FAST_INSTANT_TRADE_PAY"})
            .to_string(),
    );
    let params = sign_request(params, &sandbox.app_key).unwrap();
    let response = sandbox
        .http
        .get(format!("{}/gateway.do?{}", sandbox.base, encode(params)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 302);
    let cashier = response.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(cashier, format!("{}/_sandbox/cashier/E2E_8", sandbox.base));
    assert_eq!(sandbox.http.get(&cashier).send().await.unwrap().status(), 200);

    let response = sandbox.http.post(format!("{cashier}/pay")).send().await.unwrap();
    assert_eq!(response.status(), 303);
    let back = response.headers()["location"].to_str().unwrap().to_owned();
    let (target, query) = back.split_once("?x=1&").unwrap();
    assert_eq!(target, "http://merchant.invalid/back");
    let fields = merge_form_parts(&[query.as_bytes()]).unwrap();
    assert_eq!(fields["method"], "alipay.trade.page.pay.return");
    let content = notification_sign_content(&fields);
    sandbox.alipay_public.verify_base64(content.as_bytes(), &fields["sign"]).unwrap();
    assert_eq!(sandbox.order("E2E_8").await["trade_status"], "TRADE_SUCCESS");
}

#[tokio::test]
async fn app_pay_order_string_and_refund_notifications() {
    let sandbox = start(vec![Duration::from_millis(5)]).await;
    let (notify_url, receiver) = start_receiver(&[]).await;
    let mut params = common_params("alipay.trade.app.pay", Some(&notify_url));
    params.insert(
        "biz_content".into(),
        json!({"out_trade_no": "E2E_9", "total_amount": "3.00", "subject": "Game", "product_code": "QUICK_MSECURITY_PAY"})
            .to_string(),
    );
    let order_string = encode(sign_request(params, &sandbox.app_key).unwrap());
    let response = sandbox
        .http
        .post(format!("{}/_sandbox/app_pay", sandbox.base))
        .body(order_string)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // The app hands the order to Alipay at once: the trade exists.
    let node = sandbox.call("alipay.trade.query", json!({"out_trade_no": "E2E_9"})).await;
    assert_eq!(node["trade_status"], "WAIT_BUYER_PAY");

    sandbox.control("orders/E2E_9/pay").await;
    sandbox.settled_notification("E2E_9", 0).await;
    sandbox
        .call(
            "alipay.trade.refund",
            json!({"out_trade_no": "E2E_9", "refund_amount": "1.00", "out_request_no": "P1"}),
        )
        .await;
    sandbox.settled_notification("E2E_9", 1).await;
    sandbox
        .call(
            "alipay.trade.refund",
            json!({"out_trade_no": "E2E_9", "refund_amount": "2.00", "out_request_no": "P2"}),
        )
        .await;
    sandbox.settled_notification("E2E_9", 2).await;

    let received = receiver.received.lock().unwrap().clone();
    let summary: Vec<_> = received
        .iter()
        .map(|f| {
            (f["trade_status"].clone(), f.get("refund_fee").cloned(), f.get("out_biz_no").cloned())
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("TRADE_SUCCESS".to_owned(), None, None),
            ("TRADE_SUCCESS".to_owned(), Some("1.00".to_owned()), Some("P1".to_owned())),
            ("TRADE_CLOSED".to_owned(), Some("3.00".to_owned()), Some("P2".to_owned())),
        ]
    );
    for fields in &received {
        let content = notification_sign_content(fields);
        sandbox.alipay_public.verify_base64(content.as_bytes(), &fields["sign"]).unwrap();
    }
}

#[tokio::test]
async fn faults_error_rate_bad_signature_and_timeout_after_commit() {
    let sandbox = start(vec![]).await;
    let set = |faults: Value| {
        let http = sandbox.http.clone();
        let url = format!("{}/_sandbox/faults", sandbox.base);
        async move { http.post(url).json(&faults).send().await.unwrap().status() }
    };
    assert_eq!(set(json!({"error_rate": 1.5})).await, 400);

    assert_eq!(set(json!({"error_rate": 1.0})).await, 200);
    let body = sandbox
        .send(sandbox.signed("alipay.trade.query", &json!({"out_trade_no": "X"}), None))
        .await;
    assert!(body.starts_with("{\"alipay_trade_query_response\":{\"code\":\"20000\""), "{body}");
    assert!(!body.contains("\"sign\""));

    assert_eq!(set(json!({"bad_signature": true})).await, 200);
    let body = sandbox
        .send(sandbox.signed("alipay.trade.query", &json!({"out_trade_no": "X"}), None))
        .await;
    let sign_at = body.rfind(",\"sign\":\"").unwrap();
    let node_text = &body["{\"alipay_trade_query_response\":".len()..sign_at];
    let sign = &body[sign_at + 9..body.len() - 2];
    assert!(sandbox.alipay_public.verify_base64(node_text.as_bytes(), sign).is_err());

    sandbox.http.delete(format!("{}/_sandbox/faults", sandbox.base)).send().await.unwrap();
    sandbox.call("alipay.trade.precreate", precreate_biz("E2E_10", "1.00")).await;
    sandbox.control("orders/E2E_10/pay").await;
    assert_eq!(set(json!({"timeout_after_commit": ["alipay.trade.refund"]})).await, 200);
    let params = sandbox.signed(
        "alipay.trade.refund",
        &json!({"out_trade_no": "E2E_10", "refund_amount": "1.00", "out_request_no": "T1"}),
        None,
    );
    let query = encode(params);
    let result = sandbox
        .http
        .post(format!("{}/gateway.do", sandbox.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(query)
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(result.is_err());
    // The refund was made although the client never heard of it.
    let order = sandbox.order("E2E_10").await;
    assert_eq!(order["refunded_amount"], "1.00");
    assert_eq!(order["trade_status"], "TRADE_CLOSED");
}

#[tokio::test]
async fn reorder_fault_sends_the_newer_notification_first_and_a_lone_one_after_the_hold() {
    let sandbox = start(vec![Duration::from_millis(10); 3]).await;
    let (notify_url, receiver) = start_receiver(&[]).await;
    let status = sandbox
        .http
        .post(format!("{}/_sandbox/faults", sandbox.base))
        .json(&json!({"reorder_notifications": true}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    for no in ["E2E_R1", "E2E_R2", "E2E_R3"] {
        sandbox
            .call_with_notify(
                "alipay.trade.precreate",
                precreate_biz(no, "1.00"),
                Some(&notify_url),
            )
            .await;
    }

    // The first is held; the second overtakes it, and then the first follows.
    assert_eq!(sandbox.control("orders/E2E_R1/pay").await.status(), 200);
    assert_eq!(sandbox.control("orders/E2E_R2/pay").await.status(), 200);
    assert_eq!(sandbox.settled_notification("E2E_R1", 0).await["state"], "delivered");
    assert_eq!(sandbox.settled_notification("E2E_R2", 0).await["state"], "delivered");
    let order: Vec<String> = receiver
        .received
        .lock()
        .unwrap()
        .iter()
        .map(|fields| fields["out_trade_no"].clone())
        .collect();
    assert_eq!(order, ["E2E_R2", "E2E_R1"]);

    // Nothing comes after the third: it goes out once the hold runs out, exactly once.
    assert_eq!(sandbox.control("orders/E2E_R3/pay").await.status(), 200);
    let log = sandbox.settled_notification("E2E_R3", 0).await;
    assert_eq!(log["state"], "delivered");
    assert_eq!(log["attempts"].as_array().unwrap().len(), 1);
    let received = receiver.received.lock().unwrap().clone();
    assert_eq!(received.len(), 3);
    assert_eq!(received[2]["out_trade_no"], "E2E_R3");
    assert_eq!(received[2]["trade_status"], "TRADE_SUCCESS");
}

/// Sends `request` as raw bytes and reads the answer as written: its status line and header
/// names, in the case they went over the wire.
async fn raw_head(addr: &str, request: &str) -> (String, Vec<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8(answer).unwrap();
    let (head, _) = answer.split_once("\r\n\r\n").unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().to_owned();
    (status, lines.map(|l| l.split_once(':').unwrap().0.to_owned()).collect())
}

#[tokio::test]
async fn gateway_answers_carry_header_names_in_title_case_on_the_wire() {
    let sb = start(vec![]).await;
    let addr = sb.base.trim_start_matches("http://");
    let body = "method=alipay.trade.query&app_id=nobody";
    let request = format!(
        "POST /gateway.do HTTP/1.1\r\nHost: {addr}\r\n\
         Content-Type: application/x-www-form-urlencoded;charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, names) = raw_head(addr, &request).await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(names.iter().any(|n| n == "Content-Type"), "{names:?}");
    assert!(names.iter().any(|n| n == "Content-Length"), "{names:?}");
    assert!(names.iter().all(|n| !n.starts_with(|c: char| c.is_ascii_lowercase())), "{names:?}");
}

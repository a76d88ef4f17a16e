//! 商家分账 over real sockets: requests signed with the app's key, every answer's signature
//! checked with the mock's Alipay key, settle messages verified as an application gateway would.

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::routing::post;
use paymux_crypto::{RsaPrivateKey, RsaPublicKey};
use paymux_mock_alipay::protocol::{
    Params, format_beijing, merge_form_parts, notification_sign_content, sign_request,
};
use paymux_mock_alipay::{AlipayMock, AlipayMockConfig};
use serde_json::{Value, json};

const APP_ID: &str = "2021000000000077";
const SELLER_ID: &str = "2088000000000001";
const RECEIVER_A: &str = "2088000000000101";
const RECEIVER_B: &str = "2088000000000102";

struct Sandbox {
    base: String,
    app_key: RsaPrivateKey,
    alipay_public: RsaPublicKey,
    http: reqwest::Client,
}

async fn start() -> Sandbox {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let mock = AlipayMock::new(AlipayMockConfig {
        public_url: base.clone(),
        alipay_private_key: RsaPrivateKey::generate().unwrap(),
        seller_id: SELLER_ID.into(),
        notify_delays: vec![Duration::from_millis(20); 3],
        timestamp_tolerance: Some(Duration::from_secs(900)),
    });
    let app_key = RsaPrivateKey::generate().unwrap();
    mock.register_app(APP_ID, app_key.public_key());
    let alipay_public = mock.alipay_public_key();
    tokio::spawn(mock.serve(listener));
    Sandbox { base, app_key, alipay_public, http: reqwest::Client::new() }
}

impl Sandbox {
    /// A signed gateway call; returns the answer node after checking its signature.
    async fn call(&self, method: &str, biz: Value) -> Value {
        let text = self.send(&self.http, method, biz).await.unwrap();
        let prefix = format!("{{\"{}_response\":", method.replace('.', "_"));
        assert!(text.starts_with(&prefix), "{text}");
        let sign_at = text.rfind(",\"sign\":\"").unwrap_or_else(|| panic!("unsigned: {text}"));
        let node = &text[prefix.len()..sign_at];
        let sign = text[sign_at + 9..].strip_suffix("\"}").unwrap();
        self.alipay_public.verify_base64(node.as_bytes(), sign).unwrap();
        serde_json::from_str(node).unwrap()
    }

    /// Sends a signed request with `client`; the raw answer, or the client's error.
    async fn send(
        &self,
        client: &reqwest::Client,
        method: &str,
        biz: Value,
    ) -> Result<String, reqwest::Error> {
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
        params.insert("biz_content".into(), biz.to_string());
        let params = sign_request(params, &self.app_key).unwrap();
        let body =
            form_urlencoded::Serializer::new(String::new()).extend_pairs(params.iter()).finish();
        client
            .post(format!("{}/gateway.do", self.base))
            .header("content-type", "application/x-www-form-urlencoded;charset=utf-8")
            .body(body)
            .send()
            .await?
            .text()
            .await
    }

    async fn settings(&self, settings: Value) {
        let res = self
            .http
            .post(format!("{}/_sandbox/royalty/settings", self.base))
            .json(&settings)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    }

    async fn get(&self, path: &str) -> Value {
        self.http.get(format!("{}{path}", self.base)).send().await.unwrap().json().await.unwrap()
    }

    /// A precreate (frozen when `freeze`), scanned and paid; returns the trade_no.
    async fn paid_trade(&self, out_trade_no: &str, amount: &str, freeze: bool) -> String {
        let mut biz =
            json!({"out_trade_no": out_trade_no, "total_amount": amount, "subject": "分账测试"});
        if freeze {
            biz["extend_params"] = json!({"royalty_freeze": "true"});
        }
        let node = self.call("alipay.trade.precreate", biz).await;
        assert_eq!(node["code"], "10000", "{node}");
        let res = self
            .http
            .post(format!("{}/_sandbox/orders/{out_trade_no}/pay", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        self.get(&format!("/_sandbox/orders/{out_trade_no}")).await["trade_no"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn bind(&self, accounts: &[&str]) {
        let list: Vec<Value> = accounts
            .iter()
            .map(|a| json!({"type": "userId", "account": a, "memo": "合作方"}))
            .collect();
        let node = self
            .call(
                "alipay.trade.royalty.relation.bind",
                json!({"out_request_no": format!("bind{}", accounts.len()), "receiver_list": list}),
            )
            .await;
        assert_eq!(
            (node["code"].as_str(), node["result_code"].as_str()),
            (Some("10000"), Some("SUCCESS"))
        );
    }

    async fn unsettled(&self, trade_no: &str) -> String {
        let node =
            self.call("alipay.trade.order.onsettle.query", json!({"trade_no": trade_no})).await;
        assert_eq!(node["code"], "10000", "{node}");
        node["unsettled_amount"].as_str().unwrap().to_owned()
    }

    async fn query(&self, out_request_no: &str, trade_no: &str) -> Value {
        let biz = json!({"out_request_no": out_request_no, "trade_no": trade_no});
        let node = self.call("alipay.trade.order.settle.query", biz).await;
        assert_eq!(node["code"], "10000", "{node}");
        node
    }
}

fn settle(trade_no: &str, out_request_no: &str, lines: &[(&str, &str)]) -> Value {
    let params: Vec<Value> = lines
        .iter()
        .map(|(to, amount)| {
            json!({"trans_in": to, "trans_in_type": "userId", "amount": amount,
                   "desc": "平台服务费", "royalty_scene": "平台服务费"})
        })
        .collect();
    json!({"out_request_no": out_request_no, "trade_no": trade_no, "royalty_parameters": params})
}

fn sub_code(node: &Value) -> (&str, &str) {
    (node["code"].as_str().unwrap_or_default(), node["sub_code"].as_str().unwrap_or_default())
}

#[tokio::test]
async fn a_frozen_trade_is_split_synchronously_then_finished() {
    let sb = start().await;
    sb.settings(json!({"min_wait_ms": 0})).await;
    sb.bind(&[RECEIVER_A]).await;
    let trade_no = sb.paid_trade("roy_sync_1", "100.00", true).await;
    assert_eq!(sb.unsettled(&trade_no).await, "100.00");
    let rate = sb.call("alipay.trade.royalty.rate.query", json!({})).await;
    assert_eq!((rate["user_id"].as_str(), rate["max_ratio"].as_i64()), (Some(SELLER_ID), Some(30)));
    let list = sb
        .call(
            "alipay.trade.royalty.relation.batchquery",
            json!({"page_num": "1", "page_size": "20"}),
        )
        .await;
    assert_eq!(list["receiver_list"][0]["account"], RECEIVER_A);
    assert_eq!(list["total_record_num"], 1);

    // The sandbox took "10" without decimals.
    let biz = settle(&trade_no, "S1", &[(RECEIVER_A, "10")]);
    let node = sb.call("alipay.trade.order.settle", biz.clone()).await;
    assert_eq!(node["code"], "10000", "{node}");
    assert_eq!(node["trade_no"], trade_no.as_str());
    let settle_no = node["settle_no"].as_str().unwrap().to_owned();
    // The same out_request_no again is the same settle.
    let again = sb.call("alipay.trade.order.settle", biz).await;
    assert_eq!(again["settle_no"], settle_no.as_str());

    let q = sb.query("S1", &trade_no).await;
    assert_eq!(q["settle_no"], settle_no.as_str());
    let line = &q["royalty_detail_list"][0];
    assert_eq!(line["operation_type"], "transfer");
    assert_eq!(line["amount"], "10.00");
    assert_eq!(line["state"], "SUCCESS");
    assert_eq!(line["trans_in"], RECEIVER_A);
    let by_no = sb.call("alipay.trade.order.settle.query", json!({"settle_no": settle_no})).await;
    assert_eq!(by_no["out_request_no"], "S1");
    assert_eq!(sb.unsettled(&trade_no).await, "90.00");
    let receiver = sb.get(&format!("/_sandbox/receivers/{RECEIVER_A}")).await;
    assert_eq!(receiver["balance"], "10.00");

    // A finish-only settle unfreezes the rest.
    let finish = json!({"out_request_no": "S2", "trade_no": trade_no, "extend_params": {"royalty_finish": "true"}});
    let node = sb.call("alipay.trade.order.settle", finish).await;
    assert_eq!(node["code"], "10000", "{node}");
    assert_eq!(sb.unsettled(&trade_no).await, "0.00");
    let node =
        sb.call("alipay.trade.order.settle", settle(&trade_no, "S3", &[(RECEIVER_A, "1")])).await;
    assert_eq!(sub_code(&node), ("40004", "ACQ.TXN_RESULT_ACCOUNT_BALANCE_NOT_ENOUGH"));
    let all = sb.get("/_sandbox/royalty").await;
    assert_eq!(all["released"][SELLER_ID], "90.00");
}

#[tokio::test]
async fn settle_rules_are_refused_with_alipays_codes() {
    let sb = start().await;
    sb.bind(&[RECEIVER_A]).await;
    let trade_no = sb.paid_trade("roy_rules_1", "100.00", true).await;

    // Right after the payment: ACQ.TRADE_SETTLE_ERROR, which means "re-send the same request".
    let biz = settle(&trade_no, "R1", &[(RECEIVER_A, "5.00")]);
    let node = sb.call("alipay.trade.order.settle", biz.clone()).await;
    assert_eq!(sub_code(&node), ("40004", "ACQ.TRADE_SETTLE_ERROR"));
    sb.settings(json!({"min_wait_ms": 0})).await;
    let node = sb.call("alipay.trade.order.settle", biz).await;
    assert_eq!(node["code"], "10000", "the same request later goes through: {node}");

    // Another request with the same out_request_no.
    let node = sb
        .call("alipay.trade.order.settle", settle(&trade_no, "R1", &[(RECEIVER_A, "6.00")]))
        .await;
    assert_eq!(sub_code(&node), ("40004", "ACQ.CONTEXT_INCONSISTENT"));
    // A receiver never bound.
    let node = sb
        .call("alipay.trade.order.settle", settle(&trade_no, "R2", &[(RECEIVER_B, "1.00")]))
        .await;
    assert_eq!(sub_code(&node), ("40004", "ACQ.INVALID_PARAMETER"));
    // Over the 30 % ratio, counting the 5.00 already split.
    let node = sb
        .call("alipay.trade.order.settle", settle(&trade_no, "R3", &[(RECEIVER_A, "25.01")]))
        .await;
    assert_eq!(sub_code(&node), ("40004", "ACQ.INVALID_PARAMETER"));
    // sync takes at most 5 receivers per call.
    let six = vec![(RECEIVER_A, "0.01"); 6];
    let node = sb.call("alipay.trade.order.settle", settle(&trade_no, "R4", &six)).await;
    assert_eq!(sub_code(&node), ("40004", "ACQ.INVALID_PARAMETER"));
    // sync and async never mix on one trade.
    let mut asynchronous = settle(&trade_no, "R5", &[(RECEIVER_A, "1.00")]);
    asynchronous["royalty_mode"] = json!("async");
    let node = sb.call("alipay.trade.order.settle", asynchronous).await;
    assert_eq!(sub_code(&node), ("40004", "ACQ.INVALID_PARAMETER"));
    // Nothing to split without a finish.
    let node = sb
        .call("alipay.trade.order.settle", json!({"out_request_no": "R6", "trade_no": trade_no}))
        .await;
    assert_eq!(sub_code(&node), ("40001", "isv.missing-parameter"));
    // A trade that does not exist; one that is not paid.
    let node = sb
        .call(
            "alipay.trade.order.settle",
            settle("2026112922001000000000000000", "R7", &[(RECEIVER_A, "1")]),
        )
        .await;
    assert_eq!(sub_code(&node), ("40004", "ACQ.TRADE_NOT_EXIST"));
    // A refund lowers what is frozen; more than that (ratio lifted) fails as a whole in sync
    // mode.
    let refund = json!({"trade_no": trade_no, "refund_amount": "10.00", "out_request_no": "rf1"});
    let node = sb.call("alipay.trade.refund", refund).await;
    assert_eq!(node["code"], "10000", "{node}");
    assert_eq!(sb.unsettled(&trade_no).await, "85.00");
    sb.settings(json!({"min_wait_ms": 0, "max_ratio": 100})).await;
    let node = sb
        .call("alipay.trade.order.settle", settle(&trade_no, "R8", &[(RECEIVER_A, "85.01")]))
        .await;
    assert_eq!(sub_code(&node), ("40004", "ACQ.TXN_RESULT_ACCOUNT_BALANCE_NOT_ENOUGH"));
    let q = sb.query("R8", &trade_no).await;
    assert_eq!(q["royalty_detail_list"][0]["state"], "FAIL");
    assert_eq!(q["royalty_detail_list"][0]["error_code"], "TXN_RESULT_ACCOUNT_BALANCE_NOT_ENOUGH");
    assert_eq!(sb.unsettled(&trade_no).await, "85.00");
    // A trade created without the freeze has nothing frozen.
    let plain = sb.paid_trade("roy_rules_2", "10.00", false).await;
    assert_eq!(sb.unsettled(&plain).await, "0.00");
    // loginName receivers need their name; unbinding removes a receiver.
    let node = sb
        .call(
            "alipay.trade.royalty.relation.bind",
            json!({"out_request_no": "b2", "receiver_list": [{"type": "loginName", "account": "a@example.com"}]}),
        )
        .await;
    assert_eq!(sub_code(&node), ("40004", "ACQ.INVALID_PARAMETER"));
    let node = sb
        .call(
            "alipay.trade.royalty.relation.unbind",
            json!({"out_request_no": "u1", "receiver_list": [{"type": "userId", "account": RECEIVER_A}]}),
        )
        .await;
    assert_eq!(node["result_code"], "SUCCESS");
    let node =
        sb.call("alipay.trade.order.settle", settle(&trade_no, "R9", &[(RECEIVER_A, "1")])).await;
    assert_eq!(sub_code(&node), ("40004", "ACQ.INVALID_PARAMETER"));
}

#[tokio::test]
async fn async_lines_end_one_by_one_and_the_settle_message_reaches_the_app_gateway() {
    let sb = start().await;
    let received: Arc<Mutex<Vec<Params>>> = Arc::default();
    let r = received.clone();
    let router = axum::Router::new().route(
        "/gateway",
        post(move |body: Bytes| {
            let r = r.clone();
            async move {
                r.lock().unwrap().push(merge_form_parts(&[&body[..]]).unwrap());
                "success"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/gateway", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    sb.settings(json!({
        "min_wait_ms": 0, "processing_ms": 200, "app_gateway_url": url,
        "refused_receivers": {RECEIVER_B: "TXN_RESULT_ACCOUNT_STATUS_NOT_VALID"},
    }))
    .await;
    sb.bind(&[RECEIVER_A, RECEIVER_B]).await;
    let trade_no = sb.paid_trade("roy_async_1", "200.00", true).await;

    let mut biz = settle(&trade_no, "A1", &[(RECEIVER_A, "20.00"), (RECEIVER_B, "10.00")]);
    biz["royalty_mode"] = json!("async");
    let node = sb.call("alipay.trade.order.settle", biz).await;
    assert_eq!(node["code"], "10000", "accepted: {node}");
    let q = sb.query("A1", &trade_no).await;
    assert!(
        q["royalty_detail_list"].as_array().unwrap().iter().all(|l| l["state"] == "PROCESSING")
    );

    let deadline = Instant::now() + Duration::from_secs(10);
    let q = loop {
        let q = sb.query("A1", &trade_no).await;
        if q["royalty_detail_list"].as_array().unwrap().iter().all(|l| l["state"] != "PROCESSING") {
            break q;
        }
        assert!(Instant::now() < deadline, "lines never ended");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let lines = q["royalty_detail_list"].as_array().unwrap();
    assert_eq!(
        (lines[0]["trans_in"].as_str(), lines[0]["state"].as_str()),
        (Some(RECEIVER_A), Some("SUCCESS"))
    );
    assert_eq!(
        (lines[1]["trans_in"].as_str(), lines[1]["state"].as_str()),
        (Some(RECEIVER_B), Some("FAIL"))
    );
    assert_eq!(lines[1]["error_code"], "TXN_RESULT_ACCOUNT_STATUS_NOT_VALID");
    // The failed line's money stays frozen.
    assert_eq!(sb.unsettled(&trade_no).await, "180.00");

    let message = loop {
        if let Some(m) = received.lock().unwrap().first().cloned() {
            break m;
        }
        assert!(Instant::now() < deadline, "no settle message");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(message["msg_method"], "alipay.trade.order.settle.notify");
    assert_eq!((message["app_id"].as_str(), message["version"].as_str()), (APP_ID, "1.1"));
    sb.alipay_public
        .verify_base64(notification_sign_content(&message).as_bytes(), &message["sign"])
        .unwrap();
    let content: Value = serde_json::from_str(&message["biz_content"]).unwrap();
    assert_eq!(content["out_request_no"], "A1");
    assert_eq!(content["trade_no"], trade_no.as_str());
    assert_eq!(content["royalty_detail_list"][1]["state"], "FAIL");
    assert_eq!(content["royalty_detail_list"][0]["amount"], "20.00");

    // In sync mode a refused receiver fails the whole call.
    let node = sb
        .call("alipay.trade.order.settle", settle(&trade_no, "A2", &[(RECEIVER_B, "1.00")]))
        .await;
    assert_eq!(sub_code(&node), ("40004", "ACQ.INVALID_PARAMETER"), "no mixing with async");
    let other = sb.paid_trade("roy_async_2", "50.00", true).await;
    let node = sb
        .call(
            "alipay.trade.order.settle",
            settle(&other, "A3", &[(RECEIVER_A, "1.00"), (RECEIVER_B, "1.00")]),
        )
        .await;
    assert_eq!(sub_code(&node), ("40004", "ACQ.TXN_RESULT_ACCOUNT_STATUS_NOT_VALID"));
    assert_eq!(sb.unsettled(&other).await, "50.00");
    let receiver = sb.get(&format!("/_sandbox/receivers/{RECEIVER_A}")).await;
    assert_eq!(receiver["balance"], "20.00");

    // async with royalty_finish: the rest is unfrozen at once, a failed line's money later.
    let third = sb.paid_trade("roy_async_3", "100.00", true).await;
    let mut biz = settle(&third, "A4", &[(RECEIVER_A, "10.00"), (RECEIVER_B, "5.00")]);
    biz["royalty_mode"] = json!("async");
    biz["extend_params"] = json!({"royalty_finish": "true"});
    assert_eq!(sb.call("alipay.trade.order.settle", biz).await["code"], "10000");
    assert_eq!(sb.unsettled(&third).await, "0.00");
    assert_eq!(sb.get("/_sandbox/royalty").await["released"][SELLER_ID], "85.00");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines = sb.query("A4", &third).await["royalty_detail_list"].clone();
        if lines.as_array().unwrap().iter().all(|l| l["state"] != "PROCESSING") {
            assert_eq!(lines[1]["state"], "FAIL");
            break;
        }
        assert!(Instant::now() < deadline, "lines never ended");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sb.get("/_sandbox/royalty").await["released"][SELLER_ID], "90.00");
}

#[tokio::test]
async fn a_settle_whose_answer_never_comes_is_done_and_found_by_the_query() {
    let sb = start().await;
    sb.settings(json!({"min_wait_ms": 0})).await;
    sb.bind(&[RECEIVER_A]).await;
    let trade_no = sb.paid_trade("roy_timeout_1", "50.00", true).await;
    let faults = json!({"timeout_after_commit": ["alipay.trade.order.settle"]});
    let res =
        sb.http.post(format!("{}/_sandbox/faults", sb.base)).json(&faults).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let impatient = reqwest::Client::builder().timeout(Duration::from_millis(500)).build().unwrap();
    let sent = sb
        .send(
            &impatient,
            "alipay.trade.order.settle",
            settle(&trade_no, "T1", &[(RECEIVER_A, "5.00")]),
        )
        .await;
    assert!(sent.is_err_and(|e| e.is_timeout()), "no answer");
    // The unknown outcome is resolved by the query: the split was made.
    let q = sb.query("T1", &trade_no).await;
    assert_eq!(q["royalty_detail_list"][0]["state"], "SUCCESS");
    assert_eq!(sb.unsettled(&trade_no).await, "45.00");
}

#[tokio::test]
async fn after_the_freeze_period_the_rest_unfreezes_by_itself() {
    let sb = start().await;
    sb.bind(&[RECEIVER_A]).await;
    sb.settings(json!({"min_wait_ms": 0, "freeze_seconds": 0})).await;
    let trade_no = sb.paid_trade("roy_expire_1", "20.00", true).await;
    assert_eq!(sb.unsettled(&trade_no).await, "0.00");
    let node =
        sb.call("alipay.trade.order.settle", settle(&trade_no, "E1", &[(RECEIVER_A, "1")])).await;
    assert_eq!(sub_code(&node), ("40004", "ACQ.TXN_RESULT_ACCOUNT_BALANCE_NOT_ENOUGH"));
    assert_eq!(sb.get("/_sandbox/royalty").await["released"][SELLER_ID], "20.00");
}

//! Profit sharing (分账) over real loopback sockets: every call signed by the merchant, every
//! answer verified with WeChat's public key, as an SDK would.

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lc_rs::rsa::{
    OAEP_SHA1_MGF1SHA1, OaepPrivateDecryptingKey, OaepPublicEncryptingKey, PrivateDecryptingKey,
    PublicEncryptingKey,
};
use axum::http::{HeaderMap, StatusCode};
use paymux_crypto::{RsaPrivateKey, RsaPublicKey, b64_decode, b64_encode, random_alphanumeric};
use paymux_mock_wechat::protocol::{
    Authorization, EncryptedResource, answer_message, decrypt_resource, request_message,
};
use paymux_mock_wechat::{KeyMode, PlatformKeys, WechatMerchant, WechatMock, WechatMockConfig};
use serde_json::{Value, json};

const APIV3_KEY: &str = "a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb";
const APPID: &str = "wxd678efh567hg6787";

struct Merchant {
    mchid: String,
    serial: String,
    key: RsaPrivateKey,
}

struct App {
    base: String,
    mock: WechatMock,
    http: reqwest::Client,
    /// WeChat Pay's public key and its id: answers are verified with it, names encrypted for it.
    wechat_key: RsaPublicKey,
    wechat_key_id: String,
}

/// A notification as received: headers and raw body.
type Received = (HeaderMap, Vec<u8>);

/// An answer: its status and its body as JSON (after the signature of a 2xx was checked).
struct Answer {
    status: StatusCode,
    body: Value,
}

async fn spawn_mock() -> App {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let config = WechatMockConfig {
        public_url: base.clone(),
        notify_delays: vec![Duration::from_millis(20); 3],
        timestamp_tolerance: Duration::from_secs(300),
    };
    let keys = PlatformKeys::generate().unwrap();
    let (wechat_key, wechat_key_id) = (keys.public_key(), keys.public_key_id());
    let mock = WechatMock::new(config, keys);
    tokio::spawn(mock.clone().serve(listener));
    App { base, mock, http: reqwest::Client::new(), wechat_key, wechat_key_id }
}

impl App {
    fn merchant(&self, mchid: &str) -> Merchant {
        let key = RsaPrivateKey::generate().unwrap();
        let serial = "3775B6A45ACD588826D15E583A95F5DD00C1A0B2".to_owned();
        self.mock.register_merchant(
            WechatMerchant {
                mchid: mchid.into(),
                appid: APPID.into(),
                merchant_serial: serial.clone(),
                merchant_public_key: key.public_key(),
                apiv3_key: APIV3_KEY.into(),
            },
            KeyMode::PublicKey,
        );
        Merchant { mchid: mchid.into(), serial, key }
    }

    /// A signed call; a 2xx answer's signature is checked before its body is read.
    async fn call(&self, m: &Merchant, method: &str, target: &str, body: &str) -> Answer {
        let req = self.signed(&self.http, m, method, target, body);
        let res = req.send().await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.bytes().await.unwrap();
        if status.is_success() {
            verify(&headers, &bytes, &self.wechat_key);
        }
        Answer { status, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null) }
    }

    /// A request signed as `m` would sign it, sent with `client`.
    fn signed(
        &self,
        client: &reqwest::Client,
        m: &Merchant,
        method: &str,
        target: &str,
        body: &str,
    ) -> reqwest::RequestBuilder {
        let nonce = random_alphanumeric(32);
        let ts = time::OffsetDateTime::now_utc().unix_timestamp().to_string();
        let message = request_message(method, target, &ts, &nonce, body.as_bytes());
        let auth = Authorization {
            mchid: m.mchid.clone(),
            nonce_str: nonce,
            signature: m.key.sign_base64(&message).unwrap(),
            timestamp: ts,
            serial_no: m.serial.clone(),
        };
        let mut req = client
            .request(method.parse().unwrap(), format!("{}{}", self.base, target))
            .header("authorization", auth.to_header())
            .header("accept", "application/json")
            .header("wechatpay-serial", &self.wechat_key_id);
        if !body.is_empty() {
            req = req.header("content-type", "application/json").body(body.to_owned());
        }
        req
    }

    async fn control(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self.http.request(method.parse().unwrap(), format!("{}{}", self.base, path));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    async fn settings(&self, settings: Value) {
        let (status, body) =
            self.control("POST", "/_sandbox/profitsharing/settings", Some(settings)).await;
        assert_eq!(status, 200, "{body}");
    }

    /// Creates a Native order (with the profit-sharing flag when `hold`), pays it, and returns
    /// its transaction id.
    async fn paid_order(&self, m: &Merchant, no: &str, total: i64, hold: bool) -> String {
        let mut body = json!({
            "appid": APPID,
            "mchid": m.mchid,
            "description": "分账测试",
            "out_trade_no": no,
            "notify_url": "http://127.0.0.1:9/notify",
            "amount": {"total": total, "currency": "CNY"},
        });
        if hold {
            body["settle_info"] = json!({"profit_sharing": true});
        }
        let res = self.call(m, "POST", "/v3/pay/transactions/native", &body.to_string()).await;
        assert_eq!(res.status, 200, "{}", res.body);
        let (status, order) =
            self.control("POST", &format!("/_sandbox/orders/{no}/pay"), None).await;
        assert_eq!(status, 200);
        order["transaction_id"].as_str().unwrap().to_owned()
    }

    async fn add_receiver(&self, m: &Merchant, kind: &str, account: &str, name: Option<&str>) {
        let mut body = json!({
            "appid": APPID,
            "type": kind,
            "account": account,
            "relation_type": "PARTNER",
        });
        if let Some(name) = name {
            body["name"] = json!(self.encrypt(name));
        }
        let res = self.call(m, "POST", "/v3/profitsharing/receivers/add", &body.to_string()).await;
        assert_eq!(res.status, 200, "{}", res.body);
    }

    /// RSAES-OAEP under WeChat Pay's public key, as SDKs encrypt sensitive fields.
    fn encrypt(&self, plain: &str) -> String {
        let key = OaepPublicEncryptingKey::new(
            PublicEncryptingKey::from_der(self.wechat_key.spki_der()).unwrap(),
        )
        .unwrap();
        let mut out = vec![0u8; key.ciphertext_size()];
        b64_encode(key.encrypt(&OAEP_SHA1_MGF1SHA1, plain.as_bytes(), &mut out, None).unwrap())
    }

    async fn split(&self, m: &Merchant, body: Value) -> Answer {
        self.call(m, "POST", "/v3/profitsharing/orders", &body.to_string()).await
    }

    async fn unsplit(&self, m: &Merchant, transaction_id: &str) -> i64 {
        let path = format!("/v3/profitsharing/transactions/{transaction_id}/amounts");
        let res = self.call(m, "GET", &path, "").await;
        assert_eq!(res.status, 200, "{}", res.body);
        assert_eq!(res.body["transaction_id"], transaction_id);
        res.body["unsplit_amount"].as_i64().unwrap()
    }

    /// Polls the split query (as paymux does) until the order is FINISHED.
    async fn finished(&self, m: &Merchant, out_order_no: &str, transaction_id: &str) -> Value {
        let path =
            format!("/v3/profitsharing/orders/{out_order_no}?transaction_id={transaction_id}");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let res = self.call(m, "GET", &path, "").await;
            assert_eq!(res.status, 200, "{}", res.body);
            if res.body["state"] == "FINISHED" {
                return res.body;
            }
            assert_eq!(res.body["state"], "PROCESSING");
            assert!(Instant::now() < deadline, "split {out_order_no} never finished");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn header(h: &HeaderMap, name: &str) -> String {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
}

fn verify(h: &HeaderMap, body: &[u8], key: &RsaPublicKey) {
    let message =
        answer_message(&header(h, "wechatpay-timestamp"), &header(h, "wechatpay-nonce"), body);
    key.verify_base64(&message, &header(h, "wechatpay-signature")).unwrap();
}

fn split_body(transaction_id: &str, out_order_no: &str, receivers: Value, unfreeze: bool) -> Value {
    json!({
        "appid": APPID,
        "transaction_id": transaction_id,
        "out_order_no": out_order_no,
        "receivers": receivers,
        "unfreeze_unsplit": unfreeze,
    })
}

fn fast() -> Value {
    json!({"min_wait_ms": 0, "processing_ms": 50})
}

#[tokio::test]
async fn a_split_is_accepted_processing_then_finishes_and_unfreeze_releases_the_rest() {
    let app = spawn_mock().await;
    app.settings(fast()).await;
    let m = app.merchant("1900000100");
    let tx = app.paid_order(&m, "ps_order_1", 10_000, true).await;
    // 0.6 % fee: 60 fen; the net 9940 is frozen.
    assert_eq!(app.unsplit(&m, &tx).await, 9_940);

    // A MERCHANT_ID receiver needs its name, encrypted for the key Wechatpay-Serial names; the
    // answer's name comes back encrypted for the merchant.
    let body = json!({
        "appid": APPID, "type": "MERCHANT_ID", "account": "86693852",
        "name": app.encrypt("示例分账商户"), "relation_type": "SERVICE_PROVIDER",
    });
    let res = app.call(&m, "POST", "/v3/profitsharing/receivers/add", &body.to_string()).await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(
        (res.body["type"].as_str(), res.body["account"].as_str()),
        (Some("MERCHANT_ID"), Some("86693852"))
    );
    let der = m.key.to_pkcs8_der().unwrap();
    let private =
        OaepPrivateDecryptingKey::new(PrivateDecryptingKey::from_pkcs8(&der).unwrap()).unwrap();
    let mut out = vec![0u8; private.min_output_size()];
    let sealed = b64_decode(res.body["name"].as_str().unwrap()).unwrap();
    let name = private.decrypt(&OAEP_SHA1_MGF1SHA1, &sealed, &mut out, None).unwrap();
    assert_eq!(std::str::from_utf8(name).unwrap(), "示例分账商户");
    app.add_receiver(&m, "PERSONAL_OPENID", "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o", None).await;

    let receivers = json!([
        {"type": "MERCHANT_ID", "account": "86693852", "amount": 888, "description": "分给商户A"},
        {"type": "PERSONAL_OPENID", "account": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o", "amount": 100, "description": "分给个人",
         "name": app.encrypt("张三")},
    ]);
    // A personal receiver's name is encrypted too: without a key it reads, the split is refused.
    let mut unreadable = split_body(&tx, "P20150806125346", receivers.clone(), false);
    unreadable["receivers"][1]["name"] = json!(b64_encode(b"plain"));
    let res = app.split(&m, unreadable).await;
    assert_eq!(
        (res.status, res.body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("PARAM_ERROR"))
    );
    let body = split_body(&tx, "P20150806125346", receivers, false);
    let res = app.split(&m, body.clone()).await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(res.body["state"], "PROCESSING");
    assert_eq!(res.body["transaction_id"], tx.as_str());
    assert!(res.body["order_id"].as_str().unwrap().starts_with("30"));
    let lines = res.body["receivers"].as_array().unwrap();
    assert_eq!(lines.len(), 2);
    assert!(lines.iter().all(|l| l["result"] == "PENDING" && l["detail_id"].is_string()));
    let order_id = res.body["order_id"].clone();

    // The same out_order_no again counts as the same split.
    let res = app.split(&m, body).await;
    assert_eq!((res.status, res.body["order_id"].clone()), (StatusCode::OK, order_id.clone()));

    let done = app.finished(&m, "P20150806125346", &tx).await;
    assert_eq!(done["order_id"], order_id);
    let lines = done["receivers"].as_array().unwrap();
    assert!(lines.iter().all(|l| l["result"] == "SUCCESS" && l.get("fail_reason").is_none()));
    assert_eq!(lines[0]["amount"], 888);
    assert_eq!(lines[0]["description"], "分给商户A");
    assert_eq!(app.unsplit(&m, &tx).await, 9_940 - 988);

    let (_, receiver) = app.control("GET", "/_sandbox/receivers/86693852", None).await;
    assert_eq!(receiver["balance"], 888);
    assert_eq!(receiver["balances"]["MERCHANT_ID"], 888);

    // Unfreeze: its own out_order_no; the remainder goes to the merchant.
    let body = json!({"transaction_id": tx, "out_order_no": "U20150806125346", "description": "解冻全部剩余资金"});
    let res = app.call(&m, "POST", "/v3/profitsharing/orders/unfreeze", &body.to_string()).await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(res.body["receivers"][0]["account"], m.mchid.as_str());
    assert_eq!(res.body["receivers"][0]["amount"], 9_940 - 988);
    app.finished(&m, "U20150806125346", &tx).await;
    assert_eq!(app.unsplit(&m, &tx).await, 0);

    // Nothing left: a split, or another unfreeze, is refused 403 NOT_ENOUGH.
    let one =
        json!([{"type": "MERCHANT_ID", "account": "86693852", "amount": 1, "description": "再分"}]);
    let res = app.split(&m, split_body(&tx, "P2", one, false)).await;
    assert_eq!(
        (res.status, res.body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("NOT_ENOUGH"))
    );
    let body = json!({"transaction_id": tx, "out_order_no": "U2", "description": "再解冻"});
    let res = app.call(&m, "POST", "/v3/profitsharing/orders/unfreeze", &body.to_string()).await;
    assert_eq!(
        (res.status, res.body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("NOT_ENOUGH"))
    );

    let (_, all) = app.control("GET", "/_sandbox/profitsharing", None).await;
    assert_eq!(all["holds"][0]["finished"], true);
    assert_eq!(all["available"][m.mchid.as_str()], 100_000_000 + 9_940 - 988);
}

#[tokio::test]
async fn the_rules_are_refused_with_wechats_codes() {
    let app = spawn_mock().await;
    let m = app.merchant("1900000101");
    app.add_receiver(&m, "MERCHANT_ID", "86693852", Some("示例分账商户")).await;
    let line = |amount: Value| json!([{"type": "MERCHANT_ID", "account": "86693852", "amount": amount, "description": "佣金"}]);

    // The v2 flag is not a v3 field.
    let body = json!({
        "appid": APPID, "mchid": m.mchid, "description": "x", "out_trade_no": "ps_v2_flag",
        "notify_url": "http://127.0.0.1:9/n", "amount": {"total": 100}, "profit_sharing": "Y",
    });
    let res = app.call(&m, "POST", "/v3/pay/transactions/native", &body.to_string()).await;
    assert_eq!(res.status, 400);
    assert_eq!(res.body["code"], "PARAM_ERROR");
    assert_eq!(res.body["detail"]["value"], json!(["/body/profit_sharing"]));

    // Too early after the payment (the default one-minute wait): retry later.
    let tx = app.paid_order(&m, "ps_rules_1", 10_000, true).await;
    let res = app.split(&m, split_body(&tx, "R1", line(json!(100)), false)).await;
    assert_eq!(
        (res.status, res.body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("INVALID_REQUEST"))
    );
    assert_eq!(res.body["message"], "订单处理中，请稍后重试");

    app.settings(fast()).await;
    let plain = app.paid_order(&m, "ps_rules_2", 10_000, false).await;
    let res = app.split(&m, split_body(&plain, "R2", line(json!(100)), false)).await;
    assert_eq!(res.status, 400);
    assert_eq!(res.body["message"], "非分账订单不支持分账");
    assert_eq!(app.unsplit(&m, &plain).await, 0);

    // A receiver never added.
    let stranger =
        json!([{"type": "MERCHANT_ID", "account": "10000001", "amount": 1, "description": "x"}]);
    let res = app.split(&m, split_body(&tx, "R3", stranger, false)).await;
    assert_eq!(res.status, 400);
    assert_eq!(res.body["message"], "分账接收方关系不存在,请检查参数中每个接收方的关系");

    // Over the 30 % cap (3000 of 10000), counting every split of the order.
    let res = app.split(&m, split_body(&tx, "R4", line(json!(3_001)), false)).await;
    assert_eq!(
        (res.status, res.body["message"].as_str()),
        (StatusCode::BAD_REQUEST, Some("分账金额超出最大分账比例"))
    );
    let res = app.split(&m, split_body(&tx, "R5", line(json!(2_000)), false)).await;
    assert_eq!(res.status, 200);
    let res = app.split(&m, split_body(&tx, "R6", line(json!(1_001)), false)).await;
    assert_eq!(res.body["message"], "分账金额超出最大分账比例");
    // Splits to the merchant itself are not capped, but never exceed what is frozen.
    let own = |amount: i64| json!([{"type": "MERCHANT_ID", "account": m.mchid, "amount": amount, "description": "自己"}]);
    let res = app.split(&m, split_body(&tx, "R7", own(7_941), false)).await;
    assert_eq!(
        (res.status, res.body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("NOT_ENOUGH"))
    );
    let res = app.split(&m, split_body(&tx, "R8", own(5_000), false)).await;
    assert_eq!(res.status, 200, "{}", res.body);

    // Amounts are JSON numbers; undefined fields (notify_url) are refused by name.
    let res = app.split(&m, split_body(&tx, "R9", line(json!("100")), false)).await;
    assert_eq!(
        (res.status, res.body["message"].as_str()),
        (StatusCode::BAD_REQUEST, Some("分账接收方列表格式错误"))
    );
    let mut body = split_body(&tx, "R10", line(json!(1)), false);
    body["notify_url"] = json!("http://127.0.0.1:9/n");
    let res = app.split(&m, body).await;
    assert_eq!(res.body["code"], "PARAM_ERROR");
    assert_eq!(res.body["detail"]["value"], json!(["/body/notify_url"]));

    // The same out_order_no with other parameters.
    let res = app.split(&m, split_body(&tx, "R5", line(json!(1_999)), false)).await;
    assert_eq!(res.body["code"], "INVALID_REQUEST");

    // An unknown split order; a name sent without Wechatpay-Serial's key is unreadable.
    let res = app
        .call(&m, "GET", &format!("/v3/profitsharing/orders/NOPE?transaction_id={tx}"), "")
        .await;
    assert_eq!(
        (res.status, res.body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("RESOURCE_NOT_EXISTS"))
    );
    let body = json!({"appid": APPID, "type": "MERCHANT_ID", "account": "86693853",
                      "name": b64_encode(b"not encrypted"), "relation_type": "STORE"});
    let res = app.call(&m, "POST", "/v3/profitsharing/receivers/add", &body.to_string()).await;
    assert_eq!(res.body["code"], "PARAM_ERROR");
    let body = json!({"appid": APPID, "type": "MERCHANT_ID", "account": "86693853", "relation_type": "STORE"});
    let res = app.call(&m, "POST", "/v3/profitsharing/receivers/add", &body.to_string()).await;
    assert_eq!(res.body["code"], "PARAM_ERROR", "a merchant receiver needs its name");

    // A deleted receiver can no longer be split to.
    let body = json!({"appid": APPID, "type": "MERCHANT_ID", "account": "86693852"});
    let res = app.call(&m, "POST", "/v3/profitsharing/receivers/delete", &body.to_string()).await;
    assert_eq!((res.status, res.body["account"].as_str()), (StatusCode::OK, Some("86693852")));
    let res = app.split(&m, split_body(&tx, "R11", line(json!(1)), false)).await;
    assert_eq!(res.body["message"], "分账接收方关系不存在,请检查参数中每个接收方的关系");

    // Everything split: an unfreeze has nothing left and is refused as finished.
    let small = app.paid_order(&m, "ps_rules_3", 1_000, true).await;
    let res = app.split(&m, split_body(&small, "R12", own(994), false)).await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(app.unsplit(&m, &small).await, 0);
    let body = json!({"transaction_id": small, "out_order_no": "R13", "description": "解冻"});
    let res = app.call(&m, "POST", "/v3/profitsharing/orders/unfreeze", &body.to_string()).await;
    assert_eq!(
        (res.status, res.body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("NOT_ENOUGH"))
    );
}

#[tokio::test]
async fn a_refused_receiver_line_is_closed_and_its_money_goes_back_to_the_merchant() {
    let app = spawn_mock().await;
    let mut settings = fast();
    settings["refused_receivers"] = json!({"86693854": "ACCOUNT_ABNORMAL"});
    settings["processing_ms"] = json!(300);
    app.settings(settings).await;
    let m = app.merchant("1900000102");
    app.add_receiver(&m, "MERCHANT_ID", "86693852", Some("甲")).await;
    app.add_receiver(&m, "MERCHANT_ID", "86693854", Some("乙")).await;
    let tx = app.paid_order(&m, "ps_closed_1", 10_000, true).await;
    let receivers = json!([
        {"type": "MERCHANT_ID", "account": "86693852", "amount": 1_000, "description": "好"},
        {"type": "MERCHANT_ID", "account": "86693854", "amount": 500, "description": "坏"},
    ]);
    let res = app.split(&m, split_body(&tx, "C1", receivers, true)).await;
    assert_eq!(res.body["state"], "PROCESSING");
    let done = app.finished(&m, "C1", &tx).await;
    assert_eq!(done["receivers"][0]["result"], "SUCCESS");
    assert_eq!(done["receivers"][1]["result"], "CLOSED");
    assert_eq!(done["receivers"][1]["fail_reason"], "ACCOUNT_ABNORMAL");
    let (_, bad) = app.control("GET", "/_sandbox/receivers/86693854", None).await;
    assert_eq!(bad["balance"], 0);
    let (_, all) = app.control("GET", "/_sandbox/profitsharing", None).await;
    let hold = &all["holds"][0];
    assert_eq!((hold["split"].as_i64(), hold["returned"].as_i64()), (Some(1_000), Some(500)));
    // unfreeze_unsplit released 9940 - 1500 at once; the closed 500 came back later.
    assert_eq!(all["available"][m.mchid.as_str()], 100_000_000 + 8_440 + 500);
}

#[tokio::test]
async fn refunds_follow_wechats_table_for_frozen_and_split_funds() {
    let app = spawn_mock().await;
    app.settings(fast()).await;
    let m = app.merchant("1900000103");
    app.add_receiver(&m, "MERCHANT_ID", "86693852", Some("甲")).await;
    let tx = app.paid_order(&m, "ps_refund_1", 10_000, true).await;
    let refund = |no: &str, amount: i64| {
        json!({"out_trade_no": "ps_refund_1", "out_refund_no": no,
               "amount": {"refund": amount, "total": 10_000, "currency": "CNY"}})
        .to_string()
    };
    let line = json!([{"type": "MERCHANT_ID", "account": "86693852", "amount": 2_000, "description": "佣金"}]);
    let res = app.split(&m, split_body(&tx, "F1", line, false)).await;
    assert_eq!(res.status, 200);
    app.finished(&m, "F1", &tx).await;
    assert_eq!(app.unsplit(&m, &tx).await, 7_940);

    // Partly split: a refund within the unsplit frozen amount comes out of it...
    let res = app.call(&m, "POST", "/v3/refund/domestic/refunds", &refund("FR1", 1_000)).await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(app.unsplit(&m, &tx).await, 6_940);
    // ...one above it waits for the split to finish.
    let res = app.call(&m, "POST", "/v3/refund/domestic/refunds", &refund("FR2", 7_000)).await;
    assert_eq!(
        (res.status, res.body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("RULE_LIMIT"))
    );
    assert_eq!(res.body["message"], "申请退款金额大于剩余未分账金额,请等待分账完成后再试");

    // Unfrozen: the available balance pays it.
    let body = json!({"transaction_id": tx, "out_order_no": "FU", "description": "解冻"});
    let res = app.call(&m, "POST", "/v3/profitsharing/orders/unfreeze", &body.to_string()).await;
    assert_eq!(res.status, 200);
    let res = app.call(&m, "POST", "/v3/refund/domestic/refunds", &refund("FR3", 7_000)).await;
    assert_eq!(res.status, 200, "{}", res.body);
    let (_, all) = app.control("GET", "/_sandbox/profitsharing", None).await;
    assert_eq!(all["available"][m.mchid.as_str()], 100_000_000 + 6_940 - 7_000);
}

#[tokio::test]
async fn a_receiver_with_a_notify_url_gets_the_split_notification_encrypted_for_itself() {
    let app = spawn_mock().await;
    let received: Arc<Mutex<Vec<Received>>> = Arc::default();
    let r = received.clone();
    let router = axum::Router::new().route(
        "/ps",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let r = r.clone();
            async move {
                r.lock().unwrap().push((headers, body.to_vec()));
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/ps", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });

    let receiver_mchid = "1900000999";
    app.merchant(receiver_mchid);
    let mut settings = fast();
    settings["receiver_notify_urls"] = json!({ receiver_mchid: url });
    app.settings(settings).await;
    let m = app.merchant("1900000104");
    app.add_receiver(&m, "MERCHANT_ID", receiver_mchid, Some("平台")).await;
    let tx = app.paid_order(&m, "ps_notify_1", 5_000, true).await;
    let line = json!([{"type": "MERCHANT_ID", "account": receiver_mchid, "amount": 150, "description": "平台佣金"}]);
    app.split(&m, split_body(&tx, "N1", line, true)).await;
    let done = app.finished(&m, "N1", &tx).await;

    let deadline = Instant::now() + Duration::from_secs(10);
    let (headers, body) = loop {
        if let Some(first) = received.lock().unwrap().first().cloned() {
            break first;
        }
        assert!(Instant::now() < deadline, "no profit-sharing notification");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    verify(&headers, &body, &app.wechat_key);
    let n: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (n["event_type"].as_str(), n["summary"].as_str()),
        (Some("TRANSACTION.SUCCESS"), Some("分账"))
    );
    let resource: EncryptedResource = serde_json::from_value(n["resource"].clone()).unwrap();
    let plain: Value =
        serde_json::from_slice(&decrypt_resource(APIV3_KEY.as_bytes(), &resource).unwrap())
            .unwrap();
    assert_eq!(plain["mchid"], m.mchid.as_str());
    assert_eq!(plain["transaction_id"], tx.as_str());
    assert_eq!(plain["out_order_no"], "N1");
    assert_eq!(plain["order_id"], done["order_id"]);
    assert_eq!(
        plain["receiver"],
        json!({"type": "MERCHANT_ID", "account": receiver_mchid, "amount": 150, "description": "平台佣金"})
    );
    assert!(plain["success_time"].as_str().unwrap().ends_with("+08:00"));
}

#[tokio::test]
async fn returns_take_money_back_from_a_merchant_receiver_only() {
    let app = spawn_mock().await;
    // Long enough that the split is surely still PROCESSING when the first return is tried.
    app.settings(json!({"min_wait_ms": 0, "processing_ms": 2_000})).await;
    let m = app.merchant("1900000105");
    app.add_receiver(&m, "MERCHANT_ID", "86693852", Some("甲")).await;
    app.add_receiver(&m, "PERSONAL_OPENID", "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o", None).await;
    let tx = app.paid_order(&m, "ps_return_1", 10_000, true).await;
    let receivers = json!([
        {"type": "MERCHANT_ID", "account": "86693852", "amount": 1_000, "description": "商户"},
        {"type": "PERSONAL_OPENID", "account": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o", "amount": 100, "description": "个人"},
    ]);
    let split = app.split(&m, split_body(&tx, "RT1", receivers, false)).await;
    let order_id = split.body["order_id"].as_str().unwrap().to_owned();
    let ret = |no: &str, from: &str, amount: i64| {
        json!({"out_order_no": "RT1", "out_return_no": no, "return_mchid": from,
               "amount": amount, "description": "用户退款"})
        .to_string()
    };
    const PATH: &str = "/v3/profitsharing/return-orders";

    // Not before the split has finished.
    let res = app.call(&m, "POST", PATH, &ret("B0", "86693852", 100)).await;
    assert_eq!(
        (res.status, res.body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("INVALID_REQUEST"))
    );
    app.finished(&m, "RT1", &tx).await;

    let res = app.call(&m, "POST", PATH, &ret("B1", "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o", 50)).await;
    assert_eq!(res.body["code"], "INVALID_REQUEST", "never from a personal receiver");
    let res = app.call(&m, "POST", PATH, &ret("B2", "86693852", 1_001)).await;
    assert_eq!(res.body["code"], "INVALID_REQUEST", "more than the receiver got");

    let res = app.call(&m, "POST", PATH, &ret("B3", "86693852", 600)).await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(res.body["result"], "PROCESSING");
    assert_eq!(res.body["order_id"], order_id.as_str());
    let return_id = res.body["return_id"].clone();
    let again = app.call(&m, "POST", PATH, &ret("B3", "86693852", 600)).await;
    assert_eq!(again.body["return_id"], return_id, "the same out_return_no is the same return");

    let query = format!("{PATH}/B3?out_order_no=RT1");
    let deadline = Instant::now() + Duration::from_secs(10);
    let done = loop {
        let res = app.call(&m, "GET", &query, "").await;
        assert_eq!(res.status, 200, "{}", res.body);
        if res.body["result"] != "PROCESSING" {
            break res.body;
        }
        assert!(Instant::now() < deadline, "the return never ended");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!((done["result"].as_str(), done["amount"].as_i64()), (Some("SUCCESS"), Some(600)));
    let (_, receiver) = app.control("GET", "/_sandbox/receivers/86693852", None).await;
    assert_eq!(receiver["balance"], 400);
    let res = app.call(&m, "POST", PATH, &ret("B4", "86693852", 401)).await;
    assert_eq!(res.body["code"], "INVALID_REQUEST", "600 of 1000 already returned");

    // Faults: the receiver's account refuses; a receiver that never agreed to returns.
    let mut settings = fast();
    settings["refused_returns"] = json!({"86693852": "ACCOUNT_ABNORMAL"});
    app.settings(settings).await;
    app.call(&m, "POST", PATH, &ret("B5", "86693852", 100)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let failed = loop {
        let res = app.call(&m, "GET", &format!("{PATH}/B5?out_order_no=RT1"), "").await;
        if res.body["result"] != "PROCESSING" {
            break res.body;
        }
        assert!(Instant::now() < deadline, "the return never ended");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        (failed["result"].as_str(), failed["fail_reason"].as_str()),
        (Some("FAILED"), Some("ACCOUNT_ABNORMAL"))
    );
    let mut settings = fast();
    settings["no_return_consent"] = json!(["86693852"]);
    app.settings(settings).await;
    let res = app.call(&m, "POST", PATH, &ret("B6", "86693852", 100)).await;
    assert_eq!((res.status, res.body["code"].as_str()), (StatusCode::FORBIDDEN, Some("NO_AUTH")));
    let res = app.call(&m, "GET", &format!("{PATH}/B404?out_order_no=RT1"), "").await;
    assert_eq!(res.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn split_requests_are_rate_limited_and_queries_can_answer_404_for_a_while() {
    let app = spawn_mock().await;
    let mut settings = fast();
    settings["split_requests_per_second"] = json!(1);
    settings["not_found_queries"] = json!(2);
    app.settings(settings).await;
    let m = app.merchant("1900000106");
    let tx = app.paid_order(&m, "ps_rate_1", 1_000, true).await;
    let own =
        json!([{"type": "MERCHANT_ID", "account": m.mchid, "amount": 10, "description": "自己"}]);
    // Three requests well within a second span at most two seconds: one is over the limit.
    let mut codes = Vec::new();
    for no in ["Q1", "Q2", "Q3"] {
        let res = app.split(&m, split_body(&tx, no, own.clone(), false)).await;
        codes.push((res.status, res.body["code"].as_str().map(str::to_owned)));
    }
    assert!(
        codes.contains(&(StatusCode::TOO_MANY_REQUESTS, Some("FREQUENCY_LIMITED".into()))),
        "{codes:?}"
    );
    let accepted: Vec<&str> = ["Q1", "Q2", "Q3"]
        .into_iter()
        .zip(&codes)
        .filter(|(_, (status, _))| *status == StatusCode::OK)
        .map(|(no, _)| no)
        .collect();
    let no = accepted.first().expect("at least one split was accepted");

    // The first two queries answer 404 as if the split did not exist; then the split.
    let path = format!("/v3/profitsharing/orders/{no}?transaction_id={tx}");
    for _ in 0..2 {
        let res = app.call(&m, "GET", &path, "").await;
        assert_eq!(
            (res.status, res.body["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("RESOURCE_NOT_EXISTS"))
        );
    }
    let res = app.call(&m, "GET", &path, "").await;
    assert_eq!((res.status, res.body["out_order_no"].as_str()), (StatusCode::OK, Some(*no)));
}

#[tokio::test]
async fn a_split_whose_answer_never_comes_is_accepted_and_found_by_the_query() {
    let app = spawn_mock().await;
    app.settings(fast()).await;
    let m = app.merchant("1900000107");
    let tx = app.paid_order(&m, "ps_timeout_1", 1_000, true).await;
    let (status, _) = app
        .control(
            "POST",
            "/_sandbox/faults",
            Some(json!({"timeout_after_commit": ["profitsharing"]})),
        )
        .await;
    assert_eq!(status, 200);
    let own =
        json!([{"type": "MERCHANT_ID", "account": m.mchid, "amount": 100, "description": "自己"}]);
    let body = split_body(&tx, "TO1", own, false).to_string();
    let impatient = reqwest::Client::builder().timeout(Duration::from_millis(500)).build().unwrap();
    let sent = app.signed(&impatient, &m, "POST", "/v3/profitsharing/orders", &body).send().await;
    assert!(sent.is_err_and(|e| e.is_timeout()), "no answer");
    // The unknown outcome is resolved by querying the same out_order_no: the split exists.
    let done = app.finished(&m, "TO1", &tx).await;
    assert_eq!(done["receivers"][0]["result"], "SUCCESS");
    assert_eq!(app.unsplit(&m, &tx).await, 994 - 100);
}

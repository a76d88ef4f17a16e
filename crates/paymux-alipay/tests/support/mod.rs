//! The real Alipay mock on a loopback port, for end-to-end tests of the adapter. Between the
//! adapter and the mock sits a thin layer that records every request's parameters and can spoil
//! one answer (a 502, or a signed `ACQ.SYSTEM_ERROR`, before or after the mock did the work),
//! the answers the mock itself does not give.

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use paymux_alipay::protocol::{self, Params};
use paymux_alipay::{AlipayAccountConfig, AlipayChannel};
use paymux_core::{
    Channel, ChannelOrderNo, ChannelPayment, CreatePayment, Currency, Money, PaymentMethod,
    PaymentRef,
};
use paymux_crypto::RsaPrivateKey;
use paymux_mock_alipay::{AlipayMock, AlipayMockConfig};
use serde_json::Value;
use time::OffsetDateTime;

pub const APP_ID: &str = "2021000000000088";
pub const SELLER_ID: &str = "2088000000000001";
/// Where the mock posts payment notifications: nobody listens, and these tests do not need them.
const NOTIFY_URL: &str = "http://127.0.0.1:9/callbacks/alipay/acct_1";

/// How the layer spoils the next answer to one method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spoil {
    /// The mock does the work; the adapter gets HTTP 502 instead of its answer.
    Http502AfterWork,
    /// The mock does the work; the adapter gets a signed `40004 ACQ.SYSTEM_ERROR`.
    SystemErrorAfterWork,
    /// The request never reaches the mock; the adapter gets a signed `40004 ACQ.SYSTEM_ERROR`.
    SystemErrorInstead,
    /// A settle.query answer names its receivers as Alipay may: an `openId` line only by
    /// `trans_in_open_id`, a `loginName` line by the user id [`LOGIN_USER_ID`]; re-signed.
    OtherReceiverIds,
}

/// The user id [`Spoil::OtherReceiverIds`] reports a `loginName` receiver under.
pub const LOGIN_USER_ID: &str = "2088000000000777";

struct Tap {
    alipay_key: RsaPrivateKey,
    sent: Mutex<Vec<Params>>,
    spoils: Mutex<Vec<(String, Spoil)>>,
}

impl Tap {
    fn system_error(&self, method: &str) -> Response {
        let node = r#"{"code":"40004","msg":"Business Failed","sub_code":"ACQ.SYSTEM_ERROR","sub_msg":"系统错误"}"#;
        let sign = self.alipay_key.sign_base64(node.as_bytes()).unwrap();
        let body =
            format!(r#"{{"{}":{node},"sign":"{sign}"}}"#, protocol::response_node_name(method));
        ([("content-type", "application/json;charset=utf-8")], body).into_response()
    }

    /// The answer to `method` with its node changed by `change`, signed again.
    async fn rewritten(&self, method: &str, answer: Response, change: fn(&mut Value)) -> Response {
        let bytes = axum::body::to_bytes(answer.into_body(), 1 << 20).await.unwrap();
        let mut whole: Value = serde_json::from_slice(&bytes).unwrap();
        let name = protocol::response_node_name(method);
        change(&mut whole[&name]);
        let node = serde_json::to_string(&whole[&name]).unwrap();
        let sign = self.alipay_key.sign_base64(node.as_bytes()).unwrap();
        let body = format!(r#"{{"{name}":{node},"sign":"{sign}"}}"#);
        ([("content-type", "application/json;charset=utf-8")], body).into_response()
    }
}

/// Renames the receivers of a settle.query node (see [`Spoil::OtherReceiverIds`]).
fn other_receiver_ids(node: &mut Value) {
    let Some(lines) = node["royalty_detail_list"].as_array_mut() else { return };
    for line in lines {
        let line = line.as_object_mut().unwrap();
        match line.get("trans_in_type").and_then(Value::as_str) {
            Some("openId") => {
                let open_id = line.remove("trans_in").unwrap();
                line.remove("trans_in_type");
                line.insert("trans_in_open_id".into(), open_id);
            }
            Some("loginName") => {
                line.insert("trans_in".into(), LOGIN_USER_ID.into());
                line.insert("trans_in_type".into(), "userId".into());
            }
            _ => {}
        }
    }
}

async fn tap_layer(State(tap): State<Arc<Tap>>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let mut params =
        protocol::decode_form(parts.uri.query().unwrap_or_default().as_bytes()).unwrap_or_default();
    params.extend(protocol::decode_form(&bytes).unwrap_or_default());
    let method = params.get("method").cloned().unwrap_or_default();
    tap.sent.lock().unwrap().push(params);
    let spoil = {
        let mut spoils = tap.spoils.lock().unwrap();
        let at = spoils.iter().position(|(m, _)| *m == method);
        at.map(|i| spoils.remove(i).1)
    };
    if spoil == Some(Spoil::SystemErrorInstead) {
        return tap.system_error(&method);
    }
    let response = next.run(Request::from_parts(parts, Body::from(bytes))).await;
    match spoil {
        Some(Spoil::Http502AfterWork) => {
            (StatusCode::BAD_GATEWAY, "<html>502 Bad Gateway</html>").into_response()
        }
        Some(Spoil::SystemErrorAfterWork) => tap.system_error(&method),
        Some(Spoil::OtherReceiverIds) => tap.rewritten(&method, response, other_receiver_ids).await,
        _ => response,
    }
}

pub struct Sandbox {
    base: String,
    app_key: RsaPrivateKey,
    alipay_public_key: String,
    tap: Arc<Tap>,
    http: reqwest::Client,
}

/// Starts a mock of its own, with the tap in front.
pub async fn start() -> Sandbox {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let alipay_key = RsaPrivateKey::generate().unwrap();
    let mock = AlipayMock::new(AlipayMockConfig {
        public_url: base.clone(),
        alipay_private_key: alipay_key.clone(),
        seller_id: SELLER_ID.into(),
        notify_delays: vec![Duration::from_millis(20)],
        timestamp_tolerance: Some(Duration::from_secs(900)),
    });
    let app_key = RsaPrivateKey::generate().unwrap();
    mock.register_app(APP_ID, app_key.public_key());
    let alipay_public_key = mock.alipay_public_key().to_spki_base64();
    let tap =
        Arc::new(Tap { alipay_key, sent: Mutex::new(Vec::new()), spoils: Mutex::new(Vec::new()) });
    let app = mock.router().layer(middleware::from_fn_with_state(tap.clone(), tap_layer));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Sandbox { base, app_key, alipay_public_key, tap, http: reqwest::Client::new() }
}

impl Sandbox {
    /// The adapter for the mock's app, with `timeout` per call and the account's
    /// `max_share_bps`.
    pub fn channel_with(&self, timeout: Duration, max_share_bps: Option<u32>) -> AlipayChannel {
        let config = AlipayAccountConfig {
            app_id: APP_ID.into(),
            app_private_key: self.app_key.to_pkcs8_pem().unwrap(),
            alipay_public_key: self.alipay_public_key.clone(),
            gateway_url: format!("{}/gateway.do", self.base),
            seller_id: Some(SELLER_ID.into()),
            app_cert: None,
            alipay_root_cert: None,
            max_share_bps,
        };
        AlipayChannel::new(&config, timeout).unwrap()
    }

    pub fn channel(&self) -> AlipayChannel {
        self.channel_with(Duration::from_secs(10), None)
    }

    /// Spoils the next answer to `method`.
    pub fn spoil(&self, method: &str, how: Spoil) {
        self.tap.spoils.lock().unwrap().push((method.to_owned(), how));
    }

    /// The `biz_content` of every request for `method` so far, in order.
    pub fn sent(&self, method: &str) -> Vec<Value> {
        self.tap
            .sent
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.get("method").map(String::as_str) == Some(method))
            .map(|p| serde_json::from_str(&p["biz_content"]).unwrap())
            .collect()
    }

    async fn post_json(&self, path: &str, body: &Value) {
        let res = self.http.post(format!("{}{path}", self.base)).json(body).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}: {}", res.text().await.unwrap());
    }

    /// Replaces the royalty rules and faults (`/_sandbox/royalty/settings`).
    pub async fn royalty_settings(&self, settings: Value) {
        self.post_json("/_sandbox/royalty/settings", &settings).await;
    }

    /// Replaces the gateway's faults (`/_sandbox/faults`).
    pub async fn faults(&self, faults: Value) {
        self.post_json("/_sandbox/faults", &faults).await;
    }

    pub async fn get(&self, path: &str) -> Value {
        self.http.get(format!("{}{path}", self.base)).send().await.unwrap().json().await.unwrap()
    }

    /// What a receiver was paid, as a yuan string.
    pub async fn balance(&self, account: &str) -> String {
        self.get(&format!("/_sandbox/receivers/{account}")).await["balance"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// The buyer pays (the sandbox control API).
    pub async fn pay(&self, out_trade_no: &str) {
        let url = format!("{}/_sandbox/orders/{out_trade_no}/pay", self.base);
        let res = self.http.post(url).send().await.unwrap();
        assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    }

    /// A QR payment of `fen`, held or not, created through the adapter, paid by the buyer and
    /// queried: the attempt as paymux then holds it, `channel_trade_no` set.
    pub async fn paid_payment(&self, channel: &AlipayChannel, fen: i64, hold: bool) -> PaymentRef {
        let req = create_request(PaymentMethod::Qr, fen, hold);
        let created = channel.create(&req).await.unwrap();
        self.pay(req.channel_order_no.as_str()).await;
        let mut payment = payment_ref(&req);
        payment.channel_data = created.channel_data;
        match channel.query(&payment).await.unwrap() {
            ChannelPayment::Succeeded { channel_trade_no, amount, .. } => {
                assert_eq!(amount, cny(fen));
                payment.channel_trade_no = Some(channel_trade_no);
            }
            other => panic!("not paid: {other:?}"),
        }
        payment
    }
}

pub fn cny(fen: i64) -> Money {
    Money::new(fen, Currency::Cny).unwrap()
}

/// A create request with a fresh order number.
pub fn create_request(method: PaymentMethod, fen: i64, hold: bool) -> CreatePayment {
    let now = OffsetDateTime::now_utc();
    CreatePayment {
        channel_order_no: ChannelOrderNo::generate(),
        amount: cny(fen),
        subject: "分账测试".into(),
        method,
        created_at: now,
        expires_at: now + time::Duration::minutes(30),
        notify_url: NOTIFY_URL.into(),
        return_url: None,
        client_ip: None,
        payer_openid: None,
        auth_code: None,
        hold,
    }
}

/// The attempt of a create request, not paid yet.
pub fn payment_ref(req: &CreatePayment) -> PaymentRef {
    PaymentRef {
        channel_order_no: req.channel_order_no.clone(),
        channel_trade_no: None,
        amount: req.amount,
        created_at: req.created_at,
        expires_at: req.expires_at,
        channel_data: Value::Null,
    }
}

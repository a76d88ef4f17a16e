//! The small ACP merchant both test files drive the mock with: written here from the protocol
//! notes, it signs its requests (signMethod 01), parses raw `k=v&` answers without URL-decoding
//! them, and verifies every answer and notification by the chain. Each test binary uses a part.

#![allow(dead_code, clippy::unwrap_used)]

pub use std::collections::BTreeMap;
pub use std::sync::{Arc, Mutex};
pub use std::time::{Duration, Instant};

pub use aws_lc_rs::rsa::{Pkcs1PrivateDecryptingKey, PrivateDecryptingKey};
pub use axum::body::Bytes;
pub use axum::extract::State;
pub use axum::http::StatusCode;
pub use axum::routing::post;
pub use paymux_crypto::{RsaPrivateKey, b64_decode, sha256_hex};
pub use paymux_mock_unionpay::{
    Faults, UnionpayKeys, UnionpayMerchant, UnionpayMock, UnionpayMockConfig, keys,
};
pub use serde_json::Value;
pub use time::OffsetDateTime;
pub use time::macros::{format_description, offset};
pub use x509_parser::prelude::{FromDer, X509Certificate};

pub type Fields = BTreeMap<String, String>;

pub const MER_ID: &str = "777290058110048";
pub const SHOP: &str = "Paymux Test Shop";
pub const OWNER: &str = "中国银联股份有限公司";

/// The merchant's notification endpoint: answers 500 to the first `refuse` posts, then 200,
/// and keeps every post it received.
#[derive(Default)]
pub struct Receiver {
    pub refuse: Mutex<usize>,
    pub received: Mutex<Vec<Fields>>,
}

pub async fn receive(State(r): State<Arc<Receiver>>, body: Bytes) -> StatusCode {
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

pub struct Sandbox {
    pub base: String,
    pub notify_url: String,
    pub mock: UnionpayMock,
    pub keys: UnionpayKeys,
    pub merchant_key: RsaPrivateKey,
    pub merchant_key_pem: String,
    pub cert_id: String,
    pub receiver: Arc<Receiver>,
    pub http: reqwest::Client,
}

pub async fn start() -> Sandbox {
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
        merchant_key_pem: merchant.private_key.to_pkcs8_pem().unwrap(),
        merchant_key: merchant.private_key,
        cert_id: merchant.cert_id,
        receiver,
        http,
    }
}

pub fn now_compact() -> String {
    OffsetDateTime::now_utc()
        .to_offset(offset!(+8))
        .format(format_description!("[year][month][day][hour][minute][second]"))
        .unwrap()
}

pub fn order_id(tag: &str) -> String {
    format!("{tag}{}", paymux_crypto::random_alphanumeric(16))
}

/// The merchant's side of the signature: non-empty fields but `signature`, sorted, raw;
/// SHA-256 hex; SHA256withRSA over the hex.
pub fn sign(mut fields: Fields, key: &RsaPrivateKey, cert_id: &str) -> Fields {
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
pub fn parse_raw(body: &str) -> Fields {
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

pub fn cert_der(pem: &str) -> Vec<u8> {
    paymux_crypto::pem_sections(pem.as_bytes()).unwrap().remove(0).1
}

impl Sandbox {
    /// Verifies an answer or notification as a merchant must: every field but `signature`,
    /// empty ones included; `signPubKeyCert` chained to the configured intermediate and root,
    /// valid now, CN owned by UnionPay.
    pub fn verified(&self, fields: &Fields) -> bool {
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

    pub fn decrypt(&self, b64: &str) -> String {
        let der = cert_der(&self.merchant_key_pem);
        let key = Pkcs1PrivateDecryptingKey::new(PrivateDecryptingKey::from_pkcs8(&der).unwrap())
            .unwrap();
        let mut out = vec![0u8; key.min_output_size()];
        let plain = key.decrypt(&b64_decode(b64).unwrap(), &mut out).unwrap();
        String::from_utf8(plain.to_vec()).unwrap()
    }

    pub fn consume_fields(
        &self,
        order_id: &str,
        txn_time: &str,
        amount: &str,
        sub: &str,
    ) -> Fields {
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

    pub async fn post(&self, path: &str, fields: &Fields) -> reqwest::Response {
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
    pub async fn call(&self, path: &str, fields: Fields) -> Fields {
        let signed = sign(fields, &self.merchant_key, &self.cert_id);
        let response = self.post(path, &signed).await;
        assert_eq!(response.status(), 200);
        let answer = parse_raw(&response.text().await.unwrap());
        assert!(self.verified(&answer), "the answer verifies by the chain: {answer:?}");
        answer
    }

    pub async fn query(&self, order_id: &str, txn_time: &str) -> Fields {
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

    pub async fn control(&self, order_id: &str, action: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/_sandbox/orders/{order_id}/{action}", self.base))
            .send()
            .await
            .unwrap()
    }

    pub async fn order(&self, order_id: &str) -> Value {
        let url = format!("{}/_sandbox/orders/{order_id}", self.base);
        self.http.get(url).send().await.unwrap().json().await.unwrap()
    }

    /// Waits (with a deadline) until a back notification for `order_id` has been received.
    pub async fn notification_for(&self, order_id: &str, count: usize) -> Vec<Fields> {
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

    /// A paid app consume of `amount` fen: (orderId, txnTime, queryId).
    pub async fn paid_consume(&self, amount: &str) -> (String, String, String) {
        let (id, time) = (order_id("P"), now_compact());
        let answer =
            self.call("appTransReq.do", self.consume_fields(&id, &time, amount, "01")).await;
        assert_eq!(answer["respCode"], "00");
        assert_eq!(self.control(&id, "pay").await.status(), 200);
        let query = self.query(&id, &time).await;
        assert_eq!(query["origRespCode"], "00");
        (id, time, query["queryId"].clone())
    }

    pub fn take_back_fields(
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

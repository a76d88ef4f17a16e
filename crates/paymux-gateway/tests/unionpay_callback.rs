//! A UnionPay back notification posted to `/callbacks/unionpay/{account_id}` reaches the
//! UnionPay adapter, settles the payment, and is acknowledged with HTTP 200 `ok`; one that does
//! not verify or does not match the payment changes nothing and is not acknowledged.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use paymux_core::{AccountId, ChannelKind};
use paymux_crypto::RsaPrivateKey;
use paymux_engine::{Engine as AppState, GatewayConfig, new_api_key};
use paymux_gateway::router;
use paymux_store::prelude::*;
use paymux_store::{AccountRecord, NewApiKey, SqliteStore};
use paymux_unionpay::protocol::{self, Fields};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use serde_json::{Value, json};
use time::OffsetDateTime;
use tower::ServiceExt;

const MER_ID: &str = "777290058167151";

fn rsa_pair() -> (RsaPrivateKey, KeyPair) {
    let key = RsaPrivateKey::generate().unwrap();
    let pem = key.to_pkcs8_pem().unwrap();
    (key, KeyPair::from_pkcs8_pem_and_sign_algo(&pem, &rcgen::PKCS_RSA_SHA256).unwrap())
}

fn params(cn: &str, ca: bool) -> CertificateParams {
    let now = OffsetDateTime::now_utc();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.not_before = now - time::Duration::days(1);
    p.not_after = now + time::Duration::days(365);
    if ca {
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    }
    p
}

struct Setup {
    app: Router,
    key: String,
    account: AccountId,
    unionpay_key: RsaPrivateKey,
    sign_pub_key_cert: String,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let (_, root_kp) = rsa_pair();
    let root_params = params("Test Root", true);
    let root = root_params.self_signed(&root_kp).unwrap();
    let root_issuer = Issuer::new(root_params, root_kp);
    let (_, mid_kp) = rsa_pair();
    let mid_params = params("Test OCA1", true);
    let mid = mid_params.signed_by(&mid_kp, &root_issuer).unwrap();
    let mid_issuer = Issuer::new(mid_params, mid_kp);
    let (unionpay_key, kp) = rsa_pair();
    let leaf = params("041@1@中国银联股份有限公司@1", false).signed_by(&kp, &mid_issuer).unwrap();
    let (merchant_key, kp) = rsa_pair();
    let merchant_cert = params("merchant", false).self_signed(&kp).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("paymux.db")).await.unwrap());
    let merchant = store.create_merchant("shop").await.unwrap();
    let (key, key_hash, prefix) = new_api_key(false);
    let api_key = NewApiKey { merchant_id: merchant, key_hash, prefix, livemode: false };
    store.add_api_key(&api_key).await.unwrap();
    let account = AccountId::new();
    let config = json!({
        "mer_id": MER_ID,
        "gateway_url": "http://127.0.0.1:9",
        "merchant_private_key": merchant_key.to_pkcs8_pem().unwrap(),
        "merchant_certificate": merchant_cert.pem(),
        "root_certificate": root.pem(),
        "intermediate_certificate": mid.pem(),
    });
    let record = AccountRecord {
        id: account,
        merchant_id: merchant,
        channel: ChannelKind::Unionpay,
        config,
        livemode: false,
        created_at: OffsetDateTime::now_utc(),
    };
    store.put_channel_account(&record).await.unwrap();
    let app = router(AppState::new(store, GatewayConfig::new("http://127.0.0.1:8080")));
    let sign_pub_key_cert = leaf.pem().trim_end().replace('\n', "\r\n");
    Setup { app, key, account, unionpay_key, sign_pub_key_cert, _dir: dir }
}

async fn send(app: &Router, req: Request<Body>) -> (StatusCode, Vec<u8>) {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let body = axum::body::to_bytes(res.into_body(), usize::MAX).await.unwrap();
    (status, body.to_vec())
}

async fn api(s: &Setup, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {}", s.key))
        .header("content-type", "application/json")
        .header("idempotency-key", fresh_idempotency_key(path))
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap();
    let (status, bytes) = send(&s.app, req).await;
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn fresh_idempotency_key(path: &str) -> String {
    format!("k-{}-{}", path.len(), OffsetDateTime::now_utc().unix_timestamp_nanos())
}

/// A back notification for the payment's form, signed by the test UnionPay.
fn notification(s: &Setup, form: &Value, txn_amt: &str) -> Fields {
    let mut f = Fields::new();
    for k in ["version", "encoding", "txnType", "txnSubType", "bizType", "merId", "orderId"] {
        f.insert(k.into(), form[k].as_str().unwrap().into());
    }
    f.insert("txnTime".into(), form["txnTime"].as_str().unwrap().into());
    f.insert("txnAmt".into(), txn_amt.into());
    f.insert("currencyCode".into(), "156".into());
    f.insert("respCode".into(), "00".into());
    f.insert("respMsg".into(), "success".into());
    f.insert("queryId".into(), "782211291000000000099".into());
    f.insert("signMethod".into(), "01".into());
    f.insert("signPubKeyCert".into(), s.sign_pub_key_cert.clone());
    let digest = protocol::sha256_hex(&protocol::string_to_verify(&f));
    f.insert("signature".into(), s.unionpay_key.sign_base64(digest.as_bytes()).unwrap());
    f
}

async fn post_callback(s: &Setup, fields: &Fields) -> (StatusCode, Vec<u8>) {
    let req = Request::builder()
        .method("POST")
        .uri(format!("/callbacks/unionpay/{}", s.account))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(protocol::encode_form(fields)))
        .unwrap();
    send(&s.app, req).await
}

async fn create_page_payment(s: &Setup) -> Value {
    let body = json!({
        "merchant_order_no": "order-42",
        "amount": 1234,
        "currency": "CNY",
        "subject": "Test order",
        "channel": "unionpay",
        "method": "page",
        "return_url": "https://shop.example/done",
    });
    let (status, payment) = api(s, "POST", "/v1/payments", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{payment}");
    payment
}

#[tokio::test]
async fn a_unionpay_back_notification_settles_the_payment_and_is_acknowledged_with_ok() {
    let s = setup().await;
    let payment = create_page_payment(&s).await;
    let form = &payment["action"]["fields"];
    assert_eq!(payment["action"]["type"], "form");
    assert_eq!(form["orderId"], payment["channel_order_no"]);
    assert_eq!(form["backUrl"], format!("http://127.0.0.1:8080/callbacks/unionpay/{}", s.account));

    let (status, body) = post_callback(&s, &notification(&s, form, "1234")).await;
    assert_eq!((status, body.as_slice()), (StatusCode::OK, b"ok".as_slice()));
    let id = payment["id"].as_str().unwrap();
    let (_, after) = api(&s, "GET", &format!("/v1/payments/{id}"), None).await;
    assert_eq!(after["status"], "succeeded");
    assert_eq!(after["channel_trade_no"], "782211291000000000099");

    // A duplicate is acknowledged and changes nothing.
    let (status, body) = post_callback(&s, &notification(&s, form, "1234")).await;
    assert_eq!((status, body.as_slice()), (StatusCode::OK, b"ok".as_slice()));
}

#[tokio::test]
async fn a_unionpay_notification_with_another_amount_or_a_bad_signature_changes_nothing() {
    let s = setup().await;
    let payment = create_page_payment(&s).await;
    let form = &payment["action"]["fields"];
    let id = payment["id"].as_str().unwrap();

    let (status, _) = post_callback(&s, &notification(&s, form, "1")).await;
    assert_ne!(status, StatusCode::OK);
    let mut forged = notification(&s, form, "1234");
    forged.insert("queryId".into(), "782211291000000000098".into());
    let (status, body) = post_callback(&s, &forged).await;
    assert_ne!(status, StatusCode::OK);
    assert_ne!(body, b"ok");

    let (_, after) = api(&s, "GET", &format!("/v1/payments/{id}"), None).await;
    assert_eq!(after["status"], "pending");
}

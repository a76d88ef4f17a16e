//! Live and test apart: a key sees only the accounts and objects of its own mode, and a test key
//! never moves live money.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use paymux_core::{AccountId, MerchantId};
use paymux_e2e::TestApp;
use paymux_store::{AccountRecord, NewApiKey};
use serde_json::{Value, json};

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_owned()
}

/// A key of `merchant` in the given mode.
async fn key(app: &TestApp, merchant: MerchantId, live: bool) -> String {
    let mode = if live { "live" } else { "test" };
    let key = format!("sk_{mode}_{}", paymux_crypto::random_alphanumeric(32));
    app.sandbox
        .store
        .add_api_key(&NewApiKey {
            merchant_id: merchant,
            key_hash: paymux_crypto::sha256_hex(key.as_bytes()),
            prefix: key[..12].to_owned(),
            livemode: live,
        })
        .await
        .unwrap();
    key
}

/// A live Alipay account for `merchant`, with the sandbox account's credentials (it reaches the
/// mock: what matters here is the mode paymux gives it).
async fn live_alipay_account(app: &TestApp, merchant: MerchantId) -> AccountId {
    let store = &app.sandbox.store;
    let sandbox: AccountId = app.sandbox.manifest.channels.alipay.account_id.parse().unwrap();
    let template = store.channel_account(sandbox).await.unwrap().unwrap();
    let id = AccountId::new();
    store
        .put_channel_account(&AccountRecord {
            id,
            merchant_id: merchant,
            livemode: true,
            ..template
        })
        .await
        .unwrap();
    id
}

fn order(no: &str) -> Value {
    json!({"merchant_order_no": no, "amount": 1000, "currency": "CNY", "subject": "s",
           "channel": "alipay", "method": "qr"})
}

#[tokio::test]
async fn a_test_key_cannot_use_a_live_account_and_is_told_why() {
    let app = TestApp::spawn().await;
    let merchant = app.sandbox.store.create_merchant("Live only").await.unwrap();
    live_alipay_account(&app, merchant).await;
    let test_key = key(&app, merchant, false).await;

    let (status, body) =
        app.call_as(&test_key, reqwest::Method::POST, "/v1/payments", Some(order("o-1"))).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["type"], "invalid_request");
    assert_eq!(body["error"]["code"], "livemode_mismatch");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("test API key") && message.contains("live alipay account"),
        "{message}"
    );
    assert!(app.mock_orders("alipay").await.is_empty(), "nothing reached the channel");

    // The live key of the same merchant uses it.
    let live_key = key(&app, merchant, true).await;
    let (status, p) =
        app.call_as(&live_key, reqwest::Method::POST, "/v1/payments", Some(order("o-1"))).await;
    assert_eq!(status, 201, "{p}");
    assert_eq!(p["livemode"], true);
}

#[tokio::test]
async fn a_key_sees_only_the_objects_of_its_own_mode() {
    let app = TestApp::spawn().await;
    let merchant = app.sandbox.merchant_id;
    live_alipay_account(&app, merchant).await;
    let live = key(&app, merchant, true).await;
    let test = app.api_key.clone();
    let as_ = |k: &str, m: reqwest::Method, path: String, body: Option<Value>| {
        let k = k.to_owned();
        let app = &app;
        async move { app.call_as(&k, m, &path, body).await }
    };
    let get = reqwest::Method::GET;
    let post = reqwest::Method::POST;

    let (status, live_pay) =
        as_(&live, post.clone(), "/v1/payments".into(), Some(order("o-live"))).await;
    assert_eq!((status, &live_pay["livemode"]), (201, &json!(true)), "{live_pay}");
    let (status, test_pay) =
        as_(&test, post.clone(), "/v1/payments".into(), Some(order("o-test"))).await;
    assert_eq!((status, &test_pay["livemode"]), (201, &json!(false)), "{test_pay}");

    // Another mode's id is a 404; lists show only the key's mode.
    let (status, _) =
        as_(&test, get.clone(), format!("/v1/payments/{}", id(&live_pay)), None).await;
    assert_eq!(status, 404);
    let (status, _) =
        as_(&live, get.clone(), format!("/v1/payments/{}", id(&test_pay)), None).await;
    assert_eq!(status, 404);
    let (_, list) = as_(&test, get.clone(), "/v1/payments".into(), None).await;
    let ids: Vec<String> = list["data"].as_array().unwrap().iter().map(id).collect();
    assert_eq!(ids, [id(&test_pay)]);
    let (_, list) = as_(&live, get.clone(), "/v1/payments".into(), None).await;
    let ids: Vec<String> = list["data"].as_array().unwrap().iter().map(id).collect();
    assert_eq!(ids, [id(&live_pay)]);
    let (status, _) =
        as_(&test, post.clone(), format!("/v1/payments/{}/close", id(&live_pay)), None).await;
    assert_eq!(status, 404, "a test key cannot close a live payment");

    // The live payment is paid: its events and refunds are live only.
    app.pay_at_mock("alipay", live_pay["channel_order_no"].as_str().unwrap()).await;
    let paid = app
        .wait_for_as(&live, &format!("/v1/payments/{}", id(&live_pay)), |p| {
            p["status"] == "succeeded"
        })
        .await;
    assert_eq!(paid["livemode"], true);
    let (_, live_events) = as_(&live, get.clone(), "/v1/events".into(), None).await;
    let live_events = live_events["data"].as_array().unwrap().clone();
    assert_eq!(live_events.len(), 1, "{live_events:?}");
    assert_eq!(
        (&live_events[0]["type"], &live_events[0]["livemode"]),
        (&json!("payment.succeeded"), &json!(true))
    );
    let (_, test_events) = as_(&test, get.clone(), "/v1/events".into(), None).await;
    assert!(test_events["data"].as_array().unwrap().is_empty(), "{test_events}");
    let (status, _) =
        as_(&test, get.clone(), format!("/v1/events/{}", id(&live_events[0])), None).await;
    assert_eq!(status, 404);

    let refund = json!({"amount": 100, "merchant_refund_no": "r-live"});
    let path = format!("/v1/payments/{}/refunds", id(&live_pay));
    let (status, _) = as_(&test, post.clone(), path.clone(), Some(refund.clone())).await;
    assert_eq!(status, 404, "a test key cannot refund a live payment");
    let (status, live_refund) = as_(&live, post.clone(), path.clone(), Some(refund)).await;
    assert_eq!((status, &live_refund["livemode"]), (201, &json!(true)), "{live_refund}");
    let (status, _) =
        as_(&test, get.clone(), format!("/v1/refunds/{}", id(&live_refund)), None).await;
    assert_eq!(status, 404);
    let (status, _) = as_(&test, get.clone(), path, None).await;
    assert_eq!(status, 404);
    let (_, test_refunds) = as_(&test, get.clone(), "/v1/refunds".into(), None).await;
    assert!(test_refunds["data"].as_array().unwrap().is_empty(), "{test_refunds}");
    let (_, live_refunds) = as_(&live, get.clone(), "/v1/refunds".into(), None).await;
    assert_eq!(live_refunds["data"].as_array().unwrap().len(), 1);

    // Webhook endpoints belong to the mode of the key that made them.
    let (status, ep) = as_(
        &test,
        post.clone(),
        "/v1/webhook_endpoints".into(),
        Some(json!({"url": "http://127.0.0.1:9/hook"})),
    )
    .await;
    assert_eq!((status, &ep["livemode"]), (201, &json!(false)), "{ep}");
    let (_, live_eps) = as_(&live, get.clone(), "/v1/webhook_endpoints".into(), None).await;
    assert!(live_eps["data"].as_array().unwrap().is_empty(), "{live_eps}");
    let (status, _) =
        as_(&live, reqwest::Method::DELETE, format!("/v1/webhook_endpoints/{}", id(&ep)), None)
            .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn an_idempotency_key_used_by_a_test_key_is_never_replayed_to_a_live_key() {
    let app = TestApp::spawn().await;
    let merchant = app.sandbox.merchant_id;
    live_alipay_account(&app, merchant).await;
    let live = key(&app, merchant, true).await;
    let (status, test_pay) = app.call_with_key("same-key", "/v1/payments", order("o-1")).await;
    assert_eq!(status, 201, "{test_pay}");
    let res = app
        .http
        .post(format!("{}/v1/payments", app.gateway))
        .bearer_auth(&live)
        .header("Idempotency-Key", "same-key")
        .json(&order("o-1"))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let body: Value = res.json().await.unwrap();
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "idempotency_key_reused");
}

//! Recovery after a lost answer: a merchant whose call was lost (its process crashed, the
//! connection dropped) finds what it created. The crash itself (a gateway killed between its
//! write and its answer) is in `crates/paymux-cli/tests/crash.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use paymux_e2e::TestApp;
use serde_json::{Value, json};

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_owned()
}

/// A succeeded Alipay payment of `amount` fen.
async fn paid(app: &TestApp, order_no: &str, amount: i64) -> String {
    let (status, p) = app.create_payment("alipay", "qr", order_no, amount).await;
    assert_eq!(status, 201, "{p}");
    app.pay_at_mock("alipay", p["channel_order_no"].as_str().unwrap()).await;
    app.wait_payment(&id(&p), "succeeded").await;
    id(&p)
}

#[tokio::test]
async fn reused_merchant_order_no_409_names_the_existing_payment() {
    let app = TestApp::spawn().await;
    let (_, first) = app.create_payment("alipay", "qr", "order-lost", 1000).await;
    let (status, body) = app.create_payment("alipay", "qr", "order-lost", 1000).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "duplicate_merchant_order_no");
    assert_eq!(body["error"]["object_id"], first["id"], "{body}");
    let (status, found) = app.get(&format!("/v1/payments/{}", id(&first))).await;
    assert_eq!((status, found["merchant_order_no"].as_str()), (200, Some("order-lost")));
}

#[tokio::test]
async fn reused_merchant_refund_no_409_names_the_existing_refund() {
    let app = TestApp::spawn().await;
    let pay = paid(&app, "order-1", 1000).await;
    let (status, first) = app
        .post(
            &format!("/v1/payments/{pay}/refunds"),
            json!({"amount": 100, "merchant_refund_no": "r-lost"}),
        )
        .await;
    assert_eq!(status, 201, "{first}");
    let (status, body) = app
        .post(
            &format!("/v1/payments/{pay}/refunds"),
            json!({"amount": 100, "merchant_refund_no": "r-lost"}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "duplicate_merchant_refund_no");
    assert_eq!(body["error"]["object_id"], first["id"], "{body}");
}

#[tokio::test]
async fn a_refund_is_found_by_its_merchant_refund_no() {
    let app = TestApp::spawn().await;
    let pay = paid(&app, "order-1", 1000).await;
    let (_, made) = app
        .post(
            &format!("/v1/payments/{pay}/refunds"),
            json!({"amount": 100, "merchant_refund_no": "r-7"}),
        )
        .await;
    app.post(
        &format!("/v1/payments/{pay}/refunds"),
        json!({"amount": 100, "merchant_refund_no": "r-8"}),
    )
    .await;
    let (status, list) = app.get("/v1/refunds?merchant_refund_no=r-7").await;
    assert_eq!(status, 200, "{list}");
    let data = list["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "{list}");
    assert_eq!(data[0]["id"], made["id"]);
    assert_eq!(list["has_more"], false);
    let (_, none) = app.get("/v1/refunds?merchant_refund_no=r-none").await;
    assert_eq!(none["data"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn a_payments_refunds_are_listed_newest_first_and_paged() {
    let app = TestApp::spawn().await;
    let pay = paid(&app, "order-1", 1000).await;
    let other = paid(&app, "order-2", 1000).await;
    let mut made = Vec::new();
    for n in 0..3 {
        let (status, r) = app
            .post(
                &format!("/v1/payments/{pay}/refunds"),
                json!({"amount": 10, "merchant_refund_no": format!("r-{n}")}),
            )
            .await;
        assert_eq!(status, 201, "{r}");
        made.push(id(&r));
    }
    app.post(
        &format!("/v1/payments/{other}/refunds"),
        json!({"amount": 10, "merchant_refund_no": "x"}),
    )
    .await;

    let (status, page1) = app.get(&format!("/v1/payments/{pay}/refunds?limit=2")).await;
    assert_eq!(status, 200, "{page1}");
    let ids = |page: &Value| page["data"].as_array().unwrap().iter().map(id).collect::<Vec<_>>();
    assert_eq!(ids(&page1), [made[2].clone(), made[1].clone()]);
    assert_eq!(page1["has_more"], true);
    let cursor = page1["next_cursor"].as_str().unwrap();
    let (_, page2) = app.get(&format!("/v1/payments/{pay}/refunds?limit=2&cursor={cursor}")).await;
    assert_eq!(ids(&page2), [made[0].clone()]);
    assert_eq!(page2["has_more"], false);

    let (_, all) = app.get("/v1/refunds").await;
    assert_eq!(all["data"].as_array().unwrap().len(), 4, "{all}");
    let (status, _) = app.get("/v1/payments/pay_00000000000000000000000000000000/refunds").await;
    assert_eq!(status, 404);
}

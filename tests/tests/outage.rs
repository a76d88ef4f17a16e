//! PostgreSQL taken away for a moment under a running gateway (a proxy between them is cut, so
//! the machine's server, which other tests use, keeps running): the API answers a clear 503 in
//! its error shape, the channels' notifications get a non-2xx answer (so they retry), readiness
//! says so, nothing is half-written, and everything recovers by itself once the database is back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use paymux_e2e::TestApp;
use paymux_e2e::pg::PgDatabase;
use paymux_e2e::proxy::Proxy;
use paymux_engine::SweeperConfig;
use serde_json::{Value, json};

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_owned()
}

async fn readyz(app: &TestApp) -> u16 {
    let res = app.http.get(format!("{}/readyz", app.gateway)).send().await.unwrap();
    res.status().as_u16()
}

#[tokio::test]
async fn a_database_outage_answers_503_refuses_notifications_and_heals_by_itself() {
    let db = PgDatabase::create().await;
    let proxy = Proxy::start(&db.server_addr()).await;
    let url = db.url_through(&proxy.addr);
    let app = TestApp::spawn_with(|o| {
        o.database_url = Some(url.parse().unwrap());
        o.sweeper = SweeperConfig {
            interval: Duration::from_millis(100),
            first_check_after: Duration::from_millis(300),
            max_backoff: Duration::from_millis(600),
            lease: Duration::from_secs(5),
        };
    })
    .await;
    let (s, before) = app.create_payment("wechat", "qr", "o-before", 100).await;
    assert_eq!(s, 201, "{before}");
    assert_eq!(readyz(&app).await, 200);
    let orders_before = app.mock_orders("wechat").await.len();

    proxy.cut();

    // The API: a 503 in the error shape, saying nothing changed; an idempotent create too.
    let body = json!({"merchant_order_no": "o-during", "amount": 100, "currency": "CNY",
                      "subject": "tea", "channel": "wechat", "method": "qr"});
    let (s, e) = app.call_with_key("k-during", "/v1/payments", body.clone()).await;
    assert_eq!(s, 503, "{e}");
    assert_eq!(e["error"]["type"], "store_unavailable", "{e}");
    assert!(e["error"]["request_id"].as_str().is_some_and(|r| r.starts_with("req_")), "{e}");
    let (s, e) = app.get(&format!("/v1/payments/{}", id(&before))).await;
    assert_eq!(s, 503, "{e}");
    assert_eq!(readyz(&app).await, 503);

    // The payer pays meanwhile: WeChat's notification is refused, not acknowledged.
    let no = before["channel_order_no"].as_str().unwrap();
    assert_eq!(app.pay_at_mock("wechat", no).await, 200);
    let deliveries = app.wechat_deliveries(no).await;
    let first = &deliveries[0];
    assert!(
        first["status"].as_u64().is_none_or(|s| !(200..300).contains(&s)),
        "a notification the gateway could not record must not be acknowledged: {deliveries}"
    );

    proxy.restore();

    // Back by itself: ready, the paid payment settled (the channel's retry or the sweeper), the
    // refused create never happened, and the merchant's retry of it runs now.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while readyz(&app).await != 200 {
        assert!(tokio::time::Instant::now() < deadline, "the gateway never became ready again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.wait_for(&format!("/v1/payments/{}", id(&before)), 30, |p| p["status"] == "succeeded")
        .await;
    let (_, list) = app.get("/v1/payments?merchant_order_no=o-during").await;
    assert_eq!(list["data"].as_array().map(Vec::len), Some(0), "nothing half-written: {list}");
    assert_eq!(
        app.mock_orders("wechat").await.len(),
        orders_before,
        "the refused create never reached the channel"
    );
    let (s, created) = app.call_with_key("k-during", "/v1/payments", body).await;
    assert_eq!(s, 201, "{created}");
    assert_eq!(created["merchant_order_no"], "o-during");
    assert_eq!(app.mock_orders("wechat").await.len(), orders_before + 1);
    drop(app);
    drop(proxy);
    drop(db);
}

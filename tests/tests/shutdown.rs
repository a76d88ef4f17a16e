//! Stopping the background workers cleanly: the row in hand is finished, the rest of the batch is
//! handed back at once instead of staying hidden for a lease.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use paymux_e2e::TestApp;
use paymux_engine::{Engine, GatewayConfig};
use tokio::sync::mpsc;

/// A channel that tells the test when it is called, then takes a while to fail: what a sweeper's
/// query finds there is an unknown outcome, and the payment is rescheduled.
async fn slow_failing_channel() -> (String, mpsc::UnboundedReceiver<()>) {
    let (called, calls) = mpsc::unbounded_channel();
    let app = axum::Router::new().fallback(move || {
        let called = called.clone();
        async move {
            let _ = called.send(());
            tokio::time::sleep(Duration::from_millis(500)).await;
            axum::http::StatusCode::INTERNAL_SERVER_ERROR
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, calls)
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

#[tokio::test]
async fn a_stopping_sweeper_finishes_the_row_in_hand_and_releases_the_rest_of_its_batch() {
    // The sandbox's own sweeper looks once, at start, and not again during the test.
    let app = TestApp::spawn_with(|o| {
        o.sweeper.interval = Duration::from_secs(3600);
        o.sweeper.first_check_after = Duration::from_secs(3600);
    })
    .await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let (status, p) = app.create_payment("alipay", "qr", &format!("o-{n}"), 100).await;
        assert_eq!(status, 201, "{p}");
        ids.push(p["id"].as_str().unwrap().to_owned());
    }
    let (channel, mut calls) = slow_failing_channel().await;
    let store = app.sandbox.store.clone();
    let account_id = app.sandbox.manifest.channels.alipay.account_id.parse().unwrap();
    let mut account = store.channel_account(account_id).await.unwrap().unwrap();
    account.config["gateway_url"] = format!("{channel}/gateway.do").into();
    store.put_channel_account(&account).await.unwrap();
    let db = app.db().await;
    db.execute("UPDATE payments SET next_check_at = ?", &[(now_ms() - 1).into()]).await;

    // A second instance's workers on the same store, with a lease far longer than a check's backoff.
    let mut config = GatewayConfig::new(app.gateway.clone());
    config.sweeper.interval = Duration::from_millis(50);
    config.sweeper.first_check_after = Duration::from_secs(60);
    config.sweeper.lease = Duration::from_secs(3600);
    let workers = Engine::new(store.clone(), config).start_workers().unwrap();
    tokio::time::timeout(Duration::from_secs(10), calls.recv())
        .await
        .expect("the sweeper queries the first payment of its batch");
    workers.shutdown().await;

    let now = now_ms();
    let mut next_checks = Vec::new();
    for id in &ids {
        let sql = "SELECT next_check_at FROM payments WHERE id = ?";
        let at = db.fetch_i64(sql, &[id.into()]).await.unwrap();
        next_checks.push(at - now);
    }
    next_checks.sort_unstable();
    // Two were never started: due now, for whoever sweeps next. The one in hand was finished:
    // its query gave no answer and it was rescheduled on the backoff, not left under the lease.
    assert!(next_checks[0] <= 0 && next_checks[1] <= 0, "{next_checks:?}");
    assert!((1..=900_000).contains(&next_checks[2]), "{next_checks:?}");
    assert!(calls.try_recv().is_err(), "only the row in hand reached the channel");
}

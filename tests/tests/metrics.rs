//! `/metrics` end to end: after a scripted flow on the sandbox, every series the flow touches
//! holds exactly the count the flow implies.
//!
//! The metrics recorder is one per process, so this file holds one test: no other test's
//! gateway shares its counters.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::post;
use paymux_e2e::TestApp;
use serde_json::{Value, json};

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_owned()
}

fn no(v: &Value) -> String {
    v["channel_order_no"].as_str().unwrap().to_owned()
}

/// The Prometheus text's samples, keyed by name and label set (`name{a="1",b="2"}`, labels
/// sorted).
fn samples(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let key = match series.split_once('{') {
            None => series.to_owned(),
            Some((name, labels)) => {
                let mut labels: Vec<&str> = labels
                    .trim_end_matches('}')
                    .split("\",")
                    .map(|l| l.trim_end_matches('"'))
                    .collect();
                labels.sort_unstable();
                let labels: Vec<String> = labels.iter().map(|l| format!("{l}\"")).collect();
                format!("{name}{{{}}}", labels.join(","))
            }
        };
        out.insert(key, value.parse().unwrap());
    }
    out
}

/// The key [`samples`] gives a series.
fn key(name: &str, labels: &[(&str, &str)]) -> String {
    let mut labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    labels.sort_unstable();
    if labels.is_empty() { name.to_owned() } else { format!("{name}{{{}}}", labels.join(",")) }
}

async fn scrape(app: &TestApp) -> (String, BTreeMap<String, f64>) {
    let res = app.http.get(format!("{}/metrics", app.gateway)).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    let parsed = samples(&text);
    (text, parsed)
}

/// Scrapes until every expected value is there, for at most 15 s (the gauges are refreshed every
/// second in the sandbox, and the webhook dispatcher works on its own time).
async fn wait_metrics(app: &TestApp, expected: &[(String, f64)]) -> BTreeMap<String, f64> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (_, m) = scrape(app).await;
        if expected.iter().all(|(k, v)| m.get(k) == Some(v)) {
            return m;
        }
        if tokio::time::Instant::now() > deadline {
            let got: Vec<_> = expected.iter().map(|(k, _)| (k, m.get(k))).collect();
            panic!("metrics never reached {expected:?}; got {got:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `valid` Alipay notifications were counted as applied or duplicate, and returns
/// how many were applied: the two payments' own, and the partial refund's when it beat the
/// refund's answer.
async fn alipay_applied(app: &TestApp, valid: f64) -> f64 {
    let applied =
        key("paymux_notifications_total", &[("channel", "alipay"), ("result", "applied")]);
    let duplicate =
        key("paymux_notifications_total", &[("channel", "alipay"), ("result", "duplicate")]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (_, m) = scrape(app).await;
        let a = m.get(&applied).copied().unwrap_or(0.0);
        let d = m.get(&duplicate).copied().unwrap_or(0.0);
        if a + d == valid {
            assert!(a == 2.0 || a == 3.0, "alipay notifications applied: {a} of {valid}");
            return a;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "alipay notifications: {a} + {d} of {valid}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the Alipay mock has logged, for its notification `index` on `order`, a send the
/// gateway acknowledged.
async fn alipay_acknowledged(app: &TestApp, order: &str, index: usize) {
    app.wait_mock_order("alipay", order, 10, |o| {
        o["notifications"][index]["attempts"]
            .as_array()
            .is_some_and(|a| a.iter().any(|t| t["acknowledged"] == true))
    })
    .await;
}

/// A merchant endpoint that answers every webhook with 200.
async fn start_receiver() -> String {
    let app = axum::Router::new().route("/hook", post(|| async { StatusCode::OK }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test]
async fn metrics_count_exactly_what_a_scripted_flow_did() {
    let app = TestApp::spawn().await;
    let (_, m) = scrape(&app).await;
    for t in ["paid_after_close", "duplicate_paid", "over_refunded", "amount_mismatch"] {
        let k = key("paymux_anomalies_total", &[("type", t)]);
        assert_eq!(m.get(&k), Some(&0.0), "every anomaly is listed before it happens: {k}");
    }
    let (s, _) = app.post("/v1/webhook_endpoints", json!({"url": start_receiver().await})).await;
    assert_eq!(s, 201);

    // Alipay: paid, then partly refunded (Alipay notifies the partial refund: news we have).
    let (s, a1) = app.create_payment("alipay", "qr", "m-a1", 1000).await;
    assert_eq!(s, 201, "{a1}");
    assert_eq!(app.pay_at_mock("alipay", &no(&a1)).await, 200);
    app.wait_payment(&id(&a1), "succeeded").await;
    alipay_acknowledged(&app, &no(&a1), 0).await;
    let refund_path = format!("/v1/payments/{}/refunds", id(&a1));
    let (s, r) = app.post(&refund_path, json!({"amount": 300, "merchant_refund_no": "m-r1"})).await;
    assert_eq!((s, r["status"].as_str()), (201, Some("succeeded")), "{r}");
    alipay_acknowledged(&app, &no(&a1), 1).await;

    // Alipay: closed before the buyer scanned, then paid anyway: closed, then succeeded.
    let (_, a2) = app.create_payment("alipay", "qr", "m-a2", 500).await;
    let (s, closed) = app.post(&format!("/v1/payments/{}/close", id(&a2)), json!({})).await;
    assert_eq!((s, closed["status"].as_str()), (200, Some("closed")), "{closed}");
    assert_eq!(app.pay_at_mock("alipay", &no(&a2)).await, 200);
    app.wait_payment(&id(&a2), "succeeded").await;
    alipay_acknowledged(&app, &no(&a2), 0).await;

    // A notification nobody signed is refused.
    let forged = form_urlencoded::Serializer::new(String::new())
        .extend_pairs([("out_trade_no", no(&a1)), ("trade_status", "TRADE_SUCCESS".into())])
        .append_pair("sign", "Zm9yZ2Vk")
        .finish();
    let form = "application/x-www-form-urlencoded";
    let (s, body) = app.post_callback("alipay", &[], form, forged.into_bytes()).await;
    assert_eq!((s, body.as_str()), (200, "fail"));

    // UnionPay: paid; and a page payment without its return URL, failed before the channel.
    let (s, u1) = app.create_payment("unionpay", "qr", "m-u1", 1234).await;
    assert_eq!(s, 201, "{u1}");
    assert_eq!(app.pay_at_mock("unionpay", &no(&u1)).await, 200);
    app.wait_payment(&id(&u1), "succeeded").await;
    app.wait_mock_order("unionpay", &no(&u1), 10, |o| {
        o["deliveries"].as_array().is_some_and(|d| d.iter().any(|d| d["outcome"] == "acknowledged"))
    })
    .await;
    let (s, e) = app.create_payment("unionpay", "page", "m-u2", 100).await;
    assert_eq!(s, 400, "{e}");
    let u2 = e["error"]["object_id"].as_str().unwrap().to_owned();
    app.wait_payment(&u2, "failed").await;

    let (s, _) = app.get("/no/such/route").await;
    assert_eq!(s, 404);

    let events = app.events().await.len() as f64;
    // How many times each channel sent each notification: on a busy machine a mock may time out
    // waiting for the gateway's answer and send it again, and every send is a callback request
    // (a re-send of an applied one is counted as a duplicate). Each was acknowledged above, so
    // these no longer move.
    let alipay_sends = |order: Value, index: usize| {
        order["notifications"][index]["attempts"].as_array().map_or(0, Vec::len) as f64
    };
    let a1_order = app.mock_order("alipay", &no(&a1)).await;
    let (a1_paid, a1_refunded) = (alipay_sends(a1_order.clone(), 0), alipay_sends(a1_order, 1));
    let a2_paid = alipay_sends(app.mock_order("alipay", &no(&a2)).await, 0);
    let u1_paid = app.mock_order("unionpay", &no(&u1)).await["deliveries"]
        .as_array()
        .map_or(0, Vec::len) as f64;
    assert!(a1_paid >= 1.0 && a1_refunded >= 1.0 && a2_paid >= 1.0 && u1_paid >= 1.0);
    let callbacks = a1_paid + a1_refunded + a2_paid + u1_paid + 1.0; // + the forged one
    let payments = |channel, method, status| {
        key(
            "paymux_payments_total",
            &[("channel", channel), ("method", method), ("status", status)],
        )
    };
    let notifications = |channel, result| {
        key("paymux_notifications_total", &[("channel", channel), ("result", result)])
    };
    let channel_calls = |channel, operation, outcome| {
        key(
            "paymux_channel_requests_total",
            &[("channel", channel), ("operation", operation), ("outcome", outcome)],
        )
    };
    let http = |route, method, status| {
        key(
            "paymux_http_requests_total",
            &[("route", route), ("method", method), ("status", status)],
        )
    };
    let lag = |channel| key("paymux_notification_lag_seconds_count", &[("channel", channel)]);
    // The partial refund's notification races the refund's own answer from the channel: the one
    // that lands second changes nothing (counted as a duplicate); when the notification lands
    // first, it is what marks the refund succeeded (counted as applied). Both are correct, so
    // the split is read once every valid Alipay send has been counted either way.
    let alipay_valid = a1_paid + a1_refunded + a2_paid;
    let alipay_applied = alipay_applied(&app, alipay_valid).await;
    let anomaly = |t| key("paymux_anomalies_total", &[("type", t)]);
    let expected = vec![
        (payments("alipay", "qr", "succeeded"), 2.0),
        (payments("alipay", "qr", "closed"), 1.0),
        (payments("unionpay", "qr", "succeeded"), 1.0),
        (payments("unionpay", "page", "failed"), 1.0),
        (notifications("alipay", "applied"), alipay_applied),
        (notifications("alipay", "refused"), 1.0),
        (notifications("unionpay", "applied"), 1.0),
        (lag("alipay"), 2.0),
        (lag("unionpay"), 1.0),
        (channel_calls("alipay", "create", "ok"), 2.0),
        (channel_calls("alipay", "refund", "ok"), 1.0),
        (channel_calls("alipay", "close", "ok"), 1.0),
        (channel_calls("unionpay", "create", "ok"), 1.0),
        (channel_calls("unionpay", "create", "invalid"), 1.0),
        (
            key(
                "paymux_channel_request_duration_seconds_count",
                &[("channel", "alipay"), ("operation", "create")],
            ),
            2.0,
        ),
        (anomaly("paid_after_close"), 1.0),
        (anomaly("duplicate_paid"), 0.0),
        (anomaly("over_refunded"), 0.0),
        (anomaly("amount_mismatch"), 0.0),
        (http("/v1/payments", "POST", "201"), 3.0),
        (http("/v1/payments", "POST", "400"), 1.0),
        (http("/v1/payments/{id}/refunds", "POST", "201"), 1.0),
        (http("/v1/payments/{id}/close", "POST", "200"), 1.0),
        (http("/v1/webhook_endpoints", "POST", "201"), 1.0),
        (http("/callbacks/{channel}/{account_id}", "POST", "200"), callbacks),
        (http("unmatched", "GET", "404"), 1.0),
        (key("paymux_http_request_duration_seconds_count", &[("route", "/v1/payments")]), 4.0),
        // Every event delivered once, and then nothing is left to deliver or to sweep.
        (key("paymux_webhook_deliveries_total", &[("result", "delivered")]), events),
        (key("paymux_outbox_undelivered", &[]), 0.0),
        (key("paymux_outbox_oldest_undelivered_age_seconds", &[]), 0.0),
        (key("paymux_sweeper_due", &[("kind", "payment")]), 0.0),
        (key("paymux_sweeper_due", &[("kind", "refund")]), 0.0),
    ];
    let mut expected = expected;
    if u1_paid > 1.0 {
        expected.push((notifications("unionpay", "duplicate"), u1_paid - 1.0));
    }
    if alipay_valid > alipay_applied {
        expected.push((notifications("alipay", "duplicate"), alipay_valid - alipay_applied));
    }
    let m = wait_metrics(&app, &expected).await;

    // Nothing else was counted: no other status, outcome or result showed up for these series.
    let touched: Vec<&String> = m
        .iter()
        .filter(|(k, v)| {
            (k.starts_with("paymux_payments_total")
                || k.starts_with("paymux_notifications_total")
                || k.starts_with("paymux_channel_requests_total")
                || k.starts_with("paymux_webhook_deliveries_total"))
                && **v != 0.0
        })
        .map(|(k, _)| k)
        .collect();
    let listed: Vec<&String> = expected.iter().map(|(k, _)| k).collect();
    for k in touched {
        assert!(listed.contains(&k), "counted but not in the flow: {k} = {}", m[k]);
    }
    // Labels are route templates and channel names, never ids.
    let (text, _) = scrape(&app).await;
    for object in [id(&a1), id(&a2), id(&u1), u2, no(&a1)] {
        assert!(!text.contains(&object), "{object} is in a label");
    }
}

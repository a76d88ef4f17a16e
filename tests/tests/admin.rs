//! The admin page as an operator uses it, in headless Chromium: sign in with the link `paymux up`
//! prints, find a payment by its merchant order number, read its timeline, redeliver a webhook
//! the merchant's endpoint refused, close a pending payment, read the success rates; and what a
//! request without a session, or a form without its CSRF token, gets.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use fantoccini::Locator;
use paymux_core::PaymentId;
use paymux_e2e::TestApp;
use paymux_e2e::browser::Browser;
use paymux_engine::WebhookConfig;
use serde_json::{Value, json};

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_owned()
}

/// A merchant's webhook endpoint that refuses until it is told to recover.
#[derive(Clone, Default)]
struct Endpoint {
    healthy: Arc<Mutex<bool>>,
}

async fn receive(State(e): State<Endpoint>) -> StatusCode {
    if *e.healthy.lock().unwrap() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }
}

async fn start_endpoint() -> (Endpoint, String) {
    let e = Endpoint::default();
    let app = axum::Router::new().route("/hook", post(receive)).with_state(e.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (e, url)
}

/// Retries in milliseconds, and a retry window short enough that a refused delivery ends
/// `failed` within the test: only the operator's redeliver sends it again.
fn short_webhooks() -> WebhookConfig {
    WebhookConfig {
        interval: Duration::from_millis(50),
        first_retry: Duration::from_millis(100),
        max_backoff: Duration::from_millis(300),
        give_up_after: Duration::from_millis(1200),
        timeout: Duration::from_secs(2),
        allow_private_urls: true,
    }
}

async fn paid(app: &TestApp, order_no: &str) -> Value {
    let (s, p) = app.create_payment("alipay", "qr", order_no, 1000).await;
    assert_eq!(s, 201, "{p}");
    app.pay_at_mock("alipay", p["channel_order_no"].as_str().unwrap()).await;
    app.wait_payment(&id(&p), "succeeded").await
}

/// The page's source once it contains `needle` (SVG text included), waiting up to 15 s.
async fn wait_for_source(browser: &Browser, needle: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let source = browser.client.source().await.unwrap();
        if source.contains(needle) {
            return source;
        }
        assert!(tokio::time::Instant::now() < deadline, "the page never had {needle:?}: {source}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Clicks the submit button whose text is `label` inside the form posting to `action`.
async fn press(browser: &Browser, action: &str, label: &str) {
    let xpath = format!("//form[@action='{action}']//button[normalize-space(.)='{label}']");
    let button = browser
        .client
        .wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::XPath(&xpath))
        .await
        .unwrap_or_else(|e| panic!("no {label:?} button posting to {action}: {e}"));
    button.click().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_finds_a_payment_redelivers_its_refused_webhook_and_reads_the_success_rate() {
    let app = TestApp::spawn_with(|o| o.webhooks = short_webhooks()).await;
    let (endpoint, url) = start_endpoint().await;
    let (s, ep) = app
        .post("/v1/webhook_endpoints", json!({"url": url, "events": ["payment.succeeded"]}))
        .await;
    assert_eq!(s, 201, "{ep}");

    // Three Alipay payments: two paid, one left pending (the operator closes it below); and a
    // UnionPay one that failed before reaching the channel.
    let first = paid(&app, "admin-order-1").await;
    paid(&app, "admin-order-2").await;
    let (_, pending) = app.create_payment("alipay", "qr", "admin-order-3", 500).await;
    let (s, e) = app.create_payment("unionpay", "page", "admin-order-4", 700).await;
    assert_eq!(s, 400, "{e}");
    let failed_id: PaymentId = e["error"]["object_id"].as_str().unwrap().parse().unwrap();
    let failed = app.sandbox.store.payment_by_id(failed_id).await.unwrap().unwrap();
    let failure_code = failed.failure_code.expect("a failed payment has its failure code");

    // The endpoint refuses the first payment's webhook until the delivery is given up.
    let event = app
        .events()
        .await
        .into_iter()
        .find(|e| e["type"] == "payment.succeeded" && e["data"]["object"]["id"] == first["id"])
        .unwrap();
    let eid = id(&event);
    app.wait_for(&format!("/v1/events/{eid}"), 15, |v| v["deliveries"][0]["status"] == "failed")
        .await;

    // Without a session, a page is refused: a redirect to the sign-in.
    let no_redirects =
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let res = no_redirects.get(format!("{}/admin/payments", app.gateway)).send().await.unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/admin/login");
    let res = no_redirects
        .get(format!("{}/admin/payments/{}", app.gateway, id(&first)))
        .header("cookie", "paymux_admin=forged")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303, "a cookie that names no session is no session");

    // The sign-in link from `paymux up` signs in and leaves the token out of the address bar.
    let admin_url = app.sandbox.manifest.admin_url.clone();
    assert!(admin_url.contains("/admin/login?token=pxop_"), "{admin_url}");
    let browser = Browser::start().await;
    browser.client.goto(&admin_url).await.unwrap();
    browser.wait_for_text("Merchant order no.").await;
    let here = browser.client.current_url().await.unwrap();
    assert_eq!(here.path(), "/admin/payments");
    assert!(here.query().is_none(), "{here}");
    let cookie = browser.client.get_named_cookie("paymux_admin").await.unwrap();
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(cookie.path(), Some("/admin"));
    assert_eq!(cookie.same_site().map(|s| s.to_string()).as_deref(), Some("Strict"));
    browser.screenshot("admin-list").await;

    // Find the first payment by its merchant order number.
    let search = browser.client.find(Locator::Css("input[name=merchant_order_no]")).await.unwrap();
    search.send_keys("admin-order-1").await.unwrap();
    browser.click_button_starting_with("Search").await;
    browser.wait_for_text("1 matching payment shown").await;
    let list = browser.wait_for_text("admin-order-1").await;
    assert!(!list.contains("admin-order-2"), "{list}");
    browser.client.find(Locator::LinkText(&id(&first))).await.unwrap().click().await.unwrap();

    // Its timeline: the attempt, the channel's notification (its signature masked), the event
    // and the refused deliveries, in time order.
    let timeline = browser.wait_for_text("Timeline").await;
    for needle in [
        "attempt 1 at alipay",
        "alipay notification: applied",
        "TRADE_SUCCESS",
        "payment.succeeded",
        "HTTP 503",
        "gave up: failed",
    ] {
        assert!(timeline.contains(needle), "{needle:?} missing: {timeline}");
    }
    let source = browser.client.source().await.unwrap();
    assert!(source.contains("[masked, "), "the notification's signature is masked");
    let notification = source.find("alipay notification: applied").unwrap();
    let delivery = source.find("HTTP 503").unwrap();
    assert!(notification < delivery, "the notification came before the webhook it caused");
    browser.screenshot("admin-payment").await;
    browser
        .client
        .execute("document.querySelector('ol.timeline').scrollIntoView();", vec![])
        .await
        .unwrap();
    browser.screenshot("admin-timeline").await;

    // The endpoint recovers; the operator redelivers, and the delivery succeeds.
    *endpoint.healthy.lock().unwrap() = true;
    let redeliver = format!("/admin/payments/{}/events/{eid}/redeliver", id(&first));
    press(&browser, &redeliver, "Redeliver").await;
    browser.wait_for_text("operator.action redeliver: ok").await;
    app.wait_for(&format!("/v1/events/{eid}"), 15, |v| v["deliveries"][0]["status"] == "delivered")
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        browser.client.refresh().await.unwrap();
        let text = browser.wait_for_text("operator.action redeliver: ok").await;
        if text.contains("HTTP 200") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no successful delivery shown: {text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Close the pending one from its page: the same close as the API's.
    browser.client.goto(&format!("{}/admin/payments/{}", app.gateway, id(&pending))).await.unwrap();
    press(&browser, &format!("/admin/payments/{}/close", id(&pending)), "Close the payment").await;
    browser.wait_for_text("operator.action close: ok").await;
    app.wait_payment(&id(&pending), "closed").await;

    // The success rate over the last hour: Alipay 2 of 3, UnionPay 0 of 1 with its failure.
    browser.client.goto(&format!("{}/admin/stats?range=1h", app.gateway)).await.unwrap();
    let stats = browser.wait_for_text("Top failure reasons").await;
    let source = wait_for_source(&browser, "alipay: 2 / 3 succeeded (67%)").await;
    assert!(source.contains("unionpay: 0 / 1 succeeded (0%)"), "{source}");
    assert!(source.contains("wechat: 0 / 0 succeeded"), "{source}");
    assert!(stats.contains("2 / 3") && stats.contains(&failure_code), "{stats}");
    browser.screenshot("admin-stats").await;

    // At a phone's width, nothing runs off the side.
    browser.client.set_window_size(390, 844).await.unwrap();
    for page in [
        "/admin/payments".to_owned(),
        format!("/admin/payments/{}", id(&first)),
        "/admin/stats?range=1h".to_owned(),
    ] {
        browser.client.goto(&format!("{}{page}", app.gateway)).await.unwrap();
        browser.wait_for_text("paymux admin").await;
        let widths = browser
            .client
            .execute("return [document.documentElement.scrollWidth, window.innerWidth];", vec![])
            .await
            .unwrap();
        let (scroll, inner) = (widths[0].as_u64().unwrap(), widths[1].as_u64().unwrap());
        assert!(inner <= 500, "the window is a phone's: {inner}");
        assert!(scroll <= inner, "{page} is {scroll}px wide at {inner}px");
        if page == "/admin/payments" {
            browser.screenshot("admin-list-phone").await;
        } else if page.starts_with("/admin/payments/") {
            browser.screenshot("admin-payment-phone").await;
        }
    }

    // A form posted without its CSRF token, or from another site, is refused and does nothing.
    let session = format!("paymux_admin={}", cookie.value());
    let actions_before = app.sandbox.store.operator_actions(failed_id).await.unwrap().len();
    let sync = format!("{}/admin/payments/{failed_id}/sync", app.gateway);
    let res = no_redirects
        .post(&sync)
        .header("cookie", &session)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert!(res.text().await.unwrap().contains("CSRF token"));
    let csrf = {
        let page = browser.client.source().await.unwrap();
        let at = page.find("name=\"csrf\" value=\"").unwrap() + "name=\"csrf\" value=\"".len();
        page[at..at + 64].to_owned()
    };
    let res = no_redirects
        .post(&sync)
        .header("cookie", &session)
        .header("origin", "http://evil.example")
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403, "another site's form, even with the token");
    let res = no_redirects
        .post(&sync)
        .header("cookie", "paymux_admin=forged")
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303, "no session, no action");
    assert_eq!(app.sandbox.store.operator_actions(failed_id).await.unwrap().len(), actions_before);
    // With its token, from this site, the same form is done (and recorded).
    let res = no_redirects
        .post(&sync)
        .header("cookie", &session)
        .header("origin", app.gateway.as_str())
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    let actions = app.sandbox.store.operator_actions(failed_id).await.unwrap();
    assert_eq!(actions.len(), actions_before + 1);
    browser.close().await;
}

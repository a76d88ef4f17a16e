//! The aggregated cashier (`/pay/{payment_id}`) as a payer uses it, in headless Chromium: pick a
//! channel, switch to another, pay at the channel's own cashier; the payment succeeds once, and a
//! payer who pays both is refunded the second.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use fantoccini::Locator;
use paymux_e2e::TestApp;
use paymux_e2e::browser::Browser;
use serde_json::{Value, json};

fn count(events: &[Value], kind: &str, payment: &str) -> usize {
    events.iter().filter(|e| e["type"] == kind && e["data"]["object"]["id"] == payment).count()
}

/// Follows the cashier's link to the channel's own cashier page and pays there.
async fn pay_at_the_channels_cashier(browser: &Browser, amount: &str) {
    let link = browser
        .client
        .wait()
        .at_most(std::time::Duration::from_secs(15))
        .for_element(Locator::Id("open-cashier"))
        .await
        .unwrap();
    link.click().await.unwrap();
    browser.wait_for_text(amount).await;
    browser.click_button_starting_with("Pay").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cashier_pick_alipay_switch_to_wechat_and_pay_succeeds_once_without_a_duplicate() {
    let app = TestApp::spawn().await;
    let (s, p) = app.create_payment("alipay", "qr", "cashier-1", 2590).await;
    assert_eq!(s, 201, "{p}");
    let pid = p["id"].as_str().unwrap().to_owned();
    let alipay_no = p["channel_order_no"].as_str().unwrap().to_owned();
    let cashier = format!("{}/pay/{pid}", app.gateway);

    let browser = Browser::start().await;
    browser.client.goto(&cashier).await.unwrap();
    browser.wait_for_text("25.90").await;
    browser.screenshot("cashier-choose").await;
    browser.click_button_starting_with("Alipay").await;
    browser.wait_for_text("Scan with Alipay").await;
    // The payer scans Alipay's code (the trade exists at Alipay from then on), then switches.
    let code_url = p["action"]["code_url"].as_str().unwrap();
    assert!(app.http.get(code_url).send().await.unwrap().status().is_success());
    browser.click_button_starting_with("WeChat Pay").await;
    browser.wait_for_text("Scan with WeChat Pay").await;
    browser.screenshot("cashier-wechat").await;
    pay_at_the_channels_cashier(&browser, "25.90").await;

    let paid = app.wait_payment(&pid, "succeeded").await;
    assert_eq!(paid["channel"], "wechat");
    assert_eq!(paid["attempts"].as_array().unwrap().len(), 2, "picking Alipay again made none");
    app.wait_mock_order("alipay", &alipay_no, 10, |o| o["trade_status"] == "TRADE_CLOSED").await;
    let events = app.events().await;
    assert_eq!(count(&events, "payment.succeeded", &pid), 1);
    assert_eq!(count(&events, "payment.duplicate_paid", &pid), 0);
    browser.client.goto(&cashier).await.unwrap();
    browser.wait_for_text("Paid with WeChat Pay").await;
    browser.screenshot("cashier-paid").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn paying_both_at_the_cashier_succeeds_once_and_refunds_the_other_automatically() {
    let app = TestApp::spawn().await;
    let (_, p) = app.create_payment("alipay", "qr", "cashier-2", 1200).await;
    let pid = p["id"].as_str().unwrap().to_owned();
    let alipay_no = p["channel_order_no"].as_str().unwrap().to_owned();
    let cashier = format!("{}/pay/{pid}", app.gateway);
    // Alipay's notification is lost: paymux hears of that payment only when it asks.
    app.set_faults("alipay", json!({"drop_notifications": true})).await;

    let browser = Browser::start().await;
    browser.client.goto(&cashier).await.unwrap();
    browser.click_button_starting_with("Alipay").await;
    pay_at_the_channels_cashier(&browser, "12.00").await;
    app.wait_mock_order("alipay", &alipay_no, 10, |o| o["paid"] == true).await;
    browser.client.goto(&cashier).await.unwrap();
    browser.click_button_starting_with("WeChat Pay").await;
    browser.wait_for_text("Scan with WeChat Pay").await;
    pay_at_the_channels_cashier(&browser, "12.00").await;

    let paid = app.wait_payment(&pid, "succeeded").await;
    assert_eq!(paid["channel"], "wechat", "the first success paymux heard of wins");
    let refunds = app
        .wait_for(&format!("/v1/payments/{pid}/refunds"), 15, |l| {
            l["data"][0]["status"] == "succeeded"
        })
        .await;
    assert_eq!(refunds["data"].as_array().unwrap().len(), 1, "{refunds}");
    assert_eq!(refunds["data"][0]["reason"], "duplicate");
    let order = app.mock_order("alipay", &alipay_no).await;
    assert_eq!(order["refunded_amount"], "12.00", "{order}");
    let events = app.events().await;
    assert_eq!(count(&events, "payment.succeeded", &pid), 1);
    assert_eq!(count(&events, "payment.duplicate_paid", &pid), 1);
    let (_, now) = app.get(&format!("/v1/payments/{pid}")).await;
    assert_eq!(now["amount_refunded"], 0);
    browser.close().await;
}

//! The sandbox's pages as a payer uses them, in headless Chromium: the merchant's form posted by
//! the browser, the channel's cashier page, the Pay button, and the payment that follows.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use paymux_e2e::TestApp;
use paymux_e2e::browser::Browser;

#[tokio::test(flavor = "multi_thread")]
async fn alipay_page_pay_form_posted_by_a_browser_then_paid_at_the_cashier_succeeds() {
    let app = TestApp::spawn().await;
    let (status, payment) = app.create_payment("alipay", "page", "browser-alipay-1", 2590).await;
    assert_eq!(status, 201, "{payment}");

    let browser = Browser::start().await;
    browser.submit_form(&payment["action"]).await;
    // The cashier shows what the payer is asked to pay, in yuan.
    browser.wait_for_text("25.90").await;
    browser.screenshot("alipay-cashier").await;
    browser.click_button_starting_with("Pay").await;

    let id = payment["id"].as_str().unwrap();
    let paid = app.wait_payment(id, "succeeded").await;
    assert!(paid["channel_trade_no"].as_str().is_some_and(|t| !t.is_empty()), "{paid}");
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn wechat_native_qr_cashier_paid_in_a_browser_succeeds() {
    let app = TestApp::spawn().await;
    let (status, payment) = app.create_payment("wechat", "qr", "browser-wechat-1", 1234).await;
    assert_eq!(status, 201, "{payment}");
    let code_url = payment["action"]["code_url"].as_str().unwrap();

    let browser = Browser::start().await;
    browser.client.goto(code_url).await.unwrap();
    browser.wait_for_text("12.34").await;
    browser.screenshot("wechat-cashier").await;
    browser.click_button_starting_with("Pay").await;

    let id = payment["id"].as_str().unwrap();
    let paid = app.wait_payment(id, "succeeded").await;
    assert!(paid["channel_trade_no"].as_str().is_some_and(|t| !t.is_empty()), "{paid}");
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_at_the_cashier_leaves_the_payment_unpaid() {
    let app = TestApp::spawn().await;
    let (_, payment) = app.create_payment("alipay", "qr", "browser-alipay-cancel", 500).await;
    let code_url = payment["action"]["code_url"].as_str().unwrap();
    let channel_order_no = payment["channel_order_no"].as_str().unwrap().to_owned();

    let browser = Browser::start().await;
    browser.client.goto(code_url).await.unwrap();
    browser.wait_for_text("5.00").await;
    browser.click_button_starting_with("Cancel").await;

    // The payer's cancel closes the trade at the channel; the gateway's payment is not paid.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let order = app.mock_order("alipay", &channel_order_no).await;
        if order["trade_status"] == "TRADE_CLOSED" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "cancel never reached the mock: {order}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (_, now) = app.get(&format!("/v1/payments/{}", payment["id"].as_str().unwrap())).await;
    assert_ne!(now["status"], "succeeded", "{now}");
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unionpay_page_form_posted_by_a_browser_then_paid_on_the_bank_page_succeeds() {
    let app = TestApp::spawn().await;
    let (status, payment) = app
        .post(
            "/v1/payments",
            serde_json::json!({
                "merchant_order_no": "browser-unionpay-1",
                "amount": 8850,
                "currency": "CNY",
                "subject": "Test order",
                "channel": "unionpay",
                "method": "page",
                "return_url": format!("{}/shop/return", app.gateway),
            }),
        )
        .await;
    assert_eq!(status, 201, "{payment}");

    let browser = Browser::start().await;
    browser.submit_form(&payment["action"]).await;
    // The bank page shows the amount in yuan and asks for a card.
    browser.wait_for_text("88.50").await;
    let card = browser.client.find(fantoccini::Locator::Id("accNo")).await.unwrap();
    card.clear().await.unwrap();
    card.send_keys("6216261000000000018").await.unwrap();
    browser.screenshot("unionpay-bank-page").await;
    browser.click_button_starting_with("Pay").await;

    let id = payment["id"].as_str().unwrap();
    let paid = app.wait_payment(id, "succeeded").await;
    let order = app.mock_order("unionpay", payment["channel_order_no"].as_str().unwrap()).await;
    assert_eq!(order["card"], "6216261000000000018", "the card entered on the page: {order}");
    assert_eq!(paid["channel_trade_no"], order["query_id"], "{paid}");
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unionpay_qr_code_opened_in_a_browser_and_paid_on_the_bank_page_succeeds() {
    let app = TestApp::spawn().await;
    let (status, payment) = app.create_payment("unionpay", "qr", "browser-unionpay-qr", 4321).await;
    assert_eq!(status, 201, "{payment}");
    let code_url = payment["action"]["code_url"].as_str().unwrap();

    // Opening the code's URL is the payer's scan: it leads to the bank page for this order.
    let browser = Browser::start().await;
    browser.client.goto(code_url).await.unwrap();
    browser.wait_for_text("43.21").await;
    browser.click_button_starting_with("Pay").await;

    let id = payment["id"].as_str().unwrap();
    let paid = app.wait_payment(id, "succeeded").await;
    let order = app.mock_order("unionpay", payment["channel_order_no"].as_str().unwrap()).await;
    assert_eq!(paid["channel_trade_no"], order["query_id"], "{paid}");
    browser.close().await;
}

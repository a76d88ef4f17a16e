//! What the adapter's test files share: the payments they ask WeChat for.

use paymux_core::{ChannelOrderNo, CreatePayment, Currency, Money, PaymentMethod};
use time::OffsetDateTime;

/// A WeChat payment code (18 digits, 10-15 first) that the mock pays at once.
pub const WECHAT_CODE: &str = "134567890123456789";

/// A payment of 1.00 CNY by `method`, with a fresh number, not held.
pub fn create(method: PaymentMethod) -> CreatePayment {
    let now = OffsetDateTime::now_utc();
    CreatePayment {
        channel_order_no: ChannelOrderNo::generate(),
        amount: Money::new(100, Currency::Cny).unwrap(),
        subject: "Image形象店-深圳腾大-QQ公仔".into(),
        method,
        created_at: now,
        expires_at: now + time::Duration::minutes(30),
        notify_url: "https://merchant.example/callbacks/wechat/1".into(),
        return_url: None,
        client_ip: None,
        payer_openid: None,
        auth_code: None,
        hold: false,
    }
}

/// A barcode payment with [`WECHAT_CODE`].
pub fn barcode() -> CreatePayment {
    CreatePayment {
        auth_code: Some(WECHAT_CODE.into()),
        client_ip: Some("203.0.113.9".into()),
        ..create(PaymentMethod::Barcode)
    }
}

//! Records for unit tests.

use paymux_core::{
    AccountId, AttemptId, AttemptStatus, ChannelKind, ChannelOrderNo, Currency, MerchantId, Money,
    PaymentId, PaymentMethod, PaymentStatus,
};
use paymux_store::{AttemptRecord, PaymentRecord};
use time::OffsetDateTime;

/// A pending 12.34 CNY Alipay QR payment.
pub fn payment_record() -> PaymentRecord {
    let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("a valid time");
    PaymentRecord {
        id: PaymentId::new(),
        merchant_id: MerchantId::new(),
        merchant_order_no: "order-1".into(),
        amount: Money::new(1234, Currency::Cny).expect("a positive amount"),
        subject: "A cup of tea".into(),
        status: PaymentStatus::Pending,
        channel: ChannelKind::Alipay,
        method: PaymentMethod::Qr,
        account_id: AccountId::new(),
        channel_order_no: ChannelOrderNo::of_attempt(AttemptId::new()),
        channel_trade_no: None,
        action: None,
        amount_refunded: 0,
        amount_reserved: 0,
        failure_code: None,
        failure_message: None,
        client_ip: None,
        return_url: None,
        payer: None,
        metadata: serde_json::json!({}),
        expires_at: now + time::Duration::hours(2),
        paid_at: None,
        created_at: now,
        updated_at: now,
        check_count: 0,
        livemode: false,
    }
}

/// The payment's one attempt, pending.
pub fn attempt_record(p: &PaymentRecord) -> AttemptRecord {
    AttemptRecord {
        id: format!("att_{}", p.channel_order_no.as_str().to_ascii_lowercase())
            .parse()
            .expect("an attempt id"),
        payment_id: p.id,
        account_id: p.account_id,
        channel: p.channel,
        method: p.method,
        channel_order_no: p.channel_order_no.clone(),
        status: AttemptStatus::Pending,
        action: None,
        channel_trade_no: None,
        channel_data: serde_json::json!({}),
        watching: true,
        created_at: p.created_at,
    }
}

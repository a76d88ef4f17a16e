#![allow(clippy::unwrap_used)]
//! `paymux ledger check`: passes on a balanced ledger, names each payment that is not and exits
//! non-zero.

use std::process::Command;

use paymux_core::*;
use paymux_store::*;
use time::OffsetDateTime;

fn check(path: &str) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_paymux"))
        .args(["ledger", "check", "--database-url", path])
        .output()
        .unwrap();
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[tokio::test]
async fn the_ledger_check_finds_a_payment_whose_entries_do_not_balance() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.db").to_str().unwrap().to_owned();
    let store = paymux_store::open(&path).await.unwrap();
    let merchant = store.create_merchant("m").await.unwrap();
    let account = AccountId::new();
    let now = OffsetDateTime::now_utc();
    store
        .put_channel_account(&AccountRecord {
            id: account,
            merchant_id: merchant,
            channel: ChannelKind::Unionpay,
            config: serde_json::json!({}),
            livemode: false,
            created_at: now,
        })
        .await
        .unwrap();
    let attempt = AttemptId::new();
    let no = ChannelOrderNo::of_attempt(attempt);
    let p = PaymentRecord {
        id: PaymentId::new(),
        merchant_id: merchant,
        merchant_order_no: "o-1".into(),
        amount: Money::new(1_000, Currency::Cny).unwrap(),
        subject: "s".into(),
        status: PaymentStatus::Pending,
        channel: ChannelKind::Unionpay,
        method: PaymentMethod::Qr,
        account_id: account,
        channel_order_no: no.clone(),
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
        expires_at: now,
        paid_at: None,
        created_at: now,
        updated_at: now,
        check_count: 0,
        livemode: false,
    };
    let a = AttemptRecord {
        id: attempt,
        payment_id: p.id,
        account_id: account,
        channel: ChannelKind::Unionpay,
        method: PaymentMethod::Qr,
        channel_order_no: no,
        status: AttemptStatus::Pending,
        action: None,
        channel_trade_no: None,
        channel_data: serde_json::json!({}),
        watching: true,
        created_at: now,
    };
    store.insert_payment(&p, &a, None, now, None).await.unwrap();
    let paid = PaymentTransition {
        payment_id: p.id,
        merchant_id: merchant,
        from: PaymentStatus::Pending,
        to: PaymentStatus::Succeeded,
        channel_trade_no: Some("T1".into()),
        paid_at: Some(now),
        failure_code: None,
        failure_message: None,
        at: now,
        events: vec![],
        attempt: AttemptChange {
            attempt_id: attempt,
            from: AttemptStatus::Pending,
            to: AttemptStatus::Succeeded,
            watching: false,
            channel_trade_no: Some("T1".into()),
        },
        inbound: None,
    };
    assert!(store.transition_payment(&paid).await.unwrap());

    let (ok, out) = check(&path);
    assert!(ok, "a paid payment balances: {out}");

    let stray = LedgerEntryRecord::new(
        p.id,
        MERCHANT_ACCOUNT,
        LedgerBucket::Settled,
        LedgerKind::Released,
        5,
        now,
    );
    store.insert_ledger_entries(merchant, false, &[stray]).await.unwrap();
    let (ok, out) = check(&path);
    assert!(!ok, "{out}");
    assert!(out.contains(&p.id.to_string()) && out.contains("sum to 5"), "{out}");
}

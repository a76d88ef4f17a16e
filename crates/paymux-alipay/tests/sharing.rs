//! 商家分账 through `AlipayChannel`, end to end against the Alipay mock on real sockets: held
//! create, bind, async settle, settle query, finish; and every way an answer can leave a share's
//! outcome unknown.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use paymux_alipay::AlipayChannel;
use paymux_core::{
    BarcodePaid, Channel, ChannelError, ChannelOrderNo, ChannelPayment, PaymentAction,
    PaymentMethod, PaymentRef, ReceiverAccount, ReleaseRequest, Released, ShareLine,
    ShareLineResult, ShareLineState, ShareRequest, ShareResult,
};
use serde_json::{Value, json};
use support::{LOGIN_USER_ID, SELLER_ID, Sandbox, Spoil, cny, create_request, payment_ref};

const RECEIVER_A: &str = "2088000000000101";
const RECEIVER_B: &str = "2088000000000102";
const NEVER_BOUND: &str = "2088000000000199";
const BIND: &str = "alipay.trade.royalty.relation.bind";
const SETTLE: &str = "alipay.trade.order.settle";
const SETTLE_QUERY: &str = "alipay.trade.order.settle.query";

fn receiver(account: &str) -> ReceiverAccount {
    ReceiverAccount {
        kind: "userId".into(),
        account: account.into(),
        name: None,
        relation_type: None,
    }
}

fn share(payment: &PaymentRef, lines: &[(&str, i64)]) -> ShareRequest {
    ShareRequest {
        payment: payment.clone(),
        share_no: ChannelOrderNo::generate(),
        lines: lines
            .iter()
            .map(|(account, fen)| ShareLine {
                receiver: receiver(account),
                amount: cny(*fen),
                description: "平台服务费".into(),
            })
            .collect(),
    }
}

fn release(payment: &PaymentRef) -> ReleaseRequest {
    ReleaseRequest { payment: payment.clone(), release_no: ChannelOrderNo::generate() }
}

fn line(account: &str, fen: i64, state: ShareLineState) -> ShareLineResult {
    ShareLineResult { account: account.into(), amount: cny(fen), state }
}

/// Queries the share until every line it sent is final.
async fn wait_final(channel: &AlipayChannel, req: &ShareRequest) -> ShareResult {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let result = channel.query_share(req).await.unwrap();
        if result.is_final() && result.lines.len() == req.lines.len() {
            return result;
        }
        assert!(Instant::now() < deadline, "the share never became final: {result:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn assert_unknown<T: std::fmt::Debug>(r: Result<T, ChannelError>, timed_out_expected: bool) {
    match r {
        Err(ChannelError::Unknown { timed_out, .. }) => assert_eq!(timed_out, timed_out_expected),
        other => panic!("expected Unknown, got {other:?}"),
    }
}

/// What `royalty_finish` unfroze to the merchant so far, if anything.
async fn released(sb: &Sandbox) -> Option<String> {
    sb.get("/_sandbox/royalty").await["released"][SELLER_ID].as_str().map(str::to_owned)
}

/// Settles the mock recorded (each `out_request_no` once).
async fn settles(sb: &Sandbox) -> usize {
    sb.get("/_sandbox/royalty").await["settles"].as_array().unwrap().len()
}

#[tokio::test]
async fn a_held_payment_is_shared_to_two_receivers_then_the_rest_is_released() {
    let sb = support::start().await;
    sb.royalty_settings(json!({"min_wait_ms": 0, "processing_ms": 200})).await;
    let channel = sb.channel();
    assert!(channel.holds_funds());
    assert_eq!(channel.max_share_bps(), 3_000);
    let payment = sb.paid_payment(&channel, 10_000, true).await;
    let trade_no = payment.channel_trade_no.clone().unwrap();

    // Binding again is harmless and sends the same number.
    for account in [RECEIVER_A, RECEIVER_B, RECEIVER_A] {
        channel.add_receiver(&receiver(account)).await.unwrap();
    }
    let binds = sb.sent(BIND);
    assert_eq!(binds[0]["out_request_no"], binds[2]["out_request_no"]);
    assert_ne!(binds[0]["out_request_no"], binds[1]["out_request_no"]);
    assert_eq!(
        binds[0]["receiver_list"],
        json!([{"type": "userId", "account": RECEIVER_A, "memo": "分账接收方"}])
    );

    let req = share(&payment, &[(RECEIVER_A, 1_500), (RECEIVER_B, 333)]);
    let accepted = channel.share(&req).await.unwrap();
    assert!(accepted.channel_share_no.is_some());
    assert_eq!(
        accepted.lines,
        vec![
            line(RECEIVER_A, 1_500, ShareLineState::Pending),
            line(RECEIVER_B, 333, ShareLineState::Pending)
        ]
    );
    assert_eq!(
        sb.sent(SETTLE)[0],
        json!({
            "out_request_no": req.share_no.as_str(),
            "trade_no": trade_no,
            "royalty_parameters": [
                {"royalty_type": "transfer", "trans_in": RECEIVER_A, "trans_in_type": "userId",
                 "amount": "15.00", "desc": "平台服务费"},
                {"royalty_type": "transfer", "trans_in": RECEIVER_B, "trans_in_type": "userId",
                 "amount": "3.33", "desc": "平台服务费"},
            ],
            "royalty_mode": "async",
            "extend_params": {"royalty_finish": "false"},
        })
    );

    let done = wait_final(&channel, &req).await;
    assert_eq!(done.channel_share_no, accepted.channel_share_no);
    assert_eq!(
        done.lines,
        vec![
            line(RECEIVER_A, 1_500, ShareLineState::Succeeded),
            line(RECEIVER_B, 333, ShareLineState::Succeeded)
        ]
    );
    assert_eq!(sb.balance(RECEIVER_A).await, "15.00");
    assert_eq!(sb.balance(RECEIVER_B).await, "3.33");

    // The same share again moves nothing twice.
    let again = channel.share(&req).await.unwrap();
    assert_eq!(again.channel_share_no, accepted.channel_share_no);
    assert_eq!(wait_final(&channel, &req).await, done);
    assert_eq!(settles(&sb).await, 1);
    assert_eq!(sb.balance(RECEIVER_A).await, "15.00");
    assert_eq!(sb.balance(RECEIVER_B).await, "3.33");

    // Release: the rest goes to the merchant, once, however often it is sent.
    let rel = release(&payment);
    assert_eq!(channel.release(&rel).await.unwrap(), Released::Done);
    assert_eq!(
        sb.sent(SETTLE).last().unwrap(),
        &json!({
            "out_request_no": rel.release_no.as_str(),
            "trade_no": trade_no,
            "royalty_mode": "async",
            "extend_params": {"royalty_finish": "true"},
        })
    );
    assert_eq!(released(&sb).await.as_deref(), Some("81.67"));
    assert_eq!(channel.release(&rel).await.unwrap(), Released::Done);
    assert_eq!(released(&sb).await.as_deref(), Some("81.67"));

    // Nothing is frozen any more: a later share is refused as a whole.
    let late = share(&payment, &[(RECEIVER_A, 100)]);
    match channel.share(&late).await {
        Err(ChannelError::Declined { code, .. }) => {
            assert_eq!(code, "ACQ.TXN_RESULT_ACCOUNT_BALANCE_NOT_ENOUGH");
        }
        other => panic!("expected Declined, got {other:?}"),
    }
    assert_eq!(sb.balance(RECEIVER_A).await, "15.00");
}

#[tokio::test]
async fn lines_alipay_reports_under_other_ids_are_reported_under_the_accounts_sent() {
    let sb = support::start().await;
    sb.royalty_settings(json!({"min_wait_ms": 0, "processing_ms": 100})).await;
    let channel = sb.channel();
    let payment = sb.paid_payment(&channel, 10_000, true).await;
    let open_id = ReceiverAccount {
        kind: "openId".into(),
        ..receiver("074a1CcTG1LelxKe4xQC0zgNdId0nxi95b5lsNpazWYoCo5")
    };
    let login = ReceiverAccount {
        kind: "loginName".into(),
        name: Some("张三".into()),
        ..receiver("shop@example.com")
    };
    for r in [receiver(RECEIVER_A), open_id.clone(), login.clone()] {
        channel.add_receiver(&r).await.unwrap();
    }
    let mut req = share(&payment, &[(RECEIVER_A, 100)]);
    for (r, fen) in [(&open_id, 200), (&login, 300)] {
        req.lines.push(ShareLine {
            receiver: r.clone(),
            amount: cny(fen),
            description: "平台服务费".into(),
        });
    }
    channel.share(&req).await.unwrap();

    // Each answer names the open id only by trans_in_open_id and the login name by a user id.
    let deadline = Instant::now() + Duration::from_secs(20);
    let done = loop {
        sb.spoil(SETTLE_QUERY, Spoil::OtherReceiverIds);
        let result = channel.query_share(&req).await.unwrap();
        if result.is_final() && result.lines.len() == req.lines.len() {
            break result;
        }
        assert!(Instant::now() < deadline, "the share never became final: {result:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        done.lines,
        vec![
            line(RECEIVER_A, 100, ShareLineState::Succeeded),
            line(&open_id.account, 200, ShareLineState::Succeeded),
            line(&login.account, 300, ShareLineState::Succeeded),
        ]
    );
    // The same lines, as the mock itself names them.
    assert_eq!(wait_final(&channel, &req).await.lines, done.lines);
    assert_eq!(sb.balance(LOGIN_USER_ID).await, "0.00");
    assert_eq!(sb.balance(&login.account).await, "3.00");
}

#[tokio::test]
async fn a_release_is_pending_until_its_query_shows_it_and_a_resend_releases_once() {
    let sb = support::start().await;
    sb.royalty_settings(json!({"min_wait_ms": 0, "processing_ms": 50})).await;
    let channel = sb.channel();
    let payment = sb.paid_payment(&channel, 10_000, true).await;
    channel.add_receiver(&receiver(RECEIVER_A)).await.unwrap();
    let req = share(&payment, &[(RECEIVER_A, 1_000)]);
    channel.share(&req).await.unwrap();
    wait_final(&channel, &req).await;

    // Accepted, but the query cannot confirm it yet: pending, not failed.
    let rel = release(&payment);
    sb.spoil(SETTLE_QUERY, Spoil::SystemErrorInstead);
    assert_eq!(channel.release(&rel).await.unwrap(), Released::Pending);
    let sent = sb.sent(SETTLE);
    assert_eq!(sent.last().unwrap()["royalty_mode"], "async");
    assert_eq!(sent.iter().filter(|b| b["royalty_mode"] != "async").count(), 0);
    let queried = sb.sent(SETTLE_QUERY);
    assert_eq!(
        queried.last().unwrap(),
        &json!({"out_request_no": rel.release_no.as_str(), "trade_no": payment.channel_trade_no})
    );
    assert_eq!(released(&sb).await.as_deref(), Some("90.00"));

    // Sent again with the same number: confirmed, and released once.
    assert_eq!(channel.release(&rel).await.unwrap(), Released::Done);
    assert_eq!(channel.release(&rel).await.unwrap(), Released::Done);
    assert_eq!(released(&sb).await.as_deref(), Some("90.00"));
    assert_eq!(settles(&sb).await, 2);
}

#[tokio::test]
async fn a_refused_receiver_fails_its_line_only_and_is_paid_later_under_a_new_number() {
    let sb = support::start().await;
    let refused = json!({"min_wait_ms": 0, "processing_ms": 100,
        "refused_receivers": {RECEIVER_B: "TXN_RESULT_ACCOUNT_STATUS_NOT_VALID"}});
    sb.royalty_settings(refused).await;
    let channel = sb.channel();
    let payment = sb.paid_payment(&channel, 10_000, true).await;
    for account in [RECEIVER_A, RECEIVER_B] {
        channel.add_receiver(&receiver(account)).await.unwrap();
    }

    let first = share(&payment, &[(RECEIVER_A, 1_000), (RECEIVER_B, 500)]);
    channel.share(&first).await.unwrap();
    let result = wait_final(&channel, &first).await;
    assert_eq!(
        result.lines,
        vec![
            line(RECEIVER_A, 1_000, ShareLineState::Succeeded),
            line(
                RECEIVER_B,
                500,
                ShareLineState::Failed {
                    code: "TXN_RESULT_ACCOUNT_STATUS_NOT_VALID".into(),
                    message: "分账收入方账户状态异常".into()
                }
            ),
        ]
    );
    assert_eq!(sb.balance(RECEIVER_A).await, "10.00");
    assert_eq!(sb.balance(RECEIVER_B).await, "0.00");

    // The receiver's account is fixed; the failed line is sent again under a new number.
    sb.royalty_settings(json!({"min_wait_ms": 0, "processing_ms": 100})).await;
    let retry = share(&payment, &[(RECEIVER_B, 500)]);
    channel.share(&retry).await.unwrap();
    let result = wait_final(&channel, &retry).await;
    assert_eq!(result.lines, vec![line(RECEIVER_B, 500, ShareLineState::Succeeded)]);
    assert_eq!(sb.balance(RECEIVER_B).await, "5.00");
    assert_eq!(sb.balance(RECEIVER_A).await, "10.00");
    assert_eq!(channel.release(&release(&payment)).await.unwrap(), Released::Done);
    assert_eq!(released(&sb).await.as_deref(), Some("85.00"));
}

#[tokio::test]
async fn receivers_alipay_refuses_are_declined_and_requests_paymux_cannot_send_are_invalid() {
    let sb = support::start().await;
    sb.royalty_settings(json!({"min_wait_ms": 0})).await;
    let channel = sb.channel();
    let payment = sb.paid_payment(&channel, 5_000, true).await;
    channel.add_receiver(&receiver(RECEIVER_A)).await.unwrap();

    // A receiver never bound: the whole call is refused, nothing moved.
    let unbound = share(&payment, &[(RECEIVER_A, 100), (NEVER_BOUND, 100)]);
    match channel.share(&unbound).await {
        Err(ChannelError::Declined { code, message }) => {
            assert_eq!(code, "ACQ.INVALID_PARAMETER");
            assert!(message.contains(NEVER_BOUND), "{message}");
        }
        other => panic!("expected Declined, got {other:?}"),
    }
    assert_eq!(sb.balance(RECEIVER_A).await, "0.00");
    // Alipay keeps no settle under that number: the query cannot tell, so it is unknown.
    assert_unknown(channel.query_share(&unbound).await, false);

    // Over the account's ratio (30 % of 50.00 is 15.00).
    let over = share(&payment, &[(RECEIVER_A, 1_501)]);
    assert!(matches!(channel.share(&over).await, Err(ChannelError::Declined { .. })));

    // A login name needs the holder's name; a WeChat account type never reaches Alipay.
    let login = ReceiverAccount { kind: "loginName".into(), ..receiver("shop@example.com") };
    assert!(matches!(channel.add_receiver(&login).await, Err(ChannelError::Declined { .. })));
    let wechat = ReceiverAccount { kind: "MERCHANT_ID".into(), ..receiver("1900000109") };
    assert!(matches!(channel.add_receiver(&wechat).await, Err(ChannelError::Invalid { .. })));
    let named = ReceiverAccount { name: Some("张三".into()), ..login };
    channel.add_receiver(&named).await.unwrap();
    assert_eq!(sb.sent(BIND).last().unwrap()["receiver_list"][0]["name"], "张三");

    // A share needs the paid trade's number, and a number Alipay accepts.
    let unpaid = payment_ref(&create_request(PaymentMethod::Qr, 100, true));
    assert!(matches!(
        channel.share(&share(&unpaid, &[(RECEIVER_A, 1)])).await,
        Err(ChannelError::Invalid { .. })
    ));
    assert!(matches!(channel.release(&release(&unpaid)).await, Err(ChannelError::Invalid { .. })));
    let long_no = ShareRequest {
        share_no: ChannelOrderNo::from_channel(&"A".repeat(33)).unwrap(),
        ..share(&payment, &[(RECEIVER_A, 1)])
    };
    assert!(matches!(channel.share(&long_no).await, Err(ChannelError::Invalid { .. })));
    assert!(sb.sent(SETTLE).iter().all(|b| b["trade_no"].is_string()));
}

#[tokio::test]
async fn a_trade_created_without_hold_freezes_nothing() {
    let sb = support::start().await;
    sb.royalty_settings(json!({"min_wait_ms": 0, "processing_ms": 50})).await;
    let channel = sb.channel();
    let payment = sb.paid_payment(&channel, 2_000, false).await;
    assert!(sb.sent("alipay.trade.precreate")[0].get("extend_params").is_none());
    channel.add_receiver(&receiver(RECEIVER_A)).await.unwrap();

    // Alipay then takes a split from the merchant's balance (channels/profit-sharing.md,
    // uncertain): the mock accepts it, and the adapter reports what it says.
    let req = share(&payment, &[(RECEIVER_A, 200)]);
    channel.share(&req).await.unwrap();
    let result = wait_final(&channel, &req).await;
    assert_eq!(result.lines, vec![line(RECEIVER_A, 200, ShareLineState::Succeeded)]);
    // Releasing unfreezes nothing, since nothing was frozen.
    assert_eq!(channel.release(&release(&payment)).await.unwrap(), Released::Done);
    assert_eq!(released(&sb).await, None);
}

#[tokio::test]
async fn a_share_whose_answer_is_lost_or_untrusted_is_unknown_and_a_resend_moves_nothing_twice() {
    let sb = support::start().await;
    sb.royalty_settings(json!({"min_wait_ms": 0, "processing_ms": 50})).await;
    let channel = sb.channel();
    let payment = sb.paid_payment(&channel, 10_000, true).await;
    channel.add_receiver(&receiver(RECEIVER_A)).await.unwrap();
    let mut sent = Vec::new();

    // The answer never comes (the work is done).
    let quick = sb.channel_with(Duration::from_secs(1), None);
    sb.faults(json!({"timeout_after_commit": [SETTLE]})).await;
    let req = share(&payment, &[(RECEIVER_A, 100)]);
    assert_unknown(quick.share(&req).await, true);
    sb.faults(json!({})).await;
    // The query finds it: it was done.
    let found = wait_final(&channel, &req).await;
    assert_eq!(found.lines, vec![line(RECEIVER_A, 100, ShareLineState::Succeeded)]);
    sent.push(req);

    // A 502 after the work, a signed ACQ.SYSTEM_ERROR after the work.
    for spoil in [Spoil::Http502AfterWork, Spoil::SystemErrorAfterWork] {
        sb.spoil(SETTLE, spoil);
        let req = share(&payment, &[(RECEIVER_A, 100)]);
        assert_unknown(channel.share(&req).await, false);
        sent.push(req);
    }
    // An answer with a signature that does not verify; an unsigned 20000 (nothing done).
    for faults in [json!({"bad_signature": true}), json!({"error_rate": 1.0})] {
        sb.faults(faults).await;
        let req = share(&payment, &[(RECEIVER_A, 100)]);
        assert_unknown(channel.share(&req).await, false);
        assert_unknown(channel.query_share(&req).await, false);
        sb.faults(json!({})).await;
        sent.push(req);
    }

    // Each is sent again with its own number: done once, whatever the first send did.
    for req in &sent {
        channel.share(req).await.unwrap();
        let result = wait_final(&channel, req).await;
        assert_eq!(result.lines, vec![line(RECEIVER_A, 100, ShareLineState::Succeeded)]);
    }
    assert_eq!(settles(&sb).await, sent.len());
    assert_eq!(sb.balance(RECEIVER_A).await, format!("{}.00", sent.len()));
}

#[tokio::test]
async fn too_early_and_system_errors_are_unknown_for_every_sharing_call() {
    let sb = support::start().await;
    // Too soon after the payment (about 30 s at Alipay; an hour here, so that no slow machine
    // gets past it): ACQ.TRADE_SETTLE_ERROR, "send the same request again later".
    sb.royalty_settings(json!({"min_wait_ms": 3_600_000})).await;
    let channel = sb.channel();
    let payment = sb.paid_payment(&channel, 10_000, true).await;
    channel.add_receiver(&receiver(RECEIVER_A)).await.unwrap();
    let req = share(&payment, &[(RECEIVER_A, 200)]);
    let rel = release(&payment);
    for outcome in [channel.share(&req).await.map(drop), channel.release(&rel).await.map(drop)] {
        match outcome {
            Err(ChannelError::Unknown { reason, timed_out: false }) => {
                assert!(reason.contains("ACQ.TRADE_SETTLE_ERROR"), "{reason}");
            }
            other => panic!("expected Unknown, got {other:?}"),
        }
    }
    sb.royalty_settings(json!({"min_wait_ms": 0, "processing_ms": 50})).await;

    // Signed ACQ.SYSTEM_ERROR before the mock sees the call.
    sb.spoil(SETTLE, Spoil::SystemErrorInstead);
    assert_unknown(channel.share(&req).await, false);
    assert_eq!(settles(&sb).await, 0);
    sb.spoil(BIND, Spoil::SystemErrorInstead);
    assert_unknown(channel.add_receiver(&receiver(RECEIVER_B)).await, false);

    channel.share(&req).await.unwrap();
    sb.spoil(SETTLE_QUERY, Spoil::SystemErrorInstead);
    assert_unknown(channel.query_share(&req).await, false);
    wait_final(&channel, &req).await;

    // A release whose answer is lost is sent again, with the same number: done once.
    sb.spoil(SETTLE, Spoil::SystemErrorAfterWork);
    assert_unknown(channel.release(&rel).await, false);
    assert_eq!(released(&sb).await.as_deref(), Some("98.00"));
    let quick = sb.channel_with(Duration::from_secs(1), None);
    sb.faults(json!({"timeout_after_commit": [SETTLE]})).await;
    assert_unknown(quick.release(&rel).await, true);
    sb.faults(json!({})).await;
    assert_eq!(channel.release(&rel).await.unwrap(), Released::Done);
    assert_eq!(released(&sb).await.as_deref(), Some("98.00"));
    assert_eq!(sb.balance(RECEIVER_A).await, "2.00");
}

#[tokio::test]
async fn creates_carry_royalty_freeze_only_when_held_for_every_method() {
    let sb = support::start().await;
    sb.royalty_settings(json!({"min_wait_ms": 0, "processing_ms": 50})).await;
    let channel = sb.channel();
    let frozen = json!({"royalty_freeze": "true"});

    for hold in [true, false] {
        channel.create(&create_request(PaymentMethod::Qr, 100, hold)).await.unwrap();
        let body = sb.sent("alipay.trade.precreate").pop().unwrap();
        assert_eq!(body.get("extend_params"), hold.then_some(&frozen), "hold={hold}");
    }
    // Page, wap and app pay make no server call: the hold is in what the payer gets.
    for method in [PaymentMethod::Page, PaymentMethod::Wap, PaymentMethod::App] {
        for hold in [true, false] {
            let created = channel.create(&create_request(method, 100, hold)).await.unwrap();
            let biz: Value = match created.action {
                PaymentAction::Form { fields, .. } => {
                    serde_json::from_str(&fields["biz_content"]).unwrap()
                }
                PaymentAction::Sdk { params } => {
                    let order = params["order_string"].as_str().unwrap();
                    let params = paymux_alipay::protocol::decode_form(order.as_bytes()).unwrap();
                    serde_json::from_str(&params["biz_content"]).unwrap()
                }
                other => panic!("{other:?}"),
            };
            assert_eq!(biz.get("extend_params"), hold.then_some(&frozen), "{method} hold={hold}");
        }
    }

    // Barcode pay: the held trade is frozen at the mock, as the release shows.
    let mut pay = create_request(PaymentMethod::Barcode, 1_000, true);
    pay.auth_code = Some("286012345678901234".into());
    let BarcodePaid { state, .. } = channel.pay_barcode(&pay).await.unwrap();
    assert_eq!(sb.sent("alipay.trade.pay")[0]["extend_params"], frozen);
    let ChannelPayment::Succeeded { channel_trade_no, .. } = state else {
        panic!("not paid: {state:?}")
    };
    let payment = PaymentRef { channel_trade_no: Some(channel_trade_no), ..payment_ref(&pay) };
    channel.add_receiver(&receiver(RECEIVER_A)).await.unwrap();
    let req = share(&payment, &[(RECEIVER_A, 150)]);
    channel.share(&req).await.unwrap();
    wait_final(&channel, &req).await;
    assert_eq!(channel.release(&release(&payment)).await.unwrap(), Released::Done);
    assert_eq!(released(&sb).await.as_deref(), Some("8.50"));
}

#[tokio::test]
async fn max_share_bps_comes_from_the_account() {
    let sb = support::start().await;
    assert_eq!(sb.channel_with(Duration::from_secs(1), Some(2_000)).max_share_bps(), 2_000);
    assert_eq!(sb.channel().max_share_bps(), 3_000);
}

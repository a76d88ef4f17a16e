//! Profit sharing end to end: `WechatChannel` against the real WeChat Pay mock on 127.0.0.1:0.
//! Every call is signed and every answer verified; the mock's control API pays the orders,
//! injects the faults and shows what moved to whom.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use paymux_core::{
    Channel, ChannelError, ChannelOrderNo, ChannelPayment, CreatePayment, Currency, Money,
    PaymentMethod, PaymentRef, ReceiverAccount, ReleaseRequest, Released, ShareLine,
    ShareLineState, ShareRequest, ShareResult,
};
use paymux_crypto::RsaPrivateKey;
use paymux_mock_wechat::{
    Faults, KeyMode, PlatformKeys, ProfitSharingSettings, WechatMerchant, WechatMock,
    WechatMockConfig,
};
use paymux_wechat::{WechatAccountConfig, WechatChannel};
use serde_json::{Value, json};
use support::{barcode, create};

const MCHID: &str = "1900000001";
const APPID: &str = "wx8888888888888888";
const APIV3: &str = "a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb";
/// The receivers: a merchant (a supplier, say) and a person (a distributor).
const PARTNER: &str = "1900000109";
const PARTNER_NAME: &str = "深圳示例供应链有限公司";
const OPENID: &str = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o";

const T: Duration = Duration::from_secs(10);

struct Sandbox {
    base: String,
    mock: WechatMock,
    channel: WechatChannel,
    http: reqwest::Client,
}

/// WeChat's rules as the mock keeps them, with the one-minute wait after payment and the
/// processing time cut short.
fn quick() -> ProfitSharingSettings {
    ProfitSharingSettings { min_wait_ms: 0, processing_ms: 50, ..ProfitSharingSettings::default() }
}

/// The mock on a free port with one merchant in `mode`, and the adapter configured for it.
async fn sandbox(mode: KeyMode, timeout: Duration) -> Sandbox {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let mut config = WechatMockConfig::new(base.clone());
    config.notify_delays = vec![Duration::from_millis(20)];
    let keys = PlatformKeys::generate().unwrap();
    let mock = WechatMock::new(config, keys.clone());
    let merchant = RsaPrivateKey::generate().unwrap();
    let merchant_serial = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1";
    mock.register_merchant(
        WechatMerchant {
            mchid: MCHID.into(),
            appid: APPID.into(),
            merchant_serial: merchant_serial.into(),
            merchant_public_key: merchant.public_key(),
            apiv3_key: APIV3.into(),
        },
        mode,
    );
    mock.set_profit_sharing(quick());
    tokio::spawn(mock.clone().serve(listener));
    let public_key = mode != KeyMode::PlatformCertificate;
    let config = WechatAccountConfig {
        mchid: MCHID.into(),
        appid: APPID.into(),
        merchant_serial: merchant_serial.into(),
        merchant_private_key: merchant.to_pkcs8_pem().unwrap(),
        apiv3_key: APIV3.into(),
        base_url: base.clone(),
        platform_public_key_id: public_key.then(|| keys.public_key_id()),
        platform_public_key: public_key.then(|| keys.public_key_pem()),
        max_share_bps: None,
    };
    let channel = WechatChannel::new(&config, timeout).unwrap();
    Sandbox { base, mock, channel, http: reqwest::Client::new() }
}

/// A Native payment of 100.00 CNY; `hold` freezes it for sharing.
fn payment(hold: bool) -> CreatePayment {
    CreatePayment {
        amount: cny(10_000),
        notify_url: "http://127.0.0.1:9/notify".into(),
        hold,
        ..create(PaymentMethod::Qr)
    }
}

fn cny(fen: i64) -> Money {
    Money::new(fen, Currency::Cny).unwrap()
}

fn partner() -> ReceiverAccount {
    ReceiverAccount {
        kind: "MERCHANT_ID".into(),
        account: PARTNER.into(),
        name: Some(PARTNER_NAME.into()),
        relation_type: None,
    }
}

fn person() -> ReceiverAccount {
    ReceiverAccount {
        kind: "PERSONAL_OPENID".into(),
        account: OPENID.into(),
        name: None,
        relation_type: Some("DISTRIBUTOR".into()),
    }
}

fn line(receiver: ReceiverAccount, fen: i64) -> ShareLine {
    ShareLine { description: format!("分给{}", receiver.account), receiver, amount: cny(fen) }
}

fn share(payment: &PaymentRef, lines: Vec<ShareLine>) -> ShareRequest {
    ShareRequest { payment: payment.clone(), share_no: ChannelOrderNo::generate(), lines }
}

fn release(payment: &PaymentRef) -> ReleaseRequest {
    ReleaseRequest { payment: payment.clone(), release_no: ChannelOrderNo::generate() }
}

fn state_of<'a>(result: &'a ShareResult, account: &str) -> &'a ShareLineState {
    &result.lines.iter().find(|l| l.account == account).unwrap().state
}

/// Unknown, not timed out, for the reason `why` names (a WeChat code or message).
fn unknown_for(r: &Result<impl std::fmt::Debug, ChannelError>, why: &str) -> bool {
    matches!(r, Err(ChannelError::Unknown { reason, timed_out: false }) if reason.contains(why))
}

impl Sandbox {
    async fn control(&self, method: &str, path: &str) -> (u16, Value) {
        let res = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        (res.status().as_u16(), res.json().await.unwrap_or(Value::Null))
    }

    /// Creates the payment at the mock and pays it as the buyer does, through the control API;
    /// hands back the attempt as paymux stores it.
    async fn paid(&self, req: &CreatePayment) -> PaymentRef {
        self.channel.create(req).await.unwrap();
        let path = format!("/_sandbox/orders/{}/pay", req.channel_order_no);
        let (status, order) = self.control("POST", &path).await;
        assert_eq!(status, 200, "{order}");
        PaymentRef {
            channel_order_no: req.channel_order_no.clone(),
            channel_trade_no: Some(order["transaction_id"].as_str().unwrap().to_owned()),
            amount: req.amount,
            created_at: req.created_at,
            expires_at: req.expires_at,
            channel_data: json!({}),
        }
    }

    async fn add_receivers(&self) {
        self.channel.add_receiver(&partner()).await.unwrap();
        self.channel.add_receiver(&person()).await.unwrap();
    }

    /// What the receiver has been paid by split lines that succeeded, in fen.
    async fn balance(&self, account: &str) -> i64 {
        let (status, body) = self.control("GET", &format!("/_sandbox/receivers/{account}")).await;
        assert_eq!(status, 200, "{body}");
        body["balance"].as_i64().unwrap()
    }

    async fn book(&self) -> Value {
        let (status, body) = self.control("GET", "/_sandbox/profitsharing").await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// The mock's hold of a paid payment's frozen funds.
    async fn hold(&self, payment: &PaymentRef) -> Value {
        let book = self.book().await;
        let id = payment.channel_trade_no.as_deref().unwrap();
        book["holds"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["transaction_id"] == id)
            .unwrap()
            .clone()
    }

    /// Queries the split, as paymux polls it, until every line is final.
    async fn settled(&self, req: &ShareRequest) -> ShareResult {
        let deadline = Instant::now() + T;
        loop {
            let result = self.channel.query_share(req).await.unwrap();
            if result.is_final() {
                return result;
            }
            assert!(Instant::now() < deadline, "split {} never finished: {result:?}", req.share_no);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends the release again, as paymux does, until the channel says it is done.
    async fn released(&self, req: &ReleaseRequest) {
        let deadline = Instant::now() + T;
        while self.channel.release(req).await.unwrap() == Released::Pending {
            assert!(Instant::now() < deadline, "release {} never finished", req.release_no);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn a_held_payment_is_split_between_two_receivers_and_the_rest_released() {
    let s = sandbox(KeyMode::PublicKey, T).await;
    assert!(s.channel.holds_funds());
    assert_eq!(s.channel.max_share_bps(), 3000);
    let paid = s.paid(&payment(true)).await;
    s.add_receivers().await;
    // The mock decrypted the name sent for its public key; the relation defaulted to PARTNER.
    let book = s.book().await;
    let relations = book["receivers"][MCHID].as_array().unwrap();
    let merchant = relations.iter().find(|r| r["account"] == PARTNER).unwrap();
    assert_eq!(
        (merchant["name"].as_str(), merchant["relation_type"].as_str()),
        (Some(PARTNER_NAME), Some("PARTNER"))
    );

    let req = share(&paid, vec![line(partner(), 1_500), line(person(), 333)]);
    let accepted = s.channel.share(&req).await.unwrap();
    assert!(accepted.channel_share_no.is_some());
    let sent: Vec<_> = accepted.lines.iter().map(|l| (l.account.as_str(), l.amount)).collect();
    assert_eq!(sent, [(PARTNER, cny(1_500)), (OPENID, cny(333))]);

    let done = s.settled(&req).await;
    assert_eq!(done.channel_share_no, accepted.channel_share_no);
    assert_eq!(state_of(&done, PARTNER), &ShareLineState::Succeeded);
    assert_eq!(state_of(&done, OPENID), &ShareLineState::Succeeded);
    assert_eq!((s.balance(PARTNER).await, s.balance(OPENID).await), (1_500, 333));

    // The same share sent again reports the split and moves nothing twice.
    let again = s.channel.share(&req).await.unwrap();
    assert_eq!(again, done);
    assert_eq!((s.balance(PARTNER).await, s.balance(OPENID).await), (1_500, 333));

    let rel = release(&paid);
    s.released(&rel).await;
    let hold = s.hold(&paid).await;
    assert_eq!(hold["finished"], true);
    assert_eq!(hold["unsplit"], 0);
    assert_eq!(hold["net"].as_i64().unwrap(), 10_000 - hold["fee"].as_i64().unwrap());
    assert_eq!(hold["released"].as_i64().unwrap(), hold["net"].as_i64().unwrap() - 1_833);

    // Releasing again, under the same number or a new one, is done and releases nothing more.
    assert_eq!(s.channel.release(&rel).await.unwrap(), Released::Done);
    assert_eq!(s.channel.release(&release(&paid)).await.unwrap(), Released::Done);
    assert_eq!(s.hold(&paid).await["released"], hold["released"]);
    // Nothing is left to split.
    let late = s.channel.share(&share(&paid, vec![line(partner(), 100)])).await;
    assert!(
        matches!(&late, Err(ChannelError::Declined { code, .. }) if code == "NOT_ENOUGH"),
        "{late:?}"
    );
    assert_eq!((s.balance(PARTNER).await, s.balance(OPENID).await), (1_500, 333));
}

#[tokio::test]
async fn certificate_mode_encrypts_for_the_platform_certificate_and_a_held_codepay_splits() {
    let s = sandbox(KeyMode::PlatformCertificate, T).await;
    s.add_receivers().await;
    let book = s.book().await;
    let relations = book["receivers"][MCHID].as_array().unwrap();
    assert!(relations.iter().any(|r| r["account"] == PARTNER && r["name"] == PARTNER_NAME));
    assert!(
        relations.iter().any(|r| r["account"] == OPENID && r["relation_type"] == "DISTRIBUTOR")
    );

    let req = CreatePayment { amount: cny(10_000), hold: true, ..barcode() };
    let ChannelPayment::Succeeded { channel_trade_no, .. } =
        s.channel.pay_barcode(&req).await.unwrap().state
    else {
        panic!("the mock pays this code at once")
    };
    let paid = PaymentRef {
        channel_order_no: req.channel_order_no.clone(),
        channel_trade_no: Some(channel_trade_no),
        amount: req.amount,
        created_at: req.created_at,
        expires_at: req.expires_at,
        channel_data: json!({}),
    };
    let split = share(&paid, vec![line(partner(), 2_000)]);
    s.channel.share(&split).await.unwrap();
    assert_eq!(state_of(&s.settled(&split).await, PARTNER), &ShareLineState::Succeeded);
    assert_eq!(s.balance(PARTNER).await, 2_000);
}

#[tokio::test]
async fn a_refused_line_fails_alone_and_a_new_number_pays_it_once_the_fault_is_gone() {
    let s = sandbox(KeyMode::PublicKey, T).await;
    let paid = s.paid(&payment(true)).await;
    s.add_receivers().await;
    let refused = [(OPENID.to_owned(), "RECEIVER_REAL_NAME_NOT_VERIFIED".to_owned())];
    s.mock.set_profit_sharing(ProfitSharingSettings {
        refused_receivers: refused.into_iter().collect(),
        ..quick()
    });

    let first = share(&paid, vec![line(partner(), 1_000), line(person(), 500)]);
    s.channel.share(&first).await.unwrap();
    let done = s.settled(&first).await;
    assert_eq!(state_of(&done, PARTNER), &ShareLineState::Succeeded);
    assert!(matches!(
        state_of(&done, OPENID),
        ShareLineState::Failed { code, message }
            if code == "RECEIVER_REAL_NAME_NOT_VERIFIED" && !message.is_empty()
    ));
    assert_eq!((s.balance(PARTNER).await, s.balance(OPENID).await), (1_000, 0));

    s.mock.set_profit_sharing(quick());
    let retry = share(&paid, vec![line(person(), 500)]);
    s.channel.share(&retry).await.unwrap();
    assert_eq!(state_of(&s.settled(&retry).await, OPENID), &ShareLineState::Succeeded);
    assert_eq!((s.balance(PARTNER).await, s.balance(OPENID).await), (1_000, 500));
}

#[tokio::test]
async fn a_share_too_soon_after_the_payment_is_unknown_and_goes_through_later() {
    let s = sandbox(KeyMode::PublicKey, T).await;
    s.mock.set_profit_sharing(ProfitSharingSettings { min_wait_ms: 60_000, ..quick() });
    let paid = s.paid(&payment(true)).await;
    s.add_receivers().await;
    let req = share(&paid, vec![line(partner(), 1_000)]);
    let early = s.channel.share(&req).await;
    assert!(unknown_for(&early, "订单处理中，请稍后重试"), "{early:?}");
    let early = s.channel.release(&release(&paid)).await;
    assert!(unknown_for(&early, "订单处理中，请稍后重试"), "{early:?}");

    s.mock.set_profit_sharing(quick());
    s.channel.share(&req).await.unwrap();
    assert_eq!(state_of(&s.settled(&req).await, PARTNER), &ShareLineState::Succeeded);
}

#[tokio::test]
async fn splits_over_the_ratio_cap_are_declined_and_move_nothing() {
    let s = sandbox(KeyMode::PublicKey, T).await;
    let paid = s.paid(&payment(true)).await;
    s.add_receivers().await;
    // 30.01 of 100.00, over WeChat's 30 %.
    let over =
        s.channel.share(&share(&paid, vec![line(partner(), 2_001), line(person(), 1_000)])).await;
    assert_eq!(
        over.unwrap_err(),
        ChannelError::declined("INVALID_REQUEST", "分账金额超出最大分账比例")
    );
    // The cap counts every split of the payment.
    let first = share(&paid, vec![line(partner(), 2_000)]);
    s.channel.share(&first).await.unwrap();
    s.settled(&first).await;
    let second = s.channel.share(&share(&paid, vec![line(person(), 1_001)])).await;
    assert!(matches!(&second, Err(ChannelError::Declined { .. })), "{second:?}");
    assert_eq!((s.balance(PARTNER).await, s.balance(OPENID).await), (2_000, 0));
}

#[tokio::test]
async fn a_payment_made_without_hold_cannot_be_split() {
    let s = sandbox(KeyMode::PublicKey, T).await;
    let paid = s.paid(&payment(false)).await;
    s.add_receivers().await;
    let r = s.channel.share(&share(&paid, vec![line(partner(), 1_000)])).await;
    assert_eq!(r.unwrap_err(), ChannelError::declined("INVALID_REQUEST", "非分账订单不支持分账"));
    assert_eq!(s.balance(PARTNER).await, 0);
}

#[tokio::test]
async fn system_errors_and_forged_answers_are_unknown_and_the_same_number_moves_money_once() {
    let s = sandbox(KeyMode::PublicKey, T).await;
    let paid = s.paid(&payment(true)).await;
    let req = share(&paid, vec![line(partner(), 1_200)]);
    let rel = release(&paid);

    s.mock.set_faults(Faults { error_rate: 1.0, ..Faults::default() });
    let r = s.channel.add_receiver(&partner()).await;
    assert!(unknown_for(&r, "SYSTEM_ERROR"), "{r:?}");
    let r = s.channel.share(&req).await;
    assert!(unknown_for(&r, "SYSTEM_ERROR"), "{r:?}");
    let r = s.channel.query_share(&req).await;
    assert!(unknown_for(&r, "SYSTEM_ERROR"), "{r:?}");
    let r = s.channel.release(&rel).await;
    assert!(unknown_for(&r, "SYSTEM_ERROR"), "{r:?}");

    s.mock.set_faults(Faults::default());
    s.add_receivers().await;
    s.mock.set_faults(Faults { bad_signature: true, ..Faults::default() });
    // The mock did the split, but its answer cannot be trusted: unknown, never success.
    let r = s.channel.share(&req).await;
    assert!(unknown_for(&r, "failed verification"), "{r:?}");
    let r = s.channel.query_share(&req).await;
    assert!(unknown_for(&r, "failed verification"), "{r:?}");

    s.mock.set_faults(Faults::default());
    s.channel.share(&req).await.unwrap();
    assert_eq!(state_of(&s.settled(&req).await, PARTNER), &ShareLineState::Succeeded);
    assert_eq!(s.balance(PARTNER).await, 1_200);
    s.released(&rel).await;
    assert_eq!(s.hold(&paid).await["unsplit"], 0);
}

#[tokio::test]
async fn a_dropped_answer_times_out_as_unknown_and_resending_moves_nothing_twice() {
    let s = sandbox(KeyMode::PublicKey, Duration::from_secs(1)).await;
    let paid = s.paid(&payment(true)).await;
    s.add_receivers().await;
    let req = share(&paid, vec![line(partner(), 700), line(person(), 300)]);
    let rel = release(&paid);

    s.mock.set_faults(Faults {
        timeout_after_commit: vec!["profitsharing".into()],
        ..Faults::default()
    });
    let r = s.channel.share(&req).await;
    assert!(matches!(&r, Err(ChannelError::Unknown { timed_out: true, .. })), "{r:?}");
    s.settled(&req).await;
    let r = s.channel.share(&req).await;
    assert!(matches!(&r, Err(ChannelError::Unknown { timed_out: true, .. })), "{r:?}");
    let r = s.channel.release(&rel).await;
    assert!(matches!(&r, Err(ChannelError::Unknown { timed_out: true, .. })), "{r:?}");

    s.mock.set_faults(Faults::default());
    let again = s.channel.share(&req).await.unwrap();
    assert!(again.lines.iter().all(|l| l.state == ShareLineState::Succeeded), "{again:?}");
    assert_eq!((s.balance(PARTNER).await, s.balance(OPENID).await), (700, 300));
    s.released(&rel).await;
    let hold = s.hold(&paid).await;
    assert_eq!(hold["released"].as_i64().unwrap(), hold["net"].as_i64().unwrap() - 1_000);
}

#[tokio::test]
async fn a_split_wechat_does_not_know_or_shows_late_is_unknown_on_query() {
    let s = sandbox(KeyMode::PublicKey, T).await;
    let paid = s.paid(&payment(true)).await;
    s.add_receivers().await;
    let never_sent = share(&paid, vec![line(partner(), 100)]);
    let r = s.channel.query_share(&never_sent).await;
    assert!(unknown_for(&r, "RESOURCE_NOT_EXISTS"), "{r:?}");

    let req = share(&paid, vec![line(partner(), 100)]);
    s.channel.share(&req).await.unwrap();
    s.mock.set_profit_sharing(ProfitSharingSettings { not_found_queries: 1, ..quick() });
    let r = s.channel.query_share(&req).await;
    assert!(unknown_for(&r, "RESOURCE_NOT_EXISTS"), "{r:?}");
    assert_eq!(state_of(&s.settled(&req).await, PARTNER), &ShareLineState::Succeeded);
}

//! The engine's use cases driven directly, with no HTTP anywhere: a scripted channel behind the
//! registry and a real SQLite store on a temporary file.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use paymux_core::{
    Channel, ChannelError, ChannelKind, ChannelPayment, ChannelRefund, CreatePayment,
    CreatedPayment, InboundRequest, Notification, NotificationAck, PaymentAction, PaymentMethod,
    PaymentRef, PaymentStatus, RefundRequest,
};
use paymux_engine::{
    Caller, ChannelRegistry, ConfigError, CreatePaymentRequest, CreateRefundRequest, Engine,
    EngineError, GatewayConfig,
};
use paymux_store::prelude::*;
use paymux_store::{AccountRecord, SqliteStore};
use serde_json::json;
use time::OffsetDateTime;

/// What the scripted channel answers, read from the account's configuration.
#[derive(Debug, Clone, Copy)]
enum Script {
    /// Creates answer with a QR code, refunds succeed at once.
    Accept,
    /// Every call is declined.
    Decline,
    /// Every call times out after it was sent.
    TimeOut,
}

#[derive(Debug)]
struct Scripted(Script);

#[async_trait]
impl Channel for Scripted {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Alipay
    }

    fn supports(&self, method: PaymentMethod) -> bool {
        method == PaymentMethod::Qr
    }

    async fn create(&self, _req: &CreatePayment) -> Result<CreatedPayment, ChannelError> {
        match self.0 {
            Script::Accept => Ok(CreatedPayment {
                action: PaymentAction::QrCode { code_url: "https://qr.example/1".into() },
                channel_data: json!({}),
            }),
            Script::Decline => Err(ChannelError::declined("ACQ.INVALID", "refused")),
            Script::TimeOut => Err(ChannelError::timeout("no answer in 10 s")),
        }
    }

    async fn query(&self, _payment: &PaymentRef) -> Result<ChannelPayment, ChannelError> {
        Ok(ChannelPayment::Pending)
    }

    async fn close(&self, _payment: &PaymentRef) -> Result<(), ChannelError> {
        Ok(())
    }

    async fn refund(&self, _req: &RefundRequest) -> Result<ChannelRefund, ChannelError> {
        match self.0 {
            Script::Accept => Ok(ChannelRefund::Succeeded {
                channel_refund_id: Some("R1".into()),
                succeeded_at: None,
                amount: None,
                refunded_total: None,
            }),
            Script::Decline => Err(ChannelError::declined("REFUND_REFUSED", "refused")),
            Script::TimeOut => Err(ChannelError::timeout("no answer in 10 s")),
        }
    }

    async fn query_refund(&self, _req: &RefundRequest) -> Result<ChannelRefund, ChannelError> {
        Ok(ChannelRefund::Pending { channel_refund_id: None })
    }

    async fn parse_notification(
        &self,
        _req: &InboundRequest,
    ) -> Result<Notification, ChannelError> {
        Err(ChannelError::Unverified {
            reason: "the scripted channel sends no notifications".into(),
        })
    }

    fn ack(&self, accepted: bool) -> NotificationAck {
        NotificationAck {
            status: if accepted { 200 } else { 500 },
            content_type: "text/plain",
            body: Vec::new(),
        }
    }
}

fn scripted(
    config: &serde_json::Value,
    _timeout: Duration,
) -> Result<Arc<dyn Channel>, ConfigError> {
    let script = match config["script"].as_str() {
        Some("decline") => Script::Decline,
        Some("timeout") => Script::TimeOut,
        _ => Script::Accept,
    };
    Ok(Arc::new(Scripted(script)))
}

struct World {
    engine: Engine,
    caller: Caller,
    _dir: tempfile::TempDir,
}

/// An engine on a fresh store with one test-mode merchant whose only account runs `script`.
async fn world(script: &str) -> World {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = Arc::new(SqliteStore::open(dir.path().join("t.db")).await.expect("store opens"));
    let mut registry = ChannelRegistry::new(Duration::from_secs(1));
    registry.register(ChannelKind::Alipay, scripted);
    let engine = Engine {
        store: store.clone(),
        channels: Arc::new(registry),
        config: Arc::new(GatewayConfig::new("http://127.0.0.1:1")),
        callers: Arc::default(),
    };
    let (merchant, _key) = engine.create_merchant("Tea shop", false).await.expect("merchant");
    store
        .put_channel_account(&AccountRecord {
            id: paymux_core::AccountId::new(),
            merchant_id: merchant,
            channel: ChannelKind::Alipay,
            config: json!({"script": script}),
            livemode: false,
            created_at: OffsetDateTime::now_utc(),
        })
        .await
        .expect("account");
    World { engine, caller: Caller { merchant, livemode: false }, _dir: dir }
}

fn order(no: &str, amount: i64) -> CreatePaymentRequest {
    CreatePaymentRequest {
        merchant_order_no: Some(no.into()),
        amount: Some(json!(amount)),
        currency: Some("CNY".into()),
        subject: Some("Green tea".into()),
        method: Some("qr".into()),
        ..Default::default()
    }
}

/// Marks the payment paid, as a verified notification would.
async fn pay(w: &World, id: &str) {
    let p = w.engine.payment_record(w.caller, id).await.expect("payment");
    let report = ChannelPayment::Succeeded {
        channel_trade_no: "T1".into(),
        amount: p.amount,
        paid_at: None,
    };
    apply(w, &p, &report).await;
}

/// Applies a verified report about the payment's (one) attempt.
async fn apply(w: &World, p: &paymux_store::PaymentRecord, report: &ChannelPayment) {
    let attempt = w.engine.store.attempts(p.id).await.expect("attempts").remove(0);
    paymux_engine::apply_attempt(
        &*w.engine.store,
        std::time::Duration::from_secs(60),
        p,
        &attempt,
        report,
        paymux_core::ReportSource::Channel,
    )
    .await
    .expect("applied");
}

#[tokio::test]
async fn a_created_payment_is_pending_with_the_payers_next_step() {
    let w = world("accept").await;
    let p =
        w.engine.create_payment(w.caller, order("o-1", 1500), None).await.expect("created").object;
    assert_eq!(p.status, "pending");
    assert_eq!(p.amount, 1500);
    assert_eq!(p.action.as_ref().map(|a| a["type"].clone()), Some(json!("qr_code")));
    assert_eq!(w.engine.payment(w.caller, &p.id).await.expect("read back"), p);
}

#[tokio::test]
async fn a_declined_create_fails_the_payment_and_names_it() {
    let w = world("decline").await;
    let err = w.engine.create_payment(w.caller, order("o-1", 1500), None).await.unwrap_err();
    let EngineError::ChannelCall { source: ChannelError::Declined { code, .. }, object } = err
    else {
        panic!("expected a declined channel call, got {err:?}");
    };
    assert_eq!(code, "ACQ.INVALID");
    let p = w.engine.payment(w.caller, &object).await.expect("the payment exists");
    assert_eq!(p.status, "failed");
    assert_eq!(p.failure.map(|f| f.code), Some("ACQ.INVALID".into()));
}

#[tokio::test]
async fn an_unknown_create_outcome_leaves_the_payment_pending() {
    let w = world("timeout").await;
    let err = w.engine.create_payment(w.caller, order("o-1", 1500), None).await.unwrap_err();
    let EngineError::ChannelCall { source: ChannelError::Unknown { timed_out: true, .. }, object } =
        err
    else {
        panic!("expected an unknown outcome, got {err:?}");
    };
    let p = w.engine.payment_record(w.caller, &object).await.expect("the payment exists");
    assert_eq!(p.status, PaymentStatus::Pending, "an unknown outcome is never a failure");
}

#[tokio::test]
async fn a_reused_order_number_points_at_the_payment_that_holds_it() {
    let w = world("accept").await;
    let first =
        w.engine.create_payment(w.caller, order("o-1", 1500), None).await.expect("created").object;
    let err = w.engine.create_payment(w.caller, order("o-1", 900), None).await.unwrap_err();
    let EngineError::DuplicateNumber { field, object, .. } = err else {
        panic!("expected a duplicate number, got {err:?}");
    };
    assert_eq!(field, "merchant_order_no");
    assert_eq!(object, Some(first.id));
}

#[tokio::test]
async fn a_key_of_the_other_mode_never_reaches_the_account() {
    let w = world("accept").await;
    let live = Caller { livemode: true, ..w.caller };
    let err = w.engine.create_payment(live, order("o-1", 1500), None).await.unwrap_err();
    assert!(matches!(err, EngineError::Rejected { code: "livemode_mismatch", .. }), "got {err:?}");
    let page = w.engine.list_payments(w.caller, Default::default()).await.expect("list");
    assert!(page.data.is_empty(), "nothing was written");
}

#[tokio::test]
async fn bad_input_names_the_field_and_writes_nothing() {
    let w = world("accept").await;
    let mut req = order("o-1", 1500);
    req.amount = Some(json!(12.5));
    let err = w.engine.create_payment(w.caller, req, None).await.unwrap_err();
    assert!(matches!(err, EngineError::InvalidInput { field: "amount", .. }), "got {err:?}");
    let page = w.engine.list_payments(w.caller, Default::default()).await.expect("list");
    assert!(page.data.is_empty());
}

#[tokio::test]
async fn refunds_never_exceed_the_payment_and_a_declined_one_frees_its_amount() {
    let w = world("accept").await;
    let p =
        w.engine.create_payment(w.caller, order("o-1", 1000), None).await.expect("created").object;
    let refund = |no: &str, amount: i64| CreateRefundRequest {
        amount: Some(json!(amount)),
        merchant_refund_no: Some(no.into()),
        reason: None,
    };
    let err = w.engine.create_refund(w.caller, &p.id, refund("r-0", 100), None).await.unwrap_err();
    assert!(
        matches!(err, EngineError::Rejected { code: "payment_not_refundable", .. }),
        "a pending payment cannot be refunded: {err:?}"
    );
    pay(&w, &p.id).await;
    let r = w.engine.create_refund(w.caller, &p.id, refund("r-1", 600), None).await.expect("ok");
    assert_eq!(r.status, "succeeded");
    let err = w.engine.create_refund(w.caller, &p.id, refund("r-2", 401), None).await.unwrap_err();
    assert!(
        matches!(err, EngineError::Rejected { code: "refund_exceeds_payment", .. }),
        "got {err:?}"
    );
    let after = w.engine.payment(w.caller, &p.id).await.expect("payment");
    assert_eq!(after.amount_refunded, 600);
    let page = w.engine.list_refunds(w.caller, Some(&p.id), Default::default()).await;
    assert_eq!(page.expect("list").data.len(), 1, "the refused refund wrote nothing");
}

#[tokio::test]
async fn a_declined_refund_fails_and_its_amount_can_be_refunded_again() {
    let w = world("decline").await;
    // The scripted channel declines creates too, so the payment is made paid by hand.
    let err = w.engine.create_payment(w.caller, order("o-1", 1000), None).await.unwrap_err();
    let EngineError::ChannelCall { object: id, .. } = err else { panic!("got {err:?}") };
    let p = w.engine.payment_record(w.caller, &id).await.expect("payment");
    let report = ChannelPayment::Succeeded {
        channel_trade_no: "T1".into(),
        amount: p.amount,
        paid_at: None,
    };
    // A verified success for a payment held as failed (paid after a refused create) applies.
    apply(&w, &p, &report).await;
    let req =
        CreateRefundRequest { amount: None, merchant_refund_no: Some("r-1".into()), reason: None };
    let err = w.engine.create_refund(w.caller, &id, req, None).await.unwrap_err();
    let EngineError::ChannelCall { object: refund_id, .. } = err else { panic!("got {err:?}") };
    let r = w.engine.refund(w.caller, &refund_id).await.expect("refund");
    assert_eq!(r.status, "failed");
    let p = w.engine.payment_record(w.caller, &id).await.expect("payment");
    assert_eq!(p.amount_reserved, 0, "a refused refund holds nothing");
}

#[tokio::test]
async fn an_accounts_merchant_channel_and_mode_never_change_and_its_merchant_must_exist() {
    let w = world("accept").await;
    let id = paymux_core::AccountId::new();
    let config = json!({"script": "accept"});
    let put = |merchant, livemode| {
        w.engine.put_account(id, merchant, ChannelKind::Alipay, config.clone(), livemode)
    };
    let err = put(paymux_core::MerchantId::new(), false).await.unwrap_err();
    assert!(matches!(err, EngineError::NotFound { what: "merchant" }), "got {err:?}");
    put(w.caller.merchant, false).await.expect("added");
    put(w.caller.merchant, false).await.expect("updated in place");
    let err = put(w.caller.merchant, true).await.unwrap_err();
    assert!(
        matches!(err, EngineError::Rejected { code: "account_identity_changed", .. }),
        "a test account never becomes live: {err:?}"
    );
}

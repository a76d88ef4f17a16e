//! The paymux domain, with no I/O.
//!
//! Money is an integer count of minor units (fen) with its currency; ids are types with a prefix
//! (`pay_`, `re_`, `evt_`) and a time-ordered UUIDv7 body; payments and refunds move only along the
//! edges of their state machines; and [`Channel`] is the one seam every channel adapter implements.
//!
//! ```
//! use paymux_core::{Currency, Money, PaymentStatus};
//!
//! let price = Money::new(1000, Currency::Cny).unwrap();
//! assert_eq!(price.to_string(), "10.00 CNY");
//! assert!(PaymentStatus::Pending.can_become(PaymentStatus::Succeeded));
//! assert!(!PaymentStatus::Succeeded.can_become(PaymentStatus::Closed));
//! ```

mod barcode;
mod channel;
mod decide;
mod event;
mod ids;
mod money;
mod settlement;
mod sharing;
mod state;

pub use barcode::{
    BarcodeCancel, BarcodePaid, BarcodeSchedule, digits_with_prefix, mask_auth_code,
};
pub use channel::{
    ALREADY_PAID, Channel, ChannelError, ChannelKind, ChannelPayment, ChannelRefund, CreatePayment,
    CreatedPayment, InboundRequest, Notification, NotificationAck, PaymentAction, PaymentMethod,
    PaymentRef, RefundRequest,
};
pub use decide::{
    AttemptDecision, AttemptView, RefundDecision, ReportSource, decide_attempt, decide_refund,
};
pub use event::{Event, EventType};
pub use ids::{
    AccountId, AttemptId, ChannelOrderNo, EventId, IdError, MerchantId, PaymentId, ReceiverId,
    RefundId,
};
pub use money::{Currency, Money, MoneyError};
pub use settlement::{
    LedgerKind, SettlementError, SettlementStatus, SplitPlan, SplitRequest, SplitStatus,
    held_amount, plan_splits, validate_splits,
};
pub use sharing::{
    ReceiverAccount, ReleaseRequest, Released, ShareLine, ShareLineResult, ShareLineState,
    ShareRequest, ShareResult,
};
pub use state::{AttemptStatus, PaymentStatus, RefundStatus, TransitionError};

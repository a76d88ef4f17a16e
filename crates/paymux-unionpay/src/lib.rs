//! UnionPay online gateway (ACP 5.1.0, "全渠道") for paymux.
//!
//! [`protocol`] is the pure wire protocol, usable on its own: `signMethod=01` request signing
//! and `certId`, verification of answers and notifications through the `signPubKeyCert` they
//! carry (chain, validity, owner), `signMethod=11`, the raw answer parser, `accNo` decryption,
//! fen amounts and Beijing times. [`UnionpayChannel`] is the [`paymux_core::Channel`] adapter on
//! top of it: PC and mobile web consume (a signed form), app consume (`tn`), QR consume, query,
//! refund, consume cancel and back notifications. Nothing settles on an answer that does not
//! verify.
//!
//! ```
//! use paymux_unionpay::protocol::{self, Fields};
//!
//! let answer = protocol::parse_answer("respCode=00&reqReserved={a=1&b=2}&signature=a+b/c=").unwrap();
//! assert_eq!(answer["reqReserved"], "{a=1&b=2}");
//! assert_eq!(answer["signature"], "a+b/c=");
//!
//! let mut fields = Fields::new();
//! fields.insert("txnAmt".into(), "1".into());
//! fields.insert("reqReserved".into(), String::new());
//! fields.insert("orderId".into(), "ORDER0001".into());
//! assert_eq!(protocol::string_to_sign(&fields), "orderId=ORDER0001&txnAmt=1");
//! assert_eq!(protocol::string_to_verify(&fields), "orderId=ORDER0001&reqReserved=&txnAmt=1");
//! ```

mod client;
mod config;
pub mod protocol;

pub use client::{Clock, UnionpayChannel};
pub use config::UnionpayAccountConfig;

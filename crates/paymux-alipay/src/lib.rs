//! Alipay OpenAPI (RSA2, public-key mode) for paymux.
//!
//! [`protocol`] is the pure wire protocol, usable on its own (the sandbox mock and merchants'
//! notification handlers can depend on it): request signing, the answer node cut from the raw
//! body and its verification, notification and `return_url` verification, yuan/fen and Beijing
//! time conversion. [`AlipayChannel`] is the [`paymux_core::Channel`] adapter on top of it:
//! precreate (QR), page/wap pay (a signed form), app pay (the order string), barcode pay, query,
//! close, refund, refund query, notifications, and 商家分账 (a held payment's funds frozen at
//! create, split to bound receivers, the rest released). Nothing settles on an answer that does
//! not verify.
//!
//! ```
//! use paymux_alipay::protocol::{self, SignedRequest};
//! use paymux_alipay::{AlipayAccountConfig, AlipayChannel};
//! use paymux_crypto::RsaPrivateKey;
//!
//! let app_key = RsaPrivateKey::generate().unwrap();
//! let mut params = protocol::common_params(
//!     "2021000000000000",
//!     protocol::METHOD_QUERY,
//!     time::OffsetDateTime::UNIX_EPOCH,
//! );
//! params.insert("biz_content".into(), r#"{"out_trade_no":"A1"}"#.into());
//! let signed = SignedRequest::sign(params, &app_key).unwrap();
//! assert!(signed.common_query().contains("timestamp=1970-01-01+08%3A00%3A00"));
//! assert_eq!(protocol::yuan_to_fen("1.5"), Ok(150));
//!
//! let config = AlipayAccountConfig {
//!     app_id: "2021000000000000".into(),
//!     app_private_key: app_key.to_pkcs8_pem().unwrap(),
//!     alipay_public_key: RsaPrivateKey::generate().unwrap().public_key().to_spki_base64(),
//!     gateway_url: protocol::SANDBOX_GATEWAY.into(),
//!     seller_id: None,
//!     app_cert: None,
//!     alipay_root_cert: None,
//!     max_share_bps: None,
//! };
//! let channel = AlipayChannel::new(&config, std::time::Duration::from_secs(10)).unwrap();
//! assert_eq!(channel.app_id(), "2021000000000000");
//! ```

mod client;
mod config;
pub mod protocol;

pub use client::{AlipayChannel, Clock};
pub use config::AlipayAccountConfig;

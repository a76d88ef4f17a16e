//! Alipay OpenAPI (RSA2, public-key mode) for paymux.
//!
//! [`protocol`] is the pure wire protocol: request signing, the answer node cut from the raw body
//! and its verification, notification verification, yuan/fen and Beijing-time conversion.
//!
//! ```
//! use paymux_alipay::protocol::{self, SignedRequest};
//! use paymux_crypto::RsaPrivateKey;
//!
//! let key = RsaPrivateKey::generate().unwrap();
//! let mut params = protocol::common_params("2021000000000000", protocol::METHOD_QUERY,
//!     time::OffsetDateTime::UNIX_EPOCH);
//! params.insert("biz_content".into(), r#"{"out_trade_no":"A1"}"#.into());
//! let signed = SignedRequest::sign(params, &key).unwrap();
//! assert!(signed.common_query().contains("timestamp=1970-01-01+08%3A00%3A00"));
//! assert_eq!(protocol::yuan_to_fen("1.5"), Ok(150));
//! ```

pub mod protocol;

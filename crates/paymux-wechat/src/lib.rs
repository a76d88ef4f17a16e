//! WeChat Pay API v3 for paymux. [`protocol`] is the wire protocol with no I/O (canonical request
//! messages and the `Authorization` header, answer and notification verification with the
//! five-minute window and probe refusal, platform certificates and the WeChat Pay public key chosen
//! by serial, AEAD_AES_256_GCM resources, client-side payment parameters), pinned by the official
//! vectors W1-W8. [`client`] is [`WechatChannel`], the [`paymux_core::Channel`] over HTTPS, which
//! downloads and rotates platform certificates by itself, and holds and splits payments through
//! WeChat's profit sharing (分账).
//!
//! ```
//! use paymux_crypto::RsaPrivateKey;
//! use paymux_wechat::protocol::{MerchantSigner, parse_authorization, request_message};
//!
//! let key = RsaPrivateKey::generate().unwrap();
//! let signer = MerchantSigner::new("1900007291", "408B07E79B8269FE", key.clone());
//! let auth = signer.authorization("GET", "/v3/certificates", 1554208460, "NONCE", b"").unwrap();
//! let params = parse_authorization(&auth).unwrap();
//! let message = request_message("GET", "/v3/certificates", 1554208460, "NONCE", b"");
//! assert!(key.public_key().verify_base64(&message, &params.signature).is_ok());
//! ```

pub mod client;
pub mod protocol;

pub use client::{Clock, WechatAccountConfig, WechatChannel};

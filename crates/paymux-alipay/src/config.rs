//! One Alipay account's configuration, as the gateway stores it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The credentials and endpoint of one Alipay application, in public-key mode or (with
/// `app_cert` and `alipay_root_cert`) certificate mode.
///
/// Keys are text, in the shapes Alipay's tools hand out: PEM or bare base64; the private key
/// PKCS#1 or PKCS#8, the public key SPKI or PKCS#1. They are parsed once, by
/// [`crate::AlipayChannel::new`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlipayAccountConfig {
    pub app_id: String,
    /// The application's private key: it signs every request.
    pub app_private_key: String,
    /// Alipay's public key: it verifies every answer and notification.
    pub alipay_public_key: String,
    /// `https://openapi.alipay.com/gateway.do`, Alipay's sandbox, or a paymux mock.
    pub gateway_url: String,
    /// The merchant's Alipay account (`pid`). When set, notifications for another seller are
    /// refused.
    #[serde(default)]
    pub seller_id: Option<String>,
    /// Certificate mode: the app's public-key certificate (`appCertPublicKey_<app_id>.crt`, PEM).
    /// Set it together with `alipay_root_cert`; `alipay_public_key` then holds Alipay's
    /// public-key certificate (`alipayCertPublicKey_RSA2.crt`) instead of a bare key.
    #[serde(default)]
    pub app_cert: Option<String>,
    /// Certificate mode: Alipay's root bundle (`alipayRootCert.crt`, PEM).
    #[serde(default)]
    pub alipay_root_cert: Option<String>,
    /// 商家分账: the most of a payment its splits may take together, in basis points (1..=10000).
    /// Alipay's `max_ratio` for the merchant, as agreed in its contract (the default, 3000, is
    /// 30 %). The gateway keeps a payment's splits within it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_share_bps: Option<u32>,
}

impl fmt::Debug for AlipayAccountConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlipayAccountConfig")
            .field("app_id", &self.app_id)
            .field("app_private_key", &"<redacted>")
            .field("alipay_public_key", &"<redacted>")
            .field("gateway_url", &self.gateway_url)
            .field("seller_id", &self.seller_id)
            .field("cert_mode", &(self.app_cert.is_some() || self.alipay_root_cert.is_some()))
            .field("max_share_bps", &self.max_share_bps)
            .finish()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_key_text() {
        let c = AlipayAccountConfig {
            app_id: "2021".into(),
            app_private_key: "MIIEpAIBAAKCAQEA-secret".into(),
            alipay_public_key: "MIIBIjANBgkq-public".into(),
            gateway_url: "http://127.0.0.1:1/gateway.do".into(),
            seller_id: None,
            app_cert: None,
            alipay_root_cert: None,
            max_share_bps: None,
        };
        let printed = format!("{c:?}");
        assert!(!printed.contains("MIIEpAIBAAKCAQEA") && !printed.contains("MIIBIjANBgkq"));
        assert!(printed.contains("2021"));
    }

    #[test]
    fn seller_id_is_optional_in_files() {
        let c: AlipayAccountConfig = serde_json::from_str(
            r#"{"app_id":"1","app_private_key":"k","alipay_public_key":"p","gateway_url":"u"}"#,
        )
        .unwrap();
        assert_eq!(c.seller_id, None);
        assert_eq!(c.max_share_bps, None);
    }

    #[test]
    fn max_share_bps_is_read_and_written_only_when_set() {
        let c: AlipayAccountConfig = serde_json::from_str(
            r#"{"app_id":"1","app_private_key":"k","alipay_public_key":"p","gateway_url":"u","max_share_bps":2000}"#,
        )
        .unwrap();
        assert_eq!(c.max_share_bps, Some(2000));
        let unset = AlipayAccountConfig { max_share_bps: None, ..c };
        assert!(serde_json::to_value(&unset).unwrap().get("max_share_bps").is_none());
    }
}

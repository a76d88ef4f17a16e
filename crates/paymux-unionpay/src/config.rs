//! One UnionPay merchant's configuration, as the gateway stores it.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::protocol::UNIONPAY_OWNER;

/// The credentials and endpoint of one UnionPay merchant (`merId`).
///
/// Keys and certificates are PEM text. The merchant key and certificate come from the `.pfx`
/// UnionPay issues (see docs/channels/unionpay.md for the conversion); the root and
/// intermediate are UnionPay's (CFCA's) for the environment, or a sandbox mock's. They are
/// parsed once, by [`crate::UnionpayChannel::new`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnionpayAccountConfig {
    /// The 15-digit merchant number.
    pub mer_id: String,
    /// `https://gateway.95516.com`, `https://gateway.test.95516.com`, or a mock's address; the
    /// `/gateway/api/...` paths are appended.
    pub gateway_url: String,
    /// The merchant's signing private key, PEM (PKCS#8 or PKCS#1).
    pub merchant_private_key: String,
    /// The merchant's signing certificate, PEM: its serial is the `certId` sent.
    pub merchant_certificate: String,
    /// The root of UnionPay's signing certificates, PEM.
    pub root_certificate: String,
    /// The intermediate that issues UnionPay's signing certificates, PEM.
    pub intermediate_certificate: String,
    /// The company name expected as the third `@`-part of the signing certificate's CN.
    #[serde(default = "default_owner")]
    pub signer_owner: String,
}

fn default_owner() -> String {
    UNIONPAY_OWNER.to_owned()
}

impl fmt::Debug for UnionpayAccountConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnionpayAccountConfig")
            .field("mer_id", &self.mer_id)
            .field("gateway_url", &self.gateway_url)
            .field("merchant_private_key", &"<redacted>")
            .field("signer_owner", &self.signer_owner)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_the_private_key() {
        let c: UnionpayAccountConfig = serde_json::from_str(
            r#"{"mer_id":"777290058167151","gateway_url":"u","merchant_private_key":"MIIEsecret",
                "merchant_certificate":"c","root_certificate":"r","intermediate_certificate":"i"}"#,
        )
        .unwrap();
        let printed = format!("{c:?}");
        assert!(!printed.contains("MIIEsecret"));
        assert!(printed.contains("777290058167151"));
    }

    #[test]
    fn the_owner_defaults_to_unionpays_company_name() {
        let c: UnionpayAccountConfig = serde_json::from_str(
            r#"{"mer_id":"1","gateway_url":"u","merchant_private_key":"k",
                "merchant_certificate":"c","root_certificate":"r","intermediate_certificate":"i"}"#,
        )
        .unwrap();
        assert_eq!(c.signer_owner, "中国银联股份有限公司");
    }
}

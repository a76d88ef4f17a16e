//! The Alipay OpenAPI wire protocol (RSA2, public-key mode), with no I/O.
//!
//! Requests: a flat set of parameters, signed over `name=value&...` of every parameter but `sign`
//! (sorted, raw values), then URL-encoded for the wire. Answers: a signed JSON node, cut out of
//! the raw body ([`response`]). Notifications and browser returns: a form, decoded once and
//! verified without `sign` and `sign_type`.

pub mod amount;
pub mod beijing;
pub mod cert;
pub mod response;

use std::collections::BTreeMap;

use paymux_crypto::{CryptoError, RsaPrivateKey, RsaPublicKey};
use time::OffsetDateTime;

pub use amount::{AmountError, fen_to_yuan, money_to_yuan, yuan_to_fen, yuan_to_money};
pub use beijing::{BEIJING, TimeError, format_beijing, parse_beijing, timeout_express};
pub use cert::{CertSnError, cert_sn, root_cert_sn};
pub use response::{Answer, AnswerError, RawAnswer, ResultCode, response_node_name, split_answer};

/// Alipay's production gateway.
pub const PRODUCTION_GATEWAY: &str = "https://openapi.alipay.com/gateway.do";
/// Alipay's own sandbox gateway.
pub const SANDBOX_GATEWAY: &str = "https://openapi-sandbox.dl.alipaydev.com/gateway.do";

pub const METHOD_PRECREATE: &str = "alipay.trade.precreate";
pub const METHOD_PAGE_PAY: &str = "alipay.trade.page.pay";
pub const METHOD_WAP_PAY: &str = "alipay.trade.wap.pay";
pub const METHOD_APP_PAY: &str = "alipay.trade.app.pay";
pub const METHOD_QUERY: &str = "alipay.trade.query";
pub const METHOD_CLOSE: &str = "alipay.trade.close";
pub const METHOD_REFUND: &str = "alipay.trade.refund";
pub const METHOD_REFUND_QUERY: &str = "alipay.trade.fastpay.refund.query";
/// The barcode pay call (`scene=bar_code`): the merchant scanned the payer's code.
pub const METHOD_PAY: &str = "alipay.trade.pay";
/// Cancels a barcode trade: closes it unpaid, or refunds it if it was paid.
pub const METHOD_CANCEL: &str = "alipay.trade.cancel";

/// The content type of a request body, as the official SDKs send it.
pub const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded;charset=utf-8";

/// The reply that stops Alipay re-sending a notification: exactly these bytes.
pub const NOTIFY_SUCCESS: &str = "success";

/// Request or notification parameters: name to raw (decoded) value, sorted by name.
pub type Params = BTreeMap<String, String>;

/// Why a request could not be signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// The SDKs disagree on whether empty values are signed, so none is ever sent.
    #[error("parameter {0:?} is empty; empty parameters are never sent")]
    EmptyValue(String),
    #[error("signing failed: {0}")]
    Crypto(#[from] CryptoError),
}

/// Why a notification, browser return or gateway message did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("field {0:?} appears more than once")]
    DuplicateField(String),
    #[error("the message carries no sign")]
    MissingSign,
    #[error("the signature does not verify")]
    BadSignature,
}

/// The common parameters of every request, `sign` aside. `timestamp` is Beijing time.
pub fn common_params(app_id: &str, method: &str, timestamp: OffsetDateTime) -> Params {
    [
        ("app_id", app_id.to_owned()),
        ("method", method.to_owned()),
        ("format", "JSON".to_owned()),
        ("charset", "utf-8".to_owned()),
        ("sign_type", "RSA2".to_owned()),
        ("timestamp", format_beijing(timestamp)),
        ("version", "1.0".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// The request string to sign: every parameter but `sign` (`sign_type` included), sorted by
/// name, raw `name=value` joined with `&`.
pub fn request_string_to_sign(params: &Params) -> String {
    join_sorted(params.iter().filter(|(k, _)| k.as_str() != "sign"))
}

/// A request with its `sign`, ready for the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRequest {
    params: Params,
}

impl SignedRequest {
    /// Signs `params` (any `sign` already there is replaced). An empty value is refused.
    pub fn sign(mut params: Params, key: &RsaPrivateKey) -> Result<Self, SignError> {
        params.remove("sign");
        if let Some((k, _)) = params.iter().find(|(_, v)| v.is_empty()) {
            return Err(SignError::EmptyValue(k.clone()));
        }
        let sign = key.sign_base64(request_string_to_sign(&params).as_bytes())?;
        params.insert("sign".to_owned(), sign);
        Ok(Self { params })
    }

    /// Every parameter, `sign` included.
    pub fn params(&self) -> &Params {
        &self.params
    }

    pub fn signature(&self) -> &str {
        self.params.get("sign").map_or("", String::as_str)
    }

    pub fn biz_content(&self) -> Option<&str> {
        self.params.get("biz_content").map(String::as_str)
    }

    /// The URL-encoded query of every parameter except `biz_content`: what follows `gateway.do?`
    /// in the official SDKs' POST and in a page/wap form's `action`.
    pub fn common_query(&self) -> String {
        encode_pairs(self.params.iter().filter(|(k, _)| k.as_str() != "biz_content"))
    }

    /// The URL-encoded form body: `biz_content` alone.
    pub fn form_body(&self) -> String {
        encode_pairs(self.params.iter().filter(|(k, _)| k.as_str() == "biz_content"))
    }

    /// Every parameter URL-encoded: app.pay's order string, or a signed GET query.
    pub fn full_query(&self) -> String {
        encode_pairs(self.params.iter())
    }
}

/// `application/x-www-form-urlencoded` encoding of each name and value (space as `+`), in order.
pub fn encode_pairs<'a>(pairs: impl IntoIterator<Item = (&'a String, &'a String)>) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        out.append_pair(k, v);
    }
    out.finish()
}

/// Decodes a form body or query string exactly once (`+` is a space, `%XX` a byte). A field given
/// twice is refused: which value was signed would be a guess.
pub fn decode_form(raw: &[u8]) -> Result<Params, VerifyError> {
    let mut out = Params::new();
    for (k, v) in form_urlencoded::parse(raw) {
        if out.insert(k.to_string(), v.into_owned()).is_some() {
            return Err(VerifyError::DuplicateField(k.into_owned()));
        }
    }
    Ok(out)
}

/// The string a trade notification or browser return is verified over: every field but `sign`
/// and `sign_type`, empty values included, sorted, raw `name=value&...`.
pub fn notification_string_to_verify(fields: &Params) -> String {
    join_sorted(fields.iter().filter(|(k, _)| !matches!(k.as_str(), "sign" | "sign_type")))
}

/// The string a gateway message (not a trade notification, e.g. a service-market order notice)
/// is verified over: only `sign` is removed, `sign_type` stays.
pub fn gateway_message_string_to_verify(fields: &Params) -> String {
    join_sorted(fields.iter().filter(|(k, _)| k.as_str() != "sign"))
}

/// Verifies a decoded trade notification (or browser return) with Alipay's public key.
pub fn verify_notification(
    fields: &Params,
    alipay_public_key: &RsaPublicKey,
) -> Result<(), VerifyError> {
    verify_fields(fields, &notification_string_to_verify(fields), alipay_public_key)
}

/// Verifies a decoded gateway message with Alipay's public key (the rule that keeps `sign_type`).
pub fn verify_gateway_message(
    fields: &Params,
    alipay_public_key: &RsaPublicKey,
) -> Result<(), VerifyError> {
    verify_fields(fields, &gateway_message_string_to_verify(fields), alipay_public_key)
}

/// Decodes and verifies a page/wap `return_url` query. The result is for display only: a browser
/// return never changes a payment's state.
pub fn verify_return_query(
    query: &str,
    alipay_public_key: &RsaPublicKey,
) -> Result<Params, VerifyError> {
    let fields = decode_form(query.as_bytes())?;
    verify_notification(&fields, alipay_public_key)?;
    Ok(fields)
}

fn verify_fields(fields: &Params, content: &str, key: &RsaPublicKey) -> Result<(), VerifyError> {
    let sign = fields.get("sign").ok_or(VerifyError::MissingSign)?;
    key.verify_base64(content.as_bytes(), sign).map_err(|_| VerifyError::BadSignature)
}

fn join_sorted<'a>(pairs: impl Iterator<Item = (&'a String, &'a String)>) -> String {
    let mut out = String::new();
    for (k, v) in pairs {
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn params(pairs: &[(&str, &str)]) -> Params {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn common_params_carry_beijing_time_and_rsa2() {
        let p = common_params("2021", METHOD_QUERY, datetime!(2023-12-20 22:54:37 UTC));
        assert_eq!(
            request_string_to_sign(&p),
            "app_id=2021&charset=utf-8&format=JSON&method=alipay.trade.query&sign_type=RSA2\
             &timestamp=2023-12-21 06:54:37&version=1.0"
        );
    }

    #[test]
    fn signing_refuses_empty_values_and_replaces_an_old_sign() {
        let key = RsaPrivateKey::generate().unwrap();
        let err = SignedRequest::sign(params(&[("a", "1"), ("notify_url", "")]), &key);
        assert_eq!(err, Err(SignError::EmptyValue("notify_url".into())));

        let req =
            SignedRequest::sign(params(&[("b", "2"), ("a", "1"), ("sign", "old")]), &key).unwrap();
        assert!(key.public_key().verify_base64(b"a=1&b=2", req.signature()).is_ok());
    }

    #[test]
    fn wire_encoding_splits_biz_content_into_the_body() {
        let key = RsaPrivateKey::generate().unwrap();
        let p = params(&[
            ("biz_content", r#"{"subject":"a b+c&d=中"}"#),
            ("timestamp", "2023-12-21 06:54:37"),
        ]);
        let req = SignedRequest::sign(p, &key).unwrap();
        assert!(req.common_query().starts_with("sign="));
        assert!(req.common_query().contains("&timestamp=2023-12-21+06%3A54%3A37"));
        assert!(!req.common_query().contains("biz_content"));
        assert_eq!(
            req.form_body(),
            "biz_content=%7B%22subject%22%3A%22a+b%2Bc%26d%3D%E4%B8%AD%22%7D"
        );
        let decoded = decode_form(req.full_query().as_bytes()).unwrap();
        assert_eq!(&decoded, req.params());
    }

    #[test]
    fn form_decoding_happens_once_and_refuses_duplicates() {
        let f = decode_form(b"subject=a%2Bb+c&empty=&x=%2541").unwrap();
        assert_eq!(f["subject"], "a+b c");
        assert_eq!(f["empty"], "");
        assert_eq!(f["x"], "%41");
        assert_eq!(decode_form(b"a=1&a=2"), Err(VerifyError::DuplicateField("a".into())));
    }

    #[test]
    fn notification_strings_keep_empty_values_and_differ_on_sign_type() {
        let f = params(&[("sign", "s"), ("sign_type", "RSA2"), ("b", ""), ("a", "1")]);
        assert_eq!(notification_string_to_verify(&f), "a=1&b=");
        assert_eq!(gateway_message_string_to_verify(&f), "a=1&b=&sign_type=RSA2");
    }

    #[test]
    fn notifications_verify_only_with_the_right_key_and_content() {
        let key = RsaPrivateKey::generate().unwrap();
        let mut f =
            params(&[("out_trade_no", "X1"), ("total_amount", "0.01"), ("sign_type", "RSA2")]);
        let sign = key.sign_base64(notification_string_to_verify(&f).as_bytes()).unwrap();
        assert_eq!(verify_notification(&f, &key.public_key()), Err(VerifyError::MissingSign));
        f.insert("sign".into(), sign);
        assert_eq!(verify_notification(&f, &key.public_key()), Ok(()));
        let other = RsaPrivateKey::generate().unwrap().public_key();
        assert_eq!(verify_notification(&f, &other), Err(VerifyError::BadSignature));
        f.insert("total_amount".into(), "100.00".into());
        assert_eq!(verify_notification(&f, &key.public_key()), Err(VerifyError::BadSignature));
    }
}

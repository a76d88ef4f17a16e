//! Alipay's byte-level rules as the gateway applies them, with no I/O: merging the received
//! parameters, the strings that are signed (requests, notifications), amounts, Beijing time and the
//! layout of a signed answer.

use std::collections::BTreeMap;

use paymux_crypto::{RsaPrivateKey, RsaPublicKey};
use time::format_description::BorrowedFormatItem;
use time::macros::{format_description, offset};
use time::{OffsetDateTime, PrimitiveDateTime};

/// Received parameters, sorted by name (byte order, which is ASCII order for Alipay's names).
pub type Params = BTreeMap<String, String>;

/// Why a request's parameters or signature were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("parameter `{0}` was sent twice with different values")]
    ConflictingParameter(String),
    #[error("the request carries no `sign`")]
    MissingSign,
    #[error("the signature does not verify")]
    BadSignature,
}

/// Form-decodes each part (query string, body) exactly once and merges them into one set.
///
/// A name sent in two places with different values is refused rather than resolved silently:
/// the signature would then cover a value the dispatcher does not use.
pub fn merge_form_parts(parts: &[&[u8]]) -> Result<Params, ProtocolError> {
    let mut params = Params::new();
    for part in parts {
        for (name, value) in form_urlencoded::parse(part) {
            match params.get(name.as_ref()) {
                Some(existing) if existing.as_str() != value.as_ref() => {
                    return Err(ProtocolError::ConflictingParameter(name.into_owned()));
                }
                Some(_) => {}
                None => {
                    params.insert(name.into_owned(), value.into_owned());
                }
            }
        }
    }
    Ok(params)
}

/// The string an app signs: every parameter but `sign` (`sign_type` included), empty values
/// dropped, sorted by name, raw `name=value` joined with `&`.
pub fn request_sign_content(params: &Params) -> String {
    join_sorted(params.iter().filter(|(k, v)| k.as_str() != "sign" && !v.is_empty()))
}

/// The string Alipay signs for trade notifications and `return_url` redirects: every field but
/// `sign` and `sign_type`, empty values kept, sorted by name, raw `name=value` joined with `&`.
pub fn notification_sign_content(fields: &Params) -> String {
    join_sorted(fields.iter().filter(|(k, _)| k.as_str() != "sign" && k.as_str() != "sign_type"))
}

fn join_sorted<'a>(pairs: impl Iterator<Item = (&'a String, &'a String)>) -> String {
    let mut out = String::new();
    for (name, value) in pairs {
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(name);
        out.push('=');
        out.push_str(value);
    }
    out
}

/// Checks a request's RSA2 signature with the app's public key.
pub fn verify_request(params: &Params, app_key: &RsaPublicKey) -> Result<(), ProtocolError> {
    let sign = params.get("sign").filter(|s| !s.is_empty()).ok_or(ProtocolError::MissingSign)?;
    app_key
        .verify_base64(request_sign_content(params).as_bytes(), sign)
        .map_err(|_| ProtocolError::BadSignature)
}

/// Signs a request as an app does (used by tests and by tools that drive the mock), returning
/// the parameters with `sign` added.
pub fn sign_request(
    mut params: Params,
    app_key: &RsaPrivateKey,
) -> Result<Params, paymux_crypto::CryptoError> {
    params.remove("sign");
    let sign = app_key.sign_base64(request_sign_content(&params).as_bytes())?;
    params.insert("sign".to_owned(), sign);
    Ok(params)
}

/// Why an amount string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("`{0}` is not a yuan amount with at most two decimals")]
    Malformed(String),
    #[error("`{0}` is outside 0.01 .. 100000000.00")]
    OutOfRange(String),
}

/// The largest amount Alipay accepts, in fen.
pub const MAX_FEN: i64 = 10_000_000_000;

/// Parses a yuan string with 0 to 2 decimals ("1", "0.1", "0.01") into fen, integer arithmetic
/// only. Signs, exponents, spaces, leading zeros and a bare trailing dot are refused.
pub fn parse_yuan(text: &str) -> Result<i64, AmountError> {
    let malformed = || AmountError::Malformed(text.to_owned());
    let (int_part, frac_part) = match text.split_once('.') {
        Some((i, f)) if !f.is_empty() && f.len() <= 2 => (i, f),
        Some(_) => return Err(malformed()),
        None => (text, ""),
    };
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(int_part) || (!frac_part.is_empty() && !all_digits(frac_part)) {
        return Err(malformed());
    }
    if int_part.len() > 1 && int_part.starts_with('0') {
        return Err(malformed());
    }
    // 100000000 yuan has 9 digits; anything longer is out of range without risking overflow.
    if int_part.len() > 9 {
        return Err(AmountError::OutOfRange(text.to_owned()));
    }
    let yuan: i64 = int_part.parse().map_err(|_| malformed())?;
    let frac: i64 = match frac_part.len() {
        0 => 0,
        1 => frac_part.parse::<i64>().map_err(|_| malformed())? * 10,
        _ => frac_part.parse().map_err(|_| malformed())?,
    };
    let fen = yuan * 100 + frac;
    if !(1..=MAX_FEN).contains(&fen) {
        return Err(AmountError::OutOfRange(text.to_owned()));
    }
    Ok(fen)
}

/// Prints fen as yuan with exactly two decimals, as Alipay's answers do.
pub fn format_yuan(fen: i64) -> String {
    format!("{}.{:02}", fen / 100, fen % 100)
}

const BEIJING_FORMAT: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");

/// `yyyy-MM-dd HH:mm:ss` in Beijing time (UTC+8).
pub fn format_beijing(at: OffsetDateTime) -> String {
    let local = at.to_offset(offset!(+8));
    // Formatting a valid date with a fixed, all-numeric description cannot fail; fall back to
    // RFC 3339-ish text rather than panic if it ever did.
    local.format(BEIJING_FORMAT).unwrap_or_else(|_| local.to_string())
}

/// Parses `yyyy-MM-dd HH:mm:ss` as Beijing time.
pub fn parse_beijing(text: &str) -> Option<OffsetDateTime> {
    PrimitiveDateTime::parse(text, BEIJING_FORMAT).ok().map(|t| t.assume_offset(offset!(+8)))
}

/// The answer node's name: the method with dots replaced by `_`, plus `_response`.
pub fn node_name(method: &str) -> String {
    format!("{}_response", method.replace('.', "_"))
}

/// Alipay's result codes with their exact `msg`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultCode {
    Success,
    ServiceUnavailable,
    MissingArguments,
    InvalidArguments,
    BusinessFailed,
    /// `10003`: a barcode payment waits for the payer to confirm.
    PayInProcess,
}

impl ResultCode {
    pub fn code(self) -> &'static str {
        match self {
            Self::Success => "10000",
            Self::ServiceUnavailable => "20000",
            Self::MissingArguments => "40001",
            Self::InvalidArguments => "40002",
            Self::BusinessFailed => "40004",
            Self::PayInProcess => "10003",
        }
    }

    pub fn msg(self) -> &'static str {
        match self {
            Self::Success => "Success",
            Self::ServiceUnavailable => "Service Currently Unavailable",
            Self::MissingArguments => "Missing Required Arguments",
            Self::InvalidArguments => "Invalid Arguments",
            Self::BusinessFailed => "Business Failed",
            // With its leading space, as captured in production.
            Self::PayInProcess => " order success pay inprocess",
        }
    }
}

/// An answer node: fields in the order they are printed (code and msg first, as Alipay prints
/// them); strings, or JSON values (lists, numbers) for the answers that carry them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    fields: Vec<(&'static str, serde_json::Value)>,
}

impl Node {
    pub fn success() -> Self {
        Self::with_code(ResultCode::Success)
    }

    pub fn with_code(code: ResultCode) -> Self {
        Self {
            fields: vec![
                ("code", serde_json::Value::String(code.code().to_owned())),
                ("msg", serde_json::Value::String(code.msg().to_owned())),
            ],
        }
    }

    pub fn error(code: ResultCode, sub_code: &str, sub_msg: &str) -> Self {
        Self::with_code(code).field("sub_code", sub_code).field("sub_msg", sub_msg)
    }

    pub fn field(self, name: &'static str, value: impl Into<String>) -> Self {
        self.json_field(name, serde_json::Value::String(value.into()))
    }

    /// A field whose value is any JSON (a list of objects, a number).
    pub fn json_field(mut self, name: &'static str, value: serde_json::Value) -> Self {
        self.fields.push((name, value));
        self
    }

    /// A string field's value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields.iter().find(|(k, _)| *k == name).and_then(|(_, v)| v.as_str())
    }

    /// Compact JSON, fields in order. serde_json writes UTF-8 as is and never escapes `/`.
    pub fn to_json(&self) -> String {
        let mut out = String::from("{");
        for (i, (name, value)) in self.fields.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&json_string(name));
            out.push(':');
            out.push_str(&value.to_string());
        }
        out.push('}');
        out
    }
}

fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// The answer body: `{"<node_name>":<node_text>,"sign":"..."}`, node first and `sign` last, or
/// with no `sign` at all for an unsigned answer.
pub fn answer_body(node_name: &str, node_text: &str, sign: Option<&str>) -> String {
    let mut body = format!("{{{}:{}", json_string(node_name), node_text);
    if let Some(sign) = sign {
        body.push_str(",\"sign\":");
        body.push_str(&json_string(sign));
    }
    body.push('}');
    body
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn vectors() -> serde_json::Value {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/vectors/vectors.json");
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn vector(id: &str) -> serde_json::Value {
        vectors()["vectors"].as_array().unwrap().iter().find(|v| v["id"] == id).unwrap().clone()
    }

    fn vector_file(name: &str) -> String {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/vectors/");
        std::fs::read_to_string(format!("{dir}{name}")).unwrap()
    }

    fn params_of(value: &serde_json::Value) -> Params {
        value
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect()
    }

    #[test]
    fn a1_request_string_and_signature_are_reproduced_and_verified() {
        let a1 = vector("A1");
        let key_text = vector_file(a1["inputs"]["private_key_file"].as_str().unwrap());
        let key = RsaPrivateKey::load(&key_text).unwrap();
        let params = params_of(&a1["inputs"]["params"]);

        assert_eq!(
            request_sign_content(&params),
            a1["expected"]["string_to_sign"].as_str().unwrap()
        );
        let signed = sign_request(params, &key).unwrap();
        assert_eq!(signed["sign"], a1["expected"]["sign"].as_str().unwrap());

        let public = key.public_key();
        assert_eq!(verify_request(&signed, &public), Ok(()));

        let mut tampered = signed.clone();
        tampered.insert("biz_content".into(), "{\"out_trade_no\":\"1703141271\"}".into());
        assert_eq!(verify_request(&tampered, &public), Err(ProtocolError::BadSignature));

        let mut unsigned = signed.clone();
        unsigned.remove("sign");
        assert_eq!(verify_request(&unsigned, &public), Err(ProtocolError::MissingSign));
    }

    #[test]
    fn a1_signature_still_verifies_when_an_empty_parameter_is_added() {
        let a1 = vector("A1");
        let key =
            RsaPrivateKey::load(&vector_file(a1["inputs"]["private_key_file"].as_str().unwrap()))
                .unwrap();
        let mut params = params_of(&a1["inputs"]["params"]);
        params.insert("sign".into(), a1["expected"]["sign"].as_str().unwrap().to_owned());
        params.insert("app_auth_token".into(), String::new());
        assert_eq!(verify_request(&params, &key.public_key()), Ok(()));
    }

    #[test]
    fn a6_notification_string_is_reproduced_and_verifies() {
        let a6 = vector("A6");
        let fields = params_of(&a6["inputs"]["fields"]);
        let content = notification_sign_content(&fields);
        assert_eq!(content, a6["expected"]["string_to_verify"].as_str().unwrap());

        let public =
            RsaPublicKey::load(&vector_file(a6["inputs"]["public_key_file"].as_str().unwrap()))
                .unwrap();
        assert!(public.verify_base64(content.as_bytes(), &fields["sign"]).is_ok());
        // The negative case: keeping sign_type breaks it.
        let with_sign_type = format!("{content}&sign_type=RSA2");
        assert!(public.verify_base64(with_sign_type.as_bytes(), &fields["sign"]).is_err());
    }

    #[test]
    fn form_parts_are_decoded_once_and_merged() {
        let params = merge_form_parts(&[
            b"app_id=1&timestamp=2024-01-01+10%3A00%3A00",
            b"subject=a%2Bb+c%252B",
        ])
        .unwrap();
        assert_eq!(params["timestamp"], "2024-01-01 10:00:00");
        assert_eq!(params["subject"], "a+b c%2B");
        assert!(merge_form_parts(&[b"a=1", b"a=1"]).is_ok());
        assert_eq!(
            merge_form_parts(&[b"a=1", b"a=2"]),
            Err(ProtocolError::ConflictingParameter("a".into()))
        );
    }

    #[test]
    fn amounts_take_zero_to_two_decimals_and_print_two() {
        assert_eq!(parse_yuan("1"), Ok(100));
        assert_eq!(parse_yuan("0.1"), Ok(10));
        assert_eq!(parse_yuan("0.01"), Ok(1));
        assert_eq!(parse_yuan("100000000.00"), Ok(MAX_FEN));
        for bad in ["", ".5", "1.", "1.001", "-1", "+1", "1e2", " 1", "01", "1,00", "0.0a"] {
            assert!(matches!(parse_yuan(bad), Err(AmountError::Malformed(_))), "{bad}");
        }
        for out in ["0", "0.00", "100000000.01", "99999999999999999999"] {
            assert!(matches!(parse_yuan(out), Err(AmountError::OutOfRange(_))), "{out}");
        }
        assert_eq!(format_yuan(1), "0.01");
        assert_eq!(format_yuan(10), "0.10");
        assert_eq!(format_yuan(123456), "1234.56");
    }

    #[test]
    fn beijing_time_round_trips() {
        let t = parse_beijing("2019-08-15 15:56:22").unwrap();
        assert_eq!(t.unix_timestamp(), 1_565_855_782);
        assert_eq!(format_beijing(t), "2019-08-15 15:56:22");
        assert!(parse_beijing("2019-08-15T15:56:22").is_none());
        assert!(parse_beijing("2019-08-15 15:56").is_none());
    }

    #[test]
    fn answer_body_puts_the_node_first_and_sign_last_without_escaping_slashes() {
        let node = Node::success()
            .field("qr_code", "http://127.0.0.1:1/_sandbox/cashier/a_b")
            .field("subject", "语雀 \"x\"");
        let text = node.to_json();
        assert_eq!(
            text,
            "{\"code\":\"10000\",\"msg\":\"Success\",\"qr_code\":\"http://127.0.0.1:1/_sandbox/cashier/a_b\",\"subject\":\"语雀 \\\"x\\\"\"}"
        );
        let body = answer_body("alipay_trade_precreate_response", &text, Some("ab/+="));
        assert_eq!(
            body,
            format!("{{\"alipay_trade_precreate_response\":{text},\"sign\":\"ab/+=\"}}")
        );
        assert_eq!(answer_body("error_response", "{}", None), "{\"error_response\":{}}");
        assert_eq!(
            node_name("alipay.trade.fastpay.refund.query"),
            "alipay_trade_fastpay_refund_query_response"
        );
    }
}

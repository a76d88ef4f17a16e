//! Answers: cut the signed node out of the raw body, verify it, then read it.
//!
//! Alipay signs the exact text of the node's value. Any JSON parser would normalise that text
//! (spacing, `\uXXXX` escapes, key order, number forms), so the node is located by a small scanner
//! that only finds where each top-level value starts and ends, respecting strings and escapes.

use paymux_crypto::RsaPublicKey;
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// Why an answer could not be read or trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    #[error("the answer is not a JSON object: {0}")]
    Malformed(&'static str),
    #[error("the answer has neither {0} nor error_response")]
    NoNode(String),
    #[error("the answer carries {0} more than once")]
    Ambiguous(String),
    #[error(
        "the answer node is not an object (an encrypted answer, which paymux does not request)"
    )]
    NotAnObject,
    #[error("the answer carries no sign")]
    Unsigned,
    #[error("the answer's sign or alipay_cert_sn is not a JSON string")]
    BadSignField,
    #[error("the answer's signature does not verify")]
    BadSignature,
    #[error("the answer node cannot be read: {0}")]
    Unreadable(String),
}

/// The node's name for a method: dots become `_`, then `_response`.
pub fn response_node_name(method: &str) -> String {
    format!("{}_response", method.replace('.', "_"))
}

/// The error node gateway-level failures use instead of the method's own.
pub const ERROR_NODE: &str = "error_response";

/// A raw answer taken apart without re-serialising anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawAnswer<'a> {
    /// `true` when the node was `error_response` rather than the method's own.
    pub is_error_response: bool,
    /// The node's value exactly as received, from its `{` to the matching `}`: the signed text.
    pub node_text: &'a str,
    /// The `sign` field, JSON-decoded; absent on some error answers.
    pub sign: Option<String>,
    /// Certificate mode: the SN of the Alipay certificate whose key signed the answer.
    pub alipay_cert_sn: Option<String>,
}

impl RawAnswer<'_> {
    /// Verifies `sign` over the node text with Alipay's public key. Unsigned is an error too:
    /// an unsigned answer must never settle anything.
    pub fn verify(&self, alipay_public_key: &RsaPublicKey) -> Result<(), AnswerError> {
        let sign = self.sign.as_deref().ok_or(AnswerError::Unsigned)?;
        alipay_public_key
            .verify_base64(self.node_text.as_bytes(), sign)
            .map_err(|_| AnswerError::BadSignature)
    }

    /// Reads the node (only after [`RawAnswer::verify`], unless for a log line).
    pub fn decode<T: DeserializeOwned>(&self) -> Result<Answer<T>, AnswerError> {
        serde_json::from_str(self.node_text).map_err(|e| AnswerError::Unreadable(e.to_string()))
    }
}

/// Splits a raw answer body for `method` into its node text and its signature.
pub fn split_answer<'a>(body: &'a str, method: &str) -> Result<RawAnswer<'a>, AnswerError> {
    let node_name = response_node_name(method);
    let members = top_level_members(body)?;
    let find = |name: &str| -> Result<Option<&'a str>, AnswerError> {
        let mut found = members.iter().filter(|(k, _)| *k == name).map(|(_, v)| *v);
        let first = found.next();
        if found.next().is_some() {
            return Err(AnswerError::Ambiguous(name.to_owned()));
        }
        Ok(first)
    };
    let (is_error_response, node_text) = match (find(&node_name)?, find(ERROR_NODE)?) {
        (Some(node), None) => (false, node),
        (None, Some(node)) => (true, node),
        (Some(_), Some(_)) => return Err(AnswerError::Ambiguous("a response node".into())),
        (None, None) => return Err(AnswerError::NoNode(node_name)),
    };
    if !node_text.starts_with('{') {
        return Err(AnswerError::NotAnObject);
    }
    let string_member = |name: &str| -> Result<Option<String>, AnswerError> {
        find(name)?
            .map(|raw| serde_json::from_str::<String>(raw).map_err(|_| AnswerError::BadSignField))
            .transpose()
    };
    let sign = string_member("sign")?;
    let alipay_cert_sn = string_member("alipay_cert_sn")?;
    Ok(RawAnswer { is_error_response, node_text, sign, alipay_cert_sn })
}

/// The result fields every node carries.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ResultCode {
    pub code: String,
    #[serde(default)]
    pub msg: Option<String>,
    #[serde(default)]
    pub sub_code: Option<String>,
    #[serde(default)]
    pub sub_msg: Option<String>,
}

/// A decoded node: its result code and the method's own fields.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Answer<T> {
    #[serde(flatten)]
    pub result: ResultCode,
    #[serde(flatten)]
    pub body: T,
}

/// `alipay.trade.precreate`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct PrecreateAnswer {
    pub out_trade_no: Option<String>,
    pub qr_code: Option<String>,
}

/// `alipay.trade.query`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct QueryAnswer {
    pub trade_no: Option<String>,
    pub out_trade_no: Option<String>,
    pub trade_status: Option<String>,
    pub total_amount: Option<String>,
    pub send_pay_date: Option<String>,
}

/// `alipay.trade.pay` (barcode).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct PayAnswer {
    pub trade_no: Option<String>,
    pub out_trade_no: Option<String>,
    pub total_amount: Option<String>,
    pub gmt_payment: Option<String>,
}

/// `alipay.trade.cancel`: `retry_flag` Y means send it again; `action` says what it did
/// (`close`: the trade was unpaid; `refund`: it was paid and the money went back).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct CancelAnswer {
    pub trade_no: Option<String>,
    pub out_trade_no: Option<String>,
    pub retry_flag: Option<String>,
    pub action: Option<String>,
}

/// `alipay.trade.close`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct CloseAnswer {
    pub trade_no: Option<String>,
    pub out_trade_no: Option<String>,
}

/// `alipay.trade.refund`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct RefundAnswer {
    pub trade_no: Option<String>,
    pub out_trade_no: Option<String>,
    pub fund_change: Option<String>,
    pub refund_fee: Option<String>,
    pub gmt_refund_pay: Option<String>,
}

/// `alipay.trade.fastpay.refund.query`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct RefundQueryAnswer {
    pub trade_no: Option<String>,
    pub out_trade_no: Option<String>,
    pub out_request_no: Option<String>,
    pub refund_status: Option<String>,
    pub refund_amount: Option<String>,
    pub gmt_refund_pay: Option<String>,
}

/// The top-level members of a JSON object as (raw key text, raw value text).
fn top_level_members(body: &str) -> Result<Vec<(&str, &str)>, AnswerError> {
    let b = body.as_bytes();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return Err(AnswerError::Malformed("it does not start with '{'"));
    }
    i = skip_ws(b, i + 1);
    let mut members = Vec::new();
    if b.get(i) == Some(&b'}') {
        return finish(b, i + 1, members);
    }
    loop {
        if b.get(i) != Some(&b'"') {
            return Err(AnswerError::Malformed("a member name is not a string"));
        }
        let key_end = scan_string(b, i)?;
        let key = &body[i + 1..key_end - 1];
        i = skip_ws(b, key_end);
        if b.get(i) != Some(&b':') {
            return Err(AnswerError::Malformed("a member name is not followed by ':'"));
        }
        i = skip_ws(b, i + 1);
        let value_end = scan_value(b, i)?;
        members.push((key, &body[i..value_end]));
        i = skip_ws(b, value_end);
        match b.get(i) {
            Some(b',') => i = skip_ws(b, i + 1),
            Some(b'}') => return finish(b, i + 1, members),
            _ => return Err(AnswerError::Malformed("a member is not followed by ',' or '}'")),
        }
    }
}

fn finish<'a>(
    b: &[u8],
    i: usize,
    members: Vec<(&'a str, &'a str)>,
) -> Result<Vec<(&'a str, &'a str)>, AnswerError> {
    if skip_ws(b, i) == b.len() {
        Ok(members)
    } else {
        Err(AnswerError::Malformed("text follows the object"))
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// `b[start]` is `"`; returns the index just past the closing quote. Working on bytes is sound for
/// UTF-8: `"` and `\` never occur inside a multi-byte sequence.
fn scan_string(b: &[u8], start: usize) -> Result<usize, AnswerError> {
    let mut i = start + 1;
    while let Some(&c) = b.get(i) {
        match c {
            b'\\' => i += 2,
            b'"' => return Ok(i + 1),
            _ => i += 1,
        }
    }
    Err(AnswerError::Malformed("a string is not terminated"))
}

/// Returns the index just past the value that starts at `b[start]`.
fn scan_value(b: &[u8], start: usize) -> Result<usize, AnswerError> {
    match b.get(start) {
        None => Err(AnswerError::Malformed("a value is missing")),
        Some(b'"') => scan_string(b, start),
        Some(b'{' | b'[') => {
            let mut open: Vec<u8> = Vec::new();
            let mut i = start;
            while let Some(&c) = b.get(i) {
                match c {
                    b'"' => {
                        i = scan_string(b, i)?;
                        continue;
                    }
                    b'{' => open.push(b'}'),
                    b'[' => open.push(b']'),
                    b'}' | b']' => {
                        if open.pop() != Some(c) {
                            return Err(AnswerError::Malformed("brackets do not match"));
                        }
                        if open.is_empty() {
                            return Ok(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            Err(AnswerError::Malformed("an object or array is not closed"))
        }
        Some(_) => {
            let mut i = start;
            while let Some(&c) = b.get(i) {
                if matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                    break;
                }
                i += 1;
            }
            if i == start { Err(AnswerError::Malformed("a value is missing")) } else { Ok(i) }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const METHOD: &str = "alipay.trade.query";

    #[test]
    fn cuts_the_node_exactly_with_nested_braces_and_tricky_strings() {
        let node = r#"{"code":"10000","msg":"Success","subject":"a}b{c\"}\\","list":[{"a":"]"},{"b":{}}],"n":1.50,"t":true}"#;
        let body = format!(r#"{{"alipay_trade_query_response":{node},"sign":"c2ln"}}"#);
        let raw = split_answer(&body, METHOD).unwrap();
        assert_eq!(raw.node_text, node);
        assert!(!raw.is_error_response);
        assert_eq!(raw.sign.as_deref(), Some("c2ln"));
    }

    #[test]
    fn keeps_whitespace_and_escapes_as_received() {
        let node = "{ \"code\" : \"10000\",\n \"subject\":\"\\u4e2d\\/x\" }";
        let body = format!("{{ \"sign\" : \"YQ\\/=\" ,\"alipay_trade_query_response\" : {node} }}");
        let raw = split_answer(&body, METHOD).unwrap();
        assert_eq!(raw.node_text, node);
        assert_eq!(raw.sign.as_deref(), Some("YQ/="));
    }

    #[test]
    fn finds_error_response_and_reports_a_missing_sign() {
        let body = r#"{"error_response":{"code":"40002","msg":"Invalid Arguments","sub_code":"isv.invalid-app-id"}}"#;
        let raw = split_answer(body, METHOD).unwrap();
        assert!(raw.is_error_response);
        assert_eq!(raw.sign, None);
        let key = paymux_crypto::RsaPrivateKey::generate().unwrap().public_key();
        assert_eq!(raw.verify(&key), Err(AnswerError::Unsigned));
        let decoded: Answer<QueryAnswer> = raw.decode().unwrap();
        assert_eq!(decoded.result.sub_code.as_deref(), Some("isv.invalid-app-id"));
    }

    #[test]
    fn a_node_name_inside_a_string_is_not_a_node() {
        let body = r#"{"other":"\"alipay_trade_query_response\":{}","sign":"x"}"#;
        assert_eq!(
            split_answer(body, METHOD),
            Err(AnswerError::NoNode("alipay_trade_query_response".into()))
        );
    }

    #[test]
    fn refuses_ambiguous_and_malformed_bodies() {
        let twice = r#"{"alipay_trade_query_response":{},"alipay_trade_query_response":{}}"#;
        assert!(matches!(split_answer(twice, METHOD), Err(AnswerError::Ambiguous(_))));
        for bad in [
            "",
            "[]",
            r#"{"alipay_trade_query_response":{"a":"}"#,
            r#"{"alipay_trade_query_response":{"a":[}]}"#,
            r#"{"alipay_trade_query_response":{}} x"#,
            r#"{"alipay_trade_query_response" {}}"#,
        ] {
            assert!(matches!(split_answer(bad, METHOD), Err(AnswerError::Malformed(_))), "{bad}");
        }
        let encrypted = r#"{"alipay_trade_query_response":"c2VjcmV0","sign":"x"}"#;
        assert_eq!(split_answer(encrypted, METHOD), Err(AnswerError::NotAnObject));
        let numeric_sign = r#"{"alipay_trade_query_response":{},"sign":5}"#;
        assert_eq!(split_answer(numeric_sign, METHOD), Err(AnswerError::BadSignField));
    }

    #[test]
    fn node_names_follow_the_method() {
        assert_eq!(
            response_node_name("alipay.trade.fastpay.refund.query"),
            "alipay_trade_fastpay_refund_query_response"
        );
    }
}

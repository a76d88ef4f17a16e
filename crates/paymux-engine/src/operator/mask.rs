//! Channel notifications as an operator may see them: every field parsed out of the raw body
//! (a form for Alipay and UnionPay, JSON for WeChat Pay), with what could sign, decrypt or pay
//! (signatures, keys, certificates, tokens, auth codes, ciphertext) masked.

/// A logged notification, readable and safe to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskedNotification {
    pub headers: Vec<(String, String)>,
    /// The body's fields in order (nested JSON as dotted paths), or one line saying why none.
    pub fields: Vec<(String, String)>,
}

/// Parts of a field or header name that mark a secret, or a value that would let someone sign,
/// verify as us, decrypt or pay: `sign`, `signature`, `sign_type` (harmless, masked anyway),
/// `certId`, `signPubKeyCert`, `Wechatpay-Signature`, `authorization`, `auth_code`, `ciphertext`...
const SECRET_PARTS: [&str; 9] =
    ["sign", "key", "cert", "token", "secret", "auth", "password", "cookie", "cipher"];

/// Whether a field or header of this name is masked.
pub fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_PARTS.iter().any(|part| name.contains(part))
}

fn masked(value: &str) -> String {
    format!("[masked, {} chars]", value.chars().count())
}

/// A value shown as is, unless its name marks a secret or it holds key material.
fn shown(name: &str, value: &str) -> String {
    if is_secret_name(name) || value.contains("-----BEGIN") {
        masked(value)
    } else {
        value.to_owned()
    }
}

/// Parses and masks one logged notification.
pub fn mask_notification(headers: &[(String, String)], body: &[u8]) -> MaskedNotification {
    let headers = headers.iter().map(|(k, v)| (k.clone(), shown(k, v))).collect();
    MaskedNotification { headers, fields: body_fields(body) }
}

fn body_fields(body: &[u8]) -> Vec<(String, String)> {
    if let Ok(json) = serde_json::from_slice::<serde_json::Value>(body)
        && json.is_object()
    {
        let mut fields = Vec::new();
        flatten("", &json, &mut fields);
        return fields;
    }
    match std::str::from_utf8(body) {
        Ok(text) if text.contains('=') && !text.trim_start().starts_with('<') => {
            form_urlencoded::parse(text.trim().as_bytes())
                .map(|(k, v)| {
                    let value = shown(&k, &v);
                    (k.into_owned(), value)
                })
                .collect()
        }
        _ => {
            vec![("body".into(), format!("[{} bytes, not a form or JSON: not shown]", body.len()))]
        }
    }
}

fn flatten(path: &str, value: &serde_json::Value, out: &mut Vec<(String, String)>) {
    let name = |key: &str| if path.is_empty() { key.to_owned() } else { format!("{path}.{key}") };
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                if is_secret_name(k) {
                    out.push((name(k), masked(&v.to_string())));
                } else {
                    flatten(&name(k), v, out);
                }
            }
        }
        serde_json::Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                flatten(&name(&i.to_string()), v, out);
            }
        }
        serde_json::Value::String(s) => out.push((path.to_owned(), shown(path, s))),
        other => out.push((path.to_owned(), other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field<'a>(m: &'a MaskedNotification, name: &str) -> &'a str {
        m.fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).unwrap_or("<absent>")
    }

    #[test]
    fn alipay_form_shows_its_fields_and_masks_the_signature() {
        let body = b"trade_status=TRADE_SUCCESS&out_trade_no=0193ABC&total_amount=10.00\
            &sign_type=RSA2&sign=QmFzZTY0U2lnbmF0dXJl%2B%2F%3D&auth_code=28763443825664394";
        let m = mask_notification(&[], body);
        assert_eq!(field(&m, "trade_status"), "TRADE_SUCCESS");
        assert_eq!(field(&m, "out_trade_no"), "0193ABC");
        assert_eq!(field(&m, "total_amount"), "10.00");
        assert_eq!(field(&m, "sign"), "[masked, 23 chars]");
        assert_eq!(field(&m, "auth_code"), "[masked, 17 chars]");
        let all = format!("{m:?}");
        assert!(!all.contains("QmFzZTY0") && !all.contains("28763443825664394"), "{all}");
    }

    #[test]
    fn unionpay_certificates_and_signatures_are_masked() {
        let body = b"orderId=0193DEF&respCode=00&txnAmt=1000&certId=69629715588\
            &signPubKeyCert=-----BEGIN+CERTIFICATE-----MIIB-----END+CERTIFICATE-----\
            &signature=c2lnbmF0dXJl&accessToken=tok";
        let m = mask_notification(&[], body);
        assert_eq!(field(&m, "respCode"), "00");
        assert_eq!(field(&m, "txnAmt"), "1000");
        for secret in ["certId", "signPubKeyCert", "signature", "accessToken"] {
            assert!(field(&m, secret).starts_with("[masked"), "{secret}: {m:?}");
        }
        assert!(!format!("{m:?}").contains("MIIB"));
    }

    #[test]
    fn wechat_json_is_flattened_with_its_signature_header_and_ciphertext_masked() {
        let headers = vec![
            ("wechatpay-signature".to_owned(), "c2lnbmF0dXJlLWJ5dGVz".to_owned()),
            ("wechatpay-serial".to_owned(), "PUB_KEY_ID_0114".to_owned()),
            ("wechatpay-timestamp".to_owned(), "1732800000".to_owned()),
        ];
        let body = br#"{"id":"EV-1","event_type":"TRANSACTION.SUCCESS","resource":
            {"algorithm":"AEAD_AES_256_GCM","ciphertext":"c2VjcmV0","nonce":"n1",
             "associated_data":"transaction"}}"#;
        let m = mask_notification(&headers, body);
        assert_eq!(m.headers[0].1, "[masked, 20 chars]");
        assert_eq!(m.headers[1].1, "PUB_KEY_ID_0114");
        assert_eq!(field(&m, "event_type"), "TRANSACTION.SUCCESS");
        assert_eq!(field(&m, "resource.algorithm"), "AEAD_AES_256_GCM");
        assert!(field(&m, "resource.ciphertext").starts_with("[masked"));
        assert!(!format!("{m:?}").contains("c2VjcmV0"));
    }

    #[test]
    fn a_body_that_is_neither_form_nor_json_is_not_shown() {
        let m = mask_notification(&[], b"<xml><sign>abc</sign></xml>");
        assert_eq!(
            m.fields,
            [("body".to_owned(), "[27 bytes, not a form or JSON: not shown]".into())]
        );
    }
}

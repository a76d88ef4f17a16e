//! The protocol pinned by the official Alipay vectors (A1, A3, A4, A6-A9) in tests/vectors.

#![allow(clippy::unwrap_used)]

use paymux_alipay::protocol::{
    self, Params, SignedRequest, VerifyError, notification_string_to_verify, split_answer,
};
use paymux_crypto::{RsaPrivateKey, RsaPublicKey};
use serde_json::Value;

const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/vectors");

fn vector(id: &str) -> Value {
    let text = std::fs::read_to_string(format!("{VECTORS}/vectors.json")).unwrap();
    let all: Value = serde_json::from_str(&text).unwrap();
    all["vectors"].as_array().unwrap().iter().find(|v| v["id"] == id).unwrap().clone()
}

fn file(name: &str) -> String {
    std::fs::read_to_string(format!("{VECTORS}/{name}")).unwrap()
}

fn public_key(v: &Value) -> RsaPublicKey {
    let inputs = &v["inputs"];
    let name = inputs["public_key_file"].as_str().or(inputs["alipay_cert_file"].as_str()).unwrap();
    RsaPublicKey::load(&file(name)).unwrap()
}

fn fields(v: &Value) -> Params {
    v["inputs"]["fields"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect()
}

#[test]
fn a1_request_string_and_signature_with_a_bare_pkcs1_key() {
    let v = vector("A1");
    let key =
        RsaPrivateKey::load(&file(v["inputs"]["private_key_file"].as_str().unwrap())).unwrap();
    let params: Params = v["inputs"]["params"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(protocol::request_string_to_sign(&params), v["expected"]["string_to_sign"]);
    let signed = SignedRequest::sign(params, &key).unwrap();
    assert_eq!(signed.signature(), v["expected"]["sign"]);
}

#[test]
fn a3_answer_verified_over_the_node_cut_from_the_raw_body() {
    let v = vector("A3");
    let key = public_key(&v);
    let body = v["inputs"]["raw_body"].as_str().unwrap();
    let raw = split_answer(body, "alipay.open.file.upload").unwrap();
    assert_eq!(raw.node_text, v["expected"]["signed_content"]);
    assert_eq!(raw.verify(&key), Ok(()));

    let tampered = body.replace("CAxAToWB1Js", "CAxAToWB1Jt");
    let raw = split_answer(&tampered, "alipay.open.file.upload").unwrap();
    assert!(raw.verify(&key).is_err());
    let reprinted: Value = serde_json::from_str(body).unwrap();
    let pretty = serde_json::to_string_pretty(&reprinted).unwrap();
    let raw = split_answer(&pretty, "alipay.open.file.upload").unwrap();
    assert!(raw.verify(&key).is_err(), "re-serialised text must not verify");
}

#[test]
fn a4_nested_node_verifies_with_a_bare_base64_public_key() {
    let v = vector("A4");
    let key = public_key(&v);
    let content = v["inputs"]["signed_content"].as_str().unwrap();
    let sign = v["inputs"]["sign"].as_str().unwrap();
    let body = format!(r#"{{"alipay_trade_query_response":{content},"sign":"{sign}"}}"#);
    let raw = split_answer(&body, "alipay.trade.query").unwrap();
    assert_eq!(raw.node_text, content);
    assert_eq!(raw.verify(&key), Ok(()));
    let answer: protocol::Answer<protocol::response::QueryAnswer> = raw.decode().unwrap();
    assert_eq!(answer.result.code, "10000");
    assert_eq!(answer.body.total_amount.as_deref(), Some("0.01"));
}

#[test]
fn a6_trade_notification_drops_sign_and_sign_type() {
    let v = vector("A6");
    let key = public_key(&v);
    let f = fields(&v);
    assert_eq!(notification_string_to_verify(&f), v["expected"]["string_to_verify"]);
    assert_eq!(protocol::verify_notification(&f, &key), Ok(()));
    // Negative: keeping sign_type (the gateway-message rule) fails.
    assert_eq!(protocol::verify_gateway_message(&f, &key), Err(VerifyError::BadSignature));
}

#[test]
fn a6_verifies_from_the_encoded_form_body() {
    let v = vector("A6");
    let key = public_key(&v);
    let f = fields(&v);
    let body = protocol::encode_pairs(f.iter());
    let decoded = protocol::decode_form(body.as_bytes()).unwrap();
    assert_eq!(decoded, f);
    assert_eq!(protocol::verify_notification(&decoded, &key), Ok(()));
}

#[test]
fn a7_literal_plus_survives_a_single_decode() {
    let v = vector("A7");
    let key = public_key(&v);
    let f = fields(&v);
    // On the wire the `+` travels as %2B; one decode gives it back.
    let body = protocol::encode_pairs(f.iter());
    assert!(body.contains("subject=yansongda%2B"));
    let decoded = protocol::decode_form(body.as_bytes()).unwrap();
    assert_eq!(decoded["subject"], "yansongda+测试 - 1");
    assert_eq!(protocol::verify_notification(&decoded, &key), Ok(()));

    // Negative: decoding a second time turns `+` into a space.
    let mut twice = decoded.clone();
    twice.insert("subject".into(), "yansongda 测试 - 1".into());
    assert_eq!(protocol::verify_notification(&twice, &key), Err(VerifyError::BadSignature));
}

#[test]
fn a8_gateway_message_removes_only_sign() {
    let v = vector("A8");
    let key = public_key(&v);
    let f = fields(&v);
    assert_eq!(protocol::verify_gateway_message(&f, &key), Ok(()));
    // Negative: removing sign_type too fails.
    assert_eq!(protocol::verify_notification(&f, &key), Err(VerifyError::BadSignature));
}

#[test]
fn a9_return_url_query_verifies_like_a_notification() {
    let v = vector("A9");
    let key = public_key(&v);
    let query = v["inputs"]["query"].as_str().unwrap();
    let f = protocol::verify_return_query(query, &key).unwrap();
    assert_eq!(notification_string_to_verify(&f), v["expected"]["string_to_verify"]);
    assert_eq!(f["timestamp"], "2023-12-21 14:48:44");

    let tampered = query.replace("total_amount=0.01", "total_amount=0.02");
    assert_eq!(protocol::verify_return_query(&tampered, &key), Err(VerifyError::BadSignature));
}

#[test]
fn a2_certificate_sns() {
    let v = vector("A2");
    for case in v["cases"].as_array().unwrap() {
        let name = case["inputs"]["certificate_file"].as_str().unwrap();
        let kind = case["inputs"]["sn"].as_str().unwrap();
        let pem = file(name);
        let sn = if kind.starts_with("alipay_root_cert_sn") {
            protocol::root_cert_sn(&pem).unwrap()
        } else {
            protocol::cert_sn(&pem).unwrap()
        };
        assert_eq!(sn, case["expected"], "{name}");
    }
}

#[test]
fn a5_cert_mode_answer_verifies_with_the_alipay_certificate_key() {
    let v = vector("A5");
    let pem = file(v["inputs"]["alipay_cert_file"].as_str().unwrap());
    let cert = paymux_crypto::Certificate::from_pem(&pem).unwrap();
    let at = time::OffsetDateTime::parse(
        v["clock_utc"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!(cert.is_valid_at(at));
    let key = cert.public_key().unwrap();
    let content = v["inputs"]["signed_content"].as_str().unwrap();
    let sign = v["inputs"]["sign"].as_str().unwrap();
    let body = format!(
        r#"{{"alipay_fund_trans_uni_transfer_response":{content},"alipay_cert_sn":"6f1e366a31d9575cd546914add04f4af","sign":"{sign}"}}"#
    );
    let raw = split_answer(&body, "alipay.fund.trans.uni.transfer").unwrap();
    assert_eq!(raw.node_text, content);
    assert_eq!(raw.verify(key), Ok(()));
    assert_eq!(raw.alipay_cert_sn.as_deref(), Some("6f1e366a31d9575cd546914add04f4af"));
}

//! The protocol module pinned by the official WeChat vectors W1-W8
//! (tests/vectors/vectors.json), with negative variants for every verification.

#![allow(clippy::unwrap_used)]

use paymux_crypto::{
    Certificate, RsaPrivateKey, RsaPublicKey, aes_gcm_decrypt, aes_gcm_encrypt, b64_decode,
    b64_encode, sha256_hex,
};
use paymux_wechat::protocol::{
    ApiV3Key, CertificatesAnswer, MerchantSigner, NotificationBody, SignatureHeaders, VerifierSet,
    VerifyError, answer_message, app_pay_message, decrypt_certificates, jsapi_pay_message,
    parse_authorization, request_message,
};
use serde_json::Value;
use time::OffsetDateTime;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/vectors/");

fn vector(id: &str) -> Value {
    let all: Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{DIR}vectors.json")).unwrap())
            .unwrap();
    all["vectors"].as_array().unwrap().iter().find(|v| v["id"] == id).unwrap().clone()
}

fn file(name: &str) -> String {
    std::fs::read_to_string(format!("{DIR}{name}")).unwrap()
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap()
}

fn at(unix: &Value) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(unix.as_i64().unwrap()).unwrap()
}

fn headers(h: &Value) -> SignatureHeaders {
    SignatureHeaders::from_lookup(|name| h.get(name).and_then(Value::as_str)).unwrap()
}

#[test]
fn w1_request_message_signature_and_authorization() {
    let v = vector("W1");
    let i = &v["inputs"];
    let e = &v["expected"];
    let key = RsaPrivateKey::load(&file(s(&i["private_key_file"]))).unwrap();
    let ts: i64 = s(&i["timestamp"]).parse().unwrap();
    let body = s(&i["body"]).as_bytes();
    let message = request_message(s(&i["method"]), s(&i["url"]), ts, s(&i["nonce"]), body);
    assert_eq!(message, s(&e["message"]).as_bytes());

    let signer = MerchantSigner::new(s(&i["mchid"]), s(&i["serial_no"]), key.clone());
    assert_eq!(signer.sign(&message).unwrap(), s(&e["signature"]));
    let auth =
        signer.authorization(s(&i["method"]), s(&i["url"]), ts, s(&i["nonce"]), body).unwrap();
    assert_eq!(auth, s(&e["authorization"]));

    let p = parse_authorization(&auth).unwrap();
    assert_eq!(p.signature, s(&e["signature"]));
    assert_eq!(p.serial_no, s(&i["serial_no"]));
    // A changed byte anywhere in the message breaks the signature (the mock's side).
    let public = key.public_key();
    assert!(public.verify_base64(&message, &p.signature).is_ok());
    let other = request_message("POST", "/v3/pay/transactions/app", ts, s(&i["nonce"]), body);
    assert!(public.verify_base64(&other, &p.signature).is_err());
}

#[test]
fn w2_jsapi_pay_sign_and_app_sign() {
    let v = vector("W2");
    let i = &v["inputs"];
    let e = &v["expected"];
    let signer = MerchantSigner::new(
        "1900007291",
        "408B07E79B8269FEC3D5D3E6AB8ED163A6A380DB",
        RsaPrivateKey::load(&file(s(&i["private_key_file"]))).unwrap(),
    );
    let ts: i64 = s(&i["timeStamp"]).parse().unwrap();
    let (appid, nonce, prepay) = (s(&i["appId"]), s(&i["nonceStr"]), s(&i["prepay_id"]));

    let jsapi = signer.jsapi_params(appid, ts, nonce, prepay).unwrap();
    assert_eq!(jsapi.package, s(&e["jsapi_package"]));
    assert_eq!(jsapi.sign_type, s(&e["jsapi_signType"]));
    assert_eq!(
        jsapi_pay_message(appid, &jsapi.time_stamp, nonce, &jsapi.package),
        s(&e["jsapi_message"]).as_bytes()
    );
    assert_eq!(jsapi.pay_sign, s(&e["jsapi_paySign"]));
    let json = serde_json::to_value(&jsapi).unwrap();
    for k in ["appId", "timeStamp", "nonceStr", "package", "signType", "paySign"] {
        assert!(json.get(k).is_some(), "{k}");
    }

    let app = signer.app_params(appid, ts, nonce, prepay).unwrap();
    assert_eq!(app.package, s(&e["app_package"]));
    assert_eq!(app.partnerid, "1900007291");
    assert_eq!(
        app_pay_message(appid, &app.timestamp, nonce, &app.prepayid),
        s(&e["app_message"]).as_bytes()
    );
    assert_eq!(app.sign, s(&e["app_sign"]));
}

#[test]
fn w3_public_key_mode_answer_verification_and_negatives() {
    let v = vector("W3");
    let i = &v["inputs"];
    let e = &v["expected"];
    let key = RsaPublicKey::load(&file(s(&i["public_key_file"]))).unwrap();
    let id = s(&i["configured_public_key_id"]);
    let set = VerifierSet::new().with_public_key(id, key);
    let h = headers(&i["headers"]);
    let body = s(&i["body"]).as_bytes();
    let now = at(&v["clock_unix"]);
    assert_eq!(answer_message(&h.timestamp, &h.nonce, body), s(&e["message"]).as_bytes());
    assert_eq!(set.verify(&h, body, now), Ok(()));
    // Within the window, a few minutes later.
    assert_eq!(set.verify(&h, body, now + time::Duration::minutes(4)), Ok(()));

    // Negatives: tampered body, stale clock, future clock, other serial, probe, other nonce,
    // wrong signature type.
    assert_eq!(
        set.verify(&h, br#"{"code_url":"weixin://wxpay/bizpayurl?pr=JyC91EIz2"}"#, now),
        Err(VerifyError::BadSignature)
    );
    assert!(matches!(
        set.verify(&h, body, now + time::Duration::minutes(6)),
        Err(VerifyError::OutsideWindow { .. })
    ));
    assert!(matches!(
        set.verify(&h, body, now - time::Duration::minutes(6)),
        Err(VerifyError::OutsideWindow { .. })
    ));
    let mut other = h.clone();
    other.serial = "PUB_KEY_ID_0000000000000024101100397200000007".into();
    assert!(matches!(set.verify(&other, body, now), Err(VerifyError::UnknownSerial(_))));
    let mut probe = h.clone();
    probe.signature = format!("WECHATPAY/SIGNTEST/{}", h.signature);
    assert_eq!(set.verify(&probe, body, now), Err(VerifyError::Probe));
    let mut nonce = h.clone();
    nonce.nonce = "d824f2e086d3c1df967785d13fcd22ee".into();
    assert_eq!(set.verify(&nonce, body, now), Err(VerifyError::BadSignature));
    let mut kind = h.clone();
    kind.signature_type = Some("WECHATPAY2-SM2-WITH-SM3".into());
    assert!(matches!(set.verify(&kind, body, now), Err(VerifyError::SignatureType(_))));
    // A set with only certificates does not know the public key id.
    assert!(matches!(VerifierSet::new().verify(&h, body, now), Err(VerifyError::UnknownSerial(_))));
}

#[test]
fn w4_sign_verify_primitive_and_serial() {
    let v = vector("W4");
    let i = &v["inputs"];
    let e = &v["expected"];
    let signer = MerchantSigner::new(
        "1",
        "F5765756002FDD77",
        RsaPrivateKey::load(&file(s(&i["private_key_file"]))).unwrap(),
    );
    let message = s(&i["message"]).as_bytes();
    assert_eq!(signer.sign(message).unwrap(), s(&e["signature"]));
    let cert = Certificate::from_pem(&file(s(&i["certificate_file"]))).unwrap();
    assert_eq!(cert.serial_hex(), s(&e["certificate_serial_hex"]));
    assert!(cert.public_key().unwrap().verify_base64(message, s(&e["signature"])).is_ok());
    assert!(cert.public_key().unwrap().verify_base64(b"sourcf", s(&e["signature"])).is_err());
}

#[test]
fn w5_notification_verify_then_decrypt_and_negatives() {
    let v = vector("W5");
    let i = &v["inputs"];
    let e = &v["expected"];
    let cert = Certificate::from_pem(&file(s(&i["platform_certificate_file"]))).unwrap();
    assert_eq!(cert.serial_hex(), s(&e["certificate_serial_hex"]));
    let set = VerifierSet::new().with_certificates([cert]);
    let h = headers(&i["headers"]);
    let body = s(&i["body"]).as_bytes();
    let now = at(&v["clock_unix"]);
    assert_eq!(answer_message(&h.timestamp, &h.nonce, body), s(&e["message"]).as_bytes());
    assert_eq!(set.verify(&h, body, now), Ok(()));

    // The serial is compared after normalisation (lower case, a leading zero).
    let mut lower = h.clone();
    lower.serial = "0d7ce59d1f522d701".into();
    assert_eq!(set.verify(&lower, body, now), Ok(()));

    // Decrypt the resource; the key is 16 bytes, so through the raw primitive.
    let n = NotificationBody::parse(body).unwrap();
    let aes_key = s(&i["aes_key"]).as_bytes();
    let sealed = b64_decode(&n.resource.ciphertext).unwrap();
    let plain = aes_gcm_decrypt(
        aes_key,
        n.resource.nonce.as_bytes(),
        n.resource.associated_data.as_bytes(),
        &sealed,
    )
    .unwrap();
    assert_eq!(plain, s(&e["plaintext"]).as_bytes());
    // The production loader refuses the 16-byte key.
    assert!(ApiV3Key::new(s(&i["aes_key"])).is_err());

    // Negatives.
    let tampered = s(&i["body"]).replace("签约成功", "签约失败");
    assert_eq!(set.verify(&h, tampered.as_bytes(), now), Err(VerifyError::BadSignature));
    assert!(matches!(
        set.verify(&h, body, now + time::Duration::hours(1)),
        Err(VerifyError::OutsideWindow { .. })
    ));
    let mut unknown = h.clone();
    unknown.serial = "D7CE59D1F522D702".into();
    assert!(matches!(set.verify(&unknown, body, now), Err(VerifyError::UnknownSerial(_))));
    let mut probe = h.clone();
    probe.signature = "WECHATPAY/SIGNTEST/abc".into();
    assert_eq!(set.verify(&probe, body, now), Err(VerifyError::Probe));
    let mut sealed_bad = sealed.clone();
    sealed_bad[3] ^= 0x40;
    assert!(
        aes_gcm_decrypt(aes_key, n.resource.nonce.as_bytes(), b"payscore", &sealed_bad).is_err()
    );
    assert!(aes_gcm_decrypt(aes_key, n.resource.nonce.as_bytes(), b"", &sealed).is_err());
    // Missing headers are refused before anything else.
    let missing = SignatureHeaders::from_lookup(|name| {
        (name != "Wechatpay-Signature")
            .then(|| i["headers"].get(name).and_then(Value::as_str))
            .flatten()
    });
    assert_eq!(missing, Err(VerifyError::MissingHeader("Wechatpay-Signature")));
}

#[test]
fn w6_aead_aes_256_gcm_both_directions() {
    let v = vector("W6");
    let i = &v["inputs"];
    let e = &v["expected"];
    let key = ApiV3Key::new(s(&i["apiv3_key"])).unwrap();
    let ct = key.encrypt(s(&i["nonce"]), s(&i["associated_data"]), s(&i["plaintext"]).as_bytes());
    assert_eq!(ct.unwrap(), s(&e["ciphertext_base64"]));
    let plain =
        key.decrypt(s(&i["nonce"]), s(&i["associated_data"]), s(&e["ciphertext_base64"])).unwrap();
    assert_eq!(plain, s(&e["decrypts_to"]).as_bytes());
    // Negatives: other AAD, other nonce, flipped byte.
    assert!(key.decrypt(s(&i["nonce"]), "associatedDatb", s(&e["ciphertext_base64"])).is_err());
    assert!(
        key.decrypt("uluk4a9R25RX", s(&i["associated_data"]), s(&e["ciphertext_base64"])).is_err()
    );
    let mut raw = b64_decode(s(&e["ciphertext_base64"])).unwrap();
    raw[0] ^= 1;
    assert!(key.decrypt(s(&i["nonce"]), s(&i["associated_data"]), &b64_encode(&raw)).is_err());
}

#[test]
fn w7_certificates_answer_decrypts_to_the_platform_certificate() {
    let v = vector("W7");
    let i = &v["inputs"];
    let e = &v["expected"];
    let key = ApiV3Key::new(s(&i["apiv3_key"])).unwrap();
    let body = file(s(&i["response_json_file"]));
    let answer: CertificatesAnswer = serde_json::from_str(&body).unwrap();
    let pem = answer.data[0].decrypt_pem(&key).unwrap();
    assert_eq!(pem, file(s(&e["plaintext_file"])));
    assert_eq!(sha256_hex(pem.as_bytes()), s(&e["plaintext_sha256"]));

    // Valid now (2025-2028 lies inside 2023-09-19..2028-09-17).
    let now = OffsetDateTime::from_unix_timestamp(1_750_000_000).unwrap();
    let certs = decrypt_certificates(body.as_bytes(), &key, now).unwrap();
    assert_eq!(certs.len(), 1);
    assert_eq!(certs[0].serial_hex(), s(&e["certificate_serial_hex"]));
    assert!(certs[0].subject().contains(s(&e["certificate_subject_cn"])));

    // Negatives: before or after validity, a wrong key, an incomplete entry, a wrong serial.
    let before = OffsetDateTime::from_unix_timestamp(1_600_000_000).unwrap();
    assert!(decrypt_certificates(body.as_bytes(), &key, before).unwrap().is_empty());
    let after = OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap();
    assert!(decrypt_certificates(body.as_bytes(), &key, after).unwrap().is_empty());
    let other = ApiV3Key::new("b7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb").unwrap();
    assert!(decrypt_certificates(body.as_bytes(), &other, now).unwrap().is_empty());
    let mut incomplete = answer.clone();
    incomplete.data[0].expire_time = Some(String::new());
    let text = serde_json::to_vec(&incomplete).unwrap();
    assert!(decrypt_certificates(&text, &key, now).unwrap().is_empty());
    let mut renamed = answer.clone();
    renamed.data[0].serial_no = Some("5DEA10EF55877E3CF6C33255C2E7DEFFF7E427ED".into());
    let text = serde_json::to_vec(&renamed).unwrap();
    assert!(decrypt_certificates(&text, &key, now).unwrap().is_empty());
    let mut aad = answer;
    if let Some(enc) = aad.data[0].encrypt_certificate.as_mut() {
        enc.associated_data = Some("transaction".into());
    }
    let text = serde_json::to_vec(&aad).unwrap();
    assert!(decrypt_certificates(&text, &key, now).unwrap().is_empty());
    assert!(decrypt_certificates(b"not json", &key, now).is_err());
}

#[test]
fn w8_aes_gcm_with_a_16_byte_key() {
    let v = vector("W8");
    let i = &v["inputs"];
    let e = &v["expected"];
    let key = s(&i["aes_key"]).as_bytes();
    let sealed = b64_decode(s(&i["ciphertext_base64"])).unwrap();
    let nonce = s(&i["nonce"]).as_bytes();
    let aad = s(&i["associated_data"]).as_bytes();
    assert_eq!(aes_gcm_decrypt(key, nonce, aad, &sealed).unwrap(), s(&e["plaintext"]).as_bytes());
    assert_eq!(aes_gcm_encrypt(key, nonce, aad, s(&e["plaintext"]).as_bytes()).unwrap(), sealed);
    assert!(aes_gcm_decrypt(key, nonce, b"", &sealed).is_err());
    assert!(ApiV3Key::new(s(&i["aes_key"])).is_err());
}

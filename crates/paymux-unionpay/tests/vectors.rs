//! The official UnionPay vectors U1, U2 and U4 (tests/vectors), with negative variants.

#![allow(clippy::unwrap_used)]

use paymux_crypto::{Certificate, RsaPrivateKey};
use paymux_unionpay::protocol::{
    self, DecryptError, Fields, MerchantSigner, UNIONPAY_OWNER, UnionpayVerifier, VerifyError,
};
use serde_json::Value;
use time::OffsetDateTime;
use time::macros::datetime;

fn vectors_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/vectors")
}

fn read(name: &str) -> String {
    std::fs::read_to_string(vectors_dir().join(name)).unwrap()
}

fn vector(id: &str) -> Value {
    let all: Value = serde_json::from_str(&read("vectors.json")).unwrap();
    all["vectors"].as_array().unwrap().iter().find(|v| v["id"] == id).unwrap().clone()
}

fn fields_of(v: &Value) -> Fields {
    v.as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect()
}

fn u1_key() -> RsaPrivateKey {
    RsaPrivateKey::load(&read("unionpay/acp-test-sign-key-from-pfx.pem")).unwrap()
}

fn u1_signer() -> MerchantSigner {
    let cert =
        Certificate::from_pem(&read("unionpay/acp-test-sign-cert-certId-69903319369.pem")).unwrap();
    MerchantSigner::new(u1_key(), &cert).unwrap()
}

#[test]
fn u1_request_signature_and_cert_id_match_the_official_vector() {
    let v = vector("U1");
    let signer = u1_signer();
    assert_eq!(signer.cert_id(), v["expected"]["certId"]);
    let fields = fields_of(&v["inputs"]["fields"]);
    let string = protocol::string_to_sign(&fields);
    assert_eq!(string, v["expected"]["string_to_sign"]);
    assert_eq!(protocol::sha256_hex(&string), v["expected"]["sha256_hex"]);
    assert_eq!(protocol::rsa_signature(&fields, &u1_key()).unwrap(), v["expected"]["signature"]);
    // The signer sets certId and signMethod itself and produces the same bytes.
    let mut bare = fields.clone();
    bare.remove("certId");
    bare.remove("signMethod");
    bare.insert("reqReserved".into(), String::new());
    let signed = signer.sign(bare).unwrap();
    assert_eq!(signed["signature"], v["expected"]["signature"]);
    assert!(!signed.contains_key("reqReserved"), "empty fields are never sent");
}

#[test]
fn u1_signature_changes_with_one_byte_of_any_field() {
    let v = vector("U1");
    let mut fields = fields_of(&v["inputs"]["fields"]);
    fields.insert("txnAmt".into(), "2".into());
    assert_ne!(protocol::rsa_signature(&fields, &u1_key()).unwrap(), v["expected"]["signature"]);
    let mut fields = fields_of(&v["inputs"]["fields"]);
    fields.insert("encoding".into(), "UTF-8".into());
    assert_ne!(
        protocol::rsa_signature(&fields, &u1_key()).unwrap(),
        v["expected"]["signature"],
        "encoding is signed as sent"
    );
}

#[test]
fn u1_signing_certificate_expired_on_2026_11_26() {
    let cert =
        Certificate::from_pem(&read("unionpay/acp-test-sign-cert-certId-69903319369.pem")).unwrap();
    assert!(cert.is_valid_at(datetime!(2022-09-03 06:54:48 +8)));
    assert!(!cert.is_valid_at(datetime!(2026-11-29 00:00:00 UTC)));
}

fn u2() -> (Value, Fields, UnionpayVerifier, OffsetDateTime) {
    let v = vector("U2");
    let fields =
        fields_of(&serde_json::from_str(&read("unionpay/frontnotify-fields.json")).unwrap());
    let root = Certificate::from_pem(&read(v["inputs"]["root_certificate_file"].as_str().unwrap()));
    let mid =
        Certificate::from_pem(&read(v["inputs"]["middle_certificate_file"].as_str().unwrap()));
    let verifier = UnionpayVerifier::new(root.unwrap(), mid.unwrap(), UNIONPAY_OWNER);
    let clock = OffsetDateTime::parse(
        v["clock_utc"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    (v, fields, verifier, clock)
}

#[test]
fn u2_real_test_environment_message_verifies_through_its_certificate() {
    let (v, fields, verifier, clock) = u2();
    let string = protocol::string_to_verify(&fields);
    let expected = read(v["expected"]["string_to_verify_file"].as_str().unwrap());
    assert_eq!(string.as_bytes(), expected.as_bytes());
    assert_eq!(protocol::sha256_hex(&string), v["expected"]["sha256_hex"]);
    let exact = read(v["expected"]["signPubKeyCert_exact_file"].as_str().unwrap());
    assert_eq!(fields["signPubKeyCert"].as_bytes(), exact.as_bytes());
    assert!(exact.contains("\r\n") && !exact.ends_with('\n'));
    let cert = verifier.verify(&fields, clock).unwrap();
    assert_eq!(
        cert.common_name().unwrap().split('@').nth(2),
        v["expected"]["cn_third_part"].as_str()
    );
}

#[test]
fn u2_one_changed_byte_fails() {
    let (_, fields, verifier, clock) = u2();
    let mut f = fields.clone();
    f.insert("txnAmt".into(), "2".into());
    assert_eq!(verifier.verify(&f, clock).err(), Some(VerifyError::BadSignature));
    let mut f = fields.clone();
    let sig = f["signature"].replacen('J', "K", 1);
    f.insert("signature".into(), sig);
    assert_eq!(verifier.verify(&f, clock).err(), Some(VerifyError::BadSignature));
    let mut f = fields.clone();
    f.insert("reqReserved".into(), String::new());
    assert_eq!(
        verifier.verify(&f, clock).err(),
        Some(VerifyError::BadSignature),
        "an empty field is part of the verified string"
    );
}

#[test]
fn u2_certificate_with_lf_line_breaks_fails_the_signature() {
    let (_, mut fields, verifier, clock) = u2();
    let lf = fields["signPubKeyCert"].replace("\r\n", "\n");
    fields.insert("signPubKeyCert".into(), lf);
    assert_eq!(verifier.verify(&fields, clock).err(), Some(VerifyError::BadSignature));
}

#[test]
fn u2_is_refused_once_its_certificate_has_expired() {
    let (_, fields, verifier, _) = u2();
    let today = datetime!(2026-11-29 12:00:00 UTC);
    assert!(matches!(verifier.verify(&fields, today), Err(VerifyError::NotValidAt { .. })));
}

#[test]
fn u2_is_refused_under_another_chain_or_owner() {
    let (v, fields, _, clock) = u2();
    let root = Certificate::from_pem(&read(v["inputs"]["root_certificate_file"].as_str().unwrap()));
    let mid =
        Certificate::from_pem(&read(v["inputs"]["middle_certificate_file"].as_str().unwrap()));
    let (root, mid) = (root.unwrap(), mid.unwrap());
    // The intermediate in the root's place: the chain cannot reach the configured root.
    let wrong = UnionpayVerifier::new(mid.clone(), mid.clone(), UNIONPAY_OWNER);
    assert!(matches!(wrong.verify(&fields, clock), Err(VerifyError::Chain(_))));
    // The root in the intermediate's place: nothing issued the signing certificate.
    let wrong = UnionpayVerifier::new(root.clone(), root.clone(), UNIONPAY_OWNER);
    assert!(matches!(wrong.verify(&fields, clock), Err(VerifyError::Chain(_))));
    let legacy = UnionpayVerifier::new(root, mid, "00040000:SIGN");
    assert!(matches!(legacy.verify(&fields, clock), Err(VerifyError::Owner(_))));
}

#[test]
fn u2_verified_again_from_its_kept_certificate_still_checks_signature_and_time() {
    let (_, fields, verifier, clock) = u2();
    for _ in 0..2 {
        verifier.verify(&fields, clock).unwrap();
    }
    let mut f = fields.clone();
    f.insert("txnAmt".into(), "2".into());
    assert_eq!(verifier.verify(&f, clock).err(), Some(VerifyError::BadSignature));
    let today = datetime!(2026-11-29 12:00:00 UTC);
    assert!(matches!(verifier.verify(&fields, today), Err(VerifyError::NotValidAt { .. })));
    verifier.verify(&fields, clock).unwrap();
}

#[test]
fn u2_a_certificate_that_failed_its_chain_is_not_kept() {
    let (v, fields, _, clock) = u2();
    let mid =
        Certificate::from_pem(&read(v["inputs"]["middle_certificate_file"].as_str().unwrap()))
            .unwrap();
    let wrong = UnionpayVerifier::new(mid.clone(), mid, UNIONPAY_OWNER);
    for _ in 0..2 {
        assert!(matches!(wrong.verify(&fields, clock), Err(VerifyError::Chain(_))));
    }
}

#[test]
fn u2_without_signature_or_certificate_or_with_another_sign_method_fails() {
    let (_, fields, verifier, clock) = u2();
    for (name, missing) in [("signature", "signature"), ("signPubKeyCert", "signPubKeyCert")] {
        let mut f = fields.clone();
        f.remove(name);
        assert_eq!(verifier.verify(&f, clock).err(), Some(VerifyError::Missing(missing)));
    }
    let mut f = fields;
    f.insert("signMethod".into(), "11".into());
    assert_eq!(verifier.verify(&f, clock).err(), Some(VerifyError::SignMethod("11".into())));
}

#[test]
fn u4_encrypted_acc_no_decrypts_with_the_signing_key_to_a_masked_number() {
    let v = vector("U4");
    let acc_no = v["inputs"]["accNo"].as_str().unwrap();
    assert_eq!(u1_signer().decrypt_field(acc_no).unwrap(), v["expected"]["plaintext"]);
    let (_, fields, _, _) = u2();
    assert_eq!(fields["accNo"], acc_no, "U4 is the accNo of U2's message");
}

#[test]
fn u4_changed_ciphertext_or_another_key_fails() {
    let v = vector("U4");
    let acc_no = v["inputs"]["accNo"].as_str().unwrap();
    let changed = acc_no.replacen('O', "P", 1);
    assert_eq!(u1_signer().decrypt_field(&changed), Err(DecryptError::Rsa));
    let other = RsaPrivateKey::generate().unwrap();
    assert_eq!(protocol::decrypt_field(acc_no, &other), Err(DecryptError::Rsa));
    assert_eq!(u1_signer().decrypt_field("***"), Err(DecryptError::Base64));
}

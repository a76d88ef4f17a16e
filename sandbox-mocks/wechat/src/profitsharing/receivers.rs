//! Receivers: `receivers/add` and `receivers/delete`, and the RSAES-OAEP names they carry.

use aws_lc_rs::rsa::{
    OAEP_SHA1_MGF1SHA1, OaepPrivateDecryptingKey, OaepPublicEncryptingKey, PrivateDecryptingKey,
    PublicEncryptingKey,
};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use paymux_crypto::{RsaPrivateKey, b64_decode, b64_encode};
use serde_json::json;

use super::{Relation, St, lock, only_fields, signed, text};
use crate::api::{Verified, finish};
use crate::state::{ApiError, Shared};

/// How many receivers one merchant may add (`development.html`).
const MAX_RECEIVERS_PER_MERCHANT: usize = 20_000;

/// `relation_type` values (wpgo `AddReceiverRequest`).
const RELATION_TYPES: [&str; 11] = [
    "SERVICE_PROVIDER",
    "STORE",
    "STAFF",
    "STORE_OWNER",
    "PARTNER",
    "HEADQUARTER",
    "BRAND",
    "DISTRIBUTOR",
    "USER",
    "SUPPLIER",
    "CUSTOM",
];

/// Decrypts a receiver name sent RSAES-OAEP under the key `Wechatpay-Serial` names.
pub(super) fn decrypt_name(
    shared: &Shared,
    serial: Option<&str>,
    name: &str,
) -> Result<String, ApiError> {
    let serial = serial.ok_or_else(|| {
        ApiError::param("请求头Wechatpay-Serial缺失: 加密字段须注明所用的微信支付公钥或平台证书")
    })?;
    let key: RsaPrivateKey = {
        let keys = crate::state::read(&shared.keys);
        if serial == keys.public_key_id {
            keys.public_key_private.clone()
        } else {
            let wanted = crate::protocol::normalize_serial(serial);
            keys.platform
                .iter()
                .find(|p| crate::protocol::normalize_serial(p.serial()) == wanted)
                .map(|p| p.key.clone())
                .ok_or_else(|| ApiError::param("Wechatpay-Serial对应的证书或公钥不存在"))?
        }
    };
    let failed =
        || ApiError::param("敏感信息解密失败: name须用Wechatpay-Serial对应的公钥以RSAES-OAEP加密");
    let ciphertext = b64_decode(name).ok_or_else(failed)?;
    let der = key.to_pkcs8_der().map_err(|_| ApiError::system("密钥读取失败"))?;
    let private = PrivateDecryptingKey::from_pkcs8(&der)
        .ok()
        .and_then(|k| OaepPrivateDecryptingKey::new(k).ok())
        .ok_or_else(|| ApiError::system("密钥读取失败"))?;
    let mut out = vec![0u8; private.min_output_size()];
    let plain =
        private.decrypt(&OAEP_SHA1_MGF1SHA1, &ciphertext, &mut out, None).map_err(|_| failed())?;
    String::from_utf8(plain.to_vec()).map_err(|_| failed())
}

/// Encrypts `plain` RSAES-OAEP (SHA-1) for the merchant, as WeChat returns names.
fn encrypt_for(key: &paymux_crypto::RsaPublicKey, plain: &str) -> Result<String, ApiError> {
    let public = PublicEncryptingKey::from_der(key.spki_der())
        .ok()
        .and_then(|k| OaepPublicEncryptingKey::new(k).ok())
        .ok_or_else(|| ApiError::system("商户公钥读取失败"))?;
    let mut out = vec![0u8; public.ciphertext_size()];
    let sealed = public
        .encrypt(&OAEP_SHA1_MGF1SHA1, plain.as_bytes(), &mut out, None)
        .map_err(|_| ApiError::system("加密失败"))?;
    Ok(b64_encode(sealed))
}

pub(super) fn wechatpay_serial(headers: &HeaderMap) -> Option<&str> {
    headers.get("wechatpay-serial").and_then(|v| v.to_str().ok()).filter(|s| !s.is_empty())
}

pub(super) fn check_kind(kind: &str) -> Result<(), ApiError> {
    if matches!(kind, "MERCHANT_ID" | "PERSONAL_OPENID") {
        Ok(())
    } else {
        Err(ApiError::param("type须为MERCHANT_ID或PERSONAL_OPENID"))
    }
}

pub(super) fn check_appid(v: &Verified, appid: &str) -> Result<(), ApiError> {
    if appid == v.merchant.merchant.appid {
        Ok(())
    } else {
        Err(ApiError::new(StatusCode::BAD_REQUEST, "APPID_MCHID_NOT_MATCH", "appid和mch_id不匹配"))
    }
}

/// `POST /v3/profitsharing/receivers/add`.
pub(crate) async fn add_receiver(
    State(shared): St,
    headers: HeaderMap,
    v: Verified,
) -> Result<Response, ApiError> {
    let body = v.json()?;
    only_fields(
        &body,
        &["appid", "type", "account", "name", "relation_type", "custom_relation"],
        "/body",
    )?;
    let appid = text(&body, "appid", "/body", 32)?;
    check_appid(&v, appid)?;
    let kind = text(&body, "type", "/body", 32)?;
    check_kind(kind)?;
    let account = text(&body, "account", "/body", 64)?;
    if kind == "MERCHANT_ID" && !account.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::param("MERCHANT_ID类型的account须为商户号"));
    }
    let relation_type = text(&body, "relation_type", "/body", 32)?;
    if !RELATION_TYPES.contains(&relation_type) {
        return Err(ApiError::param("relation_type取值错误"));
    }
    let custom_relation = match (relation_type, body.get("custom_relation")) {
        ("CUSTOM", _) => Some(text(&body, "custom_relation", "/body", 10)?.to_owned()),
        (_, None) => None,
        (_, Some(_)) => {
            return Err(ApiError::param("custom_relation仅在relation_type为CUSTOM时填写"));
        }
    };
    let name = match body.get("name") {
        None if kind == "MERCHANT_ID" => {
            return Err(ApiError::param("MERCHANT_ID类型的接收方须填写name(商户全称)"));
        }
        None => None,
        Some(_) => {
            let sealed = text(&body, "name", "/body", 1024)?;
            Some(decrypt_name(&shared, wechatpay_serial(&headers), sealed)?)
        }
    };
    let mchid = v.mchid().to_owned();
    {
        let mut book = lock(&shared.profit);
        let list = book.receivers.entry(mchid.clone()).or_default();
        let key = (kind.to_owned(), account.to_owned());
        if !list.contains_key(&key) && list.len() >= MAX_RECEIVERS_PER_MERCHANT {
            return Err(ApiError::invalid("分账接收方数量已达上限"));
        }
        list.insert(
            key,
            Relation {
                appid: appid.to_owned(),
                kind: kind.to_owned(),
                account: account.to_owned(),
                name: name.clone(),
                relation_type: relation_type.to_owned(),
                custom_relation: custom_relation.clone(),
            },
        );
    }
    tracing::info!(%mchid, kind, account, "profit-sharing receiver added");
    let mut answer = json!({"type": kind, "account": account, "relation_type": relation_type});
    if let Some(name) = name {
        answer["name"] = json!(encrypt_for(&v.merchant.merchant.merchant_public_key, &name)?);
    }
    if let Some(custom) = custom_relation {
        answer["custom_relation"] = json!(custom);
    }
    let response = signed(&shared, &v, &answer)?;
    Ok(finish(&shared, "profitsharing", response).await)
}

/// `POST /v3/profitsharing/receivers/delete`.
pub(crate) async fn delete_receiver(State(shared): St, v: Verified) -> Result<Response, ApiError> {
    let body = v.json()?;
    only_fields(&body, &["appid", "type", "account"], "/body")?;
    check_appid(&v, text(&body, "appid", "/body", 32)?)?;
    let kind = text(&body, "type", "/body", 32)?;
    check_kind(kind)?;
    let account = text(&body, "account", "/body", 64)?;
    let removed = lock(&shared.profit)
        .receivers
        .get_mut(v.mchid())
        .and_then(|l| l.remove(&(kind.to_owned(), account.to_owned())))
        .is_some();
    tracing::info!(mchid = %v.mchid(), kind, account, removed, "profit-sharing receiver deleted");
    let response = signed(&shared, &v, &json!({"type": kind, "account": account}))?;
    Ok(finish(&shared, "profitsharing", response).await)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn oaep_names_round_trip_through_the_mocks_keys() {
        let key = RsaPrivateKey::generate().unwrap();
        let sealed = encrypt_for(&key.public_key(), "示例商户全称").unwrap();
        let der = key.to_pkcs8_der().unwrap();
        let private =
            OaepPrivateDecryptingKey::new(PrivateDecryptingKey::from_pkcs8(&der).unwrap()).unwrap();
        let mut out = vec![0u8; private.min_output_size()];
        let plain = private
            .decrypt(&OAEP_SHA1_MGF1SHA1, &b64_decode(&sealed).unwrap(), &mut out, None)
            .unwrap();
        assert_eq!(std::str::from_utf8(plain).unwrap(), "示例商户全称");
    }

    #[test]
    fn names_decrypt_under_the_key_wechatpay_serial_names_and_no_other() {
        let keys = crate::PlatformKeys::generate().unwrap();
        let mock = crate::WechatMock::new(crate::WechatMockConfig::new("http://127.0.0.1:1"), keys);
        let (platform_serial, platform_key, public_key_id, public_key) = {
            let keys = crate::state::read(&mock.shared.keys);
            (
                keys.platform_serial(),
                keys.current().cert.public_key().unwrap().clone(),
                keys.public_key_id(),
                keys.public_key(),
            )
        };
        let for_platform = encrypt_for(&platform_key, "商户甲").unwrap();
        let for_public_key = encrypt_for(&public_key, "商户乙").unwrap();
        let lower = platform_serial.to_ascii_lowercase();
        assert_eq!(decrypt_name(&mock.shared, Some(&lower), &for_platform).unwrap(), "商户甲");
        assert_eq!(
            decrypt_name(&mock.shared, Some(&public_key_id), &for_public_key).unwrap(),
            "商户乙"
        );
        assert!(decrypt_name(&mock.shared, Some(&public_key_id), &for_platform).is_err());
        assert!(decrypt_name(&mock.shared, None, &for_platform).is_err());
        assert!(decrypt_name(&mock.shared, Some("0ABC"), &for_platform).is_err());
    }
}

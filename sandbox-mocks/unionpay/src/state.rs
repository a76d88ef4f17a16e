//! The mock's memory (merchants, transactions, faults) and the signing of what it sends.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use paymux_mock_kit::faults::FaultSwitch;
use paymux_mock_kit::notify::Scheduler;
use paymux_mock_kit::sync::{lock, read};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::notify::BackNotification;
use crate::protocol::{
    Fields, SIGN_METHOD_SECURE_KEY, encrypt_for_merchant, mask_card, sign_rsa, sign_secure_key,
    verification_string,
};
use crate::{UnionpayKeys, UnionpayMerchant};

pub(crate) struct Shared {
    pub(crate) public_url: String,
    pub(crate) keys: UnionpayKeys,
    pub(crate) merchants: RwLock<HashMap<String, Arc<UnionpayMerchant>>>,
    pub(crate) book: Mutex<Book>,
    pub(crate) barcode: Mutex<crate::barcode::Book>,
    pub(crate) faults: FaultSwitch<Faults>,
    pub(crate) notifier: Scheduler<BackNotification>,
    pub(crate) http: reqwest::Client,
    /// The preauth family's uncertain values and fault.
    pub(crate) preauth: Mutex<crate::preauth::PreauthSettings>,
}

/// Faults injected through `POST /_sandbox/faults`; a POST replaces them all.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Added before every `/gateway/api/` answer.
    pub latency_ms: u64,
    /// Share (0..=1) of verified gateway requests answered HTTP 500 without doing anything.
    pub error_rate: f64,
    /// Operations (`front`, `app`, `qr`, `refund`, `cancel`, `query`, `barcode`, `reversal`,
    /// `preauth` (completion 03 and the undos 32 and 33)) that do their work and then never answer.
    pub timeout_after_commit: Vec<String>,
    /// Operations (`app`, `qr`, `refund`, `cancel`, `preauth`) that do their work and answer
    /// `respCode=05`
    /// (accepted, query for the result).
    pub in_process_after_commit: Vec<String>,
    /// How many of the next queries answer `respCode=05` before the real state is told.
    pub in_process_queries: u32,
    /// Back notifications are lost on the way (each send counts as unacknowledged).
    pub drop_notifications: bool,
    /// Each back notification is delivered twice.
    pub duplicate_notifications: bool,
    /// Back notifications are delivered out of order: a new one is held back until the next one
    /// has been sent (or 1 s passed).
    pub reorder_notifications: bool,
    /// Answers and notifications carry a well-formed signature over other bytes.
    pub bad_signature: bool,
}

pub(crate) const OPERATIONS: [&str; 9] =
    ["front", "app", "qr", "refund", "cancel", "query", "barcode", "reversal", "preauth"];

/// (merId, orderId, txnTime): how UnionPay tells orders apart.
pub(crate) type TxnKey = (String, String, String);

#[derive(Debug, Default)]
pub(crate) struct Book {
    pub(crate) txns: BTreeMap<TxnKey, Txn>,
    /// The next queries answered 05 under the fault, counted down here.
    pub(crate) in_process_served: u32,
}

impl Book {
    pub(crate) fn by_query_id(&self, mer_id: &str, query_id: &str) -> Option<&TxnKey> {
        self.txns.iter().find(|(k, t)| k.0 == mer_id && t.query_id == query_id).map(|(k, _)| k)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Kind {
    /// Consume from the browser (frontTransReq.do).
    Front,
    /// Consume through the app SDK (`tn`).
    App,
    /// Consume by QR code.
    Qr,
    /// Consume by the payer's code (`barcode.rs`).
    Barcode,
    Refund,
    Cancel,
    /// A card preauthorisation (02/01), from the browser or the app: holds the amount.
    Preauth,
    /// Preauth completion (03/00): captures up to 115 % of the preauth.
    Completion,
    /// Preauth undo (32/00): releases the whole hold.
    PreauthUndo,
    /// Completion undo (33/00): same day, full amount; the preauth is open again.
    CompletionUndo,
}

impl Kind {
    pub(crate) fn is_consume(self) -> bool {
        matches!(self, Self::Front | Self::App | Self::Qr | Self::Barcode)
    }

    /// What the payer pays at the bank page: a consume or a preauth.
    pub(crate) fn is_payer_order(self) -> bool {
        self.is_consume() || self == Self::Preauth
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Status {
    /// A consume waiting for the payer.
    Waiting,
    Succeeded,
    /// The payment was refused (the control API's `fail`, the Cancel button).
    Failed,
    /// The order lapsed unpaid: UnionPay then answers queries as if it never existed (34).
    Closed,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Txn {
    pub(crate) kind: Kind,
    pub(crate) mer_id: String,
    pub(crate) order_id: String,
    pub(crate) txn_time: String,
    pub(crate) txn_type: String,
    pub(crate) txn_sub_type: String,
    pub(crate) biz_type: String,
    pub(crate) channel_type: String,
    pub(crate) encoding: String,
    pub(crate) sign_method: String,
    pub(crate) amount: i64,
    pub(crate) currency: String,
    pub(crate) query_id: String,
    pub(crate) status: Status,
    /// Whether the payer has opened the page (or scanned the code): before that a query
    /// answers 34.
    pub(crate) opened: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) front_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) back_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) req_reserved: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) order_desc: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) tn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) qr_code: Option<String>,
    /// Refunds and cancels: the consume's `queryId`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) orig_qry_id: Option<String>,
    /// The card the payer entered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) card: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) trace_no: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) trace_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) settle_date: Option<String>,
    /// Consumes: what refunds and a cancel have taken back.
    pub(crate) refunded: i64,
    pub(crate) cancelled: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub(crate) created_at: OffsetDateTime,
    pub(crate) deliveries: Vec<Delivery>,
}

impl Txn {
    pub(crate) fn key(&self) -> TxnKey {
        (self.mer_id.clone(), self.order_id.clone(), self.txn_time.clone())
    }
}

/// One send of a back notification.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Delivery {
    pub(crate) attempt: usize,
    pub(crate) at: String,
    /// The receiver's HTTP status, if it answered.
    pub(crate) status: Option<u16>,
    /// `acknowledged`, `refused`, `error` or `dropped`.
    pub(crate) outcome: &'static str,
}

impl Shared {
    pub(crate) fn book(&self) -> MutexGuard<'_, Book> {
        lock(&self.book)
    }

    pub(crate) fn faults(&self) -> Faults {
        self.faults.get()
    }

    pub(crate) fn merchant(&self, mer_id: &str) -> Option<Arc<UnionpayMerchant>> {
        read(&self.merchants).get(mer_id).cloned()
    }

    /// The card as the test environment sends it: masked, then encrypted under the merchant's
    /// certificate. Empty (and so left out) if that fails.
    pub(crate) fn encrypted_card(&self, mer_id: &str, card: &str) -> String {
        let Some(merchant) = self.merchant(mer_id) else { return String::new() };
        let encrypted =
            merchant.certificate.public_key().map_err(|e| e.to_string()).and_then(|key| {
                encrypt_for_merchant(key.spki_der(), &mask_card(card)).map_err(|e| e.to_string())
            });
        encrypted.unwrap_or_else(|error| {
            tracing::error!(%error, mer_id, "accNo could not be encrypted");
            String::new()
        })
    }

    pub(crate) fn cashier_url(&self, txn: &Txn) -> String {
        format!(
            "{}/_sandbox/cashier/{}?merId={}&txnTime={}",
            self.public_url, txn.order_id, txn.mer_id, txn.txn_time
        )
    }

    /// Adds `signature` (and, for signMethod 01, `signPubKeyCert`) to `fields`: with the
    /// merchant's secure key when `fields` says signMethod 11 and the merchant has one, else
    /// with the mock's signing key. With the bad-signature fault the signature is well-formed
    /// but made over other bytes.
    pub(crate) fn sign(&self, mut fields: Fields, merchant: Option<&UnionpayMerchant>) -> Fields {
        fields.retain(|_, v| !v.is_empty());
        let secure_key = merchant.and_then(|m| m.secure_key.as_deref()).filter(|_| {
            fields.get("signMethod").map(String::as_str) == Some(SIGN_METHOD_SECURE_KEY)
        });
        if secure_key.is_none() {
            fields.insert("signMethod".into(), crate::protocol::SIGN_METHOD_RSA.into());
            fields.insert("signPubKeyCert".into(), self.keys.sign_pub_key_cert().to_owned());
        }
        let mut string = verification_string(&fields);
        if self.faults().bad_signature {
            string.push_str("#tampered");
        }
        let signature = match secure_key {
            Some(key) => sign_secure_key(&string, key),
            None => match sign_rsa(self.keys.signing_key(), &string) {
                Ok(signature) => signature,
                Err(error) => {
                    tracing::error!(%error, "the mock could not sign");
                    String::new()
                }
            },
        };
        fields.insert("signature".into(), signature);
        fields
    }
}

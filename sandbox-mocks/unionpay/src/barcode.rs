//! Barcode payments as UnionPay answers them (二维码消费, 被扫; `channels/barcode.md`): the
//! consume `01/06` with the payer's `qrNo` on backTransReq.do, answered `respCode=00` (accepted
//! only), and 冲正 (`99/01`, naming the original `orderId` and `txnTime`). The consume lives with
//! the others (the query, the control API's `pay` and the back notification of a success see
//! it); this module keeps what is barcode's own: the variant its code chose, and how many queries
//! and reversals it has seen.
//!
//! A `qrNo` of 1 to 20 digits is paid at once (the query answers `origRespCode=00` and the back
//! notification goes out), except these documented variants:
//!
//! | qrNo starts with | outcome |
//! |---|---|
//! | `00001` | the payer confirms: queries answer `origRespCode=05` until paid through the control API (`POST /_sandbox/orders/{orderId}/pay`) or reversed |
//! | `00002` | in process, then paid at the second query |
//! | `00003` | in process, then failed at the first query (`origRespCode=01`) |
//!
//! Another `qrNo` is refused (`respCode=10`). To lose a reversal's answer, set the fault
//! `timeout_after_commit: ["reversal"]`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use paymux_mock_kit::sync::lock;
use serde::Serialize;
use serde_json::json;
use time::OffsetDateTime;

use crate::gateway::{Refusal, Verified, answer_fields, check_kind, new_consume, refuse, store};
use crate::notify::send_back;
use crate::protocol::{Fields, beijing_compact};
use crate::state::{Kind, Shared, Status, Txn, TxnKey};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Variant {
    PaidAtOnce,
    WaitsForPayer,
    PaidAtSecondQuery,
    FailsAtFirstQuery,
}

impl Variant {
    fn of(qr_no: &str) -> Option<Self> {
        if !(1..=20).contains(&qr_no.len()) || !qr_no.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(match qr_no.get(..5) {
            Some("00001") => Self::WaitsForPayer,
            Some("00002") => Self::PaidAtSecondQuery,
            Some("00003") => Self::FailsAtFirstQuery,
            _ => Self::PaidAtOnce,
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct CodeTxn {
    variant: Variant,
    queries: u32,
    reversals: u32,
}

/// Every barcode consume, by (merId, orderId, txnTime).
#[derive(Debug, Default)]
pub(crate) struct Book {
    txns: HashMap<TxnKey, CodeTxn>,
}

/// The payer confirmed: the consume succeeds (its back notification goes out after).
fn mark_paid(txn: &mut Txn) {
    let now = beijing_compact(OffsetDateTime::now_utc());
    txn.status = Status::Succeeded;
    txn.trace_no = Some(paymux_mock_kit::random_digits(6));
    txn.trace_time = Some(now[4..].to_owned());
    txn.settle_date = Some(now[4..8].to_owned());
}

/// Consume `01/06`: the answer's fields, or a refusal.
pub(crate) fn consume(shared: &Arc<Shared>, v: &Verified) -> Result<Fields, Refusal> {
    check_kind(v, "01", "06")?;
    let variant =
        Variant::of(v.require("qrNo")?).ok_or_else(|| refuse("10", "报文格式错误[qrNo]"))?;
    let mut txn = new_consume(v, Kind::Barcode, OffsetDateTime::now_utc(), 40)?;
    // The payer's code was scanned: the transaction exists for queries at once.
    txn.opened = true;
    if variant == Variant::PaidAtOnce {
        mark_paid(&mut txn);
    }
    let txn = store(shared, txn)?;
    lock(&shared.barcode).txns.insert(txn.key(), CodeTxn { variant, queries: 0, reversals: 0 });
    if txn.status == Status::Succeeded {
        send_back(shared, &txn);
    }
    Ok(answer_fields(&v.fields))
}

/// Before a query by `orderId` + `txnTime`: counts it, and settles a `00002` or `00003` consume.
pub(crate) fn before_query(shared: &Arc<Shared>, v: &Verified) {
    let key: TxnKey =
        (v.merchant.mer_id.clone(), v.get("orderId").to_owned(), v.get("txnTime").to_owned());
    let variant = {
        let mut book = lock(&shared.barcode);
        let Some(c) = book.txns.get_mut(&key) else { return };
        c.queries += 1;
        match (c.variant, c.queries) {
            (Variant::PaidAtSecondQuery, 2) | (Variant::FailsAtFirstQuery, 1) => c.variant,
            _ => return,
        }
    };
    let paid = {
        let mut book = shared.book();
        let Some(txn) = book.txns.get_mut(&key).filter(|t| t.status == Status::Waiting) else {
            return;
        };
        if variant == Variant::FailsAtFirstQuery {
            txn.status = Status::Failed;
            return;
        }
        mark_paid(txn);
        txn.clone()
    };
    send_back(shared, &paid);
}

/// 冲正 `99/01` on the original `orderId` + `txnTime`: a waiting consume closes (queries then
/// answer 34), a paid one is given back in full. Repeating it answers the same.
pub(crate) fn reversal(shared: &Arc<Shared>, v: &Verified) -> Result<Fields, Refusal> {
    check_kind(v, "99", "01")?;
    let key: TxnKey = (
        v.merchant.mer_id.clone(),
        v.require("orderId")?.to_owned(),
        v.require("txnTime")?.to_owned(),
    );
    {
        let mut book = shared.book();
        let txn = book
            .txns
            .get_mut(&key)
            .filter(|t| t.kind == Kind::Barcode)
            .ok_or_else(|| refuse("35", "原交易不存在或状态不正确"))?;
        match txn.status {
            Status::Waiting => txn.status = Status::Closed,
            Status::Succeeded => {
                txn.refunded = txn.amount;
                txn.cancelled = true;
            }
            Status::Failed | Status::Closed => {}
        }
    }
    if let Some(c) = lock(&shared.barcode).txns.get_mut(&key) {
        c.reversals += 1;
    }
    tracing::info!(mer_id = %key.0, order_id = %key.1, "barcode consume reversed");
    Ok(answer_fields(&v.fields))
}

/// `GET /_sandbox/barcode/{orderId}`: the consume's barcode record and state.
pub(crate) async fn show(
    State(shared): State<Arc<Shared>>,
    Path(order_id): Path<String>,
) -> Response {
    let found = lock(&shared.barcode)
        .txns
        .iter()
        .find(|(k, _)| k.1 == order_id)
        .map(|(k, c)| (k.clone(), c.clone()));
    let Some((key, code)) = found else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no barcode consume `{order_id}`")})),
        )
            .into_response();
    };
    let Some((status, cancelled)) = shared.book().txns.get(&key).map(|t| (t.status, t.cancelled))
    else {
        return (StatusCode::NOT_FOUND, Json(json!({"error": "consume gone"}))).into_response();
    };
    Json(json!({
        "order_id": order_id,
        "txn_time": key.2,
        "status": status,
        "paid": status == Status::Succeeded,
        "closed": status == Status::Closed || cancelled,
        "variant": code.variant,
        "queries": code.queries,
        "cancels": code.reversals,
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_pick_their_variant_and_other_formats_are_refused() {
        assert_eq!(Variant::of("6225880000000000001"), Some(Variant::PaidAtOnce));
        assert_eq!(Variant::of("0000112345678901234"), Some(Variant::WaitsForPayer));
        assert_eq!(Variant::of("0000212345678901234"), Some(Variant::PaidAtSecondQuery));
        assert_eq!(Variant::of("0000312345678901234"), Some(Variant::FailsAtFirstQuery));
        assert_eq!(Variant::of(""), None);
        assert_eq!(Variant::of("123456789012345678901"), None);
        assert_eq!(Variant::of("62258800000000x0001"), None);
    }
}

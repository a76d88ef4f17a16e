//! Card pre-authorisation, the hold a directly connected ACP merchant has: the preauth (02/01)
//! is made like a consume (browser form or app `tn`) and holds the amount; its completion
//! (03/00) captures up to 115 % of it within the validity period; a preauth undo (32/00)
//! releases the whole hold; a completion undo (33/00), same day and full amount, reopens the
//! preauth. Each step has its own `orderId`, names its original by `origQryId`, is answered
//! synchronously (respCode 00: accepted) and reports its result by back notification and query.
//!
//! `/_sandbox/preauth` shows each merchant's held and captured amounts; its settings set the
//! uncertain values and the "completion stays in process" fault ([`PreauthSettings`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use paymux_mock_kit::sync::lock;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::gateway::{Refusal, Verified, answer_fields, new_query_id, refuse};
use crate::notify;
use crate::protocol::{Fields, beijing_compact, parse_amount, parse_beijing, valid_order_id};
use crate::state::{Kind, Shared, Status, Txn, TxnKey};

/// The values the public material leaves uncertain, and the fault, as `POST
/// /_sandbox/preauth/settings` sets them (a POST replaces them all).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PreauthSettings {
    /// How long a preauth can be completed or undone (typically 30 days; bank-dependent).
    pub valid_seconds: u64,
    /// The most a completion may capture, in percent of the preauth (115).
    pub max_completion_percent: u32,
    /// A preauth undo (32) only on the preauth's own day (the 2015 demos), instead of within
    /// the validity period (later demos).
    pub undo_same_day: bool,
    /// Fault: a completion stays in process (queries: origRespCode 05) this long before it
    /// succeeds and is notified.
    pub completion_delay_ms: u64,
}

impl Default for PreauthSettings {
    fn default() -> Self {
        Self {
            valid_seconds: 30 * 24 * 3600,
            max_completion_percent: 115,
            undo_same_day: false,
            completion_delay_ms: 0,
        }
    }
}

/// The active completion of the preauth `query_id` (in process or done, not undone).
fn active_completion<'a>(
    txns: &'a BTreeMap<TxnKey, Txn>,
    mer_id: &str,
    query_id: &str,
) -> Option<&'a Txn> {
    txns.values().find(|t| {
        t.kind == Kind::Completion
            && t.mer_id == mer_id
            && t.orig_qry_id.as_deref() == Some(query_id)
            && t.status != Status::Failed
            && !t.cancelled
    })
}

fn same_day(a: OffsetDateTime, txn_time: &str) -> bool {
    beijing_compact(a)[..8] == txn_time[..8.min(txn_time.len())]
}

/// `backTransReq.do` with txnType 03, 32 or 33.
pub(crate) fn back(shared: &Arc<Shared>, v: &Verified) -> Result<Fields, Refusal> {
    let txn_type = v.get("txnType").to_owned();
    if v.get("txnSubType") != "00" {
        return Err(refuse(
            "10",
            format!("报文格式错误[txnType={txn_type} txnSubType={}]", v.get("txnSubType")),
        ));
    }
    let now = OffsetDateTime::now_utc();
    let orig_qry_id = v.require("origQryId")?.to_owned();
    let order_id = v.require("orderId")?;
    if !valid_order_id(order_id, 32) {
        return Err(refuse("10", "报文格式错误[orderId]"));
    }
    let txn_time = v.require("txnTime")?;
    if parse_beijing(txn_time).is_none() {
        return Err(refuse("10", "报文格式错误[txnTime]"));
    }
    let amount =
        parse_amount(v.require("txnAmt")?).ok_or_else(|| refuse("10", "报文格式错误[txnAmt]"))?;
    let back_url = v.require("backUrl")?.to_owned();
    let mer_id = v.merchant.mer_id.clone();
    let key: TxnKey = (mer_id.clone(), order_id.to_owned(), txn_time.to_owned());
    let settings = lock(&shared.preauth).clone();
    let gone = || refuse("35", "原交易不存在或状态不正确");

    let mut book = shared.book();
    if book.txns.contains_key(&key) {
        return Err(refuse("12", "重复交易"));
    }
    let orig_key = book.by_query_id(&mer_id, &orig_qry_id).cloned().ok_or_else(gone)?;
    let orig = book.txns.get(&orig_key).cloned().ok_or_else(gone)?;
    if orig.status != Status::Succeeded || orig.cancelled {
        return Err(gone());
    }
    if v.get("bizType") != orig.biz_type {
        return Err(refuse("36", "与原交易信息不符[bizType]"));
    }
    let within_validity = now - orig.created_at <= Duration::from_secs(settings.valid_seconds);
    let kind = match txn_type.as_str() {
        "03" => {
            if orig.kind != Kind::Preauth
                || active_completion(&book.txns, &mer_id, &orig_qry_id).is_some()
            {
                return Err(gone());
            }
            if !within_validity {
                return Err(refuse("35", "原预授权已过期"));
            }
            let cap = i128::from(orig.amount) * i128::from(settings.max_completion_percent);
            if i128::from(amount) * 100 > cap {
                return Err(refuse(
                    "36",
                    format!("完成金额超过预授权金额的{}%", settings.max_completion_percent),
                ));
            }
            Kind::Completion
        }
        "32" => {
            if orig.kind != Kind::Preauth
                || active_completion(&book.txns, &mer_id, &orig_qry_id).is_some()
            {
                return Err(gone());
            }
            let in_window = if settings.undo_same_day {
                same_day(now, &orig.txn_time)
            } else {
                within_validity
            };
            if !in_window {
                return Err(refuse("35", "原交易不在可撤销时间范围内"));
            }
            if amount != orig.amount {
                return Err(refuse("36", "撤销金额须等于原预授权金额"));
            }
            Kind::PreauthUndo
        }
        _ => {
            if orig.kind != Kind::Completion || orig.refunded > 0 {
                return Err(gone());
            }
            if !same_day(now, &orig.txn_time) {
                return Err(refuse("35", "原交易不在可撤销时间范围内"));
            }
            if amount != orig.amount {
                return Err(refuse("36", "撤销金额须等于原预授权完成金额"));
            }
            Kind::CompletionUndo
        }
    };
    let delayed = kind == Kind::Completion && settings.completion_delay_ms > 0;
    if matches!(kind, Kind::PreauthUndo | Kind::CompletionUndo)
        && let Some(o) = book.txns.get_mut(&orig_key)
    {
        o.cancelled = true;
    }
    let stamp = beijing_compact(now);
    let txn = Txn {
        kind,
        mer_id: mer_id.clone(),
        order_id: order_id.to_owned(),
        txn_time: txn_time.to_owned(),
        txn_type: txn_type.clone(),
        txn_sub_type: "00".into(),
        biz_type: orig.biz_type.clone(),
        channel_type: v.get("channelType").to_owned(),
        encoding: v.get("encoding").to_owned(),
        sign_method: v.get("signMethod").to_owned(),
        amount,
        currency: orig.currency.clone(),
        query_id: new_query_id(now),
        status: if delayed { Status::Waiting } else { Status::Succeeded },
        opened: true,
        front_url: None,
        back_url: Some(back_url),
        req_reserved: Some(v.get("reqReserved").to_owned()).filter(|s| !s.is_empty()),
        order_desc: None,
        tn: None,
        qr_code: None,
        orig_qry_id: Some(orig_qry_id),
        card: orig.card.clone(),
        trace_no: Some(paymux_mock_kit::random_digits(6)),
        trace_time: Some(stamp[4..].to_owned()),
        settle_date: Some(stamp[4..8].to_owned()),
        refunded: 0,
        cancelled: false,
        created_at: now,
        deliveries: Vec::new(),
    };
    book.txns.insert(key.clone(), txn.clone());
    drop(book);
    tracing::info!(%mer_id, order_id, ?kind, amount, delayed, "preauth step accepted");
    if delayed {
        let shared = shared.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(settings.completion_delay_ms)).await;
            let done = {
                let mut book = shared.book();
                book.txns.get_mut(&key).filter(|t| t.status == Status::Waiting).map(|t| {
                    t.status = Status::Succeeded;
                    t.clone()
                })
            };
            if let Some(txn) = done {
                tracing::info!(order_id = %txn.order_id, "completion succeeded");
                notify::send_back(&shared, &txn);
            }
        });
    } else {
        notify::send_back(shared, &txn);
    }
    let mut fields = answer_fields(&v.fields);
    fields.insert("queryId".into(), txn.query_id);
    Ok(fields)
}

/// A preauth's state as the control API shows it.
fn preauth_view(txns: &BTreeMap<TxnKey, Txn>, p: &Txn, settings: &PreauthSettings) -> Value {
    let completion = active_completion(txns, &p.mer_id, &p.query_id);
    let expired =
        OffsetDateTime::now_utc() - p.created_at > Duration::from_secs(settings.valid_seconds);
    let (state, held, captured) = match (p.status, p.cancelled, completion) {
        (Status::Succeeded, true, _) => ("undone", 0, 0),
        (Status::Succeeded, false, Some(c)) if c.status == Status::Waiting => {
            ("completing", p.amount, 0)
        }
        (Status::Succeeded, false, Some(c)) => ("completed", 0, c.amount - c.refunded),
        (Status::Succeeded, false, None) if expired => ("expired", 0, 0),
        (Status::Succeeded, false, None) => ("held", p.amount, 0),
        (Status::Waiting, ..) => ("waiting", 0, 0),
        _ => ("failed", 0, 0),
    };
    json!({
        "merId": p.mer_id, "orderId": p.order_id, "txnTime": p.txn_time, "queryId": p.query_id,
        "txnAmt": p.amount, "state": state, "held": held, "captured": captured,
        "completion": completion.map(|c| json!({"orderId": c.order_id, "queryId": c.query_id,
            "txnAmt": c.amount, "status": c.status, "refunded": c.refunded})),
    })
}

/// `GET /_sandbox/preauth`: every preauth with its state, and each merchant's held and captured
/// totals.
pub(crate) async fn show(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let settings = lock(&shared.preauth).clone();
    let book = shared.book();
    let preauths: Vec<Value> = book
        .txns
        .values()
        .filter(|t| t.kind == Kind::Preauth)
        .map(|p| preauth_view(&book.txns, p, &settings))
        .collect();
    let mut merchants: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for p in &preauths {
        let entry =
            merchants.entry(p["merId"].as_str().unwrap_or_default().to_owned()).or_default();
        entry.0 += p["held"].as_i64().unwrap_or(0);
        entry.1 += p["captured"].as_i64().unwrap_or(0);
    }
    let merchants: BTreeMap<String, Value> = merchants
        .into_iter()
        .map(|(m, (held, captured))| (m, json!({"held": held, "captured": captured})))
        .collect();
    Json(json!({"settings": settings, "preauths": preauths, "merchants": merchants}))
}

/// `GET /_sandbox/receivers/{merId}`: what the merchant's preauths hold and its completions
/// captured (UnionPay splits nothing: the merchant is the only receiver).
pub(crate) async fn show_receiver(
    State(shared): State<Arc<Shared>>,
    Path(mer_id): Path<String>,
) -> Json<Value> {
    let settings = lock(&shared.preauth).clone();
    let book = shared.book();
    let (mut held, mut captured) = (0, 0);
    let preauths: Vec<Value> = book
        .txns
        .values()
        .filter(|t| t.kind == Kind::Preauth && t.mer_id == mer_id)
        .map(|p| preauth_view(&book.txns, p, &settings))
        .inspect(|v| {
            held += v["held"].as_i64().unwrap_or(0);
            captured += v["captured"].as_i64().unwrap_or(0);
        })
        .collect();
    Json(json!({
        "account": mer_id, "held": held, "captured": captured,
        "balance_fen": captured, "preauths": preauths,
    }))
}

pub(crate) async fn show_settings(State(shared): State<Arc<Shared>>) -> Json<PreauthSettings> {
    Json(lock(&shared.preauth).clone())
}

pub(crate) async fn set_settings(
    State(shared): State<Arc<Shared>>,
    body: Result<Json<PreauthSettings>, JsonRejection>,
) -> Result<Json<PreauthSettings>, (StatusCode, Json<Value>)> {
    let Json(settings) =
        body.map_err(|e| (StatusCode::BAD_REQUEST, Json(json!({"error": e.body_text()}))))?;
    tracing::info!(?settings, "preauth settings set");
    *lock(&shared.preauth) = settings.clone();
    Ok(Json(settings))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_day_compares_beijing_dates() {
        let t = OffsetDateTime::from_unix_timestamp(1_795_910_400)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let today = beijing_compact(t);
        assert!(same_day(t, &today));
        assert!(!same_day(t, "20000101000000"));
    }
}

//! `/_sandbox/profitsharing` and `/_sandbox/receivers/{account}`: what profit sharing holds,
//! and its settings.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::{ProfitSharingSettings, St, lock};

/// `GET /_sandbox/profitsharing`: settings, holds, split orders, receivers and balances.
pub(crate) async fn show(State(shared): St) -> Json<Value> {
    let book = lock(&shared.profit);
    let balances: Vec<Value> = book
        .balances
        .iter()
        .map(|((kind, account), amount)| json!({"type": kind, "account": account, "balance": amount}))
        .collect();
    let holds: Vec<Value> = book
        .holds
        .values()
        .map(|h| {
            let mut v = json!(h);
            v["unsplit"] = json!(h.unsplit());
            v
        })
        .collect();
    Json(json!({
        "settings": book.settings,
        "holds": holds,
        "splits": book.splits.values().collect::<Vec<_>>(),
        "receivers": book.receivers.iter()
            .map(|(m, l)| (m.clone(), l.values().cloned().collect::<Vec<_>>()))
            .collect::<BTreeMap<_, _>>(),
        "balances": balances,
        "available": book.available,
        "returns": book.returns.values().collect::<Vec<_>>(),
    }))
}

/// `GET /_sandbox/receivers/{account}`: one receiver's balance, under each type it was paid as.
pub(crate) async fn show_receiver(State(shared): St, Path(account): Path<String>) -> Json<Value> {
    let book = lock(&shared.profit);
    let by_type: BTreeMap<&str, i64> = book
        .balances
        .iter()
        .filter(|((_, a), _)| *a == account)
        .map(|((kind, _), amount)| (kind.as_str(), *amount))
        .collect();
    let lines: Vec<Value> = book
        .splits
        .values()
        .flat_map(|s| {
            s.receivers.iter().filter(|l| l.account == account).map(|l| {
                json!({"out_order_no": s.out_order_no, "transaction_id": s.transaction_id,
                       "amount": l.amount, "result": l.result, "fail_reason": l.fail_reason})
            })
        })
        .collect();
    Json(json!({
        "account": account,
        "balance": by_type.values().sum::<i64>(),
        "balance_fen": by_type.values().sum::<i64>(),
        "balances": by_type,
        "available": book.available.get(&account),
        "lines": lines,
    }))
}

pub(crate) async fn show_settings(State(shared): St) -> Json<ProfitSharingSettings> {
    Json(lock(&shared.profit).settings.clone())
}

pub(crate) async fn set_settings(
    State(shared): St,
    body: Result<Json<ProfitSharingSettings>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<ProfitSharingSettings>, (StatusCode, Json<Value>)> {
    let bad = |message: String| {
        (StatusCode::BAD_REQUEST, Json(json!({"code": "PARAM_ERROR", "message": message})))
    };
    let Json(settings) = body.map_err(|e| bad(e.body_text()))?;
    settings.check().map_err(|e| bad(e.to_string()))?;
    tracing::info!(?settings, "profit-sharing settings set");
    lock(&shared.profit).set_settings(settings.clone());
    Ok(Json(settings))
}

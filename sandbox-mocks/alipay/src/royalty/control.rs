//! `/_sandbox/royalty` and `/_sandbox/receivers/{account}`: relations, holds, settles and
//! balances, and the settings.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::RoyaltySettings;
use super::settle::{LINE_ERRORS, detail_list};
use crate::Shared;
use crate::protocol::format_yuan;

/// `GET /_sandbox/royalty`: settings, relations, holds, settles and balances.
pub(crate) async fn show(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let book = shared.royalty.book();
    let settles: Vec<Value> = book
        .settles
        .values()
        .map(|s| {
            let mut v = json!(s);
            v["royalty_detail_list"] = detail_list(s, &shared);
            v
        })
        .collect();
    Json(json!({
        "settings": book.settings,
        "relations": book.relations.iter()
            .map(|(app, set)| (app.clone(), set.values().cloned().collect::<Vec<_>>()))
            .collect::<BTreeMap<_, _>>(),
        "holds": book.holds,
        "settles": settles,
        "balances": book.balances.iter().map(|(k, v)| (k.clone(), format_yuan(*v))).collect::<BTreeMap<_, _>>(),
        "released": book.released.iter().map(|(k, v)| (k.clone(), format_yuan(*v))).collect::<BTreeMap<_, _>>(),
    }))
}

/// `GET /_sandbox/receivers/{account}`: what one receiver was paid.
pub(crate) async fn show_receiver(
    State(shared): State<Arc<Shared>>,
    Path(account): Path<String>,
) -> Json<Value> {
    let book = shared.royalty.book();
    let fen = book.balances.get(&account).copied().unwrap_or(0);
    let lines: Vec<Value> = book
        .settles
        .values()
        .flat_map(|s| {
            s.lines.iter().filter(|l| l.trans_in == account).map(|l| {
                json!({"out_request_no": s.out_request_no, "trade_no": s.trade_no,
                       "amount": format_yuan(l.amount_fen), "state": l.state,
                       "error_code": l.error_code})
            })
        })
        .collect();
    Json(
        json!({"account": account, "balance": format_yuan(fen), "balance_fen": fen, "lines": lines}),
    )
}

pub(crate) async fn show_settings(State(shared): State<Arc<Shared>>) -> Json<RoyaltySettings> {
    Json(shared.royalty.book().settings.clone())
}

pub(crate) async fn set_settings(
    State(shared): State<Arc<Shared>>,
    body: Result<Json<RoyaltySettings>, JsonRejection>,
) -> Result<Json<RoyaltySettings>, (StatusCode, Json<Value>)> {
    let bad = |m: String| (StatusCode::BAD_REQUEST, Json(json!({"error": m})));
    let Json(settings) = body.map_err(|e| bad(e.body_text()))?;
    if settings.max_ratio > 100 {
        return Err(bad("max_ratio is a percent, 0..=100".into()));
    }
    if let Some((account, code)) =
        settings.refused_receivers.iter().find(|(_, c)| !LINE_ERRORS.contains(&c.as_str()))
    {
        return Err(bad(format!(
            "refused_receivers[{account}]: unknown error code {code:?}; known: {}",
            LINE_ERRORS.join(", ")
        )));
    }
    tracing::info!(?settings, "royalty settings set");
    shared.royalty.set_settings(settings.clone());
    Ok(Json(settings))
}

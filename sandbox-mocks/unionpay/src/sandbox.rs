//! Everything under `/_sandbox/`: the bank page (card entry, Pay / Cancel, the front
//! notification posted back to `frontUrl`), the control API and fault injection.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use paymux_mock_kit::html::{escape, page, qr_svg, yuan};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::notify::{result_fields, send_back};
use crate::protocol::beijing_compact;
use crate::state::{Faults, Kind, OPERATIONS, Shared, Status, Txn, TxnKey};

/// UnionPay's red, for the Pay button.
pub(crate) const ACCENT: &str = "#d7000f";

/// The card the control API pays with when none is given (a test-environment debit card).
const TEST_CARD: &str = "6216261000000000018";

type St = State<Arc<Shared>>;
type Params = Query<HashMap<String, String>>;

/// A control API refusal: `{"error": "..."}` with a fitting status.
#[derive(Debug)]
pub(crate) struct ControlError(StatusCode, String);

impl IntoResponse for ControlError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

fn not_found(order_id: &str) -> ControlError {
    ControlError(StatusCode::NOT_FOUND, format!("no consume with orderId {order_id}"))
}

/// The consume with this orderId; `merId` and `txnTime` pick one when several share it.
fn find(
    shared: &Shared,
    order_id: &str,
    q: &HashMap<String, String>,
) -> Result<TxnKey, ControlError> {
    let book = shared.book();
    let mut matches = book.txns.iter().filter(|(k, t)| {
        k.1 == order_id
            && t.kind.is_payer_order()
            && q.get("merId").is_none_or(|m| *m == k.0)
            && q.get("txnTime").is_none_or(|t| *t == k.2)
    });
    let (first, _) = matches.next().ok_or_else(|| not_found(order_id))?;
    if matches.next().is_some() {
        return Err(ControlError(
            StatusCode::BAD_REQUEST,
            format!("several orders have orderId {order_id}: add ?merId=&txnTime="),
        ));
    }
    Ok(first.clone())
}

fn view(shared: &Shared, key: &TxnKey) -> Result<Value, ControlError> {
    let book = shared.book();
    let txn = book.txns.get(key).ok_or_else(|| not_found(&key.1))?;
    let refunds: Vec<&Txn> =
        book.txns.values().filter(|t| t.orig_qry_id.as_deref() == Some(&txn.query_id)).collect();
    let mut v = serde_json::to_value(txn).unwrap_or_default();
    v["cashier_url"] = json!(shared.cashier_url(txn));
    v["refunds"] = json!(refunds);
    Ok(v)
}

/// The payer pays with `card`: the consume succeeds and its back notification goes out.
fn pay(shared: &Arc<Shared>, key: &TxnKey, card: &str) -> Result<Txn, ControlError> {
    let txn = {
        let mut book = shared.book();
        let txn = book.txns.get_mut(key).ok_or_else(|| not_found(&key.1))?;
        if txn.status != Status::Waiting {
            return Err(ControlError(
                StatusCode::CONFLICT,
                format!("order {} is {:?}, only a waiting consume can be paid", key.1, txn.status),
            ));
        }
        let now = beijing_compact(OffsetDateTime::now_utc());
        txn.status = Status::Succeeded;
        txn.opened = true;
        txn.card = Some(card.to_owned());
        txn.trace_no = Some(paymux_mock_kit::random_digits(6));
        txn.trace_time = Some(now[4..].to_owned());
        txn.settle_date = Some(now[4..8].to_owned());
        txn.clone()
    };
    tracing::info!(mer_id = %key.0, order_id = %key.1, "consume paid");
    send_back(shared, &txn);
    Ok(txn)
}

/// Ends a waiting consume unpaid: `Failed` (the payment was refused; queries say so) or
/// `Closed` (it lapsed; queries answer 34). UnionPay notifies neither.
fn end(shared: &Shared, key: &TxnKey, to: Status) -> Result<(), ControlError> {
    let mut book = shared.book();
    let txn = book.txns.get_mut(key).ok_or_else(|| not_found(&key.1))?;
    if txn.status != Status::Waiting {
        return Err(ControlError(
            StatusCode::CONFLICT,
            format!("order {} is {:?}, only a waiting consume can end", key.1, txn.status),
        ));
    }
    txn.status = to;
    if to == Status::Failed {
        txn.opened = true;
    }
    Ok(())
}

pub(crate) async fn list_orders(State(shared): St) -> Json<Value> {
    let keys: Vec<TxnKey> = shared.book().txns.keys().cloned().collect();
    let orders: Vec<Value> = keys.iter().filter_map(|k| view(&shared, k).ok()).collect();
    Json(json!({ "orders": orders }))
}

pub(crate) async fn show_order(
    State(shared): St,
    Path(order_id): Path<String>,
    Query(q): Params,
) -> Result<Json<Value>, ControlError> {
    let key = find(&shared, &order_id, &q)?;
    view(&shared, &key).map(Json)
}

pub(crate) async fn pay_order(
    State(shared): St,
    Path(order_id): Path<String>,
    Query(q): Params,
) -> Result<Json<Value>, ControlError> {
    let key = find(&shared, &order_id, &q)?;
    let card = q.get("accNo").map_or(TEST_CARD, String::as_str);
    pay(&shared, &key, card)?;
    view(&shared, &key).map(Json)
}

pub(crate) async fn fail_order(
    State(shared): St,
    Path(order_id): Path<String>,
    Query(q): Params,
) -> Result<Json<Value>, ControlError> {
    end_order(&shared, &order_id, &q, Status::Failed)
}

pub(crate) async fn close_order(
    State(shared): St,
    Path(order_id): Path<String>,
    Query(q): Params,
) -> Result<Json<Value>, ControlError> {
    end_order(&shared, &order_id, &q, Status::Closed)
}

/// `.../fail` and `.../close`: the order ends unpaid, and the control API shows it.
fn end_order(
    shared: &Shared,
    order_id: &str,
    q: &HashMap<String, String>,
    to: Status,
) -> Result<Json<Value>, ControlError> {
    let key = find(shared, order_id, q)?;
    end(shared, &key, to)?;
    view(shared, &key).map(Json)
}

pub(crate) async fn show_faults(State(shared): St) -> Json<Faults> {
    Json(shared.faults())
}

pub(crate) async fn set_faults(
    State(shared): St,
    faults: Result<Json<Faults>, JsonRejection>,
) -> Result<Json<Faults>, ControlError> {
    let Json(faults) = faults.map_err(|e| ControlError(StatusCode::BAD_REQUEST, e.body_text()))?;
    if !(0.0..=1.0).contains(&faults.error_rate) {
        return Err(ControlError(
            StatusCode::BAD_REQUEST,
            "error_rate must be within 0..=1".into(),
        ));
    }
    let unknown = faults
        .timeout_after_commit
        .iter()
        .chain(&faults.in_process_after_commit)
        .find(|o| !OPERATIONS.contains(&o.as_str()));
    if let Some(op) = unknown {
        return Err(ControlError(
            StatusCode::BAD_REQUEST,
            format!("unknown operation {op:?}; known: {}", OPERATIONS.join(", ")),
        ));
    }
    shared.book().in_process_served = 0;
    shared.faults.set(faults.clone());
    tracing::info!(?faults, "sandbox faults set");
    Ok(Json(faults))
}

pub(crate) async fn clear_faults(State(shared): St) -> Json<Faults> {
    Json(shared.faults.clear())
}

/// Public material only: what a merchant configures to verify the mock.
pub(crate) async fn keys(State(shared): St) -> Json<Value> {
    Json(json!({
        "root_certificate_pem": shared.keys.root_certificate_pem(),
        "intermediate_certificate_pem": shared.keys.intermediate_certificate_pem(),
        "signing_certificate_pem": shared.keys.signing_certificate_pem(),
        "gateway_url": format!("{}/gateway/api/", shared.public_url),
    }))
}

fn message(status: StatusCode, text: &str) -> Response {
    let body = format!("<p>{}</p>", escape(text));
    (status, Html(page("UnionPay sandbox", ACCENT, &body))).into_response()
}

/// `GET /_sandbox/qr/{queryId}`: the payer scans a QR consume's code and lands on its bank page.
pub(crate) async fn scan(State(shared): St, Path(query_id): Path<String>) -> Response {
    let url = {
        let book = shared.book();
        book.txns
            .values()
            .find(|t| t.kind == Kind::Qr && t.query_id == query_id)
            .map(|t| shared.cashier_url(t))
    };
    match url {
        Some(url) => Redirect::to(&url).into_response(),
        None => message(StatusCode::NOT_FOUND, "No such QR code in the sandbox."),
    }
}

/// `GET /_sandbox/cashier/{orderId}`: the bank page. Opening it (or scanning the QR code that
/// points here) makes the order known to queries.
pub(crate) async fn cashier(
    State(shared): St,
    Path(order_id): Path<String>,
    Query(q): Params,
) -> Response {
    let Ok(key) = find(&shared, &order_id, &q) else {
        return message(StatusCode::NOT_FOUND, "No such order in the sandbox.");
    };
    let Some(txn) = ({
        let mut book = shared.book();
        book.txns.get_mut(&key).map(|t| {
            t.opened = true;
            t.clone()
        })
    }) else {
        return message(StatusCode::NOT_FOUND, "No such order in the sandbox.");
    };
    let merchant = shared.merchant(&txn.mer_id).map(|m| m.name.clone()).unwrap_or_default();
    let hidden = format!(
        "<input type=\"hidden\" name=\"merId\" value=\"{}\"><input type=\"hidden\" name=\"txnTime\" value=\"{}\">",
        escape(&txn.mer_id),
        escape(&txn.txn_time)
    );
    let base = format!("/_sandbox/cashier/{}", escape(&txn.order_id));
    let actions = match txn.status {
        Status::Waiting => format!(
            "<form method=\"post\" action=\"{base}/pay\">{hidden}\
             <label>Card number <input name=\"accNo\" id=\"accNo\" inputmode=\"numeric\" value=\"{TEST_CARD}\"></label>\
             <p><button class=\"pay\" id=\"pay\" type=\"submit\">Pay</button></p></form>\
             <form method=\"post\" action=\"{base}/cancel\">{hidden}\
             <button id=\"cancel\" type=\"submit\">Cancel</button></form>"
        ),
        status => format!("<p>Status: <strong>{status:?}</strong></p>"),
    };
    let qr = txn.qr_code.as_deref().map(qr_svg).unwrap_or_default();
    let body = format!(
        "<h1>UnionPay sandbox</h1><p>Merchant: <strong>{}</strong> (<code>{}</code>)</p>\
         <p>{}</p><p class=\"amount\">¥{}</p>{actions}<div>{qr}</div>\
         <dl><dt>orderId</dt><dd><code>{}</code></dd><dt>txnTime</dt><dd><code>{}</code></dd></dl>",
        escape(&merchant),
        escape(&txn.mer_id),
        escape(txn.order_desc.as_deref().unwrap_or("")),
        yuan(txn.amount),
        escape(&txn.order_id),
        escape(&txn.txn_time),
    );
    ([(header::CACHE_CONTROL, "no-store")], Html(page("UnionPay sandbox", ACCENT, &body)))
        .into_response()
}

fn form_params(body: &[u8]) -> HashMap<String, String> {
    form_urlencoded::parse(body).into_owned().collect()
}

/// The Pay button: pays with the card entered, then (where the merchant gave a `frontUrl`)
/// sends the browser back with the signed front notification, as an auto-submitting form.
pub(crate) async fn cashier_pay(
    State(shared): St,
    Path(order_id): Path<String>,
    body: Bytes,
) -> Response {
    let params = form_params(&body);
    let key = match find(&shared, &order_id, &params) {
        Ok(key) => key,
        Err(e) => return e.into_response(),
    };
    let card: String = params
        .get("accNo")
        .map(|c| c.chars().filter(char::is_ascii_digit).collect())
        .unwrap_or_default();
    if !(12..=19).contains(&card.len()) {
        return message(StatusCode::BAD_REQUEST, "Enter a card number of 12 to 19 digits.");
    }
    let txn = match pay(&shared, &key, &card) {
        Ok(txn) => txn,
        Err(e) => return e.into_response(),
    };
    match &txn.front_url {
        Some(front_url) => front_return(&shared, &txn, front_url),
        None => Redirect::to(&shared.cashier_url(&txn)).into_response(),
    }
}

/// The page that posts the signed front notification to `frontUrl` from the payer's browser.
fn front_return(shared: &Shared, txn: &Txn, front_url: &str) -> Response {
    let merchant = shared.merchant(&txn.mer_id);
    let signed = shared.sign(result_fields(shared, txn), merchant.as_deref());
    let inputs: String = signed
        .iter()
        .map(|(k, v)| {
            format!("<input type=\"hidden\" name=\"{}\" value=\"{}\">", escape(k), escape(v))
        })
        .collect();
    let body = format!(
        "<p>Paid. Returning to the merchant…</p>\
         <form id=\"front\" method=\"post\" action=\"{}\">{inputs}<button type=\"submit\">Back to the merchant</button></form>\
         <script>document.getElementById('front').submit()</script>",
        escape(front_url)
    );
    Html(page("UnionPay sandbox", ACCENT, &body)).into_response()
}

/// The Cancel button: the payment fails.
pub(crate) async fn cashier_cancel(
    State(shared): St,
    Path(order_id): Path<String>,
    body: Bytes,
) -> Response {
    let params = form_params(&body);
    let key = match find(&shared, &order_id, &params) {
        Ok(key) => key,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = end(&shared, &key, Status::Failed) {
        return e.into_response();
    }
    let back = format!("/_sandbox/cashier/{}?merId={}&txnTime={}", key.1, key.0, key.2);
    Redirect::to(&back).into_response()
}

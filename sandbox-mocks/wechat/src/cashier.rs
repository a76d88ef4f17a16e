//! The cashier page a buyer "pays" on: amount, description, a QR code of the page, Pay / Cancel.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use paymux_mock_kit::html::{escape, page as html_page, qr_svg, yuan};

use crate::control::{end_order, find_order, pay_order};
use crate::state::{Shared, TradeState, lock};

/// WeChat's green, for the Pay button.
const ACCENT: &str = "#07c160";

type St = State<Arc<Shared>>;
type Params = Query<HashMap<String, String>>;

fn suffix(q: &HashMap<String, String>) -> String {
    q.get("mchid").map(|m| format!("?mchid={}", escape(m))).unwrap_or_default()
}

fn message_page(status: StatusCode, text: &str) -> Response {
    let body = format!("<p>{}</p>", escape(text));
    (status, Html(html_page("WeChat Pay sandbox", ACCENT, &body))).into_response()
}

pub(crate) async fn page(
    State(shared): St,
    Path(out_trade_no): Path<String>,
    Query(q): Params,
) -> Response {
    let key = match find_order(&shared, &out_trade_no, q.get("mchid").map(String::as_str)) {
        Ok(key) => key,
        Err(_) => return message_page(StatusCode::NOT_FOUND, "No such order in the sandbox."),
    };
    let Some((description, total, state, mchid)) = lock(&shared.book)
        .orders
        .get(&key)
        .map(|o| (o.description.clone(), o.total, o.state, o.mchid.clone()))
    else {
        return message_page(StatusCode::NOT_FOUND, "No such order in the sandbox.");
    };
    let base = shared.config.public_url.trim_end_matches('/');
    let here = format!("{base}/_sandbox/cashier/{out_trade_no}");
    let action = format!("/_sandbox/cashier/{}", escape(&out_trade_no));
    let suffix = suffix(&q);
    let buttons = if state == TradeState::Notpay {
        format!(
            "<form method=\"post\" action=\"{action}/pay{suffix}\" style=\"display:inline\">\
             <button type=\"submit\" class=\"pay\">Pay ¥{amount}</button></form> \
             <form method=\"post\" action=\"{action}/cancel{suffix}\" style=\"display:inline\">\
             <button type=\"submit\">Cancel</button></form>",
            amount = yuan(total)
        )
    } else {
        String::new()
    };
    let body = format!(
        "<h1>WeChat Pay sandbox</h1>\
         <p>{description}</p><p class=\"amount\">¥{amount}</p>\
         <p>Order <code>{no}</code> of merchant <code>{mchid}</code>: <strong>{state}</strong></p>\
         <div>{qr}</div><div>{buttons}</div>",
        description = escape(&description),
        amount = yuan(total),
        no = escape(&out_trade_no),
        mchid = escape(&mchid),
        state = state.as_str(),
        qr = qr_svg(&here),
    );
    let body = html_page("WeChat Pay sandbox cashier", ACCENT, &body);
    ([(header::CACHE_CONTROL, "no-store")], Html(body)).into_response()
}

pub(crate) async fn pay(
    State(shared): St,
    Path(out_trade_no): Path<String>,
    Query(q): Params,
) -> Response {
    let result = find_order(&shared, &out_trade_no, q.get("mchid").map(String::as_str))
        .and_then(|key| pay_order(&shared, &key));
    match result {
        Ok(_) => {
            Redirect::to(&format!("/_sandbox/cashier/{out_trade_no}{}", suffix(&q))).into_response()
        }
        Err(e) => e.into_response(),
    }
}

pub(crate) async fn cancel(
    State(shared): St,
    Path(out_trade_no): Path<String>,
    Query(q): Params,
) -> Response {
    // A buyer who gives up leaves an order that expires: it ends CLOSED.
    let result = find_order(&shared, &out_trade_no, q.get("mchid").map(String::as_str))
        .and_then(|key| end_order(&shared, &key, TradeState::Closed));
    match result {
        Ok(_) => {
            Redirect::to(&format!("/_sandbox/cashier/{out_trade_no}{}", suffix(&q))).into_response()
        }
        Err(e) => e.into_response(),
    }
}

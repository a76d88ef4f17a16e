//! The cashier page a buyer "pays" on: amount, description, a QR code of the page, Pay / Cancel.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use qrcode::QrCode;
use qrcode::render::svg;

use crate::control::{end_order, find_order, pay_order};
use crate::state::{Shared, TradeState, lock};

type St = State<Arc<Shared>>;
type Params = Query<HashMap<String, String>>;

/// Fen to yuan with integer arithmetic: 12345 -> "123.45".
fn yuan(fen: i64) -> String {
    let sign = if fen < 0 { "-" } else { "" };
    let abs = fen.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn qr_svg(data: &str) -> String {
    match QrCode::new(data.as_bytes()) {
        Ok(code) => code.render::<svg::Color>().min_dimensions(200, 200).build(),
        Err(_) => String::new(),
    }
}

fn suffix(q: &HashMap<String, String>) -> String {
    q.get("mchid").map(|m| format!("?mchid={}", escape(m))).unwrap_or_default()
}

fn message_page(status: StatusCode, text: &str) -> Response {
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>WeChat Pay sandbox</title></head>\
         <body><p>{}</p></body></html>",
        escape(text)
    );
    (status, Html(body)).into_response()
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
        "<!doctype html>\n<html><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>WeChat Pay sandbox cashier</title>\
         <style>body{{font-family:sans-serif;max-width:28em;margin:2em auto;text-align:center}}\
         .amount{{font-size:2em;margin:.3em}} button{{font-size:1.1em;padding:.4em 1.2em;margin:.3em}}\
         .pay{{background:#07c160;color:#fff;border:0;border-radius:4px}}</style></head>\
         <body><h1>WeChat Pay sandbox</h1>\
         <p>{description}</p><p class=\"amount\">¥{amount}</p>\
         <p>Order <code>{no}</code> of merchant <code>{mchid}</code>: <strong>{state}</strong></p>\
         <div>{qr}</div><div>{buttons}</div></body></html>\n",
        description = escape(&description),
        amount = yuan(total),
        no = escape(&out_trade_no),
        mchid = escape(&mchid),
        state = state.as_str(),
        qr = qr_svg(&here),
    );
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn fen_become_yuan_exactly() {
        assert_eq!(yuan(1), "0.01");
        assert_eq!(yuan(100), "1.00");
        assert_eq!(yuan(12345), "123.45");
        assert_eq!(yuan(10_000_000_000), "100000000.00");
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(escape("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    }
}

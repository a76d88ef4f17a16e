//! The aggregated cashier: one page per payment, `/pay/{payment_id}`, where the payer picks how
//! to pay among the channels the merchant has accounts at, and may switch. Each pick is an
//! attempt made by the same engine call as `POST /v1/payments/{id}/attempts`; the first attempt
//! the payer pays wins, and the others are closed (or, paid too, refunded).
//!
//! The page needs no key: the payment id is its capability (random, shown only to the merchant,
//! who hands the link to its payer). It shows the amount and subject and lets the payer make
//! attempts, nothing else; it never shows the merchant's order number, metadata or refunds.

use axum::Form;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use paymux_core::ChannelKind;
use paymux_engine::{Cashier, Engine, EngineError};
use qrcode::QrCode;
use qrcode::render::svg;
use serde::Deserialize;

/// The payer's pick.
#[derive(Debug, Deserialize)]
pub struct Pick {
    channel: String,
}

/// `GET /pay/{payment_id}`: the amount, the subject, the channels to pick from, and the QR code
/// of the attempt picked last.
pub async fn show(State(engine): State<Engine>, Path(id): Path<String>) -> Response {
    match engine.cashier(&id).await {
        Ok(c) => Html(page(&id, &c, None)).into_response(),
        Err(e) => failure(e),
    }
}

/// `POST /pay/{payment_id}` (`channel=...`): makes (or reuses) the attempt at that channel, then
/// shows the page again (post/redirect/get, so a reload makes no second attempt).
pub async fn pick(
    State(engine): State<Engine>,
    Path(id): Path<String>,
    Form(pick): Form<Pick>,
) -> Response {
    match engine.cashier_pick(&id, &pick.channel).await {
        Ok(_) => Redirect::to(&format!("/pay/{id}")).into_response(),
        Err(e) => match engine.cashier(&id).await {
            // The page again, saying why the pick did not work.
            Ok(c) => (StatusCode::UNPROCESSABLE_ENTITY, Html(page(&id, &c, Some(&e.to_string()))))
                .into_response(),
            Err(_) => failure(e),
        },
    }
}

fn failure(e: EngineError) -> Response {
    let (status, text) = match e {
        EngineError::NotFound { .. } => (StatusCode::NOT_FOUND, "No such payment.".to_owned()),
        other => {
            tracing::warn!(error = %other, "the cashier could not be shown");
            (StatusCode::SERVICE_UNAVAILABLE, "The cashier is unavailable; try again.".to_owned())
        }
    };
    (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], layout("paymux", &esc(&text)))
        .into_response()
}

fn label(channel: ChannelKind) -> &'static str {
    match channel {
        ChannelKind::Alipay => "Alipay",
        ChannelKind::Wechat => "WeChat Pay",
        ChannelKind::Unionpay => "UnionPay",
    }
}

fn page(id: &str, c: &Cashier, error: Option<&str>) -> String {
    let p = &c.payment;
    let mut body = format!(
        "<h1>Pay</h1><p class=\"subject\">{}</p><p class=\"amount\">¥{}</p>",
        esc(&p.subject),
        yuan(p.amount)
    );
    if let Some(e) = error {
        body.push_str(&format!("<p class=\"error\">{}</p>", esc(e)));
    }
    match p.status {
        "succeeded" => {
            body.push_str(&format!(
                "<p id=\"status\" class=\"paid\">Paid with {}.</p>",
                esc(channel_label(p.channel))
            ));
        }
        "pending" => {
            let shown = p.attempts.iter().find(|a| a.channel_order_no == p.channel_order_no);
            if let Some(a) = shown
                && a.status == "pending"
                && let Some(code_url) = a.action.as_ref().and_then(|x| x["code_url"].as_str())
            {
                body.push_str(&format!(
                    "<section id=\"attempt\"><h2>Scan with {label}</h2>{}\
                     <p><a id=\"open-cashier\" href=\"{url}\">Open the {label} cashier</a></p>\
                     </section>",
                    qr_svg(code_url),
                    label = esc(channel_label(a.channel)),
                    url = esc(code_url),
                ));
            }
            body.push_str(&format!(
                "<form method=\"post\" action=\"/pay/{}\"><p>Choose how to pay:</p>",
                esc(id)
            ));
            for channel in &c.channels {
                body.push_str(&format!(
                    "<button class=\"pay\" name=\"channel\" value=\"{}\">{}</button>",
                    channel.as_str(),
                    label(*channel)
                ));
            }
            body.push_str("</form>");
        }
        _ => body.push_str("<p id=\"status\">This payment can no longer be paid.</p>"),
    }
    layout("Pay", &body)
}

fn channel_label(channel: &str) -> &'static str {
    match channel.parse::<ChannelKind>() {
        Ok(c) => label(c),
        Err(_) => "the channel",
    }
}

fn layout(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{}</title>\
         <style>body{{font-family:sans-serif;max-width:28rem;margin:2rem auto;padding:0 1rem;\
         color:#222}}.amount{{font-size:2rem;font-weight:bold}}.error{{color:#b00}}\
         button{{font-size:1.1rem;padding:.5rem 1.2rem;margin:.3rem;background:#1f6feb;color:#fff;\
         border:0;border-radius:4px}}svg{{width:200px;height:200px}}</style></head>\
         <body>{body}</body></html>",
        esc(title)
    )
}

/// Escapes text for HTML content and quoted attributes.
fn esc(text: &str) -> String {
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

/// `text` as an inline SVG QR code; empty when it does not fit in one.
fn qr_svg(text: &str) -> String {
    match QrCode::new(text.as_bytes()) {
        Ok(code) => {
            let svg = code.render::<svg::Color<'_>>().min_dimensions(200, 200).build();
            svg.find("<svg").map(|start| svg[start..].to_owned()).unwrap_or(svg)
        }
        Err(_) => String::new(),
    }
}

/// Fen to yuan with integer arithmetic: 12345 -> "123.45".
fn yuan(fen: i64) -> String {
    format!("{}.{:02}", fen / 100, (fen % 100).abs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_amounts_are_yuan() {
        assert_eq!(esc("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
        assert_eq!(yuan(12345), "123.45");
        assert_eq!(yuan(5), "0.05");
        assert!(qr_svg("https://qr.example/1").starts_with("<svg"));
    }
}

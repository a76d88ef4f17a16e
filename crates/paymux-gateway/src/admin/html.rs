//! The admin page's HTML, written out by hand: no template engine, no JavaScript. Every value
//! that came from a merchant, a channel or a form goes through [`esc`].

use std::fmt::Write;

use paymux_engine::operator::{
    AdminPage, AdminPaymentQuery, PaymentDetail, Stats, StatsRange, TimelineEntry,
};
use paymux_store::PaymentRecord;
use time::OffsetDateTime;
use time::macros::format_description;

use super::chart;

/// Escapes text for HTML content and attribute values.
pub fn esc(text: &str) -> String {
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

/// A time as the page shows it: UTC to the second.
pub fn when(t: OffsetDateTime) -> String {
    let utc = t.to_offset(time::UtcOffset::UTC);
    utc.format(format_description!("[year]-[month]-[day] [hour]:[minute]:[second]"))
        .unwrap_or_else(|_| utc.to_string())
}

/// A time with its milliseconds, for the timeline.
fn when_ms(t: OffsetDateTime) -> String {
    let utc = t.to_offset(time::UtcOffset::UTC);
    utc.format(format_description!(
        "[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:3]"
    ))
    .unwrap_or_else(|_| utc.to_string())
}

const STYLE: &str = "
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;color:#1d2430;background:#f5f6f8}
header{display:flex;flex-wrap:wrap;gap:.5rem 1.25rem;align-items:center;padding:.7rem 1rem;background:#1d2430;color:#fff}
header a{color:#fff;text-decoration:none}header strong{margin-right:auto}
header form{margin:0}header button{background:none;border:1px solid #fff6;color:#fff}
main{padding:1rem;max-width:1200px;margin:0 auto;overflow-wrap:anywhere}
h1{font-size:1.3rem;margin:.2rem 0 1rem}h2{font-size:1.1rem;margin:1.5rem 0 .6rem}
a{color:#1559c4}
.card{background:#fff;border:1px solid #dde1e7;border-radius:8px;padding:.8rem 1rem;margin:0 0 1rem}
.filters{display:flex;flex-wrap:wrap;gap:.6rem;align-items:flex-end}
.filters label{display:flex;flex-direction:column;font-size:.8rem;color:#556;flex:1 1 9rem;min-width:0}
input,select,button{font:inherit;padding:.35rem .5rem;border:1px solid #c5cbd4;border-radius:6px;background:#fff;max-width:100%}
button{cursor:pointer;background:#1559c4;color:#fff;border-color:#1559c4}
button.danger{background:#b42318;border-color:#b42318}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{text-align:left;padding:.4rem .55rem;border-bottom:1px solid #e6e9ee;white-space:nowrap;font-size:.9rem}
th{font-size:.78rem;color:#556;text-transform:uppercase;letter-spacing:.03em}
.status{display:inline-block;padding:0 .45rem;border-radius:99px;font-size:.8rem;background:#e6e9ee}
.succeeded,.delivered{background:#d3f3df;color:#0b6b34}.failed{background:#fde1de;color:#a2170d}
.pending{background:#fff1c9;color:#7a5200}.closed{background:#e6e9ee;color:#333}
.kv{display:grid;grid-template-columns:max-content 1fr;gap:.15rem .8rem;font-size:.88rem;margin:.3rem 0 0}
.kv dt{color:#556}.kv dd{margin:0;overflow-wrap:anywhere;font-family:ui-monospace,monospace;font-size:.82rem}
.actions{display:flex;flex-wrap:wrap;gap:.5rem}.actions form{margin:0}
ol.timeline{list-style:none;padding:0;margin:0}
.timeline li{background:#fff;border:1px solid #dde1e7;border-left:4px solid #8fa3bf;border-radius:6px;padding:.55rem .8rem;margin:0 0 .6rem}
.timeline li.bad{border-left-color:#c4320a}
.timeline .head{display:flex;flex-wrap:wrap;gap:.2rem .7rem;align-items:baseline}
.timeline time{font-family:ui-monospace,monospace;font-size:.8rem;color:#556}
.kind{font-size:.72rem;text-transform:uppercase;letter-spacing:.04em;color:#556}
.notice{padding:.6rem .8rem;border-radius:6px;background:#fde1de;color:#7a1208;margin:0 0 1rem}
.muted{color:#667}
svg{max-width:100%;height:auto;display:block}svg.chart{width:760px}
@media (max-width:640px){main{padding:.6rem}.kv{grid-template-columns:1fr}.kv dt{margin-top:.3rem}}
";

/// A whole page: the header with the navigation (and sign-out when signed in) around `body`.
pub fn page(title: &str, csrf: Option<&str>, body: &str) -> String {
    let nav = match csrf {
        Some(csrf) => format!(
            "<a href=\"/admin/payments\">Payments</a><a href=\"/admin/stats\">Success rates</a>\
             <form method=\"post\" action=\"/admin/logout\"><input type=\"hidden\" name=\"csrf\" \
             value=\"{}\"><button type=\"submit\">Sign out</button></form>",
            esc(csrf)
        ),
        None => String::new(),
    };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · paymux admin</title><style>{STYLE}</style></head>\
         <body><header><strong>paymux admin</strong>{nav}</header><main>{body}</main></body></html>",
        esc(title)
    )
}

pub fn login(error: Option<&str>) -> String {
    let notice = error.map(|e| format!("<p class=\"notice\">{}</p>", esc(e))).unwrap_or_default();
    let body = format!(
        "<h1>Sign in</h1>{notice}<form class=\"card filters\" method=\"post\" action=\"/admin/login\">\
         <label>Operator token<input type=\"password\" name=\"token\" autocomplete=\"off\" \
         required></label><button type=\"submit\">Sign in</button></form>\
         <p class=\"muted\">Print a token with <code>paymux admin token</code>; \
         <code>paymux up</code> prints a sign-in link.</p>"
    );
    page("Sign in", None, &body)
}

/// The answer to a sign-in link: the cookie is set with it, and the page moves on to the list
/// at once, so the token leaves the address bar (and the history entry is replaced).
pub fn signed_in() -> String {
    "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
     <meta http-equiv=\"refresh\" content=\"0;url=/admin/payments\"><title>Signed in</title></head>\
     <body><p><a href=\"/admin/payments\">Continue to the payments</a></p></body></html>"
        .to_owned()
}

pub fn error(status: u16, message: &str, csrf: Option<&str>) -> String {
    page(
        "Error",
        csrf,
        &format!(
            "<h1>{status}</h1><p class=\"notice\">{}</p><p><a href=\"/admin/payments\">Back to \
             the payments</a></p>",
            esc(message)
        ),
    )
}

fn status(s: impl std::fmt::Display) -> String {
    let s = s.to_string();
    format!("<span class=\"status {0}\">{0}</span>", esc(&s))
}

fn select(name: &str, label: &str, options: &[&str], chosen: Option<&str>) -> String {
    let mut html = format!("<label>{label}<select name=\"{name}\"><option value=\"\">any</option>");
    for o in options {
        let sel = if chosen == Some(*o) { " selected" } else { "" };
        let _ = write!(html, "<option{sel}>{}</option>", esc(o));
    }
    html.push_str("</select></label>");
    html
}

fn text_input(name: &str, label: &str, kind: &str, value: Option<&str>) -> String {
    format!(
        "<label>{label}<input type=\"{kind}\" name=\"{name}\" value=\"{}\"></label>",
        esc(value.unwrap_or(""))
    )
}

fn payment_row(p: &PaymentRecord) -> String {
    format!(
        "<tr><td>{}</td><td><a href=\"/admin/payments/{id}\">{id}</a></td><td>{}</td><td>{}</td>\
         <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        when(p.created_at),
        esc(&p.merchant_order_no),
        p.amount,
        status(p.status),
        p.channel,
        p.method,
        esc(p.failure_code.as_deref().unwrap_or("")),
        p.merchant_id,
        if p.livemode { "live" } else { "test" },
        id = p.id,
    )
}

pub fn payments(q: &AdminPaymentQuery, list: &AdminPage, csrf: &str) -> String {
    let mut body = String::from("<h1>Payments</h1>");
    body.push_str("<form class=\"card filters\" method=\"get\" action=\"/admin/payments\">");
    body.push_str(&text_input(
        "merchant_order_no",
        "Merchant order no.",
        "search",
        q.merchant_order_no.as_deref(),
    ));
    body.push_str(&select(
        "status",
        "Status",
        &["pending", "succeeded", "closed", "failed"],
        q.status.as_deref(),
    ));
    body.push_str(&select(
        "channel",
        "Channel",
        &["alipay", "wechat", "unionpay"],
        q.channel.as_deref(),
    ));
    body.push_str(&select(
        "method",
        "Method",
        &["qr", "page", "wap", "h5", "app", "jsapi", "mini_program", "barcode"],
        q.method.as_deref(),
    ));
    body.push_str(&text_input("from", "Created from (UTC)", "datetime-local", q.from.as_deref()));
    body.push_str(&text_input("to", "Created before (UTC)", "datetime-local", q.to.as_deref()));
    body.push_str("<button type=\"submit\">Search</button></form>");
    if list.payments.is_empty() {
        body.push_str("<p class=\"card muted\">No payment matches.</p>");
    } else {
        body.push_str(
            "<div class=\"scroll\"><table><thead><tr><th>Created (UTC)</th><th>Payment</th>\
             <th>Merchant order</th><th>Amount</th><th>Status</th><th>Channel</th><th>Method</th>\
             <th>Failure</th><th>Merchant</th><th>Mode</th></tr></thead><tbody>",
        );
        for p in &list.payments {
            body.push_str(&payment_row(p));
        }
        let n = list.payments.len();
        let _ = write!(
            body,
            "</tbody></table></div><p class=\"muted\">{n} matching payment{} shown</p>",
            if n == 1 { "" } else { "s" }
        );
    }
    if let Some(next) = list.next {
        let keep = |k: &str, v: &Option<String>| {
            v.as_deref()
                .filter(|v| !v.is_empty())
                .map(|v| format!("&{k}={}", esc(&urlencode(v))))
                .unwrap_or_default()
        };
        let _ = write!(
            body,
            "<p><a href=\"/admin/payments?before={next}{}{}{}{}{}{}\">Older payments</a></p>",
            keep("status", &q.status),
            keep("channel", &q.channel),
            keep("method", &q.method),
            keep("merchant_order_no", &q.merchant_order_no),
            keep("from", &q.from),
            keep("to", &q.to),
        );
    }
    page("Payments", Some(csrf), &body)
}

fn urlencode(v: &str) -> String {
    form_urlencoded::byte_serialize(v.as_bytes()).collect()
}

fn action_form(path: &str, label: &str, csrf: &str, class: &str) -> String {
    format!(
        "<form method=\"post\" action=\"{}\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <button type=\"submit\" class=\"{class}\">{}</button></form>",
        esc(path),
        esc(csrf),
        esc(label)
    )
}

fn kv(pairs: &[(String, String)]) -> String {
    let mut html = String::from("<dl class=\"kv\">");
    for (k, v) in pairs {
        let _ = write!(html, "<dt>{}</dt><dd>{}</dd>", esc(k), esc(v));
    }
    html.push_str("</dl>");
    html
}

fn timeline_entry(p: &PaymentRecord, e: &TimelineEntry, csrf: &str) -> String {
    let mut html = format!(
        "<li class=\"{}\" data-kind=\"{}\"><div class=\"head\"><time>{}</time>\
         <span class=\"kind\">{}</span><strong>{}</strong></div>",
        if e.bad { "bad" } else { "ok" },
        e.kind.as_str(),
        when_ms(e.at),
        e.kind.as_str(),
        esc(&e.title)
    );
    if !e.details.is_empty() {
        html.push_str(&kv(&e.details));
    }
    if let Some(event) = e.redeliver {
        html.push_str("<div class=\"actions\">");
        html.push_str(&action_form(
            &format!("/admin/payments/{}/events/{event}/redeliver", p.id),
            "Redeliver",
            csrf,
            "",
        ));
        html.push_str("</div>");
    }
    html.push_str("</li>");
    html
}

pub fn payment(d: &PaymentDetail, csrf: &str) -> String {
    let p = &d.payment;
    let mut body = format!("<h1>Payment {}</h1><div class=\"card\">", p.id);
    let facts = vec![
        ("status".to_owned(), p.status.to_string()),
        ("merchant_order_no".to_owned(), p.merchant_order_no.clone()),
        ("amount".to_owned(), p.amount.to_string()),
        ("refunded".to_owned(), format!("{} fen", p.amount_refunded)),
        ("channel".to_owned(), format!("{} / {}", p.channel, p.method)),
        ("merchant".to_owned(), p.merchant_id.to_string()),
        ("subject".to_owned(), p.subject.clone()),
        ("created".to_owned(), when(p.created_at)),
        ("expires".to_owned(), when(p.expires_at)),
        ("mode".to_owned(), if p.livemode { "live" } else { "test" }.to_owned()),
    ];
    body.push_str(&kv(&facts));
    body.push_str("<h2>Actions</h2><div class=\"actions\">");
    body.push_str(&action_form(
        &format!("/admin/payments/{}/sync", p.id),
        "Sync with the channel",
        csrf,
        "",
    ));
    if p.status == paymux_core::PaymentStatus::Pending {
        body.push_str(&action_form(
            &format!("/admin/payments/{}/close", p.id),
            "Close the payment",
            csrf,
            "danger",
        ));
    }
    body.push_str("</div></div>");

    body.push_str(
        "<h2>Attempts</h2><div class=\"scroll\"><table><thead><tr><th>#</th>\
        <th>Channel</th><th>Channel order no.</th><th>Channel trade no.</th><th>Status</th>\
        <th>Failure</th></tr></thead><tbody>",
    );
    for (i, a) in d.attempts.iter().enumerate() {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            i + 1,
            a.channel,
            a.channel_order_no,
            esc(p.channel_trade_no.as_deref().unwrap_or("")),
            status(p.status),
            esc(&[p.failure_code.as_deref(), p.failure_message.as_deref()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(": ")),
        );
    }
    body.push_str("</tbody></table></div>");

    if !d.refunds.is_empty() {
        body.push_str(
            "<h2>Refunds</h2><div class=\"scroll\"><table><thead><tr><th>Refund</th>\
            <th>Merchant refund no.</th><th>Amount</th><th>Status</th><th>Created</th></tr>\
            </thead><tbody>",
        );
        for r in &d.refunds {
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                r.id,
                esc(&r.merchant_refund_no),
                r.amount,
                status(r.status),
                when(r.created_at)
            );
        }
        body.push_str("</tbody></table></div>");
    }

    body.push_str("<h2>Timeline</h2><ol class=\"timeline\">");
    for e in &d.timeline {
        body.push_str(&timeline_entry(p, e, csrf));
    }
    body.push_str("</ol>");
    page(&format!("Payment {}", p.id), Some(csrf), &body)
}

pub fn stats(s: &Stats, csrf: &str) -> String {
    let mut body = String::from("<h1>Success rate per channel</h1><p class=\"actions\">");
    for r in StatsRange::ALL {
        if r == s.range {
            let _ = write!(body, "<strong>{}</strong>", r.as_str());
        } else {
            let _ = write!(body, "<a href=\"/admin/stats?range={0}\">{0}</a>", r.as_str());
        }
    }
    let _ = write!(
        body,
        "</p><div class=\"card\"><p class=\"muted\">Payments created from {} to {} UTC, in \
         buckets of {} minutes: succeeded out of created (pending ones count as created).</p>{}",
        when(s.from),
        when(s.to),
        s.bucket.as_secs() / 60,
        chart::success_rate(s)
    );
    body.push_str(
        "<div class=\"scroll\"><table><thead><tr><th>Channel</th><th>Succeeded / \
        created</th><th>Rate</th></tr></thead><tbody>",
    );
    for c in &s.channels {
        let _ = write!(
            body,
            "<tr><td>{}</td><td class=\"ratio\">{} / {}</td><td>{}</td></tr>",
            c.channel,
            c.succeeded,
            c.created,
            chart::percent(c.succeeded, c.created)
        );
    }
    body.push_str("</tbody></table></div></div><h2>Top failure reasons</h2>");
    if s.failures.is_empty() {
        body.push_str("<p class=\"card muted\">No failed payment in this range.</p>");
    } else {
        body.push_str(
            "<div class=\"scroll\"><table><thead><tr><th>Channel</th><th>Code</th>\
            <th>Message</th><th>Payments</th></tr></thead><tbody>",
        );
        for f in &s.failures {
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                f.channel,
                esc(&f.code),
                esc(&f.message),
                f.count
            );
        }
        body.push_str("</tbody></table></div>");
    }
    page("Success rates", Some(csrf), &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_leaves_no_markup_or_attribute_break() {
        assert_eq!(
            esc("<script>\"x\"&'y'</script>"),
            "&lt;script&gt;&quot;x&quot;&amp;&#39;y&#39;&lt;/script&gt;"
        );
    }
}

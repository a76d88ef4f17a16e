//! The cashier's HTML: escaping, one page layout, inline QR codes, amounts in yuan.

use qrcode::QrCode;
use qrcode::render::svg;

/// Escapes text for HTML content and double- or single-quoted attributes.
pub fn escape(text: &str) -> String {
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

/// A whole page around `body` (already HTML); `accent` colours the `.pay` button.
pub fn page(title: &str, accent: &str, body: &str) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{}</title>\
         <style>body{{font-family:sans-serif;max-width:28rem;margin:2rem auto;padding:0 1rem;color:#222}}\
         .amount{{font-size:2rem;font-weight:bold}}button{{font-size:1.1rem;padding:.5rem 1.5rem;margin:.3rem}}\
         .pay{{background:{};color:#fff;border:0}}dt{{color:#777}}code{{word-break:break-all}}</style>\
         </head><body>{body}</body></html>",
        escape(title),
        escape(accent),
    )
}

/// `text` as an inline SVG QR code (no XML declaration, as HTML wants it); empty if the text is
/// too long for a QR code.
pub fn qr_svg(text: &str) -> String {
    match QrCode::new(text.as_bytes()) {
        Ok(code) => {
            let svg = code.render::<svg::Color<'_>>().min_dimensions(200, 200).build();
            match svg.find("<svg") {
                Some(start) => svg[start..].to_owned(),
                None => svg,
            }
        }
        Err(_) => String::new(),
    }
}

/// Fen to yuan with integer arithmetic: 12345 -> "123.45".
pub fn yuan(fen: i64) -> String {
    let sign = if fen < 0 { "-" } else { "" };
    let abs = fen.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_escaped() {
        assert_eq!(escape("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    }

    #[test]
    fn qr_code_is_inline_svg() {
        let svg = qr_svg("http://127.0.0.1:9102/_sandbox/cashier/A1");
        assert!(svg.starts_with("<svg"));
        assert!(svg.ends_with("</svg>"));
    }

    #[test]
    fn fen_become_yuan_exactly() {
        assert_eq!(yuan(1), "0.01");
        assert_eq!(yuan(100), "1.00");
        assert_eq!(yuan(12345), "123.45");
        assert_eq!(yuan(10_000_000_000), "100000000.00");
        assert_eq!(yuan(-5), "-0.05");
    }

    #[test]
    fn the_page_escapes_its_title_and_keeps_its_body() {
        let html = page("<T>", "#123456", "<p>x</p>");
        assert!(html.contains("<title>&lt;T&gt;</title>"));
        assert!(html.contains(".pay{background:#123456;"));
        assert!(html.contains("<body><p>x</p></body>"));
    }
}

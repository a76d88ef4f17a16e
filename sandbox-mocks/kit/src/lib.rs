//! What the sandbox mocks share that is not protocol: cashier HTML and QR codes ([`html`]), the
//! notification scheduler with retries and the reorder fault ([`notify`]), fault state
//! ([`faults`]), poison-tolerant locks ([`sync`]) and server setup ([`server`]). Each mock keeps
//! its channel's protocol (signing, wire formats, error shapes) to itself: code the mocks shared
//! there would share its bugs.
//!
//! ```no_run
//! use paymux_mock_kit::html;
//!
//! let body = format!("<p class=\"amount\">¥{}</p>{}", html::yuan(1234), html::qr_svg("https://example.invalid/pay"));
//! let page = html::page("Sandbox cashier", "#1677ff", &body);
//! assert!(page.contains("12.34"));
//! ```

pub mod faults;
pub mod html;
pub mod notify;
pub mod server;
pub mod sync;

/// `n` random decimal digits (transaction ids and the like).
pub fn random_digits(n: usize) -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..n).map(|_| char::from(b'0' + rng.random_range(0..10u8))).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn random_digits_are_digits() {
        let d = super::random_digits(40);
        assert_eq!(d.len(), 40);
        assert!(d.bytes().all(|b| b.is_ascii_digit()));
    }
}

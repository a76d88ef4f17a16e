//! Sign and verify paymux webhook signatures.
//!
//! paymux POSTs each event to a merchant's endpoint with a `Paymux-Signature` header of the form
//! `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`. The gateway signs with
//! [`sign`]; a merchant's service checks the header with [`verify_webhook`] before trusting the body.
//! Verification refuses a missing or malformed header, a header without a `v1` signature, a
//! timestamp outside the tolerance in either direction (replays), and any change to the body. While
//! an endpoint's secret is being rotated a header carries one `v1` entry per secret, and any one
//! matching is enough. This crate depends on `hmac` and `sha2` only, so a merchant can use it alone.
//!
//! ```
//! use paymux_webhook::{DEFAULT_TOLERANCE, SIGNATURE_HEADER, sign, verify_webhook};
//! use std::time::{SystemTime, UNIX_EPOCH};
//!
//! let secret = "whsec_5Wq2hT8kLm3Rb9Xz0Yp4Nc7Vd1Fg6Js2";
//! let body = br#"{"id":"evt_01","type":"payment.succeeded","created":1700000000,"data":{"object":{}}}"#;
//! let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
//!
//! // The gateway's side: the value to send as the `Paymux-Signature` header.
//! let header = sign(secret, now, body);
//! assert_eq!(SIGNATURE_HEADER, "Paymux-Signature");
//!
//! // The merchant's side: check the raw body against the header before parsing it.
//! let timestamp = verify_webhook(secret, &header, body, DEFAULT_TOLERANCE).unwrap();
//! assert_eq!(timestamp, now);
//!
//! // A changed body is refused.
//! let tampered = br#"{"id":"evt_01","type":"payment.succeeded","created":1700000000,"data":{"object":{"x":1}}}"#;
//! assert!(verify_webhook(secret, &header, tampered, DEFAULT_TOLERANCE).is_err());
//! ```

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

type HmacSha256 = Hmac<Sha256>;

/// Name of the HTTP header that carries the signature.
pub const SIGNATURE_HEADER: &str = "Paymux-Signature";

/// A sensible tolerance for [`verify_webhook`]: five minutes covers ordinary clock skew and
/// network delay while keeping the window for replaying a captured request short.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// Length in hex characters of a `v1` signature (an HMAC-SHA256 tag is 32 bytes).
const V1_HEX_LEN: usize = 64;

/// Why a webhook was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WebhookError {
    /// The `Paymux-Signature` header is absent or blank.
    MissingHeader,
    /// The header is not a comma-separated list of `key=value` items, or a `t` or `v1` value
    /// cannot be read.
    MalformedHeader {
        /// What was wrong, for logs.
        reason: &'static str,
    },
    /// The header has no `t=` item.
    MissingTimestamp,
    /// The header has no `v1=` item (other schemes such as `v0` are ignored).
    NoV1Signature,
    /// The signature matches, but its timestamp is further from now than the tolerance allows,
    /// in the past (a replay or a very late delivery) or in the future.
    TimestampOutsideTolerance {
        /// The timestamp from the header, in Unix seconds.
        timestamp: i64,
        /// The verifier's current time, in Unix seconds.
        now: i64,
    },
    /// No `v1` signature matches the body under this secret: the body was changed, the secret is
    /// wrong, or the request was not sent by paymux.
    SignatureMismatch,
    /// The system clock reads before 1970 or too far ahead to express in Unix seconds.
    ClockUnavailable,
}

impl fmt::Display for WebhookError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingHeader => write!(f, "the {SIGNATURE_HEADER} header is missing or empty"),
            Self::MalformedHeader { reason } => {
                write!(f, "the {SIGNATURE_HEADER} header is malformed: {reason}")
            }
            Self::MissingTimestamp => {
                write!(f, "the {SIGNATURE_HEADER} header has no t= timestamp")
            }
            Self::NoV1Signature => write!(f, "the {SIGNATURE_HEADER} header has no v1= signature"),
            Self::TimestampOutsideTolerance { timestamp, now } => {
                write!(f, "the webhook timestamp {timestamp} is outside the tolerance (now {now})")
            }
            Self::SignatureMismatch => {
                write!(f, "no v1 signature matches the body under this secret")
            }
            Self::ClockUnavailable => {
                write!(f, "the system clock cannot be read as Unix seconds")
            }
        }
    }
}

impl std::error::Error for WebhookError {}

/// Signs `body` at `timestamp` (Unix seconds) and returns the whole `Paymux-Signature` header
/// value, `t=<timestamp>,v1=<lower-case hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.
///
/// The HMAC key is the bytes of the whole secret string, `whsec_` prefix included. `body` must
/// be exactly the bytes that will be sent. Verification reads `t` as unsigned digits, so a
/// timestamp before 1970 produces a header that [`verify_webhook`] refuses.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let t = timestamp.to_string();
    let tag = keyed_mac(secret, &t, body).finalize().into_bytes();
    let mut header = String::with_capacity(t.len() + V1_HEX_LEN + 6);
    header.push_str("t=");
    header.push_str(&t);
    header.push_str(",v1=");
    push_hex(&mut header, &tag);
    header
}

/// Verifies a webhook against the system clock; see [`verify_webhook_at`].
///
/// `header` is the value of the `Paymux-Signature` header and `body` the raw request body,
/// before any JSON parsing (re-serialising changes bytes and breaks the signature). Returns the
/// signed timestamp on success.
pub fn verify_webhook(
    secret: &str,
    header: &str,
    body: &[u8],
    tolerance: Duration,
) -> Result<i64, WebhookError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_secs()).ok())
        .ok_or(WebhookError::ClockUnavailable)?;
    verify_webhook_at(secret, header, body, tolerance, now)
}

/// Verifies a webhook as of `now_unix` (Unix seconds) and returns the signed timestamp.
///
/// The header is a comma-separated list of `key=value` items in any order, with optional
/// whitespace around items; it must hold exactly one `t` and at least one `v1`. Unknown schemes
/// (`v0`, later versions) are ignored. A `v1` value must be 64 hex digits. The body passes if any
/// `v1` entry matches (one entry per secret while a secret is being rotated); tags are compared
/// in constant time. The signature is checked before the timestamp, so
/// [`WebhookError::TimestampOutsideTolerance`] means the request was genuinely signed with this
/// secret, only too early or too late: a replay, a delivery that arrived very late, or a clock off.
pub fn verify_webhook_at(
    secret: &str,
    header: &str,
    body: &[u8],
    tolerance: Duration,
    now_unix: i64,
) -> Result<i64, WebhookError> {
    let parsed = parse_header(header)?;
    let mac = keyed_mac(secret, parsed.timestamp_text, body);
    // Every entry is compared, even after a match, so the time taken does not depend on which
    // entry matched.
    let mut matched = false;
    for candidate in &parsed.v1 {
        matched |= mac.clone().verify_slice(candidate).is_ok();
    }
    if !matched {
        return Err(WebhookError::SignatureMismatch);
    }
    // i128 so that no pair of i64 values can overflow the difference.
    let skew = (i128::from(now_unix) - i128::from(parsed.timestamp)).unsigned_abs();
    if skew > u128::from(tolerance.as_secs()) {
        return Err(WebhookError::TimestampOutsideTolerance {
            timestamp: parsed.timestamp,
            now: now_unix,
        });
    }
    Ok(parsed.timestamp)
}

/// HMAC-SHA256 keyed with the secret, already fed `"<t>.<body>"`.
fn keyed_mac(secret: &str, timestamp_text: &str, body: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length (long ones are hashed first), so this cannot fail.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(timestamp_text.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

struct ParsedHeader<'a> {
    /// `t` exactly as it appears in the header: the signed string is built from these bytes.
    timestamp_text: &'a str,
    timestamp: i64,
    v1: Vec<[u8; 32]>,
}

fn parse_header(header: &str) -> Result<ParsedHeader<'_>, WebhookError> {
    if header.trim().is_empty() {
        return Err(WebhookError::MissingHeader);
    }
    let mut timestamp: Option<(&str, i64)> = None;
    let mut v1 = Vec::new();
    for item in header.split(',') {
        let item = item.trim();
        let Some((key, value)) = item.split_once('=') else {
            return Err(malformed("an item is not key=value"));
        };
        let (key, value) = (key.trim(), value.trim());
        match key {
            "t" => {
                if timestamp.is_some() {
                    return Err(malformed("more than one t= item"));
                }
                timestamp = Some((value, parse_timestamp(value)?));
            }
            "v1" => v1.push(decode_tag(value)?),
            "" => return Err(malformed("an item has an empty key")),
            _ => {}
        }
    }
    let (timestamp_text, timestamp) = timestamp.ok_or(WebhookError::MissingTimestamp)?;
    if v1.is_empty() {
        return Err(WebhookError::NoV1Signature);
    }
    Ok(ParsedHeader { timestamp_text, timestamp, v1 })
}

fn parse_timestamp(value: &str) -> Result<i64, WebhookError> {
    // `i64::from_str` would also take a sign; a Unix timestamp here is plain digits.
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed("t is not a decimal number of seconds"));
    }
    value.parse().map_err(|_| malformed("t is too large to be a Unix timestamp"))
}

fn decode_tag(value: &str) -> Result<[u8; 32], WebhookError> {
    let bytes = value.as_bytes();
    if bytes.len() != V1_HEX_LEN {
        return Err(malformed("v1 is not 64 hex digits"));
    }
    let mut tag = [0u8; 32];
    for (out, pair) in tag.iter_mut().zip(bytes.chunks_exact(2)) {
        let (Some(hi), Some(lo)) = (hex_digit(pair[0]), hex_digit(pair[1])) else {
            return Err(malformed("v1 is not 64 hex digits"));
        };
        *out = (hi << 4) | lo;
    }
    Ok(tag)
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
}

fn malformed(reason: &'static str) -> WebhookError {
    WebhookError::MalformedHeader { reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_5Wq2hT8kLm3Rb9Xz0Yp4Nc7Vd1Fg6Js2";
    const T: i64 = 1_700_000_000;
    const BODY: &[u8] = br#"{"id":"evt_01","type":"payment.succeeded"}"#;
    const TOL: Duration = Duration::from_secs(300);

    /// Computed independently of this crate, with Python's standard library:
    /// `python3 -c 'import hmac,hashlib;print(hmac.new(b"whsec_5Wq2hT8kLm3Rb9Xz0Yp4Nc7Vd1Fg6Js2",
    /// b"1700000000."+b"{\"id\":\"evt_01\",\"type\":\"payment.succeeded\"}",hashlib.sha256).hexdigest())'`
    const KNOWN_V1: &str = "628864ba9dd5169c6f12f25ceccf5f6f2fcc143ae6e013c9399c6e4a2174aa42";

    fn verify(header: &str) -> Result<i64, WebhookError> {
        verify_webhook_at(SECRET, header, BODY, TOL, T)
    }

    fn malformed_reason(result: Result<i64, WebhookError>) -> &'static str {
        match result {
            Err(WebhookError::MalformedHeader { reason }) => reason,
            other => panic!("expected MalformedHeader, got {other:?}"),
        }
    }

    #[test]
    fn sign_matches_independently_computed_hmac() {
        assert_eq!(sign(SECRET, T, BODY), format!("t=1700000000,v1={KNOWN_V1}"));
    }

    #[test]
    fn known_answer_header_verifies() {
        assert_eq!(verify(&format!("t=1700000000,v1={KNOWN_V1}")), Ok(T));
    }

    #[test]
    fn fresh_signature_verifies_with_system_clock() {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
        let header = sign(SECRET, now, BODY);
        assert_eq!(verify_webhook(SECRET, &header, BODY, TOL), Ok(now));
    }

    #[test]
    fn signature_at_the_edge_of_tolerance_passes() {
        assert_eq!(verify(&sign(SECRET, T - 300, BODY)), Ok(T - 300));
        assert_eq!(verify(&sign(SECRET, T + 300, BODY)), Ok(T + 300));
    }

    #[test]
    fn signature_older_than_tolerance_is_refused() {
        let header = sign(SECRET, T - 301, BODY);
        assert_eq!(
            verify(&header),
            Err(WebhookError::TimestampOutsideTolerance { timestamp: T - 301, now: T })
        );
    }

    #[test]
    fn signature_from_the_future_beyond_tolerance_is_refused() {
        let header = sign(SECRET, T + 301, BODY);
        assert_eq!(
            verify(&header),
            Err(WebhookError::TimestampOutsideTolerance { timestamp: T + 301, now: T })
        );
    }

    #[test]
    fn zero_tolerance_accepts_only_the_same_second() {
        let header = sign(SECRET, T, BODY);
        assert_eq!(verify_webhook_at(SECRET, &header, BODY, Duration::ZERO, T), Ok(T));
        assert!(matches!(
            verify_webhook_at(SECRET, &header, BODY, Duration::ZERO, T + 1),
            Err(WebhookError::TimestampOutsideTolerance { .. })
        ));
    }

    #[test]
    fn extreme_clock_values_do_not_overflow() {
        let header = sign(SECRET, i64::MAX, BODY);
        assert!(matches!(
            verify_webhook_at(SECRET, &header, BODY, TOL, i64::MIN),
            Err(WebhookError::TimestampOutsideTolerance { .. })
        ));
        assert!(matches!(
            verify_webhook_at(SECRET, &header, BODY, Duration::MAX, i64::MIN),
            Ok(i64::MAX)
        ));
    }

    #[test]
    fn every_single_byte_change_of_the_body_is_refused() {
        let header = sign(SECRET, T, BODY);
        for i in 0..BODY.len() {
            let mut changed = BODY.to_vec();
            changed[i] ^= 0x01;
            assert_eq!(
                verify_webhook_at(SECRET, &header, &changed, TOL, T),
                Err(WebhookError::SignatureMismatch),
                "byte {i}"
            );
        }
    }

    #[test]
    fn appended_or_truncated_body_is_refused() {
        let header = sign(SECRET, T, BODY);
        let mut longer = BODY.to_vec();
        longer.push(b'\n');
        assert_eq!(
            verify_webhook_at(SECRET, &header, &longer, TOL, T),
            Err(WebhookError::SignatureMismatch)
        );
        assert_eq!(
            verify_webhook_at(SECRET, &header, &BODY[..BODY.len() - 1], TOL, T),
            Err(WebhookError::SignatureMismatch)
        );
    }

    #[test]
    fn wrong_secret_is_refused() {
        let header = sign("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", T, BODY);
        assert_eq!(verify(&header), Err(WebhookError::SignatureMismatch));
    }

    #[test]
    fn changed_timestamp_is_refused() {
        let header = format!("t=1700000001,v1={KNOWN_V1}");
        assert_eq!(verify(&header), Err(WebhookError::SignatureMismatch));
    }

    #[test]
    fn timestamp_is_signed_as_written_in_the_header() {
        // Same number, different text: the signed string differs, so the tag does not match.
        let header = format!("t=01700000000,v1={KNOWN_V1}");
        assert_eq!(verify(&header), Err(WebhookError::SignatureMismatch));
    }

    #[test]
    fn two_v1_entries_pass_when_one_matches() {
        let old = sign("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", T, BODY);
        let old_v1 = old.split_once(",v1=").unwrap().1;
        assert_eq!(verify(&format!("t={T},v1={old_v1},v1={KNOWN_V1}")), Ok(T));
        assert_eq!(verify(&format!("t={T},v1={KNOWN_V1},v1={old_v1}")), Ok(T));
    }

    #[test]
    fn two_wrong_v1_entries_are_refused() {
        let a = "0".repeat(64);
        let b = "f".repeat(64);
        assert_eq!(verify(&format!("t={T},v1={a},v1={b}")), Err(WebhookError::SignatureMismatch));
    }

    #[test]
    fn items_in_any_order_with_whitespace_and_unknown_schemes_pass() {
        let v0 = "0".repeat(64);
        let header = format!("  v0={v0} , v1={KNOWN_V1}\t,t=1700000000 ,x-future=anything ");
        assert_eq!(verify(&header), Ok(T));
    }

    #[test]
    fn upper_case_hex_is_accepted() {
        let header = format!("t=1700000000,v1={}", KNOWN_V1.to_ascii_uppercase());
        assert_eq!(verify(&header), Ok(T));
    }

    #[test]
    fn only_a_v0_signature_is_refused() {
        let header = format!("t=1700000000,v0={KNOWN_V1}");
        assert_eq!(verify(&header), Err(WebhookError::NoV1Signature));
    }

    #[test]
    fn empty_header_is_missing() {
        assert_eq!(verify(""), Err(WebhookError::MissingHeader));
        assert_eq!(verify("  \t "), Err(WebhookError::MissingHeader));
    }

    #[test]
    fn header_without_timestamp_is_refused() {
        assert_eq!(verify(&format!("v1={KNOWN_V1}")), Err(WebhookError::MissingTimestamp));
    }

    #[test]
    fn header_without_v1_is_refused() {
        assert_eq!(verify("t=1700000000"), Err(WebhookError::NoV1Signature));
    }

    #[test]
    fn garbage_headers_are_malformed() {
        let v = KNOWN_V1;
        for header in [
            "garbage".to_string(),
            "t=1700000000;v1=abc".to_string(),
            format!("t=1700000000,,v1={v}"),
            format!("t=1700000000,v1={v},"),
            format!("=x,t=1700000000,v1={v}"),
            format!("t=,v1={v}"),
            format!("t=abc,v1={v}"),
            format!("t=-1700000000,v1={v}"),
            format!("t=+1700000000,v1={v}"),
            format!("t=1.5,v1={v}"),
            format!("t=99999999999999999999,v1={v}"),
            format!("t=1700000000,t=1700000000,v1={v}"),
            "t=1700000000,v1=".to_string(),
            "t=1700000000,v1=abcd".to_string(),
            format!("t=1700000000,v1={v}00"),
            format!("t=1700000000,v1={}", "g".repeat(64)),
            format!("t=1700000000,v1={}é", &v[..62]),
        ] {
            let reason = malformed_reason(verify(&header));
            assert!(!reason.is_empty(), "{header}");
        }
    }

    #[test]
    fn one_malformed_v1_spoils_the_header_even_beside_a_good_one() {
        let header = format!("t=1700000000,v1=zz,v1={KNOWN_V1}");
        assert_eq!(malformed_reason(verify(&header)), "v1 is not 64 hex digits");
    }

    #[test]
    fn errors_display_without_secret_material() {
        let shown = WebhookError::SignatureMismatch.to_string();
        assert!(!shown.contains(SECRET));
        let shown = WebhookError::TimestampOutsideTolerance { timestamp: 1, now: 2 }.to_string();
        assert!(shown.contains('1') && shown.contains('2'));
    }
}

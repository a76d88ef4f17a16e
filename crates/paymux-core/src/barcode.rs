//! Barcode payments (the merchant scans the code the payer shows): the types the [`Channel`]
//! seam speaks for them, with no I/O.
//!
//! One pay call carries the payer's code. Its answer is final (paid, or refused), "the payer is
//! confirming on the phone", or unknown. The last two are settled by polling the query on the
//! channel's schedule ([`BarcodeSchedule`]); a payment still unsettled at the schedule's limit is
//! cancelled (Alipay) or reversed (WeChat, UnionPay) at the channel, because the payer can still
//! confirm after the merchant has given up, and the cancel is repeated until the channel
//! confirms it.
//!
//! [`Channel`]: crate::Channel

use std::time::Duration;

use crate::ChannelPayment;

/// How a channel's "payer confirming" loop runs (`channels/barcode.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarcodeSchedule {
    /// The wait before each query while the payer confirms.
    pub poll_every: Duration,
    /// From the pay call: past this the payment is cancelled at the channel. Also the earliest
    /// moment a cancel may be sent (WeChat refuses a reverse within 15 s of the pay call).
    pub give_up_after: Duration,
    /// The wait between two cancels the channel has not confirmed.
    pub cancel_every: Duration,
}

impl BarcodeSchedule {
    /// The schedule run `factor` times faster (tests and the sandbox); a factor of 0 counts as 1.
    pub fn compressed(self, factor: u32) -> Self {
        let f = factor.max(1);
        Self {
            poll_every: self.poll_every / f,
            give_up_after: self.give_up_after / f,
            cancel_every: self.cancel_every / f,
        }
    }
}

/// What the pay call answered when it was not a definite refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BarcodePaid {
    /// `Succeeded` (paid at once), `Pending` (the payer is confirming, or the channel only
    /// accepted the request), or `Failed` (the channel took the order and it failed).
    pub state: ChannelPayment,
    /// The small state the adapter needs for the calls that follow (kept on the attempt).
    pub channel_data: serde_json::Value,
}

/// What a confirmed cancel (or reverse) did at the channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BarcodeCancel {
    /// The order is closed unpaid: nobody can pay it any more.
    Closed,
    /// The payer had paid before the cancel arrived, and the channel gave the money back.
    Refunded,
}

/// The payer's code as it may be stored and logged: the first four and last four digits, the
/// rest masked. A code of eight characters or fewer is masked entirely.
pub fn mask_auth_code(code: &str) -> String {
    let chars: Vec<char> = code.chars().collect();
    if chars.len() <= 8 {
        return "*".repeat(chars.len());
    }
    let head: String = chars[..4].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(chars.len() - 8))
}

/// Whether `code` is `total` ASCII digits (for any total in `lengths`) whose first two, read as
/// a number, fall in `prefixes`.
pub fn digits_with_prefix(
    code: &str,
    lengths: std::ops::RangeInclusive<usize>,
    prefixes: std::ops::RangeInclusive<u8>,
) -> bool {
    lengths.contains(&code.len())
        && code.bytes().all(|b| b.is_ascii_digit())
        && code.get(..2).and_then(|p| p.parse::<u8>().ok()).is_some_and(|p| prefixes.contains(&p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_is_masked_but_for_its_ends() {
        assert_eq!(mask_auth_code("134567890123456789"), "1345**********6789");
        assert_eq!(mask_auth_code("12345678"), "********");
        assert_eq!(mask_auth_code(""), "");
    }

    #[test]
    fn codes_are_checked_for_digits_length_and_prefix() {
        assert!(digits_with_prefix("134567890123456789", 18..=18, 10..=15));
        assert!(!digits_with_prefix("164567890123456789", 18..=18, 10..=15));
        assert!(!digits_with_prefix("13456789012345678", 18..=18, 10..=15));
        assert!(!digits_with_prefix("13456789012345678x", 18..=18, 10..=15));
        assert!(!digits_with_prefix("1", 1..=20, 10..=15));
    }

    #[test]
    fn a_compressed_schedule_divides_every_wait() {
        let s = BarcodeSchedule {
            poll_every: Duration::from_secs(5),
            give_up_after: Duration::from_secs(25),
            cancel_every: Duration::from_secs(2),
        };
        let fast = s.compressed(10);
        assert_eq!(fast.poll_every, Duration::from_millis(500));
        assert_eq!(fast.give_up_after, Duration::from_millis(2500));
        assert_eq!(fast.cancel_every, Duration::from_millis(200));
        assert_eq!(s.compressed(0), s);
    }
}

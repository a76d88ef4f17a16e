//! `txnAmt`: integer fen as a digit string, no sign, no leading zeros.

use paymux_core::{Currency, Money};

/// UnionPay's code for CNY (ISO 4217 numeric).
pub const CURRENCY_CNY: &str = "156";

/// Why an amount was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("amount {0:?} is not fen as digits without leading zeros")]
    Malformed(String),
    #[error("amount {0:?} is not a positive amount paymux can hold")]
    OutOfRange(String),
    #[error("currency {0:?} is not 156 (CNY)")]
    Currency(String),
}

/// The `txnAmt` of an amount: its fen as digits.
pub fn format_txn_amt(money: Money) -> String {
    money.minor().to_string()
}

/// Parses a `txnAmt` (or `settleAmt`) into positive CNY money.
pub fn parse_txn_amt(text: &str) -> Result<Money, AmountError> {
    let b = text.as_bytes();
    if b.is_empty() || b.len() > 18 || !b.iter().all(u8::is_ascii_digit) || b[0] == b'0' {
        return Err(if text == "0" {
            AmountError::OutOfRange(text.to_owned())
        } else {
            AmountError::Malformed(text.to_owned())
        });
    }
    let fen: i64 = text.parse().map_err(|_| AmountError::Malformed(text.to_owned()))?;
    Money::new(fen, Currency::Cny).map_err(|_| AmountError::OutOfRange(text.to_owned()))
}

/// Checks a `currencyCode`.
pub fn check_currency(code: &str) -> Result<(), AmountError> {
    if code == CURRENCY_CNY { Ok(()) } else { Err(AmountError::Currency(code.to_owned())) }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_fen_digits() {
        let m = Money::new(12_345, Currency::Cny).unwrap();
        assert_eq!(format_txn_amt(m), "12345");
        assert_eq!(parse_txn_amt("1").unwrap().minor(), 1);
        assert_eq!(parse_txn_amt("10000000000").unwrap().minor(), Money::MAX_MINOR);
    }

    #[test]
    fn malformed_zero_and_oversized_amounts_are_refused() {
        for bad in ["", "01", "1.00", "-1", "+1", " 1", "1e2", "0x10", "9999999999999999999"] {
            assert!(matches!(parse_txn_amt(bad), Err(AmountError::Malformed(_))), "{bad:?}");
        }
        assert_eq!(parse_txn_amt("0"), Err(AmountError::OutOfRange("0".into())));
        assert_eq!(
            parse_txn_amt("10000000001"),
            Err(AmountError::OutOfRange("10000000001".into()))
        );
        assert!(check_currency("156").is_ok());
        assert_eq!(check_currency("840"), Err(AmountError::Currency("840".into())));
    }
}

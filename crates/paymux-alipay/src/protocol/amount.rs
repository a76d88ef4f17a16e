//! Alipay amounts: yuan strings on the wire, integer fen everywhere else.

use paymux_core::{Currency, Money};

/// Why a yuan string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("amount {0:?} is not a yuan amount (digits, optionally '.' and one or two digits)")]
    Malformed(String),
    #[error("amount {0:?} has more than two decimals")]
    TooPrecise(String),
    #[error("amount {0:?} is too large")]
    Overflow(String),
    #[error("amount {0:?} is not a positive amount paymux can hold")]
    OutOfRange(String),
}

/// Fen to the yuan string the adapter sends: always two decimals ("0.01", "100000000.00").
///
/// Negative values never reach the wire: callers pass [`Money`], which is positive, or a
/// cumulative total that cannot be negative. A negative input is printed with its sign rather
/// than silently mangled, so a bug shows instead of moving money.
pub fn fen_to_yuan(fen: i64) -> String {
    let sign = if fen < 0 { "-" } else { "" };
    let abs = fen.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

/// The yuan string of an amount of money.
pub fn money_to_yuan(money: Money) -> String {
    fen_to_yuan(money.minor())
}

/// Parses a yuan string into fen: digits, then optionally a `.` and one or two digits.
///
/// Zero is accepted ("0.00" appears in `point_amount`); signs, spaces, exponents, a bare `.`, and
/// more than two decimals are refused. Integer arithmetic only.
pub fn yuan_to_fen(text: &str) -> Result<i64, AmountError> {
    let malformed = || AmountError::Malformed(text.to_owned());
    let (whole, frac) = match text.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (text, None),
    };
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed());
    }
    let cents = match frac {
        None => 0,
        Some(f) if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) => {
            return Err(malformed());
        }
        Some(f) if f.len() > 2 => return Err(AmountError::TooPrecise(text.to_owned())),
        Some(f) => {
            let digits: i64 = f.bytes().fold(0, |acc, b| acc * 10 + i64::from(b - b'0'));
            if f.len() == 1 { digits * 10 } else { digits }
        }
    };
    let overflow = || AmountError::Overflow(text.to_owned());
    let mut yuan: i64 = 0;
    for b in whole.bytes() {
        yuan = yuan
            .checked_mul(10)
            .and_then(|y| y.checked_add(i64::from(b - b'0')))
            .ok_or_else(overflow)?;
    }
    yuan.checked_mul(100).and_then(|f| f.checked_add(cents)).ok_or_else(overflow)
}

/// Parses a yuan string into a positive CNY [`Money`] (at most 100,000,000.00).
pub fn yuan_to_money(text: &str) -> Result<Money, AmountError> {
    let fen = yuan_to_fen(text)?;
    Money::new(fen, Currency::Cny).map_err(|_| AmountError::OutOfRange(text.to_owned()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sends_exactly_two_decimals() {
        assert_eq!(fen_to_yuan(1), "0.01");
        assert_eq!(fen_to_yuan(10), "0.10");
        assert_eq!(fen_to_yuan(100), "1.00");
        assert_eq!(fen_to_yuan(150), "1.50");
        assert_eq!(fen_to_yuan(10_000_000_000), "100000000.00");
        assert_eq!(fen_to_yuan(0), "0.00");
        let m = Money::new(123_456, Currency::Cny).unwrap();
        assert_eq!(money_to_yuan(m), "1234.56");
    }

    #[test]
    fn parses_zero_to_two_decimals() {
        assert_eq!(yuan_to_fen("0.01"), Ok(1));
        assert_eq!(yuan_to_fen("1"), Ok(100));
        assert_eq!(yuan_to_fen("1.5"), Ok(150));
        assert_eq!(yuan_to_fen("1.05"), Ok(105));
        assert_eq!(yuan_to_fen("100000000.00"), Ok(10_000_000_000));
        assert_eq!(yuan_to_fen("0.00"), Ok(0));
    }

    #[test]
    fn refuses_garbage_signs_and_extra_precision() {
        assert_eq!(yuan_to_fen("1.234"), Err(AmountError::TooPrecise("1.234".into())));
        for bad in ["", "-1", "+1", "abc", "1.", ".5", " 1", "1 ", "1e2", "1,00", "1.-1", "1.5a"] {
            assert!(
                matches!(yuan_to_fen(bad), Err(AmountError::Malformed(_))),
                "{bad:?} must be refused"
            );
        }
    }

    #[test]
    fn refuses_overflow() {
        assert_eq!(
            yuan_to_fen("92233720368547758.08"),
            Err(AmountError::Overflow("92233720368547758.08".into()))
        );
        assert!(matches!(yuan_to_fen("99999999999999999999"), Err(AmountError::Overflow(_))));
        assert_eq!(yuan_to_fen("92233720368547758.07"), Ok(i64::MAX));
    }

    #[test]
    fn money_must_be_positive_and_within_the_cap() {
        assert_eq!(yuan_to_money("0.01").unwrap().minor(), 1);
        assert!(matches!(yuan_to_money("0.00"), Err(AmountError::OutOfRange(_))));
        assert!(matches!(yuan_to_money("100000000.01"), Err(AmountError::OutOfRange(_))));
    }
}

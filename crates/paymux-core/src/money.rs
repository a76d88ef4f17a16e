use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An ISO 4217 currency paymux can move. Only CNY today: every channel settles in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Currency {
    #[serde(rename = "CNY")]
    Cny,
}

impl Currency {
    pub fn code(self) -> &'static str {
        match self {
            Currency::Cny => "CNY",
        }
    }

    /// How many minor units make one major unit (fen per yuan).
    pub fn minor_per_major(self) -> i64 {
        match self {
            Currency::Cny => 100,
        }
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Currency {
    type Err = MoneyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "CNY" => Ok(Currency::Cny),
            other => Err(MoneyError::UnknownCurrency(other.to_owned())),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("currency {0:?} is not supported (supported: CNY)")]
    UnknownCurrency(String),
    #[error("amount must be a positive integer number of minor units, got {0}")]
    NotPositive(i64),
    #[error("amount {0} is larger than the largest amount a channel accepts (10000000000 fen)")]
    TooLarge(i64),
    #[error("amounts in different currencies cannot be combined")]
    CurrencyMismatch,
    #[error("amount arithmetic overflowed")]
    Overflow,
}

/// A positive amount of money: integer minor units (fen) and a currency. No floats, anywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    minor: i64,
    currency: Currency,
}

impl Money {
    /// The largest single amount any of the channels accepts: 100,000,000.00 yuan (Alipay's cap).
    pub const MAX_MINOR: i64 = 10_000_000_000;

    pub fn new(minor: i64, currency: Currency) -> Result<Self, MoneyError> {
        if minor <= 0 {
            return Err(MoneyError::NotPositive(minor));
        }
        if minor > Self::MAX_MINOR {
            return Err(MoneyError::TooLarge(minor));
        }
        Ok(Self { minor, currency })
    }

    pub fn minor(self) -> i64 {
        self.minor
    }

    pub fn currency(self) -> Currency {
        self.currency
    }

    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        if self.currency != other.currency {
            return Err(MoneyError::CurrencyMismatch);
        }
        let sum = self.minor.checked_add(other.minor).ok_or(MoneyError::Overflow)?;
        Money::new(sum, self.currency)
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let per = self.currency.minor_per_major();
        write!(f, "{}.{:02} {}", self.minor / per, self.minor % per, self.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_zero_negative_and_oversized_amounts() {
        assert_eq!(Money::new(0, Currency::Cny), Err(MoneyError::NotPositive(0)));
        assert_eq!(Money::new(-5, Currency::Cny), Err(MoneyError::NotPositive(-5)));
        assert!(Money::new(Money::MAX_MINOR, Currency::Cny).is_ok());
        assert_eq!(
            Money::new(Money::MAX_MINOR + 1, Currency::Cny),
            Err(MoneyError::TooLarge(Money::MAX_MINOR + 1))
        );
    }

    #[test]
    fn displays_as_major_units_without_floats() {
        let m = Money::new(1, Currency::Cny).unwrap();
        assert_eq!(m.to_string(), "0.01 CNY");
        let m = Money::new(123_456, Currency::Cny).unwrap();
        assert_eq!(m.to_string(), "1234.56 CNY");
    }

    #[test]
    fn currency_parses_only_known_codes() {
        assert_eq!("CNY".parse::<Currency>(), Ok(Currency::Cny));
        assert!(
            matches!("USD".parse::<Currency>(), Err(MoneyError::UnknownCurrency(c)) if c == "USD")
        );
        assert!("cny".parse::<Currency>().is_err());
    }

    #[test]
    fn adding_checks_overflow_and_currency() {
        let a = Money::new(5, Currency::Cny).unwrap();
        assert_eq!(a.checked_add(a).unwrap().minor(), 10);
        let big = Money::new(Money::MAX_MINOR, Currency::Cny).unwrap();
        assert_eq!(big.checked_add(a), Err(MoneyError::TooLarge(Money::MAX_MINOR + 5)));
    }
}

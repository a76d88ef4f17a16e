//! UnionPay times: `YYYYMMDDhhmmss` in Beijing time (`txnTime`, `payTimeout`), and the year-less
//! `traceTime` (`MMDDhhmmss`) and `settleDate` (`MMDD`), whose year comes from `txnTime`.

use time::format_description::FormatItem;
use time::macros::{format_description, offset};
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

const FORMAT: &[FormatItem<'static>] =
    format_description!("[year][month][day][hour][minute][second]");

/// Beijing time: a fixed +08:00 (China has no DST).
pub const BEIJING: UtcOffset = offset!(+8);

/// Why a time was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a {shape} time")]
pub struct TimeError {
    pub value: String,
    pub shape: &'static str,
}

/// An instant as `YYYYMMDDhhmmss`, Beijing wall-clock time, whole seconds.
pub fn format_txn_time(at: OffsetDateTime) -> String {
    let t = at.to_offset(BEIJING);
    format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Parses `YYYYMMDDhhmmss` as Beijing time.
pub fn parse_txn_time(text: &str) -> Result<OffsetDateTime, TimeError> {
    let err = || TimeError { value: text.to_owned(), shape: "YYYYMMDDhhmmss" };
    if text.len() != 14 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err());
    }
    PrimitiveDateTime::parse(text, FORMAT).map(|t| t.assume_offset(BEIJING)).map_err(|_| err())
}

/// The Beijing calendar date of an instant.
pub fn beijing_date(at: OffsetDateTime) -> Date {
    at.to_offset(BEIJING).date()
}

/// `traceTime` (`MMDDhhmmss`, Beijing) of a transaction sent at `txn_time`. The year is
/// `txn_time`'s, or the next one when that would put the trace more than a day before the
/// transaction (sent on 31 December, traced on 1 January).
pub fn resolve_trace_time(
    text: &str,
    txn_time: OffsetDateTime,
) -> Result<OffsetDateTime, TimeError> {
    let err = || TimeError { value: text.to_owned(), shape: "MMDDhhmmss" };
    let d = digits(text, 10).ok_or_else(err)?;
    let clock = Time::from_hms(d[2], d[3], d[4]).map_err(|_| err())?;
    let date = resolve_month_day(d[0], d[1], beijing_date(txn_time)).ok_or_else(err)?;
    Ok(PrimitiveDateTime::new(date, clock).assume_offset(BEIJING))
}

/// `settleDate` (`MMDD`) of a transaction sent at `txn_time`, with the same year rule as
/// [`resolve_trace_time`].
pub fn resolve_settle_date(text: &str, txn_time: OffsetDateTime) -> Result<Date, TimeError> {
    let err = || TimeError { value: text.to_owned(), shape: "MMDD" };
    let d = digits(text, 4).ok_or_else(err)?;
    resolve_month_day(d[0], d[1], beijing_date(txn_time)).ok_or_else(err)
}

/// The first date on or after the day before `txn_date` with this month and day.
fn resolve_month_day(month: u8, day: u8, txn_date: Date) -> Option<Date> {
    let month = Month::try_from(month).ok()?;
    let floor = txn_date.previous_day()?;
    (txn_date.year()..=txn_date.year() + 4)
        .filter_map(|y| Date::from_calendar_date(y, month, day).ok())
        .find(|d| *d >= floor)
}

/// Exactly `len` ASCII digits, read two at a time: `"0908"` -> `[9, 8]`.
fn digits(text: &str, len: usize) -> Option<Vec<u8>> {
    let b = text.as_bytes();
    if b.len() != len || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.chunks(2).map(|p| (p[0] - b'0') * 10 + (p[1] - b'0')).collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use time::macros::{date, datetime};

    #[test]
    fn txn_time_is_beijing_wall_clock() {
        assert_eq!(format_txn_time(datetime!(2022-09-08 05:22:06 UTC)), "20220908132206");
        assert_eq!(format_txn_time(datetime!(2026-12-31 16:00:00.9 UTC)), "20270101000000");
        let t = parse_txn_time("20220908132206").unwrap();
        assert_eq!(t, datetime!(2022-09-08 05:22:06 UTC));
        for bad in ["", "2022090813220", "20221308132206", "2022-09-08 13:22", "+0220908132206"] {
            assert!(parse_txn_time(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn trace_time_takes_its_year_from_txn_time() {
        let txn = parse_txn_time("20220908132206").unwrap();
        assert_eq!(resolve_trace_time("0908132206", txn).unwrap(), txn);
        let new_year = parse_txn_time("20261231235959").unwrap();
        assert_eq!(
            resolve_trace_time("0101000001", new_year).unwrap(),
            datetime!(2027-01-01 00:00:01 +8)
        );
        assert!(resolve_trace_time("1308132206", txn).is_err());
        assert!(resolve_trace_time("09081322", txn).is_err());
    }

    #[test]
    fn settle_date_takes_its_year_from_txn_time_across_new_year() {
        let txn = parse_txn_time("20220908132206").unwrap();
        assert_eq!(resolve_settle_date("0908", txn).unwrap(), date!(2022 - 09 - 08));
        assert_eq!(resolve_settle_date("0909", txn).unwrap(), date!(2022 - 09 - 09));
        let late = parse_txn_time("20261231233000").unwrap();
        assert_eq!(resolve_settle_date("0101", late).unwrap(), date!(2027 - 01 - 01));
        let leap = parse_txn_time("20270227100000").unwrap();
        assert_eq!(resolve_settle_date("0229", leap).unwrap(), date!(2028 - 02 - 29));
        assert!(resolve_settle_date("0230", txn).is_err());
        assert!(resolve_settle_date("9", txn).is_err());
    }
}

//! Alipay's `yyyy-MM-dd HH:mm:ss` times, always Beijing time (a fixed +08:00: China has no DST).

use time::format_description::FormatItem;
use time::macros::{format_description, offset};
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

const FORMAT: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");

/// Beijing time.
pub const BEIJING: UtcOffset = offset!(+8);

/// Why a time string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a yyyy-MM-dd HH:mm:ss time")]
pub struct TimeError(pub String);

/// Formats an instant as Alipay wants it: Beijing wall-clock time, whole seconds.
pub fn format_beijing(at: OffsetDateTime) -> String {
    let local = at.to_offset(BEIJING);
    // Formatting a valid date with this fixed description cannot fail; the fallback keeps the
    // function total without a panic path.
    local.format(FORMAT).unwrap_or_else(|_| {
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            local.year(),
            u8::from(local.month()),
            local.day(),
            local.hour(),
            local.minute(),
            local.second()
        )
    })
}

/// Parses an Alipay time (`gmt_payment`, `send_pay_date`, ...) as Beijing time.
pub fn parse_beijing(text: &str) -> Result<OffsetDateTime, TimeError> {
    PrimitiveDateTime::parse(text, FORMAT)
        .map(|t| t.assume_offset(BEIJING))
        .map_err(|_| TimeError(text.to_owned()))
}

/// The longest relative timeout Alipay takes (`15d`), in minutes.
pub const MAX_TIMEOUT_MINUTES: i64 = 15 * 24 * 60;

/// A relative timeout (`timeout_express`, `qr_code_timeout_express`) that covers `from..until`:
/// whole minutes, rounded up (Alipay takes `90m`, not `1.5h`), between `1m` and `15d`. Returns
/// the value to send and how long it really is.
pub fn timeout_express(from: OffsetDateTime, until: OffsetDateTime) -> (String, time::Duration) {
    let seconds = (until - from).whole_seconds();
    let minutes = (seconds + 59).div_euclid(60).clamp(1, MAX_TIMEOUT_MINUTES);
    (format!("{minutes}m"), time::Duration::minutes(minutes))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn a_relative_timeout_rounds_up_to_whole_minutes_within_alipays_range() {
        let t = datetime!(2026-11-29 08:00:00 UTC);
        let s = time::Duration::seconds;
        assert_eq!(timeout_express(t, t + s(60)), ("1m".to_owned(), s(60)));
        assert_eq!(timeout_express(t, t + s(61)), ("2m".to_owned(), s(120)));
        assert_eq!(timeout_express(t, t + s(5400)), ("90m".to_owned(), s(5400)));
        assert_eq!(timeout_express(t, t - s(30)), ("1m".to_owned(), s(60)));
        assert_eq!(timeout_express(t, t + time::Duration::days(40)).0, "21600m");
    }

    #[test]
    fn formats_in_beijing_time_whatever_the_offset() {
        assert_eq!(format_beijing(datetime!(2023-12-21 06:48:44 UTC)), "2023-12-21 14:48:44");
        assert_eq!(format_beijing(datetime!(2023-12-31 20:00:00.999 UTC)), "2024-01-01 04:00:00");
        assert_eq!(format_beijing(datetime!(2023-12-21 14:48:44 +8)), "2023-12-21 14:48:44");
    }

    #[test]
    fn parses_as_beijing_time() {
        let t = parse_beijing("2019-08-15 15:56:24").unwrap();
        assert_eq!(t, datetime!(2019-08-15 07:56:24 UTC));
        assert_eq!(format_beijing(t), "2019-08-15 15:56:24");
    }

    #[test]
    fn refuses_other_shapes() {
        for bad in ["", "2019-08-15T15:56:24", "2019-08-15 15:56", "2019-13-01 00:00:00", "x"] {
            assert!(parse_beijing(bad).is_err(), "{bad:?}");
        }
    }
}

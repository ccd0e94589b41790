//! ISO 8601 dates to Parse's canonical form: UTC with milliseconds,
//! `YYYY-MM-DDTHH:MM:SS.mmmZ`.
//!
//! Accepted input: a date (`2012-01-01`, read as midnight UTC), or a date and
//! time with `T` or a space between them, optional seconds and fraction, and
//! `Z`, `±HH:MM`, `±HHMM` or no offset (read as UTC).

/// Rewrites `input` in Parse's canonical form, or returns `None` when it is
/// not an ISO 8601 date.
pub fn normalize(input: &str) -> Option<String> {
    parse_millis(input).map(format_millis)
}

/// Milliseconds since the Unix epoch, UTC.
pub fn parse_millis(input: &str) -> Option<i64> {
    let s = input.trim();
    let bytes = s.as_bytes();
    if bytes.len() < 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return None;
    }
    let year: i64 = digits(&s[0..4])?;
    let month: i64 = digits(&s[5..7])?;
    let day: i64 = digits(&s[8..10])?;
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    let mut millis = days_from_civil(year, month, day) * 86_400_000;

    let rest = &s[10..];
    if rest.is_empty() {
        return Some(millis);
    }
    let rest = rest.strip_prefix('T').or_else(|| rest.strip_prefix(' '))?;
    let (time, offset_minutes) = split_offset(rest)?;
    millis += parse_time(time)?;
    Some(millis - offset_minutes * 60_000)
}

/// Formats milliseconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn format_millis(millis: i64) -> String {
    let days = millis.div_euclid(86_400_000);
    let in_day = millis.rem_euclid(86_400_000);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000
    )
}

/// `HH:MM[:SS[.fraction]]` to milliseconds after midnight.
fn parse_time(time: &str) -> Option<i64> {
    let (clock, fraction) = match time.split_once(['.', ',']) {
        Some((clock, fraction)) => (clock, Some(fraction)),
        None => (time, None),
    };
    let mut parts = clock.split(':');
    let hours: i64 = digits(parts.next()?)?;
    let minutes: i64 = digits(parts.next()?)?;
    let seconds: i64 = parts.next().map(digits).unwrap_or(Some(0))?;
    if parts.next().is_some() || hours > 23 || minutes > 59 || seconds > 60 {
        return None;
    }

    // Keep milliseconds; further digits are truncated.
    let millis = match fraction {
        None => 0,
        Some(f) if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) => return None,
        Some(f) => {
            let padded: String = f.chars().chain("000".chars()).take(3).collect();
            digits(&padded)?
        }
    };
    Some(((hours * 60 + minutes) * 60 + seconds) * 1000 + millis)
}

/// Splits a trailing `Z`, `±HH:MM` or `±HHMM` off a time; returns the offset
/// east of UTC in minutes.
fn split_offset(rest: &str) -> Option<(&str, i64)> {
    if let Some(time) = rest.strip_suffix('Z').or_else(|| rest.strip_suffix('z')) {
        return Some((time, 0));
    }
    let Some(sign_at) = rest.rfind(['+', '-']) else {
        return Some((rest, 0));
    };
    let (time, offset) = rest.split_at(sign_at);
    let sign = if offset.starts_with('-') { -1 } else { 1 };
    let offset = offset[1..].replace(':', "");
    if offset.len() != 4 {
        return None;
    }
    let hours: i64 = digits(&offset[0..2])?;
    let minutes: i64 = digits(&offset[2..4])?;
    Some((time, sign * (hours * 60 + minutes)))
}

fn digits(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil` algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn date_only_is_midnight_utc() {
        assert_eq!(normalize("2012-01-01").as_deref(), Some("2012-01-01T00:00:00.000Z"));
    }

    #[test]
    fn offset_is_converted_to_utc() {
        assert_eq!(
            normalize("2015-12-31T22:30:00-05:00").as_deref(),
            Some("2016-01-01T03:30:00.000Z")
        );
        assert_eq!(normalize("2015-06-01T02:00+0230").as_deref(), Some("2015-05-31T23:30:00.000Z"));
    }

    #[test]
    fn fraction_keeps_milliseconds() {
        assert_eq!(normalize("2020-02-29T12:00:00.5Z").as_deref(), Some("2020-02-29T12:00:00.500Z"));
        assert_eq!(
            normalize("2020-02-29 12:00:00.123456").as_deref(),
            Some("2020-02-29T12:00:00.123Z")
        );
    }

    #[test]
    fn invalid_dates_are_rejected() {
        for bad in ["2013-02-29", "2012-13-01", "2012-1-1", "yesterday", "2012-01-01T25:00", "2012-01-01T10:00+5"] {
            assert_eq!(normalize(bad), None, "{bad}");
        }
    }

    #[test]
    fn dates_before_epoch() {
        assert_eq!(normalize("1931-07-04").as_deref(), Some("1931-07-04T00:00:00.000Z"));
    }
}

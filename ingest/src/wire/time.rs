//! RFC 3339 timestamps → integer nanoseconds since the Unix epoch, exactly.
//!
//! Kalshi's delta `ts` carries a varying number of fraction digits (ns in 2025 captures, µs in
//! 2026); ticker `time` is "high precision". Every digit up to nanoseconds is kept; more than nine
//! fraction digits are accepted only when the extra ones are zeros.

/// Why a timestamp was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeError {
    /// Not `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`, or a field out of its range.
    Syntax,
    /// Nonzero digits below one nanosecond.
    TooMuchPrecision,
    /// Valid, but outside what ns since the epoch in an `i64` can hold (years 1677..=2262).
    OutOfRange,
}

const NS_PER_S: i64 = 1_000_000_000;

/// Parses an RFC 3339 timestamp into ns since the epoch (UTC).
pub fn parse_rfc3339_ns(text: &[u8]) -> Result<i64, TimeError> {
    parse_rfc3339(text).map(|(ns, _)| ns)
}

/// Parses an RFC 3339 timestamp into (ns since the epoch, number of fraction digits written).
/// The digit count tells the precision the sender had, so the finest of several times can win.
pub fn parse_rfc3339(text: &[u8]) -> Result<(i64, u32), TimeError> {
    // Fixed part: YYYY-MM-DDTHH:MM:SS (19 bytes), then a fraction and/or a zone (≥ 1 byte).
    let Some((fixed, _)) = text.split_first_chunk::<19>() else {
        return Err(TimeError::Syntax);
    };
    if text.len() < 20 {
        return Err(TimeError::Syntax);
    }
    // Every digit position at once: any non-digit wraps to a value above 9.
    const DIGITS: [usize; 14] = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18];
    if DIGITS.iter().any(|&i| fixed[i].wrapping_sub(b'0') > 9)
        || fixed[4] != b'-'
        || fixed[7] != b'-'
        || !matches!(fixed[10], b'T' | b't')
        || fixed[13] != b':'
        || fixed[16] != b':'
    {
        return Err(TimeError::Syntax);
    }
    let d = |i: usize| i64::from(fixed[i] - b'0');
    let year = d(0) * 1000 + d(1) * 100 + d(2) * 10 + d(3);
    let month = d(5) * 10 + d(6);
    let day = d(8) * 10 + d(9);
    let hour = d(11) * 10 + d(12);
    let minute = d(14) * 10 + d(15);
    let second = d(17) * 10 + d(18);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return Err(TimeError::Syntax);
    }
    let mut rest = &text[19..];
    let mut frac_ns: i64 = 0;
    let mut frac_digits = 0_u32;
    if rest.first() == Some(&b'.') {
        let digits = rest[1..].iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 {
            return Err(TimeError::Syntax);
        }
        for (i, &b) in rest[1..=digits].iter().enumerate() {
            let d = i64::from(b - b'0');
            if i < 9 {
                frac_ns = frac_ns * 10 + d;
            } else if d != 0 {
                return Err(TimeError::TooMuchPrecision);
            }
        }
        for _ in digits..9 {
            frac_ns *= 10;
        }
        rest = &rest[1 + digits..];
        frac_digits = u32::try_from(digits).unwrap_or(u32::MAX);
    }
    let offset_s = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let oh = num(&[*h1, *h2])?;
            let om = num(&[*m1, *m2])?;
            if oh > 23 || om > 59 {
                return Err(TimeError::Syntax);
            }
            let off = oh * 3600 + om * 60;
            if *sign == b'+' { off } else { -off }
        }
        _ => return Err(TimeError::Syntax),
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_s;
    let ns = secs.checked_mul(NS_PER_S).and_then(|ns| ns.checked_add(frac_ns));
    Ok((ns.ok_or(TimeError::OutOfRange)?, frac_digits))
}

/// Writes ns since the epoch as RFC 3339 UTC with `frac_digits` fraction digits (0..=9),
/// truncating below that precision. Used by the encoder and tests.
pub fn write_rfc3339(out: &mut String, ts_ns: i64, frac_digits: u32) {
    use std::fmt::Write as _;
    let secs = ts_ns.div_euclid(NS_PER_S);
    let frac = ts_ns.rem_euclid(NS_PER_S);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let _ =
        write!(out, "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}", sod / 3600, sod / 60 % 60, sod % 60);
    if frac_digits > 0 {
        let digits = frac_digits.min(9);
        let _ = write!(out, ".{:0w$}", frac / 10_i64.pow(9 - digits), w = digits as usize);
    }
    out.push('Z');
}

fn num(digits: &[u8]) -> Result<i64, TimeError> {
    let mut v = 0_i64;
    for &b in digits {
        if !b.is_ascii_digit() {
            return Err(TimeError::Syntax);
        }
        v = v * 10 + i64::from(b - b'0');
    }
    Ok(v)
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

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        assert_eq!(parse_rfc3339_ns(b"1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_rfc3339_ns(b"2026-09-25T19:16:20.921884Z"), Ok(1_790_363_780_921_884_000));
        assert_eq!(
            parse_rfc3339_ns(b"2025-08-12T21:00:32.539836022Z"),
            Ok(1_755_032_432_539_836_022)
        );
        assert_eq!(parse_rfc3339_ns(b"2022-11-22T20:44:01Z"), Ok(1_669_149_841_000_000_000));
        assert_eq!(parse_rfc3339_ns(b"2022-11-22T21:44:01.5+01:00"), Ok(1_669_149_841_500_000_000));
        assert_eq!(
            parse_rfc3339_ns(b"2024-02-29T00:00:00.000000000000Z"),
            Ok(1_709_164_800_000_000_000)
        );
        assert_eq!(parse_rfc3339_ns(b"1969-12-31T23:59:59.999999999Z"), Ok(-1));
    }

    #[test]
    fn refusals() {
        assert_eq!(parse_rfc3339_ns(b"2023-02-29T00:00:00Z"), Err(TimeError::Syntax));
        assert_eq!(parse_rfc3339_ns(b"2026-09-25 19:16:20Z"), Err(TimeError::Syntax));
        assert_eq!(parse_rfc3339_ns(b"2026-09-25T19:16:20"), Err(TimeError::Syntax));
        assert_eq!(parse_rfc3339_ns(b"2026-09-25T19:16:20.Z"), Err(TimeError::Syntax));
        assert_eq!(parse_rfc3339_ns(b"2026-13-25T19:16:20Z"), Err(TimeError::Syntax));
        assert_eq!(parse_rfc3339_ns(b"2026-09-25T24:16:20Z"), Err(TimeError::Syntax));
        assert_eq!(
            parse_rfc3339_ns(b"2026-09-25T19:16:20.1234567891Z"),
            Err(TimeError::TooMuchPrecision)
        );
        assert_eq!(parse_rfc3339_ns(b"2026-09-25T19:16:20+0100"), Err(TimeError::Syntax));
        assert_eq!(parse_rfc3339_ns(b""), Err(TimeError::Syntax));
        assert_eq!(parse_rfc3339_ns(b"1011-11-22T20:44:01Z"), Err(TimeError::OutOfRange));
        assert_eq!(parse_rfc3339_ns(b"2263-01-01T00:00:00Z"), Err(TimeError::OutOfRange));
        assert_eq!(parse_rfc3339_ns(b"2262-04-11T23:47:16.854775807Z"), Ok(i64::MAX));
    }

    #[test]
    fn writes_back() {
        let mut s = String::new();
        write_rfc3339(&mut s, 1_790_363_780_921_884_000, 6);
        assert_eq!(s, "2026-09-25T19:16:20.921884Z");
        s.clear();
        write_rfc3339(&mut s, -1, 9);
        assert_eq!(s, "1969-12-31T23:59:59.999999999Z");
    }
}

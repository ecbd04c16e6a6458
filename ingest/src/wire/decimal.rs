//! Exact fixed-point decimal conversion: `"-30.00"` at scale 2 → `-3000`, no floating point.
//!
//! Kalshi sends prices as dollar strings (`"0.4200"`, sometimes 3 or 6 decimals) and sizes as
//! two-decimal contract strings (`"136.00"`). Both are parsed digit by digit into integers at a
//! fixed scale; digits beyond the scale are accepted only when they are zeros (the value is still
//! exact), anything else is refused as too precise rather than rounded.

/// Why a decimal string was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecimalError {
    /// Not of the form `[-+]digits[.digits]` (empty, stray characters, exponent, lone dot).
    Syntax,
    /// Nonzero digits beyond the supported scale: the value cannot be represented exactly.
    TooMuchPrecision,
    /// The value does not fit the integer type.
    Overflow,
}

/// Parses `text` as a decimal and returns it multiplied by `10^scale`, exactly.
///
/// Accepts an optional sign, integer digits, and an optional fraction (`"5"`, `"-0.25"`,
/// `".5"` is refused: Kalshi always writes the leading zero, and so must anything we accept).
pub fn parse_scaled(text: &[u8], scale: u32) -> Result<i64, DecimalError> {
    let (negative, body) = match text.first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let (int_part, frac_part) = match body.iter().position(|&b| b == b'.') {
        Some(dot) => {
            let frac = &body[dot + 1..];
            if frac.is_empty() {
                return Err(DecimalError::Syntax);
            }
            (&body[..dot], frac)
        }
        None => (body, &body[body.len()..]),
    };
    if int_part.is_empty() {
        return Err(DecimalError::Syntax);
    }
    let mut value: i64 = 0;
    let mut push = |d: i64| -> Result<(), DecimalError> {
        value =
            value.checked_mul(10).and_then(|v| v.checked_add(d)).ok_or(DecimalError::Overflow)?;
        Ok(())
    };
    for &b in int_part {
        push(digit(b)?)?;
    }
    let scale = scale as usize;
    for i in 0..scale {
        push(match frac_part.get(i) {
            Some(&b) => digit(b)?,
            None => 0,
        })?;
    }
    for &b in frac_part.iter().skip(scale) {
        if digit(b)? != 0 {
            return Err(DecimalError::TooMuchPrecision);
        }
    }
    Ok(if negative { -value } else { value })
}

#[inline]
fn digit(b: u8) -> Result<i64, DecimalError> {
    if b.is_ascii_digit() { Ok(i64::from(b - b'0')) } else { Err(DecimalError::Syntax) }
}

/// Writes `value / 10^scale` with exactly `scale` fraction digits (`-3000`, 2 → `"-30.00"`).
pub fn write_scaled(out: &mut String, value: i64, scale: u32) {
    use std::fmt::Write as _;
    let pow = 10_i64.pow(scale);
    let sign = if value < 0 { "-" } else { "" };
    let abs = value.unsigned_abs();
    let pow_u = pow.unsigned_abs();
    if scale == 0 {
        let _ = write!(out, "{sign}{abs}");
    } else {
        let _ =
            write!(out, "{sign}{}.{:0width$}", abs / pow_u, abs % pow_u, width = scale as usize);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_values() {
        assert_eq!(parse_scaled(b"0.4200", 6), Ok(420_000));
        assert_eq!(parse_scaled(b"0.42", 6), Ok(420_000));
        assert_eq!(parse_scaled(b"0.960", 6), Ok(960_000));
        assert_eq!(parse_scaled(b"0.123456", 6), Ok(123_456));
        assert_eq!(parse_scaled(b"1.0000", 6), Ok(1_000_000));
        assert_eq!(parse_scaled(b"-30.00", 2), Ok(-3000));
        assert_eq!(parse_scaled(b"74.77", 2), Ok(7477));
        assert_eq!(parse_scaled(b"+5", 2), Ok(500));
        assert_eq!(parse_scaled(b"0", 2), Ok(0));
        assert_eq!(parse_scaled(b"-0.00", 2), Ok(0));
        assert_eq!(parse_scaled(b"12.5000000", 2), Ok(1250));
        assert_eq!(parse_scaled(b"92233720368547758.07", 2), Ok(i64::MAX));
        assert_eq!(parse_scaled(b"10000000000000.00", 2), Ok(1_000_000_000_000_000));
    }

    #[test]
    fn refusals() {
        assert_eq!(parse_scaled(b"", 2), Err(DecimalError::Syntax));
        assert_eq!(parse_scaled(b"-", 2), Err(DecimalError::Syntax));
        assert_eq!(parse_scaled(b".5", 2), Err(DecimalError::Syntax));
        assert_eq!(parse_scaled(b"5.", 2), Err(DecimalError::Syntax));
        assert_eq!(parse_scaled(b"1e3", 2), Err(DecimalError::Syntax));
        assert_eq!(parse_scaled(b"0.4x", 6), Err(DecimalError::Syntax));
        assert_eq!(parse_scaled(b" 1", 2), Err(DecimalError::Syntax));
        assert_eq!(parse_scaled(b"--1", 2), Err(DecimalError::Syntax));
        assert_eq!(parse_scaled(b"0.1234567", 6), Err(DecimalError::TooMuchPrecision));
        assert_eq!(parse_scaled(b"1.005", 2), Err(DecimalError::TooMuchPrecision));
        assert_eq!(parse_scaled(b"92233720368547758.08", 2), Err(DecimalError::Overflow));
        assert_eq!(parse_scaled(b"99999999999999999999", 0), Err(DecimalError::Overflow));
    }

    #[test]
    fn writes_back() {
        let mut s = String::new();
        write_scaled(&mut s, -3000, 2);
        s.push(' ');
        write_scaled(&mut s, 420_000, 4 + 2);
        s.push(' ');
        write_scaled(&mut s, 7, 2);
        s.push(' ');
        write_scaled(&mut s, 42, 0);
        assert_eq!(s, "-30.00 0.420000 0.07 42");
    }
}

//! Durations in Go's `time.ParseDuration` syntax, the one forwarder-vpp's variables use
//! (`NSM_DIAL_TIMEOUT=750ms`, `NSM_MAX_TOKEN_LIFETIME=10m`): a sequence of decimal numbers, each
//! with an optional fraction and a unit (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`), such as `750ms`,
//! `2s`, `1m30s` or `1.5h`; `0` alone needs no unit.
//!
//! Unlike Go, a sign is refused: vwire's durations are timeouts and lifetimes, for which a
//! negative value means nothing. The error says what is wrong with the text; the caller adds
//! the key and the variable.

use std::time::Duration;

/// Nanoseconds per unit, longest suffix first so that `ms` is not read as `m` then `s`.
const UNITS: [(&str, u128); 8] = [
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("μs", 1_000), // U+03BC, which Go accepts too
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// Parses `text` (see the module doc).
pub fn parse(text: &str) -> Result<Duration, String> {
    let bad = |why: &str| {
        format!("{text:?} is not a duration ({why}; e.g. \"750ms\", \"2s\", \"1m30s\")")
    };
    let s = text.trim();
    if s.starts_with(['-', '+']) {
        return Err(bad("a sign is not allowed"));
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(bad("it is empty"));
    }
    let mut rest = s;
    let mut nanos: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (int, after) = rest.split_at(int_len);
        let (frac, after) = match after.strip_prefix('.') {
            Some(a) => a.split_at(a.find(|c: char| !c.is_ascii_digit()).unwrap_or(a.len())),
            None => ("", after),
        };
        if int.is_empty() && frac.is_empty() {
            return Err(bad("a number is missing"));
        }
        let Some(&(unit, scale)) = UNITS.iter().find(|(u, _)| after.starts_with(u)) else {
            return Err(bad("a unit is missing or unknown: ns, us, ms, s, m or h"));
        };
        let too_long = || bad("it is too long");
        let whole: u128 = match int {
            "" => 0,
            i => i.parse().map_err(|_| too_long())?,
        };
        // The fraction's digits beyond nanosecond precision are dropped, as Go does.
        let mut frac_nanos: u128 = 0;
        let mut div: u128 = 1;
        for d in frac.bytes().take(30) {
            frac_nanos = frac_nanos * 10 + u128::from(d - b'0');
            div *= 10;
        }
        nanos = whole
            .checked_mul(scale)
            .and_then(|n| n.checked_add(frac_nanos * scale / div))
            .and_then(|n| nanos.checked_add(n))
            .ok_or_else(too_long)?;
        rest = &after[unit.len()..];
    }
    let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| bad("it is too long"))?;
    // Cannot truncate: the remainder of a division by 10^9 fits in u32.
    let sub = u32::try_from(nanos % 1_000_000_000).unwrap_or(0);
    Ok(Duration::new(secs, sub))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse() {
        for (text, want) in [
            ("750ms", Duration::from_millis(750)),
            ("2s", Duration::from_secs(2)),
            ("1m30s", Duration::from_secs(90)),
            ("10m", Duration::from_secs(600)),
            ("24h", Duration::from_secs(86_400)),
            ("1.5h", Duration::from_secs(5_400)),
            (".5s", Duration::from_millis(500)),
            ("1h2m3s4ms5us6ns", Duration::new(3_723, 4_005_006)),
            ("300µs", Duration::from_micros(300)),
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
            (" 50ms ", Duration::from_millis(50)),
        ] {
            assert_eq!(parse(text), Ok(want), "{text:?}");
        }
    }

    #[test]
    fn bad_durations_say_why() {
        for (text, why) in [
            ("", "empty"),
            ("750", "unit is missing"),
            ("2 s", "unit is missing"),
            ("5d", "unit is missing or unknown"),
            ("ms", "number is missing"),
            ("-1s", "sign"),
            ("1s-", "number is missing"),
            ("99999999999999999999999999999999999999999h", "too long"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(
                e.contains(why) && e.contains(&format!("{text:?}")),
                "{text:?}: {e}"
            );
        }
    }
}

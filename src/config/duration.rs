//! Human durations in the config: `250ms`, `5s`, `10m`, `24h`, `2d`, `1h30m`.
//!
//! Every duration is written with its unit so a reader never has to guess.
//! Any duration in the config is at most [`MAX`] (365 days): larger values
//! are refused at load time, so the arithmetic done with them later (retry
//! schedules, due times in milliseconds) stays far from overflowing.

use std::time::Duration;

/// The longest duration any config key takes: 365 days.
pub const MAX: Duration = Duration::from_secs(365 * 86_400);

/// [`MAX`] as the config writes it, for messages.
pub const MAX_TEXT: &str = "365d";

/// Parses `250ms`, `5s`, `10m`, `24h`, `2d` or a sum such as `1h30m`
/// (fractions allowed: `1.5s`).
///
/// A bare number is refused: the unit is what makes a config readable. A
/// value beyond [`MAX`] is refused here already (and the sum of parts is
/// computed with checked arithmetic), so no input can overflow. Messages
/// never quote the text.
pub fn parse(text: &str) -> Result<Duration, String> {
    const HINT: &str = "write e.g. 250ms, 5s, 10m, 24h or 2d";
    let text = text.trim();
    if text.is_empty() {
        return Err(format!("is an empty duration; {HINT}"));
    }
    let too_long = || format!("is too long: a duration is at most {MAX_TEXT}");
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(|| format!("has no unit; {HINT}"))?;
        if digits == 0 {
            return Err(format!("is not a duration; {HINT}"));
        }
        let number: f64 = rest[..digits]
            .parse()
            .map_err(|_| format!("has a malformed number; {HINT}"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let seconds = match unit {
            "ms" => number / 1000.0,
            "s" => number,
            "m" => number * 60.0,
            "h" => number * 3600.0,
            "d" => number * 86400.0,
            _ => {
                return Err(format!(
                    "has an unknown unit; use ms, s, m, h or d ({HINT})"
                ))
            }
        };
        let part = Duration::try_from_secs_f64(seconds).map_err(|_| too_long())?;
        total = total.checked_add(part).ok_or_else(too_long)?;
        if total > MAX {
            return Err(too_long());
        }
    }
    Ok(total)
}

/// Formats a duration the way the config writes it (for messages and docs).
pub fn format(duration: Duration) -> String {
    let ms = duration.as_millis();
    if ms % 3_600_000 == 0 && ms > 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms % 60_000 == 0 && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_unit() {
        assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse("24h").unwrap(), Duration::from_secs(86400));
        assert_eq!(parse("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("1.5s").unwrap(), Duration::from_millis(1500));
    }

    #[test]
    fn refuses_missing_or_unknown_units() {
        assert!(parse("5").unwrap_err().contains("no unit"));
        assert!(parse("5y").unwrap_err().contains("unknown unit"));
        assert!(parse("").is_err());
        assert!(parse("s").is_err());
    }

    #[test]
    fn overflow_and_values_beyond_the_maximum_are_refused() {
        for text in [
            "199999999999999d99999999999999d",
            "200000000000000d",
            "300000000000d",
            "366d",
            "364d25h",
            "1e400s",
        ] {
            let e = parse(text).unwrap_err();
            assert!(
                e.contains("at most 365d") || e.contains("unit"),
                "{text}: {e}"
            );
        }
        assert_eq!(parse("365d").unwrap(), MAX);
        assert_eq!(parse("364d24h").unwrap(), MAX);
    }

    #[test]
    fn messages_never_quote_the_text() {
        for text in ["secretx", "12secret", "7", "1.2.3s", "secret"] {
            let e = parse(text).unwrap_err();
            assert!(!e.contains(text), "{e}");
        }
    }

    #[test]
    fn formats_round_numbers() {
        assert_eq!(format(Duration::from_secs(7200)), "2h");
        assert_eq!(format(Duration::from_secs(30)), "30s");
        assert_eq!(format(Duration::from_millis(250)), "250ms");
    }
}

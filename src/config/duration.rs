//! Human durations in the config: `250ms`, `5s`, `10m`, `24h`, `1h30m`.
//!
//! The YAML schema writes every duration as a string so that a reader never
//! has to guess the unit. These helpers are used through
//! `#[serde(with = "...")]` on the config fields.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Parses `250ms`, `5s`, `10m`, `24h`, `2d` or a sum such as `1h30m`.
///
/// A bare number is refused: the unit is what makes a config readable.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration; write e.g. 250ms, 5s, 10m, 24h".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(|| format!("`{text}` has no unit; write e.g. 250ms, 5s, 10m, 24h"))?;
        if digits == 0 {
            return Err(format!(
                "`{text}` is not a duration; write e.g. 250ms, 5s, 10m, 24h"
            ));
        }
        let number: f64 = rest[..digits]
            .parse()
            .map_err(|_| format!("`{text}` has a malformed number"))?;
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
            other => {
                return Err(format!(
                    "`{text}` has an unknown unit `{other}`; use ms, s, m, h or d"
                ))
            }
        };
        total += Duration::try_from_secs_f64(seconds)
            .map_err(|_| format!("`{text}` is out of range"))?;
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

/// A duration as written: text, or a bare number (refused with a hint).
#[derive(Deserialize)]
#[serde(untagged)]
enum Written {
    Text(String),
    Number(f64),
}

impl Written {
    fn parse(self) -> Result<Duration, String> {
        match self {
            Written::Text(text) => parse(&text),
            Written::Number(n) => Err(format!("`{n}` has no unit; write e.g. {n}s or {n}ms")),
        }
    }
}

/// `#[serde(deserialize_with)]` for a required duration field.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    Written::deserialize(d)?
        .parse()
        .map_err(serde::de::Error::custom)
}

/// `#[serde(deserialize_with)]` for an optional duration field.
pub fn deserialize_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    Option::<Written>::deserialize(d)?
        .map(|w| w.parse().map_err(serde::de::Error::custom))
        .transpose()
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
    fn formats_round_numbers() {
        assert_eq!(format(Duration::from_secs(7200)), "2h");
        assert_eq!(format(Duration::from_secs(30)), "30s");
        assert_eq!(format(Duration::from_millis(250)), "250ms");
    }
}

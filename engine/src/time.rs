//! Event time. The engine never reads a clock: every instant comes in as a
//! [`Timestamp`], taken from a signal's `ts` (replay, tests) or from the
//! ingestion time of the service. Same input, same output.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An instant of event time, in milliseconds since the Unix epoch (UTC).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// From whole Unix seconds.
    pub const fn from_secs(secs: i64) -> Self {
        Timestamp(secs * 1000)
    }

    /// Whole Unix seconds (what rules see as `s.ts`).
    pub const fn secs(self) -> i64 {
        self.0.div_euclid(1000)
    }

    /// Milliseconds since the epoch.
    pub const fn millis(self) -> i64 {
        self.0
    }

    /// Parses RFC 3339 (`2026-11-24T23:58:07Z`, with optional fraction and offset).
    pub fn parse_rfc3339(text: &str) -> Result<Self, chrono::ParseError> {
        let parsed = DateTime::parse_from_rfc3339(text)?;
        Ok(Timestamp(parsed.timestamp_millis()))
    }

    /// This instant plus a duration.
    pub const fn add(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_add(d.0))
    }

    /// This instant minus a duration.
    pub const fn sub(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_sub(d.0))
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC with a `Z`; a fraction only when the instant has one.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match DateTime::<Utc>::from_timestamp_millis(self.0) {
            Some(t) => f.write_str(&t.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
            None => write!(f, "@{}ms", self.0),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Timestamp::parse_rfc3339(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "expected an RFC 3339 timestamp, got {text:?} ({e})"
            ))
        })
    }
}

/// A span of time in milliseconds, written in config and tests as `90s`,
/// `5m`, `1h30m`, `2d` or `250ms`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub i64);

impl Duration {
    /// From whole seconds.
    pub const fn from_secs(secs: i64) -> Self {
        Duration(secs * 1000)
    }

    /// Whole seconds, rounded down.
    pub const fn secs(self) -> i64 {
        self.0 / 1000
    }
}

/// Why a duration did not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid duration {text:?}: {why} (write e.g. 30s, 5m, 1h30m, 2d)")]
pub struct DurationError {
    text: String,
    why: &'static str,
}

impl FromStr for Duration {
    type Err = DurationError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = |why| DurationError {
            text: text.to_string(),
            why,
        };
        let s = text.trim();
        if s.is_empty() {
            return Err(err("empty"));
        }
        let mut total: i64 = 0;
        let mut rest = s;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(err("expected a number"));
            }
            let n: i64 = rest[..digits]
                .parse()
                .map_err(|_| err("number too large"))?;
            rest = &rest[digits..];
            let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
            let unit_ms = match &rest[..unit_len] {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                "" => return Err(err("missing unit")),
                _ => return Err(err("unknown unit")),
            };
            rest = &rest[unit_len..];
            total = n
                .checked_mul(unit_ms)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(|| err("too large"))?;
        }
        Ok(Duration(total))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0;
        if ms % 1000 != 0 {
            return write!(f, "{ms}ms");
        }
        let mut secs = ms / 1000;
        if secs == 0 {
            return f.write_str("0s");
        }
        for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
            if secs >= size {
                write!(f, "{}{unit}", secs / size)?;
                secs %= size;
            }
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_whole_seconds_without_fraction() {
        let t = Timestamp::parse_rfc3339("2026-11-24T23:58:07Z").unwrap();
        assert_eq!(t.to_string(), "2026-11-24T23:58:07Z");
        assert_eq!(t.secs(), 1_795_564_687);
    }

    #[test]
    fn offsets_are_normalised_to_utc_and_fractions_kept() {
        let t = Timestamp::parse_rfc3339("2026-11-25T01:58:07.250+02:00").unwrap();
        assert_eq!(t.to_string(), "2026-11-24T23:58:07.250Z");
    }

    #[test]
    fn durations_parse_compound_units() {
        assert_eq!("90s".parse::<Duration>().unwrap(), Duration::from_secs(90));
        assert_eq!(
            "1h30m".parse::<Duration>().unwrap(),
            Duration::from_secs(5400)
        );
        assert_eq!("250ms".parse::<Duration>().unwrap(), Duration(250));
        assert_eq!("1h30m".parse::<Duration>().unwrap().to_string(), "1h30m");
    }

    #[test]
    fn bad_durations_say_what_is_wrong() {
        let e = "10".parse::<Duration>().unwrap_err();
        assert!(e.to_string().contains("missing unit"), "{e}");
        let e = "5min".parse::<Duration>().unwrap_err();
        assert!(e.to_string().contains("unknown unit"), "{e}");
        assert!("".parse::<Duration>().is_err());
        assert!("s".parse::<Duration>().is_err());
    }
}

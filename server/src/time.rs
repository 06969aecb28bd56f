//! Times in requests: RFC 3339 (`2026-10-01T00:00:00Z`), or a date (`2026-10-01`), which means its
//! start, 00:00 UTC.

use chrono::{DateTime, NaiveDate, Utc};

pub fn parse(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Some(at.with_timezone(&Utc));
    }
    let date = NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
    Some(date.and_hms_opt(0, 0, 0)?.and_utc())
}

/// `deserialize_with` helpers.
pub mod instant {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer};

    pub fn option<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        match Option::<String>::deserialize(deserializer)? {
            None => Ok(None),
            Some(text) => super::parse(&text)
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom(format!("not a time or date: {text:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_mean_their_start_and_times_are_rfc3339() {
        assert_eq!(parse("2026-10-01").unwrap().to_rfc3339(), "2026-10-01T00:00:00+00:00");
        assert_eq!(parse("2026-10-01T08:00:00+08:00").unwrap().to_rfc3339(), "2026-10-01T00:00:00+00:00");
        assert!(parse("2026-13-01").is_none());
        assert!(parse("yesterday").is_none());
    }
}

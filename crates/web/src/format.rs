//! Sizes and times as people read them.

use chrono::{DateTime, Utc};

/// `12.4 MiB`: binary units, one decimal past bytes.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `3 hours ago`, from `now`.
pub fn ago(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - at).num_seconds();
    if secs < 0 {
        return "just now".to_owned();
    }
    let (n, unit) = match secs {
        0..=44 => return "just now".to_owned(),
        45..=3_599 => ((secs + 30) / 60, "minute"),
        3_600..=86_399 => (secs / 3_600, "hour"),
        86_400..=2_591_999 => (secs / 86_400, "day"),
        2_592_000..=31_535_999 => (secs / 2_592_000, "month"),
        _ => (secs / 31_536_000, "year"),
    };
    let n = n.max(1);
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

/// The exact time, for a tooltip: `2026-11-30 14:05:09 UTC`.
pub fn exact(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_use_binary_units() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(1024), "1.0 KiB");
        assert_eq!(size(13_002_342), "12.4 MiB");
        assert_eq!(size(1 << 30), "1.0 GiB");
        assert_eq!(size(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn times_read_as_how_long_ago() {
        let now = DateTime::parse_from_rfc3339("2026-11-30T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let before = |secs| now - chrono::Duration::seconds(secs);
        assert_eq!(ago(before(10), now), "just now");
        assert_eq!(ago(before(60), now), "1 minute ago");
        assert_eq!(ago(before(3 * 3600 + 10), now), "3 hours ago");
        assert_eq!(ago(before(86_400), now), "1 day ago");
        assert_eq!(ago(before(40 * 86_400), now), "1 month ago");
        assert_eq!(ago(before(800 * 86_400), now), "2 years ago");
        assert_eq!(ago(now + chrono::Duration::seconds(5), now), "just now");
        assert_eq!(exact(now), "2026-11-30 12:00:00 UTC");
    }
}

//! Disappearing-message timers as people write and read them: `7d`, `24h`, `off` in a bot
//! command, "1 week" in a notice. Shared by the bot and the connectors so every network names a
//! timer the same way.

/// The largest timer accepted from a command: one year (networks offer at most 90 days).
const MAX_SECONDS: u64 = 366 * 24 * 3600;

/// Parses `off`, a number of seconds, or a number with a unit (`s`, `m`, `h`, `d`, `w`):
/// `30s`, `1h`, `24h`, `7d`, `90d`, `1w`. `None` for anything else or longer than a year.
pub fn parse(text: &str) -> Option<u32> {
    let text = text.trim().to_ascii_lowercase();
    if matches!(text.as_str(), "off" | "0" | "none" | "disable" | "disabled") {
        return Some(0);
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let size: u64 = match unit.trim() {
        "" | "s" | "sec" | "secs" | "second" | "seconds" => 1,
        "m" | "min" | "mins" | "minute" | "minutes" => 60,
        "h" | "hour" | "hours" => 3600,
        "d" | "day" | "days" => 24 * 3600,
        "w" | "week" | "weeks" => 7 * 24 * 3600,
        _ => return None,
    };
    let seconds = n.checked_mul(size)?;
    (seconds <= MAX_SECONDS)
        .then(|| u32::try_from(seconds).ok())
        .flatten()
}

/// A timer in words: "1 week", "2 hours", "30 seconds" (the largest unit that divides it).
pub fn describe(seconds: u64) -> String {
    let units = [
        (7 * 24 * 3600, "week"),
        (24 * 3600, "day"),
        (3600, "hour"),
        (60, "minute"),
        (1, "second"),
    ];
    for (size, name) in units {
        if seconds >= size && seconds.is_multiple_of(size) {
            let n = seconds / size;
            return format!("{n} {name}{}", if n == 1 { "" } else { "s" });
        }
    }
    format!("{seconds} seconds")
}

#[cfg(test)]
mod tests {
    use super::{describe, parse};

    #[test]
    fn commands_take_the_usual_ways_of_writing_a_timer() {
        assert_eq!(parse("off"), Some(0));
        assert_eq!(parse("OFF"), Some(0));
        assert_eq!(parse("30"), Some(30));
        assert_eq!(parse("30s"), Some(30));
        assert_eq!(parse("5m"), Some(300));
        assert_eq!(parse("24h"), Some(86_400));
        assert_eq!(parse("1d"), Some(86_400));
        assert_eq!(parse("7d"), Some(604_800));
        assert_eq!(parse("90 days"), Some(7_776_000));
        assert_eq!(parse("1w"), Some(604_800));
    }

    #[test]
    fn nonsense_and_overlong_timers_are_refused() {
        for bad in [
            "",
            "soon",
            "-5",
            "5x",
            "1.5h",
            "400d",
            "99999999999999999999",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn timers_are_named_with_the_largest_unit() {
        assert_eq!(describe(604_800), "1 week");
        assert_eq!(describe(7200), "2 hours");
        assert_eq!(describe(86_400), "1 day");
        assert_eq!(describe(30), "30 seconds");
    }
}

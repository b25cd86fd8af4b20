//! Business hours of a site: a weekly schedule in the site's time zone, plus dates on which
//! it is closed all day. Free of I/O; "now" is always passed in, so tests use fixed
//! instants (daylight-saving changes included: local times are resolved through chrono-tz).
//!
//! Wire and storage shape (`sites.business_hours`, `PATCH /api/sites/{id}`):
//!
//! ```json
//! {"time_zone": "Europe/Berlin",
//!  "weekly": {"mon": [{"open": "09:00", "close": "18:00"}], "sat": [], …},
//!  "closed_dates": ["2026-12-25"]}
//! ```
//!
//! A day left out (or with an empty list) is closed. `close` may be `"24:00"` (end of day);
//! an interval never crosses midnight (use two: `22:00–24:00` and `00:00–02:00`).

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveTime, TimeZone, Utc, Weekday};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::error::AppError;

/// At most this many intervals per day and closed dates per site.
const MAX_INTERVALS_PER_DAY: usize = 8;
const MAX_CLOSED_DATES: usize = 366;
/// How far ahead [`BusinessHours::next_open`] looks.
const LOOKAHEAD_DAYS: i64 = 400;

pub const DAYS: [(&str, Weekday); 7] = [
    ("mon", Weekday::Mon),
    ("tue", Weekday::Tue),
    ("wed", Weekday::Wed),
    ("thu", Weekday::Thu),
    ("fri", Weekday::Fri),
    ("sat", Weekday::Sat),
    ("sun", Weekday::Sun),
];

/// One opening interval, local wall-clock times `"HH:MM"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interval {
    pub open: String,
    pub close: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Weekly {
    #[serde(default)]
    pub mon: Vec<Interval>,
    #[serde(default)]
    pub tue: Vec<Interval>,
    #[serde(default)]
    pub wed: Vec<Interval>,
    #[serde(default)]
    pub thu: Vec<Interval>,
    #[serde(default)]
    pub fri: Vec<Interval>,
    #[serde(default)]
    pub sat: Vec<Interval>,
    #[serde(default)]
    pub sun: Vec<Interval>,
}

impl Weekly {
    fn day(&self, d: Weekday) -> &[Interval] {
        match d {
            Weekday::Mon => &self.mon,
            Weekday::Tue => &self.tue,
            Weekday::Wed => &self.wed,
            Weekday::Thu => &self.thu,
            Weekday::Fri => &self.fri,
            Weekday::Sat => &self.sat,
            Weekday::Sun => &self.sun,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusinessHours {
    pub time_zone: String,
    #[serde(default)]
    pub weekly: Weekly,
    #[serde(default)]
    pub closed_dates: Vec<NaiveDate>,
}

/// Minutes since local midnight of `"HH:MM"` (`"24:00"` allowed as an end).
fn minutes(s: &str, end: bool) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    match (h, m) {
        (24, 0) if end => Some(24 * 60),
        (0..=23, 0..=59) => Some(h * 60 + m),
        _ => None,
    }
}

impl BusinessHours {
    /// Checks a schedule an admin sent, answering `bad_request` naming what is wrong.
    pub fn validate(&self) -> Result<(), AppError> {
        self.tz()?;
        for (name, day) in DAYS {
            let intervals = self.weekly.day(day);
            if intervals.len() > MAX_INTERVALS_PER_DAY {
                return Err(AppError::bad_request(format!(
                    "business_hours.weekly.{name}: at most {MAX_INTERVALS_PER_DAY} intervals"
                )));
            }
            for i in intervals {
                let (Some(open), Some(close)) = (minutes(&i.open, false), minutes(&i.close, true))
                else {
                    return Err(AppError::bad_request(format!(
                        "business_hours.weekly.{name}: times must be \"HH:MM\" (00:00 to 24:00), got {:?}–{:?}",
                        i.open, i.close
                    )));
                };
                if close <= open {
                    return Err(AppError::bad_request(format!(
                        "business_hours.weekly.{name}: {} must be before {} (split intervals that cross midnight)",
                        i.open, i.close
                    )));
                }
            }
        }
        if self.closed_dates.len() > MAX_CLOSED_DATES {
            return Err(AppError::bad_request(format!(
                "business_hours.closed_dates: at most {MAX_CLOSED_DATES} dates"
            )));
        }
        Ok(())
    }

    fn tz(&self) -> Result<Tz, AppError> {
        self.time_zone.parse::<Tz>().map_err(|_| {
            AppError::bad_request(format!(
                "business_hours.time_zone {:?} is not an IANA time zone such as \"Europe/Berlin\"",
                self.time_zone
            ))
        })
    }

    /// Opening intervals of a local date, in minutes since local midnight.
    fn intervals_on(&self, date: NaiveDate) -> impl Iterator<Item = (u32, u32)> + '_ {
        let closed = self.closed_dates.contains(&date);
        self.weekly
            .day(date.weekday())
            .iter()
            .filter(move |_| !closed)
            .filter_map(|i| Some((minutes(&i.open, false)?, minutes(&i.close, true)?)))
    }

    /// True when the site is within its business hours at `now`. A schedule that cannot be
    /// read (an unknown zone in old data) counts as always open: chat is never blocked by it.
    pub fn is_open(&self, now: DateTime<Utc>) -> bool {
        let Ok(tz) = self.tz() else { return true };
        let local = now.with_timezone(&tz);
        let minute = local
            .time()
            .signed_duration_since(NaiveTime::MIN)
            .num_minutes() as u32;
        self.intervals_on(local.date_naive())
            .any(|(open, close)| open <= minute && minute < close)
    }

    /// The next instant the site opens after `now` (`None` when open now or never).
    pub fn next_open(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if self.is_open(now) {
            return None;
        }
        let tz = self.tz().ok()?;
        let today = now.with_timezone(&tz).date_naive();
        for offset in 0..LOOKAHEAD_DAYS {
            let date = today + Duration::days(offset);
            let mut opens: Vec<u32> = self.intervals_on(date).map(|(o, _)| o).collect();
            opens.sort_unstable();
            for open in opens {
                let local = date.and_time(NaiveTime::MIN) + Duration::minutes(open.into());
                // A wall-clock time skipped by a daylight-saving jump opens at the jump:
                // the first local minute after it that exists.
                let at = (0..=180).find_map(|m| {
                    tz.from_local_datetime(&(local + Duration::minutes(m)))
                        .earliest()
                        .map(|t| t.with_timezone(&Utc))
                })?;
                if at > now {
                    return Some(at);
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("timestamp")
            .with_timezone(&Utc)
    }

    fn nine_to_six(tz: &str) -> BusinessHours {
        let day = vec![Interval {
            open: "09:00".into(),
            close: "18:00".into(),
        }];
        BusinessHours {
            time_zone: tz.into(),
            weekly: Weekly {
                mon: day.clone(),
                tue: day.clone(),
                wed: day.clone(),
                thu: day.clone(),
                fri: day,
                ..Weekly::default()
            },
            closed_dates: vec![NaiveDate::from_ymd_opt(2026, 12, 25).expect("date")],
        }
    }

    #[test]
    fn weekdays_nine_to_six_in_the_sites_zone() {
        let h = nine_to_six("Europe/Berlin");
        // Friday 2026-12-04: Berlin is UTC+1 in winter.
        assert!(!h.is_open(at("2026-12-04T07:59:00Z"))); // 08:59 local
        assert!(h.is_open(at("2026-12-04T08:00:00Z"))); // 09:00 local
        assert!(h.is_open(at("2026-12-04T16:59:00Z"))); // 17:59 local
        assert!(!h.is_open(at("2026-12-04T17:00:00Z"))); // 18:00 local: closed
        assert!(!h.is_open(at("2026-12-05T12:00:00Z"))); // Saturday
                                                         // Closed date: Friday 25 December.
        assert!(!h.is_open(at("2026-12-25T12:00:00Z")));
        // Friday evening → Monday 09:00 Berlin = 08:00 UTC.
        assert_eq!(
            h.next_open(at("2026-12-04T18:30:00Z")),
            Some(at("2026-12-07T08:00:00Z"))
        );
        assert_eq!(h.next_open(at("2026-12-04T12:00:00Z")), None);
        // Thursday 24th evening → the 25th is closed → Monday 28th.
        assert_eq!(
            h.next_open(at("2026-12-24T20:00:00Z")),
            Some(at("2026-12-28T08:00:00Z"))
        );
    }

    #[test]
    fn daylight_saving_changes_move_the_utc_hours() {
        let h = nine_to_six("America/New_York");
        // Before the March 2026 change (8 March) New York is UTC−5: 09:00 = 14:00 UTC.
        assert!(!h.is_open(at("2026-03-06T13:30:00Z")));
        assert!(h.is_open(at("2026-03-06T14:00:00Z")));
        // After it, UTC−4: 09:00 = 13:00 UTC.
        assert!(h.is_open(at("2026-03-09T13:30:00Z")));
        assert!(!h.is_open(at("2026-03-09T12:59:00Z")));
        assert_eq!(
            h.next_open(at("2026-03-06T23:00:00Z")),
            Some(at("2026-03-09T13:00:00Z"))
        );
    }

    #[test]
    fn an_opening_time_skipped_by_the_spring_jump_opens_at_the_jump() {
        // Berlin jumps from 02:00 to 03:00 on Sunday 29 March 2026.
        let mut h = nine_to_six("Europe/Berlin");
        h.weekly.sun = vec![Interval {
            open: "02:30".into(),
            close: "05:00".into(),
        }];
        // 03:00 CEST = 01:00 UTC.
        assert_eq!(
            h.next_open(at("2026-03-28T23:00:00Z")),
            Some(at("2026-03-29T01:00:00Z"))
        );
        assert!(h.is_open(at("2026-03-29T01:30:00Z")));
    }

    #[test]
    fn validation_names_the_problem() {
        assert!(nine_to_six("Asia/Shanghai").validate().is_ok());
        let bad_zone = nine_to_six("Mars/Olympus").validate().expect_err("zone");
        assert!(
            bad_zone.message.contains("time zone"),
            "{}",
            bad_zone.message
        );
        let mut h = nine_to_six("UTC");
        h.weekly.mon = vec![Interval {
            open: "18:00".into(),
            close: "09:00".into(),
        }];
        assert!(h.validate().expect_err("order").message.contains("before"));
        h.weekly.mon = vec![Interval {
            open: "9am".into(),
            close: "24:00".into(),
        }];
        assert!(h.validate().expect_err("format").message.contains("HH:MM"));
        h.weekly.mon = vec![Interval {
            open: "22:00".into(),
            close: "24:00".into(),
        }];
        assert!(h.validate().is_ok());
        assert!(h.is_open(at("2026-12-07T23:59:00Z")));
    }

    #[test]
    fn no_intervals_means_never_open() {
        let h = BusinessHours {
            time_zone: "UTC".into(),
            weekly: Weekly::default(),
            closed_dates: vec![],
        };
        assert!(!h.is_open(at("2026-12-07T12:00:00Z")));
        assert_eq!(h.next_open(at("2026-12-07T12:00:00Z")), None);
    }
}

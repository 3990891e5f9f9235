//! Maintenance windows, change freezes and `RescheduleOperation` targets.

use chrono::{DateTime, NaiveTime, TimeDelta, Utc, Weekday};
use esaas_core::Result;
use esaas_core::error::{Error, MAX_REPEATED, Violations, shown};
use esaas_core::lifecycle::maintenance::RescheduleTo;
use esaas_core::spec::{ChangeFreeze, MaintenanceWindow};

use super::ts;
use crate::v1 as pb;

/// A wire timestamp as a time; `field` names it in the error.
pub fn time_from_pb(field: &str, t: &prost_types::Timestamp) -> Result<DateTime<Utc>> {
    u32::try_from(t.nanos)
        .ok()
        .and_then(|n| DateTime::from_timestamp(t.seconds, n))
        .ok_or_else(|| Error::invalid(field, "is not a valid timestamp"))
}

fn day_from_pb(d: i32) -> Option<Weekday> {
    Some(match pb::DayOfWeek::try_from(d).ok()? {
        pb::DayOfWeek::Monday => Weekday::Mon,
        pb::DayOfWeek::Tuesday => Weekday::Tue,
        pb::DayOfWeek::Wednesday => Weekday::Wed,
        pb::DayOfWeek::Thursday => Weekday::Thu,
        pb::DayOfWeek::Friday => Weekday::Fri,
        pb::DayOfWeek::Saturday => Weekday::Sat,
        pb::DayOfWeek::Sunday => Weekday::Sun,
        pb::DayOfWeek::Unspecified => return None,
    })
}

fn day_to_pb(d: Weekday) -> pb::DayOfWeek {
    match d {
        Weekday::Mon => pb::DayOfWeek::Monday,
        Weekday::Tue => pb::DayOfWeek::Tuesday,
        Weekday::Wed => pb::DayOfWeek::Wednesday,
        Weekday::Thu => pb::DayOfWeek::Thursday,
        Weekday::Fri => pb::DayOfWeek::Friday,
        Weekday::Sat => pb::DayOfWeek::Saturday,
        Weekday::Sun => pb::DayOfWeek::Sunday,
    }
}

/// "HH:MM" or "HH:MM:SS".
pub fn time_of_day(s: &str) -> Option<NaiveTime> {
    NaiveTime::parse_from_str(s, "%H:%M:%S")
        .or_else(|_| NaiveTime::parse_from_str(s, "%H:%M"))
        .ok()
}

/// Parses a wire window; `p` is its path. The bounds are checked with the spec.
pub fn window_from_pb(
    w: &pb::MaintenanceWindow,
    p: &str,
    v: &mut Violations,
) -> Option<MaintenanceWindow> {
    let day = day_from_pb(w.day_of_week);
    if day.is_none() {
        v.add(
            format!("{p}.day_of_week"),
            "is required: DAY_OF_WEEK_MONDAY ... DAY_OF_WEEK_SUNDAY",
        );
    }
    let start = time_of_day(&w.start_time);
    if start.is_none() {
        v.add(
            format!("{p}.start_time"),
            format!(
                "{} is not a UTC time of day; use HH:MM or HH:MM:SS, for example 02:00",
                shown(&w.start_time)
            ),
        );
    }
    let duration = match &w.duration {
        None => {
            v.add(format!("{p}.duration"), "is required (1 to 24 hours)");
            None
        }
        Some(d) if d.nanos != 0 => {
            v.add(format!("{p}.duration"), "must be whole seconds");
            None
        }
        Some(d) => TimeDelta::try_seconds(d.seconds),
    };
    Some(MaintenanceWindow {
        day: day?,
        start: start?,
        duration: duration?,
    })
}

/// Parses wire freezes; `p` is the list's path. The bounds are checked with the spec.
pub fn freezes_from_pb(fs: &[pb::ChangeFreeze], p: &str, v: &mut Violations) -> Vec<ChangeFreeze> {
    if v.too_many(p, fs.len(), MAX_REPEATED) {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(fs.len());
    for (i, f) in fs.iter().enumerate() {
        let mut time = |name: &str, t: &Option<prost_types::Timestamp>| {
            let field = format!("{p}[{i}].{name}");
            match t {
                None => {
                    v.add(field, "is required");
                    None
                }
                Some(t) => v.absorb(time_from_pb(&field, t)).ok().flatten(),
            }
        };
        let (start, end) = (
            time("start_time", &f.start_time),
            time("end_time", &f.end_time),
        );
        if let (Some(start), Some(end)) = (start, end) {
            out.push(ChangeFreeze {
                start,
                end,
                reason: f.reason.clone(),
            });
        }
    }
    out
}

/// The wire form of a window.
pub fn window_to_pb(w: &MaintenanceWindow) -> pb::MaintenanceWindow {
    pb::MaintenanceWindow {
        day_of_week: day_to_pb(w.day) as i32,
        start_time: w.start.format("%H:%M:%S").to_string(),
        duration: Some(prost_types::Duration {
            seconds: w.duration.num_seconds(),
            nanos: 0,
        }),
    }
}

/// The wire form of a freeze.
pub fn freeze_to_pb(f: &ChangeFreeze) -> pb::ChangeFreeze {
    pb::ChangeFreeze {
        start_time: ts(f.start),
        end_time: ts(f.end),
        reason: f.reason.clone(),
    }
}

/// Where a `RescheduleOperationRequest` moves its operation.
pub fn reschedule_from_pb(r: &pb::RescheduleOperationRequest) -> Result<RescheduleTo> {
    match pb::RescheduleTarget::try_from(r.target) {
        Ok(pb::RescheduleTarget::Now) => Ok(RescheduleTo::Now),
        Ok(pb::RescheduleTarget::NextWindow) => Ok(RescheduleTo::NextWindow),
        Ok(pb::RescheduleTarget::Time) => match &r.not_before {
            Some(t) => Ok(RescheduleTo::At(time_from_pb("not_before", t)?)),
            None => Err(Error::invalid(
                "not_before",
                "is required with RESCHEDULE_TARGET_TIME",
            )),
        },
        Ok(pb::RescheduleTarget::Unspecified) | Err(_) => Err(Error::invalid(
            "target",
            "must be RESCHEDULE_TARGET_NOW, RESCHEDULE_TARGET_NEXT_WINDOW or RESCHEDULE_TARGET_TIME",
        )),
    }
}

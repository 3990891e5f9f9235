//! Maintenance windows and change freezes: when the platform may start the
//! work it initiates itself (certificate rotations, repairs that are not
//! urgent), and `RescheduleOperation`, by which an owner moves a queued
//! operation that has not started.
//!
//! Everything is in UTC, so there is no daylight-saving time to get wrong:
//! a window is a day of the week, a time of day and a duration.
//! [`earliest_start`] finds the first moment, from now, that lies inside a
//! window occurrence with at least [`MIN_TIME_LEFT`] of it left and no
//! change freeze in that lead; urgent work passes a deadline that overrides
//! both (a freeze holds back planned work, not the fix of an outage).

use chrono::{DateTime, Datelike, Duration, TimeDelta, Utc};

use crate::error::{Error, Result};
use crate::event::EventKind;
use crate::operation::{Initiator, Operation, OperationKind, OperationState};
use crate::spec::{ChangeFreeze, MaintenanceWindow};

use super::lease::Leased;
use super::{ChangeSet, Decision};

/// How much of a window must be left, and free of freezes, for planned work
/// to start in it (work that starts may run past the window's end).
pub const MIN_TIME_LEFT: TimeDelta = TimeDelta::minutes(30);

/// How far ahead an explicit `RescheduleOperation` time may lie.
pub const MAX_RESCHEDULE_AHEAD: TimeDelta = TimeDelta::days(30);

/// How far in the past an explicit time may lie (clocks differ a little);
/// such a time means "now".
pub const RESCHEDULE_PAST_SLACK: TimeDelta = TimeDelta::minutes(5);

/// Why planned work starts when it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// Now: inside a window (or any time is allowed) and not frozen.
    Open,
    /// At the start of the next window.
    Window,
    /// When a change freeze ends.
    AfterFreeze,
    /// At its deadline, whatever the window: waiting longer would hurt the cluster.
    Deadline,
}

impl Why {
    /// For messages: "scheduled for T (maintenance window)".
    pub fn as_str(self) -> &'static str {
        match self {
            Why::Open => "now",
            Why::Window => "maintenance window",
            Why::AfterFreeze => "after a change freeze",
            Why::Deadline => "its deadline, outside the window",
        }
    }
}

/// When planned work may start, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// The earliest start.
    pub at: DateTime<Utc>,
    /// Why then.
    pub why: Why,
}

/// The window that applies to a cluster: its own, else the platform's default
/// (`None`: any time).
pub fn window_of<'a>(
    own: Option<&'a MaintenanceWindow>,
    default: Option<&'a MaintenanceWindow>,
) -> Option<&'a MaintenanceWindow> {
    own.or(default)
}

/// The start of the occurrence of `w` that began last at or before `now`.
fn last_start(w: &MaintenanceWindow, now: DateTime<Utc>) -> DateTime<Utc> {
    let back = (i64::from(now.weekday().num_days_from_monday())
        - i64::from(w.day.num_days_from_monday()))
    .rem_euclid(7);
    let date = now.date_naive() - Duration::days(back);
    let start = date.and_time(w.start).and_utc();
    if start > now {
        start - Duration::days(7)
    } else {
        start
    }
}

/// The first time at or after `t` whose next [`MIN_TIME_LEFT`] no freeze touches.
fn unfrozen(mut t: DateTime<Utc>, freezes: &[ChangeFreeze]) -> DateTime<Utc> {
    // Each turn moves `t` to the end of a freeze after it, so the loop ends
    // after at most one turn per freeze.
    for _ in 0..=freezes.len() {
        let blocking = freezes
            .iter()
            .filter(|f| f.start < t + MIN_TIME_LEFT && f.end > t)
            .map(|f| f.end)
            .max();
        match blocking {
            Some(end) => t = end,
            None => break,
        }
    }
    t
}

/// The earliest time, from `now`, that platform-initiated work may start:
/// now if inside a window (or with no window at all) and not frozen, with
/// [`MIN_TIME_LEFT`] to go; else the next window start (or freeze end
/// inside a window) that has. `deadline` is when the work becomes urgent:
/// never later than it, and now once it has passed.
pub fn earliest_start(
    now: DateTime<Utc>,
    window: Option<&MaintenanceWindow>,
    freezes: &[ChangeFreeze],
    deadline: Option<DateTime<Utc>>,
) -> Slot {
    let planned = match window {
        None => {
            let at = unfrozen(now, freezes);
            Slot {
                at,
                why: if at == now {
                    Why::Open
                } else {
                    Why::AfterFreeze
                },
            }
        }
        Some(w) => in_window(now, w, freezes),
    };
    match deadline {
        Some(d) if d <= planned.at => Slot {
            at: d.max(now),
            why: if d <= now && planned.at == now {
                Why::Open
            } else {
                Why::Deadline
            },
        },
        _ => planned,
    }
}

fn in_window(now: DateTime<Utc>, w: &MaintenanceWindow, freezes: &[ChangeFreeze]) -> Slot {
    // Freezes are at most 10 × 30 days, so some window within 60 weeks is free.
    let mut start = last_start(w, now);
    for _ in 0..60 {
        let from = start.max(now);
        let at = unfrozen(from, freezes);
        if at + MIN_TIME_LEFT <= start + w.duration {
            let why = if at == now {
                Why::Open
            } else if at == from {
                Why::Window
            } else {
                Why::AfterFreeze
            };
            return Slot { at, why };
        }
        start += Duration::days(7);
    }
    Slot {
        at: unfrozen(now, freezes),
        why: Why::AfterFreeze,
    }
}

/// `2026-12-05T02:00:00Z`.
pub fn shown_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// "rotate certificates", "repair", ...
pub fn kind_words(kind: OperationKind) -> String {
    kind.as_str().to_lowercase().replace('_', " ")
}

/// Queues `op` for `slot`: a slot later than `now` becomes its `not_before`
/// and first attempt time; the answer is the message that says so, `None`
/// when it starts at once.
pub fn schedule(op: &mut Operation, slot: Slot, now: DateTime<Utc>) -> Option<String> {
    if slot.at <= now {
        return None;
    }
    op.not_before = Some(slot.at);
    op.next_attempt_time = slot.at;
    Some(format!(
        "{} scheduled for {} ({})",
        kind_words(op.kind),
        shown_time(slot.at),
        slot.why.as_str()
    ))
}

/// Where `RescheduleOperation` moves an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RescheduleTo {
    /// At once.
    Now,
    /// The next start [`earliest_start`] allows (window and freezes).
    NextWindow,
    /// No sooner than this time.
    At(DateTime<Utc>),
}

/// Moves `state.op`, queued and not started, to start no sooner than `to`;
/// `default_window` is the platform's. The time is checked first (bad input
/// is INVALID_ARGUMENT whatever the operation's state). A running or ended operation, one
/// that has made attempts, or a delete is FAILED_PRECONDITION; a time more
/// than [`RESCHEDULE_PAST_SLACK`] ago or [`MAX_RESCHEDULE_AHEAD`] ahead is
/// INVALID_ARGUMENT on `field`. Recorded in the cluster's event log.
pub fn reschedule(
    state: &Leased,
    to: RescheduleTo,
    field: &str,
    by: &Initiator,
    default_window: Option<&MaintenanceWindow>,
    now: DateTime<Utc>,
) -> Result<Decision<Operation>> {
    let (mut op, mut cluster) = (state.op.clone(), state.cluster.clone());
    let subject = op.name().to_string();
    let slot = match to {
        RescheduleTo::Now => Slot {
            at: now,
            why: Why::Open,
        },
        RescheduleTo::NextWindow => earliest_start(
            now,
            window_of(cluster.spec.maintenance_window.as_ref(), default_window),
            &cluster.spec.change_freezes,
            None,
        ),
        RescheduleTo::At(t) if t < now - RESCHEDULE_PAST_SLACK => {
            return Err(Error::invalid(
                field,
                format!(
                    "{} is in the past; use a later time, or reschedule to now",
                    shown_time(t)
                ),
            ));
        }
        RescheduleTo::At(t) if t > now + MAX_RESCHEDULE_AHEAD => {
            return Err(Error::invalid(
                field,
                format!(
                    "{} is more than 30 days ahead; an operation may wait at most 30 days",
                    shown_time(t)
                ),
            ));
        }
        RescheduleTo::At(t) => Slot {
            at: t.max(now),
            why: Why::Open,
        },
    };
    if op.state != OperationState::Queued || !op.attempts.is_empty() {
        return Err(Error::precondition(
            subject,
            format!(
                "only a queued operation that has not started can be rescheduled; this one is {}{}",
                op.state,
                if op.state == OperationState::Queued {
                    " after an attempt (it waits for its retry)"
                } else {
                    ""
                }
            ),
        ));
    }
    if op.kind == OperationKind::Delete {
        return Err(Error::precondition(
            subject,
            "a deletion cannot be rescheduled: once asked for, it stands",
        ));
    }
    op.not_before = Some(slot.at);
    op.next_attempt_time = slot.at;
    let when = if slot.at <= now {
        "to run now".to_string()
    } else if to == RescheduleTo::NextWindow {
        format!("for {} ({})", shown_time(slot.at), slot.why.as_str())
    } else {
        format!("for {}", shown_time(slot.at))
    };
    let message = format!("{subject} rescheduled by {} {when}", by.principal);
    if cluster.current_operation == Some(op.id) {
        cluster.message = if slot.at <= now {
            op.summary()
        } else {
            format!("{} scheduled {when}", kind_words(op.kind))
        };
    }
    let mut changes = ChangeSet::default();
    changes.update_operation(&mut op, now);
    changes.record(
        &mut cluster,
        false,
        EventKind::OperationProgress,
        message,
        Some(op.id),
        now,
    );
    Ok(Decision {
        changes,
        answer: op,
    })
}

#[cfg(test)]
mod tests {
    use chrono::{NaiveTime, Weekday};

    use super::*;

    /// 2026-12-05 is a Saturday.
    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn window(day: Weekday, hh: u32, mm: u32, hours: i64) -> MaintenanceWindow {
        MaintenanceWindow {
            day,
            start: NaiveTime::from_hms_opt(hh, mm, 0).unwrap(),
            duration: Duration::hours(hours),
        }
    }

    fn freeze(a: &str, b: &str) -> ChangeFreeze {
        ChangeFreeze {
            start: at(a),
            end: at(b),
            reason: "release".into(),
        }
    }

    #[test]
    fn earliest_start_by_table() {
        let sat2 = window(Weekday::Sat, 2, 0, 4);
        let sun23 = window(Weekday::Sun, 23, 0, 3); // runs into Monday
        #[allow(clippy::type_complexity)]
        let cases: Vec<(
            &str,
            &str,
            Option<MaintenanceWindow>,
            Vec<ChangeFreeze>,
            Option<&str>,
            &str,
            Why,
        )> = vec![
            // No window: any time.
            (
                "no window",
                "2026-12-02T10:00:00Z",
                None,
                vec![],
                None,
                "2026-12-02T10:00:00Z",
                Why::Open,
            ),
            (
                "no window, frozen",
                "2026-12-02T10:00:00Z",
                None,
                vec![freeze("2026-12-01T00:00:00Z", "2026-12-03T00:00:00Z")],
                None,
                "2026-12-03T00:00:00Z",
                Why::AfterFreeze,
            ),
            (
                "before the window",
                "2026-12-02T10:00:00Z",
                Some(sat2),
                vec![],
                None,
                "2026-12-05T02:00:00Z",
                Why::Window,
            ),
            (
                "inside the window",
                "2026-12-05T03:00:00Z",
                Some(sat2),
                vec![],
                None,
                "2026-12-05T03:00:00Z",
                Why::Open,
            ),
            (
                "at its very start",
                "2026-12-05T02:00:00Z",
                Some(sat2),
                vec![],
                None,
                "2026-12-05T02:00:00Z",
                Why::Open,
            ),
            // 20 minutes left is too little: next week.
            (
                "too late in it",
                "2026-12-05T05:40:00Z",
                Some(sat2),
                vec![],
                None,
                "2026-12-12T02:00:00Z",
                Why::Window,
            ),
            (
                "just after it",
                "2026-12-05T06:00:00Z",
                Some(sat2),
                vec![],
                None,
                "2026-12-12T02:00:00Z",
                Why::Window,
            ),
            // Week wrap-around: Saturday evening to Sunday, and a window into Monday.
            (
                "wraps the week",
                "2026-12-05T22:00:00Z",
                Some(sun23),
                vec![],
                None,
                "2026-12-06T23:00:00Z",
                Why::Window,
            ),
            (
                "inside, past midnight",
                "2026-12-07T01:00:00Z",
                Some(sun23),
                vec![],
                None,
                "2026-12-07T01:00:00Z",
                Why::Open,
            ),
            (
                "after, on Monday",
                "2026-12-07T02:40:00Z",
                Some(sun23),
                vec![],
                None,
                "2026-12-13T23:00:00Z",
                Why::Window,
            ),
            (
                "a freeze covers a whole window",
                "2026-12-02T10:00:00Z",
                Some(sat2),
                vec![freeze("2026-12-04T00:00:00Z", "2026-12-07T00:00:00Z")],
                None,
                "2026-12-12T02:00:00Z",
                Why::Window,
            ),
            (
                "a freeze ends inside the window",
                "2026-12-02T10:00:00Z",
                Some(sat2),
                vec![freeze("2026-12-04T00:00:00Z", "2026-12-05T03:00:00Z")],
                None,
                "2026-12-05T03:00:00Z",
                Why::AfterFreeze,
            ),
            (
                "a freeze starts too soon after the window opens",
                "2026-12-02T10:00:00Z",
                Some(sat2),
                vec![freeze("2026-12-05T02:10:00Z", "2026-12-05T06:00:00Z")],
                None,
                "2026-12-12T02:00:00Z",
                Why::Window,
            ),
            (
                "back-to-back freezes over three windows",
                "2026-12-02T10:00:00Z",
                Some(sat2),
                vec![
                    freeze("2026-12-13T00:00:00Z", "2026-12-25T00:00:00Z"),
                    freeze("2026-12-04T00:00:00Z", "2026-12-13T00:00:00Z"),
                ],
                None,
                "2026-12-26T02:00:00Z",
                Why::Window,
            ),
            (
                "a past freeze holds nothing",
                "2026-12-05T03:00:00Z",
                Some(sat2),
                vec![freeze("2026-11-01T00:00:00Z", "2026-11-02T00:00:00Z")],
                None,
                "2026-12-05T03:00:00Z",
                Why::Open,
            ),
            // Urgent work: the deadline wins over windows and freezes.
            (
                "deadline before the window",
                "2026-12-02T10:00:00Z",
                Some(sat2),
                vec![],
                Some("2026-12-03T00:00:00Z"),
                "2026-12-03T00:00:00Z",
                Why::Deadline,
            ),
            (
                "deadline passed",
                "2026-12-02T10:00:00Z",
                Some(sat2),
                vec![freeze("2026-12-01T00:00:00Z", "2026-12-20T00:00:00Z")],
                Some("2026-12-01T00:00:00Z"),
                "2026-12-02T10:00:00Z",
                Why::Deadline,
            ),
            (
                "deadline after the window",
                "2026-12-02T10:00:00Z",
                Some(sat2),
                vec![],
                Some("2026-12-20T00:00:00Z"),
                "2026-12-05T02:00:00Z",
                Why::Window,
            ),
        ];
        for (what, now, w, freezes, deadline, want, why) in cases {
            let got = earliest_start(at(now), w.as_ref(), &freezes, deadline.map(at));
            assert_eq!((got.at, got.why), (at(want), why), "{what}");
        }
    }

    #[test]
    fn the_own_window_wins_over_the_default() {
        let own = window(Weekday::Sat, 2, 0, 4);
        let default = window(Weekday::Tue, 1, 0, 2);
        assert_eq!(window_of(Some(&own), Some(&default)), Some(&own));
        assert_eq!(window_of(None, Some(&default)), Some(&default));
        assert_eq!(window_of(None, None), None);
    }

    #[test]
    fn scheduling_sets_not_before_and_the_first_attempt() {
        let now = at("2026-12-02T10:00:00Z");
        let mut op = Operation::test(OperationKind::RotateCertificates);
        let slot = earliest_start(now, Some(&window(Weekday::Sat, 2, 0, 4)), &[], None);
        let msg = schedule(&mut op, slot, now).unwrap();
        assert_eq!(
            msg,
            "rotate certificates scheduled for 2026-12-05T02:00:00Z (maintenance window)"
        );
        assert_eq!(op.not_before, Some(at("2026-12-05T02:00:00Z")));
        assert_eq!(op.next_attempt_time, at("2026-12-05T02:00:00Z"));
        assert!(op.summary().contains("scheduled for 2026-12-05T02:00:00Z"));

        let mut op = Operation::test(OperationKind::Repair);
        op.next_attempt_time = now;
        assert_eq!(
            schedule(
                &mut op,
                Slot {
                    at: now,
                    why: Why::Open
                },
                now
            ),
            None
        );
        assert_eq!((op.not_before, op.next_attempt_time), (None, now));
    }
}

//! Following an operation to its end: live, redrawn lines of its stages, attempts and
//! blocking check when stderr is a terminal (indicatif); otherwise one plain line per
//! change, so that logs and pipes read well. Progress goes to stderr, so stdout keeps
//! only the result (`-o json` stays parseable while the progress shows).

use std::io::IsTerminal;
use std::time::Duration;

use esaas_client::v1::{self, OperationState, StageState};
use esaas_client::{Client, Error};
use futures::TryStreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::exit::Failure;
use crate::output::{elapsed, short};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Display {
    /// Redrawn in place (stderr is a terminal).
    Live,
    /// One line per change.
    Plain,
}

impl Display {
    /// Live on a terminal, plain otherwise; `ESAASCTL_PROGRESS=plain` forces plain lines.
    pub fn detect() -> Self {
        let forced_plain = std::env::var("ESAASCTL_PROGRESS").is_ok_and(|v| v == "plain");
        if !forced_plain && std::io::stderr().is_terminal() {
            Display::Live
        } else {
            Display::Plain
        }
    }
}

/// Follows `op_name` to its end, showing its progress under `title`; the operation
/// if it SUCCEEDED, [`Error::OperationFailed`] otherwise. Ctrl-C stops waiting (the
/// operation goes on) and says how to pick up again.
pub async fn follow(client: &Client, op_name: &str, title: &str) -> Result<v1::Operation, Failure> {
    let mut view = View::new(Display::detect(), title);
    let mut stream = client.watch_operation(op_name);
    let mut last: Option<v1::Operation> = None;
    loop {
        let next = tokio::select! {
            next = stream.try_next() => next,
            _ = tokio::signal::ctrl_c() => {
                view.abandon();
                return Err(Failure::Interrupted(format!(
                    "stopped waiting; {op_name} goes on: esaasctl operations watch {op_name}"
                )));
            }
        };
        match next {
            Ok(Some(op)) => {
                view.update(last.as_ref(), &op);
                last = Some(op);
            }
            Ok(None) => break,
            Err(e) => {
                view.abandon();
                return Err(e.into());
            }
        }
    }
    let Some(op) = last else {
        return Err(Error::from(tonic::Status::unavailable(
            "the watch ended without an answer",
        ))
        .into());
    };
    view.finish(&op);
    match op.state() {
        OperationState::Succeeded => Ok(op),
        _ => Err(Error::OperationFailed(Box::new(op)).into()),
    }
}

/// What changed between two readings of an operation, one line each, in the order a
/// reader wants them: attempts, stages, what blocks, then the state.
pub fn changes(prev: Option<&v1::Operation>, next: &v1::Operation) -> Vec<String> {
    let mut out = Vec::new();
    let state = |o: &v1::Operation| short(o.state().as_str_name(), "OPERATION_STATE_");
    if prev.is_none() {
        let kind = short(next.kind().as_str_name(), "OPERATION_KIND_");
        out.push(format!(
            "{} {kind} {}: {}",
            next.name,
            state(next),
            next.message
        ));
    }
    for a in &next.attempts {
        let before = prev.and_then(|p| p.attempts.iter().find(|b| b.number == a.number));
        if before.is_none() {
            out.push(format!("attempt {} started on {}", a.number, a.worker));
        }
        if !a.outcome.is_empty() && before.is_none_or(|b| b.outcome.is_empty()) {
            out.push(format!("attempt {} ended: {}", a.number, a.outcome));
        }
    }
    for s in &next.stages {
        let before = prev.and_then(|p| p.stages.iter().find(|b| b.name == s.name));
        if before.is_some_and(|b| b.state == s.state) {
            continue;
        }
        match s.state() {
            StageState::Running => out.push(format!("stage {} started", s.name)),
            StageState::Succeeded => out.push(format!(
                "stage {} done{}",
                s.name,
                elapsed(s.start_time.as_ref(), s.end_time.as_ref())
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            )),
            StageState::Failed => out.push(format!("stage {} failed: {}", s.name, s.message)),
            StageState::Skipped => out.push(format!("stage {} skipped", s.name)),
            StageState::Pending | StageState::Unspecified => {}
        }
    }
    if !next.blocking_check.is_empty()
        && prev.is_none_or(|p| p.blocking_check != next.blocking_check)
    {
        out.push(format!("waiting: {}", next.blocking_check));
    }
    if prev.is_some_and(|p| p.state != next.state) {
        let detail = match (&next.error, next.state()) {
            (Some(e), _) if !e.message.is_empty() => e.message.clone(),
            _ => next.message.clone(),
        };
        out.push(format!("operation {}: {detail}", state(next)));
    }
    out
}

/// The live or plain rendering of one operation.
struct View {
    display: Display,
    title: String,
    multi: MultiProgress,
    header: Option<ProgressBar>,
    stages: Vec<(String, ProgressBar)>,
}

fn spinner() -> ProgressStyle {
    ProgressStyle::with_template("{spinner:.cyan} {prefix:.bold} {wide_msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
        .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏✓")
}

fn still(symbol: &str) -> ProgressStyle {
    ProgressStyle::with_template(&format!("{symbol} {{prefix:.bold}} {{wide_msg}}"))
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

impl View {
    fn new(display: Display, title: &str) -> Self {
        let multi = MultiProgress::with_draw_target(match display {
            Display::Live => ProgressDrawTarget::stderr(),
            Display::Plain => ProgressDrawTarget::hidden(),
        });
        Self {
            display,
            title: title.to_string(),
            multi,
            header: None,
            stages: Vec::new(),
        }
    }

    fn update(&mut self, prev: Option<&v1::Operation>, op: &v1::Operation) {
        match self.display {
            Display::Plain => {
                if prev.is_none() {
                    eprintln!("{}", self.title);
                }
                for line in changes(prev, op) {
                    eprintln!("  {line}");
                }
            }
            Display::Live => self.draw(op),
        }
    }

    fn draw(&mut self, op: &v1::Operation) {
        let header = self.header.get_or_insert_with(|| {
            let bar = self.multi.add(ProgressBar::new_spinner());
            bar.set_style(spinner());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar.set_prefix(self.title.clone());
            bar
        });
        let attempt = op
            .attempts
            .last()
            .map(|a| format!(" · attempt {} on {}", a.number, a.worker))
            .unwrap_or_default();
        let state = short(op.state().as_str_name(), "OPERATION_STATE_");
        let waiting = if op.stages.iter().any(|s| s.state() == StageState::Running) {
            String::new()
        } else if !op.blocking_check.is_empty() {
            format!(" · {}", op.blocking_check)
        } else if op.state() == OperationState::Queued {
            format!(" · {}", op.message)
        } else {
            String::new()
        };
        header.set_message(format!("{state}{attempt}{waiting}"));
        let width = op.stages.iter().map(|s| s.name.len()).max().unwrap_or(0);
        for s in &op.stages {
            let bar = match self.stages.iter().find(|(n, _)| *n == s.name) {
                Some((_, bar)) => bar.clone(),
                None => {
                    let bar = self.multi.add(ProgressBar::new_spinner());
                    self.stages.push((s.name.clone(), bar.clone()));
                    bar
                }
            };
            bar.set_prefix(format!("{:<width$}", s.name));
            match s.state() {
                StageState::Running => {
                    bar.set_style(spinner());
                    bar.enable_steady_tick(Duration::from_millis(120));
                    let note = if op.blocking_check.is_empty() {
                        &s.message
                    } else {
                        &op.blocking_check
                    };
                    bar.set_message(note.clone());
                }
                StageState::Succeeded => {
                    bar.disable_steady_tick();
                    bar.set_style(still("✓"));
                    bar.set_message(
                        elapsed(s.start_time.as_ref(), s.end_time.as_ref()).unwrap_or_default(),
                    );
                }
                StageState::Failed => {
                    bar.disable_steady_tick();
                    bar.set_style(still("✗"));
                    bar.set_message(s.message.clone());
                }
                StageState::Skipped => {
                    bar.disable_steady_tick();
                    bar.set_style(still("-"));
                    bar.set_message("skipped");
                }
                StageState::Pending | StageState::Unspecified => {
                    bar.set_style(still(" "));
                    bar.set_message("");
                }
            }
            bar.tick();
        }
    }

    fn finish(&mut self, op: &v1::Operation) {
        match self.display {
            Display::Plain => {}
            Display::Live => {
                self.draw(op);
                let symbol = if op.state() == OperationState::Succeeded {
                    "✓"
                } else {
                    "✗"
                };
                if let Some(h) = &self.header {
                    h.set_style(still(symbol));
                    let took = elapsed(op.create_time.as_ref(), op.end_time.as_ref())
                        .map(|d| format!(" in {d}"))
                        .unwrap_or_default();
                    h.finish_with_message(format!(
                        "{}{took}",
                        short(op.state().as_str_name(), "OPERATION_STATE_")
                    ));
                }
                for (_, bar) in &self.stages {
                    bar.finish();
                }
            }
        }
    }

    fn abandon(&mut self) {
        if let Some(h) = &self.header {
            h.abandon();
        }
        for (_, bar) in &self.stages {
            bar.abandon();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: i64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp {
            seconds: s,
            nanos: 0,
        })
    }

    fn op(state: OperationState, stages: &[(&str, StageState)]) -> v1::Operation {
        v1::Operation {
            name: "operations/1".into(),
            kind: v1::OperationKind::Create as i32,
            state: state as i32,
            message: "queued: waiting for a worker".into(),
            stages: stages
                .iter()
                .map(|(n, s)| v1::Stage {
                    name: n.to_string(),
                    state: *s as i32,
                    start_time: ts(10),
                    end_time: (*s == StageState::Succeeded).then(|| ts(12)).flatten(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn one_line_per_change() {
        let queued = op(
            OperationState::Queued,
            &[("namespace", StageState::Pending)],
        );
        assert_eq!(
            changes(None, &queued),
            ["operations/1 CREATE QUEUED: queued: waiting for a worker"]
        );
        let mut running = op(
            OperationState::Running,
            &[("namespace", StageState::Running)],
        );
        running.attempts.push(v1::Attempt {
            number: 1,
            worker: "w1".into(),
            ..Default::default()
        });
        running.message = "running".into();
        assert_eq!(
            changes(Some(&queued), &running),
            [
                "attempt 1 started on w1",
                "stage namespace started",
                "operation RUNNING: running"
            ]
        );
        let mut waiting = op(
            OperationState::Running,
            &[
                ("namespace", StageState::Succeeded),
                ("pods_ready", StageState::Running),
            ],
        );
        waiting.attempts = running.attempts.clone();
        waiting.blocking_check = "waiting for pods of default: 0 of 3 ready".into();
        assert_eq!(
            changes(Some(&running), &waiting),
            [
                "stage namespace done (2.0s)",
                "stage pods_ready started",
                "waiting: waiting for pods of default: 0 of 3 ready"
            ]
        );
        assert!(
            changes(Some(&waiting), &waiting).is_empty(),
            "nothing new, nothing printed"
        );
        let mut failed = waiting.clone();
        failed.state = OperationState::Failed as i32;
        failed.attempts[0].outcome = "failed: EKS_THROTTLED".into();
        failed.error = Some(esaas_client::tonic_types::pb::Status {
            code: 14,
            message: "node group never became ACTIVE".into(),
            details: vec![],
        });
        assert_eq!(
            changes(Some(&waiting), &failed),
            [
                "attempt 1 ended: failed: EKS_THROTTLED",
                "operation FAILED: node group never became ACTIVE"
            ]
        );
    }
}

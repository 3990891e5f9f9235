//! What a run reports: each scenario's tables and target checks, printed as
//! it finishes, then written to a JSON file and to the generated part of
//! BENCHMARKS.md (between two marker lines; the hand-written rest of the
//! file is kept).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;

/// Start of the generated part of BENCHMARKS.md.
pub const BEGIN: &str =
    "<!-- esaas-bench: generated from here to the end marker; `make bench` rewrites it -->";
/// End of the generated part.
pub const END: &str = "<!-- esaas-bench: end of generated part -->";

/// A table of figures.
#[derive(Debug, Clone, Serialize)]
pub struct Table {
    /// What it shows.
    pub title: String,
    /// Column names.
    pub header: Vec<String>,
    /// Cells.
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// An empty table with these columns.
    pub fn new(title: impl Into<String>, header: &[&str]) -> Self {
        Self {
            title: title.into(),
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }
}

/// A target of the issue, and how this run did against it.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// The target, in words.
    pub target: String,
    /// What was measured.
    pub measured: String,
    /// Whether it was met; `None` when this run's size cannot say.
    pub met: Option<bool>,
}

/// One scenario's results.
#[derive(Debug, Clone, Serialize)]
pub struct Section {
    /// `unary`, `overhead`, `watch`, `inflight` or `coldstart`.
    pub key: &'static str,
    /// Heading.
    pub title: String,
    /// What to know to read the tables.
    pub notes: Vec<String>,
    /// The figures.
    pub tables: Vec<Table>,
    /// Targets.
    pub checks: Vec<Check>,
    /// Everything measured, for machines.
    pub data: serde_json::Value,
}

/// About the run.
#[derive(Debug, Clone, Serialize)]
pub struct Meta {
    /// `tiny` or `full`.
    pub size: String,
    /// When it started (UTC).
    pub started: String,
    /// How long it took, seconds.
    pub seconds: f64,
    /// Commit of the tree, if known.
    pub commit: String,
    /// `release` or `debug`.
    pub profile: String,
    /// CPU model and count.
    pub cpu: String,
    /// Load average when the run started.
    pub load_at_start: String,
    /// PostgreSQL version.
    pub postgres: String,
    /// The command line.
    pub command: String,
}

impl Meta {
    /// What can be learned about the machine.
    pub fn gather(size: &str, postgres: String) -> Self {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, m)| m.trim().to_string())
            })
            .unwrap_or_else(|| "unknown CPU".into());
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0);
        let commit = std::process::Command::new("git")
            .args(["rev-parse", "--short", "HEAD"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        Self {
            size: size.into(),
            started: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
            seconds: 0.0,
            commit,
            profile: if cfg!(debug_assertions) {
                "debug".into()
            } else {
                "release".into()
            },
            cpu: format!("{cores} × {cpu_model}"),
            load_at_start: std::fs::read_to_string("/proc/loadavg")
                .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
                .unwrap_or_default(),
            postgres,
            command: std::env::args().collect::<Vec<_>>().join(" "),
        }
    }
}

fn widths(t: &Table) -> Vec<usize> {
    let mut w: Vec<usize> = t.header.iter().map(|h| h.chars().count()).collect();
    for row in &t.rows {
        for (i, c) in row.iter().enumerate() {
            if let Some(x) = w.get_mut(i) {
                *x = (*x).max(c.chars().count());
            }
        }
    }
    w
}

fn pad(s: &str, w: usize) -> String {
    let n = s.chars().count();
    format!("{s}{}", " ".repeat(w.saturating_sub(n)))
}

fn met(m: Option<bool>) -> &'static str {
    match m {
        Some(true) => "yes",
        Some(false) => "**no**",
        None => "n/a at this size",
    }
}

/// The section as plain text, for the terminal.
pub fn text(s: &Section) -> String {
    let mut out = format!("\n== {} ==\n", s.title);
    for t in &s.tables {
        let w = widths(t);
        let _ = writeln!(out, "\n{}", t.title);
        let line = |cells: &[String]| {
            cells
                .iter()
                .enumerate()
                .map(|(i, c)| pad(c, w.get(i).copied().unwrap_or(0)))
                .collect::<Vec<_>>()
                .join("  ")
        };
        let _ = writeln!(out, "  {}", line(&t.header));
        for r in &t.rows {
            let _ = writeln!(out, "  {}", line(r));
        }
    }
    for c in &s.checks {
        let _ = writeln!(
            out,
            "  target: {} — measured {} — met: {}",
            c.target,
            c.measured,
            met(c.met).trim_matches('*')
        );
    }
    out
}

fn markdown_table(t: &Table) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "| {} |", t.header.join(" | "));
    let _ = writeln!(out, "|{}", "---|".repeat(t.header.len()));
    for r in &t.rows {
        let _ = writeln!(out, "| {} |", r.join(" | "));
    }
    out
}

/// The generated part of BENCHMARKS.md, markers included.
pub fn markdown(meta: &Meta, sections: &[Section]) -> String {
    let mut out = format!("{BEGIN}\n\n");
    let _ = writeln!(out, "## Results: {} run, {}\n", meta.size, meta.started);
    if meta.size == "tiny" {
        let _ = writeln!(
            out,
            "> **Tiny smoke run.** These figures come from `--size tiny`: a handful of requests, \
             one run per point, fewer points, often a debug build. They show that every scenario \
             runs and what the tables look like; they are **not** measurements to compare \
             against the targets. The full run is `make bench` on a quiet machine.\n"
        );
    }
    let _ = writeln!(
        out,
        "Machine: {}; PostgreSQL {}; {} build; commit {}; load average at start {}; took {:.0} s.  \n\
         Command: `{}`\n",
        meta.cpu,
        meta.postgres,
        meta.profile,
        if meta.commit.is_empty() {
            "unknown"
        } else {
            &meta.commit
        },
        meta.load_at_start,
        meta.seconds,
        meta.command
    );
    let checks: Vec<(&str, &Check)> = sections
        .iter()
        .flat_map(|s| s.checks.iter().map(move |c| (s.key, c)))
        .collect();
    if !checks.is_empty() {
        let _ = writeln!(out, "### Targets\n");
        let _ = writeln!(
            out,
            "| scenario | target | measured | met |\n|---|---|---|---|"
        );
        for (key, c) in checks {
            let _ = writeln!(
                out,
                "| {key} | {} | {} | {} |",
                c.target,
                c.measured,
                if meta.size == "tiny" && c.met.is_some() {
                    "(tiny: not judged)"
                } else {
                    met(c.met)
                }
            );
        }
        out.push('\n');
    }
    for s in sections {
        let _ = writeln!(out, "### {}\n", s.title);
        for n in &s.notes {
            let _ = writeln!(out, "- {n}");
        }
        if !s.notes.is_empty() {
            out.push('\n');
        }
        for t in &s.tables {
            let _ = writeln!(out, "**{}**\n", t.title);
            out.push_str(&markdown_table(t));
            out.push('\n');
        }
    }
    let _ = writeln!(out, "{END}");
    out
}

/// Writes the generated part into `path`: between the markers if the file
/// has them, else as a new file with a short heading.
pub fn write_markdown(path: &Path, meta: &Meta, sections: &[Section]) -> anyhow::Result<()> {
    let generated = markdown(meta, sections);
    let existing = std::fs::read_to_string(path).ok();
    let text = match existing.as_deref().and_then(|t| {
        let b = t.find(BEGIN)?;
        let e = t[b..].find(END)? + b + END.len();
        Some((&t[..b], &t[e..]))
    }) {
        Some((before, after)) => format!("{before}{}{after}", generated.trim_end()),
        None => format!(
            "# esaas benchmarks\n\nWritten by `esaas-bench`; the method is in the repository's BENCHMARKS.md.\n\n{generated}"
        ),
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Writes everything as JSON.
pub fn write_json(path: &Path, meta: &Meta, sections: &[Section]) -> anyhow::Result<()> {
    #[derive(Serialize)]
    struct Out<'a> {
        meta: &'a Meta,
        sections: &'a [Section],
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let json = serde_json::to_string_pretty(&Out { meta, sections })?;
    std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section() -> Section {
        let mut t = Table::new("figures", &["a", "bb"]);
        t.row(vec!["1".into(), "2".into()]);
        Section {
            key: "unary",
            title: "Unary".into(),
            notes: vec!["a note".into()],
            tables: vec![t],
            checks: vec![Check {
                target: "fast".into(),
                measured: "1".into(),
                met: Some(true),
            }],
            data: serde_json::Value::Null,
        }
    }

    #[test]
    fn markdown_replaces_only_the_generated_part() {
        let dir = std::env::temp_dir().join(format!("esaas-bench-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("B.md");
        std::fs::write(
            &path,
            format!("# hand\n\nkept\n\n{BEGIN}\nold\n{END}\n\ntail\n"),
        )
        .expect("write");
        let meta = Meta::gather("full", "15".into());
        write_markdown(&path, &meta, &[section()]).expect("markdown");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.starts_with("# hand\n\nkept\n\n"));
        assert!(text.ends_with(&format!("{END}\n\ntail\n")));
        assert!(!text.contains("old"));
        assert!(text.contains("| 1 | 2 |"));
        assert!(text.contains("| unary | fast | 1 | yes |"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

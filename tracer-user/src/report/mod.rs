//! Findings as people and machines read them: text lines, JSON Lines, and the saved
//! report of a `check` run that `sockscope report F` renders again.
use std::io::{self, Write};

use crate::{
    clock::human_ns,
    correlate::{Finding, PcOutcome},
    output::{Format, SCHEMA},
};

pub mod html;
mod text;

pub(crate) use text::write_finding_text;

/// What a `check` or `watch` run concluded.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    pub command: Vec<String>,
    /// How the command ended (`exit 0`, `signal 9`), for `check`.
    pub command_status: Option<String>,
    pub grace_ms: u64,
    pub peer_connections: usize,
    pub judged: usize,
    pub clean: usize,
    pub leaking: usize,
    pub incomplete: usize,
    pub leaks: usize,
    /// PeerConnections that never reached `pc_close_end`.
    pub never_closed: usize,
    /// Of those, the ones whose process exited while they still held open sockets
    /// (`unclosed` records): a leak under `check --strict`.
    #[serde(default)]
    pub unclosed_with_sockets: usize,
    /// Sockets listed as possibly leaked by PeerConnections not seen whole.
    #[serde(default)]
    pub possibly_leaked: usize,
    pub events: u64,
    pub lost: u64,
    pub markers_attached: usize,
}

/// A saved `check` report: everything found, then the summary.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SavedReport {
    pub schema: u32,
    pub findings: Vec<Finding>,
    pub summary: Summary,
    /// The lives of every PeerConnection and its sockets (`report --html` draws them);
    /// absent from reports saved by older versions.
    #[serde(default)]
    pub timeline: Option<crate::correlate::Timeline>,
}

/// Findings printed as they come, and kept for the summary and the saved report.
pub struct FindingLog {
    format: Format,
    pub findings: Vec<Finding>,
    /// Where they go: a file of their own (`check --output`), else stdout.
    file: Option<io::BufWriter<std::fs::File>>,
}

impl FindingLog {
    pub fn new(format: Format) -> Self {
        Self {
            format,
            findings: Vec::new(),
            file: None,
        }
    }

    /// Records and the summary to `path` (created or truncated) instead of stdout.
    pub fn to_file(format: Format, path: &std::path::Path) -> io::Result<Self> {
        Ok(Self {
            file: Some(io::BufWriter::new(std::fs::File::create(path)?)),
            ..Self::new(format)
        })
    }

    fn out(&mut self) -> Box<dyn Write + '_> {
        match &mut self.file {
            Some(f) => Box::new(f),
            None => Box::new(io::stdout().lock()),
        }
    }

    pub fn emit(&mut self, found: Vec<Finding>) -> io::Result<()> {
        if found.is_empty() {
            return Ok(());
        }
        let format = self.format;
        let mut out = self.out();
        for f in &found {
            write_finding(&mut out, f, format)?;
        }
        out.flush()?;
        drop(out);
        self.findings.extend(found);
        Ok(())
    }

    /// The summary, where the records went.
    pub fn summary(&mut self, s: &Summary) -> io::Result<()> {
        let format = self.format;
        let mut out = self.out();
        write_summary(&mut out, s, format)?;
        out.flush()
    }
}

/// What a `check` or `watch` run concluded, as its exit code says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Clean,
    Leaks,
    /// No trustworthy verdict (events lost, or the command did not run properly).
    Inconclusive,
}

impl Outcome {
    pub fn exit_code(self) -> u8 {
        match self {
            Self::Clean => 0,
            Self::Leaks => 1,
            Self::Inconclusive => 2,
        }
    }
}

impl Summary {
    /// Leaks first (with `strict`, PeerConnections left open at their process's exit
    /// with sockets count as leaks too); then lost events or PeerConnections not seen
    /// whole make any other verdict untrustworthy.
    pub fn outcome(&self, strict: bool) -> Outcome {
        if self.leaks > 0 || (strict && self.unclosed_with_sockets > 0) {
            Outcome::Leaks
        } else if self.incomplete > 0 || self.lost > 0 {
            Outcome::Inconclusive
        } else {
            Outcome::Clean
        }
    }

    pub fn count(&mut self, f: &Finding) {
        match f {
            Finding::Verdict(v) => {
                self.judged += 1;
                match v.outcome {
                    PcOutcome::Clean => self.clean += 1,
                    PcOutcome::Leak => self.leaking += 1,
                    PcOutcome::Incomplete => self.incomplete += 1,
                }
                self.leaks += v.leaked;
                self.possibly_leaked += v.possibly_leaked;
            }
            Finding::Unclosed(_) => self.unclosed_with_sockets += 1,
            Finding::Leak(_) | Finding::Late { .. } | Finding::PossibleLeak(_) => {}
        }
    }
}

pub fn write_finding(out: &mut dyn Write, f: &Finding, format: Format) -> io::Result<()> {
    match format {
        Format::Json => {
            let mut v = serde_json::to_value(f).map_err(io::Error::other)?;
            if let Some(o) = v.as_object_mut() {
                o.insert("schema".into(), SCHEMA.into());
            }
            writeln!(out, "{v}")
        }
        Format::Text => write_finding_text(out, f),
    }
}

pub fn write_summary(out: &mut dyn Write, s: &Summary, format: Format) -> io::Result<()> {
    if format == Format::Json {
        let mut v = serde_json::to_value(s).map_err(io::Error::other)?;
        if let Some(o) = v.as_object_mut() {
            o.insert("schema".into(), SCHEMA.into());
            o.insert("event".into(), "summary".into());
        }
        return writeln!(out, "{v}");
    }
    let status = s
        .command_status
        .as_deref()
        .map(|c| format!("command {c}; "))
        .unwrap_or_default();
    writeln!(
        out,
        "summary: {status}{} PeerConnections ({} judged: {} clean, {} leaking, {} incomplete; {} never closed, \
         {} of them with open sockets at exit), {} leaked sockets, {} possibly leaked, {} events, {} lost, grace {}",
        s.peer_connections,
        s.judged,
        s.clean,
        s.leaking,
        s.incomplete,
        s.never_closed,
        s.unclosed_with_sockets,
        s.leaks,
        s.possibly_leaked,
        s.events,
        s.lost,
        human_ns(s.grace_ms * 1_000_000)
    )
}

/// A report saved by `check --report`, checked to be one this sockscope reads.
pub fn load_saved(path: &std::path::Path) -> anyhow::Result<SavedReport> {
    use anyhow::Context as _;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let report: SavedReport = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a sockscope check report (written by --report)",
            path.display()
        )
    })?;
    if report.schema != SCHEMA {
        anyhow::bail!(
            "{} has report schema {}, this sockscope reads {SCHEMA}",
            path.display(),
            report.schema
        );
    }
    Ok(report)
}

/// `sockscope report F`: a saved report, rendered as text.
pub fn render_saved(path: &std::path::Path, out: &mut dyn Write) -> anyhow::Result<()> {
    let report = load_saved(path)?;
    for f in &report.findings {
        write_finding(out, f, Format::Text)?;
    }
    write_summary(out, &report.summary, Format::Text)?;
    Ok(())
}

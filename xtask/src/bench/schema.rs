//! `bench/results.json`: what was measured, on what, when. Bump [`SCHEMA`] when a
//! field changes meaning.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::stats::Spread;

pub const SCHEMA: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
pub struct Results {
    pub schema: u32,
    /// UTC, RFC 3339.
    pub date: String,
    pub quick: bool,
    pub machine: Machine,
    pub figures: Vec<Figure>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Machine {
    pub kernel: String,
    pub cpu: String,
    pub cores: usize,
    pub memory_mib: u64,
    pub rustc: String,
}

/// A goal a figure should meet: `value <= at_most`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Goal {
    pub at_most: f64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Figure {
    /// Stable key, e.g. `churn_slowdown`.
    pub id: String,
    pub title: String,
    pub unit: String,
    /// Median (and range) of the samples; None when nothing could be measured
    /// (then `notes` says why).
    pub value: Option<Spread>,
    pub goal: Option<Goal>,
    /// Supporting numbers (rates, lost events, per-program BPF time...).
    pub details: BTreeMap<String, f64>,
    /// Where the time goes, what was left out, why a value is missing.
    pub notes: Vec<String>,
}

impl Figure {
    pub fn new(id: &str, title: &str, unit: &str) -> Self {
        Self {
            id: id.to_owned(),
            title: title.to_owned(),
            unit: unit.to_owned(),
            value: None,
            goal: None,
            details: BTreeMap::new(),
            notes: Vec::new(),
        }
    }

    pub fn goal(mut self, at_most: f64) -> Self {
        self.goal = Some(Goal { at_most });
        self
    }

    pub fn detail(&mut self, key: &str, value: f64) {
        if value.is_finite() {
            self.details.insert(key.to_owned(), value);
        }
    }

    /// Some(true) when the median meets the goal; None without a goal or a value.
    pub fn met(&self) -> Option<bool> {
        Some(self.value?.median <= self.goal?.at_most)
    }
}

impl Results {
    /// Reads results back, refusing another schema version and figures without a
    /// value that do not say why.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let r: Results = serde_json::from_str(text)?;
        anyhow::ensure!(
            r.schema == SCHEMA,
            "schema {} (expected {SCHEMA})",
            r.schema
        );
        for f in &r.figures {
            anyhow::ensure!(
                f.value.is_some() || !f.notes.is_empty(),
                "figure {} has no value and no note saying why",
                f.id
            );
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Results {
        let mut f = Figure::new("churn_slowdown", "Socket churn", "x").goal(1.05);
        f.value = super::super::stats::spread(&[1.02, 1.04, 1.10]);
        f.detail("lost", 0.0);
        f.detail("nan_is_dropped", f64::NAN);
        Results {
            schema: SCHEMA,
            date: "2026-11-25T00:00:00Z".into(),
            quick: true,
            machine: Machine {
                kernel: "6.18".into(),
                cpu: "cpu".into(),
                cores: 2,
                memory_mib: 1024,
                rustc: "rustc 1.95".into(),
            },
            figures: vec![f],
        }
    }

    #[test]
    fn round_trips_and_judges_goal() {
        let text = serde_json::to_string_pretty(&sample()).unwrap();
        let back = Results::parse(&text).unwrap();
        let f = &back.figures[0];
        assert_eq!(f.value.unwrap().median, 1.04);
        assert_eq!(f.met(), Some(true));
        assert_eq!(f.details.get("lost"), Some(&0.0));
        assert!(!f.details.contains_key("nan_is_dropped"));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        for key in ["schema", "date", "quick", "machine", "figures"] {
            assert!(v.get(key).is_some(), "{key} missing");
        }
        assert!(v["figures"][0]["value"]["median"].is_number());
    }

    #[test]
    fn refuses_other_schema_and_unexplained_gaps() {
        let mut r = sample();
        r.schema = SCHEMA + 1;
        assert!(Results::parse(&serde_json::to_string(&r).unwrap()).is_err());
        let mut r = sample();
        r.figures[0].value = None;
        assert!(Results::parse(&serde_json::to_string(&r).unwrap()).is_err());
        r.figures[0].notes.push("bpftrace is not installed".into());
        assert!(Results::parse(&serde_json::to_string(&r).unwrap()).is_ok());
    }

    #[test]
    fn goal_missed_and_absent() {
        let mut f = Figure::new("x", "x", "x").goal(1.0);
        assert_eq!(f.met(), None);
        f.value = super::super::stats::spread(&[1.5]);
        assert_eq!(f.met(), Some(false));
        f.goal = None;
        assert_eq!(f.met(), None);
    }
}

//! A drill's report: the verdict of every check, the measured RTO/RPO, the
//! mode changes, the faults, operation counts and the timeline chart, as
//! JSON (`report.json`, for machines and CI) and Markdown (`report.md`,
//! for people; it embeds `timeline.svg`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::checker::failover::Measurements;
use crate::checker::verdicts::{Check, Status};
use crate::history::{FaultEvent, Op, OpResult, OpType, Window};

/// Counts of one operation kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub total: usize,
    pub ok: usize,
    pub failed: usize,
    pub unknown: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpStats {
    pub attest: Counts,
    pub writes: Counts,
    pub reads: Counts,
    /// Acknowledged writes per replication mode they were acknowledged in.
    pub acknowledged_by_mode: BTreeMap<String, usize>,
    /// Successful attestations per region that answered.
    pub attest_by_region: BTreeMap<String, usize>,
}

impl OpStats {
    pub fn of(ops: &[Op]) -> Self {
        let mut s = OpStats::default();
        for o in ops {
            let c = match o.kind {
                OpType::Attest => &mut s.attest,
                OpType::Write => &mut s.writes,
                OpType::Read => &mut s.reads,
            };
            c.total += 1;
            match o.result {
                OpResult::Ok => c.ok += 1,
                OpResult::Failed => c.failed += 1,
                OpResult::Unknown => c.unknown += 1,
            }
            if o.result == OpResult::Ok {
                if o.kind == OpType::Write {
                    let m = o.replication_mode.clone().unwrap_or_else(|| "unknown".into());
                    *s.acknowledged_by_mode.entry(m).or_default() += 1;
                }
                if o.kind == OpType::Attest {
                    let r = o.region.clone().unwrap_or_else(|| "unknown".into());
                    *s.attest_by_region.entry(r).or_default() += 1;
                }
            }
        }
        s
    }
}

/// The RPO line of a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RpoFigures {
    /// Acknowledged writes missing on the secondary at the primary loss
    /// (any mode; those acknowledged in `sync` mode would be a violation).
    pub acknowledged_writes_missing: usize,
    pub sync_acknowledged_writes_lost: usize,
    /// Seconds from the first missing acknowledged write to the loss.
    pub window_s: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillReport {
    pub scenario: String,
    pub description: String,
    pub short: bool,
    /// `local` or `docker` (or `http` when no fault backend is used).
    pub backend: String,
    pub primary_region: String,
    pub started_at: String,
    pub duration_s: f64,
    /// Pass when no check failed.
    pub verdict: Status,
    pub checks: Vec<Check>,
    pub measurements: Measurements,
    /// `None` when the scenario does not lose the primary.
    pub rpo: Option<RpoFigures>,
    pub operations: OpStats,
    pub faults: Vec<FaultEvent>,
    pub windows: Vec<Window>,
    /// Files of the run, relative to the report's directory.
    pub files: BTreeMap<String, String>,
}

impl DrillReport {
    /// Pass unless some check failed.
    pub fn verdict_of(checks: &[Check]) -> Status {
        if checks.iter().any(|c| c.status == Status::Fail) {
            Status::Fail
        } else {
            Status::Pass
        }
    }

    pub fn failed_checks(&self) -> Vec<&Check> {
        self.checks.iter().filter(|c| c.status == Status::Fail).collect()
    }

    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let verdict = match self.verdict {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::Skipped => "SKIPPED",
        };
        let _ = writeln!(md, "# Drill `{}`: {verdict}\n", self.scenario);
        let _ = writeln!(md, "{}\n", self.description);
        let _ = writeln!(
            md,
            "Started {} · {:.0} s · {} form · fault backend `{}`\n",
            self.started_at,
            self.duration_s,
            if self.short { "short (CI)" } else { "full" },
            self.backend
        );
        let _ = writeln!(md, "## Verdicts\n\n| check | verdict | result |\n| --- | --- | --- |");
        for c in &self.checks {
            let v = match c.status {
                Status::Pass => "✅ pass",
                Status::Fail => "❌ FAIL",
                Status::Skipped => "➖ n/a",
            };
            let first = c.summary.lines().next().unwrap_or("").replace('|', "\\|");
            let _ = writeln!(md, "| **{}**: {} | {v} | {first} |", c.id, c.title);
        }
        let m = &self.measurements;
        let _ = writeln!(md, "\n## Measurements\n");
        let _ = writeln!(md, "- Longest data-plane RTO: **{:.1} s**", m.max_rto_s);
        let _ = writeln!(
            md,
            "- Longest control-plane recovery after heal (first acknowledged write): **{}**",
            m.max_control_plane_recovery_s.map_or("n/a".to_string(), |s| format!("{s:.1} s"))
        );
        match &self.rpo {
            Some(r) => {
                let _ = writeln!(
                    md,
                    "- RPO at the primary loss: **{} sync-acknowledged writes lost**; {} acknowledged writes (any mode) missing on the secondary; window {:.1} s",
                    r.sync_acknowledged_writes_lost, r.acknowledged_writes_missing, r.window_s
                );
            }
            None => {
                let _ = writeln!(md, "- RPO: not applicable (the primary region is not lost in this scenario)");
            }
        }
        match &m.leader_at_end {
            Some((node, region)) if *region == self.primary_region => {
                let _ = writeln!(md, "- Leader at the end: {node} ({region}, the primary)");
            }
            Some((node, region)) => {
                let _ = writeln!(
                    md,
                    "- Leader at the end: **{node} ({region}), outside the primary region** — brief §4 expects the leader in the primary in normal operation"
                );
            }
            None => {
                let _ = writeln!(md, "- Leader at the end: none seen");
            }
        }
        if !m.data_plane.is_empty() {
            let _ =
                writeln!(md, "\n| disruption | at s | failed calls | data-plane RTO s |\n| --- | --- | --- | --- |");
            for r in &m.data_plane {
                let _ = writeln!(md, "| {} | {:.1} | {} | {:.2} |", r.label, r.at_s, r.errors, r.rto_s);
            }
        }
        if !m.control_plane.is_empty() {
            let _ = writeln!(
                md,
                "\n| heal | at s | first write acknowledged after s | all nodes writable after s | replication `sync` after s |\n| --- | --- | --- | --- | --- |"
            );
            let f = |v: Option<f64>| v.map_or("—".to_string(), |s| format!("{s:.2}"));
            for r in &m.control_plane {
                let _ = writeln!(
                    md,
                    "| {} | {:.1} | {} | {} | {} |",
                    r.label,
                    r.at_s,
                    f(r.first_write_ack_s),
                    f(r.all_writable_s),
                    f(r.sync_again_s)
                );
            }
        }
        if m.mode_changes.is_empty() {
            let _ = writeln!(md, "\nReplication mode: unchanged.");
        } else {
            let _ = writeln!(md, "\n| at s | replication mode | reported by |\n| --- | --- | --- |");
            for c in &m.mode_changes {
                let _ = writeln!(md, "| {:.1} | {} → {} | {} |", c.at_s, c.from, c.to, c.node);
            }
        }
        if let Some(svg) = self.files.get("timeline") {
            let _ = writeln!(md, "\n## Timeline\n\n![timeline]({svg})");
        }
        let _ =
            writeln!(md, "\n## Faults and actions\n\n| at s | took ms | action | error |\n| --- | --- | --- | --- |");
        for f in &self.faults {
            let _ = writeln!(
                md,
                "| {:.2} | {:.0} | {} | {} |",
                f.at_ns as f64 / 1e9,
                f.done_ns.saturating_sub(f.at_ns) as f64 / 1e6,
                f.label,
                f.error.as_deref().unwrap_or("")
            );
        }
        let o = &self.operations;
        let _ = writeln!(
            md,
            "\n## Operations\n\n| kind | total | ok | failed | unknown |\n| --- | --- | --- | --- | --- |"
        );
        for (name, c) in
            [("attest (gateways)", o.attest), ("control-plane writes", o.writes), ("linearizable reads", o.reads)]
        {
            let _ = writeln!(md, "| {name} | {} | {} | {} | {} |", c.total, c.ok, c.failed, c.unknown);
        }
        let modes: Vec<String> = o.acknowledged_by_mode.iter().map(|(m, n)| format!("{n} in `{m}`")).collect();
        let regions: Vec<String> = o.attest_by_region.iter().map(|(r, n)| format!("{n} by {r}")).collect();
        let _ =
            writeln!(md, "\nAcknowledged writes: {}. Attestations answered: {}.", modes.join(", "), regions.join(", "));
        let _ = writeln!(md, "\n## Check details\n");
        for c in &self.checks {
            let _ = writeln!(md, "**{}**\n\n```text\n{}\n```\n", c.id, c.summary);
        }
        if !self.files.is_empty() {
            let files: Vec<String> = self.files.iter().map(|(k, v)| format!("{k}: `{v}`")).collect();
            let _ = writeln!(md, "Files: {}.", files.join(", "));
        }
        md
    }

    /// Writes `report.json` and `report.md` into `dir`.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(dir.join("report.json"), json)?;
        std::fs::write(dir.join("report.md"), self.markdown())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::failover::{ModeChange, Rto};

    #[test]
    fn markdown_lists_verdicts_and_figures() {
        let checks = vec![
            Check {
                id: "durability".into(),
                title: "nothing lost".into(),
                status: Status::Pass,
                summary: "durability: ok".into(),
                details: serde_json::Value::Null,
            },
            Check {
                id: "rpo".into(),
                title: "RPO = 0".into(),
                status: Status::Fail,
                summary: "RPO: VIOLATED | 3 lost\n  - lost: a, b, c".into(),
                details: serde_json::Value::Null,
            },
        ];
        let r = DrillReport {
            scenario: "primary-outage".into(),
            description: "kill the primary".into(),
            short: true,
            backend: "local".into(),
            started_at: "2026-01-01T00:00:00.000Z".into(),
            duration_s: 42.0,
            verdict: DrillReport::verdict_of(&checks),
            checks,
            measurements: Measurements {
                data_plane: vec![Rto { label: "kill".into(), at_s: 5.0, errors: 2, rto_s: 1.25 }],
                control_plane: Vec::new(),
                mode_changes: vec![ModeChange {
                    at_s: 7.0,
                    from: "sync".into(),
                    to: "async".into(),
                    node: "node-1".into(),
                }],
                max_rto_s: 1.25,
                max_control_plane_recovery_s: None,
                leader_at_end: Some(("node-4".into(), "centralus".into())),
            },
            primary_region: "eastus2".into(),
            rpo: Some(RpoFigures { acknowledged_writes_missing: 3, sync_acknowledged_writes_lost: 3, window_s: 1.5 }),
            operations: OpStats::default(),
            faults: Vec::new(),
            windows: Vec::new(),
            files: [("timeline".to_string(), "timeline.svg".to_string())].into_iter().collect(),
        };
        assert_eq!(r.verdict, Status::Fail);
        let md = r.markdown();
        assert!(md.starts_with("# Drill `primary-outage`: FAIL"), "{md}");
        assert!(md.contains("| **rpo**: RPO = 0 | ❌ FAIL | RPO: VIOLATED \\| 3 lost |"), "{md}");
        assert!(md.contains("3 sync-acknowledged writes lost"));
        assert!(md.contains("| kill | 5.0 | 2 | 1.25 |"));
        assert!(md.contains("sync → async"));
        assert!(md.contains("outside the primary region"));
        assert!(md.contains("![timeline](timeline.svg)"));
        let dir = tempfile::tempdir().expect("tempdir");
        r.write(dir.path()).expect("written");
        let back: DrillReport =
            serde_json::from_slice(&std::fs::read(dir.path().join("report.json")).expect("read")).expect("parses");
        assert_eq!(back, r);
    }
}

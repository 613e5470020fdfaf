//! The timeline chart of a drill report, as SVG (plotters' SVG backend with
//! its built-in text layout: no system fonts needed).
//!
//! Upper panel: attestations per second (successes as a line averaged over
//! one second, failures as red bars per 100 ms bucket) and control-plane
//! writes per second (acknowledged as a line, refused as bars), with a vertical marker for every fault or action and
//! every replication-mode change. Lower panel: one band per region for the
//! data plane (all nodes serving / some / none) and one for the control
//! plane (writable / read-only / no answer), from the status polls.

use std::collections::BTreeMap;

use plotters::coord::ranged1d::{IntoSegmentedCoord, SegmentValue};
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::checker::failover::ModeChange;
use crate::history::{OpResult, OpType, Parts, StatusSample};

/// Width of a bucket.
pub const BUCKET_NS: u64 = 100_000_000;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rates {
    pub attest_ok: u32,
    pub attest_err: u32,
    pub write_ok: u32,
    pub write_err: u32,
}

/// Condition of a region's band in one bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BandState {
    /// No sample yet.
    Unknown,
    /// Data plane: every node serves. Control plane: writable.
    Good,
    /// Data plane: some nodes serve. Control plane: read-only.
    Degraded,
    /// No node serves / answers.
    Down,
}

/// One band row: `(start bucket, end bucket, state)` runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Band {
    pub name: String,
    pub runs: Vec<(u64, u64, BandState)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Marker {
    pub at_s: f64,
    pub label: String,
}

/// Everything the chart shows, computed from the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    pub end_s: f64,
    /// Per 100 ms bucket, counts (not rates).
    pub buckets: Vec<Rates>,
    pub bands: Vec<Band>,
    pub faults: Vec<Marker>,
    pub modes: Vec<Marker>,
}

impl Timeline {
    pub fn build(parts: &Parts, regions: &[String], mode_changes: &[ModeChange]) -> Self {
        let end = parts.end_ns();
        let n = (end / BUCKET_NS + 1) as usize;
        let mut buckets = vec![Rates::default(); n];
        for op in &parts.ops {
            let Some(b) = buckets.get_mut((op.end_ns / BUCKET_NS) as usize) else { continue };
            let ok = op.result == OpResult::Ok;
            match (op.kind, ok) {
                (OpType::Attest, true) => b.attest_ok += 1,
                (OpType::Attest, false) => b.attest_err += 1,
                (OpType::Write, true) => b.write_ok += 1,
                (OpType::Write, false) => b.write_err += 1,
                (OpType::Read, _) => {}
            }
        }
        let mut bands = Vec::new();
        for r in regions {
            let samples: Vec<&StatusSample> = parts.status.iter().filter(|s| &s.region == r).collect();
            bands.push(Band { name: format!("{r} data plane"), runs: runs(n, &samples, data_state) });
            bands.push(Band { name: format!("{r} control plane"), runs: runs(n, &samples, control_state) });
        }
        let faults =
            parts.faults.iter().map(|f| Marker { at_s: f.at_ns as f64 / 1e9, label: f.label.clone() }).collect();
        let modes = mode_changes.iter().map(|m| Marker { at_s: m.at_s, label: format!("→ {}", m.to) }).collect();
        Self { end_s: end as f64 / 1e9, buckets, bands, faults, modes }
    }

    /// Renders the chart as an SVG document.
    pub fn svg(&self, title: &str) -> Result<String, String> {
        let mut buf = String::new();
        draw(self, title, &mut buf).map_err(|e| format!("drawing the timeline: {e}"))?;
        Ok(buf)
    }
}

fn data_state(latest: &[&StatusSample]) -> BandState {
    let serving = latest.iter().filter(|s| s.serving()).count();
    match serving {
        0 => BandState::Down,
        n if n == latest.len() => BandState::Good,
        _ => BandState::Degraded,
    }
}

fn control_state(latest: &[&StatusSample]) -> BandState {
    let answering: Vec<&&StatusSample> = latest.iter().filter(|s| s.http.is_some()).collect();
    if answering.is_empty() {
        BandState::Down
    } else if answering.iter().any(|s| s.control_plane.as_deref() == Some("writable")) {
        BandState::Good
    } else {
        BandState::Degraded
    }
}

/// Per bucket, the state computed from each node's latest sample so far,
/// folded into runs of equal state.
fn runs(n: usize, samples: &[&StatusSample], state: fn(&[&StatusSample]) -> BandState) -> Vec<(u64, u64, BandState)> {
    let mut sorted = samples.to_vec();
    sorted.sort_by_key(|s| s.at_ns);
    let mut latest: BTreeMap<&str, &StatusSample> = BTreeMap::new();
    let mut it = sorted.into_iter().peekable();
    let mut out: Vec<(u64, u64, BandState)> = Vec::new();
    for b in 0..n as u64 {
        let until = (b + 1) * BUCKET_NS;
        while let Some(s) = it.next_if(|s| s.at_ns < until) {
            latest.insert(s.node.as_str(), s);
        }
        let st = if latest.is_empty() {
            BandState::Unknown
        } else {
            let v: Vec<&StatusSample> = latest.values().copied().collect();
            state(&v)
        };
        match out.last_mut() {
            Some(last) if last.2 == st => last.1 = b + 1,
            _ => out.push((b, b + 1, st)),
        }
    }
    out
}

fn band_color(s: BandState, control: bool) -> RGBColor {
    match (s, control) {
        (BandState::Unknown, _) => RGBColor(220, 220, 220),
        (BandState::Good, false) => RGBColor(76, 175, 80),
        (BandState::Good, true) => RGBColor(66, 133, 244),
        (BandState::Degraded, false) => RGBColor(255, 193, 7),
        (BandState::Degraded, true) => RGBColor(255, 152, 0),
        (BandState::Down, _) => RGBColor(211, 47, 47),
    }
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

/// Left label area of both panels, so that their time axes line up.
const LABEL_AREA: u32 = 170;

/// Centered moving average over `k` buckets (successes are few per 100 ms:
/// the raw series is a comb).
fn smooth(values: &[f64], k: usize) -> Vec<f64> {
    let half = k / 2;
    (0..values.len())
        .map(|i| {
            let (a, b) = (i.saturating_sub(half), (i + half + 1).min(values.len()));
            values[a..b].iter().sum::<f64>() / (b - a) as f64
        })
        .collect()
}

fn draw(t: &Timeline, title: &str, buf: &mut String) -> DrawResult {
    let height = 500 + 28 * t.bands.len() as u32;
    let root = SVGBackend::with_string(buf, (1200, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let (upper, rest) = root.split_vertically(430);
    let (lower, legend_area) = rest.split_vertically(height - 430 - 30);
    let end = t.end_s.max(1.0);
    let per_s = 1e9 / BUCKET_NS as f64;
    let ok: Vec<f64> = t.buckets.iter().map(|b| f64::from(b.attest_ok) * per_s).collect();
    let acked: Vec<f64> = t.buckets.iter().map(|b| f64::from(b.write_ok) * per_s).collect();
    let (ok, acked) = (smooth(&ok, 10), smooth(&acked, 10));
    let bars = t.buckets.iter().map(|b| f64::from(b.attest_err.max(b.write_err)) * per_s);
    let ymax = ok.iter().chain(acked.iter()).copied().chain(bars).fold(1.0, f64::max) * 1.3;
    let mut chart = ChartBuilder::on(&upper)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(32)
        .y_label_area_size(LABEL_AREA)
        .build_cartesian_2d(0f64..end, 0f64..ymax)?;
    chart
        .configure_mesh()
        .x_desc("seconds since start")
        .y_desc("per second (100 ms buckets)")
        .light_line_style(RGBColor(240, 240, 240))
        .draw()?;
    let w = BUCKET_NS as f64 / 1e9;
    let at = |i: usize| i as f64 * w;
    let red = RGBColor(211, 47, 47);
    let orange = RGBColor(255, 152, 0);
    let green = RGBColor(46, 125, 50);
    let blue = RGBColor(21, 101, 192);
    chart
        .draw_series(t.buckets.iter().enumerate().filter(|(_, b)| b.attest_err > 0).map(|(i, b)| {
            Rectangle::new([(at(i), 0.0), (at(i) + w, f64::from(b.attest_err) * per_s)], red.mix(0.7).filled())
        }))?
        .label("attest errors/s (per 100 ms)")
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], red.filled()));
    chart
        .draw_series(t.buckets.iter().enumerate().filter(|(_, b)| b.write_err > 0).map(|(i, b)| {
            Rectangle::new([(at(i), 0.0), (at(i) + w, f64::from(b.write_err) * per_s)], orange.mix(0.6).filled())
        }))?
        .label("writes refused/failed/s (per 100 ms)")
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], orange.filled()));
    chart
        .draw_series(LineSeries::new(ok.iter().enumerate().map(|(i, v)| (at(i) + w / 2.0, *v)), green.stroke_width(2)))?
        .label("attest ok/s (1 s average)")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 12, y)], green.stroke_width(2)));
    chart
        .draw_series(LineSeries::new(
            acked.iter().enumerate().map(|(i, v)| (at(i) + w / 2.0, *v)),
            blue.stroke_width(2),
        ))?
        .label("writes acknowledged/s (1 s average)")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 12, y)], blue.stroke_width(2)));
    // Markers: faults in black, mode changes in purple; labels staggered so neighbours stay legible.
    let purple = RGBColor(123, 31, 162);
    for (i, m) in t.faults.iter().enumerate() {
        chart.draw_series(std::iter::once(PathElement::new(vec![(m.at_s, 0.0), (m.at_s, ymax)], BLACK.mix(0.6))))?;
        let y = ymax * (0.97 - 0.055 * (i % 4) as f64);
        chart.draw_series(std::iter::once(Text::new(
            m.label.clone(),
            (m.at_s + end * 0.003, y),
            ("sans-serif", 11),
        )))?;
    }
    for (i, m) in t.modes.iter().enumerate() {
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(m.at_s, 0.0), (m.at_s, ymax * 0.7)],
            purple.stroke_width(2),
        )))?;
        let y = ymax * (0.72 - 0.05 * (i % 3) as f64);
        chart.draw_series(std::iter::once(Text::new(
            m.label.clone(),
            (m.at_s + end * 0.003, y),
            ("sans-serif", 11).into_font().color(&purple),
        )))?;
    }

    let rows = t.bands.len().max(1) as i32;
    let names: Vec<String> = t.bands.iter().map(|b| b.name.clone()).collect();
    let mut bands = ChartBuilder::on(&lower)
        .margin(12)
        .x_label_area_size(28)
        .y_label_area_size(LABEL_AREA)
        .build_cartesian_2d(0f64..end, (0..rows - 1).into_segmented())?;
    bands
        .configure_mesh()
        .disable_mesh()
        .y_labels(rows as usize)
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => names.get(*i as usize).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .x_desc("seconds since start")
        .draw()?;
    for (row, b) in t.bands.iter().enumerate() {
        let control = b.name.ends_with("control plane");
        let row = row as i32;
        bands.draw_series(b.runs.iter().map(|(s, e, st)| {
            Rectangle::new(
                [(at(*s as usize), SegmentValue::Exact(row)), (at(*e as usize), SegmentValue::Exact(row + 1))],
                band_color(*st, control).filled(),
            )
        }))?;
    }
    for m in &t.faults {
        bands.draw_series(std::iter::once(PathElement::new(
            vec![(m.at_s, SegmentValue::Exact(0)), (m.at_s, SegmentValue::Exact(rows))],
            BLACK.mix(0.6),
        )))?;
    }
    // One legend row under both panels (inside the plot it would hide markers).
    let entries: [(RGBColor, &str, bool); 10] = [
        (green, "attest ok/s (1 s avg)", false),
        (red, "attest errors/s (100 ms)", true),
        (blue, "writes acked/s (1 s avg)", false),
        (orange, "writes refused/s (100 ms)", true),
        (purple, "mode change", false),
        (band_color(BandState::Good, false), "all serving", true),
        (band_color(BandState::Degraded, false), "some serving", true),
        (band_color(BandState::Good, true), "writable", true),
        (band_color(BandState::Degraded, true), "read-only", true),
        (band_color(BandState::Down, false), "down", true),
    ];
    let mut x = 12i32;
    for (color, label, block) in entries {
        if block {
            legend_area.draw(&Rectangle::new([(x, 10), (x + 12, 20)], color.filled()))?;
        } else {
            legend_area.draw(&PathElement::new(vec![(x, 15), (x + 12, 15)], color.stroke_width(3)))?;
        }
        legend_area.draw(&Text::new(label.to_string(), (x + 16, 9), ("sans-serif", 11)))?;
        x += 24 + (label.len() as i32) * 6;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{FaultEvent, Op};

    fn sample(at_ms: u64, node: &str, region: &str, http: Option<u16>, cp: &str) -> StatusSample {
        StatusSample {
            at_ns: at_ms * 1_000_000,
            node: node.into(),
            region: region.into(),
            http,
            raft_role: None,
            leader: None,
            term: None,
            control_plane: http.map(|_| cp.to_string()),
            replication_mode: None,
            applied_index: None,
            draining: None,
            fenced: None,
            epoch: None,
        }
    }

    #[test]
    fn bands_and_buckets_follow_the_history() {
        let mut parts = Parts::default();
        for (i, ok) in [(1u64, true), (2, true), (3, false)] {
            let mut o = Op::begin(i, OpType::Attest, "a", "gateway-eastus2", i * 100_000_000);
            o.end_ns = i * 100_000_000 + 10;
            o.result = if ok { OpResult::Ok } else { OpResult::Failed };
            parts.ops.push(o);
        }
        parts.status = vec![
            sample(0, "node-1", "eastus2", Some(200), "writable"),
            sample(0, "node-2", "eastus2", Some(200), "writable"),
            sample(250, "node-1", "eastus2", None, ""),
            sample(450, "node-2", "eastus2", None, ""),
        ];
        parts.faults.push(FaultEvent {
            at_ns: 200_000_000,
            done_ns: 210_000_000,
            label: "kill -9 region eastus2".into(),
            fault: serde_json::Value::Null,
            error: None,
        });
        let t = Timeline::build(&parts, &["eastus2".to_string()], &[]);
        assert_eq!(t.buckets.len(), 5);
        assert_eq!(t.buckets[3].attest_err, 1);
        assert_eq!(t.buckets[1].attest_ok, 1);
        let data = &t.bands[0].runs;
        assert_eq!(data, &vec![(0, 2, BandState::Good), (2, 4, BandState::Degraded), (4, 5, BandState::Down)]);
        let control = &t.bands[1].runs;
        assert_eq!(control, &vec![(0, 4, BandState::Good), (4, 5, BandState::Down)]);
        let svg = t.svg("unit").expect("renders");
        assert!(
            svg.starts_with("<svg") && svg.contains("kill -9 region eastus2") && svg.contains("eastus2 data plane")
        );
    }
}

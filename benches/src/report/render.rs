//! The report's outputs: the table (for stderr), the JSON object (for stdout) and the SVG plot
//! of median latency against payload.

use super::targets::Target;
use super::{Failure, Row, PAYLOADS};
use crate::process::PlacementKind;
use crate::summary::format_ns;
use std::fmt::Write as _;

/// `0 B`, `8 B`, `4 KiB`, `1 MiB`...
pub fn payload_label(bytes: usize) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} B"),
    }
}

/// The table: name, payload, placement, median, p99, and the floor with its median and the
/// ratio (absolute numbers always beside the ratio).
pub fn table(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<26} {:>7} {:<6} {:>11} {:>11}  {:<12} {:>11} {:>8}\n",
        "name", "payload", "place", "median", "p99", "floor", "floor med", "ratio"
    );
    for r in rows {
        let (floor, floor_med, ratio) = match r.floor {
            Some((f, m)) if m > 0.0 => (f, format_ns(m), format!("{:.2}x", r.median_ns / m)),
            _ => ("-", "-".to_owned(), "-".to_owned()),
        };
        let _ = writeln!(
            out,
            "{:<26} {:>7} {:<6} {:>11} {:>11}  {:<12} {:>11} {:>8}",
            r.case.name,
            payload_label(r.case.payload),
            r.case.placement.as_str(),
            format_ns(r.median_ns),
            format_ns(r.p99_ns),
            floor,
            floor_med,
            ratio
        );
    }
    out
}

/// The same table in Markdown, for docs/benchmarks.md.
pub fn markdown(rows: &[Row]) -> String {
    let mut out = String::from(
        "| name | payload | placement | median | p99 | floor | floor median | ratio |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let (floor, floor_med, ratio) = match r.floor {
            Some((f, m)) if m > 0.0 => (
                format!("`{f}`"),
                format_ns(m),
                format!("{:.2}×", r.median_ns / m),
            ),
            _ => (String::new(), String::new(), String::new()),
        };
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} | {} | {floor} | {floor_med} | {ratio} |",
            r.case.name,
            payload_label(r.case.payload),
            r.case.placement.as_str(),
            format_ns(r.median_ns),
            format_ns(r.p99_ns),
        );
    }
    out
}

/// A JSON string literal.
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A JSON number (finite; anything else becomes `null`).
fn json_num(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.1}")
    } else {
        "null".to_owned()
    }
}

/// Everything a JSON report holds besides the rows.
#[derive(Debug, Clone, Default)]
pub struct JsonExtras<'a> {
    /// Cases not run, with the reason.
    pub skipped: Vec<(String, usize, &'static str, String)>,
    /// Cases that failed.
    pub failures: &'a [Failure],
    /// The targets.
    pub targets: &'a [Target],
    /// Where the plot went.
    pub svg: Option<String>,
    /// Load averages before and after.
    pub load: (Option<String>, Option<String>),
}

/// The one JSON object of `--json`: `{"results":[{"name","payload","placement","median_ns",
/// "p99_ns"},...], ...}` with the issue's names, payload in bytes; throughput rows give ns per
/// completed round trip, the guaranteed-delivery rows (`gmd_*`) ns per delivered message. A row
/// compared with another (its floor; for `ha_msg_send`, the `msg_send_paired` runs interleaved
/// with it; for `gmd_*`, the `msg_send` 8 B `apart` row of the same run) also has `"floor"`,
/// `"floor_median_ns"` and `"ratio"`. Besides the results: `skipped`, `failed`, `targets`,
/// `svg`, `load_average`.
pub fn json(rows: &[Row], extras: &JsonExtras<'_>) -> String {
    let mut out = String::from("{\"results\":[");
    for (i, r) in rows.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(
            out,
            "{{\"name\":{},\"payload\":{},\"placement\":{},\"median_ns\":{},\"p99_ns\":{}}}",
            json_str(&r.case.name),
            r.case.payload,
            json_str(r.case.placement.as_str()),
            json_num(r.median_ns),
            json_num(r.p99_ns)
        );
        if let Some((floor, m)) = r.floor.filter(|f| f.1 > 0.0) {
            // Drop the closing brace, add the reference, close again.
            out.pop();
            let _ = write!(
                out,
                ",\"floor\":{},\"floor_median_ns\":{},\"ratio\":{:.4}}}",
                json_str(floor),
                json_num(m),
                r.median_ns / m
            );
        }
    }
    out.push_str("],\"skipped\":[");
    for (i, (name, payload, placement, why)) in extras.skipped.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(
            out,
            "{{\"name\":{},\"payload\":{payload},\"placement\":{},\"reason\":{}}}",
            json_str(name),
            json_str(placement),
            json_str(why)
        );
    }
    out.push_str("],\"failed\":[");
    for (i, f) in extras.failures.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(
            out,
            "{{\"name\":{},\"payload\":{},\"placement\":{},\"repeat\":{},\"error\":{}}}",
            json_str(&f.case.name),
            f.case.payload,
            json_str(f.case.placement.as_str()),
            f.repeat,
            json_str(&f.error)
        );
    }
    out.push_str("],\"targets\":[");
    for (i, t) in extras.targets.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(
            out,
            "{{\"claim\":{},\"verdict\":{},\"detail\":{}}}",
            json_str(&t.claim),
            json_str(t.verdict.as_str()),
            json_str(&t.detail)
        );
    }
    let opt = |s: &Option<String>| s.as_deref().map_or("null".to_owned(), json_str);
    let _ = write!(
        out,
        "],\"svg\":{},\"load_average\":{{\"before\":{},\"after\":{}}}}}",
        opt(&extras.svg),
        opt(&extras.load.0),
        opt(&extras.load.1)
    );
    out
}

/// The series of the plot: name, colour, dashed.
const SERIES: [(&str, &str, bool); 9] = [
    ("msg_send", "#d62728", false),
    ("msg_send_blocking", "#ff7f0e", false),
    ("spin_floor", "#555555", true),
    ("futex_floor", "#999999", true),
    ("memcpy", "#bbbbbb", true),
    ("pipe", "#1f77b4", false),
    ("uds_stream", "#2ca02c", false),
    ("uds_seqpacket", "#9467bd", false),
    ("iceoryx2", "#8c564b", false),
];

/// An SVG plot of median latency (log scale) against payload (one column per size), one panel
/// per placement (`apart`, `same`), for `msg_send`, `msg_send_blocking`, the floors, `memcpy`
/// (drawn in both panels: it has no placement) and the peers. `title` goes on top.
pub fn svg(rows: &[Row], title: &str) -> String {
    const W: f64 = 1100.0;
    const H: f64 = 520.0;
    const TOP: f64 = 60.0;
    const BOTTOM: f64 = 60.0;
    const LEFT: f64 = 70.0;
    const PANEL_W: f64 = 380.0;
    const GAP: f64 = 60.0;
    let plot_h = H - TOP - BOTTOM;
    let values: Vec<f64> = rows
        .iter()
        .filter(|r| SERIES.iter().any(|s| s.0 == r.case.name) && r.median_ns > 0.0)
        .map(|r| r.median_ns)
        .collect();
    // With no latency rows (only throughput, say) the axis spans 100 ns to 100 µs.
    let lo = values.iter().cloned().fold(f64::INFINITY, f64::min);
    let lo = if lo.is_finite() { lo.max(0.1) } else { 100.0 };
    let hi = values.iter().cloned().fold(0.0, f64::max).max(lo * 10.0);
    let (dlo, dhi) = (lo.log10().floor(), hi.log10().ceil());
    // Values are positive (filtered above), grid lines are powers of ten: no clamping needed.
    let y = |v: f64| TOP + plot_h * (1.0 - (v.log10() - dlo) / (dhi - dlo));
    let x = |panel: usize, i: usize| {
        LEFT + panel as f64 * (PANEL_W + GAP) + PANEL_W * (i as f64 + 0.5) / PAYLOADS.len() as f64
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" \
         viewBox=\"0 0 {W} {H}\" font-family=\"sans-serif\" font-size=\"12\">"
    );
    let _ = writeln!(out, "<rect width=\"{W}\" height=\"{H}\" fill=\"white\"/>");
    let _ = writeln!(
        out,
        "<text x=\"{LEFT}\" y=\"24\" font-size=\"15\">{}</text>",
        xml(title)
    );
    for (panel, placement) in [PlacementKind::Apart, PlacementKind::Same]
        .iter()
        .enumerate()
    {
        let x0 = LEFT + panel as f64 * (PANEL_W + GAP);
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"13\">{} ({})</text>",
            x0 + PANEL_W / 2.0,
            TOP - 12.0,
            placement.as_str(),
            match placement {
                PlacementKind::Apart => "client CPU 0, server CPU 1",
                _ => "both on CPU 0",
            }
        );
        // Decade grid lines and labels.
        for decade in 0..=(dhi - dlo) as i32 {
            let v = 10f64.powf(dlo + f64::from(decade));
            let yy = y(v);
            let _ = writeln!(
                out,
                "<line x1=\"{x0}\" y1=\"{yy:.1}\" x2=\"{}\" y2=\"{yy:.1}\" stroke=\"#e0e0e0\"/>",
                x0 + PANEL_W
            );
            let _ = writeln!(
                out,
                "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                x0 - 6.0,
                yy + 4.0,
                format_ns(v).replace(".000", "").replace(".0 ", " ")
            );
        }
        let _ = writeln!(
            out,
            "<rect x=\"{x0}\" y=\"{TOP}\" width=\"{PANEL_W}\" height=\"{plot_h}\" fill=\"none\" stroke=\"#444\"/>"
        );
        for (i, p) in PAYLOADS.iter().enumerate() {
            let _ = writeln!(
                out,
                "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                x(panel, i),
                TOP + plot_h + 18.0,
                payload_label(*p)
            );
        }
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">payload (each way)</text>",
            x0 + PANEL_W / 2.0,
            TOP + plot_h + 38.0
        );
        for (name, colour, dashed) in SERIES {
            let points: Vec<(f64, f64)> = PAYLOADS
                .iter()
                .enumerate()
                .filter_map(|(i, p)| {
                    rows.iter()
                        .find(|r| {
                            r.case.name == name
                                && r.case.payload == *p
                                && (r.case.placement == *placement
                                    || r.case.placement == PlacementKind::None)
                        })
                        .map(|r| (x(panel, i), y(r.median_ns)))
                })
                .collect();
            if points.is_empty() {
                continue;
            }
            let path: Vec<String> = points
                .iter()
                .map(|(px, py)| format!("{px:.1},{py:.1}"))
                .collect();
            let _ = writeln!(
                out,
                "<polyline points=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"{}/>",
                path.join(" "),
                if dashed {
                    " stroke-dasharray=\"6 4\""
                } else {
                    ""
                }
            );
            for (px, py) in points {
                let _ = writeln!(
                    out,
                    "<circle cx=\"{px:.1}\" cy=\"{py:.1}\" r=\"3\" fill=\"{colour}\"/>"
                );
            }
        }
    }
    // Legend.
    let lx = LEFT + 2.0 * (PANEL_W + GAP) - 20.0;
    let _ = writeln!(
        out,
        "<text x=\"{lx}\" y=\"{}\" font-size=\"13\">median round trip</text>",
        TOP + 4.0
    );
    for (k, (name, colour, dashed)) in SERIES.iter().enumerate() {
        let ly = TOP + 26.0 + 22.0 * k as f64;
        let _ = writeln!(
            out,
            "<line x1=\"{lx}\" y1=\"{ly}\" x2=\"{}\" y2=\"{ly}\" stroke=\"{colour}\" stroke-width=\"2\"{}/>",
            lx + 28.0,
            if *dashed {
                " stroke-dasharray=\"6 4\""
            } else {
                ""
            }
        );
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{}\">{name}</text>",
            lx + 36.0,
            ly + 4.0
        );
    }
    let _ = writeln!(
        out,
        "<text x=\"{lx}\" y=\"{}\" fill=\"#666\">memcpy: one copy,</text>\n\
         <text x=\"{lx}\" y=\"{}\" fill=\"#666\">not a round trip</text>",
        TOP + 26.0 + 22.0 * SERIES.len() as f64 + 10.0,
        TOP + 26.0 + 22.0 * SERIES.len() as f64 + 26.0
    );
    out.push_str("</svg>\n");
    out
}

/// Escapes text for XML.
fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Case, CaseKind};

    fn row(name: &str, payload: usize, placement: PlacementKind, median: f64) -> Row {
        Row {
            case: Case {
                name: name.into(),
                payload,
                placement,
                kind: CaseKind::Memcpy,
            },
            median_ns: median,
            p99_ns: median * 2.0,
            samples: 10,
            floor: None,
        }
    }

    #[test]
    fn payload_labels() {
        assert_eq!(payload_label(0), "0 B");
        assert_eq!(payload_label(8), "8 B");
        assert_eq!(payload_label(4096), "4 KiB");
        assert_eq!(payload_label(1 << 20), "1 MiB");
        assert_eq!(payload_label(1000), "1000 B");
    }

    #[test]
    fn json_is_one_object_with_the_issue_fields() {
        let rows = [row("msg_send", 8, PlacementKind::Apart, 150.0)];
        let j = json(&rows, &JsonExtras::default());
        assert!(j.starts_with("{\"results\":[{\"name\":\"msg_send\",\"payload\":8,\"placement\":\"apart\",\"median_ns\":150.0,\"p99_ns\":300.0}]"), "{j}");
        assert!(j.ends_with('}'));
        assert_eq!(j.lines().count(), 1);
        assert_eq!(json_str("a\"b\\c\n"), "\"a\\\"b\\\\c\\n\"");
        let mut ha = row("ha_msg_send", 8, PlacementKind::Apart, 105.0);
        ha.floor = Some(("msg_send_paired", 100.0));
        let j = json(&[ha], &JsonExtras::default());
        assert!(j.contains("\"p99_ns\":210.0,\"floor\":\"msg_send_paired\",\"floor_median_ns\":100.0,\"ratio\":1.0500}]"), "{j}");
        let mut gmd = row("gmd_file_each", 8, PlacementKind::Apart, 250_000.0);
        gmd.floor = Some(("msg_send", 500.0));
        let j = json(&[gmd], &JsonExtras::default());
        assert!(j.contains("{\"name\":\"gmd_file_each\",\"payload\":8,\"placement\":\"apart\",\"median_ns\":250000.0,\"p99_ns\":500000.0,\"floor\":\"msg_send\",\"floor_median_ns\":500.0,\"ratio\":500.0000}"), "{j}");
        assert_eq!(json_num(f64::NAN), "null");
    }

    #[test]
    fn svg_without_latency_rows_is_still_a_plot() {
        let rows = [row(
            "throughput_blocking_c1_r1",
            8,
            PlacementKind::None,
            20_000.0,
        )];
        let s = svg(&rows, "t");
        assert!(s.trim_end().ends_with("</svg>"));
        assert_eq!(s.matches("<polyline").count(), 0);
    }

    #[test]
    fn svg_draws_a_line_per_measured_series() {
        let rows = [
            row("msg_send", 8, PlacementKind::Apart, 150.0),
            row("msg_send", 256, PlacementKind::Apart, 200.0),
            row("pipe", 8, PlacementKind::Same, 5000.0),
        ];
        let s = svg(&rows, "t <1>");
        assert!(s.starts_with("<svg"));
        assert!(s.trim_end().ends_with("</svg>"));
        assert_eq!(s.matches("<polyline").count(), 2);
        assert!(s.contains("t &lt;1&gt;"));
    }
}

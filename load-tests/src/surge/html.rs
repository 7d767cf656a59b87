//! The report as one self-contained page (`--html FILE`): summary and SLO verdicts, outcomes
//! by status, channel and operator, and the run over time: rates offered, achieved and
//! refused; authorizations in flight; the gateway's own latency percentiles and the end-to-end
//! latency of answered authorizations (log scales, expiries left out: an expiry's latency is
//! the expiry time whatever the system did); the gateway's SMPP window and throttles.
//!
//! The charts are inline SVG drawn with plotters; the page loads nothing, so it can be mailed
//! or attached to a ticket. A few lines of script check the page once it is open (every chart
//! drawn, no script error) and say so on `<body>` (`data-charts`, `data-errors`), which the
//! suite reads from a headless Chromium.

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;

use super::report::{Report, TimelinePoint};

/// Why the page could not be written.
#[derive(Debug, thiserror::Error)]
#[error("writing the HTML report {path}: {message}")]
pub struct HtmlError {
    pub path: String,
    pub message: String,
}

/// Writes the page of `report` to `path`.
pub fn write_html(path: &Path, report: &Report, title: &str) -> Result<(), HtmlError> {
    let err = |message: String| HtmlError {
        path: path.display().to_string(),
        message,
    };
    let page = render(report, title).map_err(err)?;
    std::fs::write(path, page).map_err(|e| err(e.to_string()))
}

/// One line of a chart: its name, colour and points (`None`: no value that second).
struct Line {
    name: &'static str,
    color: RGBColor,
    points: Vec<(f64, Option<f64>)>,
}

fn line(
    name: &'static str,
    color: RGBColor,
    timeline: &[TimelinePoint],
    value: impl Fn(&TimelinePoint) -> Option<f64>,
) -> Line {
    Line {
        name,
        color,
        points: timeline
            .iter()
            .map(|p| (p.second as f64, value(p)))
            .collect(),
    }
}

const ORANGE: RGBColor = RGBColor(230, 130, 20);
const GREY: RGBColor = RGBColor(120, 120, 120);
const DARK_GREEN: RGBColor = RGBColor(20, 140, 60);

/// One chart as an SVG element. With `log`, the value axis is logarithmic and values below 1
/// are left out.
fn chart(title: &str, unit: &str, log: bool, lines: &[Line]) -> Result<String, String> {
    let secs = lines
        .iter()
        .flat_map(|l| l.points.last().map(|p| p.0))
        .fold(1.0f64, f64::max);
    let values = || {
        lines
            .iter()
            .flat_map(|l| l.points.iter().filter_map(|p| p.1))
            .filter(move |v| !log || *v >= 1.0)
    };
    let max = values().fold(1.0f64, f64::max) * 1.15;
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (960, 300)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut builder = ChartBuilder::on(&root);
        builder
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(64)
            .caption(title, ("sans-serif", 16));
        macro_rules! draw {
            ($chart:expr, $to_y:expr) => {{
                let mut chart = $chart;
                chart
                    .configure_mesh()
                    .x_desc("s since the start")
                    .y_desc(unit)
                    .y_labels(8)
                    .y_label_formatter(&|v: &f64| format!("{v:.0}"))
                    .draw()
                    .map_err(|e| e.to_string())?;
                for l in lines {
                    let color = l.color;
                    chart
                        .draw_series(LineSeries::new(
                            l.points.iter().filter_map(|&(x, y)| {
                                y.filter(|v| !log || *v >= 1.0).map(|y| (x, $to_y(y)))
                            }),
                            color.stroke_width(2),
                        ))
                        .map_err(|e| e.to_string())?
                        .label(l.name)
                        .legend(move |(x, y)| {
                            PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                        });
                }
                chart
                    .configure_series_labels()
                    .position(SeriesLabelPosition::UpperRight)
                    .background_style(WHITE.mix(0.85))
                    .border_style(BLACK)
                    .draw()
                    .map_err(|e| e.to_string())?;
            }};
        }
        if log {
            draw!(
                builder
                    .build_cartesian_2d(0f64..secs, (1f64..max.max(10.0)).log_scale())
                    .map_err(|e| e.to_string())?,
                |y: f64| y
            );
        } else {
            draw!(
                builder
                    .build_cartesian_2d(0f64..secs, 0f64..max)
                    .map_err(|e| e.to_string())?,
                |y: f64| y
            );
        }
        root.present().map_err(|e| e.to_string())?;
    }
    // The chart's own class, for the page's check and its style.
    Ok(out.replacen("<svg ", "<svg class=\"chart\" role=\"img\" ", 1))
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A table of status counts by `group` (channel or operator), one row per group.
fn breakdown(
    caption: &str,
    rows: &std::collections::BTreeMap<String, std::collections::BTreeMap<String, u64>>,
) -> String {
    let mut statuses: Vec<&String> = rows.values().flat_map(|m| m.keys()).collect();
    statuses.sort();
    statuses.dedup();
    let mut s = format!("<table><caption>{}</caption><tr><th></th>", escape(caption));
    for st in &statuses {
        let _ = write!(s, "<th>{}</th>", escape(st));
    }
    s.push_str("<th>total</th></tr>");
    for (group, counts) in rows {
        let _ = write!(s, "<tr><th>{}</th>", escape(group));
        for st in &statuses {
            let _ = write!(s, "<td>{}</td>", counts.get(*st).copied().unwrap_or(0));
        }
        let _ = write!(s, "<td>{}</td></tr>", counts.values().sum::<u64>());
    }
    s.push_str("</table>");
    s
}

/// Counts with a bar each, largest first.
fn bars(caption: &str, counts: &std::collections::BTreeMap<String, u64>, class: &str) -> String {
    let total: u64 = counts.values().sum();
    let mut rows: Vec<(&String, &u64)> = counts.iter().collect();
    rows.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let mut s = format!(
        "<table class=\"bars\"><caption>{}</caption>",
        escape(caption)
    );
    if rows.is_empty() {
        s.push_str("<tr><td>none</td></tr>");
    }
    for (name, n) in rows {
        let share = if total > 0 {
            *n as f64 * 100.0 / total as f64
        } else {
            0.0
        };
        let _ = write!(
            s,
            "<tr><th>{}</th><td class=\"n\">{n}</td><td class=\"n\">{share:.1} %</td>\
             <td class=\"bar\"><span class=\"{class}\" style=\"width:{share:.1}%\"></span></td></tr>",
            escape(name)
        );
    }
    s.push_str("</table>");
    s
}

/// The page.
pub fn render(r: &Report, title: &str) -> Result<String, String> {
    let t = &r.timeline;
    let f = |v: u64| Some(v as f64);
    let rates = chart(
        "Rate per second",
        "per s",
        false,
        &[
            line("offered", BLUE, t, |p| f(p.offered)),
            line("accepted", DARK_GREEN, t, |p| f(p.started)),
            line("ended", GREY, t, |p| f(p.completed)),
            line("refused", RED, t, |p| f(p.refused)),
        ],
    )?;
    let in_flight = chart(
        "Authorizations in flight",
        "in flight",
        false,
        &[line("in flight", BLUE, t, |p| f(p.in_flight))],
    )?;
    let gateway = chart(
        "The gateway's own latency, by second offered (log)",
        "ms",
        true,
        &[
            line("p50", DARK_GREEN, t, |p| p.gateway_p50_ms.map(|v| v as f64)),
            line("p99", ORANGE, t, |p| p.gateway_p99_ms.map(|v| v as f64)),
            line("max", RED, t, |p| p.gateway_max_ms.map(|v| v as f64)),
        ],
    )?;
    let answered = chart(
        "End-to-end latency of answered authorizations, p99 by second ended (log)",
        "ms",
        true,
        &[line("p99 (expiries left out)", MAGENTA, t, |p| {
            p.answered_p99_ms.map(|v| v as f64)
        })],
    )?;
    let smpp = chart(
        "The gateway's SMPP window in use, and throttles",
        "PDUs",
        false,
        &[
            line("window in use (highest sample)", BLUE, t, |p| {
                p.smpp_window.map(|v| v as f64)
            }),
            line("throttles", RED, t, |p| p.smpp_throttles.map(|v| v as f64)),
        ],
    )?;

    let mut page = String::new();
    let _ = write!(
        page,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><style>{STYLE}</style></head><body data-charts=\"0\" data-errors=\"0\">",
        title = escape(title)
    );
    let _ = write!(page, "<h1>{}</h1>", escape(title));

    // Summary and verdicts.
    let completed: u64 = r.completed.values().sum();
    let refused: u64 = r.refused.values().sum();
    let cards = [
        (
            "offered",
            format!("{} ({:.1}/s)", r.offered, r.offered_per_s),
        ),
        ("accepted", r.started.to_string()),
        ("achieved", format!("{:.1}/s", r.achieved_per_s)),
        ("ended", completed.to_string()),
        ("refused", refused.to_string()),
        ("lost", r.lost.to_string()),
        (
            "gateway p50 / p99 / max",
            format!(
                "{} / {} / {} ms",
                r.gateway_latency_ms.p50, r.gateway_latency_ms.p99, r.gateway_latency_ms.max
            ),
        ),
        (
            "end-to-end p50 / p99",
            format!("{} / {} ms", r.latency_ms.p50, r.latency_ms.p99),
        ),
        ("peak in flight", r.peak_in_flight.to_string()),
        ("duration", format!("{:.1} s", r.duration_s)),
    ];
    page.push_str("<section class=\"cards\">");
    for (k, v) in cards {
        let _ = write!(
            page,
            "<div class=\"card\"><div class=\"k\">{}</div><div class=\"v\">{}</div></div>",
            escape(k),
            escape(&v)
        );
    }
    page.push_str("</section>");
    page.push_str("<section><h2>Verdicts</h2><table class=\"slo\">");
    if r.slo.is_empty() {
        page.push_str("<tr><td>no SLO given</td></tr>");
    }
    for (name, met) in &r.slo {
        let _ = write!(
            page,
            "<tr><th>{}</th><td class=\"{}\">{}</td></tr>",
            escape(name),
            if *met { "met" } else { "missed" },
            if *met { "met" } else { "MISSED" }
        );
    }
    page.push_str("</table></section>");

    // Outcomes.
    page.push_str("<section><h2>Outcomes</h2><div class=\"cols\">");
    page.push_str(&bars("By status", &r.completed, "ok"));
    page.push_str(&bars("Refused at the door", &r.refused, "no"));
    page.push_str("</div><div class=\"cols\">");
    page.push_str(&breakdown("By channel", &r.by_channel));
    page.push_str(&breakdown("By operator", &r.by_operator));
    page.push_str("</div>");
    page.push_str(&bars("By status and reason", &r.reasons, "ok"));
    page.push_str("</section>");

    // Over time.
    page.push_str("<section><h2>Over time</h2>");
    for svg in [&rates, &in_flight, &gateway, &answered, &smpp] {
        let _ = write!(page, "<figure>{svg}</figure>");
    }
    page.push_str("</section>");

    // Machine figures.
    let mut facts = vec![
        (
            "driver CPU / peak RSS",
            format!(
                "{:.2} s / {:.1} MiB",
                r.cpu_seconds,
                r.peak_rss_bytes as f64 / 1048576.0
            ),
        ),
        (
            "SMPP window peak / size, throttles",
            format!(
                "{} / {}, {}",
                r.smpp
                    .window_occupancy_peak
                    .map_or("-".into(), |v| v.to_string()),
                r.smpp.window_size.map_or("-".into(), |v| v.to_string()),
                r.smpp
                    .gateway_throttles
                    .map_or("-".into(), |v| v.to_string())
            ),
        ),
    ];
    if let Some(g) = &r.gateway_process {
        facts.push((
            "gateway process CPU per authorization / peak RSS",
            format!(
                "{} us / {:.1} MiB",
                g.cpu_us_per_authorization
                    .map_or("-".into(), |v| format!("{v:.0}")),
                g.peak_rss_bytes as f64 / 1048576.0
            ),
        ));
    }
    if let Some(m) = &r.memory {
        facts.push((
            "memory per authorization in flight (driver / gateway)",
            format!(
                "{} / {} at {} in flight",
                m.driver_bytes_per_in_flight
                    .map_or("-".into(), |v| format!("{v:.0} B")),
                m.gateway_bytes_per_in_flight
                    .map_or("-".into(), |v| format!("{v:.0} B")),
                m.at_peak.in_flight
            ),
        ));
    }
    page.push_str("<section><h2>Machine</h2><table>");
    for (k, v) in facts {
        let _ = write!(
            page,
            "<tr><th>{}</th><td>{}</td></tr>",
            escape(k),
            escape(&v)
        );
    }
    page.push_str("</table></section>");
    let _ = write!(page, "<script>{CHECK}</script></body></html>");
    Ok(page)
}

const STYLE: &str =
    "body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1000px}\
h1{font-size:22px}h2{font-size:18px;margin-top:28px}\
.cards{display:flex;flex-wrap:wrap;gap:8px}.card{border:1px solid #ddd;border-radius:6px;\
padding:8px 12px;min-width:140px}.card .k{font-size:12px;color:#666}.card .v{font-size:18px}\
table{border-collapse:collapse;margin:8px 16px 8px 0}th,td{padding:3px 8px;text-align:left;\
border-bottom:1px solid #eee}td.n{text-align:right}caption{text-align:left;font-weight:600}\
.bars td.bar{width:260px}.bars span{display:inline-block;height:10px}\
.bars span.ok{background:#4a8}.bars span.no{background:#d55}\
td.met{color:#187a3c;font-weight:600}td.missed{color:#c22;font-weight:600}\
.cols{display:flex;flex-wrap:wrap}figure{margin:12px 0}svg.chart{max-width:100%;height:auto}";

/// Runs when the page opens: counts the charts that have a drawn line and any script error.
const CHECK: &str = "(function(){var errors=0;window.addEventListener('error',function(){\
errors++;document.body.dataset.errors=String(errors);});var charts=document.querySelectorAll(\
'svg.chart');var drawn=0;charts.forEach(function(c){if(c.querySelector('polyline,path')){drawn++;}});\
document.body.dataset.charts=String(drawn);document.body.dataset.errors=String(errors);})();";

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn report() -> Report {
        let timeline = (0..30)
            .map(|i| TimelinePoint {
                second: i,
                offered: 100,
                started: 95,
                completed: 90,
                refused: 5,
                in_flight: 50 + i,
                gateway_p50_ms: Some(4),
                gateway_p99_ms: Some(9 + i % 3),
                gateway_max_ms: Some(30),
                answered_p99_ms: Some(8_000),
                smpp_window: Some(3),
                smpp_throttles: Some(i % 2),
                // Every second's end-to-end p99 pinned at the expiry: the page must not use it.
                p99_ms: 10_000,
                ..TimelinePoint::default()
            })
            .collect();
        let mut r: Report =
            serde_json::from_value(serde_json::json!({
                "offered": 3000, "started": 2850, "completed": {"approved": 2000, "expired": 850},
                "reasons": {"approved/user_approved": 2000, "expired/no_response": 850},
                "lost_steps": {}, "refused": {"no_capacity": 150}, "start_errors": 0,
                "poll_errors": 0, "lost": 0, "late_starts": 0, "late_threshold_ms": 10,
                "offered_per_s": 100.0, "achieved_per_s": 95.0, "retries": 0,
                "retry_outcomes": {},
                "latency_ms": {"count": 1, "mean": 1.0, "p50": 1, "p90": 1, "p99": 1, "p999": 1, "max": 1},
                "gateway_latency_ms": {"count": 1, "mean": 1.0, "p50": 4, "p90": 8, "p99": 9, "p999": 9, "max": 30},
                "gateway_latency_source": {}, "peak_in_flight": 80, "cpu_seconds": 1.0,
                "peak_rss_bytes": 1, "smpp": {}, "duration_s": 30.0, "arrival_phase_s": 30.0,
                "drain_timed_out": false, "slo": {"lost == 0": true, "gateway p99 <= 5 ms": false},
                "histograms": {}, "timeline": [], "settings": null
            }))
            .unwrap();
        r.timeline = timeline;
        r.by_channel = [(
            "<ussd>".to_owned(),
            [("approved".to_owned(), 10u64)].into_iter().collect(),
        )]
        .into_iter()
        .collect();
        r
    }

    #[test]
    fn the_page_has_every_chart_the_verdicts_and_escapes_what_it_shows() {
        let page = render(&report(), "surge <run>").unwrap();
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert_eq!(page.matches("<svg class=\"chart\"").count(), 5);
        assert!(page.contains("own latency, by second offered (log)"));
        assert!(page.contains("<td class=\"missed\">MISSED</td>"));
        assert!(page.contains("<td class=\"met\">met</td>"));
        assert!(page.contains("surge &lt;run&gt;"));
        assert!(page.contains("&lt;ussd&gt;"), "channel names are escaped");
        assert!(!page.contains("<ussd>"));
        assert!(
            !page.contains("src=") && !page.contains("href="),
            "self-contained"
        );
        // The latency panels are on a log axis and never show the expiry-pinned p99.
        assert!(
            !page.contains(">10000<"),
            "the pinned end-to-end p99 is not drawn"
        );
    }
}

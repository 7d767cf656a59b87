//! The chart of a run (`--plot FILE.svg`): rate and latency over time, drawn from the report's
//! per-second timeline with plotters' SVG backend.
//!
//! Top panel: offered and completed per second; bottom panel: the gateway's own p99 latency of
//! the authorizations offered in each second (the end-to-end p99 would sit at the expiry time
//! as soon as 1 % of the users ignore their prompt, whatever the system does).

use std::path::Path;

use plotters::prelude::*;

use super::report::TimelinePoint;

/// Why the chart could not be written.
#[derive(Debug, thiserror::Error)]
#[error("drawing {path}: {message}")]
pub struct PlotError {
    pub path: String,
    pub message: String,
}

/// Writes the chart of `timeline` to `path` (SVG).
pub fn write_svg(path: &Path, timeline: &[TimelinePoint], title: &str) -> Result<(), PlotError> {
    let svg = render_svg(timeline, title).map_err(|message| PlotError {
        path: path.display().to_string(),
        message,
    })?;
    std::fs::write(path, svg).map_err(|e| PlotError {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

/// The chart as SVG text.
pub fn render_svg(timeline: &[TimelinePoint], title: &str) -> Result<String, String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (1000, 640)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let root = root
            .titled(title, ("sans-serif", 20))
            .map_err(|e| e.to_string())?;
        let (top, bottom) = root.split_vertically(300);
        let secs = timeline.len().max(1) as f64;
        let max_rate = timeline
            .iter()
            .map(|p| p.offered.max(p.completed))
            .max()
            .unwrap_or(0)
            .max(1) as f64;
        let max_lat = timeline
            .iter()
            .filter_map(|p| p.gateway_p99_ms)
            .max()
            .unwrap_or(0)
            .max(1) as f64;

        let mut rate = ChartBuilder::on(&top)
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .caption("rate (per second)", ("sans-serif", 16))
            .build_cartesian_2d(0f64..secs, 0f64..max_rate * 1.1)
            .map_err(|e| e.to_string())?;
        rate.configure_mesh()
            .x_desc("s")
            .y_desc("per s")
            .draw()
            .map_err(|e| e.to_string())?;
        let series = |f: fn(&TimelinePoint) -> u64| {
            timeline
                .iter()
                .map(move |p| (p.second as f64, f(p) as f64))
                .collect::<Vec<_>>()
        };
        rate.draw_series(LineSeries::new(series(|p| p.offered), &BLUE))
            .map_err(|e| e.to_string())?
            .label("offered")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
        rate.draw_series(LineSeries::new(series(|p| p.completed), &GREEN))
            .map_err(|e| e.to_string())?
            .label("completed")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], GREEN));
        rate.draw_series(LineSeries::new(series(|p| p.errors), &RED))
            .map_err(|e| e.to_string())?
            .label("errors")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
        rate.configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())?;

        let mut lat = ChartBuilder::on(&bottom)
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .caption("the gateway's own p99 latency (ms)", ("sans-serif", 16))
            .build_cartesian_2d(0f64..secs, 0f64..max_lat * 1.1)
            .map_err(|e| e.to_string())?;
        lat.configure_mesh()
            .x_desc("s")
            .y_desc("ms")
            .draw()
            .map_err(|e| e.to_string())?;
        lat.draw_series(LineSeries::new(
            timeline
                .iter()
                .filter_map(|p| p.gateway_p99_ms.map(|v| (p.second as f64, v as f64))),
            &MAGENTA,
        ))
        .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn chart_is_an_svg_with_both_panels() {
        let t: Vec<TimelinePoint> = (0..20)
            .map(|i| TimelinePoint {
                second: i,
                offered: 10 + i,
                started: 10 + i,
                completed: 9 + i,
                errors: i % 3,
                p99_ms: 10_000,
                gateway_p99_ms: Some(5 + i % 4),
                ..TimelinePoint::default()
            })
            .collect();
        let svg = render_svg(&t, "surge").unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("rate (per second)"));
        assert!(svg.contains("own p99 latency"));
        assert!(
            !svg.contains("10000"),
            "the expiry-pinned end-to-end p99 is not drawn"
        );
        assert!(svg.contains("<polyline"));
    }

    #[test]
    fn an_empty_run_still_draws() {
        assert!(render_svg(&[], "empty").unwrap().contains("</svg>"));
    }
}

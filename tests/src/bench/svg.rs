//! A grouped bar chart as plain SVG text (no dependency: the chart is a few rectangles).

use std::fmt::Write as _;

/// One kind of bar, e.g. "drlb (warm)", with its colour (any SVG colour).
pub struct Series {
    pub name: String,
    pub color: &'static str,
}

/// One group of bars on the x axis; `values[i]` belongs to `series[i]` (`None`: no bar).
pub struct Group {
    pub label: String,
    pub values: Vec<Option<Bar>>,
}

#[derive(Clone, Debug)]
pub struct Bar {
    pub value: f64,
    /// A short text above the bar (e.g. "92%").
    pub note: String,
    /// The tooltip.
    pub detail: String,
}

pub struct Chart<'a> {
    pub title: &'a str,
    pub subtitle: &'a str,
    pub y_label: &'a str,
    pub series: &'a [Series],
    pub groups: &'a [Group],
}

const BAR_WIDTH: f64 = 22.0;
const BAR_GAP: f64 = 3.0;
const GROUP_GAP: f64 = 26.0;
const PLOT_HEIGHT: f64 = 360.0;
const LEFT: f64 = 70.0;
const TOP: f64 = 80.0;
const RIGHT: f64 = 30.0;
const BOTTOM: f64 = 110.0;
const Y_TICKS: u32 = 5;

impl Chart<'_> {
    #[must_use]
    pub fn render(&self) -> String {
        let bars = self.series.len().max(1) as f64;
        let group_width = bars * BAR_WIDTH + (bars - 1.0) * BAR_GAP;
        let plot_width = self.groups.len() as f64 * (group_width + GROUP_GAP) + GROUP_GAP;
        let width = LEFT + plot_width + RIGHT;
        let height = TOP + PLOT_HEIGHT + BOTTOM;
        let max = self
            .groups
            .iter()
            .flat_map(|g| g.values.iter().flatten())
            .map(|b| b.value)
            .fold(0.0, f64::max);
        let top_value = nice_ceiling(max);
        let y = |v: f64| TOP + PLOT_HEIGHT - v / top_value * PLOT_HEIGHT;

        let mut svg = String::new();
        let _ = write!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="12">"#
        );
        svg.push('\n');
        let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let _ = writeln!(
            svg,
            r#"<text x="{LEFT}" y="24" font-size="16" font-weight="bold">{}</text>"#,
            escape(self.title)
        );
        let _ = writeln!(
            svg,
            r##"<text x="{LEFT}" y="44" fill="#444">{}</text>"##,
            escape(self.subtitle)
        );
        // Grid and y axis.
        for tick in 0..=Y_TICKS {
            let value = top_value * f64::from(tick) / f64::from(Y_TICKS);
            let ty = y(value);
            let _ = writeln!(
                svg,
                r##"<line x1="{LEFT}" y1="{ty:.1}" x2="{:.1}" y2="{ty:.1}" stroke="#ddd"/>"##,
                LEFT + plot_width
            );
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                LEFT - 6.0,
                ty + 4.0,
                format_tick(value)
            );
        }
        let _ = writeln!(
            svg,
            r#"<text transform="translate(18 {:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
            TOP + PLOT_HEIGHT / 2.0,
            escape(self.y_label)
        );
        // Bars.
        for (g, group) in self.groups.iter().enumerate() {
            let x0 = LEFT + GROUP_GAP + g as f64 * (group_width + GROUP_GAP);
            for (s, bar) in group.values.iter().enumerate() {
                let Some(bar) = bar else { continue };
                let x = x0 + s as f64 * (BAR_WIDTH + BAR_GAP);
                let top = y(bar.value);
                let color = self.series.get(s).map_or("gray", |s| s.color);
                let _ = writeln!(
                    svg,
                    r#"<rect x="{x:.1}" y="{top:.1}" width="{BAR_WIDTH}" height="{:.1}" fill="{color}"><title>{}</title></rect>"#,
                    TOP + PLOT_HEIGHT - top,
                    escape(&bar.detail)
                );
                let _ = writeln!(
                    svg,
                    r#"<text x="{:.1}" y="{:.1}" font-size="9" text-anchor="middle">{}</text>"#,
                    x + BAR_WIDTH / 2.0,
                    top - 3.0,
                    escape(&bar.note)
                );
            }
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                x0 + group_width / 2.0,
                TOP + PLOT_HEIGHT + 18.0,
                escape(&group.label)
            );
        }
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#333"/>"##,
            TOP + PLOT_HEIGHT,
            LEFT + plot_width,
            TOP + PLOT_HEIGHT
        );
        // Legend.
        let legend_y = TOP + PLOT_HEIGHT + 48.0;
        let mut lx = LEFT;
        for series in self.series {
            let _ = writeln!(
                svg,
                r#"<rect x="{lx:.1}" y="{:.1}" width="12" height="12" fill="{}"/>"#,
                legend_y - 10.0,
                series.color
            );
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{legend_y:.1}">{}</text>"#,
                lx + 16.0,
                escape(&series.name)
            );
            lx += 24.0 + 7.0 * series.name.chars().count() as f64;
        }
        svg.push_str("</svg>\n");
        svg
    }
}

/// The smallest 1, 2 or 5 times a power of ten at or above `max` (1 for an empty chart).
fn nice_ceiling(max: f64) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(max.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|&v| v >= max)
        .unwrap_or(10.0 * magnitude)
}

fn format_tick(value: f64) -> String {
    if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

/// Escapes text for SVG content and attribute values.
#[must_use]
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_is_one_two_or_five_times_a_power_of_ten() {
        assert_eq!(nice_ceiling(4.2), 5.0);
        assert_eq!(nice_ceiling(5.0), 5.0);
        assert_eq!(nice_ceiling(0.7), 1.0);
        assert_eq!(nice_ceiling(12.0), 20.0);
        assert_eq!(nice_ceiling(0.0), 1.0);
    }

    #[test]
    fn chart_has_one_rect_per_bar_and_escapes_text() {
        let series = [
            Series {
                name: "a<b".into(),
                color: "red",
            },
            Series {
                name: "c".into(),
                color: "blue",
            },
        ];
        let bar = |v: f64| {
            Some(Bar {
                value: v,
                note: format!("{v}"),
                detail: "x & y".into(),
            })
        };
        let groups = [
            Group {
                label: "g1".into(),
                values: vec![bar(1.0), bar(2.0)],
            },
            Group {
                label: "g2".into(),
                values: vec![bar(3.0), None],
            },
        ];
        let svg = Chart {
            title: "t",
            subtitle: "s",
            y_label: "Mpps",
            series: &series,
            groups: &groups,
        }
        .render();
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<title>x &amp; y</title>").count(), 3);
        assert!(svg.contains("a&lt;b"));
        assert!(!svg.contains("a<b"));
    }
}

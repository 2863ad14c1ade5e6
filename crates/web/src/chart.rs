//! Bar charts drawn by the server as SVG: no script, no inline style (the page's CSP allows
//! neither), readable without colour (each bar is a shape with its own `<title>`, and the
//! page shows the same numbers in a table).

/// One bar: where it stands and what it says.
pub struct Bar {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
    /// "2026-12-06: 3 downloads", the bar's `<title>`.
    pub title: String,
}

/// A chart of one value per label, scaled to `HEIGHT` for the largest.
pub struct Chart {
    pub width: u32,
    pub height: u32,
    pub bars: Vec<Bar>,
    /// What a screen reader hears for the whole chart.
    pub summary: String,
}

const HEIGHT: u32 = 120;
const BAR: u32 = 12;
const GAP: u32 = 2;

impl Chart {
    /// `values`: (label, value) in order; `unit`: what a value counts, singular
    /// ("download"); `across`: what the labels are, plural ("days", "names").
    pub fn bars(values: &[(String, u64)], unit: &str, across: &str) -> Self {
        let max = values.iter().map(|(_, v)| *v).max().unwrap_or(0);
        let total: u64 = values.iter().map(|(_, v)| *v).sum();
        let bars = values
            .iter()
            .zip(0u32..)
            .map(|((label, value), i)| {
                // At least one pixel for a value above zero, so that no day with downloads
                // looks like one without.
                let height = match (max, *value) {
                    (_, 0) | (0, _) => 0,
                    (max, v) => u32::try_from(v.saturating_mul(u64::from(HEIGHT)) / max)
                        .unwrap_or(HEIGHT)
                        .max(1),
                };
                Bar {
                    x: i * (BAR + GAP),
                    y: HEIGHT - height,
                    width: BAR,
                    height,
                    title: format!("{label}: {}", counted(*value, unit)),
                }
            })
            .collect::<Vec<_>>();
        let busiest = values
            .iter()
            .filter(|(_, v)| max > 0 && *v == max)
            .map(|(l, _)| l.as_str())
            .next();
        let summary = match busiest {
            Some(label) => format!(
                "{} across {} {across}; most: {label} ({max})",
                counted(total, unit),
                values.len()
            ),
            None => format!("no {unit}s across {} {across}", values.len()),
        };
        Self {
            width: u32::try_from(values.len()).unwrap_or(0) * (BAR + GAP),
            height: HEIGHT,
            bars,
            summary,
        }
    }
}

/// "1 download", "3 downloads".
fn counted(n: u64, unit: &str) -> String {
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_largest_and_no_nonzero_value_vanishes() {
        let values: Vec<(String, u64)> = [("a", 0), ("b", 1), ("c", 1000), ("d", 500)]
            .iter()
            .map(|(l, v)| ((*l).to_owned(), *v))
            .collect();
        let chart = Chart::bars(&values, "download", "days");
        let heights: Vec<u32> = chart.bars.iter().map(|b| b.height).collect();
        assert_eq!(heights, [0, 1, 120, 60]);
        assert!(chart.bars.iter().all(|b| b.y + b.height == chart.height));
        assert_eq!(chart.bars[3].x, 3 * (BAR + GAP));
        assert_eq!(chart.bars[1].title, "b: 1 download");
        assert_eq!(chart.bars[2].title, "c: 1000 downloads");
        assert_eq!(
            chart.summary,
            "1501 downloads across 4 days; most: c (1000)"
        );
        let empty = Chart::bars(&values[..1], "download", "days");
        assert_eq!(empty.summary, "no downloads across 1 days");
    }
}

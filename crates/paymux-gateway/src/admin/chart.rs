//! The success-rate chart as inline SVG, drawn on the server: one line per channel over the
//! range's buckets (a bucket with no payment leaves a gap), and each channel's totals as text,
//! so the numbers are in the page itself and not only in the picture.

use std::fmt::Write;

use paymux_core::ChannelKind;
use paymux_engine::operator::Stats;

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 300.0;
const LEFT: f64 = 44.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 16.0;
const PLOT_HEIGHT: f64 = 190.0;

fn colour(channel: ChannelKind) -> &'static str {
    match channel {
        ChannelKind::Alipay => "#1677ff",
        ChannelKind::Wechat => "#07a052",
        ChannelKind::Unionpay => "#d4000f",
    }
}

/// `succeeded / created` as a whole percentage, or a dash when nothing was created.
pub fn percent(succeeded: u64, created: u64) -> String {
    match (succeeded * 100 + created / 2).checked_div(created) {
        Some(pct) => format!("{pct}%"),
        None => "–".to_owned(),
    }
}

pub fn success_rate(s: &Stats) -> String {
    let buckets = s.channels.first().map_or(1, |c| c.buckets.len()).max(1);
    let step = (WIDTH - LEFT - RIGHT) / buckets as f64;
    let x = |i: usize| LEFT + step * (i as f64 + 0.5);
    let y = |rate: f64| TOP + PLOT_HEIGHT * (1.0 - rate);
    let mut svg = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" \
         aria-label=\"Success rate per channel\" xmlns=\"http://www.w3.org/2000/svg\" \
         font-family=\"system-ui,sans-serif\" font-size=\"12\">"
    );
    for pct in [0, 50, 100] {
        let py = y(f64::from(pct) / 100.0);
        let _ = write!(
            svg,
            "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{py:.1}\" y2=\"{py:.1}\" stroke=\"#dde1e7\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#556\">{pct}%</text>",
            WIDTH - RIGHT,
            LEFT - 6.0,
            py + 4.0
        );
    }
    for c in &s.channels {
        let col = colour(c.channel);
        // One polyline per run of buckets that have payments.
        let mut run: Vec<String> = Vec::new();
        let mut runs: Vec<Vec<String>> = Vec::new();
        for (i, (ok, all)) in c.buckets.iter().enumerate() {
            if *all == 0 {
                if !run.is_empty() {
                    runs.push(std::mem::take(&mut run));
                }
                continue;
            }
            let rate = *ok as f64 / *all as f64;
            run.push(format!("{:.1},{:.1}", x(i), y(rate)));
            let _ = write!(
                svg,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"{col}\">\
                 <title>{}: {ok} / {all}</title></circle>",
                x(i),
                y(rate),
                c.channel
            );
        }
        if !run.is_empty() {
            runs.push(run);
        }
        for r in runs.iter().filter(|r| r.len() > 1) {
            let _ = write!(
                svg,
                "<polyline points=\"{}\" fill=\"none\" stroke=\"{col}\" stroke-width=\"2\"/>",
                r.join(" ")
            );
        }
    }
    // The legend carries each channel's totals for the range.
    let legend_y = TOP + PLOT_HEIGHT + 36.0;
    for (i, c) in s.channels.iter().enumerate() {
        let ly = legend_y + 20.0 * i as f64;
        let _ = write!(
            svg,
            "<rect x=\"{LEFT}\" y=\"{:.1}\" width=\"12\" height=\"12\" fill=\"{}\"/>\
             <text x=\"{}\" y=\"{:.1}\" data-channel=\"{}\">{}: {} / {} succeeded ({})</text>",
            ly - 10.0,
            colour(c.channel),
            LEFT + 18.0,
            ly,
            c.channel,
            c.channel,
            c.succeeded,
            c.created,
            percent(c.succeeded, c.created)
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;
    use paymux_engine::operator::{ChannelStats, StatsRange};
    use time::OffsetDateTime;

    #[test]
    fn the_chart_labels_each_channel_with_its_numbers_and_plots_only_buckets_with_payments() {
        let mut buckets = vec![(0, 0); 12];
        buckets[3] = (1, 2);
        buckets[4] = (1, 1);
        let s = Stats {
            range: StatsRange::Day,
            from: OffsetDateTime::now_utc(),
            to: OffsetDateTime::now_utc(),
            bucket: std::time::Duration::from_secs(7200),
            channels: vec![
                ChannelStats { channel: ChannelKind::Alipay, buckets, succeeded: 2, created: 3 },
                ChannelStats {
                    channel: ChannelKind::Wechat,
                    buckets: vec![(0, 0); 12],
                    succeeded: 0,
                    created: 0,
                },
            ],
            failures: vec![],
        };
        let svg = success_rate(&s);
        assert!(svg.contains("alipay: 2 / 3 succeeded (67%)"), "{svg}");
        assert!(svg.contains("wechat: 0 / 0 succeeded (–)"), "{svg}");
        assert_eq!(svg.matches("<circle").count(), 2);
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert_eq!(percent(1, 3), "33%");
    }
}

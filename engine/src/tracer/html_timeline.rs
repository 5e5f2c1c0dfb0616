//! The trace as one self-contained HTML page: a swimlane per thread (the engine's, and each
//! rank's) with every span a bar, nested spans one row lower, and the timeline, request and
//! bottleneck tables under it. Nothing is fetched: the style and the little zoom script are
//! inline, the bars are inline SVG, and hovering a bar shows its `<title>` (name, fields such
//! as `step`, `request` or `bytes`, and duration), so the page opens offline.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::report::{ms, origin, request_rows, step_rows};
use super::{bottlenecks, RecordedSpan};

/// Height of one nesting level of a lane, in pixels.
const ROW: usize = 14;

/// `spans` and the threads' names (from [`super::SpanRecorder::spans`]) as an HTML page titled
/// `title`. Spans never entered or never left are not drawn (and not in the tables' times).
pub fn html_timeline(spans: &[RecordedSpan], threads: &[String], title: &str) -> String {
    let zero = origin(spans);
    let end = spans.iter().filter_map(|s| s.end).max().unwrap_or(zero);
    // Coordinates are microseconds from the first span: the SVGs stretch to the zoom's width.
    let total_us = (end.saturating_sub(zero).as_secs_f64() * 1e6).max(1.0);
    let mut lanes: BTreeMap<usize, Vec<(usize, usize)>> = BTreeMap::new(); // thread -> (span, depth)
    for (i, s) in spans.iter().enumerate() {
        if s.start.is_some() && s.end.is_some() {
            lanes
                .entry(s.thread)
                .or_default()
                .push((i, depth(spans, i)));
        }
    }
    // The engine's thread first, then the ranks by name.
    let mut order: Vec<usize> = lanes.keys().copied().collect();
    let name = |t: usize| {
        threads
            .get(t)
            .cloned()
            .unwrap_or_else(|| format!("thread {t}"))
    };
    order.sort_by_key(|&t| (name(t) != "main", name(t)));

    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\n\
         <style>{STYLE}</style></head><body>\n<h1>{}</h1>\n\
         <p>{} spans on {} threads over {} ms. Hover a bar for its name, fields and duration; \
         zoom <input id=\"zoom\" type=\"range\" min=\"1\" max=\"64\" value=\"1\"></p>\n\
         <div id=\"timeline\">\n",
        esc(title),
        esc(title),
        lanes.values().map(Vec::len).sum::<usize>(),
        lanes.len(),
        ms(end.saturating_sub(zero)),
    );
    h.push_str(&axis(total_us));
    let colours = colours(spans);
    for t in order {
        let bars = &lanes[&t];
        let rows = bars.iter().map(|b| b.1).max().unwrap_or(0) + 1;
        let _ = write!(
            h,
            "<div class=\"lane\" data-thread=\"{0}\"><div class=\"label\">{0}</div>\
             <div class=\"track\"><svg viewBox=\"0 0 {total_us:.3} {1}\" \
             preserveAspectRatio=\"none\" height=\"{1}\">",
            esc(&name(t)),
            rows * ROW
        );
        for &(i, d) in bars {
            h.push_str(&bar(&spans[i], i, d, zero, &colours));
        }
        h.push_str("</svg></div></div>\n");
    }
    h.push_str("</div>\n");
    h.push_str(&legend(spans, &colours));
    h.push_str(&tables(spans));
    let _ = write!(h, "<script>{SCRIPT}</script>\n</body></html>\n");
    h
}

/// How many of span `i`'s ancestors ran on its thread: its row in the lane. A parent is
/// always opened before its child, so only earlier indices are followed (no cycle can hang).
fn depth(spans: &[RecordedSpan], i: usize) -> usize {
    let (mut d, mut at) = (0, i);
    while let Some(j) = spans[at].parent.filter(|&j| j < at) {
        if spans[j].thread == spans[i].thread {
            d += 1;
        }
        at = j;
    }
    d
}

fn bar(
    s: &RecordedSpan,
    i: usize,
    depth: usize,
    zero: std::time::Duration,
    colours: &BTreeMap<String, &str>,
) -> String {
    let (start, end) = (s.start.unwrap_or(zero), s.end.unwrap_or(zero));
    let x = start.saturating_sub(zero).as_secs_f64() * 1e6;
    let w = (end.saturating_sub(start).as_secs_f64() * 1e6).max(0.01);
    let fields: Vec<String> = s.fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let tip = format!(
        "{} [{}] {}\n{:.1} µs, from {} ms",
        s.component(),
        s.name,
        fields.join(" "),
        w,
        ms(start.saturating_sub(zero))
    );
    format!(
        "<rect class=\"span\" data-span=\"{i}\" data-name=\"{}\" x=\"{x:.3}\" y=\"{}\" \
         width=\"{w:.3}\" height=\"{}\" fill=\"{}\"><title>{}</title></rect>",
        esc(s.name),
        depth * ROW + 1,
        ROW - 2,
        colour(colours, s),
        esc(&tip)
    )
}

/// A span's colour: its component's; an op's run on the GPU takes the colour of its launch on
/// the host (the palette is the host's components').
fn colour<'a>(colours: &BTreeMap<String, &'a str>, s: &RecordedSpan) -> &'a str {
    let c = s.component();
    let host = c.strip_suffix(" (GPU)").unwrap_or(&c);
    colours.get(host).copied().unwrap_or("#7f7f7f")
}

/// The colour of each component, largest own time first.
fn legend(spans: &[RecordedSpan], colours: &BTreeMap<String, &str>) -> String {
    let mut l = String::from("<p class=\"legend\">");
    for c in bottlenecks(spans) {
        let _ = write!(
            l,
            "<span><i style=\"background:{}\"></i>{}</span> ",
            colours[&c.name],
            esc(&c.name)
        );
    }
    l.push_str("</p>\n");
    l
}

/// Ten ticks across the run, in milliseconds, placed by percentage so that they follow zoom.
fn axis(total_us: f64) -> String {
    let mut a =
        String::from("<div class=\"lane\"><div class=\"label\">ms</div><div class=\"track axis\">");
    for k in 0..10 {
        let _ = write!(
            a,
            "<span style=\"left:{}%\">{:.3}</span>",
            k * 10,
            total_us * k as f64 / 10.0 / 1e3
        );
    }
    a.push_str("</div></div>\n");
    a
}

/// A colour per component, the most distinct ones to the largest (by own time); past the
/// palette's twenty they repeat.
fn colours(spans: &[RecordedSpan]) -> BTreeMap<String, &'static str> {
    const PALETTE: [&str; 20] = [
        "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
        "#9c755f", "#bab0ac", "#1f77b4", "#aec7e8", "#98df8a", "#d62728", "#9467bd", "#c5b0d5",
        "#8c564b", "#e377c2", "#7f7f7f", "#17becf",
    ];
    bottlenecks(spans)
        .into_iter()
        .enumerate()
        .map(|(k, c)| (c.name, PALETTE[k % PALETTE.len()]))
        .collect()
}

fn tables(spans: &[RecordedSpan]) -> String {
    let mut h = String::from(
        "<h2>Steps</h2>\n<table><tr><th>step</th><th>at ms</th><th>schedule ms</th>\
         <th>execute ms</th><th>seqs</th><th>tokens</th><th>prefill</th><th>decode</th>\
         <th>preempted</th><th>requests</th></tr>\n",
    );
    for r in step_rows(spans) {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&r.step),
            ms(r.at),
            ms(r.schedule),
            ms(r.execute),
            esc(&r.seqs),
            esc(&r.tokens),
            esc(&r.prefill_tokens),
            esc(&r.decode_tokens),
            esc(&r.preempted),
            esc(&r.requests)
        );
    }
    h.push_str("</table>\n");
    let requests = request_rows(spans);
    if !requests.is_empty() {
        h.push_str("<h2>Requests</h2>\n<table><tr><th>request</th><th>added ms</th>\
             <th>first step</th><th>finished step</th><th>finished ms</th><th>output tokens</th></tr>\n");
        let opt = |d: Option<std::time::Duration>| d.map(ms).unwrap_or_default();
        for r in requests {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&r.request),
                opt(r.added_at),
                esc(r.first_step.as_deref().unwrap_or("")),
                esc(r.finished_step.as_deref().unwrap_or("")),
                opt(r.finished_at),
                esc(&r.output_tokens)
            );
        }
        h.push_str("</table>\n");
    }
    h.push_str(
        "<h2>Where the time went</h2>\n<table><tr><th>component</th><th>calls</th>\
         <th>own ms</th><th>share</th></tr>\n",
    );
    for c in bottlenecks(spans) {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.1}%</td></tr>",
            esc(&c.name),
            c.calls,
            ms(c.self_time),
            c.share * 100.0
        );
    }
    h.push_str("</table>\n");
    h
}

/// Text as HTML: the five characters that could end an attribute or open a tag.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

const STYLE: &str = "body{font:13px sans-serif;margin:1em}\
#timeline{overflow-x:auto;border:1px solid #ccc}\
.lane{display:flex;border-bottom:1px solid #eee}\
.label{flex:0 0 9em;position:sticky;left:0;background:#fff;padding:2px;z-index:1}\
.track{flex:0 0 auto;width:1400px;position:relative}\
.track svg{width:100%;display:block}\
.axis{height:16px}.axis span{position:absolute;font-size:10px}\
rect.span{stroke:#333;stroke-width:0.5px;vector-effect:non-scaling-stroke}\
rect.span:hover{fill:#f80}\
.legend span{margin-right:1em;white-space:nowrap}\
.legend i{display:inline-block;width:1em;height:1em;margin-right:.3em;vertical-align:middle}\
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}";

/// The zoom slider widens every track together.
const SCRIPT: &str = "document.getElementById('zoom').addEventListener('input',e=>{\
for(const t of document.querySelectorAll('.track'))t.style.width=(1400*e.target.value)+'px';});";

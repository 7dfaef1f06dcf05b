//! The scale benchmark's tables (Markdown) and plot (SVG, drawn with
//! plotters from the same figures), and the BENCHMARKS.md section they
//! replace.

use std::fmt::Write as _;

use plotters::prelude::*;

use super::{SampleCost, ScaleRun};

/// Marks the start of the generated section in BENCHMARKS.md.
const BEGIN: &str =
    "<!-- scale:begin (written by `cargo xtask bench --scale --into-benchmarks`) -->";
/// Marks its end.
const END: &str = "<!-- scale:end -->";

/// The tables, with the plot linked as `svg`.
pub fn markdown(command: &str, runs: &[ScaleRun], svg: &str) -> String {
    let mut md = String::new();
    let kernels: Vec<&str> = runs.iter().map(|r| r.kernel.as_str()).collect();
    let _ = write!(
        md,
        "{BEGIN}\n## Scale: start, stop, memory and sample cost by vCPUs and table size (issue 20)\n\n\
         Produced by `{command}` on {}. qemu TCG: 2 vCPUs run on two host threads, more \
         on one (`-accel tcg,thread=single`), so each of 64 vCPUs gets at most 1/64 of a \
         host core; read how a figure grows down a column, not 2 against 64 vCPUs in \
         absolute time.\n\n",
        dedup(&kernels).join(", ")
    );
    start_table(&mut md, runs);
    sample_tables(&mut md, runs);
    let _ = writeln!(
        md,
        "![agent CPU and RSS against table entries]({svg})\n\n{END}"
    );
    md
}

fn dedup<'a>(items: &[&'a str]) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for item in items {
        if !out.contains(item) {
            out.push(item);
        }
    }
    out
}

/// Median and range of `values`, as "median (min-max)".
fn spread(values: &[f64], unit: &str, digits: usize) -> String {
    if values.is_empty() {
        return "-".into();
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let (lo, hi) = (sorted[0], sorted[sorted.len() - 1]);
    if sorted.len() == 1 {
        format!("{median:.digits$} {unit}")
    } else {
        format!("{median:.digits$} {unit} ({lo:.digits$}-{hi:.digits$})")
    }
}

fn start_table(md: &mut String, runs: &[ScaleRun]) {
    let starts = runs.first().map_or(0, |r| r.starts.len());
    let _ = writeln!(
        md,
        "**Start and stop**, `pinwatch stat` with default settings; starts per boot: {starts} \
         (median, range in brackets). Counting: from exec to its \"pinwatch: kernel\" line \
         (probes attached, first snapshot taken); first data one interval (1 s) later; \
         stop: from SIGINT to the process gone; detached: from SIGINT to the kernel holding no \
         more BPF programs than before the start; kernel memory: `memlock` summed over its \
         maps' fdinfo; RSS: VmRSS two samples after the first data.\n\n\
         | vCPUs | counting after | first data after | stop | detached | kernel map memory | agent RSS, idle |\n\
         |--:|--:|--:|--:|--:|--:|--:|"
    );
    for run in runs {
        let pick = |f: fn(&super::StartStop) -> f64| run.starts.iter().map(f).collect::<Vec<_>>();
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} |",
            run.cpus,
            spread(&pick(|s| s.counting_ms / 1000.0), "s", 2),
            spread(&pick(|s| s.first_data_ms / 1000.0), "s", 2),
            spread(&pick(|s| s.stop_ms / 1000.0), "s", 2),
            spread(&pick(|s| s.detached_ms / 1000.0), "s", 2),
            spread(&pick(|s| s.map_memory_bytes as f64 / MIB), "MiB", 2),
            spread(&pick(|s| s.idle_rss_kib as f64 / 1024.0), "MiB", 1),
        );
    }
    md.push('\n');
}

const MIB: f64 = 1024.0 * 1024.0;

fn sample_tables(md: &mut String, runs: &[ScaleRun]) {
    let max_procs: Vec<String> = runs.iter().map(|r| r.max_procs.to_string()).collect();
    let window = runs
        .first()
        .and_then(|r| r.samples.first())
        .map_or(0.0, |s| s.window_s);
    let _ = writeln!(
        md,
        "**Cost of a sample.** One `pinwatch stat --json --interval 1s --max-procs {}` per boot; \
         `pinwatch workload fork-writev --pages 1` children fill its per-process table step \
         by step (each short-lived child leaves one entry); after each step, the agent's CPU \
         time (utime + stime) over {window:.0} s of idle samples, as a percentage of one CPU \
         (so the cost of one sample a second), and its VmRSS. Entries are counted in the \
         kernel's table from outside the agent (the children, plus the processes that \
         pinned before).\n",
        dedup(&max_procs.iter().map(String::as_str).collect::<Vec<_>>()).join("/"),
    );
    sample_table(md, runs, "entries counted", |s| s.entries.to_string());
    sample_table(md, runs, "agent CPU, % of one CPU", |s| {
        format!("{:.2} %", s.cpu_percent)
    });
    sample_table(md, runs, "agent RSS", |s| {
        format!("{:.1} MiB", s.rss_kib as f64 / 1024.0)
    });
}

/// One row per fill level, one column per boot.
fn sample_table(
    md: &mut String,
    runs: &[ScaleRun],
    what: &str,
    cell: impl Fn(&SampleCost) -> String,
) {
    let _ = write!(md, "| children forked: {what} |");
    for run in runs {
        let _ = write!(md, " {} vCPUs |", run.cpus);
    }
    let _ = write!(md, "\n|--:|");
    for _ in runs {
        md.push_str("--:|");
    }
    md.push('\n');
    let levels = runs.iter().map(|r| r.samples.len()).max().unwrap_or(0);
    for level in 0..levels {
        let spawned = runs
            .iter()
            .find_map(|r| r.samples.get(level))
            .map_or(0, |s| s.spawned);
        let _ = write!(md, "| {spawned} |");
        for run in runs {
            match run.samples.get(level) {
                Some(s) => {
                    let _ = write!(md, " {} |", cell(s));
                }
                None => md.push_str(" - |"),
            }
        }
        md.push('\n');
    }
    md.push('\n');
}

/// BENCHMARKS.md with its scale section replaced by `section` (appended
/// when the markers are not there yet).
pub fn replace_section(text: &str, section: &str) -> String {
    match (text.find(BEGIN), text.find(END)) {
        (Some(begin), Some(end)) if begin < end => {
            format!("{}{section}{}", &text[..begin], &text[end + END.len()..])
        }
        _ => format!(
            "{}\n{section}",
            text.trim_end_matches('\n').to_owned() + "\n"
        ),
    }
}

/// Two panels against the table's entries (log scale), one line per
/// vCPU count: agent CPU per sample, agent RSS.
pub fn plot(runs: &[ScaleRun]) -> anyhow::Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1000, 420)).into_drawing_area();
        root.fill(&WHITE)?;
        let (left, right) = root.split_horizontally(500);
        panel(&left, runs, "agent CPU, % of one CPU (1 sample/s)", |s| {
            s.cpu_percent
        })?;
        panel(&right, runs, "agent RSS, MiB", |s| {
            s.rss_kib as f64 / 1024.0
        })?;
        root.present()?;
    }
    Ok(svg)
}

/// Each run's (entries, value) points, empty levels left out (log axis).
fn series(runs: &[ScaleRun], value: impl Fn(&SampleCost) -> f64) -> Vec<(u32, Vec<(f64, f64)>)> {
    runs.iter()
        .map(|r| {
            let points = r
                .samples
                .iter()
                .filter(|s| s.entries > 0)
                .map(|s| (s.entries as f64, value(s)))
                .collect();
            (r.cpus, points)
        })
        .collect()
}

fn panel(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    runs: &[ScaleRun],
    title: &str,
    value: impl Fn(&SampleCost) -> f64,
) -> anyhow::Result<()> {
    let lines = series(runs, value);
    let points = lines.iter().flat_map(|(_, p)| p.iter());
    let x_max = points.clone().map(|p| p.0).fold(1.0, f64::max) * 2.0;
    let x_min = points.clone().map(|p| p.0).fold(x_max, f64::min).max(1.0) / 2.0;
    let y_max = points.map(|p| p.1).fold(0.0, f64::max).max(0.01) * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d((x_min..x_max).log_scale(), 0f64..y_max)?;
    chart
        .configure_mesh()
        .x_desc("entries in the per-process table")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .draw()?;
    for (i, (cpus, points)) in lines.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(format!("{cpus} vCPUs"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart.draw_series(points.iter().map(|p| Circle::new(*p, 3, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::StartStop;
    use super::*;

    fn run(cpus: u32, cost: f64) -> ScaleRun {
        ScaleRun {
            kernel: "6.12.0".into(),
            cpus,
            starts: vec![StartStop {
                counting_ms: 1500.0,
                first_data_ms: 2500.0,
                stop_ms: 3000.0,
                detached_ms: 3100.0,
                map_memory_bytes: 2 * 1024 * 1024,
                idle_rss_kib: 10 * 1024,
            }],
            max_procs: 8192,
            samples: [0u32, 100, 1000]
                .iter()
                .map(|&n| SampleCost {
                    spawned: n,
                    entries: if n == 1000 { 990 } else { u64::from(n) },
                    fill_s: 1.0,
                    window_s: 10.0,
                    cpu_percent: cost * f64::from(n + 1),
                    rss_kib: 10 * 1024,
                    map_memory_bytes: 2 * 1024 * 1024,
                })
                .collect(),
        }
    }

    #[test]
    fn tables_have_a_column_per_boot_and_a_row_per_level() {
        let md = markdown(
            "cargo xtask bench --scale",
            &[run(2, 0.001), run(64, 0.002)],
            "x.svg",
        );
        assert!(md.starts_with(BEGIN) && md.trim_end().ends_with(END));
        assert!(md.contains("| 2 | 1.50 s | 2.50 s | 3.00 s | 3.10 s | 2.00 MiB | 10.0 MiB |"));
        assert!(md.contains("| children forked: agent CPU, % of one CPU | 2 vCPUs | 64 vCPUs |"));
        assert!(md.contains("| 100 | 0.10 % | 0.20 % |"));
        assert!(md.contains("| 1000 | 990 | 990 |"), "entries as counted");
        assert!(md.contains("| 1000 | 10.0 MiB | 10.0 MiB |"));
        assert!(md.contains("![agent CPU and RSS against table entries](x.svg)"));
    }

    #[test]
    fn section_replaced_between_markers_or_appended() {
        let section = format!("{BEGIN}\nnew\n{END}");
        let old = format!("# B\n\nbefore\n{BEGIN}\nold\n{END}\nafter\n");
        assert_eq!(
            replace_section(&old, &section),
            format!("# B\n\nbefore\n{section}\nafter\n")
        );
        assert_eq!(
            replace_section("# B\n", &section),
            format!("# B\n\n{section}")
        );
    }

    #[test]
    fn plot_draws_a_line_per_boot() {
        let svg = plot(&[run(2, 0.001), run(16, 0.002)]).unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("2 vCPUs") && svg.contains("16 vCPUs"));
        // Two panels x two boots x two non-empty levels.
        assert_eq!(svg.matches("<circle").count(), 2 * 2 * 2);
        if let Ok(path) = std::env::var("SCALE_PLOT_OUT") {
            std::fs::write(path, &svg).unwrap();
        }
    }
}

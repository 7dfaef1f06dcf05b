"""The pinwatch Grafana dashboard, generated with grafanalib.

`cargo xtask dashboard` writes pinwatch.json from this file (grafanalib's
generate-dashboard, pinned in xtask's setup); the host tests check that the
committed JSON is what this file generates, and the VM suite's fleet test
runs every panel's query against a real Prometheus scraping pinwatch.

Queries use the recording rules of deploy/prometheus/pinwatch-rules.yml
where one exists, the raw series otherwise, and `$instance` (a host
selector) everywhere; `$__rate_interval` is Grafana's rate window.
"""

from grafanalib.core import (
    BarGauge,
    Dashboard,
    GridPos,
    Heatmap,
    Stat,
    Target,
    Template,
    Templating,
    TimeSeries,
)

DATASOURCE = "${datasource}"
SEL = 'instance=~"$instance"'


def target(expr, legend="", ref="A", instant=False, fmt="time_series"):
    return Target(
        expr=expr,
        legendFormat=legend,
        refId=ref,
        instant=instant,
        format=fmt,
        datasource=DATASOURCE,
    )


def series(title, description, targets, unit, pos):
    return TimeSeries(
        title=title,
        description=description,
        dataSource=DATASOURCE,
        targets=targets,
        unit=unit,
        gridPos=GridPos(h=8, w=pos[2], x=pos[0], y=pos[1]),
    )


def top(title, description, expr, legend, unit, pos):
    return BarGauge(
        title=title,
        description=description,
        dataSource=DATASOURCE,
        targets=[target(expr, legend, instant=True)],
        format=unit,
        orientation="horizontal",
        displayMode="gradient",
        allValues=True,
        gridPos=GridPos(h=8, w=pos[2], x=pos[0], y=pos[1]),
    )


PANELS = [
    series(
        "Pages returned/s by variant",
        "Pages each get/pin variant returned to its outermost callers (FOLL_PIN and FOLL_GET).",
        [target(f"pinwatch:gup_pages_returned:rate1m{{{SEL}}}", "{{instance}} {{variant}}")],
        "short",
        (0, 0, 12),
    ),
    series(
        "Fast-path fallback",
        "Share of fast-path calls (get/pin_user_pages_fast...) that fell back to the slow path.",
        [target(f"pinwatch:gup_fast_path_fallback:ratio_rate5m{{{SEL}}}", "{{instance}}")],
        "percentunit",
        (12, 0, 12),
    ),
    Heatmap(
        title="Latency of outermost get/pin calls",
        description="From pinwatch_gup_latency_seconds, the kernel's log2 histogram.",
        dataSource=DATASOURCE,
        targets=[
            target(
                f"sum by (le) (rate(pinwatch_gup_latency_seconds_bucket{{{SEL}}}[$__rate_interval]))",
                "{{le}}",
                fmt="heatmap",
            )
        ],
        dataFormat="tsbuckets",
        hideZeroBuckets=True,
        gridPos=GridPos(h=8, w=12, x=0, y=8),
    ),
    series(
        "Latency p99 (all variants)",
        "99th percentile of the latency histogram over 5 minutes (recording rule).",
        [target(f"pinwatch:gup_latency_seconds:p99_rate5m{{{SEL}}}", "{{instance}}")],
        "s",
        (12, 8, 12),
    ),
    top(
        "Top callers (pages/s)",
        "Kernel functions calling get/pin, by pages returned (pinwatch_caller_pages_total).",
        f"topk(10, sum by (caller, variant) (rate(pinwatch_caller_pages_total{{{SEL}}}[$__rate_interval])))",
        "{{caller}} ({{variant}})",
        "short",
        (0, 16, 12),
    ),
    top(
        "Top processes (pinned memory)",
        "VmPin of the processes holding the most pinned memory (io_uring, RDMA, perf).",
        f"topk(10, pinwatch_process_pinned_bytes{{{SEL}}})",
        "{{comm}} ({{pid}}) on {{instance}}",
        "bytes",
        (12, 16, 12),
    ),
    series(
        "Pins outstanding",
        "FOLL_PIN pages pinned minus released since pinwatch attached, and the kernel's own "
        "nr_foll_pin_acquired - nr_foll_pin_released since boot.",
        [
            target(f"pinwatch_outstanding_pins{{{SEL}}}", "{{instance}} since attach"),
            target(
                f"pinwatch_vmstat_foll_pin_acquired_total{{{SEL}}} - "
                f"pinwatch_vmstat_foll_pin_released_total{{{SEL}}}",
                "{{instance}} vmstat since boot",
                ref="B",
            ),
        ],
        "short",
        (0, 24, 12),
    ),
    series(
        "GUP errors",
        "Share of outermost get/pin calls that returned an errno (0 while none did).",
        [
            target(
                f"pinwatch:gup_errors:ratio_rate5m{{{SEL}}} "
                f"or on (instance) 0 * pinwatch_outstanding_pins{{{SEL}}}",
                "{{instance}}",
            )
        ],
        "percentunit",
        (12, 24, 12),
    ),
    Stat(
        title="Scrape target up",
        description="Prometheus's up for the pinwatch job.",
        dataSource=DATASOURCE,
        targets=[target(f'up{{job="pinwatch",{SEL}}}', "{{instance}}", instant=True)],
        gridPos=GridPos(h=6, w=6, x=0, y=32),
    ),
    series(
        "Events pinwatch missed or lost",
        "Probe misses (by reason) and events pinwatch could not account: while not 0, counts "
        "are lower bounds.",
        [
            target(
                f"sum by (reason) (rate(pinwatch_probe_missed_total{{{SEL}}}[$__rate_interval]))",
                "missed: {{reason}}",
            ),
            target(
                f"sum by (reason) (rate(pinwatch_probe_events_lost_total{{{SEL}}}[$__rate_interval]))",
                "lost: {{reason}}",
                ref="B",
            ),
        ],
        "short",
        (6, 32, 9),
    ),
    top(
        "How functions are traced",
        "Traced GUP functions by attach mechanism (none: absent on this kernel).",
        f"count by (attach) (pinwatch_probe_info{{{SEL}}})",
        "{{attach}}",
        "short",
        (15, 32, 9),
    ),
    series(
        "Map fill",
        "Entries over capacity of pinwatch's BPF hash maps (evictions past 1).",
        [
            target(
                f"pinwatch_map_entries{{{SEL}}} / pinwatch_map_capacity{{{SEL}}}",
                "{{instance}} {{map}}",
            )
        ],
        "percentunit",
        (0, 38, 24),
    ),
]

dashboard = Dashboard(
    title="pinwatch: page pinning",
    uid="pinwatch",
    description="get_user_pages / pin_user_pages traffic, latency and health from pinwatch serve.",
    tags=["pinwatch", "linux", "memory"],
    timezone="browser",
    refresh="30s",
    templating=Templating(
        list=[
            Template(
                name="datasource",
                label="Data source",
                query="prometheus",
                type="datasource",
            ),
            Template(
                name="instance",
                label="Host",
                query="label_values(pinwatch_probe_info, instance)",
                dataSource=DATASOURCE,
                includeAll=True,
                multi=True,
                default="$__all",
                allValue=".+",
            ),
        ]
    ),
    panels=PANELS,
).auto_panel_ids()

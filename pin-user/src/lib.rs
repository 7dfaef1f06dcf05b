//! pinwatch: trace, count and time Linux page pinning (the get_user_pages
//! family) with eBPF.
//!
//! Data flows one way: kernel maps -> snapshots -> deltas -> figures ->
//! views. [`probes`] attaches the kernel programs, which aggregate into
//! per-CPU maps; [`snapshot`] reads those maps (through [`probes::maps`],
//! the typed facade over them) into a [`snapshot::Snapshot`] and
//! differences two into a [`snapshot::Delta`] (the arithmetic of every
//! counter struct is generated in [`counters`]); [`figures`] derives what is
//! shown (rates, pages per call, fallback and error shares, latency
//! percentiles, pins outstanding, probe health) once, as methods of one
//! type per thing shown; [`sampling`] is the one loop that takes an interval
//! from a source (the probes, or [`reduced`] mode's kernel counters) every
//! tick until a signal, a count, a duration or the command's end. The views
//! only read figures: [`report`] (stat's table and JSON), [`tui`] (the live
//! dashboard), [`export`] (metrics, recordings, diff); [`commands`] and
//! [`cli`] wire them up ([`error`] names the exit codes, [`build_info`]
//! what `--version` says). [`kernel`] discovers what the running kernel
//! offers, [`attribution`] reads call sites and tracks pin lifetimes,
//! [`vmstat`] reads the kernel's own pin counters, [`limits`] the memlock
//! limits and accounting per process, [`model`] is the
//! reference pinning implementation that [`validate`] checks the kernel
//! against, and [`workload`] drives known GUP paths for tests and demos.
//! [`cgroups`] names the cgroup ids pins are counted under (and the
//! container, pod or unit each path shows) and opens `--cgroup`'s filter.

pub mod agent_memory;
pub mod attribution;
pub mod build_info;
pub mod cgroups;
pub mod cli;
pub mod commands;
pub mod counters;
pub mod error;
pub mod events;
pub mod export;
pub mod figures;
pub mod kernel;
pub mod limits;
pub mod model;
pub mod privileges;
pub mod probes;
pub mod reduced;
pub mod report;
pub mod sampling;
pub mod signals;
pub mod snapshot;
pub mod startup;
pub mod tui;
pub mod units;
pub mod validate;
pub mod vmstat;
pub mod workload;

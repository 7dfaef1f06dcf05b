//! pinwatch: trace, count and time Linux page pinning (the get_user_pages
//! family) with eBPF.
//!
//! Data flows one way: [`probes`] attaches the kernel programs, which
//! aggregate into per-CPU maps; [`snapshot`] reads those maps into
//! snapshots and differences them; [`report`] turns deltas into views;
//! [`commands`] print them and [`tui`] draws the live dashboard. [`kernel`] discovers what the running kernel
//! offers, [`vmstat`] reads the kernel's own pin counters, and [`workload`]
//! drives known GUP paths for tests and demos. [`cli`] parses the command
//! line and dispatches to [`commands`]; [`error`] names the exit codes.

pub mod attribution;
pub mod cli;
pub mod commands;
pub mod error;
pub mod events;
pub mod export;
pub mod kernel;
pub mod model;
pub mod privileges;
pub mod probes;
pub mod reduced;
pub mod report;
pub mod signals;
pub mod snapshot;
pub mod tui;
pub mod validate;
pub mod vmstat;
pub mod workload;

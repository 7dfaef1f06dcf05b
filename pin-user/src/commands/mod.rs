//! One module per user-facing command; each prints views and returns an
//! exit code. They hold no kernel logic of their own.

pub mod diff;
pub mod probes;
pub mod record;
pub mod stat;
pub mod trace;
pub mod validate;
pub mod workload;

//! One module per user-facing command; each owns its clap `Args` struct
//! (what the command line may ask of it), prints views and returns an exit
//! code (named in [`crate::error`]). They hold no kernel logic of their
//! own. `top` and `serve` configure and start [`crate::tui`] and
//! [`crate::export::serve`].

pub mod args;
pub mod diff;
pub mod generate;
pub mod probes;
pub mod record;
pub mod serve;
pub mod stat;
pub mod top;
pub mod trace;
pub mod validate;
pub mod workload;

//! `pinwatch serve`: the metrics server's command-line options; the server
//! itself is [`crate::export::serve`].

use std::{net::SocketAddr, process::ExitCode};

use super::args::SourceArgs;
use crate::export::serve::{self, ServeOptions};

/// Options of `pinwatch serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Where the figures come from: the probes, or reduced mode.
    #[command(flatten)]
    pub source: SourceArgs,
    /// Address to listen on (loopback unless you name another).
    #[arg(long, default_value = "127.0.0.1:9435")]
    pub listen: SocketAddr,
    /// Turn on the kernel's BPF run-time statistics while serving, to
    /// export the probes' own cost.
    #[arg(long)]
    pub bpf_stats: bool,
}

impl ServeArgs {
    /// The server's options.
    pub fn options(&self) -> ServeOptions {
        ServeOptions {
            attach: self.source.options(),
            listen: self.listen,
            bpf_stats: self.bpf_stats,
            reduced: self.source.reduced,
        }
    }
}

/// Serves until a stop signal.
pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    serve::run(args.options())
}

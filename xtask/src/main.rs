//! pinwatch's project commands (`cargo xtask ...`): install prerequisites,
//! boot stock kernels under qemu with pinwatch inside, run the test matrix,
//! benchmark pinwatch against its peers.

mod apt;
mod bench;
mod cmd;
mod dashboard;
mod demo;
mod dist;
mod initramfs;
mod install;
mod kernels;
mod matrix;
mod qemu;
mod setup;
mod test;
mod vm;
mod workspace;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "pinwatch project commands")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install every prerequisite (idempotent): nightly rust-src, llvm-22-dev,
    /// bpf-linker, qemu, busybox, cpio, xz, bpftrace, libbpf-tools, Prometheus,
    /// grafanalib and the VM kernel images.
    Setup,
    /// Boot a stock kernel under qemu with a fresh pinwatch and run CMD.
    Vm {
        /// A series of Debian's kernels (debian-5.10, debian-6.1, debian-6.12,
        /// debian-6.18, debian-7.3, any debian-X.Y[-rt] the archive has) or the
        /// path of a bzImage.
        #[arg(long, default_value = "debian-6.12")]
        kernel: String,
        /// Seconds before the VM is killed.
        #[arg(long, default_value_t = 900)]
        timeout: u64,
        /// Give the VM this terminal's keyboard (e.g. for `pinwatch top`).
        #[arg(long, short)]
        interactive: bool,
        /// Also carry this host binary (and its libraries) into /bin.
        #[arg(long = "with")]
        with: Vec<std::path::PathBuf>,
        /// Extra kernel command-line parameters (e.g. lockdown=confidentiality).
        #[arg(long, default_value = "")]
        kernel_params: String,
        /// Virtual CPUs (beyond the host's cores they share one TCG thread).
        #[arg(long, default_value_t = vm::DEFAULT_CPUS)]
        cpus: u32,
        /// Command to run inside the VM (a shell command line).
        #[arg(trailing_var_arg = true, required = true)]
        cmd: Vec<String>,
    },
    /// Unit tests on the host, then the integration suite in the VM matrix.
    Test {
        /// Run only the VM matrix entries whose name contains this (or any
        /// of several, comma-separated).
        #[arg(long)]
        only: Option<String>,
        /// Run only the VM tests whose name contains this (libtest
        /// filters: several separated by spaces, not commas). An entry on
        /// which they match no test fails.
        #[arg(long)]
        tests: Option<String>,
        /// How many VMs of the matrix run at once (1, the default: one
        /// after the other, the console untagged). Two take about a fifth
        /// less time, but under two lanes a scrape once went unanswered for
        /// 60 s on 5.10 (cause not found), so CI runs one.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=8))]
        lanes: u16,
    },
    /// Overhead benchmark in one VM boot per kernel: pinwatch vs bpftrace vs
    /// funclatency vs untraced; writes target/bench/bench.{md,json}.
    Bench(bench::BenchArgs),
    /// Generate deploy/grafana/pinwatch.json from its grafanalib source.
    Dashboard,
    /// Release artifacts in target/dist: the static binary, a tarball, a
    /// Debian package (installed and removed in a scratch root), SHA256SUMS.
    Dist,
    /// The benchmark's driver inside the VM (started by `bench`).
    #[command(hide = true)]
    BenchGuest(bench::guest::GuestArgs),
    /// The scale benchmark's driver inside the VM (started by `bench --scale`).
    #[command(hide = true)]
    ScaleGuest(bench::scale::guest::ScaleGuestArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup => setup::all(),
        Command::Vm {
            kernel,
            timeout,
            interactive,
            with,
            kernel_params,
            cpus,
            cmd,
        } => vm::run_cli(
            &kernel,
            timeout,
            &cmd.join(" "),
            interactive,
            &with,
            &kernel_params,
            cpus,
        ),
        Command::Test { only, tests, lanes } => {
            test::run(only.as_deref(), tests.as_deref(), usize::from(lanes))
        }
        Command::Bench(args) => bench::run(&args),
        Command::Dashboard => dashboard::write(),
        Command::Dist => dist::run(),
        Command::BenchGuest(args) => bench::guest::run(&args),
        Command::ScaleGuest(args) => bench::scale::guest::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

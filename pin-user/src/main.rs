//! The `pinwatch` binary: parse the command line, run, map errors to one
//! line and an exit code.

fn main() -> std::process::ExitCode {
    pinwatch::cli::main()
}

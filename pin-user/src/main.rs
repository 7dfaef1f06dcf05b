//! The `pinwatch` binary: parse the command line, run, map errors to one
//! line and an exit code.

/// Counts the heap the agent holds (`pinwatch_agent_heap_bytes`).
#[global_allocator]
static ALLOCATOR: pinwatch::agent_memory::CountingAllocator =
    pinwatch::agent_memory::CountingAllocator;

fn main() -> std::process::ExitCode {
    pinwatch::cli::main()
}

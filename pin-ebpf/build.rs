//! Rebuilds the eBPF object when the `bpf-linker` binary changes: the linker
//! is an undeclared build input of this crate.
fn main() {
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}

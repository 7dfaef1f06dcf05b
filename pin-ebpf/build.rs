//! Rebuilds the eBPF object when the `bpf-linker` binary changes (the
//! linker is an undeclared build input of this crate), and tells the
//! linker to let LLVM expand memory intrinsics its generic way.
fn main() {
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
    // By default bpf-linker has LLVM expand only `memcpy` in place (in
    // source order, for JITs that match copy patterns, which x86-64's
    // does not), so every `memset` (each zeroed array or struct, 16 bytes
    // and up) became a call to aya-ebpf's byte-at-a-time loop: 315 calls
    // in the object, run on every get/pin return (the comm buffer) and
    // walked by the verifier a byte at a time on every path (most of the
    // 23 900 instructions it walked per fexit program on 6.12).
    println!("cargo:rustc-link-arg=--disable-expand-memcpy-in-order");
}

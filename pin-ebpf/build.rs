//! Rebuilds the eBPF object when the `bpf-linker` binary changes (the
//! linker is an undeclared build input of this crate), tells the linker
//! to let LLVM expand memory intrinsics its generic way, and to keep the
//! global BPF functions (`pinwatch_*`) global.
fn main() {
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
    // The host's build of the crate (its unit tests) links with cc, which
    // knows none of bpf-linker's options.
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() != Ok("bpf") {
        return;
    }
    // By default bpf-linker has LLVM expand only `memcpy` in place (in
    // source order, for JITs that match copy patterns, which x86-64's
    // does not), so every `memset` (each zeroed array or struct, 16 bytes
    // and up) became a call to aya-ebpf's byte-at-a-time loop: 315 calls
    // in the object, run on every get/pin return (the comm buffer) and
    // walked by the verifier a byte at a time on every path (most of the
    // 23 900 instructions it walked per fexit program on 6.12).
    println!("cargo:rustc-link-arg=--disable-expand-memcpy-in-order");
    // bpf-linker internalizes every function it is not told to export,
    // and the verifier checks an internal one again at every call: the
    // global ones (`pub extern "C" fn pinwatch_*`, see the crate's doc)
    // are exported by name, read from the sources.
    println!("cargo:rerun-if-changed=src");
    let mut globals = Vec::new();
    for entry in std::fs::read_dir("src").expect("pin-ebpf's src") {
        let path = entry.expect("an entry of pin-ebpf's src").path();
        let source = std::fs::read_to_string(&path).expect("a pin-ebpf source file");
        globals.extend(source.lines().filter_map(|l| {
            let name = l.split_once("pub extern \"C\" fn ")?.1.split('(').next()?;
            name.starts_with("pinwatch_").then(|| name.to_string())
        }));
    }
    globals.sort();
    println!("cargo:rustc-link-arg=--export={}", globals.join(","));
}

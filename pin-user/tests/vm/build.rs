//! The pinwatch under test is the build the matrix entry asked for
//! (`PINWATCH_BUILD`): the static one `cargo xtask dist` ships has no
//! program interpreter (a static PIE), the glibc one names ld-linux.

use crate::harness::pinwatch_bin;

/// ELF program header type of the interpreter path.
const PT_INTERP: u32 = 3;

/// Whether the ELF executable `bytes` asks for a program interpreter (is
/// dynamically linked), read from its 64-bit little-endian program headers.
fn has_interpreter(bytes: &[u8]) -> bool {
    assert_eq!(&bytes[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(bytes[4], 2, "not a 64-bit ELF file");
    let u16_at = |at: usize| u16::from_le_bytes(bytes[at..at + 2].try_into().unwrap()) as usize;
    let phoff = u64::from_le_bytes(bytes[0x20..0x28].try_into().unwrap()) as usize;
    let (entsize, count) = (u16_at(0x36), u16_at(0x38));
    (0..count).any(|i| {
        let at = phoff + i * entsize;
        u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) == PT_INTERP
    })
}

#[test]
fn pinwatch_under_test_is_the_build_asked_for() {
    let build = std::env::var("PINWATCH_BUILD").expect(
        "PINWATCH_BUILD (static or glibc) names the build under test; cargo xtask test sets it",
    );
    let path = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join(pinwatch_bin()))
        .find(|p| p.is_file())
        .unwrap_or_else(|| std::path::PathBuf::from(pinwatch_bin()));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let dynamic = has_interpreter(&bytes);
    match build.as_str() {
        "static" => assert!(!dynamic, "{} has a program interpreter", path.display()),
        "glibc" => assert!(dynamic, "{} has no program interpreter", path.display()),
        other => panic!("PINWATCH_BUILD={other}: expected static or glibc"),
    }
}

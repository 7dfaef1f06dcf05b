//! Whether the kernel lets pinwatch load tracing (fentry/fexit) programs:
//! one empty fentry program, loaded against `bpf_fentry_test1` (the
//! function the kernel keeps for exactly such tests) and closed again.
//!
//! Why by hand: aya's `is_program_supported(ProgramType::Tracing)` does
//! the same but parses the whole kernel BTF again to find that function's
//! id (110-150 ms under TCG, a third of this check), while pinwatch has
//! parsed it already.

use std::os::fd::{FromRawFd as _, OwnedFd};

use super::bpf_sys::{BPF_PROG_LOAD, ProgLoadAttr};

/// `BPF_PROG_TYPE_TRACING`.
const PROG_TYPE_TRACING: u32 = 26;
/// `BPF_TRACE_FENTRY`.
const TRACE_FENTRY: u32 = 24;
/// The errno the kernel gives for an operation it does not support.
const ENOTSUPP: i32 = 524;

/// `r0 = 0; exit`, as two eBPF instructions.
const RETURN_ZERO: [u64; 2] = [0x0000_0000_0000_00b7, 0x0000_0000_0000_0095];

/// Ok when an fentry program on the BTF function `btf_id` loads, else
/// why not, in one line.
pub fn fentry_loads(btf_id: u32) -> Result<(), String> {
    let license = c"GPL";
    let mut attr = ProgLoadAttr {
        prog_type: PROG_TYPE_TRACING,
        insn_cnt: RETURN_ZERO.len() as u32,
        insns: RETURN_ZERO.as_ptr() as u64,
        license: license.as_ptr() as u64,
        expected_attach_type: TRACE_FENTRY,
        attach_btf_id: btf_id,
        ..Default::default()
    };
    // SAFETY: `attr` is a valid, initialised prefix of `union bpf_attr`
    // whose pointers outlive the call; on success the kernel returns a new
    // descriptor, owned (and closed) here.
    let err = match unsafe { super::bpf_sys::bpf(BPF_PROG_LOAD, &mut attr) } {
        Ok(fd) => {
            drop(unsafe { OwnedFd::from_raw_fd(fd as i32) });
            return Ok(());
        }
        Err(err) => err,
    };
    Err(match err.raw_os_error() {
        Some(libc::EINVAL | libc::E2BIG | ENOTSUPP) => {
            "fentry/fexit unavailable: the kernel does not support tracing programs".to_string()
        }
        _ => format!("fentry/fexit refused: loading a tracing program failed ({err})"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The attribute's layout is the kernel's: `attach_btf_id` sits at
    /// byte 108 of `union bpf_attr` (include/uapi/linux/bpf.h).
    #[test]
    fn attach_btf_id_is_where_the_kernel_reads_it() {
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, expected_attach_type), 68);
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, attach_btf_id), 108);
    }
}

//! The current task's name, read without zeroing a buffer first.

use core::mem::MaybeUninit;

use aya_ebpf::helpers::generated::bpf_get_current_comm;

/// Bytes in a task's comm (`TASK_COMM_LEN`).
const COMM_LEN: usize = 16;

/// The current task's comm; all zeroes where the kernel has no current
/// task. aya's `bpf_get_current_comm()` zeroes its buffer before the
/// helper call and wraps the result in a `Result`: stores and branches
/// on every get/pin return for nothing, because the kernel writes all
/// 16 bytes in every case (the name padded with NULs by `strscpy_pad`,
/// `strncpy` before 5.19, or zeroes where it fails), and the verifier
/// accepts an uninitialised buffer for it (`ARG_PTR_TO_UNINIT_MEM`).
#[inline(always)]
pub fn current_comm() -> [u8; COMM_LEN] {
    let mut comm = MaybeUninit::<[u8; COMM_LEN]>::uninit();
    // SAFETY: the helper writes all `COMM_LEN` bytes of the buffer on
    // success and on failure (see above).
    unsafe {
        bpf_get_current_comm(comm.as_mut_ptr().cast(), COMM_LEN as u32);
        comm.assume_init()
    }
}

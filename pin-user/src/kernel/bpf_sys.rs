//! The one raw `bpf(2)` call the agent makes itself, for the commands
//! aya 0.14 does not expose (batch lookups, link info by id, pins into a
//! private mount, the fentry check, the kprobe_multi programs and links):
//! the syscall and its errno, once, and the program load's attribute.

/// `bpf(2)` command that loads a program.
pub const BPF_PROG_LOAD: libc::c_long = 5;

/// `bpf(cmd, attr, size_of::<T>())`: the kernel's non-negative result (a
/// new descriptor for the commands that open one), or its errno.
///
/// # Safety
/// `attr` must be the kernel's layout for `cmd`, and every pointer in it
/// valid for what the kernel reads or writes through it during the call.
pub unsafe fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<i64> {
    // SAFETY: the caller vouches for `attr`; the size passed is its own.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>()) };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// The leading fields of `union bpf_attr` for `BPF_PROG_LOAD`, up to
/// `attach_btf_id` (the kernel zero-extends the rest); no padding, which
/// `Default` would leave undefined and the kernel would read as a field.
#[repr(C)]
#[derive(Default)]
pub struct ProgLoadAttr {
    pub prog_type: u32,
    pub insn_cnt: u32,
    pub insns: u64,
    pub license: u64,
    pub log_level: u32,
    pub log_size: u32,
    pub log_buf: u64,
    pub kern_version: u32,
    pub prog_flags: u32,
    pub prog_name: [u8; 16],
    pub prog_ifindex: u32,
    pub expected_attach_type: u32,
    pub prog_btf_fd: u32,
    pub func_info_rec_size: u32,
    pub func_info: u64,
    pub func_info_cnt: u32,
    pub line_info_rec_size: u32,
    pub line_info: u64,
    pub line_info_cnt: u32,
    pub attach_btf_id: u32,
}

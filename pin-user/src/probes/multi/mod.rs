//! Multi-function links: every traced function on one entry link and one
//! return link, each attached with a single update, instead of a program
//! pair per function that the kernel verifies and attaches one by one
//! (attaching was 70-80 % of start-up). The object's multi programs
//! serve all functions; each function's link cookie says which one was
//! hit ([`MultiTarget`]). Two kinds ([`MultiKind`]):
//!
//! - kprobe_multi (`--attach kprobe-multi`): from 5.18, where the kernel
//!   is built with fprobe (Debian's 6.1 is not). From 6.14 its returns go
//!   through the function-graph tracer, whose return trampoline and saved
//!   return addresses the kernel side's missed-return check does not
//!   read, so it is refused there ([`MultiKind::for_attach`]).
//! - tracing multi (`--attach fentry-multi`): fentry and fexit programs
//!   on many functions (Linux 7.3; the per-function trampolines are
//!   installed in one batch). The programs are verified against no
//!   function, so they read arguments through helpers.
//!
//! Why by hand: aya 0.14 loads kprobe programs without an expected attach
//! type, and tracing programs only against one function; the kernel links
//! only programs loaded for the multi attach types, and aya has neither
//! link. So the two programs are relocated again from the object with
//! aya-obj (the parser aya itself uses), against the maps aya created,
//! and loaded and linked with `bpf(2)` here.

use std::{
    collections::HashSet,
    ffi::CString,
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd, RawFd},
};

use aya::{Ebpf, maps::Map};
use pin_common::{
    FuncId,
    catalog::{MultiTarget, has_exit_probe},
};

mod kind;
pub use kind::MultiKind;
use kind::{KPROBE_MULTI_RETURN, TRACE_FENTRY_MULTI, TRACE_FEXIT_MULTI, TRACE_KPROBE_MULTI};

use crate::kernel::{
    KernelFacts,
    bpf_sys::{BPF_PROG_LOAD, ProgLoadAttr, bpf},
    verifier_reason,
};

/// `bpf(2)` commands.
const BPF_LINK_CREATE: libc::c_long = 28;
/// Bytes of verifier log kept when a load fails (its last lines say why).
const LOG_SIZE: usize = 1 << 20;

/// The two programs, loaded for `kind`'s links.
pub struct MultiPrograms {
    /// Which links they are loaded for.
    pub kind: MultiKind,
    /// `multi_kprobe` or `multi_fentry`.
    pub entry: OwnedFd,
    /// `multi_kretprobe` or `multi_fexit`.
    pub exit: OwnedFd,
}

/// The multi programs and, once attached, their links.
pub struct Multi {
    programs: MultiPrograms,
    links: Option<MultiLinks>,
}

/// The two links.
struct MultiLinks {
    entry: OwnedFd,
    exit: OwnedFd,
}

impl Multi {
    /// Not attached yet.
    pub fn new(programs: MultiPrograms) -> Self {
        Self {
            programs,
            links: None,
        }
    }

    /// Links every function of `targets` (id, kernel symbol): the return
    /// program first, to those that have one, so that no entry is seen
    /// without its return (as with the per-function pairs); then the entry
    /// program. On failure nothing stays attached.
    pub fn attach(
        &mut self,
        facts: &KernelFacts,
        targets: &[(FuncId, &str)],
    ) -> Result<(), String> {
        let at_return: Vec<(FuncId, &str)> = targets
            .iter()
            .copied()
            .filter(|(id, _)| has_exit_probe(*id))
            .collect();
        let kind = self.programs.kind;
        let exit = link(facts, kind, &self.programs.exit, &at_return, true)?;
        let entry = link(facts, kind, &self.programs.entry, targets, false)?;
        self.links = Some(MultiLinks { entry, exit });
        Ok(())
    }

    /// Which links.
    pub fn kind(&self) -> MultiKind {
        self.programs.kind
    }

    /// The two programs by kind (`kprobe`, `kretprobe` or `fentry`,
    /// `fexit`), for their run statistics and skipped runs.
    pub fn programs(&self) -> [(&'static str, BorrowedFd<'_>); 2] {
        let [entry, exit] = self.programs.kind.program_kinds();
        [
            (entry, self.programs.entry.as_fd()),
            (exit, self.programs.exit.as_fd()),
        ]
    }

    /// The links by program kind, once attached.
    pub fn links(&self) -> impl Iterator<Item = (&'static str, BorrowedFd<'_>)> {
        let [entry, exit] = self.programs.kind.program_kinds();
        self.links
            .iter()
            .flat_map(move |l| [(entry, l.entry.as_fd()), (exit, l.exit.as_fd())])
    }
}

/// The descriptor of an aya map, whatever its type.
fn map_fd(map: &Map) -> RawFd {
    use Map::*;
    let (Array(data)
    | ArrayOfMaps(data)
    | BloomFilter(data)
    | CgroupArray(data)
    | CgroupStorage(data)
    | CgrpStorage(data)
    | CpuMap(data)
    | DevMap(data)
    | DevMapHash(data)
    | HashMap(data)
    | HashOfMaps(data)
    | InodeStorage(data)
    | LpmTrie(data)
    | LruHashMap(data)
    | PerCpuArray(data)
    | PerCpuCgroupStorage(data)
    | PerCpuHashMap(data)
    | PerCpuLruHashMap(data)
    | PerfEventArray(data)
    | ProgramArray(data)
    | Queue(data)
    | ReusePortSockArray(data)
    | RingBuf(data)
    | SockHash(data)
    | SockMap(data)
    | SkStorage(data)
    | Stack(data)
    | StackTraceMap(data)
    | Unsupported(data)
    | XskMap(data)) = map;
    data.fd().as_fd().as_raw_fd()
}

/// Loads the two multi programs of `kind` from `object` (the bytes `ebpf`
/// was loaded from), their map references pointing at `ebpf`'s maps.
/// Call it before any map is taken out of `ebpf` (the log reader takes
/// one).
pub fn load(object: &[u8], ebpf: &Ebpf, kind: MultiKind) -> Result<MultiPrograms, String> {
    let [entry_program, return_program] = kind.program_names();
    let (prog_type, [entry_type, return_type]) = kind.load_types();
    let started = std::time::Instant::now();
    let mut obj = aya_obj::Object::parse(object).map_err(|e| format!("parsing the object: {e}"))?;
    if obj.has_btf_relocations() {
        // The object has none today; relocating them would need the
        // kernel's BTF parsed a second time.
        return Err("the object has BTF relocations, which this loader does not apply".into());
    }
    let by_name: std::collections::HashMap<&str, RawFd> =
        ebpf.maps().map(|(name, map)| (name, map_fd(map))).collect();
    let maps: Vec<(String, RawFd, aya_obj::Map)> = obj
        .maps
        .drain()
        .filter_map(|(name, map)| by_name.get(name.as_str()).map(|fd| (name, *fd, map)))
        .collect();
    // Only these two are linked and loaded here (aya has the others).
    obj.programs
        .retain(|name, _| name == entry_program || name == return_program);
    let text_sections: HashSet<usize> = obj.functions.keys().map(|(section, _)| *section).collect();
    obj.relocate_maps(
        maps.iter().map(|(name, fd, map)| (name.as_str(), *fd, map)),
        &text_sections,
    )
    .map_err(|e| format!("relocating maps: {e}"))?;
    obj.relocate_calls(&text_sections)
        .map_err(|e| format!("relocating calls: {e}"))?;
    obj.sanitize_functions(aya::features());
    // The programs' BTF, as aya loads it: the kernel wants the function
    // info of programs that pass callbacks (`bpf_loop`, pin lifetimes).
    let btf = match aya::features().btf() {
        Some(features) => match obj.fixup_and_sanitize_btf(features) {
            Ok(Some(btf)) => Some(load_btf(&btf.to_bytes())?),
            Ok(None) => None,
            Err(e) => return Err(format!("the object's BTF: {e}")),
        },
        None => None,
    };
    let load = |name: &str| -> Result<OwnedFd, String> {
        let expected_attach_type = if name == entry_program {
            entry_type
        } else {
            return_type
        };
        let program = obj
            .programs
            .get(name)
            .ok_or_else(|| format!("program {name} missing from the embedded object"))?;
        let function = obj
            .functions
            .get(&program.function_key())
            .ok_or_else(|| format!("program {name}: no code"))?;
        let types = (prog_type, expected_attach_type);
        load_program(name, types, function, &program.license, btf.as_ref())
    };
    let prepared = started.elapsed();
    // The two are verified side by side: each takes the verifier about
    // half a second under emulation, and they share nothing.
    let timed = |name: &str| {
        let start = std::time::Instant::now();
        load(name).map(|fd| (fd, start.elapsed()))
    };
    let [entry, exit]: [_; 2] =
        super::threads::concurrently(vec![entry_program, return_program], timed)
            .try_into()
            .map_err(|_| "verifying the multi programs: a result is missing".to_string())?;
    let ((entry, entry_took), (exit, exit_took)) = (entry?, exit?);
    log::info!(
        "{} programs: parsed, relocated and BTF loaded in {} ms, then verified side by side \
         in {} ms ({entry_program} {} ms, {return_program} {} ms)",
        kind.links_name(),
        prepared.as_millis(),
        (started.elapsed() - prepared).as_millis(),
        entry_took.as_millis(),
        exit_took.as_millis()
    );
    Ok(MultiPrograms { kind, entry, exit })
}

/// `union bpf_attr` for `BPF_BTF_LOAD`.
#[repr(C)]
#[derive(Default)]
struct BtfLoadAttr {
    btf: u64,
    btf_log_buf: u64,
    btf_size: u32,
    btf_log_size: u32,
    btf_log_level: u32,
    /// Written back by the kernel (6.4+); named so that the struct has no
    /// padding, which `Default` would leave undefined.
    btf_log_true_size: u32,
}

/// Loads the object's BTF (`bytes`, already fixed up for this kernel).
fn load_btf(bytes: &[u8]) -> Result<OwnedFd, String> {
    const BPF_BTF_LOAD: libc::c_long = 18;
    let mut attr = BtfLoadAttr {
        btf: bytes.as_ptr() as u64,
        btf_size: bytes.len() as u32,
        ..Default::default()
    };
    // SAFETY: `attr` is the kernel's layout for this command and `bytes`
    // outlives the call; on success the kernel returns a new descriptor.
    match unsafe { bpf(BPF_BTF_LOAD, &mut attr) } {
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }),
        Err(e) => Err(format!("loading the object's BTF: {e}")),
    }
}

/// Loads one program with `types` (`bpf_prog_type`, expected attach type:
/// a multi one), with its function and line info where the object's BTF
/// loaded; on failure the verifier's verdict says why. A tracing multi
/// program gets no attach type id: the kernel verifies it against a
/// function of its own that takes no arguments.
fn load_program(
    name: &str,
    (prog_type, expected_attach_type): (u32, u32),
    function: &aya_obj::Function,
    license: &CString,
    btf: Option<&OwnedFd>,
) -> Result<OwnedFd, String> {
    let mut prog_name = [0u8; 16];
    for (to, from) in prog_name.iter_mut().zip(name.bytes().take(15)) {
        *to = from;
    }
    let insns = &function.instructions;
    let mut attr = ProgLoadAttr {
        prog_type,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name,
        expected_attach_type,
        ..Default::default()
    };
    if let Some(btf) = btf {
        let func_info = &function.func_info.func_info;
        let line_info = &function.line_info.line_info;
        attr.prog_btf_fd = btf.as_raw_fd() as u32;
        if !func_info.is_empty() {
            attr.func_info_rec_size = function.func_info_rec_size as u32;
            attr.func_info = func_info.as_ptr() as u64;
            attr.func_info_cnt = func_info.len() as u32;
        }
        if !line_info.is_empty() {
            attr.line_info_rec_size = function.line_info_rec_size as u32;
            attr.line_info = line_info.as_ptr() as u64;
            attr.line_info_cnt = line_info.len() as u32;
        }
    }
    // SAFETY: `attr` is a valid prefix of `union bpf_attr` whose pointers
    // outlive the call; on success the kernel returns a new descriptor.
    if let Ok(fd) = unsafe { bpf(BPF_PROG_LOAD, &mut attr) } {
        return Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
    }
    // Again with the log, which the first attempt did without (it costs).
    let mut log = vec![0u8; LOG_SIZE];
    attr.log_level = 1;
    attr.log_size = LOG_SIZE as u32;
    attr.log_buf = log.as_mut_ptr() as u64;
    // SAFETY: as above; the kernel writes at most `log_size` bytes to `log`.
    match unsafe { bpf(BPF_PROG_LOAD, &mut attr) } {
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }),
        Err(e) => {
            let text = String::from_utf8_lossy(&log);
            log::debug!("verifier log of {name}:\n{}", text.trim_end_matches('\0'));
            let last = verifier_reason(&text).unwrap_or("");
            Err(format!("loading {name} for multi links: {e} ({last})"))
        }
    }
}

/// `union bpf_attr` for `BPF_LINK_CREATE` with `kprobe_multi`.
#[repr(C)]
#[derive(Default)]
struct KprobeMultiLinkAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
    multi_flags: u32,
    cnt: u32,
    syms: u64,
    addrs: u64,
    cookies: u64,
}

/// `union bpf_attr` for `BPF_LINK_CREATE` with `tracing_multi` (Linux
/// 7.3): the functions' kernel type ids and a cookie each.
#[repr(C)]
#[derive(Default)]
struct TracingMultiLinkAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
    ids: u64,
    cookies: u64,
    cnt: u32,
    /// Named so that the struct has no padding `Default` would leave
    /// undefined.
    unused: u32,
}

/// Links `program` (of `kind`) to every function of `targets` (id, kernel
/// symbol), each with its [`MultiTarget`] cookie; at their returns when
/// `at_return`. One function the kernel cannot find fails the whole link.
pub fn link(
    facts: &KernelFacts,
    kind: MultiKind,
    program: &OwnedFd,
    targets: &[(FuncId, &str)],
    at_return: bool,
) -> Result<OwnedFd, String> {
    let cookies: Vec<u64> = targets
        .iter()
        .map(|(id, _)| MultiTarget::of(*id).cookie())
        .collect();
    let which = if at_return { "return" } else { "entry" };
    let failed = |e: std::io::Error| {
        format!(
            "{} {which} link on {} functions: {e}",
            kind.links_name(),
            targets.len()
        )
    };
    let fd = match kind {
        MultiKind::Kprobe => {
            let names: Vec<CString> = targets
                .iter()
                .map(|(_, symbol)| CString::new(*symbol).map_err(|e| e.to_string()))
                .collect::<Result<_, _>>()?;
            let syms: Vec<u64> = names.iter().map(|n| n.as_ptr() as u64).collect();
            let mut attr = KprobeMultiLinkAttr {
                prog_fd: program.as_raw_fd() as u32,
                attach_type: TRACE_KPROBE_MULTI,
                multi_flags: if at_return { KPROBE_MULTI_RETURN } else { 0 },
                cnt: syms.len() as u32,
                syms: syms.as_ptr() as u64,
                cookies: cookies.as_ptr() as u64,
                ..Default::default()
            };
            // SAFETY: `attr` is the kernel's layout for this command; the
            // symbol and cookie arrays (and the strings) outlive the call.
            unsafe { bpf(BPF_LINK_CREATE, &mut attr) }.map_err(failed)?
        }
        MultiKind::Fentry => {
            let btf = facts.btf.as_ref().map_err(|e| format!("kernel BTF: {e}"))?;
            let ids: Vec<u32> = targets
                .iter()
                .map(|(_, symbol)| {
                    btf.func_id(symbol)
                        .ok_or_else(|| format!("{symbol} not in the kernel's BTF"))
                })
                .collect::<Result<_, _>>()?;
            let mut attr = TracingMultiLinkAttr {
                prog_fd: program.as_raw_fd() as u32,
                attach_type: if at_return {
                    TRACE_FEXIT_MULTI
                } else {
                    TRACE_FENTRY_MULTI
                },
                cnt: ids.len() as u32,
                ids: ids.as_ptr() as u64,
                cookies: cookies.as_ptr() as u64,
                ..Default::default()
            };
            // SAFETY: as above; the id and cookie arrays outlive the call.
            unsafe { bpf(BPF_LINK_CREATE, &mut attr) }.map_err(failed)?
        }
    };
    // SAFETY: on success the kernel returned a new descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The attributes' layouts are the kernel's (include/uapi/linux/bpf.h):
    /// `expected_attach_type` at byte 68 of the load, the kprobe_multi
    /// fields from byte 16 of the link.
    #[test]
    fn attributes_sit_where_the_kernel_reads_them() {
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, expected_attach_type), 68);
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, prog_btf_fd), 72);
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, func_info), 80);
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, line_info), 96);
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, line_info_cnt), 104);
        assert_eq!(std::mem::offset_of!(BtfLoadAttr, btf_log_level), 24);
        // No padding the kernel would read as a field.
        assert_eq!(std::mem::size_of::<ProgLoadAttr>(), 112);
        assert_eq!(std::mem::size_of::<BtfLoadAttr>(), 32);
        assert_eq!(std::mem::size_of::<KprobeMultiLinkAttr>(), 48);
        assert_eq!(std::mem::offset_of!(KprobeMultiLinkAttr, multi_flags), 16);
        assert_eq!(std::mem::offset_of!(KprobeMultiLinkAttr, cnt), 20);
        assert_eq!(std::mem::offset_of!(KprobeMultiLinkAttr, syms), 24);
        assert_eq!(std::mem::offset_of!(KprobeMultiLinkAttr, cookies), 40);
        assert_eq!(std::mem::size_of::<TracingMultiLinkAttr>(), 40);
        assert_eq!(std::mem::offset_of!(TracingMultiLinkAttr, ids), 16);
        assert_eq!(std::mem::offset_of!(TracingMultiLinkAttr, cookies), 24);
        assert_eq!(std::mem::offset_of!(TracingMultiLinkAttr, cnt), 32);
        use aya_obj::generated::bpf_attach_type;
        assert_eq!(
            bpf_attach_type::BPF_TRACE_KPROBE_MULTI as u32,
            TRACE_KPROBE_MULTI
        );
    }
}

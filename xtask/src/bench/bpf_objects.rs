//! Inside the VM: another process's BPF map, opened by id and counted, and
//! the programs loaded in the kernel, counted.
//!
//! The scale benchmark states how many entries the agent's per-process
//! table really held, rather than how many children were forked (an LRU
//! hash can evict before it is full), and when the kernel has detached the
//! agent's programs after it stopped. Four `bpf(2)` commands suffice;
//! they are called directly because the xtask has no BPF library and
//! pulling aya in for them would build it twice (host and guest share
//! this binary).

use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

use anyhow::bail;

const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
const BPF_PROG_GET_NEXT_ID: libc::c_long = 11;
const BPF_MAP_GET_FD_BY_ID: libc::c_long = 14;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
/// Longest key walked (the agent's tables have 4- to 16-byte keys).
const MAX_KEY: usize = 64;

/// `union bpf_attr` for the commands used here; zero-filled to the size
/// of the kernel's largest member used (the kernel checks unused bytes
/// are zero).
#[repr(C, align(8))]
struct Attr([u8; 128]);

impl Attr {
    fn new() -> Self {
        Self([0; 128])
    }

    fn put_u32(&mut self, offset: usize, value: u32) {
        self.0[offset..offset + 4].copy_from_slice(&value.to_ne_bytes());
    }

    fn put_u64(&mut self, offset: usize, value: u64) {
        self.0[offset..offset + 8].copy_from_slice(&value.to_ne_bytes());
    }

    /// `bpf(cmd, self)`: the result, or the error.
    fn call(&mut self, cmd: libc::c_long) -> std::io::Result<libc::c_long> {
        // SAFETY: the attribute is a valid, zero-padded bpf_attr for `cmd`
        // whose pointers (if any) point at live buffers of the caller.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                self.0.as_mut_ptr(),
                self.0.len() as libc::c_uint,
            )
        };
        if rc < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(rc)
        }
    }
}

/// How many BPF programs the kernel holds now (loaded by anyone).
pub fn program_count() -> anyhow::Result<u32> {
    let mut count = 0;
    let mut id = 0;
    loop {
        let mut attr = Attr::new();
        attr.put_u32(0, id);
        match attr.call(BPF_PROG_GET_NEXT_ID) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(count),
            Err(e) => bail!("BPF_PROG_GET_NEXT_ID: {e}"),
        }
        id = u32::from_ne_bytes(attr.0[4..8].try_into().expect("4 bytes"));
        count += 1;
    }
}

/// An open BPF map.
pub struct Map {
    fd: OwnedFd,
}

/// Opens the map with id `id` (needs CAP_SYS_ADMIN, which the guest's
/// root has).
pub fn open(id: u64) -> std::io::Result<Map> {
    let mut attr = Attr::new();
    attr.put_u32(0, id as u32);
    let fd = attr.call(BPF_MAP_GET_FD_BY_ID)?;
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(Map {
        fd: unsafe { OwnedFd::from_raw_fd(fd as i32) },
    })
}

/// The start of `struct bpf_map_info`: type, id, key_size, value_size,
/// max_entries, map_flags (u32 each), then name[16].
#[repr(C)]
#[derive(Default)]
struct MapInfo {
    kind: u32,
    id: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    name: [u8; 16],
}

impl Map {
    fn info(&self) -> std::io::Result<MapInfo> {
        let mut info = MapInfo::default();
        let mut attr = Attr::new();
        attr.put_u32(0, self.fd.as_raw_fd() as u32);
        attr.put_u32(4, size_of::<MapInfo>() as u32);
        attr.put_u64(8, &mut info as *mut MapInfo as u64);
        attr.call(BPF_OBJ_GET_INFO_BY_FD)?;
        Ok(info)
    }

    /// The map's name.
    pub fn name(&self) -> anyhow::Result<String> {
        let info = self.info()?;
        let len = info.name.iter().position(|b| *b == 0).unwrap_or(16);
        Ok(String::from_utf8_lossy(&info.name[..len]).into_owned())
    }

    /// How many keys the map holds now (walked with
    /// `BPF_MAP_GET_NEXT_KEY`; run it while the map is quiet).
    pub fn count_keys(&self) -> anyhow::Result<u64> {
        let key_size = self.info()?.key_size as usize;
        if key_size == 0 || key_size > MAX_KEY {
            bail!("unexpected key size {key_size}");
        }
        let mut key = [0u8; MAX_KEY];
        let mut next = [0u8; MAX_KEY];
        let mut count = 0;
        let mut first = true;
        loop {
            let mut attr = Attr::new();
            attr.put_u32(0, self.fd.as_raw_fd() as u32);
            // A null key asks for the first one.
            attr.put_u64(8, if first { 0 } else { key.as_ptr() as u64 });
            attr.put_u64(16, next.as_mut_ptr() as u64);
            match attr.call(BPF_MAP_GET_NEXT_KEY) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(count),
                Err(e) => bail!("BPF_MAP_GET_NEXT_KEY: {e}"),
            }
            key[..key_size].copy_from_slice(&next[..key_size]);
            first = false;
            count += 1;
        }
    }
}

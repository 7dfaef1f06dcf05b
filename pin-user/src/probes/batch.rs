//! Reading a whole hash map in a few system calls: `BPF_MAP_LOOKUP_BATCH`
//! (Linux 5.6+ for hash and LRU hash maps), hundreds of entries a call,
//! instead of aya's iterator, which makes two calls per entry
//! (`BPF_MAP_GET_NEXT_KEY`, then `BPF_MAP_LOOKUP_ELEM`) and, when the key it
//! stands on is evicted meanwhile, starts again from the first bucket.
//! aya 0.14 has no batch operations and keeps its `bpf(2)` wrappers
//! private; libbpf-rs has one but wraps only maps it loaded and needs C
//! libbpf, so the one call is made here by hand (layout from
//! `include/uapi/linux/bpf.h`, `union bpf_attr`'s `batch`).
//!
//! A batch copies whole buckets under their lock, so no key comes twice
//! in one pass; as with any walk of a live LRU map, entries created behind
//! the cursor or evicted ahead of it are not seen.

use std::{
    mem::MaybeUninit,
    os::fd::{AsFd as _, AsRawFd as _},
};

use aya::{
    Pod,
    maps::{HashMap, IterableMap as _, MapData},
};

use crate::kernel::bpf_sys::bpf;

/// `BPF_MAP_LOOKUP_BATCH` in `enum bpf_cmd`.
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// Linux's `ENOTSUPP` (not in libc): a map type without batch support.
const ENOTSUPP: i32 = 524;

/// Entries asked for per call: hash maps answer by whole buckets, and a
/// bucket holds a handful of entries, so a call returns about this many.
/// At most 512 x (16 + 792) bytes of buffers for the call-site table.
const CHUNK: usize = 512;

/// Retries of a call the kernel could not complete (a bucket lock it did
/// not get at once, a signal) before falling back to aya's iterator.
const RETRIES: u32 = 8;

/// `union bpf_attr`'s `batch` member, the layout the kernel reads.
#[repr(C)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Every entry of `map`, by batches; by aya's iterator where the kernel
/// refuses batches. Entries that cannot be read are skipped, as by the
/// iterator's callers before.
pub fn entries<K: Pod, V: Pod>(map: &HashMap<&MapData, K, V>) -> Vec<(K, V)> {
    match lookup_batches(map) {
        Ok(entries) => entries,
        Err(errno) => {
            log::debug!("batch lookup refused (errno {errno}): reading entry by entry");
            map.iter().flatten().collect()
        }
    }
}

/// Every entry of `map` by batches only; the errno that stopped the walk,
/// when it did not reach the end (all kernels pinwatch supports, 5.10
/// on, have batches for hash and LRU hash maps).
pub fn lookup_batches<K: Pod, V: Pod>(map: &HashMap<&MapData, K, V>) -> Result<Vec<(K, V)>, i32> {
    let fd = map.map().fd().as_fd().as_raw_fd();
    let mut keys: Vec<MaybeUninit<K>> = Vec::with_capacity(CHUNK);
    let mut values: Vec<MaybeUninit<V>> = Vec::with_capacity(CHUNK);
    let mut chunk = CHUNK;
    // The cursor: a bucket index (u32) for hash maps; u64 leaves room.
    let (mut cursor, mut next) = (0u64, 0u64);
    let mut first = true;
    let mut retries = 0;
    let mut out = Vec::new();
    loop {
        keys.reserve(chunk);
        values.reserve(chunk);
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { &raw const cursor as u64 },
            out_batch: &raw mut next as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: chunk as u32,
            map_fd: fd as u32,
            elem_flags: 0,
            flags: 0,
        };
        // SAFETY: `attr` is the kernel's layout; the key and value buffers
        // have room for `count` entries (reserved above), the cursors are
        // live u64s, and the kernel writes nothing else.
        let errno = unsafe { bpf(BPF_MAP_LOOKUP_BATCH, &mut attr) }
            .err()
            .map(|e| e.raw_os_error().unwrap_or(0));
        match errno {
            // The copied entries count, the last ones (ENOENT: the end) too.
            None | Some(libc::ENOENT) => {
                let n = (attr.count as usize).min(chunk);
                // SAFETY: the kernel initialised the first `count` of each.
                out.extend((0..n).map(|i| unsafe {
                    (
                        keys.as_ptr().add(i).cast::<K>().read(),
                        values.as_ptr().add(i).cast::<V>().read(),
                    )
                }));
                if errno.is_some() {
                    return Ok(out);
                }
                cursor = next;
                first = false;
            }
            // One bucket holds more entries than asked for: ask for more.
            Some(libc::ENOSPC) if chunk < 1 << 20 => chunk *= 2,
            // Retry the same call; its partial copy is not used.
            Some(libc::EINTR | libc::EAGAIN | libc::EBUSY | libc::EDEADLK | libc::ETIMEDOUT)
                if retries < RETRIES =>
            {
                retries += 1;
            }
            Some(errno) => {
                if errno != libc::EINVAL && errno != ENOTSUPP && errno != libc::EOPNOTSUPP {
                    log::warn!("batch lookup failed (errno {errno}): reading entry by entry");
                }
                return Err(errno);
            }
        }
    }
}

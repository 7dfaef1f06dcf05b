//! Task local storage (`BPF_MAP_TYPE_TASK_STORAGE`, Linux 5.11+): per-thread
//! state found through the task itself and freed with it.
//!
//! aya-ebpf 0.2.1 declares the other local-storage maps (inode, socket,
//! cgroup) but not this one, so it is declared here the way aya-ebpf
//! declares those: a BTF map definition in `.maps`, whose field types carry
//! the map type, flags, key and value to the loader.

use core::{ffi::c_void, ptr};

use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, BPF_LOCAL_STORAGE_GET_F_CREATE, bpf_map_type},
    helpers::generated::{bpf_get_current_task_btf, bpf_task_storage_get},
};

/// A task local storage map of `T`, one per thread.
#[repr(C)]
pub struct TaskStorage<T> {
    r#type: *const [i32; bpf_map_type::BPF_MAP_TYPE_TASK_STORAGE as usize],
    key: *const i32,
    value: *const T,
    max_entries: *const [i32; 0],
    map_flags: *const [i32; BPF_F_NO_PREALLOC as usize],
}

// SAFETY: the fields are placeholders for the loader and are never
// dereferenced; the kernel serialises access to each task's value.
unsafe impl<T> Sync for TaskStorage<T> {}

impl<T> TaskStorage<T> {
    /// The placeholder definition the loader reads.
    pub const fn new() -> Self {
        Self {
            r#type: ptr::null(),
            key: ptr::null(),
            value: ptr::null(),
            max_entries: ptr::null(),
            map_flags: ptr::null(),
        }
    }

    /// The current thread's value, created zeroed when `create` is set and
    /// there is none yet; `None` when there is none (or the kernel could
    /// not allocate one, or refused a recursive use of the map).
    #[inline(always)]
    pub fn current(&self, create: bool) -> Option<&'static mut T> {
        let flags = if create {
            u64::from(BPF_LOCAL_STORAGE_GET_F_CREATE)
        } else {
            0
        };
        // SAFETY: the helper takes this map and the current task's BTF
        // pointer; it returns a pointer to the task's value or null.
        let value = unsafe {
            bpf_task_storage_get(
                ptr::from_ref(self).cast_mut().cast::<c_void>(),
                bpf_get_current_task_btf().cast(),
                ptr::null_mut(),
                flags,
            )
        }
        .cast::<T>();
        // SAFETY: non-null values point into the map for the task's life.
        unsafe { value.as_mut() }
    }
}

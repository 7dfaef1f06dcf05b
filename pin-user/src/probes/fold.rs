//! The fold of the probes' per-thread pending counts (full object only):
//! a thread's full get calls of one variant, call site and cgroup add up
//! in its own task storage, and reach the shared maps when it exits and
//! when the agent runs the task iterator `fold_tasks` here, before every
//! read of the maps ([`super::KernelMaps::fold_pending`]).
//! The probes defer calls only once `SETTING_DEFER` is 1, which the agent
//! sets when both the iterator and the exit watch are attached: without
//! either, deferred counts could be lost.
//!
//! Written against the `bpf(2)` commands rather than aya's `Iter`, whose
//! link makes one iterator and is consumed by it
//! (`IterLink::into_file(self)`), and whose program must be borrowed
//! mutably from the object to attach again: a fold must run at every
//! sample through the shared borrow the readers hold.

use std::{
    io::Read as _,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use aya::{Btf, Ebpf, programs::Iter};
use aya_obj::generated::{bpf_attach_type::BPF_TRACE_ITER, bpf_attr, bpf_cmd};

use super::programs::program;
use crate::kernel::short_error;

/// Attaches the task iterator that folds the per-thread pending counts
/// and then lets the probes defer calls (`SETTING_DEFER`): only with the
/// full object, and with the exit watch, without which an exiting
/// thread's pending counts would be lost.
pub(super) fn attach(
    ebpf: &mut Ebpf,
    facts: &crate::kernel::KernelFacts,
    exit_watch: &Result<(), String>,
) -> Result<PendingFold, String> {
    if facts.features.object() != crate::kernel::features::Object::Full {
        return Err("the baseline object has no pending counts".into());
    }
    if let Err(e) = exit_watch {
        return Err(format!("thread exits are not traced ({e})"));
    }
    sees_every_task()?;
    let btf =
        super::attach_ids::for_task_iterator(facts).ok_or("no kernel BTF for the task iterator")?;
    let fold = PendingFold::attach(ebpf, &btf)?;
    super::settings::set_setting(
        &mut super::KernelMapsMut::new(ebpf),
        pin_common::settings::SETTING_DEFER,
        1,
    )
    .map_err(|e| e.to_string())?;
    Ok(fold)
}

/// The iterator program's name in the object.
const PROGRAM: &str = "fold_tasks";

/// The attached task iterator.
#[derive(Debug)]
pub struct PendingFold {
    /// Its `bpf_link` (of type iter), from which each run's iterator is
    /// made.
    link: OwnedFd,
}

/// Whether the task iterator would walk every task on the host: it walks
/// those of the PID namespace of the process that makes it, so only from
/// the initial one (a container with the host's PID namespace, as the
/// DaemonSet asks, or none). From a child namespace the threads outside
/// it would have their pending counts folded only at a key change or
/// their exit: the probes then defer nothing.
pub(super) fn sees_every_task() -> Result<(), String> {
    match super::pid_namespace::child() {
        None => Ok(()),
        Some(ns) => Err(format!(
            "pinwatch runs in {ns}, where a task iterator sees only its tasks"
        )),
    }
}

/// Calls `bpf(cmd, attr)` and returns the new descriptor it gives.
fn bpf_fd(cmd: bpf_cmd, attr: &mut bpf_attr) -> std::io::Result<OwnedFd> {
    // SAFETY: `attr` is a zero-initialised `bpf_attr` with the fields the
    // command reads set; the kernel reads at most its size.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            std::ptr::from_mut(attr),
            std::mem::size_of::<bpf_attr>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a descriptor the kernel just gave this process.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

impl PendingFold {
    /// Loads the iterator over every task (`bpf_iter_task`, 5.8+) and
    /// attaches it; the reason when this kernel or object cannot.
    pub(super) fn attach(ebpf: &mut Ebpf, btf: &Btf) -> Result<Self, String> {
        let iter: &mut Iter = program(ebpf, PROGRAM)?;
        iter.load("task", btf).map_err(|e| short_error(&e))?;
        let prog = iter.fd().map_err(|e| short_error(&e))?;
        // SAFETY: plain data, zero is every field's "unset".
        let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
        attr.link_create.__bindgen_anon_1.prog_fd =
            std::os::fd::AsFd::as_fd(prog).as_raw_fd() as u32;
        attr.link_create.attach_type = BPF_TRACE_ITER as u32;
        let link = bpf_fd(bpf_cmd::BPF_LINK_CREATE, &mut attr)
            .map_err(|e| format!("bpf_link_create: {e}"))?;
        let fold = Self { link };
        // Once now, so that a kernel that attaches but cannot run it fails
        // here rather than at the first sample.
        fold.run()
            .map_err(|e| format!("running the task iterator: {e}"))?;
        Ok(fold)
    }

    /// Runs the iterator once over every task: a new iterator from the
    /// link, read to its end (the program writes nothing; one read walks
    /// all tasks).
    pub fn run(&self) -> std::io::Result<()> {
        // SAFETY: plain data, zero is every field's "unset".
        let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
        attr.iter_create.link_fd = self.link.as_raw_fd() as u32;
        let iterator = bpf_fd(bpf_cmd::BPF_ITER_CREATE, &mut attr)?;
        let mut file = std::fs::File::from(iterator);
        let mut sink = [0u8; 64];
        while file.read(&mut sink)? != 0 {}
        Ok(())
    }
}

//! Per-call records: the kernel's `EVENTS` ring buffer, switched on only by
//! the features that need one record per call (`validate`, `trace`),
//! decoded into [`CallRecord`]s.
//!
//! The aggregate counters never depend on this path: a full ring drops
//! events (counted as the health event `events_lost`), never counts.

use aya::maps::{MapData, RingBuf};
use pin_common::{
    CallEvent, EVENT_GUP, EVENTS_ON, EVENTS_TGID, EVENTS_TID, FUNCS, FuncId, LATENCY_UNMEASURED,
};
use serde::Serialize;

use crate::{
    figures::errno_name,
    kernel::foll::FollFlags,
    probes::{KernelMapError, KernelMapsMut},
};

/// Errors setting up per-call events.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    /// A map the events need is missing or not what they expect.
    #[error(transparent)]
    Open(#[from] KernelMapError),
    /// Writing a map failed.
    #[error("writing {map}: {source}")]
    Write {
        /// Map name.
        map: &'static str,
        /// The error.
        source: aya::maps::MapError,
    },
}

/// Which calls become per-call records.
#[derive(Clone, Copy, Debug, Default)]
pub struct EventFilter {
    /// Only this thread (0: any).
    pub tid: u32,
    /// Only this process (0: any).
    pub tgid: u32,
}

/// One outermost call as the kernel saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CallRecord {
    /// Entry time (ns, monotonic clock).
    pub start_ns: u64,
    /// Thread id.
    pub tid: u32,
    /// Process id.
    pub pid: u32,
    /// Thread name.
    pub comm: String,
    /// Outermost function (a variant, `__get_user_pages` for populate
    /// paths, or a release function).
    pub function: &'static str,
    /// Whether this is a release (unpin) call.
    pub release: bool,
    /// Start address (get/pin calls; `None` where BTF could not confirm
    /// the argument's position).
    pub addr: Option<u64>,
    /// `nr_pages` as passed, or pages released.
    pub nr_pages: i64,
    /// `gup_flags` as passed (`None` when unknown).
    pub flags: Option<u64>,
    /// The flags by name, without the `FOLL_` prefix.
    pub flag_names: Vec<String>,
    /// Return value (get/pin calls).
    pub ret: i64,
    /// Pages taken by the fast path.
    pub fast_pages: u64,
    /// Pages taken by the slow path.
    pub slow_pages: u64,
    /// Whether a fast call fell back to the slow path.
    pub fell_back: bool,
    /// Entry to return in nanoseconds (`None` for releases, traced at
    /// entry only).
    pub latency_ns: Option<u64>,
    /// Return address in the calling kernel function (0: unknown or
    /// attribution off).
    pub caller_addr: u64,
    /// That call site by name, once symbolized (`trace`).
    pub caller: Option<String>,
    /// The caller's cgroup v2 id (`pin_common::IRQ_CGROUP` for releases
    /// made in interrupt context).
    pub cgroup_id: u64,
    /// That cgroup's path and what it says (container, pod), once named
    /// (`trace`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<crate::cgroups::CgroupIdentity>,
}

impl CallRecord {
    /// Decodes a raw kernel event; `flags` names the `gup_flags` bits.
    pub fn decode(event: &CallEvent, flags: &FollFlags) -> Self {
        let known = |v: u64| (event.kind == EVENT_GUP && v != u64::MAX).then_some(v);
        let raw_flags = known(event.flags);
        Self {
            start_ns: event.start_ns,
            tid: event.pid_tgid as u32,
            pid: (event.pid_tgid >> 32) as u32,
            comm: crate::units::comm_text(&event.comm),
            function: function_name(event.func),
            release: event.kind != EVENT_GUP,
            addr: raw_flags.map(|_| event.addr),
            nr_pages: event.nr,
            flags: raw_flags,
            flag_names: raw_flags.map(|f| flags.decode(f)).unwrap_or_default(),
            ret: event.ret,
            fast_pages: event.fast_pages,
            slow_pages: event.slow_pages,
            fell_back: event.fell_back != 0,
            latency_ns: (event.latency_ns != LATENCY_UNMEASURED).then_some(event.latency_ns),
            caller_addr: event.caller,
            caller: None,
            cgroup_id: event.cgroup,
            cgroup: None,
        }
    }

    /// The return value as text: a count, or an errno name.
    pub fn ret_text(&self) -> String {
        if self.ret < 0 {
            format!("-{}", errno_name(self.ret.unsigned_abs() as usize))
        } else {
            self.ret.to_string()
        }
    }
}

fn function_name(id: FuncId) -> &'static str {
    FUNCS.get(id as usize).map_or("?", |f| f.name)
}

/// The open ring buffer plus what decoding needs.
pub struct EventStream {
    ring: RingBuf<MapData>,
    flags: FollFlags,
}

impl EventStream {
    /// Takes the `EVENTS` ring out of the loaded object and switches
    /// per-call events on for `filter`. Only for probes attached with
    /// `AttachOptions::events`: the others were verified without events.
    pub fn start(
        mut maps: KernelMapsMut<'_>,
        filter: EventFilter,
        flags: FollFlags,
    ) -> Result<Self, EventsError> {
        set_filter(&mut maps, Some(filter))?;
        let ring = maps.take_events()?;
        Ok(Self { ring, flags })
    }

    /// Every record the kernel has submitted so far.
    pub fn drain(&mut self) -> Vec<CallRecord> {
        let mut out = Vec::new();
        while let Some(item) = self.ring.next() {
            if item.len() < std::mem::size_of::<CallEvent>() {
                continue;
            }
            // SAFETY: the kernel writes whole CallEvents (repr(C), plain
            // integers); read_unaligned copes with the ring's 8-byte
            // alignment.
            let event = unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<CallEvent>()) };
            out.push(CallRecord::decode(&event, &self.flags));
        }
        out
    }

    /// The flag names used for decoding.
    pub fn flags(&self) -> &FollFlags {
        &self.flags
    }
}

/// Points the kernel-side event filter at `filter` (`None`: events off).
pub fn set_filter(
    maps: &mut KernelMapsMut<'_>,
    filter: Option<EventFilter>,
) -> Result<(), EventsError> {
    let mut array = maps.event_filter()?;
    let f = filter.unwrap_or_default();
    for (index, value) in [
        (EVENTS_TID, f.tid),
        (EVENTS_TGID, f.tgid),
        (EVENTS_ON, filter.is_some() as u32),
    ] {
        array
            .set(index, value, 0)
            .map_err(|source| EventsError::Write {
                map: pin_common::maps::EVENT_FILTER,
                source,
            })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_gup_event() {
        let mut comm = [0u8; 16];
        comm[..8].copy_from_slice(b"pinwatch");
        let event = CallEvent {
            start_ns: 5,
            latency_ns: 1200,
            pid_tgid: (42 << 32) | 43,
            addr: 0x7f00_0000_0000,
            nr: 16,
            flags: 0x10001,
            ret: 12,
            fast_pages: 4,
            slow_pages: 8,
            caller: 0,
            cgroup: 77,
            func: 6,
            kind: EVENT_GUP,
            fell_back: 1,
            _pad: 0,
            comm,
        };
        let rec = CallRecord::decode(&event, &FollFlags::pre_6_3());
        assert_eq!(rec.function, "pin_user_pages_fast");
        assert_eq!((rec.pid, rec.tid), (42, 43));
        assert_eq!(rec.comm, "pinwatch");
        assert_eq!(rec.flag_names, ["WRITE", "LONGTERM"]);
        assert_eq!(rec.addr, Some(0x7f00_0000_0000));
        assert!(rec.fell_back && !rec.release);
        assert_eq!(rec.ret_text(), "12");
        assert_eq!(rec.cgroup_id, 77);
    }

    #[test]
    fn unknown_arguments_and_errors_decode_plainly() {
        let event = CallEvent {
            flags: u64::MAX,
            ret: -14,
            func: 8,
            ..CallEvent::default()
        };
        let rec = CallRecord::decode(&event, &FollFlags::pre_6_3());
        assert_eq!((rec.addr, rec.flags), (None, None));
        assert_eq!(rec.ret_text(), "-EFAULT");
    }
}

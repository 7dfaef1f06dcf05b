//! Per-call events ([`pin_common::CallEvent`]) for the features that need
//! them (`validate`, `trace`): which calls the agent asked for
//! (`EVENT_FILTER`) and the ring they go through (`EVENTS`).

use pin_common::{CallEvent, EVENTS_ON, EVENTS_TGID, EVENTS_TID, Health};

use crate::{
    counters::bump_health,
    maps::{EVENT_FILTER, EVENTS},
};

/// Whether the current outermost call must also become a per-call event.
#[inline(always)]
pub(crate) fn event_wanted(pid_tgid: u64) -> bool {
    // Where the agent loaded the object without events, the verifier
    // drops the rest (and the event code) and no return looks it up.
    if !crate::settings::events_on() || !matches!(EVENT_FILTER.get(EVENTS_ON), Some(&1)) {
        return false;
    }
    let tid = EVENT_FILTER.get(EVENTS_TID).copied().unwrap_or(0);
    let tgid = EVENT_FILTER.get(EVENTS_TGID).copied().unwrap_or(0);
    (tid == 0 || tid == pid_tgid as u32) && (tgid == 0 || tgid == (pid_tgid >> 32) as u32)
}

/// Sends one per-call event, counting it as lost when the ring is full.
#[inline(always)]
pub(crate) fn emit(event: CallEvent) {
    match EVENTS.reserve::<CallEvent>(0) {
        Some(mut slot) => {
            slot.write(event);
            slot.submit(0);
        }
        None => bump_health(Health::EventsLost),
    }
}

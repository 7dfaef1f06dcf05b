//! The one sampling loop behind every command that shows intervals (`stat`,
//! `record`, `top`): a [`Source`] yields what the counters did since its
//! previous read — attached probes ([`ProbeSource`]: kernel maps ->
//! snapshots -> deltas) or reduced mode (`reduced::ReducedSource`)
//! — and [`drive`] takes one every interval until a stop signal, the
//! interval count, the duration, or the command's own end (a followed
//! command's exit, `q`), handing each to the command's [`Sink`].

use std::time::{Duration, Instant};

use crate::{
    probes::Probes,
    snapshot::{Delta, Snapshot},
};

/// Where intervals come from.
pub trait Source {
    /// What one interval holds.
    type Interval;

    /// Reads the counters and returns what changed since the previous read
    /// (the first read is made when the source is created).
    fn next(&mut self) -> anyhow::Result<Self::Interval>;

    /// What changed from the first read to the last.
    fn since_start(&self) -> Self::Interval;

    /// Time from the first read to the last.
    fn elapsed(&self) -> Duration;
}

/// What a command does with intervals and between them.
pub trait Sink<S: Source> {
    /// Waits until `until`, or less when the command ends first (then
    /// `Ok(true)`): the dashboard reads keys here, `record` watches its
    /// command. Returning early for a stop signal is enough; [`drive`]
    /// checks the signal itself.
    fn wait(&mut self, until: Instant) -> anyhow::Result<bool> {
        sleep_until_stopped(until);
        Ok(false)
    }

    /// Whether to take an interval now (the dashboard takes none while
    /// paused, so the next one covers the pause).
    fn wants_interval(&self) -> bool {
        true
    }

    /// Called once before the last read of an early end (e.g. to flush
    /// the kernel's batched counters so the last interval is exact).
    fn ending(&mut self) {}

    /// Takes one interval (`source` can be asked for more, e.g. state the
    /// interval's counters do not hold).
    fn take(&mut self, interval: S::Interval, source: &S) -> anyhow::Result<()>;
}

/// When to take intervals and when to stop.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    /// Time between reads.
    pub interval: Duration,
    /// Stop after this many intervals.
    pub count: Option<u64>,
    /// Stop this long after the start.
    pub duration: Option<Duration>,
    /// Whether a stop (signal, duration, the command's end) takes one last,
    /// shorter interval first (`stat` and `record` do, so nothing counted
    /// is lost; the dashboard does not).
    pub last_interval: bool,
}

/// Why [`drive`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// SIGINT, SIGTERM or SIGHUP.
    Signal,
    /// The interval count was reached.
    Count,
    /// The duration passed.
    Duration,
    /// The command ended itself (its followed command exited, `q`).
    Done,
}

/// Takes intervals from `source` into `sink` on `schedule` until something
/// ends it. An error reading the source ends it too (returned; what the
/// sink took before stays with it). A read that falls behind delays the
/// next rather than bunching reads to catch up.
pub fn drive<S: Source, K: Sink<S>>(
    source: &mut S,
    sink: &mut K,
    schedule: &Schedule,
) -> anyhow::Result<End> {
    let start = Instant::now();
    let deadline = schedule.duration.map(|d| start + d);
    let mut next_tick = start + schedule.interval;
    let mut taken = 0u64;
    loop {
        let done = sink.wait(deadline.map_or(next_tick, |d| d.min(next_tick)))?;
        let end = if done {
            Some(End::Done)
        } else if crate::signals::stop_requested() {
            Some(End::Signal)
        } else if deadline.is_some_and(|d| Instant::now() >= d) {
            Some(End::Duration)
        } else {
            None
        };
        let now = Instant::now();
        let due = now >= next_tick;
        if due {
            next_tick += schedule.interval;
            if next_tick <= now {
                next_tick = now + schedule.interval;
            }
        }
        if (due || (end.is_some() && schedule.last_interval)) && sink.wants_interval() {
            if end.is_some() {
                sink.ending();
            }
            let interval = source.next()?;
            sink.take(interval, source)?;
            taken += 1;
            if end.is_none() && schedule.count.is_some_and(|c| taken >= c) {
                return Ok(End::Count);
            }
        }
        if let Some(end) = end {
            return Ok(end);
        }
    }
}

/// Sleeps until `until` in short steps, waking early for a stop signal.
pub fn sleep_until_stopped(until: Instant) {
    while !crate::signals::stop_requested() {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(20)));
    }
}

/// Attached probes as a source of [`Delta`]s.
pub struct ProbeSource<'a> {
    probes: &'a mut Probes,
    first: Snapshot,
    previous: Snapshot,
    prune_followed: bool,
}

impl<'a> ProbeSource<'a> {
    /// Reads the maps once: intervals count from now.
    pub fn new(probes: &'a mut Probes) -> anyhow::Result<Self> {
        let first = Snapshot::read(probes.maps())?;
        Ok(Self {
            probes,
            previous: first.clone(),
            first,
            prune_followed: false,
        })
    }

    /// Drops exited processes from the followed tree after every read
    /// (`record` of a command).
    pub fn pruning_followed(mut self) -> Self {
        self.prune_followed = true;
        self
    }

    /// The probes read.
    pub fn probes(&self) -> &Probes {
        self.probes
    }
}

impl Source for ProbeSource<'_> {
    type Interval = Delta;

    fn next(&mut self) -> anyhow::Result<Delta> {
        let current = Snapshot::read(self.probes.maps())?;
        let delta = current.since(&self.previous).named();
        self.previous = current;
        if self.prune_followed {
            self.probes.prune_followed();
        }
        Ok(delta)
    }

    fn since_start(&self) -> Delta {
        self.previous.since(&self.first).named()
    }

    fn elapsed(&self) -> Duration {
        self.previous.taken.duration_since(self.first.taken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts reads; fails the `fail_at`th.
    struct Counting {
        reads: u64,
        fail_at: Option<u64>,
    }

    impl Counting {
        fn failing_at(fail_at: Option<u64>) -> Self {
            Self { reads: 0, fail_at }
        }
    }

    impl Keep {
        fn done_after(done_after: Option<usize>) -> Self {
            Self {
                taken: vec![],
                done_after,
                ended: false,
            }
        }
    }

    impl Source for Counting {
        type Interval = u64;
        fn next(&mut self) -> anyhow::Result<u64> {
            self.reads += 1;
            if self.fail_at == Some(self.reads) {
                anyhow::bail!("read {} failed", self.reads);
            }
            Ok(self.reads)
        }
        fn since_start(&self) -> u64 {
            self.reads
        }
        fn elapsed(&self) -> Duration {
            Duration::ZERO
        }
    }

    /// Keeps what it takes; says it is done after `done_after` intervals.
    struct Keep {
        taken: Vec<u64>,
        done_after: Option<usize>,
        ended: bool,
    }

    impl Sink<Counting> for Keep {
        fn wait(&mut self, until: Instant) -> anyhow::Result<bool> {
            if self.done_after.is_some_and(|n| self.taken.len() >= n) {
                return Ok(true);
            }
            sleep_until_stopped(until);
            Ok(false)
        }
        fn ending(&mut self) {
            self.ended = true;
        }
        fn take(&mut self, interval: u64, _: &Counting) -> anyhow::Result<()> {
            self.taken.push(interval);
            Ok(())
        }
    }

    fn schedule(count: Option<u64>, last_interval: bool) -> Schedule {
        Schedule {
            interval: Duration::from_millis(5),
            count,
            duration: None,
            last_interval,
        }
    }

    #[test]
    fn stops_after_the_count() {
        let mut source = Counting::failing_at(None);
        let mut sink = Keep::done_after(None);
        let end = drive(&mut source, &mut sink, &schedule(Some(3), true)).unwrap();
        assert_eq!((end, sink.taken), (End::Count, vec![1, 2, 3]));
        assert!(!sink.ended, "a count is not an early end");
    }

    #[test]
    fn the_commands_end_takes_a_last_interval_when_asked() {
        for (last_interval, want) in [(true, vec![1, 2, 3]), (false, vec![1, 2])] {
            let mut source = Counting::failing_at(None);
            let mut sink = Keep::done_after(Some(2));
            let end = drive(&mut source, &mut sink, &schedule(None, last_interval)).unwrap();
            assert_eq!((end, &sink.taken), (End::Done, &want));
            assert_eq!(sink.ended, last_interval);
        }
    }

    #[test]
    fn a_read_error_ends_and_keeps_what_came_before() {
        let mut source = Counting::failing_at(Some(3));
        let mut sink = Keep::done_after(None);
        let err = drive(&mut source, &mut sink, &schedule(None, true)).unwrap_err();
        assert_eq!(err.to_string(), "read 3 failed");
        assert_eq!(sink.taken, vec![1, 2]);
    }

    #[test]
    fn the_duration_ends_with_a_last_interval() {
        let mut source = Counting::failing_at(None);
        let mut sink = Keep::done_after(None);
        let schedule = Schedule {
            interval: Duration::from_secs(10),
            count: None,
            duration: Some(Duration::from_millis(30)),
            last_interval: true,
        };
        let start = Instant::now();
        let end = drive(&mut source, &mut sink, &schedule).unwrap();
        assert_eq!((end, sink.taken), (End::Duration, vec![1]));
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "not a whole interval"
        );
    }
}

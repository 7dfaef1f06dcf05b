//! How many entries the kernel tables that grow with the work may hold:
//! processes, cgroups, call sites and outstanding pins (`--max-procs`,
//! `--max-cgroups`, `--max-call-sites`, `--max-pins`). Each is fixed when
//! the maps are created; a full LRU table evicts its coldest entry, and
//! the probes count every eviction, so a size too small is visible
//! (`stat`'s `evicted:` line, `pinwatch_map_evicted_total`), never silent.

use pin_common::{CGROUPS_CAPACITY, PROCS_CAPACITY, attribution, maps};

/// Linux's `PID_MAX_LIMIT` on 64-bit: no host has more processes than
/// this, so a larger per-process table could never fill.
const MAX_PROCS: u32 = 1 << 22;

/// The ceiling of the other tables: 16 M entries is already 1.5 GiB or
/// more of kernel memory (values of 96 B and up); beyond it a typo, not a
/// host, is the likelier cause.
const MAX_ENTRIES: u32 = 1 << 24;

/// Where `--help` lists these flags.
const TABLE_SIZES: &str = "Kernel table sizes";

/// The capacity of each table sized by the user.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::Args)]
pub struct MapCapacities {
    /// Processes counted at once (`PROCS`), and the process rows `top`
    /// keeps; beyond it the least recently active is evicted and counted.
    #[arg(help_heading = TABLE_SIZES, long = "max-procs", value_name = "N", default_value_t = PROCS_CAPACITY,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_PROCS)))]
    pub procs: u32,
    /// Cgroups counted at once (`CGROUPS`), and the cgroup rows `top`
    /// keeps.
    #[arg(help_heading = TABLE_SIZES, long = "max-cgroups", value_name = "N", default_value_t = CGROUPS_CAPACITY,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_ENTRIES)))]
    pub cgroups: u32,
    /// Kernel call sites counted at once (`CALLERS`).
    #[arg(help_heading = TABLE_SIZES, long = "max-call-sites", value_name = "N", default_value_t = attribution::CALLERS_CAPACITY,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_ENTRIES)))]
    pub call_sites: u32,
    /// Outstanding pinned folios timed at once with --lifetimes
    /// (`PIN_LIFETIMES`, preallocated: kernel memory from the start).
    #[arg(help_heading = TABLE_SIZES, long = "max-pins", value_name = "N", default_value_t = attribution::LIFETIMES_CAPACITY,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_ENTRIES)))]
    pub pins: u32,
}

impl Default for MapCapacities {
    fn default() -> Self {
        Self {
            procs: PROCS_CAPACITY,
            cgroups: CGROUPS_CAPACITY,
            call_sites: attribution::CALLERS_CAPACITY,
            pins: attribution::LIFETIMES_CAPACITY,
        }
    }
}

impl MapCapacities {
    /// The `max_entries` of each table these capacities size, by map
    /// name, for the features on: a table no feature fills gets one entry
    /// (a map cannot have none), so it costs next to nothing.
    pub fn max_entries(&self, callers: bool, lifetimes: bool) -> [(&'static str, u32); 4] {
        [
            (maps::PROCS, self.procs),
            (maps::CGROUPS, self.cgroups),
            (maps::CALLERS, capacity_if(callers, self.call_sites)),
            (maps::PIN_LIFETIMES, capacity_if(lifetimes, self.pins)),
        ]
    }
}

/// The capacity of a map only one feature fills: `capacity` when the
/// feature is on, one entry otherwise. `PIN_LIFETIMES` (`--lifetimes`)
/// preallocates its entries; `TRACKED` (`record -- CMD`) does not, but its
/// hash buckets are allocated at creation (1 MiB at full capacity).
pub fn capacity_if(on: bool, capacity: u32) -> u32 {
    if on { capacity } else { 1 }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        capacities: MapCapacities,
    }

    fn parse(args: &[&str]) -> Result<MapCapacities, String> {
        Cli::try_parse_from(std::iter::once("pinwatch").chain(args.iter().copied()))
            .map(|cli| cli.capacities)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn no_flags_give_the_defaults() {
        assert_eq!(parse(&[]).unwrap(), MapCapacities::default());
    }

    #[test]
    fn flags_set_each_table() {
        let sizes = parse(&[
            "--max-procs",
            "100000",
            "--max-cgroups",
            "5",
            "--max-call-sites",
            "7",
            "--max-pins",
            "9",
        ])
        .unwrap();
        assert_eq!(
            sizes.max_entries(true, true),
            [
                (maps::PROCS, 100_000),
                (maps::CGROUPS, 5),
                (maps::CALLERS, 7),
                (maps::PIN_LIFETIMES, 9)
            ]
        );
    }

    #[test]
    fn tables_of_features_off_get_one_entry() {
        let sizes = MapCapacities::default().max_entries(false, false);
        assert_eq!(sizes[2], (maps::CALLERS, 1));
        assert_eq!(sizes[3], (maps::PIN_LIFETIMES, 1));
        assert_eq!(sizes[0], (maps::PROCS, PROCS_CAPACITY));
    }

    #[test]
    fn zero_and_absurd_sizes_are_refused() {
        for args in [
            ["--max-procs", "0"],
            ["--max-procs", "4194305"],
            ["--max-call-sites=-1", ""],
            ["--max-pins", "99999999999"],
        ] {
            let args: Vec<&str> = args.into_iter().filter(|a| !a.is_empty()).collect();
            let err = parse(&args).unwrap_err();
            let flag = args[0].split('=').next().unwrap();
            assert!(err.contains(flag), "{args:?}: {err}");
        }
        assert_eq!(parse(&["--max-procs", "4194304"]).unwrap().procs, 1 << 22);
    }
}

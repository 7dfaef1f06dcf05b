//! pinwatch's kernel memory: what each BPF map it holds costs, as the
//! kernel charges it (`memlock` in the map's `/proc/self/fdinfo` entry,
//! the figure `bpftool map show` prints as `memlock`).
//!
//! The fdinfo text is parsed here by hand: `procfs` reads a descriptor's
//! target and flags but not the per-type lines the kernel adds for BPF
//! objects.

use serde::Serialize;

/// One BPF map pinwatch holds and the kernel memory it is charged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MapFootprint {
    /// The map's name (as the kernel keeps it: at most 15 characters).
    pub name: String,
    /// Its capacity.
    pub max_entries: u32,
    /// Bytes the kernel charges for it.
    pub bytes: u64,
}

/// What the kernel says of one map in an fdinfo entry.
#[derive(Debug, PartialEq, Eq)]
struct FdinfoMap {
    id: u32,
    max_entries: u32,
    memlock: u64,
}

/// The map lines of an fdinfo entry; `None` for a descriptor that is not
/// a BPF map.
fn parse_fdinfo(text: &str) -> Option<FdinfoMap> {
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
    };
    Some(FdinfoMap {
        id: field("map_id")?.parse().ok()?,
        max_entries: field("max_entries")?.parse().ok()?,
        memlock: field("memlock")?.parse().ok()?,
    })
}

/// Every BPF map this process holds, largest first. A map held through
/// several descriptors counts once. Read while pinwatch is still root
/// (attach): a process that dropped privileges or runs with file
/// capabilities is not dumpable, and its /proc/self is root's to read.
pub fn map_footprints() -> std::io::Result<Vec<MapFootprint>> {
    let mut seen = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir("/proc/self/fdinfo")? {
        let entry = entry?;
        // A descriptor closed meanwhile (or the directory's own) is skipped.
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        let Some(map) = parse_fdinfo(&text) else {
            continue;
        };
        let fd = entry.file_name().to_str().and_then(|n| n.parse().ok());
        seen.entry(map.id).or_insert((map, fd));
    }
    let mut maps: Vec<MapFootprint> = seen
        .into_values()
        .map(|(map, fd)| MapFootprint {
            name: fd
                .and_then(name_of)
                .unwrap_or_else(|| format!("map {}", map.id)),
            max_entries: map.max_entries,
            bytes: map.memlock,
        })
        .collect();
    maps.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.name.cmp(&b.name)));
    Ok(maps)
}

/// The name of the map open as descriptor `fd`, asked of the descriptor
/// itself (`BPF_OBJ_GET_INFO_BY_FD` needs no privilege, unlike opening a
/// map by its id).
fn name_of(fd: i32) -> Option<String> {
    use std::os::fd::BorrowedFd;
    // SAFETY: `fd` is open in this process (it was just listed), and is
    // only borrowed long enough to duplicate it.
    let owned = unsafe { BorrowedFd::borrow_raw(fd) }
        .try_clone_to_owned()
        .ok()?;
    let map = aya::maps::MapData::from_fd(owned).ok()?;
    Some(map.info().ok()?.name_as_str()?.to_string())
}

/// Whether a kernel's `memlock` figures are its rough estimate rather
/// than what its maps use: from 5.11 (maps charged to memory cgroups, no
/// longer to RLIMIT_MEMLOCK) until 6.4 (each map type's own
/// `map_mem_usage`), fdinfo shows keys plus values times capacity, without
/// per-CPU copies, element headers or ring buffer pages.
pub fn estimated_by_kernel(version: (u32, u32)) -> bool {
    ((5, 11)..(6, 4)).contains(&version)
}

/// The kernel memory of `maps` together.
pub fn total_bytes(maps: &[MapFootprint]) -> u64 {
    maps.iter().map(|m| m.bytes).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_map_entry_is_read_and_other_descriptors_are_not() {
        // /proc/PID/fdinfo of a map on 6.12 (from `pinwatch stat` in the VM).
        let map = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1055\nmap_type:\t9\n\
                   key_size:\t24\nvalue_size:\t72\nmax_entries:\t512\nmap_flags:\t0x0\n\
                   map_extra:\t0x0\nmemlock:\t82880\nmap_id:\t21\nfrozen:\t0\n";
        assert_eq!(
            parse_fdinfo(map),
            Some(FdinfoMap {
                id: 21,
                max_entries: 512,
                memlock: 82880
            })
        );
        let file = "pos:\t0\nflags:\t0100000\nmnt_id:\t24\nino:\t4026\n";
        assert_eq!(parse_fdinfo(file), None);
        // A program's entry has memlock too, but no map_id.
        let prog = "pos:\t0\nflags:\t02000002\nprog_type:\t26\nprog_jited:\t1\n\
                    memlock:\t4096\nprog_id:\t40\n";
        assert_eq!(parse_fdinfo(prog), None);
    }

    #[test]
    fn kernels_between_5_11_and_6_4_only_estimate() {
        assert!(!estimated_by_kernel((5, 10)));
        assert!(estimated_by_kernel((5, 11)));
        assert!(estimated_by_kernel((6, 1)));
        assert!(!estimated_by_kernel((6, 4)));
        assert!(!estimated_by_kernel((6, 12)));
    }

    #[test]
    fn this_process_without_maps_holds_none() {
        assert_eq!(map_footprints().unwrap(), vec![]);
    }
}

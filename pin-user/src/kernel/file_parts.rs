//! Reading a file whole in parts at once, for the kernel's BTF in sysfs
//! ([`super::btf`]), which hands it out a page per read.

/// At most this many parts of the BTF file are read at once: each part
/// costs a thread and a descriptor, and four parts on two vCPUs (28-47 ms)
/// did no better than two (27-35 ms).
pub(crate) const MOST_READ_PARTS: usize = 4;

/// Reads the file at `path` whole, in `parts` parts, each on a thread of
/// its own with a descriptor of its own (positioned reads).
///
/// Why: sysfs hands out a binary attribute such as the kernel's BTF at
/// most a page per read(2) (kernfs), each page copied twice, under a lock
/// of the open file: the 4.7 MB of 6.12's BTF are about 1 150 system
/// calls. Under TCG (2 vCPUs, one boot) the read took 49-85 ms whole,
/// 27-35 ms in two parts, beside a parse of 40-50 ms, while the other CPU
/// idled. A file whose size is not known (0, as procfs reports) is read
/// the plain way, and so is one where a part could not be read.
pub(crate) fn read_in_parts(path: &str, parts: usize) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt as _;
    const PAGE: usize = 4096;
    let file = std::fs::File::open(path)?;
    let len = usize::try_from(file.metadata()?.len()).unwrap_or(0);
    if len == 0 || parts <= 1 {
        return std::fs::read(path);
    }
    let part = len.div_ceil(parts).next_multiple_of(PAGE);
    let mut data = vec![0u8; len];
    let all_read = std::thread::scope(|scope| {
        let mut chunks = data.chunks_mut(part).enumerate();
        // The first part on this thread, with the descriptor opened above.
        let first = chunks.next();
        let others: Vec<_> = chunks
            .map(|(i, chunk)| {
                std::thread::Builder::new()
                    .name("btf-read".into())
                    .spawn_scoped(scope, move || {
                        std::fs::File::open(path)?.read_exact_at(chunk, (i * part) as u64)
                    })
            })
            .collect();
        let mut read = match first {
            Some((_, chunk)) => file.read_exact_at(chunk, 0),
            None => Ok(()),
        };
        for other in others {
            let outcome = match other {
                Ok(thread) => thread
                    .join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("a BTF reader panicked"))),
                Err(e) => Err(e),
            };
            read = read.and(outcome);
        }
        read
    });
    match all_read {
        Ok(()) => Ok(data),
        // A part unread (no thread to be had, a short file): the plain way.
        Err(e) => {
            log::debug!("{path} not read in parts ({e}): reading it whole");
            std::fs::read(path)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Read in parts, a file comes out as read whole: any number of
    /// parts, sizes off a page boundary and shorter than the parts.
    #[test]
    fn a_file_read_in_parts_is_the_file() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        for len in [1usize, 4095, 4096, 4097, 3 * 4096 + 17, 100_003] {
            let path = dir.path().join(format!("f{len}"));
            let bytes: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            std::fs::write(&path, &bytes).expect("write the file");
            let path = path.to_str().expect("a UTF-8 path");
            for parts in [1, 2, 3, 8] {
                let read = read_in_parts(path, parts).expect("read in parts");
                assert!(read == bytes, "{len} bytes in {parts} parts");
            }
        }
        assert!(read_in_parts("/nonexistent/btf", 2).is_err());
    }
}

//! Property tests: the record reader and the command-line parser take
//! arbitrary input without panicking. Each returns a value or an error;
//! nothing else is acceptable.

use std::collections::BTreeMap;

use clap::Parser as _;
use pinwatch::{
    cli::Cli,
    export::record::{Counts, Interval, Meta, Record, SCHEMA, VariantTotals},
};
use proptest::prelude::*;

/// A valid recording's JSON, to mutate.
fn valid_json() -> Vec<u8> {
    let counts = Counts {
        totals: BTreeMap::from([(
            "pin_user_pages_fast".to_string(),
            VariantTotals {
                calls: 10,
                pages_requested: 40,
                pages_pinned: 40,
                ..Default::default()
            },
        )]),
        ..Default::default()
    };
    let record = Record {
        schema: SCHEMA.into(),
        meta: Meta {
            kernel: "6.12".into(),
            hostname: "h".into(),
            started: "2026-11-22T00:00:00Z".into(),
            duration_s: 1.0,
            interval_s: 1.0,
            attach: BTreeMap::from([("pin_user_pages_fast".into(), "fentry".into())]),
            command: Some(vec!["fio".into()]),
            exit_status: Some(0),
            reduced: None,
        },
        counts: counts.clone(),
        intervals: vec![Interval {
            t_s: 0.0,
            duration_s: 1.0,
            counts,
        }],
    };
    serde_json::to_vec_pretty(&record).unwrap()
}

/// Reads `bytes` as a recording file.
fn read(bytes: &[u8]) -> Result<Record, String> {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), bytes).unwrap();
    Record::read(file.path()).map_err(|e| e.to_string())
}

/// Words the parser knows, so generated command lines reach deep.
const WORDS: &[&str] = &[
    "top",
    "stat",
    "record",
    "serve",
    "trace",
    "probes",
    "validate",
    "diff",
    "workload",
    "--interval",
    "--count",
    "--duration",
    "--pid",
    "--comm",
    "--variant",
    "--json",
    "--reduced",
    "--attach",
    "fentry",
    "kprobe",
    "auto",
    "--listen",
    "--format",
    "csv",
    "-o",
    "--",
    "--threshold",
    "5%",
    "1s",
    "0",
    "-1",
    "10ms",
    "futex-wake",
    "--pages",
    "--lifetimes",
    "--no-callers",
    "--scenario",
    "--list",
    "--help",
    "--version",
];

fn arg() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::sample::select(WORDS).prop_map(str::to_string),
        1 => any::<String>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn reader_takes_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = read(&bytes);
    }

    #[test]
    fn reader_takes_truncated_recordings(cut in 0usize..10_000) {
        let json = valid_json();
        let cut = cut % (json.len() + 1);
        let result = read(&json[..cut]);
        // Only the whole document is a recording.
        prop_assert_eq!(result.is_ok(), cut == json.len() || json[cut..].iter().all(u8::is_ascii_whitespace));
    }

    #[test]
    fn reader_takes_corrupted_recordings(edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
        let mut json = valid_json();
        let len = json.len();
        for (at, byte) in edits {
            json[at % len] = byte;
        }
        let _ = read(&json);
    }

    #[test]
    fn parser_takes_arbitrary_command_lines(args in proptest::collection::vec(arg(), 0..8)) {
        let _ = Cli::try_parse_from(std::iter::once("pinwatch".to_string()).chain(args));
    }
}

#[test]
fn the_unmodified_recording_reads() {
    read(&valid_json()).unwrap();
}

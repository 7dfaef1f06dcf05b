//! The setcap path the README documents: a copy of pinwatch given
//! CAP_BPF, CAP_PERFMON and CAP_SYSLOG as file capabilities (`setcap
//! cap_bpf,cap_perfmon,cap_syslog+ep`), run by a regular user, attaches,
//! sheds what it no longer needs without changing users (it has no
//! CAP_SETUID), counts a known workload exactly and names its call sites;
//! `probes` works the same way. The guest's `/` may be a ramfs without
//! xattrs, so the copy lives on a tmpfs of its own.

use std::{
    ffi::CString,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    os::unix::{ffi::OsStrExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc::Receiver,
    time::{Duration, Instant},
};

use crate::harness::{harness, pinwatch_bin};
use crate::processes::{lines_of, wait_within};

/// Where the capable copy lives: a tmpfs mounted for the test.
const DIR: &str = "/tmp/setcap-test";
/// The regular user (and group) that runs the copy.
const USER: u32 = 1000;

const CAP_SYSLOG: u64 = 1 << 34;
const CAP_PERFMON: u64 = 1 << 38;
const CAP_BPF: u64 = 1 << 39;

/// `security.capability` for `caps` (bit numbers as a mask), permitted and
/// effective: struct vfs_cap_data, revision 2 (VFS_CAP_REVISION_2 |
/// VFS_CAP_FLAGS_EFFECTIVE, then permitted and inheritable words for
/// capabilities 0-31 and 32-63), little endian.
fn vfs_cap_data(caps: u64) -> Vec<u8> {
    [0x0200_0001, caps as u32, 0, (caps >> 32) as u32, 0]
        .iter()
        .flat_map(|word: &u32| word.to_le_bytes())
        .collect()
}

fn c_path(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).expect("a path without NUL")
}

/// The tmpfs at [`DIR`], unmounted when dropped (lazily: a process that
/// still runs from it keeps it until it exits).
struct Mount;

impl Mount {
    fn new() -> Self {
        std::fs::create_dir_all(DIR).unwrap();
        let dir = c_path(Path::new(DIR));
        // SAFETY: mount(2) with NUL-terminated strings that outlive it.
        let rc = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                dir.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                c"mode=0755".as_ptr().cast(),
            )
        };
        assert_eq!(
            rc,
            0,
            "mounting a tmpfs at {DIR}: {}",
            std::io::Error::last_os_error()
        );
        Self
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let dir = c_path(Path::new(DIR));
        // SAFETY: umount2(2) with a NUL-terminated path.
        unsafe { libc::umount2(dir.as_ptr(), libc::MNT_DETACH) };
    }
}

/// The pinwatch binary under test as a path (`PINWATCH_BIN` may name one
/// on PATH).
fn pinwatch_path() -> PathBuf {
    let bin = PathBuf::from(pinwatch_bin());
    if bin.components().count() > 1 {
        return bin;
    }
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join(&bin))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{} not found on PATH", bin.display()))
}

/// Copies pinwatch onto the tmpfs and gives the copy `caps` as file
/// capabilities, as `setcap ...+ep` would (the guest has no setcap).
fn capable_copy(caps: u64) -> PathBuf {
    let copy = Path::new(DIR).join("pinwatch");
    std::fs::copy(pinwatch_path(), &copy).expect("copying pinwatch onto the tmpfs");
    std::fs::set_permissions(&copy, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    // Set after the copy is written and closed: a write clears it.
    let value = vfs_cap_data(caps);
    let path = c_path(&copy);
    // SAFETY: setxattr(2) with NUL-terminated strings and a buffer of
    // value.len() bytes, all outliving the call.
    let rc = unsafe {
        libc::setxattr(
            path.as_ptr(),
            c"security.capability".as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        rc,
        0,
        "setting security.capability on {} (tmpfs): {}: this kernel's tmpfs does not take file \
         capabilities (CONFIG_TMPFS_XATTR?), so the setcap path cannot be tested here",
        copy.display(),
        std::io::Error::last_os_error()
    );
    let mut back = [0u8; 32];
    // SAFETY: getxattr(2) into a buffer of back.len() bytes.
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            c"security.capability".as_ptr(),
            back.as_mut_ptr().cast(),
            back.len(),
        )
    };
    assert_eq!(
        usize::try_from(n).ok().map(|n| &back[..n]),
        Some(value.as_slice()),
        "security.capability on {} reads back differently",
        copy.display()
    );
    copy
}

/// `copy ARGS` as uid and gid [`USER`] (std clears the supplementary
/// groups when it changes the uid), logging at its default level.
fn as_user(copy: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(copy);
    cmd.args(args)
        .uid(USER)
        .gid(USER)
        .current_dir(DIR)
        .env_remove("RUST_LOG");
    cmd
}

/// (Uid line, CapPrm, CapEff, NoNewPrivs) of a running process.
fn credentials(pid: u32) -> (String, u64, u64, String) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    let mask = |name: &str| u64::from_str_radix(&field(name), 16).unwrap();
    (
        field("Uid:"),
        mask("CapPrm:"),
        mask("CapEff:"),
        field("NoNewPrivs:"),
    )
}

/// Every line `rx` gives until its writer closes.
fn rest(rx: &Receiver<String>, mut seen: Vec<String>) -> Vec<String> {
    seen.extend(rx.iter());
    seen
}

#[test]
fn setcap_binary_works_for_a_regular_user() {
    let h = harness();
    let attach = h.attach_arg();
    let _mount = Mount::new();
    let copy = capable_copy(CAP_BPF | CAP_PERFMON | CAP_SYSLOG);
    // Measured (Debian 6.1 auto, 6.12 kprobe): perf_event_open refuses a
    // kprobe to a regular user holding CAP_PERFMON (EACCES), so where a
    // function needs kprobes the setcap route cannot trace it. pinwatch must
    // say so (untraced functions, or reduced mode), exit 0, and not abort.
    // The release hook's kprobe counting a release function (6.12's
    // `unpin_user_folio` beside kprobe_multi links) is not such a need:
    // without /proc/kcore, which only root reads, that function is not
    // found to be a jump to the hook and is traced like the others.
    let counted_at_hook = h.probes.release_at_hook.as_ref().ok().copied();
    if h.probes.status.iter().any(|st| {
        st.attached == Some(pinwatch::probes::Mechanism::Kprobe)
            && Some(st.function) != counted_at_hook
    }) {
        let out = as_user(
            &copy,
            &["stat", "--json", "--count", "1", "--attach", &attach],
        )
        .output()
        .expect("run stat as a regular user");
        let stderr = String::from_utf8_lossy(&out.stderr);
        eprintln!(
            "FAULT|{}|{attach}|stat as uid {USER} with file capabilities, kprobes needed|exit {:?}; {}",
            h.release,
            out.status.code(),
            stderr.lines().next().unwrap_or("")
        );
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        assert!(
            stderr.contains("untraced") || stderr.contains("reduced mode"),
            "the refused kprobes must be named: {stderr}"
        );
        return;
    }

    // Ready (buffers set up) before pinwatch starts, so that its 30
    // pin_user_pages_remote calls take milliseconds once told to go: well
    // inside the two intervals.
    let mut workload = Command::new(pinwatch_bin())
        .args([
            "workload",
            "process-vm-writev",
            "--calls",
            "30",
            "--pages",
            "8",
        ])
        .args(["--json", "--wait-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn pinwatch workload");
    let mut report = BufReader::new(workload.stdout.take().expect("stdout"));
    let mut line = String::new();
    report.read_line(&mut line).expect("ready line");
    assert!(line.contains("\"ready\""), "workload not ready: {line:?}");

    let baseline = crate::robustness::objects::BpfObjects::now();
    let mut stat = as_user(
        &copy,
        &[
            "stat",
            "--json",
            "--count",
            "2",
            "--interval",
            "1s",
            "--attach",
            &attach,
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap_or_else(|e| panic!("spawn {} as uid {USER}: {e}", copy.display()));
    let mut stdout = stat.stdout.take().expect("stdout");
    let stdout = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let stderr = lines_of(stat.stderr.take().expect("stderr"));
    // This line comes once privileges are shed and counting started.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = Vec::new();
    loop {
        match stderr.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                let started = line.starts_with("pinwatch: kernel") && line.contains("attached");
                seen.push(line);
                if started {
                    break;
                }
            }
            Err(e) => {
                let _ = stat.kill();
                panic!("stat as uid {USER} did not start ({e}); stderr: {seen:?}");
            }
        }
    }
    let (uid, permitted, effective, no_new_privs) = credentials(stat.id());

    workload
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"go\n")
        .expect("start workload");
    line.clear();
    report.read_line(&mut line).expect("report line");
    assert!(workload.wait().expect("wait workload").success());
    let outlasted = stat.try_wait().expect("try_wait").is_some();

    let status = wait_within(&mut stat, Duration::from_secs(60), "stat as a regular user");
    // Without CAP_SYS_ADMIN nothing is pinned on stop: a child keeps the
    // links until stat has gone, then detaches them; all of them go.
    let left = crate::robustness::objects::settle(&baseline);
    let stdout = stdout.join().expect("stdout reader");
    let stderr = rest(&stderr, seen);
    let views: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("JSON line {l:?}: {e}")))
        .collect();
    let calls: u64 = views
        .iter()
        .flat_map(|v| v["variants"].as_array().cloned().unwrap_or_default())
        .filter(|v| v["variant"] == "pin_user_pages_remote")
        .filter_map(|v| v["calls"].as_u64())
        .sum();
    // Call sites are still named: CAP_SYSLOG was kept for kallsyms.
    let named_callers = views
        .iter()
        .flat_map(|v| v["callers"].as_array().cloned().unwrap_or_default())
        .filter(|c| c["variant"] == "pin_user_pages_remote")
        .filter_map(|c| c["caller"].as_str().map(str::to_string))
        .any(|name| name.starts_with("process_vm"));
    eprintln!(
        "FAULT|{}|{attach}|privileges after attaching (stat, setcap binary run by uid {USER})|\
         Uid {uid}; CapPrm {permitted:#x}; CapEff {effective:#x}; NoNewPrivs {no_new_privs}; \
         exit {:?}; counted {calls}/30 calls; call sites named: {named_callers}; \
         {left:?} objects left after",
        h.release,
        status.code()
    );
    assert!(status.success(), "stat exited {status}; stderr: {stderr:?}");
    assert_eq!(left, (0, 0, 0), "stat as uid {USER} left objects");
    assert!(
        !outlasted,
        "the workload outlasted stat's two intervals: counts are not comparable"
    );
    assert_eq!(views.len(), 2, "two JSON lines: {stdout}");
    // Where the release hook is a kprobe (beside kprobe_multi links), the
    // user is refused it as any kprobe (above), and pinwatch must say so.
    let hook_on_kprobe = h.probes.release_hook == Ok(pinwatch::probes::Mechanism::Kprobe);
    let hook_refused = format!("{} not traced (kprobe:", h.probes.release_hook_symbol);
    let (refused, errors): (Vec<&String>, Vec<&String>) = stderr
        .iter()
        .filter(|l| l.to_lowercase().contains("error"))
        .partition(|l| hook_on_kprobe && l.contains(&hook_refused));
    assert!(errors.is_empty(), "errors on stderr: {errors:?}");
    assert_eq!(
        !refused.is_empty(),
        hook_on_kprobe,
        "the release hook's kprobe refused: {stderr:?}"
    );
    // Still the user (no CAP_SETUID to be anyone else), holding at most
    // CAP_SYSLOG for call-site names and CAP_BPF where map reads need it.
    let id = USER.to_string();
    assert_eq!(
        uid.split_whitespace().collect::<Vec<_>>(),
        [id.as_str(); 4],
        "Uid {uid}"
    );
    assert_eq!(effective, permitted, "nothing left to raise again");
    assert_eq!(
        effective & !(CAP_SYSLOG | CAP_BPF),
        0,
        "CapEff {effective:#x}: CAP_PERFMON (or more) kept"
    );
    assert_eq!(effective & CAP_SYSLOG, CAP_SYSLOG, "CapEff {effective:#x}");
    assert_eq!(no_new_privs, "1");
    assert_eq!(calls, 30, "{stdout}");
    assert!(named_callers, "{stdout}");

    let out = as_user(&copy, &["probes", "--json", "--attach", &attach])
        .output()
        .expect("run probes as a regular user");
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!(
        "FAULT|{}|{attach}|probes (setcap binary run by uid {USER})|exit {:?}",
        h.release,
        out.status.code()
    );
    assert!(
        out.status.success(),
        "probes exited {}: {}{text}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let probes: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("probes JSON {text:?}: {e}"));
    assert!(probes["error"].is_null(), "{text}");
    assert!(probes["self_check"]["Ok"].is_string(), "{text}");
}

//! `pinwatch top` in a real terminal: tmux inside the VM runs the
//! dashboard, a workload runs beside it, and the captured screen must show
//! live, non-zero numbers for the variant the workload drives. `q` must end
//! it.

use std::{
    process::Command,
    thread::sleep,
    time::{Duration, Instant},
};

use crate::harness::{harness, pinwatch_bin};

/// One tmux server of its own (`tmux -L SOCKET`) holding the session `pw`.
///
/// Each test and each iteration gets a fresh socket: when the last session
/// of a server ends, the server exits asynchronously, and a `new-session`
/// on the same socket in that window fails with "server exited
/// unexpectedly" (seen once on debian-6.1 between the two signals below).
struct Tmux {
    socket: String,
}

impl Tmux {
    /// Starts `cmd` in a detached 100x30 session on the socket `socket`.
    fn start(socket: &str, cmd: &str) -> Tmux {
        let tmux = Tmux {
            socket: socket.to_string(),
        };
        let (ok, _) = tmux.run(&[
            "new-session",
            "-d",
            "-s",
            "pw",
            "-x",
            "100",
            "-y",
            "30",
            cmd,
        ]);
        assert!(ok, "tmux new-session failed");
        tmux
    }

    fn run(&self, args: &[&str]) -> (bool, String) {
        // tmux refuses to start without a UTF-8 locale (the image carries C.utf8).
        let out = Command::new("tmux")
            .env("LC_ALL", "C.UTF-8")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run tmux");
        if !out.status.success() {
            eprintln!(
                "tmux -L {} {args:?}: {}",
                self.socket,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "pw"]).1
    }

    fn alive(&self) -> bool {
        // Quiet probe: a missing server is the expected answer at the end.
        Command::new("tmux")
            .env("LC_ALL", "C.UTF-8")
            .args(["-L", &self.socket, "has-session", "-t", "pw"])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    fn wait_for(&self, what: &str, timeout: Duration, ok: impl Fn(&str) -> bool) -> String {
        let started = Instant::now();
        loop {
            let s = self.screen();
            if ok(&s) {
                return s;
            }
            assert!(
                started.elapsed() < timeout,
                "timed out waiting for {what}; screen:\n{s}"
            );
            sleep(Duration::from_millis(300));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        if self.alive() {
            let _ = Command::new("tmux")
                .args(["-L", &self.socket, "kill-server"])
                .output();
        }
    }
}

/// The calls/s cell of `variant`'s row, if the row is on screen.
fn calls_per_s(screen: &str, variant: &str) -> Option<f64> {
    let line = screen.lines().find(|l| {
        l.trim_start_matches('│')
            .starts_with(&format!("{variant} "))
    })?;
    line.trim_start_matches('│')
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[test]
fn top_shows_live_numbers_in_a_terminal() {
    let h = harness();
    let bin = pinwatch_bin();
    let attach = h.attach_arg();
    let cmd = format!("TERM=screen {bin} top --interval 1s --attach {attach}");
    let tmux = Tmux::start("pw-live", &cmd);
    tmux.wait_for("the dashboard", Duration::from_secs(60), |s| {
        s.contains("GUP variants")
    });
    // Keep pinning for several intervals so a refresh (and a screen
    // capture, slow under a loaded TCG guest) lands inside the run: 4000
    // calls took 1.5 s, too close to one 1 s interval.
    let workload = Command::new(&bin)
        .args([
            "workload",
            "process-vm-readv",
            "--calls",
            "20000",
            "--pages",
            "16",
        ])
        .spawn()
        .expect("workload");
    let shown = tmux.wait_for(
        "pin_user_pages_remote with a non-zero rate",
        Duration::from_secs(60),
        |s| calls_per_s(s, "pin_user_pages_remote").is_some_and(|c| c > 0.0),
    );
    let status = workload.wait_with_output().expect("workload").status;
    assert!(status.success());
    eprintln!("SCREEN kernel={} attach={attach}\n{shown}", h.release);
    assert!(shown.contains("pinwatch"), "header");
    assert!(shown.contains("processes"), "processes panel");
    tmux.run(&["send-keys", "-t", "pw", "q"]);
    let started = Instant::now();
    while tmux.alive() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "q did not quit:\n{}",
            tmux.screen()
        );
        sleep(Duration::from_millis(200));
    }
}

/// The pid of the running `pinwatch top`.
fn top_pid() -> Option<i32> {
    procfs::process::all_processes()
        .ok()?
        .flatten()
        .find(|p| {
            p.cmdline()
                .is_ok_and(|c| c.len() > 1 && c[0].ends_with("pinwatch") && c[1] == "top")
        })
        .map(|p| p.pid)
}

#[test]
fn signals_end_top_and_restore_the_terminal() {
    let h = harness();
    let bin = pinwatch_bin();
    let attach = h.attach_arg();
    for (sig, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGHUP, "SIGHUP")] {
        // After top ends, the shell reports its status and the terminal's
        // line discipline: cooked mode (icanon, echo) means it was restored.
        let cmd = format!(
            "TERM=screen {bin} top --interval 1s --attach {attach}; echo EXIT=$?; \
             stty -a | tr ' ' '\\n' | grep -x -e icanon -e -icanon -e echo -e -echo | tr '\\n' ' '; \
             echo; sleep 600"
        );
        let tmux = Tmux::start(&format!("pw-{name}"), &cmd);
        tmux.wait_for("the dashboard", Duration::from_secs(60), |s| {
            s.contains("GUP variants")
        });
        let pid = top_pid().expect("pinwatch top is running");
        // SAFETY: signalling a process this test started.
        unsafe { libc::kill(pid, sig) };
        let shown = tmux.wait_for("the shell after top", Duration::from_secs(30), |s| {
            s.contains("EXIT=") && s.contains("icanon")
        });
        let tail: Vec<&str> = shown
            .lines()
            .filter(|l| l.starts_with("EXIT=") || l.contains("icanon"))
            .collect();
        eprintln!(
            "\nFAULT|{}|{attach}|{name} to top (in tmux)|{}",
            h.release,
            tail.join("; ")
        );
        drop(tmux);
        assert!(shown.contains("EXIT=0"), "{shown}");
        assert!(
            tail.iter()
                .any(|l| l.split_whitespace().any(|w| w == "icanon"))
                && tail
                    .iter()
                    .any(|l| l.split_whitespace().any(|w| w == "echo")),
            "terminal left raw: {shown}"
        );
        // The alternate screen is gone: the dashboard is not on screen.
        assert!(!shown.contains("GUP variants"), "{shown}");
    }
}

//! Helpers shared by `cli.rs` and `stopping.rs`: a pinwatch child whose
//! output is read as it comes and whose every wait is bounded (a hung
//! pinwatch fails its test, killed, instead of hanging the run), the bounds
//! themselves, and a reduced `serve` on loopback to scrape.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc::{self, Receiver, RecvTimeoutError},
    time::{Duration, Instant},
};

/// How long any pinwatch run here may take before it counts as hung. Each
/// needs well under a second (a debug build, two loaded cores: a few);
/// far below any CI timeout.
pub const HANG: Duration = Duration::from_secs(60);

/// How soon pinwatch must exit after a stop signal once it is ready to
/// count it. In reduced mode a stop costs one /proc scan and one line of
/// output (milliseconds); start-up before it (argument parsing, kernel
/// discovery: kallsyms and BTF, tens of milliseconds) can run to a few
/// seconds on two cores shared with a build, a debug binary. 15 s is far
/// beyond that and far below the 1 h interval the tests run with, so an
/// exit within it can only come from the signal.
pub const STOP_BOUND: Duration = Duration::from_secs(15);

/// A running pinwatch whose output is read as it comes, so a full pipe
/// cannot stall it; killed when dropped if still running (a failed
/// assertion leaves no process behind).
pub struct Pinwatch {
    child: Child,
    /// Open until dropped: a command waiting on stdin waits.
    _stdin: std::process::ChildStdin,
    stdout: Receiver<String>,
    stderr: Receiver<String>,
    /// Lines of stdout already taken by [`Pinwatch::wait_for_stdout`].
    seen_stdout: Vec<String>,
    /// Lines of stderr already taken by [`Pinwatch::wait_for_stderr`].
    seen_stderr: Vec<String>,
}

/// What a finished pinwatch left.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Reads `stream` line by line on a thread of its own.
fn lines_of(stream: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// All lines until the stream ends, waiting at most until `deadline` (a
/// process the command left behind may hold it open).
fn drain(rx: &Receiver<String>, deadline: Instant, what: &str) -> String {
    let mut text = String::new();
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                text.push_str(&line);
                text.push('\n');
            }
            Err(RecvTimeoutError::Disconnected) => return text,
            Err(RecvTimeoutError::Timeout) => panic!("{what}: output still open; got {text:?}"),
        }
    }
}

/// Waits up to `within` for a line containing `text` from `rx`, keeping
/// what came before in `seen`; returns the line.
fn wait_for_line(
    rx: &Receiver<String>,
    seen: &mut Vec<String>,
    text: &str,
    within: Duration,
) -> String {
    let deadline = Instant::now() + within;
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                seen.push(line.clone());
                if line.contains(text) {
                    return line;
                }
            }
            Err(e) => panic!("no line with {text:?} within {within:?} ({e}); got {seen:?}"),
        }
    }
}

impl Pinwatch {
    /// Starts `cmd` (pinwatch) with its stdin and output piped.
    pub fn start(cmd: &mut Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start pinwatch");
        let stdout = lines_of(child.stdout.take().expect("stdout"));
        let stderr = lines_of(child.stderr.take().expect("stderr"));
        Self {
            _stdin: child.stdin.take().expect("stdin"),
            child,
            stdout,
            stderr,
            seen_stdout: Vec::new(),
            seen_stderr: Vec::new(),
        }
    }

    /// Starts `pinwatch ARGS`.
    pub fn run(args: &[&str]) -> Self {
        Self::start(Command::new(env!("CARGO_BIN_EXE_pinwatch")).args(args))
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends `sig`.
    pub fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child, not yet reaped.
        assert_eq!(unsafe { libc::kill(self.pid(), sig) }, 0);
    }

    /// Whether it is still running.
    #[allow(dead_code)] // Not used by `cli.rs`.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// Waits up to `within` for a stderr line containing `text`; returns it.
    pub fn wait_for_stderr(&mut self, text: &str, within: Duration) -> String {
        wait_for_line(&self.stderr, &mut self.seen_stderr, text, within)
    }

    /// Waits up to `within` for a stdout line containing `text`; returns it.
    #[allow(dead_code)] // Not used by `cli.rs`.
    pub fn wait_for_stdout(&mut self, text: &str, within: Duration) -> String {
        wait_for_line(&self.stdout, &mut self.seen_stdout, text, within)
    }

    /// Waits up to `within` for the exit, then for the output to end; a
    /// pinwatch still running then is killed and the test fails.
    pub fn finish(&mut self, within: Duration, what: &str) -> Finished {
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("{what}: still running after {within:?}; killed");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let output_deadline = Instant::now() + Duration::from_secs(10);
        let earlier = |seen: &[String]| seen.iter().map(|l| format!("{l}\n")).collect::<String>();
        let stdout = earlier(&self.seen_stdout) + &drain(&self.stdout, output_deadline, what);
        let stderr = earlier(&self.seen_stderr) + &drain(&self.stderr, output_deadline, what);
        Finished {
            status,
            stdout,
            stderr,
        }
    }
}

impl Drop for Pinwatch {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `pinwatch ARGS` to the end (bounded by [`HANG`]).
pub fn run_to_end(args: &[&str]) -> Finished {
    Pinwatch::run(args).finish(HANG, &format!("pinwatch {args:?}"))
}

/// Starts `pinwatch serve --reduced` on a free loopback port; returns it
/// and the address.
pub fn start_reduced_serve(cmd: &mut Command) -> (Pinwatch, String) {
    cmd.args(["serve", "--reduced", "--listen", "127.0.0.1:0"]);
    let mut serve = Pinwatch::start(cmd);
    let line = serve.wait_for_stderr("serving metrics at", HANG);
    let addr = line
        .trim()
        .strip_prefix("pinwatch: serving metrics at http://")
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("serve says where it listens: {line}"))
        .to_string();
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    (serve, addr)
}

/// One HTTP/1.0 GET of /metrics, answered within `within`; returns the
/// whole response.
pub fn scrape(addr: &str, within: Duration) -> String {
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    let mut conn = std::net::TcpStream::connect_timeout(&addr, within).expect("connect");
    conn.set_read_timeout(Some(within)).unwrap();
    conn.set_write_timeout(Some(within)).unwrap();
    conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response)
        .expect("a response in time");
    response
}

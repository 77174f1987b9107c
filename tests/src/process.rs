//! A child process guard with captured output.

use std::io::{self, BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

/// Lines printed when a guard is dropped during a panic.
const DUMP_LINES: usize = 200;

/// The lines one output stream of a [`Process`] has produced so far, shared
/// with the thread that reads them. Cloning shares the same buffer.
///
/// Lines are kept whole, without their `\n`, decoded as lossy UTF-8, in
/// the order they were written. The buffer only grows; it is closed when the
/// stream reaches end of file (the process exited or closed it).
#[derive(Debug, Clone, Default)]
pub struct Lines {
    shared: Arc<(Mutex<Buffer>, Condvar)>,
}

#[derive(Debug, Default)]
struct Buffer {
    lines: Vec<String>,
    closed: bool,
}

impl Lines {
    fn buffer(&self) -> MutexGuard<'_, Buffer> {
        // A panic while holding this lock leaves a valid Vec behind.
        self.shared.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, line: String) {
        self.buffer().lines.push(line);
        self.shared.1.notify_all();
    }

    fn close(&self) {
        self.buffer().closed = true;
        self.shared.1.notify_all();
    }

    /// A copy of every line so far.
    pub fn snapshot(&self) -> Vec<String> {
        self.buffer().lines.clone()
    }

    /// Whether the stream has reached end of file (no more lines will come).
    pub fn is_closed(&self) -> bool {
        self.buffer().closed
    }

    /// Blocks until a line (one already captured or a later one) matches
    /// `pred`, and returns the first such line; `None` when `deadline`
    /// passes or the stream closes without a match.
    pub fn wait_for(
        &self,
        deadline: Instant,
        mut pred: impl FnMut(&str) -> bool,
    ) -> Option<String> {
        let mut seen = 0;
        let mut buf = self.buffer();
        loop {
            if let Some(line) = buf.lines[seen..].iter().find(|l| pred(l)) {
                return Some(line.clone());
            }
            seen = buf.lines.len();
            let now = Instant::now();
            if buf.closed || now >= deadline {
                return None;
            }
            buf = self
                .shared
                .1
                .wait_timeout(buf, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// A running child process that is killed when the guard is dropped.
///
/// Its stdout and stderr are piped and read by two threads into [`Lines`]
/// buffers; stdin is closed. When the guard is dropped while the thread is
/// panicking (a failing test), the last 200 stderr lines are printed to
/// stderr prefixed by the label, so the failure shows what the process saw.
#[derive(Debug)]
pub struct Process {
    label: String,
    child: Child,
    stdout: Lines,
    stderr: Lines,
    status: Option<ExitStatus>,
}

impl Process {
    /// Spawns `cmd` with piped stdout and stderr and a null stdin; `label`
    /// names it in failure dumps (e.g. the node name).
    ///
    /// # Errors
    /// The spawn error (binary missing, not executable, ...).
    pub fn spawn(label: impl Into<String>, mut cmd: Command) -> io::Result<Process> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn()?;
        let stdout = Lines::default();
        let stderr = Lines::default();
        if let Some(out) = child.stdout.take() {
            read_lines(out, stdout.clone());
        }
        if let Some(err) = child.stderr.take() {
            read_lines(err, stderr.clone());
        }
        Ok(Process {
            label: label.into(),
            child,
            stdout,
            stderr,
            status: None,
        })
    }

    /// The label given at spawn.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The captured stdout.
    pub fn stdout(&self) -> &Lines {
        &self.stdout
    }

    /// The captured stderr (where `tracing` logs go).
    pub fn stderr(&self) -> &Lines {
        &self.stderr
    }

    /// The exit status if the process has exited (does not block).
    ///
    /// # Errors
    /// The `waitpid` error.
    pub fn try_status(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self.child.try_wait()?;
        }
        Ok(self.status)
    }

    /// Waits until the process exits or `deadline` passes; `None` means it
    /// is still running (it is not killed: drop the guard or call
    /// [`Process::kill`]). Once it exited, waits (up to `deadline`) for its
    /// output streams to be read to their end, so the [`Lines`] are complete.
    ///
    /// # Errors
    /// The `waitpid` error.
    pub fn wait_exit(&mut self, deadline: Instant) -> io::Result<Option<ExitStatus>> {
        let mut error = None;
        crate::wait_until(deadline, || match self.try_status() {
            Ok(s) => s.is_some(),
            Err(e) => {
                error = Some(e);
                true
            }
        });
        if let Some(e) = error {
            return Err(e);
        }
        if self.status.is_some() {
            for lines in [&self.stdout, &self.stderr] {
                lines.wait_for(deadline, |_| false);
            }
        }
        Ok(self.status)
    }

    /// Kills the process (SIGKILL) and reaps it; a no-op once it exited.
    ///
    /// # Errors
    /// The kill or `waitpid` error.
    pub fn kill(&mut self) -> io::Result<ExitStatus> {
        if let Some(s) = self.try_status()? {
            return Ok(s);
        }
        self.child.kill()?;
        let s = self.child.wait()?;
        self.status = Some(s);
        Ok(s)
    }

    /// Sends SIGTERM (a graceful stop) without waiting for the exit; a no-op
    /// once the process has exited.
    ///
    /// # Errors
    /// Running the `kill` utility failed, or it reported an error.
    #[cfg(unix)]
    pub fn terminate(&mut self) -> io::Result<()> {
        if self.try_status()?.is_some() {
            return Ok(());
        }
        // `kill(2)` through libc needs `unsafe`, which the workspace denies;
        // the `kill` utility does the same.
        let pid = self.child.id();
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!("kill -TERM {pid}: {status}")))
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // The reader threads end by themselves at end of file; they are
        // not joined, so a grandchild holding a pipe cannot hang the test.
        let _ = self.kill();
        if std::thread::panicking() {
            let lines = self.stderr.snapshot();
            let skip = lines.len().saturating_sub(DUMP_LINES);
            eprintln!(
                "---- {} (status {:?}): last {} of {} stderr lines",
                self.label,
                self.status,
                lines.len() - skip,
                lines.len()
            );
            for l in &lines[skip..] {
                eprintln!("[{}] {l}", self.label);
            }
        }
    }
}

/// Reads `stream` line by line into `lines` on a thread; closes `lines` at
/// end of file or on a read error.
fn read_lines(stream: impl Read + Send + 'static, lines: Lines) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if buf.last() == Some(&b'\n') {
                        buf.pop();
                    }
                    lines.push(String::from_utf8_lossy(&buf).into_owned());
                }
            }
        }
        lines.close();
    });
}

#[cfg(all(test, unix))]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use super::*;

    fn sh(script: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(script);
        cmd
    }

    #[test]
    fn captures_both_streams_and_the_exit_status() {
        let mut p =
            Process::spawn("sh", sh("echo out; echo err1 >&2; echo err2 >&2; exit 3")).unwrap();
        let status = p
            .wait_exit(Instant::now() + Duration::from_secs(10))
            .unwrap();
        assert_eq!(status.and_then(|s| s.code()), Some(3));
        assert_eq!(p.stdout().snapshot(), ["out"]);
        assert_eq!(p.stderr().snapshot(), ["err1", "err2"]);
        assert!(p.stderr().is_closed());
    }

    #[test]
    fn waits_for_a_later_line_and_kills_on_drop() {
        let p = Process::spawn(
            "sh",
            sh("echo a >&2; sleep 0.2; echo ready >&2; exec sleep 60"),
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        assert_eq!(
            p.stderr().wait_for(deadline, |l| l == "ready").as_deref(),
            Some("ready")
        );
        let lines = p.stderr().clone();
        let start = Instant::now();
        drop(p);
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "drop must kill, not wait"
        );
        lines.wait_for(Instant::now() + Duration::from_secs(10), |_| false);
        assert!(
            lines.is_closed(),
            "the killed child's stderr reaches end of file"
        );
    }

    #[test]
    fn wait_for_gives_up_at_the_deadline_or_at_end_of_file() {
        let mut p = Process::spawn("sh", sh("echo only >&2; exec sleep 60")).unwrap();
        let start = Instant::now();
        assert_eq!(
            p.stderr()
                .wait_for(start + Duration::from_millis(100), |l| l == "never"),
            None
        );
        assert!(start.elapsed() >= Duration::from_millis(100));
        assert!(p.wait_exit(Instant::now()).unwrap().is_none());
        p.terminate().unwrap();
        assert_eq!(
            p.stderr()
                .wait_for(Instant::now() + Duration::from_secs(10), |l| l == "never"),
            None
        );
        assert!(p.stderr().is_closed());
    }
}

//! Log lines: `time level node target: message`, one per event, to stderr;
//! colours on a terminal; `RUST_LOG` respected (default `info`).

use std::cell::Cell;
use std::fmt;
use std::io::{IsTerminal, Write};
use std::marker::PhantomData;
use std::sync::{Mutex, MutexGuard, PoisonError};

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

struct NodeFormat {
    node: String,
}

impl<S, N> FormatEvent<S, N> for NodeFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        SystemTime.format_time(&mut w)?;
        let level = *event.metadata().level();
        if w.has_ansi_escapes() {
            let colour = match level {
                Level::ERROR => "31",
                Level::WARN => "33",
                Level::INFO => "32",
                Level::DEBUG => "34",
                Level::TRACE => "35",
            };
            write!(
                w,
                " \x1b[{colour}m{level:>5}\x1b[0m \x1b[1m{}\x1b[0m ",
                self.node
            )?;
        } else {
            write!(w, " {level:>5} {} ", self.node)?;
        }
        write!(w, "{}: ", event.metadata().target())?;
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

/// Standard error that never fails: when the reader of our stderr went
/// away (a closed pipe: `node-cli | head`, or `run-local.sh`'s labellers
/// killed by Ctrl-C), a log line is lost instead of the node. tracing's
/// fmt layer reports a failed write with `eprintln!`, which panics on a
/// closed pipe, so the node would die before its graceful leave.
///
/// Each line is written at once (one `write` per line), except on a
/// thread inside [`bulk`]: its lines are kept in memory and written
/// together, in order, when the guard drops, when they pass
/// [`BULK_BYTES`], or when any thread logs outside a bulk (its line goes
/// out after them, so the order of lines stays the order of events).
struct Stderr;

/// Lines kept by [`bulk`] guards, not yet written. Empty while no guard
/// lives.
static PENDING: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// Bytes of log lines a bulk keeps before it writes them (64 KiB: about
/// 800 result lines).
const BULK_BYTES: usize = 64 * 1024;

thread_local! {
    /// Whether this thread is inside a [`bulk`].
    static IN_BULK: Cell<bool> = const { Cell::new(false) };
}

fn pending() -> MutexGuard<'static, Vec<u8>> {
    PENDING.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether `kept` bytes of lines are written now.
fn must_write(kept: usize, in_bulk: bool) -> bool {
    !in_bulk || kept >= BULK_BYTES
}

fn write_out(lines: &mut Vec<u8>) {
    let _ = std::io::stderr().write_all(lines);
    lines.clear();
}

impl std::io::Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut lines = pending();
        if lines.is_empty() && !IN_BULK.get() {
            let _ = std::io::stderr().write_all(buf);
            return Ok(buf.len());
        }
        lines.extend_from_slice(buf);
        if must_write(lines.len(), IN_BULK.get()) {
            write_out(&mut lines);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        write_out(&mut pending());
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

/// While the returned guard lives, this thread's log lines are written
/// in groups (one `write` call per 64 KiB instead of one per line: the
/// workload logs one line per task). Dropping the guard writes what is
/// left, also when a panic unwinds through it. Not for code that awaits:
/// the guard cannot be sent to another thread, and lines kept across an
/// await would reach the log late.
#[must_use = "lines are grouped only while the guard lives"]
pub fn bulk() -> Bulk {
    IN_BULK.set(true);
    Bulk(PhantomData)
}

/// See [`bulk`].
pub struct Bulk(PhantomData<*const ()>);

impl Drop for Bulk {
    fn drop(&mut self) {
        IN_BULK.set(false);
        write_out(&mut pending());
    }
}

/// Installs the subscriber for node `node`. Call once, early.
pub fn init(node: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| Stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .event_format(NodeFormat {
            node: node.to_owned(),
        })
        .try_init();
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_bulk_keeps_its_lines_until_another_line_or_its_end() {
        let guard = bulk();
        Stderr.write_all(b"bulk line 1 (test output)\n").unwrap();
        Stderr.write_all(b"bulk line 2 (test output)\n").unwrap();
        assert_eq!(pending().len(), 52, "both lines kept, in order");
        // A line from a thread outside any bulk writes the kept ones first.
        std::thread::spawn(|| Stderr.write_all(b"plain line (test output)\n").unwrap())
            .join()
            .unwrap();
        assert!(pending().is_empty());
        Stderr.write_all(b"bulk line 3 (test output)\n").unwrap();
        assert!(!pending().is_empty());
        drop(guard);
        assert!(pending().is_empty(), "the end of the bulk writes the rest");
        assert!(!IN_BULK.get());
        // Past the size limit, a bulk writes what it kept.
        assert!(!must_write(BULK_BYTES - 1, true));
        assert!(must_write(BULK_BYTES, true));
        assert!(must_write(1, false));
    }
}

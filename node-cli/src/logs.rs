//! Log lines: `time level node target: message`, one per event, to stderr;
//! colours on a terminal; `RUST_LOG` respected (default `info`).

use std::cell::{Cell, RefCell};
use std::fmt::{self, Write as _};
use std::io::IsTerminal;
use std::marker::PhantomData;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
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
        write_time(
            &mut w,
            std::time::SystemTime::now().duration_since(UNIX_EPOCH).ok(),
        )?;
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
        if !write_message_only(&mut w, event)? {
            ctx.field_format().format_fields(w.by_ref(), event)?;
        }
        writeln!(w)
    }
}

thread_local! {
    /// The time stamp's text up to its minute (`2026-12-06T12:07:`) and
    /// the minute it is for (seconds since the Unix epoch / 60).
    static MINUTE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    /// An event's message as formatted, before it is escaped.
    static MESSAGE: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Writes `since_epoch` (UTC) as tracing-subscriber's `SystemTime` does
/// (RFC 3339, microseconds: `2026-12-06T12:07:37.123456Z`), the date part
/// formatted once per minute (per thread): the full formatting was about
/// 2,400 instructions per line, a tenth of a node's work per task beside
/// the hash (`BENCHMARKS.md`, session 12). A clock before 1970 writes
/// `1970-01-01T00:00:00.000000Z`.
fn write_time(w: &mut impl fmt::Write, since_epoch: Option<Duration>) -> fmt::Result {
    let since_epoch = since_epoch.unwrap_or_default();
    let secs = since_epoch.as_secs();
    let minute = secs / 60;
    let micros = since_epoch.subsec_micros();
    let second = secs % 60;
    MINUTE.with(|cached| {
        let Ok(mut cached) = cached.try_borrow_mut() else {
            // Formatting a time while formatting one: no cache.
            return write!(w, "{}{second:02}.{micros:06}Z", minute_prefix(minute));
        };
        if cached.0 != minute {
            cached.1 = minute_prefix(minute);
            cached.0 = minute;
        }
        write!(w, "{}{second:02}.{micros:06}Z", cached.1)
    })
}

/// `YYYY-MM-DDTHH:MM:` of the minute `minute` (minutes since the Unix
/// epoch, UTC).
fn minute_prefix(minute: u64) -> String {
    let days = minute / (24 * 60);
    let (hour, min) = ((minute / 60) % 24, minute % 60);
    let (year, month, day) = civil_from_days(days);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{min:02}:")
}

/// The proleptic Gregorian date `(year, month 1-12, day 1-31)` of `days`
/// days after 1970-01-01: Howard Hinnant's `civil_from_days`, "chrono-
/// Compatible Low-Level Date Algorithms" (2013), in unsigned arithmetic
/// (dates from 1970 on).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Days since 0000-03-01, the start of a 400-year era.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // Months from March: 0 = March, ..., 11 = February.
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Writes the event's fields if its only field is its message (the
/// workload's per-task lines), as tracing-subscriber's default field
/// format would, with the same escaping of terminal control characters,
/// in one pass over the formatted text instead of a write per character;
/// false (nothing written) for any other event.
fn write_message_only(w: &mut Writer<'_>, event: &Event<'_>) -> Result<bool, fmt::Error> {
    let fields = event.metadata().fields();
    if fields.len() != 1 || fields.field("message").is_none() {
        return Ok(false);
    }
    MESSAGE.with(|buf| {
        let Ok(mut buf) = buf.try_borrow_mut() else {
            return Ok(false);
        };
        buf.clear();
        let mut visitor = MessageVisitor {
            buf: &mut buf,
            result: Ok(()),
        };
        event.record(&mut visitor);
        visitor.result?;
        if w.sanitizes_ansi_escapes() {
            write_escaped(w, &buf)?;
        } else {
            w.write_str(&buf)?;
        }
        Ok(true)
    })
}

/// Collects an event's message as text.
struct MessageVisitor<'a> {
    buf: &'a mut String,
    result: fmt::Result,
}

impl Visit for MessageVisitor<'_> {
    fn record_debug(&mut self, _field: &Field, value: &dyn fmt::Debug) {
        self.result = write!(self.buf, "{value:?}");
    }
}

/// Writes `text` with the terminal control characters tracing-subscriber
/// escapes in messages (ESC, BEL, BS, FF, DEL as `\x..`; C1 controls
/// U+0080-U+009F as `\u{..}`) escaped the same way, and the rest as it
/// is.
fn write_escaped(w: &mut impl fmt::Write, text: &str) -> fmt::Result {
    // C1 controls are 0xC2 0x80-0x9F in UTF-8: a text with any 0xC2 byte
    // (U+0080-U+00BF) takes the careful path.
    let clean = !text
        .bytes()
        .any(|b| matches!(b, 0x1b | 0x07 | 0x08 | 0x0c | 0x7f | 0xc2));
    if clean {
        return w.write_str(text);
    }
    for ch in text.chars() {
        match ch {
            '\x1b' | '\x07' | '\x08' | '\x0c' | '\x7f' => write!(w, "\\x{:02x}", u32::from(ch))?,
            '\u{80}'..='\u{9f}' => write!(w, "\\u{{{:x}}}", u32::from(ch))?,
            _ => w.write_char(ch)?,
        }
    }
    Ok(())
}

/// Standard error that never fails and never holds the node: when the
/// reader of our stderr went away (a closed pipe: `node-cli | head`, or
/// `run-local.sh`'s labellers killed by Ctrl-C), a log line is lost
/// instead of the node (tracing's fmt layer reports a failed write with
/// `eprintln!`, which panics on a closed pipe, so the node would die
/// before its graceful leave); when the reader stops reading (a paused
/// pager, Ctrl-S on a terminal, a stalled pipe), only the log's own
/// thread waits.
///
/// A line goes to [`SINK`], a buffer of at most [`QUEUE_BYTES`], which
/// the `casty-log` thread writes out, in order, as fast as standard error
/// takes it. A line that finds the buffer full is dropped and counted;
/// the count is logged (`log lines dropped`) once writing resumes. Before
/// session 15 each line was written by the thread that logged it: a
/// tester who paused the reader of one node's stderr for 15 s froze that
/// node's runtime (its membership probes unanswered), and the others
/// declared it dead 3 s into the pause.
///
/// On a thread inside [`bulk`] lines are added without waking the writer
/// until they pass [`BULK_BYTES`] or the guard drops, so a batch of result
/// lines goes out in few writes.
struct Stderr;

/// Bytes of log lines waiting for the writer at most (4 MiB: about 50,000
/// lines); past it lines are dropped and counted. A line outside a
/// [`bulk`] (lifecycle events, warnings, the Final Report) may use
/// [`RESERVE_BYTES`] more, so a flood of result lines does not drop them.
const QUEUE_BYTES: usize = 4 << 20;

/// Room beyond [`QUEUE_BYTES`] kept for lines outside a bulk (256 KiB).
const RESERVE_BYTES: usize = 256 * 1024;

/// Bytes of log lines a bulk adds before it wakes the writer (64 KiB:
/// about 800 result lines).
const BULK_BYTES: usize = 64 * 1024;

thread_local! {
    /// Whether this thread is inside a [`bulk`].
    static IN_BULK: Cell<bool> = const { Cell::new(false) };
}

/// Lines on their way out: appended by any thread, written by one.
struct Sink {
    state: Mutex<SinkState>,
    /// The writer waits here for lines.
    ready: Condvar,
    /// [`Sink::drain`] waits here for the writer to finish.
    idle: Condvar,
}

#[derive(Default)]
struct SinkState {
    bytes: Vec<u8>,
    /// Lines dropped since the writer last took the count.
    dropped: u64,
    /// Lines dropped in all (for tests and the final count).
    dropped_total: u64,
    /// The writer holds a batch it has not finished writing.
    writing: bool,
}

/// The node's log lines; see [`Stderr`].
static SINK: Sink = Sink::new();

/// Whether the `casty-log` thread runs; until it does (or if it could not
/// start) lines are written by the thread that logs them.
static WRITER: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl Sink {
    const fn new() -> Sink {
        Sink {
            state: Mutex::new(SinkState {
                bytes: Vec::new(),
                dropped: 0,
                dropped_total: 0,
                writing: false,
            }),
            ready: Condvar::new(),
            idle: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, SinkState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds one line (or a part of one) unless the buffer is full; wakes
    /// the writer unless `in_bulk` and the bulk is still small. Whether it
    /// woke the writer.
    fn push(&self, line: &[u8], in_bulk: bool) -> bool {
        let wake = {
            let mut s = self.lock();
            let limit = if in_bulk {
                QUEUE_BYTES
            } else {
                QUEUE_BYTES + RESERVE_BYTES
            };
            if s.bytes.len() + line.len() > limit {
                s.dropped += 1;
                s.dropped_total += 1;
                return false;
            }
            s.bytes.extend_from_slice(line);
            !in_bulk || s.bytes.len() >= BULK_BYTES
        };
        if wake {
            self.ready.notify_one();
        }
        wake
    }

    /// The writer's loop: writes every batch to `out` in order; after a
    /// batch that followed drops, calls `dropped(count)`. Returns never.
    fn run(&self, out: &mut dyn std::io::Write, dropped: &dyn Fn(u64)) {
        let mut batch = Vec::new();
        loop {
            let lost = {
                let mut s = self.lock();
                s.writing = false;
                if s.bytes.is_empty() {
                    self.idle.notify_all();
                }
                while s.bytes.is_empty() && s.dropped == 0 {
                    s = self.ready.wait(s).unwrap_or_else(PoisonError::into_inner);
                }
                std::mem::swap(&mut s.bytes, &mut batch);
                s.writing = true;
                std::mem::take(&mut s.dropped)
            };
            write_patiently(out, &batch);
            batch.clear();
            // A burst past the bulk size is not kept allocated.
            if batch.capacity() > 4 * BULK_BYTES {
                batch = Vec::new();
            }
            if lost > 0 {
                dropped(lost);
            }
        }
    }

    /// Wakes the writer and waits until it wrote everything added so far,
    /// at most `timeout`. Whether it did.
    fn drain(&self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let mut s = self.lock();
        self.ready.notify_one();
        while !s.bytes.is_empty() || s.writing {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            s = self
                .idle
                .wait_timeout(s, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }
}

/// Writes all of `bytes` to `out`, waiting out a full non-blocking
/// output (`EAGAIN`: a stderr inherited with `O_NONBLOCK` set) and
/// interruptions, so no line is cut or lost there; gives up on any other
/// error (a closed pipe: nobody reads any more).
fn write_patiently(out: &mut dyn std::io::Write, mut bytes: &[u8]) {
    use std::io::ErrorKind;
    while !bytes.is_empty() {
        match out.write(bytes) {
            Ok(0) => return,
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(_) => return,
        }
    }
    let _ = out.flush();
}

impl std::io::Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if WRITER.load(std::sync::atomic::Ordering::Acquire) {
            let _ = SINK.push(buf, IN_BULK.get());
        } else {
            let _ = std::io::stderr().write_all(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes out every line logged so far, waiting at most `timeout` (a
/// reader that stopped reading must not hold the exit for good); call
/// before the process exits. Whether everything was written.
pub fn drain(timeout: Duration) -> bool {
    !WRITER.load(std::sync::atomic::Ordering::Acquire) || SINK.drain(timeout)
}

/// While the returned guard lives, this thread's log lines wake the
/// writer only every 64 KiB (the workload logs one line per task), so
/// they go out in few `write` calls. Dropping the guard wakes it, also
/// when a panic unwinds through it. Not for code that awaits: the guard
/// cannot be sent to another thread, and lines kept across an await
/// would reach the log late.
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
        SINK.ready.notify_one();
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
    let started = std::thread::Builder::new()
        .name("casty-log".into())
        .spawn(|| {
            SINK.run(&mut std::io::stderr(), &|dropped| {
                tracing::warn!(
                    dropped,
                    "log lines dropped: standard error was not read fast enough (the node kept running)"
                );
            });
        });
    match started {
        Ok(_) => WRITER.store(true, std::sync::atomic::Ordering::Release),
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the log writer thread; logging from each thread")
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn dates_match_the_calendar() {
        // Checked with `date -u -d @$((days * 86400)) +%F`.
        for (days, want) in [
            (0, (1970, 1, 1)),
            (10_956, (1999, 12, 31)),
            (11_016, (2000, 2, 29)),
            (11_017, (2000, 3, 1)),
            (20_428, (2025, 12, 6)),
            (47_540, (2100, 2, 28)),
            (47_541, (2100, 3, 1)),
            (157_113, (2400, 2, 29)),
        ] {
            assert_eq!(civil_from_days(days), want, "day {days}");
        }
    }

    #[test]
    fn a_time_stamp_is_written_as_tracing_writes_it() {
        let mut out = String::new();
        // `date -u -d @1796558857 +%FT%T`: 2026-12-06T12:07:37.
        write_time(&mut out, Some(Duration::new(1_796_558_857, 123_456_789))).unwrap();
        assert_eq!(out, "2026-12-06T12:07:37.123456Z");
        // The same minute again (from the cache), then the next.
        out.clear();
        write_time(&mut out, Some(Duration::new(1_796_558_819, 5_000))).unwrap();
        assert_eq!(out, "2026-12-06T12:06:59.000005Z");
        out.clear();
        write_time(&mut out, Some(Duration::new(1_796_558_820, 0))).unwrap();
        assert_eq!(out, "2026-12-06T12:07:00.000000Z");
        out.clear();
        write_time(&mut out, None).unwrap();
        assert_eq!(out, "1970-01-01T00:00:00.000000Z");
        // Against tracing-subscriber's own clock format, by shape and date:
        // ours read just before and just after the library's, so a date
        // that turns over in between still matches one of them.
        let now = || std::time::SystemTime::now().duration_since(UNIX_EPOCH).ok();
        let (mut before, mut lib, mut after) = (String::new(), String::new(), String::new());
        write_time(&mut before, now()).unwrap();
        tracing_subscriber::fmt::time::FormatTime::format_time(
            &tracing_subscriber::fmt::time::SystemTime,
            &mut Writer::new(&mut lib),
        )
        .unwrap();
        write_time(&mut after, now()).unwrap();
        assert_eq!(lib.len(), before.len(), "{lib} / {before}");
        assert!(
            lib[..10] == before[..10] || lib[..10] == after[..10],
            "{lib} / {before} / {after}"
        );
    }

    /// Formats each event's fields both ways: tracing-subscriber's default
    /// field format, and [`write_message_only`].
    struct Both(std::sync::Arc<Mutex<Vec<(String, String, bool)>>>);

    impl<S, N> FormatEvent<S, N> for Both
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
        N: for<'a> FormatFields<'a> + 'static,
    {
        fn format_event(
            &self,
            ctx: &FmtContext<'_, S, N>,
            _w: Writer<'_>,
            event: &Event<'_>,
        ) -> fmt::Result {
            let mut lib = String::new();
            ctx.field_format()
                .format_fields(Writer::new(&mut lib), event)?;
            let mut ours = String::new();
            let wrote = write_message_only(&mut Writer::new(&mut ours), event)?;
            self.0.lock().unwrap().push((lib, ours, wrote));
            Ok(())
        }
    }

    #[test]
    fn a_message_is_written_and_escaped_as_tracing_subscriber_does() {
        let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::fmt()
            .with_writer(std::io::sink)
            .event_format(Both(std::sync::Arc::clone(&seen)))
            .finish();
        let texts = [
            "job-node-1-7: 0123456789abcdef (on node-2)",
            "",
            "an escape \x1b[31mred\x1b[0m, a bell \x07, a backspace \x08, a form feed \x0c, a delete \x7f",
            "C1 controls \u{80} \u{85} \u{9b}x \u{9f}, and their neighbours \u{7e} \u{a0} \u{c2}",
            "tab\tnewline\nreturn\r, quotes \" and backslash \\ and non-ASCII: é, 日本, 🦀",
        ];
        tracing::subscriber::with_default(subscriber, || {
            for text in texts {
                tracing::info!("{text}");
            }
            tracing::info!(count = 3, "with another field");
        });
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), texts.len() + 1);
        for (lib, ours, wrote) in &seen[..texts.len()] {
            assert!(wrote);
            assert_eq!(ours, lib);
        }
        assert!(seen[1].1.is_empty());
        assert!(seen[2].1.contains("\\x1b[31m"), "{}", seen[2].1);
        // An event with other fields is left to tracing-subscriber.
        let (_, ours, wrote) = &seen[texts.len()];
        assert!(!wrote && ours.is_empty());
    }

    /// Output shared with the test; writes block while `gate` is held.
    #[derive(Clone, Default)]
    struct Out {
        bytes: std::sync::Arc<Mutex<Vec<u8>>>,
        gate: std::sync::Arc<Mutex<()>>,
    }

    impl std::io::Write for Out {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let _open = self.gate.lock().unwrap();
            self.bytes.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A sink with its writer thread on `out`; the counts it reported
    /// dropped go to the returned list.
    fn writer(out: &Out) -> (&'static Sink, std::sync::Arc<Mutex<Vec<u64>>>) {
        let sink: &'static Sink = Box::leak(Box::new(Sink::new()));
        let reported = std::sync::Arc::new(Mutex::new(Vec::new()));
        let (mut out, r) = (out.clone(), reported.clone());
        std::thread::spawn(move || sink.run(&mut out, &|n| r.lock().unwrap().push(n)));
        (sink, reported)
    }

    #[test]
    fn lines_go_out_in_order_and_a_bulk_wakes_the_writer_rarely() {
        let out = Out::default();
        let (sink, _) = writer(&out);
        assert!(sink.push(b"one\n", false));
        assert!(!sink.push(b"two\n", true), "a bulk's line waits");
        assert!(sink.push(b"three\n", false));
        assert!(sink.drain(Duration::from_secs(10)));
        assert_eq!(&*out.bytes.lock().unwrap(), b"one\ntwo\nthree\n");
        // Inside a bulk a line wakes the writer only once the lines
        // waiting reach BULK_BYTES (with the writer held, nothing leaves).
        let gate = out.gate.lock().unwrap();
        assert!(sink.push(b"held\n", false));
        while !sink.lock().writing {
            std::thread::yield_now();
        }
        let line = [b'x'; 1024];
        let woke: Vec<bool> = (0..BULK_BYTES / 1024)
            .map(|_| sink.push(&line, true))
            .collect();
        assert_eq!(woke.iter().filter(|w| **w).count(), 1);
        assert!(
            woke[BULK_BYTES / 1024 - 1],
            "the line reaching 64 KiB wakes it"
        );
        drop(gate);
        assert!(sink.drain(Duration::from_secs(10)));
        assert_eq!(out.bytes.lock().unwrap().len(), 14 + 5 + BULK_BYTES);
    }

    /// Takes at most 3 bytes a call and refuses every other call with
    /// `WouldBlock`, as a full non-blocking pipe does.
    struct Choppy {
        bytes: Vec<u8>,
        calls: usize,
    }

    impl std::io::Write for Choppy {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.calls += 1;
            if self.calls % 2 == 1 {
                return Err(std::io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(3);
            self.bytes.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_non_blocking_stderr_that_is_full_is_waited_for_not_cut() {
        let mut out = Choppy {
            bytes: Vec::new(),
            calls: 0,
        };
        write_patiently(&mut out, b"a whole line\nand another\n");
        assert_eq!(out.bytes, b"a whole line\nand another\n");
    }

    #[test]
    fn a_reader_that_stops_reading_costs_lines_not_the_logging_thread() {
        let out = Out::default();
        let gate = out.gate.lock().unwrap();
        let (sink, reported) = writer(&out);
        // The writer takes the first line and blocks writing it; the
        // buffer then fills and every line past it is dropped, at once.
        assert!(sink.push(b"first\n", false));
        while !sink.lock().writing {
            std::thread::yield_now();
        }
        let line = vec![b'y'; 1024];
        for _ in 0..QUEUE_BYTES / 1024 + 10 {
            let _ = sink.push(&line, true);
        }
        assert_eq!(sink.lock().dropped_total, 10);
        // A line outside a bulk (a summary, a warning) still has room.
        let _ = sink.push(b"summary\n", false);
        assert_eq!(sink.lock().dropped_total, 10);
        assert!(!sink.drain(Duration::from_millis(50)), "still blocked");
        drop(gate);
        assert!(sink.drain(Duration::from_secs(10)));
        let written = out.bytes.lock().unwrap().len();
        assert_eq!(written, 6 + (QUEUE_BYTES / 1024) * 1024 + 8);
        // The count is reported once the writer got past the stall.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while reported.lock().unwrap().is_empty() && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        assert_eq!(*reported.lock().unwrap(), [10]);
    }
}

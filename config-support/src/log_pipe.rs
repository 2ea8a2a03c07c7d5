//! The daemons' log lines on their way to standard error, through a bounded queue and a
//! thread of their own.
//!
//! Written straight from the task that logs, standard error steered the whole server: a
//! reader that stopped reading (a log shipper hung, `serve 2>fifo` never drained) blocked
//! every task at its next line, so writes, sessions and the control socket hung behind
//! it; and a reader gone (`serve 2>&1 | head -1`, a shipper that died) made each line a
//! write error, which the formatter reported with `eprintln!`, a panic in whatever task
//! was logging: sessions died at their first line while `status` still said running.
//! Here a line is handed to the writer thread, which ignores write errors; a queue full
//! because nobody reads drops lines, counted, rather than stop the server, and the
//! next line queued carries the count, so the writer says how many went where they went.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::shell::LogFormat;

/// How many lines wait for the writer before new ones are dropped: a few seconds of a
/// busy server's `debug` output, about two megabytes at most.
pub const QUEUE_LINES: usize = 10_000;

/// How long [`drain`] waits for the lines queued to be written: at exit, a reader that
/// is still there gets the last lines (the shutdown's), and one that stalled delays the
/// exit by no more than this.
pub const DRAIN_WAIT: Duration = Duration::from_secs(2);

/// What the writer thread is handed.
enum Message {
    /// One log line (or several, as the formatter wrote one event), after `dropped`
    /// lines that found the queue full: the writer says so where the gap is.
    Line { dropped: u64, line: Vec<u8> },
    /// Every line before this is written: answer on the channel.
    Drained(SyncSender<()>),
}

/// The queue of the process's writer thread, once [`start`] made it.
struct Pipe {
    lines: SyncSender<Message>,
    /// Lines dropped since the last one queued.
    dropped: AtomicU64,
}

impl Pipe {
    /// Queues `line` for the writer, or drops it, counted, if the queue is full.
    fn queue(&self, line: Vec<u8>) {
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        match self.lines.try_send(Message::Line { dropped, line }) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(dropped + 1, Ordering::Relaxed);
            }
        }
    }
}

static PIPE: OnceLock<Pipe> = OnceLock::new();

/// Starts the writer thread of this process (once; later calls reuse it) and returns
/// what the log formatter writes to.
pub fn start(format: LogFormat) -> io::Result<Writers> {
    if PIPE.get().is_none() {
        let (tx, rx) = mpsc::sync_channel(QUEUE_LINES);
        // Lives as long as the process: the exits drain it ([`drain`]).
        std::thread::Builder::new().name("log-writer".into()).spawn(move || write_lines(rx, io::stderr(), format))?;
        let _ = PIPE.set(Pipe { lines: tx, dropped: AtomicU64::new(0) });
    }
    Ok(Writers)
}

/// The most the writer thread puts in one `write`: lines queued while it wrote go out
/// together, one system call for a burst's access lines instead of one each (a tenth of
/// the provider's CPU per write was its log line, half of that the `write`). No more than
/// `PIPE_BUF`, below which a write to a pipe is atomic: a reader shared with other
/// processes (a terminal, a supervisor's pipe, `2>&1` into one file) never has one of our
/// lines cut by one of theirs, as with a write per line. A longer line goes out alone.
const WRITE_BYTES: usize = 4096;

/// The writer thread: the lines as they come, those already queued behind one gathered
/// into a write ([`WRITE_BYTES`]); write errors ignored (nobody is left to tell of them
/// but the reader that failed).
fn write_lines(rx: Receiver<Message>, mut out: impl Write, format: LogFormat) {
    let mut gathered = Vec::with_capacity(WRITE_BYTES);
    let mut next = rx.recv().ok();
    while let Some(message) = next.take() {
        match message {
            Message::Line { dropped, line } => {
                if dropped > 0 {
                    gather(&mut gathered, dropped_note(dropped, format).as_bytes(), &mut out);
                }
                gather(&mut gathered, &line, &mut out);
            }
            Message::Drained(done) => {
                write_out(&mut gathered, &mut out);
                let _ = out.flush();
                let _ = done.send(());
            }
        }
        // What is queued already joins the write; with nothing, it goes out before the
        // thread waits for more.
        next = match rx.try_recv() {
            Ok(message) => Some(message),
            Err(mpsc::TryRecvError::Empty) => {
                write_out(&mut gathered, &mut out);
                rx.recv().ok()
            }
            Err(mpsc::TryRecvError::Disconnected) => None,
        };
    }
    write_out(&mut gathered, &mut out);
}

/// Adds `line` to the lines `gathered` for one write, writing them first if it would
/// not fit, and writing it alone if it is longer than a write.
fn gather(gathered: &mut Vec<u8>, line: &[u8], out: &mut impl Write) {
    if gathered.len() + line.len() > WRITE_BYTES {
        write_out(gathered, out);
    }
    if line.len() > WRITE_BYTES {
        let _ = out.write_all(line);
    } else {
        gathered.extend_from_slice(line);
    }
}

/// Writes the lines gathered, in one write.
fn write_out(gathered: &mut Vec<u8>, out: &mut impl Write) {
    if !gathered.is_empty() {
        let _ = out.write_all(gathered);
        gathered.clear();
    }
}

/// The line that says `dropped` lines were lost, in the form of the others: a log
/// shipper reading JSON lines would take a line of text for damage.
fn dropped_note(dropped: u64, format: LogFormat) -> String {
    const WHY: &str = "standard error was not read fast enough";
    match format {
        LogFormat::Text => format!("[{dropped} log lines dropped: {WHY}]\n"),
        LogFormat::Json => {
            let now = humantime::format_rfc3339_micros(std::time::SystemTime::now());
            format!(
                "{{\"timestamp\":\"{now}\",\"level\":\"WARN\",\"message\":\"{dropped} log lines dropped: {WHY}\",\"dropped\":{dropped}}}\n"
            )
        }
    }
}

/// Waits, up to [`DRAIN_WAIT`], until the lines logged so far are written: before the
/// process exits, whose last lines would otherwise be lost with the thread.
pub fn drain() {
    if let Some(pipe) = PIPE.get() {
        drain_pipe(pipe, Instant::now() + DRAIN_WAIT, || std::thread::sleep(Duration::from_millis(5)));
    }
}

/// Says `line` as the process's last on standard error, after the log lines queued, and
/// waits for them as [`drain`] does. Written straight to stderr, it waited for ever
/// behind the writer thread's own write when the reader had stopped reading: a failing
/// server never exited. Without the writer thread (logging never started, as in most
/// commands) it is written straight there, as a command's other lines are.
pub fn say_last(line: &str) {
    let Some(pipe) = PIPE.get() else {
        crate::say!("{line}");
        return;
    };
    let deadline = Instant::now() + DRAIN_WAIT;
    let pause = || std::thread::sleep(Duration::from_millis(5));
    let dropped = pipe.dropped.swap(0, Ordering::Relaxed);
    let message = Message::Line { dropped, line: format!("{line}\n").into_bytes() };
    if send_until(pipe, message, deadline, pause) {
        drain_pipe(pipe, deadline, pause);
    }
}

/// [`drain`] of `pipe`, waiting until `deadline` at most, and calling `pause` between
/// tries to queue its mark while the queue is full.
fn drain_pipe(pipe: &Pipe, deadline: Instant, pause: impl FnMut()) {
    let (tx, rx) = mpsc::sync_channel(1);
    if send_until(pipe, Message::Drained(tx), deadline, pause) {
        let _ = rx.recv_timeout(deadline.saturating_duration_since(Instant::now()));
    }
}

/// Queues `message` for the writer, waiting for room until `deadline` at most (calling
/// `pause` between tries); whether it was queued.
fn send_until(pipe: &Pipe, mut message: Message, deadline: Instant, mut pause: impl FnMut()) -> bool {
    // A full queue means a reader that stopped: room comes only if it reads again.
    loop {
        match pipe.lines.try_send(message) {
            Ok(()) => return true,
            Err(TrySendError::Disconnected(_)) => return false,
            Err(TrySendError::Full(back)) if Instant::now() < deadline => {
                message = back;
                pause();
            }
            Err(TrySendError::Full(_)) => return false,
        }
    }
}

/// The log formatter's writer: one per event, handed to the writer thread whole when
/// the event is formatted.
#[derive(Debug, Clone, Copy)]
pub struct Writers;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Writers {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        LineWriter(Vec::new())
    }
}

/// One event's text, queued when dropped.
#[derive(Debug)]
pub struct LineWriter(Vec<u8>);

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        if let Some(pipe) = PIPE.get() {
            pipe.queue(std::mem::take(&mut self.0));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A writer whose reader is gone: every write fails.
    struct Gone;

    impl Write for Gone {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        }
        fn flush(&mut self) -> io::Result<()> {
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        }
    }

    #[test]
    fn lines_dropped_are_said_where_the_gap_is_and_errors_end_nothing() {
        let (tx, rx) = mpsc::sync_channel(2);
        let pipe = Pipe { lines: tx, dropped: AtomicU64::new(0) };
        for line in ["first", "second", "lost", "lost too", "third"] {
            pipe.queue(format!("{line}\n").into_bytes());
            if line == "lost too" {
                // The writer takes the first two: room again.
                let mut out = Vec::new();
                for _ in 0..2 {
                    let Ok(Message::Line { dropped, line }) = rx.try_recv() else { panic!("a line") };
                    assert_eq!(dropped, 0);
                    out.extend(line);
                }
                assert_eq!(String::from_utf8(out).unwrap(), "first\nsecond\n");
            }
        }
        let (done_tx, done) = mpsc::sync_channel(1);
        pipe.lines.send(Message::Drained(done_tx)).unwrap();
        drop(pipe);
        let mut out = Vec::new();
        write_lines(rx, &mut out, LogFormat::Text);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "[2 log lines dropped: standard error was not read fast enough]\nthird\n"
        );
        assert_eq!(done.try_recv(), Ok(()), "a drain is answered once the lines before it are written");

        // A reader gone: the writer goes on taking lines (and answering drains).
        let (tx, rx) = mpsc::sync_channel(8);
        tx.send(Message::Line { dropped: 0, line: b"lost\n".to_vec() }).unwrap();
        let (done_tx, done) = mpsc::sync_channel(1);
        tx.send(Message::Drained(done_tx)).unwrap();
        drop(tx);
        write_lines(rx, Gone, LogFormat::Text);
        assert_eq!(done.try_recv(), Ok(()));
    }

    /// A drain waits for room in a full queue (a reader that is slow, not gone), puts
    /// its mark after the lines queued, and waits for the writer to reach it: the last
    /// lines reach a slow reader at exit. The writer reads only once the drain has found
    /// the queue full and paused.
    #[test]
    fn a_drain_waits_for_room_and_for_the_writer_to_reach_its_mark() {
        let (tx, rx) = mpsc::sync_channel(1);
        let pipe = Pipe { lines: tx, dropped: AtomicU64::new(0) };
        pipe.queue(b"last\n".to_vec());
        let (go, reading) = mpsc::channel::<()>();
        let answered = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = std::thread::spawn({
            let answered = answered.clone();
            move || {
                reading.recv().unwrap();
                let Ok(Message::Line { line, .. }) = rx.recv() else { panic!("the line queued first") };
                assert_eq!(line, b"last\n");
                let Ok(Message::Drained(done)) = rx.recv() else { panic!("the drain gave up with room again") };
                answered.store(true, Ordering::SeqCst);
                done.send(()).unwrap();
            }
        });
        let mut pauses = 0;
        drain_pipe(&pipe, Instant::now() + Duration::from_secs(60), || {
            pauses += 1;
            let _ = go.send(());
        });
        assert!(pauses > 0, "the queue was full at the first try");
        assert!(answered.load(Ordering::SeqCst), "the drain returned once the writer reached its mark");
        drop(pipe);
        writer.join().unwrap();
    }

    /// With JSON lines the notice is a JSON line too, a warning a shipper can parse.
    #[test]
    fn lines_dropped_are_said_as_json_among_json_lines() {
        let (tx, rx) = mpsc::sync_channel(1);
        let pipe = Pipe { lines: tx, dropped: AtomicU64::new(0) };
        pipe.queue(b"{\"message\":\"first\"}\n".to_vec());
        pipe.queue(b"{\"message\":\"lost\"}\n".to_vec());
        pipe.queue(b"{\"message\":\"lost\"}\n".to_vec());
        let Ok(Message::Line { dropped: 0, .. }) = rx.try_recv() else { panic!("the first line") };
        pipe.queue(b"{\"message\":\"second\"}\n".to_vec());
        drop(pipe);
        let mut out = Vec::new();
        write_lines(rx, &mut out, LogFormat::Json);
        let lines: Vec<serde_json::Value> =
            String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(lines[0]["level"], "WARN");
        assert_eq!(lines[0]["dropped"], 2);
        assert!(lines[0]["message"].as_str().unwrap().contains("2 log lines dropped"));
        assert!(lines[0]["timestamp"].is_string());
        assert_eq!(lines[1]["message"], "second");
    }

    /// A drain whose mark is queued waits for the writer's answer until its deadline, not
    /// less: a writer slow to write the lines before the mark still gets them out. Here
    /// the mark is never taken, and nothing answers.
    #[test]
    fn a_drain_waits_for_the_answer_until_its_deadline() {
        let (tx, rx) = mpsc::sync_channel(1);
        let pipe = Pipe { lines: tx, dropped: AtomicU64::new(0) };
        let (begun, wait) = (Instant::now(), Duration::from_millis(200));
        drain_pipe(&pipe, begun + wait, || panic!("the queue had room"));
        assert!(begun.elapsed() >= wait, "returned after {:?}", begun.elapsed());
        let Ok(Message::Drained(_)) = rx.try_recv() else { panic!("the mark was queued") };
    }

    /// A drain past its deadline gives up on a queue that stays full (a reader that
    /// stopped): the process exits without its last lines rather than not at all.
    #[test]
    fn a_drain_past_its_deadline_gives_up_on_a_full_queue() {
        let (tx, _rx) = mpsc::sync_channel(1);
        let pipe = Pipe { lines: tx, dropped: AtomicU64::new(0) };
        pipe.queue(b"last\n".to_vec());
        drain_pipe(&pipe, Instant::now(), || panic!("tried again past its deadline"));
    }

    /// One line dropped is said too: the notice stands for any gap, one line or many.
    #[test]
    fn a_single_line_dropped_is_said() {
        let (tx, rx) = mpsc::sync_channel(1);
        let pipe = Pipe { lines: tx, dropped: AtomicU64::new(0) };
        pipe.queue(b"first\n".to_vec());
        pipe.queue(b"lost\n".to_vec());
        let Ok(Message::Line { dropped: 0, line }) = rx.try_recv() else { panic!("the first line") };
        assert_eq!(line, b"first\n");
        pipe.queue(b"second\n".to_vec());
        drop(pipe);
        let mut out = Vec::new();
        write_lines(rx, &mut out, LogFormat::Text);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "[1 log lines dropped: standard error was not read fast enough]\nsecond\n"
        );
    }

    /// Each `write` the writer makes, as it made it.
    #[derive(Default)]
    struct Writes(Vec<Vec<u8>>);

    impl Write for Writes {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Lines queued together go out in few writes, each whole lines and at most
    /// `WRITE_BYTES` (atomic on a pipe shared with other processes), every line once and
    /// in order; a line longer than that goes out alone, and a drain is answered once
    /// everything before it is written.
    #[test]
    fn lines_queued_together_are_written_together_in_whole_lines_of_at_most_pipe_buf() {
        let (tx, rx) = mpsc::sync_channel(1_000);
        let lines: Vec<String> = (0..300).map(|i| format!("access line {i:03} {}\n", "x".repeat(i % 90))).collect();
        for line in &lines[..150] {
            tx.send(Message::Line { dropped: 0, line: line.clone().into_bytes() }).unwrap();
        }
        let long = format!("{}\n", "y".repeat(WRITE_BYTES + 10));
        tx.send(Message::Line { dropped: 0, line: long.clone().into_bytes() }).unwrap();
        for line in &lines[150..] {
            tx.send(Message::Line { dropped: 0, line: line.clone().into_bytes() }).unwrap();
        }
        let (done_tx, done) = mpsc::sync_channel(1);
        tx.send(Message::Drained(done_tx)).unwrap();
        drop(tx);
        let mut writes = Writes::default();
        write_lines(rx, &mut writes, LogFormat::Text);
        assert_eq!(done.try_recv(), Ok(()));
        let all: Vec<u8> = writes.0.concat();
        let expected = [lines[..150].concat(), long.clone(), lines[150..].concat()].concat();
        assert_eq!(String::from_utf8(all).unwrap(), expected, "every line once, in order");
        assert!(writes.0.len() < 30, "{} writes for 301 lines", writes.0.len());
        for write in &writes.0 {
            assert!(write.ends_with(b"\n"), "a write cut a line: {:?}", String::from_utf8_lossy(write));
            assert!(write.len() <= WRITE_BYTES || *write == long.as_bytes(), "a write of {} bytes", write.len());
        }
        assert!(writes.0.iter().any(|w| *w == long.as_bytes()), "the long line alone");
    }
}

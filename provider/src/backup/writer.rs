//! The process that writes a running provider's backup copy (`tether-provider
//! backup-writer FOLDER`, started by the provider, never by hand).
//!
//! sled keeps a page table and a cache for every database a process opens, as large as
//! the database: a million-entry copy written inside the provider took it from 78 to
//! 293 to 328 MiB, and it kept 212 to 247 MiB once the copy was closed (measured in
//! docs/operations.md, Backup and restore). So the provider reads
//! its store and sends the copy's writes down a pipe ([`tether_store::StreamCopy`]) to a
//! process of its own, this binary run again, which writes them
//! ([`tether_store::write_copy`]) and whose memory goes when it exits.
//!
//! The provider owns the process: the copy's thread starts it, and waits for it to end
//! before the copy is put in place or removed. It ends when its input does: at the
//! finish, or when the backup is abandoned or fails (its input closed), or when the
//! provider dies (the kernel closes the pipe), and it then removes what it wrote.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tether_protocol::EntryUuid;
use tether_store::{CopyCounts, CopyWriter, SledCopy, StoreError, StreamCopy};

/// The subcommand the writer runs as.
pub const SUBCOMMAND: &str = "backup-writer";

/// How long the writer is given to end once its input is closed (it removes the copy
/// first) before it is killed.
const END_WAIT: Duration = Duration::from_secs(30);

/// The writer's `oom_score_adj`: the highest, so that the kernel, out of memory, kills
/// it before the provider.
const OOM_SCORE_ADJ: &str = "1000";

/// Who writes a running provider's backup copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Writer {
    /// The copy is written in this process: the tests of the control socket, whose
    /// process is a test harness that has no `backup-writer` to run, and a provider
    /// that cannot tell its own program's path.
    Here,
    /// A process of its own runs `PROGRAM backup-writer FOLDER`.
    Process(PathBuf),
}

impl Writer {
    /// This very binary run again: `/proc/self/exe` is the file this process was
    /// started from even once an upgrade has replaced it on disk, so the writer is of
    /// the provider's build, and speaks its requests. Without `/proc` (a chroot, say),
    /// the path it was started from; failing that, the copy is written here.
    pub fn this_program() -> Self {
        let proc = PathBuf::from("/proc/self/exe");
        if proc.exists() {
            return Writer::Process(proc);
        }
        match std::env::current_exe() {
            Ok(path) => Writer::Process(path),
            Err(e) => {
                tracing::warn!(error = %e, "this program's path is unknown: a backup's copy is written in this process");
                Writer::Here
            }
        }
    }

    /// Opens the copy to be written in `folder`.
    pub fn open(&self, folder: &Path) -> Result<Box<dyn CopyWriter>, StoreError> {
        match self {
            Writer::Here => Ok(Box::new(SledCopy::create(folder)?)),
            Writer::Process(program) => Ok(Box::new(ProcessCopy::start(program, folder)?)),
        }
    }
}

/// The copy written by a process of its own.
#[derive(Debug)]
struct ProcessCopy {
    stream: Option<StreamCopy<ChildStdin, ChildStdout>>,
    child: Child,
    /// What the process's end said, once known.
    ended: Option<String>,
    /// How long it is given to end once its input is closed: [`END_WAIT`].
    end_wait: Duration,
}

impl ProcessCopy {
    fn start(program: &Path, folder: &Path) -> Result<Self, StoreError> {
        let mut child = Command::new(program)
            .arg(SUBCOMMAND)
            .arg(folder)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| StoreError::CopyWriter(format!("starting {} {SUBCOMMAND}: {e}", program.display())))?;
        let pipes = child.stdin.take().zip(child.stdout.take());
        let Some((requests, answers)) = pipes else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(StoreError::CopyWriter("its process was started without its pipes".to_owned()));
        };
        tracing::debug!(pid = child.id(), folder = %folder.display(), "backup writer started");
        Ok(Self { stream: Some(StreamCopy::new(requests, answers)), child, ended: None, end_wait: END_WAIT })
    }

    /// Does `step` with the stream; an error gains how the process ended.
    fn with<T>(
        &mut self,
        step: impl FnOnce(&mut StreamCopy<ChildStdin, ChildStdout>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let Some(stream) = self.stream.as_mut() else {
            return Err(StoreError::CopyWriter(format!("its process {} ended", self.ended())));
        };
        step(stream).map_err(|e| match e {
            StoreError::CopyWriter(why) => StoreError::CopyWriter(format!("{why} (its process {})", self.ended())),
            e => e,
        })
    }

    /// Closes the process's input, waits for it to end (killing it after `end_wait`),
    /// and says how it ended.
    fn ended(&mut self) -> String {
        if let Some(said) = &self.ended {
            return said.clone();
        }
        drop(self.stream.take());
        let pid = self.child.id();
        let deadline = Instant::now() + self.end_wait;
        let said = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break format!("{pid} {}", exit_said(status)),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
                Ok(None) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    let waited = self.end_wait;
                    break format!("{pid} did not end within {waited:?} of its input's end, and was killed");
                }
                Err(e) => break format!("{pid} could not be waited for ({e})"),
            }
        };
        self.ended = Some(said.clone());
        said
    }
}

/// How a process ended, as a clause.
fn exit_said(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(0), _) => "exited".to_owned(),
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        (None, None) => format!("ended ({status})"),
    }
}

impl CopyWriter for ProcessCopy {
    fn insert(&mut self, tree: &[u8], key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.with(|s| s.insert(tree, key, value))
    }

    fn remove(&mut self, tree: &[u8], key: &[u8]) -> Result<(), StoreError> {
        self.with(|s| s.remove(tree, key))
    }

    fn forget(&mut self, uuid: &EntryUuid) -> Result<(), StoreError> {
        self.with(|s| s.forget(uuid))
    }

    fn remove_through(&mut self, tree: &[u8], last: &[u8]) -> Result<(), StoreError> {
        self.with(|s| s.remove_through(tree, last))
    }

    fn clear(&mut self, tree: &[u8]) -> Result<(), StoreError> {
        self.with(|s| s.clear(tree))
    }

    fn keep_only(&mut self, trees: &[Vec<u8>]) -> Result<(), StoreError> {
        self.with(|s| s.keep_only(trees))
    }

    fn settle(&mut self) -> Result<(), StoreError> {
        self.with(StreamCopy::settle)
    }

    fn finish(&mut self) -> Result<CopyCounts, StoreError> {
        self.with(StreamCopy::finish)
    }
}

impl Drop for ProcessCopy {
    /// The process ends before the copy is put in place or removed.
    fn drop(&mut self) {
        let said = self.ended();
        tracing::debug!(process = %said, "backup writer ended");
    }
}

/// `tether-provider backup-writer FOLDER`: writes the copy in `FOLDER` as standard input
/// asks, answering on standard output, until the copy is finished or its input ends.
/// Under a memory limit (systemd's `MemoryMax=`, which counts the provider and this
/// process together), it is this process the kernel kills first: the backup then fails,
/// saying so, and the provider goes on.
pub fn run(folder: &Path) -> Result<CopyCounts, StoreError> {
    // Raising one's own score needs no privilege; where /proc is not writable the
    // kernel's own choice stands.
    if let Err(e) = std::fs::write("/proc/self/oom_score_adj", OOM_SCORE_ADJ) {
        tracing::debug!(error = %e, "could not make the backup writer the first to go under a memory limit");
    }
    tether_store::write_copy(folder, std::io::stdin().lock(), std::io::stdout().lock())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// The writer is the very file this provider was started from, not whatever is at
    /// its path now: an upgrade that replaced the binary on disk would otherwise start
    /// a writer of another build, which may not speak this one's requests.
    #[test]
    fn the_writer_is_the_program_this_process_was_started_from() {
        assert_eq!(Writer::this_program(), Writer::Process(PathBuf::from("/proc/self/exe")));
    }

    /// Writes `script` as an executable program in `folder`.
    fn program(folder: &Path, script: &str) -> PathBuf {
        let program = folder.join("writer");
        std::fs::write(&program, script).unwrap();
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
        program
    }

    /// Starts `program` as a copy's writer, trying again while it is busy (ETXTBSY: a
    /// program just written, while another test's process is being started with its
    /// file still open).
    fn started(program: &Path, folder: &Path) -> ProcessCopy {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match ProcessCopy::start(program, folder) {
                Ok(copy) => return copy,
                Err(e) if e.to_string().contains("Text file busy") && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// An abandoned copy's writer, which ends when its input does, is told so at once:
    /// its input is closed before it is waited for, so the backup (the provider
    /// stopping) does not wait out [`END_WAIT`] and then kill a writer that would have
    /// removed its copy.
    #[test]
    fn an_abandoned_writer_has_its_input_closed_and_ends() {
        let tmp = tempfile::tempdir().unwrap();
        // Takes requests until its input ends, then ends.
        let program = program(tmp.path(), "#!/bin/sh\ncat >/dev/null\nexit 4\n");
        let mut copy = started(&program, &tmp.path().join("copy"));
        copy.insert(b"entries", b"k", b"v").unwrap();
        let said = copy.ended();
        assert!(said.ends_with(" exited with status 4"), "{said}");
    }

    /// A writer that does not end once its input is closed (stopped, or stuck in a
    /// write) is killed after its wait, so that the backup (the provider stopping)
    /// ends, and the copy can be removed with no process still writing it; the error
    /// says so. The wait is the test's, not the 30 s of [`END_WAIT`].
    #[test]
    fn a_writer_that_does_not_end_is_killed_after_its_wait() {
        let tmp = tempfile::tempdir().unwrap();
        // Ignores its input, and the end of it.
        let program = program(tmp.path(), "#!/bin/sh\nexec sleep 60\n");
        let mut copy = started(&program, &tmp.path().join("copy"));
        copy.end_wait = Duration::from_millis(300);
        let pid = copy.child.id();
        let begun = Instant::now();
        let said = copy.ended();
        let waited = begun.elapsed();
        assert_eq!(said, format!("{pid} did not end within 300ms of its input's end, and was killed"));
        assert!(waited >= Duration::from_millis(300) && waited < Duration::from_secs(20), "{waited:?}");
        // Reaped, not left running: no process has its id, or another program does.
        let running = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(!running.contains("sleep"), "the writer still runs: {running:?}");
        // Nor left a zombie, its exit status unread: a process with its id, if any, is
        // not this one's child (a zombie's command line reads empty, as a reaped one's).
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let parent = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)).unwrap_or_default();
        assert_ne!(parent, std::process::id().to_string(), "the writer was not reaped: {stat:?}");
        assert_eq!(copy.ended(), said, "said once, and kept");
    }

    /// A writer that stops taking requests is waited for before the backup says how it
    /// ended: one that closes its pipes and exits a little later with a status is said
    /// to have exited with it, not killed for being slow.
    #[test]
    fn a_writer_that_ends_after_its_pipes_is_waited_for() {
        let tmp = tempfile::tempdir().unwrap();
        // Reads a byte, closes its pipes, and ends a moment later.
        let program = program(tmp.path(), "#!/bin/sh\nhead -c 1 >/dev/null\nexec 0<&- 1>&-\nsleep 0.5\nexit 3\n");
        let mut copy = started(&program, &tmp.path().join("copy"));
        copy.insert(b"entries", b"k", b"v").unwrap();
        let e = copy.settle().unwrap_err().to_string();
        assert!(e.starts_with("writing the copy: it stopped taking the copy without saying why ("), "{e}");
        assert!(e.ends_with(" exited with status 3)"), "{e}");
    }
}

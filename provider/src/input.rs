//! Where the LDIF of `load` and `write` comes from: a file, or standard input when the
//! file is `-`, as slapadd and ldapmodify take theirs (`slapcat | tether-provider load
//! -c F -`, a script's here-document into `write`). Messages name standard input
//! `<stdin>`, with the line as for a file.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tether_protocol::ldif::{LdifReader, LdifRecord};

/// How large an LDIF record the provider's commands read: the reader's default limit
/// (16 MiB) counts the text, and the same entry takes up to twice that as LDIF (base64
/// is a third longer than the octets, and each line counts a fixed overhead), so the
/// search output of an entry the store accepts, up to `MAX_ENTRY` encoded, could not be
/// read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordLimit {
    /// `write`: twice the largest frame. A record's size is then checked where it
    /// matters, encoded against the provider's `max_frame`, with that error.
    Write,
    /// `load`, which restores backups made with `search --uuids`: sixteen times the
    /// default, so that an entry of many short values (a group's members), whose LDIF
    /// is several times its encoding, restores as well. The loader checks each entry's
    /// encoded size against `MAX_ENTRY`; this bounds only its memory for one record of a
    /// file the operator chose, offline.
    Load,
}

impl RecordLimit {
    /// The limit in bytes.
    pub fn bytes(self) -> usize {
        match self {
            RecordLimit::Write => 2 * tether_protocol::frame::MAX_FRAME,
            RecordLimit::Load => 16 * tether_protocol::ldif::MAX_RECORD_BYTES,
        }
    }
}

/// What the command line names `-`.
const STDIN: &str = "-";

/// How messages name standard input.
const STDIN_SHOWN: &str = "<stdin>";

/// An LDIF input, readable from its start as many times as its reader needs.
#[derive(Debug)]
pub struct Input {
    source: Source,
    /// How messages name it.
    shown: String,
}

#[derive(Debug)]
enum Source {
    /// A file named on the command line, opened at each reading.
    File(PathBuf),
    /// A copy of what can be read only once (standard input, a pipe, a process
    /// substitution's `/dev/fd/N`): an unnamed temporary file, so nothing is left
    /// behind whatever ends the command (Ctrl-C included).
    Spool(File),
}

impl Input {
    /// The file `arg` names. `load` and `write` read their input twice, once to check
    /// every record and once to apply them, so what can be read only once is copied
    /// first to an unnamed temporary file (in `TMPDIR`): `-` (standard input), and a
    /// path that is not a regular file (a named pipe, `/dev/stdin`, a shell's
    /// `<(command)`). Read by name twice, such an input was empty the second time:
    /// `write` applied nothing and said `0 records applied`, exit 0, and a named pipe
    /// with no second writer hung.
    pub fn open(arg: &Path) -> Result<Self> {
        if arg == Path::new(STDIN) {
            return Self::spooled(&mut std::io::stdin().lock(), STDIN_SHOWN.to_owned());
        }
        let shown = arg.display().to_string();
        match std::fs::metadata(arg) {
            Ok(meta) if !meta.is_file() && !meta.is_dir() => {
                let mut once = File::open(arg).with_context(|| format!("opening {shown}"))?;
                Self::spooled(&mut once, shown)
            }
            // A missing file or a folder fails at its reading, named the same way.
            _ => Ok(Self { source: Source::File(arg.to_owned()), shown }),
        }
    }

    /// `once` copied whole to an unnamed temporary file, named `shown` in messages.
    fn spooled(once: &mut impl std::io::Read, shown: String) -> Result<Self> {
        // Named, since a full disk there is not the store's: the file is read twice
        // (checked, then written), so a stream is copied whole first.
        let folder = std::env::temp_dir();
        let mut spool = tempfile::tempfile().with_context(|| {
            format!("creating a temporary file for {shown} in {} (set TMPDIR to a writable folder)", folder.display())
        })?;
        std::io::copy(once, &mut spool).with_context(|| {
            format!(
                "copying {shown} to a temporary file in {} (set TMPDIR to a folder with room for it); nothing was \
                 written",
                folder.display()
            )
        })?;
        Ok(Self { source: Source::Spool(spool), shown })
    }

    /// Whether the input was copied because it can be read only once (standard input,
    /// a pipe): its name cannot be given to a command again, as a file's can.
    pub fn is_spooled(&self) -> bool {
        matches!(self.source, Source::Spool(_))
    }

    /// The input's name in messages (`<stdin>`, or the file as given).
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// The input's LDIF records from its start, read as they are used, each refused
    /// past `limit` bytes (see [`RecordLimit`]); an error names the input.
    pub fn records(&self, limit: RecordLimit) -> Result<impl Iterator<Item = Result<LdifRecord>> + '_> {
        let reader = LdifReader::with_max_record_bytes(std::io::BufReader::new(self.reader()?), limit.bytes());
        // `file:N: reason`, as every refusal of a record reads (`write`, `load`), so one
        // pattern finds the line in an editor whatever refused it.
        Ok(reader.map(move |r| r.map_err(|e| anyhow::anyhow!("{}:{}: {}", self.shown, e.line, e.kind))))
    }

    /// The input from its start.
    pub fn reader(&self) -> Result<Reader> {
        let opened = match &self.source {
            Source::File(path) => File::open(path).map(Reader::File),
            // A clone shares the spool's offset, and so would move any other reading of
            // it (`load` looks back for a name's first line while its check reads on):
            // each reading keeps an offset of its own.
            Source::Spool(spool) => spool.try_clone().map(|spool| Reader::Spool { spool, at: 0 }),
        };
        opened.with_context(|| format!("opening {}", self.shown))
    }
}

/// One reading of an [`Input`], from its start.
#[derive(Debug)]
pub enum Reader {
    /// The file, opened for this reading.
    File(File),
    /// The spool, read at this reading's own offset.
    Spool {
        /// The spool (a clone: its offset is shared, and not used).
        spool: File,
        /// Where this reading is.
        at: u64,
    },
}

impl std::io::Read for Reader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Reader::File(file) => file.read(buf),
            Reader::Spool { spool, at } => {
                let n = std::os::unix::fs::FileExt::read_at(spool, buf, *at)?;
                *at += n as u64;
                Ok(n)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(input: &Input) -> Result<String> {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut input.reader()?, &mut text)?;
        Ok(text)
    }

    #[test]
    fn a_file_is_read_from_its_start_each_time_and_named_as_given() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.ldif");
        std::fs::write(&file, "dn: dc=example\n").unwrap();
        let input = Input::open(&file).unwrap();
        assert_eq!(input.shown(), file.display().to_string());
        assert!(!input.is_spooled());
        assert_eq!(read(&input).unwrap(), "dn: dc=example\n");
        assert_eq!(read(&input).unwrap(), "dn: dc=example\n", "read again from the start");
        let missing = read(&Input::open(&dir.path().join("none.ldif")).unwrap()).unwrap_err();
        assert!(format!("{missing:#}").contains("none.ldif"), "{missing:#}");
    }

    /// A named pipe gives its text once: it is copied, read twice from the copy, and
    /// named as given.
    ///
    /// Under a deadline: a pipe that `Input::open` left to be opened by name later would
    /// keep its writer, and the test, waiting for a reader for good (a mutation audit's
    /// planted bug hung here rather than failing).
    #[test]
    fn a_named_pipe_is_copied_and_read_from_its_start_each_time() {
        let (done, finished) = std::sync::mpsc::channel();
        let body = std::thread::spawn(move || {
            let dir = tempfile::tempdir().unwrap();
            let fifo = dir.path().join("changes.ldif");
            let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
            assert!(made.success());
            let writer = {
                let fifo = fifo.clone();
                std::thread::spawn(move || std::fs::write(fifo, "dn: dc=example\n").unwrap())
            };
            let input = Input::open(&fifo).unwrap();
            writer.join().unwrap();
            assert_eq!(input.shown(), fifo.display().to_string());
            assert!(input.is_spooled(), "its name cannot be given to a command again");
            assert_eq!(read(&input).unwrap(), "dn: dc=example\n");
            assert_eq!(read(&input).unwrap(), "dn: dc=example\n", "read again from the start");
            let _ = done.send(());
        });
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
            finished.recv_timeout(std::time::Duration::from_secs(60))
        {
            panic!("the pipe's writer still waited for a reader after 60 s: opening the input did not read it");
        }
        if let Err(panic) = body.join() {
            std::panic::resume_unwind(panic);
        }
    }

    #[test]
    fn a_spool_is_read_from_its_start_each_time() {
        let mut spool = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut spool, b"dn: dc=example\n").unwrap();
        let input = Input { source: Source::Spool(spool), shown: "<stdin>".into() };
        assert_eq!(read(&input).unwrap(), "dn: dc=example\n");
        assert_eq!(read(&input).unwrap(), "dn: dc=example\n", "read again from the start");
    }
}

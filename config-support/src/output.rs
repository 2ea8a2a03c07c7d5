//! A command's standard output, treated as its result: `search > backup.ldif` on a full
//! disk must fail the command, not leave a cut file behind exit status 0 (which is
//! what ignoring write errors, or `println!`'s panic, gave), while a reader that stops
//! early (`search | head`) ends the command quietly and successfully, as it ends `cat`.

use std::io::{self, Write};

/// Buffered standard output whose errors say which of the two cases they are: every
/// write error comes back, and one caused by the reader closing its end is marked so
/// that [`reader_gone`] can tell it from a socket's broken pipe further down a command.
#[derive(Debug)]
pub struct Stdout(io::BufWriter<io::StdoutLock<'static>>);

/// Marks the broken pipe of standard output (inside the `io::Error` a [`Stdout`] returns).
#[derive(Debug, thiserror::Error)]
#[error("the reader of standard output closed it")]
struct ReaderGone;

impl Stdout {
    /// Locks standard output for the rest of the command.
    pub fn lock() -> Self {
        Self(io::BufWriter::new(io::stdout().lock()))
    }

    /// Writes `text` and flushes: for a command's whole answer, written at once.
    pub fn print(text: &str) -> io::Result<()> {
        let mut out = Self::lock();
        out.write_all(text.as_bytes())?;
        out.flush()
    }
}

fn mark(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::BrokenPipe {
        io::Error::new(io::ErrorKind::BrokenPipe, ReaderGone)
    } else {
        e
    }
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf).map_err(mark)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush().map_err(mark)
    }
}

/// Prints a server's readiness line (`listening on ...`) for whoever started it: a
/// script, a test harness, the demo. Unlike a command's result, nobody may depend on it
/// being read: a standard output whose reader has gone (a pipe to a log shipper that
/// exited, `serve | head -1`) must not stop a server, and `println!` panicked there at
/// start. The log line says the same, so a failure is ignored.
pub fn announce(line: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// A line on standard error (a warning, a command's progress, its error) that a reader
/// gone from it cannot turn into a crash: `eprintln!` panicked (exit 101) when `status
/// 2>&1 | head -2` had closed the pipe before a warning after the table. What stderr
/// says is for whoever reads it, and a command's result is on standard output.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        let _ = ::std::writeln!(::std::io::stderr(), $($arg)*);
    }};
}

/// The warning [`warn_not_kept`] prints for `spec`, if any: apart, so a test reads it.
pub fn not_kept_warning(spec: &tether_protocol::SearchSpec) -> Option<String> {
    let names = spec.names_not_kept();
    if names.is_empty() {
        return None;
    }
    let (verb, it) = if names.len() == 1 { ("is", "it") } else { ("are", "them") };
    Some(format!(
        "warning: {} {verb} maintained by an LDAP server and not kept by Tether (see docs/ldif.md): no entry \
         has a value of {it}, so a filter on {it} matches nothing",
        names.join(", ")
    ))
}

/// Warns on standard error of the attributes a command's search names that a server
/// maintains and Tether does not keep ([`names_not_kept`](tether_protocol::SearchSpec::names_not_kept)): a filter on
/// `modifyTimestamp`, carried over from LDAP habits, matched nothing without a word.
pub fn warn_not_kept(spec: &tether_protocol::SearchSpec) {
    if let Some(warning) = not_kept_warning(spec) {
        say!("{warning}");
    }
}

/// Whether `error` (or one of its causes) is standard output's reader having gone away:
/// the command has nobody left to answer, and ends with success.
pub fn reader_gone(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(c) = cause {
        if c.downcast_ref::<io::Error>().and_then(|io| io.get_ref()).is_some_and(|inner| inner.is::<ReaderGone>()) {
            return true;
        }
        cause = c.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A context line over a cause, as anyhow's `context` and our error enums make.
    #[derive(Debug, thiserror::Error)]
    #[error("writing the reply")]
    struct Context(#[source] io::Error);

    #[test]
    fn only_standard_output_s_broken_pipe_reads_as_its_reader_gone() {
        let gone = mark(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(reader_gone(&Context(gone)), "through a cause");
        // A socket's broken pipe (the provider went away mid-command) is a failure.
        assert!(!reader_gone(&Context(io::Error::from(io::ErrorKind::BrokenPipe))));
        let full = mark(io::Error::from(io::ErrorKind::StorageFull));
        assert_eq!(full.kind(), io::ErrorKind::StorageFull, "other errors pass as they were");
        assert!(!reader_gone(&Context(full)));
    }

    #[test]
    fn a_search_naming_no_maintained_attribute_is_not_warned_about() {
        use tether_protocol::{Dn, SearchSpec};
        let spec = |filter: &str| SearchSpec {
            filter: filter.parse().unwrap(),
            ..SearchSpec::subtree(Dn::parse("dc=example,dc=com").unwrap())
        };
        assert_eq!(not_kept_warning(&spec("(&(cn=x)(entryUUID=y))")), None);
        let one = not_kept_warning(&spec("(modifyTimestamp>=2020)")).unwrap();
        assert!(one.starts_with("warning: modifyTimestamp is maintained by an LDAP server"), "{one}");
        assert!(one.ends_with("so a filter on it matches nothing"), "{one}");
        let two = not_kept_warning(&spec("(|(modifyTimestamp>=2020)(entryCSN=*))")).unwrap();
        assert!(two.starts_with("warning: modifyTimestamp, entryCSN are maintained"), "{two}");
        assert!(two.ends_with("so a filter on them matches nothing"), "{two}");
    }
}

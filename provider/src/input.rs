//! Where the LDIF of `load` and `write` comes from: a file, or standard input when the
//! file is `-`, as slapadd and ldapmodify take theirs (`slapcat | tether-provider load
//! -c F -`, a script's here-document into `write`). Messages name standard input
//! `<stdin>`, with the line as for a file.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// What the command line names `-`.
const STDIN: &str = "-";

/// An LDIF input, readable as many times as its reader needs.
#[derive(Debug)]
pub struct Input {
    /// The file to read: the one named, or standard input's copy.
    path: PathBuf,
    /// How messages name it.
    shown: String,
    /// Standard input's copy, removed when the input is dropped.
    _spool: Option<tempfile::TempPath>,
}

impl Input {
    /// The file `arg` names. `-` is standard input, copied first to a temporary file
    /// (in `TMPDIR`), since `load` reads its input twice: once to check every record,
    /// once to write.
    pub fn open(arg: &Path) -> Result<Self> {
        if arg != Path::new(STDIN) {
            return Ok(Self { path: arg.to_owned(), shown: arg.display().to_string(), _spool: None });
        }
        let mut spool = tempfile::Builder::new()
            .prefix("tether-stdin-")
            .suffix(".ldif")
            .tempfile()
            .context("creating a temporary file for standard input (is TMPDIR writable?)")?;
        std::io::copy(&mut std::io::stdin().lock(), spool.as_file_mut())
            .with_context(|| format!("copying standard input to {}", spool.path().display()))?;
        let spool = spool.into_temp_path();
        Ok(Self { path: spool.to_path_buf(), shown: "<stdin>".to_owned(), _spool: Some(spool) })
    }

    /// The file to read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The input's name in messages (`<stdin>`, or the file as given).
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// The whole input as text, for a reader that parses it at once.
    pub fn read_to_string(&self) -> Result<String> {
        let mut text = String::new();
        std::fs::File::open(&self.path)
            .and_then(|mut f| f.read_to_string(&mut text))
            .with_context(|| format!("reading {}", self.shown))?;
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_read_where_it_is_and_named_as_given() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.ldif");
        std::fs::write(&file, "dn: dc=example\n").unwrap();
        let input = Input::open(&file).unwrap();
        assert_eq!((input.path(), input.shown()), (file.as_path(), file.display().to_string().as_str()));
        assert_eq!(input.read_to_string().unwrap(), "dn: dc=example\n");
        let missing = Input::open(&dir.path().join("none.ldif")).unwrap().read_to_string().unwrap_err();
        assert!(format!("{missing:#}").contains("none.ldif"), "{missing:#}");
    }
}

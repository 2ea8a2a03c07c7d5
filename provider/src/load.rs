//! `tether-provider load`: the offline bulk loader (provider stopped).
//!
//! Two passes so that a bad file changes nothing: the first reads the whole file and
//! checks every record (syntax, suffix, duplicates, a parent for every entry, in the
//! store or the file, and what [`Directory::check_new_entry`] checks: objectClass, RDN
//! values, a size that replicates); only then does the second write, in large transactions through
//! [`Directory::bulk_add`]. Files that list children before parents (as slapcat output
//! of some trees does) are sorted into tree order in memory; ordered files stream.

use std::collections::HashSet;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use anyhow::{bail, Context, Result};
use tether_protocol::ldif::LdifReader;
use tether_protocol::{Attributes, Change, Dn};
use tether_store::{Directory, Refusal, StoreError};

/// Entries per load transaction.
const LOAD_BATCH: usize = 2_000;

/// What a load does with a record whose DN is already in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Refuse the file (the default: a load adds a directory, it does not merge one).
    Refuse,
    /// Leave the entry as it is and load the rest: how a load that a storage failure
    /// cut short, after some of its transactions committed, is finished by running it
    /// again (`--skip-existing`).
    Skip,
}

/// What a load did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadReport {
    /// Entries added.
    pub entries: usize,
    /// Records left out because their DN was already in the store ([`Existing::Skip`]).
    pub skipped: usize,
    /// Whether the file had to be sorted into tree order.
    pub sorted: bool,
}

fn records(file: &Path) -> Result<impl Iterator<Item = Result<(usize, Dn, Attributes)>> + '_> {
    let f = File::open(file).with_context(|| format!("opening {}", file.display()))?;
    Ok(LdifReader::new(BufReader::new(f)).map(move |r| {
        let record = r.with_context(|| format!("{}", file.display()))?;
        let line = record.line();
        match record.into_change() {
            Change::Add { dn, attrs } => Ok((line, dn, attrs)),
            other => bail!("{}:{line}: a {} record cannot be bulk-loaded; use `write`", file.display(), other.kind()),
        }
    }))
}

/// Loads `file` into the store at `data_dir`: nothing if the file is refused (see the
/// module docs). A storage failure while writing (a full disk) keeps the transactions
/// that committed before it, and the error says how many entries that is and how to
/// finish: run the same load with `existing` = [`Existing::Skip`].
pub fn load(dir: &Directory, file: &Path, existing: Existing) -> Result<LoadReport> {
    let suffix = dir.suffix().clone();
    // Pass 1: check everything; remember names (normalized DNs only, not entries).
    let mut names: HashSet<Dn> = HashSet::new();
    let mut pending_parents: Vec<(usize, Dn)> = Vec::new();
    let mut ordered = true;
    for item in records(file)? {
        let (line, dn, attrs) = item?;
        let at = || format!("{}:{line}: {dn}", file.display());
        if !dn.is_descendant_of(&suffix) {
            bail!("{}: outside the suffix {suffix}", at());
        }
        match Directory::check_new_entry(&dn, &attrs) {
            Ok(()) => {}
            // `at()` names the entry already.
            Err(StoreError::Refused(Refusal::InvalidChange { reason, .. })) => bail!("{}: {reason}", at()),
            Err(e) => bail!("{}: {e}", at()),
        }
        if names.contains(&dn) {
            bail!("{}: entry appears twice in the file", at());
        }
        if existing == Existing::Refuse && dir.entries().contains(&dn)? {
            bail!("{}: entry already exists (to finish a load cut short, run it again with --skip-existing)", at());
        }
        if dn != suffix {
            let parent = dn.parent().unwrap_or_default();
            if !names.contains(&parent) && !dir.entries().contains(&parent)? {
                ordered = false;
                pending_parents.push((line, dn.clone()));
            }
        }
        names.insert(dn);
    }
    for (line, dn) in &pending_parents {
        let parent = dn.parent().unwrap_or_default();
        if !names.contains(&parent) && !dir.entries().contains(&parent)? {
            bail!("{}:{line}: {dn}: parent {parent} is neither in the store nor in the file", file.display());
        }
    }
    drop(names);
    // Pass 2: write.
    let (mut total, mut skipped) = (0, 0);
    let mut batch = Vec::with_capacity(LOAD_BATCH);
    let mut flush = |batch: &mut Vec<(Dn, Attributes)>| -> Result<()> {
        if !batch.is_empty() {
            if let Err(e) = dir.bulk_add(batch) {
                return Err(e).with_context(|| {
                    format!(
                        "loading a batch; the {total} entries loaded before it may be in the store: fix the \
                         cause, then run the same load again with --skip-existing to add the rest"
                    )
                });
            }
            total += batch.len();
            batch.clear();
        }
        Ok(())
    };
    // A record to write, or one to leave out as already in the store (only with
    // `Existing::Skip`: pass 1 refused it otherwise).
    let mut wanted = |dn: &Dn| -> Result<bool> {
        let there = existing == Existing::Skip && dir.entries().contains(dn)?;
        skipped += usize::from(there);
        Ok(!there)
    };
    if ordered {
        for item in records(file)? {
            let (_, dn, attrs) = item?;
            if !wanted(&dn)? {
                continue;
            }
            batch.push((dn, attrs));
            if batch.len() >= LOAD_BATCH {
                flush(&mut batch)?;
            }
        }
    } else {
        let mut all = Vec::new();
        for item in records(file)? {
            let (_, dn, attrs) = item?;
            if wanted(&dn)? {
                all.push((dn, attrs));
            }
        }
        all.sort_by(|a: &(Dn, Attributes), b| a.0.cmp(&b.0));
        for chunk in all.chunks(LOAD_BATCH) {
            batch.extend_from_slice(chunk);
            flush(&mut batch)?;
        }
    }
    flush(&mut batch)?;
    Ok(LoadReport { entries: total, skipped, sorted: !ordered })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// An entry that would be too large to replicate, after more entries than one load
    /// transaction takes: refused with its line before anything is written.
    #[test]
    fn an_entry_too_large_to_replicate_is_refused_before_any_batch_is_written() {
        use std::fmt::Write as _;
        let tmp = tempfile::tempdir().unwrap();
        let dir = Directory::open(&tmp.path().join("store"), &Dn::parse("dc=example,dc=com").unwrap()).unwrap();
        let mut text = String::from("dn: dc=example,dc=com\nobjectClass: domain\ndc: example\n\n");
        for i in 0..LOAD_BATCH + 500 {
            let _ = write!(text, "dn: cn=p{i},dc=example,dc=com\nobjectClass: person\ncn: p{i}\nsn: s\n\n");
        }
        let line = text.lines().count() + 1;
        let _ = write!(
            text,
            "dn: cn=big,dc=example,dc=com\nobjectClass: person\ncn: big\nsn: {}\n",
            "x".repeat(tether_protocol::MAX_ENTRY)
        );
        let file = tmp.path().join("big.ldif");
        std::fs::write(&file, text).unwrap();
        let err = load(&dir, &file, Existing::Refuse).unwrap_err().to_string();
        assert!(err.contains(&format!("big.ldif:{line}: cn=big,dc=example,dc=com: the entry would take")), "{err}");
        assert_eq!(dir.entry_count().unwrap(), 0, "nothing was written");
    }

    /// A load that a storage failure cut short keeps the transactions that committed;
    /// running it again is refused, naming the way out, and with `--skip-existing` adds
    /// exactly the rest.
    #[test]
    fn a_load_cut_short_is_finished_by_running_it_again_with_skip_existing() {
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let tmp = tempfile::tempdir().unwrap();
        let dir = Directory::open(&tmp.path().join("p"), &Dn::parse("dc=example,dc=com").unwrap()).unwrap();
        let whole = examples.join("sample.ldif");
        // What the committed transactions of a cut-short load leave: the file's first
        // records (parents first, as the sample lists them).
        let text = std::fs::read_to_string(&whole).unwrap();
        let first: String = text.split("\n\n").take(1200).map(|r| format!("{r}\n\n")).collect();
        let part = tmp.path().join("part.ldif");
        std::fs::write(&part, first).unwrap();
        let done = load(&dir, &part, Existing::Refuse).unwrap().entries;
        assert!(done > 1000, "{done}");

        let err = load(&dir, &whole, Existing::Refuse).unwrap_err().to_string();
        assert!(
            err.contains("entry already exists (to finish a load cut short, run it again with --skip-existing)"),
            "{err}"
        );
        assert_eq!(dir.entry_count().unwrap(), done as u64, "the refused load wrote nothing");
        let rest = load(&dir, &whole, Existing::Skip).unwrap();
        assert_eq!((rest.entries, rest.skipped), (2968 - done, done));
        assert_eq!(dir.entry_count().unwrap(), 2968);
        assert_eq!(load(&dir, &whole, Existing::Skip).unwrap().entries, 0, "nothing left to add");
    }

    /// The README's walk-through: `load` of the sample, then `write` of the example
    /// change records, each of which must commit against it.
    #[test]
    fn the_examples_load_and_their_change_records_all_commit() {
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let tmp = tempfile::tempdir().unwrap();
        let dir = Directory::open(tmp.path(), &Dn::parse("dc=example,dc=com").unwrap()).unwrap();
        let report = load(&dir, &examples.join("sample.ldif"), Existing::Refuse).unwrap();
        assert_eq!(report, LoadReport { entries: 2968, skipped: 0, sorted: false });

        let text = std::fs::read_to_string(examples.join("changes.ldif")).unwrap();
        let records = tether_protocol::ldif::reader::parse_str(&text).unwrap();
        let kinds: Vec<_> = records.iter().map(|r| r.clone().into_change().kind()).collect();
        assert_eq!(kinds, ["add", "modify", "modify", "modrdn", "delete"]);
        for record in records {
            let line = record.line();
            dir.write(&record.into_change()).unwrap_or_else(|e| panic!("changes.ldif:{line}: {e}"));
        }
        assert_eq!(dir.entry_count().unwrap(), 2968);
    }
}

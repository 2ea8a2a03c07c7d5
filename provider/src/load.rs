//! `tether-provider load`: the offline bulk loader (provider stopped).
//!
//! Two passes so that a bad file changes nothing: the first reads the whole file and
//! checks every record (syntax, suffix, duplicates, a parent for every entry, in the
//! store or the file); only then does the second write, in large transactions through
//! [`Directory::bulk_add`]. Files that list children before parents (as slapcat output
//! of some trees does) are sorted into tree order in memory; ordered files stream.

use std::collections::HashSet;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use anyhow::{bail, Context, Result};
use tether_protocol::ldif::LdifReader;
use tether_protocol::{Attributes, Change, Dn};
use tether_store::Directory;

/// Entries per load transaction.
const LOAD_BATCH: usize = 2_000;

/// What a load did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadReport {
    /// Entries added.
    pub entries: usize,
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

/// Loads `file` into the store at `data_dir`, all or nothing (see the module docs).
pub fn load(dir: &Directory, file: &Path) -> Result<LoadReport> {
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
        if attrs.values("objectClass").is_empty() {
            bail!("{}: an entry must have an objectClass", at());
        }
        if names.contains(&dn) || dir.entries().contains(&dn)? {
            bail!("{}: entry already exists", at());
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
    let mut total = 0;
    let mut batch = Vec::with_capacity(LOAD_BATCH);
    let mut flush = |batch: &mut Vec<(Dn, Attributes)>| -> Result<()> {
        if !batch.is_empty() {
            dir.bulk_add(batch).context("loading a batch")?;
            total += batch.len();
            batch.clear();
        }
        Ok(())
    };
    if ordered {
        for item in records(file)? {
            let (_, dn, attrs) = item?;
            batch.push((dn, attrs));
            if batch.len() >= LOAD_BATCH {
                flush(&mut batch)?;
            }
        }
    } else {
        let mut all: Vec<(Dn, Attributes)> =
            records(file)?.map(|r| r.map(|(_, d, a)| (d, a))).collect::<Result<_>>()?;
        all.sort_by(|a, b| a.0.cmp(&b.0));
        for chunk in all.chunks(LOAD_BATCH) {
            batch.extend_from_slice(chunk);
            flush(&mut batch)?;
        }
    }
    flush(&mut batch)?;
    Ok(LoadReport { entries: total, sorted: !ordered })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// The README's walk-through: `load` of the sample, then `write` of the example
    /// change records, each of which must commit against it.
    #[test]
    fn the_examples_load_and_their_change_records_all_commit() {
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let tmp = tempfile::tempdir().unwrap();
        let dir = Directory::open(tmp.path(), &Dn::parse("dc=example,dc=com").unwrap()).unwrap();
        let report = load(&dir, &examples.join("sample.ldif")).unwrap();
        assert_eq!(report, LoadReport { entries: 2968, sorted: false });

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

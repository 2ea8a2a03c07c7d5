//! An entry set: the pair of sled trees that hold one tree of entries.
//!
//! Entries are clustered by DN in tree order (`entries`: [`Dn::tree_key`] -> entry), so a
//! subtree is one contiguous key range and a full refresh or a canonical `search` is a
//! sequential scan that already comes out parents first. A second tree maps each
//! entryUUID to its DN key (`uuids`), which is how replication finds an entry after a
//! rename. The provider's directory and every consumer replica are entry sets.

use sled::transaction::{ConflictableTransactionError, TransactionalTree};
use sled::{IVec, Tree};
use tether_protocol::{Csn, Dn, Entry, EntryHead, EntryUuid, PartialEntry, Scope, SearchSpec};

use crate::error::{Result, StoreError};
use crate::record::{decode, encode};

/// A DN tree key ([`Dn::tree_key`]), as a page cursor.
pub type DnKey = Vec<u8>;

/// Name used in errors for the entries tree.
pub(crate) const ENTRIES: &str = "entries";

/// Two trees forming one set of entries (see the module docs).
#[derive(Debug, Clone)]
pub struct EntrySet {
    /// DN tree key -> encoded [`Entry`].
    pub(crate) entries: Tree,
    /// entryUUID -> DN tree key.
    pub(crate) uuids: Tree,
}

/// A search base that names no entry (see [`EntrySet::missing_base`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no entry {base}{}", match nearest {
    Some(dn) => format!(" (the nearest entry above it is {dn})"),
    None => " (nor any entry above it)".to_owned(),
})]
pub struct NoSuchBase {
    /// The base asked for.
    pub base: Dn,
    /// The nearest entry above it that exists.
    pub nearest: Option<Dn>,
}

/// An entry as it is stored: found by UUID for a replica, or planned by the writer.
#[derive(Debug, Clone)]
pub struct Located {
    /// Its DN key.
    pub key: Vec<u8>,
    /// Its record as stored.
    pub bytes: sled::IVec,
    /// The CSN of its last change (from the record's head).
    pub csn: Csn,
}

impl Located {
    /// `entry` as it is to be stored: its DN key and its record, encoded once so that
    /// the transaction writing it (which sled may run more than once) and the persist
    /// feed share the bytes.
    pub(crate) fn encode(entry: &Entry) -> Result<Self> {
        let bytes = IVec::from(encode(ENTRIES, entry)?);
        Ok(Self { key: entry.dn.tree_key(), bytes, csn: entry.csn })
    }

    /// [`Located::encode`] of an entry split by [`PartialEntry`]: the same bytes.
    pub(crate) fn encode_partial(partial: &PartialEntry<'_>) -> Result<Self> {
        let bytes = partial.encode().map_err(|source| StoreError::Codec { tree: ENTRIES, source })?;
        let entry = &partial.entry;
        Ok(Self { key: entry.dn.tree_key(), bytes: IVec::from(bytes), csn: entry.csn })
    }
}

/// What [`EntrySet::spelling`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spelling {
    /// No entry has that name.
    Absent,
    /// The entry is stored under the name as given.
    AsGiven,
    /// The entry is stored under this spelling of the name.
    Otherwise(Dn),
}

impl EntrySet {
    /// Wraps two opened trees.
    pub(crate) fn new(entries: Tree, uuids: Tree) -> Self {
        Self { entries, uuids }
    }

    /// The entry named `dn`.
    pub fn get(&self, dn: &Dn) -> Result<Option<Entry>> {
        self.get_encoded(dn)?.map(|v| decode(ENTRIES, &v)).transpose()
    }

    /// The record of the entry named `dn`, as stored.
    pub(crate) fn get_encoded(&self, dn: &Dn) -> Result<Option<IVec>> {
        Ok(self.entries.get(dn.tree_key())?)
    }

    /// The entry with `uuid`, wherever it now sits.
    pub fn get_by_uuid(&self, uuid: &EntryUuid) -> Result<Option<Entry>> {
        let Some(key) = self.uuids.get(uuid.as_bytes())? else { return Ok(None) };
        let Some(bytes) = self.entries.get(&key)? else { return Ok(None) };
        let entry: Entry = decode(ENTRIES, &bytes)?;
        // A replica may hold a UUID index entry whose DN another entry has since taken
        // (see `replica`); the record's own UUID is the truth.
        Ok((entry.uuid == *uuid).then_some(entry))
    }

    /// How the entry named `dn` is spelled in the store (as when it was made, whatever
    /// spelling `dn` has: the same entry under `OU=People` and `ou=people`), or that
    /// there is none.
    pub fn spelling(&self, dn: &Dn) -> Result<Spelling> {
        let Some(bytes) = self.get_encoded(dn)? else { return Ok(Spelling::Absent) };
        let head = EntryHead::decode(&bytes).map_err(|source| StoreError::Codec { tree: ENTRIES, source })?;
        // Nearly always spelled alike: rendering `dn` is cheaper than parsing the head.
        if head.dn == dn.to_string() {
            return Ok(Spelling::AsGiven);
        }
        let parsed = Dn::parse(head.dn).map_err(|e| StoreError::Corrupt(format!("stored DN {:?}: {e}", head.dn)))?;
        Ok(Spelling::Otherwise(parsed))
    }

    /// Whether `dn` exists.
    pub fn contains(&self, dn: &Dn) -> Result<bool> {
        Ok(self.entries.contains_key(dn.tree_key())?)
    }

    /// Why `base` cannot be searched, if it names no entry: LDAP's `noSuchObject`, with
    /// the nearest entry above it (LDAP's matched DN), so that a typo in one RDN of a
    /// long DN shows where the name went wrong instead of printing nothing.
    pub fn missing_base(&self, base: &Dn) -> Result<Option<NoSuchBase>> {
        if self.contains(base)? {
            return Ok(None);
        }
        let mut above = base.parent();
        while let Some(dn) = above {
            if self.contains(&dn)? {
                return Ok(Some(NoSuchBase { base: base.clone(), nearest: Some(dn) }));
            }
            above = dn.parent();
        }
        Ok(Some(NoSuchBase { base: base.clone(), nearest: None }))
    }

    /// Whether the entry named `dn` has at least one child.
    pub fn has_children(&self, dn: &Dn) -> Result<bool> {
        let prefix = dn.tree_key();
        for item in self.entries.range(prefix.as_slice()..) {
            let (key, _) = item?;
            if key.as_ref() == prefix.as_slice() {
                continue;
            }
            return Ok(key.starts_with(&prefix));
        }
        Ok(false)
    }

    /// Number of entries, by a full scan: the stores keep counts for status
    /// ([`crate::Directory::entry_count`], [`crate::Replica::len`]); this is how a store
    /// without one is counted once and what tests check those counts against. It counts
    /// the entries tree, not the UUID index, which in a replica may still hold the UUID
    /// of an entry whose DN a newer one took (see `replica`).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries in `spec`'s region, in tree order, streamed from the store: memory use does
    /// not grow with the result.
    pub fn search<'a>(&self, spec: &'a SearchSpec) -> impl Iterator<Item = Result<Entry>> + 'a {
        let prefix = spec.base.tree_key();
        let depth = spec.base.depth();
        let iter: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> = match spec.scope {
            Scope::Base => Box::new(
                self.entries.get(&prefix).transpose().map(|r| r.map(|v| (prefix.clone().into(), v))).into_iter(),
            ),
            Scope::One | Scope::Subtree => Box::new(self.entries.scan_prefix(prefix)),
        };
        iter.filter_map(move |item| {
            let entry = match item {
                Ok((_, v)) => decode::<Entry>(ENTRIES, &v),
                Err(e) => return Some(Err(StoreError::from(e))),
            };
            match entry {
                Ok(e) if spec.scope == Scope::One && e.dn.depth() != depth + 1 => None,
                Ok(e) if spec.filter.matches(&e) => Some(Ok(spec.project(e))),
                Ok(_) => None,
                Err(e) => Some(Err(e)),
            }
        })
    }

    /// One page of [`EntrySet::search`]: up to `max` entries of `spec`'s region after the
    /// DN key `after` (exclusive), and the key to continue from (`None` once the region
    /// is exhausted). Refreshes stream through pages so neither side ever holds the whole
    /// region, and a cursor is just a key, which survives concurrent writes.
    pub fn search_page(
        &self,
        spec: &SearchSpec,
        after: Option<&[u8]>,
        max: usize,
    ) -> Result<(Vec<Entry>, Option<DnKey>)> {
        let prefix = spec.base.tree_key();
        if spec.scope == Scope::Base {
            if after.is_some() {
                return Ok((Vec::new(), None));
            }
            let found = self.get(&spec.base)?.filter(|e| spec.filter.matches(e)).map(|e| spec.project(e));
            return Ok((found.into_iter().collect(), None));
        }
        self.page_of(
            &prefix,
            after,
            max,
            usize::MAX,
            |_| 0,
            |key, value| {
                if !spec.scope.contains_key(&prefix, key) {
                    return Ok(None);
                }
                let entry: Entry = decode(ENTRIES, value)?;
                Ok(spec.filter.matches(&entry).then(|| spec.project(entry)))
            },
        )
    }

    /// [`EntrySet::search_page`] with each entry as the codec encodes it, ready to go
    /// into a message ([`tether_protocol::encoded`]). For a region that takes whole
    /// entries ([`SearchSpec::takes_whole_entries`]) the stored bytes are passed on as
    /// they are, deciding the scope from the key: a refresh then costs the provider a
    /// copy per entry instead of a decode and an encode.
    ///
    /// The page ends at `max` entries or once it holds `max_bytes` (always at least one
    /// entry): counted in entries alone, a page of entries near the frame limit held
    /// `max` of them at once, 16 MiB each, before the caller split them into messages.
    pub fn encoded_page(
        &self,
        spec: &SearchSpec,
        after: Option<&[u8]>,
        max: usize,
        max_bytes: usize,
    ) -> Result<(Vec<Vec<u8>>, Option<DnKey>)> {
        if spec.scope == Scope::Base {
            let (page, next) = self.search_page(spec, after, max)?;
            let encoded = page.iter().map(|e| encode(ENTRIES, e)).collect::<Result<_>>()?;
            return Ok((encoded, next));
        }
        let prefix = spec.base.tree_key();
        let whole = spec.takes_whole_entries();
        self.page_of(&prefix, after, max, max_bytes, Vec::len, |key, value| {
            if !spec.scope.contains_key(&prefix, key) {
                return Ok(None);
            }
            if whole {
                return Ok(Some(value.to_vec()));
            }
            let entry: Entry = decode(ENTRIES, value)?;
            spec.filter.matches(&entry).then(|| encode(ENTRIES, &spec.project(entry))).transpose()
        })
    }

    /// Up to `max` items of the records under the key `prefix` after the key `after`
    /// (exclusive), in tree order, ending early once the items weigh `max_bytes` or more
    /// by `weigh`; `take` makes an item of a record or skips it. Returns the key to
    /// continue from, `None` once the prefix is exhausted.
    fn page_of<T>(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        max: usize,
        max_bytes: usize,
        weigh: impl Fn(&T) -> usize,
        mut take: impl FnMut(&[u8], &[u8]) -> Result<Option<T>>,
    ) -> Result<(Vec<T>, Option<DnKey>)> {
        let range = match after {
            Some(key) => self.entries.range((std::ops::Bound::Excluded(key.to_vec()), std::ops::Bound::Unbounded)),
            None => self.entries.range(prefix..),
        };
        let mut page = Vec::new();
        let mut bytes = 0usize;
        for item in range {
            let (key, value) = item?;
            if !key.starts_with(prefix) {
                return Ok((page, None));
            }
            if let Some(t) = take(&key, &value)? {
                bytes = bytes.saturating_add(weigh(&t));
                page.push(t);
                if page.len() >= max || bytes >= max_bytes {
                    return Ok((page, Some(key.to_vec())));
                }
            }
        }
        Ok((page, None))
    }

    /// Where the entry `uuid` is stored and its record as stored, looking at `hint` (a
    /// DN key it was last seen at) before the UUID index. The record's own UUID is the
    /// truth, as in [`EntrySet::get_by_uuid`].
    pub fn locate_encoded(&self, uuid: &EntryUuid, hint: Option<&[u8]>) -> Result<Option<Located>> {
        let head_csn = |bytes: &[u8]| -> Result<Option<Csn>> {
            let head = EntryHead::decode(bytes).map_err(|source| StoreError::Codec { tree: ENTRIES, source })?;
            Ok((head.uuid == *uuid).then_some(head.csn))
        };
        if let Some(key) = hint {
            if let Some(bytes) = self.entries.get(key)? {
                if let Some(csn) = head_csn(&bytes)? {
                    return Ok(Some(Located { key: key.to_vec(), bytes, csn }));
                }
            }
        }
        let Some(key) = self.uuids.get(uuid.as_bytes())? else { return Ok(None) };
        let Some(bytes) = self.entries.get(&key)? else { return Ok(None) };
        Ok(head_csn(&bytes)?.map(|csn| Located { key: key.to_vec(), bytes, csn }))
    }

    /// Every entry in tree order.
    pub fn iter(&self) -> impl Iterator<Item = Result<Entry>> {
        self.entries.iter().map(|item| {
            let (_, v) = item?;
            decode(ENTRIES, &v)
        })
    }
}

/// The two trees of an [`EntrySet`] inside a sled transaction.
pub(crate) struct TxEntrySet<'a> {
    /// DN tree key -> entry.
    pub(crate) entries: &'a TransactionalTree,
    /// entryUUID -> DN tree key.
    pub(crate) uuids: &'a TransactionalTree,
}

/// Error type of code running inside a sled transaction.
pub(crate) type TxError = ConflictableTransactionError<StoreError>;

impl TxEntrySet<'_> {
    /// Where the entry `uuid` is stored and the CSN of its state there, reading only the
    /// record's head (see [`EntryHead`]). Like [`EntrySet::get_by_uuid`] it trusts
    /// the record's own UUID over the index.
    pub(crate) fn locate(&self, uuid: &EntryUuid) -> Result<Option<(Vec<u8>, Csn)>, TxError> {
        let Some(key) = self.uuids.get(uuid.as_bytes())? else { return Ok(None) };
        Ok(self.head_at(&key)?.filter(|(u, _)| u == uuid).map(|(_, csn)| (key.to_vec(), csn)))
    }

    /// The UUID and CSN of the record under a DN key, if any, reading only its head.
    pub(crate) fn head_at(&self, key: &[u8]) -> Result<Option<(EntryUuid, Csn)>, TxError> {
        let Some(bytes) = self.entries.get(key)? else { return Ok(None) };
        let head = EntryHead::decode(&bytes)
            .map_err(|source| ConflictableTransactionError::Abort(StoreError::Codec { tree: ENTRIES, source }))?;
        Ok(Some((head.uuid, head.csn)))
    }

    /// Writes the entry `uuid` encoded as `bytes` under `key` (its DN's tree key),
    /// removing its record at `old_key` if it moved.
    pub(crate) fn put_encoded(
        &self,
        old_key: Option<&[u8]>,
        key: Vec<u8>,
        uuid: &EntryUuid,
        bytes: impl Into<IVec>,
    ) -> Result<(), TxError> {
        if let Some(old) = old_key {
            if old != key.as_slice() {
                self.entries.remove(old)?;
            }
        }
        self.entries.insert(key.as_slice(), bytes)?;
        // Staying at its DN, the index already points here.
        if old_key != Some(key.as_slice()) {
            self.uuids.insert(uuid.as_bytes(), key)?;
        }
        Ok(())
    }

    /// Removes the entry `uuid` stored at `key`.
    pub(crate) fn remove(&self, key: &[u8], uuid: &EntryUuid) -> Result<(), TxError> {
        self.entries.remove(key)?;
        self.uuids.remove(uuid.as_bytes())?;
        Ok(())
    }
}

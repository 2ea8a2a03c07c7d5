//! What part of the tree a search or agreement covers: base DN, scope, filter and
//! attribute list.
//!
//! One type, [`SearchSpec`], serves both because an agreement's region is exactly a
//! search that never ends: the provider decides whether a change concerns a consumer
//! with the same test a search applies to an entry, so a replica always holds what a
//! search of its region on the provider returns. A region that takes entries whole
//! ([`SearchSpec::takes_whole_entries`]) also lets the provider send stored bytes as
//! they are, without decoding them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::dn::{Dn, TREE_KEY_SEPARATOR};
use crate::entry::operational::{operational_name, ENTRY_UUID};
use crate::entry::{attribute_key, Entry};
use crate::filter::Filter;

/// How far below the base a search reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Scope {
    /// The base entry only.
    Base,
    /// The base's immediate children (not the base itself), as LDAP's `one`.
    One,
    /// The base and everything below it.
    Subtree,
}

impl Scope {
    /// Whether `dn` lies in this scope under `base`.
    pub fn contains(self, base: &Dn, dn: &Dn) -> bool {
        match self {
            Scope::Base => dn == base,
            Scope::One => dn.is_child_of(base),
            Scope::Subtree => dn.is_descendant_of(base),
        }
    }

    /// [`Scope::contains`] on tree keys ([`Dn::tree_key`]) instead of DNs: a store scan
    /// decides it from the key alone, without decoding the entry. Every RDN in a key
    /// ends with the separator, so a child's key is its parent's plus one more RDN.
    pub fn contains_key(self, base_key: &[u8], key: &[u8]) -> bool {
        let Some(rest) = key.strip_prefix(base_key) else { return false };
        match self {
            Scope::Base => rest.is_empty(),
            Scope::One => rest.iter().filter(|&&b| b == TREE_KEY_SEPARATOR).count() == 1,
            Scope::Subtree => true,
        }
    }
}

/// Why a scope word was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid scope {0:?}: expected base, one (or onelevel) or subtree (or sub)")]
pub struct ScopeParseError(String);

impl FromStr for Scope {
    type Err = ScopeParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "base" => Ok(Scope::Base),
            "one" | "onelevel" => Ok(Scope::One),
            "sub" | "subtree" => Ok(Scope::Subtree),
            _ => Err(ScopeParseError(s.to_owned())),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scope::Base => "base",
            Scope::One => "one",
            Scope::Subtree => "subtree",
        })
    }
}

/// A region of the directory: the entries under `base` within `scope` that match
/// `filter`. It is both a search request and what a replication agreement covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchSpec {
    /// Where the region starts.
    pub base: Dn,
    /// How far below `base` it reaches.
    pub scope: Scope,
    /// Which entries in reach belong to it.
    pub filter: Filter,
    /// Attributes to return; empty means all.
    pub attrs: Vec<String>,
}

impl SearchSpec {
    /// Every entry under `base`.
    pub fn subtree(base: Dn) -> Self {
        Self { base, scope: Scope::Subtree, filter: Filter::match_all(), attrs: Vec::new() }
    }

    /// Whether `other` is the same region, however it is spelled: attribute names
    /// compared without case, in the filter and in the list, the filter's values as its
    /// matching compares them ([`Filter::canonical`]), and the list as a set of
    /// attributes with their options in any order ([`attribute_key`]) that always holds
    /// `objectClass` (it is always kept) and never `entryUUID` (kept beside the
    /// attributes, whether or not the list names it). A replica whose region changes is
    /// reloaded in full and refused to searches until then; respelling its region in the
    /// configuration must cost neither. Compared as spelled at each start, so a region
    /// an older build recorded compares the same way.
    pub fn same_region(&self, other: &SearchSpec) -> bool {
        fn kept(attrs: &[String]) -> Option<std::collections::BTreeSet<String>> {
            (!attrs.is_empty()).then(|| {
                attrs
                    .iter()
                    .filter(|a| operational_name(a) != Some(ENTRY_UUID))
                    .map(|a| attribute_key(a))
                    .chain(["objectclass".to_owned()])
                    .collect()
            })
        }
        self.base == other.base
            && self.scope == other.scope
            && self.filter.canonical() == other.filter.canonical()
            && kept(&self.attrs) == kept(&other.attrs)
    }

    /// Whether every entry within reach belongs to the region whole: the filter is
    /// `(objectClass=*)`, which every stored entry matches (the directory refuses one
    /// without), and no attribute list trims it. A provider then sends the entries of
    /// such a region as they are stored, without decoding them.
    pub fn takes_whole_entries(&self) -> bool {
        let match_all = matches!(&self.filter, Filter::Present { attr } if attr.eq_ignore_ascii_case("objectClass"));
        match_all && self.attrs.is_empty()
    }

    /// Whether `entry` belongs to the region.
    pub fn contains(&self, entry: &Entry) -> bool {
        self.scope.contains(&self.base, &entry.dn) && self.filter.matches(entry)
    }

    /// Whether this region lies entirely inside `wider` as far as names go (the provider
    /// checks an agreement's request against the widest base it is allowed).
    pub fn is_within(&self, wider_base: &Dn) -> bool {
        self.base.is_descendant_of(wider_base)
    }

    /// The attributes the filter reads or the list names that a server maintains and
    /// Tether does not keep ([`crate::entry::operational::is_not_kept`]), as written,
    /// each once: no entry has a value of them.
    pub fn names_not_kept(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for name in self.filter.attributes().into_iter().chain(self.attrs.iter().map(String::as_str)) {
            if crate::entry::operational::is_not_kept(name) && !names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
                names.push(name);
            }
        }
        names
    }

    /// Trims an entry to the requested attributes (and their subtypes).
    pub fn project(&self, mut entry: Entry) -> Entry {
        if !self.attrs.is_empty() {
            entry.attrs.retain_named(&self.attrs);
        }
        entry
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A region respelled is the same region; one that selects other entries or keeps
    /// other attributes is not.
    #[test]
    fn a_region_is_the_same_however_its_names_are_spelled() {
        let spec = |base: &str, filter: &str, attrs: &[&str]| SearchSpec {
            base: Dn::parse(base).unwrap(),
            scope: Scope::Subtree,
            filter: filter.parse().unwrap(),
            attrs: attrs.iter().map(|a| (*a).to_owned()).collect(),
        };
        let region = spec("ou=people,dc=example,dc=com", "(&(objectClass=person)(sn=x*))", &["cn", "member"]);
        for same in [
            spec("OU=People,dc=example,dc=com", "(&(objectclass=person)(SN=x*))", &["member", "cn"]),
            spec("ou=people,dc=example,dc=com", "(&(objectClass=person)(sn=x*))", &["CN", "member", "objectClass"]),
            // Values as matching compares them: case and insignificant spaces.
            spec("ou=people,dc=example,dc=com", "(&(objectClass=Person)(sn=X*))", &["cn", "member"]),
            spec("ou=people,dc=example,dc=com", "(&(objectClass= PERSON )(sn=X*))", &["cn", "member"]),
        ] {
            assert!(region.same_region(&same), "{same:?}");
        }
        for other in [
            spec("ou=groups,dc=example,dc=com", "(&(objectClass=person)(sn=x*))", &["cn", "member"]),
            spec("ou=people,dc=example,dc=com", "(&(objectClass=person)(sn=y*))", &["cn", "member"]),
            spec("ou=people,dc=example,dc=com", "(&(objectClass=person)(sn=x*))", &["cn"]),
            spec("ou=people,dc=example,dc=com", "(&(objectClass=person)(sn=x*))", &[]),
            // A substring part's edge space is not insignificant: `(sn=x *)` does not
            // match "xavier".
            spec("ou=people,dc=example,dc=com", "(&(objectClass=person)(sn=x *))", &["cn", "member"]),
            spec("ou=people,dc=example,dc=com", "(&(objectClass=person)(sn=*x))", &["cn", "member"]),
        ] {
            assert!(!region.same_region(&other), "{other:?}");
        }
        // A list of objectClass alone keeps that one attribute, not all of them.
        let all = spec("dc=example,dc=com", "(objectClass=*)", &[]);
        assert!(!all.same_region(&spec("dc=example,dc=com", "(objectClass=*)", &["objectClass"])));
        let one_level = SearchSpec { scope: Scope::One, ..all.clone() };
        assert!(!all.same_region(&one_level));
    }

    /// Presence, ordering and approximate items respelled select the same entries, so a
    /// configuration that names `Mail` where it said `mail` must not cost a reload in
    /// full, whichever kind of item names it.
    #[test]
    fn a_region_is_the_same_however_the_names_in_any_kind_of_filter_item_are_spelled() {
        let spec = |filter: &str| SearchSpec {
            filter: filter.parse().unwrap(),
            ..SearchSpec::subtree(Dn::parse("dc=example,dc=com").unwrap())
        };
        for (filter, respelled) in [
            ("(mail=*)", "(Mail=*)"),
            ("(uidNumber>=1000)", "(UIDNUMBER>=1000)"),
            ("(uidNumber<=999)", "(uidnumber<=999)"),
            ("(cn~=ann)", "(CN~=ANN)"),
        ] {
            assert!(spec(filter).same_region(&spec(respelled)), "{filter} respelled {respelled}");
        }
    }

    /// A filter changed so that it selects other entries makes another region, which the
    /// replica must be reloaded for: an ordering turned round, and a middle substring
    /// part given an edge space (`(sn=* x*)` needs a word to start with "x", so it no
    /// longer matches "Max").
    #[test]
    fn a_region_is_another_when_an_ordering_turns_round_or_a_middle_part_gains_an_edge_space() {
        let spec = |filter: &str| SearchSpec {
            filter: filter.parse().unwrap(),
            ..SearchSpec::subtree(Dn::parse("dc=example,dc=com").unwrap())
        };
        let mut attrs = crate::Attributes::new();
        attrs.add("objectClass", ["person".into()]).unwrap();
        attrs.add("sn", ["Max".into()]).unwrap();
        attrs.add("uidNumber", ["5".into()]).unwrap();
        let max = crate::Entry {
            dn: Dn::parse("cn=max,dc=example,dc=com").unwrap(),
            uuid: crate::EntryUuid([7; 16]),
            csn: crate::Csn(1),
            attrs,
        };
        for (filter, changed) in [("(uidNumber<=999)", "(uidNumber>=999)"), ("(sn=*x*)", "(sn=* x*)")] {
            let (was, now) = (spec(filter), spec(changed));
            assert!(was.contains(&max) && !now.contains(&max), "{filter} and {changed} select other entries");
            assert!(!was.same_region(&now), "{filter} changed to {changed}");
            assert!(!now.same_region(&was), "{changed} changed to {filter}");
        }
    }

    /// The filter's operators are kept as they are: a region whose AND became an OR, or
    /// whose item lost its NOT, selects other entries and is another region.
    #[test]
    fn a_region_is_another_when_its_and_becomes_an_or_or_an_item_loses_its_not() {
        let spec = |filter: &str| SearchSpec {
            filter: filter.parse().unwrap(),
            ..SearchSpec::subtree(Dn::parse("dc=example,dc=com").unwrap())
        };
        for (filter, changed) in [
            ("(&(objectClass=person)(sn=x))", "(|(objectClass=person)(sn=x))"),
            ("(&(objectClass=person)(!(sn=x)))", "(&(objectClass=person)(sn=x))"),
        ] {
            assert!(!spec(filter).same_region(&spec(changed)), "{filter} changed to {changed}");
        }
    }

    /// An attribute's options in another order name the same attribute, and `entryUUID`
    /// in the list keeps nothing the list does not (every entry's UUID is kept beside its
    /// attributes, listed or not): respelled so, a region was reloaded in full.
    #[test]
    fn a_region_is_the_same_whatever_the_order_of_options_and_whether_it_names_entry_uuid() {
        let spec = |attrs: &[&str]| SearchSpec {
            attrs: attrs.iter().map(|a| (*a).to_owned()).collect(),
            ..SearchSpec::subtree(Dn::parse("ou=people,dc=example,dc=com").unwrap())
        };
        let region = spec(&["cn", "description;lang-en;x-draft"]);
        for same in [
            spec(&["cn", "description;x-draft;lang-en"]),
            spec(&["cn", "Description;X-Draft;Lang-EN"]),
            spec(&["cn", "description;lang-en;x-draft", "entryUUID"]),
            spec(&["cn", "description;lang-en;x-draft", "1.3.6.1.1.16.4"]),
        ] {
            assert!(region.same_region(&same), "{same:?}");
            assert!(same.same_region(&region), "{same:?}");
        }
        for other in [spec(&["cn", "description;lang-en"]), spec(&["cn", "description;lang-fr;x-draft"])] {
            assert!(!region.same_region(&other), "{other:?}");
        }
        // A list of entryUUID alone keeps objectClass, as a list of objectClass does,
        // and not every attribute, as no list does.
        assert!(spec(&["entryUUID"]).same_region(&spec(&["objectClass"])));
        assert!(!spec(&["entryUUID"]).same_region(&spec(&[])));
    }

    /// `--scope` and an agreement's `scope` take every word the refusal offers (and
    /// `--help` lists), in any case: LDAP tools spell the one-level scope `one` and
    /// `onelevel`, the subtree `sub` and `subtree`.
    #[test]
    fn every_scope_word_the_refusal_offers_is_read_in_any_case() {
        for (word, scope) in [
            ("base", Scope::Base),
            ("one", Scope::One),
            ("onelevel", Scope::One),
            ("sub", Scope::Subtree),
            ("subtree", Scope::Subtree),
        ] {
            assert_eq!(word.parse(), Ok(scope), "{word}");
            assert_eq!(word.to_ascii_uppercase().parse(), Ok(scope), "{word} in capitals");
        }
        let refused = "deep".parse::<Scope>().unwrap_err().to_string();
        assert_eq!(refused, "invalid scope \"deep\": expected base, one (or onelevel) or subtree (or sub)");
    }

    #[test]
    fn contains_key_agrees_with_contains() {
        let dns = [
            "dc=example,dc=com",
            "ou=people,dc=example,dc=com",
            "uid=a,ou=people,dc=example,dc=com",
            "cn=x+sn=y,uid=a,ou=people,dc=example,dc=com",
            "ou=peoplex,dc=example,dc=com",
            "uid=b,ou=peoplex,dc=example,dc=com",
            "cn=a\\,b,ou=people,dc=example,dc=com",
            "dc=com",
        ];
        let dns: Vec<Dn> = dns.iter().map(|s| Dn::parse(s).unwrap()).collect();
        for base in &dns {
            for dn in &dns {
                for scope in [Scope::Base, Scope::One, Scope::Subtree] {
                    assert_eq!(
                        scope.contains_key(&base.tree_key(), &dn.tree_key()),
                        scope.contains(base, dn),
                        "{scope:?} of {base} holding {dn}"
                    );
                }
            }
        }
    }

    /// What each scope reaches, named outright (the key test above holds the two tests
    /// to each other, so a misreading of `one` shared by both passed it): `one` is the
    /// base's children, neither the base nor anything deeper; `base` the base alone.
    #[test]
    fn one_level_reaches_the_base_s_children_and_neither_the_base_nor_their_children() {
        let base = Dn::parse("ou=people,dc=example,dc=com").unwrap();
        let tree = [
            ("ou=people,dc=example,dc=com", [true, false, true]),
            ("uid=a,ou=people,dc=example,dc=com", [false, true, true]),
            ("cn=x+sn=y,uid=a,ou=people,dc=example,dc=com", [false, false, true]),
            ("ou=peoplex,dc=example,dc=com", [false, false, false]),
            ("dc=example,dc=com", [false, false, false]),
        ];
        for (dn, [in_base, in_one, in_subtree]) in tree {
            let dn = Dn::parse(dn).unwrap();
            for (scope, expected) in [(Scope::Base, in_base), (Scope::One, in_one), (Scope::Subtree, in_subtree)] {
                assert_eq!(scope.contains(&base, &dn), expected, "{scope} of {base} holding {dn}");
                assert_eq!(scope.contains_key(&base.tree_key(), &dn.tree_key()), expected, "{scope} by key: {dn}");
            }
        }
    }

    /// A provider admits an agreement whose base lies at or below the widest base it is
    /// granted, and refuses one above it or beside it.
    #[test]
    fn a_region_is_within_a_base_at_or_above_its_own_and_not_one_below_or_beside_it() {
        let people = SearchSpec::subtree(Dn::parse("ou=people,dc=example,dc=com").unwrap());
        for wider in ["ou=people,dc=example,dc=com", "OU=People,dc=example,dc=com", "dc=example,dc=com", ""] {
            assert!(people.is_within(&Dn::parse(wider).unwrap()), "{wider:?}");
        }
        for other in
            ["uid=a,ou=people,dc=example,dc=com", "ou=groups,dc=example,dc=com", "ou=peoplex,dc=example,dc=com"]
        {
            assert!(!people.is_within(&Dn::parse(other).unwrap()), "{other:?}");
        }
    }

    /// RFC 4511 §4.5.1.8: an attribute list keeps the subtypes of what it names, as a
    /// filter reads them. Found by a walkthrough: a region filtering on
    /// `description;lang-en` and keeping it took an entry for its
    /// `description;lang-en;x-draft` value and then dropped that value, so the replica's
    /// own filter found nothing in it.
    #[test]
    fn an_attribute_list_keeps_the_subtypes_of_what_it_names_as_the_filter_reads_them() {
        let mut attrs = crate::Attributes::new();
        attrs.add("objectClass", ["document".into()]).unwrap();
        attrs.add("description;lang-en;x-draft", ["draft english".into()]).unwrap();
        attrs.add("description;lang-en", ["english".into()]).unwrap();
        attrs.add("description;lang-de", ["deutsch".into()]).unwrap();
        attrs.add("description", ["plain".into()]).unwrap();
        let entry = crate::Entry {
            dn: Dn::parse("cn=doc,dc=example,dc=com").unwrap(),
            uuid: crate::EntryUuid([7; 16]),
            csn: crate::Csn(1),
            attrs,
        };
        let spec = SearchSpec {
            base: Dn::parse("dc=example,dc=com").unwrap(),
            scope: Scope::Subtree,
            filter: "(description;lang-en=draft english)".parse().unwrap(),
            attrs: vec!["Description;Lang-EN".into()],
        };
        assert!(spec.filter.matches(&entry));
        let kept = spec.project(entry.clone());
        let names: Vec<&str> = kept.attrs.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["description;lang-en", "description;lang-en;x-draft", "objectClass"]);
        assert!(spec.filter.matches(&kept), "the replica holds what its filter matched");
        let bare = SearchSpec { attrs: vec!["description".into()], ..spec };
        assert_eq!(bare.project(entry).attrs.len(), 5, "the bare type keeps every subtype");
    }

    /// What a server maintains is named for a warning, however it is spelled, once;
    /// `entryUUID`, which Tether keeps, is not.
    #[test]
    fn the_maintained_attributes_a_search_names_are_found_in_its_filter_and_list() {
        let spec = |filter: &str, attrs: &[&str]| SearchSpec {
            base: Dn::parse("dc=example,dc=com").unwrap(),
            scope: Scope::Subtree,
            filter: filter.parse().unwrap(),
            attrs: attrs.iter().map(|a| (*a).to_owned()).collect(),
        };
        let names = spec(
            "(|(modifyTimestamp>=2020)(!(entryCSN=*))(entryUUID=x)(cn=y))",
            &["cn", "ModifyTimestamp", "2.5.18.1"],
        )
        .names_not_kept()
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
        assert_eq!(names, ["modifyTimestamp", "entryCSN", "2.5.18.1"]);
        assert!(spec("(&(objectClass=person)(entryUUID=x))", &["cn", "entryUUID"]).names_not_kept().is_empty());
    }

    #[test]
    fn whole_entries_need_the_match_all_filter_and_no_attribute_list() {
        let base = Dn::parse("dc=example,dc=com").unwrap();
        assert!(SearchSpec::subtree(base.clone()).takes_whole_entries());
        let lower =
            SearchSpec { filter: Filter::Present { attr: "objectclass".into() }, ..SearchSpec::subtree(base.clone()) };
        assert!(lower.takes_whole_entries());
        let filtered =
            SearchSpec { filter: Filter::Present { attr: "mail".into() }, ..SearchSpec::subtree(base.clone()) };
        assert!(!filtered.takes_whole_entries());
        let trimmed = SearchSpec { attrs: vec!["cn".into()], ..SearchSpec::subtree(base) };
        assert!(!trimmed.takes_whole_entries());
    }
}

//! The cluster under test: one provider, `n` consumers, each consumer behind its own
//! fault-injecting proxy, with the agreements and the anchor entries the checks rely on.
//!
//! Every process is a real child process run through the [`harness`](crate::harness).
//! Each process sits behind a mutex that whoever stops it (the nemesis) holds until it
//! runs again, so the sampler and the checker never talk to a process mid-restart (an
//! offline `search` would lock the store a starting process needs).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use anyhow::{Context, Result};

use tether_protocol::repl::RefreshKind;

use crate::harness::{Agreement, Consumer, Grant, Provider, ProviderOptions};
use crate::proxy::Proxy;
use crate::workload::{Workload, OTHERS, PEOPLE, SUFFIX};

/// Provider `[changelog]` outside a trim fault: generous, trimmed every second.
pub const CHANGELOG: &str = "trim_interval = \"1s\"";
/// Provider `[changelog]` during a trim fault: keep almost nothing, trim at once.
pub const CHANGELOG_TRIMMED: &str = "max_changes = 3\ntrim_interval = \"200ms\"";
/// The provider's `batch_size`: small, so that deltas (a poll's second of writes, the
/// backlog of a session that was down) and scans span several batches, and each batch
/// boundary is crossed often. At 200, the default of the other tests, a delta rarely had
/// a second batch, and a provider that lost one change at each boundary passed.
pub const BATCH_SIZE: u32 = 16;
/// The agreement a config reload adds and removes.
pub const EXTRA: &str = "extra";
/// Marks anchor entries (`description`) and ends their uids.
pub const ANCHOR: &str = "anchor";
/// Anchor uids per branch: spread over the tree order (before, among and after the
/// generated `pNNNNNN` people) so a partial load in any order misses some.
const ANCHOR_UIDS: [&str; 6] = ["a0anchor", "m0anchor", "p000001anchor", "p000900anchor", "q0anchor", "z0anchor"];

/// The region an agreement replicates.
#[derive(Debug, Clone, Copy)]
pub struct Region {
    /// Agreement name (the provider grants it under this name).
    pub agreement: &'static str,
    /// Base DN.
    pub base: &'static str,
    /// `base`, `one` or `subtree`.
    pub scope: &'static str,
    /// LDAP filter.
    pub filter: &'static str,
    /// Anchor entries a complete replica of this region holds.
    pub anchors: usize,
}

/// Overlapping regions: the whole tree, one branch, a filtered view of it (entries move
/// in and out as `sn` changes), the other branch one level deep, and the reload extra.
pub const REGIONS: [Region; 5] = [
    Region { agreement: "all", base: SUFFIX, scope: "subtree", filter: "(objectClass=*)", anchors: 12 },
    Region { agreement: "people", base: PEOPLE, scope: "subtree", filter: "(objectClass=*)", anchors: 6 },
    Region { agreement: "filtered", base: PEOPLE, scope: "subtree", filter: "(sn=Family1*)", anchors: 6 },
    Region { agreement: "others", base: OTHERS, scope: "one", filter: "(objectClass=*)", anchors: 6 },
    Region { agreement: EXTRA, base: OTHERS, scope: "subtree", filter: "(objectClass=*)", anchors: 6 },
];

/// The region of agreement `name`.
pub fn region(name: &str) -> Option<&'static Region> {
    REGIONS.iter().find(|r| r.agreement == name)
}

const PERSIST: &str = "refresh-and-persist";
const REFRESH_ONLY: &str = "refresh-only";

/// An agreement on `region` in `mode`; over TLS if `tls` is the body of its
/// `[agreement.tls]` section.
fn agreement(region: &Region, mode: &str, tls: Option<&str>) -> Agreement {
    let mut extra = "retry = [\"100ms x5\", \"500ms forever\"]\n".to_owned();
    if mode == REFRESH_ONLY {
        extra.push_str("interval = \"1s\"\n");
    }
    Agreement {
        name: region.agreement.into(),
        mode: mode.into(),
        base: region.base.into(),
        scope: region.scope.into(),
        filter: region.filter.into(),
        secret: format!("{}-secret", region.agreement),
        extra,
        tls: tls.map(str::to_owned),
        keepalive: "interval = \"1s\"\ntimeout = \"3s\"\n".into(),
    }
}

/// Consumer `i`'s agreements: `people` in either mode, plus one of the other regions,
/// so consumers overlap and both modes run side by side.
pub fn agreements_of(i: usize, tls: Option<&str>) -> Vec<Agreement> {
    let people_mode = if i % 2 == 0 { PERSIST } else { REFRESH_ONLY };
    let (second, mode) = match i % 3 {
        0 => (&REGIONS[0], PERSIST),
        1 => (&REGIONS[2], PERSIST),
        _ => (&REGIONS[3], REFRESH_ONLY),
    };
    vec![agreement(&REGIONS[1], people_mode, tls), agreement(second, mode, tls)]
}

/// The anchor entries as LDIF content records.
fn anchors_ldif() -> String {
    let mut out = String::new();
    for branch in [PEOPLE, OTHERS] {
        for uid in ANCHOR_UIDS {
            out.push_str(&format!(
                "dn: uid={uid},{branch}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: Anchor {uid}\nsn: Family1{ANCHOR}\n\
                 description: {ANCHOR}\nemployeeNumber: 0\n\n"
            ));
        }
    }
    out
}

/// Every anchor DN.
pub fn anchor_dns() -> Vec<String> {
    [PEOPLE, OTHERS].iter().flat_map(|b| ANCHOR_UIDS.iter().map(move |u| format!("uid={u},{b}"))).collect()
}

/// Counters of one consumer, folded from its status before each restart (a restart
/// resets the in-memory counters).
#[derive(Debug, Clone, Default)]
pub struct Totals {
    /// Disconnects by reason.
    pub disconnects: BTreeMap<String, u64>,
    /// Refreshes by kind.
    pub refreshes: BTreeMap<String, u64>,
    /// Refreshes that continued an interrupted one.
    pub resumed: u64,
    /// Changes applied twice (the apply audit).
    pub duplicates: u64,
    /// Changes applied incrementally.
    pub applied: u64,
}

impl Totals {
    /// Adds the counters of a `status --json` document, of one agreement or of all.
    pub fn fold(&mut self, status: &serde_json::Value, only: Option<&str>) {
        // Every kind, none seen included, as the faults are listed: a report (and its
        // JSON) without a `present` line reads as a kind not counted.
        for kind in [RefreshKind::Full, RefreshKind::Delta, RefreshKind::Present] {
            self.refreshes.entry(kind.as_str().to_owned()).or_default();
        }
        for a in status["agreements"].as_array().into_iter().flatten() {
            if only.is_some_and(|name| a["name"] != name) {
                continue;
            }
            for (map, key) in [(&mut self.disconnects, "disconnects"), (&mut self.refreshes, "refreshes")] {
                for (k, v) in a[key].as_object().into_iter().flatten() {
                    *map.entry(k.clone()).or_default() += v.as_u64().unwrap_or(0);
                }
            }
            self.resumed += a["resumed_refreshes"].as_u64().unwrap_or(0);
            self.duplicates += a["duplicates"].as_u64().unwrap_or(0);
            self.applied += a["applied"].as_u64().unwrap_or(0);
        }
    }

    /// Adds another set of totals.
    pub fn add(&mut self, other: &Totals) {
        for (k, v) in &other.disconnects {
            *self.disconnects.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.refreshes {
            *self.refreshes.entry(k.clone()).or_default() += v;
        }
        self.resumed += other.resumed;
        self.duplicates += other.duplicates;
        self.applied += other.applied;
    }
}

/// One consumer and everything the run tracks about it.
#[derive(Debug)]
pub struct NodeState {
    /// The process.
    pub consumer: Consumer,
    /// Its current agreements (what its config file says).
    pub agreements: Vec<Agreement>,
    /// Per agreement: bumped whenever its replica is legitimately emptied (store wiped,
    /// agreement removed), so the sampler knows an empty replica is not a regression.
    pub epochs: BTreeMap<String, u64>,
    /// Agreements stopped by the nemesis.
    pub stopped: BTreeSet<String>,
    /// Its last `status --json`.
    pub last_status: Option<serde_json::Value>,
    /// Counters of its earlier lives.
    pub totals: Totals,
    /// Its proxy's port (its config points there).
    pub proxy_port: u16,
}

impl NodeState {
    /// Refreshes [`NodeState::last_status`] (kept as it was if the process does not answer).
    pub fn refresh_status(&mut self) {
        if self.consumer.child.is_some() {
            if let Ok(s) = self.consumer.status() {
                self.last_status = Some(s);
            }
        }
    }

    /// Folds the last status into the totals before the process loses its counters.
    pub fn fold_before_restart(&mut self) {
        self.refresh_status();
        if let Some(s) = self.last_status.take() {
            self.totals.fold(&s, None);
        }
    }

    /// Folds the counters of agreement `name`, about to be removed (the caller
    /// refreshed the status just before).
    pub fn fold_removed(&mut self, name: &str) {
        if let Some(s) = self.last_status.take() {
            self.totals.fold(&s, Some(name));
        }
    }

    /// Rewrites the config with the current agreements.
    pub fn write_config(&self) -> Result<()> {
        Consumer::configure(&self.consumer.dir, self.proxy_port, &self.agreements)?;
        Ok(())
    }

    /// Marks every agreement's replica as legitimately empty from now on.
    pub fn bump_all_epochs(&mut self) {
        for e in self.epochs.values_mut() {
            *e += 1;
        }
    }

    /// Deletes the store (the process must be down).
    pub fn wipe_store(&mut self) -> Result<()> {
        let data = self.consumer.dir.join("data");
        if data.exists() {
            fs::remove_dir_all(&data).with_context(|| format!("wiping {}", data.display()))?;
        }
        self.bump_all_epochs();
        self.stopped.clear();
        Ok(())
    }
}

/// A consumer with its proxy.
#[derive(Debug)]
pub struct Node {
    /// Its index (names folders and reports).
    pub index: usize,
    /// The proxy between it and the provider.
    pub proxy: Proxy,
    /// The agreements it starts with and ends with.
    pub base_agreements: Vec<Agreement>,
    /// The process and its bookkeeping.
    pub state: Mutex<NodeState>,
}

impl Node {
    /// Locks the node (a panicking thread cannot leave it torn: every field is replaced whole).
    pub fn lock(&self) -> MutexGuard<'_, NodeState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The provider and its options.
#[derive(Debug)]
pub struct ProviderState {
    /// The process.
    pub provider: Provider,
    /// Its current config.
    pub opts: ProviderOptions,
}

impl ProviderState {
    /// Sets the body of the provider's `[changelog]` section and sends SIGHUP. The
    /// config is replaced atomically and nothing else is rewritten: the provider may
    /// still be reading the file for an earlier SIGHUP, and `write` clients read the
    /// writer secret all the time (rewriting it in place let them read it empty).
    pub fn set_changelog(&mut self, body: &str) -> Result<()> {
        let config = &self.provider.config;
        let text = fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
        let head = "[changelog]\n";
        let start = text.find(head).context("no [changelog] section")? + head.len();
        let end = start + text[start..].find("\n[").context("nothing after [changelog]")?;
        let tmp = config.with_extension("toml.tmp");
        fs::write(&tmp, format!("{}{body}{}", &text[..start], &text[end..]))?;
        fs::rename(&tmp, config).with_context(|| format!("replacing {}", config.display()))?;
        self.opts.changelog = body.into();
        self.provider.reload()
    }
}

/// The whole cluster.
#[derive(Debug)]
pub struct Cluster {
    /// Where everything lives.
    pub root: PathBuf,
    /// The provider.
    pub provider: Mutex<ProviderState>,
    /// Its config file, for clients that need no lock (`write`).
    pub provider_config: PathBuf,
    /// The consumers.
    pub nodes: Vec<Node>,
    /// Every history of the provider begun before its store was last restored from a
    /// backup. A consumer whose cookie names one has not refreshed from the restored
    /// provider yet: it may hold changes the restore took away (in its cookie's history,
    /// or past its cookie in a delta cut short), and may legitimately go back once.
    pub before_restore: Mutex<BTreeSet<String>>,
    /// Restores so far (the report's count); moved before the restored provider starts.
    pub restores: std::sync::atomic::AtomicU64,
    /// The body of every agreement's `[agreement.tls]` section when the run is over TLS.
    pub tls: Option<String>,
    /// Every anchor bump the provider acknowledged: its anchor's DN, the counter written
    /// and its CSN, with the restores counted before and after its write were the same
    /// (a restore gives CSNs after the backup to other changes): see the sampler.
    pub bumps: Mutex<Vec<Bump>>,
}

/// One anchor bump the provider acknowledged (see [`Cluster::bumps`]).
#[derive(Debug, Clone)]
pub struct Bump {
    /// The anchor's DN.
    pub dn: String,
    /// The counter written.
    pub counter: u64,
    /// Its CSN.
    pub csn: u64,
    /// Restores counted when it was written.
    pub restores: u64,
}

/// The provider options of a chaos cluster: every region granted.
pub fn provider_options() -> ProviderOptions {
    ProviderOptions {
        grants: REGIONS
            .iter()
            .map(|r| Grant {
                agreement: r.agreement.into(),
                secret: format!("{}-secret", r.agreement),
                base: r.base.into(),
            })
            .collect(),
        changelog: CHANGELOG.into(),
        keepalive: ("1s".into(), "3s".into()),
        batch_size: BATCH_SIZE,
        ..ProviderOptions::default()
    }
}

impl Cluster {
    /// Loads the provider with `work`'s directory plus the anchors, starts it, and
    /// starts `consumers` consumers behind their proxies. With `tls`, the provider
    /// serves TLS only, with a certificate from a CA made for the run that every
    /// agreement trusts; the proxies then carry, break and corrupt TLS records.
    pub fn start(root: &Path, work: &mut Workload, consumers: usize, tls: bool) -> Result<Self> {
        let mut opts = provider_options();
        let mut agreement_tls = None;
        if tls {
            let (provider_tls, consumer_tls) = crate::pki::loopback(&root.join("pki"))?;
            opts.tls = Some(provider_tls);
            agreement_tls = Some(consumer_tls);
        }
        let mut provider = Provider::configure(&root.join("provider"), &opts)?;
        let ldif = root.join("initial.ldif");
        fs::write(&ldif, format!("{}\n{}", work.initial_ldif(), anchors_ldif()))?;
        provider.load(&ldif).context("loading the provider")?;
        provider.start().context("starting the provider")?;
        let upstream = SocketAddr::from((Ipv4Addr::LOCALHOST, provider.port));
        let mut nodes = Vec::new();
        for index in 0..consumers {
            let proxy = Proxy::start(upstream)?;
            let base_agreements = agreements_of(index, agreement_tls.as_deref());
            let mut consumer =
                Consumer::configure(&root.join(format!("consumer{index}")), proxy.port(), &base_agreements)?;
            consumer.start().with_context(|| format!("starting consumer{index}"))?;
            let epochs = REGIONS.iter().map(|r| (r.agreement.to_owned(), 0)).collect();
            let state = NodeState {
                consumer,
                agreements: base_agreements.clone(),
                epochs,
                stopped: BTreeSet::new(),
                last_status: None,
                totals: Totals::default(),
                proxy_port: proxy.port(),
            };
            nodes.push(Node { index, proxy, base_agreements, state: Mutex::new(state) });
        }
        let provider_config = provider.config.clone();
        Ok(Self {
            root: root.to_owned(),
            provider: Mutex::new(ProviderState { provider, opts }),
            provider_config,
            nodes,
            before_restore: Mutex::default(),
            restores: std::sync::atomic::AtomicU64::new(0),
            tls: agreement_tls,
            bumps: Mutex::default(),
        })
    }

    /// The reload fault's extra agreement.
    pub fn extra_agreement(&self) -> Agreement {
        agreement(&REGIONS[4], PERSIST, self.tls.as_deref())
    }

    /// Locks the provider.
    pub fn provider(&self) -> MutexGuard<'_, ProviderState> {
        self.provider.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `cookie` (`<history>#<csn>`, from a consumer's status) names a history
    /// begun before the provider's store was last restored.
    pub fn before_restore(&self, cookie: &str) -> bool {
        let Some((history, _)) = cookie.split_once('#') else { return false };
        self.before_restore.lock().unwrap_or_else(PoisonError::into_inner).contains(history)
    }
}

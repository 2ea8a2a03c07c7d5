//! `tether-consumer`: run replication agreements and steer them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use tether_config::output::Stdout;
use tether_config::shell;
use tether_consumer::config::ConsumerConfig;
use tether_consumer::status::{OfflineAgreement, OfflineStatus};
use tether_consumer::{control, daemon};
use tether_protocol::control::{ControlError, ControlRequest};
use tether_protocol::entry::{parse_attribute_name, take_entry_uuid};
use tether_protocol::{Dn, Filter, Scope, SearchSpec};
use tether_store::ReplicaStore;

/// mimalloc (without transparent huge pages) instead of glibc's malloc, in both
/// binaries: why, and what it changed, in docs/architecture.md and docs/benchmarks-history.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "tether-consumer", version, about = "Tether consumer: keeps replicas of provider directories")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every agreement (SIGHUP reloads the config).
    Run {
        /// Configuration file.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Show every agreement's state.
    Status {
        /// Configuration file.
        #[arg(short, long)]
        config: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Stop an agreement (it stays stopped across restarts).
    ///
    /// Its session says goodbye and its replica stays as it is, readable by `search`.
    /// With the consumer stopped, the flag is written into its store, and the next start
    /// leaves the agreement stopped.
    Stop {
        /// Configuration file.
        #[arg(short, long)]
        config: PathBuf,
        /// Agreement name.
        name: String,
    },
    /// Start a stopped agreement.
    ///
    /// An agreement that is running but waiting (a backoff after a failure, or a
    /// refresh-only poll's interval) connects now. With the consumer stopped, the stop
    /// flag is cleared in its store, and the next start runs the agreement.
    Start {
        /// Configuration file.
        #[arg(short, long)]
        config: PathBuf,
        /// Agreement name.
        name: String,
    },
    /// Reconnect an agreement now.
    Restart {
        /// Configuration file.
        #[arg(short, long)]
        config: PathBuf,
        /// Agreement name.
        name: String,
    },
    /// Re-read the configuration of the running consumer.
    Reload {
        /// Configuration file.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Check a configuration file as a start would, without starting anything.
    ///
    /// Reads the file and every file it names (each secret, each TLS CA file), prints
    /// the warnings a start would log and what the file sets up; opens no store, binds
    /// nothing and asks no process. Exit status 1 if a start would refuse the file. Run
    /// by root on a store another user owns, it reads the files as that user, as the
    /// service does.
    Check {
        /// Configuration file.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Check that a stopped consumer's replicas are whole.
    ///
    /// Reads every entry of every replica: each stored under its own name, in the UUID
    /// index, and the entry count. Exit status 1 lists what is wrong. A running
    /// consumer's store is not checked (it changes under the check): stop it first.
    Verify {
        /// Configuration file (its cache size; its data_dir unless --store).
        #[arg(short, long)]
        config: PathBuf,
        /// The store to check instead of the data_dir: a copy of a consumer's.
        #[arg(long)]
        store: Option<PathBuf>,
    },
    /// Wait until an agreement's replica has a change on disk: give the CSN a provider
    /// write acknowledged; prints the durable CSN (read your writes across replicas).
    /// With --visible, until its searches return it (it may not be on disk yet).
    Wait {
        /// Configuration file.
        #[arg(short, long)]
        config: PathBuf,
        /// Agreement (required when there are several).
        #[arg(long)]
        agreement: Option<String>,
        /// The CSN to wait for (what `tether-provider write` printed).
        #[arg(long, value_parser = parse_csn)]
        csn: u64,
        /// Give up after this long (at most 60s).
        #[arg(long, default_value = "30s", value_parser = parse_wait_timeout)]
        timeout: std::time::Duration,
        /// Answer once the replica's searches return the change, without waiting for it
        /// to be on disk (a crash before then takes it again from the provider); prints
        /// the visible CSN.
        #[arg(long)]
        visible: bool,
    },
    /// Print an agreement's replica as canonical LDIF.
    Search {
        /// Configuration file.
        #[arg(short, long)]
        config: PathBuf,
        /// Agreement (required when there are several).
        #[arg(long)]
        agreement: Option<String>,
        /// Base DN (default: the agreement's base).
        #[arg(long)]
        base: Option<Dn>,
        /// base, one (or onelevel) or subtree (or sub).
        #[arg(long, default_value = "subtree")]
        scope: Scope,
        /// LDAP filter.
        #[arg(long, default_value = "(objectClass=*)")]
        filter: Filter,
        /// Attributes to print, comma-separated (objectClass always; default: all; entryUUID
        /// as --uuids prints it).
        #[arg(long, value_delimiter = ',', value_parser = parse_attribute_name)]
        attrs: Vec<String>,
        /// Print each entry's entryUUID too, as slapcat does: `tether-provider load`
        /// keeps it, so a provider rebuilt from this replica keeps every entry's identity.
        #[arg(long)]
        uuids: bool,
        /// Print what the replica holds even when it is no state of its region (its
        /// first refresh unfinished, a full refresh awaited after its region changed),
        /// which a search refuses otherwise: when the provider is lost, it is the last
        /// copy there is; so is the replica of an agreement removed from the file,
        /// until the next start deletes it. The consumer must be stopped (this reads
        /// its store).
        #[arg(long)]
        as_is: bool,
    },
}

/// A CSN to wait for: 1 or more. Every replica is at 0 or past it, so a wait for 0
/// answers at once, and a script whose CSN came out empty or 0 (a `write` that failed)
/// went on as if its change had arrived.
fn parse_csn(text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(0) => Err("0 is before every change: give the CSN that `tether-provider write` printed".to_owned()),
        Ok(csn) => Ok(csn),
        Err(e) => Err(format!("{text:?} is not a CSN (a whole number, 1 or more): {e}")),
    }
}

/// `wait --timeout`: a duration up to the consumer's limit. Longer was once cut to the
/// limit without a word, so a script's `--timeout 5m` gave up after one minute.
fn parse_wait_timeout(text: &str) -> Result<std::time::Duration, String> {
    let limit = tether_consumer::control::WAIT_LIMIT;
    match humantime::parse_duration(text) {
        Ok(d) if d > limit => Err(format!(
            "{text} is longer than a wait may be ({}): wait again after it, as it prints where the agreement stands",
            humantime::format_duration(limit)
        )),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

/// Sends a control request to the consumer `config` names, and prints the reply on
/// standard output; `Ok(false)` if the consumer is not running. A consumer started
/// with another file does nothing ([`tether_protocol::control::call_from`]).
async fn call(config: &ConsumerConfig, request: &ControlRequest) -> Result<bool> {
    let to = tether_protocol::control::Process::Consumer;
    match tether_protocol::control::call_from(&config.control, to, &config.file, request, &mut Stdout::lock()).await {
        Err(ControlError::Remote(m)) => Err(anyhow::anyhow!(unreloaded_agreement(config, m))),
        answered => Ok(answered?),
    }
}

/// The running consumer's "no agreement named" for an agreement the file names: it was
/// added since the consumer last read the file, which a reload applies. Said alone, it
/// read as a typo in a name the file plainly holds.
fn unreloaded_agreement(config: &ConsumerConfig, said: String) -> String {
    let added = config.agreements.iter().find(|a| said.starts_with(&format!("no agreement named {:?}", a.name)));
    match added {
        Some(a) => format!(
            "{said}; {} names {:?}, added since the consumer read it: `tether-consumer reload -c {}` starts it",
            config.file.display(),
            a.name,
            config.file.display()
        ),
        None => said,
    }
}

/// How often a long `verify` says how far it has come, on standard error.
const VERIFY_PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// What a command run while the consumer is stopped does with its store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Offline {
    /// `status`, `search`, `wait`: read, and create nothing. A store that was never made
    /// is an error naming the folder, so a mistyped `data_dir` is not reported as an
    /// empty replica, nor left behind as a new store owned by whoever ran the command.
    Read,
    /// `stop`, `start`: persist the flag the next `run` honours (`stop` creating the store
    /// if the consumer has not run yet, and saying so).
    Write,
}

fn open_offline(config: &ConsumerConfig, use_: Offline) -> Result<ReplicaStore> {
    // Root on a store another user owns runs the command again as that user, and ends
    // with its status (see `shell::as_store_owner`).
    if let Some(code) = shell::as_store_owner(&config.data_dir)? {
        shell::exit_now(code);
    }
    let dir = config.data_dir.display();
    if use_ == Offline::Read && !tether_store::store_exists(&config.data_dir) {
        bail!(shell::no_store("consumer", &config.data_dir, &config.control, &config.file));
    }
    // A command that only reads leaves the folder as it is; the running process warns of
    // loose permissions.
    if use_ == Offline::Write {
        let new = !tether_store::store_exists(&config.data_dir);
        let loose = shell::private_data_dir(&config.data_dir, new).with_context(|| format!("creating {dir}"))?;
        if let Some(warning) = loose {
            tether_config::say!("warning: {warning}");
        }
    }
    // A running consumer holds its store for good: waiting would only delay saying so
    // (a search --as-is, or of a name the file lacks, waited 5 s logging that it did).
    let lock_wait = if shell::answers(&config.control) { std::time::Duration::ZERO } else { shell::COMMAND_LOCK_WAIT };
    ReplicaStore::open_with(&config.data_dir, &tether_store::StoreOptions { cache_bytes: config.cache_size, lock_wait })
        .map_err(|e| {
            let hint = match e {
                tether_store::StoreError::Locked(_) => {
                    shell::held_store_hint(&config.data_dir, &config.control, "is another command reading it")
                }
                _ => e.open_hint().to_owned(),
            };
            anyhow::Error::new(e).context(format!("opening store {dir}{hint}"))
        })
}

/// Why a command that needs the running consumer found none on its socket: nothing
/// runs there, no consumer ever ran with this `data_dir`, or one holds the store but
/// answers elsewhere (`control` edited since it started), as `status` tells them apart.
/// `provider_proved_at` of `replica`, as status shows it.
fn proved_at(replica: Option<&tether_store::Replica>) -> Result<Option<String>> {
    let ms = replica.map(|r| r.provider_proved_at()).transpose()?.flatten();
    Ok(ms.map(tether_consumer::status::rfc3339_of_ms))
}

/// `lag_seconds` of a stopped consumer's `replica`: since when the running consumer
/// last recorded it current.
fn lag_seconds(replica: Option<&tether_store::Replica>) -> Result<Option<u64>> {
    let ms = replica.map(|r| r.current_at()).transpose()?.flatten();
    Ok(ms.map(tether_consumer::status::seconds_since_ms))
}

fn not_running(config: &ConsumerConfig) -> anyhow::Error {
    match open_offline(config, Offline::Read) {
        Ok(_) => anyhow::anyhow!("the consumer is not running (nothing answers on {})", config.control.display()),
        Err(e) => e,
    }
}

/// The configuration in `file`, or `None` once the running consumer answered `request`
/// although `file` holds an error (an edit under way): it runs, and answers, on what it
/// last read ([`shell::config_or_running`], which warns of the error). `request` is
/// what the command asks when the file cannot say more than its command line does;
/// `None` where it must (an agreement to name, a base to default to), and then the
/// file's error is the answer.
async fn config_or_running(file: &Path, request: Option<ControlRequest>) -> Result<Option<ConsumerConfig>> {
    let loaded = ConsumerConfig::load(file);
    let Some(request) = request else { return Ok(Some(loaded?)) };
    let (data_dir, process) = (tether_consumer::config::DEFAULT_DATA_DIR, tether_protocol::control::Process::Consumer);
    Ok(shell::config_or_running(loaded, file, data_dir, process, &request).await?)
}

/// The agreements `config` names.
fn names(config: &ConsumerConfig) -> impl Iterator<Item = &str> {
    config.agreements.iter().map(|a| a.name.as_str())
}

fn agreement_name(config: &ConsumerConfig, name: Option<String>) -> Result<String> {
    match name {
        Some(n) if config.agreement(&n).is_some() => Ok(n),
        Some(n) => bail!("{}: {}", config.file.display(), control::no_agreement(&n, names(config))),
        None => control::only_agreement(config.agreements.iter().map(|a| a.name.as_str())).map_err(anyhow::Error::msg),
    }
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run { config } => daemon::run(&config).await,
        Command::Status { config: file, json } => {
            // Held to what a start needs, the files it names too: a secret lost is
            // warned of now, not found when a restart fails.
            // Warned of as a start or reload would (a secret others may read).
            // Not by a member of the status group, whose user may not read them.
            let loaded =
                ConsumerConfig::load(&file).and_then(|c| match shell::runs_as_a_monitor(&c.control, &c.data_dir) {
                    true => Ok((c, Vec::new())),
                    false => c.check_files().map(|warnings| (c, warnings)),
                });
            let process = tether_protocol::control::Process::Consumer;
            let data_dir = tether_consumer::config::DEFAULT_DATA_DIR;
            let Some((config, warnings)) =
                shell::config_or_running(loaded, &file, data_dir, process, &ControlRequest::Status { json }).await?
            else {
                return Ok(());
            };
            // The run as the store's owner says them again.
            if !shell::is_store_owners_run() {
                for w in warnings {
                    tether_config::say!("warning: {w}");
                }
            }
            let request = ControlRequest::Status { json };
            if call(&config, &request).await? {
                return Ok(());
            }
            let Some(store) = offline_or_answered(&config, &request).await? else { return Ok(()) };
            let consumer_id = tether_consumer::identity::recorded_id(&config.data_dir);
            let mut status = OfflineStatus { running: false, started_at: None, consumer_id, agreements: Vec::new() };
            for a in &config.agreements {
                // An agreement added since the consumer last ran has no replica yet.
                let replica = store.existing_replica(&a.name)?;
                let stopped = replica.as_ref().map(|r| r.is_admin_stopped()).transpose()?.unwrap_or(false);
                status.agreements.push(OfflineAgreement {
                    name: a.name.clone(),
                    state: if stopped { "stopped" } else { "not running" },
                    provider: a.provider.to_string(),
                    mode: a.mode.as_str().to_owned(),
                    cookie: replica.as_ref().map(|r| r.cookie()).transpose()?.flatten().map(|c| c.to_string()),
                    entries: replica.as_ref().map(|r| r.len()).transpose()?.unwrap_or(0),
                    provider_proved_at: proved_at(replica.as_ref())?,
                    lag_seconds: lag_seconds(replica.as_ref())?,
                });
            }
            // By name, as the running consumer lists them, so a script reads one order.
            status.agreements.sort_by(|a, b| a.name.cmp(&b.name));
            // Replicas of agreements gone from the file: the next start deletes them,
            // which whoever reads this before starting it should see coming.
            for name in store.names()? {
                if config.agreement(&name).is_some() {
                    continue;
                }
                if let Some(replica) = store.existing_replica(&name)? {
                    status.agreements.push(OfflineAgreement {
                        name,
                        state: "removed",
                        provider: String::new(),
                        mode: String::new(),
                        cookie: replica.cookie()?.map(|c| c.to_string()),
                        entries: replica.len()?,
                        provider_proved_at: proved_at(Some(&replica))?,
                        lag_seconds: lag_seconds(Some(&replica))?,
                    });
                }
            }
            let text = if json { format!("{}\n", serde_json::to_string_pretty(&status)?) } else { status.to_text() };
            Stdout::print(&text).context("writing to standard output")
        }
        Command::Stop { config, name } => admin(&config, name, true).await,
        Command::Start { config, name } => admin(&config, name, false).await,
        Command::Restart { config, name } => {
            let asked = ControlRequest::Restart { name: name.clone() };
            let Some(config) = config_or_running(&config, Some(asked)).await? else { return Ok(()) };
            let name = agreement_name(&config, Some(name))?;
            if !call(&config, &ControlRequest::Restart { name }).await? {
                // Unlike `stop` and `start`, it has nothing to record for the next start.
                return Err(not_running(&config).context(
                    "`restart` reconnects a running agreement; started, the consumer connects every agreement not \
                     stopped",
                ));
            }
            Ok(())
        }
        Command::Reload { config } => {
            // The process is not asked, and keeps its configuration: the error says so.
            let config = ConsumerConfig::load(&config)
                .map_err(|e| anyhow::anyhow!("{e}; nothing was reloaded: {}", tether_consumer::daemon::KEPT_AS_READ))?;
            let (to, mut out) = (tether_protocol::control::Process::Consumer, Stdout::lock());
            if !tether_protocol::control::reload_at(&config.control, to, &config.file, &mut out).await? {
                return Err(not_running(&config));
            }
            Ok(())
        }
        Command::Verify { config, store } => {
            let mut config = ConsumerConfig::load(&config)?;
            match shell::other_store(store.as_deref(), &config.data_dir, tether_store::store_exists)? {
                // Opened as the configuration's store would be.
                Some(path) => config.data_dir = path,
                None if shell::answers(&config.control) => bail!(
                    "the consumer is running (it answers on {}): its replicas change under a check; stop it first \
                     (`systemctl stop`, or SIGTERM and wait for it to exit)",
                    config.control.display()
                ),
                None => {}
            }
            let store = open_offline(&config, Offline::Read)?;
            let shown = config.data_dir.display().to_string();
            let mut said = std::time::Instant::now();
            let found = store
                .verify(&mut |read| {
                    if said.elapsed() >= VERIFY_PROGRESS_EVERY {
                        tether_config::say!("checking: {read} records read so far");
                        said = std::time::Instant::now();
                    }
                })
                .with_context(|| format!("reading the store at {shown}"))?;
            match tether_consumer::verify::said(&found, &shown) {
                Ok(sound) => Stdout::print(&sound).context("writing to standard output"),
                Err(problems) => Err(anyhow::Error::msg(problems)),
            }
        }
        Command::Check { config } => {
            let config = ConsumerConfig::load(&config)?;
            if let Some(code) = shell::as_store_owner(&config.data_dir)? {
                shell::exit_now(code);
            }
            // Not the open files limit: the service's is its manager's, not this shell's.
            let mut warnings = config.check_files()?;
            warnings.extend(shell::root_on_anothers_store(&config.data_dir));
            for w in warnings {
                tether_config::say!("warning: {w}");
            }
            Stdout::print(&config.summary()).context("writing to standard output")
        }
        Command::Wait { config, agreement, csn, timeout, visible } => {
            // Rounded up: `1ns` is a wait of 1 ms, not one of none reported as "0ns".
            let timeout_ms = u64::try_from(timeout.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX);
            let asked = agreement
                .clone()
                .map(|name| ControlRequest::wait(name, tether_protocol::Csn(csn), timeout_ms, visible));
            let Some(config) = config_or_running(&config, asked).await? else { return Ok(()) };
            let name = agreement_name(&config, agreement)?;
            let request = ControlRequest::wait(name.clone(), tether_protocol::Csn(csn), timeout_ms, visible);
            if call(&config, &request).await? {
                return Ok(());
            }
            // Stopped, the replica can still answer: what its store holds is on disk (and visible).
            let Some(store) = offline_or_answered(&config, &request).await? else { return Ok(()) };
            let replica = store.existing_replica(&name)?;
            let at = replica.map(|r| r.cookie()).transpose()?.flatten().map(|c| c.csn);
            match at {
                Some(at) if at.0 >= csn => Stdout::print(&format!("{at}\n")).context("writing to standard output"),
                _ => bail!(
                    "the consumer is not running, and the replica of {name} is at csn {}",
                    at.map_or("none".to_owned(), |c| c.to_string())
                ),
            }
        }
        Command::Search { config, agreement, base, scope, filter, attrs, uuids, as_is } => {
            let (attrs, uuid_named) = take_entry_uuid(attrs);
            let uuids = uuids || uuid_named;
            // Without the file, a subtree search from the root is one of the whole
            // replica, as one from the agreement's base is; a narrower scope needs the base.
            let asked = match (&base, scope) {
                _ if as_is => None,
                (Some(base), _) => Some(base.clone()),
                (None, Scope::Subtree) => Some(Dn::root()),
                (None, _) => None,
            }
            .map(|base| {
                let spec = SearchSpec { base, scope, filter: filter.clone(), attrs: attrs.clone() };
                ControlRequest::search(agreement.clone(), spec, uuids)
            });
            let Some(config) = config_or_running(&config, asked).await? else { return Ok(()) };
            if let Some(name) = agreement.as_deref().filter(|n| !as_is && config.agreement(n).is_none()) {
                return Err(unknown_agreement(&config, name));
            }
            if as_is {
                let (name, spec) =
                    (agreement, SearchSpec { base: base.unwrap_or_else(Dn::root), scope, filter, attrs });
                return search_as_is(&config, name, spec, uuids);
            }
            let name = agreement_name(&config, agreement)?;
            let a = config.agreement(&name).context("agreement vanished")?;
            if let Some(unkept) = unkept_attributes(&filter, &a.attrs) {
                tether_config::say!(
                    "warning: the replica of {name:?} keeps only the attributes {} (its `attrs`), so a filter on {unkept} \
                     matches no value of it: search the provider for those",
                    a.attrs.join(", ")
                );
            }
            let spec = SearchSpec { base: base.unwrap_or_else(|| a.base.clone()), scope, filter, attrs };
            tether_config::output::warn_not_kept(&spec);
            let request = ControlRequest::search(Some(name.clone()), spec.clone(), uuids);
            if call(&config, &request).await? {
                return Ok(());
            }
            let Some(store) = offline_or_answered(&config, &request).await? else { return Ok(()) };
            // A region changed in the file while the consumer was stopped: the replica
            // holds the old one until the next start reloads it.
            let index = config.agreements.iter().position(|x| x.name == name).context("agreement vanished")?;
            let configured = daemon::spec_of(&config, index, a)?;
            let replica = store.existing_replica(&name)?;
            if replica.as_ref().map(|r| r.region_outdated()).transpose()?.unwrap_or(false) {
                bail!(
                    "the replica of {name:?} was reloaded by an older build (a rollback) since its region was \
                     recorded, so what region it holds is unknown: the consumer's next start reloads it in full (to \
                     read it as it is, search with --as-is)"
                );
            }
            let held = replica.map(|r| r.region()).transpose()?.flatten();
            if held.is_some_and(|held| !held.same_region(&configured)) {
                bail!(
                    "the replica of {name:?} was made for another region (the agreement's base, scope, filter or \
                     attrs changed in {} since the consumer last ran), so what it holds is not the agreement's \
                     region: the consumer's next start reloads it in full (to read it as it is, search with --as-is)",
                    config.file.display()
                );
            }
            let pages = control::SearchPages::open(&store, &name, Some(&a.base), spec).map_err(anyhow::Error::msg)?;
            print_pages(pages.with_uuids(uuids))
        }
    }
}

/// The attributes `filter` reads that a replica keeping only `kept` (an agreement's
/// `attrs`; empty keeps all) holds no value of, named for a warning: the search runs on
/// the replica as it is, and a filter on such an attribute matches as if no entry had
/// it (`(sn=*)` finds nothing where the provider finds every person), without a word.
fn unkept_attributes(filter: &tether_protocol::Filter, kept: &[String]) -> Option<String> {
    if kept.is_empty() {
        return None;
    }
    let base_type = |name: &str| name.split(';').next().unwrap_or(name).to_ascii_lowercase();
    let kept: Vec<String> = kept.iter().map(|k| base_type(k)).collect();
    let unkept: Vec<&str> = filter
        .attributes()
        .into_iter()
        .filter(|a| !["objectclass", "entryuuid"].contains(&base_type(a).as_str()) && !kept.contains(&base_type(a)))
        // Said by a warning of its own: no entry has them, kept or not.
        .filter(|a| !tether_protocol::entry::operational::is_not_kept(a))
        .collect();
    (!unkept.is_empty()).then(|| unkept.join(", "))
}

/// Why `search` of an agreement the file does not name prints nothing, and whether
/// `--as-is` can read it: the store keeps the replica of an agreement removed from the
/// file while the consumer was stopped, until its next start. A running consumer has
/// deleted it already (at its start, or as `reload` removed the agreement), and a
/// mistyped name has none: pointing either at `--as-is` promised a copy that is gone.
fn unknown_agreement(config: &ConsumerConfig, name: &str) -> anyhow::Error {
    let file = config.file.display();
    let none = control::no_agreement(name, names(config));
    let store = match open_offline(config, Offline::Read) {
        Ok(store) => store,
        Err(e) if is_locked(&e) => {
            return anyhow::anyhow!(
                "{file}: {none}; the running consumer holds no replica of an agreement removed from the file: it \
                 deletes it as it reloads the file"
            )
        }
        Err(_) => return anyhow::anyhow!("{file}: {none}"),
    };
    match store.existing_replica(name) {
        Ok(Some(_)) => anyhow::anyhow!(
            "{file}: {none}; the store still holds the replica of an agreement of that name \
             removed from the file, until the consumer's next start deletes it: search --as-is reads it"
        ),
        Ok(None) => anyhow::anyhow!("{file}: {none}, and the store holds no replica of that name"),
        Err(e) => anyhow::anyhow!("{file}: {none}; reading the store: {e}"),
    }
}

/// The store of a stopped consumer, for a command that asked its socket first and found
/// nothing there; `None` when a consumer started meanwhile (it holds the store, and its
/// socket answers now: [`shell::answers`]) and answered `request` instead. A first start
/// makes its store after it binds its socket: until then the command finds no store.
async fn offline_or_answered(config: &ConsumerConfig, request: &ControlRequest) -> Result<Option<ReplicaStore>> {
    match open_offline(config, Offline::Read) {
        Err(e)
            if (is_locked(&e) || !tether_store::store_exists(&config.data_dir)) && shell::answers(&config.control) =>
        {
            match call(config, request).await? {
                true => Ok(None),
                false => Err(e),
            }
        }
        opened => opened.map(Some),
    }
}

/// Whether opening the store failed because a running consumer holds it.
fn is_locked(e: &anyhow::Error) -> bool {
    e.chain().any(|c| matches!(c.downcast_ref(), Some(tether_store::StoreError::Locked(_))))
}

/// `search --as-is`: what the replica of `agreement` holds, read from the store of the
/// stopped consumer, whatever state it is in (an agreement awaiting its full refresh is
/// the case for it, and stopping the consumer leaves it so). An agreement removed from
/// the file is searched too, from its base as the replica recorded it: its replica
/// stays until the next start deletes it, and may be the last copy of its region.
/// `spec`'s base is the agreement's when it is the root (none given).
fn search_as_is(config: &ConsumerConfig, agreement: Option<String>, spec: SearchSpec, uuids: bool) -> Result<()> {
    let name = match agreement {
        Some(name) => name,
        None => agreement_name(config, None)?,
    };
    let store = open_offline(config, Offline::Read).map_err(|e| {
        match is_locked(&e) {
            // The running consumer holds it (the open's own hint, about a socket that
            // answers elsewhere, is not what the user of --as-is needs).
            true => anyhow::anyhow!(
                "--as-is reads the consumer's store itself, and a running consumer holds it: stop the consumer \
                 first (tether-consumer search without --as-is asks the running one)"
            ),
            false => e.context("--as-is reads the consumer's store itself: stop the consumer first"),
        }
    })?;
    let file = config.file.display();
    let Some(replica) = store.existing_replica(&name)? else {
        match config.agreement(&name) {
            Some(_) => bail!("agreement {name:?} has no replica: the consumer has not run it"),
            None => bail!("{file}: no agreement named {name:?}, and the store holds no replica of that name"),
        }
    };
    // The base of what the replica holds, as it recorded it: after its region changed
    // in the file, the agreement's base names a region it does not hold.
    let held = replica.region()?.map(|region| region.base).or_else(|| config.agreement(&name).map(|a| a.base.clone()));
    let base = match (spec.base.is_root(), &held) {
        (false, _) => spec.base.clone(),
        (true, Some(held)) => held.clone(),
        (true, None) => bail!(
            "{file}: no agreement named {name:?}; the store holds its replica (the next start deletes it) without a \
             record of its base: give --base"
        ),
    };
    let spec = SearchSpec { base, ..spec };
    let pages = control::SearchPages::open_as_is(&store, &name, held.as_ref(), spec).map_err(anyhow::Error::msg)?;
    print_pages(pages.with_uuids(uuids))
}

/// Prints every page of `pages` on standard output.
fn print_pages(mut pages: control::SearchPages) -> Result<()> {
    let mut out = Stdout::lock();
    while let Some(page) = pages.next_page().map_err(anyhow::Error::msg)? {
        out.write_all(page.as_bytes()).context("writing to standard output")?;
    }
    out.flush().context("writing to standard output")
}

/// `stop`/`start`: through the running process, or (when it is not running) straight
/// to the persisted flag, so the next `run` honours it.
async fn admin(config: &Path, name: String, stop: bool) -> Result<()> {
    let request =
        if stop { ControlRequest::Stop { name: name.clone() } } else { ControlRequest::Start { name: name.clone() } };
    let Some(config) = config_or_running(config, Some(request.clone())).await? else { return Ok(()) };
    let name = agreement_name(&config, Some(name))?;
    if call(&config, &request).await? {
        return Ok(());
    }
    // No store: the consumer never ran with this `data_dir`, or it is mistyped. An
    // agreement runs unless stopped, so `start` has nothing to record and makes no store;
    // `stop` must make one to keep an agreement from starting on the first run, and says
    // so, since a mistyped folder would otherwise take the flag silently.
    let new = !tether_store::store_exists(&config.data_dir);
    if new && !stop {
        bail!(
            "{}; agreements run unless stopped, so there is nothing to start",
            shell::no_store("consumer", &config.data_dir, &config.control, &config.file)
        );
    }
    let store = open_offline(&config, Offline::Write)?;
    // A `start` of an agreement that has no replica yet has nothing to record, and makes
    // none (it said "nothing changed" and left an empty replica on record).
    let replica = match (stop, store.existing_replica(&name)?) {
        (_, Some(replica)) => replica,
        (true, None) => store.replica(&name)?,
        (false, None) => {
            let was = "not stopped, so it runs when the consumer runs";
            return Stdout::print(&format!("{name}: {was}; nothing changed\n")).context("writing to standard output");
        }
    };
    if replica.is_admin_stopped()? == stop {
        let was = if stop { "already stopped" } else { "not stopped, so it runs when the consumer runs" };
        return Stdout::print(&format!("{name}: {was}; nothing changed\n")).context("writing to standard output");
    }
    replica.set_admin_stopped(stop)?;
    let made = if new {
        format!(
            "; no consumer had run with data_dir {}, so a new store was made there (check `data_dir` in {} if the \
             consumer runs elsewhere)",
            config.data_dir.display(),
            config.file.display()
        )
    } else {
        String::new()
    };
    let done =
        format!("{name}: {} (takes effect when the consumer runs){made}\n", if stop { "stopped" } else { "started" });
    Stdout::print(&done).context("writing to standard output")
}

fn main() -> ExitCode {
    shell::init_logging();
    let cli = Cli::parse();
    let outcome = shell::runtime("tether-consumer").block_on(run(cli));
    shell::finish("tether-consumer", outcome.err().as_deref())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::{call, offline_or_answered, unkept_attributes, ConsumerConfig, ControlRequest, Path};
    use tether_protocol::control::{read_request, respond, respond_done, ControlResponse, Peer, Process};

    #[test]
    fn a_filter_on_attributes_the_replica_does_not_keep_is_named() {
        let filter = |f: &str| f.parse::<tether_protocol::Filter>().unwrap();
        let kept = ["cn".to_owned(), "Description".to_owned()];
        assert_eq!(
            unkept_attributes(&filter("(&(sn=*)(CN=a)(description;lang-en=x)(SN=b))"), &kept).as_deref(),
            Some("sn")
        );
        assert_eq!(
            unkept_attributes(&filter("(|(mail=*)(objectClass=person)(entryUUID=x)(uid=y))"), &kept).as_deref(),
            Some("mail, uid")
        );
        assert_eq!(unkept_attributes(&filter("(cn=a)"), &kept), None);
        assert_eq!(unkept_attributes(&filter("(sn=a)"), &[]), None, "every attribute is kept");
    }

    /// A stand-in for a running consumer, its control socket at `socket`: answers each
    /// request with nothing, or with the error `refusal`, and hands it to the test.
    fn stand_in(socket: &Path, refusal: Option<&'static str>) -> tokio::sync::mpsc::UnboundedReceiver<ControlRequest> {
        let listener = tokio::net::UnixListener::bind(socket).unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (mut reader, mut writer) = tether_protocol::frame::split(stream);
                // A connection that sends nothing (a probe whether anything listens) ends here.
                if let Ok(request) = read_request(&mut reader, &mut writer, Process::Consumer, &Peer::Operator).await {
                    match refusal {
                        None => respond_done(&mut writer, "").await.unwrap(),
                        Some(e) => respond(&mut writer, &ControlResponse::Error(e.to_owned())).await.unwrap(),
                    }
                    let _ = tx.send(request);
                }
            }
        });
        rx
    }

    /// The running consumer's "no agreement named" for an agreement the file names (added
    /// since it read the file) says that a reload starts it; for a name the file lacks
    /// too, it is said as it came.
    #[tokio::test]
    async fn an_agreement_added_to_the_file_and_not_reloaded_is_said_to_need_a_reload() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("consumer.toml");
        let agreement = |name: &str| {
            format!(
                "[[agreement]]\nname = \"{name}\"\nprovider = \"127.0.0.1:7389\"\nbase = \"ou=people,dc=example,dc=com\"\n\
                 secret_file = \"people.key\"\n"
            )
        };
        let text =
            format!("data_dir = \"data\"\ncontrol = \"ctl.sock\"\n{}{}", agreement("people"), agreement("groups"));
        std::fs::write(&file, text).unwrap();
        let config = ConsumerConfig::load(&file).unwrap();
        let _running = stand_in(&config.control, Some("no agreement named \"groups\" (there are people)"));
        let stop = |name: &str| ControlRequest::Stop { name: name.to_owned() };
        let said = format!("{:#}", call(&config, &stop("groups")).await.unwrap_err());
        assert!(said.starts_with("no agreement named \"groups\" (there are people); "), "{said}");
        assert!(said.contains("names \"groups\", added since the consumer read it"), "{said}");
        assert!(said.contains(&format!("`tether-consumer reload -c {}` starts it", file.display())), "{said}");
        std::fs::remove_file(&config.control).unwrap();
        let _running = stand_in(&config.control, Some("no agreement named \"nobody\" (there are people)"));
        let said = format!("{:#}", call(&config, &stop("nobody")).await.unwrap_err());
        assert_eq!(said, "no agreement named \"nobody\" (there are people)");
    }

    /// A command that found nothing on the socket and then no store, while a first start
    /// has bound its socket meanwhile (it makes its store after), asks the socket again
    /// and takes its answer, rather than fail saying no consumer has run here.
    #[tokio::test]
    async fn a_command_finding_no_store_asks_a_socket_that_answers_now() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("consumer.toml");
        std::fs::write(
            &file,
            "data_dir = \"data\"\ncontrol = \"ctl.sock\"\n[[agreement]]\nname = \"people\"\n\
             provider = \"127.0.0.1:7389\"\nbase = \"ou=people,dc=example,dc=com\"\nsecret_file = \"people.key\"\n",
        )
        .unwrap();
        let config = ConsumerConfig::load(&file).unwrap();
        let request = ControlRequest::Status { json: true };
        // Nothing on the socket: the store's absence is the answer.
        let Err(err) = offline_or_answered(&config, &request).await else { panic!("no store, nothing answering") };
        assert!(format!("{err:#}").contains("there is no store in"), "{err:#}");
        let mut asked = stand_in(&config.control, None);
        assert!(offline_or_answered(&config, &request).await.unwrap().is_none(), "answered by the socket");
        let Some(ControlRequest::FromFile { request: got, .. }) = asked.recv().await else { panic!("a request") };
        assert_eq!(*got, request);
    }
}

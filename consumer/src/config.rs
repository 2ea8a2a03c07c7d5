//! `consumer.toml`: the consumer's configuration, its defaults, and the checks that
//! refuse a bad file at start with the file, the dotted key and the reason (SPEC §5).
//!
//! [`ConsumerConfig::load`] reads and checks the whole file and resolves every relative
//! path against the file's folder. It does not read the files it names:
//! [`ConsumerConfig::check_files`] reads them (secrets, CA files) at start, on reload
//! and for `status`, and the session code calls [`load_secret`] when it needs the
//! bytes, so they live only as long as needed. An agreement's `filter` is kept as text,
//! and parsed as the file loads ([`region`] gives it parsed), so a filter that does not
//! parse is refused against the key `agreement[N].filter`.

/// The config-file mechanics both processes share.
pub use tether_config as source;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use tether_protocol::control::StatusGroup;
use tether_protocol::entry::operational::is_not_kept;
use tether_protocol::entry::parse_attribute_name;
use tether_protocol::handshake::MAX_REGION;
pub use tether_protocol::Mode;
use tether_protocol::{codec, Dn, Filter, Scope, SearchSpec};

use crate::retry::RetrySchedule;
pub use source::{load_secret, AddressError, ConfigError, HostPort, KeepaliveConfig, SecretFile};

/// Default `data_dir`, relative to the config file's folder.
pub const DEFAULT_DATA_DIR: &str = "data/consumer";
/// Default `shutdown_timeout`: time to say goodbye and flush before exiting anyway.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// Default agreement `mode`.
pub const DEFAULT_MODE: Mode = Mode::RefreshAndPersist;
/// Default agreement `interval` between refresh-only polls.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(60);
/// The shortest `interval` between polls: each is a connection, a handshake and a
/// refresh on both sides, and a millisecond (accepted once) made 300 a second, a core
/// on the two processes and ten thousand sockets in TIME_WAIT on the provider. A
/// replica that must follow closer wants `refresh-and-persist`.
pub const MIN_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Default agreement `scope`.
pub const DEFAULT_SCOPE: Scope = Scope::Subtree;
/// Default agreement `filter`: every entry in scope.
pub const DEFAULT_FILTER: &str = "(objectClass=*)";

/// Why a server-maintained attribute in an agreement's region is refused: Tether keeps
/// none (see [`tether_protocol::entry::operational`]).
const NOT_KEPT: &str = "maintained by an LDAP server and not kept by Tether (an entry's version is its CSN; \
                        see docs/ldif.md)";
/// Default agreement `idle_timeout`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// The shortest `idle_timeout`: a session it ends is made again, a connection, a
/// handshake and a refresh, as a poll is. With keepalive on it must exceed the ping's
/// interval, which is at least as long; with keepalive off, `"1ns"` (taken as greater
/// than zero) ended every session as it began, and the agreement never persisted.
pub const MIN_IDLE_TIMEOUT: Duration = MIN_POLL_INTERVAL;

/// The whole of `consumer.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerConfig {
    /// The file this was loaded from, so `reload` and error messages can name it. Not a
    /// key of the file.
    #[serde(skip)]
    pub file: PathBuf,
    /// Folder of the consumer's store (created on first start), holding every
    /// agreement's replica and cookie. Default `"data/consumer"`.
    #[serde(default = "default_data_dir", deserialize_with = "source::path")]
    pub data_dir: PathBuf,
    /// The store's page cache, e.g. `"256MiB"`: a replica whose working set fits applies
    /// deltas and changes without reading pages back from disk; less bounds the
    /// process's memory. Default `"64MiB"`.
    #[serde(default = "default_cache_size", deserialize_with = "source::cache_size")]
    pub cache_size: u64,
    /// Unix socket (mode 0600, or 0660 with a `status_group`) through which `status`, `stop`, `start`, `reload` and
    /// `search` reach the running process. Default `<data_dir>/control.sock`.
    #[serde(default, deserialize_with = "source::path")]
    pub control: PathBuf,
    /// A group whose members may read `status` through the control socket, and run
    /// nothing else there: a monitoring agent's own user, rather than the service's,
    /// which could also stop, reload and read the directory. The socket is then mode
    /// 0660 and the group's (the process's user must be a member, or root), and the
    /// folder it is in must let the group pass (the default, in `data_dir`, does not).
    /// A group's name or number; none by default.
    #[serde(default, deserialize_with = "source::status_group")]
    pub status_group: Option<StatusGroup>,
    /// Where to serve metrics for Prometheus (`GET /metrics` over HTTP), as `host:port`:
    /// the figures of `status` as counters and gauges. Anyone who can reach it reads
    /// them (names, addresses and counts, never entries), so listen on loopback or an
    /// address a firewall keeps to the scrapers. None by default: no listener.
    #[serde(default, deserialize_with = "source::optional_host_port")]
    pub metrics_listen: Option<HostPort>,
    /// How long SIGTERM/SIGINT may take to send goodbyes and flush before the process
    /// exits anyway. Default `"10s"`.
    #[serde(default = "default_shutdown_timeout", deserialize_with = "source::positive_duration")]
    pub shutdown_timeout: Duration,
    /// The replication agreements (`[[agreement]]`), each run by its own supervisor.
    /// Default none: the process idles until a `reload` adds one.
    #[serde(default, rename = "agreement")]
    pub agreements: Vec<AgreementConfig>,
}

/// One `[[agreement]]`: what to replicate from which provider, and how.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgreementConfig {
    /// Unique name; used in commands (`stop NAME`), status, logs and the handshake,
    /// and keys the agreement's replica. Required: ASCII letters and digits, `-`, `_`, `.`.
    pub name: String,
    /// Provider address as `host:port`, resolved at each connect. Required.
    #[serde(deserialize_with = "source::host_port")]
    pub provider: HostPort,
    /// `"refresh-and-persist"` (stay connected, receive changes as they commit) or
    /// `"refresh-only"` (poll every `interval`). Default `"refresh-and-persist"`.
    #[serde(default = "default_mode", deserialize_with = "mode")]
    pub mode: Mode,
    /// Time between the end of one refresh-only poll and the next; unused in
    /// refresh-and-persist. Default `"1m"`.
    #[serde(default = "default_poll_interval", deserialize_with = "source::positive_duration")]
    pub interval: Duration,
    /// Root of the replicated region. Required; the provider refuses a base outside
    /// what the agreement is allowed.
    #[serde(deserialize_with = "source::dn")]
    pub base: Dn,
    /// How far below `base` to replicate: `base`, `one` or `subtree`. Default `"subtree"`.
    #[serde(default = "default_scope", deserialize_with = "source::scope")]
    pub scope: Scope,
    /// LDAP filter (RFC 4515) selecting entries in scope. Default `"(objectClass=*)"`.
    /// Kept as text, as written; checked at load, and parsed by [`region`].
    #[serde(default = "default_filter")]
    pub filter: String,
    /// Attributes to replicate; empty means all. Default `[]`.
    #[serde(default)]
    pub attrs: Vec<String>,
    /// File holding the agreement's shared secret (HMAC key), relative to the config
    /// file's folder. Required.
    #[serde(deserialize_with = "source::path")]
    pub secret_file: PathBuf,
    /// A session on which nothing at all arrives for this long is closed
    /// (`idle-timeout`) and reconnected per `retry`. Default `"5m"`; must exceed
    /// `keepalive.interval`, since pings arrive that often on a healthy session, and be
    /// at least [`MIN_IDLE_TIMEOUT`].
    #[serde(default = "default_idle_timeout", deserialize_with = "idle_timeout")]
    pub idle_timeout: Duration,
    /// Reconnect delays, as `"<delay> x<count>"` steps, the last possibly
    /// `"<delay> forever"`; jittered by ±20%. Default `["1s x5", "10s x10", "1m forever"]`.
    #[serde(default)]
    pub retry: RetrySchedule,
    /// After failing to hold a healthy session for this long, give up: the agreement
    /// goes to `closed`. Default: never give up.
    #[serde(default, deserialize_with = "source::optional_positive_duration")]
    pub give_up_after: Option<Duration>,
    /// Heartbeat settings for this agreement's sessions (`[agreement.keepalive]`).
    /// Default `interval = "5s"`, `timeout = "20s"`.
    #[serde(default)]
    pub keepalive: KeepaliveConfig,
    /// TLS towards the provider (`[agreement.tls]`). Default: plain TCP.
    #[serde(default)]
    pub tls: Option<AgreementTls>,
    /// Whether a provider must prove it knows the agreement's secret (protocol version 3):
    /// `"once-proved"`, `"required"` or `"optional"`. Default `"once-proved"`.
    #[serde(default, deserialize_with = "provider_proof")]
    pub provider_proof: ProofPolicy,
}

/// `provider_proof`: when an agreement refuses a provider that does not prove it knows
/// the secret. A provider of a build before protocol version 3 cannot prove it, and an
/// impostor on the provider's address can pretend to be one, so the question is when
/// the consumer stops believing the first kind in order to refuse the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProofPolicy {
    /// Refuse one once a provider of the agreement has proved itself (recorded in the
    /// consumer's store), as SSH refuses a changed host key: an upgrade in either order
    /// works, and after it an impostor is refused.
    #[default]
    OnceProved,
    /// Always refuse one: for agreements whose providers all run this build.
    Required,
    /// Never refuse one: while a provider is rolled back to an older build. A proof
    /// that is offered is still checked.
    Optional,
}

impl ProofPolicy {
    /// The config word.
    pub fn as_str(self) -> &'static str {
        match self {
            ProofPolicy::OnceProved => "once-proved",
            ProofPolicy::Required => "required",
            ProofPolicy::Optional => "optional",
        }
    }
}

impl FromStr for ProofPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "once-proved" => Ok(ProofPolicy::OnceProved),
            "required" => Ok(ProofPolicy::Required),
            "optional" => Ok(ProofPolicy::Optional),
            _ => Err(format!("invalid provider_proof {s:?}: expected once-proved, required or optional")),
        }
    }
}

fn provider_proof<'de, D: Deserializer<'de>>(d: D) -> Result<ProofPolicy, D::Error> {
    source::parse_str(d, "once-proved, required or optional", ProofPolicy::from_str)
}

/// `[agreement.tls]`: connect to the provider over TLS.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgreementTls {
    /// PEM file of the certificate authorities trusted to sign the provider's
    /// certificate, relative to the config file's folder. Required in this section.
    #[serde(deserialize_with = "source::path")]
    pub ca_file: PathBuf,
    /// Name the provider's certificate must carry. Default: the host of `provider`.
    #[serde(default)]
    pub server_name: Option<String>,
}

fn mode<'de, D: Deserializer<'de>>(d: D) -> Result<Mode, D::Error> {
    source::parse_str(d, "refresh-and-persist or refresh-only", |t| Mode::from_str(t).map_err(|e| e.to_string()))
}

fn idle_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    source::duration_at_least(
        d,
        MIN_IDLE_TIMEOUT,
        " (a session on which nothing arrives for this long is ended and made again)",
    )
}

fn default_cache_size() -> u64 {
    tether_store::DEFAULT_CACHE_BYTES
}

fn default_data_dir() -> PathBuf {
    PathBuf::from(DEFAULT_DATA_DIR)
}

fn default_shutdown_timeout() -> Duration {
    DEFAULT_SHUTDOWN_TIMEOUT
}

fn default_mode() -> Mode {
    DEFAULT_MODE
}

fn default_poll_interval() -> Duration {
    DEFAULT_POLL_INTERVAL
}

fn default_scope() -> Scope {
    DEFAULT_SCOPE
}

fn default_filter() -> String {
    DEFAULT_FILTER.to_owned()
}

fn default_idle_timeout() -> Duration {
    DEFAULT_IDLE_TIMEOUT
}

impl ConsumerConfig {
    /// The keys whose new values in `new` a reload cannot apply (the store, the control
    /// socket and the shutdown limit are set up once, at start; every agreement key is
    /// applied): the reload says so, so that an operator does not take them for applied.
    pub fn restart_only_changes(&self, new: &ConsumerConfig) -> Vec<&'static str> {
        [
            ("data_dir", self.data_dir != new.data_dir),
            ("cache_size", self.cache_size != new.cache_size),
            ("control", self.control != new.control),
            ("status_group", self.status_group != new.status_group),
            ("metrics_listen", self.metrics_listen != new.metrics_listen),
            ("shutdown_timeout", self.shutdown_timeout != new.shutdown_timeout),
        ]
        .into_iter()
        .filter_map(|(key, changed)| changed.then_some(key))
        .collect()
    }

    /// Reads, checks and resolves the config file at `file`.
    pub fn load(file: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let file = file.as_ref();
        Self::from_toml_str(&source::read_file(file)?, file)
    }

    /// Checks and resolves `text` as if it had been read from `file` (which names the
    /// file in errors and anchors relative paths; it is not read).
    pub fn from_toml_str(text: &str, file: &Path) -> Result<Self, ConfigError> {
        let mut config: Self = source::parse_toml(file, text)?;
        let dir = source::config_dir(file)?;
        config.file = file.to_owned();
        let resolve = |key: &str, path: &Path| source::resolve_key(file, &dir, key, path);
        config.data_dir = resolve("data_dir", &config.data_dir)?;
        config.control = if config.control.as_os_str().is_empty() {
            config.data_dir.join(source::CONTROL_SOCKET_NAME)
        } else {
            resolve("control", &config.control)?
        };
        for (i, agreement) in config.agreements.iter_mut().enumerate() {
            agreement.secret_file = resolve(&format!("agreement[{i}].secret_file"), &agreement.secret_file)?;
            if let Some(tls) = &mut agreement.tls {
                tls.ca_file = resolve(&format!("agreement[{i}].tls.ca_file"), &tls.ca_file)?;
            }
        }
        config.check()?;
        Ok(config)
    }

    /// What `check` prints of a file a start would take: where the store and the socket
    /// are, relative paths resolved (where one anchored to the wrong folder shows), and
    /// what each agreement replicates from where.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "{}: valid\n  data_dir {}\n  control  {}\n",
            self.file.display(),
            self.data_dir.display(),
            self.control.display()
        );
        if let Some(at) = &self.metrics_listen {
            out.push_str(&format!("  metrics  http://{at}/metrics\n"));
        }
        for a in &self.agreements {
            let every = match a.mode {
                Mode::RefreshOnly => format!(" every {}", humantime::format_duration(a.interval)),
                Mode::RefreshAndPersist => String::new(),
            };
            let region = match a.scope {
                Scope::Base => format!("the entry {}", a.base),
                Scope::One => format!("the entries just below {}", a.base),
                Scope::Subtree => format!("{} and below", a.base),
            };
            let filter = if a.filter == DEFAULT_FILTER { String::new() } else { format!(" matching {}", a.filter) };
            let attrs = if a.attrs.is_empty() { String::new() } else { format!(", attributes {}", a.attrs.join(" ")) };
            out.push_str(&format!(
                "  agreement {}: {}{every} from {}{}: {region}{filter}{attrs}\n",
                a.name,
                a.mode.as_str(),
                a.provider,
                if a.tls.is_some() { " over TLS" } else { "" },
            ));
        }
        if self.agreements.is_empty() {
            out.push_str("  no [[agreement]]: the consumer would replicate nothing\n");
        }
        out
    }

    /// The agreement called `name`.
    pub fn agreement(&self, name: &str) -> Option<&AgreementConfig> {
        self.agreements.iter().find(|a| a.name == name)
    }

    /// Reads every file the agreements name (each secret, whose bytes it drops, and
    /// each TLS CA file), so that a missing, empty or unreadable one stops the start or
    /// reload, and `status` warns of it while the process runs on what it read: one
    /// agreement's file lost stops every agreement at the next start. Returns the
    /// warnings to log.
    pub fn check_files(&self) -> Result<Vec<String>, ConfigError> {
        let mut warnings = Vec::new();
        for (i, agreement) in self.agreements.iter().enumerate() {
            let loaded = load_secret(&agreement.secret_file)
                .map_err(|e| ConfigError::invalid(&self.file, format!("agreement[{i}].secret_file"), e.to_string()))?;
            warnings.extend(loaded.warnings);
            self.tls_client(i, agreement)?;
        }
        Ok(warnings)
    }

    /// The TLS client of `a`, agreement `index` (`None` for plain TCP), reading its CA
    /// file; errors name the key.
    pub fn tls_client(&self, index: usize, a: &AgreementConfig) -> Result<Option<crate::tls::TlsClient>, ConfigError> {
        let Some(tls) = &a.tls else { return Ok(None) };
        crate::tls::TlsClient::new(tls, a.tls_server_name())
            .map(Some)
            .map_err(|e| ConfigError::invalid(&self.file, format!("agreement[{index}].{}", e.key()), e.to_string()))
    }

    /// The checks that involve more than one value, or a value serde cannot judge.
    fn check(&self) -> Result<(), ConfigError> {
        let file = &self.file;
        source::check_control(file, &self.data_dir, &self.control)?;
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, agreement) in self.agreements.iter().enumerate() {
            let key = |name: &str| format!("agreement[{i}].{name}");
            source::check_agreement_name(&agreement.name).map_err(|r| ConfigError::invalid(file, key("name"), r))?;
            // Accepted, it was retried for ever against `no agreement named "writer"`.
            if agreement.name == source::WRITER_AGREEMENT {
                return Err(ConfigError::invalid(
                    file,
                    key("name"),
                    format!(
                        "agreement name {:?} is reserved: a provider lists the sessions of tether-provider write under \
                         it, and serves no agreement of that name; name the agreement as the provider's [[consumer]] \
                         does",
                        agreement.name
                    ),
                ));
            }
            if let Some(first) = seen.insert(&agreement.name, i) {
                return Err(ConfigError::invalid(
                    file,
                    key("name"),
                    format!("duplicate agreement name {:?}: agreement[{first}] has it too", agreement.name),
                ));
            }
            if agreement.provider.port() == 0 {
                return Err(ConfigError::invalid(
                    file,
                    key("provider"),
                    format!("invalid address \"{}\": port 0 cannot be connected to", agreement.provider),
                ));
            }
            // A provider's `listen` line copied here: connecting to an unspecified address
            // reaches this very host, and the agreement retried against whatever listened
            // on its port here, or nothing, saying only that the connection was refused.
            if agreement.provider.host().parse::<std::net::IpAddr>().is_ok_and(|ip| ip.to_canonical().is_unspecified())
            {
                return Err(ConfigError::invalid(
                    file,
                    key("provider"),
                    format!(
                        "invalid address \"{}\": {} is what a provider listens on to take connections on every \
                         interface, and connecting to it reaches this host: write the provider's own address or \
                         name, as provider.example.com:{}",
                        agreement.provider,
                        agreement.provider.host(),
                        agreement.provider.port()
                    ),
                ));
            }
            // The empty DN names the root, which no provider serves (its suffix is an entry).
            if agreement.base.is_root() {
                return Err(ConfigError::invalid(
                    file,
                    key("base"),
                    "base is empty: name the top entry of the region (the provider's suffix, or an entry below it)",
                ));
            }
            if agreement.filter.trim().is_empty() {
                return Err(ConfigError::invalid(
                    file,
                    key("filter"),
                    format!("filter is empty; use {DEFAULT_FILTER} to select every entry"),
                ));
            }
            for (j, attr) in agreement.attrs.iter().enumerate() {
                parse_attribute_name(attr)
                    .map_err(|e| ConfigError::invalid(file, key(&format!("attrs[{j}]")), e.to_string()))?;
                if is_not_kept(attr) {
                    return Err(ConfigError::invalid(
                        file,
                        key(&format!("attrs[{j}]")),
                        format!("{attr} is {NOT_KEPT}, so no entry has a value of it: take it out of the list"),
                    ));
                }
            }
            let region = region(file, i, agreement)?;
            if let Some(attr) = region.filter.attributes().into_iter().find(|a| is_not_kept(a)) {
                return Err(ConfigError::invalid(
                    file,
                    key("filter"),
                    format!(
                        "the filter reads {attr}, which is {NOT_KEPT}, so it matches no entry's value and the region \
                         would never hold what it selects: take that part out of the filter"
                    ),
                ));
            }
            if agreement.mode == Mode::RefreshOnly && agreement.interval < MIN_POLL_INTERVAL {
                return Err(ConfigError::invalid(
                    file,
                    key("interval"),
                    format!(
                        "interval {} is below the minimum of {}: each poll is a connection, a handshake and a \
                         refresh; to follow the provider closer, use mode = \"refresh-and-persist\"",
                        humantime::format_duration(agreement.interval),
                        humantime::format_duration(MIN_POLL_INTERVAL)
                    ),
                ));
            }
            agreement.keepalive.check(file, &key("keepalive"))?;
            // With keepalive on, pings arrive every interval: an idle_timeout at or below
            // it would end healthy idle sessions. With keepalive off, nothing to compare.
            if agreement.keepalive.enabled && agreement.idle_timeout <= agreement.keepalive.interval {
                return Err(ConfigError::invalid(
                    file,
                    key("idle_timeout"),
                    format!(
                        "idle_timeout {} must be longer than keepalive.interval {}",
                        humantime::format_duration(agreement.idle_timeout),
                        humantime::format_duration(agreement.keepalive.interval)
                    ),
                ));
            }
            if let Some(tls) = &agreement.tls {
                if tls.server_name.as_deref().is_some_and(str::is_empty) {
                    return Err(ConfigError::invalid(file, key("tls.server_name"), "server name is empty"));
                }
                // `[::1]` as in `provider` is no name: rustls said `invalid dns name`.
                if let Some(bare) = tls.server_name.as_deref().and_then(|n| n.strip_prefix('[')?.strip_suffix(']')) {
                    return Err(ConfigError::invalid(
                        file,
                        key("tls.server_name"),
                        format!("write an IPv6 address without brackets here: \"{bare}\""),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The region agreement `index` of `file`, `a`, replicates, its filter parsed: checked
/// as the file loads, so that every command reading the file refuses what a start
/// would (`status` took a filter that did not parse for good). One larger than a
/// handshake may carry is refused too: the provider would refuse every `Hello` as
/// hostile, without a word on why.
pub fn region(file: &Path, index: usize, a: &AgreementConfig) -> Result<SearchSpec, ConfigError> {
    let filter = Filter::parse(&a.filter).map_err(|e| {
        ConfigError::invalid(file, format!("agreement[{index}].filter"), format!("invalid filter {:?}: {e}", a.filter))
    })?;
    let spec = SearchSpec { base: a.base.clone(), scope: a.scope, filter, attrs: a.attrs.clone() };
    let too_large = |why: String| ConfigError::invalid(file, format!("agreement[{index}]"), why);
    let len = codec::encoded_len(&spec)
        .map_err(|e| too_large(format!("the region of {:?} cannot be encoded: {e}", a.name)))?;
    if len > MAX_REGION {
        return Err(too_large(format!(
            "the region of {:?} (base, filter and attrs) takes {len} bytes in a handshake, more than the \
             {MAX_REGION} one may carry; shorten the filter (an equality on a group, or a shorter base, selects as \
             much) or split the agreement in two",
            a.name
        )));
    }
    Ok(spec)
}

impl AgreementConfig {
    /// The name the provider's TLS certificate must carry: `tls.server_name`, or else
    /// the provider's host.
    pub fn tls_server_name(&self) -> &str {
        self.tls.as_ref().and_then(|t| t.server_name.as_deref()).unwrap_or(self.provider.host())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retry::{Repeat, RetryStep};

    const MINIMAL_AGREEMENT: &str = r#"
[[agreement]]
name = "people"
provider = "127.0.0.1:7389"
base = "ou=people,dc=example,dc=com"
secret_file = "people.key"
"#;

    fn parse(text: &str) -> Result<ConsumerConfig, ConfigError> {
        ConsumerConfig::from_toml_str(text, Path::new("/etc/tether/consumer.toml"))
    }

    #[test]
    fn a_reload_names_the_keys_it_cannot_apply() {
        let running = parse(MINIMAL_AGREEMENT).unwrap();
        let retried = parse(&MINIMAL_AGREEMENT.replace("people.key", "other.key")).unwrap();
        assert_eq!(running.restart_only_changes(&retried), Vec::<&str>::new(), "agreements are applied by a reload");
        let moved =
            parse(&format!("control = \"other.sock\"\nshutdown_timeout = \"9s\"\n{MINIMAL_AGREEMENT}")).unwrap();
        assert_eq!(running.restart_only_changes(&moved), ["control", "shutdown_timeout"]);
    }

    /// Each key a reload cannot apply is named when it alone changes: one left out of
    /// the list was taken for applied, the reply saying nothing of it while the consumer
    /// ran on the old value until its next start.
    #[test]
    fn each_key_a_reload_cannot_apply_is_named_when_it_alone_changes() {
        // `control` given, so that a new `data_dir` does not move the default socket too.
        let file = |extra: &str| format!("control = \"/run/tether/c.sock\"\n{extra}\n{MINIMAL_AGREEMENT}");
        let running = parse(&file("")).unwrap();
        let cases = [
            ("data_dir", file("data_dir = \"store\"")),
            ("cache_size", file("cache_size = \"128MiB\"")),
            ("control", file("").replace("c.sock", "d.sock")),
            ("status_group", file("status_group = \"0\"")),
            ("metrics_listen", file("metrics_listen = \"127.0.0.1:9390\"")),
            ("shutdown_timeout", file("shutdown_timeout = \"9s\"")),
        ];
        for (key, text) in cases {
            assert_eq!(running.restart_only_changes(&parse(&text).unwrap()), [key], "from:\n{text}");
        }
    }

    /// `metrics_listen` is off unless given, and an address as a provider's, refused
    /// naming the key.
    #[test]
    fn metrics_listen_is_an_address_and_off_by_default() {
        assert_eq!(parse(MINIMAL_AGREEMENT).unwrap().metrics_listen, None);
        let given = parse(&format!("metrics_listen = \"127.0.0.1:9391\"\n{MINIMAL_AGREEMENT}")).unwrap();
        assert_eq!(given.metrics_listen.map(|a| a.to_string()), Some("127.0.0.1:9391".to_owned()));
        let err = refused(&format!("metrics_listen = \"127.0.0.1\"\n{MINIMAL_AGREEMENT}"));
        assert!(err.contains("key 'metrics_listen'") && err.contains("expected host:port"), "{err}");
    }

    /// The error message for `text`, which must be refused.
    fn refused(text: &str) -> String {
        match parse(text) {
            Ok(config) => panic!("accepted: {config:?}"),
            Err(e) => e.to_string(),
        }
    }

    /// A minimal agreement with `line` inserted into its table.
    fn with(line: &str) -> String {
        format!("{MINIMAL_AGREEMENT}{line}\n")
    }

    /// `interval` is a poller's: an agreement that persists does not use it, and is not
    /// told to use the mode it has.
    #[test]
    fn the_poll_interval_s_minimum_holds_for_pollers_only() {
        assert!(parse(&with("interval = \"1ms\"")).is_ok());
        assert!(parse(&with("mode = \"refresh-only\"\ninterval = \"100ms\"")).is_ok());
        assert!(parse(&with("mode = \"refresh-only\"\ninterval = \"99ms\"")).is_err());
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn example_file() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let config = ConsumerConfig::load(dir.join("consumer.toml")).unwrap();
        assert_eq!(config.data_dir, dir.join("data/consumer"));
        assert_eq!(config.control, dir.join("data/consumer/control.sock"));
        assert_eq!(config.shutdown_timeout, secs(10));
        assert_eq!(config.agreements.len(), 2);

        let people = config.agreement("people").unwrap();
        assert_eq!(people.provider.to_string(), "127.0.0.1:7389");
        assert_eq!(people.mode, Mode::RefreshAndPersist);
        assert_eq!(people.base, Dn::parse("ou=people,dc=example,dc=com").unwrap());
        assert_eq!(people.scope, Scope::Subtree);
        assert_eq!(people.filter, "(objectClass=*)");
        assert!(people.attrs.is_empty());
        assert_eq!(people.secret_file, dir.join("secrets/people.key"));
        assert_eq!(people.idle_timeout, secs(300));
        assert_eq!(people.retry, RetrySchedule::default());
        assert_eq!(people.give_up_after, None);
        assert_eq!(people.keepalive, KeepaliveConfig { enabled: true, interval: secs(5), timeout: secs(20) });
        assert_eq!(people.tls, None);
        assert_eq!(people.provider_proof, ProofPolicy::OnceProved);

        let groups = config.agreement("groups").unwrap();
        assert_eq!(groups.mode, Mode::RefreshOnly);
        assert_eq!(groups.interval, secs(30));
        assert_eq!(groups.base, Dn::parse("ou=groups,dc=example,dc=com").unwrap());
        assert_eq!(groups.scope, Scope::One);
        assert_eq!(groups.filter, "(&(objectClass=groupOfNames)(cn=*))");
        assert_eq!(groups.attrs, ["objectClass", "cn", "member", "description"]);
        assert_eq!(groups.secret_file, dir.join("secrets/groups.key"));
        assert_eq!(groups.retry, RetrySchedule::parse(&["5s x3", "1m x10"]).unwrap());
        assert_eq!(groups.give_up_after, Some(secs(3600)));
        assert_eq!(groups.keepalive, KeepaliveConfig { enabled: true, interval: secs(10), timeout: secs(30) });
        assert_eq!(groups.provider_proof, ProofPolicy::Required);

        assert!(config.check_files().is_ok());
        let key = load_secret(&people.secret_file).unwrap();
        let file = std::fs::read(&people.secret_file).unwrap();
        assert!(key.secret == tether_protocol::Secret::new(file.trim_ascii_end().to_vec()).unwrap(), "newline trimmed");
    }

    /// `check` says what the file sets up in words an operator checks against intent:
    /// the paths as resolved (a relative one anchored to the wrong folder shows), each
    /// agreement's mode, provider and region, and its filter and attributes when it
    /// narrows them.
    #[test]
    fn the_summary_of_the_example_file_says_what_each_agreement_replicates() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let config = ConsumerConfig::load(dir.join("consumer.toml")).unwrap();
        let expected = format!(
            "{file}: valid\n  data_dir {data}\n  control  {data}/control.sock\n  agreement people: \
             refresh-and-persist from 127.0.0.1:7389: ou=people,dc=example,dc=com and below\n  agreement groups: \
             refresh-only every 30s from 127.0.0.1:7389: the entries just below ou=groups,dc=example,dc=com matching \
             (&(objectClass=groupOfNames)(cn=*)), attributes objectClass cn member description\n",
            file = dir.join("consumer.toml").display(),
            data = dir.join("data/consumer").display(),
        );
        assert_eq!(config.summary(), expected);

        let tls = parse(&format!(
            "metrics_listen = \"127.0.0.1:9391\"\n{MINIMAL_AGREEMENT}scope = \"base\"\n[agreement.tls]\nca_file = \"ca.pem\"\n"
        ))
        .unwrap();
        let summary = tls.summary();
        assert!(summary.contains("\n  metrics  http://127.0.0.1:9391/metrics\n"), "{summary}");
        assert!(summary.contains(" over TLS: the entry "), "{summary}");
        let none = parse("").unwrap().summary();
        assert!(none.ends_with("  no [[agreement]]: the consumer would replicate nothing\n"), "{none}");
    }

    /// A file with a single agreement is not summed up as replicating nothing: the line
    /// that says so is for a file without any, where it is the mistake to catch.
    #[test]
    fn the_summary_of_a_single_agreement_does_not_say_it_replicates_nothing() {
        let summary = parse(MINIMAL_AGREEMENT).unwrap().summary();
        assert!(summary.contains("  agreement people: refresh-and-persist from 127.0.0.1:7389: "), "{summary}");
        assert!(!summary.contains("no [[agreement]]"), "{summary}");
    }

    #[test]
    fn defaults() {
        let config = parse("").unwrap();
        assert_eq!(config.data_dir, Path::new("/etc/tether/data/consumer"));
        assert_eq!(config.control, Path::new("/etc/tether/data/consumer/control.sock"));
        assert_eq!(config.shutdown_timeout, DEFAULT_SHUTDOWN_TIMEOUT);
        assert_eq!(config.cache_size, 64 << 20);
        assert!(config.agreements.is_empty());
        assert_eq!(parse("cache_size = \"256MiB\"").unwrap().cache_size, 256 << 20);

        let config = parse(MINIMAL_AGREEMENT).unwrap();
        let a = &config.agreements[0];
        assert_eq!(a.mode, Mode::RefreshAndPersist);
        assert_eq!(a.interval, secs(60));
        assert_eq!(a.scope, Scope::Subtree);
        assert_eq!(a.filter, DEFAULT_FILTER);
        assert!(a.attrs.is_empty());
        assert_eq!(a.idle_timeout, secs(300));
        assert_eq!(a.retry.to_string(), "[\"1s x5\", \"10s x10\", \"1m forever\"]");
        assert_eq!(a.give_up_after, None);
        assert_eq!(a.keepalive, KeepaliveConfig::default());
        assert_eq!(a.tls, None);
        assert_eq!(a.tls_server_name(), "127.0.0.1");
    }

    #[test]
    fn relative_paths_resolve_against_the_config_folder() {
        let text = with("[agreement.tls]\nca_file = \"../pki/ca.pem\"\nserver_name = \"provider.example.com\"")
            .replace("people.key", "secrets/people.key");
        let text = format!("data_dir = \"/var/lib/tether\"\n{text}");
        let config = parse(&text).unwrap();
        assert_eq!(config.data_dir, Path::new("/var/lib/tether"));
        assert_eq!(config.control, Path::new("/var/lib/tether/control.sock"));
        let a = &config.agreements[0];
        assert_eq!(a.secret_file, Path::new("/etc/tether/secrets/people.key"));
        let tls = a.tls.as_ref().unwrap();
        assert_eq!(tls.ca_file, Path::new("/etc/tether/../pki/ca.pem"));
        assert_eq!(a.tls_server_name(), "provider.example.com");

        let config = parse("data_dir = \"store\"\ncontrol = \"run/c.sock\"").unwrap();
        assert_eq!(config.data_dir, Path::new("/etc/tether/store"));
        assert_eq!(config.control, Path::new("/etc/tether/run/c.sock"));
    }

    #[test]
    fn loads_from_a_real_folder() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("secrets")).unwrap();
        std::fs::write(dir.path().join("secrets/people.key"), "k3y\n").unwrap();
        let file = dir.path().join("consumer.toml");
        std::fs::write(&file, MINIMAL_AGREEMENT.replace("people.key", "secrets/people.key")).unwrap();
        let config = ConsumerConfig::load(&file).unwrap();
        assert_eq!(config.file, file);
        assert_eq!(config.agreements[0].secret_file, dir.path().join("secrets/people.key"));
        assert!(config.check_files().is_ok());

        std::fs::write(&file, MINIMAL_AGREEMENT.replace("people.key", "secrets/none.key")).unwrap();
        let e = ConsumerConfig::load(&file).unwrap().check_files().unwrap_err().to_string();
        let want = format!(
            "{}: key 'agreement[0].secret_file': {}: cannot read secret file: ",
            file.display(),
            dir.path().join("secrets/none.key").display()
        );
        assert!(e.starts_with(&want), "{e}");

        let missing = dir.path().join("absent.toml");
        let e = ConsumerConfig::load(&missing).unwrap_err().to_string();
        assert!(e.starts_with(&format!("{}: cannot read: ", missing.display())), "{e}");
    }

    /// A secret file group or others may read works, and `check_files` says so (what a
    /// start, a reload, `status` and `check` warn of): a secret readable by every user of
    /// the host is one an operator wants to hear of before it leaks, not after.
    #[test]
    fn a_secret_others_may_read_is_warned_of_by_the_files_checked() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("people.key");
        std::fs::write(&secret, "a secret of enough length\n").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
        let file = dir.path().join("consumer.toml");
        std::fs::write(&file, MINIMAL_AGREEMENT).unwrap();
        let warnings = ConsumerConfig::load(&file).unwrap().check_files().unwrap();
        let accessible = format!("secret file {} is accessible", secret.display());
        assert!(warnings.len() == 1 && warnings[0].starts_with(&accessible), "{warnings:?}");
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(ConsumerConfig::load(&file).unwrap().check_files().unwrap(), Vec::<String>::new());
    }

    /// `check_files` reads each agreement's CA file, as a start does: one that cannot be
    /// read is named with its key, so that `status` warns of it while the consumer runs
    /// on what it read, as the next start would stop on it.
    #[test]
    fn a_ca_file_that_cannot_be_read_is_named_with_its_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("people.key"), "a secret of enough length\n").unwrap();
        let file = dir.path().join("consumer.toml");
        std::fs::write(&file, with("[agreement.tls]\nca_file = \"pki/ca.pem\"")).unwrap();
        let e = ConsumerConfig::load(&file).unwrap().check_files().unwrap_err().to_string();
        let want = format!(
            "{}: key 'agreement[0].tls.ca_file': cannot read {}: ",
            file.display(),
            dir.path().join("pki/ca.pem").display()
        );
        assert!(e.starts_with(&want), "{e}");
    }

    /// `check_files` reads the secret of every agreement, not the first's only: a start
    /// needs them all, so a second agreement's secret that cannot be read fails the
    /// check, named by that agreement's key.
    #[test]
    fn the_secret_of_every_agreement_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("people.key"), "a secret of enough length\n").unwrap();
        let file = dir.path().join("consumer.toml");
        let groups = "[[agreement]]\nname = \"groups\"\nprovider = \"127.0.0.1:7389\"\n\
                      base = \"ou=groups,dc=example,dc=com\"\nsecret_file = \"groups.key\"\n";
        std::fs::write(&file, format!("{MINIMAL_AGREEMENT}{groups}")).unwrap();
        let e = ConsumerConfig::load(&file).unwrap().check_files().unwrap_err().to_string();
        let want = format!(
            "{}: key 'agreement[1].secret_file': {}: cannot read secret file: ",
            file.display(),
            dir.path().join("groups.key").display()
        );
        assert!(e.starts_with(&want), "{e}");
    }

    /// A CA file that cannot be read is named by the key of the agreement that names
    /// it, not the first one's: in a file of several agreements, the operator goes to the
    /// one the error points at.
    #[test]
    fn a_ca_file_that_cannot_be_read_is_named_with_its_own_agreement_s_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("people.key"), "a secret of enough length\n").unwrap();
        std::fs::write(dir.path().join("groups.key"), "a secret of enough length\n").unwrap();
        let file = dir.path().join("consumer.toml");
        let groups = "[[agreement]]\nname = \"groups\"\nprovider = \"127.0.0.1:7389\"\n\
                      base = \"ou=groups,dc=example,dc=com\"\nsecret_file = \"groups.key\"\n\
                      [agreement.tls]\nca_file = \"pki/ca.pem\"\n";
        std::fs::write(&file, format!("{MINIMAL_AGREEMENT}{groups}")).unwrap();
        let e = ConsumerConfig::load(&file).unwrap().check_files().unwrap_err().to_string();
        let want = format!(
            "{}: key 'agreement[1].tls.ca_file': cannot read {}: ",
            file.display(),
            dir.path().join("pki/ca.pem").display()
        );
        assert!(e.starts_with(&want), "{e}");
    }

    #[test]
    fn bad_values_name_file_key_and_reason() {
        let f = "/etc/tether/consumer.toml";
        let cases: Vec<(String, String)> = vec![
            (
                with("scope = \"deep\""),
                "key 'agreement[0].scope': invalid scope \"deep\": expected base, one (or onelevel) or subtree (or sub)".into(),
            ),
            (
                with("mode = \"push\""),
                "key 'agreement[0].mode': invalid mode \"push\": expected refresh-and-persist or refresh-only".into(),
            ),
            (
                with("provider_proof = \"never\""),
                "key 'agreement[0].provider_proof': invalid provider_proof \"never\": expected once-proved, required or \
                 optional"
                    .into(),
            ),
            (
                with("interval = \"0s\""),
                "key 'agreement[0].interval': invalid duration \"0s\": must be greater than zero".into(),
            ),
            (
                with("mode = \"refresh-only\"\ninterval = \"1ms\""),
                "key 'agreement[0].interval': interval 1ms is below the minimum of 100ms: each poll is a connection, \
                 a handshake and a refresh; to follow the provider closer, use mode = \"refresh-and-persist\""
                    .into(),
            ),
            // Refused as the file loads, so `status` and the offline commands refuse it
            // as a start does, in words an operator reads.
            (
                with("[agreement.tls]\nca_file = \"ca.pem\"\nserver_name = \"\""),
                "key 'agreement[0].tls.server_name': server name is empty".into(),
            ),
            (
                with("[agreement.tls]\nca_file = \"ca.pem\"\nserver_name = \"[::1]\""),
                "key 'agreement[0].tls.server_name': write an IPv6 address without brackets here: \"::1\"".into(),
            ),
            (
                with("give_up_after = \"0s\""),
                "key 'agreement[0].give_up_after': invalid duration \"0s\": must be greater than zero".into(),
            ),
            (
                with("idle_timeout = \"5 fortnights\""),
                "key 'agreement[0].idle_timeout': invalid duration \"5 fortnights\": unknown time unit".into(),
            ),
            (
                with("idle_timeout = \"5s\""),
                "key 'agreement[0].idle_timeout': idle_timeout 5s must be longer than keepalive.interval 5s".into(),
            ),
            (
                MINIMAL_AGREEMENT.replace("ou=people,dc=example,dc=com", "ou=people,,dc=com"),
                "key 'agreement[0].base': invalid DN \"ou=people,,dc=com\": empty RDN at byte".into(),
            ),
            (
                MINIMAL_AGREEMENT.replace("127.0.0.1:7389", "127.0.0.1"),
                "key 'agreement[0].provider': invalid address \"127.0.0.1\": expected host:port".into(),
            ),
            (
                MINIMAL_AGREEMENT.replace("127.0.0.1:7389", "::1:7389"),
                "key 'agreement[0].provider': invalid address \"::1:7389\": an IPv6 address needs brackets".into(),
            ),
            (
                MINIMAL_AGREEMENT.replace("127.0.0.1:7389", "999.1.1.1:48073"),
                "key 'agreement[0].provider': invalid address \"999.1.1.1:48073\": the host is not an IPv4 address"
                    .into(),
            ),
            (
                MINIMAL_AGREEMENT.replace("127.0.0.1:7389", "127.0.0.1:0"),
                "key 'agreement[0].provider': invalid address \"127.0.0.1:0\": port 0 cannot be connected to".into(),
            ),
            (
                MINIMAL_AGREEMENT.replace("\"people\"", "\"\""),
                "key 'agreement[0].name': agreement name is empty".into(),
            ),
            (
                MINIMAL_AGREEMENT.replace("\"people\"", "\"my people\""),
                "key 'agreement[0].name': invalid agreement name \"my people\"".into(),
            ),
            (
                format!("{MINIMAL_AGREEMENT}{MINIMAL_AGREEMENT}"),
                "key 'agreement[1].name': duplicate agreement name \"people\": agreement[0] has it too".into(),
            ),
            (
                MINIMAL_AGREEMENT.replace("\"people\"", "\"writer\""),
                "key 'agreement[0].name': agreement name \"writer\" is reserved".into(),
            ),
            (with("filter = \" \""), "key 'agreement[0].filter': filter is empty".into()),
            (
                MINIMAL_AGREEMENT.replace("base = \"ou=people,dc=example,dc=com\"", "base = \"\""),
                "key 'agreement[0].base': base is empty".into(),
            ),
            (
                with("attrs = [\"cn\", \"no such\"]"),
                "key 'agreement[0].attrs[1]': invalid attribute name \"no such\"".into(),
            ),
            (
                with("attrs = [\"*\"]"),
                "key 'agreement[0].attrs[0]': \"*\" is LDAP's selection of all user attributes in a search, not an \
                 attribute name: leave the list out to keep every attribute (Tether keeps no operational ones)"
                    .into(),
            ),
            // Carried over from syncrepl: what the server maintains selects nothing here.
            (
                with("attrs = [\"cn\", \"modifyTimestamp\"]"),
                "key 'agreement[0].attrs[1]': modifyTimestamp is maintained by an LDAP server and not kept by Tether \
                 (an entry's version is its CSN; see docs/ldif.md), so no entry has a value of it: take it out of the \
                 list"
                    .into(),
            ),
            (
                with("filter = \"(&(objectClass=person)(|(2.5.18.2>=20200101000000Z)(entryUUID=x)))\""),
                "key 'agreement[0].filter': the filter reads 2.5.18.2, which is maintained by an LDAP server and not \
                 kept by Tether (an entry's version is its CSN; see docs/ldif.md), so it matches no entry's value and \
                 the region would never hold what it selects: take that part out of the filter"
                    .into(),
            ),
            (
                with("[agreement.keepalive]\ninterval = \"20s\""),
                "key 'agreement[0].keepalive.timeout': timeout 20s must be longer than interval 20s".into(),
            ),
            (
                with("[agreement.keepalive]\ninterval = \"0ms\""),
                "key 'agreement[0].keepalive.interval': invalid duration \"0ms\": must be at least 100ms".into(),
            ),
            (
                with("keepalive = { timeout = \"1s\" }"),
                "key 'agreement[0].keepalive.timeout': timeout 1s must be longer than interval 5s".into(),
            ),
            (
                with("[agreement.tls]\nserver_name = \"x\""),
                "key 'agreement[0].tls.ca_file': required key is missing".into(),
            ),
            (
                MINIMAL_AGREEMENT.replace("\"people.key\"", "\"\""),
                "key 'agreement[0].secret_file': path is empty".into(),
            ),
            (
                "shutdown_timeout = 10".into(),
                "key 'shutdown_timeout': invalid type: integer `10`, expected a duration".into(),
            ),
            ("shutdown_timeout = \"\"".into(), "key 'shutdown_timeout': invalid duration \"\": value was empty".into()),
            (
                "cache_size = \"99999999999GiB\"".into(),
                "key 'cache_size': invalid size \"99999999999GiB\": too large".into(),
            ),
            ("cache_size = \"0MiB\"".into(), "key 'cache_size': invalid size \"0MiB\": must be at least 1MiB".into()),
            (format!("control = \"/{}\"", "s".repeat(120)), "key 'control': socket path /sss".into()),
            (
                "data_dir = \"/var/lib/tether\"\ncontrol = \"/var/lib/tether\"".into(),
                "key 'control': socket path /var/lib/tether is data_dir itself".into(),
            ),
            (
                MINIMAL_AGREEMENT.replace("provider = \"127.0.0.1:7389\"\n", ""),
                "key 'agreement[0].provider': required key is missing".into(),
            ),
            ("agreement = 5".into(), "key 'agreement': invalid type: integer `5`, expected a sequence".into()),
        ];
        for (text, want) in cases {
            let got = refused(&text);
            let want = format!("{f}: {want}");
            assert!(got.starts_with(&want), "\n got: {got}\nwant: {want}\nfrom:\n{text}");
        }
    }

    /// A provider's `listen` line copied into an agreement is refused, naming the key:
    /// connecting to an address that means every interface reaches the consumer's own host.
    #[test]
    fn a_provider_address_meaning_every_interface_is_refused() {
        let f = "/etc/tether/consumer.toml";
        for (address, host) in [
            ("0.0.0.0:7389", "0.0.0.0"),
            ("[::]:7389", "::"),
            ("[0:0::0]:7389", "0:0::0"),
            ("[::ffff:0.0.0.0]:7389", "::ffff:0.0.0.0"),
        ] {
            let text = MINIMAL_AGREEMENT.replace("127.0.0.1:7389", address);
            let got = refused(&text);
            assert_eq!(
                got,
                format!(
                    "{f}: key 'agreement[0].provider': invalid address \"{address}\": {host} is what a provider \
                     listens on to take connections on every interface, and connecting to it reaches this host: write \
                     the provider's own address or name, as provider.example.com:7389"
                ),
            );
        }
        for fine in ["127.0.0.1:7389", "[::1]:7389", "0.0.0.1:7389", "provider.example.com:7389"] {
            let text = MINIMAL_AGREEMENT.replace("127.0.0.1:7389", fine);
            assert!(parse(&text).is_ok(), "{fine}");
        }
    }

    #[test]
    fn retry_errors_name_the_step() {
        let second = MINIMAL_AGREEMENT.replace("\"people\"", "\"groups\"");
        let text = format!("{MINIMAL_AGREEMENT}{second}retry = [\"1s x5\", \"10s x10\", \"1m forevr\"]\n");
        assert_eq!(
            refused(&text),
            "/etc/tether/consumer.toml: key 'agreement[1].retry[2]': invalid retry step \"1m forevr\": invalid count \"forevr\": expected x followed by a whole number, as x5"
        );
        let cases = [
            ("retry = [\"1s x0\"]", "key 'agreement[0].retry[0]': invalid retry step \"1s x0\": count must be at least 1"),
            ("retry = [\"1s\"]", "key 'agreement[0].retry[0]': invalid retry step \"1s\": expected \"<delay> x<count>\""),
            ("retry = [\"1m forever\", \"1s x5\"]", "key 'agreement[0].retry[1]': retry step \"1s x5\" follows \"1m forever\": only the last step may repeat forever"),
            // Named where it follows the `forever`, not where the list begins.
            ("retry = [\"1s x5\", \"1m forever\", \"10s x3\"]", "key 'agreement[0].retry[2]': retry step \"10s x3\" follows \"1m forever\": only the last step may repeat forever"),
            ("retry = []", "key 'agreement[0].retry': retry schedule is empty"),
            ("retry = [\"1000000y forever\"]", "key 'agreement[0].retry[0]': invalid retry step \"1000000y forever\": invalid duration \"1000000y\": longer than 100 years"),
            ("retry = \"1s x5\"", "key 'agreement[0].retry': invalid type: string \"1s x5\", expected a list of retry steps"),
            ("retry = [5]", "key 'agreement[0].retry[0]': invalid type: integer `5`, expected a retry step"),
        ];
        for (line, want) in cases {
            let got = refused(&with(line));
            assert!(got.starts_with(&format!("/etc/tether/consumer.toml: {want}")), "\n got: {got}\nwant: {want}");
        }
        let config = parse(&with("retry = [\"250ms x4\", \"1m 30s forever\"]")).unwrap();
        let steps = config.agreements[0].retry.steps();
        assert_eq!(steps[0], RetryStep::new(Duration::from_millis(250), Repeat::Times(4)).unwrap());
        assert_eq!(steps[1], RetryStep::new(secs(90), Repeat::Forever).unwrap());
    }

    /// A retry delay of a few nanoseconds is refused as zero is: `"1ns forever"` passed
    /// as greater than zero and reconnected in a tight loop, some 900 attempts a
    /// second against a provider that was down, two log lines each, and as fast
    /// against one refusing the agreement's credentials (which waits the longest delay).
    #[test]
    fn a_retry_delay_of_a_few_nanoseconds_is_refused_as_zero_is() {
        assert_eq!(
            refused(&with("retry = [\"1s x5\", \"1ns forever\"]")),
            "/etc/tether/consumer.toml: key 'agreement[0].retry[1]': invalid retry step \"1ns forever\": delay 1ns \
             is below the minimum of 100ms: each attempt is a connection and a handshake"
        );
        assert!(refused(&with("retry = [\"99ms x3\"]")).contains("delay 99ms is below the minimum of 100ms"));
        assert!(parse(&with("retry = [\"100ms x3\", \"1s forever\"]")).is_ok());
    }

    /// An idle limit of a few nanoseconds is refused as zero is: with keepalive off,
    /// which alone lets it be shorter than a ping's interval, `"1ns"` passed as greater
    /// than zero and ended every session as it began (`idle-timeout: nothing received
    /// for 1ns` right after each refresh, and before it against a provider a millisecond
    /// away), so the agreement never persisted and reconnected at every retry.
    #[test]
    fn an_idle_timeout_of_a_few_nanoseconds_is_refused_as_zero_is() {
        let off = "[agreement.keepalive]\nenabled = false";
        assert_eq!(
            refused(&with(&format!("idle_timeout = \"1ns\"\n{off}"))),
            "/etc/tether/consumer.toml: key 'agreement[0].idle_timeout': invalid duration \"1ns\": must be at least \
             100ms (a session on which nothing arrives for this long is ended and made again)"
        );
        assert!(refused(&with(&format!("idle_timeout = \"99ms\"\n{off}"))).contains("must be at least 100ms"));
        assert!(parse(&with(&format!("idle_timeout = \"100ms\"\n{off}"))).is_ok());
    }

    #[test]
    fn unknown_keys_are_named() {
        let f = "/etc/tether/consumer.toml";
        let cases = [
            ("data_dri = \"x\"".to_owned(), "key 'data_dri': unknown key `data_dri`, expected one of `data_dir`, `cache_size`, `control`, `status_group`, `metrics_listen`, `shutdown_timeout`, `agreement`"),
            ("file = \"x\"".to_owned(), "key 'file': unknown key `file`"),
            (with("scop = \"one\""), "key 'agreement[0].scop': unknown key `scop`, expected one of `name`, `provider`"),
            (with("[agreement.keepalive]\nintervall = \"1s\""), "key 'agreement[0].keepalive.intervall': unknown key `intervall`, expected one of `enabled`, `interval`, `timeout`"),
            (with("[agreement.keeplive]\ninterval = \"1s\""), "key 'agreement[0].keeplive': unknown key `keeplive`"),
            ("[keepalive]\ninterval = \"1s\"".to_owned(), "key 'keepalive': unknown key `keepalive`"),
        ];
        for (text, want) in cases {
            let got = refused(&text);
            assert!(got.starts_with(&format!("{f}: {want}")), "\n got: {got}\nwant: {want}");
        }
        let e = parse("data_dri = \"x\"").unwrap_err();
        assert_eq!(e.key(), Some("data_dri"));
        assert_eq!(e.file(), Path::new(f));
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let got = refused(&format!("{MINIMAL_AGREEMENT}scope = subtree\n"));
        assert!(got.starts_with("/etc/tether/consumer.toml: line 7, column 9: invalid TOML: "), "{got}");
    }

    #[test]
    fn mode_round_trips() {
        for mode in [Mode::RefreshAndPersist, Mode::RefreshOnly] {
            assert_eq!(mode.to_string().parse::<Mode>(), Ok(mode));
        }
    }

    /// A filter that does not parse, and a region larger than a handshake carries, are
    /// refused as the file loads, as a start refuses them: `status` and the offline
    /// `stop` and `start` read the file so, and took it for good (a running consumer's
    /// `status` warned of nothing its next start or reload would refuse).
    #[test]
    fn a_region_a_start_refuses_is_refused_as_the_file_loads() {
        let got = refused(&with("filter = \"(cn=x\""));
        assert_eq!(
            got,
            "/etc/tether/consumer.toml: key 'agreement[0].filter': invalid filter \"(cn=x\": unbalanced parenthesis \
             at byte 0"
        );
        let uids: String = (0..3000).map(|i| format!("(uid=u{i:07})")).collect();
        let got = refused(&with(&format!("filter = \"(|{uids})\"")));
        assert!(
            got.starts_with(
                "/etc/tether/consumer.toml: key 'agreement[0]': the region of \"people\" (base, filter and attrs) \
                 takes "
            ) && got.contains("more than the 32768 one may carry"),
            "{got}"
        );
    }

    /// `entryUUID` is server-maintained but kept (it is the entry's identity): a region
    /// filtering on it, or keeping it, is not refused as one on `modifyTimestamp` is.
    #[test]
    fn a_region_naming_entry_uuid_is_not_refused_as_naming_what_tether_does_not_keep() {
        assert!(parse(&with("filter = \"(entryUUID=0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0)\"")).is_ok());
        assert!(parse(&with("filter = \"(&(objectClass=person)(1.3.6.1.1.16.4=*))\"")).is_ok());
        assert!(parse(&with("attrs = [\"cn\", \"entryUUID\"]")).is_ok());
    }
}

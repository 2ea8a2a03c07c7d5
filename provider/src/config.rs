//! `provider.toml`: the provider's configuration, its defaults, and the checks that
//! refuse a bad file at start with the file, the dotted key and the reason (SPEC §5).
//!
//! [`ProviderConfig::load`] reads and checks the whole file and resolves every relative
//! path against the file's folder. It does not read the files it names: the start and
//! reload read them as they build what they serve with, [`ProviderConfig::check_files`]
//! reads them for `status`, and the session code calls [`load_secret`] when it needs
//! the bytes.

/// The config-file mechanics both processes share.
pub use tether_config as source;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tether_protocol::control::StatusGroup;
use tether_protocol::Dn;

pub use source::{load_secret, AddressError, ConfigError, HostPort, KeepaliveConfig, SecretFile};

/// Default `data_dir`, relative to the config file's folder.
pub const DEFAULT_DATA_DIR: &str = "data/provider";
/// Default port of `listen` (on the loopback interface).
pub const DEFAULT_PORT: u16 = 7389;
/// Default `max_connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default `handshake_timeout`.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `max_frame`: 16 MiB, the protocol's own limit ([`tether_protocol::frame::MAX_FRAME`]),
/// which is also the most it may be.
pub const DEFAULT_MAX_FRAME: u32 = tether_protocol::frame::MAX_FRAME as u32;
/// Smallest `max_frame` accepted: a handshake or a single ordinary entry must fit.
pub const MIN_MAX_FRAME: u32 = 64 * 1024;
/// Most `max_connections`: each connection holds a file descriptor, a C `int`, so no
/// process holds more. Past tokio's count of a semaphore's permits (the largest number
/// TOML holds, written for "no limit", is) the start panicked, once it had made the store.
pub const MAX_MAX_CONNECTIONS: usize = i32::MAX as usize;
/// Most `queue_len`: the most a session's queue (a tokio channel) can count; past it
/// every session panicked as it began, and its consumer saw the connection closed
/// without a goodbye, retrying for ever.
pub const MAX_QUEUE_LEN: usize = tokio::sync::Semaphore::MAX_PERMITS;
/// Default `batch_size`.
pub const DEFAULT_BATCH_SIZE: usize = 500;
/// Default `cache_size`: half a consumer's (`tether_store::DEFAULT_CACHE_BYTES`). A
/// provider reads in two ways: a refresh's scan, sequential, which a cache cannot speed
/// up and which fills it with pages nothing reads again, and the few entries each write
/// or live change touches. At a million entries the 32 MiB saved keeps the provider's
/// peak under 200 MiB through a full refresh; at 100,000 no workload of `tether-bench`
/// moved with the halving (docs/benchmarks-history.md).
pub const DEFAULT_CACHE_SIZE: u64 = 32 << 20;
/// Default `queue_len`.
pub const DEFAULT_QUEUE_LEN: usize = 1024;
/// Default `changelog.max_changes`.
pub const DEFAULT_MAX_CHANGES: u64 = 1_000_000;
/// Default `changelog.max_age`: 7 days.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Default `changelog.hold_for_consumers`: 1 day.
pub const DEFAULT_HOLD_FOR_CONSUMERS: Duration = Duration::from_secs(24 * 3600);
/// Default `changelog.trim_interval`.
pub const DEFAULT_TRIM_INTERVAL: Duration = Duration::from_secs(60);

/// The whole of `provider.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// The file this was loaded from, so error messages can name it. Not a key of the
    /// file.
    #[serde(skip)]
    pub file: PathBuf,
    /// Folder of the provider's store (created on first start): entries, changelog,
    /// store id. Default `"data/provider"`.
    #[serde(default = "default_data_dir", deserialize_with = "source::path")]
    pub data_dir: PathBuf,
    /// The store's page cache, e.g. `"256MiB"`: more keeps more of a large directory
    /// in memory (faster deltas and writes on it), less bounds the process's memory.
    /// Default `"32MiB"`.
    #[serde(default = "default_cache_size", deserialize_with = "source::cache_size")]
    pub cache_size: u64,
    /// Address consumers and writers connect to, as `host:port`; port 0 picks a free
    /// port (tests). Default `"127.0.0.1:7389"`: reachable from this host only until an
    /// operator opens it up.
    #[serde(default = "default_listen", deserialize_with = "source::host_port")]
    pub listen: HostPort,
    /// Unix socket (mode 0600, or 0660 with a `status_group`) through which `status`, `search` and admin commands
    /// reach the running process. Default `<data_dir>/control.sock`.
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
    /// The DN at the top of the directory: the one entry that may exist without a
    /// parent. Required.
    #[serde(deserialize_with = "source::dn")]
    pub suffix: Dn,
    /// Most simultaneous connections (sessions, writers, handshakes in progress); one
    /// more waits to be accepted. Default `1024`, at most [`MAX_MAX_CONNECTIONS`].
    #[serde(default = "default_max_connections", deserialize_with = "source::positive")]
    pub max_connections: usize,
    /// A connection that has not completed its handshake within this time is closed,
    /// so a stalled or hostile client cannot hold a slot. Default `"10s"`, at least
    /// [`MIN_HANDSHAKE_TIMEOUT`].
    #[serde(default = "default_handshake_timeout", deserialize_with = "handshake_timeout")]
    pub handshake_timeout: Duration,
    /// Largest frame accepted, in bytes, checked before anything is allocated; a bigger
    /// one closes that connection. Default `16777216` (16 MiB), at least `65536`.
    #[serde(default = "default_max_frame")]
    pub max_frame: u32,
    /// Entries (or present UUIDs) per refresh batch; each batch is applied atomically
    /// by the consumer with the cookie that covers it. Default `500`.
    #[serde(default = "default_batch_size", deserialize_with = "source::positive")]
    pub batch_size: usize,
    /// Messages a session may have queued for its consumer; when full, the session stops
    /// pushing live changes and catches up from the changelog instead (no memory grows,
    /// no change is dropped). Default `1024`, at most [`MAX_QUEUE_LEN`].
    #[serde(default = "default_queue_len", deserialize_with = "source::positive")]
    pub queue_len: usize,
    /// Changelog retention (`[changelog]`).
    #[serde(default)]
    pub changelog: ChangelogConfig,
    /// Heartbeat of every session (`[keepalive]`), announced to consumers in the
    /// handshake. Default `interval = "5s"`, `timeout = "20s"`.
    #[serde(default)]
    pub keepalive: KeepaliveConfig,
    /// Who may replicate what (`[[consumer]]`), one per agreement name. Default none:
    /// every replication request is rejected.
    #[serde(default, rename = "consumer")]
    pub consumers: Vec<ConsumerGrant>,
    /// Credentials for `tether-provider write` (`[writer]`). Default: writes over the
    /// network are refused.
    #[serde(default)]
    pub writer: Option<WriterConfig>,
    /// Serve over TLS (`[tls]`). Default: plain TCP.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

/// `[changelog]`: how long committed changes are kept for delta refreshes (SPEC §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangelogConfig {
    /// Hard cap on retained changes; the oldest go first, even if a consumer still
    /// needs them (it then gets a present refresh). Default `1000000`.
    #[serde(default = "default_max_changes", deserialize_with = "source::positive")]
    pub max_changes: u64,
    /// Changes older than this are trimmed, unless a recently seen consumer still needs
    /// them. Default `"7d"`.
    #[serde(default = "default_max_age", deserialize_with = "source::positive_duration")]
    pub max_age: Duration,
    /// A consumer seen within this time keeps the changes it has not yet received from
    /// being trimmed by age, so a briefly absent or slow consumer always gets a delta.
    /// `"0s"` turns the hold off. Default `"1d"`.
    #[serde(default = "default_hold_for_consumers", deserialize_with = "source::duration")]
    pub hold_for_consumers: Duration,
    /// How often the background trimmer runs. Default `"1m"`, at least
    /// [`MIN_TRIM_INTERVAL`].
    #[serde(default = "default_trim_interval", deserialize_with = "trim_interval")]
    pub trim_interval: Duration,
}

impl Default for ChangelogConfig {
    fn default() -> Self {
        Self {
            max_changes: DEFAULT_MAX_CHANGES,
            max_age: DEFAULT_MAX_AGE,
            hold_for_consumers: DEFAULT_HOLD_FOR_CONSUMERS,
            trim_interval: DEFAULT_TRIM_INTERVAL,
        }
    }
}

/// One `[[consumer]]`: an agreement the provider serves, its credentials and how wide
/// a region it may ask for.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerGrant {
    /// Agreement name the consumer presents in its handshake; unique. Required.
    pub agreement: String,
    /// File holding the agreement's shared secret (HMAC key), relative to the config
    /// file's folder. Required.
    #[serde(deserialize_with = "source::path")]
    pub secret_file: PathBuf,
    /// The widest base this agreement may ask for: a request whose base is not at or
    /// below it is rejected (`scope not allowed`). Must lie within `suffix`. Default:
    /// the suffix (see [`ConsumerGrant::allowed_base`]).
    #[serde(default, deserialize_with = "source::optional_dn")]
    pub base: Option<Dn>,
}

impl ConsumerGrant {
    /// The widest base the agreement may ask for: `base`, or else `suffix`.
    pub fn allowed_base<'a>(&'a self, suffix: &'a Dn) -> &'a Dn {
        self.base.as_ref().unwrap_or(suffix)
    }
}

/// `[writer]`: who may send writes to the running provider.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriterConfig {
    /// File holding the writers' shared secret, relative to the config file's folder.
    /// Required in this section.
    #[serde(deserialize_with = "source::path")]
    pub secret_file: PathBuf,
}

/// `[tls]`: serve consumers and writers over TLS.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain presented to clients, relative to the config file's
    /// folder. Required in this section.
    #[serde(deserialize_with = "source::path")]
    pub cert_file: PathBuf,
    /// PEM private key of that certificate, relative to the config file's folder.
    /// Required in this section.
    #[serde(deserialize_with = "source::path")]
    pub key_file: PathBuf,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from(DEFAULT_DATA_DIR)
}

fn default_listen() -> HostPort {
    HostPort::loopback(DEFAULT_PORT)
}

fn default_cache_size() -> u64 {
    DEFAULT_CACHE_SIZE
}

fn default_max_connections() -> usize {
    DEFAULT_MAX_CONNECTIONS
}

fn default_handshake_timeout() -> Duration {
    DEFAULT_HANDSHAKE_TIMEOUT
}

fn default_max_frame() -> u32 {
    DEFAULT_MAX_FRAME
}

fn default_batch_size() -> usize {
    DEFAULT_BATCH_SIZE
}

fn default_queue_len() -> usize {
    DEFAULT_QUEUE_LEN
}

fn default_max_changes() -> u64 {
    DEFAULT_MAX_CHANGES
}

fn default_max_age() -> Duration {
    DEFAULT_MAX_AGE
}

fn default_hold_for_consumers() -> Duration {
    DEFAULT_HOLD_FOR_CONSUMERS
}

fn default_trim_interval() -> Duration {
    DEFAULT_TRIM_INTERVAL
}

/// The shortest `handshake_timeout`: a handshake is several round trips (TLS's, then
/// the Tether challenge and answers), and `"1ns"` (taken as greater than zero) ended
/// every one whose packets were a millisecond apart, so the provider served no consumer
/// beyond its own host. The same second a connection past `max_connections` is given
/// to hear its refusal, TLS handshake included.
pub const MIN_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(1);

fn handshake_timeout<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    source::duration_at_least(d, MIN_HANDSHAKE_TIMEOUT, " (a handshake is several round trips, TLS's included)")
}

/// The shortest `changelog.trim_interval`: a trim reads the changelog's head and the
/// consumers' positions, and `"1ns"` (taken as greater than zero) ran it at every tick
/// of the timer, a thousand times a second, for nothing.
pub const MIN_TRIM_INTERVAL: Duration = Duration::from_millis(10);

fn trim_interval<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    source::duration_at_least(d, MIN_TRIM_INTERVAL, "")
}

impl ProviderConfig {
    /// The keys whose new values in `new` a reload cannot apply (the listener, the
    /// store, the session parameters are set up once, at start): the reload says so,
    /// so that an operator does not take them for applied.
    pub fn restart_only_changes(&self, new: &ProviderConfig) -> Vec<&'static str> {
        [
            ("data_dir", self.data_dir != new.data_dir),
            ("cache_size", self.cache_size != new.cache_size),
            ("listen", self.listen != new.listen),
            ("control", self.control != new.control),
            ("status_group", self.status_group != new.status_group),
            ("metrics_listen", self.metrics_listen != new.metrics_listen),
            ("suffix", self.suffix != new.suffix),
            ("max_connections", self.max_connections != new.max_connections),
            ("handshake_timeout", self.handshake_timeout != new.handshake_timeout),
            ("max_frame", self.max_frame != new.max_frame),
            ("batch_size", self.batch_size != new.batch_size),
            ("queue_len", self.queue_len != new.queue_len),
            ("keepalive", self.keepalive != new.keepalive),
        ]
        .into_iter()
        .filter_map(|(key, changed)| changed.then_some(key))
        .collect()
    }

    /// This config as a reload applies it to a provider running with `suffix`. The
    /// suffix is the store's and is set up at start; a grant without a `base` is
    /// allowed the suffix, so a reload that took a changed suffix for the grants would
    /// revoke every session below the running one while saying the suffix was not
    /// applied. The grants' explicit bases are checked against the running suffix too.
    pub fn for_running_suffix(mut self, suffix: &Dn) -> Result<Self, ConfigError> {
        if self.suffix != *suffix {
            self.suffix = suffix.clone();
            self.check().map_err(|e| match e {
                ConfigError::Invalid { file, key, reason } => ConfigError::Invalid {
                    file,
                    key,
                    reason: format!(
                        "{reason}, the suffix the provider runs with (a new suffix takes effect at the next start)"
                    ),
                },
                other => other,
            })?;
        }
        Ok(self)
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
        for (i, grant) in config.consumers.iter_mut().enumerate() {
            grant.secret_file = resolve(&format!("consumer[{i}].secret_file"), &grant.secret_file)?;
        }
        if let Some(writer) = &mut config.writer {
            writer.secret_file = resolve("writer.secret_file", &writer.secret_file)?;
        }
        if let Some(tls) = &mut config.tls {
            tls.cert_file = resolve("tls.cert_file", &tls.cert_file)?;
            tls.key_file = resolve("tls.key_file", &tls.key_file)?;
        }
        config.check()?;
        Ok(config)
    }

    /// What `check` prints of a file a start would take: where the store, the socket
    /// and the listeners are, relative paths resolved (where one anchored to the wrong
    /// folder shows), and who may replicate or write what.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "{}: valid\n  data_dir {}\n  control  {}\n  listen   {} ({})\n",
            self.file.display(),
            self.data_dir.display(),
            self.control.display(),
            self.listen,
            if self.tls.is_some() { "TLS" } else { "plain TCP" },
        );
        if let Some(at) = &self.metrics_listen {
            out.push_str(&format!("  metrics  http://{at}/metrics\n"));
        }
        out.push_str(&format!("  suffix   {}\n", self.suffix));
        for grant in &self.consumers {
            out.push_str(&format!(
                "  agreement {}: consumers may replicate {} and below\n",
                grant.agreement,
                grant.allowed_base(&self.suffix)
            ));
        }
        if self.consumers.is_empty() {
            out.push_str("  no [[consumer]]: every consumer would be refused\n");
        }
        out.push_str(match self.writer {
            Some(_) => "  [writer]: `write` may change the directory\n",
            None => "  no [writer]: every `write` would be refused\n",
        });
        out
    }

    /// The grant for agreement `name`.
    pub fn consumer(&self, name: &str) -> Option<&ConsumerGrant> {
        self.consumers.iter().find(|c| c.agreement == name)
    }

    /// Reads every file the configuration names (each secret of `[[consumer]]` and
    /// `[writer]`, whose bytes it drops, and `[tls]`'s certificate and key), as a start
    /// or reload would, so that `status` warns of a missing, empty or unreadable one
    /// while the provider runs on what it read. Returns the warnings to log: a secret or
    /// TLS key others may read, and a certificate a TLS consumer would refuse
    /// ([`crate::tls::warnings`]).
    pub fn check_files(&self) -> Result<Vec<String>, ConfigError> {
        let writer = self.writer.iter().map(|w| ("writer.secret_file".to_owned(), &w.secret_file));
        let consumers =
            self.consumers.iter().enumerate().map(|(i, c)| (format!("consumer[{i}].secret_file"), &c.secret_file));
        let mut warnings = Vec::new();
        for (key, path) in consumers.chain(writer) {
            let loaded = load_secret(path).map_err(|e| ConfigError::invalid(&self.file, key, e.to_string()))?;
            warnings.extend(loaded.warnings);
        }
        crate::tls::server_config_of(self)?;
        warnings.extend(self.tls.as_ref().map(crate::tls::warnings).unwrap_or_default());
        Ok(warnings)
    }

    /// The checks that involve more than one value, or a value serde cannot judge.
    fn check(&self) -> Result<(), ConfigError> {
        let file = &self.file;
        source::check_control(file, &self.data_dir, &self.control)?;
        // Port 0 takes two free ports, which is fine; the same port would be refused at
        // bind as taken "by another process", which would send its reader looking for
        // one.
        let every_interface = |host: &str| host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_unspecified());
        let clash = |m: &&HostPort| {
            m.port() != 0
                && m.port() == self.listen.port()
                && (m.host() == self.listen.host() || every_interface(m.host()) || every_interface(self.listen.host()))
        };
        if let Some(metrics) = self.metrics_listen.as_ref().filter(clash) {
            return Err(ConfigError::invalid(
                file,
                "metrics_listen",
                format!("{metrics} is taken by `listen` ({}): the metrics need a port of their own", self.listen),
            ));
        }
        if self.max_frame < MIN_MAX_FRAME {
            return Err(ConfigError::invalid(
                file,
                "max_frame",
                format!("max_frame {} is below the minimum of {MIN_MAX_FRAME} bytes", self.max_frame),
            ));
        }
        if self.max_frame > DEFAULT_MAX_FRAME {
            // Nothing larger decodes (the codec's own limit), so a larger setting would
            // only let a peer make the provider buffer a frame it then refuses.
            return Err(ConfigError::invalid(
                file,
                "max_frame",
                format!("max_frame {} is above the maximum of {DEFAULT_MAX_FRAME} bytes", self.max_frame),
            ));
        }
        if self.max_connections > MAX_MAX_CONNECTIONS {
            return Err(ConfigError::invalid(
                file,
                "max_connections",
                format!(
                    "max_connections {} is above the most a process can hold, {MAX_MAX_CONNECTIONS} (a file \
                     descriptor each)",
                    self.max_connections
                ),
            ));
        }
        if self.queue_len > MAX_QUEUE_LEN {
            return Err(ConfigError::invalid(
                file,
                "queue_len",
                format!("queue_len {} is above the most a session's queue can hold, {MAX_QUEUE_LEN}", self.queue_len),
            ));
        }
        self.keepalive.check(file, "keepalive")?;
        if self.suffix.is_root() {
            return Err(ConfigError::invalid(
                file,
                "suffix",
                "suffix is empty: name the directory's top entry, as dc=example,dc=com",
            ));
        }
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, grant) in self.consumers.iter().enumerate() {
            let key = |name: &str| format!("consumer[{i}].{name}");
            source::check_agreement_name(&grant.agreement)
                .map_err(|r| ConfigError::invalid(file, key("agreement"), r))?;
            // The provider names `write`'s sessions so: an agreement of that name was
            // taken for one (a reload removing it revoked nothing, status showed no lag).
            if grant.agreement == crate::server::WRITER {
                return Err(ConfigError::invalid(
                    file,
                    key("agreement"),
                    format!(
                        "agreement name {:?} is reserved for the sessions of tether-provider write (its secret is \
                         [writer]'s): name the agreement otherwise",
                        grant.agreement
                    ),
                ));
            }
            if let Some(first) = seen.insert(&grant.agreement, i) {
                return Err(ConfigError::invalid(
                    file,
                    key("agreement"),
                    format!("duplicate agreement name {:?}: consumer[{first}] has it too", grant.agreement),
                ));
            }
            if let Some(base) = &grant.base {
                if !base.is_descendant_of(&self.suffix) {
                    return Err(ConfigError::invalid(
                        file,
                        key("base"),
                        format!("base \"{base}\" is outside the suffix \"{}\"", self.suffix),
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "suffix = \"dc=example,dc=com\"\n";

    fn parse(text: &str) -> Result<ProviderConfig, ConfigError> {
        ProviderConfig::from_toml_str(text, Path::new("/etc/tether/provider.toml"))
    }

    fn refused(text: &str) -> String {
        match parse(text) {
            Ok(config) => panic!("accepted: {config:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn dn(text: &str) -> Dn {
        Dn::parse(text).unwrap()
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn a_reload_names_the_keys_it_cannot_apply() {
        let running = parse(MINIMAL).unwrap();
        let same = parse(&format!("{MINIMAL}[changelog]\nmax_changes = 5\n")).unwrap();
        assert_eq!(running.restart_only_changes(&same), Vec::<&str>::new(), "retention is applied by a reload");
        let changed =
            parse(&format!("{MINIMAL}listen = \"127.0.0.1:7390\"\nbatch_size = 7\n[keepalive]\ninterval = \"2s\"\n"))
                .unwrap();
        assert_eq!(running.restart_only_changes(&changed), ["listen", "batch_size", "keepalive"]);
    }

    /// `status_group` names a group by name or by number, looked up on this host: the
    /// number of a name, the name of a number when it has one (the number itself when
    /// not), and a name the host does not know refused, naming it, so a misspelt group
    /// stops the start instead of every monitoring check.
    #[test]
    fn the_status_group_is_a_group_of_this_host_by_name_or_number() {
        let group = |text: &str| parse(&format!("{MINIMAL}status_group = {text}\n")).map(|c| c.status_group);
        let root = Some(StatusGroup { name: "root".into(), gid: 0 });
        assert_eq!(group("\"root\"").unwrap(), root);
        assert_eq!(group("\"0\"").unwrap(), root);
        assert_eq!(group("\"4242\"").unwrap(), Some(StatusGroup { name: "4242".into(), gid: 4242 }), "no name");
        assert_eq!(parse(MINIMAL).unwrap().status_group, None, "none by default");
        let err = refused(&format!("{MINIMAL}status_group = \"tether-monitr\"\n"));
        assert!(
            err.contains("key 'status_group'")
                && err.contains("no group named \"tether-monitr\" on this host (`getent group` lists them)"),
            "{err}"
        );
        let err = refused(&format!("{MINIMAL}status_group = 4242\n"));
        assert!(err.contains("key 'status_group'") && err.contains("a group's name, or its number"), "{err}");
    }

    /// `metrics_listen` is off unless given, and an address of the same form as
    /// `listen`'s, refused naming the key.
    #[test]
    fn metrics_listen_is_an_address_and_off_by_default() {
        assert_eq!(parse(MINIMAL).unwrap().metrics_listen, None);
        let given = parse(&format!("{MINIMAL}metrics_listen = \"[::1]:9390\"\n")).unwrap().metrics_listen;
        assert_eq!(given.map(|a| a.to_string()), Some("[::1]:9390".to_owned()));
        let err = refused(&format!("{MINIMAL}metrics_listen = \"http://127.0.0.1:9390/metrics\"\n"));
        assert!(err.contains("key 'metrics_listen'") && err.contains("a host:port, not a URL"), "{err}");
        let err = refused(&format!("{MINIMAL}metrics_listen = 9390\n"));
        assert!(err.contains("key 'metrics_listen'"), "{err}");
        let err = refused(&format!("{MINIMAL}listen = \"127.0.0.1:7400\"\nmetrics_listen = \"127.0.0.1:7400\"\n"));
        assert!(err.contains("key 'metrics_listen'") && err.contains("is taken by `listen`"), "{err}");
        let both_free = parse(&format!("{MINIMAL}listen = \"127.0.0.1:0\"\nmetrics_listen = \"127.0.0.1:0\"\n"));
        assert!(both_free.is_ok(), "port 0 twice is two free ports");
        let err = refused(&format!("{MINIMAL}listen = \"0.0.0.0:7400\"\nmetrics_listen = \"127.0.0.1:7400\"\n"));
        assert!(err.contains("is taken by `listen`"), "every interface includes loopback: {err}");
        assert!(parse(&format!("{MINIMAL}listen = \"127.0.0.1:7400\"\nmetrics_listen = \"127.0.0.2:7400\"\n")).is_ok());
    }

    /// Each key a reload cannot apply is named when it alone changes: one left out of
    /// the list was taken for applied, the reply saying nothing of it while the provider
    /// ran on the old value until its next start.
    #[test]
    fn each_key_a_reload_cannot_apply_is_named_when_it_alone_changes() {
        // `control` given, so that a new `data_dir` does not move the default socket too.
        let file = |extra: &str| format!("{MINIMAL}control = \"/run/tether/p.sock\"\n{extra}\n");
        let running = parse(&file("")).unwrap();
        let cases = [
            ("data_dir", file("data_dir = \"store\"")),
            ("cache_size", file("cache_size = \"64MiB\"")),
            ("listen", file("listen = \"127.0.0.1:7390\"")),
            ("control", file("").replace("p.sock", "q.sock")),
            ("status_group", file("status_group = \"0\"")),
            ("metrics_listen", file("metrics_listen = \"127.0.0.1:9390\"")),
            ("suffix", file("").replace("dc=example", "dc=other")),
            ("max_connections", file("max_connections = 7")),
            ("handshake_timeout", file("handshake_timeout = \"3s\"")),
            ("max_frame", file("max_frame = 65536")),
            ("batch_size", file("batch_size = 7")),
            ("queue_len", file("queue_len = 7")),
            ("keepalive", file("[keepalive]\ninterval = \"2s\"")),
        ];
        for (key, text) in cases {
            assert_eq!(running.restart_only_changes(&parse(&text).unwrap()), [key], "from:\n{text}");
        }
    }

    /// A reload keeps the running suffix (the reply names a changed one as not applied):
    /// a grant without a base keeps being allowed the running suffix, and a base below
    /// the new suffix only is refused, naming the key.
    #[test]
    fn a_reload_keeps_the_running_suffix_for_the_grants() {
        let running = parse(MINIMAL).unwrap();
        let grant = "[[consumer]]\nagreement = \"people\"\nsecret_file = \"s.key\"\n";
        let moved = parse(&format!("suffix = \"dc=other,dc=com\"\n{grant}")).unwrap();
        assert_eq!(running.restart_only_changes(&moved), ["suffix"]);
        let applied = moved.for_running_suffix(&running.suffix).unwrap();
        assert_eq!(applied.consumers[0].allowed_base(&applied.suffix), &dn("dc=example,dc=com"));

        let below_new = parse(&format!("suffix = \"dc=other,dc=com\"\n{grant}base = \"ou=people,dc=other,dc=com\"\n"))
            .unwrap()
            .for_running_suffix(&running.suffix)
            .unwrap_err()
            .to_string();
        assert!(below_new.contains("key 'consumer[0].base'"), "{below_new}");
        assert!(
            below_new.contains("outside the suffix \"dc=example,dc=com\", the suffix the provider runs with"),
            "{below_new}"
        );

        let same = parse(&format!("{MINIMAL}{grant}base = \"ou=people,dc=example,dc=com\"\n")).unwrap();
        assert_eq!(same.clone().for_running_suffix(&running.suffix).unwrap(), same);
    }

    /// `check` says what the file sets up: the paths as resolved, where it listens and
    /// whether over TLS, and who may replicate or write what.
    #[test]
    fn the_summary_of_the_example_file_says_who_may_replicate_what() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let config = ProviderConfig::load(dir.join("provider.toml")).unwrap();
        let expected = format!(
            "{file}: valid\n  data_dir {data}\n  control  {data}/control.sock\n  listen   127.0.0.1:7389 (plain TCP)\n  \
             suffix   dc=example,dc=com\n  agreement people: consumers may replicate dc=example,dc=com and below\n  \
             agreement groups: consumers may replicate ou=groups,dc=example,dc=com and below\n  [writer]: `write` may \
             change the directory\n",
            file = dir.join("provider.toml").display(),
            data = dir.join("data/provider").display(),
        );
        assert_eq!(config.summary(), expected);
        let bare = ProviderConfig { consumers: Vec::new(), writer: None, ..config };
        let summary = bare.summary();
        assert!(summary.contains("  no [[consumer]]: every consumer would be refused\n"), "{summary}");
        assert!(summary.ends_with("  no [writer]: every `write` would be refused\n"), "{summary}");
    }

    /// `check` names where the metrics are served when the file asks for them, as it
    /// names every listener: an address that is not the intended one (a port taken by
    /// another exporter, every interface where loopback was meant) shows before a start.
    #[test]
    fn the_summary_names_the_metrics_endpoint_when_the_file_has_one() {
        let config = parse(&format!("{MINIMAL}metrics_listen = \"127.0.0.1:9390\"\n")).unwrap();
        let summary = config.summary();
        assert!(
            summary
                .contains("  listen   127.0.0.1:7389 (plain TCP)\n  metrics  http://127.0.0.1:9390/metrics\n  suffix "),
            "{summary}"
        );
        assert!(!parse(MINIMAL).unwrap().summary().contains("metrics"), "no endpoint, no line");
    }

    /// What a start says of the TLS certificate (here: expired), `check` says too: the
    /// file loads, but every TLS consumer would refuse the provider, which is what a
    /// check before a deployment is for.
    #[test]
    fn the_files_checked_warn_of_a_tls_certificate_that_has_expired() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2019, 1, 1);
        params.not_after = rcgen::date_time_ymd(2020, 1, 1);
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.path().join("provider.crt"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("provider.key"), key.serialize_pem()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path().join("provider.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
        let file = dir.path().join("provider.toml");
        std::fs::write(&file, format!("{MINIMAL}[tls]\ncert_file = \"provider.crt\"\nkey_file = \"provider.key\"\n"))
            .unwrap();
        let warnings = ProviderConfig::load(&file).unwrap().check_files().unwrap();
        let expired =
            format!("the certificate in {} expired at 2020-01-01T00:00:00Z", dir.path().join("provider.crt").display());
        assert!(warnings.iter().any(|w| w.starts_with(&expired)), "{warnings:?}");
    }

    /// `check` reads the TLS certificate and key as a start does, so a key a start
    /// cannot read fails the check, naming its key, instead of the provider that does
    /// not come back after the restart.
    #[test]
    fn the_files_checked_include_the_tls_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap().self_signed(&key).unwrap();
        std::fs::write(dir.path().join("provider.crt"), cert.pem()).unwrap();
        let file = dir.path().join("provider.toml");
        std::fs::write(&file, format!("{MINIMAL}[tls]\ncert_file = \"provider.crt\"\nkey_file = \"provider.key\"\n"))
            .unwrap();
        let e = ProviderConfig::load(&file).unwrap().check_files().unwrap_err().to_string();
        assert!(e.starts_with(&format!("{}: key 'tls.key_file': ", file.display())), "{e}");
    }

    /// A file with a single grant is not summed up as granting nothing: "every consumer
    /// would be refused" beside a grant would send the operator after a problem the file
    /// does not have, or teach them to pass over the line when it is true.
    #[test]
    fn the_summary_of_a_single_grant_says_it_and_not_that_every_consumer_is_refused() {
        let one =
            parse(&format!("{MINIMAL}[[consumer]]\nagreement = \"people\"\nsecret_file = \"people.key\"\n")).unwrap();
        let summary = one.summary();
        assert!(
            summary.contains("  agreement people: consumers may replicate dc=example,dc=com and below\n"),
            "{summary}"
        );
        assert!(!summary.contains("no [[consumer]]"), "{summary}");
    }

    #[test]
    fn example_file() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let config = ProviderConfig::load(dir.join("provider.toml")).unwrap();
        assert_eq!(config.data_dir, dir.join("data/provider"));
        assert_eq!(config.listen.to_string(), "127.0.0.1:7389");
        assert_eq!(config.control, dir.join("data/provider/control.sock"));
        assert_eq!(config.suffix, dn("dc=example,dc=com"));
        assert_eq!(config.max_connections, 1024);
        assert_eq!(config.handshake_timeout, secs(10));
        assert_eq!(config.max_frame, 16 * 1024 * 1024);
        assert_eq!(config.batch_size, 500);
        assert_eq!(config.queue_len, 1024);
        assert_eq!(
            config.changelog,
            ChangelogConfig {
                max_changes: 1_000_000,
                max_age: secs(7 * 86_400),
                hold_for_consumers: secs(86_400),
                trim_interval: secs(60)
            }
        );
        assert_eq!(config.keepalive, KeepaliveConfig { enabled: true, interval: secs(5), timeout: secs(20) });
        assert_eq!(config.consumers.len(), 2);
        let people = config.consumer("people").unwrap();
        assert_eq!(people.secret_file, dir.join("secrets/people.key"));
        assert_eq!(people.allowed_base(&config.suffix), &dn("dc=example,dc=com"));
        let groups = config.consumer("groups").unwrap();
        assert_eq!(groups.secret_file, dir.join("secrets/groups.key"));
        assert_eq!(groups.allowed_base(&config.suffix), &dn("ou=groups,dc=example,dc=com"));
        assert_eq!(config.writer, Some(WriterConfig { secret_file: dir.join("secrets/writer.key") }));
        assert_eq!(config.tls, None);

        assert!(config.check_files().is_ok());
        let writer = load_secret(&dir.join("secrets/writer.key")).unwrap();
        let file = std::fs::read(dir.join("secrets/writer.key")).unwrap();
        assert!(
            writer.secret == tether_protocol::Secret::new(file.trim_ascii_end().to_vec()).unwrap(),
            "newline trimmed"
        );
    }

    #[test]
    fn defaults() {
        let config = parse(MINIMAL).unwrap();
        assert_eq!(config.data_dir, Path::new("/etc/tether/data/provider"));
        assert_eq!(config.listen, HostPort::loopback(7389));
        assert_eq!(config.control, Path::new("/etc/tether/data/provider/control.sock"));
        assert_eq!(config.max_connections, DEFAULT_MAX_CONNECTIONS);
        assert_eq!(config.handshake_timeout, secs(10));
        assert_eq!(config.max_frame, DEFAULT_MAX_FRAME);
        assert_eq!(config.batch_size, DEFAULT_BATCH_SIZE);
        assert_eq!(config.queue_len, DEFAULT_QUEUE_LEN);
        assert_eq!(config.cache_size, 32 << 20);
        assert_eq!(parse(&format!("{MINIMAL}cache_size = \"1 GiB\"")).unwrap().cache_size, 1 << 30);
        assert_eq!(config.changelog, ChangelogConfig::default());
        assert_eq!(config.changelog.hold_for_consumers, secs(86_400));
        assert_eq!(config.keepalive, KeepaliveConfig::default());
        assert!(config.consumers.is_empty());
        assert_eq!(config.writer, None);
        assert_eq!(config.tls, None);

        let config = parse(&format!("{MINIMAL}[[consumer]]\nagreement = \"a\"\nsecret_file = \"a.key\"\n")).unwrap();
        assert_eq!(config.consumers[0].base, None);
        assert_eq!(config.consumers[0].allowed_base(&config.suffix), &config.suffix);
    }

    /// The defaults are the values docs/operations.md gives, written out, whether a
    /// section is left out (its `Default` then) or given without keys (each key's own
    /// default): `defaults` compares with `Default` itself, and the example file gives
    /// every key, so a wrong value in either passed both.
    #[test]
    fn the_documented_defaults_hold_with_their_section_left_out_or_given_empty() {
        let changelog = ChangelogConfig {
            max_changes: 1_000_000,
            max_age: secs(7 * 86_400),
            hold_for_consumers: secs(86_400),
            trim_interval: secs(60),
        };
        let keepalive = KeepaliveConfig { enabled: true, interval: secs(5), timeout: secs(20) };
        for text in [MINIMAL.to_owned(), format!("{MINIMAL}[changelog]\n[keepalive]\n")] {
            let config = parse(&text).unwrap();
            assert_eq!((config.changelog, config.keepalive), (changelog, keepalive), "from:\n{text}");
        }
    }

    #[test]
    fn relative_paths_resolve_against_the_config_folder() {
        let text = format!(
            "{MINIMAL}data_dir = \"store\"\ncontrol = \"/run/tether/p.sock\"\nlisten = \"0.0.0.0:0\"\n\
             [[consumer]]\nagreement = \"a\"\nsecret_file = \"secrets/a.key\"\n\
             [writer]\nsecret_file = \"/etc/keys/w.key\"\n\
             [tls]\ncert_file = \"tls/cert.pem\"\nkey_file = \"tls/key.pem\"\n"
        );
        let config = parse(&text).unwrap();
        assert_eq!(config.data_dir, Path::new("/etc/tether/store"));
        assert_eq!(config.control, Path::new("/run/tether/p.sock"));
        assert_eq!(config.listen.port(), 0);
        assert_eq!(config.consumers[0].secret_file, Path::new("/etc/tether/secrets/a.key"));
        assert_eq!(config.writer.as_ref().unwrap().secret_file, Path::new("/etc/keys/w.key"));
        let tls = config.tls.as_ref().unwrap();
        assert_eq!(tls.cert_file, Path::new("/etc/tether/tls/cert.pem"));
        assert_eq!(tls.key_file, Path::new("/etc/tether/tls/key.pem"));
    }

    #[test]
    fn bad_values_name_file_key_and_reason() {
        let grant =
            |extra: &str| format!("{MINIMAL}[[consumer]]\nagreement = \"a\"\nsecret_file = \"a.key\"\n{extra}\n");
        let cases: Vec<(String, &str)> = vec![
            ("".into(), "key 'suffix': required key is missing"),
            // Named at the top level whatever key comes first (it was `listen.suffix`).
            ("listen = \"127.0.0.1:1\"".into(), "key 'suffix': required key is missing"),
            ("[writer]\nsecret_file = \"w.key\"".into(), "key 'suffix': required key is missing"),
            ("suffix = \"dc=example,dc\"".into(), "key 'suffix': invalid DN \"dc=example,dc\": missing '='"),
            ("suffix = \"\"".into(), "key 'suffix': suffix is empty"),
            (
                format!("{MINIMAL}listen = \"localhost\""),
                "key 'listen': invalid address \"localhost\": expected host:port",
            ),
            (
                format!("{MINIMAL}listen = \"localhost:http\""),
                "key 'listen': invalid address \"localhost:http\": the port must be a number",
            ),
            // Every interface, from what reads like a slip.
            (
                format!("{MINIMAL}listen = \"0:48071\""),
                "key 'listen': invalid address \"0:48071\": the host is not an IPv4 address",
            ),
            (format!("{MINIMAL}max_connections = 0"), "key 'max_connections': must be at least 1"),
            (
                format!("{MINIMAL}max_connections = -5"),
                "key 'max_connections': invalid value: integer `-5`, expected a whole number, 1 or more",
            ),
            (format!("{MINIMAL}batch_size = 0"), "key 'batch_size': must be at least 1"),
            (
                format!("{MINIMAL}batch_size = -1"),
                "key 'batch_size': invalid value: integer `-1`, expected a whole number, 1 or more",
            ),
            (
                format!("{MINIMAL}batch_size = \"500\""),
                "key 'batch_size': invalid type: string \"500\", expected a whole number, 1 or more (write numbers \
                 without quotes)",
            ),
            (
                format!("{MINIMAL}cache_size = \"lots\""),
                "key 'cache_size': invalid size \"lots\": expected a whole number then a unit",
            ),
            (
                format!("{MINIMAL}cache_size = \"1048576\""),
                "key 'cache_size': invalid size \"1048576\": a unit is required (B, KiB, MiB, GiB)",
            ),
            (
                format!("{MINIMAL}cache_size = \"64MB\""),
                "key 'cache_size': invalid size \"64MB\": unknown unit \"MB\" (B, KiB, MiB, GiB)",
            ),
            (
                format!("{MINIMAL}cache_size = \"512KiB\""),
                "key 'cache_size': invalid size \"512KiB\": must be at least 1MiB",
            ),
            (
                format!("{MINIMAL}cache_size = 64"),
                "key 'cache_size': invalid type: integer `64`, expected a size such as \"64MiB\" or \"1GiB\"",
            ),
            (format!("{MINIMAL}queue_len = 0"), "key 'queue_len': must be at least 1"),
            (format!("{MINIMAL}max_frame = 100"), "key 'max_frame': max_frame 100 is below the minimum of 65536 bytes"),
            (
                format!("{MINIMAL}max_frame = 33554432"),
                "key 'max_frame': max_frame 33554432 is above the maximum of 16777216 bytes",
            ),
            (
                format!("{MINIMAL}max_frame = 5000000000"),
                "key 'max_frame': invalid value: integer `5000000000`, expected a whole number from 0 to 4294967295",
            ),
            (
                format!("{MINIMAL}handshake_timeout = \"0s\""),
                "key 'handshake_timeout': invalid duration \"0s\": must be at least 1s",
            ),
            (format!("{MINIMAL}[changelog]\nmax_changes = 0"), "key 'changelog.max_changes': must be at least 1"),
            (
                format!("{MINIMAL}[changelog]\nmax_age = \"7 days later\""),
                "key 'changelog.max_age': invalid duration \"7 days later\"",
            ),
            (
                format!("{MINIMAL}[changelog]\ntrim_interval = \"0s\""),
                "key 'changelog.trim_interval': invalid duration \"0s\": must be at least 10ms",
            ),
            (
                format!("{MINIMAL}[changelog]\ntrim_interval = \"1ns\""),
                "key 'changelog.trim_interval': invalid duration \"1ns\": must be at least 10ms",
            ),
            (
                format!("{MINIMAL}[keepalive]\ninterval = \"30s\""),
                "key 'keepalive.timeout': timeout 20s must be longer than interval 30s",
            ),
            (
                format!("{MINIMAL}[keepalive]\ninterval = \"0s\""),
                "key 'keepalive.interval': invalid duration \"0s\": must be at least 100ms",
            ),
            (
                grant("base = \"dc=other,dc=org\""),
                "key 'consumer[0].base': base \"dc=other,dc=org\" is outside the suffix \"dc=example,dc=com\"",
            ),
            (grant("base = \"ou=x,,dc=com\""), "key 'consumer[0].base': invalid DN \"ou=x,,dc=com\""),
            (
                grant("[[consumer]]\nagreement = \"a\"\nsecret_file = \"b.key\""),
                "key 'consumer[1].agreement': duplicate agreement name \"a\": consumer[0] has it too",
            ),
            (
                grant("[[consumer]]\nagreement = \"\"\nsecret_file = \"b.key\""),
                "key 'consumer[1].agreement': agreement name is empty",
            ),
            (grant("[[consumer]]\nagreement = \"b\""), "key 'consumer[1].secret_file': required key is missing"),
            (
                grant("[[consumer]]\nagreement = \"writer\"\nsecret_file = \"b.key\""),
                "key 'consumer[1].agreement': agreement name \"writer\" is reserved for the sessions of \
                 tether-provider write",
            ),
            (format!("{MINIMAL}[writer]\n"), "key 'writer.secret_file': required key is missing"),
            (format!("{MINIMAL}[tls]\ncert_file = \"c.pem\""), "key 'tls.key_file': required key is missing"),
        ];
        for (text, want) in cases {
            let got = refused(&text);
            let want = format!("/etc/tether/provider.toml: {want}");
            assert!(got.starts_with(&want), "\n got: {got}\nwant: {want}\nfrom:\n{text}");
        }
    }

    /// A `cache_size` of 1MiB, the least a store's cache may be, is taken, and a byte
    /// less refused: the floor is the size itself.
    #[test]
    fn a_cache_size_of_1mib_is_taken_and_a_byte_less_refused() {
        assert_eq!(parse(&format!("{MINIMAL}cache_size = \"1MiB\"")).unwrap().cache_size, 1 << 20);
        assert_eq!(
            refused(&format!("{MINIMAL}cache_size = \"1048575B\"")),
            "/etc/tether/provider.toml: key 'cache_size': invalid size \"1048575B\": must be at least 1MiB"
        );
    }

    /// A `hold_for_consumers` of `"0s"` is taken, turning the hold off as the docs say,
    /// while a `max_age` of `"0s"` is refused as every other retention duration of zero
    /// is: only the hold has a meaning for nothing.
    #[test]
    fn a_hold_for_consumers_of_0s_is_taken_and_a_max_age_of_0s_refused() {
        let off = parse(&format!("{MINIMAL}[changelog]\nhold_for_consumers = \"0s\"")).unwrap();
        assert_eq!(off.changelog.hold_for_consumers, Duration::ZERO);
        assert_eq!(
            refused(&format!("{MINIMAL}[changelog]\nmax_age = \"0s\"")),
            "/etc/tether/provider.toml: key 'changelog.max_age': invalid duration \"0s\": must be greater than zero"
        );
    }

    /// A handshake limit of a few nanoseconds is refused as zero is: `"1ns"` passed as
    /// greater than zero, and no connection with a millisecond between its packets (a
    /// LAN's TLS handshake) finished its handshake in time, so the provider served nobody,
    /// its consumers retrying for ever with `TLS handshake did not complete within the
    /// handshake deadline` in its log.
    #[test]
    fn a_handshake_timeout_of_a_few_nanoseconds_is_refused_as_zero_is() {
        assert_eq!(
            refused(&format!("{MINIMAL}handshake_timeout = \"1ns\"")),
            "/etc/tether/provider.toml: key 'handshake_timeout': invalid duration \"1ns\": must be at least 1s (a \
             handshake is several round trips, TLS's included)"
        );
        assert!(refused(&format!("{MINIMAL}handshake_timeout = \"999ms\"")).contains("must be at least 1s"));
        assert_eq!(parse(&format!("{MINIMAL}handshake_timeout = \"1s\"")).unwrap().handshake_timeout, secs(1));
    }

    /// A `max_connections` or `queue_len` past what the process can count (the largest
    /// number TOML holds, written for "no limit") is refused, naming the key and the
    /// most: taken, the first panicked the start once it had made the store, and the
    /// second every session as it began, which its consumer saw as the connection
    /// closed without a goodbye.
    #[test]
    fn counts_past_what_the_provider_can_hold_are_refused() {
        let most = i64::MAX;
        assert_eq!(
            refused(&format!("{MINIMAL}max_connections = {most}")),
            format!(
                "/etc/tether/provider.toml: key 'max_connections': max_connections {most} is above the most a \
                 process can hold, {MAX_MAX_CONNECTIONS} (a file descriptor each)"
            )
        );
        assert_eq!(
            refused(&format!("{MINIMAL}queue_len = {most}")),
            format!(
                "/etc/tether/provider.toml: key 'queue_len': queue_len {most} is above the most a session's queue \
                 can hold, {MAX_QUEUE_LEN}"
            )
        );
        let at_most = format!("{MINIMAL}max_connections = {MAX_MAX_CONNECTIONS}\nqueue_len = {MAX_QUEUE_LEN}\n");
        let config = parse(&at_most).unwrap();
        // What the server and each session make of them.
        let _slots = tokio::sync::Semaphore::new(config.max_connections);
        let (_queue, _) = tokio::sync::mpsc::channel::<()>(config.queue_len);
    }

    /// A `control` ending in `/` names a folder, not the socket's file, and is refused
    /// naming the key: the start failed with `binding the control socket: /etc/tether/run/:
    /// No such file or directory`, naming neither the key nor what was wrong.
    #[test]
    fn a_control_path_naming_a_folder_is_refused_naming_the_key() {
        assert_eq!(
            refused(&format!("{MINIMAL}control = \"run/\"")),
            "/etc/tether/provider.toml: key 'control': socket path /etc/tether/run/ ends with /, which names a folder: \
             name the socket's file, as /etc/tether/run/control.sock"
        );
    }

    /// A `control` naming `data_dir` itself is refused naming the key: the socket took
    /// the folder's place, and the start failed with `creating data_dir ...: File exists`.
    #[test]
    fn a_control_path_naming_the_data_dir_is_refused_naming_the_key() {
        assert_eq!(
            refused(&format!("{MINIMAL}data_dir = \"store\"\ncontrol = \"./store\"")),
            "/etc/tether/provider.toml: key 'control': socket path /etc/tether/./store is data_dir itself: name the \
             socket's file, as /etc/tether/store/control.sock (the default)"
        );
    }

    #[test]
    fn unknown_keys_are_named() {
        let cases = [
            (format!("{MINIMAL}[changelog]\nmax_chnages = 5"), "key 'changelog.max_chnages': unknown key `max_chnages`, expected one of `max_changes`, `max_age`, `hold_for_consumers`, `trim_interval`"),
            (format!("{MINIMAL}[[consumer]]\nagreement = \"a\"\nsecret_file = \"a\"\nscope = \"one\""), "key 'consumer[0].scope': unknown key `scope`"),
            (format!("{MINIMAL}[[consumers]]\nagreement = \"a\""), "key 'consumers': unknown key `consumers`"),
            (format!("{MINIMAL}[writer]\nsecret_file = \"w\"\nsecret = \"plaintext\""), "key 'writer.secret': unknown key `secret`"),
        ];
        for (text, want) in cases {
            let got = refused(&text);
            assert!(got.starts_with(&format!("/etc/tether/provider.toml: {want}")), "\n got: {got}\nwant: {want}");
            assert!(!got.contains("plaintext"), "{got}");
        }
    }

    #[test]
    fn secrets_are_checked_with_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("provider.toml");
        std::fs::write(dir.path().join("a.key"), "abc\n").unwrap();
        std::fs::write(dir.path().join("w.key"), "\n").unwrap();
        std::fs::write(&file, format!("{MINIMAL}[[consumer]]\nagreement = \"a\"\nsecret_file = \"a.key\"\n[writer]\nsecret_file = \"w.key\"\n")).unwrap();
        let e = ProviderConfig::load(&file).unwrap().check_files().unwrap_err().to_string();
        let want = format!(
            "{}: key 'writer.secret_file': {}: secret file is empty",
            file.display(),
            dir.path().join("w.key").display()
        );
        assert_eq!(e, want);
    }
    /// `check_files` reads every consumer's secret, not the writer's alone: `status`
    /// warns of a consumer's secret file lost, or open to others, while the provider
    /// runs on what it read, as the next start would stop on the first.
    #[cfg(unix)]
    #[test]
    fn each_consumer_s_secret_is_checked_with_its_key_as_the_writer_s_is() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let secret = |name: &str, mode: u32| {
            let path = dir.path().join(name);
            std::fs::write(&path, "a secret of enough length\n").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            path
        };
        secret("w.key", 0o600);
        let open = secret("a.key", 0o644);
        let file = dir.path().join("provider.toml");
        let grants = "[[consumer]]\nagreement = \"a\"\nsecret_file = \"a.key\"\n\
                      [[consumer]]\nagreement = \"b\"\nsecret_file = \"b.key\"\n";
        std::fs::write(&file, format!("{MINIMAL}{grants}[writer]\nsecret_file = \"w.key\"\n")).unwrap();
        let e = ProviderConfig::load(&file).unwrap().check_files().unwrap_err().to_string();
        let want = format!(
            "{}: key 'consumer[1].secret_file': {}: cannot read secret file: ",
            file.display(),
            dir.path().join("b.key").display()
        );
        assert!(e.starts_with(&want), "{e}");
        secret("b.key", 0o600);
        let warnings = ProviderConfig::load(&file).unwrap().check_files().unwrap();
        assert_eq!(
            warnings,
            [format!(
                "secret file {} is accessible by group or others (mode 644); restrict it with chmod 600",
                open.display()
            )]
        );
    }
}

//! A benchmark cluster: a provider loaded with the benchmark directory and any number
//! of consumers, as real processes (the harness's), with every store in one temporary
//! folder. Consumers replicate the whole suffix in refresh-and-persist mode with the
//! settings as shipped (durable, the apply audit off).

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tempfile::TempDir;
use tether_protocol::Csn;

use super::client;
use super::data;
use crate::harness::{Agreement, Consumer, Provider, ProviderOptions, PEOPLE_SECRET};
use crate::proxy::Proxy;

/// The agreement every benchmark consumer runs.
pub const AGREEMENT: &str = "people";
/// Longest any one setup step may take.
pub const STEP: Duration = Duration::from_secs(600);
/// Poll interval while waiting on a status.
const POLL: Duration = Duration::from_millis(10);

/// The `cache_size` of every store in this run (`tether-bench --cache-size`); unset, the
/// stores run with the shipped default, which is what the reported figures are about.
static CACHE_SIZE: OnceLock<String> = OnceLock::new();

/// Gives every store started from now on a `cache_size` of `size` (a config value such
/// as `"256MiB"`, checked by the processes that read it), to measure the memory/speed
/// trade-off the setting makes. Settable once per run.
pub fn use_cache_size(size: String) -> Result<()> {
    CACHE_SIZE.set(size).map_err(|_| anyhow::anyhow!("the cache size was already set"))
}

/// The `cache_size` set for this run, if any.
pub fn cache_size() -> Option<&'static str> {
    CACHE_SIZE.get().map(String::as_str)
}

/// Writes the run's `cache_size` (if set) into the config file at `path`, as a top-level
/// key before any table.
fn set_cache_size(path: &std::path::Path) -> Result<()> {
    if let Some(size) = cache_size() {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        std::fs::write(path, format!("cache_size = {size:?}\n{text}"))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// A provider, its consumers and their folder.
#[derive(Debug)]
pub struct Cluster {
    /// Everything on disk; removed on drop.
    pub root: TempDir,
    /// The provider (running).
    pub provider: Provider,
    /// The consumers, in the order they were added.
    pub consumers: Vec<Consumer>,
    /// The fault proxy some consumers connect through.
    pub proxy: Option<Proxy>,
    /// Entries in the directory (people plus the structural ones).
    pub entries: usize,
    /// How long the offline load of the people took.
    pub load_time: Duration,
}

impl Cluster {
    /// A running provider loaded with `people` benchmark entries.
    pub fn provider(people: usize) -> Result<Self> {
        let root = tempfile::Builder::new().prefix("tether-bench-").tempdir().context("creating the temp folder")?;
        let mut provider = Provider::configure(&root.path().join("provider"), &ProviderOptions::default())?;
        set_cache_size(&provider.dir.join("provider.toml"))?;
        let file = root.path().join("initial.ldif");
        std::fs::write(&file, data::initial_ldif(people))?;
        let started = Instant::now();
        provider.load(&file).context("loading the benchmark directory")?;
        let load_time = started.elapsed();
        std::fs::remove_file(&file)?;
        provider.start()?;
        Ok(Self { root, provider, consumers: Vec::new(), proxy: None, entries: people + data::STRUCTURAL, load_time })
    }

    /// The writer's secret (the harness default).
    pub fn writer_secret(&self) -> String {
        ProviderOptions::default().writer_secret
    }

    /// Starts a proxy in front of the provider for consumers added with `via_proxy`.
    pub fn start_proxy(&mut self) -> Result<()> {
        let upstream = format!("127.0.0.1:{}", self.provider.port).parse()?;
        self.proxy = Some(Proxy::start(upstream)?);
        Ok(())
    }

    /// The proxy (started by [`Cluster::start_proxy`]).
    pub fn proxy(&self) -> Result<&Proxy> {
        self.proxy.as_ref().context("no proxy started")
    }

    /// Configures consumer number `consumers.len()` (not started); returns its index.
    pub fn add_consumer(&mut self, via_proxy: bool) -> Result<usize> {
        let i = self.consumers.len();
        let port = if via_proxy { self.proxy()?.port() } else { self.provider.port };
        let agreement = Agreement::persist(AGREEMENT, data::SUFFIX, PEOPLE_SECRET);
        let mut consumer = Consumer::configure(&self.root.path().join(format!("consumer-{i}")), port, &[agreement])?;
        consumer.env.push(("TETHER_APPLY_AUDIT".into(), "0".into()));
        set_cache_size(&consumer.dir.join("consumer.toml"))?;
        self.consumers.push(consumer);
        Ok(i)
    }

    /// Control socket of consumer `i`.
    pub fn control(&self, i: usize) -> PathBuf {
        self.consumers[i].dir.join("ctl.sock")
    }

    /// Process id of consumer `i`.
    pub fn consumer_pid(&self, i: usize) -> Result<u32> {
        Ok(self.consumers[i].child.as_ref().context("consumer not running")?.id())
    }

    /// Process id of the provider.
    pub fn provider_pid(&self) -> Result<u32> {
        Ok(self.provider.child.as_ref().context("provider not running")?.id())
    }

    /// Waits until consumer `i` persists with every entry.
    pub async fn wait_persisting(&self, i: usize, limit: Duration) -> Result<()> {
        let path = self.control(i);
        let start = Instant::now();
        loop {
            if let Ok(s) = client::agreement_status(&path, AGREEMENT).await {
                if s["state"] == "persisting" && s["entries"].as_u64() == Some(self.entries as u64) {
                    return Ok(());
                }
            }
            if start.elapsed() > limit {
                bail!("consumer {i} did not reach persisting with {} entries within {limit:?}", self.entries);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The provider's newest durable CSN.
    pub async fn provider_csn(&self) -> Result<Csn> {
        let status = client::status(&self.provider.dir.join("ctl.sock")).await?;
        Ok(Csn(status["csn"].as_u64().context("no csn in the provider status")?))
    }

    /// Whether consumer `i`'s replica is identical to the provider's directory
    /// (canonical LDIF of both, compared whole).
    pub fn identical(&self, i: usize) -> Result<bool> {
        let all = "(objectClass=*)";
        let want = self.provider.search(data::SUFFIX, "subtree", all)?;
        let got = self.consumers[i].search(AGREEMENT, data::SUFFIX, "subtree", all)?;
        Ok(want == got)
    }

    /// Connects a write client.
    pub async fn writer(&self) -> Result<client::Writer> {
        client::Writer::connect(self.provider.port, &self.writer_secret()).await
    }
}

impl Drop for Cluster {
    /// Stops every process with SIGTERM (the harness's own drop kills them), so a
    /// profiler wrapping them can write its output.
    fn drop(&mut self) {
        if std::env::var_os("TETHER_BENCH_KEEP").is_some() {
            eprintln!("keeping {}", self.root.path().display());
            self.root.disable_cleanup(true);
        }
        for c in &mut self.consumers {
            if c.child.is_some() {
                let _ = c.stop();
            }
        }
        if self.provider.child.is_some() {
            let _ = self.provider.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// In TOML a key after a table header belongs to that table, so `--cache-size` must
    /// go in before the first one to be the store's setting (the size is set once per
    /// process, so this test takes whichever was set first).
    #[test]
    fn the_cache_size_goes_into_a_config_as_a_top_level_key() {
        let _ = use_cache_size("64MiB".to_owned());
        let size = cache_size().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("consumer.toml");
        std::fs::write(&path, "[[agreement]]\nname = \"people\"\n").unwrap();
        set_cache_size(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, format!("cache_size = \"{size}\"\n[[agreement]]\nname = \"people\"\n"));
    }
}

//! Process harness: runs the real `tether-provider` and `tether-consumer` binaries as
//! child processes on loopback, with their stores and configs in a temporary folder, and
//! drives them through their command-line interfaces exactly as an operator would.

use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// How long a process may take to report it is ready.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Poll interval of [`wait_until`].
pub const POLL: Duration = Duration::from_millis(50);

/// Names a folder of prebuilt `tether-provider` and `tether-consumer` binaries to use
/// as they are (no build): how the release `tether-chaos` runs release processes.
pub const BIN_DIR_ENV: &str = "TETHER_BIN_DIR";

/// The folder holding the workspace's binaries, built (or brought up to date) once per
/// test process: `cargo test -p replication-tests` does not rebuild other packages'
/// binaries, and a test must never run a stale one. [`BIN_DIR_ENV`] overrides it.
fn bin_dir() -> Result<PathBuf> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os(BIN_DIR_ENV).map(PathBuf::from) {
            let have = dir.join("tether-provider").exists() && dir.join("tether-consumer").exists();
            if !have {
                return Err(format!("{BIN_DIR_ENV}={}: no tether-provider and tether-consumer there", dir.display()));
            }
            return Ok(dir);
        }
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        // target/<profile>/deps/<test> or target/<profile>/<bin>
        let mut dir = exe.parent().map(Path::to_path_buf).ok_or("no parent")?;
        if dir.ends_with("deps") {
            dir.pop();
        }
        let profile = dir.file_name().and_then(|n| n.to_str()).unwrap_or("debug").to_owned();
        // In the workspace this was built from, wherever it is run from (the demo, the
        // benchmark and the chaos tool are run from anywhere).
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let workspace = workspace.canonicalize().unwrap_or(workspace);
        let use_bin_dir =
            format!("set {BIN_DIR_ENV} to a folder holding tether-provider and tether-consumer to run those instead");
        if !workspace.join("Cargo.toml").is_file() {
            return Err(format!(
                "{BIN_DIR_ENV} is not set, and the source tree this was built from ({}) is not there to build \
                 the binaries in: {use_bin_dir}",
                workspace.display()
            ));
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(&workspace).args([
            "build",
            "--quiet",
            "-p",
            "tether-provider",
            "-p",
            "tether-consumer",
            "--bins",
        ]);
        if profile == "release" {
            cmd.arg("--release");
        }
        let status = cmd.status().map_err(|e| format!("running cargo build in {}: {e}", workspace.display()))?;
        let have = dir.join("tether-provider").exists() && dir.join("tether-consumer").exists();
        if !status.success() || !have {
            return Err(format!(
                "cargo build of tether-provider and tether-consumer in {} failed (its output is above), or did not \
                 put them in {}: {use_bin_dir}",
                workspace.display(),
                dir.display()
            ));
        }
        Ok(dir)
    })
    .clone()
    .map_err(anyhow::Error::msg)
}

/// Path of a workspace binary.
pub fn bin(name: &str) -> Result<PathBuf> {
    Ok(bin_dir()?.join(name))
}

/// A free loopback TCP port for a provider to listen on: bound and released, so free
/// when chosen.
///
/// Chosen below the kernel's ephemeral range, which a port from binding port 0 lies in:
/// there the kernel may hand it to any process's outgoing connection between the choice
/// and the provider's bind, or while a test has the provider stopped (seen in CI as
/// `Address already in use` at a start). Below the range only another listener can take
/// it, and no port is handed out twice in one test process.
pub fn free_port() -> Result<u16> {
    use rand::Rng;
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let first_ephemeral = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    if first_ephemeral > 20_000 {
        let mut rng = rand::thread_rng();
        let mut given = GIVEN.lock().map_err(|_| anyhow::anyhow!("port list poisoned"))?;
        for _ in 0..200 {
            let port = rng.gen_range(10_000..first_ephemeral);
            if !given.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
                given.push(port);
                return Ok(port);
            }
        }
    }
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Connects to `port` on 127.0.0.1, sends `bytes` (none: a TCP health check's probe),
/// closes its side and reads until the server has closed its own, so the server has
/// handled the connection (and logged what it makes of it) when this returns.
pub fn probe_port(port: u16, bytes: &[u8]) -> Result<()> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.write_all(bytes)?;
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    Ok(())
}

/// Connects to `port` and closes with a reset, having sent nothing: a health check
/// that sets `SO_LINGER` 0 (HAProxy's), so as to leave no TIME_WAIT behind.
pub fn probe_port_reset(port: u16) -> Result<()> {
    let stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO))?;
    drop(stream);
    Ok(())
}

/// Probes `p`'s port as health checks do, three times closing with a FIN and three with
/// a reset, then sends it what a web client would, and gives the provider's warnings
/// once one says `warned_as` (the web client's: a probe's would be logged before it).
pub fn probe_then_warnings(p: &Provider, warned_as: &str) -> Result<Vec<String>> {
    for _ in 0..3 {
        probe_port(p.port, b"")?;
        probe_port_reset(p.port)?;
    }
    probe_port(p.port, b"GET / HTTP/1.0\r\n\r\n")?;
    wait_until(Duration::from_secs(30), "the warning of the web client", || Ok(p.log_text().contains(warned_as)))?;
    Ok(p.log_text().lines().filter(|l| l.contains("WARN")).map(str::to_owned).collect())
}

/// Polls `cond` every [`POLL`] until it holds or `limit` passes.
pub fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> Result<bool>) -> Result<()> {
    let start = Instant::now();
    let mut last_err = None;
    loop {
        match cond() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last_err = Some(e),
        }
        if start.elapsed() >= limit {
            bail!(
                "timed out after {limit:?} waiting for {what}{}",
                last_err.map(|e| format!(" (last error: {e:#})")).unwrap_or_default()
            );
        }
        std::thread::sleep(POLL);
    }
}

/// Checks `cond` every [`POLL`] for the whole of `period` and fails as soon as it does
/// not hold: how a test asserts that something does *not* happen (no reconnects while
/// stopped, no retry storm when closed).
pub fn assert_holds(period: Duration, what: &str, mut cond: impl FnMut() -> Result<bool>) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < period {
        if !cond()? {
            bail!("{what} stopped holding after {:?}", start.elapsed());
        }
        std::thread::sleep(POLL);
    }
    Ok(())
}

/// Sends a signal to a child process with `kill(1)` (the workspace forbids `unsafe`).
pub fn signal(child: &Child, sig: &str) -> Result<()> {
    let status = Command::new("kill").arg(format!("-{sig}")).arg(child.id().to_string()).status()?;
    if !status.success() {
        bail!("kill -{sig} {} failed", child.id());
    }
    Ok(())
}

/// A command running `program`, under a file-size limit of `bytes` if given: a real
/// storage failure without filling a disk or needing root. The process may write no file
/// past the limit (RLIMIT_FSIZE, set by util-linux's `prlimit`), and with SIGXFSZ ignored
/// such a write fails with EFBIG, which sled meets as it meets ENOSPC: while writing its
/// log. `exec` keeps the process id, so signals reach the program itself.
fn limited(program: &Path, bytes: Option<u64>) -> Command {
    match bytes {
        None => Command::new(program),
        Some(bytes) => {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg("trap '' XFSZ; exec prlimit --fsize=\"$TETHER_TEST_FSIZE\" -- \"$@\"")
                .arg("sh")
                .arg(program)
                .env("TETHER_TEST_FSIZE", bytes.to_string());
            c
        }
    }
}

/// The size of the largest file in `dir`, such as a store folder: the file a
/// `file_size_limit` must leave room in.
pub fn largest_file(dir: &Path) -> Result<u64> {
    let mut largest = 0;
    for f in fs::read_dir(dir)? {
        let meta = f?.metadata()?;
        if meta.is_file() {
            largest = largest.max(meta.len());
        }
    }
    Ok(largest)
}

/// Copies the folder `from` and everything under it to `to`.
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for item in fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let item = item?;
        let target = to.join(item.file_name());
        if item.file_type()?.is_dir() {
            copy_tree(&item.path(), &target)?;
        } else {
            fs::copy(item.path(), &target).with_context(|| format!("copying {}", item.path().display()))?;
        }
    }
    Ok(())
}

fn run_ok(mut cmd: Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Refuses to start a process over one still running: its handle would be replaced and
/// the process left running after the test (a consumer that a test started twice
/// outlived it and held its store for good).
fn not_running(child: &mut Option<Child>, what: &str) -> Result<()> {
    if let Some(c) = child {
        if c.try_wait()?.is_none() {
            bail!("the {what} is already running");
        }
    }
    Ok(())
}

/// One consumer grant of a provider config.
#[derive(Debug, Clone)]
pub struct Grant {
    /// Agreement name.
    pub agreement: String,
    /// Secret text.
    pub secret: String,
    /// Widest base.
    pub base: String,
}

/// The secret of the `people` agreement of [`ProviderOptions::default`], for its
/// consumers. 16 bytes or more, as a secret must be to be taken without a warning: a
/// test counting a process's warnings, or reading a reload's reply, would find its own
/// secret's.
pub const PEOPLE_SECRET: &str = "people-secret-for-tests";

/// The writer secret of [`ProviderOptions::default`].
pub const WRITER_SECRET: &str = "writer-secret-for-tests";

/// A provider process and its folder.
#[derive(Debug)]
pub struct Provider {
    /// Its folder (config, store, secrets, log).
    pub dir: PathBuf,
    /// Its config file.
    pub config: PathBuf,
    /// Its port.
    pub port: u16,
    /// The running process, if any.
    pub child: Option<Child>,
    /// Where its stderr goes.
    pub log: PathBuf,
    /// Number of times it was started (names log files).
    starts: u32,
    /// Largest file `serve` may write, in bytes (a real storage failure, see the private
    /// `limited`); `None` for no limit.
    pub file_size_limit: Option<u64>,
}

/// Provider settings a test may change.
#[derive(Debug, Clone)]
pub struct ProviderOptions {
    /// Suffix.
    pub suffix: String,
    /// Agreements served.
    pub grants: Vec<Grant>,
    /// Extra TOML appended to `[changelog]`.
    pub changelog: String,
    /// Keepalive interval and timeout.
    pub keepalive: (String, String),
    /// Writer secret.
    pub writer_secret: String,
    /// Body of a `[tls]` section (`cert_file`, `key_file`); `None` serves plain TCP.
    pub tls: Option<String>,
    /// `batch_size`: entries (or changes) per refresh batch.
    pub batch_size: u32,
}

impl Default for ProviderOptions {
    fn default() -> Self {
        Self {
            suffix: "dc=example,dc=com".into(),
            grants: vec![Grant {
                agreement: "people".into(),
                secret: PEOPLE_SECRET.into(),
                base: "dc=example,dc=com".into(),
            }],
            changelog: String::new(),
            keepalive: ("1s".into(), "5s".into()),
            writer_secret: WRITER_SECRET.into(),
            tls: None,
            batch_size: 200,
        }
    }
}

impl Provider {
    /// Writes the provider's config under `dir` (does not start it).
    pub fn configure(dir: &Path, opts: &ProviderOptions) -> Result<Self> {
        Self::configure_on(dir, opts, free_port()?)
    }

    fn configure_on(dir: &Path, opts: &ProviderOptions, port: u16) -> Result<Self> {
        fs::create_dir_all(dir.join("secrets"))?;
        let mut toml = format!(
            "data_dir = \"data\"\nlisten = \"127.0.0.1:{port}\"\ncontrol = \"ctl.sock\"\nsuffix = \"{}\"\nbatch_size = {}\n\
             [changelog]\n{}\n[keepalive]\ninterval = \"{}\"\ntimeout = \"{}\"\n[writer]\nsecret_file = \"secrets/writer.key\"\n",
            opts.suffix, opts.batch_size, opts.changelog, opts.keepalive.0, opts.keepalive.1
        );
        write_secret(&dir.join("secrets/writer.key"), &opts.writer_secret)?;
        for g in &opts.grants {
            let _ = write!(
                toml,
                "[[consumer]]\nagreement = \"{}\"\nsecret_file = \"secrets/{}.key\"\nbase = \"{}\"\n",
                g.agreement, g.agreement, g.base
            );
            write_secret(&dir.join(format!("secrets/{}.key", g.agreement)), &g.secret)?;
        }
        if let Some(tls) = &opts.tls {
            let _ = write!(toml, "[tls]\n{tls}\n");
        }
        let config = dir.join("provider.toml");
        fs::write(&config, toml)?;
        Ok(Self {
            dir: dir.to_owned(),
            config,
            port,
            child: None,
            log: dir.join("provider.log"),
            starts: 0,
            file_size_limit: None,
        })
    }

    fn cmd(&self, sub: &str) -> Result<Command> {
        let limit = if matches!(sub, "serve" | "load") { self.file_size_limit } else { None };
        let mut c = limited(&bin("tether-provider")?, limit);
        c.arg(sub).arg("-c").arg(&self.config).env("TETHER_LOG", child_log_level());
        Ok(c)
    }

    /// A provider under `root/provider` loaded with `n` generated people (see
    /// [`Workload`](crate::workload::Workload)) and running; the workload generates the
    /// changes a test makes next.
    pub fn loaded(
        root: &Path,
        n: usize,
        seed: u64,
        opts: &ProviderOptions,
    ) -> Result<(Self, crate::workload::Workload)> {
        let mut work = crate::workload::Workload::new(n, seed);
        let mut provider = Self::configure(&root.join("provider"), opts)?;
        let file = root.join("initial.ldif");
        fs::write(&file, work.initial_ldif())?;
        provider.load(&file)?;
        let mut tries = 1;
        while let Err(e) = provider.start() {
            // The port was free when it was chosen, but the kernel may have handed it to
            // another process's outgoing connection since (seen once in CI: `Address
            // already in use`). Nothing knows this provider's port yet: take another.
            if tries == 3 || !provider.log_text().contains("Address already in use") {
                return Err(e);
            }
            tries += 1;
            if let Some(mut child) = provider.child.take() {
                child.wait()?;
            }
            let dir = provider.dir.clone();
            provider = Self::configure_on(&dir, opts, free_port()?)?;
        }
        Ok((provider, work))
    }

    /// Offline bulk load.
    pub fn load(&self, ldif: &Path) -> Result<String> {
        run_ok({
            let mut c = self.cmd("load")?;
            c.arg(ldif);
            c
        })
    }

    /// `load` of `ldif` (with `args` before it) started and left running, its output
    /// piped: for a test that must bound how long it takes.
    pub fn spawn_load(&self, ldif: &Path, args: &[&str]) -> Result<Child> {
        let mut c = self.cmd("load")?;
        c.args(args).arg(ldif);
        Ok(c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?)
    }

    /// Starts `serve` and waits until it listens.
    pub fn start(&mut self) -> Result<()> {
        not_running(&mut self.child, "provider")?;
        self.starts += 1;
        let log = fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let mut child = self.cmd("serve")?.stdout(Stdio::piped()).stderr(log).spawn()?;
        let stdout = child.stdout.take().context("provider stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("listening on") {
                    let _ = tx.send(());
                }
            }
        });
        self.child = Some(child);
        rx.recv_timeout(START_TIMEOUT)
            .map_err(|_| anyhow::anyhow!("provider did not start; log:\n{}", self.log_text()))?;
        Ok(())
    }

    /// The provider's log so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Applies LDIF change records through `write`.
    pub fn write(&self, ldif_text: &str) -> Result<Output> {
        Ok(self.write_child(ldif_text)?.wait_with_output()?)
    }

    /// Starts `write` on LDIF change records without waiting for it; its stdout and
    /// stderr are piped.
    pub fn write_child(&self, ldif_text: &str) -> Result<Child> {
        let file = self.dir.join(format!("changes-{}.ldif", rand_suffix()));
        fs::write(&file, ldif_text)?;
        Ok(self.cmd("write")?.arg(&file).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?)
    }

    /// Like [`Provider::write`] but fails unless every record applied.
    pub fn write_ok(&self, ldif_text: &str) -> Result<()> {
        let out = self.write(ldif_text)?;
        if !out.status.success() {
            bail!("write failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    /// Canonical LDIF of a region.
    pub fn search(&self, base: &str, scope: &str, filter: &str) -> Result<String> {
        run_ok({
            let mut c = self.cmd("search")?;
            c.args(["--base", base, "--scope", scope, "--filter", filter]);
            c
        })
    }

    /// Canonical LDIF of a region trimmed to `attrs` (comma-separated), as an agreement
    /// with that attribute list holds it.
    pub fn search_attrs(&self, base: &str, scope: &str, filter: &str, attrs: &str) -> Result<String> {
        run_ok({
            let mut c = self.cmd("search")?;
            c.args(["--base", base, "--scope", scope, "--filter", filter, "--attrs", attrs]);
            c
        })
    }

    /// `search` with these arguments after `-c`, its output and exit status as they are.
    pub fn search_output(&self, args: &[&str]) -> Result<Output> {
        let mut c = self.cmd("search")?;
        c.args(args).output().with_context(|| format!("running {c:?}"))
    }

    /// `search` with these arguments (`--uuids`, ...) after `-c`.
    pub fn search_args(&self, args: &[&str]) -> Result<String> {
        run_ok({
            let mut c = self.cmd("search")?;
            c.args(args);
            c
        })
    }

    /// `status --json`.
    pub fn status(&self) -> Result<serde_json::Value> {
        let text = run_ok({
            let mut c = self.cmd("status")?;
            c.arg("--json");
            c
        })?;
        Ok(serde_json::from_str(&text)?)
    }

    /// SIGTERM and wait; returns the exit status.
    pub fn stop(&mut self) -> Result<std::process::ExitStatus> {
        let mut child = self.child.take().context("provider not running")?;
        signal(&child, "TERM")?;
        wait_exit(&mut child, START_TIMEOUT)
    }

    /// SIGKILL and wait.
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Copies the stopped provider's store folder to `to`: a cold backup, as an operator
    /// would take one with `cp -a` or a file-system snapshot.
    pub fn back_up_store(&self, to: &Path) -> Result<()> {
        anyhow::ensure!(self.child.is_none(), "a running provider's store cannot be copied consistently");
        copy_tree(&self.dir.join("data"), to)
    }

    /// The history each start of `serve` began (see `tether_store::history`), oldest
    /// first, read from its log: the ids consumer cookies name.
    pub fn histories(&self) -> Vec<String> {
        self.log_text()
            .lines()
            .filter(|l| l.contains("provider listening"))
            .filter_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("history=")).map(str::to_owned))
            .collect()
    }

    /// Replaces the stopped provider's store folder with the copy at `from`.
    pub fn restore_store(&self, from: &Path) -> Result<()> {
        anyhow::ensure!(self.child.is_none(), "restore a stopped provider only");
        let data = self.dir.join("data");
        fs::remove_dir_all(&data).with_context(|| format!("removing {}", data.display()))?;
        copy_tree(from, &data)
    }

    /// The operator's mistake: replaces the store folder with the copy at `from` while
    /// the provider runs.
    pub fn restore_store_under_it(&self, from: &Path) -> Result<()> {
        let data = self.dir.join("data");
        fs::remove_dir_all(&data).with_context(|| format!("removing {}", data.display()))?;
        copy_tree(from, &data)
    }

    /// Sends SIGHUP (reload the consumer list).
    pub fn reload(&self) -> Result<()> {
        signal(self.child.as_ref().context("provider not running")?, "HUP")
    }

    /// Runs `tether-provider reload`, which asks the running provider on its control
    /// socket and prints the outcome; its output, whatever the exit status.
    pub fn reload_command(&self) -> Result<Output> {
        let mut c = self.cmd("reload")?;
        c.output().with_context(|| format!("running {c:?}"))
    }

    /// `status --json` as the command ran, failed or not.
    pub fn status_command(&self) -> Result<Output> {
        let mut c = self.cmd("status")?;
        c.arg("--json").output().with_context(|| format!("running {c:?}"))
    }

    /// `sub -c CONFIG args...` as it ran, failed or not.
    pub fn command_output(&self, sub: &str, args: &[&str]) -> Result<Output> {
        let mut c = self.cmd(sub)?;
        c.args(args).output().with_context(|| format!("running {c:?}"))
    }

    /// `sub -c CONFIG args...` started, its output piped: a command a test signals or
    /// kills while it runs.
    pub fn spawn_command(&self, sub: &str, args: &[&str]) -> Result<Child> {
        let mut c = self.cmd(sub)?;
        c.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        c.spawn().with_context(|| format!("starting {c:?}"))
    }

    /// The process writing a running backup's copy (`tether-provider backup-writer`,
    /// this provider's child), once it runs.
    pub fn backup_writer(&self) -> Result<Option<u32>> {
        let Some(parent) = self.child.as_ref().map(Child::id) else { return Ok(None) };
        for entry in fs::read_dir("/proc")? {
            let Ok(pid) = entry?.file_name().to_string_lossy().parse::<u32>() else { continue };
            // Gone between the listing and the read: not it.
            let (Ok(stat), Ok(cmdline)) =
                (fs::read_to_string(format!("/proc/{pid}/stat")), fs::read(format!("/proc/{pid}/cmdline")))
            else {
                continue;
            };
            // `pid (comm) state ppid ...`: the name may hold spaces, the rest does not.
            let ppid = stat.rsplit_once(") ").and_then(|(_, rest)| rest.split(' ').nth(1)).and_then(|p| p.parse().ok());
            let runs_as_writer = cmdline.split(|b| *b == 0).any(|arg| arg == b"backup-writer");
            if ppid == Some(parent) && runs_as_writer {
                return Ok(Some(pid));
            }
        }
        Ok(None)
    }

    /// Rewrites the config with `opts` (same port and folders).
    pub fn reconfigure(&mut self, opts: &ProviderOptions) -> Result<()> {
        let port = self.port;
        let fresh = Self::configure_on(&self.dir, opts, port)?;
        self.config = fresh.config.clone();
        Ok(())
    }
}

/// Writes a secret file as an operator should, readable by its owner only: the
/// processes warn of any other mode, in their logs and in a reload's reply.
fn write_secret(path: &Path, secret: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::write(path, secret)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    Ok(())
}

/// The log filter the harness gives its child processes: `TETHER_CHILD_LOG` if set (to
/// see a run's debug timeline), `info` otherwise.
fn child_log_level() -> String {
    std::env::var("TETHER_CHILD_LOG").unwrap_or_else(|_| "info".to_owned())
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// The count of records applied that a failed `write` ends its error with ("N records
/// applied", "1 record applied"); `None` if the error has none (it failed before sending).
pub fn applied_count(stderr: &str) -> Option<u64> {
    stderr.split(" applied").find_map(|head| {
        let mut words = head.split_whitespace().rev();
        let noun = words.next()?;
        (noun == "records" || noun == "record").then(|| words.next()?.parse().ok())?
    })
}

/// Waits for a child to exit within `limit`, killing it if it does not.
pub fn wait_exit(child: &mut Child, limit: Duration) -> Result<std::process::ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if start.elapsed() >= limit {
            child.kill()?;
            bail!("process {} did not exit within {limit:?}", child.id());
        }
        std::thread::sleep(POLL);
    }
}

fn rand_suffix() -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!("{}-{}", std::process::id(), N.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

/// One agreement of a consumer config.
#[derive(Debug, Clone)]
pub struct Agreement {
    /// Name.
    pub name: String,
    /// `refresh-and-persist` or `refresh-only`.
    pub mode: String,
    /// Base DN.
    pub base: String,
    /// Scope.
    pub scope: String,
    /// Filter.
    pub filter: String,
    /// Secret text.
    pub secret: String,
    /// Extra TOML lines for the agreement (interval, retry, ...).
    pub extra: String,
    /// Body of an `[agreement.tls]` section (`ca_file`, `server_name`); `None` connects
    /// over plain TCP.
    pub tls: Option<String>,
    /// Body of the `[agreement.keepalive]` section.
    pub keepalive: String,
}

impl Agreement {
    /// A persist agreement over `base` (subtree, all entries).
    pub fn persist(name: &str, base: &str, secret: &str) -> Self {
        Self {
            name: name.into(),
            mode: "refresh-and-persist".into(),
            base: base.into(),
            scope: "subtree".into(),
            filter: "(objectClass=*)".into(),
            secret: secret.into(),
            extra: "retry = [\"200ms x1000\"]\n".into(),
            tls: None,
            keepalive: "interval = \"1s\"\ntimeout = \"5s\"\n".into(),
        }
    }
}

/// A consumer process and its folder.
#[derive(Debug)]
pub struct Consumer {
    /// Its folder.
    pub dir: PathBuf,
    /// Its config file.
    pub config: PathBuf,
    /// The running process, if any.
    pub child: Option<Child>,
    /// Its stderr log.
    pub log: PathBuf,
    /// Extra environment for `run` (failpoints). The apply audit is always on.
    pub env: Vec<(String, String)>,
    /// Largest file `run` may write, in bytes (a real storage failure, see the private
    /// `limited`); `None` for no limit.
    pub file_size_limit: Option<u64>,
}

impl Consumer {
    /// Writes the config under `dir` of a consumer whose provider is nowhere: a port
    /// nothing listens on, for what a consumer does and says while it cannot connect.
    pub fn unreachable(dir: &Path, agreements: &[Agreement]) -> Result<Self> {
        Self::configure(dir, free_port()?, agreements)
    }

    /// Writes the consumer's config under `dir` for a provider on `port`.
    pub fn configure(dir: &Path, port: u16, agreements: &[Agreement]) -> Result<Self> {
        fs::create_dir_all(dir.join("secrets"))?;
        let mut toml = "data_dir = \"data\"\ncontrol = \"ctl.sock\"\nshutdown_timeout = \"5s\"\n".to_owned();
        for a in agreements {
            let _ = write!(
                toml,
                "[[agreement]]\nname = \"{}\"\nprovider = \"127.0.0.1:{port}\"\nmode = \"{}\"\nbase = \"{}\"\nscope = \"{}\"\n\
                 filter = \"{}\"\nsecret_file = \"secrets/{}.key\"\n{}\n[agreement.keepalive]\n{}\n",
                a.name, a.mode, a.base, a.scope, a.filter, a.name, a.extra, a.keepalive
            );
            if let Some(tls) = &a.tls {
                let _ = write!(toml, "[agreement.tls]\n{tls}\n");
            }
            write_secret(&dir.join(format!("secrets/{}.key", a.name)), &a.secret)?;
        }
        let config = dir.join("consumer.toml");
        fs::write(&config, toml)?;
        Ok(Self {
            dir: dir.to_owned(),
            config,
            child: None,
            log: dir.join("consumer.log"),
            env: Vec::new(),
            file_size_limit: None,
        })
    }

    fn cmd(&self, sub: &str) -> Result<Command> {
        let limit = if sub == "run" { self.file_size_limit } else { None };
        let mut c = limited(&bin("tether-consumer")?, limit);
        c.arg(sub).arg("-c").arg(&self.config).env("TETHER_LOG", child_log_level());
        Ok(c)
    }

    /// Starts `run` and waits until it is up.
    pub fn start(&mut self) -> Result<()> {
        not_running(&mut self.child, "consumer")?;
        let log = fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let mut cmd = self.cmd("run")?;
        cmd.env("TETHER_APPLY_AUDIT", "1").envs(self.env.iter().map(|(k, v)| (k, v)));
        let mut child = cmd.stdout(Stdio::piped()).stderr(log).spawn()?;
        let stdout = child.stdout.take().context("consumer stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("consumer running") {
                    let _ = tx.send(());
                }
            }
        });
        self.child = Some(child);
        rx.recv_timeout(START_TIMEOUT)
            .map_err(|_| anyhow::anyhow!("consumer did not start; log:\n{}", self.log_text()))?;
        Ok(())
    }

    /// The consumer's log so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Canonical LDIF of an agreement's replica (region defaults to the agreement's).
    pub fn search(&self, agreement: &str, base: &str, scope: &str, filter: &str) -> Result<String> {
        run_ok({
            let mut c = self.cmd("search")?;
            c.args(["--agreement", agreement, "--base", base, "--scope", scope, "--filter", filter]);
            c
        })
    }

    /// `search` with these arguments (`--agreement NAME --uuids`, ...) after `-c`.
    pub fn search_args(&self, args: &[&str]) -> Result<String> {
        run_ok({
            let mut c = self.cmd("search")?;
            c.args(args);
            c
        })
    }

    /// `search` with these arguments after `-c`, its output and exit status as they are.
    pub fn search_output(&self, args: &[&str]) -> Result<Output> {
        self.command_output("search", args)
    }

    /// The command `sub` with these arguments after `-c`, its output and exit status as
    /// they are.
    pub fn command_output(&self, sub: &str, args: &[&str]) -> Result<Output> {
        let mut c = self.cmd(sub)?;
        c.args(args).output().with_context(|| format!("running {c:?}"))
    }

    /// Like [`Consumer::search`], trimmed to `attrs` (comma-separated).
    pub fn search_attrs(&self, agreement: &str, base: &str, scope: &str, filter: &str, attrs: &str) -> Result<String> {
        run_ok({
            let mut c = self.cmd("search")?;
            c.args(["--agreement", agreement, "--base", base, "--scope", scope, "--filter", filter, "--attrs", attrs]);
            c
        })
    }

    /// `status --json`.
    pub fn status(&self) -> Result<serde_json::Value> {
        let text = run_ok({
            let mut c = self.cmd("status")?;
            c.arg("--json");
            c
        })?;
        Ok(serde_json::from_str(&text)?)
    }

    /// One agreement's status object.
    pub fn agreement_status(&self, name: &str) -> Result<serde_json::Value> {
        agreement_in(&self.status()?, name)
    }

    /// Runs `stop`, `start`, `restart` or `reload`.
    pub fn admin(&self, sub: &str, name: Option<&str>) -> Result<String> {
        run_ok({
            let mut c = self.cmd(sub)?;
            if let Some(n) = name {
                c.arg(n);
            }
            c
        })
    }

    /// `status --json` as the command ran, failed or not.
    pub fn status_command(&self) -> Result<Output> {
        let mut c = self.cmd("status")?;
        c.arg("--json").output().with_context(|| format!("running {c:?}"))
    }

    /// `wait --agreement NAME --csn N --timeout T`: returns once the replica has CSN `N`
    /// on disk (see the provider's `write`, which prints the CSN to wait for).
    pub fn wait_csn(&self, agreement: &str, csn: u64, timeout: &str) -> Result<Output> {
        let mut c = self.cmd("wait")?;
        c.args(["--agreement", agreement, "--csn", &csn.to_string(), "--timeout", timeout]);
        Ok(c.output()?)
    }

    /// [`Consumer::wait_csn`] started and left running, its output discarded.
    pub fn spawn_wait(&self, agreement: &str, csn: u64, timeout: &str) -> Result<Child> {
        let mut c = self.cmd("wait")?;
        c.args(["--agreement", agreement, "--csn", &csn.to_string(), "--timeout", timeout]);
        Ok(c.stdout(Stdio::null()).stderr(Stdio::null()).spawn()?)
    }

    /// [`Consumer::wait_csn`] started and left running, its output piped.
    pub fn wait_child(&self, agreement: &str, csn: u64, timeout: &str) -> Result<Child> {
        let mut c = self.cmd("wait")?;
        c.args(["--agreement", agreement, "--csn", &csn.to_string(), "--timeout", timeout]);
        Ok(c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?)
    }

    /// The number of files the running consumer process holds open.
    pub fn open_files(&self) -> Result<usize> {
        let pid = self.child.as_ref().context("consumer not running")?.id();
        Ok(fs::read_dir(format!("/proc/{pid}/fd"))?.count())
    }

    /// [`Consumer::wait_csn`] with `--visible`: returns once the replica's searches
    /// return CSN `N`, on disk or not.
    pub fn wait_visible(&self, agreement: &str, csn: u64, timeout: &str) -> Result<Output> {
        let mut c = self.cmd("wait")?;
        c.args(["--agreement", agreement, "--csn", &csn.to_string(), "--timeout", timeout, "--visible"]);
        Ok(c.output()?)
    }

    /// SIGTERM and wait.
    pub fn stop(&mut self) -> Result<std::process::ExitStatus> {
        let mut child = self.child.take().context("consumer not running")?;
        signal(&child, "TERM")?;
        wait_exit(&mut child, START_TIMEOUT)
    }

    /// SIGKILL and wait.
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Waits until agreement `name`'s status satisfies `cond`.
    pub fn wait_status(
        &self,
        name: &str,
        limit: Duration,
        what: &str,
        mut cond: impl FnMut(&serde_json::Value) -> bool,
    ) -> Result<serde_json::Value> {
        let mut last = serde_json::Value::Null;
        wait_until(limit, what, || {
            last = self.agreement_status(name)?;
            Ok(cond(&last))
        })
        .with_context(|| format!("last status: {last}"))?;
        Ok(last)
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// Agreement `name`'s object in a consumer's `status --json` output.
pub fn agreement_in(status: &serde_json::Value, name: &str) -> Result<serde_json::Value> {
    status["agreements"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["name"] == name).cloned())
        .with_context(|| format!("no agreement {name} in status {status}"))
}

#[cfg(test)]
mod tests {
    use super::applied_count;

    #[test]
    fn the_applied_count_is_read_from_a_failed_write() {
        assert_eq!(applied_count("Error: x.ldif:12: refused (no-such-object): gone; 7 records applied\n"), Some(7));
        assert_eq!(
            applied_count("x.ldif:3: refused (no-parent): parent of x does not exist; 1 record applied\n"),
            Some(1)
        );
        assert_eq!(
            applied_count("x.ldif:9: the provider closed the connection; 3 records applied; the outcome of this record is unknown"),
            Some(3)
        );
        assert_eq!(applied_count("Error: connecting to 127.0.0.1:5: refused\n"), None);
    }
}

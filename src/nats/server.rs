//! A `nats-server` child process: found and version-checked, configured for durable JetStream
//! (every write synced before the publish is acknowledged — `sync_interval: always`, which needs
//! nats-server ≥ 2.10) on a loopback address with its store in a directory of the run, started,
//! SIGKILLed and restarted on the same store and port (chaos), and stopped.
//!
//! Why sync-always: a node answers 250 once JetStream acknowledged the publish. With the
//! default (a sync every 2 minutes) an acknowledged message lives only in the page cache, so a
//! power cut — or a killed VM — loses mail the sender was told is safe.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The oldest server whose JetStream can sync every write.
pub const MIN_VERSION: (u32, u32) = (2, 10);
/// Largest message a client may publish: 32 MiB, the largest record nats-server's file store
/// keeps (its `rlBadThresh`; a larger one fails with "message too large"). Above the server's
/// advice of 8 MB: one message is one write, synced like any other. SPEC §9 asks for the
/// scenario default of 10 MiB at least; bodies up to 31 MiB fit (the scenario check says so).
pub const MAX_PAYLOAD: u64 = 32 * 1024 * 1024;
/// Room kept in a publish for the envelope header: a node on the shared queue takes bodies up to
/// `MAX_PAYLOAD - ENVELOPE_ROOM`.
pub const ENVELOPE_ROOM: u64 = 1024 * 1024;
/// Where `scripts/install-nats.sh` puts the server, relative to the repository.
pub const TOOLS_PATH: &str = ".tools/nats/bin/nats-server";
/// How long a starting server may take to answer with its INFO line.
const START_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error(
        "no nats-server found (looked at $MAILSURGE_NATS_SERVER, {TOOLS_PATH}, $PATH); \
         install one without root: scripts/install-nats.sh"
    )]
    NotFound,
    #[error(
        "{path}: nats-server {version} cannot sync every write (needs ≥ {}.{}); \
         install a current one without root: scripts/install-nats.sh",
        MIN_VERSION.0,
        MIN_VERSION.1
    )]
    TooOld { path: String, version: String },
    #[error("{first}; and installing one failed: {why}")]
    Install { first: Box<NatsError>, why: String },
    #[error("{path}: cannot tell its version: {why}")]
    Version { path: String, why: String },
    #[error("nats-server at {addr}: {why}")]
    Start { addr: SocketAddr, why: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> NatsError + '_ {
    move |source| NatsError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The server binary to run: `$MAILSURGE_NATS_SERVER`, else the project-local install
/// (`.tools/nats/bin/nats-server` under the working directory), else `nats-server` on `$PATH`
/// — the first that exists and is new enough. One that exists but is too old is an error
/// naming it (Debian's 2.9 would silently run without sync-always otherwise).
pub fn locate() -> Result<PathBuf, NatsError> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("MAILSURGE_NATS_SERVER") {
        candidates.push(p.into());
    }
    candidates.push(PathBuf::from(TOOLS_PATH));
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join("nats-server")));
    }
    let mut too_old = None;
    for c in candidates.into_iter().filter(|c| c.is_file()) {
        match check_version(&c) {
            Ok(()) => return Ok(c),
            Err(e @ NatsError::TooOld { .. }) => {
                too_old.get_or_insert(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(too_old.unwrap_or(NatsError::NotFound))
}

/// Where the project's install script is, from the working directory (a checkout).
pub const INSTALL_SCRIPT: &str = "scripts/install-nats.sh";

/// [`locate`], and when no usable server is found, installs one with the project's
/// [`INSTALL_SCRIPT`] (the PyPI wheel into `.tools/nats`, no root) if the working directory is
/// a checkout that has it — so `mailsurge run` of a `spool: nats` scenario works on a fresh
/// clone. `note` hears what is being done; the install takes a minute at most.
pub fn locate_or_install(note: &dyn Fn(&str)) -> Result<PathBuf, NatsError> {
    let first = match locate() {
        Ok(p) => return Ok(p),
        Err(e @ (NatsError::NotFound | NatsError::TooOld { .. })) => e,
        Err(e) => return Err(e),
    };
    if !Path::new(INSTALL_SCRIPT).is_file() {
        return Err(first);
    }
    note(&format!("{first}; installing it now with {INSTALL_SCRIPT}"));
    let out = std::process::Command::new("bash")
        .arg(INSTALL_SCRIPT)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(io(Path::new(INSTALL_SCRIPT)))?;
    if !out.status.success() {
        return Err(NatsError::Install {
            first: Box::new(first),
            why: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    check_version(&bin)?;
    Ok(bin)
}

/// Runs `BIN --version` (`nats-server: v2.15.1`) and refuses servers older than
/// [`MIN_VERSION`].
pub fn check_version(bin: &Path) -> Result<(), NatsError> {
    let out = std::process::Command::new(bin)
        .arg("--version")
        .output()
        .map_err(io(bin))?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let version = text.rsplit('v').next().unwrap_or_default().to_string();
    let mut parts = version.split('.').map(|p| p.parse::<u32>());
    let (Some(Ok(major)), Some(Ok(minor))) = (parts.next(), parts.next()) else {
        return Err(NatsError::Version {
            path: bin.display().to_string(),
            why: format!("`--version` printed {text:?}"),
        });
    };
    if (major, minor) < MIN_VERSION {
        return Err(NatsError::TooOld {
            path: bin.display().to_string(),
            version,
        });
    }
    Ok(())
}

/// What the server says of itself in the INFO line it greets every client with.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ServerInfo {
    pub version: String,
    #[serde(default)]
    pub jetstream: bool,
    pub max_payload: u64,
}

/// A running (or killed) server, restartable on the same store and address.
pub struct NatsServer {
    bin: PathBuf,
    conf: PathBuf,
    pub addr: SocketAddr,
    child: Option<Child>,
    pub info: ServerInfo,
}

impl NatsServer {
    /// The server's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Writes `<dir>/nats.conf` (JetStream, store in `<dir>/store`, sync every write) and
    /// starts the server on `ip` at a free port; returns once it greets clients.
    pub async fn start(bin: &Path, dir: &Path, ip: IpAddr) -> Result<NatsServer, NatsError> {
        std::fs::create_dir_all(dir.join("store")).map_err(io(dir))?;
        // A free port now, kept for every restart: nodes reconnect to the same address.
        let port = std::net::TcpListener::bind((ip, 0))
            .and_then(|l| l.local_addr())
            .map_err(io(dir))?
            .port();
        let addr = SocketAddr::new(ip, port);
        let conf = dir.join("nats.conf");
        let text = format!(
            "# Written by mailsurge: a JetStream server for the shared queue (spool: nats).\n\
             listen: \"{addr}\"\n\
             server_name: mailsurge\n\
             max_payload: {MAX_PAYLOAD}\n\
             jetstream {{\n  store_dir: \"{store}\"\n  # Sync every write before acknowledging it (nats-server >= 2.10).\n  sync_interval: always\n}}\n",
            store = dir.join("store").display(),
        );
        std::fs::write(&conf, text).map_err(io(&conf))?;
        let mut s = NatsServer {
            bin: bin.to_path_buf(),
            conf,
            addr,
            child: None,
            info: ServerInfo {
                version: String::new(),
                jetstream: false,
                max_payload: 0,
            },
        };
        s.restart().await?;
        Ok(s)
    }

    /// Starts the server process (again, after [`kill`](Self::kill)) on the same config,
    /// store and address.
    pub async fn restart(&mut self) -> Result<(), NatsError> {
        let log = self.conf.with_file_name("nats.log");
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(io(&log))?;
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(&self.conf)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .map_err(io(&self.bin))?;
        self.child = Some(child);
        self.info = self.greeting().await?;
        if !self.info.jetstream {
            return Err(self.failed("JetStream is not enabled".into()));
        }
        Ok(())
    }

    /// Whether the process is up (not killed or stopped by this handle).
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILL, like a machine failing: the store stays as the last sync left it.
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }

    /// SIGTERM (the server flushes and exits), SIGKILL after 10 s.
    pub async fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        if let Some(pid) = c.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        if tokio::time::timeout(Duration::from_secs(10), c.wait()).await.is_err() {
            let _ = c.kill().await;
        }
    }

    /// Connects until the server sends its `INFO {json}` greeting, or the start times out.
    async fn greeting(&mut self) -> Result<ServerInfo, NatsError> {
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                return Err(self.failed(format!("exited at start ({status}); see nats.log")));
            }
            if let Ok(stream) = tokio::net::TcpStream::connect(self.addr).await {
                let mut line = String::new();
                BufReader::new(stream)
                    .read_line(&mut line)
                    .await
                    .map_err(io(&self.conf))?;
                let json = line.trim().strip_prefix("INFO ").unwrap_or_default();
                return serde_json::from_str(json)
                    .map_err(|e| self.failed(format!("unreadable greeting {line:?}: {e}")));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(self.failed(format!("no greeting within {START_TIMEOUT:?}; see nats.log")));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn failed(&self, why: String) -> NatsError {
        NatsError::Start { addr: self.addr, why }
    }
}

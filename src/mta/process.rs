//! Reference-MTA nodes as child processes of this binary, as a run starts them from its plan:
//! write each node's config, start it, wait for its READY line, and stop it (SIGTERM, then
//! SIGKILL) — so a later chaos step can SIGKILL one like a machine failing.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::config::{NodeConfig, SpoolConfig};
use crate::scenario::Scenario;

/// How long a node may take to print its READY line.
const NODE_START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a node may take to exit after SIGTERM before it is SIGKILLed.
const NODE_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Node ingress addresses are 127.0.3.<n>.
const NODE_NET: [u8; 3] = [127, 0, 3];

/// A running node process.
pub struct Node {
    pub name: String,
    pub region: String,
    pub dir: PathBuf,
    pub addr: SocketAddr,
    pub child: Child,
    /// Killed by the chaos timeline: its exit is intended, not a crash.
    pub down: bool,
}

/// Node `k`'s ingress address on one host: 127.0.3.<k>.
pub fn default_node_ip(k: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(NODE_NET[0], NODE_NET[1], NODE_NET[2], k))
}

/// Writes one node's config and starts it, listening on `ip` (a port of its choosing); waits
/// for its READY line. `k` (from 1) numbers the run's nodes: it varies each node's seed.
#[allow(clippy::too_many_arguments)]
pub async fn start_node(
    s: &Scenario,
    run_dir: &Path,
    region: &str,
    name: &str,
    k: u8,
    ip: IpAddr,
    routes: &BTreeMap<String, Vec<SocketAddr>>,
    spool: SpoolConfig,
    pki: Option<&crate::tls::Pki>,
) -> anyhow::Result<Node> {
    let dir = run_dir.join("nodes").join(name);
    std::fs::create_dir_all(&dir)?;
    let tls = pki.map(|p| node_tls(s, p, &dir, name, ip)).transpose()?;
    let responses = match &s.responses_source.dir {
        // Shipped table: nodes embed the same file.
        None => s.file.mta.responses.clone(),
        Some(_) => std::fs::canonicalize(&s.responses_source.name)
            .with_context(|| format!("cannot resolve {}", s.responses_source.name))?
            .display()
            .to_string(),
    };
    let auth = s.file.traffic.auth.as_ref().map(|a| node_auth(&dir, a)).transpose()?;
    let cfg = NodeConfig {
        tls,
        node: name.to_string(),
        region: region.to_string(),
        listen: SocketAddr::new(ip, 0),
        // Submissions come from this host, or — in a distributed run — from a generator on
        // another host the scenario allows. With `traffic.auth` they must log in instead:
        // the node then relays for authenticated clients from those networks alone.
        relay_networks: match &auth {
            Some(_) => Vec::new(),
            None => crate::scenario::Allow::new(s.file.network.allow.iter().copied()).networks(),
        },
        auth,
        spool,
        routes: routes.clone(),
        egress_pools: s.file.mta.egress_pools.clone(),
        default_pool: None,
        retry: s.file.mta.retry.clone(),
        responses,
        events: "events.jsonl".into(),
        limits: s.file.mta.limits.clone(),
        screen: s.file.mta.screen.clone(),
        seed: s.file.seed.wrapping_add(u64::from(k)),
        // The harness reads the node's events; DSNs would only be mail to nowhere.
        dsn: false,
        // Its routes lead to the scenario's inboxes and its pools are the scenario's: what the
        // scenario allowed, the node allows.
        network: super::config::NodeNetwork {
            allow: s.file.network.allow.clone(),
        },
    };
    let cfg_path = dir.join("node.yaml");
    std::fs::write(&cfg_path, serde_norway::to_string(&cfg)?)?;
    let (child, addr) = spawn(&dir).await?;
    Ok(Node {
        name: name.to_string(),
        region: region.to_string(),
        dir,
        addr,
        child,
        down: false,
    })
}

/// A run's node's `tls:`: an ingress certificate from the run's CA for its address, the CA
/// (written beside it) to verify required domains with, and the scenario's egress policy.
fn node_tls(
    s: &Scenario,
    pki: &crate::tls::Pki,
    dir: &Path,
    name: &str,
    ip: IpAddr,
) -> anyhow::Result<super::config::NodeTls> {
    let issued = pki.issue(
        &[ip.to_string(), format!("{name}.mailsurge.test")],
        crate::tls::Validity::Current,
    )?;
    let tls = dir.join("tls");
    std::fs::create_dir_all(&tls)?;
    crate::files::write(&tls.join("node.pem"), &issued.cert_pem)?;
    crate::files::write_private(&tls.join("node.key"), &issued.key_pem)?;
    crate::files::write(&tls.join("ca.pem"), pki.ca_pem())?;
    let t = &s.file.mta.tls;
    Ok(super::config::NodeTls {
        cert: Some("tls/node.pem".into()),
        key: Some("tls/node.key".into()),
        ca: Some("tls/ca.pem".into()),
        opportunistic: t.opportunistic,
        required: t
            .required
            .iter()
            .map(|d| crate::scenario::network::sut_domain(&s.file, d))
            .collect(),
    })
}

/// A run's node's `auth:`: a users file holding the one account `traffic.auth` names.
fn node_auth(dir: &Path, a: &crate::scenario::SubmitAuth) -> anyhow::Result<super::config::NodeAuth> {
    let line = format!("{}:{}\n", a.0.user, a.0.password);
    crate::files::write_private(&dir.join("users"), line.as_bytes())?;
    Ok(super::config::NodeAuth {
        users: "users".into(),
        tls_only: false,
    })
}

/// SIGKILL, like a machine failing: no flush, no goodbye. Its spool stays as it was.
pub async fn kill_node(n: &mut Node) {
    let _ = n.child.kill().await;
    n.down = true;
}

/// Restarts a killed node on the same spool and the same address (so clients and health checks
/// find it where it was); it recovers its spool before it prints READY.
pub async fn restart_node(n: &mut Node) -> anyhow::Result<()> {
    let cfg_path = n.dir.join("node.yaml");
    let text = std::fs::read_to_string(&cfg_path)?;
    let mut cfg: NodeConfig = serde_norway::from_str(&text)?;
    cfg.listen = n.addr;
    std::fs::write(&cfg_path, serde_norway::to_string(&cfg)?)?;
    // A SIGKILL can leave a torn last event line; end it so the new process's first line is
    // not glued to it (the torn line is then skipped alone, and counted).
    let events = n.dir.join("events.jsonl");
    if let Ok(bytes) = std::fs::read(&events) {
        if bytes.last().is_some_and(|&b| b != b'\n') {
            use std::io::Write as _;
            std::fs::OpenOptions::new()
                .append(true)
                .open(&events)?
                .write_all(b"\n")?;
        }
    }
    let (child, addr) = spawn(&n.dir).await?;
    n.child = child;
    n.addr = addr;
    n.down = false;
    Ok(())
}

/// Starts `mailsurge mta --config <dir>/node.yaml` and waits for READY.
async fn spawn(dir: &Path) -> anyhow::Result<(Child, SocketAddr)> {
    let cfg_path = dir.join("node.yaml");
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("stderr.log"))?;
    let exe = std::env::current_exe().context("cannot find the mailsurge binary")?;
    let mut cmd = Command::new(exe);
    cmd.arg("mta")
        .arg("--config")
        .arg(&cfg_path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(stderr)
        .kill_on_drop(true);
    // A node must not outlive the run, even when the run is SIGKILLed.
    crate::signal::die_with_parent(&mut cmd);
    let mut child = cmd.spawn().context("cannot spawn node process")?;
    let stdout = child.stdout.take().context("node stdout missing")?;
    let mut lines = BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(NODE_START_TIMEOUT, lines.next_line())
        .await
        .context("node did not report READY in time")??
        .with_context(|| format!("node exited before READY; see {}", dir.join("stderr.log").display()))?;
    let addr: SocketAddr = ready
        .strip_prefix(super::READY_PREFIX)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .with_context(|| format!("unexpected node output `{ready}`"))?;
    // Keep draining stdout so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, addr))
}

/// SIGTERM, wait, SIGKILL if needed. Returns whether it exited cleanly.
pub async fn stop_node(n: &mut Node) -> bool {
    if let Ok(Some(_)) = n.child.try_wait() {
        return false;
    }
    if let Some(pid) = n.child.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    match tokio::time::timeout(NODE_STOP_TIMEOUT, n.child.wait()).await {
        Ok(Ok(st)) => st.success(),
        _ => {
            let _ = n.child.kill().await;
            false
        }
    }
}

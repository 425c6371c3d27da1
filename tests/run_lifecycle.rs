//! The run's lifecycle as a user meets it: Ctrl-C / SIGTERM stop a run cleanly with a partial
//! report, a SIGKILLed run takes its node processes along, and `--out` never overwrites a
//! previous run by accident. Real binary, real child processes; the process table is read from
//! /proc.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{bin, mailsurge, processes_mentioning, repo};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `mailsurge run scenarios/smoke.yaml --out DIR --quiet`, with its nodes up.
fn start_run(dir: &Path) -> Child {
    let child = Command::new(bin())
        .args(["run", "scenarios/smoke.yaml", "--quiet", "--out"])
        .arg(dir)
        .current_dir(repo())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn mailsurge run");
    let needle = dir.display().to_string();
    // The run's own command line names the directory too; its nodes make it more than one.
    wait_until("the nodes to start", Duration::from_secs(30), || {
        processes_mentioning(&needle).len() >= 3
    });
    child
}

fn signal(child: &Child, s: Signal) {
    kill(Pid::from_raw(child.id() as i32), s).expect("signal the run");
}

fn wait_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let until = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait().expect("wait") {
            return st;
        }
        assert!(Instant::now() < until, "the run did not exit within {timeout:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sigterm_stops_cleanly_with_an_aborted_report_and_no_process_left() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let mut child = start_run(&dir);
    std::thread::sleep(Duration::from_secs(2));
    signal(&child, Signal::SIGTERM);
    let st = wait_exit(&mut child, Duration::from_secs(60));
    assert_eq!(st.code(), Some(1), "an aborted run exits 1");
    let out = std::io::read_to_string(child.stdout.take().unwrap()).unwrap();
    assert!(out.contains("ABORTED"), "{out}");

    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["verdict"], "aborted");
    let why = summary["reasons"][0].as_str().unwrap();
    assert!(why.contains("stopped by SIGTERM"), "{why}");
    let c = &summary["counts"];
    assert!(
        c["accepted"].as_u64().unwrap() > 0,
        "the partial run did some work: {c}"
    );
    assert_eq!(c["lost"], 0, "a clean stop loses nothing: {c}");
    for f in ["report.md", "report.html", "junit.xml", "run.json", "events.jsonl.zst"] {
        assert!(dir.join(f).is_file(), "{f} written");
    }
    let junit = std::fs::read_to_string(dir.join("junit.xml")).unwrap();
    assert!(junit.contains("run completed"), "{junit}");
    // The spools stay for the record (nodes were ended, not wiped).
    assert!(dir.join("nodes/local-1/spool").is_dir());
    let left = processes_mentioning(&dir.display().to_string());
    assert!(left.is_empty(), "processes of the run left behind: {left:?}");

    // The report re-renders to the same verdict from the directory alone.
    let before = std::fs::read_to_string(dir.join("summary.json")).unwrap();
    let again = mailsurge(&["report", dir.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(1));
    assert_eq!(std::fs::read_to_string(dir.join("summary.json")).unwrap(), before);
}

#[test]
fn a_sigkilled_run_takes_its_nodes_along() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let mut child = start_run(&dir);
    signal(&child, Signal::SIGKILL);
    let _ = child.wait();
    let needle = dir.display().to_string();
    wait_until("the nodes to die with the run", Duration::from_secs(10), || {
        processes_mentioning(&needle).is_empty()
    });
}

#[test]
fn two_signals_stop_at_once_without_orphans() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let mut child = start_run(&dir);
    signal(&child, Signal::SIGINT);
    signal(&child, Signal::SIGINT);
    let st = wait_exit(&mut child, Duration::from_secs(60));
    // 130 when the second signal came before the clean stop was done, 1 when it came after.
    assert!(matches!(st.code(), Some(1 | 130)), "{st:?}");
    let needle = dir.display().to_string();
    wait_until("no process of the run", Duration::from_secs(10), || {
        processes_mentioning(&needle).is_empty()
    });
}

#[test]
fn out_never_overwrites_a_previous_run_by_accident() {
    let tmp = tempfile::tempdir().unwrap();
    let other = tmp.path().join("notes");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("todo.txt"), "keep me").unwrap();
    let run = |dir: &Path, force: bool| {
        let mut args = vec!["run", "scenarios/smoke.yaml", "--duration", "1s", "--quiet", "--out"];
        args.push(dir.to_str().unwrap());
        if force {
            args.push("--force");
        }
        mailsurge(&args)
    };
    // A non-empty directory that is not a run: refused, with or without --force.
    for force in [false, true] {
        let o = run(&other, force);
        assert_eq!(o.status.code(), Some(2), "force {force}: {o:?}");
        assert!(String::from_utf8_lossy(&o.stderr).contains("--out"), "{o:?}");
        assert_eq!(std::fs::read_to_string(other.join("todo.txt")).unwrap(), "keep me");
    }
    // A previous run: refused without --force, replaced with it.
    let prev = tmp.path().join("prev");
    let first = run(&prev, false);
    assert_eq!(first.status.code(), Some(0), "{first:?}");
    let again = run(&prev, false);
    assert_eq!(again.status.code(), Some(2), "{again:?}");
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("--force"),
        "the error says how: {again:?}"
    );
    std::fs::write(prev.join("stale.txt"), "from before").unwrap();
    let forced = run(&prev, true);
    assert_eq!(forced.status.code(), Some(0), "{forced:?}");
    assert!(
        !prev.join("stale.txt").exists(),
        "--force starts from a clean directory"
    );
    assert!(prev.join("summary.json").is_file());
}

//! Process signals and child lifetimes.
//!
//! - [`terminated`]: one future for "stop gracefully" (SIGINT or SIGTERM), shared by the
//!   long-running servers so Ctrl-C and a harness's SIGTERM behave the same.
//! - [`stops`]: the two-step stop of a run: the first signal asks for a clean stop (traffic
//!   and chaos stop, children are ended, a partial report is written); the second ends the
//!   process at once.
//! - [`die_with_parent`]: children get SIGKILL when the process that started them dies, however
//!   it dies (even SIGKILL), so a run never leaves an orphan node listening.

use tokio::sync::watch;

/// Resolves on SIGINT or SIGTERM. If handlers cannot be installed, it never resolves (the
/// process can still be killed), which is safer than stopping at once.
pub async fn terminated() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
}

/// Watches SIGINT and SIGTERM for a run (call inside a runtime). The receiver turns to
/// `Some("SIGINT")` / `Some("SIGTERM")` at the first signal; at the second the process exits at
/// once with 128 + the signal number (its children follow: [`die_with_parent`]).
pub fn stops() -> watch::Receiver<Option<&'static str>> {
    use tokio::signal::unix::{signal, SignalKind};
    let (tx, rx) = watch::channel(None);
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
        // Without handlers the default action (termination) stays, and children still die.
        std::mem::forget(tx);
        return rx;
    };
    tokio::spawn(async move {
        let mut seen = 0;
        loop {
            let (name, code) = tokio::select! {
                _ = int.recv() => ("SIGINT", 128 + 2),
                _ = term.recv() => ("SIGTERM", 128 + 15),
            };
            seen += 1;
            if seen == 1 {
                tx.send_replace(Some(name));
            } else {
                eprintln!("{name} again: stopping at once (no report)");
                std::process::exit(code);
            }
        }
    });
    rx
}

/// Makes a child started by `cmd` receive SIGKILL when this process dies (Linux
/// `PR_SET_PDEATHSIG`). The signal follows the *thread* that forked, so spawn from a thread
/// that lives as long as the child should (tokio's worker threads do; a `spawn_blocking`
/// thread does not).
pub fn die_with_parent(cmd: &mut tokio::process::Command) {
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs between fork and exec in the child and makes only
    // async-signal-safe system calls (prctl, getppid); it allocates nothing on success.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(std::io::Error::from)?;
            // The parent may have died between fork and prctl; then no signal will come.
            if nix::unistd::getppid() != parent {
                return Err(std::io::Error::other("parent exited before the child started"));
            }
            Ok(())
        });
    }
}

/// Sleeps until `t`; `Some(signal)` if `stop` (from [`stops`]) says the run was stopped by hand
/// first, or before.
pub async fn sleep_or_stop(
    stop: &mut Option<watch::Receiver<Option<&'static str>>>,
    t: tokio::time::Instant,
) -> Option<&'static str> {
    let Some(stop) = stop.as_mut() else {
        tokio::time::sleep_until(t).await;
        return None;
    };
    if let Some(s) = *stop.borrow() {
        return Some(s);
    }
    tokio::select! {
        _ = tokio::time::sleep_until(t) => None,
        Ok(_) = stop.changed() => *stop.borrow(),
    }
}

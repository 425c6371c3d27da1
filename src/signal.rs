//! Process signals: one future for "stop gracefully" (SIGINT or SIGTERM), shared by every
//! long-running command so Ctrl-C and a harness's SIGTERM behave the same.

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

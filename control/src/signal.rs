//! The process's stop signals, shared by every long-running command (control plane, edge,
//! connector, quickstart).

/// Resolves at the first SIGTERM or SIGINT. If SIGTERM cannot be watched, only SIGINT stops
/// the process: it never resolves on its own.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("shutting down");
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down");
}

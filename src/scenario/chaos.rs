//! The `chaos:` section's checks: every step's target exists, each action has the fields it
//! needs, and nothing is timed after the run ends.

use super::check::At;
use super::model::*;
use crate::config::{ConfigError, Source};

/// Targets exist and each action has the fields it needs. The `reply:` text is parsed where
/// the chaos timeline compiles (it needs the SMTP reply grammar).
pub(super) fn check(at: &At, f: &ScenarioFile) -> Result<(), ConfigError> {
    for c in &f.chaos {
        if c.at.0 > f.duration.0 + f.drain.0 {
            return Err(chaos_error(
                at.0,
                c,
                &format!(
                    "`at: {}` is after the run ends ({} traffic + {} drain), so it would never happen",
                    c.at, f.duration, f.drain
                ),
            ));
        }
        let (kind, name) = c.target.split_once('/').unwrap_or((c.target.as_str(), ""));
        let known = match kind {
            // The server `run` started (one named by `nats:` is not the run's to kill).
            "nats" => name.is_empty() && f.mta.spool == SpoolKind::Nats && f.mta.nats.is_none(),
            "region" => f.regions.iter().any(|r| r.name == name),
            "provider" => f.providers.iter().any(|p| p.name == name),
            "node" => super::nodes::is_node(&f.regions, name),
            _ => false,
        };
        if !known {
            return Err(at.err(
                &c.target,
                "chaos",
                format!(
                    "chaos: target `{}` is not a known region/<name>, node/<name>, provider/<name> or nats (the shared queue's server, with spool: nats and no mta: nats:)",
                    c.target
                ),
            ));
        }
        let bad = |msg: String| Err(chaos_error(at.0, c, &msg));
        let provider = f.providers.iter().find(|p| kind == "provider" && p.name == name);
        match c.action {
            ChaosKind::Block | ChaosKind::Latency | ChaosKind::Tls if provider.is_none() => {
                return bad(format!("{:?} applies to provider/<name> targets only", c.action).to_lowercase());
            }
            ChaosKind::Block => match &c.pool {
                None => return bad("block needs `pool:` (the egress pool the provider blocks)".into()),
                Some(pool) if !f.mta.egress_pools.contains_key(pool) => {
                    return bad(format!("pool `{pool}` is not in mta: egress_pools"));
                }
                _ => {}
            },
            ChaosKind::Latency if c.add.is_none() => return bad("latency needs `add:` (e.g. 500ms)".into()),
            ChaosKind::Kill if provider.is_none() && c.mode.is_some() => {
                return bad("`mode:` applies to provider kills only (nodes and nats are SIGKILLed)".into());
            }
            ChaosKind::Tls if !c.mode.is_some_and(KillMode::is_tls) => {
                return bad("tls needs `mode: handshake-fail` or `mode: expired-cert`".into());
            }
            ChaosKind::Kill | ChaosKind::Restore if c.mode.is_some_and(KillMode::is_tls) => {
                return bad("`mode: handshake-fail` and `expired-cert` belong to the `tls` action".into());
            }
            _ => {}
        }
        if let Some(mx) = c.mx {
            if provider.is_none_or(|p| mx == 0 || mx > p.mx) {
                return bad(format!("mx {mx} is not an MX of the target (1..=its `mx:`)"));
            }
        }
    }
    Ok(())
}

/// An error about one chaos action, at its target in the `chaos:` section. Public so the
/// chaos timeline reports what it checks (the `reply:` grammar) in the same words.
pub fn chaos_error(src: &Source, c: &ChaosAction, msg: &str) -> ConfigError {
    src.error_at(
        &c.target,
        src.top_key_line("chaos"),
        format!("chaos: {} at {}: {msg}", c.target, c.at),
    )
}

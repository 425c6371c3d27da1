//! The bounce a node with `dsn: true` mails to a message's envelope sender when recipients
//! fail for good: an RFC 3464 report ([`crate::dsn::Notice`]) wrapped as a new spooled
//! message from the null sender. Spooling and sending it is the queue's business.

use super::config::NodeConfig;
use super::job::Job;
use super::spool::Meta;
use crate::dsn::{Action, Notice, RecipientStatus};
use crate::events::now_ns;
use crate::smtp::Reply;

/// The envelope and bytes of a bounce for `rcpts` of `job`, which failed with `reply`.
/// `status` overrides the reply's enhanced code (e.g. 4.4.7 for an expiry); empty = the reply's
/// own, or its class (`5.0.0`).
pub fn bounce(cfg: &NodeConfig, job: &Job, rcpts: &[String], reply: &Reply, status: &str) -> (Meta, Vec<u8>) {
    let status = match (status, reply.enhanced.as_deref()) {
        ("", Some(e)) => e.to_string(),
        ("", None) => format!("{}.0.0", reply.code / 100),
        (s, _) => s.to_string(),
    };
    let remote = cfg
        .route(&job.domain)
        .and_then(|r| r.get(job.route_idx))
        .map(|a| a.ip().to_string());
    let recipients: Vec<RecipientStatus> = rcpts
        .iter()
        .map(|r| RecipientStatus {
            recipient: r.clone(),
            action: Action::Failed,
            status: status.clone(),
            diagnostic: Some(reply.to_string()),
            remote_mta: remote.clone(),
        })
        .collect();
    let unique = format!(
        "{}{}{:x}.{}",
        cfg.node,
        crate::events::NOTICE_ID_MARK,
        job.spool_id,
        now_ns()
    );
    let host = format!("{}.mailsurge.test", cfg.node);
    let body = Notice {
        reporting_mta: &host,
        to: &job.meta.from,
        arrival_ns: job.meta.received_ns,
        recipients: &recipients,
        original: &job.body,
        unique: &unique,
    }
    .render(now_ns());
    let meta = Meta {
        msg_id: unique,
        from: String::new(),
        rcpts: vec![job.meta.from.clone()],
        received_ns: now_ns(),
    };
    (meta, body)
}

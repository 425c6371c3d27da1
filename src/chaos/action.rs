//! Chaos actions compiled from the plan: the target split into kind and name, the `block`
//! reply parsed, ready for the levers — and described two ways, as the human label charts show
//! and as the typed fields a `fault` event carries for measurement.

use std::time::Duration;

use crate::config::ConfigError;
use crate::events::{Fault, TargetKind};
use crate::scenario::{chaos_error, ChaosAction, ChaosKind, KillMode, Scenario};
use crate::smtp::Reply;
use crate::units::Dur;

/// What a `block` answers when the scenario gives no `reply:`: an RBL refusal, which the
/// shipped response table reroutes to another pool.
pub const DEFAULT_BLOCK_REPLY: &str = "554 5.7.1 Service unavailable; Client host blocked using zen.spamhaus.org";

/// What an action acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub kind: TargetKind,
    pub name: String,
}

impl Target {
    /// `region/<name>`, `node/<name>`, `provider/<name>` or `nats`; the plan has checked the
    /// form.
    fn parse(s: &str) -> Target {
        let (kind, name) = s.split_once('/').unwrap_or((s, s));
        Target {
            kind: TargetKind::parse(kind),
            name: name.to_string(),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            TargetKind::Nats => f.write_str("nats"),
            k => write!(f, "{}/{}", k.as_str(), self.name),
        }
    }
}

/// One chaos action, as the levers pull it.
#[derive(Debug, Clone)]
pub struct Action {
    pub at: Duration,
    pub verb: ChaosKind,
    pub target: Target,
    pub mode: Option<KillMode>,
    pub pool: Option<String>,
    /// `block`: the reply the provider gives the blocked pool.
    pub reply: Reply,
    pub add: Option<Dur>,
    pub mx: Option<u32>,
    pub for_: Option<Dur>,
}

/// Compiles the scenario's chaos actions, in scenario order (`fault.<n>` is the index). A bad
/// `reply:` is reported at its action's target, `file:line:col`, like the plan's own checks.
pub fn compile(s: &Scenario) -> Result<Vec<Action>, ConfigError> {
    s.file
        .chaos
        .iter()
        .map(|c| Action::compile(c).map_err(|e| chaos_error(&s.source, c, &format!("reply: {e}"))))
        .collect()
}

impl Action {
    /// One action; `Err` is the reply grammar's complaint.
    pub fn compile(c: &ChaosAction) -> Result<Action, String> {
        Ok(Action {
            at: c.at.0,
            verb: c.action,
            target: Target::parse(&c.target),
            mode: c.mode,
            pool: c.pool.clone(),
            reply: Reply::parse_spec(c.reply.as_deref().unwrap_or(DEFAULT_BLOCK_REPLY))?,
            add: c.add,
            mx: c.mx,
            for_: c.for_,
        })
    }

    fn verb_str(&self) -> &'static str {
        match self.verb {
            ChaosKind::Kill => "kill",
            ChaosKind::Restore => "restore",
            ChaosKind::Block => "block",
            ChaosKind::Latency => "latency",
            ChaosKind::Tls => "tls",
        }
    }

    fn mode_str(&self) -> Option<String> {
        self.mode.map(|m| m.as_str().to_string())
    }

    /// Human form of an action: the event's `text`, the chart label and the run log line.
    pub fn describe(&self) -> String {
        let mut s = format!("{} {}", self.verb_str(), self.target);
        if let Some(mx) = self.mx {
            s.push_str(&format!(" mx{mx}"));
        }
        if let Some(m) = self.mode_str() {
            s.push_str(&format!(" {m}"));
        }
        if let Some(p) = &self.pool {
            s.push_str(&format!(" pool {p}"));
        }
        if let Some(d) = self.add {
            s.push_str(&format!(" +{d}"));
        }
        if let Some(d) = self.for_ {
            s.push_str(&format!(" for {d}"));
        }
        s
    }

    /// The typed fields its `fault` and `fault_end` events carry.
    pub fn fault(&self) -> Fault {
        Fault {
            action: self.verb_str().to_string(),
            target_kind: self.target.kind,
            target: self.target.name.clone(),
            mode: self.mode_str(),
            pool: self.pool.clone(),
            mx: self.mx,
            add: self.add.map(|d| d.to_string()),
        }
    }
}

/// An action from one line of scenario YAML, for tests.
#[cfg(test)]
pub(crate) fn from_yaml(yaml: &str) -> Action {
    Action::compile(&serde_norway::from_str(yaml).unwrap()).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::from_yaml as action;

    #[test]
    fn label_and_typed_fields_agree() {
        let a = action("{ at: 1s, action: kill, target: provider/yahoo, mode: refuse, mx: 1 }");
        assert_eq!(a.describe(), "kill provider/yahoo mx1 refuse");
        let f = a.fault();
        assert_eq!(
            (f.action.as_str(), f.target_kind, f.target.as_str()),
            ("kill", TargetKind::Provider, "yahoo")
        );
        assert_eq!((f.mode.as_deref(), f.mx), (Some("refuse"), Some(1)));
        // Old runs' text reads back to the same fields.
        let mut e = crate::events::Event::new(0, "fault.0", crate::events::Kind::Fault);
        e.text = Some(a.describe());
        assert_eq!(Fault::from_legacy_text(&e), f);
        let l = action("{ at: 1s, action: latency, target: provider/gmail, add: 500ms, for: 10s }");
        e.text = Some(l.describe());
        assert_eq!(Fault::from_legacy_text(&e), l.fault());
    }

    #[test]
    fn bad_reply_is_refused() {
        let c: ChaosAction =
            serde_norway::from_str("{ at: 1s, action: block, target: provider/x, pool: p, reply: \"hello\" }").unwrap();
        assert!(Action::compile(&c).is_err());
    }
}

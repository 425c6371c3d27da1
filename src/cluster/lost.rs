//! The coordinator's own events: the `fault` of an agent that stopped answering, written to
//! the run like any node's events so the charts and the fault table show it.

use anyhow::Context as _;

use crate::events::{Event, Fault, Kind, TargetKind};

/// The coordinator's own events: agents lost.
pub(super) struct OwnEvents {
    w: std::io::BufWriter<std::fs::File>,
}

impl OwnEvents {
    pub(super) fn open(path: &std::path::Path) -> anyhow::Result<OwnEvents> {
        let f = std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(OwnEvents {
            w: std::io::BufWriter::new(f),
        })
    }

    /// The `fault` of agent `name` going dark at `t_ns`: the `n`-th agent lost.
    pub(super) fn fault(&mut self, t_ns: u64, n: usize, name: &str) -> anyhow::Result<()> {
        use std::io::Write as _;
        let mut e = Event::new(t_ns, format!("fault.agent.{n}"), Kind::Fault);
        e.text = Some(format!("lost agent/{name}"));
        e.fault = Some(Box::new(Fault {
            action: "lost".into(),
            target_kind: TargetKind::Agent,
            target: name.to_string(),
            mode: None,
            pool: None,
            mx: None,
            add: None,
        }));
        let mut line = Vec::new();
        crate::events::write_line(&mut line, &e)?;
        self.w.write_all(&line)?;
        self.w.flush()?;
        Ok(())
    }
}

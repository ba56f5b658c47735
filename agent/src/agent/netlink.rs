//! rtnetlink events, handled at once: a new interface the policy wants
//! enforced gets its map entry and then its program, without waiting for a
//! reconcile; a vanished one loses its link and entry.
//!
//! Invariant: an interface's entry is written before its program is
//! attached (the programs treat an interface with no entry as blocked, so a
//! program before its entry holds back too much, never too little).

use chrono::{DateTime, SubsecRound as _, Utc};
use tracing::info;

use super::{
    core::{AfterLinkEvent, Agent, AgentError},
    reconcile::warn_placement,
};
use crate::{
    desired::target,
    netdev::{LinkEvent, NetDev},
};

impl Agent {
    /// Handles one rtnetlink event at once, without a full reconcile: a
    /// new interface the policy wants enforced gets its map entry and its
    /// program now; a vanished one loses its link and entry (its VM's
    /// counters stay).
    pub fn on_link_event(
        &mut self,
        event: LinkEvent,
        now: DateTime<Utc>,
    ) -> Result<AfterLinkEvent, AgentError> {
        match event {
            LinkEvent::New(dev) => self.on_new_link(&dev, now),
            LinkEvent::Del { index, name } => {
                self.known.remove(&index);
                let mut changed = self.datapath.detach_interface(index)?;
                changed |= self.datapath.maps.remove_interface(index)?;
                if self.state.interfaces.remove(&index).is_some() || changed {
                    info!(
                        ifindex = index,
                        interface = name.as_deref().unwrap_or("?"),
                        "interface gone; took the program off"
                    );
                    self.save()?;
                }
                Ok(AfterLinkEvent::Done)
            }
        }
    }

    pub(super) fn on_new_link(
        &mut self,
        dev: &NetDev,
        now: DateTime<Utc>,
    ) -> Result<AfterLinkEvent, AgentError> {
        let previous = self.known.insert(dev.index, dev.name.clone());
        let created = previous.is_none();
        let renamed = previous.is_some_and(|old| old != dev.name);
        let Some(verdicts) = &self.verdicts else {
            return Ok(AfterLinkEvent::Reconcile);
        };
        let Some(target) = target(&self.policy, verdicts, dev) else {
            // Not ours, or no longer ours under its new name.
            return Ok(if renamed {
                AfterLinkEvent::Reconcile
            } else {
                AfterLinkEvent::Done
            });
        };
        if !created && !renamed && self.state.interfaces.contains_key(&dev.index) {
            // Up/down or another attribute: nothing changes for us.
            return Ok(AfterLinkEvent::Done);
        }
        if created {
            // Rule 3: a new interface is the VM stopped and started.
            // Whole seconds, rounded down: never later than the creation.
            let at = now.trunc_subsecs(0);
            self.state.interface_created.insert(dev.name.clone(), at);
            self.created.insert(dev.name.clone(), at);
            self.stale = true;
        }
        self.datapath.maps.set_interface(dev.index, target.entry)?;
        let hook = self
            .datapath
            .enforce(dev.index, &dev.name, target.hook)
            .inspect_err(|_| self.stats.attach_failures += 1)?;
        info!(
            interface = %dev.name,
            ifindex = dev.index,
            hook = %hook,
            vm = target.record.vm.as_deref().unwrap_or("-"),
            verdict = %target.record.verdict,
            "new interface enforced"
        );
        warn_placement(&target);
        let mut record = target.record;
        record.hook = hook;
        self.state.interfaces.insert(dev.index, record);
        self.save()?;
        Ok(AfterLinkEvent::Reconcile)
    }
}

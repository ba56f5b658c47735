//! A changed policy file, read VM by VM when it can be.
//!
//! An operator (or a generator) usually changes a few VMs of a large file,
//! and the rest of it stays byte for byte what it was. When the policy in
//! force was read by [`fast`] (so its text and where each VM is in it are
//! kept, [`Source`]), [`Policy::update`] compares the new text with the old
//! one from both ends: if everything that differs lies within the list of
//! VMs, only the VMs it touches are read (with [`fast::read_items`]),
//! validated, and put in place of the old ones. Anything else (a change to
//! the settings, the subscriptions or the offers, a VM that does not read
//! plainly, a duplicate name or interface, any error) reads the whole file
//! as at the start, so what is accepted, and every diagnostic, is what a
//! full read gives.
//!
//! A running agent does the costly part off its event loop ([`prepare`]:
//! the comparison, and a whole read), and only puts a small change in
//! place on the loop ([`Policy::apply`]): at most [`MAX_SPLICE`] bytes of
//! VMs are read there.

use std::{collections::HashSet, path::Path, sync::Arc};

use super::{
    error::PolicyError,
    fast,
    keys::sha256_hex,
    model::{Policy, Vm},
    read::from_vec_hashed,
    source::{Layout, Source},
    validate::{Checker, SubNames, check_vm, resolve_subscriptions},
};

/// The most bytes of changed VMs put in place on the agent's event loop; a
/// larger change is read whole, off the loop.
pub const MAX_SPLICE: usize = 1 << 20;

/// What [`Policy::update`] changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// `removed` VMs from index `at` were replaced by `added` VMs; nothing
    /// else changed.
    Vms {
        at: usize,
        removed: usize,
        added: usize,
    },
    /// The whole file was read again.
    Whole,
}

/// What a read of a new version of the file needs of the policy in force;
/// cheap to clone, and to send to another thread.
#[derive(Clone, Debug)]
pub struct Base {
    hash: String,
    /// The hash of a version already rejected.
    rejected: Option<String>,
    source: Option<Arc<Source>>,
}

/// A version of the policy file, compared with the policy in force and,
/// unless only a few VMs changed, read whole.
#[derive(Debug)]
pub enum Prepared {
    /// The bytes of the policy in force.
    InForce,
    /// The bytes of the version already rejected.
    Rejected,
    /// Only VMs changed, few enough to be put in place by [`Policy::apply`].
    Splice {
        bytes: Vec<u8>,
        hash: String,
        plan: Plan,
        against: Arc<Source>,
    },
    /// Read whole.
    Whole {
        hash: String,
        result: Result<Box<Policy>, PolicyError>,
    },
}

/// What [`Policy::apply`] did with a [`Prepared`] version.
#[derive(Debug)]
pub enum Applied {
    /// It is the policy in force (nothing changed).
    InForce,
    /// It is the version already rejected.
    Rejected,
    /// It is in force now.
    Changed { hash: String, change: Change },
    /// It is invalid; the policy in force stays.
    Invalid { hash: String, error: PolicyError },
    /// The change could not be put in place: read these bytes whole
    /// ([`prepare`] with no base) and apply that.
    ReadWhole { bytes: Vec<u8>, hash: String },
}

/// Off the event loop: compares `bytes` (the file at `path` now) with the
/// policy in force (`base`, or none to read the bytes whole) and reads them
/// whole unless only a few VMs changed.
pub fn prepare(path: &Path, bytes: Vec<u8>, base: Option<&Base>) -> Prepared {
    let hash = sha256_hex(&bytes);
    if let Some(base) = base {
        if hash == base.hash {
            return Prepared::InForce;
        }
        if base.rejected.as_deref() == Some(hash.as_str()) {
            return Prepared::Rejected;
        }
        if let Some(source) = &base.source
            && let Some(layout) = &source.layout
            && let Some(plan) = plan(&source.text, layout, &bytes)
            && plan.to_new - plan.from <= MAX_SPLICE
        {
            return Prepared::Splice {
                bytes,
                hash,
                plan,
                against: Arc::clone(source),
            };
        }
    }
    let result = from_vec_hashed(path, bytes, Some(hash.clone())).map(Box::new);
    Prepared::Whole { hash, result }
}

impl Policy {
    /// What a read of the next version needs; `rejected` is the hash of a
    /// version already rejected.
    pub fn base(&self, rejected: Option<&str>) -> Base {
        Base {
            hash: self.hash.clone(),
            rejected: rejected.map(str::to_owned),
            source: self.source.clone(),
        }
    }

    /// Makes a [`Prepared`] version the policy in force when it is valid.
    /// Costs at most [`MAX_SPLICE`] bytes of VMs read.
    pub fn apply(&mut self, prepared: Prepared) -> Applied {
        match prepared {
            Prepared::InForce => Applied::InForce,
            Prepared::Rejected => Applied::Rejected,
            Prepared::Whole { hash, result } => match result {
                Ok(policy) => {
                    *self = *policy;
                    Applied::Changed {
                        hash,
                        change: Change::Whole,
                    }
                }
                Err(error) => Applied::Invalid { hash, error },
            },
            Prepared::Splice {
                bytes,
                hash,
                plan,
                against,
            } => {
                let current = self
                    .source
                    .as_ref()
                    .is_some_and(|s| Arc::ptr_eq(s, &against));
                drop(against);
                let tried = if current {
                    self.splice_planned(bytes, &hash, plan)
                } else {
                    Err(bytes)
                };
                match tried {
                    Ok(change) => Applied::Changed { hash, change },
                    Err(bytes) => Applied::ReadWhole { bytes, hash },
                }
            }
        }
    }

    /// Makes this the policy of the file at `path` whose bytes are now
    /// `bytes` (sha256 `hash`): only the VMs that changed when the change is
    /// within the list of VMs, otherwise the whole file. On an error the
    /// policy is left as it was.
    pub fn update(
        &mut self,
        path: &Path,
        bytes: Vec<u8>,
        hash: String,
    ) -> Result<Change, PolicyError> {
        let bytes = match self.splice(bytes, &hash) {
            Ok(change) => return Ok(change),
            Err(bytes) => bytes,
        };
        *self = from_vec_hashed(path, bytes, Some(hash))?;
        Ok(Change::Whole)
    }

    /// Puts the VMs that changed in place, or gives the bytes back.
    fn splice(&mut self, bytes: Vec<u8>, hash: &str) -> Result<Change, Vec<u8>> {
        let Some(source) = &self.source else {
            return Err(bytes);
        };
        let Some(layout) = &source.layout else {
            return Err(bytes);
        };
        let Some(plan) = plan(&source.text, layout, &bytes) else {
            return Err(bytes);
        };
        self.splice_planned(bytes, hash, plan)
    }

    /// Puts the VMs of `plan` (made against the source in force) in place,
    /// or gives the bytes back.
    fn splice_planned(
        &mut self,
        bytes: Vec<u8>,
        hash: &str,
        plan: Plan,
    ) -> Result<Change, Vec<u8>> {
        let Some(source) = &self.source else {
            return Err(bytes);
        };
        let Some(layout) = &source.layout else {
            return Err(bytes);
        };
        let text = match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => return Err(e.into_bytes()),
        };
        let Some(items) = fast::read_items(&text, plan.from, plan.to_new, layout.column as usize)
        else {
            return Err(text.into_bytes());
        };
        let (item_starts, raws): (Vec<usize>, Vec<_>) = items.into_iter().unzip();
        // Validate the new VMs as a full read would; any problem: a full
        // read, which reports it where it is.
        let mut c = Checker::default();
        let mut names = SubNames::default();
        let mut vms: Vec<Vm> = raws
            .into_iter()
            .enumerate()
            .map(|(j, raw)| check_vm(&mut c, &mut names, plan.first + j, raw))
            .collect();
        resolve_subscriptions(&mut c, &mut vms, &names, plan.first, &self.subscriptions);
        if !c.issues.is_empty() {
            return Err(text.into_bytes());
        }
        let replaced = plan.first..plan.first + plan.count;
        let mut new_names: HashSet<&str> = HashSet::with_capacity(vms.len());
        let mut new_interfaces: HashSet<&str> = HashSet::with_capacity(vms.len());
        for vm in &vms {
            let clashes = |found: Option<usize>| found.is_some_and(|i| !replaced.contains(&i));
            if clashes(self.vm_index_by_name(&vm.name))
                || clashes(self.vm_index_by_interface(&vm.interface))
                || !new_names.insert(&vm.name)
                || !new_interfaces.insert(&vm.interface)
            {
                return Err(text.into_bytes());
            }
        }
        drop((new_names, new_interfaces));

        // Valid: put them in place.
        let added = vms.len();
        // Offsets after the new part move by the difference in length
        // (never below the end of the new part).
        let (new_len, old_len) = (text.len(), source.text.len());
        let shifted = |x: u32| (x as usize + new_len - old_len) as u32;
        let mut layout = layout.clone();
        let tail: Vec<u32> = layout.starts[replaced.end..]
            .iter()
            .map(|&x| shifted(x))
            .collect();
        layout.starts.truncate(plan.first);
        layout
            .starts
            .extend(item_starts.iter().map(|&start| start as u32));
        layout.starts.extend(tail);
        layout.end = shifted(layout.end);

        for i in replaced.clone() {
            self.index.remove(&self.vms, i);
        }
        self.index.shift(replaced.end, added, plan.count);
        self.vms.splice(replaced, vms);
        for i in plan.first..plan.first + added {
            self.index.insert(&self.vms, i);
        }
        self.source = Some(Arc::new(Source {
            text,
            layout: Some(layout),
        }));
        hash.clone_into(&mut self.hash);
        Ok(Change::Vms {
            at: plan.first,
            removed: plan.count,
            added,
        })
    }
}

/// Which VMs a change touches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The first VM touched, and how many.
    first: usize,
    count: usize,
    /// Where they are in the new text: `from` (the start of the first's
    /// line, the same in both texts) to `to_new`.
    from: usize,
    to_new: usize,
}

/// The VMs that the difference between the old text and `new` lies in, if
/// it lies within the list of VMs.
fn plan(old: &str, layout: &Layout, new: &[u8]) -> Option<Plan> {
    let old = old.as_bytes();
    let starts = &layout.starts;
    let first_start = *starts.first()? as usize;
    let list_end = layout.end as usize;
    let prefix = old.iter().zip(new).take_while(|(a, b)| a == b).count();
    let longest = old.len().min(new.len()) - prefix;
    let suffix = old
        .iter()
        .rev()
        .zip(new.iter().rev())
        .take(longest)
        .take_while(|(a, b)| a == b)
        .count();
    // What differs is old[prefix..old_to] and new[prefix..].
    let old_to = old.len() - suffix;
    if prefix < first_start || old_to > list_end {
        return None;
    }
    // The VM the difference starts in (and the one before it: lines added
    // at the start of a VM may be fields of the one before, as the end of a
    // VM and the start of the next look alike), and the one it ends in.
    let within = starts.partition_point(|&s| s as usize <= prefix) - 1;
    let first = within.saturating_sub(1);
    let last = if old_to > prefix {
        starts.partition_point(|&s| (s as usize) < old_to) - 1
    } else {
        within
    };
    let end_old = starts.get(last + 1).map_or(list_end, |&s| s as usize);
    let to_new = new.len() - (old.len() - end_old);
    let from = starts[first] as usize;
    // The new part ends where a line does (or the text does): the line
    // after it is the one after the old part.
    if from == 0 || to_new < from || to_new < new.len() && new[to_new - 1] != b'\n' {
        return None;
    }
    Some(Plan {
        first,
        count: last + 1 - first,
        from,
        to_new,
    })
}

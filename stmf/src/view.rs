//! Host groups, target groups and view entries, and the LUN map they produce for an I_T
//! nexus. Pure data: no locks, no providers; the core wraps it.
//!
//! Rules (COMSTAR's, with its conflict checks made explicit): an initiator is in at most one
//! host group and a target in at most one target group; a view entry maps an LU to a LUN for a
//! host group (or all hosts) and a target group (or all targets). Two entries *overlap* when
//! some initiator/target pair could match both. Overlapping entries of the same LU conflict (the
//! LU would appear twice), and overlapping entries of different LUs must not share a LUN.

use crate::error::{ErrorKind, Result, StmfError};
use crate::types::{CoreConfig, GroupInfo, Guid, ViewEntry};
use std::collections::{BTreeMap, BTreeSet};

/// Highest LUN (14-bit flat addressing).
pub const MAX_LUN: u16 = 16383;
const MAX_NAME: usize = 255;

/// The access-control model.
#[derive(Debug, Default, Clone)]
pub struct ViewStore {
    host_groups: BTreeMap<String, BTreeSet<String>>,
    target_groups: BTreeMap<String, BTreeSet<String>>,
    views: BTreeMap<Guid, Vec<ViewEntry>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum GroupKind {
    Host,
    Target,
}

impl GroupKind {
    fn noun(self) -> &'static str {
        match self {
            GroupKind::Host => "host group",
            GroupKind::Target => "target group",
        }
    }
}

fn check_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > MAX_NAME
        || name.chars().any(|c| c.is_control() || c.is_whitespace())
        || name == "*"
    {
        return Err(StmfError::invalid(format!(
            "invalid {what} {name:?}: 1 to {MAX_NAME} printable characters without spaces, not \"*\""
        )));
    }
    Ok(())
}

fn overlaps(a: &ViewEntry, b_hg: &Option<String>, b_tg: &Option<String>) -> bool {
    let h = a.host_group.is_none() || b_hg.is_none() || a.host_group == *b_hg;
    let t = a.target_group.is_none() || b_tg.is_none() || a.target_group == *b_tg;
    h && t
}

fn group_label(g: &Option<String>, all: &str) -> String {
    g.clone().unwrap_or_else(|| all.to_string())
}

impl ViewStore {
    fn groups(&self, k: GroupKind) -> &BTreeMap<String, BTreeSet<String>> {
        match k {
            GroupKind::Host => &self.host_groups,
            GroupKind::Target => &self.target_groups,
        }
    }

    fn groups_mut(&mut self, k: GroupKind) -> &mut BTreeMap<String, BTreeSet<String>> {
        match k {
            GroupKind::Host => &mut self.host_groups,
            GroupKind::Target => &mut self.target_groups,
        }
    }

    fn create_group(&mut self, k: GroupKind, name: &str) -> Result<()> {
        check_name(k.noun(), name)?;
        if self.groups(k).contains_key(name) {
            return Err(StmfError::exists(format!(
                "{} {name} already exists",
                k.noun()
            )));
        }
        self.groups_mut(k).insert(name.to_string(), BTreeSet::new());
        Ok(())
    }

    fn delete_group(&mut self, k: GroupKind, name: &str) -> Result<()> {
        if !self.groups(k).contains_key(name) {
            return Err(StmfError::not_found(format!(
                "{} {name} does not exist",
                k.noun()
            )));
        }
        let users = self
            .views
            .values()
            .flatten()
            .filter(|e| match k {
                GroupKind::Host => e.host_group.as_deref() == Some(name),
                GroupKind::Target => e.target_group.as_deref() == Some(name),
            })
            .count();
        if users > 0 {
            return Err(StmfError::busy(format!(
                "{} {name} is used by {users} view entries; remove them first",
                k.noun()
            )));
        }
        self.groups_mut(k).remove(name);
        Ok(())
    }

    fn add_member(&mut self, k: GroupKind, group: &str, member: &str) -> Result<()> {
        check_name("member name", member)?;
        if !self.groups(k).contains_key(group) {
            return Err(StmfError::not_found(format!(
                "{} {group} does not exist",
                k.noun()
            )));
        }
        if let Some((g, _)) = self.groups(k).iter().find(|(_, m)| m.contains(member)) {
            return Err(StmfError::exists(format!(
                "{member} is already a member of {} {g}",
                k.noun()
            )));
        }
        if let Some(m) = self.groups_mut(k).get_mut(group) {
            m.insert(member.to_string());
        }
        Ok(())
    }

    fn remove_member(&mut self, k: GroupKind, group: &str, member: &str) -> Result<()> {
        let noun = k.noun();
        let m = self
            .groups_mut(k)
            .get_mut(group)
            .ok_or_else(|| StmfError::not_found(format!("{noun} {group} does not exist")))?;
        if !m.remove(member) {
            return Err(StmfError::not_found(format!(
                "{member} is not a member of {noun} {group}"
            )));
        }
        Ok(())
    }

    fn list_groups(&self, k: GroupKind) -> Vec<GroupInfo> {
        self.groups(k)
            .iter()
            .map(|(n, m)| GroupInfo {
                name: n.clone(),
                members: m.iter().cloned().collect(),
            })
            .collect()
    }

    /// Creates a host group.
    pub fn create_hg(&mut self, name: &str) -> Result<()> {
        self.create_group(GroupKind::Host, name)
    }
    /// Deletes a host group (Busy while view entries use it).
    pub fn delete_hg(&mut self, name: &str) -> Result<()> {
        self.delete_group(GroupKind::Host, name)
    }
    /// Adds an initiator to a host group.
    pub fn add_hg_member(&mut self, group: &str, member: &str) -> Result<()> {
        self.add_member(GroupKind::Host, group, member)
    }
    /// Removes an initiator from a host group.
    pub fn remove_hg_member(&mut self, group: &str, member: &str) -> Result<()> {
        self.remove_member(GroupKind::Host, group, member)
    }
    /// Lists host groups.
    pub fn list_hg(&self) -> Vec<GroupInfo> {
        self.list_groups(GroupKind::Host)
    }
    /// Creates a target group.
    pub fn create_tg(&mut self, name: &str) -> Result<()> {
        self.create_group(GroupKind::Target, name)
    }
    /// Deletes a target group.
    pub fn delete_tg(&mut self, name: &str) -> Result<()> {
        self.delete_group(GroupKind::Target, name)
    }
    /// Adds a target to a target group.
    pub fn add_tg_member(&mut self, group: &str, member: &str) -> Result<()> {
        self.add_member(GroupKind::Target, group, member)
    }
    /// Removes a target from a target group.
    pub fn remove_tg_member(&mut self, group: &str, member: &str) -> Result<()> {
        self.remove_member(GroupKind::Target, group, member)
    }
    /// Lists target groups.
    pub fn list_tg(&self) -> Vec<GroupInfo> {
        self.list_groups(GroupKind::Target)
    }

    /// Adds a view entry; `lun: None` picks the lowest LUN free for every overlapping entry.
    pub fn add_view(
        &mut self,
        guid: Guid,
        host_group: Option<&str>,
        target_group: Option<&str>,
        lun: Option<u16>,
    ) -> Result<ViewEntry> {
        let hg = host_group.map(str::to_string);
        let tg = target_group.map(str::to_string);
        if let Some(h) = &hg {
            if !self.host_groups.contains_key(h) {
                return Err(StmfError::not_found(format!(
                    "host group {h} does not exist"
                )));
            }
        }
        if let Some(t) = &tg {
            if !self.target_groups.contains_key(t) {
                return Err(StmfError::not_found(format!(
                    "target group {t} does not exist"
                )));
            }
        }
        if let Some(l) = lun {
            if l > MAX_LUN {
                return Err(StmfError::invalid(format!(
                    "LUN {l} out of range 0..={MAX_LUN}"
                )));
            }
        }
        if let Some(same) = self
            .views
            .get(&guid)
            .and_then(|v| v.iter().find(|e| overlaps(e, &hg, &tg)))
        {
            return Err(StmfError::new(
                ErrorKind::Conflict,
                format!(
                    "view entry conflicts with entry {} of LU {guid} (host group {}, target group {}): the LU would be seen twice",
                    same.index,
                    group_label(&same.host_group, "All"),
                    group_label(&same.target_group, "All")
                ),
            ));
        }
        let used: BTreeSet<u16> = self
            .views
            .values()
            .flatten()
            .filter(|e| overlaps(e, &hg, &tg))
            .map(|e| e.lun)
            .collect();
        let lun = match lun {
            Some(l) if used.contains(&l) => {
                let other = self
                    .views
                    .values()
                    .flatten()
                    .find(|e| e.lun == l && overlaps(e, &hg, &tg))
                    .map(|e| e.guid.to_string())
                    .unwrap_or_default();
                return Err(StmfError::new(
                    ErrorKind::Conflict,
                    format!(
                        "LUN {l} is already used by LU {other} for overlapping hosts and targets"
                    ),
                ));
            }
            Some(l) => l,
            None => (0..=MAX_LUN)
                .find(|l| !used.contains(l))
                .ok_or_else(|| StmfError::new(ErrorKind::Conflict, "no free LUN left"))?,
        };
        let entries = self.views.entry(guid).or_default();
        let index = entries.iter().map(|e| e.index + 1).max().unwrap_or(0);
        let e = ViewEntry {
            guid,
            index,
            host_group: hg,
            target_group: tg,
            lun,
        };
        entries.push(e.clone());
        Ok(e)
    }

    /// Removes one view entry.
    pub fn remove_view(&mut self, guid: Guid, index: u32) -> Result<()> {
        let v = self
            .views
            .get_mut(&guid)
            .ok_or_else(|| StmfError::not_found(format!("LU {guid} has no view entries")))?;
        let before = v.len();
        v.retain(|e| e.index != index);
        if v.len() == before {
            return Err(StmfError::not_found(format!(
                "LU {guid} has no view entry {index}"
            )));
        }
        if v.is_empty() {
            self.views.remove(&guid);
        }
        Ok(())
    }

    /// Removes every view entry of an LU, returning how many there were.
    pub fn remove_all_views(&mut self, guid: Guid) -> usize {
        self.views.remove(&guid).map_or(0, |v| v.len())
    }

    /// The view entries of an LU.
    pub fn list_view(&self, guid: Guid) -> Vec<ViewEntry> {
        self.views.get(&guid).cloned().unwrap_or_default()
    }

    /// Number of view entries of an LU.
    pub fn view_count(&self, guid: Guid) -> usize {
        self.views.get(&guid).map_or(0, Vec::len)
    }

    fn group_of<'a>(
        groups: &'a BTreeMap<String, BTreeSet<String>>,
        member: &str,
    ) -> Option<&'a str> {
        groups
            .iter()
            .find(|(_, m)| m.contains(member))
            .map(|(g, _)| g.as_str())
    }

    /// The LUN map of the nexus (initiator, target): `(lun, guid)` sorted by LUN.
    ///
    /// The initiator name is matched without an iSCSI `,i,0x<ISID>` suffix.
    pub fn lun_map(&self, initiator: &str, target: &str) -> Vec<(u16, Guid)> {
        let initiator = initiator.split(",i,").next().unwrap_or(initiator);
        let hg = Self::group_of(&self.host_groups, initiator);
        let tg = Self::group_of(&self.target_groups, target);
        let mut m: Vec<(u16, Guid)> = self
            .views
            .values()
            .flatten()
            .filter(|e| e.host_group.is_none() || e.host_group.as_deref() == hg)
            .filter(|e| e.target_group.is_none() || e.target_group.as_deref() == tg)
            .map(|e| (e.lun, e.guid))
            .collect();
        m.sort();
        m.dedup_by_key(|e| e.0);
        m
    }

    /// The LUN map of a nexus whose initiator name is not proven: only the entries for
    /// all host groups (and the target's groups), `(lun, guid)` sorted by LUN.
    pub fn lun_map_any_host(&self, target: &str) -> Vec<(u16, Guid)> {
        let tg = Self::group_of(&self.target_groups, target);
        let mut m: Vec<(u16, Guid)> = self
            .views
            .values()
            .flatten()
            .filter(|e| e.host_group.is_none())
            .filter(|e| e.target_group.is_none() || e.target_group.as_deref() == tg)
            .map(|e| (e.lun, e.guid))
            .collect();
        m.sort();
        m.dedup_by_key(|e| e.0);
        m
    }

    /// The persisted form (admin-set states are filled in by the core).
    pub fn export(&self) -> CoreConfig {
        CoreConfig {
            host_groups: self.list_hg(),
            target_groups: self.list_tg(),
            views: self.views.values().flatten().cloned().collect(),
            offline_lus: Vec::new(),
            offline_targets: Vec::new(),
        }
    }

    /// Rebuilds a store from its persisted form, with every check of the live commands, so a
    /// hand-edited file cannot smuggle in a conflict.
    pub fn import(cfg: &CoreConfig) -> Result<ViewStore> {
        let mut s = ViewStore::default();
        for g in &cfg.host_groups {
            s.create_hg(&g.name)?;
            for m in &g.members {
                s.add_hg_member(&g.name, m)?;
            }
        }
        for g in &cfg.target_groups {
            s.create_tg(&g.name)?;
            for m in &g.members {
                s.add_tg_member(&g.name, m)?;
            }
        }
        for v in &cfg.views {
            let e = s.add_view(
                v.guid,
                v.host_group.as_deref(),
                v.target_group.as_deref(),
                Some(v.lun),
            )?;
            // Keep the saved index so admins' entry numbers survive a restart.
            if let Some(list) = s.views.get_mut(&v.guid) {
                if let Some(last) = list.iter_mut().find(|x| x.index == e.index) {
                    last.index = v.index;
                }
            }
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(n: u8) -> Guid {
        let mut b = [0u8; 16];
        b[0] = 0x60;
        b[15] = n;
        Guid(b)
    }

    #[test]
    fn all_hosts_all_targets_auto_lun() {
        let mut s = ViewStore::default();
        assert_eq!(s.add_view(g(1), None, None, None).unwrap().lun, 0);
        assert_eq!(s.add_view(g(2), None, None, None).unwrap().lun, 1);
        assert_eq!(s.lun_map("iqn.a", "iqn.t"), vec![(0, g(1)), (1, g(2))]);
    }

    #[test]
    fn host_group_restricts() {
        let mut s = ViewStore::default();
        s.create_hg("hg1").unwrap();
        s.add_hg_member("hg1", "iqn.a").unwrap();
        s.add_view(g(1), Some("hg1"), None, Some(5)).unwrap();
        assert_eq!(
            s.lun_map("iqn.a,i,0x00023d000001", "iqn.t"),
            vec![(5, g(1))]
        );
        assert!(s.lun_map("iqn.b", "iqn.t").is_empty());
        // same LUN for another host group is fine, for all hosts it conflicts
        s.create_hg("hg2").unwrap();
        s.add_view(g(2), Some("hg2"), None, Some(5)).unwrap();
        let e = s.add_view(g(3), None, None, Some(5)).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Conflict);
        // auto LUN skips 5 for all-hosts entries
        assert_eq!(s.add_view(g(3), None, None, None).unwrap().lun, 0);
    }

    #[test]
    fn an_unproven_name_gets_only_the_views_for_all_hosts() {
        let mut s = ViewStore::default();
        s.create_hg("hg1").unwrap();
        s.add_hg_member("hg1", "iqn.a").unwrap();
        s.create_tg("tg").unwrap();
        s.add_tg_member("tg", "iqn.t").unwrap();
        s.add_view(g(1), Some("hg1"), None, Some(5)).unwrap();
        s.add_view(g(2), None, None, Some(0)).unwrap();
        s.add_view(g(3), None, Some("tg"), Some(1)).unwrap();
        s.add_view(g(4), Some("hg1"), Some("tg"), Some(2)).unwrap();
        assert_eq!(
            s.lun_map("iqn.a", "iqn.t"),
            vec![(0, g(2)), (1, g(3)), (2, g(4)), (5, g(1))]
        );
        // The same name, not proven: nothing of hg1's, the target group still applies.
        assert_eq!(s.lun_map_any_host("iqn.t"), vec![(0, g(2)), (1, g(3))]);
        assert_eq!(s.lun_map_any_host("iqn.other"), vec![(0, g(2))]);
    }

    #[test]
    fn same_lu_overlap_conflicts() {
        let mut s = ViewStore::default();
        s.create_tg("tg").unwrap();
        s.add_view(g(1), None, Some("tg"), Some(1)).unwrap();
        assert_eq!(
            s.add_view(g(1), None, None, Some(2)).unwrap_err().kind,
            ErrorKind::Conflict
        );
    }

    #[test]
    fn membership_rules() {
        let mut s = ViewStore::default();
        s.create_hg("a").unwrap();
        s.create_hg("b").unwrap();
        assert_eq!(s.create_hg("a").unwrap_err().kind, ErrorKind::AlreadyExists);
        assert_eq!(
            s.create_hg("").unwrap_err().kind,
            ErrorKind::InvalidArgument
        );
        s.add_hg_member("a", "iqn.x").unwrap();
        assert_eq!(
            s.add_hg_member("b", "iqn.x").unwrap_err().kind,
            ErrorKind::AlreadyExists
        );
        s.add_view(g(1), Some("a"), None, None).unwrap();
        assert_eq!(s.delete_hg("a").unwrap_err().kind, ErrorKind::Busy);
        assert_eq!(
            s.add_view(g(1), Some("nope"), None, None).unwrap_err().kind,
            ErrorKind::NotFound
        );
        assert_eq!(
            s.add_view(g(2), None, None, Some(16384)).unwrap_err().kind,
            ErrorKind::InvalidArgument
        );
    }

    #[test]
    fn export_import_round_trip() {
        let mut s = ViewStore::default();
        s.create_hg("a").unwrap();
        s.add_hg_member("a", "iqn.x").unwrap();
        s.add_view(g(1), Some("a"), None, Some(3)).unwrap();
        s.add_view(g(2), None, None, None).unwrap();
        s.remove_view(g(2), 0).unwrap();
        s.add_view(g(2), None, None, Some(7)).unwrap();
        let cfg = s.export();
        let t = ViewStore::import(&cfg).unwrap();
        assert_eq!(t.export(), cfg);
    }
}

//! Persistent reservations (SPC-4 §5.13, PERSISTENT RESERVE IN/OUT) and SCSI-2
//! RESERVE/RELEASE, as a pure state machine: commands in, parameter data, outcomes and the
//! unit attentions to raise out. The LU wires it to nexuses and metadata.
//!
//! An I_T nexus is identified by the initiator port name (the iSCSI name, with `,i,0x<ISID>`
//! when the port supplies it) and the relative target port identifier. Registrations record
//! the same pair (or the initiator alone, for ALL_TG_PT), so they outlive the sessions that
//! made them, as SPC requires, and can be persisted (APTPL).

use plugins_sdk::scsi::{Asc, Sense};
use serde::{Deserialize, Serialize};

/// An I_T nexus as PR sees it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Nexus {
    /// Initiator port name (SCSI name string of the initiator port).
    pub initiator: String,
    /// Relative target port identifier.
    pub rtpi: u16,
}

/// Reservation types (SPC-4 table 215).
pub mod pr_type {
    /// Write Exclusive.
    pub const WE: u8 = 1;
    /// Exclusive Access.
    pub const EA: u8 = 3;
    /// Write Exclusive – Registrants Only.
    pub const WE_RO: u8 = 5;
    /// Exclusive Access – Registrants Only.
    pub const EA_RO: u8 = 6;
    /// Write Exclusive – All Registrants.
    pub const WE_AR: u8 = 7;
    /// Exclusive Access – All Registrants.
    pub const EA_AR: u8 = 8;
}

fn valid_type(t: u8) -> bool {
    matches!(t, 1 | 3 | 5 | 6 | 7 | 8)
}

fn all_registrants(t: u8) -> bool {
    t == pr_type::WE_AR || t == pr_type::EA_AR
}

fn registrants_only(t: u8) -> bool {
    t == pr_type::WE_RO || t == pr_type::EA_RO
}

fn write_exclusive(t: u8) -> bool {
    matches!(t, 1 | 5 | 7)
}

/// One registration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// Reservation key.
    pub key: u64,
    /// Initiator port name.
    pub initiator: String,
    /// Relative target port identifier (ignored with `all_tg_pt`).
    pub rtpi: u16,
    /// Registered through every target port.
    pub all_tg_pt: bool,
}

impl Registration {
    /// Whether this registration is the one of nexus `n`.
    pub fn matches(&self, n: &Nexus) -> bool {
        self.initiator == n.initiator && (self.all_tg_pt || self.rtpi == n.rtpi)
    }
}

/// The persistent reservation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// Index of the holder in the registration list; `None` for all-registrants types.
    pub holder: Option<usize>,
    /// Reservation type.
    pub pr_type: u8,
}

/// What is persisted (APTPL) in the metadata.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrSaved {
    /// PRgeneration.
    pub generation: u32,
    /// Registrations.
    pub registrations: Vec<Registration>,
    /// The reservation, if any.
    pub reservation: Option<Reservation>,
}

/// PR state of one LU.
#[derive(Clone, Debug, Default)]
pub struct PrState {
    generation: u32,
    regs: Vec<Registration>,
    res: Option<Reservation>,
    aptpl: bool,
    /// SCSI-2 RESERVE holder.
    scsi2: Option<Nexus>,
}

/// Unit attentions a PR OUT raises on other nexuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrUa {
    /// REGISTRATIONS PREEMPTED.
    RegistrationsPreempted,
    /// RESERVATIONS PREEMPTED.
    ReservationsPreempted,
    /// RESERVATIONS RELEASED.
    ReservationsReleased,
}

impl PrUa {
    /// The ASC/ASCQ of the UNIT ATTENTION.
    pub fn asc(self) -> Asc {
        match self {
            PrUa::RegistrationsPreempted => Asc::REGISTRATIONS_PREEMPTED,
            PrUa::ReservationsPreempted => Asc::RESERVATIONS_PREEMPTED,
            PrUa::ReservationsReleased => Asc::RESERVATIONS_RELEASED,
        }
    }
}

/// Result of a PR OUT that did not fail.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PrOutcome {
    /// Unit attentions for nexuses: (initiator, rtpi or all ports, which).
    pub uas: Vec<(Registration, PrUa)>,
    /// The persistent part changed: rewrite the metadata.
    pub persist: bool,
    /// Registrations preempted by PREEMPT AND ABORT: their tasks are to be aborted.
    pub abort: Vec<Registration>,
}

/// Why a PR command failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrError {
    /// RESERVATION CONFLICT status.
    Conflict,
    /// CHECK CONDITION with this sense.
    Check(Sense),
}

type PrResult<T> = Result<T, PrError>;

fn param_err(byte: u16, bit: Option<u8>) -> PrError {
    PrError::Check(Sense::invalid_field_in_parameter_list(byte, bit))
}

fn cdb_err(byte: u16, bit: Option<u8>) -> PrError {
    PrError::Check(Sense::invalid_field_in_cdb(byte, bit))
}

/// The decoded CDB fields of a PR OUT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrOutCdb {
    /// Service action.
    pub sa: u8,
    /// Scope.
    pub scope: u8,
    /// Type.
    pub pr_type: u8,
}

/// Command classes for the reservation conflict check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Never conflicts (INQUIRY, REQUEST SENSE, READ CAPACITY, PR IN, ...).
    Always,
    /// Reads the medium or mode data: allowed under Write Exclusive types.
    Read,
    /// Everything else.
    Write,
    /// PERSISTENT RESERVE OUT: checked by the service action itself.
    PrOut,
    /// RELEASE (6/10).
    Release,
    /// RESERVE (6/10).
    Reserve,
}

/// The form PR compares initiator port names in: trimmed and lower-cased (iSCSI names are
/// case-insensitive, and the ISID of `,i,0x<ISID>` is hex).
pub fn canonical_name(name: &str) -> String {
    name.trim().to_ascii_lowercase()
}

/// The name PR knows an initiator port by, from what the core says of its session: the
/// name in its TransportID when the port supplied an iSCSI one (as text, `name,i,0x<ISID>`,
/// or as the TransportID's bytes in hex), else its initiator port name.
pub fn initiator_identity(port_name: &str, transport_id: &str) -> String {
    let tid = transport_id.trim();
    if tid.is_empty() {
        return canonical_name(port_name);
    }
    let bytes = (tid.len() % 2 == 0 && tid.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| {
            (0..tid.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&tid[i..i + 2], 16).ok())
                .collect::<Option<Vec<u8>>>()
        })
        .flatten();
    match bytes {
        Some(b) => parse_transport_id(&b, 0).map_or_else(|_| canonical_name(port_name), |(n, _)| n),
        None => canonical_name(tid),
    }
}

/// Iterates TransportIDs of the iSCSI protocol in `data`; returns initiator port names.
pub fn parse_transport_ids(mut data: &[u8], base: u16) -> PrResult<Vec<String>> {
    let mut out = Vec::new();
    let mut at = base;
    while !data.is_empty() {
        let (name, used) = parse_transport_id(data, at)?;
        out.push(name);
        data = data.get(used..).unwrap_or(&[]);
        at = at.saturating_add(used as u16);
    }
    Ok(out)
}

/// Parses one iSCSI TransportID (SPC-4 §7.6.4.6) at `data`; returns the initiator port
/// name and the bytes used. `at` is its offset in the parameter list (for field pointers).
pub fn parse_transport_id(data: &[u8], at: u16) -> PrResult<(String, usize)> {
    let b0 = *data.first().ok_or(param_err(at, None))?;
    if b0 & 0x0F != 5 {
        return Err(param_err(at, Some(3)));
    }
    let format = b0 >> 6;
    if format > 1 {
        return Err(param_err(at, Some(7)));
    }
    let len = usize::from(u16::from_be_bytes([
        *data.get(2).unwrap_or(&0),
        *data.get(3).unwrap_or(&0),
    ]));
    let body = data
        .get(4..4 + len)
        .ok_or(param_err(at.saturating_add(2), None))?;
    let end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
    let name =
        std::str::from_utf8(&body[..end]).map_err(|_| param_err(at.saturating_add(4), None))?;
    if name.is_empty() {
        return Err(param_err(at.saturating_add(4), None));
    }
    let name = canonical_name(name);
    // Format 01b is "<name>,i,0x<ISID>": the separator must be there.
    if format == 1 && !name.contains(",i,0x") {
        return Err(param_err(at.saturating_add(4), None));
    }
    Ok((name, 4 + len))
}

/// Appends the iSCSI TransportID of `initiator` to `out`.
pub fn write_transport_id(initiator: &str, out: &mut Vec<u8>) {
    let format1 = initiator.to_ascii_lowercase().contains(",i,0x");
    let padded = (initiator.len() + 1).div_ceil(4) * 4;
    let padded = padded.max(20);
    out.push(if format1 { 0x45 } else { 0x05 });
    out.push(0);
    out.extend_from_slice(&(padded as u16).to_be_bytes());
    out.extend_from_slice(initiator.as_bytes());
    out.resize(out.len() + padded - initiator.len(), 0);
}

impl PrState {
    /// State restored from metadata (APTPL).
    pub fn restore(saved: PrSaved) -> PrState {
        let res = saved.reservation.filter(|r| {
            r.holder.is_none_or(|h| h < saved.registrations.len()) && valid_type(r.pr_type)
        });
        PrState {
            generation: saved.generation,
            regs: saved.registrations,
            res,
            aptpl: true,
            scsi2: None,
        }
    }

    /// What to persist, when APTPL is active.
    pub fn saved(&self) -> Option<PrSaved> {
        self.aptpl.then(|| PrSaved {
            generation: self.generation,
            registrations: self.regs.clone(),
            reservation: self.res,
        })
    }

    /// Whether any reservation (persistent or SCSI-2) exists: the fast path skips the
    /// conflict check when not.
    pub fn any_reservation(&self) -> bool {
        self.res.is_some() || self.scsi2.is_some()
    }

    fn reg_of(&self, n: &Nexus) -> Option<usize> {
        self.regs.iter().position(|r| r.matches(n))
    }

    fn is_holder(&self, n: &Nexus) -> bool {
        match self.res {
            Some(Reservation {
                holder: Some(h), ..
            }) => self.regs.get(h).is_some_and(|r| r.matches(n)),
            Some(Reservation { holder: None, .. }) => self.reg_of(n).is_some(),
            None => false,
        }
    }

    /// Drops SCSI-2 reservations on a LUN reset.
    pub fn reset(&mut self) {
        self.scsi2 = None;
    }

    /// Drops what an I_T nexus loss ends (its SCSI-2 reservation).
    pub fn nexus_lost(&mut self, n: &Nexus) {
        if self.scsi2.as_ref() == Some(n) {
            self.scsi2 = None;
        }
    }

    /// The reservation conflict check for a command of class `access` from `n`.
    pub fn conflicts(&self, n: &Nexus, access: Access) -> bool {
        if let Some(holder) = &self.scsi2 {
            if holder != n {
                return !matches!(access, Access::Always | Access::Release);
            }
            return false;
        }
        let Some(res) = self.res else {
            return false;
        };
        match access {
            Access::Always | Access::PrOut => false,
            // RESERVE/RELEASE (6/10) conflict with any persistent reservation.
            Access::Reserve | Access::Release => true,
            Access::Read | Access::Write => {
                if self.is_holder(n) {
                    return false;
                }
                let registered = self.reg_of(n).is_some();
                if registered && (registrants_only(res.pr_type) || all_registrants(res.pr_type)) {
                    return false;
                }
                !(access == Access::Read && write_exclusive(res.pr_type))
            }
        }
    }

    /// RESERVE (6/10).
    pub fn reserve_scsi2(&mut self, n: &Nexus) -> PrResult<()> {
        if self.res.is_some() {
            return Err(PrError::Conflict);
        }
        match &self.scsi2 {
            Some(h) if h != n => Err(PrError::Conflict),
            _ => {
                self.scsi2 = Some(n.clone());
                Ok(())
            }
        }
    }

    /// RELEASE (6/10): releasing a reservation held by someone else does nothing.
    pub fn release_scsi2(&mut self, n: &Nexus) -> PrResult<()> {
        if self.res.is_some() {
            return Err(PrError::Conflict);
        }
        if self.scsi2.as_ref() == Some(n) {
            self.scsi2 = None;
        }
        Ok(())
    }

    // ---- PERSISTENT RESERVE IN ------------------------------------------------------------

    /// PERSISTENT RESERVE IN parameter data for service action `sa` into `out`.
    pub fn pr_in(&self, sa: u8, out: &mut Vec<u8>) -> PrResult<()> {
        out.clear();
        out.extend_from_slice(&self.generation.to_be_bytes());
        match sa {
            0 => {
                out.extend_from_slice(&((self.regs.len() * 8) as u32).to_be_bytes());
                for r in &self.regs {
                    out.extend_from_slice(&r.key.to_be_bytes());
                }
            }
            1 => match self.res {
                None => out.extend_from_slice(&0u32.to_be_bytes()),
                Some(res) => {
                    out.extend_from_slice(&16u32.to_be_bytes());
                    let key = res
                        .holder
                        .and_then(|h| self.regs.get(h))
                        .map_or(0, |r| r.key);
                    out.extend_from_slice(&key.to_be_bytes());
                    out.extend_from_slice(&[0, 0, 0, 0, 0, res.pr_type & 0x0F, 0, 0]);
                }
            },
            2 => {
                // REPORT CAPABILITIES.
                out.clear();
                out.extend_from_slice(&8u16.to_be_bytes());
                // CRH=1 (RESERVE/RELEASE conflict with PR), SIP_C, ATP_C, PTPL_C.
                out.push(0x10 | 0x08 | 0x04 | 0x01);
                // TMV=1, ALLOW COMMANDS=000b, PTPL_A.
                out.push(0x80 | u8::from(self.aptpl));
                // Type mask: WR_EX_AR, EX_AC_RO, WR_EX_RO, EX_AC, WR_EX | EX_AC_AR.
                out.extend_from_slice(&[0x80 | 0x40 | 0x20 | 0x08 | 0x02, 0x01, 0, 0]);
            }
            3 => {
                out.extend_from_slice(&[0; 4]); // length, set below
                for (i, r) in self.regs.iter().enumerate() {
                    out.extend_from_slice(&r.key.to_be_bytes());
                    out.extend_from_slice(&[0; 4]);
                    let holder = match self.res {
                        Some(Reservation {
                            holder: Some(h), ..
                        }) => h == i,
                        Some(Reservation { holder: None, .. }) => true,
                        None => false,
                    };
                    out.push(u8::from(r.all_tg_pt) << 1 | u8::from(holder));
                    out.push(if holder {
                        self.res.map_or(0, |x| x.pr_type & 0x0F)
                    } else {
                        0
                    });
                    out.extend_from_slice(&[0; 4]);
                    out.extend_from_slice(&(if r.all_tg_pt { 0 } else { r.rtpi }).to_be_bytes());
                    let at = out.len();
                    out.extend_from_slice(&[0; 4]);
                    write_transport_id(&r.initiator, out);
                    let n = (out.len() - at - 4) as u32;
                    out[at..at + 4].copy_from_slice(&n.to_be_bytes());
                }
                let n = (out.len() - 8) as u32;
                out[4..8].copy_from_slice(&n.to_be_bytes());
            }
            _ => return Err(cdb_err(1, Some(4))),
        }
        Ok(())
    }

    // ---- PERSISTENT RESERVE OUT -----------------------------------------------------------

    /// Executes PERSISTENT RESERVE OUT from `n` with parameter list `p`. `ports` lists the
    /// relative target port identifiers of the target (for ALL_TG_PT and SPEC_I_PT).
    pub fn pr_out(&mut self, n: &Nexus, cdb: PrOutCdb, p: &[u8]) -> PrResult<PrOutcome> {
        if self.scsi2.as_ref().is_some_and(|h| h != n) {
            return Err(PrError::Conflict);
        }
        let be64 = |at: usize| {
            p.get(at..at + 8)
                .and_then(|b| b.try_into().ok())
                .map_or(0, u64::from_be_bytes)
        };
        if cdb.sa == 7 {
            return self.register_and_move(n, p);
        }
        if cdb.sa > 7 {
            return Err(cdb_err(1, Some(4)));
        }
        let spec_i_pt = p.get(20).is_some_and(|b| b & 0x08 != 0);
        if p.len() != 24 && !(spec_i_pt && p.len() >= 28 && (cdb.sa == 0)) {
            return Err(PrError::Check(Sense::illegal_request(
                Asc::PARAMETER_LIST_LENGTH_ERROR,
            )));
        }
        let key = be64(0);
        let sa_key = be64(8);
        let flags = p.get(20).copied().unwrap_or(0);
        let all_tg_pt = flags & 0x04 != 0;
        let aptpl = flags & 0x01 != 0;
        match cdb.sa {
            0 | 6 => self.register(n, key, sa_key, cdb.sa == 6, spec_i_pt, all_tg_pt, aptpl, p),
            1 => self.reserve(n, key, cdb),
            2 => self.release(n, key, cdb),
            3 => self.clear(n, key),
            4 | 5 => self.preempt(n, key, sa_key, cdb, cdb.sa == 5),
            _ => Err(cdb_err(1, Some(4))),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn register(
        &mut self,
        n: &Nexus,
        key: u64,
        sa_key: u64,
        ignore: bool,
        spec_i_pt: bool,
        all_tg_pt: bool,
        aptpl: bool,
        p: &[u8],
    ) -> PrResult<PrOutcome> {
        let mut out = PrOutcome::default();
        match self.reg_of(n) {
            None => {
                if !ignore && key != 0 {
                    return Err(PrError::Conflict);
                }
                if spec_i_pt && ignore {
                    return Err(param_err(20, Some(3)));
                }
                if sa_key == 0 {
                    return Ok(out);
                }
                let mut new = vec![Registration {
                    key: sa_key,
                    initiator: n.initiator.clone(),
                    rtpi: n.rtpi,
                    all_tg_pt,
                }];
                if spec_i_pt {
                    let len = p
                        .get(24..28)
                        .and_then(|b| b.try_into().ok())
                        .map_or(0, u32::from_be_bytes) as usize;
                    let ids = p
                        .get(28..28 + len)
                        .ok_or(PrError::Check(Sense::illegal_request(
                            Asc::PARAMETER_LIST_LENGTH_ERROR,
                        )))?;
                    for name in parse_transport_ids(ids, 28)? {
                        let other = Nexus {
                            initiator: name,
                            rtpi: n.rtpi,
                        };
                        if self.reg_of(&other).is_some() || new.iter().any(|r| r.matches(&other)) {
                            // Already registered: SPC-4 says the command fails.
                            if other != *n {
                                return Err(param_err(28, None));
                            }
                            continue;
                        }
                        new.push(Registration {
                            key: sa_key,
                            initiator: other.initiator,
                            rtpi: other.rtpi,
                            all_tg_pt,
                        });
                    }
                }
                self.regs.extend(new);
            }
            Some(i) => {
                if !ignore && self.regs[i].key != key {
                    return Err(PrError::Conflict);
                }
                if spec_i_pt {
                    return Err(param_err(20, Some(3)));
                }
                if sa_key == 0 {
                    self.unregister(i, &mut out);
                } else {
                    self.regs[i].key = sa_key;
                }
            }
        }
        self.generation = self.generation.wrapping_add(1);
        self.aptpl = aptpl;
        out.persist = true;
        Ok(out)
    }

    /// Removes registration `i`, adjusting the reservation.
    fn unregister(&mut self, i: usize, out: &mut PrOutcome) {
        let Some(removed) = (i < self.regs.len()).then(|| self.regs.remove(i)) else {
            return;
        };
        if let Some(res) = self.res {
            match res.holder {
                Some(h) if h == i => {
                    self.res = None;
                    // Releasing a registrants-only reservation by unregistering tells the others.
                    if registrants_only(res.pr_type) {
                        for r in &self.regs {
                            out.uas.push((r.clone(), PrUa::ReservationsReleased));
                        }
                    }
                }
                Some(h) if h > i => {
                    self.res = Some(Reservation {
                        holder: Some(h - 1),
                        ..res
                    })
                }
                Some(_) => {}
                None => {
                    if self.regs.is_empty() {
                        self.res = None;
                    }
                }
            }
        }
        let _ = removed;
    }

    fn registered_with(&self, n: &Nexus, key: u64) -> PrResult<usize> {
        match self.reg_of(n) {
            Some(i) if self.regs[i].key == key => Ok(i),
            _ => Err(PrError::Conflict),
        }
    }

    fn check_scope_type(cdb: PrOutCdb) -> PrResult<()> {
        if cdb.scope != 0 {
            return Err(cdb_err(2, Some(7)));
        }
        if !valid_type(cdb.pr_type) {
            return Err(cdb_err(2, Some(3)));
        }
        Ok(())
    }

    fn reserve(&mut self, n: &Nexus, key: u64, cdb: PrOutCdb) -> PrResult<PrOutcome> {
        let i = self.registered_with(n, key)?;
        Self::check_scope_type(cdb)?;
        match self.res {
            None => {
                let holder = if all_registrants(cdb.pr_type) {
                    None
                } else {
                    Some(i)
                };
                self.res = Some(Reservation {
                    holder,
                    pr_type: cdb.pr_type,
                });
                Ok(PrOutcome {
                    persist: true,
                    ..PrOutcome::default()
                })
            }
            Some(res) if self.is_holder(n) && res.pr_type == cdb.pr_type => {
                Ok(PrOutcome::default())
            }
            Some(_) => Err(PrError::Conflict),
        }
    }

    fn release(&mut self, n: &Nexus, key: u64, cdb: PrOutCdb) -> PrResult<PrOutcome> {
        self.registered_with(n, key)?;
        let Some(res) = self.res else {
            return Ok(PrOutcome::default());
        };
        if !self.is_holder(n) {
            return Ok(PrOutcome::default());
        }
        if cdb.scope != 0 || res.pr_type != cdb.pr_type {
            return Err(PrError::Check(Sense::illegal_request(
                Asc::INVALID_RELEASE_OF_PERSISTENT_RESERVATION,
            )));
        }
        self.res = None;
        let mut out = PrOutcome {
            persist: true,
            ..PrOutcome::default()
        };
        if registrants_only(res.pr_type) || all_registrants(res.pr_type) {
            for r in self.regs.iter().filter(|r| !r.matches(n)) {
                out.uas.push((r.clone(), PrUa::ReservationsReleased));
            }
        }
        Ok(out)
    }

    fn clear(&mut self, n: &Nexus, key: u64) -> PrResult<PrOutcome> {
        self.registered_with(n, key)?;
        let mut out = PrOutcome {
            persist: true,
            ..PrOutcome::default()
        };
        for r in self.regs.drain(..).filter(|r| !r.matches(n)) {
            out.uas.push((r, PrUa::ReservationsPreempted));
        }
        self.res = None;
        self.generation = self.generation.wrapping_add(1);
        Ok(out)
    }

    fn preempt(
        &mut self,
        n: &Nexus,
        key: u64,
        sa_key: u64,
        cdb: PrOutCdb,
        abort: bool,
    ) -> PrResult<PrOutcome> {
        let me = self.registered_with(n, key)?;
        let mut out = PrOutcome {
            persist: true,
            ..PrOutcome::default()
        };
        let holder_key = self
            .res
            .and_then(|r| r.holder)
            .and_then(|h| self.regs.get(h))
            .map(|r| r.key);
        let ar = self.res.is_some_and(|r| r.holder.is_none());
        let takes_reservation = match self.res {
            None => false,
            Some(_) if ar => sa_key == 0,
            Some(_) => holder_key == Some(sa_key),
        };
        if takes_reservation {
            Self::check_scope_type(cdb)?;
        } else if sa_key == 0 {
            return Err(param_err(8, None));
        }
        let me_reg = self.regs[me].clone();
        // Which registrations go: all but ours when preempting an all-registrants reservation
        // with key 0, otherwise those holding the service action key (ours stays).
        let doomed = |r: &Registration| -> bool {
            if r.matches(n) && r == &me_reg {
                return false;
            }
            if ar && sa_key == 0 {
                true
            } else {
                r.key == sa_key
            }
        };
        let before = self.regs.len();
        let mut kept = Vec::with_capacity(before);
        for r in std::mem::take(&mut self.regs) {
            if doomed(&r) {
                out.uas.push((r.clone(), PrUa::RegistrationsPreempted));
                if abort {
                    out.abort.push(r);
                }
            } else {
                kept.push(r);
            }
        }
        self.regs = kept;
        let removed = before - self.regs.len();
        if !takes_reservation && removed == 0 {
            // Nothing to preempt (and ours may have matched the key: not an error in
            // itself, but no registration held it).
            if self.regs.iter().all(|r| r.key != sa_key) || sa_key != me_reg.key {
                return Err(PrError::Conflict);
            }
        }
        let me_now = self.regs.iter().position(|r| r == &me_reg);
        if takes_reservation {
            let old = self.res;
            let holder = if all_registrants(cdb.pr_type) {
                None
            } else {
                me_now
            };
            self.res = Some(Reservation {
                holder,
                pr_type: cdb.pr_type,
            });
            if old.is_some_and(|o| o.pr_type != cdb.pr_type) {
                for r in self.regs.iter().filter(|r| !r.matches(n)) {
                    out.uas.push((r.clone(), PrUa::ReservationsReleased));
                }
            }
        } else if let Some(res) = self.res {
            // The holder index may have moved.
            if let Some(hk) = holder_key {
                let h = self.regs.iter().position(|r| r.key == hk);
                self.res = if h.is_some() {
                    Some(Reservation { holder: h, ..res })
                } else {
                    None
                };
            } else if self.regs.is_empty() {
                self.res = None;
            }
        }
        self.generation = self.generation.wrapping_add(1);
        Ok(out)
    }

    fn register_and_move(&mut self, n: &Nexus, p: &[u8]) -> PrResult<PrOutcome> {
        if p.len() < 24 {
            return Err(PrError::Check(Sense::illegal_request(
                Asc::PARAMETER_LIST_LENGTH_ERROR,
            )));
        }
        let key = u64::from_be_bytes(p[0..8].try_into().unwrap_or([0; 8]));
        let sa_key = u64::from_be_bytes(p[8..16].try_into().unwrap_or([0; 8]));
        let unreg = p[17] & 0x02 != 0;
        let aptpl = p[17] & 0x01 != 0;
        let rtpi = u16::from_be_bytes([p[18], p[19]]);
        let tid_len = u32::from_be_bytes([p[20], p[21], p[22], p[23]]) as usize;
        let me = self.registered_with(n, key)?;
        let res = self.res.ok_or(PrError::Conflict)?;
        if res.holder != Some(me) {
            return Err(PrError::Conflict);
        }
        if sa_key == 0 {
            return Err(param_err(8, None));
        }
        let ids = p
            .get(24..24 + tid_len)
            .ok_or(PrError::Check(Sense::illegal_request(
                Asc::PARAMETER_LIST_LENGTH_ERROR,
            )))?;
        let (name, _) = parse_transport_id(ids, 24)?;
        let dest = Nexus {
            initiator: name,
            rtpi,
        };
        if dest == *n {
            return Err(param_err(24, None));
        }
        let d = match self.reg_of(&dest) {
            Some(d) => {
                self.regs[d].key = sa_key;
                d
            }
            None => {
                self.regs.push(Registration {
                    key: sa_key,
                    initiator: dest.initiator.clone(),
                    rtpi,
                    all_tg_pt: false,
                });
                self.regs.len() - 1
            }
        };
        self.res = Some(Reservation {
            holder: Some(d),
            ..res
        });
        let mut out = PrOutcome {
            persist: true,
            ..PrOutcome::default()
        };
        if unreg {
            let me_reg = self.regs[me].clone();
            self.regs.remove(me);
            if let Some(r) = self.res.as_mut() {
                r.holder = self.regs.iter().position(|x| x.matches(&dest));
            }
            let _ = me_reg;
        }
        self.generation = self.generation.wrapping_add(1);
        self.aptpl = aptpl;
        out.persist = true;
        Ok(out)
    }

    /// Registrations, for list-lu and tests.
    pub fn registrations(&self) -> &[Registration] {
        &self.regs
    }

    /// The reservation.
    pub fn reservation(&self) -> Option<Reservation> {
        self.res
    }

    /// APTPL in force.
    pub fn aptpl(&self) -> bool {
        self.aptpl
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_from_port_name_or_transport_id() {
        let port = "iqn.2025-01.x:ini,i,0x4000013700AB";
        assert_eq!(
            initiator_identity(port, ""),
            "iqn.2025-01.x:ini,i,0x4000013700ab"
        );
        // A textual TransportID wins over the port name.
        assert_eq!(
            initiator_identity("alias", " IQN.2025-01.X:INI,I,0X1 "),
            "iqn.2025-01.x:ini,i,0x1"
        );
        // So does a binary one, in hex.
        let mut tid = Vec::new();
        write_transport_id("iqn.2025-01.x:other", &mut tid);
        let hex: String = tid.iter().map(|b| format!("{b:02X}")).collect();
        assert_eq!(initiator_identity(port, &hex), "iqn.2025-01.x:other");
        // A hex TransportID that is not iSCSI (here FC, protocol 0) is not used.
        let fc = "00".repeat(24);
        assert_eq!(initiator_identity("iqn.a", &fc), "iqn.a");
        // Format 01b without the ISID separator is refused.
        let mut bad = Vec::new();
        write_transport_id("iqn.a", &mut bad);
        bad[0] = 0x45;
        assert!(parse_transport_id(&bad, 0).is_err());
    }

    fn nx(i: &str) -> Nexus {
        Nexus {
            initiator: i.into(),
            rtpi: 1,
        }
    }

    fn params(key: u64, sa_key: u64, flags: u8) -> Vec<u8> {
        let mut p = vec![0u8; 24];
        p[0..8].copy_from_slice(&key.to_be_bytes());
        p[8..16].copy_from_slice(&sa_key.to_be_bytes());
        p[20] = flags;
        p
    }

    fn out(
        st: &mut PrState,
        n: &Nexus,
        sa: u8,
        ty: u8,
        key: u64,
        sa_key: u64,
    ) -> PrResult<PrOutcome> {
        st.pr_out(
            n,
            PrOutCdb {
                sa,
                scope: 0,
                pr_type: ty,
            },
            &params(key, sa_key, 0),
        )
    }

    fn keys(st: &PrState) -> Vec<u64> {
        st.regs.iter().map(|r| r.key).collect()
    }

    #[test]
    fn register_reserve_conflicts_release() {
        let (a, b, c) = (nx("a"), nx("b"), nx("c"));
        let mut st = PrState::default();
        out(&mut st, &a, 0, 0, 0, 0xA).expect("register a");
        out(&mut st, &b, 0, 0, 0, 0xB).expect("register b");
        assert_eq!(
            out(&mut st, &b, 0, 0, 0, 0xB),
            Err(PrError::Conflict),
            "registered: key must match"
        );
        assert_eq!(st.generation, 2);
        assert_eq!(
            out(&mut st, &c, 1, pr_type::WE, 0xC, 0),
            Err(PrError::Conflict),
            "unregistered cannot reserve"
        );
        out(&mut st, &a, 1, pr_type::WE, 0xA, 0).expect("reserve");
        assert_eq!(
            out(&mut st, &b, 1, pr_type::WE, 0xB, 0),
            Err(PrError::Conflict)
        );
        out(&mut st, &a, 1, pr_type::WE, 0xA, 0).expect("same reservation again is fine");
        // Write Exclusive: others read, do not write; holder does both.
        assert!(!st.conflicts(&c, Access::Read));
        assert!(st.conflicts(&c, Access::Write));
        assert!(
            st.conflicts(&b, Access::Write),
            "WE: registrants are not holders"
        );
        assert!(!st.conflicts(&a, Access::Write));
        assert!(!st.conflicts(&c, Access::Always));
        assert!(
            st.conflicts(&a, Access::Reserve),
            "SCSI-2 RESERVE conflicts with any PR"
        );
        // Wrong type release → INVALID RELEASE.
        assert_eq!(
            out(&mut st, &a, 2, pr_type::EA, 0xA, 0),
            Err(PrError::Check(Sense::illegal_request(
                Asc::INVALID_RELEASE_OF_PERSISTENT_RESERVATION
            )))
        );
        out(&mut st, &b, 2, pr_type::WE, 0xB, 0).expect("non-holder release is a no-op");
        assert!(st.res.is_some());
        out(&mut st, &a, 2, pr_type::WE, 0xA, 0).expect("release");
        assert!(st.res.is_none());
    }

    #[test]
    fn exclusive_access_registrants_only_and_all_registrants() {
        let (a, b, c) = (nx("a"), nx("b"), nx("c"));
        let mut st = PrState::default();
        out(&mut st, &a, 0, 0, 0, 1).expect("reg");
        out(&mut st, &b, 0, 0, 0, 2).expect("reg");
        out(&mut st, &a, 1, pr_type::EA_RO, 1, 0).expect("reserve");
        assert!(!st.conflicts(&b, Access::Write), "registrant has access");
        assert!(
            st.conflicts(&c, Access::Read),
            "EA: non-registrant cannot read"
        );
        // Unregistering the holder of an RO reservation releases it and tells the others.
        let o = out(&mut st, &a, 0, 0, 1, 0).expect("unregister");
        assert!(st.res.is_none());
        assert_eq!(
            o.uas,
            vec![(st.regs[0].clone(), PrUa::ReservationsReleased)]
        );
        // All registrants: key 0 reported, every registrant is a holder.
        out(&mut st, &b, 1, pr_type::WE_AR, 2, 0).expect("reserve AR");
        let mut buf = Vec::new();
        st.pr_in(1, &mut buf).expect("read reservation");
        assert_eq!(&buf[4..8], &[0, 0, 0, 16]);
        assert_eq!(&buf[8..16], &[0; 8]);
        assert_eq!(buf[21], pr_type::WE_AR);
    }

    #[test]
    fn preempt_and_clear() {
        let (a, b, c) = (nx("a"), nx("b"), nx("c"));
        let mut st = PrState::default();
        for (n, k) in [(&a, 1), (&b, 2), (&c, 2)] {
            out(&mut st, n, 0, 0, 0, k).expect("reg");
        }
        out(&mut st, &b, 1, pr_type::WE, 2, 0).expect("b reserves");
        // a preempts key 2: both b and c lose their registrations, a holds an EA reservation.
        let o = out(&mut st, &a, 4, pr_type::EA, 1, 2).expect("preempt");
        assert_eq!(keys(&st), vec![1]);
        assert_eq!(
            st.res,
            Some(Reservation {
                holder: Some(0),
                pr_type: pr_type::EA
            })
        );
        assert_eq!(
            o.uas
                .iter()
                .filter(|(_, u)| *u == PrUa::RegistrationsPreempted)
                .count(),
            2
        );
        // Preempting a key nobody has: conflict. Key 0 without AR: invalid field.
        assert_eq!(
            out(&mut st, &a, 4, pr_type::EA, 1, 9),
            Err(PrError::Conflict)
        );
        assert_eq!(
            out(&mut st, &a, 4, pr_type::EA, 1, 0),
            Err(param_err(8, None))
        );
        out(&mut st, &b, 0, 0, 0, 5).expect("b again");
        let o = out(&mut st, &a, 3, 0, 1, 0).expect("clear");
        assert!(st.regs.is_empty() && st.res.is_none());
        assert_eq!(o.uas.len(), 1);
    }

    #[test]
    fn preempt_and_abort_reports_victims_and_register_and_move() {
        let (a, b) = (nx("a"), nx("b"));
        let mut st = PrState::default();
        out(&mut st, &a, 0, 0, 0, 1).expect("reg");
        out(&mut st, &b, 0, 0, 0, 2).expect("reg");
        out(&mut st, &b, 1, pr_type::WE, 2, 0).expect("reserve");
        let o = out(&mut st, &a, 5, pr_type::WE, 1, 2).expect("preempt and abort");
        assert_eq!(o.abort.len(), 1);
        // REGISTER AND MOVE to c (unregistered) with UNREG.
        let mut p = params(1, 7, 0);
        p[17] = 0x02;
        p[18..20].copy_from_slice(&1u16.to_be_bytes());
        let mut tid = Vec::new();
        write_transport_id("c", &mut tid);
        p[20..24].copy_from_slice(&(tid.len() as u32).to_be_bytes());
        p.extend_from_slice(&tid);
        st.pr_out(
            &a,
            PrOutCdb {
                sa: 7,
                scope: 0,
                pr_type: pr_type::WE,
            },
            &p,
        )
        .expect("move");
        assert_eq!(keys(&st), vec![7]);
        assert!(st.is_holder(&nx("c")));
        assert!(!st.is_holder(&a));
    }

    #[test]
    fn spec_i_pt_all_tg_pt_and_full_status() {
        let a = nx("iqn.a,i,0x23d000000001");
        let mut st = PrState::default();
        let mut p = params(0, 0x55, 0x08 | 0x04 | 0x01);
        let mut ids = Vec::new();
        write_transport_id("iqn.b", &mut ids);
        p.extend_from_slice(&(ids.len() as u32).to_be_bytes());
        p.extend_from_slice(&ids);
        st.pr_out(
            &a,
            PrOutCdb {
                sa: 0,
                scope: 0,
                pr_type: 0,
            },
            &p,
        )
        .expect("register with SPEC_I_PT");
        assert_eq!(keys(&st), vec![0x55, 0x55]);
        assert!(st.aptpl);
        // ALL_TG_PT: the registration covers another target port.
        assert!(st
            .reg_of(&Nexus {
                initiator: a.initiator.clone(),
                rtpi: 9
            })
            .is_some());
        let mut buf = Vec::new();
        st.pr_in(3, &mut buf).expect("full status");
        let first_len = u32::from_be_bytes([buf[28], buf[29], buf[30], buf[31]]) as usize;
        assert_eq!(
            buf[32], 0x45,
            "format 01 TransportID for a name with an ISID"
        );
        let (name, _) = parse_transport_id(&buf[32..32 + first_len], 0).expect("tid");
        assert_eq!(name, a.initiator);
        assert_eq!(
            u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) as usize,
            buf.len() - 8
        );
        // Persisted and restored.
        let saved = st.saved().expect("aptpl");
        let back = PrState::restore(saved);
        assert_eq!(back.regs, st.regs);
        // A bad TransportID is refused with a parameter-list pointer.
        assert!(parse_transport_id(&[0x01, 0, 0, 4, b'x', 0, 0, 0], 24).is_err());
        // Wrong parameter list length.
        assert_eq!(
            st.pr_out(
                &a,
                PrOutCdb {
                    sa: 1,
                    scope: 0,
                    pr_type: 1
                },
                &[0; 20]
            ),
            Err(PrError::Check(Sense::illegal_request(
                Asc::PARAMETER_LIST_LENGTH_ERROR
            )))
        );
    }

    #[test]
    fn scsi2_reservations() {
        let (a, b) = (nx("a"), nx("b"));
        let mut st = PrState::default();
        st.reserve_scsi2(&a).expect("reserve");
        assert_eq!(st.reserve_scsi2(&b), Err(PrError::Conflict));
        assert!(st.conflicts(&b, Access::Read));
        assert!(!st.conflicts(&b, Access::Release));
        assert!(!st.conflicts(&a, Access::Write));
        st.release_scsi2(&b).expect("no-op");
        assert!(st.conflicts(&b, Access::Write));
        assert_eq!(
            out(&mut st, &b, 0, 0, 0, 1),
            Err(PrError::Conflict),
            "PR OUT conflicts with SCSI-2"
        );
        st.nexus_lost(&a);
        assert!(!st.conflicts(&b, Access::Write));
    }
}

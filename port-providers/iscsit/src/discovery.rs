//! SendTargets (RFC 7143 §13.3 and appendix C) and the Text Request/Response
//! exchange that carries it (RFC 7143 §11.10, §11.11), sans-IO.
//!
//! [`send_targets`] builds the answer: `TargetName=` followed by one
//! `TargetAddress=<ip>:<port>,<tag>` per portal, for each target the initiator may log
//! in to: online (not offline, not being removed), reachable at some address, and
//! admitted by the [`AccessPolicy`] for the session's [`Identity`] (a name that is not
//! proven sees only targets with an empty ACL). A target that requires CHAP is listed
//! whether or not the initiator can pass it: whether it holds a secret is known only
//! at login (docs/security.md). `SendTargets=All` is for discovery sessions;
//! `SendTargets=<name>` answers that target only; an empty value in a normal
//! session answers the session's own target. A target the initiator may not see is
//! left out exactly like one that does not exist.
//!
//! [`TextResponder`] runs one connection's Text exchanges: it acknowledges requests
//! sent in parts (C bit), hands the whole request text to the caller, and sends
//! answers longer than the initiator's MaxRecvDataSegmentLength over several Text
//! Responses (F=0 with a Target Transfer Tag, each pulled by an empty Text Request
//! echoing it; C=1 only when a single pair must be split).

#![warn(missing_docs)]

use std::net::SocketAddr;

use idm::keys::{self, KeyError, LocalConfig, NegContext, NegotiatedParams, SessionType};
use idm::pdu::{RejectReason, Stage, TargetSn, TextRequest, TextResponse, RESERVED_TAG};
use idm::text::{self, TextAccumulator, TextBuilder, TextError};

use crate::auth::Identity;
use crate::config::{AccessPolicy, IscsitConfig, TargetConfig, DEFAULT_TPG_TAG};
use crate::names::IscsiName;

/// What a SendTargets value asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendTargetsQuery {
    /// `All`: every target the initiator may see (discovery sessions only).
    All,
    /// A target name (normalized; `None` if the value is not a valid name).
    Named(Option<IscsiName>),
    /// Empty: the target of this (normal) session.
    SessionTarget,
}

impl SendTargetsQuery {
    /// Interprets a SendTargets value.
    pub fn parse(value: &str) -> Self {
        match value {
            "All" => SendTargetsQuery::All,
            "" => SendTargetsQuery::SessionTarget,
            v => SendTargetsQuery::Named(IscsiName::parse_lenient(v).ok()),
        }
    }
}

/// Who is asking, and over which connection.
pub struct DiscoveryContext<'a> {
    /// Targets and portal groups.
    pub config: &'a IscsitConfig,
    /// Who may see what.
    pub access: &'a dyn AccessPolicy,
    /// Whether a target is online (offline targets are not advertised).
    pub is_online: &'a dyn Fn(&IscsiName) -> bool,
    /// The session's InitiatorName.
    pub initiator: &'a IscsiName,
    /// What the session's login established about that name.
    pub identity: Identity,
    /// The session's type.
    pub session_type: SessionType,
    /// The session's target (normal sessions).
    pub session_target: Option<&'a IscsiName>,
    /// The local address the request arrived on: advertised for targets on the
    /// default portal group and in place of wildcard portals, and listed first.
    pub local_portal: Option<SocketAddr>,
}

/// A Text exchange that cannot be answered with a Text Response: the caller sends a
/// Reject with [`DiscoveryError::reject_reason`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// The text does not parse.
    #[error("malformed text request: {0}")]
    Text(#[from] TextError),
    /// A key that may not be sent here.
    #[error("text request key error: {0}")]
    Key(#[from] KeyError),
    /// A Target Transfer Tag that names no exchange in progress.
    #[error("target transfer tag {0:#010x} names no text exchange in progress")]
    UnknownTtt(u32),
    /// A continuation request that carries data.
    #[error("a Text Request continuing a response must be empty")]
    DataInContinuation,
    /// The answer does not encode (an over-long configured value).
    #[error("the answer does not encode: {0}")]
    Encode(TextError),
}

impl DiscoveryError {
    /// The Reject reason to answer with.
    pub fn reject_reason(&self) -> RejectReason {
        match self {
            DiscoveryError::UnknownTtt(_) => RejectReason::InvalidPduField,
            _ => RejectReason::ProtocolError,
        }
    }
}

fn address_text(addr: SocketAddr, tag: u16) -> String {
    match addr {
        SocketAddr::V4(a) => format!("{}:{},{tag}", a.ip(), a.port()),
        // No scope id: it means nothing to the peer and '%' is not a text-value.
        SocketAddr::V6(a) => format!("[{}]:{},{tag}", a.ip(), a.port()),
    }
}

/// The `(address, tag)` pairs under which `target` is reachable, the portal the
/// request arrived on first. Wildcard portals are advertised as `local_portal`'s
/// address (skipped when it is unknown); a target on the default portal group is
/// advertised at the default portals.
pub fn target_addresses(
    config: &IscsitConfig,
    target: &TargetConfig,
    local_portal: Option<SocketAddr>,
) -> Vec<(SocketAddr, u16)> {
    let mut out: Vec<(SocketAddr, u16)> = Vec::new();
    let default = [DEFAULT_TPG_TAG];
    let tags: &[u16] = if target.tpg_tags.is_empty() {
        &default
    } else {
        &target.tpg_tags
    };
    for &tag in tags {
        for p in config.portals_of(tag) {
            let addr = match (p.is_wildcard(), local_portal) {
                (true, Some(local)) => SocketAddr::new(local.ip(), p.addr().port()),
                (true, None) => continue,
                (false, _) => p.addr(),
            };
            if !out.iter().any(|(a, _)| *a == addr) {
                out.push((addr, tag));
            }
        }
    }
    if let Some(local) = local_portal {
        if let Some(pos) = out.iter().position(|(a, _)| *a == local) {
            let first = out.remove(pos);
            out.insert(0, first);
        }
    }
    out
}

fn push_target(
    ctx: &DiscoveryContext<'_>,
    t: &TargetConfig,
    out: &mut TextBuilder,
) -> Result<(), DiscoveryError> {
    out.push("TargetName", t.name.as_str())
        .map_err(DiscoveryError::Encode)?;
    for (addr, tag) in target_addresses(ctx.config, t, ctx.local_portal) {
        out.push("TargetAddress", &address_text(addr, tag))
            .map_err(DiscoveryError::Encode)?;
    }
    Ok(())
}

fn visible(ctx: &DiscoveryContext<'_>, t: &TargetConfig) -> bool {
    (ctx.is_online)(&t.name)
        && ctx.access.may_access_as(ctx.initiator, ctx.identity, t)
        && !target_addresses(ctx.config, t, ctx.local_portal).is_empty()
}

/// Appends the answer to `SendTargets=<value>` to `out`. Forms the session may not
/// use are answered `SendTargets=Reject`; unknown or hidden targets give nothing.
pub fn send_targets(
    ctx: &DiscoveryContext<'_>,
    value: &str,
    out: &mut TextBuilder,
) -> Result<(), DiscoveryError> {
    let discovery = ctx.session_type == SessionType::Discovery;
    let wanted: Option<&IscsiName> = match SendTargetsQuery::parse(value) {
        SendTargetsQuery::All if discovery => {
            for t in ctx.config.targets.iter().filter(|t| visible(ctx, t)) {
                push_target(ctx, t, out)?;
            }
            return Ok(());
        }
        SendTargetsQuery::SessionTarget if !discovery => ctx.session_target,
        SendTargetsQuery::All | SendTargetsQuery::SessionTarget => {
            out.push("SendTargets", "Reject")
                .map_err(DiscoveryError::Encode)?;
            return Ok(());
        }
        SendTargetsQuery::Named(None) => None,
        // In a normal session only the session's own target is reported.
        SendTargetsQuery::Named(Some(ref n)) if !discovery && Some(n) != ctx.session_target => None,
        SendTargetsQuery::Named(Some(n)) => {
            if let Some(t) = ctx.config.target(&n).filter(|t| visible(ctx, t)) {
                push_target(ctx, t, out)?;
            }
            return Ok(());
        }
    };
    if let Some(t) = wanted
        .and_then(|n| ctx.config.target(n))
        .filter(|t| visible(ctx, t))
    {
        push_target(ctx, t, out)?;
    }
    Ok(())
}

/// Answers a whole Text Request text: SendTargets as [`send_targets`], every other
/// key through [`idm::keys::negotiate`] in full feature phase (updating `params`).
pub fn answer_text(
    ctx: &DiscoveryContext<'_>,
    local: &LocalConfig,
    params: &mut NegotiatedParams,
    request: &[u8],
) -> Result<Vec<u8>, DiscoveryError> {
    let pairs = text::parse(request)?;
    let mut out = TextBuilder::new();
    for (k, v) in pairs {
        if k == "SendTargets" {
            send_targets(ctx, v, &mut out)?;
            continue;
        }
        let neg_ctx = NegContext::new(Stage::FullFeaturePhase, true, params);
        let n = keys::negotiate(local, &neg_ctx, k, v)?;
        if let (Some(id), Some(value)) = (n.key, &n.agreed) {
            params.apply(id, value);
        }
        if let Some(reply) = n.reply.as_str() {
            out.push(k, reply).map_err(DiscoveryError::Encode)?;
        }
    }
    Ok(out.into_bytes())
}

/// A Text Response to send: header and data segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextPdu {
    /// The header.
    pub header: TextResponse,
    /// The key=value data segment.
    pub data: Vec<u8>,
}

/// What [`TextResponder::receive`] made of a Text Request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextInput {
    /// Send this (an acknowledgement of a partial request, or the next part of a
    /// long answer).
    Respond(TextPdu),
    /// The whole request text: build the answer and pass it to
    /// [`TextResponder::respond`] with the same request header.
    Request(Vec<u8>),
}

#[derive(Debug)]
enum Exchange {
    Idle,
    /// Receiving a request in parts, or waiting for the next request of a
    /// negotiation the initiator left open (F=0).
    Receiving {
        itt: u32,
        ttt: u32,
    },
    /// Sending an answer in parts.
    Sending {
        itt: u32,
        ttt: u32,
        rest: Vec<u8>,
        final_bit: bool,
    },
}

/// One connection's Text Request/Response exchanges.
#[derive(Debug)]
pub struct TextResponder {
    acc: TextAccumulator,
    max_send: usize,
    next_ttt: u32,
    state: Exchange,
}

/// The length of the next Text Response segment of `data` and its C bit: as many
/// whole pairs as fit in `max` bytes, or `max` bytes of one over-long pair (C=1).
fn next_segment(data: &[u8], max: usize) -> (usize, bool) {
    let max = max.max(1);
    if data.len() <= max {
        return (data.len(), false);
    }
    match data
        .get(..max)
        .and_then(|d| d.iter().rposition(|&c| c == 0))
    {
        Some(nul) => (nul + 1, false),
        None => (max, true),
    }
}

impl TextResponder {
    /// A responder sending at most `max_send_segment` bytes per PDU (the initiator's
    /// MaxRecvDataSegmentLength) and accepting request texts up to `max_text` bytes.
    pub fn new(max_send_segment: u32, max_text: usize) -> Self {
        Self {
            acc: TextAccumulator::new(max_text),
            max_send: max_send_segment as usize,
            next_ttt: 1,
            state: Exchange::Idle,
        }
    }

    /// Changes the send limit (after a MaxRecvDataSegmentLength declaration).
    pub fn set_max_send_segment(&mut self, max_send_segment: u32) {
        self.max_send = max_send_segment as usize;
    }

    /// True when no exchange is in progress.
    pub fn is_idle(&self) -> bool {
        matches!(self.state, Exchange::Idle)
    }

    fn alloc_ttt(&mut self) -> u32 {
        let t = self.next_ttt;
        self.next_ttt = self.next_ttt.wrapping_add(1);
        if self.next_ttt == RESERVED_TAG || self.next_ttt == 0 {
            self.next_ttt = 1;
        }
        t
    }

    fn pdu(
        req: &TextRequest,
        final_bit: bool,
        cont: bool,
        ttt: u32,
        sn: TargetSn,
        data: Vec<u8>,
    ) -> TextPdu {
        TextPdu {
            header: TextResponse {
                final_bit,
                cont,
                lun: req.lun,
                itt: req.itt,
                ttt,
                sn,
            },
            data,
        }
    }

    /// Takes one Text Request. A new request (TTT 0xffffffff) abandons any exchange
    /// in progress (RFC 7143 §11.10.4).
    pub fn receive(
        &mut self,
        req: &TextRequest,
        data: &[u8],
        sn: TargetSn,
    ) -> Result<TextInput, DiscoveryError> {
        if req.ttt == RESERVED_TAG {
            self.state = Exchange::Idle;
            self.acc.reset();
            return self.accumulate(req, data, None, sn);
        }
        match std::mem::replace(&mut self.state, Exchange::Idle) {
            Exchange::Receiving { itt, ttt } if itt == req.itt && ttt == req.ttt => {
                self.accumulate(req, data, Some(ttt), sn)
            }
            Exchange::Sending {
                itt,
                ttt,
                rest,
                final_bit,
            } if itt == req.itt && ttt == req.ttt => {
                if !data.is_empty() || req.cont {
                    // Rejected; the initiator may still pull the rest properly.
                    self.state = Exchange::Sending {
                        itt,
                        ttt,
                        rest,
                        final_bit,
                    };
                    return Err(DiscoveryError::DataInContinuation);
                }
                Ok(TextInput::Respond(
                    self.send_part(req, ttt, rest, final_bit, sn),
                ))
            }
            other => {
                self.state = other;
                Err(DiscoveryError::UnknownTtt(req.ttt))
            }
        }
    }

    fn accumulate(
        &mut self,
        req: &TextRequest,
        data: &[u8],
        ttt: Option<u32>,
        sn: TargetSn,
    ) -> Result<TextInput, DiscoveryError> {
        match self.acc.push(data, req.cont)? {
            Some(text) => Ok(TextInput::Request(text.to_vec())),
            None => {
                let ttt = match ttt {
                    Some(t) => t,
                    None => self.alloc_ttt(),
                };
                self.state = Exchange::Receiving { itt: req.itt, ttt };
                Ok(TextInput::Respond(Self::pdu(
                    req,
                    false,
                    false,
                    ttt,
                    sn,
                    Vec::new(),
                )))
            }
        }
    }

    /// Sends `answer` to the request `req` (the one [`TextInput::Request`] came
    /// from): in one Text Response if it fits, else the first part (F=0, TTT set).
    pub fn respond(&mut self, req: &TextRequest, answer: Vec<u8>, sn: TargetSn) -> TextPdu {
        let ttt = self.alloc_ttt();
        self.send_part(req, ttt, answer, req.final_bit, sn)
    }

    fn send_part(
        &mut self,
        req: &TextRequest,
        ttt: u32,
        mut rest: Vec<u8>,
        final_bit: bool,
        sn: TargetSn,
    ) -> TextPdu {
        let (len, cont) = next_segment(&rest, self.max_send);
        let tail = rest.split_off(len);
        if !tail.is_empty() {
            self.state = Exchange::Sending {
                itt: req.itt,
                ttt,
                rest: tail,
                final_bit,
            };
            return Self::pdu(req, false, cont, ttt, sn, rest);
        }
        if final_bit {
            self.state = Exchange::Idle;
            Self::pdu(req, true, false, RESERVED_TAG, sn, rest)
        } else {
            // The initiator left the negotiation open: the next request continues it.
            self.state = Exchange::Receiving { itt: req.itt, ttt };
            Self::pdu(req, false, false, ttt, sn, rest)
        }
    }
}

#[cfg(test)]
mod tests;

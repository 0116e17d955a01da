//! IDM, the iSCSI Data Mover: everything between a byte stream and iSCSI PDUs.
//!
//! Sans-IO throughout (after `quinn-proto`/`rustls`): bytes in, PDUs and answers out.
//!
//! - [`pdu`]: BHS view, validated headers for every RFC 7143 opcode, AHS, CRC32C
//!   digests, the receive framer ([`pdu::PduReader`]) and the scatter-gather writer
//!   ([`pdu::TxFrame`]).
//! - [`text`]: `key=value` data segments of Login and Text PDUs.
//! - [`keys`]: the login key table (RFC 7143 §13, iSER RFC 7145) and the pure
//!   negotiation function.
//!
//! The connection state machine (`conn`) and the transports (`transport`) build on
//! these modules.

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod chap;
pub mod conn;
pub mod keys;
pub mod pdu;
pub mod text;
pub mod transport;

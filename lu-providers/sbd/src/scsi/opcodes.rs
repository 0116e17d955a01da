//! The commands sbd supports, with their CDB usage data (the bits the device server looks
//! at) and timeouts, for REPORT SUPPORTED OPERATION CODES (SPC-4 §6.35). The dispatcher in
//! `crate::lu` and this table must agree; a test checks every entry is dispatched.

use plugins_sdk::scsi::{CdbError, ReportSupportedOpcodes};

/// One supported command.
#[derive(Clone, Copy, Debug)]
pub struct Command {
    /// Operation code.
    pub opcode: u8,
    /// Service action, for opcodes that have them.
    pub sa: Option<u16>,
    /// CDB usage data (length = CDB length; byte 0 is the opcode).
    pub usage: &'static [u8],
    /// Recommended timeout in seconds.
    pub timeout: u32,
}

const fn c(opcode: u8, sa: Option<u16>, usage: &'static [u8], timeout: u32) -> Command {
    Command {
        opcode,
        sa,
        usage,
        timeout,
    }
}

const RW10: u8 = 0xF8;

/// Every command sbd implements (REPORT LUNS is the core's).
pub const COMMANDS: &[Command] = &[
    c(0x00, None, &[0x00, 0, 0, 0, 0, 0x07], 30),
    c(0x03, None, &[0x03, 0x01, 0, 0, 0xFF, 0x07], 30),
    c(0x08, None, &[0x08, 0x1F, 0xFF, 0xFF, 0xFF, 0x07], 60),
    c(0x0A, None, &[0x0A, 0x1F, 0xFF, 0xFF, 0xFF, 0x07], 60),
    c(0x12, None, &[0x12, 0x01, 0xFF, 0xFF, 0xFF, 0x07], 30),
    c(0x15, None, &[0x15, 0x11, 0, 0, 0xFF, 0x07], 30),
    c(0x16, None, &[0x16, 0, 0, 0, 0, 0x07], 30),
    c(0x17, None, &[0x17, 0, 0, 0, 0, 0x07], 30),
    c(0x1A, None, &[0x1A, 0x08, 0xFF, 0xFF, 0xFF, 0x07], 30),
    c(0x1B, None, &[0x1B, 0x01, 0, 0x0F, 0xF7, 0x07], 60),
    c(
        0x25,
        None,
        &[0x25, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0x01, 0x07],
        30,
    ),
    c(
        0x28,
        None,
        &[0x28, RW10, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0xFF, 0xFF, 0x07],
        60,
    ),
    c(
        0x2A,
        None,
        &[0x2A, RW10, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0xFF, 0xFF, 0x07],
        60,
    ),
    c(
        0x2E,
        None,
        &[0x2E, 0xF2, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0xFF, 0xFF, 0x07],
        60,
    ),
    c(
        0x2F,
        None,
        &[0x2F, 0xF6, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0xFF, 0xFF, 0x07],
        60,
    ),
    c(
        0x34,
        None,
        &[0x34, 0x02, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0xFF, 0xFF, 0x07],
        60,
    ),
    c(
        0x35,
        None,
        &[0x35, 0x02, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0xFF, 0xFF, 0x07],
        120,
    ),
    c(
        0x37,
        None,
        &[0x37, 0, 0x1F, 0, 0, 0, 0, 0xFF, 0xFF, 0x07],
        30,
    ),
    c(
        0x41,
        None,
        &[0x41, 0xF8, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0xFF, 0xFF, 0x07],
        120,
    ),
    c(
        0x42,
        None,
        &[0x42, 0x01, 0, 0, 0, 0, 0x1F, 0xFF, 0xFF, 0x07],
        120,
    ),
    c(
        0x48,
        Some(0x01),
        &[0x48, 0xBF, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0x07],
        3600,
    ),
    // BLOCK ERASE: thin LUs whose deallocated blocks read as zeros only (see `report`).
    c(
        0x48,
        Some(0x02),
        &[0x48, 0xBF, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0x07],
        3600,
    ),
    c(
        0x48,
        Some(0x1F),
        &[0x48, 0xBF, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0x07],
        30,
    ),
    c(
        0x4D,
        None,
        &[0x4D, 0x01, 0xFF, 0xFF, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0x07],
        30,
    ),
    c(
        0x55,
        None,
        &[0x55, 0x11, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0x07],
        30,
    ),
    c(0x56, None, &[0x56, 0, 0, 0, 0, 0, 0, 0, 0, 0x07], 30),
    c(0x57, None, &[0x57, 0, 0, 0, 0, 0, 0, 0, 0, 0x07], 30),
    c(
        0x5A,
        None,
        &[0x5A, 0x18, 0xFF, 0xFF, 0, 0, 0, 0xFF, 0xFF, 0x07],
        30,
    ),
    c(
        0x5E,
        Some(0x00),
        &[0x5E, 0x1F, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0x07],
        30,
    ),
    c(
        0x5E,
        Some(0x01),
        &[0x5E, 0x1F, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0x07],
        30,
    ),
    c(
        0x5E,
        Some(0x02),
        &[0x5E, 0x1F, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0x07],
        30,
    ),
    c(
        0x5E,
        Some(0x03),
        &[0x5E, 0x1F, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0x07],
        30,
    ),
    c(
        0x5F,
        Some(0x00),
        &[0x5F, 0x1F, 0xFF, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0x07],
        30,
    ),
    c(
        0x5F,
        Some(0x01),
        &[0x5F, 0x1F, 0xFF, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0x07],
        30,
    ),
    c(
        0x5F,
        Some(0x02),
        &[0x5F, 0x1F, 0xFF, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0x07],
        30,
    ),
    c(
        0x5F,
        Some(0x03),
        &[0x5F, 0x1F, 0xFF, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0x07],
        30,
    ),
    c(
        0x5F,
        Some(0x04),
        &[0x5F, 0x1F, 0xFF, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0x07],
        30,
    ),
    c(
        0x5F,
        Some(0x05),
        &[0x5F, 0x1F, 0xFF, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0x07],
        30,
    ),
    c(
        0x5F,
        Some(0x06),
        &[0x5F, 0x1F, 0xFF, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0x07],
        30,
    ),
    c(
        0x5F,
        Some(0x07),
        &[0x5F, 0x1F, 0xFF, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0x07],
        30,
    ),
    c(
        0x83,
        Some(0x00),
        &[
            0x83, 0x1F, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0x07,
        ],
        600,
    ),
    c(
        0x84,
        Some(0x00),
        &[
            0x84, 0x1F, 0xFF, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0x07,
        ],
        30,
    ),
    c(
        0x84,
        Some(0x03),
        &[
            0x84, 0x1F, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0x07,
        ],
        30,
    ),
    c(
        0x88,
        None,
        &[
            0x88, RW10, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
            0x1F, 0x07,
        ],
        60,
    ),
    c(
        0x89,
        None,
        &[
            0x89, RW10, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0xFF, 0x1F, 0x07,
        ],
        60,
    ),
    c(
        0x8A,
        None,
        &[
            0x8A, RW10, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
            0x1F, 0x07,
        ],
        60,
    ),
    c(
        0x8B,
        None,
        &[
            0x8B, RW10, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
            0x1F, 0x07,
        ],
        60,
    ),
    c(
        0x8E,
        None,
        &[
            0x8E, 0xF2, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
            0x1F, 0x07,
        ],
        60,
    ),
    c(
        0x8F,
        None,
        &[
            0x8F, 0xF6, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
            0x1F, 0x07,
        ],
        60,
    ),
    c(
        0x90,
        None,
        &[
            0x90, 0x02, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
            0x1F, 0x07,
        ],
        60,
    ),
    c(
        0x91,
        None,
        &[
            0x91, 0x02, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
            0x1F, 0x07,
        ],
        120,
    ),
    c(
        0x93,
        None,
        &[
            0x93, 0xF9, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
            0x1F, 0x07,
        ],
        120,
    ),
    c(
        0x9E,
        Some(0x10),
        &[
            0x9E, 0x1F, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0x07,
        ],
        30,
    ),
    c(
        0x9E,
        Some(0x12),
        &[
            0x9E, 0x1F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0,
            0x07,
        ],
        30,
    ),
    c(
        0xA3,
        Some(0x0A),
        &[0xA3, 0xFF, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0x07],
        30,
    ),
    c(
        0xA3,
        Some(0x0C),
        &[
            0xA3, 0x1F, 0x87, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0x07,
        ],
        30,
    ),
    c(
        0xA8,
        None,
        &[
            0xA8, RW10, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0x07,
        ],
        60,
    ),
    c(
        0xAA,
        None,
        &[
            0xAA, RW10, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0x07,
        ],
        60,
    ),
    c(
        0xAE,
        None,
        &[
            0xAE, 0xF2, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0x07,
        ],
        60,
    ),
    c(
        0xAF,
        None,
        &[
            0xAF, 0xF6, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0x07,
        ],
        60,
    ),
    c(
        0xB7,
        None,
        &[
            0xB7, 0x1F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0x07,
        ],
        30,
    ),
];

/// Whether an opcode has service actions in this table.
fn has_sa(opcode: u8) -> bool {
    COMMANDS
        .iter()
        .any(|c| c.opcode == opcode && c.sa.is_some())
}

fn timeouts(out: &mut Vec<u8>, t: u32) {
    out.extend_from_slice(&[0x00, 0x0A, 0, 0]);
    out.extend_from_slice(&0u32.to_be_bytes()); // nominal processing time: unknown
    out.extend_from_slice(&t.to_be_bytes());
}

/// Builds REPORT SUPPORTED OPERATION CODES data for an LU that supports the commands of
/// [`COMMANDS`] for which `supports` is true (some depend on the LU: UNMAP and BLOCK ERASE
/// on thin provisioning).
pub fn report(
    r: &ReportSupportedOpcodes,
    supports: impl Fn(&Command) -> bool,
    out: &mut Vec<u8>,
) -> Result<(), CdbError> {
    out.clear();
    let op = r.opcode.0;
    let commands = || COMMANDS.iter().filter(|c| supports(c));
    match r.reporting_options {
        0 => {
            out.extend_from_slice(&[0; 4]);
            for cmd in commands() {
                out.push(cmd.opcode);
                out.push(0);
                out.extend_from_slice(&cmd.sa.unwrap_or(0).to_be_bytes());
                out.push(0);
                out.push(u8::from(r.rctd) << 1 | u8::from(cmd.sa.is_some()));
                out.extend_from_slice(&(cmd.usage.len() as u16).to_be_bytes());
                if r.rctd {
                    timeouts(out, cmd.timeout);
                }
            }
            let n = (out.len() - 4) as u32;
            out[..4].copy_from_slice(&n.to_be_bytes());
        }
        opts => {
            let found = match opts {
                1 => {
                    if has_sa(op) {
                        return Err(CdbError::InvalidField {
                            byte: 2,
                            bit: Some(2),
                        });
                    }
                    commands().find(|c| c.opcode == op)
                }
                2 => {
                    if !has_sa(op) && COMMANDS.iter().any(|c| c.opcode == op) {
                        return Err(CdbError::InvalidField {
                            byte: 2,
                            bit: Some(2),
                        });
                    }
                    commands().find(|c| c.opcode == op && c.sa == Some(r.service_action))
                }
                _ => commands()
                    .find(|c| c.opcode == op && (c.sa.is_none() || c.sa == Some(r.service_action))),
            };
            match found {
                Some(cmd) => {
                    out.push(0);
                    out.push(u8::from(r.rctd) << 7 | 0x03); // supported, standard conformant
                    out.extend_from_slice(&(cmd.usage.len() as u16).to_be_bytes());
                    out.extend_from_slice(cmd.usage);
                    if r.rctd {
                        timeouts(out, cmd.timeout);
                    }
                }
                None => out.extend_from_slice(&[0, 0x01, 0, 0]), // not supported
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use plugins_sdk::scsi::Cdb;

    fn rsoc(opts: u8, rctd: bool, op: u8, sa: u16) -> ReportSupportedOpcodes {
        let s = sa.to_be_bytes();
        let cdb = [
            0xA3,
            0x0C,
            opts | if rctd { 0x80 } else { 0 },
            op,
            s[0],
            s[1],
            0,
            0,
            0x10,
            0,
            0,
            0,
        ];
        ReportSupportedOpcodes::decode(&Cdb::parse(&cdb).expect("cdb")).expect("rsoc")
    }

    fn report_all(r: &ReportSupportedOpcodes, out: &mut Vec<u8>) -> Result<(), CdbError> {
        report(r, |_| true, out)
    }

    #[test]
    fn filtered_commands_are_not_reported() {
        let mut out = Vec::new();
        let no_erase = |c: &Command| (c.opcode, c.sa) != (0x48, Some(0x02));
        report(&rsoc(0, false, 0, 0), no_erase, &mut out).expect("all");
        assert_eq!(out.len(), 4 + 8 * (COMMANDS.len() - 1));
        report(&rsoc(2, false, 0x48, 0x02), no_erase, &mut out).expect("one");
        assert_eq!(out, [0, 1, 0, 0]);
        report(&rsoc(2, false, 0x48, 0x01), no_erase, &mut out).expect("one");
        assert_eq!(out[1], 3);
    }

    #[test]
    fn table_is_consistent() {
        for cmd in COMMANDS {
            assert_eq!(cmd.usage[0], cmd.opcode);
            let len = plugins_sdk::scsi::OpCode(cmd.opcode)
                .cdb_len()
                .expect("fixed length");
            assert_eq!(cmd.usage.len(), len, "{:#x}", cmd.opcode);
        }
    }

    #[test]
    fn all_and_one() {
        let mut out = Vec::new();
        report_all(&rsoc(0, false, 0, 0), &mut out).expect("all");
        assert_eq!(out.len(), 4 + 8 * COMMANDS.len());
        report_all(&rsoc(0, true, 0, 0), &mut out).expect("all with timeouts");
        assert_eq!(out.len(), 4 + 20 * COMMANDS.len());
        assert_eq!(out[4 + 5], 0x02);
        report_all(&rsoc(1, true, 0x28, 0), &mut out).expect("one");
        assert_eq!(&out[..4], &[0, 0x83, 0, 10]);
        assert_eq!(
            &out[4..14],
            &[0x28, RW10, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0xFF, 0xFF, 0x07]
        );
        assert_eq!(&out[14..18], &[0, 0x0A, 0, 0]);
        report_all(&rsoc(1, false, 0xC0, 0), &mut out).expect("unsupported");
        assert_eq!(out, [0, 1, 0, 0]);
        assert_eq!(
            report_all(&rsoc(1, false, 0x9E, 0), &mut out),
            Err(CdbError::InvalidField {
                byte: 2,
                bit: Some(2)
            })
        );
        report_all(&rsoc(2, false, 0x9E, 0x10), &mut out).expect("rc16");
        assert_eq!(out[1], 3);
        assert_eq!(
            report_all(&rsoc(2, false, 0x28, 0), &mut out),
            Err(CdbError::InvalidField {
                byte: 2,
                bit: Some(2)
            })
        );
        report_all(&rsoc(3, false, 0x28, 0), &mut out).expect("either");
        assert_eq!(out[1], 3);
    }
}

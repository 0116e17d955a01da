//! Client side of the control protocol, shared by every CLI (stmfadm, sbdadm, itadm).
//!
//! Every CLI flattens [`GlobalOpts`] into its top-level parser, so `--socket PATH`
//! (env `STMF_SOCKET`) and `--json` work before or after the subcommand, connects with
//! [`Client::connect`], and prints with [`print_json`] or [`print_fields`]. [`lu`] holds the
//! LU commands `stmfadm` and `sbdadm` share.

pub mod lu;

use crate::control::{Reply, Request, DEFAULT_SOCKET, PROTOCOL_VERSION};
use crate::{ObjState, StmfError};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::fmt::Display;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Options every CLI accepts, before or after its subcommand.
#[derive(clap::Args, Clone, Debug)]
pub struct GlobalOpts {
    /// Control socket of stmfd.
    #[arg(long, global = true, env = "STMF_SOCKET", default_value = DEFAULT_SOCKET, value_name = "PATH")]
    pub socket: PathBuf,
    /// Print the result as JSON (the `result` member of the daemon's reply).
    #[arg(long, global = true)]
    pub json: bool,
}

/// Failure of a call to stmfd.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answers on the socket.
    #[error("cannot connect to stmfd at {}: {error} (is stmfd running? start stmfd, or point --socket / STMF_SOCKET at its socket)", path.display())]
    Connect {
        /// The socket.
        path: PathBuf,
        /// The OS error (part of the message, not a separate cause).
        error: io::Error,
    },
    /// The connection failed mid-call.
    #[error("connection to stmfd at {}: {error}", path.display())]
    Io {
        /// The socket.
        path: PathBuf,
        /// The OS error.
        error: io::Error,
    },
    /// The daemon's reply could not be understood.
    #[error("unexpected reply from stmfd: {0}")]
    BadReply(String),
    /// The daemon refused the command.
    #[error(transparent)]
    Remote(#[from] StmfError),
}

/// A connection to stmfd.
pub struct Client {
    path: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: u64,
}

impl Client {
    /// Connects to the daemon's socket.
    pub fn connect(path: &Path) -> Result<Client, ClientError> {
        let connect_err = |error| ClientError::Connect {
            path: path.to_owned(),
            error,
        };
        let writer = UnixStream::connect(path).map_err(connect_err)?;
        let reader = BufReader::new(writer.try_clone().map_err(connect_err)?);
        Ok(Client {
            path: path.to_owned(),
            reader,
            writer,
            next_id: 1,
        })
    }

    /// Sends one command and returns its result.
    pub fn call<A: Serialize>(&mut self, cmd: &str, args: &A) -> Result<Value, ClientError> {
        let args = serde_json::to_value(args)
            .map_err(|e| ClientError::BadReply(format!("cannot encode arguments: {e}")))?;
        let id = self.next_id;
        self.next_id += 1;
        let req = Request {
            v: PROTOCOL_VERSION,
            id: id.into(),
            cmd: cmd.to_owned(),
            args,
        };
        let mut line =
            serde_json::to_string(&req).map_err(|e| ClientError::BadReply(e.to_string()))?;
        line.push('\n');
        let io_err = |error| ClientError::Io {
            path: self.path.clone(),
            error,
        };
        // A daemon that refuses the connection (too many clients) writes its reason and
        // closes: if sending fails, its reply may still be waiting to be read.
        let sent = self.writer.write_all(line.as_bytes());
        let mut reply = String::new();
        let read = self.reader.read_line(&mut reply);
        let n = match (sent, read) {
            (_, Ok(n)) if n > 0 => n,
            (Err(error), _) => return Err(io_err(error)),
            (Ok(()), Err(error)) => return Err(io_err(error)),
            (Ok(()), Ok(n)) => n,
        };
        if n == 0 {
            return Err(ClientError::BadReply("stmfd closed the connection".into()));
        }
        let reply: Reply =
            serde_json::from_str(&reply).map_err(|e| ClientError::BadReply(e.to_string()))?;
        // An error with a null id is about the connection (too many clients, a late or
        // oversized request): the daemon's message says it.
        let about_connection = reply.id.is_null() && !reply.ok;
        if reply.id != id && !about_connection {
            return Err(ClientError::BadReply(format!(
                "reply id {} does not match request id {id}",
                reply.id
            )));
        }
        Ok(reply.into_result()?)
    }

    /// [`Client::call`], decoding the result as `T`.
    pub fn call_as<T: DeserializeOwned, A: Serialize>(
        &mut self,
        cmd: &str,
        args: &A,
    ) -> Result<T, ClientError> {
        let v = self.call(cmd, args)?;
        serde_json::from_value(v).map_err(|e| ClientError::BadReply(format!("{cmd}: {e}")))
    }
}

/// Prints `prog: <error>` on stderr and returns exit status 1.
pub fn fail(prog: &str, err: impl Display) -> ExitCode {
    eprintln!("{prog}: {err}");
    ExitCode::from(1)
}

/// Prints a value as pretty JSON.
pub fn print_json(v: &Value) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => println!("{s}"),
        Err(_) => println!("{v}"),
    }
}

/// Prints `label: value` lines indented by `indent` spaces, the colons aligned
/// (COMSTAR's style: `    Operational Status: Online`).
pub fn print_fields(indent: usize, fields: &[(String, String)]) {
    let w = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in fields {
        println!("{:indent$}{k:<w$}: {v}", "");
    }
}

/// A state as COMSTAR prints it (`Online`, `Offline`, ...).
pub fn state_label(s: ObjState) -> String {
    let s = s.to_string();
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => s,
    }
}

/// A JSON value for humans: strings without quotes, `null` as `-`.
pub fn value_label(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        v => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(state_label(ObjState::Online), "Online");
        assert_eq!(state_label(ObjState::Offlining), "Offlining");
        assert_eq!(value_label(&Value::Null), "-");
        assert_eq!(value_label(&serde_json::json!("a")), "a");
        assert_eq!(value_label(&serde_json::json!(16)), "16");
    }
}

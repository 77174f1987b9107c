//! Port discovery: `--port 0` and the `listening on <addr>` log line.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::time::Instant;

use crate::Process;

/// The text before the address in a node's bound-listener log line.
const LISTENING_ON: &str = "listening on ";

/// Waits for `process` to log `listening on <addr>` on stderr and returns
/// that address (the first one logged).
///
/// The address is the whitespace-delimited token right after
/// `listening on `; anything after it (e.g. `(advertised as ...)`) is
/// ignored.
///
/// # Errors
/// [`io::ErrorKind::TimedOut`] when no such line arrived before `deadline`,
/// [`io::ErrorKind::UnexpectedEof`] when the process closed stderr (exited)
/// first, [`io::ErrorKind::InvalidData`] when the token is not a socket
/// address. Each message includes the process label.
pub fn listen_addr(process: &Process, deadline: Instant) -> io::Result<SocketAddr> {
    let line = process
        .stderr()
        .wait_for(deadline, |l| l.contains(LISTENING_ON))
        .ok_or_else(|| {
            let (kind, why) = if process.stderr().is_closed() {
                (io::ErrorKind::UnexpectedEof, "exited")
            } else {
                (io::ErrorKind::TimedOut, "timed out")
            };
            io::Error::new(
                kind,
                format!(
                    "{}: {why} before logging `{LISTENING_ON}<addr>`",
                    process.label()
                ),
            )
        })?;
    parse_listen_addr(&line).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: no socket address in {line:?}", process.label()),
        )
    })
}

/// The address in a `... listening on <addr> ...` line.
fn parse_listen_addr(line: &str) -> Option<SocketAddr> {
    let (_, rest) = line.split_once(LISTENING_ON)?;
    rest.split_whitespace().next()?.parse().ok()
}

/// A TCP port on 127.0.0.1 that was free a moment ago: binds port 0, reads
/// the port and closes the listener.
///
/// Racy by nature (another process may take the port before it is used), so
/// use it only when a port must be known before the process that binds it
/// exists (e.g. workers started before their seed); prefer `--port 0` and
/// [`listen_addr`].
///
/// # Errors
/// The bind error.
pub fn reserve_port() -> io::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn parses_the_node_line() {
        let line = "2026-11-29T14:11:32Z  INFO n1 node_cli::node: listening on 127.0.0.1:27520 (advertised as 127.0.0.1:27520)";
        assert_eq!(
            parse_listen_addr(line),
            Some("127.0.0.1:27520".parse().unwrap())
        );
        assert_eq!(
            parse_listen_addr("listening on [::1]:9"),
            Some("[::1]:9".parse().unwrap())
        );
        assert_eq!(parse_listen_addr("listening on nowhere"), None);
        assert_eq!(parse_listen_addr("bound"), None);
    }

    #[test]
    fn a_reserved_port_can_be_bound() {
        let port = reserve_port().unwrap();
        assert_ne!(port, 0);
        TcpListener::bind(("127.0.0.1", port)).unwrap();
    }
}

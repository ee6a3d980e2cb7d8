//! The ids of connections: [`ConnId`], unique on this node, and [`SocketId`], the Pusher
//! socket id `node.conn` that names a connection across a cluster.
//!
//! A socket id is kept as its two numbers and formatted only where it is shown (frames,
//! logs, signatures), so a connection holds 12 bytes for it rather than a string.

use std::fmt;

/// A connection's id on this node (the second half of its socket id).
pub type ConnId = u64;

/// A node id drawn at random, from 1 to 10⁹: the first half of its sockets' ids.
pub(crate) fn random_node_id() -> u32 {
    rand::random::<u32>() % 1_000_000_000 + 1
}

/// A connection's Pusher socket id: the node it lives on, then its id there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SocketId {
    /// The node (a random id each node picks at start-up).
    pub node: u32,
    /// The connection on that node.
    pub conn: ConnId,
}

impl SocketId {
    /// Reads `node.conn`, as this server formats it. `None` for anything else, including a
    /// well-formed id whose numbers no node of this server could have given (too large).
    pub fn parse(s: &str) -> Option<SocketId> {
        let (node, conn) = s.split_once('.')?;
        let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
        if !digits(node) || !digits(conn) {
            return None;
        }
        Some(SocketId {
            node: node.parse().ok()?,
            conn: conn.parse().ok()?,
        })
    }

    /// The connection this id names, if it lives on node `node`.
    pub fn on_node(self, node: u32) -> Option<ConnId> {
        (self.node == node).then_some(self.conn)
    }
}

impl fmt::Display for SocketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.node, self.conn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_id_reads_back_what_it_writes() {
        let id = SocketId {
            node: 123_456_789,
            conn: 42,
        };
        assert_eq!(id.to_string(), "123456789.42");
        assert_eq!(SocketId::parse("123456789.42"), Some(id));
        assert_eq!(id.on_node(123_456_789), Some(42));
        assert_eq!(id.on_node(7), None);
    }

    #[test]
    fn anything_but_two_numbers_is_not_a_socket_id() {
        for bad in [
            "",
            "1",
            "1.",
            ".1",
            "1.2.3",
            "a.1",
            "1.b",
            "+1.2",
            "1.-2",
            " 1.2",
            "4294967296.1", // the node does not fit in 32 bits
            "1.18446744073709551616",
        ] {
            assert_eq!(SocketId::parse(bad), None, "{bad:?}");
        }
        // Leading zeros name the same numbers, as they did when ids were parsed ad hoc.
        assert_eq!(
            SocketId::parse("01.007"),
            Some(SocketId { node: 1, conn: 7 })
        );
    }
}

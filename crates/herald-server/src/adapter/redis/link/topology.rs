//! Which master serves which slots, from `CLUSTER SLOTS`, for the sharded subscriber (the
//! cluster connection keeps its own map, but does not share it).

use redis::cluster_async::ClusterConnection;
use redis::{RedisResult, Value};

use super::target::Node;

/// Slot ranges and the master serving each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SlotMap {
    ranges: Vec<(u16, u16, Node)>,
}

impl SlotMap {
    /// Asks the cluster (any node).
    pub(super) async fn fetch(conn: &mut ClusterConnection) -> RedisResult<SlotMap> {
        let value: Value = redis::cmd("CLUSTER").arg("SLOTS").query_async(conn).await?;
        SlotMap::parse(&value).ok_or_else(|| {
            redis::RedisError::from((
                redis::ErrorKind::ParseError,
                "unexpected CLUSTER SLOTS answer",
            ))
        })
    }

    /// Parses `[[start, end, [ip, port, id, ...], replicas...], ...]`.
    fn parse(value: &Value) -> Option<SlotMap> {
        let Value::Array(entries) = value else {
            return None;
        };
        let mut ranges = Vec::with_capacity(entries.len());
        for entry in entries {
            let Value::Array(fields) = entry else {
                return None;
            };
            let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(master))) =
                (fields.first(), fields.get(1), fields.get(2))
            else {
                return None;
            };
            let host = match master.first()? {
                Value::BulkString(ip) => String::from_utf8(ip.clone()).ok()?,
                Value::SimpleString(ip) => ip.clone(),
                _ => return None,
            };
            let Some(Value::Int(port)) = master.get(1) else {
                return None;
            };
            ranges.push((
                u16::try_from(*start).ok()?,
                u16::try_from(*end).ok()?,
                Node {
                    host,
                    port: u16::try_from(*port).ok()?,
                },
            ));
        }
        Some(SlotMap { ranges })
    }

    /// The master serving `slot`, if any does.
    pub(super) fn master(&self, slot: u16) -> Option<&Node> {
        self.ranges
            .iter()
            .find(|(start, end, _)| (*start..=*end).contains(&slot))
            .map(|(_, _, node)| node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn cluster_slots_answers_are_parsed() {
        let range = |a, b, port| {
            Value::Array(vec![
                Value::Int(a),
                Value::Int(b),
                Value::Array(vec![bulk("127.0.0.1"), Value::Int(port), bulk("id")]),
                Value::Array(vec![bulk("127.0.0.1"), Value::Int(port + 1), bulk("r")]),
            ])
        };
        let map = SlotMap::parse(&Value::Array(vec![
            range(0, 8191, 7000),
            range(8192, 16383, 7002),
        ]))
        .expect("a slot map");
        assert_eq!(map.master(0).map(|n| n.port), Some(7000));
        assert_eq!(map.master(8192).map(|n| n.port), Some(7002));
        assert_eq!(map.master(16383).map(|n| n.port), Some(7002));
        assert_eq!(SlotMap::parse(&Value::Array(vec![Value::Int(1)])), None);
        assert_eq!(SlotMap::parse(&Value::Nil), None);
    }
}

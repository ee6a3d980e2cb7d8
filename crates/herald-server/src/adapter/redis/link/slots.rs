//! Hash tags and hash slots: how key names decide which Redis Cluster shard holds them.
//!
//! A cluster runs a script, a MULTI or a pipeline only if every key it names hashes to one
//! slot (else CROSSSLOT). Redis hashes only the part of a key between its first `{` and the
//! next `}` when that part is not empty (the hash tag), so every key built by one
//! [`HashTag`] lands in one slot, whatever follows the tag. Herald tags by app
//! (`{<prefix>:<app>}`): everything a script touches belongs to one app, and apps spread
//! over the shards. Keys shared by every app (the node registry) use the prefix alone as
//! their tag, which puts all of them on one shard; they are few and small.

/// Slots in a Redis Cluster.
pub(crate) const SLOTS: u16 = 16384;

/// The tag every key of one group carries, so the group shares one slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HashTag(String);

impl HashTag {
    /// The keys of one app: `{<prefix>:<app>}`. An app id holding a `}` ends the tag early;
    /// that is harmless, since every key of the app ends it at the same place.
    pub(crate) fn app(prefix: &str, app: &str) -> HashTag {
        HashTag(format!("{{{prefix}:{app}}}"))
    }

    /// The keys every app shares: `{<prefix>}`.
    pub(crate) fn shared(prefix: &str) -> HashTag {
        HashTag(format!("{{{prefix}}}"))
    }

    /// `<tag>:<part>:<part>…`.
    pub(crate) fn key(&self, parts: &[&str]) -> String {
        let mut key = self.0.clone();
        for part in parts {
            key.push(':');
            key.push_str(part);
        }
        key
    }

    /// The slot of every key this tag builds (the adapter needs only the keys).
    #[cfg(test)]
    pub(crate) fn slot(&self) -> u16 {
        slot(self.0.as_bytes())
    }
}

/// The part of `key` Redis hashes: its hash tag if it has a non-empty one, else all of it.
pub(crate) fn hashed_part(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{') {
        if let Some(len) = key[open + 1..].iter().position(|&b| b == b'}') {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

/// The cluster slot of a key (or of a sharded pub/sub channel name): CRC16-XMODEM of its
/// hashed part, modulo 16384, as Redis computes it.
pub(crate) fn slot(key: &[u8]) -> u16 {
    crc16(hashed_part(key)) % SLOTS
}

/// CRC16-XMODEM, from the crate the redis client's own cluster routing uses (its slot
/// function is not public).
fn crc16(bytes: &[u8]) -> u16 {
    crc16::State::<crc16::XMODEM>::calculate(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_the_values_redis_documents() {
        // The check value of CRC16-XMODEM, and slots from the Redis Cluster specification
        // and `CLUSTER KEYSLOT` (the cluster test compares many more against a server).
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"somekey"), 11058);
        assert_eq!(slot(b"{user1000}.following"), slot(b"{user1000}.followers"));
        assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
        // An empty tag does not count: the whole key is hashed.
        assert_eq!(slot(b"foo{}{bar}"), crc16(b"foo{}{bar}") % SLOTS);
        assert_eq!(hashed_part(b"foo{{bar}}zap"), b"{bar");
        assert_eq!(hashed_part(b"no-tag}{"), b"no-tag}{");
    }

    #[test]
    fn keys_of_one_app_share_a_slot_and_apps_spread() {
        let tag = HashTag::app("herald", "app-1");
        assert_eq!(
            tag.key(&["s", "presence-room"]),
            "{herald:app-1}:s:presence-room"
        );
        let keys = [
            tag.key(&["s", "presence-room"]),
            tag.key(&["m", "presence-room"]),
            tag.key(&["n", "7", "s"]),
            tag.key(&[]),
        ];
        for key in &keys {
            assert_eq!(slot(key.as_bytes()), tag.slot(), "{key}");
        }
        let slots: std::collections::HashSet<u16> = (0..32)
            .map(|i| HashTag::app("herald", &format!("app-{i}")).slot())
            .collect();
        assert!(slots.len() > 16, "apps spread over slots: {slots:?}");
        let odd = HashTag::app("herald", "a}b");
        assert_eq!(slot(odd.key(&["u"]).as_bytes()), odd.slot());
        assert_eq!(HashTag::shared("herald").key(&["nodes"]), "{herald}:nodes");
    }
}

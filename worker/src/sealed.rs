//! End-to-end encrypted messages between the two sides of a pair (the
//! MetaMask seed: a dApp and a wallet talking through a relay that must not
//! read them). ChaCha20-Poly1305 with a key per pair; the nonce is the
//! sender's side and the message's sequence number, so it is unique per
//! message under one key without any state beyond the sequence; the
//! associated data binds the pair, the sender and the sequence, so a relay
//! that alters the envelope's `from` or `seq`, or hands one pair's message
//! to another, makes it undecryptable rather than misfiled.
//!
//! On the wire a message is the JSON envelope
//! `{"from":"a","seq":7,"ct":"<base64 of ciphertext and tag>"}`; the
//! plaintext is the intended send time (8 bytes, us since the epoch, for
//! latency) padded to the scenario's message size.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};

/// Largest ciphertext accepted, bytes (the largest message a scenario
/// sends, 16 MiB, and its tag): an envelope claiming more is refused before
/// decoding.
pub const MAX_CIPHERTEXT: usize = (16 << 20) + 16;

/// A side of a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The side that opens the session (the dApp).
    A,
    /// The other (the wallet).
    B,
}

impl Side {
    /// Its name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Side::A => "a",
            Side::B => "b",
        }
    }

    /// The other side.
    pub fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }

    fn byte(self) -> u8 {
        match self {
            Side::A => 0xa,
            Side::B => 0xb,
        }
    }
}

/// One pair's cipher.
pub struct PairCipher {
    cipher: ChaCha20Poly1305,
    pair: u64,
}

impl std::fmt::Debug for PairCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PairCipher").field("pair", &self.pair).field("key", &"<redacted>").finish()
    }
}

/// A message as it travels, before or after decryption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Who sent it.
    pub from: Side,
    /// Its sequence number in the sender's stream.
    pub seq: u64,
    /// Ciphertext and tag.
    pub ciphertext: Vec<u8>,
}

/// What an opened message says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    /// When the sender meant to send it, us since the epoch.
    pub intended_us: i64,
}

impl PairCipher {
    /// The cipher of pair `pair` with a fresh random key (both sides of a
    /// pair live in one worker task and share it; nobody else has it).
    pub fn random(pair: u64) -> PairCipher {
        use ring::rand::{SecureRandom, SystemRandom};
        let mut key = [0u8; 32];
        SystemRandom::new().fill(&mut key).expect("the OS random source works");
        PairCipher::from_key(key, pair)
    }

    /// The cipher of pair `pair` with `key`.
    pub fn from_key(key: [u8; 32], pair: u64) -> PairCipher {
        PairCipher { cipher: ChaCha20Poly1305::new(&Key::from(key)), pair }
    }

    fn nonce(from: Side, seq: u64) -> Nonce {
        let mut n = [0u8; 12];
        n[0] = from.byte();
        n[4..].copy_from_slice(&seq.to_be_bytes());
        Nonce::from(n)
    }

    fn aad(&self, from: Side, seq: u64) -> [u8; 21] {
        let mut aad = [0u8; 21];
        aad[..4].copy_from_slice(b"stp1");
        aad[4..12].copy_from_slice(&self.pair.to_be_bytes());
        aad[12] = from.byte();
        aad[13..].copy_from_slice(&seq.to_be_bytes());
        aad
    }

    /// Seals message `seq` from side `from`, meant to be sent at
    /// `intended_us`, padded to `size` plaintext bytes (at least 8).
    pub fn seal(&self, from: Side, seq: u64, intended_us: i64, size: usize) -> Envelope {
        let mut plain = vec![0u8; size.max(8)];
        plain[..8].copy_from_slice(&intended_us.to_be_bytes());
        let aad = self.aad(from, seq);
        let ciphertext = self
            .cipher
            .encrypt(&Self::nonce(from, seq), Payload { msg: &plain, aad: &aad })
            .expect("ChaCha20-Poly1305 seals any message under 256 GiB");
        Envelope { from, seq, ciphertext }
    }

    /// Opens `envelope`; `None` if it does not authenticate (another key,
    /// another pair, an altered sender, sequence or ciphertext).
    pub fn open(&self, envelope: &Envelope) -> Option<Opened> {
        let aad = self.aad(envelope.from, envelope.seq);
        let nonce = Self::nonce(envelope.from, envelope.seq);
        let plain = self.cipher.decrypt(&nonce, Payload { msg: &envelope.ciphertext, aad: &aad }).ok()?;
        let stamp: [u8; 8] = plain.get(..8)?.try_into().ok()?;
        Some(Opened { intended_us: i64::from_be_bytes(stamp) })
    }
}

impl Envelope {
    /// The envelope as JSON, for a publish's `data`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "from": self.from.name(),
            "seq": self.seq,
            "ct": STANDARD.encode(&self.ciphertext),
        })
    }

    /// Reads an envelope from a message's `data`; `None` if it is not one
    /// (or claims a ciphertext larger than any we send).
    pub fn from_json(data: &serde_json::Value) -> Option<Envelope> {
        let from = match data.get("from")?.as_str()? {
            "a" => Side::A,
            "b" => Side::B,
            _ => return None,
        };
        let seq = data.get("seq")?.as_u64()?;
        let ct = data.get("ct")?.as_str()?;
        if ct.len() > MAX_CIPHERTEXT.div_ceil(3) * 4 {
            return None;
        }
        let ciphertext = STANDARD.decode(ct).ok()?;
        Some(Envelope { from, seq, ciphertext })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_message_opens_with_its_pairs_key_only() {
        let key = [7u8; 32];
        let pair = PairCipher::from_key(key, 17);
        let sealed = pair.seal(Side::A, 3, 1_700_000_000_000_000, 64);
        assert_eq!(sealed.ciphertext.len(), 64 + 16, "padded plaintext and a 16-byte tag");
        let wire = Envelope::from_json(&sealed.to_json()).unwrap();
        assert_eq!(wire, sealed);
        assert_eq!(pair.open(&wire), Some(Opened { intended_us: 1_700_000_000_000_000 }));
        // Another key, another pair, or an altered envelope: undecryptable.
        assert_eq!(PairCipher::from_key([8u8; 32], 17).open(&wire), None, "wrong key");
        assert_eq!(PairCipher::from_key(key, 18).open(&wire), None, "another pair's message");
        assert_eq!(pair.open(&Envelope { seq: 4, ..wire.clone() }), None, "altered sequence");
        assert_eq!(pair.open(&Envelope { from: Side::B, ..wire.clone() }), None, "altered sender");
        let mut flipped = wire.clone();
        flipped.ciphertext[10] ^= 1;
        assert_eq!(pair.open(&flipped), None, "altered ciphertext");
        flipped.ciphertext.truncate(8);
        assert_eq!(pair.open(&flipped), None, "truncated");
    }

    #[test]
    fn nonces_never_repeat_under_one_key() {
        // Each side's sequence gives its own nonces; the two sides differ in
        // the first byte, so the same sequence number on both is two nonces.
        let mut seen = std::collections::HashSet::new();
        for side in [Side::A, Side::B] {
            for seq in (0..1000).chain([u64::MAX - 1, u64::MAX]) {
                assert!(seen.insert(PairCipher::nonce(side, seq)), "{side:?} {seq}");
            }
        }
        // Two random keys differ (a key per pair).
        let (p, q) = (PairCipher::random(1), PairCipher::random(1));
        let sealed = p.seal(Side::A, 0, 0, 8);
        assert!(q.open(&sealed).is_none());
    }

    #[test]
    fn junk_is_not_an_envelope() {
        use serde_json::json;
        for junk in [
            json!(null),
            json!("text"),
            json!({"from": "c", "seq": 1, "ct": ""}),
            json!({"from": "a", "seq": -1, "ct": ""}),
            json!({"from": "a", "seq": 1, "ct": "not base64!"}),
            json!({"from": "a", "seq": 1}),
        ] {
            assert_eq!(Envelope::from_json(&junk), None, "{junk}");
        }
        let huge = "A".repeat(MAX_CIPHERTEXT.div_ceil(3) * 4 + 4);
        assert_eq!(Envelope::from_json(&json!({"from": "a", "seq": 1, "ct": huge})), None, "too big");
    }
}

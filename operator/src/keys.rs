//! WireGuard keys: generation, derivation and validation.
//!
//! Guarantees:
//! - [`PrivateKey`] and [`PresharedKey`] print `<redacted>` through `Debug` and `Display`,
//!   and their bytes are wiped when dropped;
//! - no error of this module carries key material: [`KeyError`] says what is wrong with a
//!   value, never what the value is;
//! - generated private keys are clamped exactly like `wg genkey`, so `wg pubkey` on a
//!   generated key prints [`PrivateKey::public_key`].

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rand_core::{OsRng, RngCore};
use zeroize::{Zeroize, Zeroizing};

/// Why a key could not be read or made. Never contains key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error(
        "is not base64 (a WireGuard key is 44 characters of base64, as printed by 'wg genkey')"
    )]
    NotBase64,
    #[error(
        "decodes to {len} bytes instead of 32 (a WireGuard key is 44 characters of base64, as printed by 'wg genkey')"
    )]
    WrongLength { len: usize },
    #[error("the system random number generator failed: {0}")]
    Random(String),
}

fn decode_32(text: &str) -> Result<Zeroizing<[u8; 32]>, KeyError> {
    let decoded = Zeroizing::new(
        STANDARD
            .decode(text.trim())
            .map_err(|_| KeyError::NotBase64)?,
    );
    let len = decoded.len();
    let mut out = Zeroizing::new([0u8; 32]);
    if len != 32 {
        return Err(KeyError::WrongLength { len });
    }
    out.copy_from_slice(&decoded);
    Ok(out)
}

fn random_32() -> Result<Zeroizing<[u8; 32]>, KeyError> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    OsRng
        .try_fill_bytes(bytes.as_mut())
        .map_err(|e| KeyError::Random(e.to_string()))?;
    Ok(bytes)
}

/// Clamps a Curve25519 scalar as `wg genkey` does.
fn clamp(bytes: &mut [u8; 32]) {
    bytes[0] &= 248;
    bytes[31] &= 127;
    bytes[31] |= 64;
}

/// A WireGuard private key. Its bytes never leave through `Debug`, `Display` or errors;
/// the only way out is [`PrivateKey::to_base64`], for writing the key into its Secret.
#[derive(Clone, PartialEq, Eq)]
pub struct PrivateKey(Zeroizing<[u8; 32]>);

impl PrivateKey {
    /// A fresh key from the operating system's random number generator, clamped.
    pub fn generate() -> Result<Self, KeyError> {
        let mut bytes = random_32()?;
        clamp(&mut bytes);
        Ok(Self(bytes))
    }

    /// Reads a key written as by `wg genkey`. Unclamped keys are accepted (WireGuard
    /// clamps when it uses them), as `wg` does.
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        decode_32(text).map(Self)
    }

    pub fn from_bytes(mut bytes: [u8; 32]) -> Self {
        let key = Self(Zeroizing::new(bytes));
        bytes.zeroize();
        key
    }

    /// The key as `wg genkey` prints it (without newline). Keep the result out of logs.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(self.0.as_ref()))
    }

    /// The public key, as `wg pubkey` derives it.
    pub fn public_key(&self) -> PublicKey {
        let secret = x25519_dalek::StaticSecret::from(*self.0);
        PublicKey(*x25519_dalek::PublicKey::from(&secret).as_bytes())
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

impl fmt::Display for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A WireGuard public key; public, so it prints as base64.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        decode_32(text).map(|b| Self(*b))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// The first characters, for `kubectl get` and for telling keys apart in messages.
    pub fn prefix(&self) -> String {
        self.to_base64()[..PUBLIC_KEY_PREFIX_LEN].to_string()
    }
}

/// How many characters of a public key `status.publicKeyPrefix` shows.
pub const PUBLIC_KEY_PREFIX_LEN: usize = 8;

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_base64())
    }
}

/// A WireGuard pre-shared key (`wg genpsk`): 32 random bytes, secret like a private key.
#[derive(Clone, PartialEq, Eq)]
pub struct PresharedKey(Zeroizing<[u8; 32]>);

impl PresharedKey {
    pub fn generate() -> Result<Self, KeyError> {
        random_32().map(Self)
    }

    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        decode_32(text).map(Self)
    }

    /// The key as `wg genpsk` prints it. Keep the result out of logs.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(self.0.as_ref()))
    }
}

impl fmt::Debug for PresharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PresharedKey(<redacted>)")
    }
}

impl fmt::Display for PresharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // Made on this machine with `wg genkey | tee priv | wg pubkey`.
    const WG_PRIVATE: &str = "uL05OyKCfPLVOdvOUsn5NJx1oRCuLZt/+9All5kZPVE=";
    const WG_PUBLIC: &str = "d7n3aHWXo8ES1G6Z4qZ6/fhPmKWjCGIl6piHhsMntQ0=";
    // `printf AAAA…AAA= | wg pubkey`: the all-zero key, clamped by wg.
    const ZERO_PUBLIC: &str = "L+V9o0fNYkMVKNqsX7spBzD/9oSvxM/C7ZCZX1jLO3Q=";

    #[test]
    fn the_public_key_matches_wg_pubkey() {
        let key = PrivateKey::from_base64(WG_PRIVATE).unwrap();
        assert_eq!(key.public_key().to_base64(), WG_PUBLIC);
    }

    #[test]
    fn an_unclamped_key_is_clamped_when_used_as_wg_does() {
        let zero = PrivateKey::from_bytes([0; 32]);
        assert_eq!(zero.public_key().to_base64(), ZERO_PUBLIC);
        let mut clamped = [0u8; 32];
        clamp(&mut clamped);
        assert_eq!(
            PrivateKey::from_bytes(clamped).public_key().to_base64(),
            ZERO_PUBLIC
        );
    }

    #[test]
    fn a_generated_key_is_clamped_and_round_trips_through_base64() {
        let key = PrivateKey::generate().unwrap();
        let text = key.to_base64();
        assert_eq!(text.len(), 44);
        let bytes = STANDARD.decode(text.as_str()).unwrap();
        assert_eq!(bytes[0] & 7, 0);
        assert_eq!(bytes[31] & 0xc0, 0x40);
        assert_eq!(PrivateKey::from_base64(&text).unwrap(), key);
    }

    #[test]
    fn two_generated_keys_differ() {
        assert_ne!(
            PrivateKey::generate().unwrap(),
            PrivateKey::generate().unwrap()
        );
        assert_ne!(
            PresharedKey::generate().unwrap(),
            PresharedKey::generate().unwrap()
        );
    }

    #[test]
    fn secrets_print_redacted_through_debug_and_display() {
        let key = PrivateKey::from_base64(WG_PRIVATE).unwrap();
        for shown in [
            format!("{key}"),
            format!("{key:?}"),
            format!("{:?}", Some(&key)),
        ] {
            assert!(!shown.contains(WG_PRIVATE), "{shown}");
            assert!(shown.contains("<redacted>"), "{shown}");
        }
        let psk = PresharedKey::from_base64(WG_PRIVATE).unwrap();
        assert_eq!(
            format!("{psk} {psk:?}"),
            "<redacted> PresharedKey(<redacted>)"
        );
    }

    #[test]
    fn invalid_keys_are_rejected_without_echoing_the_value() {
        let cases = [
            ("not base64 at all!", KeyError::NotBase64),
            ("c2hvcnQ=", KeyError::WrongLength { len: 5 }),
            (
                "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                KeyError::WrongLength { len: 36 },
            ),
        ];
        for (text, expected) in cases {
            let err = PrivateKey::from_base64(text).unwrap_err();
            assert_eq!(err, expected, "{text}");
            assert!(!err.to_string().contains(text), "{err}");
        }
    }

    #[test]
    fn surrounding_whitespace_such_as_a_trailing_newline_is_accepted() {
        let key = PrivateKey::from_base64(&format!("{WG_PRIVATE}\n")).unwrap();
        assert_eq!(key.public_key().to_base64(), WG_PUBLIC);
    }

    #[test]
    fn the_public_key_prefix_is_the_first_eight_characters() {
        let public = PublicKey::from_base64(WG_PUBLIC).unwrap();
        assert_eq!(public.prefix(), "d7n3aHWX");
        assert_eq!(public.to_string(), WG_PUBLIC);
    }

    proptest! {
        #[test]
        fn any_32_bytes_round_trip_and_derive_a_stable_public_key(bytes in any::<[u8; 32]>()) {
            let key = PrivateKey::from_bytes(bytes);
            let again = PrivateKey::from_base64(&key.to_base64()).unwrap();
            prop_assert_eq!(key.public_key(), again.public_key());
            let mut clamped = bytes;
            clamp(&mut clamped);
            prop_assert_eq!(PrivateKey::from_bytes(clamped).public_key(), key.public_key());
        }
    }
}

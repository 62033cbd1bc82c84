//! WireGuard keys: the one type of each kind that the operator, the node daemon and the CLI
//! use (decision 0007).
//!
//! Guarantees:
//! - [`PrivateKey`] and [`PresharedKey`] print `<redacted>` through `Display` and
//!   `PrivateKey(<redacted>)` / `PresharedKey(<redacted>)` through `Debug`, implement no
//!   `Serialize`, and wipe their bytes when dropped (`zeroize`). Their text forms
//!   ([`PrivateKey::to_base64`], [`PrivateKey::to_hex`]) are [`Zeroizing`] strings, wiped too.
//!   The bytes leave only through those and [`PrivateKey::expose_secret`], for the one place
//!   each that needs them (a Secret, the UAPI socket, the kernel).
//! - No error of this module carries key material: [`KeyError`] says what is wrong with a
//!   value (not ASCII, not base64, the wrong length), never what the value is.
//! - Generated private keys are clamped like `wg genkey`'s, and
//!   [`PrivateKey::public_key`] is what `wg pubkey` prints.
//! - [`PublicKey`] is public: it prints as base64 (`Debug`: `PublicKey(<base64>)`), is `Copy`,
//!   and orders and hashes by its bytes, so it can key maps.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rand_core::{OsRng, RngCore as _};
use zeroize::Zeroize as _;
pub use zeroize::Zeroizing;

/// How many characters of a public key `status.publicKeyPrefix` and messages show.
pub const PUBLIC_KEY_PREFIX_LEN: usize = 8;

const BASE64_FORM: &str = "a WireGuard key is 44 characters of base64, as printed by 'wg genkey'";

/// Why a key could not be read or made. Never contains key material. The text reads after
/// the thing that holds the key: "the key in Secret x {error}".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("contains characters that are not ASCII ({BASE64_FORM})")]
    NotAscii,
    #[error("is not base64 ({BASE64_FORM})")]
    NotBase64,
    #[error("decodes to {len} bytes instead of 32 ({BASE64_FORM})")]
    WrongLength { len: usize },
    #[error(
        "is {len} characters long instead of 64 hexadecimal digits (the form of a key in WireGuard's UAPI)"
    )]
    WrongHexLength { len: usize },
    #[error("is not hexadecimal (a key in WireGuard's UAPI is 64 digits 0-9 and a-f)")]
    NotHex,
    #[error("the system random number generator failed: {0}")]
    Random(String),
}

/// 32 bytes from base64 text; whitespace around the text (`wg genkey`'s newline) is ignored.
fn decode_base64(text: &str) -> Result<Zeroizing<[u8; 32]>, KeyError> {
    let text = text.trim();
    if !text.is_ascii() {
        return Err(KeyError::NotAscii);
    }
    let decoded = Zeroizing::new(STANDARD.decode(text).map_err(|_| KeyError::NotBase64)?);
    if decoded.len() != 32 {
        return Err(KeyError::WrongLength { len: decoded.len() });
    }
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(&decoded);
    Ok(out)
}

/// 32 bytes from 64 hexadecimal digits (either case), as WireGuard's UAPI writes them.
fn decode_hex(text: &str) -> Result<Zeroizing<[u8; 32]>, KeyError> {
    if text.len() != 64 {
        return Err(KeyError::WrongHexLength {
            len: text.chars().count(),
        });
    }
    let mut out = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(text, out.as_mut()).map_err(|_| KeyError::NotHex)?;
    Ok(out)
}

/// 32 bytes from the value of a Secret's data: the 32 raw bytes, or their base64 text.
fn decode_secret_value(value: &[u8]) -> Result<Zeroizing<[u8; 32]>, KeyError> {
    if value.len() == 32 {
        let mut out = Zeroizing::new([0u8; 32]);
        out.copy_from_slice(value);
        return Ok(out);
    }
    let text = std::str::from_utf8(value).map_err(|_| KeyError::NotAscii)?;
    decode_base64(text)
}

fn encode_base64(bytes: &[u8; 32]) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::with_capacity(44));
    STANDARD.encode_string(bytes, &mut out);
    out
}

fn encode_hex(bytes: &[u8; 32]) -> Zeroizing<String> {
    let mut digits = Zeroizing::new([0u8; 64]);
    // Cannot fail: the output is exactly twice the input.
    let _ = hex::encode_to_slice(bytes, digits.as_mut());
    let mut out = Zeroizing::new(String::with_capacity(64));
    out.extend(digits.iter().map(|&b| char::from(b)));
    out
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

macro_rules! secret_key {
    ($(#[$doc:meta])* $name:ident, $tool:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq)]
        pub struct $name(Zeroizing<[u8; 32]>);

        impl $name {
            /// Takes the bytes; the copy passed in is wiped.
            pub fn from_bytes(mut bytes: [u8; 32]) -> Self {
                let key = Self(Zeroizing::new(bytes));
                bytes.zeroize();
                key
            }

            #[doc = concat!("Reads a key written as by `", $tool, "` (surrounding whitespace ignored).")]
            pub fn from_base64(text: &str) -> Result<Self, KeyError> {
                decode_base64(text).map(Self)
            }

            /// Reads a key from the 64 hexadecimal digits of WireGuard's UAPI.
            pub fn from_hex(text: &str) -> Result<Self, KeyError> {
                decode_hex(text).map(Self)
            }

            /// Reads a key from a Secret's data: the 32 raw bytes, or their base64 text.
            pub fn from_secret_value(value: &[u8]) -> Result<Self, KeyError> {
                decode_secret_value(value).map(Self)
            }

            /// The raw key, for the code that hands it to the kernel or writes it to a file.
            pub fn expose_secret(&self) -> &[u8; 32] {
                &self.0
            }

            /// All zero: how WireGuard reports "no key".
            pub fn is_zero(&self) -> bool {
                self.0.iter().all(|&b| b == 0)
            }

            #[doc = concat!("The key as `", $tool, "` prints it (no newline). Keep it out of logs.")]
            pub fn to_base64(&self) -> Zeroizing<String> {
                encode_base64(&self.0)
            }

            /// The key as WireGuard's UAPI writes it (64 lowercase hexadecimal digits).
            pub fn to_hex(&self) -> Zeroizing<String> {
                encode_hex(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = KeyError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::from_base64(s)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "(<redacted>)"))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("<redacted>")
            }
        }
    };
}

secret_key!(
    /// A WireGuard private key. Never printed (see the module's guarantees); wiped on drop.
    PrivateKey,
    "wg genkey"
);

secret_key!(
    /// A WireGuard pre-shared key (`wg genpsk`): 32 random bytes, as secret as a private
    /// key. Never printed; wiped on drop.
    PresharedKey,
    "wg genpsk"
);

impl PrivateKey {
    /// A fresh key from the operating system's random number generator, clamped.
    pub fn generate() -> Result<Self, KeyError> {
        let mut bytes = random_32()?;
        clamp(&mut bytes);
        Ok(Self(bytes))
    }

    /// The public key, as `wg pubkey` derives it. Unclamped keys are clamped first, as
    /// WireGuard does when it uses them.
    pub fn public_key(&self) -> PublicKey {
        let secret = x25519_dalek::StaticSecret::from(*self.0);
        PublicKey(*x25519_dalek::PublicKey::from(&secret).as_bytes())
    }
}

impl PresharedKey {
    /// A fresh key from the operating system's random number generator.
    pub fn generate() -> Result<Self, KeyError> {
        random_32().map(Self)
    }
}

/// A WireGuard public key. Public, so it prints as base64.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Reads a key written as by `wg pubkey` (surrounding whitespace ignored).
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        decode_base64(text).map(|b| Self(*b))
    }

    /// Reads a key from the 64 hexadecimal digits of WireGuard's UAPI.
    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        decode_hex(text).map(|b| Self(*b))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The key as `wg pubkey` prints it.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// The key as WireGuard's UAPI writes it (64 lowercase hexadecimal digits).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first [`PUBLIC_KEY_PREFIX_LEN`] characters, for `kubectl get` and for telling
    /// keys apart in messages.
    pub fn prefix(&self) -> String {
        let mut text = self.to_base64();
        text.truncate(PUBLIC_KEY_PREFIX_LEN);
        text
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_base64(s)
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // Made with `wg genkey | tee priv | wg pubkey`.
    const WG_PRIVATE: &str = "uL05OyKCfPLVOdvOUsn5NJx1oRCuLZt/+9All5kZPVE=";
    const WG_PUBLIC: &str = "d7n3aHWXo8ES1G6Z4qZ6/fhPmKWjCGIl6piHhsMntQ0=";
    // `echo yAnz… | wg pubkey`.
    const OTHER_PRIVATE: &str = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
    const OTHER_PUBLIC: &str = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=";
    // `printf AAAA…AAA= | wg pubkey`: the all-zero key, clamped by wg.
    const ZERO_PUBLIC: &str = "L+V9o0fNYkMVKNqsX7spBzD/9oSvxM/C7ZCZX1jLO3Q=";

    #[test]
    fn the_public_key_matches_wg_pubkey() {
        for (private, public) in [(WG_PRIVATE, WG_PUBLIC), (OTHER_PRIVATE, OTHER_PUBLIC)] {
            let key = PrivateKey::from_base64(private).unwrap();
            assert_eq!(key.public_key().to_base64(), public);
            assert_eq!(key.public_key(), public.parse().unwrap());
        }
    }

    #[test]
    fn an_unclamped_key_is_clamped_when_used_as_wg_does() {
        let zero = PrivateKey::from_bytes([0; 32]);
        assert!(zero.is_zero());
        assert_eq!(zero.public_key().to_base64(), ZERO_PUBLIC);
        let mut clamped = [0u8; 32];
        clamp(&mut clamped);
        let clamped = PrivateKey::from_bytes(clamped);
        assert!(!clamped.is_zero());
        assert_eq!(clamped.public_key().to_base64(), ZERO_PUBLIC);
    }

    #[test]
    fn a_generated_key_is_clamped_and_round_trips_through_base64() {
        let key = PrivateKey::generate().unwrap();
        let text = key.to_base64();
        assert_eq!(text.len(), 44);
        let bytes = key.expose_secret();
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
    fn secrets_never_print_their_key_through_debug_or_display() {
        let key = PrivateKey::from_base64(WG_PRIVATE).unwrap();
        let psk = PresharedKey::from_base64(OTHER_PRIVATE).unwrap();
        let hex_private = key.to_hex();
        let hex_psk = psk.to_hex();
        let shown = [
            format!("{key}"),
            format!("{key:?}"),
            format!("{key:#?}"),
            format!("{:?}", Some(&key)),
            format!("{psk}"),
            format!("{psk:?}"),
            format!("{:?}", vec![psk.clone()]),
        ];
        for text in &shown {
            for secret in [WG_PRIVATE, OTHER_PRIVATE, &hex_private, &hex_psk] {
                assert!(!text.contains(secret), "{text}");
            }
            // Nor a piece long enough to tell a key: no 8 characters of either encoding.
            for secret in [WG_PRIVATE, OTHER_PRIVATE] {
                assert!(!text.contains(&secret[..8]), "{text}");
            }
            assert!(text.contains("<redacted>"), "{text}");
        }
        assert_eq!(
            shown,
            [
                "<redacted>",
                "PrivateKey(<redacted>)",
                "PrivateKey(<redacted>)",
                "Some(PrivateKey(<redacted>))",
                "<redacted>",
                "PresharedKey(<redacted>)",
                "[PresharedKey(<redacted>)]",
            ]
        );
    }

    #[test]
    fn public_keys_print_as_base64() {
        let public = PublicKey::from_base64(WG_PUBLIC).unwrap();
        assert_eq!(public.to_string(), WG_PUBLIC);
        assert_eq!(format!("{public:?}"), format!("PublicKey({WG_PUBLIC})"));
        assert_eq!(public.prefix(), "d7n3aHWX");
        assert_eq!(public.prefix().len(), PUBLIC_KEY_PREFIX_LEN);
    }

    #[test]
    fn bad_base64_says_what_is_wrong_without_echoing_the_value() {
        let cases = [
            ("not base64 at all!", KeyError::NotBase64),
            ("", KeyError::WrongLength { len: 0 }),
            ("c2hvcnQ=", KeyError::WrongLength { len: 5 }),
            (
                "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                KeyError::WrongLength { len: 36 },
            ),
            // 44 characters, but the last digit carries bits beyond the 32 bytes.
            (
                "OgbUF/E21zi9qHf5h9H6N/iM92nnNYgRtOMhReFm731=",
                KeyError::NotBase64,
            ),
            // Padding missing.
            (
                "OgbUF/E21zi9qHf5h9H6N/iM92nnNYgRtOMhReFm730",
                KeyError::NotBase64,
            ),
            // 44 characters, one of them not ASCII (once a panic in `kwire graph -f`).
            (
                "OgbUF/E\u{e9}1zi9qHf5h9H6N/iM92nnNYgRtOMhReFm730=",
                KeyError::NotAscii,
            ),
        ];
        for (text, expected) in cases {
            for err in [
                PrivateKey::from_base64(text).unwrap_err(),
                PresharedKey::from_base64(text).unwrap_err(),
                PublicKey::from_base64(text).unwrap_err(),
                text.parse::<PublicKey>().unwrap_err(),
            ] {
                assert_eq!(err, expected, "{text:?}");
                let message = err.to_string();
                assert!(text.is_empty() || !message.contains(text), "{message}");
                assert!(message.contains("44 characters of base64"), "{message}");
            }
        }
        assert_eq!(
            KeyError::WrongLength { len: 5 }.to_string(),
            "decodes to 5 bytes instead of 32 (a WireGuard key is 44 characters of base64, as printed by 'wg genkey')"
        );
    }

    #[test]
    fn surrounding_whitespace_such_as_a_trailing_newline_is_accepted() {
        let key = PrivateKey::from_base64(&format!("{WG_PRIVATE}\n")).unwrap();
        assert_eq!(key.public_key().to_base64(), WG_PUBLIC);
        assert!(PublicKey::from_base64(&format!(" {WG_PUBLIC}\r\n")).is_ok());
    }

    #[test]
    fn hex_is_what_the_uapi_writes() {
        let public = PublicKey::from_bytes([0xab; 32]);
        assert_eq!(public.to_hex(), "ab".repeat(32));
        assert_eq!(PublicKey::from_hex(&"AB".repeat(32)).unwrap(), public);
        let key = PrivateKey::from_bytes([1; 32]);
        assert_eq!(key.to_hex().as_str(), "01".repeat(32));
        assert_eq!(PrivateKey::from_hex(&"01".repeat(32)).unwrap(), key);
        assert_eq!(
            PresharedKey::from_hex(&"00".repeat(32)).unwrap(),
            PresharedKey::from_bytes([0; 32])
        );
    }

    #[test]
    fn bad_hex_says_what_is_wrong() {
        assert_eq!(
            PublicKey::from_hex("abcd"),
            Err(KeyError::WrongHexLength { len: 4 })
        );
        assert_eq!(
            PrivateKey::from_hex(&"zz".repeat(32)),
            Err(KeyError::NotHex)
        );
        // 64 bytes, not 64 characters.
        let accented = format!("{}\u{e9}", "a".repeat(62));
        assert_eq!(PresharedKey::from_hex(&accented), Err(KeyError::NotHex));
        let short = format!("{}\u{e9}", "a".repeat(61));
        assert_eq!(
            PresharedKey::from_hex(&short),
            Err(KeyError::WrongHexLength { len: 62 })
        );
    }

    #[test]
    fn a_secret_value_is_raw_bytes_or_base64_text() {
        let key = PrivateKey::from_base64(WG_PRIVATE).unwrap();
        assert_eq!(
            PrivateKey::from_secret_value(key.expose_secret()).unwrap(),
            key
        );
        assert_eq!(
            PrivateKey::from_secret_value(format!("{WG_PRIVATE}\n").as_bytes()).unwrap(),
            key
        );
        assert_eq!(
            PresharedKey::from_secret_value(&[0xff; 31]),
            Err(KeyError::NotAscii)
        );
        assert_eq!(
            PresharedKey::from_secret_value(b"c2hvcnQ="),
            Err(KeyError::WrongLength { len: 5 })
        );
    }

    proptest! {
        #[test]
        fn every_key_round_trips_through_base64_and_hex(bytes in any::<[u8; 32]>()) {
            let public = PublicKey::from_bytes(bytes);
            prop_assert_eq!(public.to_string().parse::<PublicKey>(), Ok(public));
            prop_assert_eq!(PublicKey::from_hex(&public.to_hex()), Ok(public));
            prop_assert!(public.to_string().starts_with(&public.prefix()));

            let private = PrivateKey::from_bytes(bytes);
            prop_assert_eq!(PrivateKey::from_base64(&private.to_base64()), Ok(private.clone()));
            prop_assert_eq!(PrivateKey::from_hex(&private.to_hex()), Ok(private.clone()));
            prop_assert_eq!(PrivateKey::from_secret_value(&bytes), Ok(private.clone()));
            let text = private.to_base64();
            prop_assert_eq!(text.as_str(), public.to_base64());

            let psk = PresharedKey::from_bytes(bytes);
            prop_assert_eq!(psk.to_base64().parse::<PresharedKey>(), Ok(psk.clone()));
            prop_assert_eq!(PresharedKey::from_hex(&psk.to_hex()), Ok(psk.clone()));
            for shown in [format!("{private} {private:?}"), format!("{psk} {psk:?}")] {
                prop_assert!(!shown.contains(public.to_base64().as_str()), "{}", shown);
                prop_assert!(!shown.contains(public.to_hex().as_str()), "{}", shown);
            }
        }

        #[test]
        fn the_public_key_does_not_depend_on_the_clamped_bits(bytes in any::<[u8; 32]>()) {
            let key = PrivateKey::from_bytes(bytes);
            let mut clamped = bytes;
            clamp(&mut clamped);
            prop_assert_eq!(PrivateKey::from_bytes(clamped).public_key(), key.public_key());
        }

        #[test]
        fn any_text_parses_or_fails_without_panicking_or_echoing(text in ".{0,60}") {
            match text.parse::<PublicKey>() {
                Ok(key) => prop_assert_eq!(key.to_base64(), text.trim()),
                Err(err) => {
                    let message = err.to_string();
                    prop_assert!(text.trim().len() < 12 || !message.contains(text.trim()), "{}", message);
                }
            }
            let _ = PrivateKey::from_hex(&text);
            let _ = PresharedKey::from_secret_value(text.as_bytes());
        }
    }
}

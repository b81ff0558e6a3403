//! A session record as compact bytes, for a store that keeps records as values of its own.
//!
//! JSON spends a third of a typical record on field names, quotes and decimal timestamps, and
//! decoding it costs a request more than it needs to. This form keeps the same fields:
//!
//! ```text
//! 0x01                       the form's version (a JSON record starts with `{`)
//! id, user id, profile       each a length (LEB128) and UTF-8 bytes; the profile is JSON
//! created, expires           Unix milliseconds, LEB128
//! then, only when present:   a tag byte and its value
//!   'a' reauthenticated at   LEB128
//!   'r' roles                a count, then each role as a length and bytes
//!   'I' IP address           4 or 16 bytes, after a length (any address that prints as it
//!                            was given); 'i' for any other text, as a length and bytes
//!   'g' User-Agent           length and bytes, in whatever form the store gave it
//!   'k' kind, 'o' impersonation   length and JSON (rare: tokens and impersonation)
//!   'f' factors, 'm' method  one letter, as JSON keeps them
//!   'n' new device           no value
//! '.'                        the end: a record without it was cut short
//! ```
//!
//! A browser login with a small profile takes about 100 bytes, against 140 to 150 as JSON.
//! Unknown versions and tags are errors, never guesses: a record from a newer build reads as
//! unreadable, which a store reports as corrupt (and a request as logged out). So is a record
//! without its end mark: the optional fields default to the plain case (a login by password,
//! a browser session, no impersonation), so a record cut after any of them must not read as
//! one that never had them.
//!
//! So the form changes in two releases: one that reads a new version or tag, then one that
//! writes it. Instances of different builds share a Redis during a rolling deploy, and a build
//! that cannot read a record treats it as ended (a listing removes it, so that "log out
//! everywhere" can never miss a session).

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use serde_json::value::RawValue;

use super::deferred::{Deferred, Expand, Octets};
use super::{Factors, Fields, Impersonation, LoginMethod, SessionRecord};

/// The first byte of a record in this form.
pub(crate) const VERSION: u8 = 1;

const AUTHENTICATED_AT: u8 = b'a';
const ROLES: u8 = b'r';
const IP: u8 = b'i';
const IP_BYTES: u8 = b'I';
const USER_AGENT: u8 = b'g';
const KIND: u8 = b'k';
const IMPERSONATION: u8 = b'o';
const FACTORS: u8 = b'f';
const METHOD: u8 = b'm';
const NEW_DEVICE: u8 = b'n';
const END: u8 = b'.';

/// Why bytes are not a record in this form.
#[derive(Debug)]
pub(crate) struct Malformed(&'static str);

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "session record: {}", self.0)
    }
}

impl std::error::Error for Malformed {}

impl SessionRecord {
    /// The record in binary form, its user agent as `user_agent` compacts it.
    pub(crate) fn encode_binary(
        &self,
        user_agent: impl for<'a> Fn(&'a str) -> Cow<'a, str>,
    ) -> Result<Vec<u8>, Malformed> {
        let f = &*self.0;
        let mut out = Vec::with_capacity(128);
        out.push(VERSION);
        put_str(&mut out, &f.id);
        put_str(&mut out, &f.user_id);
        put_str(&mut out, f.user.get());
        put_varint(&mut out, f.created_at);
        put_varint(&mut out, f.expires_at);
        if let Some(at) = f.authenticated_at {
            out.push(AUTHENTICATED_AT);
            put_varint(&mut out, at);
        }
        if !f.roles.is_empty() {
            out.push(ROLES);
            put_varint(&mut out, f.roles.len() as u64);
            for role in &f.roles {
                put_str(&mut out, role);
            }
        }
        if let Some(ip) = &f.ip {
            put_ip(&mut out, ip);
        }
        if let Some(ua) = &f.user_agent {
            out.push(USER_AGENT);
            put_str(&mut out, &user_agent(ua.get()));
        }
        if !f.kind.is_browser() {
            out.push(KIND);
            put_json(&mut out, &f.kind)?;
        }
        if let Some(imp) = &f.impersonation {
            out.push(IMPERSONATION);
            put_json(&mut out, imp)?;
        }
        if !f.factors.is_password() {
            out.extend_from_slice(&[FACTORS, factors_code(f.factors)]);
        }
        if !f.method.is_password() {
            out.push(METHOD);
            out.extend_from_slice(f.method.code().as_bytes());
        }
        if f.new_device {
            out.push(NEW_DEVICE);
        }
        out.push(END);
        Ok(out)
    }

    /// The record in `bytes`, as [`encode_binary`](Self::encode_binary) wrote it, its user
    /// agent as `user_agent` expands it back (when it is first read: see [`Deferred`]).
    pub(crate) fn decode_binary(bytes: &[u8], user_agent: Expand) -> Result<Self, Malformed> {
        let mut r = Reader(bytes);
        if r.byte()? != VERSION {
            return Err(Malformed("unknown version"));
        }
        let id = r.str()?.to_owned();
        let user_id = r.str()?.to_owned();
        let user = RawValue::from_string(r.str()?.to_owned())
            .map_err(|_| Malformed("the profile is not JSON"))?;
        let (created_at, expires_at) = (r.varint()?, r.varint()?);
        let mut fields = Fields::new(id, user_id, user, created_at, expires_at);
        loop {
            match r.byte()? {
                END if r.0.is_empty() => break,
                END => return Err(Malformed("bytes after the end")),
                AUTHENTICATED_AT => fields.authenticated_at = Some(r.varint()?),
                ROLES => {
                    let count = r.varint()?;
                    // Each role takes a byte at least: a count beyond the rest is a lie.
                    let count = usize::try_from(count)
                        .ok()
                        .filter(|&n| n <= r.0.len())
                        .ok_or(Malformed("too many roles"))?;
                    let mut roles = Vec::with_capacity(count);
                    for _ in 0..count {
                        roles.push(r.str()?.to_owned());
                    }
                    fields.roles = roles;
                }
                IP => fields.ip = Some(Deferred::Text(r.str()?.to_owned())),
                IP_BYTES => fields.ip = Some(Deferred::ip(r.ip()?)),
                USER_AGENT => fields.user_agent = Some(Deferred::compact(r.str()?, user_agent)),
                KIND => fields.kind = r.json()?,
                IMPERSONATION => fields.impersonation = Some(r.json::<Impersonation>()?),
                FACTORS => fields.factors = factors_from_code(r.byte()?)?,
                METHOD => {
                    let code = [r.byte()?];
                    fields.method = std::str::from_utf8(&code)
                        .ok()
                        .and_then(LoginMethod::from_code)
                        .ok_or(Malformed("unknown login method"))?;
                }
                NEW_DEVICE => fields.new_device = true,
                _ => return Err(Malformed("unknown field")),
            }
        }
        Ok(Self(Arc::new(fields)))
    }
}

fn factors_code(factors: Factors) -> u8 {
    match factors {
        Factors::Password => b'p',
        Factors::Pending => b'w',
        Factors::PasswordOnly => b'1',
        Factors::Both => b'2',
    }
}

fn factors_from_code(code: u8) -> Result<Factors, Malformed> {
    Ok(match code {
        b'p' => Factors::Password,
        b'w' => Factors::Pending,
        b'1' => Factors::PasswordOnly,
        b'2' => Factors::Both,
        _ => return Err(Malformed("unknown factors")),
    })
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        // Truncation intended: the low seven bits, with the continuation bit.
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_str(out: &mut Vec<u8>, text: &str) {
    put_varint(out, text.len() as u64);
    out.extend_from_slice(text.as_bytes());
}

/// An IP address in 4 or 16 bytes when it prints back as given (most do: the middleware
/// writes them so, and one decoded from bytes does), else as text.
fn put_ip(out: &mut Vec<u8>, ip: &Deferred) {
    let octets = ip.octets().or_else(|| match ip.get().parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) if v4.to_string() == ip.get() => Some(Octets::V4(v4.octets())),
        Ok(IpAddr::V6(v6)) if v6.to_string() == ip.get() => Some(Octets::V6(v6.octets())),
        _ => None,
    });
    match octets {
        Some(Octets::V4(v4)) => {
            out.extend_from_slice(&[IP_BYTES, 4]);
            out.extend_from_slice(&v4);
        }
        Some(Octets::V6(v6)) => {
            out.extend_from_slice(&[IP_BYTES, 16]);
            out.extend_from_slice(&v6);
        }
        None => {
            out.push(IP);
            put_str(out, ip.get());
        }
    }
}

fn put_json(out: &mut Vec<u8>, value: &impl serde::Serialize) -> Result<(), Malformed> {
    let json = serde_json::to_string(value).map_err(|_| Malformed("cannot encode a field"))?;
    put_str(out, &json);
    Ok(())
}

/// The bytes of a record still to read.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, Malformed> {
        let (&first, rest) = self.0.split_first().ok_or(Malformed("cut short"))?;
        self.0 = rest;
        Ok(first)
    }

    fn varint(&mut self) -> Result<u64, Malformed> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            let bits = u64::from(byte & 0x7f);
            // The tenth byte may carry one bit only.
            if shift == 63 && bits > 1 {
                break;
            }
            value |= bits << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(Malformed("number too large"))
    }

    fn str(&mut self) -> Result<&'a str, Malformed> {
        let len = usize::try_from(self.varint()?).map_err(|_| Malformed("cut short"))?;
        if len > self.0.len() {
            return Err(Malformed("cut short"));
        }
        let (text, rest) = self.0.split_at(len);
        self.0 = rest;
        std::str::from_utf8(text).map_err(|_| Malformed("text is not UTF-8"))
    }

    fn ip(&mut self) -> Result<Octets, Malformed> {
        let len = self.byte()?;
        let bytes = self
            .0
            .get(..usize::from(len))
            .ok_or(Malformed("cut short"))?;
        let ip = match <[u8; 4]>::try_from(bytes) {
            Ok(v4) => Octets::V4(v4),
            Err(_) => match <[u8; 16]>::try_from(bytes) {
                Ok(v6) => Octets::V6(v6),
                Err(_) => return Err(Malformed("an IP address of neither 4 nor 16 bytes")),
            },
        };
        self.0 = &self.0[bytes.len()..];
        Ok(ip)
    }

    fn json<T: serde::de::DeserializeOwned>(&mut self) -> Result<T, Malformed> {
        serde_json::from_str(self.str()?).map_err(|_| Malformed("a field is not its JSON"))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::record::SessionKey;

    fn same(text: &str) -> Cow<'_, str> {
        Cow::Borrowed(text)
    }

    fn browser_login() -> SessionRecord {
        let now = SystemTime::now();
        let user = RawValue::from_string(r#"{"id":7,"name":"ann"}"#.into()).unwrap();
        SessionRecord::new(
            "Yk3vQm0_aXc9LrT2wZpN8g",
            "7",
            user,
            now,
            now + Duration::from_secs(43_200),
        )
        .with_client(Some("203.0.113.77".into()), Some("curl/8.5".into()))
    }

    fn json(record: &SessionRecord) -> String {
        serde_json::to_string(record).unwrap()
    }

    /// A record with every optional field set.
    fn everything() -> SessionRecord {
        let key = SessionKey::of_token(b"a-token-of-the-admin-s-own-session");
        browser_login()
            .with_roles(vec!["admin".into(), "ops".into()])
            .reauthenticated(SystemTime::now() + Duration::from_secs(5))
            .impersonated("1", &key)
            .personal_token("ci".into(), Some(vec!["read".into()]), Some(&key))
            .with_factors(Factors::Both)
            .with_method(LoginMethod::Passkey)
            .with_new_device(true)
    }

    #[test]
    fn every_field_round_trips() {
        let plain = browser_login();
        let anonymous = SessionRecord::anonymous("a", SystemTime::now(), SystemTime::now());
        let mut records = vec![plain.clone(), everything(), anonymous];
        for factors in [Factors::Pending, Factors::PasswordOnly, Factors::Both] {
            records.push(plain.clone().with_factors(factors));
        }
        for method in [
            LoginMethod::Passkey,
            LoginMethod::Link,
            LoginMethod::External,
        ] {
            records.push(plain.clone().with_method(method));
        }
        records.push(plain.clone().remembered());
        records.push(plain.clone().login_token(false));
        records.push(plain.clone().login_token(true));
        records.push(plain.clone().personal_token("t".into(), None, None));
        for record in records {
            let bytes = record.encode_binary(same).unwrap();
            let back = SessionRecord::decode_binary(&bytes, same).unwrap();
            assert_eq!(json(&back), json(&record));
        }
    }

    #[test]
    fn ip_addresses_take_their_bytes_and_anything_else_reads_back_as_given() {
        let ips = [
            "203.0.113.77",
            "2001:db8::1",
            "::ffff:192.0.2.1",
            "0203.0.113.77",
            "unknown",
            "",
        ];
        for ip in ips {
            let record = browser_login().with_client(Some(ip.into()), None);
            let bytes = record.encode_binary(same).unwrap();
            let back = SessionRecord::decode_binary(&bytes, same).unwrap();
            assert_eq!(back.ip(), Some(ip));
        }
        let v6 = browser_login().with_client(Some("2001:db8::1".into()), None);
        let text = browser_login().with_client(Some("unknown-ish".into()), None);
        let len = |r: &SessionRecord| r.encode_binary(same).unwrap().len();
        // Both a tag and a length; then 16 bytes against the text's 11.
        assert_eq!(len(&v6), len(&text) - "unknown-ish".len() + 16);
    }

    #[test]
    fn a_browser_login_is_smaller_than_its_json() {
        let record = browser_login();
        let bytes = record.encode_binary(same).unwrap();
        assert!(bytes.len() + 40 < json(&record).len(), "{}", bytes.len());
    }

    #[test]
    fn the_user_agent_goes_through_the_store_s_form_both_ways() {
        let record = browser_login();
        let bytes = record.encode_binary(|_| Cow::Owned("UA".into())).unwrap();
        assert!(bytes.windows(3).any(|w| w == b"\x02UA"));
        let back = SessionRecord::decode_binary(&bytes, |ua| {
            assert_eq!(ua, "UA");
            Cow::Owned("curl/8.5".into())
        })
        .unwrap();
        assert_eq!(back.user_agent(), Some("curl/8.5"));
    }

    #[test]
    fn bad_bytes_are_malformed_not_a_panic() {
        let good = everything().encode_binary(same).unwrap();
        assert!(SessionRecord::decode_binary(&good, same).is_ok());
        for cut in 0..good.len() {
            // Not even a cut between two fields, which would drop the ones after it.
            let cut_short = SessionRecord::decode_binary(&good[..cut], same);
            assert!(cut_short.is_err(), "{cut} of {} bytes read", good.len());
        }
        let mut trailing = good.clone();
        trailing.push(NEW_DEVICE);
        assert!(SessionRecord::decode_binary(&trailing, same).is_err());
        let mut unknown = good.clone();
        unknown.insert(good.len() - 1, b'?');
        assert!(SessionRecord::decode_binary(&unknown, same).is_err());
        let mut version = good.clone();
        version[0] = 2;
        assert!(SessionRecord::decode_binary(&version, same).is_err());
        assert!(SessionRecord::decode_binary(b"{\"i\":\"x\"}", same).is_err());
        let huge = [
            VERSION, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
        ];
        assert!(SessionRecord::decode_binary(&huge, same).is_err());
        let mut roles = vec![VERSION, 1, b'i', 1, b'u', 2, b'{', b'}', 1, 1, ROLES];
        put_varint(&mut roles, u64::MAX);
        roles.push(END);
        assert!(SessionRecord::decode_binary(&roles, same).is_err());
        let minimal = [VERSION, 1, b'i', 1, b'u', 2, b'{', b'}', 1, 1];
        assert!(SessionRecord::decode_binary(&[&minimal[..], &[END]].concat(), same).is_ok());
        for ip in [
            &[IP_BYTES, 5, 1, 2, 3, 4, 5, END][..],
            &[IP_BYTES, 4, 1, 2, 3, END],
        ] {
            let bad = [&minimal[..], ip].concat();
            assert!(SessionRecord::decode_binary(&bad, same).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_lookup_prints_no_address_and_expands_no_user_agent() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static EXPANDED: AtomicUsize = AtomicUsize::new(0);
        fn counted(text: &str) -> Cow<'_, str> {
            EXPANDED.fetch_add(1, Ordering::Relaxed);
            Cow::Borrowed(text)
        }
        let record = browser_login().with_client(Some("192.0.2.7".into()), Some("curl/8".into()));
        let bytes = record.encode_binary(same).unwrap();
        let back = SessionRecord::decode_binary(&bytes, counted).unwrap();
        // The address is written back as the bytes it was read as, never printed.
        let Some(Deferred::Ip { text, .. }) = &back.0.ip else {
            panic!("the address is kept as bytes: {:?}", back.0.ip);
        };
        assert!(text.get().is_none(), "printed at decode");
        assert_eq!(EXPANDED.load(Ordering::Relaxed), 0, "expanded at decode");
        // Written back (rare: a rotation), the user agent goes through the store's compact
        // form, expanded once and kept; the address as its bytes.
        assert_eq!(back.encode_binary(same).unwrap(), bytes);
        assert_eq!(
            EXPANDED.load(Ordering::Relaxed),
            1,
            "expanded to be written back"
        );
        assert!(text.get().is_none(), "printed to be written back");
        assert_eq!(back.ip(), Some("192.0.2.7"));
        assert_eq!(back.user_agent(), Some("curl/8"));
        assert_eq!(back.user_agent(), Some("curl/8"));
        assert_eq!(EXPANDED.load(Ordering::Relaxed), 1, "expanded once");
    }

    #[test]
    fn varints_round_trip_at_their_edges() {
        for value in [0, 1, 127, 128, 16_383, 16_384, 1_733_500_000_000, u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            assert_eq!(Reader(&out).varint().unwrap(), value);
        }
    }
}

//! SMTP AUTH's SASL layer (RFC 4954) for the two mechanisms submission actually sees: PLAIN
//! (RFC 4616) and LOGIN. Pure — what a client's base64 lines mean and what a client sends —
//! so the session drives the exchange and the policy alone judges the credentials.

use base64::Engine;

use crate::smtp::reply::Reply;

/// `334` prompt of LOGIN's first step: base64 of `Username:`.
pub const LOGIN_USER_PROMPT: &str = "VXNlcm5hbWU6";
/// `334` prompt of LOGIN's second step: base64 of `Password:`.
pub const LOGIN_PASSWORD_PROMPT: &str = "UGFzc3dvcmQ6";
/// What the EHLO reply offers.
pub const EHLO_AUTH_LINE: &str = "AUTH PLAIN LOGIN";

/// A mechanism this server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    Login,
}

impl Mechanism {
    /// From smtp-proto's mechanism bit; `None` for the ones not offered (CRAM-MD5, XOAUTH2...).
    pub fn from_proto(bits: u64) -> Option<Mechanism> {
        match bits {
            smtp_proto::AUTH_PLAIN => Some(Mechanism::Plain),
            smtp_proto::AUTH_LOGIN => Some(Mechanism::Login),
            _ => None,
        }
    }
}

/// A user name and password (shared vocabulary: a scenario's `traffic.auth` holds one too).
pub use crate::units::Credentials;

impl Credentials {
    /// The PLAIN initial response: base64 of `\0user\0password` (no authorization identity).
    pub fn plain_response(&self) -> String {
        let raw = format!("\0{}\0{}", self.user, self.password);
        encode(raw.as_bytes())
    }
}

/// Why a client's part of the exchange is refused; each maps to one reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaslError {
    /// The client sent `*` (RFC 4954 §4).
    Cancelled,
    /// Not base64.
    BadBase64,
    /// Base64, but not a valid response of the mechanism.
    Malformed(&'static str),
}

impl SaslError {
    pub fn reply(&self) -> Reply {
        match self {
            SaslError::Cancelled => Reply::new(501, Some("5.7.0"), "Authentication cancelled"),
            SaslError::BadBase64 => Reply::new(501, Some("5.5.2"), "Cannot decode the response (not base64)"),
            SaslError::Malformed(why) => Reply::new(501, Some("5.5.2"), &format!("Malformed response: {why}")),
        }
    }
}

/// One client response (initial response or a line after a `334`), without its line end:
/// `*` cancels, `=` is an empty response (RFC 4954 §4), anything else is base64.
pub fn decode_response(line: &[u8]) -> Result<Vec<u8>, SaslError> {
    let line = line.trim_ascii();
    match line {
        b"*" => Err(SaslError::Cancelled),
        b"=" => Ok(Vec::new()),
        _ => base64::engine::general_purpose::STANDARD
            .decode(line)
            .map_err(|_| SaslError::BadBase64),
    }
}

/// A decoded PLAIN response: `[authzid] NUL authcid NUL passwd` (RFC 4616 §2). Acting for
/// another identity (an authzid that is not the user's own) is not supported.
pub fn plain(response: &[u8]) -> Result<Credentials, SaslError> {
    let mut parts = response.split(|&b| b == 0);
    let (Some(authz), Some(user), Some(password), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::Malformed("PLAIN wants authzid NUL user NUL password"));
    };
    if user.is_empty() {
        return Err(SaslError::Malformed("empty user name"));
    }
    if !authz.is_empty() && authz != user {
        return Err(SaslError::Malformed("authorizing as another identity is not supported"));
    }
    Ok(Credentials {
        user: utf8(user)?,
        password: utf8(password)?,
    })
}

/// A decoded LOGIN step (user name or password).
pub fn login_step(response: &[u8]) -> Result<String, SaslError> {
    utf8(response)
}

fn utf8(b: &[u8]) -> Result<String, SaslError> {
    String::from_utf8(b.to_vec()).map_err(|_| SaslError::Malformed("not UTF-8"))
}

pub fn encode(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_round_trips_and_refuses_what_it_must() {
        let c = Credentials::parse("alice:s3:cret").unwrap();
        assert_eq!((c.user.as_str(), c.password.as_str()), ("alice", "s3:cret"));
        let wire = c.plain_response();
        assert_eq!(plain(&decode_response(wire.as_bytes()).unwrap()).unwrap(), c);
        // authzid equal to the user is fine; another identity is not.
        assert_eq!(plain(b"alice\0alice\0pw").unwrap().user, "alice");
        assert!(matches!(plain(b"root\0alice\0pw"), Err(SaslError::Malformed(_))));
        assert!(matches!(plain(b"alice\0pw"), Err(SaslError::Malformed(_))));
        assert!(matches!(plain(b"\0\0pw"), Err(SaslError::Malformed(_))));
        assert!(matches!(plain(b"\0a\0b\0c"), Err(SaslError::Malformed(_))));
        assert!(matches!(plain(b"\0\xff\0pw"), Err(SaslError::Malformed(_))));
    }

    #[test]
    fn responses_cancel_empty_and_bad_base64() {
        assert_eq!(decode_response(b"*"), Err(SaslError::Cancelled));
        assert_eq!(decode_response(b"="), Ok(Vec::new()));
        assert_eq!(decode_response(b"YWxpY2U=\r"), Ok(b"alice".to_vec()));
        assert_eq!(decode_response(b"not base64!"), Err(SaslError::BadBase64));
        assert_eq!(SaslError::Cancelled.reply().code, 501);
    }

    #[test]
    fn credentials_need_a_user_and_hide_the_password() {
        assert!(Credentials::parse("nopassword").is_err());
        assert!(Credentials::parse(":pw").is_err());
        assert!(Credentials::parse("a:b\r\nRSET").is_err());
        let c = Credentials::parse("bob:hunter2").unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
        assert_eq!(Mechanism::from_proto(smtp_proto::AUTH_PLAIN), Some(Mechanism::Plain));
        assert_eq!(Mechanism::from_proto(smtp_proto::AUTH_CRAM_MD5), None);
    }
}

//! A node's AUTH accounts (`auth: { users: FILE }`, SPEC §13): who may submit from any allowed
//! network once authenticated.
//!
//! The file is one `user:password` per line (the password may contain `:`), `#` comments and
//! blank lines allowed — the shape of Postfix's `saslpasswd`-style flat files, kept plain
//! because it is a test fixture that the scenario's `traffic.auth` must match. Keep it readable
//! only by the node's user.

use std::collections::HashMap;
use std::path::Path;

use crate::config::ConfigError;
use crate::smtp::Credentials;

/// Most accounts one file may hold; a test fixture needs a handful.
const MAX_USERS: usize = 100_000;

#[derive(Clone, Default)]
pub struct Users {
    accounts: HashMap<String, String>,
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Users({} accounts)", self.accounts.len())
    }
}

impl Users {
    /// Reads a users file; every problem names `file:line:col`.
    pub fn load(path: &Path) -> Result<Users, ConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(&name, None, format!("cannot read the users file: {e}")))?;
        Users::parse(&name, &text)
    }

    pub fn parse(name: &str, text: &str) -> Result<Users, ConfigError> {
        let mut accounts = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim_end_matches('\r');
            let at = |col: usize, m: String| ConfigError::new(name, Some((i + 1, col)), m);
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            let c = Credentials::parse(line).map_err(|why| at(1, format!("{why} (a line is `user:password`)")))?;
            if accounts.contains_key(&c.user) {
                return Err(at(1, format!("user `{}` is listed twice", c.user)));
            }
            if accounts.len() >= MAX_USERS {
                return Err(at(1, format!("more than {MAX_USERS} users")));
            }
            accounts.insert(c.user, c.password);
        }
        if accounts.is_empty() {
            return Err(ConfigError::new(
                name,
                None,
                "no `user:password` line: nobody could log in",
            ));
        }
        Ok(Users { accounts })
    }

    /// Whether the credentials match an account. The password comparison takes the same time
    /// wherever the first difference is, so a remote guesser learns nothing from timing.
    pub fn check(&self, c: &Credentials) -> bool {
        self.accounts
            .get(&c.user)
            .is_some_and(|p| same_bytes(p.as_bytes(), c.password.as_bytes()))
    }

    pub fn len(&self) -> usize {
        self.accounts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty()
    }
}

/// Constant-time for equal lengths (the length itself is not secret enough to hide here).
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_accounts_and_checks_passwords() {
        let u = Users::parse("users", "# submitters\n\nalice:pw:with:colons\r\nbob:hunter2\n").unwrap();
        assert_eq!(u.len(), 2);
        assert!(u.check(&Credentials::parse("alice:pw:with:colons").unwrap()));
        assert!(u.check(&Credentials::parse("bob:hunter2").unwrap()));
        assert!(!u.check(&Credentials::parse("bob:hunter3").unwrap()));
        assert!(!u.check(&Credentials::parse("bob:hunter").unwrap()));
        assert!(!u.check(&Credentials::parse("carol:hunter2").unwrap()));
        assert!(!format!("{u:?}").contains("hunter2"));
    }

    #[test]
    fn errors_name_the_line() {
        let e = Users::parse("u.txt", "alice:x\nnocolon\n").unwrap_err();
        assert_eq!(e.pos, Some((2, 1)), "{e}");
        assert!(e.to_string().starts_with("u.txt:2:1: expected `user:password`"), "{e}");
        let e = Users::parse("u.txt", "alice:x\nalice:y\n").unwrap_err();
        assert!(e.to_string().contains("u.txt:2:1: user `alice` is listed twice"), "{e}");
        let e = Users::parse("u.txt", "# nobody\n").unwrap_err();
        assert!(e.to_string().contains("nobody could log in"), "{e}");
        let e = Users::parse("u.txt", "al ice:x\n").unwrap_err();
        assert!(e.to_string().contains("white space"), "{e}");
    }
}

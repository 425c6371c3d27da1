//! Opening a client connection: greeting, EHLO (HELO as fallback), STARTTLS (RFC 3207) and
//! AUTH (RFC 4954), each recording what the server offers.

use smtp_proto::response::parser::ResponseReceiver;

use super::{check_line, Client, ClientConfig, ClientError, ClientTls};
use crate::smtp::reply::Reply;
use crate::smtp::sasl;

/// The SASL mechanisms of an EHLO `AUTH` line that this client speaks.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct AuthMechanisms {
    plain: bool,
    login: bool,
}

impl AuthMechanisms {
    fn from_words<'a>(words: impl Iterator<Item = &'a str>) -> AuthMechanisms {
        let mut m = AuthMechanisms::default();
        for w in words {
            m.plain |= w.eq_ignore_ascii_case("PLAIN");
            m.login |= w.eq_ignore_ascii_case("LOGIN");
        }
        m
    }
}

impl Client {
    /// STARTTLS as `cfg.tls` asks, then EHLO again over TLS (RFC 3207 §4.2: the client
    /// forgets what it learnt before).
    pub(super) async fn starttls(&mut self, cfg: &ClientConfig) -> Result<(), ClientError> {
        let (config, required) = match &cfg.tls {
            ClientTls::Off => return Ok(()),
            ClientTls::Opportunistic(c) => (c.clone(), false),
            ClientTls::Required(c) => (c.clone(), true),
        };
        if !self.offers_tls {
            if required {
                self.usable = false;
                return Err(ClientError::Tls("the server does not offer STARTTLS".into()));
            }
            return Ok(());
        }
        self.queue_line(&["STARTTLS"]);
        self.write_queued("starttls", self.command_timeout).await?;
        let reply = self.read_reply("starttls", self.command_timeout).await?;
        if reply.code != 220 {
            if required {
                self.usable = false;
                return Err(ClientError::Tls(format!("STARTTLS refused: {reply}")));
            }
            return Ok(());
        }
        // Nothing the server sent in the clear after its 220 may be read as if sent over TLS.
        self.rbuf.clear();
        self.rstart = 0;
        self.reply_start = 0;
        self.receiver = ResponseReceiver::default();
        let name = rustls::pki_types::ServerName::IpAddress(self.peer.ip().into());
        match self.stream.connect_tls(config, name, self.command_timeout).await {
            Ok(info) => self.tls = Some(info),
            Err(e) => {
                self.usable = false;
                return Err(ClientError::Tls(e.to_string()));
            }
        }
        self.pipelining = false;
        self.max_size = None;
        self.offers_tls = false;
        self.offers_auth = AuthMechanisms::default();
        self.queue_line(&["EHLO ", &cfg.helo]);
        self.write_queued("ehlo", self.command_timeout).await?;
        let ehlo = self.read_reply("ehlo", self.command_timeout).await?;
        if !ehlo.is_success() {
            self.usable = false;
            return Err(ClientError::Greeting(ehlo));
        }
        self.record_capabilities(&ehlo);
        Ok(())
    }

    pub(super) async fn handshake(&mut self, helo: &str) -> Result<(), ClientError> {
        check_line("helo", helo)?;
        let greeting = self.read_reply("greeting", self.command_timeout).await?;
        if !greeting.is_success() {
            self.usable = false;
            return Err(ClientError::Greeting(greeting));
        }
        self.queue_line(&["EHLO ", helo]);
        self.write_queued("ehlo", self.command_timeout).await?;
        let ehlo = self.read_reply("ehlo", self.command_timeout).await?;
        if ehlo.is_success() {
            self.record_capabilities(&ehlo);
            return Ok(());
        }
        if !ehlo.is_permanent() {
            self.usable = false;
            return Err(ClientError::Greeting(ehlo));
        }
        self.queue_line(&["HELO ", helo]);
        self.write_queued("helo", self.command_timeout).await?;
        let reply = self.read_reply("helo", self.command_timeout).await?;
        if !reply.is_success() {
            self.usable = false;
            return Err(ClientError::Greeting(reply));
        }
        Ok(())
    }

    fn record_capabilities(&mut self, ehlo: &Reply) {
        for line in ehlo.lines.iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            if keyword.eq_ignore_ascii_case("PIPELINING") {
                self.pipelining = true;
            } else if keyword.eq_ignore_ascii_case("STARTTLS") {
                self.offers_tls = true;
            } else if keyword.eq_ignore_ascii_case("AUTH") {
                self.offers_auth = AuthMechanisms::from_words(words.clone());
            } else if keyword.eq_ignore_ascii_case("SIZE") {
                // "SIZE" alone or "SIZE 0" means no fixed limit (RFC 1870).
                self.max_size = words.next().and_then(|w| w.parse::<usize>().ok()).filter(|&n| n > 0);
            }
        }
    }

    /// AUTH as `cfg.auth` asks: PLAIN with an initial response when offered, else LOGIN's
    /// two prompts. Anything but `235` is an error; the connection is then not used.
    pub(super) async fn authenticate(&mut self, cfg: &ClientConfig) -> Result<(), ClientError> {
        let Some(c) = &cfg.auth else {
            return Ok(());
        };
        check_line("auth", &c.user)?;
        check_line("auth", &c.password)?;
        let t = self.command_timeout;
        let reply = if self.offers_auth.plain {
            self.queue_line(&["AUTH PLAIN ", &c.plain_response()]);
            self.write_queued("auth", t).await?;
            self.read_reply("auth", t).await?
        } else if self.offers_auth.login {
            self.queue_line(&["AUTH LOGIN ", &sasl::encode(c.user.as_bytes())]);
            self.write_queued("auth", t).await?;
            let prompt = self.read_reply("auth", t).await?;
            if prompt.code == 334 {
                self.queue_line(&[&sasl::encode(c.password.as_bytes())]);
                self.write_queued("auth", t).await?;
                self.read_reply("auth", t).await?
            } else {
                prompt
            }
        } else {
            self.usable = false;
            let why = if self.tls.is_none() && matches!(cfg.tls, ClientTls::Off) {
                "the server does not offer AUTH PLAIN or LOGIN (it may offer it only after STARTTLS)"
            } else {
                "the server does not offer AUTH PLAIN or LOGIN"
            };
            return Err(ClientError::Auth(why.into()));
        };
        if reply.code != 235 {
            self.usable = false;
            return Err(ClientError::Auth(format!("refused as {}: {reply}", c.user)));
        }
        Ok(())
    }
}

//! AUTH on the server side of a session (RFC 4954): the `334` exchange of PLAIN and LOGIN.
//! What the client's lines mean is [`sasl`](crate::smtp::sasl); whether the credentials are
//! good is the policy's [`login`](Policy::login).

use std::io;

use super::{Flow, Line, Session};
use crate::smtp::policy::{AuthOffer, Policy};
use crate::smtp::reply::Reply;
use crate::smtp::sasl::{self, Credentials, Mechanism, SaslError};
use crate::smtp::shared::ServerStats;

/// How a client's side of the exchange ended short of credentials.
enum Short {
    /// Refused with this reply (cancelled, not base64, malformed, too long).
    Refused(Reply),
    /// The session ends (the client left, timed out or the server is stopping).
    End(Flow),
}

impl<P: Policy> Session<P> {
    pub(super) async fn auth(&mut self, mechanism: Option<Mechanism>, initial: String) -> io::Result<Flow> {
        match self.shared.policy.auth(&self.info) {
            AuthOffer::NotOffered => {
                return Ok(self.protocol_error(Reply::new(502, Some("5.5.1"), "Error: authentication not enabled")))
            }
            AuthOffer::AfterTls if self.info.tls.is_none() => {
                return Ok(self.protocol_error(Reply::new(
                    538,
                    Some("5.7.11"),
                    "Encryption required for requested authentication mechanism",
                )))
            }
            AuthOffer::Offered | AuthOffer::AfterTls => {}
        }
        if self.info.auth.is_some() {
            return Ok(self.bad_sequence("Error: already authenticated"));
        }
        if self.env.is_some() {
            return Ok(self.bad_sequence("Error: MAIL transaction in progress"));
        }
        let Some(mechanism) = mechanism else {
            return Ok(self.protocol_error(Reply::new(504, Some("5.5.4"), "Unrecognized authentication type")));
        };
        let creds = match self.exchange(mechanism, initial).await? {
            Ok(c) => c,
            Err(Short::End(flow)) => return Ok(flow),
            Err(Short::Refused(reply)) => {
                ServerStats::bump(&self.shared.stats.auth_failures);
                return Ok(self.protocol_error(reply));
            }
        };
        let d = self.shared.policy.login(&self.info, &creds).await;
        if d.reply.code == 235 {
            ServerStats::bump(&self.shared.stats.auth_successes);
            self.info.auth = Some(creds.user);
            return self.apply(d).await;
        }
        ServerStats::bump(&self.shared.stats.auth_failures);
        self.pause(d.delay).await?;
        if let Some(h) = d.hangup {
            return Ok(Flow::Hangup(h));
        }
        let flow = self.protocol_error(d.reply);
        Ok(if d.close { Flow::Close } else { flow })
    }

    /// Collects the credentials: from the initial response when the client sent one, else
    /// through `334` challenges (LOGIN always asks for the password that way).
    async fn exchange(&mut self, mechanism: Mechanism, initial: String) -> io::Result<Result<Credentials, Short>> {
        let initial = (!initial.is_empty()).then_some(initial);
        Ok(match mechanism {
            Mechanism::Plain => {
                let response = match initial {
                    Some(r) => sasl::decode_response(r.as_bytes()).map_err(refused),
                    None => self.challenge("").await?,
                };
                response.and_then(|r| sasl::plain(&r).map_err(refused))
            }
            Mechanism::Login => {
                let user = match initial {
                    Some(r) => sasl::decode_response(r.as_bytes()).map_err(refused),
                    None => self.challenge(sasl::LOGIN_USER_PROMPT).await?,
                };
                let user = match user.and_then(|u| sasl::login_step(&u).map_err(refused)) {
                    Ok(u) => u,
                    Err(e) => return Ok(Err(e)),
                };
                let password = self.challenge(sasl::LOGIN_PASSWORD_PROMPT).await?;
                password
                    .and_then(|p| sasl::login_step(&p).map_err(refused))
                    .map(|password| Credentials { user, password })
            }
        })
    }

    /// Sends `334 <prompt>` and reads the client's one-line response, decoded.
    async fn challenge(&mut self, prompt: &str) -> io::Result<Result<Vec<u8>, Short>> {
        self.conn.outbuf.extend_from_slice(b"334 ");
        self.conn.outbuf.extend_from_slice(prompt.as_bytes());
        self.conn.outbuf.extend_from_slice(b"\r\n");
        Ok(match self.next_line().await? {
            Line::Ready(n) => {
                let decoded = sasl::decode_response(&self.conn.pending()[..n]).map_err(refused);
                self.conn.consume(n);
                decoded
            }
            Line::TooLong => Err(Short::Refused(Reply::new(
                500,
                Some("5.5.6"),
                "Authentication Exchange line is too long",
            ))),
            Line::End(flow) => Err(Short::End(flow)),
        })
    }
}

fn refused(e: SaslError) -> Short {
    Short::Refused(e.reply())
}

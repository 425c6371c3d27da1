//! What each generated message looks like: who it goes to (domain mix, tenants, recipients),
//! how big it is, and its bytes — headers carrying the identity of SPEC §5 plus a body cut
//! from pre-rendered text, so building a message is a few copies, not string formatting.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, LogNormal};

use crate::events::{Identity, BOUNCE_DOMAIN};
use crate::scenario::{network, ScenarioFile, SizeDist, SizeSpec, Traffic};

/// Distinct recipient mailboxes per domain; enough that no mailbox is unrealistically hot.
const MAILBOXES_PER_DOMAIN: u32 = 100_000;

/// Distinct scripted mailboxes (`nouser-<N>`, …) per domain: a list's bad addresses are few and
/// mailed again and again — which is what suppression lists are for — so repeats must happen.
const SCRIPTED_MAILBOXES: u32 = 1_000;

/// Smallest message we generate: the identity headers alone take about this much.
const MIN_SIZE: u64 = 512;

/// One scheduled message: the per-message decisions of the mix, drawn from the seeded RNG in
/// schedule order.
///
/// This is what the generator keeps per message between its release by the schedule and its
/// submission, and open loop never slows the schedule, so under overload the backlog of drafts
/// grows without bound. Hence a 32-byte `Copy` struct with no heap part (SPEC §8: tracked state
/// ≤ 64 B per message; a `VecDeque` at most doubles that right after it grows). Recipients are
/// not stored: `rcpt_key` seeds them and [`Mix::recipients`] spells them out only when the
/// message is submitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Draft {
    pub seq: u64,
    pub intended_ns: u64,
    /// Seed of this message's recipients; same key, same recipients.
    pub rcpt_key: u64,
    pub tenant: u32,
    /// Target size in bytes (sizes are capped at 4 GiB, far past any SMTP size limit).
    pub size: u32,
}

/// The traffic mix of a scenario, ready to draw from.
#[derive(Debug, Clone)]
pub struct Mix {
    domains: Vec<(String, f64)>,
    total_weight: f64,
    size: SizeSpec,
    tenants: u32,
    rcpts: u32,
    /// Scripted local-part prefixes with their cumulative share (`traffic: recipients:`).
    prefixes: Vec<(String, f64)>,
}

impl Mix {
    pub fn new(t: &Traffic) -> Mix {
        let domains: Vec<(String, f64)> = t.domains.iter().map(|(d, w)| (d.clone(), w.0)).collect();
        Mix {
            total_weight: domains.iter().map(|d| d.1).sum(),
            domains,
            size: t.size.clone(),
            tenants: t.tenants.max(1),
            rcpts: t.recipients_per_message.max(1),
            prefixes: t
                .recipients
                .iter()
                .scan(0.0, |acc, (k, p)| {
                    *acc += p.0;
                    Some((k.clone(), *acc))
                })
                .collect(),
        }
    }

    /// The mix a run's generator sends: the scenario's traffic, its recipient domains as the
    /// system under test sees them — with the `.mailsurge.test` suffix when an external or
    /// distributed system could misroute them to the real domain ([`network::sut_domain`]).
    /// The only place a run's recipient domains are made, so RCPT TO and the `To:` header
    /// agree; the draws are [`Mix::new`]'s, so the schedule and the recipients' local parts
    /// do not change with the suffix.
    pub fn for_scenario(f: &ScenarioFile) -> Mix {
        let mut m = Mix::new(&f.traffic);
        for (d, _) in &mut m.domains {
            *d = network::sut_domain(f, d);
        }
        m
    }

    /// Recipients of each message (envelope RCPTs); counts are per recipient (SPEC §5).
    pub fn recipients_per_message(&self) -> u32 {
        self.rcpts
    }

    pub fn draft(&self, seq: u64, intended_ns: u64, rng: &mut ChaCha8Rng) -> Draft {
        Draft {
            seq,
            intended_ns,
            rcpt_key: rng.random(),
            tenant: rng.random_range(0..self.tenants),
            size: self.sample_size(rng),
        }
    }

    /// The envelope recipients of a draft, drawn from its own RNG seeded by `rcpt_key`, so they
    /// are the same whenever they are spelled out and cost nothing while the draft waits.
    pub fn recipients(&self, d: &Draft) -> Vec<String> {
        let mut rng = ChaCha8Rng::seed_from_u64(d.rcpt_key);
        (0..self.rcpts)
            .map(|_| {
                let mut x = rng.random::<f64>() * self.total_weight;
                let mut domain = &self.domains[self.domains.len() - 1].0;
                for (d, w) in &self.domains {
                    if x < *w {
                        domain = d;
                        break;
                    }
                    x -= w;
                }
                let n = rng.random_range(0..MAILBOXES_PER_DOMAIN);
                // Drawn only with a mix, so a scenario without one keeps its recipients.
                if !self.prefixes.is_empty() {
                    let u = rng.random::<f64>();
                    if let Some((p, _)) = self.prefixes.iter().find(|(_, c)| u < *c) {
                        return format!("{p}-{}@{domain}", n % SCRIPTED_MAILBOXES);
                    }
                }
                format!("user{n}@{domain}")
            })
            .collect()
    }

    fn sample_size(&self, rng: &mut ChaCha8Rng) -> u32 {
        let s = match &self.size {
            SizeSpec::Fixed(s) | SizeSpec::Dist(SizeDist::Fixed { size: s }) => s.0,
            SizeSpec::Dist(SizeDist::Uniform { min, max }) => {
                if max.0 > min.0 {
                    rng.random_range(min.0..=max.0)
                } else {
                    min.0
                }
            }
            SizeSpec::Dist(SizeDist::Lognormal { median, sigma, max }) => {
                let d = LogNormal::new((median.0.max(1) as f64).ln(), sigma.max(0.0));
                d.map_or(median.0 as f64, |d| d.sample(rng)).min(max.0 as f64) as u64
            }
        };
        s.clamp(MIN_SIZE, u32::MAX as u64) as u32
    }
}

/// Builds messages. Holds a pre-rendered body so each message is a header format plus borrowed
/// slices of it: nothing the size of the message is allocated, whatever `size:` says.
pub struct Builder {
    run_id: String,
    /// Envelope-sender domain, where DSNs go.
    bounce_domain: String,
    /// Plain-text part material: wrapped lines.
    filler: Vec<u8>,
    /// HTML part material: the same words as `<p>` paragraphs.
    html: Vec<u8>,
}

/// MIME boundary of every generated message; it cannot occur in the filler (no `=` there).
const BOUNDARY: &str = "=_mailsurge_alt_1";
/// Share of the body given to the text/plain part; the rest is HTML, as in marketing mail.
const TEXT_SHARE: f64 = 0.35;

/// Adds `len` bytes of `material` (one more at most) as borrowed pieces: whole lines while they
/// fit, then the start of a line closed by its own CRLF, so the part stays CRLF text and a
/// `--size 1KiB` message is 1 KiB on the wire, not a line (~78 bytes per part) more or less.
/// Repeats the material for parts larger than it.
fn append_lines<'m>(m: &mut Vec<&'m [u8]>, material: &'m [u8], len: usize) {
    let mut need = len;
    while need > 0 && !material.is_empty() {
        let take = need.min(material.len());
        if let Some(i) = material[..take].windows(2).rposition(|w| w == b"\r\n") {
            m.push(&material[..i + 2]);
            need -= i + 2;
            continue;
        }
        // Less than a line left: its first `need - 2` bytes (never ending inside a CRLF).
        let mut cut = need.saturating_sub(2).min(material.len());
        while cut > 0 && material[cut - 1] == b'\r' {
            cut -= 1;
        }
        m.push(&material[..cut]);
        m.push(b"\r\n");
        break;
    }
}

/// Pre-rendered body text: 76-character lines, as a mail client would wrap.
fn filler(len: usize) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "black", "friday", "deals", "ends", "tonight", "free", "shipping", "on", "all", "orders", "your", "cart", "is",
        "waiting", "save", "up", "to", "percent", "today", "only", "new", "arrivals", "just", "for", "you",
    ];
    let mut out = Vec::with_capacity(len + 80);
    let mut line = String::new();
    let mut i = 0usize;
    while out.len() < len {
        let w = WORDS[i % WORDS.len()];
        i = i.wrapping_mul(31).wrapping_add(7);
        if line.len() + w.len() + 1 > 76 {
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(b"\r\n");
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(w);
    }
    out
}

impl Builder {
    /// `max_size` bounds the pre-rendered body; larger messages repeat it.
    pub fn new(run_id: &str, max_size: usize) -> Builder {
        let text = filler(max_size.clamp(4096, 1 << 20));
        let html = text
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .flat_map(|l| [b"<p>".as_slice(), l.strip_suffix(b"\r").unwrap_or(l), b"</p>\r\n"].concat())
            .collect();
        Builder {
            bounce_domain: BOUNCE_DOMAIN.to_string(),
            run_id: run_id.to_string(),
            filler: text,
            html,
        }
    }

    /// Sends bounces to `domain` instead of [`BOUNCE_DOMAIN`].
    pub fn with_bounce_domain(mut self, domain: &str) -> Builder {
        self.bounce_domain = domain.to_string();
        self
    }

    /// The envelope sender for a tenant (VERP-free: one bounce address per tenant; a DSN is
    /// attributed by the returned `X-Mailsurge-Id` header instead).
    pub fn sender(&self, tenant: u32) -> String {
        format!("t{tenant}@{}", self.bounce_domain)
    }

    /// `X-Mailsurge-Id` of a sequence number.
    pub fn id(&self, seq: u64) -> String {
        format!("{}.{seq}", self.run_id)
    }

    /// The full message to `rcpts` (from [`Mix::recipients`]) with CRLF line endings, `size`
    /// bytes or a little more: its own headers, then filler borrowed from the builder.
    pub fn build(&self, d: &Draft, rcpts: &[String], submitted_ns: u64) -> Built<'_> {
        let date = chrono::DateTime::<chrono::Utc>::from(crate::events::from_ns(d.intended_ns)).to_rfc2822();
        let m = format!(
            "From: Tenant {t} <news@t{t}.sender.mailsurge.test>\r\n\
             To: {to}\r\n\
             Subject: mailsurge {run} message {seq}\r\n\
             Date: {date}\r\n\
             {identity}\
             MIME-Version: 1.0\r\n\
             Content-Type: multipart/alternative; boundary=\"{BOUNDARY}\"\r\n\
             \r\n\
             --{BOUNDARY}\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\
             Content-Transfer-Encoding: 7bit\r\n\
             \r\n",
            t = d.tenant,
            to = rcpts.join(", "),
            run = self.run_id,
            seq = d.seq,
            identity = Identity::headers(&self.run_id, d.seq, d.intended_ns, submitted_ns),
        )
        .into_bytes();
        const HTML_HEAD: &[u8] = b"--=_mailsurge_alt_1\r\nContent-Type: text/html; charset=utf-8\r\n\
            Content-Transfer-Encoding: 7bit\r\n\r\n<html><body>\r\n";
        const CLOSE: &[u8] = b"</body></html>\r\n--=_mailsurge_alt_1--\r\n";
        let body = (d.size as usize).saturating_sub(m.len() + HTML_HEAD.len() + CLOSE.len());
        let text_len = (body as f64 * TEXT_SHARE) as usize;
        let mut parts = Vec::new();
        append_lines(&mut parts, &self.filler, text_len);
        parts.push(HTML_HEAD);
        append_lines(&mut parts, &self.html, body.saturating_sub(text_len));
        parts.push(CLOSE);
        Built { head: m, parts }
    }
}

/// A built message: its own bytes (headers and MIME framing, about a kilobyte) and the filler
/// it repeats, borrowed from the [`Builder`]. A message of any size costs about a kilobyte
/// until the client writes it out in chunks ([`crate::smtp::Client::send_parts`]).
pub struct Built<'a> {
    head: Vec<u8>,
    parts: Vec<&'a [u8]>,
}

impl Built<'_> {
    /// The message as consecutive pieces.
    pub fn pieces(&self) -> Vec<&[u8]> {
        std::iter::once(self.head.as_slice())
            .chain(self.parts.iter().copied())
            .collect()
    }

    pub fn len(&self) -> usize {
        self.head.len() + self.parts.iter().map(|p| p.len()).sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The whole message in one buffer (tests and small tools; the generator streams it).
    pub fn to_vec(&self) -> Vec<u8> {
        self.pieces().concat()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn traffic(yaml: &str) -> Traffic {
        serde_norway::from_str(yaml).unwrap()
    }

    /// An external MTA gets suffixed recipient domains (`network::sut_domain`), each still
    /// mapped to its provider by measurement; `real_domains: true` keeps them as written, and
    /// so does the reference MTA. The draws are the same either way.
    #[test]
    fn an_external_mta_gets_reserved_recipient_domains() {
        let file = |mta: &str, network: &str| -> ScenarioFile {
            serde_norway::from_str(&format!(
                "name: x\nduration: 2s\nslo: {{ delivery_time: 1s, target: 99% }}\n{mta}{network}\
                 providers:\n  - {{ name: gmail, domains: [gmail.com] }}\n  - {{ name: yahoo, domains: [yahoo.com, aol.com] }}\n\
                 traffic: {{ rate: 10/s, domains: {{ gmail.com: 50%, yahoo.com: 25%, aol.com: 25% }} }}\n"
            ))
            .unwrap()
        };
        let external = "mta: { kind: external, submit: 127.0.0.1:25 }\n";
        let rcpts = |f: &ScenarioFile| -> Vec<String> {
            let mix = Mix::for_scenario(f);
            let mut rng = ChaCha8Rng::seed_from_u64(3);
            (0..600)
                .flat_map(|i| mix.recipients(&mix.draft(i, 0, &mut rng)))
                .collect()
        };
        let f = file(external, "");
        let providers = crate::run::provider_map(&f);
        let suffixed = rcpts(&f);
        for r in &suffixed {
            let domain = crate::events::domain_of(r);
            assert!(domain.ends_with(".mailsurge.test"), "{r}");
            let want = if domain.starts_with("gmail.com.") {
                "gmail"
            } else {
                "yahoo"
            };
            assert_eq!(crate::measure::provider_of(&providers, r), Some(want), "{r}");
        }
        assert!(suffixed.iter().any(|r| r.ends_with("@aol.com.mailsurge.test")));
        let real = rcpts(&file(external, "network: { real_domains: true }\n"));
        let reference = rcpts(&file("", ""));
        assert_eq!(real, reference, "real_domains and the reference MTA keep the domains");
        assert!(real.iter().all(|r| !r.contains("mailsurge.test")));
        let stripped: Vec<String> = suffixed.iter().map(|r| r.replace(".mailsurge.test", "")).collect();
        assert_eq!(stripped, real, "the suffix changes nothing else");
    }

    #[test]
    fn mix_is_seeded_and_weighted() {
        let t = traffic("rate: 10/s\ndomains: { a.test: 75%, b.test: 25% }\ntenants: 3\n");
        let mix = Mix::new(&t);
        let mut r1 = ChaCha8Rng::seed_from_u64(5);
        let mut r2 = ChaCha8Rng::seed_from_u64(5);
        let a: Vec<Draft> = (0..4000).map(|i| mix.draft(i, 0, &mut r1)).collect();
        let b: Vec<Draft> = (0..4000).map(|i| mix.draft(i, 0, &mut r2)).collect();
        assert_eq!(a, b);
        let rcpts: Vec<Vec<String>> = a.iter().map(|d| mix.recipients(d)).collect();
        assert_eq!(rcpts, b.iter().map(|d| mix.recipients(d)).collect::<Vec<_>>());
        let to_a = rcpts.iter().filter(|r| r[0].ends_with("@a.test")).count();
        assert!((2800..3200).contains(&to_a), "{to_a}");
        assert!(a.iter().all(|d| d.tenant < 3));
        let other: Vec<Draft> = (0..4000)
            .map(|i| mix.draft(i, 0, &mut ChaCha8Rng::seed_from_u64(6)))
            .collect();
        assert_ne!(a, other, "another seed, other messages");
    }

    /// The open-loop backlog holds one draft per late message; a `VecDeque` of them costs
    /// between 1× and 2× the struct, so 32 bytes keeps the worst case at SPEC §8's 64 B.
    #[test]
    fn draft_fits_the_tracked_state_budget() {
        assert!(std::mem::size_of::<Draft>() <= 32, "{}", std::mem::size_of::<Draft>());
    }

    #[test]
    fn recipients_are_per_message_and_repeatable() {
        let t = traffic("rate: 10/s\ndomains: { a.test: 50%, b.test: 50% }\nrecipients_per_message: 3\n");
        let mix = Mix::new(&t);
        assert_eq!(mix.recipients_per_message(), 3);
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let drafts: Vec<Draft> = (0..200).map(|i| mix.draft(i, 0, &mut rng)).collect();
        let all: Vec<Vec<String>> = drafts.iter().map(|d| mix.recipients(d)).collect();
        assert!(all.iter().all(|r| r.len() == 3));
        assert_eq!(all[17], mix.recipients(&drafts[17]), "spelled out again, the same");
        let distinct: std::collections::HashSet<&Vec<String>> = all.iter().collect();
        assert_eq!(distinct.len(), all.len(), "every message has its own recipients");
        let to_b = all.iter().flatten().filter(|r| r.ends_with("@b.test")).count();
        assert!((200..400).contains(&to_b), "{to_b} of 600 to b.test");
    }

    #[test]
    fn built_message_has_identity_and_size() {
        let b = Builder::new("run1", 64 * 1024);
        let d = Draft {
            seq: 7,
            intended_ns: 1_700_000_000_000_000_000,
            rcpt_key: 1,
            tenant: 2,
            size: 12 * 1024,
        };
        let rcpts = ["user1@a.test".to_string()];
        let m = b.build(&d, &rcpts, 1_700_000_000_500_000_000).to_vec();
        assert!((12 * 1024..=12 * 1024 + 2).contains(&m.len()), "{}", m.len());
        // Sizes are met to the byte or two (a part's last line is cut, not a line added), from
        // the smallest message with a body on up; benchmarks size against a peer by them.
        for size in [1024, 1025, 1100, 1500, 4096, 100_000] {
            let sized = b.build(&Draft { size, ..d }, &rcpts, 0).to_vec();
            assert!(
                (size as usize..=size as usize + 2).contains(&sized.len()),
                "{size}: {}",
                sized.len()
            );
            assert!(
                sized.windows(2).all(|w| w[1] != b'\n' || w[0] == b'\r'),
                "{size}: CRLF text"
            );
            assert!(
                !sized.windows(2).any(|w| w == b"\n."),
                "{size}: no line starts with a dot"
            );
        }
        let text = String::from_utf8(m.clone()).unwrap();
        assert!(text.contains("Content-Type: multipart/alternative; boundary=\"=_mailsurge_alt_1\""));
        assert!(text.contains("Content-Type: text/html") && text.contains("<p>"));
        assert!(text.ends_with("--=_mailsurge_alt_1--\r\n"));
        assert_eq!(text.matches("--=_mailsurge_alt_1\r\n").count(), 2, "two parts");
        let id = crate::events::Identity::parse(&m);
        assert_eq!(id.mailsurge_id.as_deref(), Some("run1.7"));
        assert_eq!(id.intended_ns, Some(1_700_000_000_000_000_000));
        assert_eq!(id.submitted_ns, Some(1_700_000_000_500_000_000));
        // Well-formed CRLF: no bare LF anywhere.
        assert!(m.windows(2).all(|w| w[1] != b'\n' || w[0] == b'\r'));
        let big = Draft { size: 3 << 20, ..d };
        let built = b.build(&big, &rcpts, 0);
        assert!(built.len() >= (3 << 20) - 100);
        assert!(built.head.len() < 4096, "only the headers are the message's own bytes");
    }

    #[test]
    fn recipient_mix_scripts_local_parts_at_their_shares() {
        let plain = Mix::new(&traffic("rate: 10/s\ndomains: { a.test: 1 }\n"));
        let mixed = Mix::new(&traffic(
            "rate: 10/s\ndomains: { a.test: 1 }\nrecipients: { nouser: 10%, greylist: 20% }\n",
        ));
        let mut r = ChaCha8Rng::seed_from_u64(3);
        let drafts: Vec<Draft> = (0..20_000).map(|i| plain.draft(i, 0, &mut r)).collect();
        let share = |p: &str| {
            let n = drafts.iter().filter(|d| mixed.recipients(d)[0].starts_with(p)).count();
            n as f64 / drafts.len() as f64
        };
        assert!((share("nouser-") - 0.10).abs() < 0.01, "{}", share("nouser-"));
        assert!((share("greylist-") - 0.20).abs() < 0.01, "{}", share("greylist-"));
        assert!((share("user") - 0.70).abs() < 0.01, "{}", share("user"));
        // The same mailbox number either way (scripted ones from a smaller set, so they repeat
        // and suppression has something to do), and no mix leaves recipients as they were.
        let number = |r: &str| -> u32 {
            r.split('@')
                .next()
                .unwrap()
                .trim_start_matches(|c: char| !c.is_ascii_digit())
                .parse()
                .unwrap()
        };
        for d in &drafts[..100] {
            let (a, b) = (&plain.recipients(d)[0], &mixed.recipients(d)[0]);
            let want = if b.starts_with("user") {
                number(a)
            } else {
                number(a) % SCRIPTED_MAILBOXES
            };
            assert_eq!(number(b), want, "{a} {b}");
        }
    }

    #[test]
    fn lognormal_sizes_respect_max() {
        let t = traffic(
            "rate: 10/s\ndomains: { a.test: 1 }\nsize: { dist: lognormal, median: 12KiB, sigma: 1.0, max: 64KiB }\n",
        );
        let mix = Mix::new(&t);
        let mut r = ChaCha8Rng::seed_from_u64(1);
        let sizes: Vec<u32> = (0..2000).map(|i| mix.draft(i, 0, &mut r).size).collect();
        assert!(sizes.iter().all(|s| *s <= 64 * 1024));
        let mut sorted = sizes.clone();
        sorted.sort();
        let median = sorted[1000];
        assert!((10_000..15_000).contains(&median), "{median}");
    }
}

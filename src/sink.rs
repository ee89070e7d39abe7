//! `hookrelay sink`: a local subscriber for development and debugging.
//!
//! It listens on plain HTTP (HTTP/1.1 and HTTP/2, served by the same
//! [`crate::ingress::listener::serve`] as the gateway's own listeners),
//! verifies each request's Standard Webhooks signature with the secrets it
//! was given ([`crate::signing::verify`]), prints one line per request and
//! answers as its [`Reply`] mode says:
//!
//! ```text
//! 2026-11-27T10:15:30.123Z POST /webhooks/muapi id=evt_… attempt=1 route=muapi signature=valid size=412 status=200
//! ```
//!
//! The line is printed when the request has arrived, before any `--delay`.
//! Output is written whole per request (line, then the body if asked) and
//! flushed at once, so a reader of a pipe sees each delivery immediately.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::ingress::listener::{self, Handler, Limits};
use crate::signing::{SecretError, VerifyError};

/// Largest body the sink reads; a larger one is answered 413. Far above
/// any webhook, it only keeps a stray upload from filling memory.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// How many deliveries `--fail-first` remembers; beyond this the oldest is
/// forgotten (and would fail again from the start), so a long load test
/// cannot grow the sink without bound.
pub const MAX_REMEMBERED: usize = 100_000;

/// How long open requests may finish after Ctrl-C before the sink exits.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Why the sink cannot start.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// One of the signing secrets is unusable; `position` counts from 1 in
    /// the order given (the secret itself is never quoted).
    #[error("signing secret {position}: {source}")]
    Secret {
        /// Which secret, counting from 1.
        position: usize,
        /// What is wrong with it.
        source: SecretError,
    },
    /// The listen address cannot be bound (in use, not local, no permission).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's reason.
        source: std::io::Error,
    },
}

/// What the sink answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// 200 to everything.
    Ok,
    /// 500 to the first `n` requests of each delivery, then 200. A
    /// delivery is identified by its path and `webhook-id` (the gateway
    /// sends the same `webhook-id` to every subscriber of an event, so two
    /// subscribers pointed at one sink under different paths each get their
    /// own count; requests without `webhook-id` share one count per path).
    FailFirst(u32),
    /// This status to everything.
    Status(StatusCode),
}

/// How the sink checks and answers.
#[derive(Debug, Clone)]
pub struct Options {
    /// Decoded signing keys; a signature made with any of them is valid
    /// (several during a rotation). Empty: signatures are not checked.
    pub keys: Vec<Vec<u8>>,
    /// The answer mode.
    pub reply: Reply,
    /// Wait before answering (to see the gateway's timeout at work).
    pub delay: Duration,
    /// Print each body after its line.
    pub print_body: bool,
}

impl Options {
    /// Decodes `whsec_…` secrets as the config does; the error names the
    /// position of a bad one, never its text.
    pub fn decode_secrets(secrets: &[String]) -> Result<Vec<Vec<u8>>, SinkError> {
        secrets
            .iter()
            .enumerate()
            .map(|(i, s)| {
                crate::signing::decode_whsec(s).map_err(|source| SinkError::Secret {
                    position: i + 1,
                    source,
                })
            })
            .collect()
    }
}

/// What the signature check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A `v1` entry matched one of the keys, with a fresh timestamp.
    Valid,
    /// Keys were given and the request does not pass (missing headers,
    /// stale or malformed timestamp, or no entry matches any key).
    Invalid(VerifyError),
    /// No keys were given and the request carries no `webhook-signature`.
    Unsigned,
    /// No keys were given; the request's signature was not checked.
    NotChecked,
}

impl Verdict {
    /// Checks `headers` and `body` against `keys` at `now_secs` (unix).
    pub fn check(keys: &[Vec<u8>], headers: &HeaderMap, body: &[u8], now_secs: u64) -> Self {
        let signature = header(headers, "webhook-signature");
        if keys.is_empty() {
            return if signature.is_some() {
                Verdict::NotChecked
            } else {
                Verdict::Unsigned
            };
        }
        let id = header(headers, "webhook-id");
        let timestamp = header(headers, "webhook-timestamp");
        let mut failure = VerifyError::Mismatch;
        for key in keys {
            match crate::signing::verify(key, id, timestamp, signature, body, now_secs) {
                Ok(()) => return Verdict::Valid,
                Err(e) => failure = e,
            }
        }
        Verdict::Invalid(failure)
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Valid => f.write_str("valid"),
            Verdict::Unsigned => f.write_str("unsigned"),
            Verdict::NotChecked => f.write_str("not-checked"),
            // One word, so the line splits on spaces.
            Verdict::Invalid(e) => match e {
                VerifyError::MissingHeader(name) => write!(f, "INVALID(missing-{name})"),
                VerifyError::BadTimestamp => f.write_str("INVALID(bad-timestamp)"),
                VerifyError::Stale => f.write_str("INVALID(stale-timestamp)"),
                VerifyError::Mismatch => f.write_str("INVALID(mismatch)"),
            },
        }
    }
}

/// A header's value, if present and visible ASCII.
fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Counts requests per delivery for [`Reply::FailFirst`], forgetting the
/// oldest beyond [`MAX_REMEMBERED`].
#[derive(Default)]
struct Seen {
    counts: HashMap<(String, String), u32>,
    order: VecDeque<(String, String)>,
}

impl Seen {
    /// Counts one more request for `(path, id)`; returns its number (1 for
    /// the first).
    fn count(&mut self, path: &str, id: &str) -> u32 {
        let key = (path.to_string(), id.to_string());
        if let Some(n) = self.counts.get_mut(&key) {
            *n = n.saturating_add(1);
            return *n;
        }
        if self.order.len() >= MAX_REMEMBERED {
            if let Some(oldest) = self.order.pop_front() {
                self.counts.remove(&oldest);
            }
        }
        self.order.push_back(key.clone());
        self.counts.insert(key, 1);
        1
    }
}

/// Where the sink writes its lines.
pub type Output = Box<dyn Write + Send>;

struct State {
    options: Options,
    seen: Mutex<Seen>,
    out: Mutex<Output>,
}

impl State {
    /// Decides the status for a request to `path` with `id`.
    fn status_for(&self, path: &str, id: Option<&str>) -> StatusCode {
        match self.options.reply {
            Reply::Ok => StatusCode::OK,
            Reply::Status(code) => code,
            Reply::FailFirst(n) => {
                let count = self
                    .seen
                    .lock()
                    .expect("never poisoned")
                    .count(path, id.unwrap_or(""));
                if count <= n {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::OK
                }
            }
        }
    }

    /// Writes `text` whole and flushes. A closed stdout (the reader went
    /// away) is not a reason to stop answering: the error is dropped.
    fn print(&self, text: &str) {
        let mut out = self.out.lock().expect("never poisoned");
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }
}

/// A bound sink, ready to [`Sink::serve`].
pub struct Sink {
    listener: TcpListener,
    state: Arc<State>,
}

impl Sink {
    /// Binds `addr` (port 0 picks a free port; see [`Sink::local_addr`]).
    pub async fn bind(addr: SocketAddr, options: Options, out: Output) -> Result<Self, SinkError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| SinkError::Bind { addr, source })?;
        Ok(Self {
            listener,
            state: Arc::new(State {
                options,
                seen: Mutex::default(),
                out: Mutex::new(out),
            }),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Prints `listening on http://ADDR …` and serves until `shutdown`;
    /// then stops accepting and lets open requests finish for up to a
    /// second.
    pub async fn serve(self, shutdown: CancellationToken) {
        let addr = self.local_addr();
        self.state.print(&format!(
            "hookrelay sink listening on http://{addr} ({})\n",
            describe(&self.state.options)
        ));
        let state = self.state.clone();
        let handler: Handler = Arc::new(move |_peer, request| {
            let state = state.clone();
            Box::pin(answer(state, request))
        });
        let limits = Limits {
            header_read_timeout: Duration::from_secs(30),
            max_connections: 1024,
            grace: SHUTDOWN_GRACE,
            idle_timeout: Duration::from_secs(60),
        };
        let limits = std::sync::Arc::new(arc_swap::ArcSwap::from_pointee(limits));
        listener::serve(self.listener, None, limits, handler, shutdown).await;
    }
}

/// The start-up summary of the options (no secret, only their count).
fn describe(options: &Options) -> String {
    let signatures = match options.keys.len() {
        0 => "signatures not checked".to_string(),
        1 => "signatures checked with 1 secret".to_string(),
        n => format!("signatures checked with {n} secrets"),
    };
    let answers = match options.reply {
        Reply::Ok => "answering 200".to_string(),
        Reply::FailFirst(n) => {
            format!("answering 500 to the first {n} request(s) of each delivery, then 200")
        }
        Reply::Status(code) => format!("answering {}", code.as_u16()),
    };
    let delay = if options.delay.is_zero() {
        String::new()
    } else {
        format!(" after {}", crate::config::duration::format(options.delay))
    };
    format!("{signatures}; {answers}{delay}")
}

/// Handles one request: read, check, print, wait, answer.
async fn answer(state: Arc<State>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let arrived = SystemTime::now();
    let (parts, body) = request.into_parts();
    let body = Limited::new(body, MAX_BODY_BYTES).collect().await;
    let headers = &parts.headers;
    let id = header(headers, "webhook-id");
    let path = parts.uri.path();
    let mut record = Record {
        at: arrived,
        method: parts.method.as_str(),
        path,
        id,
        attempt: header(headers, "hookrelay-attempt"),
        route: header(headers, "hookrelay-route"),
        verdict: None,
        size: Size::Bytes(0),
        status: StatusCode::OK,
    };
    let body = match body {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            let (size, status) = if e.is::<http_body_util::LengthLimitError>() {
                (Size::TooLarge, StatusCode::PAYLOAD_TOO_LARGE)
            } else {
                (Size::Unreadable, StatusCode::BAD_REQUEST)
            };
            record.size = size;
            record.status = status;
            state.print(&format!("{record}\n"));
            return reply(status);
        }
    };
    let now_secs = arrived
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    record.verdict = Some(Verdict::check(
        &state.options.keys,
        headers,
        &body,
        now_secs,
    ));
    record.size = Size::Bytes(body.len());
    record.status = state.status_for(path, id);
    let mut text = format!("{record}\n");
    if state.options.print_body {
        text.push_str(&show_body(&body));
    }
    state.print(&text);
    let status = record.status;
    if !state.options.delay.is_zero() {
        tokio::time::sleep(state.options.delay).await;
    }
    reply(status)
}

/// A short text answer with `status`.
fn reply(status: StatusCode) -> Response<Full<Bytes>> {
    let text = if status.is_success() {
        "ok\n".to_string()
    } else {
        format!("hookrelay sink answers {} on purpose\n", status.as_u16())
    };
    let mut response = Response::new(Full::new(Bytes::from(text)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// How much body arrived.
enum Size {
    Bytes(usize),
    /// Over [`MAX_BODY_BYTES`].
    TooLarge,
    /// The peer broke off or sent a malformed body.
    Unreadable,
}

/// One printed line.
struct Record<'a> {
    at: SystemTime,
    method: &'a str,
    path: &'a str,
    id: Option<&'a str>,
    attempt: Option<&'a str>,
    route: Option<&'a str>,
    /// None when the body could not be read (nothing to check).
    verdict: Option<Verdict>,
    size: Size,
    status: StatusCode,
}

impl fmt::Display for Record<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn or_dash(v: Option<&str>) -> &str {
            v.unwrap_or("-")
        }
        write!(
            f,
            "{} {} {} id={} attempt={} route={} signature={} size=",
            rfc3339(self.at),
            self.method,
            self.path,
            or_dash(self.id),
            or_dash(self.attempt),
            or_dash(self.route),
            self.verdict
                .as_ref()
                .map(|v| v.to_string())
                .unwrap_or_else(|| "-".into()),
        )?;
        match self.size {
            Size::Bytes(n) => write!(f, "{n}")?,
            Size::TooLarge => write!(f, "over-{MAX_BODY_BYTES}")?,
            Size::Unreadable => f.write_str("unreadable")?,
        }
        write!(f, " status={}", self.status.as_u16())
    }
}

/// The body for display, each line indented by two spaces: JSON
/// re-indented (key order, numbers and strings exactly as sent), anything
/// else as text with control characters escaped so it cannot drive the
/// terminal. Nothing in the body is acted upon.
pub fn show_body(body: &[u8]) -> String {
    let text = if body.is_empty() {
        "(empty body)".to_string()
    } else if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() {
        indent_json(&String::from_utf8_lossy(body))
    } else {
        escape_controls(&String::from_utf8_lossy(body))
    };
    let mut out = String::with_capacity(text.len() + 16);
    for line in text.lines() {
        out.push_str("  ");
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Re-indents valid JSON token by token (never re-serialised, so `1.50`
/// stays `1.50` and keys keep their order).
fn indent_json(json: &str) -> String {
    fn newline(out: &mut String, depth: usize) {
        out.push('\n');
        for _ in 0..depth {
            out.push_str("  ");
        }
    }
    let mut out = String::with_capacity(json.len() * 2);
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut chars = json.chars().peekable();
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                while chars.peek().is_some_and(|c| c.is_whitespace()) {
                    chars.next();
                }
                let close = if c == '{' { '}' } else { ']' };
                if chars.peek() == Some(&close) {
                    chars.next();
                    out.push(close);
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_whitespace() => {}
            c => out.push(c),
        }
    }
    out
}

/// Escapes control characters other than newline and tab.
fn escape_controls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() && c != '\n' && c != '\t' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// `t` as RFC 3339 in UTC with milliseconds: `2026-11-27T10:15:30.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let rest = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since.subsec_millis()
    )
}

/// The proleptic Gregorian date of `days` since 1970-01-01 (H. Hinnant's
/// days-to-civil algorithm: 400-year eras, years starting in March).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let march_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * march_month + 2) / 5 + 1;
    let month = if march_month < 10 {
        march_month + 3
    } else {
        march_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month as u32, day as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    const SECRET: &str = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const OTHER: &str = "c2Vjb25kLXNlY3JldC1mb3ItdGVzdHMtb25seQ==";

    fn key(b64: &str) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap()
    }

    fn signed(keys: &[Vec<u8>], ts: u64, body: &[u8]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("webhook-id", "evt_1".parse().unwrap());
        h.insert("webhook-timestamp", ts.to_string().parse().unwrap());
        h.insert(
            "webhook-signature",
            crate::signing::sign(keys, "evt_1", ts, body)
                .parse()
                .unwrap(),
        );
        h
    }

    #[test]
    fn verdicts() {
        let now = 1_800_000_000;
        let body = br#"{"a":1}"#;
        let headers = signed(&[key(SECRET)], now, body);
        // Any of the keys, in any order (rotation).
        for keys in [
            vec![key(SECRET)],
            vec![key(OTHER), key(SECRET)],
            vec![key(SECRET), key(OTHER)],
        ] {
            assert_eq!(Verdict::check(&keys, &headers, body, now), Verdict::Valid);
        }
        assert_eq!(
            Verdict::check(&[key(OTHER)], &headers, body, now),
            Verdict::Invalid(VerifyError::Mismatch)
        );
        assert_eq!(
            Verdict::check(&[key(SECRET)], &headers, b"{\"a\":2}", now),
            Verdict::Invalid(VerifyError::Mismatch)
        );
        assert_eq!(
            Verdict::check(&[key(SECRET)], &headers, body, now + 600),
            Verdict::Invalid(VerifyError::Stale)
        );
        assert_eq!(
            Verdict::check(&[], &headers, body, now),
            Verdict::NotChecked
        );
        assert_eq!(
            Verdict::check(&[], &HeaderMap::new(), body, now),
            Verdict::Unsigned
        );
        let unsigned = Verdict::check(&[key(SECRET)], &HeaderMap::new(), body, now);
        assert_eq!(unsigned.to_string(), "INVALID(missing-webhook-id)");
        assert_eq!(
            Verdict::Invalid(VerifyError::Mismatch).to_string(),
            "INVALID(mismatch)"
        );
    }

    #[test]
    fn bad_secrets_are_named_by_position_not_text() {
        let good = format!("whsec_{SECRET}");
        let e = Options::decode_secrets(&[good.clone(), "whsec_tooshort".into()]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "signing secret 2: the decoded key is shorter than 16 bytes"
        );
        let e = Options::decode_secrets(&[SECRET.into()]).unwrap_err();
        assert!(!e.to_string().contains(SECRET), "{e}");
        assert_eq!(Options::decode_secrets(&[good]).unwrap(), vec![key(SECRET)]);
    }

    #[test]
    fn fail_first_counts_per_path_and_id() {
        let state = State {
            options: Options {
                keys: vec![],
                reply: Reply::FailFirst(2),
                delay: Duration::ZERO,
                print_body: false,
            },
            seen: Mutex::default(),
            out: Mutex::new(Box::new(std::io::sink())),
        };
        let codes = |path, id| state.status_for(path, id).as_u16();
        assert_eq!(codes("/a", Some("e1")), 500);
        assert_eq!(
            codes("/b", Some("e1")),
            500,
            "another subscriber's own count"
        );
        assert_eq!(codes("/a", Some("e2")), 500);
        assert_eq!(codes("/a", Some("e1")), 500);
        assert_eq!(codes("/a", Some("e1")), 200);
        assert_eq!(codes("/a", Some("e1")), 200);
        assert_eq!(codes("/a", None), 500);
        assert_eq!(codes("/a", None), 500);
        assert_eq!(codes("/a", None), 200);
    }

    #[test]
    fn remembered_deliveries_are_bounded() {
        let mut seen = Seen::default();
        for i in 0..MAX_REMEMBERED + 10 {
            seen.count("/", &i.to_string());
        }
        assert_eq!(seen.counts.len(), MAX_REMEMBERED);
        assert_eq!(seen.order.len(), MAX_REMEMBERED);
        // The oldest were forgotten, the newest kept.
        assert_eq!(seen.count("/", "0"), 1);
        assert_eq!(seen.count("/", &(MAX_REMEMBERED + 9).to_string()), 2);
    }

    #[test]
    fn json_bodies_are_indented_not_reserialised() {
        let body = br#"{ "status":"completed",  "id":"a\"b,{c}", "n": 1.50, "big": 12345678901234567890, "e":{}, "l":[ ], "x":[1,{"y":null}] }"#;
        let shown = show_body(body);
        let expected = r#"  {
    "status": "completed",
    "id": "a\"b,{c}",
    "n": 1.50,
    "big": 12345678901234567890,
    "e": {},
    "l": [],
    "x": [
      1,
      {
        "y": null
      }
    ]
  }
"#;
        assert_eq!(shown, expected);
    }

    #[test]
    fn text_bodies_cannot_drive_the_terminal() {
        assert_eq!(
            show_body(b"plain\x1b[31mred\r\nnext\tcol"),
            "  plain\\u{1b}[31mred\\r\n  next\tcol\n"
        );
        assert_eq!(show_body(b""), "  (empty body)\n");
        assert_eq!(show_body(b"\xff ok"), "  \u{fffd} ok\n");
    }

    #[test]
    fn rfc3339_in_utc() {
        let at = |secs: u64, ms: u64| {
            rfc3339(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(ms))
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(at(1_614_265_330, 999), "2021-02-25T15:02:10.999Z");
        assert_eq!(at(4_102_444_799, 0), "2099-12-31T23:59:59.000Z");
    }

    #[test]
    fn record_line() {
        let record = Record {
            at: UNIX_EPOCH + Duration::from_secs(1_614_265_330),
            method: "POST",
            path: "/webhooks/muapi",
            id: Some("evt_1"),
            attempt: Some("2"),
            route: None,
            verdict: Some(Verdict::Invalid(VerifyError::Mismatch)),
            size: Size::Bytes(412),
            status: StatusCode::INTERNAL_SERVER_ERROR,
        };
        assert_eq!(
            record.to_string(),
            "2021-02-25T15:02:10.000Z POST /webhooks/muapi id=evt_1 attempt=2 route=- signature=INVALID(mismatch) size=412 status=500"
        );
    }
}

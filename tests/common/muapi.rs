//! A fake muapi.ai for tests: the submit endpoint (`POST /api/v1/{endpoint}`)
//! and the result endpoint (`GET /api/v1/predictions/{id}/result`), real
//! HTTP on 127.0.0.1. It records what it received, and each task follows a
//! script: what its polls answer, and whether (and how) muapi calls the
//! webhook — three tries with backoff, like the real one.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// What one poll of a task answers.
#[derive(Clone, Debug)]
pub enum PollAnswer {
    /// 200 with this status (`queued`, `processing`, `completed`, …).
    Status(&'static str),
    /// This HTTP status, with `Retry-After` seconds when given.
    Http(u16, Option<u64>),
}

/// How a task behaves.
#[derive(Clone, Debug)]
pub struct Script {
    /// Poll answers in order; after them, `completed`.
    pub polls: Vec<PollAnswer>,
    /// Call the webhook this long after submission (three tries).
    pub callback_after: Option<Duration>,
    /// Delay before answering each poll.
    pub poll_delay: Duration,
    /// Refuse the submission with this status (no task is made).
    pub refuse_with: Option<u16>,
}

impl Default for Script {
    fn default() -> Self {
        Self {
            polls: Vec::new(),
            callback_after: None,
            poll_delay: Duration::ZERO,
            refuse_with: None,
        }
    }
}

/// A submission the fake received.
#[derive(Clone, Debug)]
pub struct Submission {
    pub endpoint: String,
    pub body: Bytes,
    pub api_key: Option<String>,
    pub webhook: Option<String>,
    pub request_id: String,
}

#[derive(Default)]
struct Inner {
    submissions: Mutex<Vec<Submission>>,
    /// (task, start, end) of every poll.
    polls: Mutex<Vec<(String, Instant, Option<Instant>)>>,
    /// API keys seen on polls.
    poll_keys: Mutex<Vec<Option<String>>>,
    scripts: Mutex<HashMap<String, (Script, VecDeque<PollAnswer>)>>,
    next_script: Mutex<Option<Script>>,
    /// Webhook calls: (task, HTTP status or 0 for a transport error).
    callbacks: Mutex<Vec<(String, u16)>>,
    counter: Mutex<u64>,
}

/// The fake muapi.
#[derive(Clone)]
pub struct FakeMuapi {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
}

/// The body muapi returns for a task (as a callback or a result).
pub fn result_body(id: &str, status: &str) -> String {
    serde_json::json!({
        "id": id,
        "outputs": if status == "completed" { serde_json::json!([format!("https://cdn.example/{id}.png")]) } else { serde_json::json!([]) },
        "urls": {"get": format!("https://api.muapi.ai/api/v1/predictions/{id}/result")},
        "has_nsfw_contents": [false],
        "status": status,
        "created_at": "2026-11-27T00:00:00.000Z",
        "error": if status == "failed" { serde_json::json!("out of memory") } else { serde_json::Value::Null },
        "executionTime": 1234,
        "timings": {"inference": 1.2}
    })
    .to_string()
}

impl FakeMuapi {
    /// Starts the fake on a free port.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let inner = Arc::new(Inner::default());
        let state = inner.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = state.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(answer(state, req).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, inner }
    }

    /// The base URL (`base_url` in the config).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The script of the next submitted task.
    pub fn next_script(&self, script: Script) {
        *self.inner.next_script.lock().unwrap() = Some(script);
    }

    /// Scripts a task by id (for tasks registered without submitting).
    pub fn script(&self, id: &str, script: Script) {
        let polls = script.polls.iter().cloned().collect();
        self.inner
            .scripts
            .lock()
            .unwrap()
            .insert(id.to_string(), (script, polls));
    }

    pub fn submissions(&self) -> Vec<Submission> {
        self.inner.submissions.lock().unwrap().clone()
    }

    /// Polls of one task: (start, end).
    pub fn polls_of(&self, id: &str) -> Vec<(Instant, Option<Instant>)> {
        self.inner
            .polls
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.0 == id)
            .map(|p| (p.1, p.2))
            .collect()
    }

    /// Every poll.
    pub fn poll_count(&self) -> usize {
        self.inner.polls.lock().unwrap().len()
    }

    /// API keys seen on polls.
    pub fn poll_keys(&self) -> Vec<Option<String>> {
        self.inner.poll_keys.lock().unwrap().clone()
    }

    /// Webhook calls made: (task, status or 0).
    pub fn callbacks(&self) -> Vec<(String, u16)> {
        self.inner.callbacks.lock().unwrap().clone()
    }
}

fn json(status: u16, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    response
}

async fn answer(state: Arc<Inner>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let key = req
        .headers()
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if req.method() == http::Method::GET {
        // /api/v1/predictions/{id}/result
        let Some(id) = path
            .strip_prefix("/api/v1/predictions/")
            .and_then(|p| p.strip_suffix("/result"))
            .map(str::to_string)
        else {
            return json(404, r#"{"error":"not found"}"#.into());
        };
        state.poll_keys.lock().unwrap().push(key);
        let index = {
            let mut polls = state.polls.lock().unwrap();
            polls.push((id.clone(), Instant::now(), None));
            polls.len() - 1
        };
        let (delay, next) = {
            let mut scripts = state.scripts.lock().unwrap();
            match scripts.get_mut(&id) {
                Some((script, left)) => (script.poll_delay, left.pop_front()),
                None => (Duration::ZERO, None),
            }
        };
        tokio::time::sleep(delay).await;
        let response = match next {
            Some(PollAnswer::Status(status)) => json(200, result_body(&id, status)),
            Some(PollAnswer::Http(code, retry_after)) => {
                let mut r = json(code, r#"{"error":"scripted"}"#.into());
                if let Some(secs) = retry_after {
                    r.headers_mut()
                        .insert("retry-after", secs.to_string().parse().unwrap());
                }
                r
            }
            None => json(200, result_body(&id, "completed")),
        };
        state.polls.lock().unwrap()[index].2 = Some(Instant::now());
        return response;
    }
    // POST /api/v1/{endpoint}
    let Some(endpoint) = path.strip_prefix("/api/v1/").map(str::to_string) else {
        return json(404, r#"{"error":"not found"}"#.into());
    };
    let webhook = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "webhook")
        .map(|(_, v)| v.into_owned());
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let id = {
        let mut counter = state.counter.lock().unwrap();
        *counter += 1;
        format!("task-{}-{}", *counter, rand::random::<u32>())
    };
    state.submissions.lock().unwrap().push(Submission {
        endpoint,
        body,
        api_key: key,
        webhook: webhook.clone(),
        request_id: id.clone(),
    });
    let script = state.next_script.lock().unwrap().take().unwrap_or_default();
    if let Some(code) = script.refuse_with {
        return json(code, r#"{"detail":"prompt is required"}"#.into());
    }
    let polls = script.polls.iter().cloned().collect();
    state
        .scripts
        .lock()
        .unwrap()
        .insert(id.clone(), (script.clone(), polls));
    if let (Some(after), Some(url)) = (script.callback_after, webhook) {
        let state = state.clone();
        let id = id.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            call_webhook(&state, &id, &url).await;
        });
    }
    json(
        200,
        serde_json::json!({"request_id": id, "status": "processing"}).to_string(),
    )
}

/// Calls the webhook like muapi: up to three tries, with backoff.
async fn call_webhook(state: &Inner, id: &str, url: &str) {
    let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http();
    let mut wait = Duration::from_millis(100);
    for _ in 0..3 {
        let request = Request::post(url)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(result_body(id, "completed"))))
            .unwrap();
        let status = match client.request(request).await {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        };
        state
            .callbacks
            .lock()
            .unwrap()
            .push((id.to_string(), status));
        if (200..300).contains(&status) {
            return;
        }
        tokio::time::sleep(wait).await;
        wait *= 2;
    }
}

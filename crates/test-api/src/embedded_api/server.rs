//! HTTP routing: turns REST requests into [`Call`]s on the store (or into [`Watch`]es),
//! applies injected faults, and serves a little discovery. Reading paths and queries is in
//! `route`, the discovery documents in `discovery`.

mod discovery;
mod route;

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::TryStreamExt;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

use super::call::{Call, PatchType, Verb};
use super::faults::{self, FaultAction, FaultVerdict};
use super::status::Status;
use super::watches::Watch;
use super::{Dropped, EmbeddedApi};
use discovery::{core_versions, group_list, resource_list, version_info};
use route::{query_pairs, route, Route};

/// Largest request body accepted, like the real server's 3 MB limit.
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// How long open connections get to finish when the server stops (open watches end at
/// once).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A whole JSON document, or a watch's events as they come.
type Reply = Response<UnsyncBoxBody<Bytes, Dropped>>;

/// Accepts connections on `listener` until `stop` fires, then lets open ones finish.
pub(crate) async fn run(api: EmbeddedApi, listener: TcpListener, mut stop: oneshot::Receiver<()>) {
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    // Turns true on stop: graceful shutdown waits for answers to end, and watches would not.
    let closing = watch::Sender::new(false);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "embedded API accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        if api.faults().is_refusing() {
            drop(stream);
            continue;
        }
        let api = api.clone();
        let closing = closing.subscribe();
        let service =
            hyper::service::service_fn(move |req| handle(api.clone(), closing.clone(), req));
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            // Errors here are client disconnects and deliberate drops; nothing to report.
            let _ = conn.await;
        });
    }
    drop(listener);
    closing.send_replace(true);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await;
}

fn json_reply(code: u16, body: &Value) -> Reply {
    let body = Full::new(Bytes::from(body.to_string()))
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut reply = Response::new(body);
    *reply.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    reply.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    reply
}

fn status_reply(status: &Status) -> Reply {
    let mut reply = json_reply(status.code, &status.to_json());
    let retry = status.details.as_ref().and_then(|d| d.retry_after_seconds);
    if let Some(seconds) = retry {
        reply
            .headers_mut()
            .insert(header::RETRY_AFTER, seconds.into());
    }
    reply
}

/// A watch's answer: 200 and its events, chunk by chunk, as they happen.
fn watch_reply(api: EmbeddedApi, watch: Watch, closing: watch::Receiver<bool>) -> Reply {
    let events = watch.events(api, closing).map_ok(Frame::data);
    let mut reply = Response::new(StreamBody::new(events).boxed_unsync());
    reply.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    reply
}

async fn handle(
    api: EmbeddedApi,
    closing: watch::Receiver<bool>,
    req: Request<Incoming>,
) -> Result<Reply, Dropped> {
    if api.faults().is_refusing() {
        return Err(Dropped);
    }
    let target = match route(req.uri().path()) {
        Route::Object(target) => target,
        Route::Version => return Ok(json_reply(200, &version_info())),
        Route::CoreVersions => return Ok(json_reply(200, &core_versions())),
        Route::Groups => return Ok(json_reply(200, &group_list())),
        Route::ResourceList { group, version } => {
            return Ok(match resource_list(&group, &version) {
                Some(list) => json_reply(200, &list),
                None => status_reply(&Status::path_not_found()),
            })
        }
        Route::Unknown => return Ok(status_reply(&Status::path_not_found())),
    };
    let query = query_pairs(req.uri().query().unwrap_or_default());
    let param = |key: &str| query.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    // Go's query decoding takes any value but "0" and "false" as true, even an empty one.
    let watching = param("watch").is_some_and(|w| w != "0" && !w.eq_ignore_ascii_case("false"));
    let verb = match (req.method(), target.name.is_some()) {
        (&Method::GET, true) => Verb::Get,
        (&Method::GET, false) if watching => Verb::Watch,
        (&Method::GET, false) => Verb::List,
        (&Method::POST, false) => Verb::Create,
        (&Method::PUT, true) => Verb::Update,
        (&Method::PATCH, true) => Verb::Patch,
        (&Method::DELETE, true) => Verb::Delete,
        _ => return Ok(status_reply(&Status::method_not_allowed())),
    };
    if !matches!(verb, Verb::List | Verb::Watch) && target.namespace.is_none() {
        return Ok(status_reply(&Status::path_not_found()));
    }
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let mut call = Call::new(verb, target.resource, target.namespace.as_deref());
    call.version = target.version;
    call.name = target.name;
    call.label_selector = param("labelSelector").filter(|s| !s.is_empty());
    call.field_manager = param("fieldManager");
    call.dry_run = param("dryRun").is_some_and(|d| d == "All");
    call.user_agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);

    let FaultVerdict { delay, action } = api.faults().take(faults::Request {
        verb,
        resource: call.resource,
        name: call.name.as_deref(),
        user_agent: call.user_agent.as_deref(),
    });
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut hold = None;
    match action {
        Some(FaultAction::Drop) => {
            if verb.is_write() {
                api.store().record_injected(&call, 0);
            }
            return Err(Dropped);
        }
        Some(FaultAction::Status { code, retry_after }) => {
            let mut status =
                Status::injected(code, verb.as_str(), call.resource, call.name.as_deref());
            if let Some(seconds) = retry_after {
                status = status.with_retry_after(seconds);
            }
            if verb.is_write() {
                api.store().record_injected(&call, status.code);
            }
            return Ok(status_reply(&status));
        }
        Some(FaultAction::Hold(gate)) => hold = Some(gate),
        Some(FaultAction::Delay(_)) | None => {}
    }

    if verb == Verb::Watch {
        let watch = match Watch::new(
            &call,
            param("resourceVersion").as_deref(),
            param("timeoutSeconds").as_deref(),
        ) {
            Ok(w) => w,
            Err(status) => return Ok(status_reply(&status)),
        };
        if let Some(gate) = hold {
            gate.pass().await;
        }
        return Ok(watch_reply(api, watch, closing));
    }

    if verb == Verb::Patch {
        match PatchType::from_content_type(&content_type) {
            Some(p) => call.patch_type = Some(p),
            None => return Ok(status_reply(&Status::unsupported_media_type())),
        }
    } else if matches!(verb, Verb::Create | Verb::Update)
        && !content_type.is_empty()
        && !content_type.starts_with("application/json")
    {
        return Ok(status_reply(&Status::unsupported_media_type()));
    }
    let wants_body = matches!(verb, Verb::Create | Verb::Update | Verb::Patch)
        && call.patch_type != Some(PatchType::Apply);
    // A DELETE may carry DeleteOptions (preconditions, dryRun); an empty body is fine.
    let optional = verb == Verb::Delete;
    if wants_body || optional {
        match read_json(req.into_body(), optional).await {
            Ok(Some((body, text))) => {
                call.body = Some(body);
                if verb == Verb::Patch {
                    call.raw_body = Some(text);
                }
            }
            Ok(None) => {}
            Err(status) => return Ok(status_reply(&status)),
        }
        if optional
            && call
                .body
                .as_ref()
                .is_some_and(|b| b["dryRun"] == json!(["All"]))
        {
            call.dry_run = true;
        }
    }
    let answer = match hold {
        // The request is in: like a real server, finish it even if the client gives up
        // waiting (hyper drops this future when the connection closes; the task lives on).
        Some(gate) => {
            let api = api.clone();
            tokio::spawn(async move {
                gate.pass().await;
                api.store().call(call)
            })
            .await
            .map_err(|_| Dropped)?
        }
        None => api.store().call(call),
    };
    Ok(match answer.result {
        Ok(body) => json_reply(answer.code, &body),
        Err(status) => status_reply(&status),
    })
}

/// Reads at most [`MAX_BODY_BYTES`] and parses them as JSON; answers the value and the text
/// as sent (`None`: empty and `optional`).
async fn read_json(body: Incoming, optional: bool) -> Result<Option<(Value, String)>, Status> {
    let bytes = Limited::new(body, MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                Status::too_large(MAX_BODY_BYTES)
            } else {
                Status::bad_request(format!("reading the request body: {e}"))
            }
        })?
        .to_bytes();
    if optional && bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let text = String::from_utf8(bytes.to_vec())
        .map_err(|e| Status::bad_request(format!("the body of the request is not UTF-8: {e}")))?;
    let value = serde_json::from_str(&text).map_err(|e| {
        Status::bad_request(format!(
            "the body of the request could not be decoded as JSON: {e}"
        ))
    })?;
    Ok(Some((value, text)))
}

/// Binds `addr` and spawns the server; answers the bound address and the stop handle.
pub(crate) async fn spawn(
    api: EmbeddedApi,
    addr: SocketAddr,
) -> io::Result<(SocketAddr, oneshot::Sender<()>, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let (stop_tx, stop_rx) = oneshot::channel();
    let task = tokio::spawn(run(api, listener, stop_rx));
    Ok((local, stop_tx, task))
}

#[cfg(test)]
mod tests;

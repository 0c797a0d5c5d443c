//! Error answers that reach clients still sending their request body.
//!
//! A server that answers before reading the body and then drops it makes HTTP/2 reset the stream
//! (RST_STREAM with NO_ERROR, RFC 9113 §8.1) and HTTP/1.1 close a socket holding unread bytes,
//! which the kernel turns into a TCP reset. Both are allowed, and curl 7.88 (Debian 12's) shows
//! neither answer: it reports `(92) Stream error in the HTTP/2 framing layer` or
//! `(55) Send failure: Broken pipe`. So [`settle_body`] holds back an error answer until the rest
//! of the body, up to [`BODY_LIMIT`], has been read and thrown away. A body larger than that is
//! answered 413 at once and read in the background for a bounded while, so the client can stop
//! sending and read the answer before the stream (HTTP/2) or the connection (HTTP/1.1) closes.
//!
//! A request that succeeds pays for a wrapper around its body and nothing else.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Version, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::{Frame, SizeHint};
use tokio::sync::oneshot;

use super::BODY_LIMIT;
use crate::error::ApiError;

/// How long an error answer waits for the rest of a body within the limit: a client that takes
/// longer gets its answer, and the connection (HTTP/1.1) or stream (HTTP/2) is closed.
const SETTLE_TIME: Duration = Duration::from_secs(5);

/// How long an oversized body is read, and thrown away, after its 413 has been sent.
const LINGER_TIME: Duration = Duration::from_secs(5);

/// How much of an oversized body is read after its 413 before the stream or connection closes:
/// about what a client sends at a gigabit in the ≈ 100 ms it takes to notice the answer. curl 7.88
/// on loopback sometimes sends a whole 3 MB body first: reading only 256 KiB or 1 MiB of it lost
/// one answer in 200 (measured), 16 MiB none.
const LINGER_BYTES: usize = 16 * 1024 * 1024;

/// Read and discard what a refused request left of its body before answering; answer a body
/// larger than [`BODY_LIMIT`] with 413 and close gracefully.
pub async fn settle_body(request: Request, next: Next) -> Response {
    if request.body().is_end_stream() {
        return next.run(request).await;
    }
    let version = request.version();
    if declared_length(request.headers()).is_some_and(|length| length > BODY_LIMIT as u64) {
        // A client waiting for `100 Continue` has not sent the body and will not: hyper then closes
        // the connection cleanly. Reading it would send the `100 Continue`.
        if !expects_continue(request.headers()) {
            tokio::spawn(linger(request.into_body()));
        }
        return too_large(version);
    }
    let (request, mut unread) = track(request);
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    // Nothing comes back when the body was read to its end (or is still held elsewhere).
    let Ok(Unread { mut body, read }) = unread.try_recv() else {
        return response;
    };
    match tokio::time::timeout(SETTLE_TIME, discard(&mut body, BODY_LIMIT.saturating_sub(read))).await {
        Ok(Discarded::All | Discarded::Failed) => response,
        Ok(Discarded::TooLarge) => {
            tokio::spawn(linger(body));
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                closing(response, version)
            } else {
                too_large(version)
            }
        }
        Err(_) => closing(response, version),
    }
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

fn expects_continue(headers: &HeaderMap) -> bool {
    headers.get(header::EXPECT).is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

fn too_large(version: Version) -> Response {
    let problem = ApiError::from_rejection(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the request body is larger than {BODY_LIMIT} bytes"),
    );
    closing(problem.into_response(), version)
}

/// The answer, with the HTTP/1 connection closed after it. HTTP/2 has no such header (hyper
/// would drop it): there only the stream ends, and the connection serves on.
fn closing(mut response: Response, version: Version) -> Response {
    if version < Version::HTTP_2 {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Read and discard the rest of an oversized body for a while after its answer was sent, so the
/// client is not reset while still sending; then drop it.
async fn linger(mut body: Body) {
    let _ = tokio::time::timeout(LINGER_TIME, discard(&mut body, LINGER_BYTES)).await;
}

enum Discarded {
    /// The body ended within the budget.
    All,
    /// More than the budget came.
    TooLarge,
    /// The client went away or broke the framing.
    Failed,
}

async fn discard(body: &mut Body, budget: usize) -> Discarded {
    let mut left = budget;
    loop {
        match std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await {
            None => return Discarded::All,
            Some(Err(_)) => return Discarded::Failed,
            Some(Ok(frame)) => {
                let size = frame.data_ref().map_or(0, Bytes::len);
                let Some(rest) = left.checked_sub(size) else {
                    return Discarded::TooLarge;
                };
                left = rest;
            }
        }
    }
}

/// What a handler left of a body: the body itself and how many bytes had been read from it.
struct Unread {
    body: Body,
    read: usize,
}

/// Wrap the request's body so that, when dropped before its end, it comes back through the
/// receiver.
fn track(request: Request) -> (Request, oneshot::Receiver<Unread>) {
    let (back, unread) = oneshot::channel();
    let request = request.map(|body| Body::new(Tracked { body: Some(body), read: 0, back: Some(back) }));
    (request, unread)
}

struct Tracked {
    /// `None` once the body has ended (or failed).
    body: Option<Body>,
    read: usize,
    back: Option<oneshot::Sender<Unread>>,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let Some(body) = self.body.as_mut() else {
            return Poll::Ready(None);
        };
        let frame = ready!(Pin::new(body).poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => self.read += frame.data_ref().map_or(0, Bytes::len),
            None | Some(Err(_)) => self.body = None,
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_none_or(HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.body.as_ref().map_or_else(|| SizeHint::with_exact(0), HttpBody::size_hint)
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let (Some(body), Some(back)) = (self.body.take(), self.back.take())
            && !body.is_end_stream()
        {
            let _ = back.send(Unread { body, read: self.read });
        }
    }
}

//! A stand-in for the API server in unit tests (`#[cfg(test)]` only): every list is empty,
//! every watch stays open without sending anything, and any other request is answered
//! `404`. Enough for [`crate::controllers::run`] to sync its stores and idle, and for a
//! [`crate::context::Context`] that makes no call.

use std::convert::Infallible;

use futures::stream::{self, BoxStream, StreamExt as _};
use http_body_util::StreamBody;
use hyper::body::{Bytes, Frame};

type Body = StreamBody<BoxStream<'static, Result<Frame<Bytes>, Infallible>>>;

fn body(text: &'static str) -> Body {
    StreamBody::new(stream::once(async move { Ok(Frame::data(Bytes::from(text))) }).boxed())
}

fn respond(request: &http::Request<kube::client::Body>) -> http::Response<Body> {
    let query = request.uri().query().unwrap_or_default();
    let response = http::Response::builder().header("content-type", "application/json");
    let built = if request.method() != http::Method::GET {
        response.status(404).body(body(
            r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}"#,
        ))
    } else if query.split('&').any(|pair| pair == "watch=true") {
        // Open, and silent until the client goes away.
        response.body(StreamBody::new(stream::pending().boxed()))
    } else {
        response.body(body(
            r#"{"apiVersion":"v1","kind":"List","metadata":{"resourceVersion":"1"},"items":[]}"#,
        ))
    };
    built.expect("a valid fake response")
}

/// A client of the fake API server. Needs a Tokio runtime (the client spawns its buffer).
pub fn client() -> kube::Client {
    let service = tower::service_fn(|request: http::Request<kube::client::Body>| {
        let response = respond(&request);
        async move { Ok::<_, Infallible>(response) }
    });
    kube::Client::new(service, "default")
}

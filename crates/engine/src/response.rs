//! Plain responses: text, JSON, HTML, bytes, and the [`IntoResponse`] conversion that
//! handlers use.

use bytes::Bytes;
use http::{header, HeaderValue, StatusCode};
use serde::Serialize;

use crate::error::Error;
use crate::stream::Body;

/// The response type handlers produce.
pub type Response = http::Response<Body>;

/// Anything a handler can return.
pub trait IntoResponse {
    /// Converts into a response.
    fn into_response(self) -> Response;
}

impl IntoResponse for Response {
    fn into_response(self) -> Response {
        self
    }
}

impl IntoResponse for &'static str {
    fn into_response(self) -> Response {
        text(self)
    }
}

impl IntoResponse for String {
    fn into_response(self) -> Response {
        text(self)
    }
}

impl IntoResponse for Bytes {
    fn into_response(self) -> Response {
        bytes("application/octet-stream", self)
    }
}

impl IntoResponse for serde_json::Value {
    fn into_response(self) -> Response {
        json(&self)
    }
}

impl IntoResponse for StatusCode {
    fn into_response(self) -> Response {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = self;
        r
    }
}

impl<T: IntoResponse> IntoResponse for (StatusCode, T) {
    fn into_response(self) -> Response {
        let mut r = self.1.into_response();
        *r.status_mut() = self.0;
        r
    }
}

impl<T: IntoResponse> IntoResponse for Result<T, Error> {
    fn into_response(self) -> Response {
        match self {
            Ok(t) => t.into_response(),
            Err(e) => e.into_response(),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = if self.is_body_too_large() {
            StatusCode::PAYLOAD_TOO_LARGE
        } else if self.is_invalid_argument() || self.is_invalid_field() {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        error(status, self.message())
    }
}

/// Wraps HTML so that it converts to a `text/html` response.
#[derive(Debug, Clone)]
pub struct Html<T>(pub T);

impl<T: Into<Bytes>> IntoResponse for Html<T> {
    fn into_response(self) -> Response {
        html(self.0)
    }
}

/// Wraps any [`Serialize`] value (by default a [`serde_json::Value`]) so that it converts
/// to an `application/json` response.
///
/// ```
/// use rat_engine::{IntoResponse, Json};
/// #[derive(serde::Serialize)]
/// struct Todo { id: u32, done: bool }
/// let res = Json(Todo { id: 1, done: false }).into_response();
/// assert_eq!(res.headers()["content-type"], "application/json");
/// ```
#[derive(Debug, Clone)]
pub struct Json<T = serde_json::Value>(pub T);

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        json(&self.0)
    }
}

fn with_type(content_type: &'static str, body: Body) -> Response {
    let mut r = Response::new(body);
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// A `text/plain; charset=utf-8` response.
pub fn text(body: impl Into<Bytes>) -> Response {
    with_type("text/plain; charset=utf-8", Body::full(body.into()))
}

/// A `text/html; charset=utf-8` response.
pub fn html(body: impl Into<Bytes>) -> Response {
    with_type("text/html; charset=utf-8", Body::full(body.into()))
}

/// An `application/json` response of any [`Serialize`] value; a value that cannot be
/// serialized (a map with non-string keys, a failing `Serialize` impl) gives a 500 error
/// response.
pub fn json<T: Serialize + ?Sized>(value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => with_type("application/json", Body::full(body)),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot serialize the JSON response: {e}"),
        ),
    }
}

/// A response with the given content type.
pub fn bytes(content_type: &str, body: impl Into<Bytes>) -> Response {
    let mut r = Response::new(Body::full(body.into()));
    if let Ok(v) = HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

/// A JSON error response `{"error": message, "status": code}` (body: [`error_body`]).
pub fn error(status: StatusCode, message: &str) -> Response {
    let mut r = with_type("application/json", Body::full(error_body(status, message)));
    *r.status_mut() = status;
    r
}

/// The body of every error response the engine and its front ends send:
/// `{"error": message, "status": code}`.
pub fn error_body(status: StatusCode, message: &str) -> Bytes {
    let body = serde_json::json!({ "error": message, "status": status.as_u16() });
    Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body_of(r: Response) -> Bytes {
        r.into_body().collect().await.unwrap().to_bytes()
    }

    #[tokio::test]
    async fn helpers_set_types_and_bodies() {
        let r = text("hi");
        assert_eq!(r.headers()["content-type"], "text/plain; charset=utf-8");
        assert_eq!(body_of(r).await, "hi");
        let r = json(&serde_json::json!({"a": 1}));
        assert_eq!(r.headers()["content-type"], "application/json");
        assert_eq!(body_of(r).await, r#"{"a":1}"#);
        let r = Html("<p>").into_response();
        assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
    }

    #[tokio::test]
    async fn json_takes_any_serialize_value() {
        #[derive(Serialize)]
        struct Todo<'a> {
            id: u32,
            title: &'a str,
        }
        let r = Json(Todo {
            id: 7,
            title: "x\"y",
        })
        .into_response();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["content-type"], "application/json");
        assert_eq!(body_of(r).await, r#"{"id":7,"title":"x\"y"}"#);
        assert_eq!(body_of(Json(vec![1, 2]).into_response()).await, "[1,2]");
        assert_eq!(body_of(json("s")).await, r#""s""#);
    }

    #[tokio::test]
    async fn a_value_json_cannot_represent_is_a_500_not_an_empty_200() {
        let mut map = std::collections::BTreeMap::new();
        map.insert((1, 2), "tuple keys are not JSON object keys");
        let r = Json(map).into_response();
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let v: serde_json::Value = serde_json::from_slice(&body_of(r).await).unwrap();
        assert_eq!(v["status"], 500);
        assert!(v["error"].as_str().unwrap().contains("serialize"));
    }

    #[tokio::test]
    async fn errors_become_json_with_the_right_status() {
        let r = Error::body_too_large(5).into_response();
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let v: serde_json::Value = serde_json::from_slice(&body_of(r).await).unwrap();
        assert_eq!(v["status"], 413);
        assert!(v["error"].as_str().unwrap().contains("5 bytes"));
        let r = (StatusCode::CREATED, "made").into_response();
        assert_eq!(r.status(), StatusCode::CREATED);
    }
}

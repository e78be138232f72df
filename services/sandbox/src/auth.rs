//! Authentication shared by the emulators: the middleware [`authenticate`] asks the API's own
//! check ([`Auth::new`]) who sent a request. A request the check accepts goes on with its
//! [`Principal`] in its extensions (for inner layers such as [`crate::ratelimit`]); one it
//! refuses is answered with the check's response (the API's own 401/403 body).
//!
//! Install it with `axum::middleware::from_fn_with_state(auth, auth::authenticate)`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

/// Who sent a request, as the API's check names it (an API key, an OAuth client id): one
/// account of the rate limits.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Principal(pub String);

/// The response refusing a request (boxed: responses are large).
pub type Refusal = Box<Response>;

type Check = dyn Fn(&Request) -> Result<Principal, Refusal> + Send + Sync;

/// An API's credential check, the state of [`authenticate`].
#[derive(Clone)]
pub struct Auth(Arc<Check>);

impl Auth {
    /// The check `check`: the principal of an accepted request, or the response refusing it.
    pub fn new(
        check: impl Fn(&Request) -> Result<Principal, Refusal> + Send + Sync + 'static,
    ) -> Self {
        Auth(Arc::new(check))
    }
}

/// The authentication middleware: for `axum::middleware::from_fn_with_state(auth, authenticate)`.
pub async fn authenticate(State(auth): State<Auth>, mut request: Request, next: Next) -> Response {
    match (auth.0)(&request) {
        Ok(principal) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(refused) => *refused,
    }
}

/// The credentials of `Authorization: <scheme> <credentials>` (scheme compared without
/// case, surrounding spaces trimmed); `None` when the header is missing, not text, or of
/// another scheme.
pub fn credentials<'r>(request: &'r Request, scheme: &str) -> Option<&'r str> {
    let v = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .trim();
    let (s, rest) = v.split_once(' ')?;
    s.eq_ignore_ascii_case(scheme).then(|| rest.trim())
}

//! The application: shared state, the extractors that turn axum's rejections into API errors,
//! and the function that builds the `Router` (tests call it without a socket).

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use flowbook_projections::Live;

use crate::access::{Principal, Tokens};
use crate::error::ApiError;
use crate::processor::Processor;
use crate::{reads, writes};

/// Bytes of a request body (API.md: 1 MiB).
pub const BODY_BYTES_MAX: usize = 1024 * 1024;

/// What every handler shares, behind one `Arc`: axum clones the state for each layer that takes
/// it and for the handler, several times a request, and each clone is now one atomic reference
/// count on a line both cores touch instead of five (~4 % of the 64-client bench's CPU,
/// BENCHMARKS.md).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    pub live: Arc<Live>,
    pub processor: Processor,
    /// `None`: local mode.
    pub tokens: Option<Arc<Tokens>>,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub limits: Arc<crate::guard::Limits>,
}

impl AppState {
    pub fn new(shared: Shared) -> AppState {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The acting principal, put in the request by [`authenticate`].
pub struct Actor(pub Arc<Principal>);

impl<S: Send + Sync> FromRequestParts<S> for Actor {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Arc<Principal>>().cloned().map(Actor).ok_or_else(|| {
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", "a valid bearer token is required")
        })
    }
}

/// Paths anyone may call without a token.
const OPEN_PATHS: [&str; 3] = ["/healthz", "/openapi.json", "/docs"];

/// Resolves the bearer token (or local mode) to a principal before any handler runs.
async fn authenticate(
    axum::extract::State(state): axum::extract::State<AppState>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let principal = match &state.tokens {
        None => Ok(Principal::local()),
        Some(_) if OPEN_PATHS.contains(&request.uri().path()) => Ok(Principal::local()),
        Some(tokens) => {
            let header =
                request.headers().get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
            tokens.authenticate(header)
        }
    };
    match principal {
        Ok(principal) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(error) => axum::response::IntoResponse::into_response(error),
    }
}

/// `Path` whose rejection is an [`ApiError`].
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// `Query` whose rejection is an [`ApiError`].
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// The raw body, whose rejection (too large) is an [`ApiError`]. Handlers parse it themselves:
/// the idempotency fingerprint needs the exact bytes.
pub struct ApiBody(pub axum::body::Bytes);

impl<S: Send + Sync> FromRequest<S> for ApiBody {
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        axum::body::Bytes::from_request(request, state).await.map(ApiBody).map_err(ApiError::from)
    }
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

/// Accepted connections with Nagle's algorithm off: every answer is one write that should leave
/// at once, not wait for the client's acknowledgement of the previous one.
pub fn without_nagle(
    listener: tokio::net::TcpListener,
) -> impl axum::serve::Listener<Io = tokio::net::TcpStream, Addr = std::net::SocketAddr> {
    use axum::serve::ListenerExt;
    listener.tap_io(|connection| {
        if let Err(error) = connection.set_nodelay(true) {
            tracing::debug!("could not set TCP_NODELAY: {error}");
        }
    })
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/branches", post(writes::write).get(reads::branches))
        .route("/v1/branches/{id}", get(reads::branch))
        .route("/v1/branches/{id}/reclassify", post(writes::write))
        .route("/v1/branches/{id}/dissolve", post(writes::write))
        .route("/v1/branches/{id}/roster", get(reads::roster))
        .route("/v1/members", post(writes::write).get(reads::search))
        .route("/v1/members/{id}", get(reads::member))
        .route("/v1/members/{id}/history", get(reads::history))
        .route("/v1/members/{id}/verify", post(writes::write))
        .route("/v1/members/{id}/transfers", post(writes::write))
        .route("/v1/members/{id}/departures", post(writes::write))
        .route("/v1/members/{id}/arrivals", post(writes::write))
        .route("/v1/members/{id}/returns", post(writes::write))
        .route("/v1/members/{id}/placement", post(writes::write))
        .route("/v1/members/{id}/contact", post(writes::write))
        .route("/v1/members/{id}/status", post(writes::write))
        .route("/v1/transfers", get(reads::transfers))
        .route("/v1/transfers/{id}/complete", post(writes::write))
        .route("/v1/transfers/{id}/cancel", post(writes::write))
        .route("/v1/pocket-members", post(writes::write))
        .route("/v1/events", get(reads::events))
        .route("/v1/events/stream", get(reads::stream))
        .route("/v1/events/{position}/retract", post(writes::write))
        .route("/v1/sweeps/expiry", post(writes::sweep))
        .route("/v1/import", post(writes::import).layer(DefaultBodyLimit::max(writes::IMPORT_BYTES_MAX)))
        .route("/v1/stats/flows", get(reads::flows))
        .route("/v1/stats/mobile", get(reads::mobile))
        .route("/v1/stats/pocket", get(reads::pocket))
        .route("/v1/audit/verify", get(reads::audit_verify))
        .route("/healthz", get(reads::healthz))
        .route("/metrics", get(crate::metrics::render))
        .route("/openapi.json", get(crate::openapi::json))
        .route("/docs", get(crate::openapi::docs))
        .fallback(not_found)
        // Every request's middleware, outermost first: admission (limits, request id, timeout),
        // the body limit, metrics, authentication. As one layer, not four: `Router::layer` wraps
        // each route in a boxed service per call, and each box is cloned again for every request
        // at every level below it — four calls cost ~34 allocations a request, a third of a
        // 64-client write's (callgrind, BENCHMARKS.md). Still a router layer, so `track` sees
        // the matched path.
        .layer(
            tower::ServiceBuilder::new()
                .layer(axum::middleware::from_fn_with_state(state.clone(), crate::guard::admit))
                .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
                .layer(axum::middleware::from_fn_with_state(state.clone(), crate::metrics::track))
                .layer(axum::middleware::from_fn_with_state(state.clone(), authenticate)),
        )
        .with_state(state)
}

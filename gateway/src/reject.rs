//! Every way the gateway refuses or fails a request, mapped to one status
//! code and a short JSON body in one place. Internals stay in the log.

use http::StatusCode;
use routing::{AuthError, RouteError};

use crate::route::RouteParseError;

/// Why a request is answered by the gateway instead of a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    /// Missing, wrong or out-of-scope key (401 / 403).
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// Not a predict URL (404).
    #[error(transparent)]
    Url(#[from] RouteParseError),
    /// Unknown or inactive model, environment or deployment (404).
    #[error(transparent)]
    Route(#[from] RouteError),
    /// `x-rollout-side` with a key that is not admin-scoped (403).
    #[error("x-rollout-side needs an admin-scoped key")]
    SideNeedsAdmin,
    /// `x-rollout-side` other than `stable` or `canary` (400).
    #[error("x-rollout-side must be `stable` or `canary`")]
    BadSide,
    /// A `/sync/...` path the deployment does not let clients reach (404).
    #[error("no such route on this deployment: /sync passes only the routes it declares")]
    SyncRouteNotAllowed,
    /// The deployment gave up starting replicas (too many failed starts in
    /// a row) until its config changes (503; the reason follows).
    #[error("the deployment cannot start its replicas")]
    DeployFailed,
    /// The gateway holds `[server] max_in_flight` requests already (503,
    /// `Retry-After`), refused before its body is read and before any
    /// deployment is chosen: no replica or canary is blamed.
    #[error("the gateway is at its limit of requests in flight; retry shortly")]
    AtCapacity,
    /// The gateway is shutting down (503, `Retry-After`): a parked request
    /// is answered at once rather than cut when the process exits.
    #[error("the gateway is shutting down; retry")]
    ShuttingDown,
    /// Predict needs POST (405).
    #[error("method not allowed: predict takes POST")]
    MethodNotAllowed,
    /// Body over the configured limit (413).
    #[error("request body too large")]
    BodyTooLarge,
    /// A request body that could not be read: bad chunk framing, or cut
    /// short (400).
    #[error("malformed or incomplete request body")]
    BadBody,
    /// The request body stopped arriving (408).
    #[error("the request body did not arrive in time")]
    BodyTimeout,
    /// No replica slot freed up within the deployment's queue timeout (503).
    #[error("no replica of this deployment became available within its queue timeout")]
    QueueTimeout,
    /// The deployment stopped serving while the request was queued (503).
    #[error("the deployment stopped serving while the request was queued")]
    DeploymentWithdrawn,
    /// Queue full, parked-bytes budget used up, or REJECT_ON_FULL (429).
    #[error(transparent)]
    Overloaded(#[from] routing::Overload),
    /// The client went away while queued (499, nothing is sent).
    #[error("client closed the connection while queued")]
    ClientClosed,
    /// The gateway ran out of file descriptors or local ports connecting
    /// to a replica (503; the replica is not blamed).
    #[error("the gateway is out of connection resources; retry shortly")]
    LocalResources,
    /// The whole request took longer than the request timeout, waiting
    /// on the replica (504).
    #[error("the request did not complete within the gateway's request timeout")]
    RequestTimeout,
    /// The replica could not be reached or broke the connection (502).
    #[error("the model replica failed to answer")]
    ReplicaFailed,
    /// The replica did not answer in time (504).
    #[error("the model replica timed out")]
    ReplicaTimeout,
    /// A bug or an unexpected state (500).
    #[error("internal gateway error")]
    Internal,
}

/// nginx's "client closed request": logged and counted, never sent.
pub const CLIENT_CLOSED: StatusCode = match StatusCode::from_u16(499) {
    Ok(code) => code,
    Err(_) => panic!("499 is a valid status code"),
};

impl Reject {
    /// The status code the client gets.
    pub fn status(self) -> StatusCode {
        match self {
            Reject::Auth(AuthError::Missing | AuthError::Invalid) => StatusCode::UNAUTHORIZED,
            Reject::Auth(AuthError::Forbidden) | Reject::SideNeedsAdmin => StatusCode::FORBIDDEN,
            Reject::BadSide | Reject::BadBody => StatusCode::BAD_REQUEST,
            Reject::Url(_) | Reject::Route(_) | Reject::SyncRouteNotAllowed => {
                StatusCode::NOT_FOUND
            }
            Reject::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Reject::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Reject::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Reject::QueueTimeout
            | Reject::DeploymentWithdrawn
            | Reject::LocalResources
            | Reject::ShuttingDown
            | Reject::AtCapacity
            | Reject::DeployFailed => StatusCode::SERVICE_UNAVAILABLE,
            Reject::Overloaded(_) => StatusCode::TOO_MANY_REQUESTS,
            Reject::ClientClosed => CLIENT_CLOSED,
            Reject::ReplicaFailed => StatusCode::BAD_GATEWAY,
            Reject::ReplicaTimeout | Reject::RequestTimeout => StatusCode::GATEWAY_TIMEOUT,
            Reject::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Headers the refusal carries besides its JSON body.
    pub fn extra_headers(self) -> &'static [(http::HeaderName, &'static str)] {
        use http::header;
        match self {
            Reject::Auth(AuthError::Missing | AuthError::Invalid) => {
                &[(header::WWW_AUTHENTICATE, "Api-Key")]
            }
            Reject::MethodNotAllowed => &[(header::ALLOW, "POST")],
            Reject::QueueTimeout | Reject::DeploymentWithdrawn => &[(header::RETRY_AFTER, "5")],
            Reject::ShuttingDown | Reject::AtCapacity => &[(header::RETRY_AFTER, "1")],
            Reject::Overloaded(_) | Reject::LocalResources => &[(header::RETRY_AFTER, "1")],
            _ => &[],
        }
    }

    /// Whether the client's connection can take another request after this
    /// refusal: not after a replica failure or a body the gateway would not
    /// read, where the request may be half-read.
    pub fn keeps_connection(self) -> bool {
        !matches!(
            self,
            Reject::BodyTooLarge
                | Reject::BadBody
                | Reject::BodyTimeout
                | Reject::ReplicaFailed
                | Reject::ReplicaTimeout
                | Reject::RequestTimeout
                | Reject::Internal
        )
    }
}

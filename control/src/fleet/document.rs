//! The fleet's shared document: one etcd key holding TOML text.

use std::path::{Path, PathBuf};
use std::time::Duration;

use config::{Config, ConfigErrors};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, LeaseKeepAliveStream, LeaseKeeper, Txn, TxnOp,
    WatchOptions, WatchResponse, WatchStream,
};

/// How long one etcd request may take before the gateway gives up on it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Why talking to etcd failed.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// etcd refused or could not be reached.
    #[error("etcd ({endpoints}): {source}")]
    Etcd {
        /// The endpoints tried.
        endpoints: String,
        /// What the client reported.
        source: etcd_client::Error,
    },
    /// etcd did not answer in time.
    #[error("etcd ({endpoints}) did not answer within {REQUEST_TIMEOUT:?}")]
    Timeout {
        /// The endpoints tried.
        endpoints: String,
    },
    /// The key holds bytes that are not UTF-8 text (written by another tool).
    #[error("etcd key {key} does not hold UTF-8 text")]
    NotText {
        /// The key.
        key: String,
    },
    /// The watch on the key ended or was cancelled by etcd.
    #[error("the watch on etcd key {key} ended: {reason}")]
    WatchEnded {
        /// The key.
        key: String,
        /// Why, as etcd said (a compaction, a lost leader) or "stream closed".
        reason: String,
    },
}

/// One version of the shared document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// The TOML text; empty when the key does not exist yet.
    pub text: String,
    /// The key's modification revision (etcd's), 0 when it does not exist:
    /// what a compare-and-swap write names.
    pub revision: i64,
    /// The store's revision when it was read: a watch from the next one
    /// misses no change.
    pub read_at: i64,
}

/// The shared document of the fleet a node belongs to, and how a node
/// turns it into the config it serves.
#[derive(Clone)]
pub struct SharedDocument {
    client: Client,
    key: String,
    prefix: String,
    endpoints: String,
    node: Config,
    base: PathBuf,
}

impl std::fmt::Debug for SharedDocument {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedDocument")
            .field("endpoints", &self.endpoints)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl SharedDocument {
    /// Connects to the fleet that `node` (the config of the node's own
    /// file at `node_path`) names in its `[fleet]` table. Relative paths
    /// in the shared document are taken from the node file's directory.
    pub async fn connect(node: Config, node_path: &Path) -> Result<Self, FleetError> {
        let fleet = node
            .fleet
            .clone()
            .expect("a fleet node's config has a [fleet] table");
        let endpoints = fleet.endpoints.join(",");
        // HTTP/2 keep-alive pings find a dead link (a partition) within a
        // few seconds even when nothing changes, so the watch ends and the
        // node reports itself stale instead of waiting on a silent socket.
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_keep_alive(Duration::from_secs(1), Duration::from_secs(2))
            .with_keep_alive_while_idle(true);
        let client = within(&endpoints, Client::connect(&fleet.endpoints, Some(options))).await?;
        Ok(Self {
            client,
            key: fleet.config_key(),
            prefix: fleet.prefix.clone(),
            endpoints,
            base: node_path.parent().unwrap_or(Path::new("")).to_owned(),
            node,
        })
    }

    /// The key, as errors and logs name the document: `etcd:<key>`.
    pub fn origin(&self) -> String {
        format!("etcd:{}", self.key)
    }

    /// The etcd key holding the document.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The fleet's key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A client of the fleet's etcd (cheap: clones share one channel).
    pub(super) fn client(&self) -> Client {
        self.client.clone()
    }

    /// One etcd call, bounded in time, its error naming the endpoints.
    pub(super) async fn call<T>(
        &self,
        call: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, FleetError> {
        within(&self.endpoints, call).await
    }

    /// The directory relative paths in the document are taken from.
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// The node's own config (its file's sections).
    pub fn node(&self) -> &Config {
        &self.node
    }

    /// The document as etcd has it now.
    pub async fn get(&self) -> Result<Versioned, FleetError> {
        let mut client = self.client.clone();
        let response = within(&self.endpoints, client.get(self.key.as_str(), None)).await?;
        let read_at = response.header().map_or(0, |h| h.revision());
        let Some(kv) = response.kvs().first() else {
            return Ok(Versioned {
                text: String::new(),
                revision: 0,
                read_at,
            });
        };
        Ok(Versioned {
            text: self.text(kv.value())?,
            revision: kv.mod_revision(),
            read_at,
        })
    }

    /// Writes `text` if the key is still at `revision` (0: if it does not
    /// exist): the key's new revision, or `None` if someone wrote first.
    pub async fn put_if(&self, revision: i64, text: &str) -> Result<Option<i64>, FleetError> {
        let unchanged = Compare::mod_revision(self.key.as_str(), CompareOp::Equal, revision);
        let txn =
            Txn::new()
                .when([unchanged])
                .and_then([TxnOp::put(self.key.as_str(), text, None)]);
        let mut client = self.client.clone();
        let response = within(&self.endpoints, client.txn(txn)).await?;
        // A put's revision is the store's revision after the transaction.
        Ok(response
            .succeeded()
            .then(|| response.header().map_or(0, |h| h.revision())))
    }

    /// Writes `text` whatever the key holds: the key's new revision.
    pub async fn put(&self, text: &str) -> Result<i64, FleetError> {
        let mut client = self.client.clone();
        let response = within(&self.endpoints, client.put(self.key.as_str(), text, None)).await?;
        Ok(response.header().map_or(0, |h| h.revision()))
    }

    /// Watches the key from `revision` on.
    pub(super) async fn watch_from(&self, revision: i64) -> Result<WatchStream, FleetError> {
        let mut client = self.client.clone();
        let options = WatchOptions::new().with_start_revision(revision);
        within(
            &self.endpoints,
            client.watch(self.key.as_str(), Some(options)),
        )
        .await
    }

    /// What this node serves for `text`: the shared document validated
    /// (with the same located errors as `gateway check`, the node's sections
    /// refused), every file its local replicas would load checked, joined
    /// to the node's own sections.
    pub fn load(&self, text: &str) -> Result<Config, ConfigErrors> {
        config::load_shared_checked(text, &self.origin(), &self.node, &self.base)
    }

    /// The next answer of `watch`; an error once the watch ended (the
    /// stream closed or failed, or etcd cancelled it).
    pub(super) async fn next(&self, watch: &mut WatchStream) -> Result<WatchResponse, FleetError> {
        let response = watch
            .message()
            .await
            .map_err(|e| self.watch_ended(e.to_string()))?
            .ok_or_else(|| self.watch_ended("stream closed"))?;
        if response.canceled() {
            return Err(self.watch_ended(response.cancel_reason().to_owned()));
        }
        Ok(response)
    }

    /// How long a node's leases outlive their last renewal.
    pub(super) fn lease_ttl(&self) -> Duration {
        self.node
            .fleet
            .as_ref()
            .map_or(Duration::from_secs(10), |f| f.lease_ttl)
    }

    /// A new lease of [`Self::lease_ttl`], its renewals started.
    pub(super) async fn grant_lease(&self) -> Result<Lease, FleetError> {
        let mut client = self.client();
        let ttl = i64::try_from(self.lease_ttl().as_secs()).unwrap_or(10);
        let id = self.call(client.lease_grant(ttl, None)).await?.id();
        let (keeper, answers) = self.call(client.lease_keep_alive(id)).await?;
        Ok(Lease {
            id,
            ttl: self.lease_ttl(),
            keeper,
            answers,
        })
    }

    pub(super) fn text(&self, value: &[u8]) -> Result<String, FleetError> {
        String::from_utf8(value.to_vec()).map_err(|_| FleetError::NotText {
            key: self.key.clone(),
        })
    }

    pub(super) fn watch_ended(&self, reason: impl Into<String>) -> FleetError {
        FleetError::WatchEnded {
            key: self.key.clone(),
            reason: reason.into(),
        }
    }
}

/// The wait between a fleet loop's attempts to reach etcd again: 100 ms,
/// doubling up to 2 s.
#[derive(Debug)]
pub(super) struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Self(Backoff::FIRST)
    }
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MOST: Duration = Duration::from_secs(2);

    /// Waits the current time (doubling the next), or until `shutdown`:
    /// false if the loop is to end.
    pub(super) async fn wait(&mut self, shutdown: &mut crate::plane::ShutdownSignal) -> bool {
        tokio::select! {
            () = tokio::time::sleep(self.0) => {}
            () = shutdown.requested() => return false,
        }
        self.0 = (self.0 * 2).min(Self::MOST);
        true
    }

    /// Back to the first wait (etcd answered: not a dead link).
    pub(super) fn reset(&mut self) {
        self.0 = Self::FIRST;
    }
}

/// A lease its holder renews: the keys put with it are deleted by etcd
/// when it is not renewed within its TTL (the holder died or hung, or lost
/// etcd).
pub(super) struct Lease {
    /// The lease's id, for puts.
    pub(super) id: i64,
    ttl: Duration,
    keeper: LeaseKeeper,
    answers: LeaseKeepAliveStream,
}

impl Lease {
    /// When to renew: every third of the TTL.
    pub(super) fn renewals(&self) -> tokio::time::Interval {
        tokio::time::interval(self.ttl / 3)
    }

    /// Renews it; an error if etcd cannot be reached or says it expired.
    pub(super) async fn renew(&mut self, document: &SharedDocument) -> Result<(), FleetError> {
        document.call(self.keeper.keep_alive()).await?;
        match document.call(self.answers.message()).await? {
            Some(answer) if answer.ttl() > 0 => Ok(()),
            _ => Err(document.watch_ended("the lease expired")),
        }
    }
}

/// One etcd call, bounded in time.
async fn within<T>(
    endpoints: &str,
    call: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, FleetError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(source)) => Err(FleetError::Etcd {
            endpoints: endpoints.to_owned(),
            source,
        }),
        Err(_) => Err(FleetError::Timeout {
            endpoints: endpoints.to_owned(),
        }),
    }
}

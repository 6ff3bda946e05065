//! Usage records: replica-seconds and requests per deployment and
//! resources, appended to a file beside the config (`<config>.usage.jsonl`,
//! one JSON object per line and interval). Records outlive the deployments
//! they describe: deleting a deployment removes it from the config, never
//! from this file.
//!
//! The meter samples the routing snapshot every interval: ready replicas
//! times the interval's length, and the growth of each deployment's request
//! counter (counted per replica on the hot path, one relaxed add). A
//! deployment whose replica set is replaced (new addresses) starts a new
//! counter, so requests routed to the old set after the last sample are not
//! recorded: at most one interval's worth, for that deployment only.
//!
//! In a fleet each record is one node's share: the time of the replicas it
//! runs (fixed replicas' by the leader) and the requests it routed, so the
//! nodes' ledgers sum to the fleet's usage with nothing counted twice.
//!
//! An append that fails (a full disk, a lost permission) loses nothing: its
//! records stay in memory, summed per deployment, and the next append that
//! succeeds writes them with its own.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use routing::Routing;
use routing::pool::Pool;
use routing::snapshot::Target;

use crate::fleet::FleetConfig;
use crate::plane::ShutdownSignal;

/// One deployment's usage over one interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageRecord {
    /// End of the interval, Unix seconds.
    pub at: u64,
    /// The model id.
    pub model: String,
    /// The deployment id.
    pub deployment: String,
    /// What one replica has (e.g. `1 cpu, 2048 MiB`).
    pub resources: String,
    /// Ready replicas times seconds.
    pub replica_seconds: f64,
    /// Requests routed to it.
    pub requests: u64,
}

/// Usage summed per (model, deployment, resources).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageTotal {
    /// The model id.
    pub model: String,
    /// The deployment id.
    pub deployment: String,
    /// What one replica has.
    pub resources: String,
    /// Ready replicas times seconds.
    pub replica_seconds: f64,
    /// Requests routed to it.
    pub requests: u64,
    /// First and last interval recorded, Unix seconds.
    pub from: u64,
    /// See `from`.
    pub to: u64,
}

/// The append-only usage file.
#[derive(Debug)]
pub struct UsageLedger {
    path: PathBuf,
    /// Serialises appends, and holds the records an append could not
    /// write: the next append carries them, so a full disk or a lost
    /// permission delays usage but never drops it.
    unwritten: std::sync::Mutex<Vec<UsageRecord>>,
}

impl UsageLedger {
    /// The ledger beside `config_path`: `<config_path>.usage.jsonl`.
    pub fn beside(config_path: &Path) -> Self {
        let mut name = config_path.as_os_str().to_owned();
        name.push(".usage.jsonl");
        Self {
            path: PathBuf::from(name),
            unwritten: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Where the records go.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `records` (one write, then fsync), together with whatever
    /// earlier appends could not write: a deployment with records of both
    /// gets one record carrying their sums, stamped with the latest
    /// interval's end. On failure nothing of this append stays in the file
    /// and everything is kept for the next one. Blocks.
    pub fn append(&self, records: &[UsageRecord]) -> std::io::Result<()> {
        let mut unwritten = self
            .unwritten
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let all = carry(std::mem::take(&mut *unwritten), records);
        if all.is_empty() {
            return Ok(());
        }
        let written = self.write(&all);
        if written.is_err() {
            *unwritten = all;
        }
        written
    }

    /// Writes `records` as lines at the end of the file, all or none.
    fn write(&self, records: &[UsageRecord]) -> std::io::Result<()> {
        let mut lines = Vec::new();
        for r in records {
            serde_json::to_writer(&mut lines, r)?;
            lines.push(b'\n');
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&self.path)?;
        let length = file.metadata()?.len();
        if !ends_with_newline(&mut file, length)? {
            // A torn last line (a crash mid-write): start on a fresh line.
            lines.insert(0, b'\n');
        }
        let written = file.write_all(&lines).and_then(|()| file.sync_data());
        if written.is_err() {
            // Part of it may be in the file: cut it off, or the records
            // carried to the next append would be counted twice. If even
            // that fails, the partial line is torn and skipped by readers.
            let _ = file.set_len(length);
        }
        written
    }

    /// Every record summed per (model, deployment, resources), optionally
    /// for one model. A line that does not parse (a torn last write after a
    /// crash) is skipped. Blocks.
    pub fn totals(&self, model: Option<&str>) -> std::io::Result<Vec<UsageTotal>> {
        let file = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut totals: BTreeMap<(String, String, String), UsageTotal> = BTreeMap::new();
        for line in std::io::BufReader::new(file).lines() {
            let Ok(r) = serde_json::from_str::<UsageRecord>(&line?) else {
                continue;
            };
            if model.is_some_and(|m| m != r.model) {
                continue;
            }
            let t = totals
                .entry((r.model.clone(), r.deployment.clone(), r.resources.clone()))
                .or_insert_with(|| UsageTotal {
                    model: r.model.clone(),
                    deployment: r.deployment.clone(),
                    resources: r.resources.clone(),
                    replica_seconds: 0.0,
                    requests: 0,
                    from: r.at,
                    to: r.at,
                });
            t.replica_seconds += r.replica_seconds;
            t.requests += r.requests;
            t.from = t.from.min(r.at);
            t.to = t.to.max(r.at);
        }
        Ok(totals.into_values().collect())
    }
}

/// `earlier` (unwritten records) with `records` added: one record per
/// (model, deployment, resources), in first-seen order.
fn carry(mut earlier: Vec<UsageRecord>, records: &[UsageRecord]) -> Vec<UsageRecord> {
    for r in records {
        let same = |e: &&mut UsageRecord| {
            (&e.model, &e.deployment, &e.resources) == (&r.model, &r.deployment, &r.resources)
        };
        match earlier.iter_mut().find(same) {
            Some(e) => {
                e.at = e.at.max(r.at);
                e.replica_seconds += r.replica_seconds;
                e.requests += r.requests;
            }
            None => earlier.push(r.clone()),
        }
    }
    earlier
}

/// Whether the file (`length` bytes) is empty or ends with a newline.
fn ends_with_newline(file: &mut std::fs::File, length: u64) -> std::io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    if length == 0 {
        return Ok(true);
    }
    file.seek(SeekFrom::End(-1))?;
    let mut last = [0u8; 1];
    file.read_exact(&mut last)?;
    Ok(last[0] == b'\n')
}

/// Samples routing into the ledger every interval.
#[derive(Debug)]
pub struct UsageMeter {
    routing: Arc<Routing>,
    ledger: Arc<UsageLedger>,
    interval: Duration,
    /// Last counter seen per deployment, with the pool it was read from.
    last: HashMap<(String, String), (Arc<Pool>, u64)>,
    /// In a fleet: the fleet, and this node's name.
    fleet: Option<(Arc<FleetConfig>, String)>,
}

impl UsageMeter {
    /// A meter writing to `ledger` every `interval`.
    pub fn new(routing: Arc<Routing>, ledger: Arc<UsageLedger>, interval: Duration) -> Self {
        Self {
            routing,
            ledger,
            interval,
            last: HashMap::new(),
            fleet: None,
        }
    }

    /// A fleet node's meter: replica-seconds are counted once for the
    /// fleet, each replica's by the node that runs it, and fixed replicas'
    /// (which no node runs) by the leader; requests by the gateway that
    /// routed them.
    pub fn in_fleet(self, fleet: Arc<FleetConfig>, node: &str) -> Self {
        Self {
            fleet: Some((fleet, node.to_owned())),
            ..self
        }
    }

    /// Ready replicas of `d` whose time this gateway records.
    fn metered_replicas(&self, d: &config::Deployment, pool: &Pool) -> usize {
        let fixed = d.replicas != config::ReplicaSource::Local;
        match &self.fleet {
            Some((fleet, node)) if fixed && fleet.leader().as_deref() != Some(node) => 0,
            _ => pool.replicas().ready_here_count(),
        }
    }

    /// Appends a record every interval until `shutdown`, then one for the
    /// part of an interval that had passed, so that a stop loses no usage.
    pub async fn run(mut self, mut shutdown: ShutdownSignal) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // the first tick is immediate
        let mut since = tokio::time::Instant::now();
        loop {
            let stopping = tokio::select! {
                _ = tick.tick() => false,
                () = shutdown.requested() => true,
            };
            let now = tokio::time::Instant::now();
            let records = self.sample(now - since);
            since = now;
            let ledger = Arc::clone(&self.ledger);
            // File I/O on the blocking pool, off the plane's one worker.
            let appended = tokio::task::spawn_blocking(move || ledger.append(&records)).await;
            match appended {
                Ok(Ok(())) => {}
                Ok(Err(e)) => log::error!(
                    "usage: cannot append to {}: {e}; the next append carries this interval",
                    self.ledger.path().display()
                ),
                Err(e) => log::error!("usage: append failed: {e}"),
            }
            if stopping {
                return;
            }
        }
    }

    /// The records of the interval that just ended (`elapsed` long); only
    /// deployments that used something.
    pub fn sample(&mut self, elapsed: Duration) -> Vec<UsageRecord> {
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        // What routing serves, even while the file holds a broken edit.
        let snapshot = self.routing.load();
        let config = Arc::clone(snapshot.config());
        let mut records = Vec::new();
        for model in &config.models {
            let Ok(routes) = snapshot.model(&model.id) else {
                continue;
            };
            for d in &model.deployments {
                let Ok(route) = routes.resolve(Target::Deployment(&d.id)) else {
                    continue; // inactive: no replicas, no requests
                };
                let pool = route.pool();
                let served = pool.served();
                let key = (model.id.clone(), d.id.clone());
                let before = match self.last.get(&key) {
                    Some((old, count)) if Arc::ptr_eq(old, pool) => *count,
                    _ => 0,
                };
                self.last.insert(key, (Arc::clone(pool), served));
                let record = UsageRecord {
                    at,
                    model: model.id.clone(),
                    deployment: d.id.clone(),
                    resources: d.resources.to_string(),
                    replica_seconds: self.metered_replicas(d, pool) as f64 * elapsed.as_secs_f64(),
                    requests: served.saturating_sub(before),
                };
                if record.requests > 0 || record.replica_seconds > 0.0 {
                    records.push(record);
                }
            }
        }
        records
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(model: &str, deployment: &str, secs: f64, requests: u64, at: u64) -> UsageRecord {
        UsageRecord {
            at,
            model: model.into(),
            deployment: deployment.into(),
            resources: "1 cpu, 2048 MiB".into(),
            replica_seconds: secs,
            requests,
        }
    }

    #[test]
    fn replicas_another_node_runs_are_not_metered_here() {
        let text = "[[models]]\nid = \"m\"\n[[models.deployments]]\nid = \"d\"\n[models.deployments.engine]\nbackend = \"synthetic\"\n";
        let config = config::load_str(text, "t.toml").unwrap();
        let routing = Arc::new(Routing::new(routing::Snapshot::new(&config)));
        let pool = Arc::clone(routing.load().deployment("m", "d").unwrap().pool());
        let replica = |kind: fn(std::net::SocketAddr) -> routing::replicas::Replica, port| {
            Arc::new(kind(std::net::SocketAddr::from(([127, 0, 0, 1], port))))
        };
        pool.add_replica(replica(routing::replicas::Replica::ready, 9001));
        pool.add_replica(replica(routing::replicas::Replica::elsewhere, 9002));
        assert_eq!(pool.replicas().ready_count(), 2, "both are routed to");
        let dir = tempfile::tempdir().unwrap();
        let ledger = Arc::new(UsageLedger::beside(&dir.path().join("gateway.toml")));
        let mut meter = UsageMeter::new(routing, ledger, Duration::from_secs(10));
        let records = meter.sample(Duration::from_secs(10));
        assert_eq!(records.len(), 1);
        assert_eq!(
            records[0].replica_seconds, 10.0,
            "one replica's time, not two"
        );
    }

    #[test]
    fn totals_sum_per_deployment_and_skip_torn_lines() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = UsageLedger::beside(&dir.path().join("gateway.toml"));
        assert_eq!(ledger.totals(None).unwrap(), []);
        ledger
            .append(&[
                record("m", "a", 10.0, 3, 100),
                record("m", "b", 5.0, 0, 100),
            ])
            .unwrap();
        ledger.append(&[record("m", "a", 10.0, 4, 110)]).unwrap();
        // A torn write after a crash does not hide the rest.
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(ledger.path())
            .unwrap();
        file.write_all(br#"{"at": 1"#).unwrap();
        ledger.append(&[record("n", "x", 1.0, 1, 120)]).unwrap();

        let totals = ledger.totals(Some("m")).unwrap();
        assert_eq!(totals.len(), 2);
        assert_eq!(
            (
                totals[0].deployment.as_str(),
                totals[0].replica_seconds,
                totals[0].requests
            ),
            ("a", 20.0, 7)
        );
        assert_eq!((totals[0].from, totals[0].to), (100, 110));
        assert_eq!(ledger.totals(None).unwrap().len(), 3);
        assert!(ledger.path().ends_with("gateway.toml.usage.jsonl"));
    }

    /// The ledger's lines, parsed.
    fn lines(ledger: &UsageLedger) -> Vec<UsageRecord> {
        std::fs::read_to_string(ledger.path())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn an_interval_that_cannot_be_written_is_carried_by_the_next_record() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = UsageLedger::beside(&dir.path().join("gateway.toml"));
        ledger.append(&[record("m", "a", 10.0, 1, 100)]).unwrap();
        let written = std::fs::read(ledger.path()).unwrap();

        // The ledger's path is unwritable for one interval (a directory
        // stands where the file was).
        std::fs::rename(ledger.path(), dir.path().join("aside")).unwrap();
        std::fs::create_dir(ledger.path()).unwrap();
        let missed = [
            record("m", "a", 10.0, 3, 110),
            record("m", "b", 5.0, 2, 110),
        ];
        assert!(ledger.append(&missed).is_err());
        // Still unwritable for the next: nothing lost either.
        assert!(ledger.append(&[record("m", "a", 10.0, 4, 120)]).is_err());

        std::fs::remove_dir(ledger.path()).unwrap();
        std::fs::rename(dir.path().join("aside"), ledger.path()).unwrap();
        ledger.append(&[record("m", "b", 5.0, 1, 130)]).unwrap();
        let after = std::fs::read(ledger.path()).unwrap();
        assert!(
            after.starts_with(&written),
            "earlier lines stay as they were"
        );
        assert_eq!(
            lines(&ledger)[1..],
            [
                record("m", "a", 20.0, 7, 120),
                record("m", "b", 10.0, 3, 130)
            ],
            "one record per deployment carries the missed intervals"
        );
        let totals = ledger.totals(Some("m")).unwrap();
        assert_eq!((totals[0].requests, totals[1].requests), (8, 3));

        // Carried once: the next append writes only its own interval.
        ledger.append(&[record("m", "a", 10.0, 1, 140)]).unwrap();
        assert_eq!(lines(&ledger).last(), Some(&record("m", "a", 10.0, 1, 140)));
        assert_eq!(lines(&ledger).len(), 4);
    }
}

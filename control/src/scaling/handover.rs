//! The controller's part in a binary upgrade.
//!
//! In the running gateway: [`ControllerHandle::hand_over`] freezes the
//! controller (nothing is started or stopped from then on: the replicas
//! stay in this gateway's routing for the requests it still drains) and
//! returns a copy of what the next gateway needs of each running replica;
//! [`ControllerHandle::commit`] lets them go once the next gateway has
//! them (this one will not stop them when it exits), or
//! [`ControllerHandle::resume`] takes up where it stopped if it did not.
//!
//! In the next gateway: [`Controller::adopting`] names the replicas it
//! received; `run` adopts each that its config still wants, unchanged (same
//! local, active deployment, same engine arguments), before the first pass,
//! so they count as running and no replica is started in their place.
//! The others are stopped.

use std::sync::Arc;
use std::time::Duration;

use config::{Config, Deployment, Model, ReplicaSource};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::{Controller, ControllerHandle, LocalDeployment, LocalReplica};
use crate::provision::Released;

/// Requests to the controller's loop.
#[derive(Debug)]
pub(super) enum Command {
    /// Freeze and describe the running replicas.
    HandOver(oneshot::Sender<Vec<Released>>),
    /// The next gateway holds them.
    Commit,
    /// It does not: carry on.
    Resume,
}

/// The next command, or never when there is no channel.
pub(super) async fn next(
    commands: &mut Option<mpsc::UnboundedReceiver<Command>>,
) -> Option<Command> {
    match commands {
        Some(commands) => commands.recv().await,
        None => std::future::pending().await,
    }
}

impl Controller {
    /// Replicas to adopt when `run` starts (handed over by the previous
    /// gateway).
    pub fn adopting(mut self, replicas: Vec<Released>) -> Self {
        self.adopting = replicas;
        self
    }

    pub(super) fn command(&mut self, command: Command) {
        match command {
            Command::HandOver(reply) => {
                self.frozen = true;
                let released = self.release_running();
                log::info!("upgrade: handing over {} replica(s)", released.len());
                if reply.send(released).is_err() {
                    // The upgrade gave up waiting for this answer: these
                    // replicas stay this gateway's.
                    self.command(Command::Resume);
                }
            }
            Command::Commit => {
                let provisioner = Arc::clone(&self.provisioner);
                for t in self.tracked_mut().filter(|t| t.handed) {
                    provisioner.detach(&t.instance);
                }
            }
            Command::Resume => {
                log::warn!("upgrade abandoned: this gateway keeps its replicas and carries on");
                for t in self.tracked_mut() {
                    t.handed = false;
                }
                self.frozen = false;
            }
        }
    }

    fn tracked_mut(&mut self) -> impl Iterator<Item = &mut LocalReplica> {
        self.deployments.values_mut().flat_map(|m| &mut m.replicas)
    }

    /// Ready replicas in routing, not being stopped, described for the next
    /// gateway and marked handed (so this one never stops them).
    fn release_running(&mut self) -> Vec<Released> {
        let provisioner = Arc::clone(&self.provisioner);
        let mut released = Vec::new();
        for t in self.tracked_mut() {
            if t.stopping || t.replica.is_none() {
                continue;
            }
            if let Some(replica) = provisioner.hand_over(&t.instance) {
                t.handed = true;
                released.push(replica);
            }
        }
        released
    }

    /// Adopts what the previous gateway handed over: each replica the
    /// config still wants, as it is, joins its deployment; the rest are
    /// stopped.
    pub(super) fn adopt_all(&mut self) {
        let replicas = std::mem::take(&mut self.adopting);
        if replicas.is_empty() {
            return;
        }
        let snapshot = self.routing.load_full();
        let config = Arc::clone(snapshot.config());
        let now = Instant::now();
        for replica in replicas {
            let found = wanted(&config, &replica).and_then(|(m, d)| {
                let route = snapshot
                    .deployment(&m.id, &d.id)
                    .ok_or("its deployment is not routed")?;
                Ok((m, d, Arc::clone(route.pool())))
            });
            let name = replica.record.name.clone();
            let instance = match self.provisioner.adopt(replica) {
                Ok(instance) => instance,
                Err(e) => {
                    // Gone already, or not ours to watch: its deployment
                    // starts a replica as usual.
                    log::warn!("upgrade: {e}");
                    continue;
                }
            };
            let (m, d, pool) = match found {
                Ok(found) => found,
                Err(why) => {
                    log::info!("upgrade: stopping replica {name}: {why}");
                    self.provisioner.stop(&instance);
                    self.leftovers.push(instance);
                    continue;
                }
            };
            let managed = self
                .deployments
                .entry((m.id.clone(), d.id.clone()))
                .or_insert_with(|| LocalDeployment::new(m, d, &pool));
            managed
                .replicas
                .push(LocalReplica::new(instance, d.resources.clone(), now, true));
        }
    }
}

/// The model and deployment a handed-over replica belongs to, if the
/// config still runs it locally with the same engine arguments; else why not.
fn wanted<'c>(
    config: &'c Config,
    replica: &Released,
) -> Result<(&'c Model, &'c Deployment), String> {
    let record = &replica.record;
    for m in &config.models {
        for d in &m.deployments {
            if format!("{}/{}", m.id, d.id) != record.deployment {
                continue;
            }
            if d.replicas != ReplicaSource::Local || !d.active {
                return Err("its deployment is no longer local and active".into());
            }
            let Some(engine) = &d.engine else {
                return Err("its deployment has no engine".into());
            };
            let args: Vec<String> = engine
                .to_args()
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            if args != record.args {
                return Err("its deployment's engine settings changed".into());
            }
            return Ok((m, d));
        }
    }
    Err(format!(
        "deployment {} is not in the config",
        record.deployment
    ))
}

impl ControllerHandle {
    /// Freezes the controller and describes its running replicas for the
    /// next gateway (see the module). Empty if the controller is gone.
    pub async fn hand_over(&self) -> Vec<Released> {
        let (reply, answer) = oneshot::channel();
        if self.commands.send(Command::HandOver(reply)).is_err() {
            return Vec::new();
        }
        // The controller answers within one pass; a bound keeps a wedged
        // one from stalling the upgrade forever (then nothing is handed).
        tokio::time::timeout(Duration::from_secs(10), answer)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default()
    }

    /// The next gateway holds the handed replicas: let them go.
    pub fn commit(&self) {
        let _ = self.commands.send(Command::Commit);
    }

    /// The handover failed: keep the replicas and carry on scaling.
    pub fn resume(&self) {
        let _ = self.commands.send(Command::Resume);
    }
}

//! The listening sockets, bound by the gateway itself before anything else
//! starts: so that a port in use fails the start with an error naming the
//! setting (Pingora, binding inside `Server::run`, would warn once a second
//! for 30 seconds instead), and so that a port 0 in the config has its real
//! port in time for the ready line. Pingora's services take the sockets over
//! from its table of listening fds ([`Prebound`]), the table a graceful
//! upgrade fills from the running process instead.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{IntoRawFd, OwnedFd};

use async_trait::async_trait;
use config::{GatewayReady, Listeners};
use pingora_core::server::{ListenFds, RuntimeOpts, ShutdownWatch};
use pingora_core::services::Service;

use crate::server::StartError;

/// One listener: its name in messages, the config key that sets it, and the
/// address configured.
struct Wanted {
    listener: &'static str,
    setting: &'static str,
    address: SocketAddr,
}

fn wanted(listeners: &Listeners) -> Vec<Wanted> {
    let mut wanted = vec![
        Wanted {
            listener: "predict",
            setting: "[listeners] predict",
            address: listeners.predict,
        },
        Wanted {
            listener: "admin",
            setting: "[listeners] admin",
            address: listeners.admin,
        },
    ];
    if let Some(tls) = &listeners.tls {
        wanted.push(Wanted {
            listener: "TLS",
            setting: "[listeners.tls] address",
            address: tls.address,
        });
    }
    wanted
}

/// The listeners' addresses as bound, and the sockets until Pingora's
/// services take them.
#[derive(Debug)]
pub(crate) struct Bound {
    /// The predict listener's address.
    pub(crate) predict: Socket,
    /// The admin listener's address.
    pub(crate) admin: Socket,
    /// The TLS predict listener's address, when configured.
    pub(crate) tls: Option<Socket>,
}

/// A bound address and, unless the predecessor of an upgrade holds it, the
/// listening socket.
#[derive(Debug)]
pub(crate) struct Socket {
    pub(crate) address: SocketAddr,
    fd: Option<OwnedFd>,
}

impl Bound {
    /// Binds and listens on every configured address (`SO_REUSEADDR`, as
    /// Pingora binds: connections a previous run left in TIME_WAIT do not
    /// hold a port). Connections that arrive before the services run wait in
    /// the listen backlog.
    pub(crate) fn bind(listeners: &Listeners) -> Result<Self, StartError> {
        Self::each(listeners, |wanted| {
            let listener = TcpListener::bind(wanted.address).map_err(|error| {
                let (listener, setting, address) =
                    (wanted.listener, wanted.setting, wanted.address);
                if error.kind() == io::ErrorKind::AddrInUse {
                    StartError::AddressInUse {
                        listener,
                        setting,
                        address,
                        error,
                    }
                } else {
                    StartError::Listen {
                        listener,
                        setting,
                        address,
                        error,
                    }
                }
            })?;
            // Non-blocking, as Pingora's own sockets and those an upgrade
            // hands over are: its accept loop polls.
            let address = listener
                .set_nonblocking(true)
                .and_then(|()| listener.local_addr())
                .map_err(|error| StartError::Listen {
                    listener: wanted.listener,
                    setting: wanted.setting,
                    address: wanted.address,
                    error,
                })?;
            Ok(Socket {
                address,
                fd: Some(OwnedFd::from(listener)),
            })
        })
    }

    /// The configured addresses, whose sockets the running gateway hands over
    /// in a graceful upgrade. Refuses port 0: the new process must name the
    /// ports the old one listens on.
    pub(crate) fn handed_over(listeners: &Listeners) -> Result<Self, StartError> {
        Self::each(listeners, |wanted| {
            if wanted.address.port() == 0 {
                return Err(StartError::UpgradePortZero {
                    listener: wanted.listener,
                    setting: wanted.setting,
                });
            }
            Ok(Socket {
                address: wanted.address,
                fd: None,
            })
        })
    }

    /// `socket` applied to each configured listener, in order.
    fn each(
        listeners: &Listeners,
        mut socket: impl FnMut(Wanted) -> Result<Socket, StartError>,
    ) -> Result<Self, StartError> {
        let mut sockets = wanted(listeners).into_iter().map(&mut socket);
        Ok(Self {
            predict: sockets.next().expect("predict is wanted")?,
            admin: sockets.next().expect("admin is wanted")?,
            tls: sockets.next().transpose()?,
        })
    }

    /// The line printed on stdout once the gateway serves.
    pub(crate) fn ready_line(&self) -> GatewayReady {
        GatewayReady::new(
            self.predict.address,
            self.admin.address,
            self.tls.as_ref().map(|tls| tls.address),
        )
    }
}

impl Socket {
    /// The address as Pingora's listener config and fd table name it.
    pub(crate) fn key(&self) -> String {
        self.address.to_string()
    }

    /// Hands the socket on (to a [`Prebound`]).
    pub(crate) fn take(&mut self) -> Option<(String, OwnedFd)> {
        let key = self.key();
        self.fd.take().map(|fd| (key, fd))
    }
}

/// A Pingora service whose listeners' sockets are already bound: when the
/// server starts it, the sockets go into the server's table of listening
/// fds under their addresses, where the service's listeners find them
/// instead of binding (as they find the sockets an upgrade hands over).
pub(crate) struct Prebound<S> {
    inner: S,
    sockets: Vec<(String, OwnedFd)>,
}

impl<S> Prebound<S> {
    pub(crate) fn new(inner: S, sockets: Vec<(String, OwnedFd)>) -> Self {
        Self { inner, sockets }
    }
}

#[async_trait]
impl<S: Service> Service for Prebound<S> {
    async fn start_service(
        &mut self,
        fds: Option<ListenFds>,
        shutdown: ShutdownWatch,
        listeners_per_fd: usize,
    ) {
        if let Some(table) = &fds {
            let mut table = table.lock();
            for (address, socket) in self.sockets.drain(..) {
                if table.get(&address).is_none() {
                    table.add(address, socket.into_raw_fd());
                }
            }
        }
        self.inner
            .start_service(fds, shutdown, listeners_per_fd)
            .await;
    }

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn threads(&self) -> Option<usize> {
        self.inner.threads()
    }

    fn runtime_opts_override(&self, global: &RuntimeOpts) -> Option<RuntimeOpts> {
        self.inner.runtime_opts_override(global)
    }

    fn listen_addresses(&self) -> Option<Vec<String>> {
        self.inner.listen_addresses()
    }
}

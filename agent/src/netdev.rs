//! The network interfaces of the agent's network namespace, from rtnetlink
//! (not /sys/class/net, which shows the namespace sysfs was mounted in).

use futures::{StreamExt as _, TryStreamExt as _, channel::mpsc::UnboundedReceiver};
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::{
    RouteNetlinkMessage,
    link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage},
};
use netlink_sys::AsyncSocket as _;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum NetdevError {
    #[error("cannot open a netlink socket: {0}")]
    Connect(#[source] std::io::Error),
    #[error("listing interfaces over netlink: {0}")]
    List(#[source] rtnetlink::Error),
}

/// What kind of device an interface is, as far as the choice of hook goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DevKind {
    /// A veth pair end (containers, namespace-based VMs, our tests).
    Veth,
    /// A tun/tap device (QEMU/KVM with vhost-net, Firecracker, ...).
    Tap,
    /// macvtap / ipvtap.
    Macvtap,
    /// No rtnetlink kind: a physical NIC or an SR-IOV representor.
    Physical,
    /// Anything else, by its rtnetlink kind.
    Other(String),
}

impl DevKind {
    pub fn as_str(&self) -> &str {
        match self {
            DevKind::Veth => "veth",
            DevKind::Tap => "tap",
            DevKind::Macvtap => "macvtap",
            DevKind::Physical => "physical",
            DevKind::Other(kind) => kind,
        }
    }
}

/// One interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetDev {
    pub index: u32,
    pub name: String,
    pub kind: DevKind,
}

impl NetDev {
    /// Reads an RTM_NEWLINK message (from a dump or an event).
    pub fn from_message(msg: &LinkMessage) -> Option<Self> {
        let mut name = None;
        let mut kind = DevKind::Physical;
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => name = Some(n.clone()),
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        if let LinkInfo::Kind(k) = info {
                            kind = match k {
                                InfoKind::Veth => DevKind::Veth,
                                InfoKind::Tun => DevKind::Tap,
                                InfoKind::MacVtap | InfoKind::IpVtap => DevKind::Macvtap,
                                other => DevKind::Other(other.to_string()),
                            };
                        }
                    }
                }
                _ => {}
            }
        }
        Some(Self {
            index: msg.header.index,
            name: name?,
            kind,
        })
    }
}

/// Every interface of the current network namespace.
pub async fn list() -> Result<Vec<NetDev>, NetdevError> {
    let (connection, handle, _) = rtnetlink::new_connection().map_err(NetdevError::Connect)?;
    let task = tokio::spawn(connection);
    let messages: Vec<LinkMessage> = handle
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(NetdevError::List)?;
    task.abort();
    let mut devs: Vec<NetDev> = messages.iter().filter_map(NetDev::from_message).collect();
    devs.sort_by_key(|d| d.index);
    Ok(devs)
}

/// A change to the interfaces, as rtnetlink announces it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkEvent {
    /// An interface was created, or one that exists changed (up, down,
    /// renamed, ...): the receiver tells them apart by ifindex.
    New(NetDev),
    /// An interface is gone.
    Del { index: u32, name: Option<String> },
}

/// The rtnetlink link-change stream of the current network namespace.
pub struct LinkEvents {
    messages: UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, netlink_sys::SocketAddr)>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LinkEvents {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Receive buffer for link events: a burst of interface creations (a
/// hypervisor starting many VMs at once) must not overflow it.
const EVENT_BUFFER: usize = 8 << 20;

impl LinkEvents {
    /// Subscribes to link changes. Subscribe before listing the interfaces,
    /// so that nothing created in between is missed.
    pub fn subscribe() -> Result<Self, NetdevError> {
        let (mut connection, _, messages) =
            rtnetlink::new_multicast_connection(&[rtnetlink::MulticastGroup::Link])
                .map_err(NetdevError::Connect)?;
        connection
            .socket_mut()
            .socket_mut()
            .set_rx_buf_sz(EVENT_BUFFER)
            .map_err(NetdevError::Connect)?;
        let task = tokio::spawn(connection);
        Ok(Self { messages, task })
    }

    /// The next change; `None` if the stream ended (then resubscribe).
    pub async fn next(&mut self) -> Option<LinkEvent> {
        loop {
            let (message, _) = self.messages.next().await?;
            let NetlinkPayload::InnerMessage(inner) = message.payload else {
                continue;
            };
            match inner {
                RouteNetlinkMessage::NewLink(link) => {
                    if let Some(dev) = NetDev::from_message(&link) {
                        return Some(LinkEvent::New(dev));
                    }
                }
                RouteNetlinkMessage::DelLink(link) => {
                    let name = NetDev::from_message(&link).map(|d| d.name);
                    return Some(LinkEvent::Del {
                        index: link.header.index,
                        name,
                    });
                }
                _ => {}
            }
        }
    }
}

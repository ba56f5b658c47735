//! The network interfaces of the agent's network namespace, from rtnetlink
//! (not /sys/class/net, which shows the namespace sysfs was mounted in).

use futures::{StreamExt as _, TryStreamExt as _, channel::mpsc::UnboundedReceiver};
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::{
    RouteNetlinkMessage,
    link::{InfoKind, LinkAttribute, LinkInfo, LinkLayerType, LinkMessage},
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
    /// A tun/tap device in tap mode (`IFF_TAP`, Ethernet frames): QEMU/KVM,
    /// Firecracker, cloud-hypervisor.
    Tap,
    /// A tun/tap device in tun mode (`IFF_TUN`, device type `ARPHRD_NONE`):
    /// packets start at the IP header. rtnetlink calls it `tun` like a tap;
    /// only the device type tells them apart.
    Tun,
    /// A macvtap (libvirt's `<interface type='direct'>`).
    Macvtap,
    /// An ipvtap: the same shape as a macvtap over an ipvlan.
    Ipvtap,
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
            DevKind::Tun => "tun",
            DevKind::Macvtap => "macvtap",
            DevKind::Ipvtap => "ipvtap",
            DevKind::Physical => "physical",
            DevKind::Other(kind) => kind,
        }
    }

    /// The kind of a device from its rtnetlink kind and its device type
    /// (`ARPHRD_*`).
    pub fn classify(kind: Option<&InfoKind>, link_type: LinkLayerType) -> Self {
        match kind {
            None => DevKind::Physical,
            Some(InfoKind::Veth) => DevKind::Veth,
            Some(InfoKind::Tun) if link_type == LinkLayerType::Ether => DevKind::Tap,
            // Not Ethernet: an L3 tun (ARPHRD_NONE), or a type no tun has
            // today; either way its packets do not start with Ethernet.
            Some(InfoKind::Tun) => DevKind::Tun,
            Some(InfoKind::MacVtap) => DevKind::Macvtap,
            Some(InfoKind::IpVtap) => DevKind::Ipvtap,
            Some(other) => DevKind::Other(other.to_string()),
        }
    }
}

impl std::fmt::Display for DevKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
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
        let mut kind = None;
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => name = Some(n.clone()),
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        if let LinkInfo::Kind(k) = info {
                            kind = Some(k);
                        }
                    }
                }
                _ => {}
            }
        }
        Some(Self {
            index: msg.header.index,
            name: name?,
            kind: DevKind::classify(kind, msg.header.link_layer_type),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tun_is_told_from_a_tap_by_its_device_type_alone() {
        let tun = Some(&InfoKind::Tun);
        assert_eq!(DevKind::classify(tun, LinkLayerType::Ether), DevKind::Tap);
        assert_eq!(DevKind::classify(tun, LinkLayerType::None), DevKind::Tun);
        // Any other type a tun could carry does not start with Ethernet
        // either: never read as a tap.
        assert_eq!(DevKind::classify(tun, LinkLayerType::Ppp), DevKind::Tun);
    }

    #[test]
    fn each_rtnetlink_kind_has_its_device_kind() {
        let ether = LinkLayerType::Ether;
        assert_eq!(DevKind::classify(None, ether), DevKind::Physical);
        assert_eq!(
            DevKind::classify(Some(&InfoKind::Veth), ether),
            DevKind::Veth
        );
        assert_eq!(
            DevKind::classify(Some(&InfoKind::MacVtap), ether),
            DevKind::Macvtap
        );
        assert_eq!(
            DevKind::classify(Some(&InfoKind::IpVtap), ether),
            DevKind::Ipvtap
        );
        assert_eq!(
            DevKind::classify(Some(&InfoKind::Bond), ether),
            DevKind::Other("bond".into())
        );
        assert_eq!(
            DevKind::classify(Some(&InfoKind::MacVlan), ether).as_str(),
            "macvlan"
        );
    }
}

//! Human-readable, redacted rendering of plans. Keys other than public keys
//! never appear: private and preshared keys print as `<redacted>`.

use std::fmt;

use super::{Conflict, ForwardingScope, IpFamily, PeerChange, Plan, RouteTarget, Step};
use crate::model::RouteId;
use crate::ownership::device_alias;

pub(crate) struct Table(pub u32);

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            253 => f.write_str("default"),
            254 => f.write_str("main"),
            255 => f.write_str("local"),
            n => write!(f, "{n}"),
        }
    }
}

impl fmt::Display for RouteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} table {} metric {}",
            self.destination,
            Table(self.table),
            self.metric
        )
    }
}

impl fmt::Display for RouteTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(via) = self.via {
            write!(f, "via {via} ")?;
        }
        write!(f, "dev {}", self.device)
    }
}

impl fmt::Display for IpFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IpFamily::V4 => "ipv4",
            IpFamily::V6 => "ipv6",
        })
    }
}

impl fmt::Display for PeerChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(e) = self.endpoint {
            parts.push(format!("endpoint {e}"));
        }
        if let Some(ips) = &self.allowed_ips {
            if ips.is_empty() {
                parts.push("allowed-ips (none)".to_owned());
            } else {
                let list: Vec<String> = ips.iter().map(ToString::to_string).collect();
                parts.push(format!("allowed-ips {}", list.join(",")));
            }
        }
        match self.persistent_keepalive {
            Some(0) => parts.push("keepalive off".to_owned()),
            Some(k) => parts.push(format!("keepalive {k}")),
            None => {}
        }
        match &self.preshared_key {
            Some(Some(_)) => parts.push("preshared-key <redacted>".to_owned()),
            Some(None) => parts.push("preshared-key (none)".to_owned()),
            None => {}
        }
        f.write_str(&parts.join(" "))
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::CreateDevice { device, owner } => {
                write!(f, "+ create device {device} for {owner}")
            }
            Step::MarkDevice { device, owner } => {
                write!(f, "~ mark device {device} as {}", device_alias(owner))
            }
            Step::SetPrivateKey { device, key } => write!(f, "~ {device}: set private key {key}"),
            Step::SetListenPort { device, port } => {
                write!(f, "~ {device}: set listen port {port}")
            }
            Step::UpsertPeer {
                device,
                peer,
                change,
            } => {
                let (sign, verb) = if change.create {
                    ('+', "add")
                } else {
                    ('~', "update")
                };
                write!(f, "{sign} {device}: {verb} peer {peer}")?;
                let rest = change.to_string();
                if !rest.is_empty() {
                    write!(f, " {rest}")?;
                }
                Ok(())
            }
            Step::RemovePeer { device, peer } => write!(f, "- {device}: remove peer {peer}"),
            Step::StartHandshake { device, peer, .. } => {
                write!(f, "~ {device}: start a handshake with peer {peer}")
            }
            Step::AddAddress { device, address } => {
                write!(f, "+ {device}: add address {address}")
            }
            Step::RemoveAddress { device, address } => {
                write!(f, "- {device}: remove address {address}")
            }
            Step::SetMtu { device, mtu } => write!(f, "~ {device}: set mtu {mtu}"),
            Step::SetUp { device } => write!(f, "~ {device}: set up"),
            Step::AddRoute { id, route } => write!(f, "+ route {id} {route}"),
            Step::ReplaceRoute { id, route } => write!(f, "~ route {id} {route} (replace)"),
            Step::RemoveRoute { id, device } => {
                write!(f, "- route {id}")?;
                if let Some(d) = device {
                    write!(f, " dev {d}")?;
                }
                Ok(())
            }
            Step::EnableForwarding { scope, family } => match scope {
                ForwardingScope::All => write!(f, "~ enable {family} forwarding (all)"),
                ForwardingScope::Device(d) => write!(f, "~ {d}: enable {family} forwarding"),
            },
            Step::DeleteDevice { device } => write!(f, "- delete device {device}"),
        }
    }
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Conflict::InterfaceNameTaken {
                device,
                owner,
                kind,
            } => write!(
                f,
                "device {device} wanted by {owner}: a {kind} link not created by kwire already has this name; \
                 rename the Interface or remove that link"
            ),
            Conflict::RouteTaken {
                key,
                metric,
                protocol,
            } => write!(
                f,
                "route {} table {} metric {metric}: a route with protocol {protocol} not created by kwire \
                 holds this destination and metric; choose another metric or table",
                key.destination,
                Table(key.table)
            ),
            Conflict::RouteDeviceUnavailable { key, device } => write!(
                f,
                "route {} table {}: device {device} is not reconciled on this node",
                key.destination,
                Table(key.table)
            ),
        }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.steps.is_empty() && self.conflicts.is_empty() {
            return f.write_str("no changes");
        }
        let mut first = true;
        for step in &self.steps {
            if !first {
                writeln!(f)?;
            }
            first = false;
            write!(f, "{step}")?;
        }
        for conflict in &self.conflicts {
            if !first {
                writeln!(f)?;
            }
            first = false;
            write!(f, "! conflict ({}): {conflict}", conflict.reason())?;
        }
        Ok(())
    }
}

//! One route of a VirtualService as this module names it: which list it lives in and
//! where, the destinations its entries send traffic to, and its weights as recorded
//! before a rollback.
//!
//! Design rule: plain data in Istio's own shapes. A [`Destination`] writes itself back
//! as Istio JSON, a [`RecordedRoute`] round-trips through the rollback annotation, and
//! nothing here reads a VirtualService (that is `parse.rs`).

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Which list of `spec` a route lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteKind {
    /// `spec.http[]`
    Http,
    /// `spec.tls[]`
    Tls,
    /// `spec.tcp[]`
    Tcp,
}

impl RouteKind {
    /// All kinds, in the order routes are visited.
    pub const ALL: [RouteKind; 3] = [RouteKind::Http, RouteKind::Tls, RouteKind::Tcp];

    /// The field name under `spec`.
    pub fn as_str(self) -> &'static str {
        match self {
            RouteKind::Http => "http",
            RouteKind::Tls => "tls",
            RouteKind::Tcp => "tcp",
        }
    }
}

/// Identifies one route of a VirtualService.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteRef {
    /// The list it lives in.
    pub kind: RouteKind,
    /// Its index in that list.
    pub index: usize,
    /// Its `name` (http routes only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl RouteRef {
    /// JSON pointer of the route object.
    pub fn pointer(&self) -> String {
        format!("/spec/{}/{}", self.kind.as_str(), self.index)
    }
}

impl fmt::Display for RouteRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]", self.kind.as_str(), self.index)?;
        if let Some(name) = &self.name {
            write!(f, " {name:?}")?;
        }
        Ok(())
    }
}

/// An Istio `Destination`: where a route entry sends traffic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Destination {
    /// Service host as written in the VirtualService.
    pub host: String,
    /// Subset name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
    /// `port.number`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
}

impl Destination {
    /// The Istio JSON form of this destination.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("host".into(), Value::String(self.host.clone()));
        if let Some(s) = &self.subset {
            m.insert("subset".into(), Value::String(s.clone()));
        }
        if let Some(p) = self.port {
            m.insert("port".into(), serde_json::json!({ "number": p }));
        }
        Value::Object(m)
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.host)?;
        if let Some(s) = &self.subset {
            write!(f, "/{s}")?;
        }
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        Ok(())
    }
}

/// A destination with its weight exactly as written (`None`: no `weight` field).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestinationWeight {
    /// The destination.
    pub destination: Destination,
    /// The `weight` field; `None` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

/// What a route looked like before a rollback: enough to put it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedRoute {
    /// The route.
    #[serde(flatten)]
    pub route: RouteRef,
    /// Its `route[]` entries before the rollback, in order.
    pub weights: Vec<DestinationWeight>,
    /// The stable destination the rollback appended to a canary-only route, if any;
    /// a restore removes it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub added: Option<Destination>,
}

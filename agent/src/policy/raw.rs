//! The policy file as serde reads it: structure only. Every scalar is kept as
//! its text, so that validation (not serde) reads dates, ports, prefixes and
//! names, and can report every bad one instead of the first.

use std::fmt;

use serde::{
    Deserialize, Deserializer,
    de::{self, MapAccess, Visitor},
};

/// Fields of each mapping, in the order the docs list them. Serde's derive
/// and the lint (`locate::lint`) both use these names.
pub const TOP_FIELDS: &[&str] = &["version", "enforcement", "offers", "subscriptions", "vms"];
pub const ENFORCEMENT_FIELDS: &[&str] = &[
    "ports",
    "action",
    "mode",
    "hook",
    "attach",
    "unknown",
    "allow_destinations",
    "cutoff",
];
pub const OFFER_FIELDS: &[&str] = &["restricted", "exemption"];
pub const SUBSCRIPTION_FIELDS: &[&str] = &["id", "offer", "created", "exemption"];
pub const EXEMPTION_FIELDS: &[&str] = &["granted", "revoked"];
pub const VM_FIELDS: &[&str] = &[
    "name",
    "subscription",
    "interface",
    "addresses",
    "started",
    "override",
];

/// A scalar field: absent, present but null (`key:`, `key: ~`), or its text
/// exactly as written (`25`, `2020-05-01`, `"tap 1"` -> `tap 1`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Field {
    #[default]
    Absent,
    Null,
    Text(String),
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct FieldVisitor;
        impl<'de> Visitor<'de> for FieldVisitor {
            type Value = Field;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a single value")
            }
            fn visit_none<E: de::Error>(self) -> Result<Field, E> {
                Ok(Field::Null)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Field, E> {
                Ok(Field::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Field, D::Error> {
                // serde_norway hands any scalar to a string exactly as written.
                String::deserialize(d).map(Field::Text)
            }
        }
        d.deserialize_option(FieldVisitor)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a policy: a mapping with version, enforcement, offers, subscriptions and vms"
)]
pub struct RawPolicy {
    #[serde(default)]
    pub version: Field,
    #[serde(default)]
    pub enforcement: Option<RawEnforcement>,
    #[serde(default)]
    pub offers: Option<RawOffers>,
    #[serde(default)]
    pub subscriptions: Option<Vec<RawSubscription>>,
    #[serde(default)]
    pub vms: Option<Vec<RawVm>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "the enforcement settings: a mapping with ports, action, mode, hook, attach, unknown, allow_destinations and cutoff"
)]
pub struct RawEnforcement {
    #[serde(default)]
    pub ports: Option<Vec<Field>>,
    #[serde(default)]
    pub action: Field,
    #[serde(default)]
    pub mode: Field,
    #[serde(default)]
    pub hook: Field,
    #[serde(default)]
    pub attach: Option<Vec<Field>>,
    #[serde(default)]
    pub unknown: Field,
    #[serde(default)]
    pub allow_destinations: Option<Vec<Field>>,
    #[serde(default)]
    pub cutoff: Field,
}

/// `offers:` in file order. A name given twice is an error here (serde's
/// maps would keep the last one silently).
#[derive(Debug, Default)]
pub struct RawOffers(pub Vec<(String, Option<RawOffer>)>);

impl<'de> Deserialize<'de> for RawOffers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct OffersVisitor;
        impl<'de> Visitor<'de> for OffersVisitor {
            type Value = RawOffers;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping of offer names to {restricted, exemption}")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawOffers, A::Error> {
                let mut offers: Vec<(String, Option<RawOffer>)> = Vec::new();
                while let Some(name) = map.next_key::<String>()? {
                    if offers.iter().any(|(n, _)| *n == name) {
                        return Err(de::Error::custom(format_args!("duplicate field `{name}`")));
                    }
                    let offer = map.next_value()?;
                    offers.push((name, offer));
                }
                Ok(RawOffers(offers))
            }
        }
        d.deserialize_map(OffersVisitor)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an offer: a mapping with restricted and exemption"
)]
pub struct RawOffer {
    #[serde(default)]
    pub restricted: Field,
    #[serde(default)]
    pub exemption: Field,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a subscription: a mapping with id, offer, created and exemption"
)]
pub struct RawSubscription {
    #[serde(default)]
    pub id: Field,
    #[serde(default)]
    pub offer: Field,
    #[serde(default)]
    pub created: Field,
    #[serde(default)]
    pub exemption: Option<RawExemption>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an exemption: a mapping with granted and revoked"
)]
pub struct RawExemption {
    #[serde(default)]
    pub granted: Field,
    #[serde(default)]
    pub revoked: Field,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a VM: a mapping with name, subscription, interface, addresses, started and override"
)]
pub struct RawVm {
    #[serde(default)]
    pub name: Field,
    #[serde(default)]
    pub subscription: Field,
    #[serde(default)]
    pub interface: Field,
    #[serde(default)]
    pub addresses: Option<Vec<Field>>,
    #[serde(default)]
    pub started: Field,
    #[serde(default, rename = "override")]
    pub override_verdict: Field,
}

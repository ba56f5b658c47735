//! The settings a policy writes as one of a few words (`action: drop`,
//! `hook: tc`, `override: allow`, an offer's `restricted` and `exemption`),
//! each with its one spelling.
//!
//! Invariant: [`Word::from_yaml`] reads exactly what [`Word::as_str`]
//! writes, and nothing else (lowercase, no aliases); `ALL` lists every
//! value, in the order the docs list them.

use std::fmt;

use serde::Serialize;

/// A setting written as one of a few words; [`yaml_enum!`] implements it.
pub trait Word: Copy + 'static {
    /// Every value, in the order the docs list them.
    const ALL: &'static [Self];
    /// The YAML spelling.
    fn as_str(self) -> &'static str;
    /// Reads the YAML spelling (exact, lowercase).
    fn from_yaml(text: &str) -> Option<Self>;
}

macro_rules! yaml_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
        pub enum $name {
            $(#[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every value, in the order the docs list them.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The YAML spelling.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// Reads the YAML spelling (exact, lowercase).
            pub fn from_yaml(text: &str) -> Option<Self> {
                match text {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl Word for $name {
            const ALL: &'static [$name] = $name::ALL;

            fn as_str(self) -> &'static str {
                $name::as_str(self)
            }

            fn from_yaml(text: &str) -> Option<Self> {
                $name::from_yaml(text)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

yaml_enum! {
    /// What happens to a held-back segment.
    Action { Drop = "drop", Reset = "reset", Icmp = "icmp" }
}
yaml_enum! {
    /// `enforce` holds back; `audit` only counts.
    Mode { Enforce = "enforce", Audit = "audit" }
}
yaml_enum! {
    /// Where the program sits on VM interfaces.
    Hook { Auto = "auto", Xdp = "xdp", XdpGeneric = "xdp-generic", Tc = "tc" }
}
yaml_enum! {
    /// Whether a VM (or interface) may send to the held-back ports.
    Verdict { Allow = "allow", Block = "block" }
}
yaml_enum! {
    /// When subscriptions of an offer are restricted.
    Restricted { Always = "always", Never = "never", FromCutoff = "from-cutoff" }
}
yaml_enum! {
    /// Whether subscriptions of an offer can be exempted.
    ExemptionRule { OnRequest = "on-request", Never = "never" }
}

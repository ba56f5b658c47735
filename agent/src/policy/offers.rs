//! The built-in offer types: Azure's port-25 rules (SPEC, "Built-in offers").

use std::collections::BTreeMap;

use super::{
    choices::{ExemptionRule, Restricted},
    model::Offer,
};

/// Name, `restricted`, `exemption` of each built-in offer, in SPEC's order.
///
/// SPEC gives enterprise-agreement's exemption as "-": it is never
/// restricted, so there is nothing to exempt it from; it is `never` here, and
/// an exemption declared on such a subscription is an error.
pub const BUILTIN_OFFERS: &[(&str, Restricted, ExemptionRule)] = &[
    (
        "enterprise-agreement",
        Restricted::Never,
        ExemptionRule::Never,
    ),
    (
        "pay-as-you-go",
        Restricted::FromCutoff,
        ExemptionRule::OnRequest,
    ),
    (
        "cloud-solution-provider",
        Restricted::FromCutoff,
        ExemptionRule::OnRequest,
    ),
    (
        "microsoft-partner-network",
        Restricted::FromCutoff,
        ExemptionRule::OnRequest,
    ),
    (
        "bizspark-plus",
        Restricted::FromCutoff,
        ExemptionRule::OnRequest,
    ),
    (
        "azure-sponsorship",
        Restricted::FromCutoff,
        ExemptionRule::OnRequest,
    ),
    ("msdn", Restricted::FromCutoff, ExemptionRule::Never),
    ("azure-pass", Restricted::FromCutoff, ExemptionRule::Never),
    (
        "azure-in-open",
        Restricted::FromCutoff,
        ExemptionRule::Never,
    ),
    ("education", Restricted::FromCutoff, ExemptionRule::Never),
    (
        "azure-for-students",
        Restricted::FromCutoff,
        ExemptionRule::Never,
    ),
    ("free-trial", Restricted::FromCutoff, ExemptionRule::Never),
    (
        "visual-studio",
        Restricted::FromCutoff,
        ExemptionRule::Never,
    ),
];

/// The built-in offer called `name`, if any.
pub fn builtin(name: &str) -> Option<Offer> {
    BUILTIN_OFFERS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|&(n, restricted, exemption)| Offer {
            name: n.to_owned(),
            restricted,
            exemption,
            builtin: true,
        })
}

/// The built-in offers, by name.
pub fn builtins() -> BTreeMap<String, Offer> {
    BUILTIN_OFFERS
        .iter()
        .map(|&(n, restricted, exemption)| {
            (
                n.to_owned(),
                Offer {
                    name: n.to_owned(),
                    restricted,
                    exemption,
                    builtin: true,
                },
            )
        })
        .collect()
}

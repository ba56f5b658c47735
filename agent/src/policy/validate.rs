//! From what serde read to a [`Policy`]: every value checked, every error
//! found (not only the first), each with the path of what it is about.
//! Paths are built only when there is an error.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    str::FromStr,
    sync::Arc,
};

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use ipnet::IpNet;

use super::{
    limits::{MAX_ERRORS, MAX_NAME},
    locate::{Loc, Path, Seg, yaml_path},
    model::{
        Action, AttachGlobs, Enforcement, Exemption, ExemptionRule, Hook, MAX_PORTS, Mode, Offer,
        Policy, Restricted, Subscription, Verdict, Vm, VmIndex, compile_glob,
    },
    names::{check_ifname, check_name, shown, what_char},
    offers,
    raw::{Field, RawEnforcement, RawExemption, RawOffers, RawPolicy, RawSubscription, RawVm},
    vm_key,
};

/// One thing wrong with the file, before it has a line and column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issue {
    pub at: Loc,
    pub message: String,
    /// For a duplicate: the first occurrence, whose line the message adds.
    pub first: Option<Loc>,
}

/// Reads a `YYYY-MM-DD` day.
pub fn parse_date(text: &str) -> Result<NaiveDate, String> {
    let b = text.as_bytes();
    let shape = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !shape {
        return Err(format!(
            "`{text}` is not a date; expected YYYY-MM-DD, e.g. 2020-05-01"
        ));
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| format!("`{text}` is not a valid date (YYYY-MM-DD)"))
}

/// Reads an RFC 3339 time with an offset (`2021-01-10T12:00:00Z`,
/// `2021-01-10T13:00:00+01:00`), as UTC. For `granted`, `revoked`, `started`
/// and `check --at`.
pub fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let without_offset = ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
        .iter()
        .any(|f| NaiveDateTime::parse_from_str(text, f).is_ok());
    if without_offset {
        Err(format!(
            "`{text}` has no UTC offset; add one, e.g. `{text}Z` for UTC (RFC 3339)"
        ))
    } else {
        Err(format!(
            "`{text}` is not an RFC 3339 time with an offset, e.g. 2021-01-10T12:00:00Z"
        ))
    }
}

/// Reads a prefix of `allow_destinations`. A bare address is its own /32 or
/// /128.
pub fn parse_prefix(text: &str) -> Result<IpNet, String> {
    if !text.contains('/') {
        return IpAddr::from_str(text).map(IpNet::from).map_err(|_| {
            format!("`{text}` is not an IPv4 or IPv6 prefix, e.g. 10.0.0.0/8 or fd00::/8")
        });
    }
    let net = IpNet::from_str(text).map_err(|_| {
        format!("`{text}` is not an IPv4 or IPv6 prefix, e.g. 10.0.0.0/8 or fd00::/8")
    })?;
    let network = net.trunc();
    if network != net {
        return Err(format!("{text} has host bits set; did you mean {network}?"));
    }
    Ok(net)
}

/// "a, b or c"
fn one_of(words: &[&str]) -> String {
    match words {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}

fn enum_names<T: Copy>(all: &[T], name: fn(T) -> &'static str) -> Vec<&'static str> {
    all.iter().map(|v| name(*v)).collect()
}

/// The issues found so far. Only as many are kept as a report can show:
/// once more than [`MAX_ERRORS`] issues of VMs are kept, an issue of a VM
/// after the last of those is only counted (VMs are in file order, so the
/// first issues in the file are all kept), and memory stays bounded
/// whatever the number of errors.
#[derive(Default)]
pub(crate) struct Checker {
    pub(crate) issues: Vec<Issue>,
    /// Issues found and not kept.
    pub(crate) dropped: usize,
    vm_issues: usize,
    last_vm: usize,
}

impl Checker {
    fn push(&mut self, issue: Issue) {
        let path = match &issue.at {
            Loc::Value(p) | Loc::Key(p) => p,
        };
        if let [Seg::Key(k), Seg::Index(i), ..] = path.as_slice()
            && k == "vms"
        {
            if self.vm_issues > MAX_ERRORS && *i > self.last_vm {
                self.dropped += 1;
                return;
            }
            self.vm_issues += 1;
            self.last_vm = self.last_vm.max(*i);
        }
        self.issues.push(issue);
    }

    fn error(&mut self, at: Loc, message: String) {
        self.push(Issue {
            at,
            message,
            first: None,
        });
    }

    fn duplicate(&mut self, at: Loc, first: Loc, message: String) {
        self.push(Issue {
            at,
            message,
            first: Some(first),
        });
    }

    /// A required scalar: its text, or an error (missing: at the mapping
    /// that lacks it; null: at its key; empty: at the value). `whose` names
    /// the mapping ("every VM").
    fn required(
        &mut self,
        field: Field,
        key: &str,
        whose: &str,
        path: impl Fn() -> Path,
    ) -> Option<String> {
        match field {
            Field::Text(t) if !t.is_empty() => Some(t),
            Field::Text(_) => {
                self.error(Loc::Value(path()), format!("`{key}` is empty"));
                None
            }
            // `key:` with nothing after it: point at the key.
            Field::Null => {
                self.error(Loc::Key(path()), format!("`{key}` is empty"));
                None
            }
            Field::Absent => {
                let mut parent = path();
                parent.pop();
                self.error(
                    Loc::Value(parent),
                    format!("missing `{key}`: {whose} needs one"),
                );
                None
            }
        }
    }

    /// An item of a list: its text, or an error for an empty one.
    fn item(
        &mut self,
        field: Field,
        what: &str,
        list: &str,
        path: impl Fn() -> Path,
    ) -> Option<String> {
        match field {
            Field::Text(t) if !t.is_empty() => Some(t),
            _ => {
                self.error(Loc::Value(path()), format!("empty {what} in `{list}`"));
                None
            }
        }
    }

    /// A required name: [`Checker::required`], then [`check_name`].
    fn name(
        &mut self,
        field: Field,
        key: &str,
        whose: &str,
        path: impl Fn() -> Path,
    ) -> Option<String> {
        let text = self.required(field, key, whose, &path)?;
        match check_name(key, &text) {
            Ok(()) => Some(text),
            Err(why) => {
                self.error(Loc::Value(path()), why);
                None
            }
        }
    }

    fn empty_optional(key: &str) -> String {
        format!("`{key}` is empty; give a value or leave the field out")
    }

    /// An optional scalar: `None` when absent; null or empty is an error.
    fn optional(&mut self, field: Field, key: &str, path: impl Fn() -> Path) -> Option<String> {
        match field {
            Field::Absent => None,
            Field::Text(t) if !t.is_empty() => Some(t),
            Field::Text(_) => {
                self.error(Loc::Value(path()), Self::empty_optional(key));
                None
            }
            Field::Null => {
                self.error(Loc::Key(path()), Self::empty_optional(key));
                None
            }
        }
    }

    fn choice<T: Copy>(
        &mut self,
        field: Field,
        key: &str,
        all: &[T],
        name: fn(T) -> &'static str,
        from: fn(&str) -> Option<T>,
        path: impl Fn() -> Path,
    ) -> Option<T> {
        let text = self.optional(field, key, &path)?;
        let value = from(&text);
        if value.is_none() {
            self.error(
                Loc::Value(path()),
                format!(
                    "bad `{key}` `{text}`: expected {}",
                    one_of(&enum_names(all, name))
                ),
            );
        }
        value
    }

    fn time(&mut self, text: &str, key: &str, path: impl Fn() -> Path) -> Option<DateTime<Utc>> {
        match parse_time(text) {
            Ok(t) => Some(t),
            Err(e) => {
                self.error(Loc::Value(path()), format!("bad `{key}` time: {e}"));
                None
            }
        }
    }

    fn date(&mut self, text: &str, key: &str, path: impl Fn() -> Path) -> Option<NaiveDate> {
        match parse_date(text) {
            Ok(d) => Some(d),
            Err(e) => {
                self.error(Loc::Value(path()), format!("bad `{key}` date: {e}"));
                None
            }
        }
    }
}

/// Checks what serde read and builds the policy, or says everything that is
/// wrong with it. VMs can be given one at a time as they are read
/// ([`Validator::vm`]), so that a large file's raw VMs are never all held.
pub struct Validator {
    c: Checker,
    vms: Vec<Vm>,
    /// The subscription names the VMs give, each once: a VM's
    /// `subscription_index` is an index here until [`resolve_subscriptions`]
    /// points it at its subscription.
    sub_names: SubNames,
}

/// Subscription names as the VMs give them, each kept once.
#[derive(Default)]
pub(crate) struct SubNames {
    ids: HashMap<Box<str>, u32>,
    names: Vec<Box<str>>,
}

/// What a VM without a (valid) subscription name points at.
const NO_SUBSCRIPTION: u32 = u32::MAX;

impl SubNames {
    fn id(&mut self, name: String) -> u32 {
        if let Some(&id) = self.ids.get(name.as_str()) {
            return id;
        }
        let id = u32::try_from(self.names.len()).unwrap_or(NO_SUBSCRIPTION);
        let name = name.into_boxed_str();
        self.names.push(name.clone());
        self.ids.insert(name, id);
        id
    }
}

impl Default for Validator {
    fn default() -> Self {
        Self::new()
    }
}

impl Validator {
    pub fn new() -> Self {
        Self {
            c: Checker::default(),
            vms: Vec::new(),
            sub_names: SubNames::default(),
        }
    }

    /// The `i`th item of `vms`.
    pub fn vm(&mut self, i: usize, raw: RawVm) {
        let vm = check_vm(&mut self.c, &mut self.sub_names, i, raw);
        self.vms.push(vm);
    }

    /// The rest of the file (its `vms`, if any, come after those given to
    /// [`Validator::vm`]).
    /// On errors: those kept, and how many more there are.
    pub fn finish(mut self, raw: RawPolicy, hash: String) -> Result<Policy, (Vec<Issue>, usize)> {
        for v in raw.vms.unwrap_or_default() {
            self.vm(self.vms.len(), v);
        }
        let Validator {
            mut c,
            mut vms,
            sub_names,
        } = self;
        check_version(&mut c, raw.version);
        let enforcement = enforcement(&mut c, raw.enforcement.unwrap_or_default());
        let offers = offer_table(&mut c, raw.offers.unwrap_or_default());
        let subscriptions = subscriptions(&mut c, raw.subscriptions.unwrap_or_default(), &offers);
        resolve_subscriptions(&mut c, &mut vms, &sub_names, 0, &subscriptions);
        drop(sub_names);
        let index = vm_duplicates(&mut c, &vms);

        if c.issues.is_empty() {
            vms.shrink_to_fit();
            Ok(Policy {
                enforcement,
                offers,
                subscriptions,
                vms,
                hash,
                index,
                source: None,
            })
        } else {
            Err((c.issues, c.dropped))
        }
    }
}

fn check_version(c: &mut Checker, version: Field) {
    match version {
        Field::Absent => c.error(
            Loc::Value(yaml_path![]),
            "missing `version`: a policy file starts with `version: 1`".to_owned(),
        ),
        Field::Text(t) if t == "1" => {}
        Field::Text(t) => c.error(
            Loc::Value(yaml_path!["version"]),
            format!("unsupported `version` `{t}`: this egress-guard reads version 1"),
        ),
        Field::Null => c.error(
            Loc::Key(yaml_path!["version"]),
            "`version` is empty: this egress-guard reads version 1".to_owned(),
        ),
    }
}

fn enforcement(c: &mut Checker, raw: RawEnforcement) -> Enforcement {
    let mut e = Enforcement::default();
    if let Some(ports) = raw.ports {
        e.ports = check_ports(c, ports);
    }
    if let Some(v) = c.choice(
        raw.action,
        "action",
        Action::ALL,
        Action::as_str,
        Action::from_yaml,
        || yaml_path!["enforcement", "action"],
    ) {
        e.action = v;
    }
    if let Some(v) = c.choice(
        raw.mode,
        "mode",
        Mode::ALL,
        Mode::as_str,
        Mode::from_yaml,
        || yaml_path!["enforcement", "mode"],
    ) {
        e.mode = v;
    }
    if let Some(v) = c.choice(
        raw.hook,
        "hook",
        Hook::ALL,
        Hook::as_str,
        Hook::from_yaml,
        || yaml_path!["enforcement", "hook"],
    ) {
        e.hook = v;
    }
    if let Some(v) = c.choice(
        raw.unknown,
        "unknown",
        Verdict::ALL,
        Verdict::as_str,
        Verdict::from_yaml,
        || yaml_path!["enforcement", "unknown"],
    ) {
        e.unknown = v;
    }
    if let Some(globs) = raw.attach {
        let (patterns, compiled) = check_attach(c, globs);
        e.attach = patterns;
        e.attach_globs = compiled;
    }
    if let Some(prefixes) = raw.allow_destinations {
        for (i, field) in prefixes.into_iter().enumerate() {
            let here = || yaml_path!["enforcement", "allow_destinations", i];
            let Some(text) = c.item(field, "prefix", "allow_destinations", here) else {
                continue;
            };
            match parse_prefix(&text) {
                Ok(net) => e.allow_destinations.push(net),
                Err(why) => c.error(Loc::Value(here()), why),
            }
        }
    }
    if let Some(text) = c.optional(raw.cutoff, "cutoff", || yaml_path!["enforcement", "cutoff"])
        && let Some(d) = c.date(&text, "cutoff", || yaml_path!["enforcement", "cutoff"])
    {
        e.cutoff = d;
    }
    e
}

fn check_ports(c: &mut Checker, ports: Vec<Field>) -> Vec<u16> {
    let at = || yaml_path!["enforcement", "ports"];
    if ports.is_empty() {
        c.error(
            Loc::Value(at()),
            "`ports` is empty; list at least one TCP port (the default is [25])".to_owned(),
        );
    }
    let mut seen: Vec<(u16, usize)> = Vec::with_capacity(ports.len());
    for (i, field) in ports.into_iter().enumerate() {
        let here = || yaml_path!["enforcement", "ports", i];
        if i == MAX_PORTS {
            c.error(
                Loc::Value(here()),
                format!("more than {MAX_PORTS} ports; the datapath holds at most {MAX_PORTS}"),
            );
        }
        let Some(text) = c.item(field, "port", "ports", here) else {
            continue;
        };
        match text.parse::<u16>() {
            Ok(0) => c.error(
                Loc::Value(here()),
                "port 0 is not a TCP port; ports go from 1 to 65535".to_owned(),
            ),
            Ok(port) => {
                if let Some(&(_, first)) = seen.iter().find(|(p, _)| *p == port) {
                    c.duplicate(
                        Loc::Value(here()),
                        Loc::Value(yaml_path!["enforcement", "ports", first]),
                        format!("duplicate port {port}"),
                    );
                } else {
                    seen.push((port, i));
                }
            }
            Err(_) => c.error(
                Loc::Value(here()),
                format!("bad port `{text}`: expected a number from 1 to 65535"),
            ),
        }
    }
    seen.into_iter().map(|(p, _)| p).collect()
}

fn check_attach(c: &mut Checker, globs: Vec<Field>) -> (Vec<String>, AttachGlobs) {
    let mut patterns = Vec::with_capacity(globs.len());
    for (i, field) in globs.into_iter().enumerate() {
        let here = || yaml_path!["enforcement", "attach", i];
        let Some(glob) = c.item(field, "glob", "attach", here) else {
            continue;
        };
        if let Some(ch) = glob
            .chars()
            .find(|c| matches!(c, '/' | ':' | '%') || c.is_whitespace() || c.is_control())
        {
            c.error(
                Loc::Value(here()),
                format!(
                    "bad `attach` glob `{}`: it contains {}, which no interface name has",
                    shown(&glob),
                    what_char(ch)
                ),
            );
            continue;
        }
        if glob.len() > MAX_NAME {
            c.error(
                Loc::Value(here()),
                format!(
                    "bad `attach` glob `{}`: {} bytes long; globs are at most {MAX_NAME} bytes",
                    shown(&glob),
                    glob.len()
                ),
            );
            continue;
        }
        match compile_glob(&glob) {
            Ok(_) => patterns.push(glob),
            Err(why) => c.error(
                Loc::Value(here()),
                format!("bad `attach` glob `{glob}`: {why}"),
            ),
        }
    }
    match AttachGlobs::new(&patterns) {
        Ok(compiled) => (patterns, compiled),
        Err((glob, why)) => {
            c.error(
                Loc::Value(yaml_path!["enforcement", "attach"]),
                format!("bad `attach` glob `{glob}`: {why}"),
            );
            (Vec::new(), AttachGlobs::default())
        }
    }
}

fn offer_table(c: &mut Checker, raw: RawOffers) -> BTreeMap<String, Offer> {
    let mut table = offers::builtins();
    for (name, body) in raw.0 {
        let at = || yaml_path!["offers", name.as_str()];
        if name.is_empty() {
            c.error(Loc::Key(at()), "offer name is empty".to_owned());
            continue;
        }
        if let Err(why) = check_name("offer", &name) {
            c.error(Loc::Key(at()), why);
            continue;
        }
        let builtin = offers::builtin(&name);
        let Some(body) = body else {
            c.error(
                Loc::Key(at()),
                format!(
                    "offer `{name}` is empty; give `restricted` and `exemption`{}",
                    if builtin.is_some() {
                        " (or one of them, to override the built-in offer)"
                    } else {
                        ""
                    }
                ),
            );
            continue;
        };
        let given_restricted = !matches!(body.restricted, Field::Absent);
        let given_exemption = !matches!(body.exemption, Field::Absent);
        let restricted = c.choice(
            body.restricted,
            "restricted",
            Restricted::ALL,
            Restricted::as_str,
            Restricted::from_yaml,
            || yaml_path!["offers", name.as_str(), "restricted"],
        );
        let exemption = c.choice(
            body.exemption,
            "exemption",
            ExemptionRule::ALL,
            ExemptionRule::as_str,
            ExemptionRule::from_yaml,
            || yaml_path!["offers", name.as_str(), "exemption"],
        );
        let offer = if let Some(base) = builtin {
            if !given_restricted && !given_exemption {
                c.error(
                    Loc::Value(at()),
                    format!(
                        "offer `{name}` overrides the built-in offer but sets neither `restricted` nor `exemption`"
                    ),
                );
                continue;
            }
            Offer {
                restricted: restricted.unwrap_or(base.restricted),
                exemption: exemption.unwrap_or(base.exemption),
                ..base
            }
        } else {
            let missing: Vec<&str> = [
                ("restricted", given_restricted),
                ("exemption", given_exemption),
            ]
            .iter()
            .filter(|(_, given)| !given)
            .map(|(k, _)| *k)
            .collect();
            if !missing.is_empty() {
                c.error(
                    Loc::Value(at()),
                    format!(
                        "offer `{name}` is not a built-in offer, so it needs both `restricted` and `exemption`; missing `{}`",
                        missing.join("` and `")
                    ),
                );
                continue;
            }
            let (Some(restricted), Some(exemption)) = (restricted, exemption) else {
                continue;
            };
            Offer {
                name: name.clone(),
                restricted,
                exemption,
                builtin: false,
            }
        };
        table.insert(name, offer);
    }
    table
}

fn subscriptions(
    c: &mut Checker,
    raw: Vec<RawSubscription>,
    offers: &BTreeMap<String, Offer>,
) -> Vec<Subscription> {
    let mut subs = Vec::with_capacity(raw.len());
    for (i, s) in raw.into_iter().enumerate() {
        let whose = "every subscription";
        let id = c.name(s.id, "id", whose, || yaml_path!["subscriptions", i, "id"]);
        let offer_name = c.name(s.offer, "offer", whose, || {
            yaml_path!["subscriptions", i, "offer"]
        });
        let created = c
            .required(s.created, "created", whose, || {
                yaml_path!["subscriptions", i, "created"]
            })
            .and_then(|t| c.date(&t, "created", || yaml_path!["subscriptions", i, "created"]));
        let offer = offer_name.as_ref().and_then(|name| {
            let offer = offers.get(name.as_str());
            if offer.is_none() {
                let known: Vec<&str> = offers.keys().map(String::as_str).collect();
                c.error(
                    Loc::Value(yaml_path!["subscriptions", i, "offer"]),
                    format!("unknown offer `{name}`; known offers: {}", known.join(", ")),
                );
            }
            offer
        });
        let exemption = s.exemption.and_then(|ex| check_exemption(c, ex, i, offer));
        subs.push(Subscription {
            id: Arc::from(id.unwrap_or_default()),
            offer: Arc::from(offer_name.unwrap_or_default()),
            restricted: offer.map_or(Restricted::Always, |o| o.restricted),
            exemption_rule: offer.map_or(ExemptionRule::Never, |o| o.exemption),
            created: created.unwrap_or(NaiveDate::MIN),
            exemption,
        });
    }

    let mut first: HashMap<&str, usize> = HashMap::with_capacity(subs.len());
    for (i, s) in subs.iter().enumerate() {
        if s.id.is_empty() {
            continue;
        }
        if let Some(&f) = first.get(&*s.id) {
            c.duplicate(
                Loc::Value(yaml_path!["subscriptions", i, "id"]),
                Loc::Value(yaml_path!["subscriptions", f, "id"]),
                format!("duplicate subscription id `{}`", s.id),
            );
        } else {
            first.insert(&s.id, i);
        }
    }
    subs
}

fn check_exemption(
    c: &mut Checker,
    ex: RawExemption,
    i: usize,
    offer: Option<&Offer>,
) -> Option<Exemption> {
    if let Some(offer) = offer
        && offer.exemption == ExemptionRule::Never
    {
        let why = if offer.restricted == Restricted::Never {
            format!(
                "offer `{}` is never restricted, so an exemption is meaningless; remove it",
                offer.name
            )
        } else {
            format!(
                "offer `{}` cannot be exempted (its exemption is `never`); remove the exemption and send through an authenticated relay (port 587)",
                offer.name
            )
        };
        c.error(Loc::Key(yaml_path!["subscriptions", i, "exemption"]), why);
    }
    let granted = c
        .required(ex.granted, "granted", "an exemption", || {
            yaml_path!["subscriptions", i, "exemption", "granted"]
        })
        .and_then(|t| {
            c.time(&t, "granted", || {
                yaml_path!["subscriptions", i, "exemption", "granted"]
            })
        });
    let revoked_at = || yaml_path!["subscriptions", i, "exemption", "revoked"];
    let revoked = c
        .optional(ex.revoked, "revoked", revoked_at)
        .and_then(|t| c.time(&t, "revoked", revoked_at));
    if let (Some(g), Some(r)) = (granted, revoked)
        && r <= g
    {
        c.error(
            Loc::Value(revoked_at()),
            format!(
                "`revoked` {} is not after `granted` {}",
                super::verdict::fmt_time(r),
                super::verdict::fmt_time(g)
            ),
        );
    }
    Some(Exemption {
        granted: granted?,
        revoked,
    })
}

pub(crate) fn check_vm(c: &mut Checker, sub_names: &mut SubNames, i: usize, v: RawVm) -> Vm {
    let whose = "every VM";
    let name = c.name(v.name, "name", whose, || yaml_path!["vms", i, "name"]);
    let subscription = c.name(v.subscription, "subscription", whose, || {
        yaml_path!["vms", i, "subscription"]
    });
    let interface = match v.interface {
        Field::Text(name) => match check_ifname(&name) {
            Ok(()) => Some(name),
            Err(why) => {
                c.error(Loc::Value(yaml_path!["vms", i, "interface"]), why);
                None
            }
        },
        other => c.required(other, "interface", whose, || {
            yaml_path!["vms", i, "interface"]
        }),
    };
    let mut addresses = Vec::new();
    for (j, field) in v.addresses.unwrap_or_default().into_iter().enumerate() {
        let here = || yaml_path!["vms", i, "addresses", j];
        let Some(text) = c.item(field, "address", "addresses", here) else {
            continue;
        };
        match IpAddr::from_str(&text) {
            Ok(a) => addresses.push(a),
            Err(_) => c.error(
                Loc::Value(here()),
                format!("`{text}` is not an IPv4 or IPv6 address"),
            ),
        }
    }
    let started_at = || yaml_path!["vms", i, "started"];
    let started = c
        .optional(v.started, "started", started_at)
        .and_then(|t| c.time(&t, "started", started_at));
    let override_verdict = c.choice(
        v.override_verdict,
        "override",
        Verdict::ALL,
        Verdict::as_str,
        Verdict::from_yaml,
        || yaml_path!["vms", i, "override"],
    );
    let name = name.unwrap_or_default();
    Vm {
        key: vm_key(&name),
        name: name.into_boxed_str(),
        interface: interface.unwrap_or_default().into_boxed_str(),
        addresses: addresses.into_boxed_slice(),
        started,
        override_verdict,
        subscription_index: subscription.map_or(NO_SUBSCRIPTION, |s| sub_names.id(s)),
    }
}

/// Points each VM at its subscription, once all are known (`vms[i]` is
/// the `first + i`th VM of the file).
pub(crate) fn resolve_subscriptions(
    c: &mut Checker,
    vms: &mut [Vm],
    names: &SubNames,
    first: usize,
    subs: &[Subscription],
) {
    let mut sub_index: HashMap<&str, u32> = HashMap::with_capacity(subs.len());
    for (i, s) in subs.iter().enumerate() {
        sub_index.entry(&s.id).or_insert(i as u32);
    }
    // Each name the VMs give, resolved once.
    let resolved: Vec<Option<u32>> = names
        .names
        .iter()
        .map(|n| sub_index.get(&**n).copied())
        .collect();
    for (i, vm) in vms.iter_mut().enumerate() {
        let id = vm.subscription_index;
        if id == NO_SUBSCRIPTION {
            vm.subscription_index = 0;
            continue;
        }
        if let Some(s) = resolved.get(id as usize).copied().flatten() {
            vm.subscription_index = s;
        } else {
            c.error(
                Loc::Value(yaml_path!["vms", first + i, "subscription"]),
                format!(
                    "unknown subscription `{}`; no subscription under `subscriptions` has that id",
                    names.names.get(id as usize).map_or("", |n| &**n)
                ),
            );
            vm.subscription_index = 0;
        }
    }
}

/// Duplicate VM names and interfaces; the index of the VMs.
fn vm_duplicates(c: &mut Checker, vms: &[Vm]) -> VmIndex {
    let mut index = VmIndex::with_capacity(vms.len());
    for (i, vm) in vms.iter().enumerate() {
        let name_first = if vm.name.is_empty() {
            None
        } else {
            index.by_name(vms, &vm.name)
        };
        if let Some(f) = name_first {
            c.duplicate(
                Loc::Value(yaml_path!["vms", i, "name"]),
                Loc::Value(yaml_path!["vms", f, "name"]),
                format!("duplicate VM name `{}`", vm.name),
            );
        }
        let interface_first = if vm.interface.is_empty() {
            None
        } else {
            index.by_interface(vms, &vm.interface)
        };
        if let Some(f) = interface_first {
            c.duplicate(
                Loc::Value(yaml_path!["vms", i, "interface"]),
                Loc::Value(yaml_path!["vms", f, "interface"]),
                format!(
                    "duplicate interface `{}`, already the interface of VM `{}`",
                    vm.interface, vms[f].name
                ),
            );
        }
        // Only the first of a name or an interface is indexed (the policy
        // is invalid anyway when either repeats).
        if name_first.is_none() {
            index.insert_key(vms, i);
        }
        if interface_first.is_none() {
            index.insert_interface(vms, i);
        }
    }
    index
}

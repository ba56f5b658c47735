//! The verdict rules of exemptions, at their boundaries: granted, revoked,
//! in effect only once the VM started since the grant (by its `started`
//! or an observed interface creation), and when the verdict next changes.

use super::{PAYG_2020, eval, eval_seen, exempted_since, ok, only, single, t};
use crate::policy::{Reason, Since, Verdict};

#[test]
fn grant_at_exactly_the_start_time_allows() {
    let p = exempted_since(
        "2021-01-10T12:00:00Z",
        "    started: 2021-01-10T12:00:00Z\n",
    );
    let d = eval(&p, "2026-01-01T00:00:00Z");
    assert_eq!(
        only(&d),
        (
            Verdict::Allow,
            "exemption granted 2021-01-10T12:00:00Z, in effect since the VM started 2021-01-10T12:00:00Z".to_owned(),
            "exempted"
        )
    );
    assert_eq!(
        d.vms[0].reason,
        Reason::Exempted {
            granted: t("2021-01-10T12:00:00Z"),
            since: Since::Started(t("2021-01-10T12:00:00Z")),
            revoked: None,
        }
    );
    assert_eq!(d.next_change, None);
}

#[test]
fn started_one_second_before_the_grant_needs_a_restart() {
    let p = exempted_since(
        "2021-01-10T12:00:00Z",
        "    started: 2021-01-10T11:59:59Z\n",
    );
    let d = eval(&p, "2026-01-01T00:00:00Z");
    assert_eq!(
        only(&d),
        (
            Verdict::Block,
            "exemption granted 2021-01-10T12:00:00Z takes effect when the VM is stopped and started".to_owned(),
            "exemption-needs-restart"
        )
    );
    assert_eq!(d.next_change, None);
}

#[test]
fn no_started_and_no_observation_needs_a_restart() {
    let p = exempted_since("2021-01-10T12:00:00Z", "");
    assert_eq!(
        only(&eval(&p, "2026-01-01T00:00:00Z")).2,
        "exemption-needs-restart"
    );
}

#[test]
fn grant_at_exactly_t_is_granted() {
    // The VM started before the grant: granted, but not restarted.
    let p = exempted_since(
        "2025-06-01T00:00:00Z",
        "    started: 2025-01-01T00:00:00Z\n",
    );
    let at = eval(&p, "2025-06-01T00:00:00Z");
    assert_eq!(only(&at).2, "exemption-needs-restart");
    let before = eval(&p, "2025-05-31T23:59:59Z");
    assert_eq!(
        only(&before),
        (
            Verdict::Block,
            "exemption granted for 2025-06-01T00:00:00Z, not in effect yet".to_owned(),
            "exemption-not-yet"
        )
    );
    assert_eq!(before.next_change, Some(t("2025-06-01T00:00:00Z")));
    assert_eq!(at.next_change, None);

    // Granted and started at T: allowed at T.
    let p = exempted_since(
        "2025-06-01T00:00:00Z",
        "    started: 2025-06-01T00:00:00Z\n",
    );
    assert_eq!(only(&eval(&p, "2025-06-01T00:00:00Z")).0, Verdict::Allow);
    let d = eval(&p, "2025-05-01T00:00:00Z");
    assert_eq!(only(&d).2, "exemption-not-yet");
    assert_eq!(d.next_change, Some(t("2025-06-01T00:00:00Z")));
}

#[test]
fn revocation_at_exactly_t_is_revoked() {
    let p = single(
        &format!(
            "{PAYG_2020}    exemption:\n      granted: 2021-01-10T12:00:00Z\n      revoked: 2022-03-01T00:00:00Z\n"
        ),
        "    started: 2021-01-11T08:00:00Z\n",
    );
    let d = eval(&p, "2022-03-01T00:00:00Z");
    assert_eq!(
        only(&d),
        (
            Verdict::Block,
            "exemption revoked 2022-03-01T00:00:00Z".to_owned(),
            "exemption-revoked"
        )
    );
    assert_eq!(
        d.vms[0].reason,
        Reason::ExemptionRevoked {
            granted: t("2021-01-10T12:00:00Z"),
            revoked: t("2022-03-01T00:00:00Z"),
        }
    );
    assert_eq!(d.next_change, None);
}

#[test]
fn revocation_in_the_future_still_allows_and_is_the_next_change() {
    let p = single(
        &format!(
            "{PAYG_2020}    exemption:\n      granted: 2021-01-10T12:00:00Z\n      revoked: 2022-03-01T00:00:00Z\n"
        ),
        "    started: 2021-01-11T08:00:00Z\n",
    );
    let d = eval(&p, "2022-02-28T23:59:59Z");
    assert_eq!(
        only(&d),
        (
            Verdict::Allow,
            "exemption granted 2021-01-10T12:00:00Z, in effect since the VM started 2021-01-11T08:00:00Z; to be revoked 2022-03-01T00:00:00Z".to_owned(),
            "exempted"
        )
    );
    assert_eq!(d.next_change, Some(t("2022-03-01T00:00:00Z")));
}

#[test]
fn grant_in_the_future_blocks_until_it_comes() {
    let p = exempted_since(
        "2027-01-01T00:00:00Z",
        "    started: 2027-02-01T00:00:00Z\n",
    );
    let d = eval(&p, "2026-01-01T00:00:00Z");
    assert_eq!(
        only(&d),
        (
            Verdict::Block,
            "exemption granted for 2027-01-01T00:00:00Z, not in effect yet".to_owned(),
            "exemption-not-yet"
        )
    );
    // At the grant the reason changes (needs a restart), then at `started`
    // the verdict does.
    assert_eq!(d.next_change, Some(t("2027-01-01T00:00:00Z")));
    let d = eval(&p, "2027-01-01T00:00:00Z");
    assert_eq!(only(&d).2, "exemption-needs-restart");
    assert_eq!(d.next_change, Some(t("2027-02-01T00:00:00Z")));
    let d = eval(&p, "2027-02-01T00:00:00Z");
    assert_eq!(only(&d).0, Verdict::Allow);
    assert_eq!(d.next_change, None);
}

#[test]
fn interface_created_after_the_grant_with_an_older_started_allows() {
    let p = exempted_since(
        "2021-01-10T12:00:00Z",
        "    started: 2020-12-01T00:00:00Z\n",
    );
    let d = eval_seen(
        &p,
        "2026-01-01T00:00:00Z",
        &[("tap0", "2021-02-01T10:00:00Z")],
    );
    assert_eq!(
        only(&d),
        (
            Verdict::Allow,
            "exemption granted 2021-01-10T12:00:00Z, in effect since the VM's interface was created 2021-02-01T10:00:00Z".to_owned(),
            "exempted"
        )
    );
    assert_eq!(
        d.vms[0].reason,
        Reason::Exempted {
            granted: t("2021-01-10T12:00:00Z"),
            since: Since::InterfaceCreated(t("2021-02-01T10:00:00Z")),
            revoked: None,
        }
    );
    // Created exactly at the grant counts too; before it does not; another
    // interface's creation does not.
    let d = eval_seen(
        &p,
        "2026-01-01T00:00:00Z",
        &[("tap0", "2021-01-10T12:00:00Z")],
    );
    assert_eq!(only(&d).0, Verdict::Allow);
    let d = eval_seen(
        &p,
        "2026-01-01T00:00:00Z",
        &[("tap0", "2021-01-10T11:00:00Z")],
    );
    assert_eq!(only(&d).2, "exemption-needs-restart");
    let d = eval_seen(
        &p,
        "2026-01-01T00:00:00Z",
        &[("tap1", "2021-02-01T10:00:00Z")],
    );
    assert_eq!(only(&d).2, "exemption-needs-restart");
}

#[test]
fn started_after_t_does_not_count_yet() {
    let p = exempted_since(
        "2021-01-10T12:00:00Z",
        "    started: 2021-03-01T00:00:00Z\n",
    );
    let d = eval(&p, "2021-02-01T00:00:00Z");
    assert_eq!(only(&d).2, "exemption-needs-restart");
    assert_eq!(d.next_change, Some(t("2021-03-01T00:00:00Z")));
}

#[test]
fn next_change_is_the_earliest_over_all_vms() {
    let yaml = "version: 1
subscriptions:
  - {id: a, offer: pay-as-you-go, created: 2020-01-01, exemption: {granted: 2030-01-01T00:00:00Z}}
  - {id: b, offer: pay-as-you-go, created: 2020-01-01, exemption: {granted: 2020-01-01T00:00:00Z, revoked: 2029-06-01T00:00:00Z}}
  - {id: c, offer: pay-as-you-go, created: 2020-01-01, exemption: {granted: 2020-01-01T00:00:00Z, revoked: 2028-06-01T00:00:00Z}}
vms:
  - {name: a, subscription: a, interface: tap0}
  - {name: b, subscription: b, interface: tap1, started: 2020-02-01T00:00:00Z}
  # Needs a restart: its revocation changes the reason (and not the verdict).
  - {name: c, subscription: c, interface: tap2}
";
    let p = ok(yaml);
    assert_eq!(
        eval(&p, "2026-01-01T00:00:00Z").next_change,
        Some(t("2028-06-01T00:00:00Z"))
    );
    assert_eq!(
        eval(&p, "2028-06-01T00:00:00Z").next_change,
        Some(t("2029-06-01T00:00:00Z"))
    );
    assert_eq!(
        eval(&p, "2029-06-01T00:00:00Z").next_change,
        Some(t("2030-01-01T00:00:00Z"))
    );
    assert_eq!(eval(&p, "2030-01-01T00:00:00Z").next_change, None);
}
